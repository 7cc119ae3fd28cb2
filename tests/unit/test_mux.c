/* The yamux multiplexer over real loopback sockets: bulk both ways byte-exact with half-close,
 * many streams at once, a stalled stream not blocking another, and a hostile raw peer (window
 * overrun, bad version, too many streams, reset, ping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

#include "internal.h"
#include "mux.h"
#include "mux_frame.h"

#define BIG (8u * 1024 * 1024)

typedef struct fixture fixture;

/* One end of a test stream: writes `len` bytes of a pattern keyed by `seed`, then shuts down;
 * checks that what it reads is the peer's pattern. */
typedef struct end {
  fixture *f;
  np_conn *c;
  uint32_t seed, peer_seed;
  size_t len, peer_len; /* what to send, what to expect */
  size_t got;
  int bad, eof, err, werr, shut, closed;
  int echo;   /* write back what arrives instead of a pattern */
  int server; /* accepted by the server mux */
  np_conn_write wreq;
  uv_timer_t pause; /* slow_readers: reading resumes when it fires */
  char *out;
  char rbuf[16384];
  struct end *next;
} end;

struct fixture {
  uv_loop_t loop;
  uv_tcp_t listener;
  np_conn *cconn, *sconn; /* client and server transports */
  uv_connect_t creq;
  int connected, accepted;
  np__mux *cm, *sm;
  int closed_muxes;
  uv_timer_t guard;
  end *ends;
  int ends_done;
  int accepted_streams;
  int raw; /* the client side is a raw socket driven by the test */
  uv_tcp_t raw_tcp;
  size_t raw_len;
  int raw_eof;
  int stall_server_reads; /* server ends do not read */
  size_t fast_bytes;      /* written through try_write */
  unsigned char rawbuf[1 << 20];
};

static uint32_t max_streams; /* for the server mux of the next fixture */
static int fast_writes;      /* ends try_write before they queue */
static int close_on_read;    /* ends close their stream at the first bytes they read */
static int slow_readers;     /* ends stop reading for a millisecond after every read */
static size_t max_buffered;  /* slow_readers: most bytes a stream held for its reader */

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

static char pat(uint32_t seed, size_t i) {
  return (char)((i * 2654435761u + seed) >> 7);
}

static void end_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  end *e = c->data;
  (void)suggested;
  *buf = uv_buf_init(e->rbuf, sizeof(e->rbuf));
}

static void end_closed(np_conn *c) {
  end *e = c->data;
  e->closed = 1;
  e->f->ends_done++;
}

static void end_maybe_close(end *e) {
  if (e->eof && e->shut && !e->closed && e->c != NULL) {
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

static void end_on_write(np_conn_write *req, int status) {
  end *e = req->data;
  if (status != 0) {
    e->werr = status;
    return;
  }
  if (e->echo)
    return;
  assert_int_equal(np__conn_shutdown(e->c, end_on_shutdown), 0);
}

typedef struct echo_write {
  np_conn_write req;
  char bytes[];
} echo_write;

static void echo_done(np_conn_write *req, int status) {
  assert_int_equal(status, 0);
  free(NP_CONTAINER_OF(req, echo_write, req));
}

static void end_read(np_conn *c, ssize_t n, const uv_buf_t *buf);

static void end_resume(uv_timer_t *t) {
  end *e = t->data;
  if (!e->closed)
    assert_int_equal(np__conn_read_start(e->c, end_alloc, end_read), 0);
}

static void end_read(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  end *e = c->data;
  if (n > 0 && slow_readers) {
    size_t held = np__mux_stream_buffered(c);
    if (held > max_buffered)
      max_buffered = held;
    np__conn_read_stop(c);
    if (e->pause.loop == NULL) {
      uv_timer_init(&e->f->loop, &e->pause);
      e->pause.data = e;
    }
    uv_timer_start(&e->pause, end_resume, 1, 0);
  }
  if (n > 0 && close_on_read) {
    e->got += (size_t)n;
    e->closed = -1;
    np__conn_close(c, end_closed);
    return;
  }
  if (n > 0) {
    if (e->echo) {
      echo_write *w = malloc(sizeof(*w) + (size_t)n);
      uv_buf_t b = uv_buf_init(w->bytes, (unsigned)n);
      memcpy(w->bytes, buf->base, (size_t)n);
      assert_int_equal(np__conn_write(c, &w->req, &b, 1, echo_done), 0);
    } else {
      for (ssize_t i = 0; i < n; i++)
        if (buf->base[i] != pat(e->peer_seed, e->got + (size_t)i))
          e->bad++;
    }
    e->got += (size_t)n;
    return;
  }
  if (n == UV_EOF) {
    e->eof = 1;
    if (e->echo)
      assert_int_equal(np__conn_shutdown(c, end_on_shutdown), 0);
    end_maybe_close(e);
    return;
  }
  e->err = (int)n;
}

static end *end_new(fixture *f, np_conn *c, uint32_t seed, size_t len) {
  end *e = calloc(1, sizeof(*e));
  e->f = f;
  e->c = c;
  e->seed = seed;
  e->len = len;
  e->next = f->ends;
  f->ends = e;
  c->data = e;
  return e;
}

static void end_start(end *e) {
  if (e->len > 0) {
    uv_buf_t b;
    e->out = malloc(e->len);
    for (size_t i = 0; i < e->len; i++)
      e->out[i] = pat(e->seed, i);
    b = uv_buf_init(e->out, (unsigned)e->len);
    /* The relay's way: write what goes at once, queue the rest. */
    while (fast_writes && b.len > 0) {
      int r = np__conn_try_write(e->c, b.base, b.len < 65536 ? b.len : 65536);
      if (r == UV_EAGAIN)
        break;
      assert_true(r > 0);
      e->f->fast_bytes += (size_t)r;
      b.base += r;
      b.len -= (unsigned)r;
    }
    e->wreq.data = e;
    if (b.len > 0)
      assert_int_equal(np__conn_write(e->c, &e->wreq, &b, 1, end_on_write), 0);
    else
      end_on_write(&e->wreq, 0);
  } else if (!e->echo) {
    assert_int_equal(np__conn_shutdown(e->c, end_on_shutdown), 0);
  }
  if (!e->f->stall_server_reads || !e->server || e->echo)
    assert_int_equal(np__conn_read_start(e->c, end_alloc, end_read), 0);
}

/* ---- the two muxes ----------------------------------------------------------------------- */

static size_t server_send_len = BIG;
static int server_echo;
static int borrow_reads; /* server ends take the bytes where they arrived */

static void on_server_stream(np__mux *m, np_conn *s) {
  fixture *f = np__mux_data(m);
  end *e = end_new(f, s, 2000 + np__mux_stream_id(s), server_echo ? 0 : server_send_len);
  e->echo = server_echo;
  e->server = 1;
  s->borrow = (unsigned)borrow_reads;
  e->peer_seed = 1000 + np__mux_stream_id(s);
  f->accepted_streams++;
  end_start(e);
}

static void on_client_stream(np__mux *m, np_conn *s) {
  (void)m;
  np__conn_close(s, NULL); /* the server does not open streams in these tests */
}

static void on_mux_closed(np__mux *m) {
  fixture *f = np__mux_data(m);
  f->closed_muxes++;
  if (m == f->cm)
    f->cm = NULL;
  else
    f->sm = NULL;
}

static void start_server_mux(fixture *f) {
  np__mux_opts o = {.client = 0, .max_streams = max_streams};
  assert_int_equal(np__mux_new(&f->loop, f->sconn, &o, NULL, 0, on_server_stream, f, &f->sm), 0);
  np__mux_set_closed_cb(f->sm, on_mux_closed);
}

static void on_accept(uv_stream_t *l, int status) {
  fixture *f = l->data;
  assert_int_equal(status, 0);
  assert_int_equal(np__conn_tcp_new(&f->loop, &f->sconn), 0);
  assert_int_equal(uv_accept(l, (uv_stream_t *)np__conn_tcp_handle(f->sconn)), 0);
  f->accepted = 1;
  start_server_mux(f);
}

static void on_connect(uv_connect_t *req, int status) {
  fixture *f = req->data;
  assert_int_equal(status, 0);
  f->connected = 1;
}

static void setup_pair(fixture *f, int raw) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int n = sizeof(bound);

  memset(f, 0, offsetof(fixture, rawbuf));
  f->raw = raw;
  assert_int_equal(uv_loop_init(&f->loop), 0);
  uv_timer_init(&f->loop, &f->guard);
  uv_timer_start(&f->guard, on_guard, 30000, 0);
  uv_tcp_init(&f->loop, &f->listener);
  f->listener.data = f;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(&f->listener, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 8, on_accept), 0);
  uv_tcp_getsockname(&f->listener, (struct sockaddr *)&bound, &n);
  f->creq.data = f;
  if (raw) {
    uv_tcp_init(&f->loop, &f->raw_tcp);
    f->raw_tcp.data = f;
    assert_int_equal(uv_tcp_connect(&f->creq, &f->raw_tcp, (struct sockaddr *)&bound, on_connect),
                     0);
  } else {
    assert_int_equal(np__conn_tcp_new(&f->loop, &f->cconn), 0);
    assert_int_equal(uv_tcp_connect(&f->creq, np__conn_tcp_handle(f->cconn),
                                    (struct sockaddr *)&bound, on_connect),
                     0);
  }
  while (!f->connected || !f->accepted)
    uv_run(&f->loop, UV_RUN_ONCE);
  if (!raw) {
    np__mux_opts o = {.client = 1};
    assert_int_equal(np__mux_new(&f->loop, f->cconn, &o, NULL, 0, on_client_stream, f, &f->cm), 0);
    np__mux_set_closed_cb(f->cm, on_mux_closed);
  }
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void teardown_pair(fixture *f) {
  int want = f->raw ? 1 : 2;
  if (f->cm != NULL)
    np__mux_close(f->cm);
  if (f->sm != NULL)
    np__mux_close(f->sm);
  if (f->raw && !uv_is_closing((uv_handle_t *)&f->raw_tcp))
    uv_close((uv_handle_t *)&f->raw_tcp, NULL);
  /* The owners close what is still open; the muxes go once they have. */
  while (f->closed_muxes < want) {
    for (end *e = f->ends; e != NULL; e = e->next)
      if (e->closed == 0) {
        e->closed = -1;
        np__conn_close(e->c, end_closed);
      }
    uv_run(&f->loop, UV_RUN_ONCE);
  }
  uv_close((uv_handle_t *)&f->listener, NULL);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_walk(&f->loop, close_walk, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&f->loop), 0);
  while (f->ends != NULL) {
    end *e = f->ends;
    f->ends = e->next;
    free(e->out);
    free(e);
  }
}

static fixture F;

/* ---- tests ------------------------------------------------------------------------------- */

/* BIG bytes each way on one stream the client opens; both ends check the other's pattern. */
static void bulk_exchange(fixture *f, int syn_first) {
  np_conn *s;
  end *e;

  server_send_len = BIG;
  server_echo = 0;
  setup_pair(f, 0);
  assert_int_equal(np__mux_open(f->cm, &s), 0);
  e = end_new(f, s, 1000 + np__mux_stream_id(s), BIG);
  e->peer_seed = 2000 + np__mux_stream_id(s);
  /* The SYN's batch written and done, so that the first write may take the fast path. */
  while (syn_first && (f->accepted_streams == 0 || np__mux_writing(f->cm)))
    uv_run(&f->loop, UV_RUN_ONCE);
  end_start(e);
  while (f->ends_done < 2)
    uv_run(&f->loop, UV_RUN_ONCE);
  for (end *x = f->ends; x != NULL; x = x->next) {
    assert_int_equal(x->got, BIG);
    assert_int_equal(x->bad, 0);
    assert_int_equal(x->err, 0);
    assert_int_equal(x->werr, 0);
  }
}

static void test_bulk_both_ways(void **state) {
  fixture *f = &F;
  (void)state;

  bulk_exchange(f, 0);
  assert_int_equal(np__mux_stream_count(f->cm), 0);
  assert_int_equal(np__mux_stream_count(f->sm), 0);
  teardown_pair(f);
}

/* The relay's fast paths: try_write straight to the transport, reads handed over in place. The SYN
 * goes first: the fast path waits for queued control frames. */
static void test_fast_paths(void **state) {
  fixture *f = &F;
  (void)state;

  fast_writes = borrow_reads = 1;
  bulk_exchange(f, 1);
  assert_true(f->fast_bytes > 0);
  fast_writes = borrow_reads = 0;
  teardown_pair(f);
}

static void test_many_streams(void **state) {
  fixture *f = &F;
  enum { N = 300 };
  (void)state;

  server_echo = 1;
  setup_pair(f, 0);
  for (int i = 0; i < N; i++) {
    np_conn *s;
    end *e;
    assert_int_equal(np__mux_open(f->cm, &s), 0);
    e = end_new(f, s, 1000 + np__mux_stream_id(s), 1000 + (size_t)i * 97);
    e->peer_seed = e->seed; /* an echo */
    end_start(e);
  }
  while (f->ends_done < 2 * N)
    uv_run(&f->loop, UV_RUN_ONCE);
  for (end *x = f->ends; x != NULL; x = x->next) {
    assert_int_equal(x->err, 0);
    if (!x->echo) {
      assert_int_equal(x->got, x->len);
      assert_int_equal(x->bad, 0);
    }
  }
  assert_int_equal(f->accepted_streams, N);
  teardown_pair(f);
  server_echo = 0;
}

/* A stream whose reader stalls holds at most its window; the other streams go on. */
static void test_stalled_stream_does_not_block(void **state) {
  fixture *f = &F;
  np_conn *bulk, *s;
  end *eb, *e;
  (void)state;

  server_send_len = 0;
  setup_pair(f, 0);
  f->stall_server_reads = 1;
  assert_int_equal(np__mux_open(f->cm, &bulk), 0);
  eb = end_new(f, bulk, 1, BIG);
  end_start(eb);
  /* Let the bulk stream fill its window at the reader that does not read. */
  while (f->ends == eb || np__mux_stream_buffered(f->ends->c) < NP_MUX_INITIAL_WINDOW)
    uv_run(&f->loop, UV_RUN_ONCE);
  f->stall_server_reads = 0;
  server_echo = 1;
  assert_int_equal(np__mux_open(f->cm, &s), 0);
  e = end_new(f, s, 77, 5000);
  e->peer_seed = 77;
  end_start(e);
  while (!e->closed || e->closed == -1)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(e->got, 5000);
  assert_int_equal(e->bad, 0);
  /* The stalled stream's reader got nothing: its bytes wait, within the window. */
  assert_false(eb->shut);
  server_echo = 0;
  teardown_pair(f);
}

/* Both ends write at once on several streams while both ends' readers are slow (a pause after
 * every 16 KiB read): every byte arrives, nothing deadlocks, and what a stream holds for its slow
 * reader stays within the window it granted. */
static void test_slow_readers_both_ends(void **state) {
  fixture *f = &F;
  enum { N = 4, LEN = 2 * 1024 * 1024 };
  (void)state;

  slow_readers = 1;
  max_buffered = 0;
  server_send_len = LEN;
  server_echo = 0;
  setup_pair(f, 0);
  for (int i = 0; i < N; i++) {
    np_conn *s;
    end *e;
    assert_int_equal(np__mux_open(f->cm, &s), 0);
    e = end_new(f, s, 1000 + np__mux_stream_id(s), LEN);
    e->peer_seed = 2000 + np__mux_stream_id(s);
    end_start(e);
  }
  while (f->ends_done < 2 * N)
    uv_run(&f->loop, UV_RUN_ONCE);
  for (end *x = f->ends; x != NULL; x = x->next) {
    assert_int_equal(x->got, LEN);
    assert_int_equal(x->bad, 0);
    assert_int_equal(x->err, 0);
    assert_int_equal(x->werr, 0);
  }
  assert_true(max_buffered > 0); /* the readers were the bottleneck */
  assert_true(max_buffered <= NP_MUX_DEFAULT_MAX_WINDOW);
  slow_readers = 0;
  server_send_len = BIG;
  teardown_pair(f);
}

/* ---- a raw peer ---------------------------------------------------------------------------- */

static void raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  fixture *f = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)f->rawbuf + f->raw_len, (unsigned)(sizeof(f->rawbuf) - f->raw_len));
}

static void raw_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  fixture *f = st->data;
  (void)buf;
  if (n > 0)
    f->raw_len += (size_t)n;
  else if (n < 0)
    f->raw_eof = 1;
}

static void raw_send(fixture *f, uint8_t type, uint16_t flags, uint32_t id, uint32_t len,
                     size_t data_len) {
  unsigned char h[NP_MUX_HDR_LEN];
  char *pkt = calloc(1, NP_MUX_HDR_LEN + data_len);
  uv_buf_t b;
  np__mux_hdr_encode(
      &(np__mux_hdr){.version = 0, .type = type, .flags = flags, .stream = id, .length = len}, h);
  memcpy(pkt, h, sizeof(h));
  b = uv_buf_init(pkt, (unsigned)(NP_MUX_HDR_LEN + data_len));
  assert_int_equal(uv_try_write((uv_stream_t *)&f->raw_tcp, &b, 1), (int)b.len);
  free(pkt);
}

/* Find a frame of type/flags (and stream id) among what the raw peer received. */
static int raw_find(fixture *f, uint8_t type, uint16_t flags, uint32_t id, np__mux_hdr *out) {
  size_t off = 0;
  while (off + NP_MUX_HDR_LEN <= f->raw_len) {
    np__mux_hdr h;
    if (np__mux_hdr_decode(f->rawbuf + off, &h) != 0)
      return 0;
    if (h.type == type && (h.flags & flags) == flags && h.stream == id) {
      if (out != NULL)
        *out = h;
      return 1;
    }
    off += NP_MUX_HDR_LEN + (h.type == NP_MUX_DATA ? h.length : 0);
  }
  return 0;
}

static void raw_wait(fixture *f, uint8_t type, uint16_t flags, uint32_t id, np__mux_hdr *out) {
  while (!raw_find(f, type, flags, id, out) && !f->raw_eof)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(raw_find(f, type, flags, id, out));
}

static void raw_setup(fixture *f, uint32_t limit) {
  server_echo = 0;
  server_send_len = 0;
  max_streams = limit;
  setup_pair(f, 1);
  assert_int_equal(uv_read_start((uv_stream_t *)&f->raw_tcp, raw_alloc, raw_read), 0);
}

/* The mux says go away (protocol error) and closes; then the fixture goes. */
static void expect_protocol_error(fixture *f) {
  np__mux_hdr h;
  raw_wait(f, NP_MUX_GO_AWAY, 0, 0, &h);
  assert_int_equal(h.length, NP_MUX_GOAWAY_PROTO);
  while (!f->raw_eof)
    uv_run(&f->loop, UV_RUN_ONCE);
  teardown_pair(f);
}

static void test_raw_ping_answered(void **state) {
  fixture *f = &F;
  np__mux_hdr h;
  (void)state;
  raw_setup(f, 0);
  raw_send(f, NP_MUX_PING, NP_MUX_SYN, 0, 0xdeadbeef, 0);
  raw_wait(f, NP_MUX_PING, NP_MUX_ACK, 0, &h);
  assert_int_equal(h.length, 0xdeadbeef);
  teardown_pair(f);
}

static void test_raw_window_overrun_is_fatal(void **state) {
  fixture *f = &F;
  (void)state;
  raw_setup(f, 0);
  f->stall_server_reads = 1;
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 1, 0, 0);
  raw_wait(f, NP_MUX_WINDOW_UPDATE, NP_MUX_ACK, 1, NULL);
  /* One byte more than the initial window, in one frame. */
  raw_send(f, NP_MUX_DATA, 0, 1, NP_MUX_INITIAL_WINDOW + 1, NP_MUX_INITIAL_WINDOW + 1);
  expect_protocol_error(f);
}

static void test_raw_bad_version(void **state) {
  fixture *f = &F;
  unsigned char junk[NP_MUX_HDR_LEN] = {1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0};
  uv_buf_t b = uv_buf_init((char *)junk, sizeof(junk));
  (void)state;
  raw_setup(f, 0);
  assert_int_equal(uv_try_write((uv_stream_t *)&f->raw_tcp, &b, 1), (int)sizeof(junk));
  expect_protocol_error(f);
}

static void test_raw_stream_limit(void **state) {
  fixture *f = &F;
  (void)state;
  raw_setup(f, 2);
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 1, 0, 0);
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 3, 0, 0);
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 5, 0, 0);
  raw_wait(f, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, 5, NULL);
  assert_true(raw_find(f, NP_MUX_WINDOW_UPDATE, NP_MUX_ACK, 1, NULL));
  assert_true(raw_find(f, NP_MUX_WINDOW_UPDATE, NP_MUX_ACK, 3, NULL));
  assert_int_equal(f->accepted_streams, 2);
  /* An even id is the server's to open: a protocol error. */
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 8, 0, 0);
  raw_wait(f, NP_MUX_GO_AWAY, 0, 0, NULL);
  teardown_pair(f);
}

static void test_raw_reset_reaches_reader(void **state) {
  fixture *f = &F;
  (void)state;
  raw_setup(f, 0);
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 1, 0, 0);
  raw_send(f, NP_MUX_DATA, 0, 1, 10, 10);
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, 1, 0, 0);
  while (f->ends == NULL || f->ends->err == 0)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(f->ends->err, UV_ECONNRESET);
  assert_int_equal(f->ends->got, 10);
  teardown_pair(f);
}

/* A stream closed by its reader between two reads of one DATA frame: the rest of the frame is
 * dropped, and the mux neither touches the freed stream (found by fuzz_session) nor fails. */
static void test_raw_close_inside_a_frame(void **state) {
  fixture *f = &F;
  np__mux_hdr h;
  char rest[10] = {0};
  uv_buf_t b = uv_buf_init(rest, sizeof(rest));
  (void)state;
  raw_setup(f, 0);
  close_on_read = 1;
  raw_send(f, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 1, 0, 0);
  raw_send(f, NP_MUX_DATA, 0, 1, 20, 10); /* half of the frame */
  while (f->ends == NULL || f->ends->closed != 1)
    uv_run(&f->loop, UV_RUN_ONCE); /* read, closed, and freed by the mux's next turn */
  assert_int_equal(uv_try_write((uv_stream_t *)&f->raw_tcp, &b, 1), (int)sizeof(rest));
  raw_send(f, NP_MUX_PING, NP_MUX_SYN, 0, 77, 0);
  raw_wait(f, NP_MUX_PING, NP_MUX_ACK, 0, &h);
  assert_int_equal(h.length, 77);
  assert_false(raw_find(f, NP_MUX_GO_AWAY, 0, 0, NULL));
  close_on_read = 0;
  teardown_pair(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bulk_both_ways),
      cmocka_unit_test(test_fast_paths),
      cmocka_unit_test(test_many_streams),
      cmocka_unit_test(test_stalled_stream_does_not_block),
      cmocka_unit_test(test_slow_readers_both_ends),
      cmocka_unit_test(test_raw_ping_answered),
      cmocka_unit_test(test_raw_window_overrun_is_fatal),
      cmocka_unit_test(test_raw_bad_version),
      cmocka_unit_test(test_raw_stream_limit),
      cmocka_unit_test(test_raw_reset_reaches_reader),
      cmocka_unit_test(test_raw_close_inside_a_frame),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
