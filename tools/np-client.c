/* np-client: the private side of libnatproxy's reverse tunnels. Flags and signals; the rest is the
 * library. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "cli.h"

static const char help_head[] =
    "Usage: np-client [-c FILE] --server HOST[:PORT] [--token-file FILE] [--name NAME]\n"
    "                 -R|-U [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT ...\n"
    "                 -L [BIND_ADDR:]PORT:OWNER.PROXY ...\n"
    "   or: np-client [--to] HOST[:PORT] [LOCAL_HOST:]LOCAL_PORT   (one TCP service; the server\n"
    "                 picks the public port and np-client prints \"listening at HOST:PORT\")\n"
    "Make local services reachable on an np-server's public ports, like ssh -R.\n"
    "\n"
    "  -c, --config FILE            INI file ([client] and [proxy NAME] sections): each option\n"
    "                               below is also a [client] key, dashes written as underscores\n"
    "                               (np-client(1), docs/config.md); flags win over the file\n"
    "  -R  SPEC                     [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT, repeatable;\n"
    "                               REMOTE_PORT 0 lets the server pick (printed on stdout)\n"
    "  -U  SPEC                     the same for a UDP service (datagrams stay datagrams)\n"
    "  -L  [BIND_ADDR:]PORT:OWNER.PROXY\n"
    "                               visit another client's private (stcp) proxy: listen on\n"
    "                               BIND_ADDR:PORT (127.0.0.1) and carry each connection there,\n"
    "                               like ssh -L; the proof is --secret-key-file's key\n"
    "      --to HOST[:PORT]         the same as --server\n"
    "  -h, --help                   show this help\n"
    "  -V, --version                show the version\n"
    "\n";

static const char help_tail[] =
    "\n"
    "Durations take ms, s, m or h. SIGTERM drains (new visitors are turned away, joined ones\n"
    "finish); SIGINT or a second signal stops at once. SIGUSR1 logs the counters; SIGHUP rereads\n"
    "-c FILE (then the same flags) on the live session: proxies added, removed or changed are\n"
    "registered, closed or replaced (see np-client(1)).\n"
    "Exit status: 0 stopped by SIGINT/SIGTERM, 2 bad usage or configuration, 3 the server\n"
    "refused the token, 4 the server is not trusted or the sides disagree on TLS, 5 another live\n"
    "client uses this --name (give each client its own, or --takeover), 6 the server refused\n"
    "every proxy at the first login. Unreachable servers are retried forever with capped\n"
    "exponential backoff.\n";

/* Besides these, every [client] key is a flag (np_cli_parse); -s is --server's short form. */
static const struct option own[] = {
    {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},      {"server", required_argument, NULL, 's'},
    {"to", required_argument, NULL, 0},       {NULL, 0, NULL, 0},
};

static const np_cli_spec cli_spec = {NP_CONFIG_CLIENT, "c:s:R:U:L:hV", own,
                                     help_head,        help_tail,    NULL};

static int exit_code = NP_EXIT_OK;
static char one_line[2200]; /* np-client HOST LOCAL_PORT: the server, for "listening at" */

/* np-client [--to] HOST[:PORT] [LOCAL_HOST:]LOCAL_PORT: one TCP proxy whose public port the server
 * picks, like bore's "bore local 8000 --to HOST". HOST may come from --to, --server or the file. */
static const char *positional(struct np_config *cfg, int argc, char **argv) {
  char spec[300];
  const char *local = argv[argc - 1];

  if (argc > 2)
    return "too many arguments (np-client [--to] HOST[:PORT] LOCAL_PORT, or flags)";
  if (argc == 2 && np_config_set_flag(cfg, "server", argv[0]) != 0)
    return np_config_error(cfg);
  snprintf(spec, sizeof(spec), strchr(local, ':') != NULL ? "0:%s" : "0:127.0.0.1:%s", local);
  if (np_config_add_remote(cfg, spec) != 0)
    return "LOCAL_PORT: give the local service's port (8000) or HOST:PORT (192.168.1.5:8000)";
  snprintf(one_line, sizeof(one_line), "%s", np_config_server(cfg));
  return NULL;
}

/* The host visitors use is the server's (HOST:PORT, or [V6]:PORT), without its port. */
static void say_listening(const char *server, int port) {
  const char *colon = strrchr(server, ':');
  int n = colon != NULL ? (int)(colon - server) : (int)strlen(server), v6 = server[0] == '[';

  printf(v6 ? "listening at %.*s]:%d\n" : "listening at %.*s:%d\n", n - v6, server, port);
}

static void closed(struct np_client *cl) {
  (void)cl;
  np_cli_close_signals();
}

static void stop(void *arg, int graceful) {
  np_client_drain(arg, graceful ? NP_DRAIN_CONFIGURED : 0, closed);
}

static void reload(void *arg) {
  np_client_reload(arg); /* logs what it did, or why it changed nothing */
}

static void report(void *arg) {
  np_client_log_stats(arg);
}

static void on_event(struct np_client *cl, const np_client_event *ev) {
  switch (ev->type) {
  case NP_CLIENT_PROXY_READY:
    /* The one line scripts parse: which public port serves which proxy. Port 0 (the line codec)
     * would be a lie: the library logs where visitors go instead. */
    if (ev->port > 0) {
      /* With several servers the library names the one (text): a port on each. */
      if (ev->text != NULL)
        printf("proxy %s: public port %d on %s\n", ev->name, ev->port, ev->text);
      else
        printf("proxy %s: public port %d\n", ev->name, ev->port);
      if (one_line[0] != '\0') /* the one-line form says it as bore does */
        say_listening(ev->text != NULL ? ev->text : one_line, ev->port);
      fflush(stdout);
    }
    break;
  case NP_CLIENT_FATAL:
    np_cli_log(NP_LOG_ERROR, "%s", ev->text);
    exit_code =
        ev->status == NP_EAUTH         ? NP_EXIT_AUTH
        : ev->status == NP_ENAMEINUSE  ? NP_EXIT_NAME
        : ev->status == NP_EALLREFUSED ? NP_EXIT_REFUSED
        : ev->status == NP_ECONFIG     ? NP_EXIT_USAGE
        : ev->status == NP_ETLSVERIFY || ev->status == NP_ENOTLS || ev->status == NP_ETLSREQUIRED
            ? NP_EXIT_TLS
            : NP_EXIT_RUNTIME;
    np_cli_close_signals();
    np_client_close(cl, NULL);
    break;
  default:
    break;
  }
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  struct np_config *cfg;
  struct np_client *cl;
  int r;

  if (np_config_new(NP_CONFIG_CLIENT, &cfg) != 0)
    return NP_EXIT_RUNTIME;
  np_cli_positional = positional;
  r = np_cli_parse(argc, argv, cfg, &cli_spec, NULL);
  if (r != 0) {
    np_config_free(cfg);
    return r < 0 ? NP_EXIT_OK : r;
  }
  r = np_client_new(loop, cfg, &cl);
  if (r == 0)
    np_client_set_log(cl, (np_log_level)np_config_log_level(cfg), np_cli_log_cb(),
                      np_cli_log_arg());
  np_config_free(cfg);
  if (r != 0) {
    np_cli_log(NP_LOG_ERROR, "%s", np_strerror(r));
    return NP_EXIT_USAGE;
  }
  np_client_set_event_cb(cl, on_event);
  np_cli_handle_signals(loop, stop, reload, report, cl);
  if ((r = np_client_start(cl)) != 0) {
    np_cli_log(NP_LOG_ERROR, "cannot start: %s", np_strerror(r));
    np_cli_close_signals();
    np_client_close(cl, NULL);
    exit_code = NP_EXIT_USAGE;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return exit_code;
}
