/* The direct path's QUIC streams as np_conns (see quic.h and quic_int.h): each stream's bytes in
 * and out in byte queues of fixed blocks, its owner's calls (read, write, shutdown, close), what
 * the owner is owed, told from the connection's tick, and ngtcp2's stream callbacks, which only
 * mark and queue. A stream behaves as a mux stream does (lib/mux.c): a write completes once its
 * bytes are in the send buffer; a reader that stops holds the peer's writer at the window. */
#include "quic_int.h"

#include <stdlib.h>
#include <string.h>

static const np_conn_ops stream_ops;

/* ---- byte queues --------------------------------------------------------------------------- */

static size_t bq_append(bq *b, const void *p, size_t n) {
  size_t done = 0;
  while (done < n) {
    blk *t = b->tail;
    size_t k;
    if (t == NULL || t->len == BLK) {
      if ((t = malloc(sizeof(*t))) == NULL)
        break;
      t->next = NULL;
      t->len = 0;
      if (b->tail != NULL)
        b->tail->next = t;
      else
        b->head = t;
      b->tail = t;
    }
    k = n - done < BLK - t->len ? n - done : BLK - t->len;
    memcpy(t->data + t->len, (const uint8_t *)p + done, k);
    t->len += k;
    done += k;
  }
  b->bytes += done;
  return done;
}

/* Take n bytes (at most b->bytes) off the head; blocks emptied go. */
static void bq_drop(bq *b, size_t n) {
  b->bytes -= n;
  while (n > 0) {
    blk *h = b->head;
    size_t k = n < h->len - b->pos ? n : h->len - b->pos;
    b->pos += k;
    n -= k;
    if (b->pos == h->len) {
      b->head = h->next;
      if (b->head == NULL)
        b->tail = NULL;
      b->pos = 0;
      free(h);
    }
  }
}

/* The bytes from off (past the head) on, as up to max vectors; *total: their length. */
size_t np__qs_bq_vecs(const bq *b, size_t off, ngtcp2_vec *v, size_t max, size_t *total) {
  size_t skip = b->pos + off, n = 0;
  *total = 0;
  for (blk *h = b->head; h != NULL && n < max; h = h->next) {
    if (skip >= h->len) {
      skip -= h->len;
      continue;
    }
    v[n].base = h->data + skip;
    v[n].len = h->len - skip;
    *total += v[n].len;
    n++;
    skip = 0;
  }
  return n;
}

static size_t bq_copy_out(const bq *b, char *dst, size_t cap) {
  size_t done = 0, skip = b->pos;
  for (blk *h = b->head; h != NULL && done < cap; h = h->next) {
    size_t k = h->len - skip < cap - done ? h->len - skip : cap - done;
    memcpy(dst + done, h->data + skip, k);
    done += k;
    skip = 0;
  }
  return done;
}

static void bq_free(bq *b) {
  while (b->head != NULL) {
    blk *h = b->head;
    b->head = h->next;
    free(h);
  }
  *b = (bq){0};
}
/* ---- scheduling ---------------------------------------------------------------------------- */

/* Only streams an owner holds are told anything; the others wait in the accept queue. */
void np__qs_notify(qstream *s) {
  np__quic *q = s->q;
  if (s->in_notify || !s->owned)
    return;
  s->in_notify = 1;
  s->nnext = NULL;
  if (q->ntail != NULL)
    q->ntail->nnext = s;
  else
    q->nhead = s;
  q->ntail = s;
  np__quic_tick_start(q);
}

void np__qs_senders_add(np__quic *q, qstream *s) {
  if (s->in_senders)
    return;
  s->in_senders = 1;
  s->snext = NULL;
  s->sprev = q->stail;
  if (q->stail != NULL)
    q->stail->snext = s;
  else
    q->shead = s;
  q->stail = s;
}

void np__qs_senders_del(np__quic *q, qstream *s) {
  if (!s->in_senders)
    return;
  s->in_senders = 0;
  if (s->sprev != NULL)
    s->sprev->snext = s->snext;
  else
    q->shead = s->snext;
  if (s->snext != NULL)
    s->snext->sprev = s->sprev;
  else
    q->stail = s->sprev;
  s->sprev = s->snext = NULL;
}
/* ---- streams ------------------------------------------------------------------------------- */

qstream *np__qs_new(np__quic *q, int64_t id, int local) {
  qstream *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->base.ops = &stream_ops;
  s->q = q;
  s->id = id;
  s->local = local != 0;
  NP_DLIST_PUSH(q->streams, s, prev, next);
  return s;
}

/* Only once ngtcp2 is done with the stream (it references sent bytes until acknowledged), and its
 * owner closed it or never got it. A stream of the peer's gives the peer room for another. */
void np__qs_release(qstream *s) {
  np__quic *q = s->q;
  NP_DLIST_UNLINK(q->streams, s, prev, next);
  np__qs_senders_del(q, s);
  bq_free(&s->rq);
  bq_free(&s->sq);
  while (s->wq != NULL) {
    wnode *w = s->wq;
    s->wq = w->next;
    free(w);
  }
  if (!s->local && s->id >= 0 && q->err == 0) {
    q->streams_credit++;
    np__quic_turn_start(q);
  }
  free(s);
}

int np__qs_fin_due(const qstream *s) {
  return s->shut_req && s->wq == NULL;
}

int np__qs_pending_send(const qstream *s) {
  return !s->gone && s->werr == 0 && !s->reset_sent && s->id >= 0 &&
         (s->sent < s->acked + s->sq.bytes || (np__qs_fin_due(s) && !s->fin_sent));
}

static void push_done(qstream *s, wnode *w, int status) {
  w->status = status;
  w->next = NULL;
  if (s->done_tail != NULL)
    s->done_tail->next = w;
  else
    s->done = w;
  s->done_tail = w;
}

/* The write side broke: what waits fails with err, a pending shutdown too. */
void np__qs_write_broke(qstream *s, int err) {
  if (s->werr == 0)
    s->werr = err;
  while (s->wq != NULL) {
    wnode *w = s->wq;
    s->wq = w->next;
    push_done(s, w, err);
  }
  s->wq_tail = NULL;
  if (s->shut_req && !s->fin_sent && !s->shut_due) {
    s->shut_due = 1;
    s->shut_status = err;
  }
  np__qs_senders_del(s->q, s);
  np__qs_notify(s);
}

/* Move waiting writes into the send buffer while it has room; a write whose bytes are all in is
 * complete, as a socket's write is once the kernel has its bytes. */
static void fill(qstream *s) {
  int moved = 0, appended = 0;

  while (s->wq != NULL && s->werr == 0) {
    wnode *w = s->wq;
    while (w->idx < w->nbufs) {
      size_t left = w->bufs[w->idx].len - w->off, room = NP_QUIC_STREAM_SNDBUF - s->sq.bytes;
      size_t n = left < room ? left : room, got;
      if (n == 0 && left > 0)
        goto out;
      got = bq_append(&s->sq, w->bufs[w->idx].base + w->off, n);
      appended |= got > 0;
      if (got < n) {
        np__qs_write_broke(s, UV_ENOMEM);
        goto out;
      }
      w->off += n;
      if (w->off == w->bufs[w->idx].len) {
        w->idx++;
        w->off = 0;
      }
    }
    s->wq = w->next;
    if (s->wq == NULL)
      s->wq_tail = NULL;
    push_done(s, w, 0);
    moved = 1;
  }
out:
  if (appended || moved) {
    np__qs_senders_add(s->q, s);
    np__quic_turn_start(s->q);
  }
  if (moved)
    np__qs_notify(s);
}

/* The reader took n bytes: only now may the peer send n more, on the stream and the connection. */
static void consumed(qstream *s, size_t n) {
  np__quic *q = s->q;
  bq_drop(&s->rq, n);
  if (q->err != 0)
    return;
  if (!s->gone)
    ngtcp2_conn_extend_max_stream_offset(q->conn, s->id, n);
  q->conn_credit += n;
  np__quic_turn_start(q);
}

/* Reset both directions (RESET_STREAM and STOP_SENDING): no more bytes either way. */
static void reset_stream(qstream *s) {
  np__quic *q = s->q;
  int r;
  if (s->reset_sent || s->gone || q->err != 0 || s->id < 0)
    return;
  s->reset_sent = 1;
  np__qs_senders_del(q, s);
  if ((r = ngtcp2_conn_shutdown_stream(q->conn, s->id, APP_RESET)) != 0)
    q->fail(q, r);
  np__quic_turn_start(q);
}

/* Hand the reader what waits, in order: bytes, then EOF or the error. */
static void deliver(qstream *s) {
  uv_buf_t none = uv_buf_init(NULL, 0);

  while (s->reading && !s->closing && s->rq.bytes > 0) {
    uv_buf_t buf = none;
    size_t n;
    if (s->base.borrow) {
      /* The reader takes the bytes where they lie, during the call: no copy. */
      blk *b = s->rq.head;
      n = b->len - s->rq.pos;
      buf = uv_buf_init((char *)b->data + s->rq.pos, (unsigned)n);
      s->base.read_cb(&s->base, (ssize_t)n, &buf);
      consumed(s, n);
      continue;
    }
    s->base.alloc_cb(&s->base, s->rq.bytes, &buf);
    if (buf.base == NULL || buf.len == 0) {
      s->err_told = 1;
      s->discard = 1;
      np__qs_write_broke(s, UV_ENOBUFS);
      reset_stream(s);
      s->base.read_cb(&s->base, UV_ENOBUFS, &buf);
      return;
    }
    n = bq_copy_out(&s->rq, buf.base, buf.len);
    consumed(s, n);
    s->base.read_cb(&s->base, (ssize_t)n, &buf);
  }
  if (!s->reading || s->closing || s->rq.bytes > 0)
    return;
  if (s->fin_rcvd && !s->eof_told) {
    s->eof_told = 1;
    s->base.read_cb(&s->base, UV_EOF, &none);
  } else if (!s->fin_rcvd && s->rerr != 0 && !s->err_told) {
    s->err_told = 1;
    s->base.read_cb(&s->base, s->rerr, &none);
  }
}

/* From the tick, what the owner is owed in order: writes, the shutdown, then the close or reads. */
void np__qs_tell(qstream *s) {
  np__quic *q = s->q;
  wnode *w;

  while ((w = s->done) != NULL) {
    np_conn_write *req = w->req;
    int status = w->status;
    s->done = w->next;
    if (s->done == NULL)
      s->done_tail = NULL;
    free(w);
    req->cb(req, status);
  }
  if (s->shut_due && !s->shut_told) {
    s->shut_told = 1;
    if (s->shutdown_cb != NULL)
      s->shutdown_cb(&s->base, s->shut_status);
  }
  if (s->discard && s->rq.bytes > 0) {
    /* Dropped unread: the connection's window gets them back (the stream's is gone with it). */
    if (q->err == 0) {
      q->conn_credit += s->rq.bytes;
      np__quic_turn_start(q);
    }
    bq_free(&s->rq);
  }
  if (!s->closing) {
    deliver(s);
    return;
  }
  if (!s->close_told && s->done == NULL) {
    s->close_told = 1;
    if (s->close_cb != NULL)
      s->close_cb(&s->base);
  }
  if (s->close_told && (s->gone || q->err != 0) && !s->in_notify)
    np__qs_release(s);
}

/* ---- the stream's np_conn ops -------------------------------------------------------------- */

static int st_read_start(np_conn *c) {
  qstream *s = (qstream *)c;
  if (s->closing)
    return UV_EINVAL;
  s->reading = 1;
  if (s->rq.bytes > 0 || (s->fin_rcvd && !s->eof_told) || (s->rerr != 0 && !s->err_told))
    np__qs_notify(s);
  return 0;
}

static int st_read_stop(np_conn *c) {
  ((qstream *)c)->reading = 0;
  return 0;
}

static int write_check(const qstream *s) {
  if (s->closing)
    return UV_EINVAL;
  if (s->werr != 0)
    return s->werr;
  if (s->shut_req || s->gone || s->reset_sent)
    return UV_EPIPE;
  return 0;
}

static int st_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  qstream *s = (qstream *)c;
  wnode *w;
  int r;

  if ((r = write_check(s)) != 0)
    return r;
  if ((w = malloc(sizeof(*w) + nbufs * sizeof(uv_buf_t))) == NULL)
    return UV_ENOMEM;
  *w = (wnode){.req = req, .nbufs = nbufs};
  if (nbufs > 0)
    memcpy(w->bufs, bufs, nbufs * sizeof(uv_buf_t));
  if (s->wq_tail != NULL)
    s->wq_tail->next = w;
  else
    s->wq = w;
  s->wq_tail = w;
  fill(s);
  return 0;
}

/* What fits in the send buffer now; UV_EAGAIN when nothing does or writes wait before it. */
static int st_try_write(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  qstream *s = (qstream *)c;
  size_t done = 0;
  int r;

  if ((r = write_check(s)) != 0)
    return r;
  if (s->wq != NULL)
    return UV_EAGAIN;
  for (unsigned i = 0; i < nbufs; i++) {
    size_t room = NP_QUIC_STREAM_SNDBUF - s->sq.bytes, n = bufs[i].len < room ? bufs[i].len : room;
    size_t got = bq_append(&s->sq, bufs[i].base, n);
    done += got;
    if (got < bufs[i].len)
      break;
  }
  if (done == 0)
    return UV_EAGAIN;
  np__qs_senders_add(s->q, s);
  np__quic_turn_start(s->q);
  return (int)done; /* at most NP_QUIC_STREAM_SNDBUF */
}

static int st_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  qstream *s = (qstream *)c;
  int r;

  if ((r = write_check(s)) != 0)
    return r;
  s->shut_req = 1;
  s->shutdown_cb = cb;
  np__qs_senders_add(s->q, s);
  np__quic_turn_start(s->q);
  return 0;
}

/* A stream that finished both ways (the peer's FIN came, ours is queued) ends in order: what is
 * buffered still goes, then the FIN. Any other is reset both ways, as TCP sends RST when a socket
 * closes with unread bytes. */
static void st_close_common(qstream *s, np_conn_close_cb cb, int reset) {
  int cancelled = s->wq != NULL;

  if (s->closing)
    return;
  s->closing = 1;
  s->reading = 0;
  s->discard = 1;
  s->close_cb = cb;
  while (s->wq != NULL) {
    wnode *w = s->wq;
    s->wq = w->next;
    push_done(s, w, UV_ECANCELED);
  }
  s->wq_tail = NULL;
  if (s->shut_req && !s->shut_due) {
    s->shut_due = 1;
    s->shut_status = UV_ECANCELED;
  }
  if (reset || cancelled || !s->fin_rcvd || !s->shut_req || s->werr != 0)
    reset_stream(s);
  np__qs_notify(s);
}

static void st_close(np_conn *c, np_conn_close_cb cb) {
  st_close_common((qstream *)c, cb, 0);
}

static void st_abort(np_conn *c, np_conn_close_cb cb) {
  st_close_common((qstream *)c, cb, 1);
}

static void st_peer_str(np_conn *c, char *buf, size_t len) {
  qstream *s = (qstream *)c;
  char peer[64];
  np__addr_str(&s->q->peer.sa, peer, sizeof(peer));
  snprintf(buf, len, "%s#%lld", peer, (long long)s->id);
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
/* ---- ngtcp2's stream callbacks: no owner is called from here, only marks and queues -------- */

int np__qs_on_open(ngtcp2_conn *conn, int64_t id, void *ud) {
  np__quic *q = ud;
  qstream *s;

  /* Only the server takes streams (the client allows the server none, and no one unidirectional
   * ones). */
  if (!q->server || !ngtcp2_is_bidi_stream(id))
    return 0;
  if ((s = np__qs_new(q, id, 0)) == NULL) {
    q->cb_err = UV_ENOMEM;
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  ngtcp2_conn_set_stream_user_data(conn, id, s);
  if (q->atail != NULL)
    q->atail->anext = s;
  else
    q->ahead = s;
  q->atail = s;
  np__quic_tick_start(q);
  return 0;
}

int np__qs_on_recv(ngtcp2_conn *conn, uint32_t flags, int64_t id, uint64_t offset,
                   const uint8_t *data, size_t len, void *ud, void *sud) {
  np__quic *q = ud;
  qstream *s = sud;
  (void)conn;
  (void)id;
  (void)offset;

  if (s == NULL || s->discard) {
    q->conn_credit += len; /* nobody will read it: the connection's window gets it back */
    return 0;
  }
  if (bq_append(&s->rq, data, len) != len) {
    q->cb_err = UV_ENOMEM;
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN)
    s->fin_rcvd = 1;
  np__qs_notify(s);
  return 0;
}

int np__qs_on_acked(ngtcp2_conn *conn, int64_t id, uint64_t offset, uint64_t len, void *ud,
                    void *sud) {
  qstream *s = sud;
  uint64_t upto = offset + len;
  (void)conn;
  (void)id;
  (void)ud;

  if (s == NULL || upto <= s->acked)
    return 0;
  bq_drop(&s->sq, (size_t)(upto - s->acked));
  s->acked = upto;
  fill(s);
  return 0;
}

int np__qs_on_close(ngtcp2_conn *conn, uint32_t flags, int64_t id, uint64_t app_err, void *ud,
                    void *sud) {
  np__quic *q = ud;
  qstream *s = sud;
  (void)flags;
  (void)app_err;

  if (s == NULL)
    return 0;
  q->lost += ngtcp2_conn_get_stream_loss_count(conn, id);
  s->gone = 1;
  if (!s->fin_rcvd && s->rerr == 0)
    s->rerr = UV_ECONNRESET;
  if (!s->fin_sent)
    np__qs_write_broke(s, UV_ECONNRESET);
  np__qs_senders_del(q, s);
  np__qs_notify(s);
  return 0;
}

int np__qs_on_reset(ngtcp2_conn *conn, int64_t id, uint64_t final_size, uint64_t app_err, void *ud,
                    void *sud) {
  qstream *s = sud;
  (void)conn;
  (void)id;
  (void)final_size;
  (void)app_err;
  (void)ud;

  /* A reset after everything arrived takes nothing away; before, what came is dropped, as TCP's
   * RST drops it. */
  if (s == NULL || s->fin_rcvd)
    return 0;
  s->rerr = UV_ECONNRESET;
  s->discard = 1;
  np__qs_notify(s);
  return 0;
}

int np__qs_on_extend(ngtcp2_conn *conn, int64_t id, uint64_t max_data, void *ud, void *sud) {
  qstream *s = sud;
  (void)conn;
  (void)id;
  (void)max_data;
  if (s != NULL) {
    s->skip_round = 0;
    np__quic_turn_start(ud);
  }
  return 0;
}

size_t np__quic_stream_sndbuf(np_conn *c) {
  return c != NULL && c->ops == &stream_ops ? ((qstream *)c)->sq.bytes : 0;
}

size_t np__quic_stream_rcvbuf(np_conn *c) {
  return c != NULL && c->ops == &stream_ops ? ((qstream *)c)->rq.bytes : 0;
}
