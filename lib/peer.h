/* Forwarding a visitor to the server of the cluster that holds its route (docs/config.md,
 * "Servers that share the load"): one multiplexed connection per other server, made when a visitor
 * first needs it, logged in with PEER, and a stream per visitor that starts with FORWARD. The
 * owner's side is peer_serve.c. Not installed. */
#ifndef NP_PEER_H
#define NP_PEER_H

#include "server.h"

/* The hooks builtin.c sets (srv->peers_start, peers_stop, forward; see server.h). Start: 0 when
 * the server has no cluster_token, else 0, NP_ECONFIG or UV_ENOMEM. */
int np__peers_start(struct np_server *srv);
void np__peers_stop(struct np_server *srv);
int np__peers_forward(struct np_server *srv, const np_msg *fwd, np__moved *mv);

/* peer_shadow.c: worker 0's listeners on the TCP ports (and sockets on the UDP ports, peer_dgram.c)
 * other servers hold (the route table),
 * each visitor forwarded with np__peers_forward. sync (on peer.c's tick) opens and closes them as
 * the table and this server's own proxies change; close closes them all, then frees the set and
 * calls done (at once when none is open). */
typedef struct np__shadows np__shadows;
int np__shadows_new(struct np_server *srv, np__shadows **out);
void np__shadows_sync(np__shadows *set);
size_t np__shadows_count(const np__shadows *set);
void np__shadows_close(np__shadows *set, void (*done)(void *arg), void *arg);

/* peer_dgram.c: a UDP shadow, worker 0's socket on a UDP port another server holds, bound to addr
 * with SO_REUSEPORT (a proxy of this server's binds beside it, and it gives way). Each visitor
 * address is a flow forwarded with srv->forward as a visitor of udp:PORT; flows idle for
 * udp_idle_timeout go at the next sweep (sync's). Close closes its flows and its socket at once
 * (the port is free on return), then frees it and calls done. */
typedef struct np__dshadow np__dshadow;
int np__dshadow_open(struct np_server *srv, const struct sockaddr *addr, int port,
                     np__dshadow **out);
void np__dshadow_sweep(np__dshadow *d);
void np__dshadow_close(np__dshadow *d, void (*done)(void *arg), void *arg);

/* What the admin API shows: each server a link goes to, and whether it is up. */
int np__peers_foreach(const struct np_server *srv, int (*cb)(const char *owner, int up, void *arg),
                      void *arg);

#endif
