/* A mux over TLS closed gracefully while the socket is full: the peer (a reader that pauses, then
 * reads slowly, with small socket buffers) still gets every frame whole and the GO_AWAY. A batch
 * that TLS took whole but kept partly queued once counted as written, and the close that followed
 * the GO_AWAY's batch cut what was queued (found in review; 9 streams hit it reliably, and drain
 * within the close's grace under valgrind). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <natproxy.h>
#include "dial.h"
#include "tls.h"
#include "mux.h"

#define NSTREAMS 9
#define PER      (256 * 1024)
#define CAP      (64u << 20)

static uv_loop_t loop;
static uv_tcp_t listener;
static np__logger logger;
static char dir[] = "/tmp/np-test-rep-XXXXXX";
static np__tls *stls, *ctls;
static int port;
static char *sbuf, *payload;
static size_t slen;
static int srv_status, paused_once;
static uv_timer_t resume_t, close_t;
static np_conn *srv;
static np__mux *cm;
static np_conn_write wreq[NSTREAMS];
static int mux_closed;

static void s_alloc(np_conn *c, size_t sz, uv_buf_t *b) {
  (void)c;
  (void)sz;
  *b = uv_buf_init(sbuf + slen, (unsigned)(CAP - slen > 65536 ? 65536 : CAP - slen));
}
static void s_closed(np_conn *c) {
  (void)c;
}
static void on_resume(uv_timer_t *t);
static void s_read(np_conn *c, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n > 0) {
    slen += (size_t)n;
    /* Stalled from the first read until well after the close (at 300 ms), then reading all it
     * gets, so that what is queued drains within the close's grace even under valgrind. */
    if (!paused_once) {
      paused_once = 1;
      np__conn_read_stop(c);
      uv_timer_start(&resume_t, on_resume, 500, 0);
    }
    return;
  }
  if (n < 0) {
    srv_status = (int)n;
    np__conn_close(c, s_closed);
    uv_close((uv_handle_t *)&listener, NULL);
  }
}
static void on_resume(uv_timer_t *t) {
  (void)t;
  np__conn_read_start(srv, s_alloc, s_read);
}
static void on_accept(uv_stream_t *l, int status) {
  np_conn *tcp;
  assert_int_equal(status, 0);
  assert_int_equal(np__conn_tcp_new(&loop, &tcp), 0);
  assert_int_equal(uv_accept(l, (uv_stream_t *)np__conn_tcp_handle(tcp)), 0);
  {
    int v = 65536;
    uv_recv_buffer_size((uv_handle_t *)np__conn_tcp_handle(tcp), &v);
  }
  assert_int_equal(np__tls_wrap(stls, tcp, &srv), 0);
  assert_int_equal(np__conn_read_start(srv, s_alloc, s_read), 0);
}
static void st_closed(np_conn *c) {
  (void)c;
}
static void written(np_conn_write *w, int status) {
  (void)status;
  np__conn_close(w->conn, st_closed);
}
static void m_accept(np__mux *m, np_conn *s) {
  (void)m;
  np__conn_close(s, st_closed);
}
static void m_closed(np__mux *m) {
  mux_closed = 1;
  fprintf(stderr, "client mux status %s at %llu ms\n", uv_err_name(np__mux_status(m)),
          (unsigned long long)(uv_hrtime() / 1000000));
}
static void on_close_t(uv_timer_t *t) {
  (void)t;
  np__mux_close(cm);
}

static void on_dialed(void *data, int status, np_conn *c) {
  np__mux_opts o = {.client = 1};
  (void)data;
  assert_int_equal(status, 0);
  {
    int v = 65536;
    uv_send_buffer_size((uv_handle_t *)np__conn_tcp_handle(c->ops->lower(c)), &v);
  }
  assert_int_equal(np__mux_new(&loop, c, &o, NULL, 0, m_accept, NULL, &cm), 0);
  np__mux_set_closed_cb(cm, m_closed);
  for (int i = 0; i < (getenv("NS") ? atoi(getenv("NS")) : NSTREAMS); i++) {
    np_conn *s;
    uv_buf_t b = uv_buf_init(payload, PER);
    assert_int_equal(np__mux_open(cm, &s), 0);
    assert_int_equal(np__conn_write(s, &wreq[i], &b, 1, written), 0);
  }
  uv_timer_start(&close_t, on_close_t, 300, 0);
}

static void test_goaway_arrives(void **state) {
  struct np_config *sc, *cc;
  char spec[64];
  struct sockaddr_in sa;
  int n = sizeof(sa);
  (void)state;
  assert_non_null(mkdtemp(dir));
  sbuf = malloc(CAP);
  payload = calloc(1, PER);
  assert_int_equal(uv_loop_init(&loop), 0);
  np__logger_init(&logger);
  uv_timer_init(&loop, &resume_t);
  uv_timer_init(&loop, &close_t);
  assert_int_equal(uv_tcp_init(&loop, &listener), 0);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&listener, 16, on_accept), 0);
  uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &n);
  port = ntohs(sa.sin_port);
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &sc), 0);
  assert_int_equal(np_config_set_flag(sc, "tls-dir", dir), 0);
  assert_int_equal(np__tls_server_new(&loop, sc, &logger, &stls), 0);
  np_config_free(sc);
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cc), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", port);
  assert_int_equal(np_config_set_flag(cc, "server", spec), 0);
  assert_int_equal(np_config_set_flag(cc, "server-fingerprint", np__tls_fingerprint(stls)), 0);
  assert_int_equal(np__tls_client_new(&loop, cc, &logger, &ctls), 0);
  np_config_free(cc);
  assert_int_equal(np__dial_tls(&loop, spec, 30000, ctls, on_dialed, NULL, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  {
    size_t off = 0;
    int goaway = 0, frames = 0;
    while (off + 12 <= slen) {
      unsigned char *h = (unsigned char *)sbuf + off;
      uint32_t len = (uint32_t)h[8] << 24 | (uint32_t)h[9] << 16 | (uint32_t)h[10] << 8 | h[11];
      frames++;
      if (h[1] == 3)
        goaway = 1;
      off += 12 + (h[1] == 0 ? len : 0);
    }
    fprintf(stderr,
            "server read %zu plaintext bytes, %d frames, leftover %zu, status %s, goaway %d\n",
            slen, frames, slen - off, srv_status ? uv_err_name(srv_status) : "0", goaway);
    assert_true(goaway);
    assert_int_equal(slen - off, 0); /* no frame cut short */
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_goaway_arrives)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
