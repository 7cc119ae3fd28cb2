/* The counters as data (natproxy/stats.h), through the public API only: the field tables describe
 * the structs exactly, np_*_get_stats honours the caller's size both ways, the log line is made
 * from the table, and ops tables of a size the library does not know are refused. */
#include <setjmp.h>
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

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_tables), cmocka_unit_test(test_sizes)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
