/* The direct path's QUIC connection (lib/quic.c): two np__quic ends in one loop, each behind a UDP
 * socket on 127.0.0.1, wired as the caller wires them (what a socket receives goes to
 * np__quic_input, ops->send leaves with uv_udp_try_send). The handshake with the shared key and an
 * orderly close; 8 MiB each way at once on one stream, with a reader that stops for a while (its
 * writer is held back, the buffers stay within their bounds) and without (timed); 64 streams at
 * once, five rounds (past the server's stream limit); two streams relayed by np__join; an abort
 * that resets; a wrong key; a quiet connection kept open by keepalives; a client nobody hears; a
 * peer that vanishes; a lossy wire; garbage; a connection freed under an open stream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

#include "bufcache.h"
#include "internal.h"
#include "join.h"
#include "quic.h"

#define BULK     (8u * 1024 * 1024)
#define LOSSY    (2u * 1024 * 1024)
#define RELAYED  (1u * 1024 * 1024)
#define CHUNK    (64 * 1024)
#define NWRITES  4
#define STREAMS  64
#define ROUNDS   5
#define PAUSE_AT (2u * 1024 * 1024)
#define CAPTURED 32

typedef struct fx fx;

/* One end of the path: its socket and its np__quic. */
typedef struct side {
  fx *f;
  struct side *other;
  uv_udp_t udp;
  struct sockaddr_storage addr;
  np__quic *q;
  int ready, closed, closed_err;
  uint64_t closed_at; /* uv_hrtime */
  unsigned drop_nth;  /* drop every nth datagram this side sends */
  unsigned long sent_n;
  int cut;     /* vanished: sends nothing, takes nothing in */
  int capture; /* keep copies of what it sends */
  uint8_t *captured[CAPTURED];
  size_t captured_len[CAPTURED];
  int ncaptured;
  uint8_t rbuf[65536];
} side;

/* One end of a test stream: writes len bytes of src (then shuts down), checks that what it reads
 * is expect, byte for byte. */
typedef struct end {
  fx *f;
  np_conn *c;
  const uint8_t *src, *expect;
  size_t len, expect_len;
  size_t issued, accepted, got;
  int outstanding, seq;
  np_conn_write w[NWRITES];
  size_t wlen[NWRITES];
  int shut, eof, closed, rerr, werr, bad;
  int echo;           /* write back what arrives, shut down at EOF */
  int no_shut;        /* writes, never shuts down */
  int close_on_error; /* an error read closes it */
  size_t pause_at;    /* stop reading once this much came (0: never) */
  int err_before_closed;
  char rbuf[CHUNK];
} end;

struct fx {
  uv_loop_t loop;
  side c, s; /* client (opens streams), server (accepts them) */
  uv_timer_t guard;
  uv_timer_t pause;
  int pause_ticks;
  size_t held_accepted;
  end *ends[2 * STREAMS + 4];
  int nends, ends_closed;
  void (*on_stream)(fx *f, np_conn *c);
  end *pausing, *pause_writer;
  struct np_join *join;
  int join_done, join_status;
};

static uint8_t key_a[32], key_b[32];

static int under_valgrind(void) {
  const char *p = getenv("LD_PRELOAD");
  return p != NULL && strstr(p, "vgpreload") != NULL;
}

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

/* A deterministic pseudo-random pattern: splitmix64 of the 8-byte word's index. */
static uint8_t *pattern(uint64_t seed, size_t len) {
  uint8_t *p = malloc(len);
  assert_non_null(p);
  for (size_t i = 0; i < len; i += 8) {
    uint64_t z = (i / 8 + seed) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    memcpy(p + i, &z, len - i < 8 ? len - i : 8);
  }
  return p;
}

/* ---- the wire ---------------------------------------------------------------------------- */

static void on_send(void *ud, const uint8_t *data, size_t len) {
  side *me = ud;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

  me->sent_n++;
  if (me->cut || (me->drop_nth != 0 && me->sent_n % me->drop_nth == 0))
    return;
  if (me->capture && me->ncaptured < CAPTURED) {
    me->captured[me->ncaptured] = malloc(len);
    memcpy(me->captured[me->ncaptured], data, len);
    me->captured_len[me->ncaptured++] = len;
  }
  uv_udp_try_send(&me->udp, &b, 1, (const struct sockaddr *)&me->other->addr);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  side *me = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)me->rbuf, sizeof(me->rbuf));
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                    unsigned flags) {
  side *me = h->data;
  (void)from;
  (void)flags;
  if (nread > 0 && !me->cut && !me->other->cut)
    np__quic_input(me->q, (const uint8_t *)buf->base, (size_t)nread);
}

static void on_ready(void *ud) {
  side *me = ud;
  assert_int_equal(me->ready, 0);
  me->ready = 1;
}

static void on_closed(void *ud, int err) {
  side *me = ud;
  assert_int_equal(me->closed, 0);
  me->closed = 1;
  me->closed_err = err;
  me->closed_at = uv_hrtime();
}

static void on_stream(void *ud, np_conn *c) {
  side *me = ud;
  assert_non_null(me->f->on_stream);
  me->f->on_stream(me->f, c);
}

static const np__quic_ops ops = {
    .send = on_send, .ready = on_ready, .stream = on_stream, .closed = on_closed};

static void side_init(fx *f, side *me, side *other) {
  struct sockaddr_in sa;
  int n = sizeof(me->addr), size = 4 * 1024 * 1024;

  me->f = f;
  me->other = other;
  assert_int_equal(uv_udp_init(&f->loop, &me->udp), 0);
  me->udp.data = me;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_udp_bind(&me->udp, (const struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_udp_getsockname(&me->udp, (struct sockaddr *)&me->addr, &n), 0);
  uv_recv_buffer_size((uv_handle_t *)&me->udp, &size);
  uv_send_buffer_size((uv_handle_t *)&me->udp, &size);
  assert_int_equal(uv_udp_recv_start(&me->udp, on_alloc, on_recv), 0);
}

static void fx_init(fx *f, const uint8_t *ckey, const uint8_t *skey, uint64_t idle_ms) {
  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  uv_timer_init(&f->loop, &f->guard);
  uv_timer_init(&f->loop, &f->pause);
  f->pause.data = f;
  uv_timer_start(&f->guard, on_guard, under_valgrind() ? 150000 : 10000, 0);
  side_init(f, &f->c, &f->s);
  side_init(f, &f->s, &f->c);
  assert_int_equal(np__quic_new(&f->loop, 1, (struct sockaddr *)&f->s.addr,
                                (struct sockaddr *)&f->c.addr, skey, idle_ms, &ops, &f->s, &f->s.q),
                   0);
  assert_int_equal(np__quic_new(&f->loop, 0, (struct sockaddr *)&f->c.addr,
                                (struct sockaddr *)&f->s.addr, ckey, idle_ms, &ops, &f->c, &f->c.q),
                   0);
}

#define RUN_UNTIL(f, cond)                                                                         \
  do {                                                                                             \
    while (!(cond))                                                                                \
      uv_run(&(f)->loop, UV_RUN_ONCE);                                                             \
  } while (0)

static void fx_free(fx *f) {
  np__quic_free(f->c.q);
  np__quic_free(f->s.q);
  uv_close((uv_handle_t *)&f->c.udp, NULL);
  uv_close((uv_handle_t *)&f->s.udp, NULL);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_close((uv_handle_t *)&f->pause, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  for (int i = 0; i < f->nends; i++)
    free(f->ends[i]);
  for (int i = 0; i < f->c.ncaptured; i++)
    free(f->c.captured[i]);
}

/* ---- test streams ------------------------------------------------------------------------ */

static end *end_new(fx *f, np_conn *c, const uint8_t *src, size_t len, const uint8_t *expect,
                    size_t expect_len) {
  end *e = calloc(1, sizeof(*e));
  assert_non_null(e);
  assert_true(f->nends < (int)NP_ARRAY_SIZE(f->ends));
  f->ends[f->nends++] = e;
  e->f = f;
  e->c = c;
  e->src = src;
  e->len = len;
  e->expect = expect;
  e->expect_len = expect_len;
  c->data = e;
  return e;
}

static void end_closed(np_conn *c) {
  end *e = c->data;
  e->closed = 1;
  e->f->ends_closed++;
}

static void end_maybe_close(end *e) {
  if (e->closed == 0 && ((e->eof && e->shut) || (e->close_on_error && e->rerr != 0))) {
    e->closed = -1;
    np__conn_close(e->c, end_closed);
  }
}

static void end_on_shutdown(np_conn *c, int status) {
  end *e = c->data;
  if (status != 0) {
    e->werr = status;
    return;
  }
  e->shut = 1;
  end_maybe_close(e);
}

static void end_pump(end *e);

static void end_on_write(np_conn_write *req, int status) {
  end *e = req->data;
  size_t len = e->wlen[req - e->w];

  e->outstanding--;
  if (status != 0) {
    e->werr = status;
    return;
  }
  e->accepted += len;
  /* A write completes once its bytes are in the stream's send buffer, which has a bound. */
  assert_true(np__quic_stream_sndbuf(e->c) <= NP_QUIC_STREAM_SNDBUF);
  end_pump(e);
}

static void end_pump(end *e) {
  while (e->outstanding < NWRITES && e->issued < e->len && e->werr == 0) {
    int k = e->seq++ % NWRITES;
    size_t n = e->len - e->issued < CHUNK ? e->len - e->issued : CHUNK;
    uv_buf_t b = uv_buf_init((char *)e->src + e->issued, (unsigned)n);
    e->w[k].data = e;
    e->wlen[k] = n;
    assert_int_equal(np__conn_write(e->c, &e->w[k], &b, 1, end_on_write), 0);
    e->issued += n;
    e->outstanding++;
  }
  if (e->issued == e->len && e->outstanding == 0 && e->shut == 0 && e->werr == 0 && !e->no_shut) {
    e->shut = -1;
    assert_int_equal(np__conn_shutdown(e->c, end_on_shutdown), 0);
  }
}

typedef struct echo_write {
  np_conn_write req;
  char bytes[];
} echo_write;

static void echo_on_write(np_conn_write *req, int status) {
  end *e = req->data;
  free(NP_CONTAINER_OF(req, echo_write, req));
  e->outstanding--;
  if (status != 0) {
    e->werr = status;
    return;
  }
  if (e->eof && e->outstanding == 0 && e->shut == 0) {
    e->shut = -1;
    assert_int_equal(np__conn_shutdown(e->c, end_on_shutdown), 0);
  }
}

static void on_pause(uv_timer_t *t);

static void end_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  end *e = c->data;
  (void)suggested;
  *buf = uv_buf_init(e->rbuf, sizeof(e->rbuf));
}

static void end_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  end *e = c->data;

  if (nread > 0) {
    if (e->echo) {
      echo_write *w = malloc(sizeof(*w) + (size_t)nread);
      uv_buf_t b = uv_buf_init(w->bytes, (unsigned)nread);
      memcpy(w->bytes, buf->base, (size_t)nread);
      w->req.data = e;
      assert_int_equal(np__conn_write(c, &w->req, &b, 1, echo_on_write), 0);
      e->outstanding++;
      e->got += (size_t)nread;
      return;
    }
    if (e->got + (size_t)nread > e->expect_len ||
        memcmp(buf->base, e->expect + e->got, (size_t)nread) != 0)
      e->bad = 1;
    e->got += (size_t)nread;
    if (e->pause_at != 0 && e->got >= e->pause_at && e->f->pausing == NULL) {
      /* The reader stops: the peer's writer must be held back, not buffered without end. */
      e->pause_at = 0;
      e->f->pausing = e;
      np__conn_read_stop(c);
      uv_timer_start(&e->f->pause, on_pause, 150, 150);
    }
    return;
  }
  if (nread == UV_EOF) {
    e->eof = 1;
    if (e->echo && e->outstanding == 0 && e->shut == 0) {
      e->shut = -1;
      assert_int_equal(np__conn_shutdown(c, end_on_shutdown), 0);
    }
    end_maybe_close(e);
    return;
  }
  if (nread < 0) {
    e->rerr = (int)nread;
    e->err_before_closed = !e->f->c.closed;
    end_maybe_close(e);
  }
}

static void end_start(end *e) {
  assert_int_equal(np__conn_read_start(e->c, end_alloc, end_read), 0);
  end_pump(e);
}

/* ---- cases ------------------------------------------------------------------------------- */

static void test_handshake(void **state) {
  fx f;
  uint64_t sent, recvd, srtt, lost;
  np_conn *c;
  (void)state;

  fx_init(&f, key_a, key_a, 5000);
  assert_int_equal(np__quic_open(f.c.q, &c), UV_EAGAIN); /* not before ready */
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  assert_int_equal(f.c.closed + f.s.closed, 0);
  np__quic_stats(f.c.q, &sent, &recvd, &srtt, &lost);
  assert_true(sent > 1200 && recvd > 0);
  assert_true(srtt > 0 && srtt < 1000000);
  assert_int_equal(lost, 0);
  assert_int_equal(np__quic_open(f.s.q, &c), UV_EINVAL); /* the server opens none */
  /* An orderly close: the other side hears of it. */
  np__quic_close(f.c.q);
  assert_int_equal(f.c.closed, 0); /* never from inside the call */
  RUN_UNTIL(&f, f.c.closed && f.s.closed);
  assert_int_equal(f.c.closed_err, UV_ECANCELED);
  assert_int_equal(f.s.closed_err, NP_ECLOSED);
  fx_free(&f);
}

static end *bulk_server_end;
static uint8_t *bulk_src_c, *bulk_src_s;

static void bulk_on_stream(fx *f, np_conn *c) {
  end *e = end_new(f, c, bulk_src_s, BULK, bulk_src_c, BULK);
  bulk_server_end = e;
  end_start(e);
}

/* Every 150 ms while a reader is stopped: the writer's accepted bytes stop growing, and what it
 * had accepted beyond what was read fits in its send buffer and the reader's window. */
static void on_pause(uv_timer_t *t) {
  fx *f = t->data;
  end *r = f->pausing, *w = f->pause_writer;

  assert_true(np__quic_stream_sndbuf(w->c) <= NP_QUIC_STREAM_SNDBUF);
  assert_true(np__quic_stream_rcvbuf(r->c) <= NP_QUIC_STREAM_WINDOW_MAX);
  assert_true(w->accepted - r->got <= NP_QUIC_STREAM_SNDBUF + NP_QUIC_STREAM_WINDOW_MAX);
  if (++f->pause_ticks == 2)
    f->held_accepted = w->accepted;
  if (f->pause_ticks == 4) {
    assert_int_equal(w->accepted, f->held_accepted); /* held back */
    print_message("reader stopped at %zu KiB: writer held at %zu KiB accepted, %zu KiB in its "
                  "send buffer, %zu KiB waiting for the reader\n",
                  r->got >> 10, w->accepted >> 10, np__quic_stream_sndbuf(w->c) >> 10,
                  np__quic_stream_rcvbuf(r->c) >> 10);
    assert_true(w->issued < w->len);
    uv_timer_stop(t);
    assert_int_equal(np__conn_read_start(r->c, end_alloc, end_read), 0);
  }
}

static void run_bulk(int pause) {
  fx f;
  np_conn *c;
  end *ce;
  uint64_t t0, lost;
  double ms;

  bulk_src_c = pattern(1, BULK);
  bulk_src_s = pattern(2, BULK);
  fx_init(&f, key_a, key_a, 5000);
  f.on_stream = bulk_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  t0 = uv_hrtime();
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  ce = end_new(&f, c, bulk_src_c, BULK, bulk_src_s, BULK);
  ce->c->borrow = 1; /* the client's reader takes bytes where they lie; the server's copies */
  end_start(ce);
  RUN_UNTIL(&f, bulk_server_end != NULL);
  if (pause)
    bulk_server_end->pause_at = PAUSE_AT;
  f.pause_writer = ce;
  RUN_UNTIL(&f, f.ends_closed == 2);
  ms = (double)(uv_hrtime() - t0) / 1e6;
  print_message("bulk %u MiB each way%s: %.0f ms, %.1f MB/s each way\n", BULK >> 20,
                pause ? " (with a 600 ms pause)" : "", ms, BULK / 1e3 / ms);
  assert_int_equal(ce->bad + bulk_server_end->bad, 0);
  assert_int_equal(ce->got, BULK);
  assert_int_equal(bulk_server_end->got, BULK);
  if (pause)
    assert_int_equal(f.pause_ticks, 4);
  assert_int_equal(f.c.closed + f.s.closed, 0);
  np__quic_stats(f.c.q, NULL, NULL, NULL, &lost);
  print_message("client lost %llu packets\n", (unsigned long long)lost);
  fx_free(&f);
  free(bulk_src_c);
  free(bulk_src_s);
  bulk_server_end = NULL;
}

static void test_bulk_both_ways_with_a_pause(void **state) {
  (void)state;
  run_bulk(1);
}

static void test_bulk_timed(void **state) {
  (void)state;
  run_bulk(0);
}

static void echo_on_stream(fx *f, np_conn *c) {
  end *e = end_new(f, c, NULL, 0, NULL, 0);
  e->echo = 1;
  e->no_shut = 1; /* shuts down itself, once what it echoes is written */
  e->close_on_error = 1;
  end_start(e);
}

/* 64 streams at once, each a small echo; five rounds, more than the server's 256 streams in all:
 * the peer's streams that went make room for new ones. */
static void test_many_streams(void **state) {
  fx f;
  uint8_t *src = pattern(3, STREAMS * 97 + 4096);
  int closed_before = 0;
  (void)state;

  fx_init(&f, key_a, key_a, 5000);
  f.on_stream = echo_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  for (int round = 0; round < ROUNDS; round++) {
    end *mine[STREAMS];
    for (int i = 0; i < STREAMS; i++) {
      np_conn *c;
      int r;
      while ((r = np__quic_open(f.c.q, &c)) == UV_EAGAIN)
        uv_run(&f.loop, UV_RUN_ONCE); /* the server's MAX_STREAMS comes */
      assert_int_equal(r, 0);
      mine[i] =
          end_new(&f, c, src + i * 97, 1000 + (size_t)i * 37, src + i * 97, 1000 + (size_t)i * 37);
      end_start(mine[i]);
    }
    RUN_UNTIL(&f, f.ends_closed == closed_before + 2 * STREAMS);
    closed_before = f.ends_closed;
    for (int i = 0; i < STREAMS; i++) {
      assert_int_equal(mine[i]->bad, 0);
      assert_int_equal(mine[i]->got, mine[i]->expect_len);
    }
    for (int i = 0; i < f.nends; i++)
      free(f.ends[i]);
    f.nends = 0;
  }
  assert_int_equal(f.c.closed + f.s.closed, 0);
  fx_free(&f);
  free(src);
}

/* Two streams of the client, joined at the server by np__join (with a buffer cache, so reads are
 * borrowed and relayed through try_write): what goes in one comes out of the other, both ways. */
static np_conn *relay_pending;
static np__bufcache relay_cache;

static void on_joined(struct np_join *j, int status, const np_join_stats *st) {
  fx *f = np_join_get_data(j);
  f->join_done = 1;
  f->join_status = status;
  assert_int_equal(st->a_to_b, RELAYED);
  assert_int_equal(st->b_to_a, RELAYED);
}

static void relay_on_stream(fx *f, np_conn *c) {
  if (relay_pending == NULL) {
    relay_pending = c;
    return;
  }
  assert_int_equal(np__join(relay_pending, c, NULL, 0, &relay_cache, on_joined, f, &f->join), 0);
  relay_pending = NULL;
}

static void test_join_relays_streams(void **state) {
  fx f;
  uint8_t *a = pattern(4, RELAYED), *b = pattern(5, RELAYED);
  np_conn *ca, *cb;
  end *ea, *eb;
  (void)state;

  np__bufcache_init(&relay_cache, np__join_chunk_size(), 16);
  fx_init(&f, key_a, key_a, 5000);
  f.on_stream = relay_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  assert_int_equal(np__quic_open(f.c.q, &ca), 0);
  assert_int_equal(np__quic_open(f.c.q, &cb), 0);
  ea = end_new(&f, ca, a, RELAYED, b, RELAYED);
  eb = end_new(&f, cb, b, RELAYED, a, RELAYED);
  end_start(ea);
  end_start(eb);
  RUN_UNTIL(&f, f.ends_closed == 2 && f.join_done);
  assert_int_equal(f.join_status, 0);
  assert_int_equal(ea->bad + eb->bad, 0);
  assert_int_equal(ea->got, RELAYED);
  assert_int_equal(eb->got, RELAYED);
  fx_free(&f);
  np__bufcache_clear(&relay_cache);
  free(a);
  free(b);
}

/* An abort resets the stream: the peer's reader hears UV_ECONNRESET, not EOF; the connection
 * lives on. */
static end *abort_server_end;

static void abort_on_stream(fx *f, np_conn *c) {
  abort_server_end = end_new(f, c, NULL, 0, NULL, 0);
  abort_server_end->echo = 1;
  abort_server_end->no_shut = 1;
  abort_server_end->close_on_error = 1;
  end_start(abort_server_end);
}

static void test_abort_resets(void **state) {
  fx f;
  uint8_t *src = pattern(10, 1000);
  np_conn *c;
  end *e;
  (void)state;

  fx_init(&f, key_a, key_a, 5000);
  f.on_stream = abort_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  e = end_new(&f, c, src, 1000, src, 1000);
  e->no_shut = 1;
  end_start(e);
  RUN_UNTIL(&f, e->got == 1000);
  e->closed = -1;
  np__conn_abort(c, end_closed);
  RUN_UNTIL(&f, f.ends_closed == 2);
  assert_int_equal(abort_server_end->rerr, UV_ECONNRESET);
  assert_int_equal(abort_server_end->eof, 0);
  assert_int_equal(f.c.closed + f.s.closed, 0);
  abort_server_end = NULL;
  fx_free(&f);
  free(src);
}

/* Quiet for three times idle_ms: the keepalives keep it open. */
static void test_idle_with_keepalives(void **state) {
  fx f;
  uint64_t t0;
  (void)state;

  fx_init(&f, key_a, key_a, 600);
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  t0 = uv_hrtime();
  RUN_UNTIL(&f, uv_hrtime() - t0 > 1800 * (uint64_t)1000000 || f.c.closed || f.s.closed);
  assert_int_equal(f.c.closed + f.s.closed, 0);
  fx_free(&f);
}

/* The client's packets never arrive: the server gives up waiting after idle_ms, the client's
 * handshake times out. */
static void test_nobody_answers(void **state) {
  fx f;
  uint64_t t0 = uv_hrtime();
  (void)state;

  fx_init(&f, key_a, key_a, 400);
  f.c.cut = 1;
  RUN_UNTIL(&f, f.c.closed && f.s.closed);
  assert_int_equal(f.c.closed_err, UV_ETIMEDOUT);
  assert_int_equal(f.s.closed_err, UV_ETIMEDOUT);
  assert_true((f.s.closed_at - t0) / 1000000 < 1000);
  assert_true((f.c.closed_at - t0) / 1000000 < 1000);
  assert_int_equal(f.c.ready + f.s.ready, 0);
  fx_free(&f);
}

/* Each side holds another key: the handshake fails on both, neither is ready. */
static void test_wrong_key(void **state) {
  fx f;
  (void)state;

  fx_init(&f, key_a, key_b, 5000);
  RUN_UNTIL(&f, f.c.closed && f.s.closed);
  assert_int_equal(f.c.ready + f.s.ready, 0);
  assert_int_equal(f.s.closed_err, NP_EAUTH);
  assert_int_equal(f.c.closed_err, NP_EAUTH);
  fx_free(&f);
}

/* The peer vanishes mid-stream: the connection ends within idle_ms (and a little), the open
 * stream's reader hears UV_ECONNRESET before closed() runs. */
static void test_peer_vanishes(void **state) {
  fx f;
  uint8_t *src = pattern(6, 4096);
  np_conn *c;
  end *e;
  uint64_t cut_at, waited_ms;
  const uint64_t idle = 1500;
  (void)state;

  fx_init(&f, key_a, key_a, idle);
  f.on_stream = echo_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  e = end_new(&f, c, src, 4096, src, 4096);
  e->close_on_error = 1;
  e->no_shut = 1; /* the stream stays open */
  end_start(e);
  RUN_UNTIL(&f, e->got == 4096);
  f.s.cut = 1;
  cut_at = uv_hrtime();
  RUN_UNTIL(&f, f.c.closed && f.s.closed);
  waited_ms = (f.c.closed_at - cut_at) / 1000000;
  print_message("closed %llu ms after the peer vanished (idle_ms %llu)\n",
                (unsigned long long)waited_ms, (unsigned long long)idle);
  assert_int_equal(f.c.closed_err, UV_ETIMEDOUT);
  assert_true(waited_ms <= idle + 500);
  assert_int_equal(e->rerr, UV_ECONNRESET);
  assert_true(e->err_before_closed);
  RUN_UNTIL(&f, f.ends_closed == 2);
  fx_free(&f);
  free(src);
}

static end *lossy_server_end;

static void lossy_on_stream(fx *f, np_conn *c) {
  lossy_server_end = end_new(f, c, NULL, 0, NULL, LOSSY);
  lossy_server_end->expect = f->ends[0]->src;
  end_start(lossy_server_end);
}

/* Every 7th datagram lost both ways: 2 MiB still arrive exactly. */
static void test_lossy_wire(void **state) {
  fx f;
  uint8_t *src = pattern(7, LOSSY);
  np_conn *c;
  end *e;
  uint64_t lost;
  (void)state;

  fx_init(&f, key_a, key_a, 5000);
  f.c.drop_nth = f.s.drop_nth = 7;
  f.on_stream = lossy_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  e = end_new(&f, c, src, LOSSY, NULL, 0);
  end_start(e);
  RUN_UNTIL(&f, f.ends_closed == 2);
  assert_int_equal(lossy_server_end->bad, 0);
  assert_int_equal(lossy_server_end->got, LOSSY);
  np__quic_stats(f.c.q, NULL, NULL, NULL, &lost);
  assert_true(lost > 0);
  assert_int_equal(f.c.closed + f.s.closed, 0);
  lossy_server_end = NULL;
  fx_free(&f);
  free(src);
}

/* Random bytes, packets that look like a client's first, truncated, flipped and replayed packets:
 * dropped, nothing ends, and the connection carries on. */
static void feed_garbage(np__quic *q, uint64_t seed) {
  uint8_t *junk = pattern(seed, 1500);
  for (size_t len = 0; len <= 1500; len += 37)
    np__quic_input(q, junk, len);
  /* A long-header Initial of QUIC v1 with random contents: ngtcp2_accept takes it, it does not
   * decrypt. */
  junk[0] = 0xc3;
  memcpy(junk + 1, "\x00\x00\x00\x01\x08", 5);
  junk[14] = 8;
  junk[23] = 0;
  junk[24] = 0x44; /* a 2-byte length: 0x490, what is left of 1,200 bytes */
  junk[25] = 0x90;
  np__quic_input(q, junk, 1200);
  junk[0] = 0x41; /* a short header */
  np__quic_input(q, junk, 1200);
  free(junk);
}

static void test_garbage(void **state) {
  fx f;
  uint8_t *src = pattern(8, 65536);
  np_conn *c;
  end *e;
  (void)state;

  fx_init(&f, key_a, key_a, 5000);
  f.on_stream = echo_on_stream;
  feed_garbage(f.s.q, 10); /* the server still waits for its client */
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  feed_garbage(f.s.q, 11);
  feed_garbage(f.c.q, 12);
  f.c.capture = 1;
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  e = end_new(&f, c, src, 32768, src, 32768);
  end_start(e);
  RUN_UNTIL(&f, f.ends_closed == 2);
  f.c.capture = 0;
  assert_true(f.c.ncaptured > 0);
  for (int i = 0; i < f.c.ncaptured; i++) {
    uint8_t *p = f.c.captured[i];
    size_t len = f.c.captured_len[i];
    np__quic_input(f.s.q, p, len); /* replayed */
    for (size_t cut = 0; cut < len; cut += 1 + len / 16)
      np__quic_input(f.s.q, p, cut); /* truncated */
    for (size_t bit = 0; bit < len * 8; bit += 1 + len / 3) {
      p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
      np__quic_input(f.s.q, p, len); /* one bit flipped */
      p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
  }
  /* Still alive: another stream goes through. */
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  e = end_new(&f, c, src, 65536, src, 65536);
  end_start(e);
  RUN_UNTIL(&f, f.ends_closed == 4);
  assert_int_equal(e->bad, 0);
  assert_int_equal(e->got, 65536);
  assert_int_equal(f.c.closed + f.s.closed, 0);
  fx_free(&f); /* freed alive: closed() never runs */
  assert_int_equal(f.c.closed + f.s.closed, 0);
  free(src);
}

/* Freed with a stream its owner still holds: the stream keeps working as a dead one (error read,
 * failed writes), and the memory goes once it is closed. */
static void test_free_with_open_stream(void **state) {
  fx f;
  uint8_t *src = pattern(9, 1024);
  np_conn *c;
  end *e;
  uv_buf_t b = uv_buf_init((char *)src, 1024);
  (void)state;

  fx_init(&f, key_a, key_a, 5000);
  f.on_stream = echo_on_stream;
  RUN_UNTIL(&f, f.c.ready && f.s.ready);
  assert_int_equal(np__quic_open(f.c.q, &c), 0);
  e = end_new(&f, c, src, 1024, src, 1024);
  e->no_shut = 1;
  end_start(e);
  RUN_UNTIL(&f, e->got == 1024);
  np__quic_free(f.c.q);
  f.c.q = NULL;
  assert_int_equal(np__conn_try_write(c, (char *)src, 16), UV_ECONNRESET);
  e->w[0].data = e;
  assert_int_equal(np__conn_write(c, &e->w[0], &b, 1, end_on_write), UV_ECONNRESET);
  RUN_UNTIL(&f, e->rerr != 0);
  assert_int_equal(e->rerr, UV_ECONNRESET);
  np__conn_close(c, end_closed);
  RUN_UNTIL(&f, e->closed == 1 && f.s.closed);
  assert_int_equal(f.c.closed, 0);
  RUN_UNTIL(&f, f.ends_closed == 2);
  fx_free(&f);
  free(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_handshake),
      cmocka_unit_test(test_bulk_both_ways_with_a_pause),
      cmocka_unit_test(test_bulk_timed),
      cmocka_unit_test(test_many_streams),
      cmocka_unit_test(test_join_relays_streams),
      cmocka_unit_test(test_abort_resets),
      cmocka_unit_test(test_wrong_key),
      cmocka_unit_test(test_idle_with_keepalives),
      cmocka_unit_test(test_nobody_answers),
      cmocka_unit_test(test_peer_vanishes),
      cmocka_unit_test(test_lossy_wire),
      cmocka_unit_test(test_garbage),
      cmocka_unit_test(test_free_with_open_stream),
  };
  for (size_t i = 0; i < sizeof(key_a); i++) {
    key_a[i] = (uint8_t)(i * 7 + 1);
    key_b[i] = (uint8_t)(i * 7 + 2);
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
