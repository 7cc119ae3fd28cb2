#include "dial.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct np__dialer {
  uv_loop_t *loop;
  uv_getaddrinfo_t gai;
  uv_connect_t connect;
  uv_timer_t timer;
  struct sockaddr_storage numeric;
  struct addrinfo *res, *next; /* resolved addresses, the next to try */
  np_conn *conn;               /* connecting, or in its TLS handshake */
  np__tls *tls;                /* NULL: plain TCP */
  uint64_t udp_idle_ms;        /* > 0: a UDP "dial" (np__dial_udp) */
  np__dial_cb cb;
  void *data;
  int pending; /* callbacks still to come: gai, connect, timer close */
  unsigned done : 1;
  unsigned resolving : 1;
};

static void maybe_free(np__dialer *d) {
  if (!d->done || d->pending > 0)
    return;
  if (d->res != NULL)
    uv_freeaddrinfo(d->res);
  free(d);
}

static void on_timer_close(uv_handle_t *h) {
  np__dialer *d = h->data;
  d->pending--;
  maybe_free(d);
}

/* Stop everything in flight; report (status, conn) unless cancelled (report == 0). */
static void complete(np__dialer *d, int status, np_conn *conn, int report) {
  d->done = 1;
  uv_close((uv_handle_t *)&d->timer, on_timer_close);
  if (d->resolving)
    uv_cancel((uv_req_t *)&d->gai);
  if (d->conn != NULL && conn == NULL) {
    /* Its connect callback comes back with UV_ECANCELED and finds done set. */
    np__conn_close(d->conn, NULL);
    d->conn = NULL;
  }
  if (report)
    d->cb(d->data, status, conn);
}

static void try_next(np__dialer *d, int last_err);

/* A failed handshake is final: another address of the same name would present the same problem. */
static void on_handshake(np_conn *c, int status, void *data) {
  np__dialer *d = data;

  d->conn = NULL;
  if (status != 0) {
    np__conn_close(c, NULL);
    complete(d, status, NULL, 1);
    return;
  }
  complete(d, 0, c, 1);
}

static void on_connect(uv_connect_t *req, int status) {
  np__dialer *d = req->data;
  np_conn *c = d->conn;

  d->pending--;
  if (d->done) {
    maybe_free(d);
    return;
  }
  d->conn = NULL;
  if (status != 0) {
    np__conn_close(c, NULL);
    try_next(d, status);
    return;
  }
  uv_tcp_nodelay(np__conn_tcp_handle(c), 1);
  if (d->tls != NULL) {
    if ((status = np__tls_wrap(d->tls, c, &d->conn)) == 0 &&
        (status = np__tls_handshake(d->conn, on_handshake, d)) == 0)
      return; /* the dial timeout keeps running: it covers the handshake too */
    np__conn_close(d->conn != NULL ? d->conn : c, NULL);
    d->conn = NULL;
    complete(d, status, NULL, 1);
    return;
  }
  complete(d, 0, c, 1);
}

static void on_stream_ready(uv_timer_t *t);

static int start_connect(np__dialer *d, const struct sockaddr *sa) {
  int r;

  if (d->udp_idle_ms > 0) {
    np_conn *c;
    if ((r = np__conn_udp_new(d->loop, sa, d->udp_idle_ms, &c)) != 0)
      return r;
    if (d->res != NULL) { /* resolved: already on a later turn */
      complete(d, 0, c, 1);
    } else {
      d->conn = c;
      uv_timer_start(&d->timer, on_stream_ready, 0, 0);
    }
    return 0;
  }
  if ((r = np__conn_tcp_new(d->loop, &d->conn)) != 0)
    return r;
  np__conn_tcp_set_peer(d->conn, sa);
  d->connect.data = d;
  if ((r = uv_tcp_connect(&d->connect, np__conn_tcp_handle(d->conn), sa, on_connect)) != 0) {
    np__conn_close(d->conn, NULL);
    d->conn = NULL;
    return r;
  }
  d->pending++;
  return 0;
}

static void try_next(np__dialer *d, int last_err) {
  while (d->next != NULL) {
    struct addrinfo *ai = d->next;
    d->next = ai->ai_next;
    if ((last_err = start_connect(d, ai->ai_addr)) == 0)
      return;
  }
  complete(d, last_err, NULL, 1);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  np__dialer *d = req->data;

  d->pending--;
  d->resolving = 0;
  d->res = res;
  if (d->done) {
    maybe_free(d);
    return;
  }
  if (status != 0) {
    complete(d, status, NULL, 1);
    return;
  }
  d->next = res;
  try_next(d, UV_EAI_NONAME);
}

static void on_timeout(uv_timer_t *t) {
  complete(t->data, UV_ETIMEDOUT, NULL, 1);
}

static np__dialer *dialer_new(uv_loop_t *loop, np__dial_cb cb, void *data) {
  np__dialer *d = calloc(1, sizeof(*d));
  if (d == NULL)
    return NULL;
  d->loop = loop;
  d->cb = cb;
  d->data = data;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  d->pending = 1; /* the timer's close */
  return d;
}

int np__dial(uv_loop_t *loop, const char *hostport, uint64_t timeout_ms, np__dial_cb cb, void *data,
             np__dialer **out) {
  return np__dial_tls(loop, hostport, timeout_ms, NULL, cb, data, out);
}

static int dial(uv_loop_t *loop, const char *hostport, uint64_t timeout_ms, np__tls *tls,
                uint64_t udp_idle_ms, np__dial_cb cb, void *data, np__dialer **out) {
  char host[260];
  char port[8];
  struct addrinfo hints;
  np__dialer *d;
  int pnum, r;

  if (np__split_hostport(hostport, host, sizeof(host), &pnum) != 0)
    return UV_EINVAL;
  if ((d = dialer_new(loop, cb, data)) == NULL)
    return UV_ENOMEM;
  d->tls = tls;
  d->udp_idle_ms = udp_idle_ms;

  if (np__parse_addr(hostport, &d->numeric) == 0) {
    r = start_connect(d, (struct sockaddr *)&d->numeric);
  } else {
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = udp_idle_ms > 0 ? SOCK_DGRAM : SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", pnum);
    d->gai.data = d;
    r = uv_getaddrinfo(loop, &d->gai, on_resolved, host, port, &hints);
    if (r == 0) {
      d->pending++;
      d->resolving = 1;
    }
  }
  if (r != 0) {
    complete(d, r, NULL, 0);
    return r;
  }
  if (d->conn == NULL || d->udp_idle_ms == 0) /* else a UDP conn waits for the next turn */
    uv_timer_start(&d->timer, on_timeout, timeout_ms, 0);
  if (out != NULL)
    *out = d;
  return 0;
}

int np__dial_tls(uv_loop_t *loop, const char *hostport, uint64_t timeout_ms, np__tls *tls,
                 np__dial_cb cb, void *data, np__dialer **out) {
  return dial(loop, hostport, timeout_ms, tls, 0, cb, data, out);
}

int np__dial_udp(uv_loop_t *loop, const char *hostport, uint64_t idle_ms, np__dial_cb cb,
                 void *data, np__dialer **out) {
  if (idle_ms == 0)
    return UV_EINVAL;
  return dial(loop, hostport, 5000, NULL, idle_ms, cb, data, out);
}

static void on_stream_ready(uv_timer_t *t) {
  np__dialer *d = t->data;
  np_conn *c = d->conn;
  d->conn = NULL;
  complete(d, 0, c, 1);
}

int np__dial_stream(uv_loop_t *loop, np__mux *m, np__dial_cb cb, void *data, np__dialer **out) {
  np__dialer *d;
  np_conn *c;
  int r;

  if ((r = np__mux_open(m, &c)) != 0)
    return r;
  if ((d = dialer_new(loop, cb, data)) == NULL) {
    np__conn_abort(c, NULL);
    return UV_ENOMEM;
  }
  d->conn = c;
  uv_timer_start(&d->timer, on_stream_ready, 0, 0);
  if (out != NULL)
    *out = d;
  return 0;
}

void np__dial_cancel(np__dialer *d) {
  if (!d->done)
    complete(d, UV_ECANCELED, NULL, 0);
}
