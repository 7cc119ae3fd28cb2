/* The public multiplexer (natproxy/mux.h) through the installed headers only: two muxes over a
 * loopback TCP connection; one stream echoed by the test, byte-exact with half-close; one stream
 * joined (np_mux_join) with a TCP connection to an echo service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

#define LEN (3u * 1024 * 1024 + 17)

typedef struct side {
  struct np_mux_stream *st;
  size_t got;
  int bad, eof, shut, closed;
  char *expect;
} side;

static uv_loop_t loop;
static uv_tcp_t listener, a_tcp, b_tcp, echo_listener, echo_conn, join_tcp;
static uv_connect_t creq, jreq;
static int accepted, connected, muxes_closed, join_done, join_status;
static struct np_mux *ma, *mb;
static char *payload;
static side cli, srv_side;
static int join_mode; /* the server joins accepted streams with the echo service */
static char echo_buf[65536];

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

/* ---- the echo service behind np_mux_join ---------------------------------------------------- */

static void echo_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h;
  (void)s;
  *b = uv_buf_init(echo_buf, sizeof(echo_buf));
}

static void echo_written(uv_write_t *w, int status) {
  assert_int_equal(status, 0);
  free(w);
}

static void echo_shut(uv_shutdown_t *r, int status) {
  (void)status;
  free(r);
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n > 0) {
    uv_write_t *w = malloc(sizeof(*w) + (size_t)n);
    uv_buf_t out = uv_buf_init((char *)(w + 1), (unsigned)n);
    memcpy(w + 1, b->base, (size_t)n);
    assert_int_equal(uv_write(w, s, &out, 1, echo_written), 0);
  } else if (n == UV_EOF) {
    uv_shutdown(malloc(sizeof(uv_shutdown_t)), s, echo_shut);
  }
}

static void on_echo_accept(uv_stream_t *l, int status) {
  assert_int_equal(status, 0);
  uv_tcp_init(&loop, &echo_conn);
  assert_int_equal(uv_accept(l, (uv_stream_t *)&echo_conn), 0);
  uv_read_start((uv_stream_t *)&echo_conn, echo_alloc, echo_read);
}

/* ---- stream ends ------------------------------------------------------------------------------
 */

static void on_stream_closed(struct np_mux_stream *st) {
  side *s = np_mux_stream_get_data(st);
  s->closed = 1;
}

static void maybe_close(side *s) {
  if (s->eof && s->shut && !s->closed)
    np_mux_stream_close(s->st, on_stream_closed);
}

static void on_shut(struct np_mux_stream *st, int status, void *arg) {
  side *s = arg;
  (void)st;
  assert_int_equal(status, 0);
  s->shut = 1;
  maybe_close(s);
}

static void on_written(struct np_mux_stream *st, int status, void *arg) {
  assert_int_equal(status, 0);
  assert_int_equal(np_mux_stream_shutdown(st, on_shut, arg), 0);
}

typedef struct copy {
  side *s;
  char bytes[];
} copy;

static void on_echoed(struct np_mux_stream *st, int status, void *arg) {
  (void)st;
  assert_int_equal(status, 0);
  free(arg);
}

static void on_stream_read(struct np_mux_stream *st, ssize_t n, const uv_buf_t *b) {
  side *s = np_mux_stream_get_data(st);
  if (n > 0) {
    if (s->expect != NULL) {
      if (memcmp(b->base, s->expect + s->got, (size_t)n) != 0)
        s->bad++;
    } else { /* the server side echoes */
      copy *c = malloc(sizeof(*c) + (size_t)n);
      uv_buf_t out = uv_buf_init(c->bytes, (unsigned)n);
      memcpy(c->bytes, b->base, (size_t)n);
      assert_int_equal(np_mux_stream_write(st, &out, 1, on_echoed, c), 0);
    }
    s->got += (size_t)n;
    return;
  }
  assert_int_equal(n, UV_EOF);
  s->eof = 1;
  if (s->expect == NULL)
    assert_int_equal(np_mux_stream_shutdown(st, on_shut, s), 0);
  maybe_close(s);
}

static void on_join(struct np_join *j, int status, const np_join_stats *st) {
  (void)j;
  (void)st;
  join_status = status;
  join_done = 1;
}

static void on_joined_connect(uv_connect_t *r, int status) {
  struct np_mux_stream *st = r->data;
  assert_int_equal(status, 0);
  assert_int_equal(np_mux_join(st, (uv_stream_t *)&join_tcp, on_join, NULL, NULL), 0);
}

static void on_mux_accept(struct np_mux *m, struct np_mux_stream *st) {
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  (void)m;
  if (join_mode) {
    uv_tcp_getsockname(&echo_listener, (struct sockaddr *)&ss, &n);
    uv_tcp_init(&loop, &join_tcp);
    jreq.data = st;
    assert_int_equal(uv_tcp_connect(&jreq, &join_tcp, (struct sockaddr *)&ss, on_joined_connect),
                     0);
    return;
  }
  srv_side.st = st;
  np_mux_stream_set_data(st, &srv_side);
  assert_int_equal(np_mux_stream_read_start(st, on_stream_read), 0);
}

static void on_mux_closed(struct np_mux *m) {
  (void)m;
  muxes_closed++;
}

static void on_accept(uv_stream_t *l, int status) {
  assert_int_equal(status, 0);
  uv_tcp_init(&loop, &b_tcp);
  assert_int_equal(uv_accept(l, (uv_stream_t *)&b_tcp), 0);
  accepted = 1;
}

static void on_connect(uv_connect_t *r, int status) {
  (void)r;
  assert_int_equal(status, 0);
  connected = 1;
}

static void run_stream(int join) {
  uv_buf_t b = uv_buf_init(payload, LEN);
  memset(&cli, 0, sizeof(cli));
  memset(&srv_side, 0, sizeof(srv_side));
  join_mode = join;
  cli.expect = payload;
  assert_int_equal(np_mux_open(ma, &cli.st), 0);
  np_mux_stream_set_data(cli.st, &cli);
  assert_int_equal(np_mux_stream_read_start(cli.st, on_stream_read), 0);
  assert_int_equal(np_mux_stream_write(cli.st, &b, 1, on_written, &cli), 0);
  while (!cli.closed || (join && !join_done) || (!join && !srv_side.closed))
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(cli.got, LEN);
  assert_int_equal(cli.bad, 0);
  if (join)
    assert_int_equal(join_status, 0);
}

static void test_public_mux(void **state) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int n = sizeof(bound);
  np_mux_options copts = {.client = 1}, sopts = {.client = 0, .max_streams = 8};
  uv_timer_t guard;
  (void)state;

  payload = malloc(LEN);
  for (size_t i = 0; i < LEN; i++)
    payload[i] = (char)(i * 31 + (i >> 13));
  uv_loop_init(&loop);
  uv_timer_init(&loop, &guard);
  uv_timer_start(&guard, on_guard, 30000, 0);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&loop, &listener);
  uv_tcp_init(&loop, &echo_listener);
  assert_int_equal(uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_tcp_bind(&echo_listener, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&listener, 4, on_accept), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&echo_listener, 4, on_echo_accept), 0);
  uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &n);
  uv_tcp_init(&loop, &a_tcp);
  assert_int_equal(uv_tcp_connect(&creq, &a_tcp, (struct sockaddr *)&bound, on_connect), 0);
  while (!accepted || !connected)
    uv_run(&loop, UV_RUN_ONCE);

  assert_int_equal(np_mux_new(NULL, &copts, on_mux_accept, NULL, &ma), UV_EINVAL);
  assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, &copts, on_mux_accept, NULL, &ma), 0);
  assert_int_equal(np_mux_new((uv_stream_t *)&b_tcp, &sopts, on_mux_accept, NULL, &mb), 0);

  run_stream(0); /* echoed through the public stream calls */
  run_stream(1); /* echoed by a TCP service behind np_mux_join */
  assert_int_equal(np_mux_stream_count(ma), 0);

  np_mux_close(ma, on_mux_closed);
  np_mux_close(mb, on_mux_closed);
  while (muxes_closed < 2)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&listener, NULL);
  uv_close((uv_handle_t *)&echo_listener, NULL);
  uv_close((uv_handle_t *)&echo_conn, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  free(payload);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_public_mux)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
