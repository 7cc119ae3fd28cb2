/* np-client: the private side of libnatproxy's reverse tunnels. Flags and signals; the rest is the
 * library. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "cli.h"

/* Two literals joined in main: one would pass the 4095 bytes ISO C promises to compile. */
static const char help_head[] =
    "Usage: np-client [-c FILE] --server HOST:PORT [--token TOKEN] [--name NAME]\n"
    "                 -R|-U [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT ...\n"
    "   or: np-client [--to] HOST[:PORT] [LOCAL_HOST:]LOCAL_PORT   (one TCP service; the server\n"
    "                 picks the public port and np-client prints \"listening at HOST:PORT\")\n"
    "Make local services reachable on an np-server's public ports, like ssh -R.\n"
    "\n"
    "  -c, --config FILE          INI file ([client] and [proxy NAME] sections; see np-client(1))\n"
    "  -s, --server HOST[:PORT]   the np-server to dial (port 7000 unless given)\n"
    "      --token TOKEN          shared secret (shows in ps: prefer --token-file FILE, its\n"
    "                             first line, or NP_TOKEN in the environment)\n"
    "      --name NAME            client name; a new login under the same name takes over its "
    "ports\n"
    "                             (default: the host name)\n"
    "  -R  SPEC                   [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT, repeatable;\n"
    "                             REMOTE_PORT 0 lets the server pick (printed on stdout)\n"
    "  -U  SPEC                   the same for a UDP service (datagrams stay datagrams)\n";

static const char help_tail[] =
    "      --udp-idle-timeout D   a UDP flow silent both ways this long ends (default 60s)\n"
    "      --udp-datagram-path true|false  carry UDP flows as datagrams (encrypted, over UDP\n"
    "                             to the server's port) when UDP gets through; false: always\n"
    "                             inside the tunnel (default true)\n"
    "      --udp-keepalive D --udp-path-retry D  probe that path this often (default 10s); try\n"
    "                             again this long after it failed (default 60s)\n"
    "      --allow-ips LIST       visitors only from these networks, e.g. "
    "10.0.0.0/8,2001:db8::/32\n"
    "                             (every proxy without an allow_ips of its own)\n"
    "      --log-level LEVEL      error, warn, info (default), debug, trace\n"
    "      --log-format text|json a line of text (default) or a JSON object per line\n"
    "      --heartbeat-interval D --heartbeat-timeout D   (defaults 10s, 30s)\n"
    "      --reconnect-min D --reconnect-max D            backoff bounds (defaults 500ms, 30s)\n"
    "      --dial-timeout D       for the server and the local service (default 5s)\n"
    "      --work-pool N          keep N work connections open ahead of visitors (default 4)\n"
    "      --mux true|false       carry control and every visitor over one multiplexed\n"
    "                             connection (yamux) instead of one TCP connection each\n"
    "                             (default true; see np-client(1))\n"
    "      --takeover             replace a live client logged in under the same --name\n"
    "                             (by default that is refused: exit 5)\n"
    "      --relay-splice true|false  move bulk transfers of plain TCP joins with splice(2)\n"
    "                             (default true; applies with --mux false)\n"
    "      --mux-max-window BYTES how far a stream's window may grow (default 16777216)\n"
    "      --max-frame BYTES      largest control message accepted (default 4096)\n"
    "      --server-fingerprint FP  trust the server whose certificate has this SHA-256\n"
    "                             fingerprint (np-server prints it at start)\n"
    "      --trust-on-first-use   or trust the server's certificate the first time, as ssh does:\n"
    "                             recorded in --known-servers FILE (default: the state\n"
    "                             directory's known_servers); a later change is refused\n"
    "      --tls-ca FILE|system   else trust servers signed by this CA (default: system)\n"
    "      --tls-server-name NAME the name a CA-signed certificate must carry (default: the\n"
    "                             --server host)\n"
    "      --tls-cert FILE --tls-key FILE  a client certificate, for servers that require one\n"
    "      --insecure             no TLS (the server needs --insecure too); warns at start\n"
    "      --codec NAME           native (default) or line (the seed article's protocol), with\n"
    "      --tunnel HOST:PORT --local HOST:PORT          for the line codec\n"
    "      --admin-bind IP:PORT   status JSON, reload, /metrics, /healthz; with --admin-token T\n"
    "                             or --admin-user U --admin-password P (docs/api-admin.md)\n"
    "      --drain-timeout D      on SIGTERM, how long joined visitors may finish (default\n"
    "                             30s; 0 = stop at once)\n"
    "  -h, --help                 show this help\n"
    "  -V, --version              show the version\n"
    "\n"
    "SIGTERM drains (new visitors are turned away, joined ones finish); SIGINT or a second\n"
    "signal stops at once. SIGUSR1 logs the counters; SIGHUP rereads -c FILE (then the same\n"
    "flags) on the live session: proxies added, removed or changed are registered, closed or\n"
    "replaced (see np-client(1)).\n"
    "Exit status: 0 stopped by SIGINT/SIGTERM, 2 bad usage or configuration, 3 the server refused "
    "the\n"
    "token, 4 the server is not trusted or the sides disagree on TLS, 5 another live client uses\n"
    "this --name (give each client its own, or --takeover), 6 the server refused every proxy\n"
    "at the first login. Unreachable servers are retried forever with capped exponential\n"
    "backoff.\n";

static const struct option longopts[] = {
    {"to", required_argument, NULL, 0},
    {"trust-on-first-use", no_argument, NULL, 0},
    {"known-servers", required_argument, NULL, 0},
    {"token-file", required_argument, NULL, 0},
    {"drain-timeout", required_argument, NULL, 0},
    {"config", required_argument, NULL, 'c'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"server", required_argument, NULL, 's'},
    {"token", required_argument, NULL, 0},
    {"name", required_argument, NULL, 0},
    {"log-level", required_argument, NULL, 0},
    {"log-format", required_argument, NULL, 0},
    {"heartbeat-interval", required_argument, NULL, 0},
    {"heartbeat-timeout", required_argument, NULL, 0},
    {"reconnect-min", required_argument, NULL, 0},
    {"reconnect-max", required_argument, NULL, 0},
    {"dial-timeout", required_argument, NULL, 0},
    {"work-pool", required_argument, NULL, 0},
    {"mux", required_argument, NULL, 0},
    {"takeover", no_argument, NULL, 0},
    {"mux-max-window", required_argument, NULL, 0},
    {"relay-splice", required_argument, NULL, 0},
    {"max-frame", required_argument, NULL, 0},
    {"server-fingerprint", required_argument, NULL, 0},
    {"tls-ca", required_argument, NULL, 0},
    {"allow-ips", required_argument, NULL, 0},
    {"tls-server-name", required_argument, NULL, 0},
    {"tls-cert", required_argument, NULL, 0},
    {"tls-key", required_argument, NULL, 0},
    {"insecure", no_argument, NULL, 0},
    {"codec", required_argument, NULL, 0},
    {"tunnel", required_argument, NULL, 0},
    {"local", required_argument, NULL, 0},
    {"udp-idle-timeout", required_argument, NULL, 0},
    {"udp-datagram-path", required_argument, NULL, 0},
    {"udp-keepalive", required_argument, NULL, 0},
    {"udp-path-retry", required_argument, NULL, 0},
    {"admin-bind", required_argument, NULL, 0},
    {"admin-token", required_argument, NULL, 0},
    {"admin-user", required_argument, NULL, 0},
    {"admin-password", required_argument, NULL, 0},
    {NULL, 0, NULL, 0},
};

static int exit_code = NP_EXIT_OK;
static char one_line[256]; /* np-client HOST LOCAL_PORT: the server's host, for "listening at" */

/* np-client [--to] HOST[:PORT] [LOCAL_HOST:]LOCAL_PORT: one TCP proxy whose public port the server
 * picks, like bore's "bore local 8000 --to HOST". HOST may come from --to, --server or the file. */
static const char *positional(struct np_config *cfg, int argc, char **argv) {
  char spec[300], host[256];
  const char *local = argv[argc - 1], *colon;
  int port;

  if (argc > 2)
    return "too many arguments (np-client [--to] HOST[:PORT] LOCAL_PORT, or flags)";
  if (argc == 2 && np_config_set_flag(cfg, "server", argv[0]) != 0)
    return np_config_error(cfg);
  snprintf(spec, sizeof(spec), strchr(local, ':') != NULL ? "0:%s" : "0:127.0.0.1:%s", local);
  if (np_config_add_remote(cfg, spec) != 0)
    return "LOCAL_PORT: give the local service's port (8000) or HOST:PORT (192.168.1.5:8000)";
  /* The host visitors use is the server's: what --to / --server named, without its port. */
  snprintf(spec, sizeof(spec), "%s", np_config_server(cfg));
  if ((colon = strrchr(spec, ':')) != NULL) {
    snprintf(host, sizeof(host), "%.*s", (int)(colon - spec), spec);
    port = host[0] == '[' ? 1 : 0;
    snprintf(one_line, sizeof(one_line), "%.*s", (int)strlen(host) - 2 * port, host + port);
  }
  return NULL;
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
      printf("proxy %s: public port %d\n", ev->name, ev->port);
      if (one_line[0] != '\0') /* the one-line form says it as bore does */
        printf(strchr(one_line, ':') != NULL ? "listening at [%s]:%d\n" : "listening at %s:%d\n",
               one_line, ev->port);
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
  char help[sizeof(help_head) + sizeof(help_tail) - 1];
  int r;

  if (np_config_new(NP_CONFIG_CLIENT, &cfg) != 0)
    return NP_EXIT_RUNTIME;
  memcpy(help, help_head, sizeof(help_head) - 1);
  memcpy(help + sizeof(help_head) - 1, help_tail, sizeof(help_tail));
  np_cli_positional = positional;
  r = np_cli_parse(argc, argv, cfg, "c:s:R:U:hV", longopts, help, NULL, NULL);
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
