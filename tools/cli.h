/* What np-server and np-client share: option parsing into an np_config and signal handling. */
#ifndef NP_TOOLS_CLI_H
#define NP_TOOLS_CLI_H

#include <getopt.h>

#include <natproxy.h>

/* Exit codes, documented in the man pages and docs/config.md. */
enum {
  NP_EXIT_OK = 0,
  NP_EXIT_RUNTIME = 1,
  NP_EXIT_USAGE = 2,
  NP_EXIT_AUTH = 3,
  NP_EXIT_TLS = 4,
  NP_EXIT_NAME = 5,
  NP_EXIT_REFUSED = 6 /* np-client: the server refused every proxy at its first login */
};

/* What a tool tells np_cli_parse about itself. Every key of kind is a long option already (the
 * library's key table: np_config_key); own lists the others, and a key's short letter
 * ({"server", required_argument, NULL, 's'}). */
typedef struct np_cli_spec {
  np_config_kind kind;
  const char *shortopts;
  const struct option *own; /* ends with a zeroed entry */
  const char *help_head;    /* --help: usage and the tool's own options, before the keys */
  const char *help_tail;    /* ... and after them: signals, exit status */
  const char *actions;      /* short options that are not keys (--fingerprint): into *action */
} np_cli_spec;

/* Parse argv into cfg: -c FILE first, then every other flag on top of it (long options without a
 * short form map to the config key of the same name; a switch means "true"). -h and -V print and
 * return -1 (exit 0). Returns 0, -1, or NP_EXIT_USAGE after printing the error. */
int np_cli_parse(int argc, char **argv, struct np_config *cfg, const np_cli_spec *spec,
                 int *action);
/* Arguments that are not flags (np-client HOST LOCAL_PORT): when the tool sets this before
 * np_cli_parse, they go to it after the flags, before the configuration is validated; it returns
 * NULL, or an error to print. Without it they are a usage error. */
extern const char *(*np_cli_positional)(struct np_config *cfg, int argc, char **argv);
/* The tools' own lines (a failed start, a fatal event, a usage error once the configuration is
 * read) in the configured log_format: "PROG: msg" as before in text, np_log_stderr_json with the
 * program as its component in json, so a collector reading JSON lines never meets another kind. */
void np_cli_log(np_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The sink the library's log goes to (np_server_set_log, np_client_set_log), and its arg: the
 * configured format's stock sink, with the program's name. */
np_log_cb np_cli_log_cb(void);
void *np_cli_log_arg(void);
/* On SIGINT/SIGTERM call stop(arg, graceful): graceful for the first SIGTERM only (drain), 0 for
 * SIGINT and for any signal after the first (stop at once). The tool calls np_cli_close_signals
 * once it is closed. With reload, SIGHUP calls reload(arg) each time; with report, SIGUSR1 calls
 * report(arg). */
void np_cli_handle_signals(uv_loop_t *loop, void (*stop)(void *arg, int graceful),
                           void (*reload)(void *arg), void (*report)(void *arg), void *arg);
void np_cli_close_signals(void);
#endif
