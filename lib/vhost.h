/* A public port shared by proxy types that route by name (docs/config.md, "HTTP services on a
 * shared port"): HTTP by Host (proxy_http.c) and HTTPS by SNI (proxy_https.c). It is open from the
 * server's start to its stop, whatever proxies come and go, and holds the names the proxies claimed
 * (http_route.c). Not installed. */
#ifndef NP_VHOST_H
#define NP_VHOST_H

#include "http_route.h"
#include "proxy.h"

/* Routes (name x location) one proxy may claim. */
#define NP_VHOST_CLAIMS_MAX 1024
/* Moves of a request between workers, at most: its owner moved meanwhile (it logged in again on
 * another worker) would send it on; past this it is answered 502 where it is. */
#define NP_VHOST_HOPS_MAX 2
/* The hops a visitor forwarded by another server of the cluster is handed on with: the worker
 * that adopts it knows it came from a peer (never forwarded again) and never moves it again. */
#define NP_VHOST_FROM_PEER 100

typedef struct np__vhost np__vhost;
/* Runs about once a second with the loop's time: the type's deadlines. */
typedef void (*np__vhost_tick_cb)(np__vhost *vh, uint64_t now);

struct np__vhost {
  struct np_server *srv;
  np__listener *l;
  int table; /* its routes: srv->shared->routes[table], one table for all the workers */
  uv_timer_t tick;
  np__vhost_tick_cb on_tick;
  const char *key; /* "vhost_http_port": for logs */
  int port;
  int refs;    /* the listener, the timer and the type's connections (np__vhost_ref) */
  void *conns; /* the type's: its visitors' connections */
};

/* Listen on the server's proxy_bind_addr at port (its connections from proxy_protocol_from start
 * with a PROXY header, as on every public port; in a group every worker listens there, with
 * SO_REUSEPORT); on_accept gets each connection, with the vhost as np__listener_data. key names the
 * setting in logs; table (NP_ROUTES_*) the shared route table. 0, or the bind error (logged). */
int np__vhost_open(struct np_server *srv, int port, const char *key, int table,
                   np__accept_cb on_accept, np__vhost_tick_cb on_tick, np__vhost **out);
/* Stop listening; it is freed once its handles are closed and the type's connections have let go
 * of it (the type closes them). */
void np__vhost_close(np__vhost *vh);
/* Stop taking new connections (the server drains); those it has go on. */
void np__vhost_stop_listening(np__vhost *vh);
/* A connection of the type holds vh until it is freed: its close may come after the server
 * stopped. */
void np__vhost_ref(np__vhost *vh);
void np__vhost_unref(np__vhost *vh);

/* From a type's open: claim the names px's client sent for it (its custom_domain and subdomain
 * options), each with every one of its location options when with_locations, else whole. On
 * success px->why (when set) lists the names, "a.example.com, b.example.com and 3 more"; on an
 * error it says which name failed and why, and nothing stays claimed. scheme ("http") is for
 * those messages. Returns 0, NP_EEXIST (another proxy has the name), NP_ECONFIG (no names; a
 * subdomain without the server's subdomain_host), UV_EINVAL (not a name the table takes), NP_ELIMIT
 * (more than NP_VHOST_CLAIMS_MAX routes) or UV_ENOMEM. */
int np__vhost_claim(np__vhost *vh, proxy *px, const char *scheme, int with_locations);
/* From a type's close: px's names in table (NP_ROUTES_*) are let go, remembered as gone
 * (http_route.h). Also once the vhost is closed: the table is the group's and outlives it. */
void np__vhost_release(struct np_server *srv, int table, proxy *px);

/* Route host (and path) in vh's table (np__http_routes_find's arguments and results). On
 * NP_HTTP_ROUTE_FOUND: *px is the proxy when this worker owns the route, else NULL and *widx says
 * which worker does (the caller hands the connection there, np__vhost_hand). */
int np__vhost_find(np__vhost *vh, const char *host, size_t hostlen, const char *path,
                   size_t pathlen, proxy **px, unsigned *widx);
/* Hand conn c, whose bytes pre (borrowed) were read already, to worker widx, where the type's adopt
 * reads them first (hops: the moves it will have made, this one included). c must not be reading,
 * nor have anything queued to write (else UV_EBUSY). 0 when it went (counted as conns_moved): the
 * caller closes c, its socket living on in the other worker (the peer sees no end); else the error
 * (logged), c usable as before: the caller answers or closes it. */
/* When the route table (servers that share the load) names another server of the cluster that
 * holds host, forward c there (peer.c), with pre (borrowed) read so far and the visitor's addresses
 * peer and to (to may be unset): 0 when it went (the caller closes c, whose socket lives on in the
 * forwarder), UV_ENOENT when no other server holds host (or forwarding is off), or another error;
 * then c is as it was. Same conditions on c as np__vhost_hand. */
/* Whether another server of the cluster holds host (the route table), as np__vhost_to_peer asks. */
int np__vhost_peer_holds(np__vhost *vh, const char *host, size_t hostlen);
int np__vhost_to_peer(np__vhost *vh, np_conn *c, const np__addr *peer, const np__addr *to,
                      const char *host, size_t hostlen, const char *pre, size_t len);
/* Like np__vhost_hand, for a c that cannot move (a stream of a peer's connection): worker widx gets
 * one end of a socketpair (adopted with NP_VHOST_FROM_PEER hops), and a relay on this loop joins
 * c with the other end. 0: c is the relay's now (the caller forgets it, and must not close it),
 * else the error, c as it was. */
int np__vhost_bridge(np__vhost *vh, np_conn *c, const np__addr *peer, const char *pre, size_t len,
                     unsigned widx);
int np__vhost_hand(np__vhost *vh, np_conn *c, const np__addr *peer, const char *pre, size_t len,
                   unsigned widx, unsigned hops);

#endif
