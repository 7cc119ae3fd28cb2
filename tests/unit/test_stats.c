/* The counters as data (natproxy/stats.h), through the public API only: the field tables describe
 * the structs exactly, np_*_get_stats honours the caller's size both ways, the log line is made
 * from the table, ops tables of a size the library does not know are refused, and the byte
 * counters grow while a long transfer runs (copying relay over mux, and spliced without mux). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

typedef const np_stat_field *(*field_fn)(size_t i);

static size_t check_table(field_fn field, size_t struct_size) {
  size_t n = 0;
  const np_stat_field *f;

  for (; (f = field(n)) != NULL; n++) {
    assert_int_equal(f->size, sizeof(np_stat_field));
    /* Struct order, no gaps: what lets an older caller's shorter struct be a prefix. */
    assert_int_equal(f->offset, n * sizeof(uint64_t));
    assert_true(f->kind == NP_STAT_COUNTER || f->kind == NP_STAT_GAUGE);
    assert_true(f->name[0] != '\0' && f->key[0] != '\0' && f->unit[0] != '\0');
    assert_true(f->help[0] != '\0' && strchr(f->help, '\n') == NULL);
    /* Keys are what scripts parse in the log line: unique, no blanks or '='. */
    assert_null(strpbrk(f->key, " =\t"));
    for (size_t j = 0; j < n; j++) {
      assert_string_not_equal(field(j)->name, f->name);
      assert_string_not_equal(field(j)->key, f->key);
    }
  }
  assert_int_equal(n * sizeof(uint64_t), struct_size);
  return n;
}

static void test_tables(void **state) {
  (void)state;
  assert_int_equal(check_table(np_server_stats_field, sizeof(np_server_stats)),
                   sizeof(np_server_stats) / sizeof(uint64_t));
  check_table(np_client_stats_field, sizeof(np_client_stats));
  /* Fixed points the docs and the e2e tests rely on. */
  assert_string_equal(np_server_stats_field(0)->name, "clients");
  assert_int_equal(np_server_stats_field(0)->kind, NP_STAT_GAUGE);
  assert_int_equal(np_server_stats_field(4)->offset, offsetof(np_server_stats, visitors_joined));
  assert_string_equal(np_server_stats_field(4)->key, "joined");
  assert_string_equal(np_client_stats_field(0)->name, "connects");
}

static char logged[2048];

static void capture(np_log_level level, const char *msg, void *arg) {
  (void)arg;
  if (level == NP_LOG_INFO && strncmp(msg, "stats: ", 7) == 0)
    snprintf(logged, sizeof(logged), "%s", msg);
}

/* "stats: k=v k=v ...": every key of the table once, in order, with the value get_stats gives. */
static void check_line(field_fn field, const void *st) {
  const char *p = logged + strlen("stats: ");
  char want[64];
  size_t i;

  assert_true(strncmp(logged, "stats: ", 7) == 0);
  for (i = 0; field(i) != NULL; i++) {
    uint64_t v;
    memcpy(&v, (const char *)st + field(i)->offset, sizeof(v));
    snprintf(want, sizeof(want), "%s%s=%llu", i > 0 ? " " : "", field(i)->key,
             (unsigned long long)v);
    assert_true(strncmp(p, want, strlen(want)) == 0);
    p += strlen(want);
  }
  assert_int_equal(*p, '\0');
}

static void test_sizes(void **state) {
  uv_loop_t loop;
  struct np_config *cfg;
  struct np_server *srv;
  struct np_client *cl;
  unsigned char buf[sizeof(np_server_stats) + 16];
  np_server_stats st;
  np_client_stats cst;
  np_codec_ops codec = *np_codec_native();
  np_pool_ops pool_ops = *np_pool_default_ops();
  void *pool;
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "bind", "127.0.0.1:0"), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t"), 0);
  assert_int_equal(np_config_set_flag(cfg, "insecure", "true"), 0);
  assert_int_equal(np_server_new(&loop, cfg, &srv), 0);
  np_config_free(cfg);

  /* An older caller's shorter struct: only its bytes are written. */
  memset(buf, 0xAA, sizeof(buf));
  np_server_get_stats(srv, (np_server_stats *)(void *)buf, 2 * sizeof(uint64_t));
  for (size_t i = 0; i < sizeof(buf); i++)
    assert_int_equal(buf[i], i < 2 * sizeof(uint64_t) ? 0 : 0xAA);
  /* A newer caller's longer one: the counters this library lacks read as 0. */
  memset(buf, 0xAA, sizeof(buf));
  np_server_get_stats(srv, (np_server_stats *)(void *)buf, sizeof(buf));
  for (size_t i = 0; i < sizeof(buf); i++)
    assert_int_equal(buf[i], 0);

  np_server_set_log(srv, NP_LOG_INFO, capture, NULL);
  np_server_get_stats(srv, &st, sizeof(st));
  np_server_log_stats(srv);
  check_line(np_server_stats_field, &st);
  assert_non_null(
      strstr(logged, "stats: clients=0 proxies=0 pending=0 visitors_total=0 joined=0 "));

  /* Ops tables: the size must be one this library knows. */
  codec.size = 0;
  assert_int_equal(np_server_set_codec(srv, &codec), UV_EINVAL);
  codec.size = sizeof(codec) + 8;
  assert_int_equal(np_server_set_codec(srv, &codec), UV_EINVAL);
  codec.size = sizeof(codec);
  assert_int_equal(np_server_set_codec(srv, &codec), 0);
  assert_int_equal(np_pool_default_new(0, 0, &pool), 0);
  pool_ops.size = 0;
  assert_int_equal(np_server_set_pool(srv, &pool_ops, pool), UV_EINVAL);
  pool_ops.size = sizeof(pool_ops);
  assert_int_equal(np_server_set_pool(srv, &pool_ops, pool), 0);

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "server", "127.0.0.1:1"), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t"), 0);
  assert_int_equal(np_config_set_flag(cfg, "insecure", "true"), 0);
  assert_int_equal(np_config_add_remote(cfg, "0:127.0.0.1:1"), 0);
  assert_int_equal(np_client_new(&loop, cfg, &cl), 0);
  np_config_free(cfg);
  codec.size = 0;
  assert_int_equal(np_client_set_codec(cl, &codec), UV_EINVAL);
  memset(&cst, 0xAA, sizeof(cst));
  np_client_get_stats(cl, &cst, sizeof(cst));
  np_client_set_log(cl, NP_LOG_INFO, capture, NULL);
  np_client_log_stats(cl);
  check_line(np_client_stats_field, &cst);
  assert_int_equal(cst.connects, 0);

  np_client_close(cl, NULL);
  np_server_close(srv, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- bytes counted as they flow ------------------------------------------------------------- */

#define TRANSFER (8u << 20) /* long enough to be read in many turns, and to move to splice */
#define PEEK_AT  (1u << 20) /* where the visitor looks at the counters, well before the end */

static uv_loop_t loop;
static struct np_server *srv;
static struct np_client *cl;
static uv_tcp_t service, service_conn, visitor;
static uv_connect_t visitor_req;
static uv_write_t service_write;
static char block[256 * 1024];
static size_t sent, got;
static int public_port, peeked, visitor_eof;

static void on_service_written(uv_write_t *req, int status);

/* The local service sends TRANSFER bytes as fast as the tunnel takes them, then hangs up. */
static void service_send(void) {
  uv_buf_t b = uv_buf_init(block, sizeof(block));
  if (sent >= TRANSFER) {
    uv_close((uv_handle_t *)&service_conn, NULL);
    return;
  }
  assert_int_equal(
      uv_write(&service_write, (uv_stream_t *)&service_conn, &b, 1, on_service_written), 0);
}

static void on_service_written(uv_write_t *req, int status) {
  (void)req;
  assert_int_equal(status, 0);
  sent += sizeof(block);
  service_send();
}

static void on_service_conn(uv_stream_t *server, int status) {
  assert_int_equal(status, 0);
  uv_tcp_init(&loop, &service_conn);
  assert_int_equal(uv_accept(server, (uv_stream_t *)&service_conn), 0);
  service_send();
}

static void on_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  static char in[64 * 1024];
  (void)h;
  (void)size;
  *buf = uv_buf_init(in, sizeof(in));
}

static void on_visitor_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  np_server_stats st;
  np_client_stats cst;
  (void)buf;

  if (nread < 0) {
    assert_int_equal(nread, UV_EOF);
    visitor_eof = 1;
    uv_close((uv_handle_t *)s, NULL);
    return;
  }
  got += (size_t)nread;
  if (got >= PEEK_AT && !peeked) {
    /* Mid-transfer: every byte the visitor has was counted on its way, on both ends. */
    peeked = 1;
    assert_true(got < TRANSFER);
    np_server_get_stats(srv, &st, sizeof(st));
    np_client_get_stats(cl, &cst, sizeof(cst));
    assert_true(st.bytes_out >= got && st.bytes_out < TRANSFER);
    assert_true(cst.bytes_out >= got && cst.bytes_out < TRANSFER);
  }
}

static void on_visitor_connected(uv_connect_t *req, int status) {
  assert_int_equal(status, 0);
  assert_int_equal(uv_read_start(req->handle, on_alloc, on_visitor_read), 0);
}

static void on_event(struct np_client *c, const np_client_event *ev) {
  (void)c;
  assert_true(ev->size >= offsetof(np_client_event, port) + sizeof(ev->port));
  assert_int_not_equal(ev->type, NP_CLIENT_FATAL);
  if (ev->type == NP_CLIENT_PROXY_READY)
    public_port = ev->port;
}

static void quiet(np_log_level level, const char *msg, void *arg) {
  (void)level;
  (void)msg;
  (void)arg;
}

/* The one visitor waited for its service's first byte once, whichever relay carried it (the mux's
 * copying one, or splice). */
static void first_byte_seen(const struct np_server *server) {
  uint64_t le[20], cum[20], count = 99, sum = 0;
  int n = np_server_get_first_byte(server, "tcp", le, cum, 20, &count, &sum);

  assert_int_equal(n, 13);
  assert_int_equal(le[0], 1000);
  assert_int_equal(le[12], 10000000);
  assert_int_equal(count, 1);
  assert_int_equal(cum[12], 1); /* a transfer on loopback takes less than 10 s */
  for (int i = 1; i < n; i++)
    assert_true(cum[i - 1] <= cum[i] && le[i - 1] < le[i]);
  assert_true(sum > 0 && sum < 10000000);
  assert_int_equal(np_server_get_first_byte(server, "udp", NULL, NULL, 0, &count, NULL), 13);
  assert_int_equal(count, 0);
  assert_int_equal(np_server_get_first_byte(server, NULL, NULL, NULL, 0, &count, NULL), 13);
  assert_int_equal(count, 1);
  assert_int_equal(np_server_get_first_byte(server, "gopher", NULL, NULL, 0, NULL, NULL),
                   UV_EINVAL);
}

static void transfer(const char *mux) {
  struct np_config *cfg;
  struct sockaddr_in sa;
  int namelen = sizeof(sa);
  char spec[64];
  np_server_stats st;
  np_client_stats cst;

  sent = got = 0;
  public_port = peeked = visitor_eof = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_tcp_init(&loop, &service);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(&service, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&service, 8, on_service_conn), 0);
  uv_tcp_getsockname(&service, (struct sockaddr *)&sa, &namelen);

  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "bind", "127.0.0.1:0"), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t"), 0);
  assert_int_equal(np_config_set_flag(cfg, "insecure", "true"), 0);
  assert_int_equal(np_config_set_flag(cfg, "proxy-bind-addr", "127.0.0.1"), 0);
  assert_int_equal(np_server_new(&loop, cfg, &srv), 0);
  np_config_free(cfg);
  np_server_set_log(srv, NP_LOG_ERROR, quiet, NULL);
  assert_int_equal(np_server_start(srv), 0);

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", np_server_port(srv));
  assert_int_equal(np_config_set_flag(cfg, "server", spec), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t"), 0);
  assert_int_equal(np_config_set_flag(cfg, "insecure", "true"), 0);
  assert_int_equal(np_config_set_flag(cfg, "mux", mux), 0);
  snprintf(spec, sizeof(spec), "0:127.0.0.1:%d", ntohs(sa.sin_port));
  assert_int_equal(np_config_add_remote(cfg, spec), 0);
  assert_int_equal(np_client_new(&loop, cfg, &cl), 0);
  np_config_free(cfg);
  np_client_set_log(cl, NP_LOG_ERROR, quiet, NULL);
  np_client_set_event_cb(cl, on_event);
  assert_int_equal(np_client_start(cl), 0);
  while (public_port == 0)
    uv_run(&loop, UV_RUN_ONCE);

  uv_tcp_init(&loop, &visitor);
  uv_ip4_addr("127.0.0.1", public_port, &sa);
  assert_int_equal(
      uv_tcp_connect(&visitor_req, &visitor, (struct sockaddr *)&sa, on_visitor_connected), 0);
  while (!visitor_eof)
    uv_run(&loop, UV_RUN_ONCE);
  assert_true(peeked);
  assert_int_equal(got, TRANSFER);
  np_server_get_stats(srv, &st, sizeof(st));
  np_client_get_stats(cl, &cst, sizeof(cst));
  assert_int_equal(st.bytes_out, TRANSFER);
  assert_int_equal(cst.bytes_out, TRANSFER);
  first_byte_seen(srv);

  np_client_close(cl, NULL);
  np_server_close(srv, NULL);
  uv_close((uv_handle_t *)&service, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_bytes_flow_mux(void **state) {
  (void)state;
  transfer("true");
}

static void test_bytes_flow_spliced(void **state) {
  (void)state;
  transfer("false");
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_tables), cmocka_unit_test(test_sizes),
                                     cmocka_unit_test(test_bytes_flow_mux),
                                     cmocka_unit_test(test_bytes_flow_spliced)};
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
