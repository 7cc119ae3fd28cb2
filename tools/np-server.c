/* np-server: the public side of libnatproxy's reverse tunnels. Flags and signals; the rest is the
 * library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* In two literals: C99 promises compilers only 4095 characters in one. Joined in main. */
static const char help_head[] =
    "Usage: np-server [-c FILE] [--bind ADDR:PORT] [--token TOKEN] [--allow-ports LIST] [OPTIONS]\n"
    "Accept np-client connections and open public ports that lead to their private services.\n"
    "\n"
    "  -c, --config FILE            INI file ([server] section; see np-server(1), docs/config.md)\n"
    "      --bind ADDR:PORT         control and work connections (default 0.0.0.0:7000;\n"
    "                               :PORT = every IPv4 address; a host name is resolved)\n"
    "      --token TOKEN            shared secret clients must prove (shows in ps: prefer\n"
    "                               --token-file FILE or NP_TOKEN in the environment)\n"
    "      --users-file FILE        per-client tokens, ports and proxy counts (INI; reread on\n"
    "                               SIGHUP)\n"
    "      --proxy-bind-addr IP     where public ports listen (default 0.0.0.0)\n"
    "      --vhost-http-port PORT   shared port of type = http proxies, by Host (default off)\n"
    "      --vhost-https-port PORT  shared port of type = https proxies, by SNI (default off)\n"
    "      --subdomain-host DOMAIN  a proxy's subdomain = x serves x.DOMAIN\n"
    "      --allow-ports LIST       public ports clients may ask for, e.g. 2000-3000,4000\n"
    "      --log-level LEVEL        error, warn, info (default), debug, trace\n"
    "      --log-format text|json   a line of text (default) or a JSON object per line\n"
    "      --access-log true|false  a line per visitor once it is gone (default true)\n"
    "      --remember-ports true|false  port-0 proxies get the port they had (default true)\n"
    "      --admin-bind IP:PORT     JSON API, /metrics, /healthz; with --admin-token TOKEN or\n"
    "                               --admin-user U --admin-password P (docs/api-admin.md)\n";
static const char help_tail[] =
    "      --heartbeat-interval D   ping idle clients this often (default 10s)\n"
    "      --heartbeat-timeout D    drop a client silent this long (default 30s)\n"
    "      --pending-timeout D      how long a visitor waits for its tunnel (default 10s)\n"
    "      --proxy-protocol-from LIST  connections from these networks (a load balancer) must\n"
    "                               start with a PROXY protocol v1/v2 header naming the client\n"
    "      --max-pending N          visitors waiting at once, in total (default 4096)\n"
    "      --max-pending-per-proxy N  ... per public port (default 256)\n"
    "      --max-clients N          logged-in clients at once (default 1024)\n"
    "      --login-timeout D        close a connection not logged in after this (default 10s)\n"
    "      --login-backoff D        after 3 failed logins from one address, refuse its logins\n"
    "                               this long, doubling per failure (default 1s; 0 = off)\n"
    "      --login-backoff-max D    ... up to this (default 5m)\n"
    "      --udp-idle-timeout D     a UDP visitor silent both ways this long is forgotten\n"
    "                               (default 60s)\n"
    "      --udp-max-flows N        UDP visitor addresses one proxy serves at once (default 256)\n"
    "      --max-work-pool N        pre-opened work connections one client may hold (default 64)\n"
    "      --max-proxies-per-client N  public ports one client may hold (default 64)\n"
    "      --max-frame BYTES        largest control message accepted (default 4096)\n"
    "      --mux-max-streams N      streams one multiplexed client connection may hold open\n"
    "                               (default 16384)\n"
    "      --mux-max-window BYTES   how far a stream's receive window may grow (default 16777216)\n"
    "      --relay-splice true|false  move bulk transfers of plain TCP joins with splice(2)\n"
    "                               (default true)\n"
    "      --insecure               no TLS (clients need --insecure too); warns at start\n"
    "      --tls-dir DIR            where the self-signed key and certificate are created\n"
    "                               (default /var/lib/natproxy for root, else\n"
    "                               ~/.local/state/natproxy)\n"
    "      --tls-cert FILE --tls-key FILE  use this certificate (chain) and key instead\n"
    "      --tls-client-ca FILE     require client certificates signed by this CA\n"
    "      --fingerprint            print the certificate's fingerprint and exit\n"
    "      --gen-token              print a new random token and exit\n"
    "      --codec NAME             native (default) or line (the seed article's protocol)\n"
    "      --tunnel-bind ADDR:PORT  line codec: where tunnel connections arrive\n"
    "      --visit-bind ADDR:PORT   line codec: where visitors arrive\n"
    "      --drain-timeout D        on SIGTERM, how long joined visitors may finish (default\n"
    "                               30s; 0 = stop at once)\n"
    "  -h, --help                   show this help\n"
    "  -V, --version                show the version\n"
    "\n"
    "\n"
    "Durations take ms, s, m or h. SIGTERM drains (no new logins or visitors, /healthz 503,\n"
    "joined visitors finish), SIGINT or a second signal stops at once. SIGHUP rereads the\n"
    "configuration and the users file; SIGUSR1 logs the counters.\n"
    "Exit status: 0 stopped by SIGINT/SIGTERM, 1 runtime failure (e.g. the port is in use),\n"
    "2 bad usage or configuration (including an unusable TLS identity or a broken users file).\n";

static const struct option longopts[] = {
    {"config", required_argument, NULL, 'c'},
    {"drain-timeout", required_argument, NULL, 0},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"bind", required_argument, NULL, 0},
    {"token", required_argument, NULL, 0},
    {"allow-ports", required_argument, NULL, 0},
    {"proxy-protocol-from", required_argument, NULL, 0},
    {"proxy-bind-addr", required_argument, NULL, 0},
    {"vhost-http-port", required_argument, NULL, 0},
    {"vhost-https-port", required_argument, NULL, 0},
    {"subdomain-host", required_argument, NULL, 0},
    {"log-level", required_argument, NULL, 0},
    {"log-format", required_argument, NULL, 0},
    {"heartbeat-interval", required_argument, NULL, 0},
    {"heartbeat-timeout", required_argument, NULL, 0},
    {"pending-timeout", required_argument, NULL, 0},
    {"max-pending", required_argument, NULL, 0},
    {"max-pending-per-proxy", required_argument, NULL, 0},
    {"max-clients", required_argument, NULL, 0},
    {"max-work-pool", required_argument, NULL, 0},
    {"max-proxies-per-client", required_argument, NULL, 0},
    {"remember-ports", required_argument, NULL, 0},
    {"mux-max-streams", required_argument, NULL, 0},
    {"mux-max-window", required_argument, NULL, 0},
    {"relay-splice", required_argument, NULL, 0},
    {"max-frame", required_argument, NULL, 0},
    {"insecure", no_argument, NULL, 0},
    {"tls-dir", required_argument, NULL, 0},
    {"tls-cert", required_argument, NULL, 0},
    {"tls-key", required_argument, NULL, 0},
    {"tls-client-ca", required_argument, NULL, 0},
    {"users-file", required_argument, NULL, 0},
    {"login-timeout", required_argument, NULL, 0},
    {"login-backoff", required_argument, NULL, 0},
    {"login-backoff-max", required_argument, NULL, 0},
    {"fingerprint", no_argument, NULL, 'F'},
    {"gen-token", no_argument, NULL, 'G'},
    {"token-file", required_argument, NULL, 0},
    {"codec", required_argument, NULL, 0},
    {"tunnel-bind", required_argument, NULL, 0},
    {"visit-bind", required_argument, NULL, 0},
    {"udp-idle-timeout", required_argument, NULL, 0},
    {"udp-max-flows", required_argument, NULL, 0},
    {"access-log", required_argument, NULL, 0},
    {"admin-bind", required_argument, NULL, 0},
    {"admin-token", required_argument, NULL, 0},
    {"admin-user", required_argument, NULL, 0},
    {"admin-password", required_argument, NULL, 0},
    {NULL, 0, NULL, 0},
};

static void closed(struct np_server *srv) {
  (void)srv;
  np_cli_close_signals();
}

static void stop(void *arg, int graceful) {
  np_server_drain(arg, graceful ? NP_DRAIN_CONFIGURED : 0, closed);
}

static void reload(void *arg) {
  np_server_reload(arg); /* logs what it did, and keeps the old users on an error */
}

static void report(void *arg) {
  np_server_log_stats(arg);
}

int main(int argc, char **argv) {
  uv_loop_t *loop = uv_default_loop();
  struct np_config *cfg;
  struct np_server *srv;
  char fp[128], help[sizeof(help_head) + sizeof(help_tail) - 1];
  int r, action = 0;

  if (np_config_new(NP_CONFIG_SERVER, &cfg) != 0)
    return NP_EXIT_RUNTIME;
  memcpy(help, help_head, sizeof(help_head) - 1);
  memcpy(help + sizeof(help_head) - 1, help_tail, sizeof(help_tail));
  r = np_cli_parse(argc, argv, cfg, "c:hV", longopts, help, "FG", &action);
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
  r = np_server_new(loop, cfg, &srv);
  if (r == 0)
    np_server_set_log(srv, (np_log_level)np_config_log_level(cfg), np_cli_log_cb(),
                      np_cli_log_arg());
  np_config_free(cfg);
  if (r != 0) {
    np_cli_log(NP_LOG_ERROR, "%s", np_strerror(r));
    return NP_EXIT_USAGE;
  }
  np_cli_handle_signals(loop, stop, reload, report, srv);
  if ((r = np_server_start(srv)) != 0) {
    np_cli_log(NP_LOG_ERROR, "cannot start: %s", np_strerror(r));
    np_server_close(srv, NULL);
    np_cli_close_signals();
    /* A file that is there but wrong (TLS identity, users file) is the configuration's fault:
     * restarting does not help (systemd's RestartPreventExitStatus=2). */
    r = r == NP_ECONFIG ? NP_EXIT_USAGE : NP_EXIT_RUNTIME;
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return r;
}
