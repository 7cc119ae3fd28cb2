/* The server's side of the transport (docs/design.md, "Transport"): how a client's connection is
 * accepted (TLS over it unless insecure) and, when its first message says MUX, turned into a
 * multiplexed one whose streams are connections of their own. Whatever is underneath, the session
 * gets plain np_conns through one callback and never asks which kind it has; a WebSocket transport
 * would be another file behind the same few calls. The client's side is transport.h. */
#ifndef NP_TRANSPORT_SERVER_H
#define NP_TRANSPORT_SERVER_H

#include <stdint.h>

#include "conn.h"
#include "internal.h"
#include "mux.h"
#include "tls.h"

typedef struct np__transport_server np__transport_server;

typedef struct np__transport_server_opts {
  uv_loop_t *loop;
  const np__logger *log; /* borrowed for the transport's life */
  np__tls *tls;          /* NULL: in clear; borrowed for the transport's life */
  uint32_t mux_max_window;
  uint32_t mux_max_streams;
  uint64_t mux_session_window; /* what one connection's stream windows may grow by in total */
  uint64_t mux_server_window;  /* and all connections' together */
  unsigned keepalive_s;        /* TCP keepalive of a multiplexed connection */
  /* A new connection for the session: an accepted one, or a stream of a multiplexed one. c is the
   * callee's. addr: the client's address as taken at accept (family 0: not known); peer: how the
   * log names it (a stream: its connection's address and its id). Both borrowed for the call. */
  void (*conn)(void *arg, np_conn *c, const struct sockaddr_storage *addr, const char *peer);
  /* A multiplexed connection nobody logged in on ended in garbage (err: NP_EPROTO, NP_ETOOBIG,
   * NP_ETLS): a failed login for its address. addr and peer borrowed for the call. */
  void (*garbage)(void *arg, const struct sockaddr_storage *addr, const char *peer, int err);
  /* The owner's reference for each multiplexed connection: +1 when one starts, -1 once it is
   * closed and gone (the transport touches nothing of its own after that call). */
  void (*ref)(void *arg, int delta);
  void *arg;
} np__transport_server_opts;

/* opts is copied. 0 or UV_ENOMEM. */
int np__transport_server_new(const np__transport_server_opts *opts, np__transport_server **out);
/* Once every multiplexed connection is gone (their references released). Accepts NULL. */
void np__transport_server_free(np__transport_server *t);
/* Close every multiplexed connection (the server stops); their streams fail. */
void np__transport_server_close(np__transport_server *t);

/* A new connection to the control port (taken): TLS goes over it when configured, then it goes to
 * opts.conn (at once; closed instead if TLS cannot be set up). */
void np__transport_server_accept(np__transport_server *t, np_conn *c);

/* Takes the connection out of its owner's hands: the conn and the bytes read after its MUX message
 * (borrowed until the multiplex call returns). */
typedef np_conn *(*np__transport_take_cb)(void *arg, const char **rest, size_t *rest_len);

/* A connection's first message said MUX: the rest of it is yamux, and each stream the client opens
 * goes to opts.conn with addr. take(arg) hands the connection over once nothing can fail before it.
 * Unless somebody logs in on it by deadline (loop time, ms), it is closed then. peer (copied) names
 * it in the log. Returns 0 (take ran: the connection is the transport's, even if the mux could not
 * start, when it is closed) or UV_ENOMEM (take never ran). */
int np__transport_server_multiplex(np__transport_server *t, const char *peer,
                                   const struct sockaddr_storage *addr, uint64_t deadline,
                                   np__transport_take_cb take, void *arg);
/* The multiplexed connections now and the streams open on them (t may be NULL: none), counted
 * when asked: a scrape walks them, the relay does not count. */
void np__transport_server_count(const np__transport_server *t, uint64_t *conns, uint64_t *streams);
/* What all its multiplexed connections hold for readers that have not taken it, and how far their
 * windows have grown beyond the initial ones (t may be NULL: nothing). */
void np__transport_server_held(const np__transport_server *t, uint64_t *buffered, uint64_t *grown);
/* Whether c is a stream of a multiplexed connection (which cannot be multiplexed again). */
int np__transport_server_is_stream(const np__transport_server *t, np_conn *c);
/* Streams open on the multiplexed connection c is a stream of, or -1 when c is not a stream. */
int64_t np__transport_server_streams(np_conn *c);
/* Somebody logged in on c: on a stream, its multiplexed connection's login deadline no longer
 * applies, and its end is no failed login. Nothing for a connection of its own. */
void np__transport_server_logged_in(np__transport_server *t, np_conn *c);
/* A server of the cluster logged in on c's multiplexed connection (PEER): each stream it opens
 * from now on may carry a forwarded visitor. Nothing for a connection of its own. */
void np__transport_server_set_peer(np__transport_server *t, np_conn *c);
/* Whether c is a stream of a connection a peer logged in on. */
int np__transport_server_is_peer(const np__transport_server *t, np_conn *c);
/* The connection c runs over: c itself, or a stream's multiplexed connection (TLS or TCP). Its TLS
 * exporter keys the datagram path. */
np_conn *np__transport_server_conn(np__transport_server *t, np_conn *c);
/* The session on c is over and the client's connection with it: a stream's multiplexed connection
 * says go away, writes what is queued and closes (its other streams fail). Nothing for a connection
 * of its own (its owner closes c). c may already be closing: a conn lives until its close
 * callback. */
void np__transport_server_end(np__transport_server *t, np_conn *c);

#endif
