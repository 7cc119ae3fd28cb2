/* np_join: a two-way relay with bounded buffering and true half-close. */
#include "join.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* One chunk in flight: the write request and the bytes share one allocation. */
typedef struct chunk {
  np_conn_write req;
  struct direction *dir;
  int cached; /* full-sized, from the join's cache; otherwise malloc'd to fit */
  char bytes[];
} chunk;

typedef struct direction {
  struct np_join *join;
  np_conn *src, *dst;
  size_t in_flight; /* bytes handed to dst and not yet written */
  uint64_t bytes;
  /* The owner's running totals this direction also adds to as bytes pass (np__join_count_into). */
  np__tally total;
  size_t run;            /* bytes of large reads in a row: a bulk transfer once SPLICE_AFTER */
  unsigned paused : 1;   /* read stopped because in_flight > HIGH */
  unsigned eof : 1;      /* src said EOF: shutdown of dst requested */
  unsigned finished : 1; /* dst shut down: this direction is done */
} direction;

struct np_join {
  direction ab, ba;
  np__splice *sp;   /* set once the zero-copy relay carries this join */
  int want_splice;  /* a bulk transfer: switch once nothing is in flight */
  int splice_tried; /* the switch is considered once per join */
  size_t waited;    /* bytes relayed while waiting for it */
  np_join_cb cb;
  void *data;
  np__bufcache *cache; /* NULL: plain malloc */
  int status;
  int closing;
  int closes_left;
};

/* Bytes read in a row in reads of at least a quarter chunk before a join moves to the zero-copy
 * relay: a bulk transfer, not request/response traffic. */
#define SPLICE_AFTER (256 * 1024)
/* Traffic both ways may never leave a moment with nothing in flight; after this many bytes the
 * join stops waiting for one and stays on the copying relay at full speed. */
#define SPLICE_WAIT_MAX (8 * 1024 * 1024)

static void finish(struct np_join *j, int status);

static direction *dir_of(np_conn *src) {
  struct np_join *j = src->data;
  return j->ab.src == src ? &j->ab : &j->ba;
}

/* A chunk for len bytes: a full one from the cache when that is worth it, else one that fits. */
static chunk *chunk_get(struct np_join *j, size_t len) {
  int cached = j->cache != NULL && len > NP_JOIN_CHUNK / 2;
  chunk *ch = cached ? np__bufcache_get(j->cache)
                     : malloc(sizeof(chunk) + (j->cache != NULL ? len : NP_JOIN_CHUNK));
  if (ch != NULL)
    ch->cached = cached;
  return ch;
}

static void chunk_put(struct np_join *j, chunk *ch) {
  if (ch == NULL)
    return;
  if (ch->cached)
    np__bufcache_put(j->cache, ch);
  else
    free(ch);
}

size_t np__join_chunk_size(void) {
  return sizeof(chunk) + NP_JOIN_CHUNK;
}

static void on_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  struct np_join *j = c->data;
  chunk *ch;
  (void)suggested;

  /* With a cache, reads land in its shared scratch buffer: memory is then spent only on bytes the
   * other side cannot take at once, not 64 KiB per readable socket. */
  if (j->cache != NULL) {
    char *scratch = np__bufcache_scratch(j->cache);
    *buf = uv_buf_init(scratch, scratch != NULL ? NP_JOIN_CHUNK : 0);
    return;
  }
  ch = chunk_get(j, NP_JOIN_CHUNK);
  if (ch == NULL) {
    *buf = uv_buf_init(NULL, 0); /* libuv turns this into UV_ENOBUFS for on_read */
    return;
  }
  ch->dir = dir_of(c);
  *buf = uv_buf_init(ch->bytes, NP_JOIN_CHUNK);
}

static void on_shutdown(np_conn *c, int status) {
  struct np_join *j = c->data;
  direction *d = j->ab.dst == c ? &j->ab : &j->ba;

  if (status != 0 && status != UV_ECANCELED) {
    finish(j, status);
    return;
  }
  d->finished = 1;
  if (j->ab.finished && j->ba.finished)
    finish(j, 0);
}

static void on_spliced(void *data, int status, uint64_t a_to_b, uint64_t b_to_a);
static void on_read(np_conn *c, ssize_t nread, const uv_buf_t *buf);

/* Resume reading d once what it waits to write has gone down to its low mark. */
static void resume(direction *d, size_t low) {
  struct np_join *j = d->join;
  if (d->paused && !d->eof && d->in_flight <= low) {
    d->paused = 0;
    if (np__conn_read_start(d->src, on_alloc, on_read) != 0)
      finish(j, UV_EIO);
  }
}

/* Hand a bulk transfer to the zero-copy relay, at a moment when nothing is in flight either way (so
 * the order of bytes holds) and neither side has ended. Request/response traffic stays on this
 * path: for small messages splicing costs more system calls than copying saves.
 * Until that moment a direction with bytes in flight stops reading, but only because of its own
 * bytes, as backpressure does anyway. Stopping the other direction as well deadlocks against a
 * peer that stops reading while its own writes are blocked (socat, or any echo service under
 * two-way traffic): the bytes we wait to write to it are the ones it waits on us to take first. */
static int maybe_splice(struct np_join *j) {
  if (!j->want_splice)
    return 0;
  if (j->closing || j->ab.eof || j->ba.eof) {
    j->want_splice = 0;
    return 0;
  }
  if (j->ab.in_flight > 0 || j->ba.in_flight > 0) {
    direction *ds[2] = {&j->ab, &j->ba};
    for (int i = 0; i < 2; i++) {
      if (ds[i]->in_flight > 0 && !ds[i]->paused) {
        ds[i]->paused = 1;
        np__conn_read_stop(ds[i]->src);
      }
    }
    return 0;
  }
  j->want_splice = 0; /* one try */
  if (np__splice_start(j->ab.src, j->ba.src, &j->cache->pipes, on_spliced, j, &j->sp) == 0) {
    np__splice_count_into(j->sp, &j->ab.total, &j->ba.total);
    return 1;
  }
  /* Nothing is in flight: a direction paused while waiting reads again. */
  resume(&j->ab, 0);
  resume(&j->ba, 0);
  return 0;
}

static void on_write(np_conn_write *req, int status) {
  chunk *ch = NP_CONTAINER_OF(req, chunk, req);
  direction *d = ch->dir;
  struct np_join *j = d->join;
  size_t len = (size_t)(uintptr_t)req->data;

  chunk_put(j, ch);
  d->in_flight -= len;
  if (j->closing)
    return;
  if (status != 0) {
    finish(j, status);
    return;
  }
  if (maybe_splice(j))
    return;
  /* While a switch waits, a paused direction reads again only once its bytes are all out. */
  resume(d, j->want_splice ? 0 : NP_JOIN_LOW);
}

static int send_chunk(direction *d, chunk *ch, size_t len) {
  uv_buf_t b = uv_buf_init(ch->bytes, (unsigned)len);
  int r;

  ch->dir = d;
  ch->req.data = (void *)(uintptr_t)len;
  if ((r = np__conn_write(d->dst, &ch->req, &b, 1, on_write)) != 0)
    return r;
  d->in_flight += len;
  d->bytes += len;
  np__tally_add(&d->total, len);
  return 0;
}

/* Hand n bytes read into the shared scratch buffer to the other side: straight through when nothing
 * is queued there and it takes them, else (what is left of them) copied into a chunk and queued. */
static int relay_scratch(direction *d, const char *bytes, size_t n) {
  struct np_join *j = d->join;
  size_t done = 0;
  chunk *ch;
  int r;

  if (d->in_flight == 0) {
    r = np__conn_try_write(d->dst, bytes, n);
    if (r < 0 && r != UV_EAGAIN)
      return r;
    done = r > 0 ? (size_t)r : 0;
    d->bytes += done;
    np__tally_add(&d->total, done);
    if (done == n)
      return 0;
  }
  if ((ch = chunk_get(j, n - done)) == NULL)
    return UV_ENOMEM;
  memcpy(ch->bytes, bytes + done, n - done);
  if ((r = send_chunk(d, ch, n - done)) != 0)
    chunk_put(j, ch);
  return r;
}

static void on_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  direction *d = dir_of(c);
  struct np_join *j = d->join;
  int scratch = j->cache != NULL;
  chunk *ch = !scratch && buf->base != NULL ? NP_CONTAINER_OF(buf->base, chunk, bytes) : NULL;
  int r;

  if (nread > 0 && !j->closing) {
    if (scratch) {
      r = relay_scratch(d, buf->base, (size_t)nread);
    } else if ((r = send_chunk(d, ch, (size_t)nread)) != 0) {
      chunk_put(j, ch);
    }
    if (r != 0) {
      finish(j, r);
      return;
    }
    d->run = (size_t)nread >= NP_JOIN_CHUNK / 4 ? d->run + (size_t)nread : 0;
    if (d->run >= SPLICE_AFTER && !j->splice_tried) {
      /* Decided once: a join that cannot splice (a mux stream, TLS) never waits for a moment. */
      j->splice_tried = 1;
      j->want_splice = scratch && np__splice_possible(j->ab.src, j->ba.src, &j->cache->pipes);
    } else if (j->want_splice && (j->waited += (size_t)nread) > SPLICE_WAIT_MAX) {
      j->want_splice = 0;
    }
    if (maybe_splice(j))
      return;
    if (d->in_flight > NP_JOIN_HIGH && !d->paused) {
      d->paused = 1;
      np__conn_read_stop(c);
    }
    return;
  }
  chunk_put(j, ch);
  if (nread == 0 || j->closing)
    return;
  if (nread == UV_EOF) {
    /* Half-close: pass the EOF on; the other direction keeps flowing until it ends too. */
    d->eof = 1;
    np__conn_read_stop(c);
    if ((r = np__conn_shutdown(d->dst, on_shutdown)) != 0)
      finish(j, r);
    return;
  }
  finish(j, (int)nread);
}

static void on_close(np_conn *c) {
  struct np_join *j = c->data;
  np_join_stats st;

  if (--j->closes_left > 0)
    return;
  st.size = sizeof(st);
  st.a_to_b = j->ab.bytes;
  st.b_to_a = j->ba.bytes;
  j->cb(j, j->status, &st);
  free(j);
}

static void finish(struct np_join *j, int status) {
  if (j->closing)
    return;
  j->closing = 1;
  j->status = status;
  j->closes_left = 2;
  if (status == 0) {
    np__conn_close(j->ab.src, on_close);
    np__conn_close(j->ba.src, on_close);
  } else {
    /* A relay that broke must not look like a stream that ended: both peers get a reset, so a
     * truncated transfer is seen as one. */
    np__conn_abort(j->ab.src, on_close);
    np__conn_abort(j->ba.src, on_close);
  }
}

static void on_spliced(void *data, int status, uint64_t a_to_b, uint64_t b_to_a) {
  struct np_join *j = data;
  /* The bytes relayed before the switch to splice, and after it. */
  np_join_stats st = {sizeof(st), j->ab.bytes + a_to_b, j->ba.bytes + b_to_a};
  j->cb(j, status, &st);
  free(j);
}

int np__join(np_conn *a, np_conn *b, const char *prefix, size_t prefix_len, np__bufcache *cache,
             np_join_cb cb, void *data, struct np_join **out) {
  struct np_join *j;
  chunk *ch = NULL;
  int r;

  if (prefix_len > NP_JOIN_CHUNK)
    return UV_EINVAL;
  if ((j = calloc(1, sizeof(*j))) == NULL)
    return UV_ENOMEM;
  j->cb = cb;
  j->data = data;
  j->cache = cache;
  /* Every chunk has the full size, so any of them can go back to the cache. */
  if (prefix_len > 0) {
    if ((ch = chunk_get(j, prefix_len)) == NULL) {
      free(j);
      return UV_ENOMEM;
    }
    memcpy(ch->bytes, prefix, prefix_len);
  }
  j->cb = cb;
  j->data = data;
  j->ab = (direction){.join = j, .src = a, .dst = b};
  j->ba = (direction){.join = j, .src = b, .dst = a};
  a->data = j;
  b->data = j;
  /* With a cache, reads are relayed from wherever they are and copied only into chunks. */
  a->borrow = b->borrow = cache != NULL;
  if (out != NULL)
    *out = j;

  /* From here on every failure goes through finish(), which reports it through cb on a later turn.
   */
  if (ch != NULL && (r = send_chunk(&j->ab, ch, prefix_len)) != 0) {
    chunk_put(j, ch);
    finish(j, r);
    return 0;
  }
  if ((r = np__conn_read_start(a, on_alloc, on_read)) != 0 ||
      (r = np__conn_read_start(b, on_alloc, on_read)) != 0)
    finish(j, r);
  return 0;
}

void np__join_abort(struct np_join *j) {
  if (j->sp != NULL)
    np__splice_abort(j->sp);
  else
    finish(j, UV_ECANCELED);
}

void np__join_count_into(struct np_join *j, const np__tally *a_to_b, const np__tally *b_to_a) {
  /* What was relayed before this call is added now; from here on each read adds as it comes, in
   * the splice relay too once the join has moved there. */
  np__tally_add(a_to_b, j->ab.bytes);
  np__tally_add(b_to_a, j->ba.bytes);
  j->ab.total = *a_to_b;
  j->ba.total = *b_to_a;
  if (j->sp != NULL)
    np__splice_count_into(j->sp, a_to_b, b_to_a);
}

int np__join_spliced(const struct np_join *j) {
  return j->sp != NULL;
}

size_t np__join_buffered(const struct np_join *j) {
  if (j->sp != NULL)
    return np__splice_buffered(j->sp);
  return j->ab.in_flight + j->ba.in_flight;
}

/* Public wrapper over caller-owned libuv streams. */

int np_join(uv_stream_t *a, uv_stream_t *b, np_join_cb cb, void *data, struct np_join **out) {
  void *a_data, *b_data;
  np_conn *ca, *cb_;
  int r;

  if (a == NULL || b == NULL || a == b || cb == NULL)
    return UV_EINVAL;
  if (uv_is_closing((uv_handle_t *)a) || uv_is_closing((uv_handle_t *)b))
    return UV_EINVAL;
  a_data = a->data;
  b_data = b->data;
  if ((r = np__conn_tcp_wrap(a, &ca)) != 0)
    return r;
  if ((r = np__conn_tcp_wrap(b, &cb_)) != 0)
    goto err_free_a;
  if ((r = np__join(ca, cb_, NULL, 0, NULL, cb, data, out)) != 0)
    goto err_free_b;
  return 0;

err_free_b:
  free(cb_);
  b->data = b_data;
err_free_a:
  free(ca);
  a->data = a_data;
  return r;
}

void *np_join_get_data(const struct np_join *join) {
  return join->data;
}

void np_join_abort(struct np_join *join) {
  np__join_abort(join);
}
