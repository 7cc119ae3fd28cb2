/* The parsed configuration as the server and client read it (public API: natproxy/config.h). */
#ifndef NP_CONFIG_INTERNAL_H
#define NP_CONFIG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "natproxy/codec.h"
#include "natproxy/config.h"

#define NP_HOSTPORT_MAX    262 /* a DNS name (253), brackets, colon, port */
#define NP_MAX_SERVERS     8   /* a client's servers: server = a.example.org, b.example.org */
#define NP_MAX_PORT_RANGES 64
#define NP_MAX_PROXIES     64
#define NP_MAX_VISITORS    32  /* [visitor NAME] sections and -L specs of one client */
#define NP_SECRET_MAX      255 /* a private proxy's secret_key, in bytes */
/* custom_domains of one proxy, all of its lines together: about two hundred names. A proxy config
 * is a value (np-client copies it), so the list is an array, not a pointer. */
#define NP_HTTP_DOMAINS_MAX 4096
/* Pre-opened work connections a client keeps by default (docs/performance.md says why). */
#define NP_DEFAULT_WORK_POOL 4
/* Whether clients multiplex by default: docs/config.md says why. */
#define NP_DEFAULT_MUX 1
/* Whether joins of two TCP sockets use the zero-copy relay: docs/performance.md has the figures. */
#define NP_DEFAULT_SPLICE 1
/* Room for a configuration's replay (struct np_config): the path of its file and the flags given
 * after it, as many as a command line holds in practice. */
#define NP_CONFIG_REPLAY_MAX 16384

/* Port ranges (allow_ports); n == 0 allows every port. */
typedef struct np__ports {
  struct {
    uint16_t lo, hi;
  } r[NP_MAX_PORT_RANGES];
  size_t n;
} np__ports;

typedef struct np__proxy_cfg {
  char name[NP_MSG_NAME_MAX + 1];
  char bind_addr[NP_MSG_NAME_MAX + 1]; /* on the server; "" = the server's default */
  int remote_port;                     /* -1 = not set; 0 = server picks */
  np_proxy_kind kind;
  char local[NP_HOSTPORT_MAX];         /* host:port of the private service */
  char allow_ips[NP_MSG_TEXT_MAX + 1]; /* visitor networks; "" = the [client] default */
  int proxy_protocol;                  /* PROXY protocol header to the service: 0 none, 1, 2 */
  /* type = http (docs/config.md, "HTTP services on a shared port"): lists are ", "-separated */
  char custom_domains[NP_HTTP_DOMAINS_MAX]; /* the key may repeat: each adds to the list */
  char subdomain[NP_MSG_NAME_MAX + 1];
  char locations[NP_MSG_TEXT_MAX + 1];
  char host_header_rewrite[NP_MSG_TEXT_MAX + 1];
  char http_user[NP_MSG_NAME_MAX + 1];
  char http_password[NP_MSG_TEXT_MAX + 1];
  /* type = stcp, sudp (docs/config.md, "Private services") */
  char secret_key[NP_SECRET_MAX + 1];    /* "": the [client]'s secret_key */
  char allow_users[NP_MSG_TEXT_MAX + 1]; /* client names that may visit, ","-separated; "": any */
} np__proxy_cfg;

/* A visitor of another client's private proxy: [visitor NAME], or -L [BIND:]PORT:OWNER.PROXY. */
typedef struct np__visitor_cfg {
  char name[NP_MSG_NAME_MAX + 1];
  np_proxy_kind kind;                    /* NP_PROXY_STCP or NP_PROXY_SUDP */
  char server_name[NP_MSG_NAME_MAX + 1]; /* the proxy's "OWNER.PROXY" */
  char secret_key[NP_SECRET_MAX + 1];    /* "": the [client]'s secret_key */
  char bind[NP_HOSTPORT_MAX];            /* where its local visitors connect (ADDR:PORT) */
  int direct; /* stcp: try a direct path to the owner first (type = xtcp, or direct = true) */
} np__visitor_cfg;

/* Whether a proxy of kind k carries datagrams; whether it is private (no public port). */
static inline int np__kind_udp(np_proxy_kind k) {
  return k == NP_PROXY_UDP || k == NP_PROXY_SUDP;
}
static inline int np__kind_private(np_proxy_kind k) {
  return k == NP_PROXY_STCP || k == NP_PROXY_SUDP;
}

struct np_config {
  np_config_kind kind;
  char err[512];

  /* both */
  char token[256];
  char codec[16];
  int log_level;
  int log_format; /* np_log_format: the stock sink np_server_new and np_client_new pick */
  uint64_t heartbeat_interval_ms;
  uint64_t heartbeat_timeout_ms;
  size_t max_frame;
  size_t mux_max_window;     /* a mux stream's receive window may grow to this */
  size_t mux_session_window; /* all of a mux connection's stream windows may grow this much */
  int relay_splice;          /* relay plain TCP joins with splice(2) (Linux) */
  char admin_bind[NP_HOSTPORT_MAX];     /* the admin endpoint ("": off) */
  char admin_token[256];                /* Bearer */
  char admin_user[NP_MSG_NAME_MAX + 1]; /* Basic */
  char admin_password[256];
  int insecure;        /* no TLS between client and server (docs/security.md) */
  char tls_cert[1024]; /* server: its certificate; client: its certificate for mutual TLS */
  char tls_key[1024];
  uint64_t udp_idle_timeout_ms; /* a UDP flow silent both ways this long ends */
  uint64_t drain_timeout_ms;    /* SIGTERM: how long joined visitors may finish (0: stop at once) */
  uint64_t drain_delay_ms;      /* SIGTERM: how long to go on taking work while /healthz says 503 */

  /* server */
  char bind[NP_HOSTPORT_MAX];
  char proxy_bind_addr[NP_MSG_NAME_MAX +
                       1];           /* where public ports listen unless a client names one */
  char tunnel_bind[NP_HOSTPORT_MAX]; /* line codec only */
  char visit_bind[NP_HOSTPORT_MAX];  /* line codec only */
  np__ports allow_ports;
  uint64_t pending_timeout_ms;
  size_t max_pending;
  size_t max_pending_per_proxy;
  size_t max_clients;
  size_t workers; /* event loops on threads of their own (np_server_group); 0: one per core */
  size_t max_proxies_per_client;
  size_t max_work_pool;     /* idle pre-opened work connections a client may hold */
  size_t mux_max_streams;   /* streams one multiplexed connection may hold open */
  size_t mux_server_window; /* all multiplexed connections' windows may grow this much */
  char tls_dir[1024];       /* where the self-signed identity lives ("": the default state dir) */
  char tls_client_ca[1024]; /* require client certificates signed by this CA */
  char users_file[1024];    /* per-client tokens and limits (docs/config.md) */
  /* load balancers whose connections start with a PROXY protocol header (docs/config.md) */
  char proxy_protocol_from[NP_MSG_TEXT_MAX + 1];
  uint64_t login_timeout_ms;
  uint64_t login_backoff_ms; /* first wait after the free failed logins; 0 = no back-off */
  uint64_t login_backoff_max_ms;
  size_t udp_max_flows; /* visitor addresses one UDP proxy serves at once */
  int access_log;       /* one info line per TCP visitor once it is gone (docs/config.md) */
  int remember_ports;   /* a port-0 proxy gets the port it had (server_ports.c) */
  int vhost_http_port;  /* the shared port of type = http proxies; 0: none */
  int vhost_https_port; /* ... of type = https proxies, routed by SNI; 0: none */
  uint64_t vhost_http_timeout_ms; /* an HTTP exchange that moves no byte this long is closed */
  char subdomain_host[NP_MSG_NAME_MAX * 2]; /* a proxy's subdomain = x means x.subdomain_host */
  /* Servers that share the load (docs/config.md, "Servers that share the load"): where the routes
   * live ("redis://HOST[:PORT][/DB]"; "": nowhere), how long a route outlives its server's last
   * renewal, and the address other servers reach this one at. */
  char route_store[NP_HOSTPORT_MAX + 16];
  uint64_t route_lease_ms;
  char cluster_advertise[NP_HOSTPORT_MAX];
  char cluster_token[256];        /* "": no forwarding between servers */
  char cluster_ca[1024];          /* "": the servers share one identity, each pins its own */
  char route_store_user[64];      /* Redis ACL user to AUTH as ("": the password alone) */
  char route_store_password[256]; /* "": no AUTH */

  /* client */
  char server[NP_MAX_SERVERS * NP_HOSTPORT_MAX]; /* HOST:PORT, or several, comma-separated */
  char name[NP_MSG_NAME_MAX + 1];
  char tunnel[NP_HOSTPORT_MAX]; /* line codec only */
  uint64_t reconnect_min_ms;
  uint64_t reconnect_max_ms;
  uint64_t dial_timeout_ms;
  size_t work_pool;           /* pre-opened work connections to keep */
  int mux;                    /* one multiplexed connection for control and work (docs/config.md) */
  int takeover;               /* replace a live client logged in under the same name */
  int udp_datagram_path;      /* try the datagram carrier for UDP proxies */
  uint64_t udp_keepalive_ms;  /* probe the datagram path this often */
  uint64_t udp_path_retry_ms; /* try a datagram path that is down again after this */
  char server_fingerprint[128]; /* pin the server's certificate */
  int tofu;                     /* trust on first use: record an unknown server's certificate */
  char known_servers[1024];     /* the fingerprints recorded ("": the state directory's) */
  char tls_ca[1024];            /* else trust this CA file, or "system" (the default) */
  char tls_server_name[256]; /* the name a CA-signed certificate must carry (default: server's) */
  char allow_ips[NP_MSG_TEXT_MAX + 1]; /* default for proxies without their own */
  np__proxy_cfg proxies[NP_MAX_PROXIES];
  size_t n_proxies;
  char secret_key[NP_SECRET_MAX + 1]; /* of private proxies and visitors that give none */
  np__visitor_cfg visitors[NP_MAX_VISITORS];
  size_t n_visitors;

  /* How it was made, so that a reload can make it again from the same sources (np__config_reread):
   * the files loaded and the keys, flags and -R/-U specs set through the public calls, in order,
   * as records of an op letter and NUL-terminated strings. A value (no pointer), like the rest:
   * the server and client keep a copy. */
  char replay[NP_CONFIG_REPLAY_MAX];
  size_t replay_len;
  int replay_lost; /* a record did not fit: np__config_reread refuses */
  int busy;        /* inside a public call: the calls it makes are not recorded again */
};

/* Make cfg again as it was made (its replay), from its files as they are now: the new
 * configuration in *out (free it with np_config_free), validated. Returns 0, or NP_ECONFIG / a
 * file's open error with the reason in err (*out NULL). */
int np__config_reread(const struct np_config *cfg, struct np_config **out, char *err,
                      size_t errlen);
/* Call cb with the name of each [server]/[client] key (of cfg's kind) whose value differs between
 * a and b, in the order of docs/config.md's table. Proxies are not compared. */
void np__config_diff(const struct np_config *a, const struct np_config *b,
                     void (*cb)(const char *key, void *arg), void *arg);

/* inih's limit on [section] names (Debian's build); longer ones, and lines longer than its line
 * buffer (198 bytes), are refused with FILE:LINE. */
#define NP_INI_SECTION_MAX 49

/* Parse an INI file with handler (inih's), which leaves its reason for refusing a line in msg.
 * Returns 0, NP_ECONFIG with "FILE:LINE: why" in err, or the open error. */
int np__ini_load(const char *path, int (*handler)(void *, const char *, const char *, const char *),
                 void *user, char *msg, char *err, size_t errlen);
/* "80, 8000-8999" -> ranges. Returns 0, or NP_ECONFIG with a message in err naming key. */
int np__ports_parse(const char *key, const char *v, np__ports *out, char *err, size_t errlen);
/* Is port inside one of the ranges (or are there none)? */
int np__ports_allow(const np__ports *p, int port);

/* ---- between config.c and config_proxy.c --------------------------------------------------- */

/* Set cfg's error ("key: why"); returns NP_ECONFIG. */
/* Note a public call that changed cfg in its replay (op 'F' file, 'K' section key value, 'S' flag
 * value, 'R'/'U' spec), unless it was made by another public call. */
void np__config_record(struct np_config *cfg, char op, const char *a, const char *b, const char *c);
int np__config_err(struct np_config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Value parsers and checks: 0, or NP_ECONFIG with the error set, naming key. */
int np__config_uint(struct np_config *cfg, const char *key, const char *v, uint64_t max,
                    uint64_t *out);
int np__config_hostport(struct np_config *cfg, const char *key, const char *v, int numeric);
int np__config_copy(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap);
int np__config_cidrs(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap);
/* The client's servers as the config keeps them ("HOST:PORT,HOST:PORT", each checked): copied one
 * by one into out (at most max of them); returns how many the list holds. */
size_t np__config_servers(const char *list, char (*out)[NP_HOSTPORT_MAX], size_t max);
/* config_proxy.c: a key of [proxy pname]; the checks of every proxy (np_config_validate); whether
 * v[0..n) may be a host name in a list (custom_domains, subdomain_host). */
int np__config_set_proxy_key(struct np_config *cfg, const char *pname, const char *key,
                             const char *v);
int np__config_check_proxies(struct np_config *cfg, int line_codec);
/* Split s in place at ':' outside [brackets]: the number of fields, or max + 1 if more. Drop the
 * brackets around s ("[::1]" -> "::1"). */
int np__config_split(char *s, char **fields, int max);
void np__config_unbracket(char *s);
/* A list of client names ("alice, bob") into dst as "alice,bob": 0, or NP_ECONFIG naming key. */
int np__config_names(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap);
/* config_visitor.c: a key of [visitor vname]; -L's spec; the checks of every visitor. */
int np__config_set_visitor_key(struct np_config *cfg, const char *vname, const char *key,
                               const char *v);
int np__config_add_local(struct np_config *cfg, const char *spec);
int np__config_check_visitors(struct np_config *cfg, int line_codec);
int np__config_host_ok(const char *v, size_t n);
/* route_store's "redis://HOST[:PORT][/DB]": host (brackets dropped), port (6379 unless given) and
 * database (0 unless given). 0 or UV_EINVAL. */
int np__config_route_store(const char *url, char *host, size_t hostlen, int *port, int *db);

#endif
