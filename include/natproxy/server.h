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

NP_BEGIN_DECLS

struct np_server;

typedef void (*np_server_close_cb)(struct np_server *server);

typedef struct np_server_stats {
  uint64_t clients;          /* logged-in sessions now */
  uint64_t proxies;          /* public listeners now */
  uint64_t pending;          /* visitors waiting for a work connection now */
  uint64_t visitors_total;   /* visitors accepted */
  uint64_t visitors_joined;  /* visitors joined with their work connection */
  uint64_t visitors_pooled;  /* ... of which through a pre-opened work connection */
  uint64_t visitors_expired; /* closed because no work connection came in time */
  uint64_t visitors_refused; /* closed because a pending bound was reached */
  uint64_t visitors_failed;  /* closed because the client reported its local service unreachable */
  uint64_t work_unknown;     /* work connections naming an unknown or expired id */
  uint64_t logins_failed;    /* bad token, bad version, malformed login */
  uint64_t bytes_in;         /* visitor -> client: TCP of finished joins, UDP as it goes */
  uint64_t bytes_out;        /* client -> visitor, the same */
  uint64_t accept_errors;    /* failed accepts on any port (out of descriptors, ...) */
  uint64_t refused_no_fd;    /* connections refused because no descriptor was left */
  uint64_t logins_throttled; /* logins refused unheard: their address failed too often lately */
  uint64_t visitors_denied;  /* closed at accept: their address is outside the proxy's allow_ips */
  uint64_t udp_flows;        /* UDP visitor addresses being served now */
  uint64_t udp_dropped;      /* datagrams dropped: a flow over its queue, a slow tunnel, no flow */
  uint64_t udp_path_in;      /* datagrams that came over the datagram path (the rest: the tunnel) */
  uint64_t udp_path_out;     /* datagrams sent over it */
  uint64_t udp_path_rejected; /* packets at the datagram port that were not a live session's:
                                 forged, replayed, truncated, oversized, unknown session */
} np_server_stats;

/* cfg is borrowed: the server copies what it needs. Returns 0, NP_ECONFIG or UV_ENOMEM. */
NP_EXPORT int np_server_new(uv_loop_t *loop, const struct np_config *cfg, struct np_server **out);
/* Replace the codec (default: the one named by the config, "native"). Before np_server_start only.
 */
NP_EXPORT int np_server_set_codec(struct np_server *server, const np_codec_ops *codec);
/* Replace the pending pool; the server takes ownership of pool and frees it with ops->destroy on
 * close. Before np_server_start only. */
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
/* Read the users file (users_file) again and use it for new logins; sessions whose name left the
 * file or whose token changed are closed. On any error the old table stays in use. Returns 0,
 * NP_ESTATE (no users_file, or before np_server_start), or NP_ECONFIG / an open error (logged with
 * FILE:LINE). */
NP_EXPORT int np_server_reload(struct np_server *server);
/* The control port actually bound (useful with port 0); 0 before start. */
NP_EXPORT int np_server_port(const struct np_server *server);
NP_EXPORT void np_server_get_stats(const struct np_server *server, np_server_stats *out);
/* Write the counters to the server's log, one line at info level (np-server: on SIGUSR1). */
NP_EXPORT void np_server_log_stats(const struct np_server *server);
/* Close every session, visitor and listener; cb runs once all handles are closed, and then the
 * server's memory is gone. Safe to call from any of the server's callbacks. */
NP_EXPORT void np_server_close(struct np_server *server, np_server_close_cb cb);
NP_EXPORT void *np_server_get_data(const struct np_server *server);
NP_EXPORT void np_server_set_data(struct np_server *server, void *data);

NP_END_DECLS

#endif
