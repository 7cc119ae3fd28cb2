/* The public face of the multiplexer (natproxy/mux.h): thin wrappers that put a libuv stream under
 * np__mux and give each np_conn stream a handle with its own callbacks. */
#include "natproxy/mux.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "join.h"
#include "mux.h"

struct np_mux {
  np__mux *m;
  np_mux_accept_cb accept_cb;
  np_mux_end_cb end_cb;
  np_mux_close_cb close_cb;
  void *data;
  int close_called; /* np_mux_close ran: later calls do nothing, so close_cb runs once */
};

/* The first layout that had a size, and so the smallest a caller can pass. */
#define OPTIONS_SIZE_MIN (offsetof(np_mux_options, end_cb) + sizeof(np_mux_end_cb))

struct np_mux_stream {
  np_conn *c;
  struct np_mux *mux;
  np_mux_read_cb read_cb;
  np_mux_done_cb shutdown_cb;
  void *shutdown_arg;
  np_mux_stream_close_cb close_cb;
  void *data;
};

typedef struct api_write {
  np_conn_write req;
  struct np_mux_stream *st;
  np_mux_done_cb cb;
  void *arg;
} api_write;

static struct np_mux_stream *wrap(struct np_mux *mux, np_conn *c) {
  struct np_mux_stream *st = calloc(1, sizeof(*st));
  if (st == NULL)
    return NULL;
  st->c = c;
  st->mux = mux;
  c->data = st;
  c->borrow = 1; /* read_cb's buffer is documented as borrowed */
  return st;
}

static void on_accept(np__mux *m, np_conn *c) {
  struct np_mux *mux = np__mux_data(m);
  struct np_mux_stream *st = wrap(mux, c);
  if (st == NULL) {
    np__conn_abort(c, NULL);
    return;
  }
  mux->accept_cb(mux, st);
}

/* The owner hears of the end on a later turn (the mux's tick); the handle lives on until
 * np_mux_close, since the embedder may still call it. */
static void on_end(np__mux *m) {
  struct np_mux *mux = np__mux_data(m);
  if (mux->end_cb != NULL)
    mux->end_cb(mux, np__mux_end_status(m), np__mux_peer_goaway(m));
}

/* Options from a caller built against this header or an older one: fields are only ever added at
 * the end, so what an older caller lacks stays 0. A larger size comes from a newer header whose
 * fields this library cannot honour: refused rather than ignored. */
static int read_options(const np_mux_options *opts, np_mux_options *o) {
  memset(o, 0, sizeof(*o));
  if (opts == NULL)
    return 0;
  if (opts->size < OPTIONS_SIZE_MIN || opts->size > sizeof(*o))
    return UV_EINVAL;
  memcpy(o, opts, opts->size);
  return 0;
}

static void on_closed(np__mux *m) {
  struct np_mux *mux = np__mux_data(m);
  if (mux->close_cb != NULL)
    mux->close_cb(mux);
  free(mux);
}

int np_mux_new(uv_stream_t *transport, const np_mux_options *opts, np_mux_accept_cb accept_cb,
               void *data, struct np_mux **out) {
  np__mux_opts o = {0};
  np_mux_options po;
  struct np_mux *mux;
  void *old_data;
  np_conn *t;
  int r;

  if (transport == NULL || accept_cb == NULL || out == NULL ||
      uv_is_closing((uv_handle_t *)transport) || read_options(opts, &po) != 0)
    return UV_EINVAL;
  o.client = po.client;
  o.max_window = po.max_window;
  o.max_streams = po.max_streams;
  if ((mux = calloc(1, sizeof(*mux))) == NULL)
    return UV_ENOMEM;
  old_data = transport->data;
  if ((r = np__conn_tcp_wrap(transport, &t)) != 0) {
    free(mux);
    return r;
  }
  mux->accept_cb = accept_cb;
  mux->end_cb = po.end_cb;
  mux->data = data;
  if ((r = np__mux_new(transport->loop, t, &o, NULL, 0, on_accept, mux, &mux->m)) != 0) {
    free(t);
    transport->data = old_data;
    free(mux);
    return r;
  }
  np__mux_set_closed_cb(mux->m, on_closed);
  np__mux_set_end_cb(mux->m, on_end); /* also without po.end_cb: it keeps the handle valid */
  *out = mux;
  return 0;
}

void *np_mux_get_data(const struct np_mux *mux) {
  return mux->data;
}

void np_mux_set_data(struct np_mux *mux, void *data) {
  mux->data = data;
}

int np_mux_open(struct np_mux *mux, struct np_mux_stream **out) {
  struct np_mux_stream *st;
  np_conn *c;
  int r;

  if ((r = np__mux_open(mux->m, &c)) != 0)
    return r;
  if ((st = wrap(mux, c)) == NULL) {
    np__conn_abort(c, NULL);
    return UV_ENOMEM;
  }
  *out = st;
  return 0;
}

void np_mux_close(struct np_mux *mux, np_mux_close_cb cb) {
  if (mux->close_called)
    return;
  mux->close_called = 1;
  mux->close_cb = cb;
  np__mux_close(mux->m);
}

size_t np_mux_stream_count(const struct np_mux *mux) {
  return np__mux_stream_count(mux->m);
}

uint64_t np_mux_rtt_us(const struct np_mux *mux) {
  return np__mux_rtt_us(mux->m);
}

/* Never called: the stream hands its readers the bytes where they arrived (borrow). */
static void on_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  (void)c;
  (void)suggested;
  *buf = uv_buf_init(NULL, 0);
}

static void on_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  struct np_mux_stream *st = c->data;
  st->read_cb(st, nread, buf);
}

int np_mux_stream_read_start(struct np_mux_stream *st, np_mux_read_cb cb) {
  if (cb == NULL)
    return UV_EINVAL;
  st->read_cb = cb;
  return np__conn_read_start(st->c, on_alloc, on_read);
}

int np_mux_stream_read_stop(struct np_mux_stream *st) {
  return np__conn_read_stop(st->c);
}

static void on_write(np_conn_write *req, int status) {
  api_write *w = NP_CONTAINER_OF(req, api_write, req);
  if (w->cb != NULL)
    w->cb(w->st, status, w->arg);
  free(w);
}

int np_mux_stream_write(struct np_mux_stream *st, const uv_buf_t bufs[], unsigned nbufs,
                        np_mux_done_cb cb, void *arg) {
  api_write *w = malloc(sizeof(*w));
  int r;

  if (w == NULL)
    return UV_ENOMEM;
  w->st = st;
  w->cb = cb;
  w->arg = arg;
  if ((r = np__conn_write(st->c, &w->req, bufs, nbufs, on_write)) != 0)
    free(w);
  return r;
}

static void on_shutdown(np_conn *c, int status) {
  struct np_mux_stream *st = c->data;
  if (st->shutdown_cb != NULL)
    st->shutdown_cb(st, status, st->shutdown_arg);
}

int np_mux_stream_shutdown(struct np_mux_stream *st, np_mux_done_cb cb, void *arg) {
  st->shutdown_cb = cb;
  st->shutdown_arg = arg;
  return np__conn_shutdown(st->c, on_shutdown);
}

static void on_stream_closed(np_conn *c) {
  struct np_mux_stream *st = c->data;
  if (st->close_cb != NULL)
    st->close_cb(st);
  free(st);
}

void np_mux_stream_close(struct np_mux_stream *st, np_mux_stream_close_cb cb) {
  st->close_cb = cb;
  np__conn_close(st->c, on_stream_closed);
}

void np_mux_stream_reset(struct np_mux_stream *st, np_mux_stream_close_cb cb) {
  st->close_cb = cb;
  np__conn_abort(st->c, on_stream_closed);
}

uint32_t np_mux_stream_id(const struct np_mux_stream *st) {
  return np__mux_stream_id(st->c);
}

void *np_mux_stream_get_data(const struct np_mux_stream *st) {
  return st->data;
}

void np_mux_stream_set_data(struct np_mux_stream *st, void *data) {
  st->data = data;
}

int np_mux_join(struct np_mux_stream *st, uv_stream_t *other, np_join_cb cb, void *data,
                struct np_join **out) {
  void *other_data;
  np_conn *o;
  int r;

  if (other == NULL || cb == NULL || uv_is_closing((uv_handle_t *)other))
    return UV_EINVAL;
  other_data = other->data;
  if ((r = np__conn_tcp_wrap(other, &o)) != 0)
    return r;
  st->c->borrow = 0;
  if ((r = np__join(st->c, o, NULL, 0, NULL, cb, data, out)) != 0) {
    st->c->data = st;
    st->c->borrow = 1;
    free(o);
    other->data = other_data;
    return r;
  }
  free(st); /* the join owns the conn now */
  return 0;
}
