/* The public multiplexer (natproxy/mux.h) through the installed headers only: two muxes over a
 * loopback TCP connection; one stream echoed by the test, byte-exact with half-close; one stream
 * joined (np_mux_join) with a TCP connection to an echo service. How a session ends: the end
 * callback once, with the reason, for a close here, a peer that says go away and leaves (issue 13:
 * the handle was freed under the embedder), and a raw peer that leaves in every other way; the
 * handle valid until np_mux_close, whose callback runs once. */
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
  np_mux_options copts = NP_MUX_OPTIONS_INIT, sopts = NP_MUX_OPTIONS_INIT;
  uv_timer_t guard;
  (void)state;

  copts.client = 1;
  sopts.max_streams = 8;
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

/* ---- how a session ends ------------------------------------------------------------------ */

typedef struct ending {
  int ends, status, closes;
  int64_t goaway;
  int in_call;      /* set around the test's calls into the mux: no callback may run inside them */
  int close_in_end; /* call np_mux_close from the end callback */
  struct np_mux_stream *st; /* a stream the peer opened */
  int st_err, st_closed;
} ending;

static ending ea, eb;
static uv_timer_t later;

static void on_end_closed(struct np_mux *m) {
  ending *e = np_mux_get_data(m);
  assert_false(e->in_call);
  assert_int_equal(e->ends, 1); /* the end is told first */
  assert_true(e->st == NULL || e->st_closed);
  e->closes++;
}

static void close_mux(struct np_mux *m) {
  ending *e = np_mux_get_data(m);
  e->in_call = 1;
  np_mux_close(m, on_end_closed);
  np_mux_close(m, on_end_closed); /* idempotent: its callback still runs once */
  e->in_call = 0;
}

static void on_end(struct np_mux *m, int status, int64_t goaway) {
  ending *e = np_mux_get_data(m);
  struct np_mux_stream *st;
  assert_false(e->in_call);
  assert_int_equal(e->closes, 0);
  e->ends++;
  e->status = status;
  e->goaway = goaway;
  assert_int_equal(np_mux_open(m, &st), NP_ECLOSED);
  if (e->close_in_end)
    close_mux(m);
}

static void tcp_pair(void) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int n = sizeof(bound);

  accepted = connected = 0;
  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&loop, &listener);
  assert_int_equal(uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&listener, 4, on_accept), 0);
  uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &n);
  uv_tcp_init(&loop, &a_tcp);
  assert_int_equal(uv_tcp_connect(&creq, &a_tcp, (struct sockaddr *)&bound, on_connect), 0);
  while (!accepted || !connected)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&listener, NULL);
}

static void start_test(void) {
  memset(&ea, 0, sizeof(ea));
  memset(&eb, 0, sizeof(eb));
  uv_loop_init(&loop);
  tcp_pair();
}

static void end_test(void) {
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Issue 13: the peer says go away and closes while no stream is open. The handle here stayed
 * without a word, then was freed, and np_mux_close wrote into freed memory. */
static void test_peer_goaway_then_close(void **state) {
  np_mux_options o = NP_MUX_OPTIONS_INIT;
  struct np_mux_stream *st;
  (void)state;

  start_test();
  o.end_cb = on_end;
  o.client = 1;
  assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, &o, on_mux_accept, &ea, &ma), 0);
  o.client = 0;
  assert_int_equal(np_mux_new((uv_stream_t *)&b_tcp, &o, on_mux_accept, &eb, &mb), 0);
  /* Both read each other's first ping, so the close below leaves nothing unread (no RST). */
  while (np_mux_rtt_us(ma) == 0 || np_mux_rtt_us(mb) == 0)
    uv_run(&loop, UV_RUN_ONCE);

  close_mux(ma);
  while (ea.closes == 0 || eb.ends == 0)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(ea.ends, 1);
  assert_int_equal(ea.status, UV_ECANCELED);
  assert_int_equal(ea.goaway, -1);
  assert_int_equal(eb.ends, 1);
  assert_int_equal(eb.status, UV_EOF);
  assert_int_equal(eb.goaway, 0); /* GO_AWAY normal */

  /* The ended handle still answers, for as long as the embedder likes. */
  for (int i = 0; i < 3; i++)
    uv_run(&loop, UV_RUN_NOWAIT);
  assert_int_equal(np_mux_stream_count(mb), 0);
  assert_int_equal(np_mux_open(mb, &st), NP_ECLOSED);
  close_mux(mb);
  assert_int_equal(eb.closes, 0); /* never from inside the call */
  end_test();
  assert_int_equal(eb.ends, 1);
  assert_int_equal(eb.closes, 1);
  assert_int_equal(ea.closes, 1);
}

/* ---- a raw peer that ends the session its way ---------------------------------------------- */

typedef struct raw_case {
  const char *name;
  unsigned char bytes[24]; /* yamux frames the peer sends first (docs/protocol.md) */
  size_t len;
  int reset; /* then RST instead of FIN */
  int status;
  int64_t goaway;
  int stream; /* the bytes open a stream: it fails and is closed a while after the end */
} raw_case;

static const raw_case raw_cases[] = {
    /* GO_AWAY, internal error */
    {"goaway 2 then FIN", {0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 12, 0, UV_EOF, 2, 0},
    {"FIN alone", {0}, 0, 0, UV_EOF, -1, 0},
    {"RST", {0}, 0, 1, UV_ECONNRESET, -1, 0},
    /* version 7: not yamux */
    {"garbage", {7, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, 12, 0, NP_EPROTO, -1, 0},
    /* WINDOW_UPDATE SYN on stream 2, then FIN under it */
    {"open stream then FIN", {0, 1, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0}, 12, 0, UV_EOF, -1, 1},
};

static uv_write_t raw_wreq;
static uv_shutdown_t raw_sreq;

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  (void)h;
  (void)s;
  *b = uv_buf_init(echo_buf, sizeof(echo_buf));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)s;
  (void)n;
  (void)b; /* what the mux says is not checked here; reading it keeps the close a FIN */
}

static void raw_written(uv_write_t *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
}

static void on_raw_stream_closed(struct np_mux_stream *st) {
  ending *e = np_mux_stream_get_data(st);
  e->st_closed = 1;
}

static void on_raw_stream_read(struct np_mux_stream *st, ssize_t n, const uv_buf_t *b) {
  ending *e = np_mux_stream_get_data(st);
  (void)b;
  assert_true(n < 0);
  e->st_err = (int)n;
}

static void on_later(uv_timer_t *t) {
  ending *e = t->data;
  assert_int_equal(e->closes, 0); /* np_mux_close's callback waits for the stream */
  np_mux_stream_close(e->st, on_raw_stream_closed);
}

static void on_raw_accept(struct np_mux *m, struct np_mux_stream *st) {
  ending *e = np_mux_get_data(m);
  e->st = st;
  np_mux_stream_set_data(st, e);
  assert_int_equal(np_mux_stream_read_start(st, on_raw_stream_read), 0);
  uv_timer_start(&later, on_later, 20, 0);
}

static void test_raw_peer_ends(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
    const raw_case *c = &raw_cases[i];
    np_mux_options o = NP_MUX_OPTIONS_INIT;
    uv_buf_t b = uv_buf_init((char *)c->bytes, (unsigned)c->len);

    print_message("raw peer: %s\n", c->name);
    start_test();
    uv_timer_init(&loop, &later);
    later.data = &ea;
    ea.close_in_end = 1;
    o.client = 1;
    o.end_cb = on_end;
    assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, &o, on_raw_accept, &ea, &ma), 0);
    uv_read_start((uv_stream_t *)&b_tcp, raw_alloc, raw_read);
    if (c->len > 0)
      assert_int_equal(uv_write(&raw_wreq, (uv_stream_t *)&b_tcp, &b, 1, raw_written), 0);
    if (c->reset)
      assert_int_equal(uv_tcp_close_reset(&b_tcp, NULL), 0);
    else
      assert_int_equal(uv_shutdown(&raw_sreq, (uv_stream_t *)&b_tcp, NULL), 0);
    while (ea.closes == 0)
      uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(ea.ends, 1);
    assert_int_equal(ea.status, c->status);
    assert_int_equal(ea.goaway, c->goaway);
    if (c->stream) {
      assert_non_null(ea.st);
      assert_int_equal(ea.st_err, UV_ECONNRESET);
    } else {
      assert_null(ea.st);
    }
    if (!c->reset)
      uv_close((uv_handle_t *)&b_tcp, NULL);
    uv_close((uv_handle_t *)&later, NULL);
    end_test();
    assert_int_equal(ea.closes, 1);
  }
}

/* Options are read by their size: none set, or one from a newer header, is refused untouched. */
static void test_options(void **state) {
  struct {
    np_mux_options o;
    uint64_t newer;
  } big;
  np_mux_options o = NP_MUX_OPTIONS_INIT;
  (void)state;

  start_test();
  o.size = 0;
  assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, &o, on_mux_accept, &ea, &ma), UV_EINVAL);
  o.size = offsetof(np_mux_options, end_cb);
  assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, &o, on_mux_accept, &ea, &ma), UV_EINVAL);
  memset(&big, 0, sizeof(big));
  big.o.size = sizeof(big);
  assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, &big.o, on_mux_accept, &ea, &ma), UV_EINVAL);
  /* No options at all: defaults and no end callback; np_mux_close still ends and frees it. */
  assert_int_equal(np_mux_new((uv_stream_t *)&a_tcp, NULL, on_mux_accept, &ea, &ma), 0);
  o.size = sizeof(o);
  o.client = 1;
  assert_int_equal(np_mux_new((uv_stream_t *)&b_tcp, &o, on_mux_accept, &eb, &mb), 0);
  ea.ends = eb.ends = 1; /* neither has an end callback: on_end_closed checks it was told */
  close_mux(ma);
  close_mux(mb);
  end_test();
  assert_int_equal(ea.closes, 1);
  assert_int_equal(eb.closes, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_public_mux),
      cmocka_unit_test(test_peer_goaway_then_close),
      cmocka_unit_test(test_raw_peer_ends),
      cmocka_unit_test(test_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
