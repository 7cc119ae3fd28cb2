/* The key table of [server] and [client] (config_keys.h), and what the public API shows of it. */
#include "config_keys.h"

#include <string.h>

#include "internal.h"

#define S NP__KIND_SERVER
#define C NP__KIND_CLIENT
#define B NP__KIND_BOTH

#define FIELD(f) offsetof(struct np_config, f), sizeof(((struct np_config *)0)->f)

/* In the order --help lists them: what a first run needs, then what tuning needs. Each tool shows
 * the keys of its kind. def is applied by np_config_new, so the default --help, docs/config.md
 * and the man pages state is the one in effect. */
const np__key np__config_keys[] = {
    {"bind", S, V_IPPORT, FIELD(bind), "bind", "ADDR:PORT", "0.0.0.0:7000", NULL,
     "control and work connections (:PORT = every IPv4 address; a host name is resolved)"},
    {"server", C, V_HOSTPORT, FIELD(server), "server", "HOST[:PORT]", NULL, "required",
     "the np-server to dial (port 7000 unless given)"},
    {"token", B, V_STR, FIELD(token), "token", "TOKEN", NULL, NULL,
     "the secret server and clients share (shows in ps: prefer --token-file FILE or NP_TOKEN in "
     "the environment)"},
    {"token_file", B, V_TOKEN_FILE, FIELD(token), "token-file", "FILE", NULL, NULL,
     "read the token from this file's first line (np-server --gen-token makes one)"},
    {"users_file", S, V_STR, FIELD(users_file), "users-file", "FILE", NULL, NULL,
     "per-client tokens, ports and proxy counts (INI; reread on SIGHUP)"},
    {"name", C, V_STR, FIELD(name), "name", "NAME", NULL, "the host name",
     "this client's name; a second live client under the same name is refused"},
    {"secret_key", C, V_STR, FIELD(secret_key), "secret-key", "KEY", NULL, NULL,
     "the secret of private proxies (type = stcp, sudp) and visitors (-L, [visitor NAME]) that "
     "give none of their own (shows in ps: prefer secret_key_file)"},
    {"secret_key_file", C, V_TOKEN_FILE, FIELD(secret_key), "secret-key-file", "FILE", NULL, NULL,
     "read secret_key from this file's first line"},
    {"takeover", C, V_BOOL, FIELD(takeover), "takeover", NULL, "false", NULL,
     "replace a live client logged in under the same --name (without it: exit 5)"},
    {"server_fingerprint", C, V_FINGERPRINT, FIELD(server_fingerprint), "server-fingerprint", "FP",
     NULL, NULL,
     "trust the server whose certificate has this SHA-256 fingerprint (np-server prints it)"},
    {"tofu", C, V_BOOL, FIELD(tofu), "trust-on-first-use", NULL, "false", NULL,
     "or trust the server's certificate the first time, as ssh does: recorded in known_servers, "
     "a later change is refused"},
    {"known_servers", C, V_STR, FIELD(known_servers), "known-servers", "FILE", NULL,
     "the state directory's known_servers", "the recorded fingerprints (HOST:PORT sha256:...)"},
    {"tls_ca", C, V_STR, FIELD(tls_ca), "tls-ca", "FILE|system", "system", NULL,
     "else trust servers whose certificate this CA (or the system's store) signed"},
    {"tls_server_name", C, V_STR, FIELD(tls_server_name), "tls-server-name", "NAME", NULL,
     "the server's host", "the name a CA-signed certificate must carry"},
    {"allow_ports", S, V_PORTS, FIELD(allow_ports), "allow-ports", "LIST", NULL, "every port",
     "public ports clients may ask for, e.g. 2000-3000,4000"},
    {"proxy_bind_addr", S, V_STR, FIELD(proxy_bind_addr), "proxy-bind-addr", "IP", "0.0.0.0", NULL,
     "where public ports listen"},
    {"vhost_http_port", S, V_PORT, FIELD(vhost_http_port), "vhost-http-port", "PORT", "0", "off",
     "shared port of type = http proxies, routed by Host"},
    {"vhost_http_timeout", S, V_DURATION, FIELD(vhost_http_timeout_ms), "vhost-http-timeout", "D",
     "60s", NULL,
     "an HTTP visitor whose request or answer moves no byte either way this long is closed"},
    {"vhost_https_port", S, V_PORT, FIELD(vhost_https_port), "vhost-https-port", "PORT", "0", "off",
     "shared port of type = https proxies, routed by SNI"},
    {"subdomain_host", S, V_STR, FIELD(subdomain_host), "subdomain-host", "DOMAIN", NULL, NULL,
     "a proxy's subdomain = x serves x.DOMAIN"},
    {"route_store", S, V_STR, FIELD(route_store), "route-store", "redis://HOST[:PORT][/DB]", NULL,
     "off", "keep which server holds which proxy in this Redis, for servers that share the load"},
    {"route_store_password", S, V_STR, FIELD(route_store_password), "route-store-password",
     "PASSWORD", NULL, "none",
     "the route store's password (Redis AUTH; prefer route_store_password_file)"},
    {"route_store_password_file", S, V_TOKEN_FILE, FIELD(route_store_password),
     "route-store-password-file", "FILE", NULL, NULL,
     "read route_store_password from this file's first line"},
    {"route_store_user", S, V_STR, FIELD(route_store_user), "route-store-user", "USER", NULL,
     "none", "the route store's user, for a Redis with ACL users (AUTH USER PASSWORD)"},
    {"route_lease", S, V_DURATION, FIELD(route_lease_ms), "route-lease", "D", "10s", NULL,
     "a route outlives its server's last renewal by this much (renewed every third of it)"},
    {"cluster_advertise", S, V_HOSTPORT, FIELD(cluster_advertise), "cluster-advertise", "HOST:PORT",
     NULL, NULL,
     "the address other servers reach this one's control port at (needed with route_store)"},
    {"cluster_token", S, V_STR, FIELD(cluster_token), "cluster-token", "TOKEN", NULL, "off",
     "the secret the servers of a cluster share: with route_store, a visitor of a proxy held "
     "elsewhere is forwarded there (prefer cluster_token_file)"},
    {"cluster_ca", S, V_STR, FIELD(cluster_ca), "cluster-ca", "FILE", NULL, "none",
     "trust the other servers of the cluster by this CA, each server with a certificate of its "
     "own from it (tls_cert, tls_key), instead of one identity they all share (needs TLS)"},
    {"cluster_token_file", S, V_TOKEN_FILE, FIELD(cluster_token), "cluster-token-file", "FILE",
     NULL, NULL, "read cluster_token from this file's first line"},
    {"proxy_protocol_from", S, V_CIDRS, FIELD(proxy_protocol_from), "proxy-protocol-from", "LIST",
     NULL, NULL,
     "connections from these networks (a load balancer) must start with a PROXY protocol v1/v2 "
     "header naming the client"},
    {"allow_ips", C, V_CIDRS, FIELD(allow_ips), "allow-ips", "LIST", NULL, "everybody",
     "visitors only from these networks, e.g. 10.0.0.0/8,2001:db8::/32 (every proxy without an "
     "allow_ips of its own)"},
    {"log_level", B, V_LEVEL, FIELD(log_level), "log-level", "LEVEL", "info", NULL,
     "error, warn, info, debug or trace"},
    {"log_format", B, V_LOG_FORMAT, FIELD(log_format), "log-format", "text|json", "text", NULL,
     "a line of text or a JSON object per line"},
    {"access_log", S, V_BOOL, FIELD(access_log), "access-log", "true|false", "true", NULL,
     "a line per visitor once it is gone"},
    {"remember_ports", S, V_BOOL, FIELD(remember_ports), "remember-ports", "true|false", "true",
     NULL, "port-0 proxies get the port they had, across restarts too"},
    {"admin_bind", B, V_IPPORT, FIELD(admin_bind), "admin-bind", "IP:PORT", NULL, "off",
     "JSON API, /metrics, /healthz (and the server's dashboard); off loopback it needs "
     "credentials"},
    {"admin_token", B, V_STR, FIELD(admin_token), "admin-token", "TOKEN", NULL, NULL,
     "the Bearer token the admin endpoint wants"},
    {"admin_user", B, V_STR, FIELD(admin_user), "admin-user", "USER", NULL, NULL,
     "HTTP Basic user of the admin endpoint, with --admin-password"},
    {"admin_password", B, V_STR, FIELD(admin_password), "admin-password", "PASSWORD", NULL, NULL,
     "HTTP Basic password of the admin endpoint"},
    {"heartbeat_interval", B, V_DURATION, FIELD(heartbeat_interval_ms), "heartbeat-interval", "D",
     "10s", NULL, "ping the other side after this much silence from ours"},
    {"heartbeat_timeout", B, V_DURATION, FIELD(heartbeat_timeout_ms), "heartbeat-timeout", "D",
     "30s", NULL, "give up on the other side when it sent nothing this long"},
    {"pending_timeout", S, V_DURATION, FIELD(pending_timeout_ms), "pending-timeout", "D", "10s",
     NULL, "how long a visitor waits for its tunnel"},
    {"max_pending", S, V_COUNT, FIELD(max_pending), "max-pending", "N", "4096", NULL,
     "visitors waiting at once, in total"},
    {"max_pending_per_proxy", S, V_COUNT, FIELD(max_pending_per_proxy), "max-pending-per-proxy",
     "N", "256", NULL, "visitors waiting at once on one public port"},
    {"workers", S, V_COUNT, FIELD(workers), "workers", "N", "0", NULL,
     "event loops, each on a thread of its own, sharing the control port (0: one per core, "
     "1 with codec line); "
     "np-server only (np_server_group)"},
    {"max_clients", S, V_COUNT, FIELD(max_clients), "max-clients", "N", "1024", NULL,
     "logged-in clients at once"},
    {"max_proxies_per_client", S, V_COUNT, FIELD(max_proxies_per_client), "max-proxies-per-client",
     "N", "64", NULL, "public ports one client may hold"},
    {"max_work_pool", S, V_COUNT, FIELD(max_work_pool), "max-work-pool", "N", "64", NULL,
     "pre-opened work connections one client may hold"},
    {"login_timeout", S, V_DURATION, FIELD(login_timeout_ms), "login-timeout", "D", "10s", NULL,
     "close a connection not logged in after this"},
    {"login_backoff", S, V_DURATION, FIELD(login_backoff_ms), "login-backoff", "D", "1s", NULL,
     "after 3 failed logins from one address, refuse its logins this long, doubling per failure "
     "(0: off)"},
    {"login_backoff_max", S, V_DURATION, FIELD(login_backoff_max_ms), "login-backoff-max", "D",
     "5m", NULL, "the longest such wait"},
    {"reconnect_min", C, V_DURATION, FIELD(reconnect_min_ms), "reconnect-min", "D", "500ms", NULL,
     "the first wait before dialling the server again"},
    {"reconnect_max", C, V_DURATION, FIELD(reconnect_max_ms), "reconnect-max", "D", "30s", NULL,
     "the longest, as the wait doubles"},
    {"dial_timeout", C, V_DURATION, FIELD(dial_timeout_ms), "dial-timeout", "D", "5s", NULL,
     "for the server and the local services"},
    {"work_pool", C, V_COUNT, FIELD(work_pool), "work-pool", "N", "4", NULL,
     "work connections kept open ahead of visitors (with --mux false)"},
    {"mux", C, V_BOOL, FIELD(mux), "mux", "true|false", "true", NULL,
     "control and every visitor over one multiplexed connection (yamux); false: a TCP "
     "connection per visitor"},
    {"udp_idle_timeout", B, V_DURATION, FIELD(udp_idle_timeout_ms), "udp-idle-timeout", "D", "60s",
     NULL, "a UDP flow silent both ways this long ends"},
    {"udp_max_flows", S, V_COUNT, FIELD(udp_max_flows), "udp-max-flows", "N", "256", NULL,
     "UDP visitor addresses one proxy serves at once"},
    {"udp_datagram_path", C, V_BOOL, FIELD(udp_datagram_path), "udp-datagram-path", "true|false",
     "true", NULL,
     "carry UDP flows as encrypted datagrams to the server's UDP port when UDP gets through; "
     "false: always inside the tunnel"},
    {"udp_keepalive", C, V_DURATION, FIELD(udp_keepalive_ms), "udp-keepalive", "D", "10s", NULL,
     "probe that datagram path this often"},
    {"udp_path_retry", C, V_DURATION, FIELD(udp_path_retry_ms), "udp-path-retry", "D", "60s", NULL,
     "try the datagram path again this long after it failed"},
    {"max_frame", B, V_COUNT, FIELD(max_frame), "max-frame", "BYTES", "4096", NULL,
     "largest control message accepted"},
    {"mux_max_streams", S, V_COUNT, FIELD(mux_max_streams), "mux-max-streams", "N", "16384", NULL,
     "streams one multiplexed client connection may hold open"},
    {"mux_max_window", B, V_COUNT, FIELD(mux_max_window), "mux-max-window", "BYTES", "16777216",
     NULL, "how far a multiplexed stream's receive window may grow"},
    {"mux_session_window", B, V_COUNT, FIELD(mux_session_window), "mux-session-window", "BYTES",
     "67108864", NULL,
     "how far the receive windows of one multiplexed connection's streams may grow in total, "
     "beyond 256 KiB each (bounds what its readers that stop reading make this side hold)"},
    {"mux_server_window", S, V_COUNT, FIELD(mux_server_window), "mux-server-window", "BYTES",
     "1073741824", NULL, "the same, for all multiplexed client connections together"},
    {"relay_splice", B, V_BOOL, FIELD(relay_splice), "relay-splice", "true|false", "true", NULL,
     "move bulk transfers of plain TCP joins with splice(2)"},
    {"drain_timeout", B, V_DURATION, FIELD(drain_timeout_ms), "drain-timeout", "D", "30s", NULL,
     "on SIGTERM, how long joined visitors may finish (0: stop at once)"},
    {"drain_delay", S, V_DURATION, FIELD(drain_delay_ms), "drain-delay", "D", "0s", NULL,
     "on SIGTERM, how long to go on taking visitors while /healthz says 503, before the drain "
     "(behind a load balancer: its check interval times its fall count)"},
    {"insecure", B, V_BOOL, FIELD(insecure), "insecure", NULL, "false", NULL,
     "no TLS (the other side needs --insecure too); warns at start"},
    {"tls_dir", S, V_STR, FIELD(tls_dir), "tls-dir", "DIR", NULL, "the state directory",
     "where the self-signed key and certificate are created"},
    {"tls_cert", B, V_STR, FIELD(tls_cert), "tls-cert", "FILE", NULL, NULL,
     "a PEM certificate (chain) to present, with --tls-key: the server's own instead of the "
     "self-signed one, or a client's for servers that require one"},
    {"tls_key", B, V_STR, FIELD(tls_key), "tls-key", "FILE", NULL, NULL,
     "the private key of --tls-cert"},
    {"tls_client_ca", S, V_STR, FIELD(tls_client_ca), "tls-client-ca", "FILE", NULL, NULL,
     "require client certificates signed by this CA"},
    {"codec", B, V_CODEC, FIELD(codec), "codec", "NAME", "native", NULL,
     "native, or line: the seed article's protocol (needs --insecure)"},
    {"tunnel_bind", S, V_IPPORT, FIELD(tunnel_bind), "tunnel-bind", "ADDR:PORT", NULL, NULL,
     "line codec: where tunnel connections arrive"},
    {"visit_bind", S, V_IPPORT, FIELD(visit_bind), "visit-bind", "ADDR:PORT", NULL, NULL,
     "line codec: where visitors arrive"},
    {"tunnel", C, V_HOSTPORT, FIELD(tunnel), "tunnel", "HOST:PORT", NULL, NULL,
     "line codec: the server's tunnel port"},
    {"local", C, V_SEED_LOCAL, 0, 0, "local", "HOST:PORT", NULL, NULL,
     "line codec: the one local service"},
};

const size_t np__config_nkeys = NP_ARRAY_SIZE(np__config_keys);

const np__key *np__config_key_by_flag(const char *flag) {
  for (size_t i = 0; i < np__config_nkeys; i++)
    if (strcmp(np__config_keys[i].flag, flag) == 0)
      return &np__config_keys[i];
  return NULL;
}

static const np__key *nth(np_config_kind kind, size_t i) {
  for (size_t k = 0; k < np__config_nkeys; k++)
    if ((np__config_keys[k].kinds & (int)kind) && i-- == 0)
      return &np__config_keys[k];
  return NULL;
}

const char *np_config_key(np_config_kind kind, size_t i) {
  const np__key *k = nth(kind, i);
  return k != NULL ? k->name : NULL;
}

const char *np_config_key_attr(np_config_kind kind, const char *key, np_config_attr attr) {
  for (size_t i = 0; i < np__config_nkeys; i++) {
    const np__key *k = &np__config_keys[i];
    if (!(k->kinds & (int)kind) || strcmp(k->name, key) != 0)
      continue;
    switch (attr) {
    case NP_CONFIG_ATTR_FLAG:
      return k->flag;
    case NP_CONFIG_ATTR_ARG:
      return k->arg;
    case NP_CONFIG_ATTR_DEFAULT:
      return k->def;
    case NP_CONFIG_ATTR_DEFAULT_TEXT:
      return k->def_doc != NULL ? k->def_doc : k->def;
    case NP_CONFIG_ATTR_HELP:
      return k->help;
    }
    return NULL;
  }
  return NULL;
}
