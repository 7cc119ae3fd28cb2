/* np_join over real loopback sockets: half-close, bounded buffering with a slow reader, abort. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <natproxy.h>

#include "join.h"

/* Two connected pairs: visitor <-> a ... b <-> service; the join relays a <-> b. */
typedef struct fixture {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_tcp_t visitor, service;      /* the test's ends */
  uv_tcp_t a, b;                  /* the join's ends */
  uv_pipe_t unix_b, unix_service; /* unix_mode: b and the service are a socketpair instead */
  int accepted, connected;
  uv_connect_t creq[2];
  struct np_join *join;
  int join_status, join_done;
  int spliced;
  np_join_stats stats;
  uv_timer_t guard;
  /* traffic */
  char *big;
  size_t big_len;
  size_t got;
  int bad_byte;
  int got_eof;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  char rbuf[65536];
  size_t max_buffered;
  uv_timer_t sampler;
  size_t last_queue;
  int stable;
  int reading;
} fixture;

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

static void on_join(struct np_join *j, int status, const np_join_stats *st) {
  fixture *f = np_join_get_data(j);
  f->join_status = status;
  f->join_done = 1;
  f->stats = *st;
  f->spliced = np__join_spliced(j);
}

static void on_accept(uv_stream_t *l, int status) {
  fixture *f = l->data;
  assert_int_equal(status, 0);
  uv_tcp_init(&f->loop, f->accepted == 0 ? &f->a : &f->b);
  assert_int_equal(uv_accept(l, (uv_stream_t *)(f->accepted == 0 ? &f->a : &f->b)), 0);
  f->accepted++;
}

static void on_connect(uv_connect_t *req, int status) {
  fixture *f = req->data;
  assert_int_equal(status, 0);
  f->connected++;
}

static int splice_mode; /* joins go through np__join with pipes: the zero-copy relay */
static np__bufcache cache;
static int unix_mode; /* splice mode with a service side that cannot splice (as a mux stream) */
static const char *prefix; /* splice mode: bytes already read from the visitor's side */
static size_t prefix_len;

static void setup_pairs(fixture *f) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int n = sizeof(bound);

  memset(f, 0, sizeof(*f));
  assert_int_equal(uv_loop_init(&f->loop), 0);
  uv_timer_init(&f->loop, &f->guard);
  uv_timer_start(&f->guard, on_guard, 20000, 0);
  uv_tcp_init(&f->loop, &f->listener);
  f->listener.data = f;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(&f->listener, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&f->listener, 8, on_accept), 0);
  uv_tcp_getsockname(&f->listener, (struct sockaddr *)&bound, &n);
  uv_tcp_init(&f->loop, &f->visitor);
  uv_tcp_init(&f->loop, &f->service);
  f->visitor.data = f->service.data = f;
  f->creq[0].data = f->creq[1].data = f;
  /* Connect one at a time so the first accepted socket is the visitor's peer. */
  uv_tcp_connect(&f->creq[0], &f->visitor, (struct sockaddr *)&bound, on_connect);
  while (f->accepted < 1 || f->connected < 1)
    uv_run(&f->loop, UV_RUN_ONCE);
  if (unix_mode) {
    uv_os_sock_t sv[2];
    int small = 16 * 1024;
    assert_int_equal(uv_socketpair(SOCK_STREAM, 0, sv, UV_NONBLOCK_PIPE, UV_NONBLOCK_PIPE), 0);
    /* Small buffers: a peer's blocked write is reached within a few chunks. */
    for (int i = 0; i < 2; i++) {
      setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
      setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    }
    uv_pipe_init(&f->loop, &f->unix_b, 0);
    uv_pipe_init(&f->loop, &f->unix_service, 0);
    assert_int_equal(uv_pipe_open(&f->unix_b, sv[0]), 0);
    assert_int_equal(uv_pipe_open(&f->unix_service, sv[1]), 0);
    f->unix_service.data = f;
  } else {
    uv_tcp_connect(&f->creq[1], &f->service, (struct sockaddr *)&bound, on_connect);
    while (f->accepted < 2 || f->connected < 2)
      uv_run(&f->loop, UV_RUN_ONCE);
  }
  if (splice_mode) {
    /* The server's and client's way: internal conns and a relay cache with pipes. */
    np_conn *ca, *cb;
    np__bufcache_init(&cache, np__join_chunk_size(), 4);
    cache.pipes.enabled = 1;
    assert_int_equal(np__conn_tcp_wrap((uv_stream_t *)&f->a, &ca), 0);
    assert_int_equal(
        np__conn_tcp_wrap(unix_mode ? (uv_stream_t *)&f->unix_b : (uv_stream_t *)&f->b, &cb), 0);
    assert_int_equal(np__join(ca, cb, prefix, prefix_len, &cache, on_join, f, &f->join), 0);
    return;
  }
  assert_int_equal(np_join((uv_stream_t *)&f->a, (uv_stream_t *)&f->b, on_join, f, &f->join), 0);
}

static void teardown_pairs(fixture *f) {
  if (splice_mode)
    np__bufcache_clear(&cache);
  uv_close((uv_handle_t *)&f->listener, NULL);
  uv_close((uv_handle_t *)&f->guard, NULL);
  if (!uv_is_closing((uv_handle_t *)&f->visitor))
    uv_close((uv_handle_t *)&f->visitor, NULL);
  if (unix_mode && !uv_is_closing((uv_handle_t *)&f->unix_service))
    uv_close((uv_handle_t *)&f->unix_service, NULL);
  if (!uv_is_closing((uv_handle_t *)&f->service))
    uv_close((uv_handle_t *)&f->service, NULL);
  if (f->sampler.loop != NULL)
    uv_close((uv_handle_t *)&f->sampler, NULL);
  uv_run(&f->loop, UV_RUN_DEFAULT);
  /* Every handle closed, the join's included: a leak fails here. */
  assert_int_equal(uv_loop_close(&f->loop), 0);
  free(f->big);
}

static void alloc_cb(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  fixture *f = h->data;
  (void)sz;
  *buf = uv_buf_init(f->rbuf, sizeof(f->rbuf));
}

/* Checks the pattern byte i == (i * 7) % 251 while counting. */
static void on_pattern_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  fixture *f = s->data;
  if (n == UV_EOF) {
    f->got_eof = 1;
    return;
  }
  assert_true(n >= 0);
  for (ssize_t i = 0; i < n; i++)
    if ((unsigned char)buf->base[i] != (unsigned char)(((f->got + (size_t)i) * 7) % 251))
      f->bad_byte = 1;
  f->got += (size_t)n;
}

static void fill_pattern(fixture *f, size_t len) {
  f->big = malloc(len);
  f->big_len = len;
  for (size_t i = 0; i < len; i++)
    f->big[i] = (char)((i * 7) % 251);
}

/* ---- half-close: the visitor sends a request and shuts down writing; the reply still arrives ----
 */

static size_t service_got;
static int service_eof;

static void on_service_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  fixture *f = s->data;
  (void)buf;
  if (n == UV_EOF) {
    uv_buf_t b = uv_buf_init(f->big, (unsigned)f->big_len);
    service_eof = 1;
    /* Only now, after the request's EOF, send the whole reply and then close our side. */
    uv_write(&f->wreq, s, &b, 1, NULL);
    uv_shutdown(&f->sreq, s, NULL);
    return;
  }
  if (n > 0)
    service_got += (size_t)n;
}

static void test_half_close(void **state) {
  fixture f;
  uv_write_t w;
  uv_shutdown_t sd;
  uv_buf_t req = uv_buf_init("GET /\r\n", 7);
  (void)state;

  setup_pairs(&f);
  fill_pattern(&f, 3 * 1024 * 1024);
  service_got = 0;
  service_eof = 0;
  uv_read_start((uv_stream_t *)&f.service, alloc_cb, on_service_read);
  uv_read_start((uv_stream_t *)&f.visitor, alloc_cb, on_pattern_read);
  uv_write(&w, (uv_stream_t *)&f.visitor, &req, 1, NULL);
  uv_shutdown(&sd, (uv_stream_t *)&f.visitor, NULL);
  while (!f.join_done)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(f.join_status, 0);
  assert_int_equal(service_got, 7 + prefix_len);
  assert_true(service_eof);
  while (!f.got_eof)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(f.got, f.big_len);
  assert_false(f.bad_byte);
  assert_true(f.stats.a_to_b == 7 + prefix_len);
  /* The visitor had half-closed before the reply came: such joins stay on the copying relay. */
  assert_false(f.spliced);
  assert_true(f.stats.b_to_a == f.big_len);
  teardown_pairs(&f);
}

/* ---- slow reader: the service floods, the visitor does not read; the relay must not buffer it
 * ---- */

static void sample(uv_timer_t *t) {
  fixture *f = t->data;
  size_t q;
  if (f->join_done)
    return;
  q = uv_stream_get_write_queue_size((uv_stream_t *)&f->service);
  if (np__join_buffered(f->join) > f->max_buffered)
    f->max_buffered = np__join_buffered(f->join);
  /* The flood has stalled once the service's own queue stops shrinking: every buffer in between is
   * full. Then the visitor starts reading, and everything must still arrive intact. */
  f->stable = q > 0 && q == f->last_queue ? f->stable + 1 : 0;
  f->last_queue = q;
  if (f->stable >= 5 && !f->reading) {
    f->reading = 1;
    uv_read_start((uv_stream_t *)&f->visitor, alloc_cb, on_pattern_read);
  }
}

static void test_slow_reader(void **state) {
  fixture f;
  uv_buf_t b;
  (void)state;

  setup_pairs(&f);
  fill_pattern(&f, 48 * 1024 * 1024);
  b = uv_buf_init(f.big, (unsigned)f.big_len);
  uv_write(&f.wreq, (uv_stream_t *)&f.service, &b, 1, NULL);
  uv_shutdown(&f.sreq, (uv_stream_t *)&f.service, NULL);
  uv_timer_init(&f.loop, &f.sampler);
  f.sampler.data = &f;
  uv_timer_start(&f.sampler, sample, 10, 10);
  while (!f.got_eof)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_true(f.reading);
  assert_int_equal(f.got, f.big_len);
  assert_false(f.bad_byte);
  /* The bound of join.h: HIGH plus one chunk per direction. */
  assert_true(f.max_buffered > 0);
  assert_true(f.max_buffered <= NP_JOIN_HIGH + NP_JOIN_CHUNK);
  uv_close((uv_handle_t *)&f.visitor, NULL); /* ends the other direction too */
  while (!f.join_done)
    uv_run(&f.loop, UV_RUN_ONCE);
  teardown_pairs(&f);
}

/* ---- two ways at once through an echo service that, like socat with EXEC:cat, stops reading while
 * its own writes are blocked; the visitor sends everything while it reads the echo ---- */

/* Like socat: no more reads while a write is blocked. */
typedef struct echo_write {
  uv_write_t req;
  char bytes[];
} echo_write;

static int echo_paused;
static uv_shutdown_t echo_shutdown;

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void echo_written(uv_write_t *req, int status) {
  uv_stream_t *s = req->handle;
  (void)status;
  free(req);
  if (echo_paused && uv_stream_get_write_queue_size(s) == 0) {
    echo_paused = 0;
    uv_read_start(s, alloc_cb, echo_read);
  }
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  echo_write *w;
  uv_buf_t b;

  if (n <= 0) {
    if (n == UV_EOF)
      uv_shutdown(&echo_shutdown, s, NULL);
    return;
  }
  assert_non_null(w = malloc(sizeof(*w) + (size_t)n));
  memcpy(w->bytes, buf->base, (size_t)n);
  b = uv_buf_init(w->bytes, (unsigned)n);
  assert_int_equal(uv_write(&w->req, s, &b, 1, echo_written), 0);
  if (uv_stream_get_write_queue_size(s) > 0) {
    echo_paused = 1;
    uv_read_stop(s);
  }
}

static void test_echo_both_ways(void **state) {
  fixture f;
  uv_stream_t *service;
  uv_buf_t b;
  (void)state;

  setup_pairs(&f);
  service = unix_mode ? (uv_stream_t *)&f.unix_service : (uv_stream_t *)&f.service;
  fill_pattern(&f, 24 * 1024 * 1024);
  echo_paused = 0;
  uv_read_start(service, alloc_cb, echo_read);
  uv_read_start((uv_stream_t *)&f.visitor, alloc_cb, on_pattern_read);
  b = uv_buf_init(f.big, (unsigned)f.big_len);
  uv_write(&f.wreq, (uv_stream_t *)&f.visitor, &b, 1, NULL);
  uv_shutdown(&f.sreq, (uv_stream_t *)&f.visitor, NULL);
  while (!f.got_eof)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(f.got, f.big_len);
  assert_false(f.bad_byte);
  while (!f.join_done)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(f.join_status, 0);
  teardown_pairs(&f);
}

static void test_abort_and_args(void **state) {
  fixture f;
  (void)state;

  setup_pairs(&f);
  np_join_abort(f.join);
  assert_false(f.join_done); /* never from inside the call */
  while (!f.join_done)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_int_equal(f.join_status, UV_ECANCELED);
  assert_true(uv_is_closing((uv_handle_t *)&f.a) && uv_is_closing((uv_handle_t *)&f.b));
  assert_int_equal(np_join((uv_stream_t *)&f.visitor, (uv_stream_t *)&f.visitor, on_join, &f, NULL),
                   UV_EINVAL);
  assert_int_equal(np_join(NULL, (uv_stream_t *)&f.visitor, on_join, &f, NULL), UV_EINVAL);
  teardown_pairs(&f);
}

/* The visitor vanishes (RST) mid-stream: the join ends with an error and closes the other side. */
static void test_peer_vanishes(void **state) {
  fixture f;
  uv_buf_t b;
  (void)state;

  setup_pairs(&f);
  fill_pattern(&f, 8 * 1024 * 1024);
  b = uv_buf_init(f.big, (unsigned)f.big_len);
  uv_write(&f.wreq, (uv_stream_t *)&f.service, &b, 1, NULL);
  uv_tcp_close_reset(&f.visitor, NULL);
  while (!f.join_done)
    uv_run(&f.loop, UV_RUN_ONCE);
  assert_true(f.join_status < 0);
  teardown_pairs(&f);
}

/* A bulk transfer moves to the zero-copy relay mid-stream and arrives intact, EOF included. */
static void test_bulk_switches_to_splice(fixture *f) {
  uv_buf_t b;

  setup_pairs(f);
  fill_pattern(f, 16 * 1024 * 1024);
  b = uv_buf_init(f->big, (unsigned)f->big_len);
  uv_write(&f->wreq, (uv_stream_t *)&f->service, &b, 1, NULL);
  uv_shutdown(&f->sreq, (uv_stream_t *)&f->service, NULL);
  uv_read_start((uv_stream_t *)&f->visitor, alloc_cb, on_pattern_read);
  while (!f->got_eof)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_int_equal(f->got, f->big_len);
  assert_false(f->bad_byte);
  uv_close((uv_handle_t *)&f->visitor, NULL);
  while (!f->join_done)
    uv_run(&f->loop, UV_RUN_ONCE);
  assert_true(f->spliced);
  assert_true(f->stats.b_to_a == f->big_len);
  teardown_pairs(f);
}

/* The same cases through the zero-copy relay (splice), and one with bytes to send first. */
static void test_spliced(void **state) {
  fixture f;
  splice_mode = 1;
  test_bulk_switches_to_splice(&f);
  test_half_close(state);
  test_slow_reader(state);
  test_echo_both_ways(state);
  /* A bulk transfer with one side that cannot splice (a mux stream, TLS) stays on this relay, and
   * waiting for a moment to switch must not stall it. */
  unix_mode = 1;
  test_echo_both_ways(state);
  unix_mode = 0;
  test_abort_and_args(state);
  test_peer_vanishes(state);
  prefix = "pre";
  prefix_len = 3;
  test_half_close(state);
  prefix = NULL;
  prefix_len = 0;
  splice_mode = 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_half_close),     cmocka_unit_test(test_slow_reader),
      cmocka_unit_test(test_abort_and_args), cmocka_unit_test(test_peer_vanishes),
      cmocka_unit_test(test_echo_both_ways), cmocka_unit_test(test_spliced),
  };
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
