/* np_server_group through the public API, as an embedder uses it: workers share one port (a
 * client connects to each in turn until both have taken one), the counters are summed, a close or
 * an idle drain calls back exactly once and leaves the loop with nothing open, and a start that
 * cannot bind undoes itself. Every run of the loop is bounded by a watchdog. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

#include <pthread.h>

static uv_loop_t loop;
/* The threads that logged a new connection: the group calls the log callback from each worker's
 * thread, one line at a time. */
static pthread_t seen[8];
static int nseen; /* read once every thread was joined (the close callback) */

static void count_threads(np_log_level level, const char *msg, void *arg) {
  (void)level;
  (void)arg;
  if (strstr(msg, "connection from") == NULL)
    return; /* the group serialises these calls: no lock needed here */
  for (int i = 0; i < nseen; i++)
    if (pthread_equal(seen[i], pthread_self()))
      return;
  if (nseen < 8)
    seen[nseen++] = pthread_self();
}
static uv_timer_t watchdog;
static int closed_calls, connected;
static char tls_dir[] = "/tmp/np-test-group-XXXXXX";

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fail_msg("the loop did not finish in time");
}

static void on_closed(struct np_server_group *g) {
  (void)g;
  closed_calls++;
  uv_close((uv_handle_t *)&watchdog, NULL);
}

static struct np_server_group *group_with(const char *workers, const char *bind, int insecure) {
  struct np_config *cfg;
  struct np_server_group *g;
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "bind", bind), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t"), 0);
  assert_int_equal(np_config_set_flag(cfg, "tls-dir", tls_dir), 0);
  assert_int_equal(np_config_set_flag(cfg, "workers", workers), 0);
  if (insecure)
    assert_int_equal(np_config_set_flag(cfg, "insecure", "true"), 0);
  assert_int_equal(np_server_group_new(&loop, cfg, &g), 0);
  np_config_free(cfg);
  np_server_group_set_log(g, NP_LOG_DEBUG, count_threads, NULL);
  return g;
}

static struct np_server_group *group(const char *workers, const char *bind) {
  return group_with(workers, bind, 0);
}

static void run_to_end(void) {
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(closed_calls, 1);
}

static int setup(void **state) {
  (void)state;
  closed_calls = 0;
  nseen = 0;
  connected = 0;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(uv_timer_init(&loop, &watchdog), 0);
  assert_int_equal(uv_timer_start(&watchdog, on_watchdog, 10000, 0), 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  assert_int_equal(uv_loop_close(&loop), 0); /* nothing left open */
  return 0;
}

/* Connects until every one of n workers has accepted one (the kernel's hash picks). */
typedef struct {
  uv_tcp_t tcp;
  uv_connect_t req;
} conn;

static void on_conn_closed(uv_handle_t *h) {
  free(h->data);
}
static void on_connect(uv_connect_t *req, int status) {
  conn *c = req->data;
  assert_int_equal(status, 0);
  connected++;
  c->tcp.data = c;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void test_workers_share_a_port(void **state) {
  struct np_server_group *g = group_with("2", "127.0.0.1:0", 1); /* plain: logged at connect */
  struct sockaddr_in sa;
  np_server_stats st;
  int port;
  (void)state;
  assert_int_equal(np_server_group_start(g), 0);
  assert_int_equal(np_server_group_workers(g), 2);
  port = np_server_port(np_server_group_home(g));
  assert_true(port > 0);
  uv_ip4_addr("127.0.0.1", port, &sa);
  /* 64 connections: the kernel hashes each one's addresses, so both workers take some (all on
   * one: 2^-63). */
  for (int i = 0; i < 64; i++) {
    conn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->req.data = c;
    assert_int_equal(uv_tcp_init(&loop, &c->tcp), 0);
    assert_int_equal(uv_tcp_connect(&c->req, &c->tcp, (struct sockaddr *)&sa, on_connect), 0);
  }
  while (connected < 64)
    uv_run(&loop, UV_RUN_ONCE);
  np_server_group_get_stats(g, &st, sizeof(st));
  assert_int_equal(st.clients, 0);
  np_server_group_close(g, on_closed);
  np_server_group_close(g, on_closed); /* a second close: nothing more */
  run_to_end();
  assert_int_equal(nseen, 2); /* each worker's thread logged connections it took */
}

static void test_idle_drain(void **state) {
  struct np_server_group *g = group("3", "127.0.0.1:0");
  (void)state;
  assert_int_equal(np_server_group_start(g), 0);
  assert_int_equal(np_server_group_workers(g), 3);
  np_server_group_drain(g, 5000, on_closed); /* nobody joined: ends at once */
  run_to_end();
}

static void test_start_fails_on_a_taken_port(void **state) {
  uv_tcp_t holder;
  struct sockaddr_in sa;
  int len = sizeof(sa), r;
  char bind[32];
  struct np_server_group *g;
  (void)state;
  /* A listener without SO_REUSEPORT: nobody can join its port. */
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_init(&loop, &holder), 0);
  assert_int_equal(uv_tcp_bind(&holder, (struct sockaddr *)&sa, 0), 0);
  assert_int_equal(uv_listen((uv_stream_t *)&holder, 1, NULL), 0);
  assert_int_equal(uv_tcp_getsockname(&holder, (struct sockaddr *)&sa, &len), 0);
  snprintf(bind, sizeof(bind), "127.0.0.1:%d", ntohs(sa.sin_port));
  g = group("2", bind);
  r = np_server_group_start(g);
  assert_int_equal(r, UV_EADDRINUSE);
  np_server_group_close(g, on_closed);
  uv_close((uv_handle_t *)&holder, NULL);
  run_to_end();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_workers_share_a_port, setup, teardown),
      cmocka_unit_test_setup_teardown(test_idle_drain, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_fails_on_a_taken_port, setup, teardown),
  };
  int r;
  if (mkdtemp(tls_dir) == NULL)
    return 1;
  r = cmocka_run_group_tests(tests, NULL, NULL);
  {
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
    if (system(cmd) != 0)
      return 1;
  }
  return r;
}
