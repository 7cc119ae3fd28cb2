/* The multiplexer's libuv adapter: mux_core.c is yamux itself; this file reads the transport into
 * it, writes the batches it builds (one vectored write at a time), and makes each of its streams
 * an np_conn. What the owners of streams are told (failed writes, EOF, errors, closes) is told
 * from an idle handle, on a later loop turn than the call that caused it (the np_conn callback
 * contract); a close timer bounds how long a closing mux may take to write what is queued. */
#include "mux.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mux_core.h"

#define READ_BUF   (64 * 1024 + NP_MUX_HDR_LEN)
#define READ_FRAME (64 * 1024) /* the body size relays write frames with */
/* Most handed to a reader at once: a relay chunk (NP_JOIN_CHUNK). */
#define BORROW_MAX     (64 * 1024)
#define CLOSE_GRACE_MS 2000 /* how long a closing mux may take to write what is queued */
#define NOTSENT_LOWAT  (128 * 1024)

/* The core reports system errors as -errno, which libuv's codes are on Unix. */
_Static_assert(NP_MUX_ENOMEM == UV_ENOMEM && NP_MUX_ECONNRESET == UV_ECONNRESET &&
                   NP_MUX_ECANCELED == UV_ECANCELED && NP_MUX_EPIPE == UV_EPIPE &&
                   NP_MUX_EINVAL == UV_EINVAL,
               "mux_core's error codes must be libuv's");

/* A stream as its owner sees it; lives in its core stream's user[] bytes. */
typedef struct mstream {
  np_conn base;
  np__mux *mux;
  np__mux_cstream *cs;
  np_conn_shutdown_cb shutdown_cb;
  np_conn_close_cb close_cb;
  unsigned reading : 1, eof_told : 1, err_told : 1, shutdown_told : 1, in_notify : 1;
  struct mstream *nnext; /* something to tell the owner */
} mstream;

struct np__mux {
  np_conn *t;
  np__mux_core *core;
  np__mux_opts o;
  np__mux_accept_cb accept_cb;
  np__mux_closed_cb closed_cb;
  np__mux_end_cb end_cb;
  void *data;
  mstream *nhead, *ntail; /* to notify */
  np_conn_write req;      /* the batch being written */
  uv_buf_t bufs[NP_MUX_BATCH_IOVS];
  char *rbuf;
  uv_idle_t tick;
  uv_prepare_t turn; /* the batch is written before the loop next waits */
  uv_timer_t timer;
  int handles;   /* timer, turn and transport still to close */
  int batch_err; /* the transport refused the batch at once: completed from the tick */
  unsigned freeing : 1;
  unsigned peer_eof : 1; /* the transport ended in order (the peer closed it) */
  unsigned held : 1;     /* the owner (end_cb set) still uses the mux: freed after np__mux_close */
  unsigned end_pending : 1;
};

static const np_conn_ops stream_ops;
static void on_tick(uv_idle_t *h);
static void maybe_free_mux(np__mux *m);

static mstream *ms_of(np__mux_cstream *cs) {
  return np__mux_cstream_user(cs);
}

static np__mux *mux_of_core(np__mux_core *c) {
  return np__mux_core_data(c);
}

static void notify(np__mux *m, mstream *s) {
  if (s->in_notify)
    return;
  s->in_notify = 1;
  s->nnext = NULL;
  if (m->ntail != NULL)
    m->ntail->nnext = s;
  else
    m->nhead = s;
  m->ntail = s;
  uv_idle_start(&m->tick, on_tick);
}

/* ---- reading: handing bytes to a stream's reader ------------------------------------------ */

/* Hand bytes to the reader while it reads; returns how many it took. */
static size_t hand_over(np__mux *m, mstream *s, const char *data, size_t len) {
  np__mux_cstream *cs = s->cs;
  size_t done = 0;

  while (done < len && s->reading && !cs->closing && cs->err == 0) {
    uv_buf_t buf = uv_buf_init(NULL, 0);
    size_t n;
    if (s->base.borrow) {
      /* The reader takes the bytes where they are: no copy. */
      n = len - done < BORROW_MAX ? len - done : BORROW_MAX;
      buf = uv_buf_init((char *)data + done, (unsigned)n);
      done += n;
      np__mux_core_consumed(m->core, cs, n, uv_hrtime());
      s->base.read_cb(&s->base, (ssize_t)n, &buf);
      continue;
    }
    s->base.alloc_cb(&s->base, len - done, &buf);
    if (buf.base == NULL || buf.len == 0) {
      s->err_told = 1;
      np__mux_core_reset(m->core, cs, UV_ENOBUFS);
      s->base.read_cb(&s->base, UV_ENOBUFS, &buf);
      break;
    }
    n = len - done < buf.len ? len - done : buf.len;
    memcpy(buf.base, data + done, n);
    done += n;
    np__mux_core_consumed(m->core, cs, n, uv_hrtime());
    s->base.read_cb(&s->base, (ssize_t)n, &buf);
  }
  return done;
}

/* Tell the reader what is pending, in order: buffered bytes, then EOF or the error. */
static void tell_reader(np__mux *m, mstream *s) {
  np__mux_cstream *cs = s->cs;
  uv_buf_t none = uv_buf_init(NULL, 0);
  const char *p;
  size_t len, done;

  while (s->reading && !cs->closing && cs->err == 0 && (p = np__mux_core_peek(cs, &len)) != NULL) {
    done = hand_over(m, s, p, len);
    np__mux_core_advance(cs, done); /* a no-op if the stream was reset meanwhile */
    if (done < len)
      return;
  }
  if (!s->reading || cs->closing || cs->rhead != NULL)
    return;
  if (cs->err != 0 && !s->err_told) {
    s->err_told = 1;
    s->base.read_cb(&s->base, cs->err, &none);
  } else if (cs->err == 0 && cs->fin_rcvd && !s->eof_told) {
    s->eof_told = 1;
    s->base.read_cb(&s->base, UV_EOF, &none);
  }
}

static void stream_free(np__mux *m, mstream *s) {
  np__mux_cstream *cs = s->cs;
  np__mux_core_stream_unlink(m->core, cs);
  if (s->close_cb != NULL)
    s->close_cb(&s->base);
  np__mux_core_stream_free(cs); /* s with it */
}

/* Tell the owner once that the mux ended. Only from the loop (the tick, or the tick's close). */
static void tell_end(np__mux *m) {
  if (!m->end_pending)
    return;
  m->end_pending = 0;
  if (m->end_cb != NULL)
    m->end_cb(m);
}

static void on_tick(uv_idle_t *h) {
  np__mux *m = h->data;
  mstream *s;
  void *token;

  /* A batch the transport refused: its frames' writers learn it now, on a later turn than the
   * write or shutdown that queued them, and the notices that follow are handled below. */
  if (m->batch_err != 0) {
    int err = m->batch_err;
    m->batch_err = 0;
    np__mux_core_written(m->core, err);
  }
  /* First, so that streams the owner closes from there are freed in this same visit. */
  tell_end(m);
  while ((s = m->nhead) != NULL) {
    np__mux_cstream *cs = s->cs;
    m->nhead = s->nnext;
    if (m->nhead == NULL)
      m->ntail = NULL;
    s->in_notify = 0;
    while ((token = np__mux_core_take_failed(cs)) != NULL) {
      np_conn_write *req = token;
      req->cb(req, cs->err != 0 ? cs->err : UV_ECANCELED);
    }
    if (s->shutdown_cb != NULL && !cs->fin_sent && cs->err != 0 && !s->shutdown_told) {
      s->shutdown_told = 1;
      s->shutdown_cb(&s->base, cs->err);
    }
    if (cs->closing) {
      /* A callback above may have queued it again (closing it, say): free it on that visit. */
      if (np__mux_core_can_free(cs) && !s->in_notify)
        stream_free(m, s);
      continue;
    }
    tell_reader(m, s);
  }
  /* A callback above may have failed a batch at once or ended the mux: the tick comes back for
   * that on the next turn (stopping here lost it, and a mux nobody held open again was never
   * freed). */
  if (m->batch_err == 0 && !m->end_pending && m->nhead == NULL)
    uv_idle_stop(&m->tick);
  maybe_free_mux(m);
}

/* ---- writing ------------------------------------------------------------------------------ */

/* Completes like a failed write, so every frame's stream is released the same way, but from the
 * tick and still busy meanwhile: completed here, the writers' callbacks ran inside their own write
 * or shutdown call, and one that wrote again rebuilt the batch under the core's loops (a FIN framed
 * there was never reported: its chan waited forever, found by the allocator sweep). */
static void batch_failed(np__mux *m, int err) {
  m->batch_err = err;
  uv_idle_start(&m->tick, on_tick);
}

static void on_batch_written(np_conn_write *req, int status) {
  np__mux *m = NP_CONTAINER_OF(req, np__mux, req);
  np__mux_core_written(m->core, status);
}

/* Set while a turn's prepare callback runs: a prepare handle started from there runs only after
 * the loop next waits (core_want_write). */
static _Thread_local int in_turn;

/* The batch is tried first: when the transport takes all of it at once (TLS: encrypted, and sent
 * or queued below), the batch completes here, without a write request. A libuv write request that
 * completes re-arms the socket's epoll entry once it drains (one epoll_ctl per batch in libuv
 * 1.44), a system call a short request paid three times on each side. What the completed writers
 * queue from their callbacks waits for the next turn, with what the loop's I/O brings meanwhile,
 * as it did behind a request. Only from the turn: the constructor's first batch is written as a
 * request, since completing it calls back. */
static void flush(np__mux *m, int may_complete) {
  const np__mux_iov *iov;
  unsigned n, first = 0;
  size_t total = 0;
  int r = UV_EAGAIN;

  if (m->batch_err != 0 || !np__mux_core_pull(m->core, &iov, &n))
    return;
  for (unsigned i = 0; i < n; i++) {
    m->bufs[i] = uv_buf_init(iov[i].base, (unsigned)iov[i].len);
    total += iov[i].len;
  }
  /* Not once closing: TLS may take a batch whole but keep part of it queued, and the transport is
   * closed after the GO_AWAY's batch completes, which would cut what is still queued. As a
   * request, the GO_AWAY's batch completes only once everything before it was written. The bound
   * on what TLS holds rests on its try_write refusing (EAGAIN) while anything is queued. */
  if (may_complete && total <= INT32_MAX && !np__mux_core_closing(m->core))
    r = np__conn_try_writev(m->t, m->bufs, n);
  if (r >= 0 && (size_t)r == total) {
    np__mux_core_written(m->core, 0);
    return;
  }
  if (r < 0 && r != UV_EAGAIN) {
    batch_failed(m, r);
    return;
  }
  /* What went: the rest follows as a request (a plain socket takes part of a batch). */
  for (size_t done = r > 0 ? (size_t)r : 0; done > 0; first++) {
    if (done < m->bufs[first].len) {
      m->bufs[first].base += done;
      m->bufs[first].len -= (unsigned)done;
      break;
    }
    done -= m->bufs[first].len;
  }
  if ((r = np__conn_write(m->t, &m->req, m->bufs + first, n - first, on_batch_written)) != 0)
    batch_failed(m, r);
}

/* ---- the core's callbacks ----------------------------------------------------------------- */

static void stream_init(np__mux *m, np__mux_cstream *cs) {
  mstream *s = ms_of(cs);
  s->base.ops = &stream_ops;
  s->mux = m;
  s->cs = cs;
}

static void core_accept(np__mux_core *c, np__mux_cstream *cs) {
  np__mux *m = mux_of_core(c);
  stream_init(m, cs);
  m->accept_cb(m, &ms_of(cs)->base);
}

static size_t core_data(np__mux_core *c, np__mux_cstream *cs, const char *data, size_t len) {
  return hand_over(mux_of_core(c), ms_of(cs), data, len);
}

static void core_fin(np__mux_core *c, np__mux_cstream *cs) {
  mstream *s = ms_of(cs);
  if (s->reading && cs->rhead == NULL && !s->eof_told) {
    uv_buf_t none = uv_buf_init(NULL, 0);
    s->eof_told = 1;
    s->base.read_cb(&s->base, UV_EOF, &none);
  } else {
    notify(mux_of_core(c), s);
  }
}

static void core_stream_event(np__mux_core *c, np__mux_cstream *cs) {
  notify(mux_of_core(c), ms_of(cs));
}

static void core_write_done(np__mux_core *c, void *token, int status) {
  np_conn_write *req = token;
  (void)c;
  req->cb(req, status);
}

static void core_fin_done(np__mux_core *c, np__mux_cstream *cs, int status) {
  mstream *s = ms_of(cs);
  (void)c;
  if (s->shutdown_cb != NULL && !s->shutdown_told) {
    s->shutdown_told = 1;
    s->shutdown_cb(&s->base, status);
  }
}

static void on_turn(uv_prepare_t *h) {
  uv_prepare_stop(h);
  in_turn = 1;
  flush(h->data, 1);
  in_turn = 0;
}

/* Not at once: what the rest of this loop turn queues (other streams' messages, window updates)
 * joins the batch. A prepare handle runs before the loop waits for I/O, so nothing is held back
 * past the turn, whichever phase (I/O, timer, a write's completion) queued it. */
static void core_want_write(np__mux_core *c) {
  np__mux *m = mux_of_core(c);
  if (uv_is_closing((uv_handle_t *)&m->turn))
    return;
  uv_prepare_start(&m->turn, on_turn);
  /* Queued from a turn (a batch that completed there, or another mux's): the prepare handle runs
   * after the loop next waits, which must not block meanwhile. */
  if (in_turn)
    uv_idle_start(&m->tick, on_tick);
}

static void on_handle_closed(uv_handle_t *h) {
  np__mux *m = h->data;
  m->handles--;
  maybe_free_mux(m);
}

static void on_transport_closed(np_conn *c) {
  np__mux *m = c->data;
  m->handles--;
  maybe_free_mux(m);
}

/* The session is over: the transport closes (after a best-effort GO_AWAY: it may be stuck). The
 * mux is freed once the transport, the timer and the turn handle are closed and the owners have
 * closed every stream (the core resets them all right after this). */
static void core_dead(np__mux_core *c, int err, const unsigned char *goaway) {
  np__mux *m = mux_of_core(c);

  if (goaway != NULL)
    np__conn_try_write(m->t, (const char *)goaway, NP_MUX_HDR_LEN);
  if (m->end_cb != NULL) {
    m->end_pending = 1;
    uv_idle_start(&m->tick, on_tick);
  }
  uv_close((uv_handle_t *)&m->timer, on_handle_closed);
  uv_close((uv_handle_t *)&m->turn, on_handle_closed);
  np__conn_read_stop(m->t);
  if (err == UV_ECANCELED)
    np__conn_close(m->t, on_transport_closed);
  else
    np__conn_abort(m->t, on_transport_closed);
}

static const np__mux_core_cbs core_cbs = {
    .accept = core_accept,
    .data = core_data,
    .fin = core_fin,
    .stream_event = core_stream_event,
    .write_done = core_write_done,
    .fin_done = core_fin_done,
    .want_write = core_want_write,
    .dead = core_dead,
};

/* ---- the stream's np_conn ops -------------------------------------------------------------- */

static int st_read_start(np_conn *c) {
  mstream *s = (mstream *)c;
  np__mux_cstream *cs = s->cs;
  if (cs->closing)
    return UV_EINVAL;
  s->reading = 1;
  if (cs->rhead != NULL || (cs->fin_rcvd && !s->eof_told) || (cs->err != 0 && !s->err_told))
    notify(s->mux, s);
  return 0;
}

static int st_read_stop(np_conn *c) {
  ((mstream *)c)->reading = 0;
  return 0;
}

static int st_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  mstream *s = (mstream *)c;
  np__mux_iov stack[16], *iov = stack;
  int r;

  if (nbufs == 0)
    return UV_EINVAL;
  if (nbufs > 16 && (iov = malloc(nbufs * sizeof(*iov))) == NULL)
    return UV_ENOMEM;
  for (unsigned i = 0; i < nbufs; i++)
    iov[i] = (np__mux_iov){bufs[i].base, bufs[i].len};
  r = np__mux_core_write(s->mux->core, s->cs, iov, nbufs, req);
  if (iov != stack)
    free(iov);
  return r;
}

/* The relay's fast path: when nothing else waits to be sent, one frame goes straight to the
 * transport from the caller's memory. Small writes too: queued for the loop turn's batch instead,
 * they saved 17 % of the CPU per keep-alive request, but a short answer on a 40 ms path during a
 * bulk download then sometimes took one more one-way delay (p50 65-70 ms against 48, in 4 of 9
 * runs of bench/nat_mux.py; never with this path). Should the transport take only part of it, the
 * core copies the rest and sends it first thing, so the frame is never cut. */
static int st_try_write(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  mstream *s = (mstream *)c;
  np__mux *m = s->mux;
  unsigned char hdr[NP_MUX_HDR_LEN];
  uv_buf_t v[2];
  size_t n;
  int r;

  if (nbufs != 1 || (n = np__mux_core_direct(m->core, s->cs, bufs[0].len, hdr)) == 0)
    return UV_EAGAIN;
  v[0] = uv_buf_init((char *)hdr, sizeof(hdr));
  v[1] = uv_buf_init(bufs[0].base, (unsigned)n);
  r = np__conn_try_writev(m->t, v, 2);
  if (r == UV_EAGAIN || r == 0)
    return UV_EAGAIN;
  if (r < 0)
    return r;
  if (np__mux_core_direct_done(m->core, s->cs, n, hdr, bufs[0].base, (size_t)r) != 0)
    return UV_ENOMEM;
  return (int)n;
}

static int st_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  mstream *s = (mstream *)c;
  np_conn_shutdown_cb old = s->shutdown_cb;
  int r;

  s->shutdown_cb = cb; /* before the core frames the FIN */
  if ((r = np__mux_core_shutdown(s->mux->core, s->cs)) != 0)
    s->shutdown_cb = old;
  return r;
}

static void st_close_common(mstream *s, np_conn_close_cb cb, int reset) {
  if (s->cs->closing)
    return;
  s->reading = 0;
  s->close_cb = cb;
  np__mux_core_close(s->mux->core, s->cs, reset);
}

static void st_close(np_conn *c, np_conn_close_cb cb) {
  st_close_common((mstream *)c, cb, 0);
}

static void st_abort(np_conn *c, np_conn_close_cb cb) {
  st_close_common((mstream *)c, cb, 1);
}

static void st_peer_str(np_conn *c, char *buf, size_t len) {
  mstream *s = (mstream *)c;
  char peer[64];
  np__conn_peer_str(s->mux->t, peer, sizeof(peer));
  snprintf(buf, len, "%s#%u", peer, s->cs->id);
}

static const np_conn_ops stream_ops = {
    .read_start = st_read_start,
    .read_stop = st_read_stop,
    .write = st_write,
    .try_write = st_try_write,
    .shutdown = st_shutdown,
    .close = st_close,
    .abort = st_abort,
    .peer_str = st_peer_str,
};

/* ---- the transport ------------------------------------------------------------------------ */

/* Reads stop at frame ends where that is cheap: the rest of the current frame, or a header and a
 * relay-sized body. A read that ended inside a frame would cost the reader two writes for it. */
static void mux_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  np__mux *m = c->data;
  size_t want = np__mux_core_read_hint(m->core, READ_FRAME);
  (void)suggested;
  *buf = m->o.read_buf != NULL ? uv_buf_init(m->o.read_buf, (unsigned)m->o.read_buf_len)
                               : uv_buf_init(m->rbuf, READ_BUF);
  if (buf->len > want)
    buf->len = (unsigned)want;
}

static void mux_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  np__mux *m = c->data;

  if (nread > 0) {
    np__mux_core_feed(m->core, buf->base, (size_t)nread, uv_hrtime());
  } else if (nread == UV_EOF) {
    m->peer_eof = 1;
    np__mux_core_fail(m->core, UV_ECONNRESET, -1); /* open streams were cut: a reset to them */
  } else if (nread < 0) {
    np__mux_core_fail(m->core, (int)nread, -1);
  }
}

/* ---- the session ------------------------------------------------------------------------- */

static void on_tick_closed(uv_handle_t *h) {
  np__mux *m = h->data;
  tell_end(m); /* when the mux was freed before the tick ran */
  if (m->closed_cb != NULL)
    m->closed_cb(m);
  np__mux_core_free(m->core);
  free(m->rbuf);
  free(m);
}

/* The tick closes last: until then, streams may still need it to tell their owners. */
static void maybe_free_mux(np__mux *m) {
  if (!np__mux_core_dead(m->core) || m->handles > 0 || np__mux_core_stream_count(m->core) > 0 ||
      m->nhead != NULL || m->batch_err != 0 || m->freeing || m->held)
    return;
  m->freeing = 1;
  uv_close((uv_handle_t *)&m->tick, on_tick_closed);
}

static void on_close_timeout(uv_timer_t *t) {
  np__mux *m = t->data;
  np__mux_core_fail(m->core, UV_ETIMEDOUT, -1);
}

void np__mux_close(np__mux *m) {
  if (m->held) {
    m->held = 0;
    maybe_free_mux(m); /* the end came first: only the owner's hold kept it */
  }
  if (np__mux_core_dead(m->core) || np__mux_core_closing(m->core))
    return;
  uv_timer_start(&m->timer, on_close_timeout, CLOSE_GRACE_MS, 0);
  np__mux_core_goaway(m->core);
}

int np__mux_new(uv_loop_t *loop, np_conn *transport, const np__mux_opts *opts, const char *prefix,
                size_t prefix_len, np__mux_accept_cb accept_cb, void *data, np__mux **out) {
  np__mux_core_opts co;
  np__mux *m;
  int r;

  if (loop == NULL || transport == NULL || opts == NULL || accept_cb == NULL)
    return UV_EINVAL;
  if ((m = calloc(1, sizeof(*m))) == NULL)
    return UV_ENOMEM;
  m->t = transport;
  m->o = *opts;
  if (m->o.max_window < NP_MUX_INITIAL_WINDOW)
    m->o.max_window = NP_MUX_DEFAULT_MAX_WINDOW;
  if (m->o.max_streams == 0)
    m->o.max_streams = NP_MUX_DEFAULT_MAX_STREAMS;
  m->accept_cb = accept_cb;
  m->data = data;
  co = (np__mux_core_opts){.client = m->o.client,
                           .max_window = m->o.max_window,
                           .max_streams = m->o.max_streams,
                           .session_window = m->o.session_window,
                           .shared = m->o.shared,
                           .stream_extra = sizeof(mstream)};
  if (m->o.read_buf == NULL || m->o.read_buf_len == 0) {
    m->o.read_buf = NULL;
    m->rbuf = malloc(READ_BUF);
  }
  if ((m->o.read_buf == NULL && m->rbuf == NULL) ||
      np__mux_core_new(&co, &core_cbs, m, uv_hrtime(), &m->core) != 0) {
    free(m->rbuf);
    free(m);
    return UV_ENOMEM;
  }
  uv_idle_init(loop, &m->tick);
  uv_prepare_init(loop, &m->turn);
  uv_timer_init(loop, &m->timer);
  m->tick.data = m->timer.data = m->turn.data = m;
  m->handles = 3;
  transport->data = m;
  np__conn_notsent_lowat(transport, NOTSENT_LOWAT);
  if (prefix_len > 0)
    np__mux_core_feed(m->core, prefix, prefix_len, uv_hrtime());
  if (!np__mux_core_dead(m->core) && (r = np__conn_read_start(transport, mux_alloc, mux_read)) != 0)
    np__mux_core_fail(m->core, r, -1);
  flush(m, 0);
  *out = m;
  return 0;
}

void np__mux_set_closed_cb(np__mux *m, np__mux_closed_cb cb) {
  m->closed_cb = cb;
}

void np__mux_set_end_cb(np__mux *m, np__mux_end_cb cb) {
  m->end_cb = cb;
  m->held = cb != NULL;
  if (cb != NULL && np__mux_core_dead(m->core)) {
    m->end_pending = 1; /* it ended inside np__mux_new */
    uv_idle_start(&m->tick, on_tick);
  }
}

void *np__mux_data(const np__mux *m) {
  return m->data;
}

int np__mux_open(np__mux *m, np_conn **out) {
  np__mux_cstream *cs;
  int r;

  if ((r = np__mux_core_open(m->core, uv_hrtime(), &cs)) != 0)
    return r;
  stream_init(m, cs);
  *out = &ms_of(cs)->base;
  return 0;
}

np_conn *np__mux_transport(np__mux *m) {
  return m->t;
}

np__mux *np__mux_of(np_conn *c) {
  return c != NULL && c->ops == &stream_ops ? ((mstream *)c)->mux : NULL;
}

size_t np__mux_stream_count(const np__mux *m) {
  return np__mux_core_stream_count(m->core);
}

int np__mux_writing(const np__mux *m) {
  return np__mux_core_busy(m->core) || uv_is_active((const uv_handle_t *)&m->turn);
}

uint32_t np__mux_stream_id(np_conn *c) {
  return ((mstream *)c)->cs->id;
}

size_t np__mux_stream_buffered(np_conn *c) {
  return ((mstream *)c)->cs->rbytes;
}

int np__mux_status(const np__mux *m) {
  return np__mux_core_dead(m->core);
}

int np__mux_end_status(const np__mux *m) {
  int dead = np__mux_core_dead(m->core);
  if (np__mux_core_closing(m->core))
    return UV_ECANCELED; /* asked for here: how the connection then went is no news */
  return m->peer_eof && dead == UV_ECONNRESET ? UV_EOF : dead;
}

int64_t np__mux_peer_goaway(const np__mux *m) {
  return np__mux_core_peer_goaway(m->core);
}

uint64_t np__mux_rtt_us(const np__mux *m) {
  return np__mux_core_srtt_ns(m->core) / 1000;
}
