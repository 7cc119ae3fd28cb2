/* A custom message codec and a custom pending pool, written against the public headers only, drive
 * a real server and client on loopback: the seams the embedders get really are seams. Also: a local
 * service that is down closes its visitor at once, and a wrong token is refused. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <natproxy.h>

/* ---- the custom codec: the native format with every byte XORed (a stand-in for any transform) --
 */

static int xor_encodes, xor_decodes;

static int xor_decoder_new(size_t max, void **out) {
  return np_codec_native()->decoder_new(max, out);
}

static void xor_decoder_free(void *dec) {
  np_codec_native()->decoder_free(dec);
}

static int xor_decode(void *dec, const char *buf, size_t len, size_t *used, np_msg *m) {
  char tmp[512];
  int r;
  if (len > sizeof(tmp))
    len = sizeof(tmp); /* the caller feeds the rest in later calls */
  for (size_t i = 0; i < len; i++)
    tmp[i] = (char)(buf[i] ^ 0x5a);
  r = np_codec_native()->decode(dec, tmp, len, used, m);
  xor_decodes += r == 1;
  return r;
}

static int xor_encode(const np_msg *m, char *buf, size_t cap) {
  int n = np_codec_native()->encode(m, buf, cap);
  for (int i = 0; i < n; i++)
    buf[i] ^= 0x5a;
  xor_encodes += n > 0;
  return n;
}

static const np_codec_ops xor_codec = {
    .size = sizeof(np_codec_ops),
    .name = "xor",
    .caps = NP_CODEC_CAP_AUTH | NP_CODEC_CAP_WORK_HEADER | NP_CODEC_CAP_PONG,
    .decoder_new = xor_decoder_new,
    .decoder_free = xor_decoder_free,
    .decode = xor_decode,
    .encode = xor_encode,
};

/* ---- the custom pool: a small array, linear search ----------------------------------------------
 */

#define SLOTS 16
typedef struct slot {
  int used;
  uint64_t id, deadline;
  const void *group;
  void *item;
} slot;
typedef struct array_pool {
  slot s[SLOTS];
  int puts, takes, destroyed;
} array_pool;

static int ap_put(void *p, uint64_t id, const void *group, void *item, uint64_t deadline) {
  array_pool *ap = p;
  for (int i = 0; i < SLOTS; i++) {
    if (!ap->s[i].used) {
      ap->s[i] = (slot){1, id, deadline, group, item};
      ap->puts++;
      return 0;
    }
  }
  return NP_EPOOLFULL;
}

static void *ap_take(void *p, uint64_t id) {
  array_pool *ap = p;
  for (int i = 0; i < SLOTS; i++) {
    if (ap->s[i].used && ap->s[i].id == id) {
      ap->s[i].used = 0;
      ap->takes++;
      return ap->s[i].item;
    }
  }
  return NULL;
}

static void *ap_take_oldest(void *p, const void *group, uint64_t *id) {
  array_pool *ap = p;
  int best = -1;
  for (int i = 0; i < SLOTS; i++)
    if (ap->s[i].used && (group == NULL || ap->s[i].group == group) &&
        (best < 0 || ap->s[i].id < ap->s[best].id))
      best = i;
  if (best < 0)
    return NULL;
  if (id != NULL)
    *id = ap->s[best].id;
  return ap_take(p, ap->s[best].id);
}

static size_t ap_sweep(array_pool *ap, uint64_t now, const void *group, int by_group,
                       np_pool_item_cb cb, void *arg) {
  size_t n = 0;
  for (int i = 0; i < SLOTS; i++) {
    slot *s = &ap->s[i];
    if (s->used && (by_group ? s->group == group : s->deadline <= now)) {
      s->used = 0;
      n++;
      if (cb != NULL)
        cb(s->id, s->item, arg);
    }
  }
  return n;
}

static size_t ap_expire(void *p, uint64_t now, np_pool_item_cb cb, void *arg) {
  return ap_sweep(p, now, NULL, 0, cb, arg);
}

static size_t ap_remove_group(void *p, const void *group, np_pool_item_cb cb, void *arg) {
  return ap_sweep(p, 0, group, 1, cb, arg);
}

static size_t ap_count(void *p, const void *group) {
  array_pool *ap = p;
  size_t n = 0;
  for (int i = 0; i < SLOTS; i++)
    n += ap->s[i].used && (group == NULL || ap->s[i].group == group);
  return n;
}

static uint64_t ap_next_deadline(void *p) {
  array_pool *ap = p;
  uint64_t d = UINT64_MAX;
  for (int i = 0; i < SLOTS; i++)
    if (ap->s[i].used && ap->s[i].deadline < d)
      d = ap->s[i].deadline;
  return d;
}

static void ap_destroy(void *p) {
  ((array_pool *)p)->destroyed = 1;
}

static const np_pool_ops array_pool_ops = {
    sizeof(np_pool_ops), ap_put,   ap_take,          ap_take_oldest, ap_expire,
    ap_remove_group,     ap_count, ap_next_deadline, ap_destroy};

/* ---- the harness: an echo service, a server, a client, visitors
 * ---------------------------------- */

typedef struct echo_conn {
  uv_tcp_t tcp;
  uv_write_t w;
  uv_shutdown_t sd;
  char buf[4096];
} echo_conn;

static uv_loop_t loop;
static uv_tcp_t echo_listener;
static int echo_port, dead_port;
static int ports[2]; /* public ports of proxies "echo" and "dead" */
static int fatal_status;

static void echo_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  echo_conn *c = (echo_conn *)h;
  (void)sz;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void echo_free(uv_handle_t *h) {
  free(h);
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  echo_conn *c = (echo_conn *)s;
  if (n > 0) {
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    /* Small test messages: one write in flight at a time is enough. */
    uv_read_stop(s);
    uv_try_write(s, &b, 1);
    uv_read_start(s, echo_alloc, echo_read);
  } else if (n < 0) {
    uv_close((uv_handle_t *)&c->tcp, echo_free);
  }
}

static void echo_accept(uv_stream_t *l, int status) {
  echo_conn *c = calloc(1, sizeof(*c));
  (void)status;
  uv_tcp_init(&loop, &c->tcp);
  uv_accept(l, (uv_stream_t *)&c->tcp);
  uv_read_start((uv_stream_t *)&c->tcp, echo_alloc, echo_read);
}

static int listen_any(uv_tcp_t *t, uv_connection_cb cb) {
  struct sockaddr_in sa;
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  uv_tcp_init(&loop, t);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(t, (struct sockaddr *)&sa, 0), 0);
  if (cb != NULL)
    assert_int_equal(uv_listen((uv_stream_t *)t, 16, cb), 0);
  uv_tcp_getsockname(t, (struct sockaddr *)&ss, &n);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void on_event(struct np_client *cl, const np_client_event *ev) {
  (void)cl;
  if (ev->type == NP_CLIENT_PROXY_READY)
    ports[strcmp(ev->name, "echo") == 0 ? 0 : 1] = ev->port;
  if (ev->type == NP_CLIENT_FATAL)
    fatal_status = ev->status;
}

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

/* A visitor: connect, send text, collect what comes back until EOF. */
typedef struct visitor {
  uv_tcp_t tcp;
  uv_connect_t c;
  uv_write_t w;
  char in[256];
  size_t got;
  int eof;
  uint64_t eof_at;
  const char *text;
} visitor;

static void v_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  visitor *v = (visitor *)h;
  (void)sz;
  *buf = uv_buf_init(v->in + v->got, (unsigned)(sizeof(v->in) - v->got - 1));
}

static void v_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  visitor *v = (visitor *)s;
  (void)buf;
  if (n > 0) {
    v->got += (size_t)n;
    if (v->got == strlen(v->text))
      uv_close((uv_handle_t *)s, NULL); /* got the echo: done */
  } else if (n < 0) {
    v->eof = 1;
    v->eof_at = uv_now(&loop);
    uv_close((uv_handle_t *)s, NULL);
  }
}

static void v_connected(uv_connect_t *req, int status) {
  visitor *v = req->data;
  uv_buf_t b = uv_buf_init((char *)v->text, (unsigned)strlen(v->text));
  if (status != 0) { /* reset at once: a visitor from outside allow_ips may see it this early */
    assert_int_equal(status, UV_ECONNRESET);
    v->eof = 1;
    uv_close((uv_handle_t *)&v->tcp, NULL);
    return;
  }
  uv_write(&v->w, (uv_stream_t *)&v->tcp, &b, 1, NULL);
  uv_read_start((uv_stream_t *)&v->tcp, v_alloc, v_read);
}

static void visit_from(visitor *v, const char *source, int port, const char *text) {
  struct sockaddr_in sa;
  memset(v, 0, sizeof(*v));
  v->text = text;
  v->c.data = v;
  uv_tcp_init(&loop, &v->tcp);
  uv_ip4_addr(source, 0, &sa);
  assert_int_equal(uv_tcp_bind(&v->tcp, (struct sockaddr *)&sa, 0), 0);
  uv_ip4_addr("127.0.0.1", port, &sa);
  uv_tcp_connect(&v->c, &v->tcp, (struct sockaddr *)&sa, v_connected);
}

static void visit(visitor *v, int port, const char *text) {
  visit_from(v, "127.0.0.1", port, text);
}

static void quiet(np_log_level l, const char *m, void *a) {
  (void)l;
  (void)m;
  (void)a;
}

static char tls_dir[] = "/tmp/np-test-plugins-XXXXXX";

/* The server's TLS identity lives in a directory of the test's own, removed at the end. */
static void tls_dir_remove(void) {
  char path[sizeof(tls_dir) + 16];
  snprintf(path, sizeof(path), "%s/server.crt", tls_dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/server.key", tls_dir);
  unlink(path);
  rmdir(tls_dir);
}

static struct np_config *server_cfg(void) {
  struct np_config *cfg;
  assert_non_null(mkdtemp(tls_dir));
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "tls-dir", tls_dir), 0);
  assert_int_equal(np_config_set_flag(cfg, "bind", "127.0.0.1:0"), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "right"), 0);
  assert_int_equal(np_config_set_flag(cfg, "proxy-bind-addr", "127.0.0.1"), 0);
  assert_int_equal(np_config_set_flag(cfg, "pending-timeout", "5s"), 0);
  return cfg;
}

static struct np_client *client_for(struct np_server *srv, const char *token) {
  struct np_config *cfg;
  struct np_client *cl;
  char spec[64];
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", np_server_port(srv));
  assert_int_equal(np_config_set_flag(cfg, "server", spec), 0);
  /* What an embedder does: pin the certificate its own server reports. */
  assert_non_null(np_server_fingerprint(srv));
  assert_int_equal(np_config_set_flag(cfg, "server-fingerprint", np_server_fingerprint(srv)), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", token), 0);
  /* Every visitor must pass through the pending pool under test, not a pre-opened connection. */
  assert_int_equal(np_config_set_flag(cfg, "work-pool", "0"), 0);
  assert_int_equal(np_config_set(cfg, "proxy echo", "local", "127.0.0.1:1"), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", echo_port);
  assert_int_equal(np_config_set(cfg, "proxy echo", "local", spec), 0);
  assert_int_equal(np_config_set(cfg, "proxy echo", "remote_port", "0"), 0);
  assert_int_equal(np_config_set(cfg, "proxy echo", "allow_ips", "127.0.0.1, 10.0.0.0/8"), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", dead_port);
  assert_int_equal(np_config_set(cfg, "proxy dead", "local", spec), 0);
  assert_int_equal(np_config_set(cfg, "proxy dead", "remote_port", "0"), 0);
  assert_int_equal(np_client_new(&loop, cfg, &cl), 0);
  np_config_free(cfg);
  np_client_set_log(cl, NP_LOG_ERROR, quiet, NULL);
  return cl;
}

static void test_plugins(void **state) {
  struct np_config *cfg;
  struct np_server *srv;
  struct np_client *cl;
  array_pool pool;
  np_server_stats st;
  visitor v1, v2;
  uv_timer_t guard;
  uv_tcp_t dead;
  uint64_t t0;
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &guard);
  uv_timer_start(&guard, on_guard, 20000, 0);
  echo_port = listen_any(&echo_listener, echo_accept);
  dead_port = listen_any(&dead, NULL); /* bound, never listening: connections are refused */

  cfg = server_cfg();
  assert_int_equal(np_server_new(&loop, cfg, &srv), 0);
  np_config_free(cfg);
  memset(&pool, 0, sizeof(pool));
  assert_int_equal(np_server_set_codec(srv, &xor_codec), 0);
  assert_int_equal(np_server_set_pool(srv, &array_pool_ops, &pool), 0);
  np_server_set_log(srv, NP_LOG_ERROR, quiet, NULL);
  assert_int_equal(np_server_start(srv), 0);
  assert_int_equal(np_server_set_codec(srv, &xor_codec), NP_ESTATE);

  cl = client_for(srv, "right");
  assert_int_equal(np_client_set_codec(cl, &xor_codec), 0);
  np_client_set_event_cb(cl, on_event);
  assert_int_equal(np_client_start(cl), 0);
  while (ports[0] == 0 || ports[1] == 0)
    uv_run(&loop, UV_RUN_ONCE);

  /* Through the tunnel and back. */
  visit(&v1, ports[0], "hello through a custom codec");
  while (v1.got < strlen(v1.text))
    uv_run(&loop, UV_RUN_ONCE);
  assert_memory_equal(v1.in, v1.text, strlen(v1.text));

  /* A dead local service: the visitor is closed at once, not after the 5 s pending timeout. */
  t0 = uv_now(&loop);
  visit(&v2, ports[1], "anyone there?");
  while (!v2.eof)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(v2.got, 0);
  assert_true(v2.eof_at - t0 < 2000);
  np_server_get_stats(srv, &st, sizeof(st));
  assert_true(st.visitors_failed == 1);
  assert_true(st.visitors_joined == 1);
  assert_true(st.clients == 1);

  assert_true(pool.puts == 2 && pool.takes == 2);

  /* A visitor from outside the echo proxy's allow_ips: closed at accept without a byte, counted,
   * and never put in the pool. */
  visit_from(&v2, "127.0.0.3", ports[0], "let me in");
  while (!v2.eof)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(v2.got, 0);
  np_server_get_stats(srv, &st, sizeof(st));
  assert_true(st.visitors_denied == 1);
  assert_true(pool.puts == 2);
  assert_true(xor_encodes > 0 && xor_decodes > 0);

  /* A wrong token: fatal on the client, counted on the server. */
  {
    struct np_client *bad = client_for(srv, "wrong");
    assert_int_equal(np_client_set_codec(bad, &xor_codec), 0);
    np_client_set_event_cb(bad, on_event);
    np_client_start(bad);
    while (fatal_status == 0)
      uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(fatal_status, NP_EAUTH);
    np_server_get_stats(srv, &st, sizeof(st));
    assert_true(st.logins_failed == 1);
    np_client_close(bad, NULL);
  }

  np_client_close(cl, NULL);
  np_server_close(srv, NULL);
  uv_close((uv_handle_t *)&echo_listener, NULL);
  uv_close((uv_handle_t *)&dead, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_true(pool.destroyed);
  assert_int_equal(uv_loop_close(&loop), 0);
  tls_dir_remove();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_plugins)};
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
