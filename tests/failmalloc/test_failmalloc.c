/* The allocator sweep (nghttp2's failmalloc habit): each scenario runs again and again with the
 * n-th allocation failing, for every n until a run no longer reaches n, in our code, libuv and
 * OpenSSL alike. Whatever fails, the scenario must end with an error code, never crash, and free
 * everything: every handle closed (uv_loop_close succeeds) and, in the AddressSanitizer build,
 * nothing left for LeakSanitizer. Scenarios: the codecs, and a whole tunnel (np_server and
 * np_client on one loop, a visitor and an echo service) with TLS and multiplexing, and in clear
 * without. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <natproxy.h>

#include "failmalloc.h"

void *__real_malloc(size_t n);

/* ---- the codecs --------------------------------------------------------------------------- */

static void codec_scenario(void *arg) {
  const np_codec_ops *c = arg;
  np_msg msgs[] = {
      {.type = NP_MSG_HELLO, .version = 1},
      {.type = NP_MSG_LOGIN, .version = 1, .name = "box", .id = 7},
      {.type = NP_MSG_PROXY, .name = "web", .addr = "0.0.0.0", .port = 8080},
      {.type = NP_MSG_REQ_WORK, .id = 42, .name = "web"},
      {.type = NP_MSG_CLOSE, .status = NP_EAUTH, .text = "bye"},
  };
  char wire[4 * NP_CODEC_MAX_ENCODED];
  size_t len = 0, off = 0, used;
  void *dec;
  np_msg m;
  int r;

  for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
    r = c->encode(&msgs[i], wire + len, sizeof(wire) - len);
    if (r > 0)
      len += (size_t)r;
    else
      assert_true(r == NP_EUNSUPPORTED); /* the line codec has no such message */
  }
  if ((r = c->decoder_new(4096, &dec)) != 0) {
    assert_int_equal(r, UV_ENOMEM);
    return;
  }
  /* In small pieces, so the decoder must hold partial frames. */
  while (off < len) {
    size_t n = len - off < 7 ? len - off : 7;
    r = c->decode(dec, wire + off, n, &used, &m);
    if (r < 0) {
      assert_int_equal(r, UV_ENOMEM);
      break;
    }
    off += used;
  }
  c->decoder_free(dec);
}

static void test_codecs(void **state) {
  long n;
  (void)state;
  n = np_fm_sweep(codec_scenario, (void *)np_codec_native(), NP_FM_OURS, 1, 10000);
  print_message("native codec: %ld allocations, each failed once\n", n);
  assert_true(n >= 0);
  n = np_fm_sweep(codec_scenario, (void *)np_codec_line(), NP_FM_OURS, 1, 10000);
  print_message("line codec: %ld allocations, each failed once\n", n);
  assert_true(n >= 0);
}

/* ---- a whole tunnel ----------------------------------------------------------------------- */

typedef struct tunnel {
  int tls, mux;
  uv_loop_t loop;
  uv_tcp_t echo;      /* the service behind the client */
  uv_tcp_t echo_conn; /* its one connection */
  int echo_accepted;
  uv_tcp_t visitor;
  uv_connect_t vreq;
  uv_write_t vw, ew;
  char vbuf[64], ebuf[64];
  size_t vgot;
  int visiting;
  uv_timer_t deadline;
  struct np_server *srv;
  struct np_client *cl;
  int closes_left, finished;
  int server_closed, client_closed;
  uv_timer_t stuck; /* a close that never completes fails the run instead of hanging it */
  int echoed; /* the visitor got its bytes back */
} tunnel;

static char tls_dir[] = "/tmp/np-failmalloc-XXXXXX";
static long echoed_runs, deadline_runs;

static void quiet(np_log_level l, const char *m, void *a) {
  (void)l, (void)m, (void)a;
}

static void on_lib_closed(void *arg) {
  ((tunnel *)arg)->closes_left--;
}

static void on_server_closed(struct np_server *s) {
  ((tunnel *)np_server_get_data(s))->server_closed = 1;
  on_lib_closed(np_server_get_data(s));
}

static void on_client_closed(struct np_client *c) {
  ((tunnel *)np_client_get_data(c))->client_closed = 1;
  on_lib_closed(np_client_get_data(c));
}

static void on_stuck(uv_timer_t *h) {
  tunnel *t = h->data;
  fail_msg("closing took over 5 s: server %s, client %s",
           t->srv == NULL ? "none" : t->server_closed ? "closed" : "NOT CLOSED",
           t->cl == NULL ? "none" : t->client_closed ? "closed" : "NOT CLOSED");
}

static void close_if_open(uv_handle_t *h) {
  if (h->loop != NULL && !uv_is_closing(h))
    uv_close(h, NULL);
}

static void finish(tunnel *t) {
  if (t->finished)
    return;
  t->finished = 1;
  if (t->cl != NULL) {
    t->closes_left++;
    np_client_close(t->cl, on_client_closed);
  }
  if (t->srv != NULL) {
    t->closes_left++;
    np_server_close(t->srv, on_server_closed);
  }
  close_if_open((uv_handle_t *)&t->visitor);
  close_if_open((uv_handle_t *)&t->echo_conn);
  close_if_open((uv_handle_t *)&t->echo);
  close_if_open((uv_handle_t *)&t->deadline);
  uv_timer_init(&t->loop, &t->stuck);
  t->stuck.data = t;
  uv_timer_start(&t->stuck, on_stuck, 5000, 0);
  uv_unref((uv_handle_t *)&t->stuck);
}

static void on_deadline(uv_timer_t *h) {
  deadline_runs++;
  finish(h->data);
}

static void alloc_v(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  tunnel *t = h->data;
  (void)sz;
  *buf = h == (uv_handle_t *)&t->visitor ? uv_buf_init(t->vbuf + t->vgot, 5)
                                         : uv_buf_init(t->ebuf, sizeof(t->ebuf));
}

static void visitor_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tunnel *t = s->data;
  (void)buf;
  if (n > 0 && (t->vgot += (size_t)n) >= 5) {
    assert_memory_equal(t->vbuf, "hello", 5);
    t->echoed = 1;
    finish(t);
  } else if (n < 0) {
    finish(t); /* the tunnel gave up on this visitor: fine, as long as it says so */
  }
}

static void visitor_connected(uv_connect_t *req, int status) {
  tunnel *t = req->data;
  uv_buf_t b = uv_buf_init("hello", 5);
  if (status != 0 || uv_write(&t->vw, (uv_stream_t *)&t->visitor, &b, 1, NULL) != 0 ||
      uv_read_start((uv_stream_t *)&t->visitor, alloc_v, visitor_read) != 0)
    finish(t);
}

static void on_event(struct np_client *c, const np_client_event *ev) {
  tunnel *t = np_client_get_data(c);
  struct sockaddr_in sa;

  if (ev->type == NP_CLIENT_PROXY_FAILED || ev->type == NP_CLIENT_FATAL) {
    finish(t); /* refused (the server could not make it): said, so the run is over */
    return;
  }
  if (ev->type != NP_CLIENT_PROXY_READY || t->visiting || t->finished)
    return;
  t->visiting = 1;
  uv_tcp_init(&t->loop, &t->visitor);
  t->visitor.data = t;
  t->vreq.data = t;
  uv_ip4_addr("127.0.0.1", ev->port, &sa);
  if (uv_tcp_connect(&t->vreq, &t->visitor, (struct sockaddr *)&sa, visitor_connected) != 0)
    finish(t);
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tunnel *t = s->data;
  if (n > 0) {
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    uv_write(&t->ew, s, &b, 1, NULL); /* one small echo at a time: the buffer is not reused */
  } else if (n < 0) {
    close_if_open((uv_handle_t *)s);
  }
}

static void echo_accept(uv_stream_t *l, int status) {
  tunnel *t = l->data;
  if (status != 0 || t->echo_accepted)
    return; /* one connection is all this scenario makes (a retry's is not needed) */
  uv_tcp_init(&t->loop, &t->echo_conn);
  t->echo_conn.data = t;
  if (uv_accept(l, (uv_stream_t *)&t->echo_conn) == 0)
    uv_read_start((uv_stream_t *)&t->echo_conn, alloc_v, echo_read);
  t->echo_accepted = 1;
}

static int set_all(struct np_config *cfg, const char *const *kv) {
  for (; kv[0] != NULL; kv += 2)
    if (np_config_set_flag(cfg, kv[0], kv[1]) != 0)
      return -1;
  return 0;
}

/* Build the server and client; any failure here is an allocation that failed, and the run ends
 * with whatever was made closed again. */
static int start(tunnel *t) {
  struct np_config *scfg = NULL, *ccfg = NULL;
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int n = sizeof(bound), r = -1;
  char port[64], echo_at[64];
  const char *skv[] = {"bind",      "127.0.0.1:0",     "token", "t0ken", "proxy-bind-addr",
                       "127.0.0.1", "pending-timeout", "200ms", NULL};
  const char *ckv[] = {"token", "t0ken",     "reconnect-min",    "10ms", "reconnect-max",
                       "20ms",  "work-pool", t->mux ? "2" : "1", "mux",  t->mux ? "true" : "false",
                       NULL};

  uv_ip4_addr("127.0.0.1", 0, &sa);
  if (uv_tcp_bind(&t->echo, (struct sockaddr *)&sa, 0) != 0 ||
      uv_listen((uv_stream_t *)&t->echo, 8, echo_accept) != 0)
    return -1;
  uv_tcp_getsockname(&t->echo, (struct sockaddr *)&bound, &n);
  snprintf(echo_at, sizeof(echo_at), "127.0.0.1:%d",
           ntohs(((struct sockaddr_in *)&bound)->sin_port));
  if (np_config_new(NP_CONFIG_SERVER, &scfg) != 0 || set_all(scfg, skv) != 0 ||
      np_config_set_flag(scfg, t->tls ? "tls-dir" : "insecure", t->tls ? tls_dir : "true") != 0 ||
      np_server_new(&t->loop, scfg, &t->srv) != 0)
    goto done;
  np_server_set_data(t->srv, t);
  np_server_set_log(t->srv, NP_LOG_ERROR, quiet, NULL);
  if (np_server_start(t->srv) != 0)
    goto done;
  snprintf(port, sizeof(port), "127.0.0.1:%d", np_server_port(t->srv));
  if (np_config_new(NP_CONFIG_CLIENT, &ccfg) != 0 || set_all(ccfg, ckv) != 0 ||
      np_config_set_flag(ccfg, "server", port) != 0 ||
      (t->tls ? np_config_set_flag(ccfg, "server-fingerprint", np_server_fingerprint(t->srv))
              : np_config_set_flag(ccfg, "insecure", "true")) != 0 ||
      np_config_set(ccfg, "proxy echo", "local", echo_at) != 0 ||
      np_config_set(ccfg, "proxy echo", "remote_port", "0") != 0 ||
      np_client_new(&t->loop, ccfg, &t->cl) != 0)
    goto done;
  np_client_set_data(t->cl, t);
  np_client_set_log(t->cl, NP_LOG_ERROR, quiet, NULL);
  np_client_set_event_cb(t->cl, on_event);
  r = np_client_start(t->cl);
done:
  np_config_free(scfg);
  np_config_free(ccfg);
  return r;
}

static void tunnel_scenario(void *arg) {
  const tunnel *mode = arg;
  tunnel *t = __real_malloc(sizeof(*t)); /* the test's own memory: not part of the sweep */

  assert_non_null(t);
  memset(t, 0, sizeof(*t));
  t->tls = mode->tls;
  t->mux = mode->mux;
  if (uv_loop_init(&t->loop) != 0) {
    free(t);
    return;
  }
  uv_tcp_init(&t->loop, &t->echo);
  t->echo.data = t;
  uv_timer_init(&t->loop, &t->deadline);
  t->deadline.data = t;
  /* A failed allocation can cost a reconnect (10-20 ms) or a visitor's pending_timeout (200 ms):
   * 2 s is plenty, and bounds a run that a failure left waiting for nothing. */
  uv_timer_start(&t->deadline, on_deadline, 2000, 0);
  if (start(t) != 0)
    finish(t);
  while (!t->finished || t->closes_left > 0)
    uv_run(&t->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t->stuck, NULL);
  uv_run(&t->loop, UV_RUN_DEFAULT);
  /* Every handle closed, the library's included: a failure that leaks one fails here. */
  assert_int_equal(uv_loop_close(&t->loop), 0);
  echoed_runs += t->echoed;
  free(t);
}

/* Every allocation of ours fails once; with TLS, also every stride-th of OpenSSL's (thousands per
 * handshake: NP_FM_SSL_STRIDE=1 fails each, the full form, for minutes; the suite takes 1 in 29).
 */
static void sweep_tunnel(int tls, int mux) {
  tunnel mode = {.tls = tls, .mux = mux};
  const char *env = getenv("NP_FM_SSL_STRIDE");
  long n, stride = env != NULL && atol(env) > 0 ? atol(env) : 29;
  const char *what =
      tls ? (mux ? "TLS, mux" : "TLS, no mux") : (mux ? "clear, mux" : "clear, no mux");

  echoed_runs = deadline_runs = 0;
  n = np_fm_sweep(tunnel_scenario, &mode, NP_FM_OURS, 1, 100000);
  print_message(
      "tunnel (%s): %ld allocations of ours, each failed once; %ld runs still echoed, %ld "
      "ended at the deadline\n",
      what, n, echoed_runs, deadline_runs);
  assert_true(n > 0);
  assert_true(echoed_runs > 0); /* the clean last run at least */
  if (!tls)
    return;
  echoed_runs = deadline_runs = 0;
  n = np_fm_sweep(tunnel_scenario, &mode, NP_FM_OPENSSL, stride, 1000000);
  print_message("tunnel (%s): %ld allocations of OpenSSL's, 1 in %ld failed; %ld runs still "
                "echoed, %ld ended at the deadline\n",
                what, n, stride, echoed_runs, deadline_runs);
  assert_true(n > 0);
}

static void test_tunnel_tls_mux(void **state) {
  (void)state;
  sweep_tunnel(1, 1);
}

static void test_tunnel_clear_nomux(void **state) {
  (void)state;
  sweep_tunnel(0, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_codecs),
      cmocka_unit_test(test_tunnel_tls_mux),
      cmocka_unit_test(test_tunnel_clear_nomux),
  };
  struct np_config *cfg;
  char fp[128];
  int r;

  signal(SIGPIPE, SIG_IGN); /* as the tools do: a peer that left is an error code, not a death */
  np_fm_install();
  /* The server's TLS identity is made once, outside the sweep (a key per run would be slow). */
  if (mkdtemp(tls_dir) == NULL || np_config_new(NP_CONFIG_SERVER, &cfg) != 0 ||
      np_config_set_flag(cfg, "tls-dir", tls_dir) != 0 ||
      np_server_identity(cfg, quiet, NULL, fp, sizeof(fp)) != 0)
    return 1;
  np_config_free(cfg);
  r = cmocka_run_group_tests(tests, NULL, NULL);
  {
    char path[sizeof(tls_dir) + 16];
    snprintf(path, sizeof(path), "%s/server.crt", tls_dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/server.key", tls_dir);
    unlink(path);
    rmdir(tls_dir);
  }
  return r;
}
