/* The client's way to its server (docs/design.md, "Transport"): TCP, TLS over it unless insecure,
 * and yamux over that when multiplexing. The session asks for a control conn, for work conns and
 * for the connection its keys come from, and never which of these it runs on: a WebSocket or QUIC
 * transport would be another implementation of the same few calls. The server's side of the seam
 * is transport_server.h: accepting (TLS), and the multiplexer once a connection's first message
 * says MUX. */
#ifndef NP_TRANSPORT_H
#define NP_TRANSPORT_H

#include <stdint.h>

#include "dial.h"

typedef struct np__transport np__transport;

typedef struct np__transport_opts {
  uv_loop_t *loop;
  const char *server; /* host:port of the control port (borrowed for the transport's life) */
  /* host:port for work conns when they are connections of their own (the line codec's tunnel
   * port); NULL: server */
  const char *work;
  uint64_t dial_timeout_ms;
  np__tls *tls; /* NULL: in clear; borrowed */
  int mux;      /* one connection: control on its first stream, a stream per work conn */
  uint32_t mux_max_window;
  uint64_t mux_session_window; /* what the mux's stream windows may grow by in total */
  unsigned keepalive_s;        /* TCP keepalive of a multiplexed connection */
  /* Says "multiplexed from here" on a new connection (the session's MUX message, in its codec). */
  int (*preface)(np_conn *c, void *arg);
  /* The owner's reference for each mux: +1 when one starts, -1 once it is closed and gone. */
  void (*ref)(void *arg, int delta);
  void *arg;
} np__transport_opts;

/* opts is copied. 0 or UV_ENOMEM. */
int np__transport_new(const np__transport_opts *opts, np__transport **out);
/* Once nothing dials and np__transport_disconnect has run. */
void np__transport_free(np__transport *t);
/* A new connection, and the control conn on it: cb(data, 0, conn) or cb(data, error, NULL), once,
 * later (unless np__dial_cancel(*out) first). One at a time: a new one replaces a cancelled one. */
int np__transport_connect(np__transport *t, np__dial_cb cb, void *data, np__dialer **out);
/* A work conn: a stream of the current connection when multiplexed, else a connection of its own.
 * As np__dial: cb runs later, once; errors of the call itself are returned. */
int np__transport_open(np__transport *t, np__dial_cb cb, void *data, np__dialer **out);
/* The connection control runs over: its TLS exporter keys the datagram path, its peer address is
 * the server's. control: the conn np__transport_connect gave. */
np_conn *np__transport_conn(np__transport *t, np_conn *control);
/* The current connection is done with: a multiplexed one says go away, writes what is queued and
 * closes (its streams fail). Nothing when there is none. */
void np__transport_disconnect(np__transport *t);

#endif
