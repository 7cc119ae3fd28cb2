/* The server's internals shared by its session core (server.c, session.c, login.c, work.c,
 * meter.c, frontend.c, server_view.c) and, through proxy.h, the proxy types. Not installed. */
#ifndef NP_SERVER_INTERNAL_H
#define NP_SERVER_INTERNAL_H

#include "natproxy/server.h"

#include "bufcache.h"
#include "chan.h"
#include "cidr.h"
#include "config.h"
#include "histo.h"
#include "internal.h"
#include "join.h"
#include "listen.h"
#include "mux.h"
#include "proto.h"
#include "server_shared.h"
#include "track.h"
#include "tls.h"
#include "transport_server.h"
#include "udp_seal.h"

/* group_visitor's tables for a TCP or UDP proxy's visitor forwarded by a peer (hops: the proxy's
 * port). */
#define NP_MOVE_TCP 2
#define NP_MOVE_UDP 3
/* ... and for a private proxy's visitor (VISIT), checked where it arrived, to the worker of the
 * proxy's owner (hops 0; the bytes to read first: the proxy's full name and a NUL). */
#define NP_MOVE_VISIT 4

/* S_IDLE: a pre-opened work connection, authenticated for its owner session and waiting for a
 * visitor. S_PEER: the control stream of another server of the cluster (peer_serve.c), which
 * forwards visitors here on the other streams of its connection. */
enum sstate { S_NEW, S_AUTH, S_READY, S_IDLE, S_PEER };

typedef struct session session;
typedef struct proxy proxy;
typedef struct visitor visitor;
typedef struct np__proxy_type np__proxy_type; /* proxy.h */
typedef struct np__frontend np__frontend;     /* frontend.c */
struct np__claim;                             /* below */

/* The counters of one proxy, or of one client session (natproxy/stats.h, NP_PROXY_COUNTERS),
 * shared with the joined visitors that count into them: those may outlive the proxy or the session
 * by a few loop turns (a join ends asynchronously), so each holds a reference (meter.c). */
typedef struct np__counts {
  np_proxy_stats st;
  int refs;
} np__counts;

/* What a joined visitor counts into: the server's counters, its proxy's and its client's (NULL
 * when there are none: the line codec's ports, or out of memory at their creation). The type holds
 * it from its join until the visitor is gone (np__meter_end). */
typedef struct np__meter {
  np_server_stats *srv;
  np__counts *px, *cl;
  np__first first; /* the visitor's wait for the first byte from its service (histo.h) */
} np__meter;

/* An option its client sent for a proxy before the PROXY (PROXY_OPT, docs/protocol.md): an HTTP
 * proxy's host names and the like, which PROXY's fields cannot hold. Kept in its session until
 * that PROXY, whose type's open reads them. */
typedef struct np__proxy_opt {
  char name[NP_MSG_NAME_MAX + 1]; /* the proxy's */
  char key[NP_MSG_NAME_MAX + 1];
  char *value;
} np__proxy_opt;
/* Options one session may hold at once: one proxy's lists (np__proxy_cfg's custom_domains holds
 * at most about a thousand names); a client that sends more is closed. */
#define NP_PROXY_OPTS_MAX 2048

/* A name a client registered (PROXY) and the frontend its type opened for it. */
struct proxy {
  struct np_server *srv;
  session *s; /* owner; NULL for the line codec's server-wide visit port */
  const np__proxy_type *type;
  void *impl; /* the type's: a listener, a UDP socket and its flows */
  char name[NP_MSG_NAME_MAX + 1];
  int port;
  np__cidrs allow_ips;             /* visitors from elsewhere are turned away */
  np__counts *counts;              /* NULL: none (the line codec's ports) */
  np__frontend *fe;                /* the listener it shares with others (frontend.c), or NULL */
  char hosts[NP_MSG_TEXT_MAX + 1]; /* named types: the names it serves, as its client was told */
  proxy *fe_next;                  /* the next proxy of fe */
  np__route_owner *route;          /* named types: the record its claims hold (vhost.c), or NULL */
  /* During the type's open only: its client's options (those of s->opts named like it) and room
   * for the reason of a refusal, which the client is told (NULL: none). */
  char *why;
  size_t why_len;
  proxy *next;
};

/* Somebody at a proxy's frontend, waiting in the pool for a work connection. */
struct visitor {
  struct np_server *srv;
  proxy *px;
  uint64_t id; /* its name in REQ_WORK / START */
  uint64_t session_id;
  uint64_t deadline;
  uint64_t since;    /* when it arrived (loop time, ms): the access log's duration */
  uint64_t since_ns; /* the same by uv_hrtime(): the first-byte histogram's finer clock */
  np__addr addr;     /* where it came from (family 0: not known) */
  np__addr to;       /* the server's address it reached (family 0: not known) */
  void *impl;        /* the type's: a TCP conn, a UDP flow */
  np__meter meter;   /* set for the type's join, which takes it over */
  unsigned pend : 1; /* holds one of srv->shared's pending (max_pending), until it is freed */
};

struct session {
  struct np_server *srv;
  np__chan *ch;
  enum sstate state;
  uint64_t id;
  char name[NP_MSG_NAME_MAX + 1];
  char peer[64];                /* for logs: its address, and "#stream" under a mux */
  struct sockaddr_storage addr; /* the client's address (of its TCP connection, under a mux too) */
  char addr_str[64];            /* addr as text ("?": not known), for np_server_client_addr */
  const np__user *user;         /* its users file entry; NULL: the shared token */
  unsigned char snonce[NP_MSG_KEY_LEN];
  unsigned char key[NP_MSG_KEY_LEN];
  uv_timer_t timer;
  uint64_t started, last_rx, last_tx;
  uint64_t resume; /* the client's instance id (LOGIN): a login with it may replace this session */
  uint64_t ping_out; /* when our first ping since the client last spoke went out */
  uint64_t ping_seq;
  proxy *proxies;
  size_t n_proxies;
  np__proxy_opt *opts; /* PROXY_OPTs waiting for their PROXY */
  size_t n_opts, cap_opts;
  np__counts *counts;             /* S_READY: the sum over its proxies (NULL: out of memory) */
  np__trackset joins;             /* its joined visitors */
  session *owner;                 /* S_IDLE: the control session this connection works for */
  session *idle_next, *idle_prev; /* S_IDLE: in owner->idle */
  session *idle;                  /* S_READY: its idle work connections */
  size_t n_idle;
  uint64_t idle_top, idle_seen;   /* S_READY: anti-replay window over WORK_IDLE serials */
  uint64_t visit_top, visit_seen; /* ... and over VISIT serials */
  int closes_left;                /* chan and timer */
  /* S_READY: the datagram path (udp_path.c) */
  np__seal seal;
  struct sockaddr_storage udp_peer; /* where its last authentic packet came from */
  uint64_t udp_last_rx;             /* when; 0: the path is not up */
  uint32_t udp_keepalive_ms;        /* how often the client says it probes */
  unsigned closing : 1, seal_ok : 1;
  /* S_READY by a login: holds one of srv->shared's clients and its name in the registry, given back
   * when it closes (the line codec's client has neither) */
  unsigned counted : 1;
  unsigned udp_client_up : 1; /* the client said its datagram path answers (PING's status) */
  unsigned direct_ok : 1;     /* its LOGIN said NP_LOGIN_DIRECT: it takes DIRECT_INTRO */
  uint64_t direct_second;     /* DIRECT and DIRECT_INTRO taken in this second (server_direct.c) */
  unsigned direct_count;
  uint64_t direct_said; /* the second a forged answer was last logged in */
  unsigned moved : 1;   /* S_NEW: its connection came from another worker (moved once only) */
  session *prev, *next;
};

struct np_server {
  uv_loop_t *loop;
  struct np_config cfg;
  const np_codec_ops *codec;
  const np_pool_ops *pool_ops;
  void *pool;
  np__logger log;
  np__listener *listener;
  np__listener *tunnel_listener; /* line codec */
  proxy *visit_proxy;            /* line codec */
  proxy control_px, tunnel_px;   /* names and counters for the control and tunnel listeners */
  np__frontend *frontends;       /* open public listeners (frontend.c) */
  np__cidrs pp_from;             /* proxy_protocol_from: its connections start with a header */
  uv_timer_t pool_timer;
  uv_timer_t trim_timer;  /* gives the heap back after a burst of connections (np__heap_trim) */
  uv_timer_t drain_timer; /* np_server_drain: watches the joins and the deadline */
  /* remember_ports (server_ports.c): the ports port-0 proxies got (a table in shared), saved to
   * ports_path ("": kept in memory only) a second after a change */
  uv_timer_t ports_timer;
  char ports_path[1100];
  unsigned ports_on : 1, ports_save_failed : 1;
  uint64_t drain_deadline;
  np_server_close_cb drain_cb;
  int refs_peak; /* of refs since the last trim */
  session *sessions;
  struct np__session_id *ids; /* the logged-in ones by id (session_ids.c) */
  uint64_t next_visitor_id;
  uint64_t next_session_id;
  np_server_stats stats;
  np__bufcache chunks;             /* relay buffers shared by this server's joins */
  np__tls *tls;                    /* NULL with insecure = true */
  np__users *users;                /* the users file (a reference); NULL without one */
  np__transport_server *transport; /* TLS, the multiplexer (transport_server.c); from start */
  /* What this server would share with other loops' (server_shared.h): the back-off and the failed
   * logins, the port memory, the current users file, the names of logged-in clients, the counts
   * behind max_clients and max_pending. Alone, it owns one of its own (np__server_create). */
  np__shared *shared;
  unsigned widx; /* its index among the loops that share shared: 0 alone */
  /* In a group (np_server_group): the group, the TLS context the workers share (worker 0's; NULL
   * for worker 0 itself), and the group's sum of counters, which np_server_get_stats of worker 0
   * answers with (a hook: the group is above this layer). shared is then the group's. */
  struct np_server_group *group;
  const np__tls *tls_base;
  /* Worker 0 of a group: the other workers still draining. Its drain (and with it the admin
   * endpoint's /healthz 503) lasts until they are done too, or until its own deadline. */
  unsigned drain_hold;
  size_t peer_joins; /* visitors forwarded to another server and joined there (peer.c) */
  /* np_server_drain with drain_delay: /healthz says 503 and the drain proper starts when the
   * delay is over (drain_timer), with this timeout. */
  unsigned drain_delaying : 1;
  uint64_t drain_after_ms;
  void (*group_stats)(const struct np_server *srv, np_server_stats *out);
  /* Ask worker widx to let a client name go to a login here (np__login_claim there): 0 or the
   * error. */
  int (*group_claim)(struct np_server *srv, unsigned widx, const struct np__claim *c);
  /* Worker 0: the clients of every worker, oldest first per worker (np_server_foreach_client). */
  int (*group_clients)(const struct np_server *srv, np_server_client_cb cb, void *arg);
  /* Worker 0: add the other workers' first-byte waits of type (NULL: all) to *h. */
  void (*group_first_byte)(const struct np_server *srv, const char *type, np__histo *h);
  /* Worker 0: how many workers, and each one's thread CPU time so far (ns; at most max). */
  unsigned (*group_workers)(const struct np_server *srv, uint64_t *cpu_ns, unsigned max);
  /* Worker 0: close the session named name wherever it is: 1 if a session had it, else 0. */
  int (*group_disconnect)(struct np_server *srv, const char *name);
  /* Worker 0: tell the other workers to reload as well. */
  void (*group_reload)(struct np_server *srv);
  /* Hand a connection to worker widx (np__server_adopt there): 0, or the error (m still ours). */
  int (*group_move)(struct np_server *srv, unsigned widx, np__moved *m);
  /* Hand a datagram-path packet to worker widx, which holds the session its id names
   * (np__upath_deliver there): 0, or the error (the packet is dropped). pkt and from are copied.
   * Set for every worker of a group of more than one: the datagram path then shares its port. */
  int (*group_udp)(struct np_server *srv, unsigned widx, const char *pkt, size_t len,
                   const struct sockaddr *from);
  /* Hand a vhost port's visitor to worker widx, whose route its request is
   * (np__server_adopt_visitor there; table: NP_ROUTES_*; hops: the moves it has made, this one
   * included), or a TCP or UDP proxy's visitor forwarded by a peer (table NP_MOVE_TCP or
   * NP_MOVE_UDP, hops: the port):
   * 0, or the error (m still ours). */
  int (*group_visitor)(struct np_server *srv, unsigned widx, int table, unsigned hops,
                       np__moved *m);
  /* Send m (copied) on the control stream of session sid of worker widx, if it is still logged in
   * there: 0, or the error of the post (m dropped). */
  int (*group_msg)(struct np_server *srv, unsigned widx, uint64_t sid, const np_msg *m);
  struct np__upath *upath;      /* the datagram path's socket (udp_path.c); NULL when off */
  struct np__admin_http *admin; /* admin_bind's endpoint (admin_server.c); NULL when off */
  /* The admin endpoint's start and stop, set by builtin.c: hooks, so that server.c calls nothing
   * above it. NULL: none. */
  int (*admin_start)(struct np_server *srv);
  void (*admin_stop)(struct np_server *srv);
  /* A reload's new admin credentials (cfg's): 0 or UV_ENOMEM, the old ones then still in force. */
  int (*admin_auth)(struct np_server *srv, const struct np_config *cfg);
  /* route_store's (route_store.c), on worker 0 only; its start and stop are hooks as above. */
  struct np__routes *routes;
  int (*routes_start)(struct np_server *srv);
  void (*routes_stop)(struct np_server *srv);
  /* Forwarding to the other servers of a cluster (peer.c), on every worker, set by builtin.c when
   * cluster_token is: hooks as above. forward takes a visitor of a route this server does not hold
   * (fwd: FORWARD's kind, port, text, name and addr; mv: its connection and the bytes read from it
   * so far) when the route table names a server that does: 0 (mv taken), or UV_ENOENT when it
   * names none (mv then untouched). mv NULL: only whether the table names one. */
  struct np__peers *peers;
  int (*peers_start)(struct np_server *srv);
  void (*peers_stop)(struct np_server *srv);
  int (*forward)(struct np_server *srv, const np_msg *fwd, np__moved *mv);
  /* VISIT as a connection's first message, on the worker of the visitor's session
   * (proxy_stcp.c, set by builtin.c: a hook as above). It answers and ends s itself: 0, or an
   * error for which s is closed as for any message out of place. */
  int (*visit)(session *s, const np_msg *m);
  /* DIRECT and DIRECT_INTRO on a logged-in session's control stream (server_direct.c; NULL: no
   * private proxies, so a protocol error). 0 or an error that ends the session. */
  int (*direct)(session *s, const np_msg *m);
  uint64_t started_ms;  /* loop time at np_server_start */
  char reload_err[600]; /* why the last reload changed nothing; "" when it did not fail */
  const np__proxy_type *types[256]; /* by kind (proxy.h) */
  /* By kind: the visitors' waits for the first byte from their service (np__meter.first, read by
   * np_server_get_first_byte); allocated when the type is registered. */
  np__histo *first_byte[256];
  void *type_data[256]; /* by kind: a type's own server-wide state */
  /* Tears down what a closing session holds above session.c (np__work_session_closing): a hook, so
   * that session.c calls nothing above it. */
  void (*session_closing)(session *s);
  int port;
  int refs; /* open handles and objects; the server is freed when closing and refs hits 0 */
  uint64_t accept_error_logged;
  uint64_t refused_unlogged;
  unsigned started : 1, closing : 1, draining : 1;
  np_server_close_cb close_cb;
  void *data;
};

static inline uint64_t now_ms(struct np_server *srv) {
  return uv_now(srv->loop);
}

static inline int native(const struct np_server *srv) {
  return (srv->codec->caps & NP_CODEC_CAP_AUTH) != 0;
}

/* server.c */
/* A server with no proxy types yet (np_server_new, in builtin.c, adds the built-in ones). */
int np__server_create(uv_loop_t *loop, const struct np_config *cfg, struct np_server **out);
/* Before np_server_start: srv becomes worker widx of group g, sharing sh (the group's: srv's own is
 * freed, and sh is not freed with srv) and, past worker 0, worker 0's TLS context. A worker past 0
 * has no admin endpoint and binds the control port (and the datagram path's) beside worker 0's. */
void np__server_join_group(struct np_server *srv, struct np_server_group *g, unsigned widx,
                           np__shared *sh, const np__tls *tls_base);
/* The level of a line every worker of a group logs alike (the start, a reload's outcome): worker
 * 0's says it for all of them, the others' go to debug. */
static inline np_log_level np__server_echo(const struct np_server *srv, np_log_level level) {
  return srv->widx > 0 ? NP_LOG_DEBUG : level;
}
/* login.c: a login on another worker of the group wants the name session sid holds here. */
typedef struct np__claim {
  char name[NP_MSG_NAME_MAX + 1];
  char peer[64];   /* the login's, for the log */
  uint64_t sid;    /* the session the registry names */
  uint64_t resume; /* the login's instance id */
  int takeover;
} np__claim;
/* Decide as a login here would: the old session goes, or it stays and the registry says so. */
void np__login_claim(struct np_server *srv, const np__claim *c);
/* server_view.c: what np_server_client and np_server_proxy handles are. */
typedef struct np__proxy_snap {
  char name[NP_MSG_NAME_MAX + 1];
  const char *type;
  int port;
  char hosts[NP_MSG_TEXT_MAX + 1];
  np_proxy_stats st;
} np__proxy_snap;
typedef struct np__client_snap {
  char name[NP_MSG_NAME_MAX + 1];
  char addr[64];
  uint64_t uptime_ms;
  int64_t mux_streams;
  const char *udp_path; /* a static string */
  unsigned worker;
  np_proxy_stats st;
  np__proxy_snap *proxies; /* n_proxies, allocated */
  size_t n_proxies;
} np__client_snap;
/* On s's thread: out (cleared first) describes s; UV_ENOMEM leaves out part filled (clear it). */
int np__client_snap_fill(const session *s, np__client_snap *out);
void np__client_snap_clear(np__client_snap *c);
/* The first-byte waits of this server's visitors of type (NULL: every type), added to *out: 1, or
 * 0 when no such type is registered. */
int np__server_first_byte_local(const struct np_server *srv, const char *type, np__histo *out);
/* np_server_foreach_client over this server's own sessions. */
int np__server_foreach_client_local(const struct np_server *srv, np_server_client_cb cb, void *arg);
/* A work connection moved here from another worker (its WORK or WORK_IDLE in m->pre): a session
 * of this server takes it, as if it had been accepted here. Takes everything m holds. */
void np__server_adopt(struct np_server *srv, np__moved *m);
/* A vhost port's visitor moved here from another worker (np__vhost_hand there): the type of table
 * (NP_ROUTES_*) takes it through its adopt, reading m->pre first. Takes everything m holds. */
void np__server_adopt_visitor(struct np_server *srv, int table, unsigned hops, np__moved *m);
/* The operator closes the logged-in client name (session sid; 0: whichever): 1 if one was. */
int np__server_disconnect(struct np_server *srv, const char *name, uint64_t sid);
/* This server's own counters (np_server_get_stats of a lone server). */
void np__server_get_stats_local(const struct np_server *srv, np_server_stats *out);
/* A new connection to the control port (its transport adds TLS); also how the fuzzer feeds a
 * session. */
void np__server_accept(struct np_server *srv, np_conn *c);

/* Read cfg's users_file into *out (its errors logged, and left in err): 0, NP_ECONFIG or the open
 * error. */
int np__server_load_users(struct np_server *srv, const struct np_config *cfg, np__users **out,
                          char *err, size_t errlen);

/* admin_server.c: the admin endpoint on admin_bind (0 when there is none), and its end. */
int np__admin_server_start(struct np_server *srv);
void np__admin_server_stop(struct np_server *srv);
int np__admin_server_auth(struct np_server *srv, const struct np_config *cfg);

/* server_view.c: np_server_log_stats' lines per client and per proxy. */
void np__server_log_views(const struct np_server *srv);

/* session.c */
int np__session_send(session *s, const np_msg *m);
/* CLOSE{status, text} to a live native client (nothing when its channel already failed). */
void np__session_send_close(session *s, int status, const char *text);
void np__session_close(session *s, int status, const char *why);
/* peer_serve.c: another server of the cluster logs in (PEER, in S_AUTH), and a stream of its
 * connection brings a visitor (FORWARD, in S_NEW). 0 or the error that ends s. */
int np__peer_login(session *s, const np_msg *m);
int np__peer_forwarded(session *s, const np_msg *m);
/* s's connection left its chan (np__chan_detach or np__chan_release): s goes. */
void np__session_detached(session *s);
/* The session's one timer: login deadline, heartbeats, the peer's death. */
void np__session_on_timer(uv_timer_t *t);
void np__server_unref(struct np_server *srv);

/* login.c */
int np__login_hello(session *s, const np_msg *m);
int np__login(session *s, const np_msg *m);
/* The token name must log in with, given the shared token (may be "") and the users file (may be
 * NULL): NULL when the name may not log in. */
const char *np__login_token(const char *shared, const np__users *users, const char *name,
                            const np__user **user);
/* A failed login: counted, remembered in the shared ring of failed logins (with name, the client
 * name tried: NULL when none was sent, and why), and charged to the address's back-off when only a
 * guesser or a hostile peer produces err. */
void np__login_failed(struct np_server *srv, const struct sockaddr_storage *addr, const char *peer,
                      int err, const char *why, const char *name);

/* work.c: proxies, visitors, the pending pool and joins (what the proxy types call is in proxy.h)
 */
/* The ports s may open beyond allow_ports' limits: its users file entry's, or NULL. */
const np__ports *np__session_ports(const session *s);
void np__work_proxy_msg(session *s, const np_msg *m);   /* PROXY */
int np__work_proxy_opt(session *s, const np_msg *m);    /* PROXY_OPT: 0 or NP_ELIMIT */
void np__work_proxy_close(session *s, const np_msg *m); /* PROXY_CLOSE */
void np__work_fail(session *s, const np_msg *m);        /* WORK_FAIL */
void np__work(session *s, const np_msg *m);             /* WORK as a connection's first message */
int np__work_idle(session *s, const np_msg *m);         /* WORK_IDLE, the same */
/* Whether serial n is fresh in a session's window (top: the highest seen, seen: a bit for each of
 * the 64 below it): each is taken once, and only within 64 of the highest. WORK_IDLE and VISIT
 * have a window each. */
int np__serial_fresh(uint64_t *top, uint64_t *seen, uint64_t n);
/* srv->session_closing: s's proxies, their visitors and its joins go. */
void np__work_session_closing(session *s);
/* why (why_len bytes, may be NULL): where the type says why it refused, or what the client
 * should know of a proxy it opened (HTTP: the hosts it serves). */
int np__proxy_open(struct np_server *srv, session *s, const char *name, uint8_t kind,
                   const char *addr, int port, char *why, size_t why_len, proxy **out);
void np__proxy_close(proxy *px);
/* Close px, one of s's proxies, alone: its listener, waiting visitors and joins; the client is told
 * why in a PROXY_RESP with status (it logs the proxy as refused), and so is the log. Status 0:
 * the client asked for it (PROXY_CLOSE), nothing is sent. */
void np__proxy_revoke(session *s, proxy *px, int status, const char *why);
/* Close a visitor that was never joined; end says how, for the access log ("timeout", "refused",
 * "local_failed", "aborted"; docs/config.md). */
void np__visitor_drop(visitor *v, const char *end);
/* np_pool_item_cb that drops the visitor (pool drains: its proxy or session went). */
void np__visitor_removed(uint64_t id, void *item, void *arg);
/* Hand v to its type to join with work (rest: bytes after its header). */
void np__server_join(struct np_server *srv, session *s, np_conn *work, visitor *v, const char *rest,
                     size_t rest_len);
void np__server_on_tunnel(np__listener *l, np_conn *c);
/* The session ends: its joins are cut, and the types hear of it. */
void np__session_end_joins(session *s);
int np__server_types_start(struct np_server *srv, const struct sockaddr *control);
void np__server_types_stop(struct np_server *srv);
void np__server_types_drain(struct np_server *srv);
/* Joined visitors s tracks now. */
size_t np__session_joins(const session *s);
/* Close s's proxies (their listeners and waiting visitors); its joins go on. */
void np__session_close_proxies(session *s);
/* server_ports.c: stable port-0 ports. start at np_server_start, stop (a last save, then the table
 * is freed) at close; recall: the port s's proxy had (0: none); note: the port it has now. */
void np__server_ports_start(struct np_server *srv);
void np__server_ports_stop(struct np_server *srv);
int np__server_ports_recall(struct np_server *srv, const session *s, const char *pname);
void np__server_ports_note(struct np_server *srv, const session *s, const char *pname, int port);
/* Close the control port (and the line codec's tunnel port): no new connections. */
void np__server_close_listeners(struct np_server *srv);
void np__server_types_session_end(session *s);
/* A client reported that visitor id's local service failed after it was joined. */
void np__session_local_failed(session *s, uint64_t id);

/* session_ids.c: logged-in sessions by id. add: 0 or UV_ENOMEM; find: NULL when none has it. */
int np__session_ids_add(struct np_server *srv, session *s);
session *np__session_ids_find(const struct np_server *srv, uint64_t id);
/* Send m on the control stream of session sid of this worker if it is logged in: 0, or UV_ENOENT
 * (a message for a session that went is dropped). */
int np__session_deliver(struct np_server *srv, uint64_t sid, const np_msg *m);
void np__session_ids_del(struct np_server *srv, const session *s);
void np__session_ids_clear(struct np_server *srv);

#endif
