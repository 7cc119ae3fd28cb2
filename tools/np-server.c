/* np-server: the public side of libnatproxy's reverse tunnels. Flags and signals; the rest is the
 * library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char help_head[] =
    "Usage: np-server [-c FILE] [--bind ADDR:PORT] [--token-file FILE]\n"
    "                 [--allow-ports LIST] [OPTIONS]\n"
    "Accept np-client connections and open public ports that lead to their private services.\n"
    "\n"
    "  -c, --config FILE            INI file ([server] section): each option below is also its\n"
    "                               key, dashes written as underscores (np-server(1),\n"
    "                               docs/config.md); flags win over the file\n"
    "      --fingerprint            print the certificate's fingerprint and exit\n"
    "      --gen-token              print a new random token and exit\n"
    "  -h, --help                   show this help\n"
    "  -V, --version                show the version\n"
    "\n";
static const char help_tail[] =
    "\n"
    "Durations take ms, s, m or h. SIGTERM drains (no new logins or visitors, /healthz 503,\n"
    "joined visitors finish), SIGINT or a second signal stops at once. SIGHUP rereads the\n"
    "configuration and the users file; SIGUSR1 logs the counters.\n"
    "Exit status: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. the port is in use),\n"
    "2 bad usage or configuration (including an unusable TLS identity or a broken users file).\n";

/* Besides these, every [server] key is a flag (np_cli_parse). */
static const struct option own[] = {
    {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},      {"fingerprint", no_argument, NULL, 'F'},
    {"gen-token", no_argument, NULL, 'G'},    {NULL, 0, NULL, 0},
};

static const np_cli_spec cli_spec = {NP_CONFIG_SERVER, "c:hV", own, help_head, help_tail, "FG"};

static void closed(struct np_server_group *g) {
  (void)g;
  np_cli_close_signals();
}

static void stop(void *arg, int graceful) {
  np_server_group_drain(arg, graceful ? NP_DRAIN_CONFIGURED : 0, closed);
}

static void reload(void *arg) {
  np_server_group_reload(arg); /* logs what it did, and keeps the old users on an error */
}

static void report(void *arg) {
  np_server_log_stats(np_server_group_home(arg)); /* the sum over the workers */
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  struct np_config *cfg;
  struct np_server_group *g;
  char fp[128];
  int r, action = 0;

  if (np_config_new(NP_CONFIG_SERVER, &cfg) != 0)
    return NP_EXIT_RUNTIME;
  r = np_cli_parse(argc, argv, cfg, &cli_spec, &action);
  if (r == 0 && action == 'G') {
    if ((r = np_token_generate(fp, sizeof(fp))) == 0) {
      puts(fp);
      fputs(
          "np-server: keep it in a file only its users may read, e.g.\n"
          "  (umask 077; np-server --gen-token > /etc/natproxy/token)\n"
          "then start np-server --token-file /etc/natproxy/token and np-client --token-file FILE\n"
          "(or NP_TOKEN=... in the environment) with the same token.\n",
          stderr);
    }
    r = r == 0 ? NP_EXIT_OK : NP_EXIT_RUNTIME;
  }
  if (r == 0 && action == 'F') {
    if ((r = np_server_identity(cfg, np_cli_log_cb(), np_cli_log_arg(), fp, sizeof(fp))) == 0)
      puts(fp);
    r = r == 0 ? NP_EXIT_OK : NP_EXIT_USAGE;
  }
  if (r != 0 || action != 0) {
    np_config_free(cfg);
    return r < 0 ? NP_EXIT_OK : r;
  }
  r = np_server_group_new(loop, cfg, &g);
  if (r == 0)
    np_server_group_set_log(g, (np_log_level)np_config_log_level(cfg), np_cli_log_cb(),
                            np_cli_log_arg());
  np_config_free(cfg);
  if (r != 0) {
    np_cli_log(NP_LOG_ERROR, "%s", np_strerror(r));
    return NP_EXIT_USAGE;
  }
  np_cli_handle_signals(loop, stop, reload, report, g);
  if ((r = np_server_group_start(g)) != 0) {
    np_cli_log(NP_LOG_ERROR, "cannot start: %s", np_strerror(r));
    np_server_group_close(g, NULL);
    np_cli_close_signals();
    /* A file that is there but wrong (TLS identity, users file) is the configuration's fault:
     * restarting does not help (systemd's RestartPreventExitStatus=2). */
    r = r == NP_ECONFIG ? NP_EXIT_USAGE : NP_EXIT_RUNTIME;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return r;
}
