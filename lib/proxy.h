/* Proxy types: what visitors arrive at (docs/design.md, "Proxy types"). The session core (server.c
 * and work.c) knows a proxy only through its type's table below and never branches on the kind; a
 * type is one file (proxy_tcp.c, proxy_udp.c) plus a line that registers it (builtin.c), or an
 * embedder's or a test's own table passed to np__server_add_type. Not installed (yet): a type
 * handles np_conns, which are internal. */
#ifndef NP_PROXY_H
#define NP_PROXY_H

#include "server.h"

/* The table of a proxy type. Every function runs on the server's loop. */
struct np__proxy_type {
  const char *name; /* "tcp", "udp": for logs */
  uint8_t kind;     /* PROXY's kind on the wire (docs/protocol.md) */
  /* Its proxies share a port of the server's and are found by name (HTTP, HTTPS): PROXY's port is
   * not theirs to choose, and allow_ports does not apply. */
  uint8_t named;

  /* Server-wide hooks, each optional. server_start runs once the control port is bound (control:
   * its address and port), on every worker of a group (srv->widx says which: a type that must run
   * once returns at once on the others); an error there (the type logs it) fails np_server_start,
   * after which server_stop still runs. server_stop runs when the server closes, session_end when a
   * logged-in session goes (before its proxies close). A type keeps its server-wide state in
   * srv->type_data[its kind]. */
  int (*server_start)(struct np_server *srv, const struct sockaddr *control);
  void (*server_stop)(struct np_server *srv);
  /* The server drains (np_server_drain): stop taking visitors at any server-wide port of the
   * type's; its connections go on until server_stop. */
  void (*server_drain)(struct np_server *srv);
  void (*session_end)(session *s);

  /* Open px's frontend on addr (its port 0: any free one) and set px->port. 0, or the bind error
   * (UV_EADDRINUSE, ...), and then nothing is left open. px->impl is the type's. */
  int (*open)(proxy *px, const struct sockaddr *addr);
  /* Close px's frontend and whatever it still holds (its visitors have been dropped already); call
   * np__proxy_closed(px) once all of it is closed. */
  void (*close)(proxy *px);

  /* v was given its id, the name REQ_WORK and START use for it. Optional. */
  void (*visitor_id)(visitor *v);
  /* v's work connection came from s's client (s NULL: the line codec's tunnel port, or the session
   * went); rest: what the client sent after its header. The type owns work from here, whatever it
   * returns; the core frees v after the call (v->impl is the type's to keep or free). Returns 0
   * when the two are joined (counted as visitors_joined), or the error that ended them at once.
   * On 0 the type holds v->meter (counts its bytes into it, np__meter_end once the visitor is
   * gone); on an error the core ends it. */
  int (*join)(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len);
  /* v goes without a join; end says how, in the access log's words ("timeout", "refused",
   * "aborted", "local_failed"). The core frees v after the call. */
  void (*drop)(visitor *v, const char *end);
  /* Optional, for types with a vhost port: a visitor's connection c another worker read pre
   * (borrowed) from and handed here (np__vhost_hand; hops: the moves it made). The type reads pre
   * first, then routes it as one of its own. TCP: a visitor forwarded by a peer, bridged here
   * from the worker that holds the peer's link (hops: the proxy's port). */
  void (*adopt)(struct np_server *srv, np_conn *c, const char *pre, size_t len, unsigned hops);
  /* Optional: a visitor another server of the cluster forwarded here (peer_serve.c): c, a stream
   * of the peer's connection, carries its bytes; fwd says which route (FORWARD's port, text), from
   * and to where it came. The type routes it as one of its own, never to a peer again, and answers
   * it as it would any visitor (a 404, a TLS alert) when the route is not here (any more); from
   * NULL: not known. It must not write to c before it returns (the core's answer to the peer goes
   * first). 0 (c taken), or an error with c untouched. Types without it take no forwarded
   * visitors. */
  int (*forwarded)(struct np_server *srv, np_conn *c, const np_msg *fwd,
                   const struct sockaddr *from, const struct sockaddr *to);
};

/* The built-in types (proxy_tcp.c, proxy_udp.c, proxy_http.c, proxy_https.c), which builtin.c
 * registers. */
extern const np__proxy_type np__proxy_tcp, np__proxy_udp, np__proxy_http, np__proxy_https;
/* DIRECT and DIRECT_INTRO (server_direct.c): the server's hook for them. */
int np__server_direct(session *s, const np_msg *m);
/* Private proxies (proxy_stcp.c): no public port; visitor clients prove a secret (VISIT). */
extern const np__proxy_type np__proxy_stcp, np__proxy_sudp;

/* The checks a visit of a private proxy passes (private_gate.c), whichever way it comes (VISIT
 * through the server, or DIRECT for a path, server_direct.c), charged to the address of the
 * session s it arrived on. backoff: an address backed off hears nothing more (NP_EBACKOFF). admit:
 * the proxy m->name exists with kind m->kind (NP_ENOPROXY); m->mac proves its secret, bound to the
 * session (sid, key) by DIRECT's MAC or VISIT's (NP_ESECRET, charged as a failed login); the
 * client named who is in allow_users (NP_EDENIED); *p is the proxy. Both return 0 or the status,
 * with what to tell the visitor in why. */
int np__private_backoff(session *s, char *why, size_t len);
int np__private_admit(session *s, const np_msg *m, int direct, const unsigned char *key,
                      uint64_t sid, const char *who, np__private *p, char *why, size_t len);

/* TCP's join and drop, for types whose visitor is a plain connection once routed (v->impl: its
 * np_conn): the relay of bytes both ways, one access log line. */
int np__tcp_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len);
void np__tcp_drop(visitor *v, const char *end);

/* ---- what a type calls (work.c) ------------------------------------------------------------- */

/* Register a type for its kind (replacing any before). Before np_server_start. 0 or UV_EINVAL. */
int np__server_add_type(struct np_server *srv, const np__proxy_type *type);
/* A visitor arrived at px from an address (NULL: unknown) at the server's address to (NULL:
 * unknown), which the client passes on to its service in a PROXY protocol header; impl is the
 * type's (a conn, a flow). The core puts
 * it in the pool and asks px's client for a work connection, or joins it with a pre-opened one at
 * once; from here the visitor ends through the type's join or drop, never by the caller. Returns 0,
 * or UV_ENOMEM with nothing taken (the caller keeps impl). */
int np__visitor_arrive(proxy *px, void *impl, const struct sockaddr *from,
                       const struct sockaddr *to);
/* The type's close is done: px goes. */
void np__proxy_closed(proxy *px);
/* Whether px admits a visitor from addr (its allow_ips); counts and logs the ones it turns away. */
int np__proxy_admits(proxy *px, const struct sockaddr *addr);
/* Track a joined visitor with s (track.h), which cuts it short when it ends and notes
 * "local_failed" when the client reports its service failed after a pre-opened join; s NULL: in no
 * set. Untrack with np__track_remove. */
void np__session_track(session *s, np__track *t);
/* One access log line (docs/config.md): in is visitor -> client, out the other way. */
void np__access_log(struct np_server *srv, const char *name, const np__addr *from, uint64_t since,
                    uint64_t in, uint64_t out, const char *end);
/* How a join ended, in the access log's words. */
const char *np__join_end(int status, char *buf, size_t len);
/* ---- counters (meter.c) ---------------------------------------------------------------------- */

np__counts *np__counts_new(void);
void np__counts_unref(np__counts *c); /* NULL: nothing */
/* The core sets v->meter up before a type's join (s: where the work came from; since_ns: the
 * visitor's arrival by uv_hrtime, from which its wait for the first byte from its service is
 * measured); a type that returns 0 from join holds the meter until the visitor is gone, then calls
 * np__meter_end. */
void np__meter_start(np__meter *m, proxy *px, session *s, uint64_t since_ns);
void np__meter_end(np__meter *m);
/* The tallies for np__join_count_into: visitor -> client (in), client -> visitor (out; its first
 * byte ends the visitor's wait, noted in m, which must outlive the join). */
void np__meter_tally(np__meter *m, np__tally *in, np__tally *out);
/* Bytes moved outside a join (a datagram, an HTTP answer); out > 0 ends the wait as above. */
void np__meter_add(np__meter *m, uint64_t in, uint64_t out);
/* One more of a visitors_* counter of px and its client: np__proxy_count(px, s,
 * offsetof(np_proxy_stats, visitors_denied)). s: the session the visitor's work came from, or
 * NULL. */
void np__proxy_count(proxy *px, session *s, size_t member);

/* ---- frontends (frontend.c) ------------------------------------------------------------------ */

/* How a type's frontend works. Proxies share a frontend only when they ask for the same address
 * with the same ops table and it is shared. */
typedef struct np__frontend_ops {
  const char *name; /* for logs: "tcp", "http" */
  int shared;       /* several proxies may listen on one address (HTTP by Host) */
  /* A visitor connected: route it to one of np__frontend_proxies(fe) (np__proxy_admits,
   * np__visitor_arrive), or close it. */
  void (*accept)(np__frontend *fe, np_conn *c);
} np__frontend_ops;

/* Put px on the listener for addr: the one open for it when ops is shared, else a new one (port
 * 0: any free). Sets px->fe and px->port. 0, UV_EADDRINUSE (taken, by a listener of other ops or
 * one that is not shared), or the bind error. */
int np__frontend_attach(proxy *px, const struct sockaddr *addr, const np__frontend_ops *ops);
/* The same with np__listen_flags' flags (NP_LISTEN_REUSEPORT: beside a shadow that gives way). */
int np__frontend_attach_flags(proxy *px, const struct sockaddr *addr, const np__frontend_ops *ops,
                              unsigned flags);
/* The proxies of this loop's frontend of ops on port, or NULL. */
proxy *np__frontend_find(struct np_server *srv, int port, const np__frontend_ops *ops);
/* Take px off its frontend (from the type's close): np__proxy_closed(px) follows, at once or once
 * the listener, whose last proxy px was, is closed. */
void np__frontend_detach(proxy *px);
/* The proxies on fe, newest first, linked through px->fe_next. */
proxy *np__frontend_proxies(const np__frontend *fe);

/* A visitor's conn c that cannot move to another worker (a stream of a peer's connection):
 * worker widx gets one end of a socketpair as if c had moved there (group_visitor's table and
 * hops; peer: the visitor's address; pre, borrowed: bytes read from c so far, read there first),
 * and a relay on this loop joins c with the other end. 0: c is the relay's (the caller forgets
 * it and must not close it), else the error, c as it was. */
int np__server_bridge(struct np_server *srv, np_conn *c, const np__addr *peer, const char *pre,
                      size_t len, unsigned widx, int table, unsigned hops);

/* A visitor of the TCP or UDP (udp) proxy on port, forwarded by another server of the cluster on c:
 * to arrive here when this worker's proxy holds the port, else bridged to the worker that does
 * (its type's adopt then calls np__port_adopt). 0 (c taken) or UV_ENOENT (no proxy of this server
 * holds it; c untouched), or the bridge's error. arrive: 0 (c taken) or UV_ENOENT (c untouched). */
typedef int (*np__port_arrive_fn)(struct np_server *srv, np_conn *c, int port,
                                  const struct sockaddr *from, const struct sockaddr *to);
int np__port_forwarded(struct np_server *srv, np_conn *c, int udp, int port,
                       const struct sockaddr *from, const struct sockaddr *to,
                       np__port_arrive_fn arrive);
/* The bridged end of such a visitor, on the worker that holds port: from its remembered address. */
void np__port_adopt(struct np_server *srv, np_conn *c, int port, np__port_arrive_fn arrive);

/* Connections to l from proxy_protocol_from (the server's) start with a PROXY protocol header;
 * those that do not are closed, counted (pp_refused) and logged. */
void np__server_listener_pp(struct np_server *srv, np__listener *l);

/* Out of descriptors and the like on a listener named name at port: counted, and logged once a
 * second at most with how many connections were refused meanwhile. */
void np__server_accept_error(struct np_server *srv, const char *name, int port, int err,
                             uint64_t refused);
/* np__accept_fail_cb for any listener whose data is a proxy: logs once a second at most. */
void np__server_accept_failed(np__listener *l, int err, uint64_t refused);

#endif
