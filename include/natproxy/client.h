/* np_client: dials the server, logs in, registers its proxies, opens a work connection per visitor
 * and joins it with the local service. Reconnects with capped exponential backoff and jitter. */
#ifndef NATPROXY_CLIENT_H
#define NATPROXY_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <natproxy/codec.h>
#include <natproxy/common.h>
#include <natproxy/config.h>
#include <natproxy/log.h>
#include <natproxy/stats.h>

NP_BEGIN_DECLS

struct np_client;

typedef enum np_client_event_type {
  NP_CLIENT_LOGGED_IN = 1,    /* session up */
  NP_CLIENT_PROXY_READY = 2,  /* a proxy got its public port: name, port */
  NP_CLIENT_PROXY_FAILED = 3, /* the server refused a proxy: name, status, text */
  NP_CLIENT_DISCONNECTED =
      4,              /* session lost: status; a reconnect is scheduled unless status is fatal */
  NP_CLIENT_FATAL = 5 /* giving up (wrong token, ...): status, text. The client stays idle. */
} np_client_event_type;

/* Lent to the event callback for the call. Members are only ever added at the end; size says how
 * many this library fills in, so a callback built against a newer header can tell. */
typedef struct np_client_event {
  size_t size; /* sizeof(np_client_event) of the library */
  np_client_event_type type;
  int status;
  const char *name; /* proxy name or NULL; borrowed */
  const char *text; /* human-readable detail or NULL; borrowed */
  /* NP_CLIENT_PROXY_READY: the public port; 0 when the codec does not tell it (line: the server's
   * visit port), and then the event comes at every login. */
  int port;
} np_client_event;

typedef void (*np_client_event_cb)(struct np_client *client, const np_client_event *ev);
typedef void (*np_client_close_cb)(struct np_client *client);

/* The client's counters: one uint64_t per line of NP_CLIENT_COUNTERS (natproxy/stats.h), in that
 * order. Grows only at the end. */
typedef struct np_client_stats {
  NP_CLIENT_COUNTERS(NP_STATS_MEMBER_)
} np_client_stats;

/* cfg is borrowed. Returns 0, NP_ECONFIG or UV_ENOMEM. */
NP_EXPORT int np_client_new(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out);
/* As np_server_set_codec: before np_client_start; 0, NP_ESTATE or UV_EINVAL. */
NP_EXPORT int np_client_set_codec(struct np_client *client, const np_codec_ops *codec);
NP_EXPORT void np_client_set_log(struct np_client *client, np_log_level level, np_log_cb cb,
                                 void *arg);
NP_EXPORT void np_client_set_event_cb(struct np_client *client, np_client_event_cb cb);
/* Start connecting. Returns 0 or NP_ESTATE when already started. */
NP_EXPORT int np_client_start(struct np_client *client);
/* Copy the counters into out, min(size, sizeof(np_client_stats)) bytes, as np_server_get_stats
 * does. Pass sizeof(*out). */
NP_EXPORT void np_client_get_stats(const struct np_client *client, np_client_stats *out,
                                   size_t size);
/* Write the counters to the client's log, one line at info level: "stats: connects=N
 * work_opened=N ..." with the keys of NP_CLIENT_COUNTERS, as np_server_log_stats does for the
 * server (np-client: on SIGUSR1). */
NP_EXPORT void np_client_log_stats(const struct np_client *client);
/* Read the configuration again, as it was made (np_server_reload says how; np-client: its -c FILE,
 * then its flags), and take it as np_client_reconfigure does. On any error (logged with FILE:LINE)
 * nothing changes. Returns 0, NP_ESTATE (before np_client_start, or closing), NP_ECONFIG, or a
 * file's open error. */
NP_EXPORT int np_client_reload(struct np_client *client);
/* Take cfg (borrowed; validated here) on the live session, which is not reconnected: proxies added
 * are registered, proxies removed are closed on the server (with their visitors), proxies whose
 * registration changed (port, bind address, type, allow_ips, HTTP options) are closed and
 * registered again (their visitors go), proxies whose local service or PROXY protocol header alone
 * changed take it for new visitors, and the others keep theirs. A server that predates closing one
 * proxy (docs/protocol.md, "Versions") gets the change through a reconnect, with a warning. The
 * log level and the [client] keys docs/config.md lists as such take effect at once; the others
 * (server, token, name, TLS, mux, ...) keep their running values, with a warning. On any error
 * nothing changes. Returns 0, NP_ESTATE, UV_EINVAL (not a client configuration), NP_ECONFIG or
 * UV_ENOMEM. docs/config.md, "Reload". */
NP_EXPORT int np_client_reconfigure(struct np_client *client, const struct np_config *cfg);
/* The session's state: "idle", "connecting", "logging-in", "logged-in", "backoff" (waiting to
 * reconnect) or "stopped" (gave up: NP_CLIENT_FATAL). Static. */
NP_EXPORT const char *np_client_state(const struct np_client *client);

/* A configured proxy as np_client_foreach_proxy shows it: valid only inside the callback. */
typedef struct np_client_proxy np_client_proxy;
typedef int (*np_client_proxy_cb)(const np_client_proxy *proxy, void *arg);

/* What the server made of a proxy. */
typedef enum np_client_proxy_state {
  NP_CLIENT_PROXY_CLOSED = 0,  /* no session: not registered now */
  NP_CLIENT_PROXY_PENDING = 1, /* sent, no answer yet */
  NP_CLIENT_PROXY_OK = 2,      /* open on the server: np_client_proxy_port */
  NP_CLIENT_PROXY_REFUSED = 3  /* refused or closed by the server: np_client_proxy_error */
} np_client_proxy_state;

/* Call cb for each configured proxy, in the configuration's order, until cb returns nonzero. cb
 * must not close or reload the client. Returns 0, or what cb returned. */
NP_EXPORT int np_client_foreach_proxy(const struct np_client *client, np_client_proxy_cb cb,
                                      void *arg);
/* Its name; borrowed, valid inside the callback. */
NP_EXPORT const char *np_client_proxy_name(const np_client_proxy *proxy);
/* "tcp", "udp", "http" or "https". Static. */
NP_EXPORT const char *np_client_proxy_type(const np_client_proxy *proxy);
/* The local service, "host:port"; borrowed. */
NP_EXPORT const char *np_client_proxy_local(const np_client_proxy *proxy);
/* The port it asks the server for (0: the server picks; HTTP and HTTPS: 0). */
NP_EXPORT int np_client_proxy_remote_port(const np_client_proxy *proxy);
NP_EXPORT np_client_proxy_state np_client_proxy_get_state(const np_client_proxy *proxy);
/* NP_CLIENT_PROXY_OK: the public port (the shared vhost port for HTTP and HTTPS; 0 with the line
 * codec, which does not say); else 0. */
NP_EXPORT int np_client_proxy_port(const np_client_proxy *proxy);
/* NP_CLIENT_PROXY_REFUSED: the server's error code and text (borrowed); else 0 and "". */
NP_EXPORT int np_client_proxy_error(const np_client_proxy *proxy, const char **text);
/* Its counters as the client sees them, min(size, sizeof(np_proxy_stats)) bytes: visitors (work
 * connections asked for), visitors_joined (joined with the local service), visitors_dropped (the
 * local service was unreachable), visitors_active, bytes_in (server -> service), bytes_out;
 * visitors_denied stays 0 (the server turns those away). Since the client started, across
 * reconnects; a proxy replaced by a reload starts again. Pass sizeof(*out). */
NP_EXPORT void np_client_proxy_get_stats(const np_client_proxy *proxy, np_proxy_stats *out,
                                         size_t size);
NP_EXPORT void np_client_close(struct np_client *client, np_client_close_cb cb);
/* Close gracefully (np-client: on SIGTERM): new visitors are turned away at once (the server hears
 * WORK_FAIL and closes them), pre-opened work connections close, and joined visitors finish for up
 * to timeout_ms (NP_DRAIN_CONFIGURED, natproxy/config.h: the configuration's drain_timeout); then
 * np_client_close(client, cb). timeout_ms 0, or a second call while draining: np_client_close at
 * once. */
NP_EXPORT void np_client_drain(struct np_client *client, uint64_t timeout_ms,
                               np_client_close_cb cb);
NP_EXPORT void *np_client_get_data(const struct np_client *client);
NP_EXPORT void np_client_set_data(struct np_client *client, void *data);

NP_END_DECLS

#endif
