#include "cli.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static const char *prog_name(const char *argv0) {
  const char *slash = strrchr(argv0, '/');
  return slash != NULL ? slash + 1 : argv0;
}

static char prog_buf[64] = "np";
static np_log_format log_format = NP_LOG_FORMAT_TEXT;

void np_cli_log(np_log_level level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (log_format == NP_LOG_FORMAT_JSON)
    np_log_stderr_json(level, msg, prog_buf);
  else
    fprintf(stderr, "%s: %s\n", prog_buf, msg);
}

np_log_cb np_cli_log_cb(void) {
  return np_log_stderr_for(log_format);
}

void *np_cli_log_arg(void) {
  return prog_buf;
}

const char *(*np_cli_positional)(struct np_config *cfg, int argc, char **argv);

static int usage_error(const char *prog, const char *msg) {
  if (log_format == NP_LOG_FORMAT_JSON)
    np_cli_log(NP_LOG_ERROR, "%s", msg);
  else
    fprintf(stderr, "%s: %s\nTry '%s --help' for more information.\n", prog, msg, prog);
  return NP_EXIT_USAGE;
}

/* Where --help's description column starts, and the width it wraps at. */
#define HELP_COL   31
#define HELP_WIDTH 79

/* One key's --help entry, from the library's key table: "  -s, --server HOST[:PORT]  what it
 * does (default ...)", wrapped at HELP_WIDTH. */
static void print_key(np_config_kind kind, const char *key, int shortc) {
  const char *flag = np_config_key_attr(kind, key, NP_CONFIG_ATTR_FLAG);
  const char *arg = np_config_key_attr(kind, key, NP_CONFIG_ATTR_ARG);
  const char *def = np_config_key_attr(kind, key, NP_CONFIG_ATTR_DEFAULT_TEXT);
  const char *help = np_config_key_attr(kind, key, NP_CONFIG_ATTR_HELP);
  char text[512], left[96];
  int col, first = 1;

  if (shortc != 0)
    snprintf(left, sizeof(left), "  -%c, --%s", shortc, flag);
  else
    snprintf(left, sizeof(left), "      --%s", flag);
  if (arg != NULL)
    snprintf(left + strlen(left), sizeof(left) - strlen(left), " %s", arg);
  if (def != NULL && strcmp(def, "required") == 0)
    snprintf(text, sizeof(text), "%s (required)", help);
  else if (def != NULL && arg != NULL) /* a switch is off unless given */
    snprintf(text, sizeof(text),
             np_config_key_attr(kind, key, NP_CONFIG_ATTR_DEFAULT) == def ? "%s (default %s)"
                                                                          : "%s (default: %s)",
             help, def);
  else
    snprintf(text, sizeof(text), "%s", help);
  col = printf("%s", left);
  col += printf("%*s", col <= HELP_COL - 2 ? HELP_COL - col : 2, "");
  for (char *save = NULL, *w = strtok_r(text, " ", &save); w != NULL;
       w = strtok_r(NULL, " ", &save), first = 0) {
    int n = (int)strlen(w);
    if (!first && col + 1 + n > HELP_WIDTH)
      col = printf("\n%*s", HELP_COL, "") - 1;
    else if (!first)
      col += printf(" ");
    col += printf("%s", w);
  }
  printf("\n");
}

static void print_help(const np_cli_spec *spec) {
  fputs(spec->help_head, stdout);
  for (size_t i = 0; np_config_key(spec->kind, i) != NULL; i++) {
    const char *key = np_config_key(spec->kind, i);
    const char *flag = np_config_key_attr(spec->kind, key, NP_CONFIG_ATTR_FLAG);
    int shortc = 0;
    for (const struct option *o = spec->own; o->name != NULL; o++)
      if (strcmp(o->name, flag) == 0 && o->val != 0)
        shortc = o->val;
    print_key(spec->kind, key, shortc);
  }
  fputs(spec->help_tail, stdout);
}

/* getopt_long's value for a key's long option: KEY_OPT + its index, above every short option. */
#define KEY_OPT 0x100

/* The tool's own options, then a long option per key of its kind that it did not name itself. */
static struct option *all_options(const np_cli_spec *spec) {
  size_t n = 0, own = 0;
  struct option *opts;

  while (spec->own[own].name != NULL)
    own++;
  while (np_config_key(spec->kind, n) != NULL)
    n++;
  if ((opts = calloc(own + n + 1, sizeof(*opts))) == NULL)
    return NULL;
  memcpy(opts, spec->own, own * sizeof(*opts));
  for (size_t i = 0, at = own; i < n; i++) {
    const char *key = np_config_key(spec->kind, i);
    const char *flag = np_config_key_attr(spec->kind, key, NP_CONFIG_ATTR_FLAG);
    size_t j = 0;
    while (j < own && strcmp(spec->own[j].name, flag) != 0)
      j++;
    if (j < own)
      continue;
    opts[at].name = flag;
    opts[at].has_arg = np_config_key_attr(spec->kind, key, NP_CONFIG_ATTR_ARG) != NULL
                           ? required_argument
                           : no_argument;
    /* A value of its own (beyond any char): getopt_long takes an abbreviation that fits several
     * options with the same value as the first of them, silently (--tok as --token, not
     * --token-file), and calls it ambiguous only when their values differ. */
    opts[at].val = KEY_OPT + (int)at;
    at++;
  }
  return opts;
}

static int parse(int argc, char **argv, struct np_config *cfg, const np_cli_spec *spec,
                 const struct option *longopts, int *action) {
  const char *prog = prog_name(argv[0]);
  const char *shortopts = spec->shortopts, *actions = spec->actions;
  const char *file = NULL;
  int c, idx, r;

  snprintf(prog_buf, sizeof(prog_buf), "%s", prog);
  /* Pass 1: help, version and the config file, so flags can override the file in pass 2. */
  opterr = 0;
  while ((c = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
    if (c == 'h') {
      print_help(spec);
      return -1;
    }
    if (c == 'V') {
      printf("%s %s (libnatproxy %s)\n", prog, np_version_string(), np_version_string());
      return -1;
    }
    if (c == 'c')
      file = optarg;
  }
  /* The token from the environment is the weakest source: the file and the flags override it. It
   * keeps the secret off the command line (ps) for a one-off run. */
  const char *env = getenv("NP_TOKEN");
  if (env != NULL && env[0] != '\0' && np_config_set_flag(cfg, "token", env) != 0)
    return usage_error(prog, "NP_TOKEN: the token is too long (at most 255 bytes)");
  if (file != NULL) {
    r = np_config_load_file(cfg, file);
    log_format = np_config_log_format(cfg); /* what the file set, even before an error in it */
    if (r != 0)
      return usage_error(prog, np_config_error(cfg));
  }

  optind = 0; /* GNU getopt: start over */
  opterr = 1;
  while ((c = getopt_long(argc, argv, shortopts, longopts, &idx)) != -1) {
    char flag[2] = {(char)c, '\0'};
    const char *name = flag;
    if (c == '?' || c == ':')
      return usage_error(prog, "bad option");
    if (c == 'c')
      continue;
    if (c != 0 && c < KEY_OPT && actions != NULL && strchr(actions, c) != NULL) {
      *action = c;
      continue;
    }
    /* A short option stands for its long form's key (-s is --server); -R has only the short form.
     */
    for (const struct option *o = longopts; o->name != NULL; o++)
      if ((c == 0 && o == &longopts[idx]) || (c != 0 && o->val == c))
        name = o->name;
    r = np_config_set_flag(cfg, name, optarg != NULL ? optarg : "true");
    log_format = np_config_log_format(cfg);
    if (r != 0)
      return usage_error(prog, np_config_error(cfg));
  }
  if (optind < argc && np_cli_positional == NULL)
    return usage_error(prog, "unexpected argument (flags take the form --name VALUE)");
  if (optind < argc) {
    const char *why = np_cli_positional(cfg, argc - optind, argv + optind);
    if (why != NULL)
      return usage_error(prog, why);
  }
  if (np_config_validate(cfg) != 0)
    return usage_error(prog, np_config_error(cfg));
  return 0;
}

int np_cli_parse(int argc, char **argv, struct np_config *cfg, const np_cli_spec *spec,
                 int *action) {
  struct option *longopts = all_options(spec);
  int r;

  if (longopts == NULL)
    return NP_EXIT_RUNTIME;
  r = parse(argc, argv, cfg, spec, longopts, action);
  free(longopts);
  return r;
}

static uv_signal_t sigs[4];
static void (*stop_fn)(void *, int);
static void (*reload_fn)(void *);
static void (*report_fn)(void *);
static void *stop_arg;

static void on_signal(uv_signal_t *h, int signum) {
  static int stopping;
  (void)h;
  if (signum == SIGHUP || signum == SIGUSR1) {
    void (*fn)(void *) = signum == SIGHUP ? reload_fn : report_fn;
    if (fn != NULL)
      fn(stop_arg);
    return;
  }
  /* The first SIGTERM drains (a service manager's stop); SIGINT (Ctrl-C), or any second signal,
   * stops at once. The tool closes the signals once it is closed. */
  if (stop_fn != NULL) {
    int graceful = signum == SIGTERM && !stopping;
    stopping = 1;
    stop_fn(stop_arg, graceful);
  }
}

void np_cli_handle_signals(uv_loop_t *loop, void (*stop)(void *arg, int graceful),
                           void (*reload)(void *arg), void (*report)(void *arg), void *arg) {
  const int which[4] = {SIGINT, SIGTERM, reload != NULL ? SIGHUP : 0, report != NULL ? SIGUSR1 : 0};
  struct rlimit rl;

  /* Every tunnelled connection costs two descriptors on each side; the usual soft limit of 1024
   * would cap a server at ~500 visitors. Raise it to the hard limit, as Go programs (frp) do on
   * their own. */
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  /* A peer that vanishes must surface as EPIPE from write, not kill the process. */
  signal(SIGPIPE, SIG_IGN);
  stop_fn = stop;
  reload_fn = reload;
  report_fn = report;
  stop_arg = arg;
  for (int i = 0; i < 4; i++) {
    if (which[i] == 0)
      continue;
    uv_signal_init(loop, &sigs[i]);
    uv_signal_start(&sigs[i], on_signal, which[i]);
  }
}

void np_cli_close_signals(void) {
  for (int i = 0; i < 4; i++)
    if (sigs[i].loop != NULL && !uv_is_closing((uv_handle_t *)&sigs[i]))
      uv_close((uv_handle_t *)&sigs[i], NULL);
}
