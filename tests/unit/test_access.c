/* Who may do what: the users file, the failed-login back-off and visitor allow lists. */
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

#include "backoff.h"
#include "cidr.h"
#include "internal.h"
#include "tmpfile.h"
#include "users.h"

static char path[64];

static int load(const char *text, np__users **out, char *err, size_t errlen) {
  int r;

  write_tmp(path, text);
  r = np__users_load(path, out, err, errlen);
  unlink(path);
  return r;
}

static void test_users_file(void **state) {
  char err[512] = "";
  np__users *u = NULL;
  const np__user *a;

  (void)state;
  assert_int_equal(
      load("; who may log in\n"
           "[zed]\ntoken = z\n"
           "[alice]\ntoken = a-secret\nallow_ports = 8000-8099, 9000\nmax_proxies = 2\n"
           "[bob]\ntoken = b\n",
           &u, err, sizeof(err)),
      0);
  assert_int_equal(np__users_count(u), 3);
  a = np__users_find(u, "alice");
  assert_non_null(a);
  assert_string_equal(a->token, "a-secret");
  assert_int_equal(a->max_proxies, 2);
  assert_true(np__ports_allow(&a->ports, 8000) && np__ports_allow(&a->ports, 9000));
  assert_false(np__ports_allow(&a->ports, 8100) || np__ports_allow(&a->ports, 7999));
  assert_int_equal(np__users_find(u, "bob")->max_proxies, SIZE_MAX);
  assert_int_equal(np__users_find(u, "bob")->ports.n, 0); /* no narrowing */
  assert_non_null(np__users_find(u, "zed"));
  assert_null(np__users_find(u, "carol"));
  assert_null(np__users_find(u, "alic"));
  assert_null(np__users_find(NULL, "alice"));
  np__users_unref(u);
  np__users_unref(NULL);
}

/* The commented example in docs/ is a file the server takes. */
static void test_users_example(void **state) {
  const char *root = getenv("NP_SOURCE_ROOT");
  char p[1024], err[512] = "";
  np__users *u = NULL;

  (void)state;
  if (root == NULL)
    skip();
  snprintf(p, sizeof(p), "%s/docs/examples/users.ini", root);
  if (np__users_load(p, &u, err, sizeof(err)) != 0)
    fail_msg("%s", err);
  assert_int_equal(np__users_count(u), 2);
  assert_int_equal(np__users_find(u, "build-bot")->max_proxies, 1);
  np__users_unref(u);
}

static void expect_users_error(const char *text, const char *where, const char *what) {
  char err[512] = "", want[128];
  np__users *u = (np__users *)&u; /* must stay untouched */

  if (load(text, &u, err, sizeof(err)) != NP_ECONFIG)
    fail_msg("accepted: %s", text);
  assert_ptr_equal(u, (np__users *)&u);
  snprintf(want, sizeof(want), "%s%s", path, where);
  if (strstr(err, want) == NULL || strstr(err, what) == NULL)
    fail_msg("error '%s' lacks '%s' or '%s'", err, want, what);
}

static void test_users_file_errors(void **state) {
  char err[256];
  np__users *u;

  (void)state;
  expect_users_error("token = x\n", ":1:", "before any [CLIENT_NAME]");
  expect_users_error("[a]\ntoken = x\nport = 5\n", ":3:", "unknown key 'port'");
  expect_users_error("[a]\ntoken = x\n[b]\ntoken = y\n[a]\ntoken = z\n",
                     ":6:", "[a] appears twice");
  expect_users_error("[a]\ntoken = x\nallow_ports = 70000\n", ":3:", "bad port or range");
  expect_users_error("[a]\ntoken = x\nmax_proxies = -1\n", ":3:", "max_proxies");
  expect_users_error("[a]\ntoken = x\nmax_proxies = 65\n", ":3:", "from 0 to 64");
  expect_users_error("[a]\ntoken =\n", ":2:", "token: must be 1 to 255 bytes");
  expect_users_error("[a]\nallow_ports = 80\n", ": ", "[a] has no token");
  expect_users_error("[a]\ntoken = x\nnonsense\n", ":3:", "syntax error");
  /* inih would cut a long name short, and carry a long line over into the next. */
  expect_users_error(
      "[a]\ntoken = x\n[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\ntoken = x\n",
      ":3:", "section name longer than 49 bytes");
  {
    char text[600];
    snprintf(text, sizeof(text), "[a]\ntoken = %0300d\n", 7);
    expect_users_error(text, ":2:", "line longer than 198 bytes");
  }
  /* The first error is the one reported. */
  expect_users_error("[a]\nbad = 1\nworse = 2\n", ":2:", "'bad'");
  assert_int_equal(np__users_load("/nonexistent/users.ini", &u, err, sizeof(err)), UV_ENOENT);
  assert_non_null(strstr(err, "/nonexistent/users.ini: cannot open"));
}

static struct sockaddr *addr(const char *ip, struct sockaddr_storage *ss) {
  memset(ss, 0, sizeof(*ss));
  if (uv_ip4_addr(ip, 1234, (struct sockaddr_in *)ss) != 0)
    assert_int_equal(uv_ip6_addr(ip, 1234, (struct sockaddr_in6 *)ss), 0);
  return (struct sockaddr *)ss;
}

static void test_backoff(void **state) {
  struct sockaddr_storage a, b, c;
  np__backoff *bo;
  unsigned fails;
  uint64_t t = 1000;

  (void)state;
  assert_int_equal(np__backoff_new(1000, 8000, &bo), 0);
  /* Free attempts, then 1 s, 2 s, 4 s, 8 s, 8 s. */
  for (int i = 0; i < NP_BACKOFF_FREE_FAILURES; i++) {
    assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, &fails), 0);
    assert_int_equal(fails, i + 1);
    assert_int_equal(np__backoff_wait(bo, addr("192.0.2.1", &a), t), 0);
  }
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, NULL), 1000);
  assert_int_equal(np__backoff_wait(bo, addr("192.0.2.1", &a), t + 400), 600);
  assert_int_equal(np__backoff_wait(bo, addr("192.0.2.1", &a), t + 1000), 0);
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, NULL), 2000);
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, NULL), 4000);
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, NULL), 8000);
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, &fails), 8000);
  assert_int_equal(fails, 8);
  /* Other addresses are not affected; the same host through a dual-stack socket is. */
  assert_int_equal(np__backoff_wait(bo, addr("192.0.2.2", &b), t), 0);
  assert_int_equal(np__backoff_wait(bo, addr("::ffff:192.0.2.1", &c), t), 8000);
  /* IPv6 counts per /64. */
  for (int i = 0; i < NP_BACKOFF_FREE_FAILURES + 1; i++)
    np__backoff_fail(bo, addr(i % 2 ? "2001:db8:1:2::1" : "2001:db8:1:2:ffff::9", &b), t, NULL);
  assert_int_equal(np__backoff_wait(bo, addr("2001:db8:1:2::77", &b), t), 1000);
  assert_int_equal(np__backoff_wait(bo, addr("2001:db8:1:3::1", &b), t), 0);
  assert_int_equal(np__backoff_count(bo), 2);
  /* A success forgets; a long quiet forgets too. */
  np__backoff_clear(bo, addr("192.0.2.1", &a), t);
  assert_int_equal(np__backoff_wait(bo, addr("192.0.2.1", &a), t), 0);
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, &fails), 0);
  assert_int_equal(fails, 1);
  assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t + 16 * 60 * 1000, &fails), 0);
  assert_int_equal(fails, 1);
  np__backoff_free(bo);

  /* Off: nothing is ever refused. */
  assert_int_equal(np__backoff_new(0, 0, &bo), 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(np__backoff_fail(bo, addr("192.0.2.1", &a), t, NULL), 0);
  assert_int_equal(np__backoff_wait(bo, addr("192.0.2.1", &a), t), 0);
  np__backoff_free(bo);
}

/* Many addresses cannot grow the table: it holds NP_BACKOFF_SLOTS and evicts the oldest. */
static void test_backoff_bounded(void **state) {
  struct sockaddr_storage a;
  np__backoff *bo;
  char ip[32];

  (void)state;
  assert_int_equal(np__backoff_new(1000, 8000, &bo), 0);
  for (int i = 0; i < NP_BACKOFF_FREE_FAILURES + 1; i++)
    np__backoff_fail(bo, addr("198.51.100.7", &a), 10, NULL);
  for (unsigned i = 0; i < 3 * NP_BACKOFF_SLOTS; i++) {
    snprintf(ip, sizeof(ip), "10.%u.%u.%u", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    np__backoff_fail(bo, addr(ip, &a), 100 + i, NULL);
    assert_true(np__backoff_count(bo) <= NP_BACKOFF_SLOTS);
  }
  assert_int_equal(np__backoff_count(bo), NP_BACKOFF_SLOTS);
  /* The oldest record went first. */
  assert_int_equal(np__backoff_wait(bo, addr("198.51.100.7", &a), 500), 0);
  np__backoff_free(bo);
}

static void test_cidrs(void **state) {
  struct sockaddr_storage a;
  char err[256];
  np__cidrs c;

  (void)state;
  assert_int_equal(
      np__cidrs_parse("10.0.0.0/8, 2001:db8::/32 192.0.2.77,127.1.2.3/16", &c, err, sizeof(err)),
      0);
  assert_int_equal(c.n, 4);
  assert_true(np__cidrs_allow(&c, addr("10.255.1.2", &a)));
  assert_true(np__cidrs_allow(&c, addr("::ffff:10.1.1.1", &a))); /* dual-stack socket */
  assert_true(np__cidrs_allow(&c, addr("2001:db8:ffff::1", &a)));
  assert_true(np__cidrs_allow(&c, addr("192.0.2.77", &a)));
  assert_true(np__cidrs_allow(&c, addr("127.1.200.200", &a))); /* host bits were cleared */
  assert_false(np__cidrs_allow(&c, addr("11.0.0.1", &a)));
  assert_false(np__cidrs_allow(&c, addr("192.0.2.78", &a)));
  assert_false(np__cidrs_allow(&c, addr("2001:db9::1", &a)));
  assert_false(np__cidrs_allow(&c, addr("127.2.0.1", &a)));
  /* Odd prefix lengths. */
  assert_int_equal(np__cidrs_parse("192.0.2.128/25", &c, err, sizeof(err)), 0);
  assert_true(np__cidrs_allow(&c, addr("192.0.2.200", &a)));
  assert_false(np__cidrs_allow(&c, addr("192.0.2.127", &a)));
  assert_int_equal(np__cidrs_parse("0.0.0.0/0", &c, err, sizeof(err)), 0);
  assert_true(np__cidrs_allow(&c, addr("203.0.113.9", &a)));
  assert_false(np__cidrs_allow(&c, addr("2001:db8::1", &a)));
  c.n = 0; /* an empty list lets everybody in */
  assert_true(np__cidrs_allow(&c, addr("2001:db8::1", &a)));

  assert_int_equal(np__cidrs_parse("10.0.0.0/33", &c, err, sizeof(err)), NP_ECONFIG);
  assert_non_null(strstr(err, "bad prefix length (0 to 32)"));
  assert_int_equal(np__cidrs_parse("2001:db8::/129", &c, err, sizeof(err)), NP_ECONFIG);
  assert_int_equal(np__cidrs_parse("10.0.0.0/", &c, err, sizeof(err)), NP_ECONFIG);
  assert_int_equal(np__cidrs_parse("10.0.0.0/8x", &c, err, sizeof(err)), NP_ECONFIG);
  assert_int_equal(np__cidrs_parse("example.com", &c, err, sizeof(err)), NP_ECONFIG);
  assert_non_null(strstr(err, "'example.com' is not an IP address"));
  assert_int_equal(np__cidrs_parse(" , ", &c, err, sizeof(err)), NP_ECONFIG);
  assert_non_null(strstr(err, "empty list"));
  {
    char many[2048] = "";
    for (int i = 0; i <= NP_CIDR_MAX; i++)
      snprintf(many + strlen(many), sizeof(many) - strlen(many), "10.0.%d.0/24,", i);
    assert_int_equal(np__cidrs_parse(many, &c, err, sizeof(err)), NP_ECONFIG);
    assert_non_null(strstr(err, "more than 32 networks"));
  }
}

/* Deadlines: a passed one leaves 0 ms, never a wrapped 2^64 - n (the multiplexed login deadline
 * was once computed as timeout - elapsed, unsigned). */
static void test_ms_left(void **state) {
  (void)state;
  assert_int_equal(np__ms_left(1500, 1000), 500);
  assert_int_equal(np__ms_left(1000, 1000), 0);
  assert_int_equal(np__ms_left(1000, 1001), 0);
  assert_int_equal(np__ms_left(10000, UINT64_MAX), 0);
  assert_int_equal(np__ms_left(UINT64_MAX, 0), UINT64_MAX);
}

/* A directory is no users file (it used to read as one with no entries: "0 clients"). */
static void test_users_file_is_a_directory(void **state) {
  char dir[] = "/tmp/np-users-dir-XXXXXX", err[512] = "";
  np__users *u = NULL;
  (void)state;

  assert_non_null(mkdtemp(dir));
  assert_int_equal(np__users_load(dir, &u, err, sizeof(err)), NP_ECONFIG);
  assert_null(u);
  assert_non_null(strstr(err, "not a regular file (it is a directory)"));
  assert_int_equal(rmdir(dir), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_users_file),        cmocka_unit_test(test_users_example),
      cmocka_unit_test(test_users_file_is_a_directory), cmocka_unit_test(test_ms_left),
      cmocka_unit_test(test_users_file_errors), cmocka_unit_test(test_backoff),
      cmocka_unit_test(test_backoff_bounded),   cmocka_unit_test(test_cidrs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
