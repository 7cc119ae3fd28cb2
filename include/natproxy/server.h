/* np_server: accepts clients on one control port, opens public ports on their request, and joins
 * each visitor with the work connection the client opens for exactly that visitor. */
#ifndef NATPROXY_SERVER_H
#define NATPROXY_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <natproxy/codec.h>
#include <natproxy/common.h>
#include <natproxy/config.h>
#include <natproxy/log.h>
#include <natproxy/pool.h>
#include <natproxy/stats.h>

NP_BEGIN_DECLS

struct np_server;

typedef void (*np_server_close_cb)(struct np_server *server);

/* The server's counters: one uint64_t per line of NP_SERVER_COUNTERS (natproxy/stats.h), in that
 * order; what each means is there, and in docs/api.md. Grows only at the end. */
typedef struct np_server_stats {
  NP_SERVER_COUNTERS(NP_STATS_MEMBER_)
} np_server_stats;

/* A logged-in client and one of its proxies, as np_server_foreach_client and
 * np_server_client_foreach_proxy show them: valid only inside the callback that got them. */
typedef struct np_server_client np_server_client;
typedef struct np_server_proxy np_server_proxy;
/* Return nonzero to stop the walk early; that value is what the walk returns. */
typedef int (*np_server_client_cb)(const np_server_client *client, void *arg);
typedef int (*np_server_proxy_cb)(const np_server_proxy *proxy, void *arg);

/* cfg is borrowed: the server copies what it needs. Returns 0, NP_ECONFIG or UV_ENOMEM. */
NP_EXPORT int np_server_new(uv_loop_t *loop, const struct np_config *cfg, struct np_server **out);
/* Replace the codec (default: the one named by the config, "native"). codec is held for the
 * server's life. Before np_server_start only. Returns 0, NP_ESTATE (started), or UV_EINVAL (NULL,
 * a size this library does not know, or no decode/encode). */
NP_EXPORT int np_server_set_codec(struct np_server *server, const np_codec_ops *codec);
/* Replace the pending pool; the server takes ownership of pool and frees it with ops->destroy on
 * close (ops is held for the server's life). Before np_server_start only. Returns 0, NP_ESTATE, or
 * UV_EINVAL (ops NULL, of a size this library does not know, or missing a function; pool NULL). */
NP_EXPORT int np_server_set_pool(struct np_server *server, const np_pool_ops *ops, void *pool);
/* cb NULL means np_log_stderr. */
NP_EXPORT void np_server_set_log(struct np_server *server, np_log_level level, np_log_cb cb,
                                 void *arg);
/* Bind and listen. Returns 0 or the bind error (UV_EADDRINUSE, UV_EACCES, ...). */
NP_EXPORT int np_server_start(struct np_server *server);
/* The TLS certificate's fingerprint clients pin (--server-fingerprint): "sha256:AB:CD:...".
 * Borrowed for the server's life; NULL before np_server_start and with insecure = true. */
NP_EXPORT const char *np_server_fingerprint(const struct np_server *server);
/* Load, or create on first use, the TLS identity cfg names (tls_cert/tls_key or tls_dir) and write
 * its fingerprint into buf (at least 104 bytes). No server is started. Why it failed, and that a
 * new identity was created, go to log_cb (NULL: np_log_stderr) at level info and above. Returns 0,
 * UV_EINVAL, UV_ENOMEM or NP_ECONFIG. */
NP_EXPORT int np_server_identity(const struct np_config *cfg, np_log_cb log_cb, void *log_arg,
                                 char *buf, size_t len);
/* Read the configuration again, as it was made: the files np_config_load_file read, then the keys
 * and flags set after them, in the same order (np-server: its -c FILE, then its flags), and take it
 * as np_server_reconfigure does. On any error (logged with FILE:LINE) nothing changes. Returns 0,
 * NP_ESTATE (before np_server_start, or closing), NP_ECONFIG, or a file's open error. */
NP_EXPORT int np_server_reload(struct np_server *server);
/* Take cfg (borrowed; validated here) for new work: limits, allow_ports, users_file (read again,
 * whether or not its name changed), token, log level (when cfg's differs from the running one's),
 * proxy_protocol_from, admin credentials, timeouts. What it revokes is closed: sessions whose
 * name no longer logs in with the token they used, proxies on ports no longer allowed (the client
 * is told why). Keys that need a restart (bind, codec, TLS, admin_bind, max_frame,
 * mux_max_streams, the vhost ports) keep their running values, with a warning. On any error
 * nothing changes. Returns 0, NP_ESTATE, UV_EINVAL (not a server configuration), NP_ECONFIG,
 * UV_ENOMEM, or the users file's open error. docs/config.md, "Reload". */
NP_EXPORT int np_server_reconfigure(struct np_server *server, const struct np_config *cfg);
/* The control port actually bound (useful with port 0); 0 before start. */
NP_EXPORT int np_server_port(const struct np_server *server);
/* Copy the counters into out: the first min(size, sizeof(np_server_stats)) bytes, so a program
 * built against an older, shorter np_server_stats gets the fields it knows and one built against a
 * newer header finds the fields this library lacks zeroed. Pass sizeof(*out). out is borrowed. */
NP_EXPORT void np_server_get_stats(const struct np_server *server, np_server_stats *out,
                                   size_t size);
/* Write the counters to the server's log at info level (np-server: on SIGUSR1): one line
 * "stats: clients=N proxies=N ..." with the keys of NP_SERVER_COUNTERS, in its order; then for each
 * client "stats client=NAME addr=IP:PORT proxies=N visitors=N ..." and for each of its proxies
 * "stats proxy=NAME client=NAME type=tcp port=N visitors=N ...", with the keys of
 * NP_PROXY_COUNTERS. */
NP_EXPORT void np_server_log_stats(const struct np_server *server);
/* Call cb for each logged-in client, oldest login first, until cb returns nonzero. cb must not
 * close the server or reload it (it may read anything). Returns 0, or what cb returned. */
NP_EXPORT int np_server_foreach_client(const struct np_server *server, np_server_client_cb cb,
                                       void *arg);
/* The name it logged in with; borrowed, valid inside the callback. */
NP_EXPORT const char *np_server_client_name(const np_server_client *client);
/* Its address as the server sees it: "203.0.113.7:50123", "[2001:db8::1]:443". Borrowed. */
NP_EXPORT const char *np_server_client_addr(const np_server_client *client);
/* Milliseconds since its control connection was accepted (it logged in within login_timeout of
 * that), by the loop's clock. */
NP_EXPORT uint64_t np_server_client_uptime_ms(const np_server_client *client);
/* Streams open on its multiplexed connection now (its control stream, pre-opened and joined work
 * streams), or -1 when it is not multiplexed (mux = false: a TCP connection per visitor). */
NP_EXPORT int64_t np_server_client_mux_streams(const np_server_client *client);
/* Its datagram path for UDP flows: "up" (their datagrams go over it), "down" (the tunnel carries
 * them: not answering, or not tried yet), "off" (no UDP proxy, or never keyed: turned off, no TLS,
 * the line codec). Static. */
NP_EXPORT const char *np_server_client_udp_path(const np_server_client *client);
/* The worker (np_server_group) whose loop holds the client; 0 outside a group. */
NP_EXPORT unsigned np_server_client_worker(const np_server_client *client);
/* Copy its counters into out as np_server_get_stats does (pass sizeof(*out)): the sum over the
 * proxies it opened since it logged in, closed ones included. */
NP_EXPORT void np_server_client_get_stats(const np_server_client *client, np_proxy_stats *out,
                                          size_t size);
/* Call cb for each proxy the client has open, newest first, until cb returns nonzero. The same
 * rules as np_server_foreach_client. Returns 0, or what cb returned. */
NP_EXPORT int np_server_client_foreach_proxy(const np_server_client *client, np_server_proxy_cb cb,
                                             void *arg);
/* Its name (the client's section name); borrowed. */
NP_EXPORT const char *np_server_proxy_name(const np_server_proxy *proxy);
/* Its type's name: "tcp", "udp". Static. */
NP_EXPORT const char *np_server_proxy_type(const np_server_proxy *proxy);
/* The public port its frontend listens on. */
NP_EXPORT int np_server_proxy_port(const np_server_proxy *proxy);
/* HTTP and HTTPS proxies: the names it serves, as its client was told ("a.example.com,
 * b.example.com and 3 more"); "" for the other types. Borrowed. */
NP_EXPORT const char *np_server_proxy_hosts(const np_server_proxy *proxy);
/* Copy its counters into out as np_server_get_stats does (pass sizeof(*out)). */
NP_EXPORT void np_server_proxy_get_stats(const np_server_proxy *proxy, np_proxy_stats *out,
                                         size_t size);
/* How long joined visitors waited, from their arrival at a proxy (TCP: the accept; HTTP, HTTPS:
 * once routed by Host or server name; UDP: a new flow's first datagram) to the first byte from
 * their service (UDP: the first datagram back), as a histogram with fixed bounds since start.
 * type: "tcp", "udp", "http", "https" (np_server_proxy_type's names), or NULL for all together.
 * For i < n, le_us[i] gets the i-th bound (microseconds, ascending) and cum[i] how many waited at
 * most that long; *count gets how many got their first byte (the +Inf bucket) and *sum_us the sum
 * of their waits. Any of the pointers may be NULL. Visitors that went before a byte came back are
 * not counted. Returns the number of bounds the library keeps (13: 1 ms to 10 s; pass n = 0 to
 * ask), or UV_EINVAL for a type the server does not have. Borrowed outputs, written at once. */
NP_EXPORT int np_server_get_first_byte(const struct np_server *server, const char *type,
                                       uint64_t *le_us, uint64_t *cum, size_t n, uint64_t *count,
                                       uint64_t *sum_us);
/* Close every session, visitor and listener; cb runs once all handles are closed, and then the
 * server's memory is gone. Safe to call from any of the server's callbacks. */
NP_EXPORT void np_server_close(struct np_server *server, np_server_close_cb cb);
/* Close gracefully (np-server: on SIGTERM): stop taking logins and visitors at once (the control
 * port and every public port close, visitors still waiting for a tunnel are dropped), tell the
 * clients (they reconnect as soon as their session ends), let joined visitors finish for up to
 * timeout_ms (NP_DRAIN_CONFIGURED: the configuration's drain_timeout, 30 s unless set), then
 * np_server_close(server, cb). timeout_ms 0, a server not started, or a second
 * call while draining: np_server_close at once. /healthz answers 503 meanwhile. */
NP_EXPORT void np_server_drain(struct np_server *server, uint64_t timeout_ms,
                               np_server_close_cb cb);
/* 1 while np_server_drain waits for joined visitors, else 0. */
NP_EXPORT int np_server_draining(const struct np_server *server);
NP_EXPORT void *np_server_get_data(const struct np_server *server);
NP_EXPORT void np_server_set_data(struct np_server *server, void *data);

/* ---- np_server_group: one server on several event loops (the configuration's workers) -------
 *
 * Worker 0 is an np_server on the embedder's loop; each other worker one on a loop and thread of
 * its own. They share the control port (SO_REUSEPORT: the kernel spreads clients over them), the
 * TLS identity, the users file, the failed-login back-off and the port memory; a client and all
 * its tunnels live on the worker that accepted its connection. Call these on the embedder's loop's
 * thread only; every callback runs there. An np_server made with np_server_new stays one loop. */
#define NP_SERVER_WORKERS_MAX 256
struct np_server_group;
typedef void (*np_server_group_close_cb)(struct np_server_group *group);

/* cfg's workers (0: one per core, at most NP_SERVER_WORKERS_MAX). Returns 0, NP_ECONFIG or
 * UV_ENOMEM. */
NP_EXPORT int np_server_group_new(uv_loop_t *loop, const struct np_config *cfg,
                                  struct np_server_group **out);
/* Every worker's log goes to cb, one line at a time (the group serialises the calls). */
NP_EXPORT void np_server_group_set_log(struct np_server_group *group, np_log_level level,
                                       np_log_cb cb, void *arg);
/* Starts every worker, in order: 0 or the first error, every worker then closed again (call
 * np_server_group_close to free the group). */
NP_EXPORT int np_server_group_start(struct np_server_group *group);
NP_EXPORT unsigned np_server_group_workers(const struct np_server_group *group);
/* Worker 0: its port, fingerprint and admin endpoint are the group's. */
NP_EXPORT struct np_server *np_server_group_home(const struct np_server_group *group);
/* The sum of every worker's counters (np_server_get_stats of worker 0 says the same). */
NP_EXPORT void np_server_group_get_stats(const struct np_server_group *group, np_server_stats *out,
                                         size_t size);
/* Each worker rereads the configuration (np_server_reload); the result is logged. */
NP_EXPORT void np_server_group_reload(struct np_server_group *group);
/* np_server_drain on every worker; cb once all are closed and their threads gone. */
NP_EXPORT void np_server_group_drain(struct np_server_group *group, uint64_t timeout_ms,
                                     np_server_group_close_cb cb);
NP_EXPORT void np_server_group_close(struct np_server_group *group, np_server_group_close_cb cb);
NP_EXPORT void *np_server_group_get_data(const struct np_server_group *group);
NP_EXPORT void np_server_group_set_data(struct np_server_group *group, void *data);

NP_END_DECLS

#endif
