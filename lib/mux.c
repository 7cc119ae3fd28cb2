/* The yamux multiplexer. Writing: each stream queues its writes (the caller's memory, not copied);
 * one batch at a time goes to the transport as a single vectored write, built round-robin over the
 * streams that have data and window, a quantum each, so a bulk stream cannot starve a short one.
 * Reading: frames are parsed straight out of the transport's read buffer and copied to the
 * stream's reader, or buffered (never more than the window we granted) while it does not read.
 * Windows: a stream's receive window doubles (up to max_window) whenever the reader consumes half
 * of it within two round trips, i.e. when the window, not the reader, limits the sender. */
#include "mux.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/lhash.h>

#include "internal.h"
#include "mux_frame.h"

#define BATCH_FRAMES   64
#define BATCH_BUFS     256
#define BATCH_BYTES    (512 * 1024)
#define QUANTUM_SHARED (16 * 1024)  /* per stream and turn when several streams have data */
#define QUANTUM_ALONE  (256 * 1024) /* when one has: no one to be fair to */
#define READ_BUF       (64 * 1024 + NP_MUX_HDR_LEN)
#define READ_FRAME     (64 * 1024) /* the body size relays write frames with */
#define BORROW_MAX                                                                                 \
  (64 * 1024)               /* most handed to a reader at once: a relay chunk (NP_JOIN_CHUNK)      \
                             */
#define CTRL_MAX       4096 /* queued control frames: more means the peer does not read */
#define CLOSE_GRACE_MS 2000 /* how long a closing mux may take to write what is queued */
#define NOTSENT_LOWAT  (128 * 1024)
#define PING_EVERY_NS  (5 * 1000000000ull)

typedef struct wreq {
  struct wreq *next;
  np_conn_write *req;
  size_t left; /* bytes not yet framed */
  unsigned idx, nbufs;
  size_t off; /* into bufs[idx] */
  uv_buf_t bufs[];
} wreq;

typedef struct rbuf {
  struct rbuf *next;
  size_t len, off;
  char bytes[];
} rbuf;

typedef struct mstream {
  np_conn base;
  np__mux *mux;
  uint32_t id;
  uint32_t send_window;
  uint32_t recv_target; /* the window we grant */
  uint32_t recv_avail;  /* of it, what the peer may still send */
  uint32_t unacked;     /* consumed since the last window update */
  uint64_t epoch_ns;    /* when the last window update went out */
  int err;              /* sticky: reset, or the mux died */
  wreq *whead, *wtail;  /* queued writes, oldest first */
  wreq *failed;         /* writes to complete with err */
  size_t wbytes;        /* bytes queued and not yet framed */
  rbuf *rhead, *rtail;  /* received, not yet read */
  size_t rbytes;
  unsigned inflight; /* frames of ours in the batch being written */
  np_conn_shutdown_cb shutdown_cb;
  np_conn_close_cb close_cb;
  unsigned in_table : 1, reading : 1, fin_wanted : 1, fin_sent : 1, fin_rcvd : 1, eof_told : 1,
      err_told : 1, shutdown_told : 1, closing : 1, in_ready : 1, in_notify : 1;
  struct mstream *prev, *next;   /* all streams */
  struct mstream *rprev, *rnext; /* ready to send */
  struct mstream *nnext;         /* something to tell the owner */
} mstream;

typedef struct batch {
  np_conn_write req;
  uv_buf_t bufs[BATCH_BUFS];
  unsigned nbufs;
  unsigned char hdrs[BATCH_FRAMES][NP_MUX_HDR_LEN];
  mstream *frames[BATCH_FRAMES]; /* NULL for session frames */
  unsigned nframes;
  wreq *done; /* writes whose last byte is in this batch */
  size_t bytes;
  char *raw; /* the rest of a frame try_write could not finish, written first; freed after */
} batch;

struct np__mux {
  np_conn *t;
  np__mux_opts o;
  np__mux_accept_cb accept_cb;
  np__mux_closed_cb closed_cb;
  np__mux_end_cb end_cb;
  void *data;
  OPENSSL_LHASH *by_id;
  mstream *streams;
  size_t nstreams;
  mstream *rhead, *rtail; /* ready ring */
  size_t nready;
  mstream *nhead, *ntail; /* to notify */
  np__mux_parser parser;
  mstream *cur;     /* stream of the data frame being read (NULL: discard) */
  uint16_t cur_fin; /* FIN/RST of the data frame being read, applied at its end */
  uint32_t next_id;
  char *raw; /* the unwritten rest of a frame started by try_write: goes out before anything else */
  size_t raw_len;
  np__mux_hdr *ctrl; /* control frames waiting */
  size_t nctrl, ctrl_cap;
  batch b;
  char *rbuf;
  uv_idle_t tick;
  uv_timer_t timer;
  uint64_t ping_sent_ns, srtt_ns;
  uint32_t ping_id;
  int dead;            /* 0, or why the mux is gone */
  int handles;         /* timer and transport still to close */
  int batch_err;       /* the transport refused b at once: completed from the tick with this */
  int64_t peer_goaway; /* the code of the peer's first GO_AWAY, -1 before one */
  unsigned busy : 1;   /* b is being written */
  unsigned closing : 1, goaway_pending : 1, goaway_in_batch : 1, remote_goaway : 1, freeing : 1;
  unsigned peer_eof : 1; /* the transport ended in order (the peer closed it) */
  unsigned held : 1;     /* the owner (end_cb set) still uses the mux: freed after np__mux_close */
  unsigned end_pending : 1;
};

static const np_conn_ops stream_ops;
static void on_tick(uv_idle_t *h);
static void on_batch_written(np_conn_write *req, int status);
static void flush(np__mux *m);
static void fail(np__mux *m, int err, int goaway_code);

/* ---- small helpers ------------------------------------------------------------------------ */

static unsigned long stream_hash(const void *p) {
  uint64_t v = ((const mstream *)p)->id;
  v *= 0x9e3779b97f4a7c15ull;
  return (unsigned long)(v >> 17);
}

static int stream_cmp(const void *a, const void *b) {
  uint32_t x = ((const mstream *)a)->id, y = ((const mstream *)b)->id;
  return x < y ? -1 : x > y;
}

static mstream *find(np__mux *m, uint32_t id) {
  mstream key;
  key.id = id;
  return OPENSSL_LH_retrieve(m->by_id, &key);
}

static void untable(np__mux *m, mstream *s) {
  if (s->in_table) {
    OPENSSL_LH_delete(m->by_id, s);
    s->in_table = 0;
  }
}

static void ready_add(np__mux *m, mstream *s) {
  if (s->in_ready)
    return;
  s->in_ready = 1;
  s->rnext = NULL;
  s->rprev = m->rtail;
  if (m->rtail != NULL)
    m->rtail->rnext = s;
  else
    m->rhead = s;
  m->rtail = s;
  m->nready++;
}

static void ready_del(np__mux *m, mstream *s) {
  if (!s->in_ready)
    return;
  if (s->rprev != NULL)
    s->rprev->rnext = s->rnext;
  else
    m->rhead = s->rnext;
  if (s->rnext != NULL)
    s->rnext->rprev = s->rprev;
  else
    m->rtail = s->rprev;
  s->in_ready = 0;
  m->nready--;
}

/* Something to frame now: data the window lets through, or the FIN once the data is out. */
static int sendable(const mstream *s) {
  return (s->wbytes > 0 && s->send_window > 0) || (s->wbytes == 0 && s->fin_wanted && !s->fin_sent);
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

static int ctrl_push(np__mux *m, uint8_t type, uint16_t flags, uint32_t id, uint32_t len) {
  if (m->dead)
    return NP_ECLOSED;
  if (m->nctrl == m->ctrl_cap) {
    size_t cap = m->ctrl_cap ? m->ctrl_cap * 2 : 16;
    np__mux_hdr *n;
    if (m->nctrl >= CTRL_MAX) {
      /* The peer keeps asking (pings, opens) and does not read our answers. */
      fail(m, NP_ELIMIT, NP_MUX_GOAWAY_INTERNAL);
      return NP_ELIMIT;
    }
    if ((n = realloc(m->ctrl, cap * sizeof(*n))) == NULL) {
      fail(m, UV_ENOMEM, NP_MUX_GOAWAY_INTERNAL);
      return UV_ENOMEM;
    }
    m->ctrl = n;
    m->ctrl_cap = cap;
  }
  m->ctrl[m->nctrl++] = (np__mux_hdr){
      .version = NP_MUX_VERSION, .type = type, .flags = flags, .stream = id, .length = len};
  return 0;
}

static void send_ping(np__mux *m) {
  m->ping_id++;
  m->ping_sent_ns = uv_hrtime();
  ctrl_push(m, NP_MUX_PING, NP_MUX_SYN, 0, m->ping_id);
}

/* ---- streams ------------------------------------------------------------------------------ */

static mstream *stream_new(np__mux *m, uint32_t id) {
  mstream *s = calloc(1, sizeof(*s));
  int errors;

  if (s == NULL)
    return NULL;
  s->base.ops = &stream_ops;
  s->mux = m;
  s->id = id;
  s->send_window = NP_MUX_INITIAL_WINDOW;
  s->recv_target = s->recv_avail = NP_MUX_INITIAL_WINDOW;
  s->epoch_ns = uv_hrtime();
  errors = OPENSSL_LH_error(m->by_id);
  OPENSSL_LH_insert(m->by_id, s);
  if (OPENSSL_LH_error(m->by_id) != errors) {
    free(s);
    return NULL;
  }
  s->in_table = 1;
  NP_DLIST_PUSH(m->streams, s, prev, next);
  m->nstreams++;
  return s;
}

/* Writes not yet framed are failed with s->err (their callbacks run from the tick). */
static void drop_writes(np__mux *m, mstream *s) {
  if (s->whead == NULL)
    return;
  s->wtail->next = s->failed;
  s->failed = s->whead;
  s->whead = s->wtail = NULL;
  s->wbytes = 0;
  ready_del(m, s);
  notify(m, s);
}

static void drop_rbufs(mstream *s) {
  while (s->rhead != NULL) {
    rbuf *r = s->rhead;
    s->rhead = r->next;
    free(r);
  }
  s->rtail = NULL;
  s->rbytes = 0;
}

static void reset_stream(np__mux *m, mstream *s, int err) {
  if (s->err == 0)
    s->err = err;
  untable(m, s);
  drop_rbufs(s);
  drop_writes(m, s);
  ready_del(m, s);
  notify(m, s);
}

static void window_update(np__mux *m, mstream *s) {
  uint64_t now = uv_hrtime();
  uint32_t delta = s->unacked;

  /* The reader took half the window in under two round trips: the window is what limits the
   * sender, so double it. */
  if (m->srtt_ns > 0 && now - s->epoch_ns < 2 * m->srtt_ns && s->recv_target < m->o.max_window) {
    uint32_t grown = s->recv_target > m->o.max_window / 2 ? m->o.max_window : s->recv_target * 2;
    delta += grown - s->recv_target;
    s->recv_target = grown;
  }
  s->unacked = 0;
  s->recv_avail += delta;
  s->epoch_ns = now;
  if (ctrl_push(m, NP_MUX_WINDOW_UPDATE, 0, s->id, delta) == 0) {
    if (now - m->ping_sent_ns > PING_EVERY_NS)
      send_ping(m);
    flush(m);
  }
}

static void consumed(np__mux *m, mstream *s, size_t n) {
  s->unacked += (uint32_t)n;
  if (s->unacked >= s->recv_target / 2 && !s->fin_rcvd && s->err == 0 && !s->closing)
    window_update(m, s);
}

/* Hand bytes to the reader while it reads; returns how many it took. */
static size_t hand_over(np__mux *m, mstream *s, const char *data, size_t len) {
  size_t done = 0;

  while (done < len && s->reading && !s->closing && s->err == 0) {
    uv_buf_t buf = uv_buf_init(NULL, 0);
    size_t n;
    if (s->base.borrow) {
      /* The reader takes the bytes where they are: no copy. */
      n = len - done < BORROW_MAX ? len - done : BORROW_MAX;
      buf = uv_buf_init((char *)data + done, (unsigned)n);
      done += n;
      consumed(m, s, n);
      s->base.read_cb(&s->base, (ssize_t)n, &buf);
      continue;
    }
    s->base.alloc_cb(&s->base, len - done, &buf);
    if (buf.base == NULL || buf.len == 0) {
      s->err_told = 1;
      reset_stream(m, s, UV_ENOBUFS);
      s->base.read_cb(&s->base, UV_ENOBUFS, &buf);
      break;
    }
    n = len - done < buf.len ? len - done : buf.len;
    memcpy(buf.base, data + done, n);
    done += n;
    consumed(m, s, n);
    s->base.read_cb(&s->base, (ssize_t)n, &buf);
  }
  return done;
}

static int buffer_bytes(mstream *s, const char *data, size_t len) {
  rbuf *r = malloc(sizeof(*r) + len);
  if (r == NULL)
    return UV_ENOMEM;
  memcpy(r->bytes, data, len);
  r->len = len;
  r->off = 0;
  r->next = NULL;
  if (s->rtail != NULL)
    s->rtail->next = r;
  else
    s->rhead = r;
  s->rtail = r;
  s->rbytes += len;
  return 0;
}

/* Tell the reader what is pending, in order: buffered bytes, then EOF or the error. */
static void tell_reader(np__mux *m, mstream *s) {
  uv_buf_t none = uv_buf_init(NULL, 0);

  while (s->rhead != NULL && s->reading && !s->closing && s->err == 0) {
    rbuf *r = s->rhead;
    r->off += hand_over(m, s, r->bytes + r->off, r->len - r->off);
    if (r->off < r->len)
      return;
    s->rbytes -= r->len;
    s->rhead = r->next;
    if (s->rhead == NULL)
      s->rtail = NULL;
    free(r);
  }
  if (!s->reading || s->closing || s->rhead != NULL)
    return;
  if (s->err != 0 && !s->err_told) {
    s->err_told = 1;
    s->base.read_cb(&s->base, s->err, &none);
  } else if (s->err == 0 && s->fin_rcvd && !s->eof_told) {
    s->eof_told = 1;
    s->base.read_cb(&s->base, UV_EOF, &none);
  }
}

static void stream_free(np__mux *m, mstream *s) {
  /* A DATA frame for it may be half read: the rest is dropped, as for any closed stream. */
  if (m->cur == s)
    m->cur = NULL;
  untable(m, s);
  ready_del(m, s);
  drop_rbufs(s);
  NP_DLIST_UNLINK(m->streams, s, prev, next);
  m->nstreams--;
  if (s->close_cb != NULL)
    s->close_cb(&s->base);
  free(s);
}

static void maybe_free_mux(np__mux *m);

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

  /* A batch the transport refused: its frames' writers learn it now, on a later turn than the
   * write or shutdown that queued them, and the notices that follow are handled below. */
  if (m->batch_err != 0) {
    int err = m->batch_err;
    m->batch_err = 0;
    on_batch_written(&m->b.req, err);
  }
  /* First, so that streams the owner closes from there are freed in this same visit. */
  tell_end(m);
  while ((s = m->nhead) != NULL) {
    m->nhead = s->nnext;
    if (m->nhead == NULL)
      m->ntail = NULL;
    s->in_notify = 0;
    while (s->failed != NULL) {
      wreq *w = s->failed;
      s->failed = w->next;
      w->req->cb(w->req, s->err != 0 ? s->err : UV_ECANCELED);
      free(w);
    }
    if (s->shutdown_cb != NULL && !s->fin_sent && s->err != 0 && !s->shutdown_told) {
      s->shutdown_told = 1;
      s->shutdown_cb(&s->base, s->err);
    }
    if (s->closing) {
      /* A callback above may have queued it again (closing it, say): free it on that visit. */
      if (s->inflight == 0 && s->failed == NULL && !s->in_notify)
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

static int batch_room(const batch *b) {
  return b->nframes < BATCH_FRAMES && b->nbufs + 2 < BATCH_BUFS && b->bytes < BATCH_BYTES;
}

static void batch_hdr(batch *b, mstream *s, uint8_t type, uint16_t flags, uint32_t id,
                      uint32_t len) {
  np__mux_hdr h = {
      .version = NP_MUX_VERSION, .type = type, .flags = flags, .stream = id, .length = len};
  np__mux_hdr_encode(&h, b->hdrs[b->nframes]);
  b->bufs[b->nbufs++] = uv_buf_init((char *)b->hdrs[b->nframes], NP_MUX_HDR_LEN);
  b->frames[b->nframes++] = s;
  if (s != NULL)
    s->inflight++;
  b->bytes += NP_MUX_HDR_LEN;
}

/* One data frame of up to quantum bytes from s's queue (fewer if the batch runs out of buffers). */
static void frame_data(batch *b, mstream *s, size_t quantum) {
  size_t want = s->wbytes, take = 0;
  unsigned hdr_buf;

  if (want > s->send_window)
    want = s->send_window;
  if (want > quantum)
    want = quantum;
  hdr_buf = b->nbufs;
  batch_hdr(b, s, NP_MUX_DATA, 0, s->id, 0);
  while (take < want && b->nbufs < BATCH_BUFS) {
    wreq *w = s->whead;
    uv_buf_t *src = &w->bufs[w->idx];
    size_t n = src->len - w->off;
    if (n > want - take)
      n = want - take;
    if (n > 0)
      b->bufs[b->nbufs++] = uv_buf_init(src->base + w->off, (unsigned)n);
    take += n;
    w->off += n;
    w->left -= n;
    if (w->off == src->len) {
      w->idx++;
      w->off = 0;
    }
    if (w->left == 0) {
      s->whead = w->next;
      if (s->whead == NULL)
        s->wtail = NULL;
      w->next = b->done;
      b->done = w;
    }
  }
  np__mux_hdr_encode(&(np__mux_hdr){.version = NP_MUX_VERSION,
                                    .type = NP_MUX_DATA,
                                    .stream = s->id,
                                    .length = (uint32_t)take},
                     (unsigned char *)b->bufs[hdr_buf].base);
  s->wbytes -= take;
  s->send_window -= (uint32_t)take;
  b->bytes += take;
}

static void on_batch_written(np_conn_write *req, int status);

static void flush(np__mux *m) {
  batch *b = &m->b;
  size_t i;
  int r;

  if (m->busy || m->dead)
    return;
  b->nbufs = b->nframes = 0;
  b->bytes = 0;
  b->done = NULL;
  b->raw = NULL;
  if (m->raw != NULL) {
    b->raw = m->raw;
    b->bufs[b->nbufs++] = uv_buf_init(m->raw, (unsigned)m->raw_len);
    b->bytes += m->raw_len;
    m->raw = NULL;
  }
  for (i = 0; i < m->nctrl && batch_room(b); i++) {
    np__mux_hdr *h = &m->ctrl[i];
    batch_hdr(b, NULL, h->type, h->flags, h->stream, h->length);
  }
  memmove(m->ctrl, m->ctrl + i, (m->nctrl - i) * sizeof(*m->ctrl));
  m->nctrl -= i;
  while (m->rhead != NULL && batch_room(b)) {
    mstream *s = m->rhead;
    size_t quantum = m->nready > 1 ? QUANTUM_SHARED : QUANTUM_ALONE;
    ready_del(m, s);
    if (s->wbytes > 0 && s->send_window > 0) {
      frame_data(b, s, quantum);
    } else if (s->wbytes == 0 && s->fin_wanted && !s->fin_sent) {
      batch_hdr(b, s, NP_MUX_DATA, NP_MUX_FIN, s->id, 0);
      s->fin_sent = 1;
    }
    if (sendable(s))
      ready_add(m, s);
  }
  if (m->goaway_pending && batch_room(b)) {
    batch_hdr(b, NULL, NP_MUX_GO_AWAY, 0, 0, NP_MUX_GOAWAY_NORMAL);
    m->goaway_pending = 0;
    m->goaway_in_batch = 1;
  }
  if (b->nbufs == 0)
    return;
  m->busy = 1;
  if ((r = np__conn_write(m->t, &b->req, b->bufs, b->nbufs, on_batch_written)) != 0) {
    /* Completes like a failed write, so every frame's stream is released the same way, but from
     * the tick and still busy meanwhile: completed here, the writers' callbacks ran inside their
     * own write or shutdown call, and one that wrote again rebuilt b under on_batch_written's loops
     * (a FIN framed there was never reported: its chan waited forever, found by the allocator
     * sweep). */
    m->batch_err = r;
    uv_idle_start(&m->tick, on_tick);
  }
}

static void finish_close(np__mux *m);

static void on_batch_written(np_conn_write *req, int status) {
  batch *b = NP_CONTAINER_OF(req, batch, req);
  np__mux *m = NP_CONTAINER_OF(b, np__mux, b);
  wreq *done = b->done;
  int goaway_done = m->goaway_in_batch;

  /* Still busy while the callbacks run: a write or shutdown they make must not rebuild b under
   * this loop; it is flushed below. */
  m->goaway_in_batch = 0;
  b->done = NULL;
  free(b->raw);
  b->raw = NULL;
  for (unsigned i = 0; i < b->nframes; i++) {
    mstream *s = b->frames[i];
    if (s == NULL)
      continue;
    s->inflight--;
    if (s->closing && s->inflight == 0)
      notify(m, s);
  }
  /* Completions run in the order the writes were made. */
  {
    wreq *rev = NULL;
    while (done != NULL) {
      wreq *n = done->next;
      done->next = rev;
      rev = done;
      done = n;
    }
    done = rev;
  }
  while (done != NULL) {
    wreq *n = done->next;
    done->req->cb(done->req, status);
    free(done);
    done = n;
  }
  for (unsigned i = 0; i < b->nframes; i++) {
    mstream *s = b->frames[i];
    if (s != NULL && s->fin_sent && s->shutdown_cb != NULL && !s->shutdown_told && !s->closing) {
      s->shutdown_told = 1;
      s->shutdown_cb(&s->base, status);
    }
  }
  m->busy = 0;
  if (status != 0) {
    fail(m, status, -1);
    return;
  }
  if (goaway_done && m->closing) {
    finish_close(m);
    return;
  }
  flush(m);
}

/* ---- the stream's np_conn ops -------------------------------------------------------------- */

static int st_read_start(np_conn *c) {
  mstream *s = (mstream *)c;
  if (s->closing)
    return UV_EINVAL;
  s->reading = 1;
  if (s->rhead != NULL || (s->fin_rcvd && !s->eof_told) || (s->err != 0 && !s->err_told))
    notify(s->mux, s);
  return 0;
}

static int st_read_stop(np_conn *c) {
  ((mstream *)c)->reading = 0;
  return 0;
}

static int st_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  mstream *s = (mstream *)c;
  np__mux *m = s->mux;
  size_t total = 0;
  wreq *w;

  if (s->closing || s->fin_wanted)
    return UV_EPIPE;
  if (s->err != 0)
    return s->err;
  for (unsigned i = 0; i < nbufs; i++)
    total += bufs[i].len;
  if (total == 0)
    return UV_EINVAL;
  if ((w = malloc(sizeof(*w) + nbufs * sizeof(uv_buf_t))) == NULL)
    return UV_ENOMEM;
  w->next = NULL;
  w->req = req;
  w->left = total;
  w->idx = 0;
  w->off = 0;
  w->nbufs = nbufs;
  memcpy(w->bufs, bufs, nbufs * sizeof(uv_buf_t));
  /* Skip empty buffers up front, so framing always finds bytes at w->idx. */
  if (s->wtail != NULL)
    s->wtail->next = w;
  else
    s->whead = w;
  s->wtail = w;
  s->wbytes += total;
  while (w->bufs[w->idx].len == 0)
    w->idx++;
  if (sendable(s))
    ready_add(m, s);
  flush(m);
  return 0;
}

/* The relay's fast path: when nothing else waits to be sent, one frame goes straight to the
 * transport from the caller's memory. Should the transport take only part of it, the rest is
 * copied and sent first thing, so the frame is never cut. */
static int st_try_write(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  mstream *s = (mstream *)c;
  np__mux *m = s->mux;
  unsigned char hdr[NP_MUX_HDR_LEN];
  uv_buf_t v[2];
  size_t n, total;
  int r;

  if (nbufs != 1 || s->closing || s->fin_wanted || s->err != 0 || m->dead || m->busy ||
      m->nctrl > 0 || m->raw != NULL || m->rhead != NULL || s->whead != NULL ||
      s->send_window == 0 || bufs[0].len == 0)
    return UV_EAGAIN;
  n = bufs[0].len;
  if (n > s->send_window)
    n = s->send_window;
  if (n > QUANTUM_ALONE)
    n = QUANTUM_ALONE;
  np__mux_hdr_encode(
      &(np__mux_hdr){
          .version = NP_MUX_VERSION, .type = NP_MUX_DATA, .stream = s->id, .length = (uint32_t)n},
      hdr);
  v[0] = uv_buf_init((char *)hdr, sizeof(hdr));
  v[1] = uv_buf_init(bufs[0].base, (unsigned)n);
  total = sizeof(hdr) + n;
  r = np__conn_try_writev(m->t, v, 2);
  if (r == UV_EAGAIN || r == 0)
    return UV_EAGAIN;
  if (r < 0)
    return r;
  if ((size_t)r < total) {
    size_t left = total - (size_t)r, off = (size_t)r;
    if ((m->raw = malloc(left)) == NULL) {
      fail(m, UV_ENOMEM, -1);
      return UV_ENOMEM;
    }
    if (off < sizeof(hdr)) {
      memcpy(m->raw, hdr + off, sizeof(hdr) - off);
      memcpy(m->raw + sizeof(hdr) - off, bufs[0].base, n);
    } else {
      memcpy(m->raw, bufs[0].base + (off - sizeof(hdr)), left);
    }
    m->raw_len = left;
    flush(m);
  }
  s->send_window -= (uint32_t)n;
  return (int)n;
}

static int st_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  mstream *s = (mstream *)c;
  if (s->closing || s->fin_wanted)
    return UV_EINVAL;
  if (s->err != 0)
    return s->err;
  s->fin_wanted = 1;
  s->shutdown_cb = cb;
  if (sendable(s))
    ready_add(s->mux, s);
  flush(s->mux);
  return 0;
}

static void st_close_common(mstream *s, np_conn_close_cb cb, int reset) {
  np__mux *m = s->mux;

  if (s->closing)
    return;
  s->closing = 1;
  s->reading = 0;
  s->close_cb = cb;
  if (s->err == 0)
    s->err = UV_ECANCELED;
  drop_writes(m, s);
  /* A stream that ended both ways needs no goodbye. One the peer finished gets our FIN; otherwise
   * the peer may still be sending and we will not read it: reset. */
  if (s->in_table && !(s->fin_sent && s->fin_rcvd) && !m->dead) {
    if (!reset && s->fin_rcvd)
      ctrl_push(m, NP_MUX_WINDOW_UPDATE, NP_MUX_FIN, s->id, 0);
    else
      ctrl_push(m, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, s->id, 0);
    flush(m);
  }
  untable(m, s);
  ready_del(m, s);
  notify(m, s);
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
  snprintf(buf, len, "%s#%u", peer, s->id);
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

/* ---- reading ------------------------------------------------------------------------------ */

static void on_fin_or_rst(np__mux *m, mstream *s, uint16_t flags) {
  if (flags & NP_MUX_RST) {
    reset_stream(m, s, UV_ECONNRESET);
    return;
  }
  if (flags & NP_MUX_FIN) {
    s->fin_rcvd = 1;
    if (s->fin_sent)
      untable(m, s); /* both ways done: the id is free */
    if (s->reading && s->rhead == NULL && !s->eof_told) {
      uv_buf_t none = uv_buf_init(NULL, 0);
      s->eof_told = 1;
      s->base.read_cb(&s->base, UV_EOF, &none);
    } else {
      notify(m, s);
    }
  }
}

/* A frame's header. Returns 0 or a protocol error. */
static int on_frame(np__mux *m, const np__mux_hdr *h) {
  mstream *s = NULL;

  if (h->type == NP_MUX_PING) {
    if (h->flags & NP_MUX_SYN) {
      if (ctrl_push(m, NP_MUX_PING, NP_MUX_ACK, 0, h->length) == 0)
        flush(m);
      return 0;
    }
    if ((h->flags & NP_MUX_ACK) && h->length == m->ping_id && m->ping_sent_ns != 0) {
      uint64_t sample = uv_hrtime() - m->ping_sent_ns;
      m->srtt_ns = m->srtt_ns == 0 ? sample : (7 * m->srtt_ns + sample) / 8;
    }
    return 0;
  }
  if (h->type == NP_MUX_GO_AWAY) {
    if (!m->remote_goaway)
      m->peer_goaway = h->length;
    m->remote_goaway = 1;
    if (h->length == NP_MUX_GOAWAY_TLS && m->o.client)
      fail(m, NP_ETLSREQUIRED, -1); /* a TLS server saw our plaintext: no stream will follow */
    return 0;
  }
  if (h->flags & NP_MUX_SYN) {
    int theirs = (h->stream & 1) != (m->o.client ? 1u : 0u);
    if (!theirs || find(m, h->stream) != NULL)
      return NP_EPROTO;
    if (m->closing || m->nstreams >= m->o.max_streams) {
      ctrl_push(m, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, h->stream, 0);
      flush(m);
    } else if ((s = stream_new(m, h->stream)) == NULL) {
      ctrl_push(m, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, h->stream, 0);
      flush(m);
    } else {
      ctrl_push(m, NP_MUX_WINDOW_UPDATE, NP_MUX_ACK, s->id, 0);
      flush(m);
      m->accept_cb(m, &s->base);
      if (m->dead)
        return 0;
      s = find(m, h->stream); /* the callee may have closed it already */
    }
  } else {
    s = find(m, h->stream);
  }
  if (h->type == NP_MUX_WINDOW_UPDATE) {
    if (s == NULL)
      return 0; /* closed here; the peer did not know yet */
    if ((uint64_t)s->send_window + h->length > UINT32_MAX)
      return NP_EPROTO;
    s->send_window += h->length;
    if (sendable(s))
      ready_add(m, s);
    on_fin_or_rst(m, s, h->flags);
    flush(m);
    return 0;
  }
  /* Data: checked against the window we granted; bytes for a stream closed here are dropped. */
  if (s != NULL && (s->fin_rcvd || h->length > s->recv_avail))
    return NP_EPROTO;
  if (s != NULL)
    s->recv_avail -= h->length;
  m->cur = s;
  m->cur_fin = h->flags & (NP_MUX_FIN | NP_MUX_RST);
  if (h->length == 0 && s != NULL) {
    on_fin_or_rst(m, s, m->cur_fin);
    m->cur = NULL;
  }
  return 0;
}

static void on_data(np__mux *m, const char *data, size_t len, int last) {
  mstream *s = m->cur;

  if (s != NULL && !s->closing && s->err == 0) {
    size_t done = s->rhead == NULL ? hand_over(m, s, data, len) : 0;
    /* The reader may have stopped, closed the stream (freed later, by the tick) or failed. */
    if (done < len && !s->closing && s->err == 0 && buffer_bytes(s, data + done, len - done) != 0)
      reset_stream(m, s, UV_ENOMEM);
  }
  if (last) {
    if (m->cur != NULL && !m->cur->closing)
      on_fin_or_rst(m, m->cur, m->cur_fin);
    m->cur = NULL;
  }
}

/* Reads stop at frame ends where that is cheap: the rest of the current frame, or a header and a
 * relay-sized body. A read that ended inside a frame would cost the reader two writes for it. */
static void mux_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  np__mux *m = c->data;
  size_t want =
      m->parser.body_left > 0 ? m->parser.body_left : NP_MUX_HDR_LEN - m->parser.have + READ_FRAME;
  (void)suggested;
  *buf = m->o.read_buf != NULL ? uv_buf_init(m->o.read_buf, (unsigned)m->o.read_buf_len)
                               : uv_buf_init(m->rbuf, READ_BUF);
  if (buf->len > want)
    buf->len = (unsigned)want;
}

static void consume(np__mux *m, const char *buf, size_t len) {
  size_t off = 0, used;
  np__mux_event ev;
  int r;

  while (off < len && !m->dead) {
    r = np__mux_parse(&m->parser, buf + off, len - off, &used, &ev);
    off += used;
    if (r < 0) {
      fail(m, r, NP_MUX_GOAWAY_PROTO);
      return;
    }
    if (r == 0)
      continue;
    if (ev.type == NP_MUX_EV_FRAME) {
      r = on_frame(m, &ev.hdr);
    } else {
      on_data(m, ev.data, ev.len, m->parser.body_left == 0);
      r = 0;
    }
    if (r != 0) {
      fail(m, r, NP_MUX_GOAWAY_PROTO);
      return;
    }
  }
}

static void mux_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  np__mux *m = c->data;

  if (nread > 0) {
    consume(m, buf->base, (size_t)nread);
  } else if (nread == UV_EOF) {
    m->peer_eof = 1;
    fail(m, UV_ECONNRESET, -1); /* open streams were cut: a reset to them */
  } else if (nread < 0) {
    fail(m, (int)nread, -1);
  }
}

/* ---- the session ------------------------------------------------------------------------- */

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

static void on_tick_closed(uv_handle_t *h) {
  np__mux *m = h->data;
  tell_end(m); /* when the mux was freed before the tick ran */
  if (m->closed_cb != NULL)
    m->closed_cb(m);
  OPENSSL_LH_free(m->by_id);
  free(m->ctrl);
  free(m->raw);
  free(m->rbuf);
  free(m);
}

/* The tick closes last: until then, streams may still need it to tell their owners. */
static void maybe_free_mux(np__mux *m) {
  if (!m->dead || m->handles > 0 || m->nstreams > 0 || m->nhead != NULL || m->batch_err != 0 ||
      m->freeing || m->held)
    return;
  m->freeing = 1;
  uv_close((uv_handle_t *)&m->tick, on_tick_closed);
}

/* The mux is done: every stream learns err, the transport closes. goaway_code >= 0: tell the peer
 * why first (best effort: the transport may be stuck). The mux is freed once the transport and the
 * timer are closed and the owners have closed every stream. */
static void fail(np__mux *m, int err, int goaway_code) {
  if (m->dead)
    return;
  if (goaway_code >= 0 && !m->busy && m->raw == NULL) {
    unsigned char h[NP_MUX_HDR_LEN];
    np__mux_hdr_encode(&(np__mux_hdr){.version = NP_MUX_VERSION,
                                      .type = NP_MUX_GO_AWAY,
                                      .length = (uint32_t)goaway_code},
                       h);
    np__conn_try_write(m->t, (const char *)h, sizeof(h));
  }
  m->dead = err;
  if (m->end_cb != NULL) {
    m->end_pending = 1;
    uv_idle_start(&m->tick, on_tick);
  }
  for (mstream *s = m->streams; s != NULL; s = s->next) {
    if (!s->closing)
      reset_stream(m, s, err);
  }
  uv_close((uv_handle_t *)&m->timer, on_handle_closed);
  np__conn_read_stop(m->t);
  if (err == UV_ECANCELED)
    np__conn_close(m->t, on_transport_closed);
  else
    np__conn_abort(m->t, on_transport_closed);
}

static void finish_close(np__mux *m) {
  fail(m, UV_ECANCELED, -1);
}

static void on_close_timeout(uv_timer_t *t) {
  np__mux *m = t->data;
  fail(m, UV_ETIMEDOUT, -1);
}

void np__mux_close(np__mux *m) {
  if (m->held) {
    m->held = 0;
    maybe_free_mux(m); /* the end came first: only the owner's hold kept it */
  }
  if (m->dead || m->closing)
    return;
  m->closing = 1;
  m->goaway_pending = 1;
  uv_timer_start(&m->timer, on_close_timeout, CLOSE_GRACE_MS, 0);
  flush(m);
}

int np__mux_new(uv_loop_t *loop, np_conn *transport, const np__mux_opts *opts, const char *prefix,
                size_t prefix_len, np__mux_accept_cb accept_cb, void *data, np__mux **out) {
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
  m->next_id = m->o.client ? 1 : 2;
  m->peer_goaway = -1;
  np__mux_parser_init(&m->parser, m->o.max_window);
  m->by_id = OPENSSL_LH_new(stream_hash, stream_cmp);
  if (m->o.read_buf == NULL || m->o.read_buf_len == 0) {
    m->o.read_buf = NULL;
    m->rbuf = malloc(READ_BUF);
  }
  if (m->by_id == NULL || (m->o.read_buf == NULL && m->rbuf == NULL)) {
    OPENSSL_LH_free(m->by_id);
    free(m->rbuf);
    free(m);
    return UV_ENOMEM;
  }
  uv_idle_init(loop, &m->tick);
  uv_timer_init(loop, &m->timer);
  m->tick.data = m->timer.data = m;
  m->handles = 2;
  transport->data = m;
  np__conn_notsent_lowat(transport, NOTSENT_LOWAT);
  send_ping(m);
  if (prefix_len > 0)
    consume(m, prefix, prefix_len);
  if (!m->dead && (r = np__conn_read_start(transport, mux_alloc, mux_read)) != 0)
    fail(m, r, -1);
  flush(m);
  *out = m;
  return 0;
}

void np__mux_set_closed_cb(np__mux *m, np__mux_closed_cb cb) {
  m->closed_cb = cb;
}

void np__mux_set_end_cb(np__mux *m, np__mux_end_cb cb) {
  m->end_cb = cb;
  m->held = cb != NULL;
  if (cb != NULL && m->dead) {
    m->end_pending = 1; /* it ended inside np__mux_new */
    uv_idle_start(&m->tick, on_tick);
  }
}

void *np__mux_data(const np__mux *m) {
  return m->data;
}

int np__mux_open(np__mux *m, np_conn **out) {
  mstream *s;

  if (m->dead || m->closing || m->remote_goaway)
    return NP_ECLOSED;
  if (m->next_id > UINT32_MAX - 2)
    return NP_ELIMIT; /* ids are never reused (spec) */
  if ((s = stream_new(m, m->next_id)) == NULL)
    return UV_ENOMEM;
  m->next_id += 2;
  ctrl_push(m, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, s->id, 0);
  flush(m);
  *out = &s->base;
  return 0;
}

np_conn *np__mux_transport(np__mux *m) {
  return m->t;
}

np__mux *np__mux_of(np_conn *c) {
  return c != NULL && c->ops == &stream_ops ? ((mstream *)c)->mux : NULL;
}

size_t np__mux_stream_count(const np__mux *m) {
  return m->nstreams;
}

uint32_t np__mux_stream_id(np_conn *c) {
  return ((mstream *)c)->id;
}

size_t np__mux_stream_buffered(np_conn *c) {
  return ((mstream *)c)->rbytes;
}

int np__mux_status(const np__mux *m) {
  return m->dead;
}

int np__mux_end_status(const np__mux *m) {
  if (m->closing)
    return UV_ECANCELED; /* asked for here: how the connection then went is no news */
  return m->peer_eof && m->dead == UV_ECONNRESET ? UV_EOF : m->dead;
}

int64_t np__mux_peer_goaway(const np__mux *m) {
  return m->peer_goaway;
}

uint64_t np__mux_rtt_us(const np__mux *m) {
  return m->srtt_ns / 1000;
}
