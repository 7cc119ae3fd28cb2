/* The client's transport (transport.h): dialing (dial.c) with TLS, and the multiplexer over it. */
#include <stdlib.h>
#include <string.h>

#include "transport.h"

struct np__transport {
  np__transport_opts o;
  np__mux *mux;   /* the current connection's, when multiplexed */
  char *mux_rbuf; /* its read buffer (NP_MUX_SHARED_READ_BUF), kept across reconnects */
  np__dial_cb cb; /* of the connect in progress */
  void *data;
};

int np__transport_new(const np__transport_opts *opts, np__transport **out) {
  np__transport *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return UV_ENOMEM;
  t->o = *opts;
  *out = t;
  return 0;
}

void np__transport_free(np__transport *t) {
  if (t == NULL)
    return;
  free(t->mux_rbuf);
  free(t);
}

/* The server never opens streams towards a client. */
static void on_mux_stream(np__mux *m, np_conn *stream) {
  (void)m;
  np__conn_abort(stream, NULL);
}

static void on_mux_closed(np__mux *m) {
  np__transport *t = np__mux_data(m);
  t->o.ref(t->o.arg, -1);
}

/* Turn a fresh connection into a multiplexed one; *c becomes its first stream, for control. */
static int start_mux(np__transport *t, np_conn **c) {
  np__mux_opts o = {
      .client = 1, .max_window = t->o.mux_max_window, .session_window = t->o.mux_session_window};
  int r;

  if (t->mux_rbuf == NULL && (t->mux_rbuf = malloc(NP_MUX_SHARED_READ_BUF)) == NULL)
    return UV_ENOMEM;
  o.read_buf = t->mux_rbuf;
  o.read_buf_len = NP_MUX_SHARED_READ_BUF;
  np__conn_keepalive(*c, t->o.keepalive_s);
  if ((r = t->o.preface(*c, t->o.arg)) != 0)
    return r;
  if ((r = np__mux_new(t->o.loop, *c, &o, NULL, 0, on_mux_stream, t, &t->mux)) != 0)
    return r;
  np__mux_set_closed_cb(t->mux, on_mux_closed);
  t->o.ref(t->o.arg, +1);
  return np__mux_open(t->mux, c);
}

static void on_dialed(void *data, int status, np_conn *c) {
  np__transport *t = data;
  np__dial_cb cb = t->cb;

  t->cb = NULL;
  if (status == 0 && t->o.mux && (status = start_mux(t, &c)) != 0) {
    if (t->mux == NULL)
      np__conn_close(c, NULL); /* else the mux has it, and goes with the disconnect */
    c = NULL;
  }
  cb(t->data, status, c);
}

int np__transport_connect(np__transport *t, np__dial_cb cb, void *data, np__dialer **out) {
  /* A connect cancelled with np__dial_cancel never called back: this one takes its place. */
  t->cb = cb;
  t->data = data;
  return np__dial_tls(t->o.loop, t->o.server, t->o.dial_timeout_ms, t->o.tls, on_dialed, t, out);
}

int np__transport_open(np__transport *t, np__dial_cb cb, void *data, np__dialer **out) {
  if (t->mux != NULL)
    return np__dial_stream(t->o.loop, t->mux, cb, data, out);
  return np__dial_tls(t->o.loop, t->o.work != NULL ? t->o.work : t->o.server, t->o.dial_timeout_ms,
                      t->o.tls, cb, data, out);
}

np_conn *np__transport_conn(np__transport *t, np_conn *control) {
  return t->mux != NULL ? np__mux_transport(t->mux) : control;
}

void np__transport_disconnect(np__transport *t) {
  if (t != NULL && t->mux != NULL) {
    np__mux_close(t->mux);
    t->mux = NULL;
  }
}
