/* Counters as data. Each counter of the server and of the client is one line of a list below, and
 * everything else is made from that list: the stats structs (np_server_stats and np_proxy_stats in
 * server.h, np_client_stats in client.h), the line np_server_log_stats / np_client_log_stats write,
 * the field descriptions np_server_stats_field() / np_client_stats_field() give exporters
 * (Prometheus text, JSON), and the tables in docs/api.md and the man pages (scripts/gen-counters
 * writes them; the `checks` test suite fails when they differ from the lists).
 *
 * A new counter is a new line at the END of its list: the structs only ever grow at the end, so a
 * program built against an older header, which passes its smaller size to np_*_get_stats, keeps
 * reading the fields it knows (docs/api.md, "ABI policy").
 *
 * X(name, KIND, key, unit, help):
 *   name  the struct member (and the name an exporter shows)
 *   KIND  COUNTER (only grows while the process lives) or GAUGE (a level now, up and down)
 *   key   its name in the log line: the member's name, shorter for a few visitor counters, kept as
 *         they were because scripts parse the line
 *   unit  what one step counts
 *   help  one line; scripts/gen-counters needs each entry on one line of this file */
#ifndef NATPROXY_STATS_H
#define NATPROXY_STATS_H

#include <stddef.h>
#include <stdint.h>

#include <natproxy/common.h>

NP_BEGIN_DECLS

/* clang-format off */
#define NP_SERVER_COUNTERS(X) \
  X(clients, GAUGE, "clients", "sessions", "logged-in client sessions now") \
  X(proxies, GAUGE, "proxies", "listeners", "public listeners now") \
  X(pending, GAUGE, "pending", "visitors", "visitors waiting for a work connection now") \
  X(visitors_total, COUNTER, "visitors_total", "visitors", "visitors accepted") \
  X(visitors_joined, COUNTER, "joined", "visitors", "visitors joined with their work connection") \
  X(visitors_pooled, COUNTER, "pooled", "visitors", "visitors joined through a pre-opened work connection (also in visitors_joined)") \
  X(visitors_expired, COUNTER, "expired", "visitors", "visitors closed because no work connection came in time") \
  X(visitors_refused, COUNTER, "refused", "visitors", "visitors closed because a pending bound was reached") \
  X(visitors_failed, COUNTER, "failed", "visitors", "visitors closed because the client reported its local service unreachable") \
  X(work_unknown, COUNTER, "work_unknown", "connections", "work connections naming an unknown or expired visitor id") \
  X(logins_failed, COUNTER, "logins_failed", "logins", "logins refused: bad token, bad version, malformed login") \
  X(bytes_in, COUNTER, "bytes_in", "bytes", "bytes visitor -> client, counted as they are read (TCP and UDP)") \
  X(bytes_out, COUNTER, "bytes_out", "bytes", "bytes client -> visitor, counted as they are read (TCP and UDP)") \
  X(accept_errors, COUNTER, "accept_errors", "errors", "failed accepts on any port (out of descriptors, ...)") \
  X(refused_no_fd, COUNTER, "refused_no_fd", "connections", "connections refused because no descriptor was left") \
  X(logins_throttled, COUNTER, "logins_throttled", "logins", "logins refused unheard: their address failed too often lately") \
  X(visitors_denied, COUNTER, "denied", "visitors", "visitors closed at accept: their address is outside the proxy's allow_ips") \
  X(udp_flows, GAUGE, "udp_flows", "flows", "UDP visitor addresses being served now") \
  X(udp_dropped, COUNTER, "udp_dropped", "datagrams", "datagrams dropped: a flow over its queue, a slow tunnel, no flow") \
  X(udp_path_in, COUNTER, "udp_path_in", "datagrams", "datagrams that came over the datagram path (the rest came through the tunnel)") \
  X(udp_path_out, COUNTER, "udp_path_out", "datagrams", "datagrams sent over the datagram path") \
  X(udp_path_rejected, COUNTER, "udp_path_rejected", "packets", "packets at the datagram port that were no live session's: forged, replayed, truncated, oversized, unknown session") \
  X(pp_refused, COUNTER, "pp_refused", "connections", "connections from proxy_protocol_from closed without a valid PROXY protocol header in time") \
  X(logins_ok, COUNTER, "logins_ok", "logins", "logins accepted") \
  X(logins_bad_token, COUNTER, "logins_bad_token", "logins", "logins refused for a wrong token or a name the users file lacks (also in logins_failed)") \
  X(logins_timeout, COUNTER, "logins_timeout", "connections", "connections that sent no login within login_timeout (also in logins_failed)") \
  X(logins_refused, COUNTER, "logins_refused", "logins", "logins with the right token refused: max_clients reached, or the name in use by a live client") \
  X(visitors_aborted, COUNTER, "aborted", "visitors", "visitors closed unjoined because their proxy or client went, or their join failed") \
  X(mux_conns, GAUGE, "mux_conns", "connections", "multiplexed client connections now") \
  X(mux_streams, GAUGE, "mux_streams", "streams", "streams open on multiplexed client connections now (control and work)") \
  X(mux_buffered, GAUGE, "mux_buffered", "bytes", "bytes received on multiplexed client connections and held for readers that have not taken them (visitors that read slower than their data comes)") \
  X(mux_window_grown, GAUGE, "mux_window_grown", "bytes", "how far the receive windows of multiplexed client connections have grown beyond their initial 256 KiB, in total (at most mux_server_window)") \
  X(conns_moved, COUNTER, "conns_moved", "connections", "connections handed to another worker (workers > 1): work connections of mux = false clients to their session's, vhost visitors to their route's") \
  X(udp_path_forwarded, COUNTER, "udp_path_forwarded", "packets", "datagram-path packets handed to the worker that holds their session, as the kernel's steering missed it (workers > 1)") \
  X(peer_forwarded, COUNTER, "peer_forwarded", "visitors", "visitors of a route this server does not hold, forwarded to a server of the cluster that does (cluster_token)") \
  X(peer_forward_failed, COUNTER, "peer_forward_failed", "visitors", "forwarded visitors closed before their join: the other server unreachable, its login refused, or the route not there") \
  X(peer_visitors, COUNTER, "peer_visitors", "visitors", "visitors another server of the cluster forwarded here") \
  X(private_visits, COUNTER, "private_visits", "visitors", "visitors of private proxies (stcp, sudp) whose proof was right, sent on to the owner's client") \
  X(private_refused, COUNTER, "private_refused", "visitors", "visits of private proxies refused: a wrong secret_key (also in logins_failed, and backed off like a failed login), a client allow_users does not name, or no such proxy") \
  X(stun_answered, COUNTER, "stun_answered", "packets", "STUN Binding requests answered on the datagram path's port (a client learning its public address)") \
  X(stun_dropped, COUNTER, "stun_dropped", "packets", "STUN messages on that port left unanswered: not a Binding request we take, malformed, or over 500 answers a second per worker") \
  X(direct_introduced, COUNTER, "direct_introduced", "paths", "direct paths asked for (DIRECT) whose proof was right, introduced to the private proxy's owner") \
  X(direct_refused, COUNTER, "direct_refused", "paths", "direct paths refused: a wrong secret_key (also in logins_failed and backed off), a client allow_users does not name, no such proxy, an owner's client too old or gone; and direct-path messages over 8 a second from one session, dropped")

#define NP_CLIENT_COUNTERS(X) \
  X(connects, COUNTER, "connects", "logins", "successful logins") \
  X(work_opened, COUNTER, "work_opened", "connections", "work connections joined with the local service") \
  X(local_failed, COUNTER, "local_failed", "connections", "work connections whose local service was unreachable") \
  X(bytes_in, COUNTER, "bytes_in", "bytes", "bytes server -> local service, counted as they are read") \
  X(bytes_out, COUNTER, "bytes_out", "bytes", "bytes local service -> server, counted as they are read") \
  X(udp_path_up, GAUGE, "udp_path_up", "boolean", "1 while UDP flows use the datagram path, 0 while they use the tunnel") \
  X(udp_path_in, COUNTER, "udp_path_in", "datagrams", "datagrams that came over the datagram path") \
  X(udp_path_out, COUNTER, "udp_path_out", "datagrams", "datagrams sent over the datagram path") \
  X(direct_up, COUNTER, "direct_up", "paths", "direct paths to private proxies' owners that came up (type = xtcp visitors)") \
  X(direct_failed, COUNTER, "direct_failed", "paths", "tries of a direct path that failed, and direct paths that went down: their connections went through the server") \
  X(direct_conns, COUNTER, "direct_conns", "connections", "local connections of visitors carried on a direct path")

/* Per proxy, and per client (the sum over its proxies since it logged in, those it closed too):
 * np_server_proxy_get_stats and np_server_client_get_stats (natproxy/server.h). Updated as bytes
 * move, not when a visitor ends. */
#define NP_PROXY_COUNTERS(X) \
  X(visitors, COUNTER, "visitors", "visitors", "visitors let in (the server's visitors_total less those allow_ips turned away)") \
  X(visitors_denied, COUNTER, "denied", "visitors", "visitors closed at accept: their address is outside the proxy's allow_ips") \
  X(visitors_joined, COUNTER, "joined", "visitors", "visitors joined with their work connection") \
  X(visitors_dropped, COUNTER, "dropped", "visitors", "visitors that went unjoined: expired, refused, failed, aborted") \
  X(visitors_active, GAUGE, "active", "visitors", "visitors joined and not gone yet (TCP connections, UDP flows)") \
  X(bytes_in, COUNTER, "bytes_in", "bytes", "bytes visitor -> client, counted as they are read") \
  X(bytes_out, COUNTER, "bytes_out", "bytes", "bytes client -> visitor, counted as they are read")
/* clang-format on */

/* One uint64_t member per counter, in list order: the body of np_server_stats / np_client_stats. */
#define NP_STATS_MEMBER_(name, kind, key, unit, help) uint64_t name;

/* One proxy's counters, or one client's (the sum over its proxies): one uint64_t per line of
 * NP_PROXY_COUNTERS, in that order (np_server_proxy_get_stats, np_client_proxy_get_stats). Grows
 * only at the end. */
typedef struct np_proxy_stats {
  NP_PROXY_COUNTERS(NP_STATS_MEMBER_)
} np_proxy_stats;

typedef enum np_stat_kind {
  NP_STAT_COUNTER = 1, /* only grows while the process lives (Prometheus: counter) */
  NP_STAT_GAUGE = 2    /* a level now, goes up and down (Prometheus: gauge) */
} np_stat_kind;

/* The description of one counter. The library owns it (static, never freed); members are only
 * ever added at the end, and size says how many this library fills in, so a program built against
 * a newer header can tell what an older library lacks. */
typedef struct np_stat_field {
  size_t size;       /* sizeof(np_stat_field) of the library */
  const char *name;  /* the stats struct's member: "visitors_joined" */
  const char *key;   /* its name in the log line: "joined" */
  const char *unit;  /* what one step counts: "visitors", "bytes" */
  const char *help;  /* one line of text */
  np_stat_kind kind; /* NP_STAT_COUNTER or NP_STAT_GAUGE */
  size_t offset;     /* of its uint64_t in the stats struct */
} np_stat_field;

/* The i-th counter of np_server_stats (0, 1, ... in struct order), or NULL when i is past the
 * last. One at a time rather than as an array, so np_stat_field can grow without changing the
 * stride a caller compiled against an older header would use. */
NP_EXPORT const np_stat_field *np_server_stats_field(size_t i);
/* The same for np_client_stats. */
NP_EXPORT const np_stat_field *np_client_stats_field(size_t i);
/* The same for np_proxy_stats. */
NP_EXPORT const np_stat_field *np_proxy_stats_field(size_t i);

NP_END_DECLS

#endif
