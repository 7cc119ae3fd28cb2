/* The server's transport (transport_server.h): TLS over accepted connections, and the multiplexer
 * over those whose first message says MUX. */
#include <stdlib.h>
#include <string.h>

#include "transport_server.h"

#include "mux_core.h"

/* A multiplexed client connection: every stream is a connection of its own to the session layer.
 * Closed when its control session ends, or when nobody logs in on it in time. */
typedef struct muxconn {
  np__transport_server *t;
  np__mux *mux;
  uv_timer_t timer; /* login deadline */
  int logged_in;
  int is_peer;     /* a server of the cluster logged in on it: its streams carry visitors */
  int closes_left; /* mux and timer */
  char peer[64];
  struct sockaddr_storage addr;
  struct muxconn *prev, *next;
} muxconn;

struct np__transport_server {
  np__transport_server_opts o;
  muxconn *muxes;
  char *mux_rbuf;        /* read buffer shared by its muxes (NP_MUX_SHARED_READ_BUF) */
  np__mux_budget budget; /* the window growth all its muxes share (mux_server_window) */
};

int np__transport_server_new(const np__transport_server_opts *opts, np__transport_server **out) {
  np__transport_server *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return UV_ENOMEM;
  t->o = *opts;
  t->budget.limit = opts->mux_server_window != 0 ? opts->mux_server_window : UINT64_MAX;
  *out = t;
  return 0;
}

void np__transport_server_free(np__transport_server *t) {
  if (t == NULL)
    return;
  free(t->mux_rbuf);
  free(t);
}

void np__transport_server_close(np__transport_server *t) {
  for (muxconn *mc = t->muxes; mc != NULL; mc = mc->next)
    np__mux_close(mc->mux);
}

void np__transport_server_accept(np__transport_server *t, np_conn *c) {
  struct sockaddr_storage addr;
  char peer[64];
  np_conn *tc;

  if (np__conn_peer_addr(c, &addr) != 0)
    addr.ss_family = 0;
  if (t->o.tls != NULL) {
    if (np__tls_wrap(t->o.tls, c, &tc) != 0) {
      np__conn_close(c, NULL);
      return;
    }
    c = tc;
  }
  /* From the address taken at accept: a peer that reset at once has none to ask for any more. */
  if (addr.ss_family != 0)
    np__addr_str((const struct sockaddr *)&addr, peer, sizeof(peer));
  else
    np__conn_peer_str(c, peer, sizeof(peer));
  t->o.conn(t->o.arg, c, &addr, peer);
}

static void on_muxconn_part_closed(muxconn *mc) {
  np__transport_server *t = mc->t;
  if (--mc->closes_left > 0)
    return;
  free(mc);
  t->o.ref(t->o.arg, -1);
}

static void on_muxconn_timer_closed(uv_handle_t *h) {
  on_muxconn_part_closed(h->data);
}

static void on_mux_closed(np__mux *m) {
  muxconn *mc = np__mux_data(m);
  np__transport_server *t = mc->t;
  int st = np__mux_status(m);
  np__log(t->o.log, st == UV_ECANCELED ? NP_LOG_DEBUG : NP_LOG_INFO,
          "multiplexed connection from %s closed: %s", mc->peer,
          st == UV_ECANCELED ? "done" : np_strerror(st));
  if (!mc->logged_in && (st == NP_EPROTO || st == NP_ETOOBIG || st == NP_ETLS))
    t->o.garbage(t->o.arg, &mc->addr, mc->peer, st); /* garbage, no login */
  NP_DLIST_UNLINK(t->muxes, mc, prev, next);
  mc->mux = NULL;
  uv_close((uv_handle_t *)&mc->timer, on_muxconn_timer_closed);
  on_muxconn_part_closed(mc);
}

static void on_mux_stream(np__mux *m, np_conn *stream) {
  muxconn *mc = np__mux_data(m);
  char peer[64];

  np__conn_peer_str(stream, peer, sizeof(peer));
  mc->t->o.conn(mc->t->o.arg, stream, &mc->addr, peer);
}

static void on_mux_login_deadline(uv_timer_t *h) {
  muxconn *mc = h->data;
  if (mc->logged_in || mc->mux == NULL)
    return;
  np__log(mc->t->o.log, NP_LOG_INFO, "%s: no login on its multiplexed connection in time, closing",
          mc->peer);
  np__mux_close(mc->mux);
}

int np__transport_server_multiplex(np__transport_server *t, const char *peer,
                                   const struct sockaddr_storage *addr, uint64_t deadline,
                                   np__transport_take_cb take, void *arg) {
  np__mux_opts o = {.client = 0,
                    .max_window = t->o.mux_max_window,
                    .max_streams = t->o.mux_max_streams,
                    .session_window = t->o.mux_session_window,
                    .shared = &t->budget};
  const char *rest;
  size_t rest_len;
  muxconn *mc;
  np_conn *c;

  if (t->mux_rbuf == NULL && (t->mux_rbuf = malloc(NP_MUX_SHARED_READ_BUF)) == NULL)
    return UV_ENOMEM;
  o.read_buf = t->mux_rbuf;
  o.read_buf_len = NP_MUX_SHARED_READ_BUF;
  if ((mc = calloc(1, sizeof(*mc))) == NULL)
    return UV_ENOMEM;
  mc->t = t;
  np__strlcpy(mc->peer, peer, sizeof(mc->peer));
  mc->addr = *addr;
  c = take(arg, &rest, &rest_len);
  np__conn_keepalive(c, t->o.keepalive_s);
  if (np__mux_new(t->o.loop, c, &o, rest, rest_len, on_mux_stream, mc, &mc->mux) != 0) {
    np__conn_close(c, NULL);
    free(mc);
    return 0;
  }
  t->o.ref(t->o.arg, +1);
  mc->closes_left = 2;
  uv_timer_init(t->o.loop, &mc->timer);
  mc->timer.data = mc;
  uv_timer_start(&mc->timer, on_mux_login_deadline, np__ms_left(deadline, uv_now(t->o.loop)), 0);
  np__mux_set_closed_cb(mc->mux, on_mux_closed);
  NP_DLIST_PUSH(t->muxes, mc, prev, next);
  np__log(t->o.log, NP_LOG_DEBUG, "%s: multiplexed connection", mc->peer);
  return 0;
}

void np__transport_server_count(const np__transport_server *t, uint64_t *conns, uint64_t *streams) {
  *conns = *streams = 0;
  for (const muxconn *mc = t != NULL ? t->muxes : NULL; mc != NULL; mc = mc->next) {
    (*conns)++;
    *streams += np__mux_stream_count(mc->mux);
  }
}

void np__transport_server_held(const np__transport_server *t, uint64_t *buffered, uint64_t *grown) {
  *buffered = t != NULL ? t->budget.buffered : 0;
  *grown = t != NULL ? t->budget.grown : 0;
}

int64_t np__transport_server_streams(np_conn *c) {
  np__mux *m = np__mux_of(c);
  return m != NULL ? (int64_t)np__mux_stream_count(m) : -1;
}

int np__transport_server_is_stream(const np__transport_server *t, np_conn *c) {
  (void)t;
  return np__mux_of(c) != NULL;
}

void np__transport_server_logged_in(np__transport_server *t, np_conn *c) {
  np__mux *m = np__mux_of(c);
  (void)t;
  if (m != NULL)
    ((muxconn *)np__mux_data(m))->logged_in = 1;
}

void np__transport_server_set_peer(np__transport_server *t, np_conn *c) {
  np__mux *m = np__mux_of(c);
  (void)t;
  if (m != NULL)
    ((muxconn *)np__mux_data(m))->is_peer = 1;
}

int np__transport_server_is_peer(const np__transport_server *t, np_conn *c) {
  np__mux *m = np__mux_of(c);
  (void)t;
  return m != NULL && ((muxconn *)np__mux_data(m))->is_peer;
}

np_conn *np__transport_server_conn(np__transport_server *t, np_conn *c) {
  np__mux *m = np__mux_of(c);
  (void)t;
  return m != NULL ? np__mux_transport(m) : c;
}

void np__transport_server_end(np__transport_server *t, np_conn *c) {
  np__mux *m = np__mux_of(c);
  (void)t;
  if (m != NULL)
    np__mux_close(m);
}
