/* The HTTP vhost's routing table: exact hosts before wildcards, the most specific wildcard first,
 * the longest location on a segment boundary, conflicts and idempotent claims, gone entries and
 * their cap, what is refused as a host or a location, and a couple of thousand hosts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "http_route.h"

/* Owners are opaque to the table: the addresses of these will do. */
static char owners[5000];
#define A (&owners[0])
#define B (&owners[1])
#define C (&owners[2])

static np__http_routes *routes(void) {
  np__http_routes *r = NULL;
  assert_int_equal(np__http_routes_new(&r), 0);
  assert_non_null(r);
  return r;
}

static void add_ok(np__http_routes *r, const char *host, const char *loc, void *owner) {
  assert_int_equal(np__http_routes_add(r, host, loc, owner, NULL), 0);
}

/* The route of host + target, and its owner (NULL unless FOUND). */
static int find(const np__http_routes *r, const char *host, const char *target, void **owner) {
  return np__http_routes_find(r, host, strlen(host), target, strlen(target), owner);
}

static void assert_found(const np__http_routes *r, const char *host, const char *target,
                         void *want) {
  void *o = C + 1; /* something find must overwrite */
  if (find(r, host, target, &o) != NP_HTTP_ROUTE_FOUND)
    fail_msg("%s%s: not found", host, target);
  if (o != want)
    fail_msg("%s%s: owner %td, want %td", host, target, (char *)o - owners, (char *)want - owners);
}

static void assert_route(const np__http_routes *r, const char *host, const char *target, int want) {
  void *o = A;
  int got = find(r, host, target, &o);
  if (got != want)
    fail_msg("%s%s: %d, want %d", host, target, got, want);
  assert_null(o);
}

static void test_new_free(void **state) {
  np__http_routes *r = routes();
  void *o = A;
  (void)state;
  assert_int_equal(np__http_routes_count(r, 0), 0);
  assert_int_equal(np__http_routes_count(r, 1), 0);
  assert_int_equal(np__http_routes_find(r, "a.com", 5, "/", 1, &o), NP_HTTP_ROUTE_NONE);
  assert_null(o);
  np__http_routes_remove(r, A, 1); /* nothing to remove */
  np__http_routes_remove(r, NULL, 1);
  np__http_routes_free(r);
  np__http_routes_free(NULL);
}

static void test_exact_and_wildcard(void **state) {
  np__http_routes *r = routes();
  (void)state;
  add_ok(r, "a.example.com", "", A);
  add_ok(r, "*.example.com", "", B);
  assert_int_equal(np__http_routes_count(r, 0), 2);
  assert_found(r, "a.example.com", "/", A); /* the exact name before the wildcard */
  assert_found(r, "b.example.com", "/x", B);
  assert_found(r, "x.a.example.com", "/", B);   /* the exact claim is that name only */
  assert_found(r, "x.y.z.example.com", "/", B); /* any depth */
  /* A wildcard never covers the bare domain, nor a name that merely ends alike. */
  assert_route(r, "example.com", "/", NP_HTTP_ROUTE_NONE);
  assert_route(r, "badexample.com", "/", NP_HTTP_ROUTE_NONE);
  assert_route(r, "example.org", "/", NP_HTTP_ROUTE_NONE);
  assert_route(r, "com", "/", NP_HTTP_ROUTE_NONE);
  assert_route(r, "", "/", NP_HTTP_ROUTE_NONE);
  np__http_routes_free(r);
}

static void test_most_specific_wildcard(void **state) {
  np__http_routes *r = routes();
  (void)state;
  add_ok(r, "*.example.com", "", A);
  add_ok(r, "*.b.example.com", "", B);
  add_ok(r, "*.c.b.example.com", "", C);
  assert_found(r, "x.example.com", "/", A);
  assert_found(r, "b.example.com", "/", A); /* under *.example.com, not *.b.example.com */
  assert_found(r, "x.b.example.com", "/", B);
  assert_found(r, "x.y.b.example.com", "/", B);
  assert_found(r, "c.b.example.com", "/", B);
  assert_found(r, "x.c.b.example.com", "/", C);
  assert_found(r, "w.x.c.b.example.com", "/", C);
  assert_found(r, "x.c.example.com", "/", A);
  /* Claimed in the other order, the same answers. */
  np__http_routes_remove(r, A, 0);
  add_ok(r, "*.example.com", "", A);
  assert_found(r, "x.y.b.example.com", "/", B);
  assert_found(r, "x.example.com", "/", A);
  np__http_routes_free(r);
}

static void test_case_and_trailing_dot(void **state) {
  np__http_routes *r = routes();
  void *holder = NULL;
  (void)state;
  add_ok(r, "WWW.Example.COM.", "", A);
  add_ok(r, "*.Wild.Example.Com", "", B);
  assert_found(r, "www.example.com", "/", A);
  /* find takes what np__http_head_host gives, but tolerates the raw forms too. */
  assert_found(r, "WWW.EXAMPLE.COM.", "/", A);
  assert_found(r, "x.wild.example.com", "/", B);
  assert_found(r, "X.WILD.example.com.", "/", B);
  /* The same claim however it is spelt. */
  assert_int_equal(np__http_routes_add(r, "www.example.com", "/", C, &holder), UV_EEXIST);
  assert_ptr_equal(holder, A);
  add_ok(r, "www.EXAMPLE.com", "", A);
  assert_int_equal(np__http_routes_count(r, 0), 2);
  np__http_routes_free(r);
}

static void test_locations(void **state) {
  np__http_routes *r = routes();
  (void)state;
  add_ok(r, "h.example.com", "/api", B);
  add_ok(r, "h.example.com", "/", A);
  add_ok(r, "h.example.com", "/api/v2/", C);
  assert_found(r, "h.example.com", "/", A);
  assert_found(r, "h.example.com", "", A);
  assert_found(r, "h.example.com", "*", A); /* OPTIONS *: only "" takes it */
  assert_found(r, "h.example.com", "/index.html", A);
  assert_found(r, "h.example.com", "/api", B);
  assert_found(r, "h.example.com", "/api/", B);
  assert_found(r, "h.example.com", "/api/x", B);
  assert_found(r, "h.example.com", "/apix", A); /* not on a segment boundary */
  assert_found(r, "h.example.com", "/API", A);  /* paths keep their case */
  assert_found(r, "h.example.com", "/api/v2", C);
  assert_found(r, "h.example.com", "/api/v2/users/1", C);
  assert_found(r, "h.example.com", "/api/v2x", B);
  assert_found(r, "h.example.com", "/api/v", B);
  /* The path ends at '?' or '#': what follows never routes. */
  assert_found(r, "h.example.com", "/api?next=/api/v2/x", B);
  assert_found(r, "h.example.com", "/api#/api/v2", B);
  assert_found(r, "h.example.com", "/apix?/api", A);
  assert_found(r, "h.example.com", "/api/v2?", C);
  assert_found(r, "h.example.com", "?/api", A);
  /* pathlen bounds the path: what lies beyond it is not read as part of it. */
  void *o = NULL;
  assert_int_equal(np__http_routes_find(r, "h.example.com", 13, "/api/v2", 4, &o),
                   NP_HTTP_ROUTE_FOUND);
  assert_ptr_equal(o, B);
  np__http_routes_free(r);
}

static void test_location_trailing_slash(void **state) {
  np__http_routes *r = routes();
  void *holder = NULL;
  (void)state;
  add_ok(r, "a.com", "/api/", A);
  assert_int_equal(np__http_routes_add(r, "a.com", "/api", B, &holder), UV_EEXIST);
  assert_ptr_equal(holder, A);
  add_ok(r, "a.com", "/api", A); /* the same claim: idempotent */
  add_ok(r, "a.com", "", B);
  holder = NULL;
  assert_int_equal(np__http_routes_add(r, "a.com", "/", C, &holder), UV_EEXIST);
  assert_ptr_equal(holder, B);
  assert_int_equal(np__http_routes_count(r, 0), 2);
  assert_found(r, "a.com", "/api", A);
  assert_found(r, "a.com", "/", B);
  np__http_routes_free(r);
}

/* A host with claims none of which takes the path: on to the less specific wildcards. */
static void test_fall_through(void **state) {
  np__http_routes *r = routes();
  (void)state;
  add_ok(r, "a.example.com", "/api", A);
  add_ok(r, "*.a.example.com", "/static", C);
  add_ok(r, "*.example.com", "", B);
  assert_found(r, "a.example.com", "/api/x", A);
  assert_found(r, "a.example.com", "/other", B);
  assert_found(r, "x.a.example.com", "/static/x.css", C);
  assert_found(r, "x.a.example.com", "/api", B); /* not the exact name's claim */
  np__http_routes_remove(r, B, 0);
  assert_route(r, "a.example.com", "/other", NP_HTTP_ROUTE_NONE);
  assert_route(r, "x.a.example.com", "/", NP_HTTP_ROUTE_NONE);
  np__http_routes_free(r);
}

static void test_conflict_and_idempotent(void **state) {
  np__http_routes *r = routes();
  void *holder = C;
  (void)state;
  assert_int_equal(np__http_routes_add(r, "a.com", "/x", A, &holder), 0);
  assert_ptr_equal(holder, C); /* set on UV_EEXIST only */
  assert_int_equal(np__http_routes_add(r, "a.com", "/x", A, &holder), 0);
  assert_ptr_equal(holder, C);
  assert_int_equal(np__http_routes_count(r, 0), 1);
  assert_int_equal(np__http_routes_add(r, "a.com", "/x", B, &holder), UV_EEXIST);
  assert_ptr_equal(holder, A);
  assert_int_equal(np__http_routes_add(r, "a.com", "/x", B, NULL), UV_EEXIST);
  /* Overlapping claims are no conflict. */
  add_ok(r, "a.com", "/x/y", B);
  add_ok(r, "*.com", "/x", B);
  add_ok(r, "*.a.com", "/x", C);
  assert_int_equal(np__http_routes_count(r, 0), 4);
  assert_found(r, "a.com", "/x", A);
  np__http_routes_free(r);
}

static void test_remove(void **state) {
  np__http_routes *r = routes();
  (void)state;
  add_ok(r, "a.com", "", A);
  add_ok(r, "a.com", "/b", B);
  add_ok(r, "a.com", "/a", A);
  add_ok(r, "*.a.com", "", A);
  add_ok(r, "b.com", "", B);
  assert_int_equal(np__http_routes_count(r, 0), 5);
  np__http_routes_remove(r, A, 0);
  assert_int_equal(np__http_routes_count(r, 0), 2);
  assert_int_equal(np__http_routes_count(r, 1), 0);
  assert_route(r, "a.com", "/", NP_HTTP_ROUTE_NONE);
  assert_route(r, "a.com", "/a", NP_HTTP_ROUTE_NONE);
  assert_route(r, "x.a.com", "/", NP_HTTP_ROUTE_NONE);
  assert_found(r, "a.com", "/b/c", B);
  assert_found(r, "b.com", "/", B);
  np__http_routes_remove(r, A, 0); /* again: nothing */
  assert_int_equal(np__http_routes_count(r, 0), 2);
  /* Free again to claim. */
  add_ok(r, "a.com", "/a", C);
  assert_found(r, "a.com", "/a", C);
  np__http_routes_remove(r, B, 0);
  np__http_routes_remove(r, C, 0);
  assert_int_equal(np__http_routes_count(r, 0), 0);
  assert_route(r, "b.com", "/", NP_HTTP_ROUTE_NONE);
  np__http_routes_free(r);
}

static void test_gone(void **state) {
  np__http_routes *r = routes();
  void *holder = NULL;
  (void)state;
  add_ok(r, "a.com", "", A);
  add_ok(r, "a.com", "/api", B);
  add_ok(r, "*.a.com", "", B);
  np__http_routes_remove(r, B, 1);
  assert_int_equal(np__http_routes_count(r, 0), 1);
  assert_int_equal(np__http_routes_count(r, 1), 2);
  assert_route(r, "a.com", "/api/x", NP_HTTP_ROUTE_GONE); /* the best match is gone: 502 */
  assert_route(r, "x.a.com", "/", NP_HTTP_ROUTE_GONE);
  assert_found(r, "a.com", "/", A);
  /* Gone again (a second remove) changes nothing. */
  np__http_routes_remove(r, B, 1);
  assert_int_equal(np__http_routes_count(r, 1), 2);
  /* The next to claim takes a gone entry over, whoever it is. */
  assert_int_equal(np__http_routes_add(r, "a.com", "/api/", C, &holder), 0);
  assert_null(holder);
  assert_int_equal(np__http_routes_count(r, 0), 2);
  assert_int_equal(np__http_routes_count(r, 1), 1);
  assert_found(r, "a.com", "/api/x", C);
  add_ok(r, "*.a.com", "", B);
  assert_found(r, "x.a.com", "/", B);
  assert_int_equal(np__http_routes_count(r, 1), 0);
  /* A gone entry's owner back as itself, and gone then dropped for good. */
  np__http_routes_remove(r, C, 1);
  add_ok(r, "a.com", "/api", C);
  assert_int_equal(np__http_routes_count(r, 1), 0);
  np__http_routes_remove(r, A, 1);
  np__http_routes_remove(r, A, 0); /* gone entries have no owner left to remove */
  assert_int_equal(np__http_routes_count(r, 1), 1);
  assert_route(r, "a.com", "/", NP_HTTP_ROUTE_GONE);
  np__http_routes_free(r); /* with a gone entry in it */
}

static void test_gone_cap(void **state) {
  np__http_routes *r = routes();
  char host[64];
  int i, n = (int)(sizeof(owners) / sizeof(owners[0]));
  (void)state;
  for (i = 0; i < n; i++) {
    snprintf(host, sizeof(host), "h%d.example.com", i);
    add_ok(r, host, "", &owners[i]);
    np__http_routes_remove(r, &owners[i], 1);
    assert_true(np__http_routes_count(r, 1) <= NP_HTTP_ROUTES_GONE_MAX);
  }
  assert_int_equal(np__http_routes_count(r, 1), NP_HTTP_ROUTES_GONE_MAX);
  assert_int_equal(np__http_routes_count(r, 0), 0);
  for (i = 0; i < n; i++) {
    snprintf(host, sizeof(host), "h%d.example.com", i);
    assert_route(r, host, "/",
                 i < n - NP_HTTP_ROUTES_GONE_MAX ? NP_HTTP_ROUTE_NONE : NP_HTTP_ROUTE_GONE);
  }
  /* One owner going with many claims at once is capped the same way. */
  for (i = 0; i < n; i++) {
    snprintf(host, sizeof(host), "*.w%d.example.com", i);
    add_ok(r, host, "/p", A);
  }
  np__http_routes_remove(r, A, 1);
  assert_int_equal(np__http_routes_count(r, 1), NP_HTTP_ROUTES_GONE_MAX);
  assert_int_equal(np__http_routes_count(r, 0), 0);
  np__http_routes_free(r);
}

static void test_invalid(void **state) {
  np__http_routes *r = routes();
  char label64[80], long254[300], long253[300], wild254[300], loc256[300], loc255[300];
  void *holder = C;
  size_t i;
  (void)state;

  memset(label64, 'a', 64);
  strcpy(label64 + 64, ".com");
  /* 254 and 253 bytes in labels of 63 and less. */
  memset(long254, 'a', 254);
  long254[254] = '\0';
  for (i = 63; i < 254; i += 64)
    long254[i] = '.';
  memcpy(long253, long254, 253);
  long253[253] = '\0';
  strcpy(wild254, "*.");
  strcpy(wild254 + 2, long254 + 2);
  assert_int_equal(strlen(wild254), 254);
  loc256[0] = '/';
  memset(loc256 + 1, 'p', 255);
  loc256[256] = '\0';
  memcpy(loc255, loc256, 255);
  loc255[255] = '\0';

  const char *bad_hosts[] = {"",
                             ".",
                             "..",
                             "*",
                             "*.",
                             "**.a.com",
                             "*a.com",
                             "a.*.com",
                             "*.*.com",
                             "a*.com",
                             "a..b",
                             ".a.com",
                             "a.com..",
                             "-a.com",
                             "a-.com",
                             "a.-b.com",
                             "a.b-.com",
                             label64,
                             long254,
                             wild254,
                             "a b.com",
                             " a.com",
                             "a.com ",
                             "a\tb.com",
                             "a\x01"
                             "b.com",
                             "a\x7f.com",
                             "a/b.com",
                             "a.com:80",
                             "[::1]",
                             "a\xc3\xa9.com",
                             "a,b.com",
                             "a@b.com"};
  for (i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
    if (np__http_routes_add(r, bad_hosts[i], "", A, &holder) != UV_EINVAL)
      fail_msg("host \"%s\" was not refused", bad_hosts[i]);
  }
  const char *bad_locs[] = {"api",    "*",   "/a b",   "/a\tb",  "/a\r\n", "/a\x01",
                            "/a\x7f", "/a?", "/a?b=1", "/a#x",   "#",      "?",
                            "/api//", "//",  " /a",    "/a/b//", loc256};
  for (i = 0; i < sizeof(bad_locs) / sizeof(bad_locs[0]); i++) {
    if (np__http_routes_add(r, "a.com", bad_locs[i], A, &holder) != UV_EINVAL)
      fail_msg("location \"%s\" was not refused", bad_locs[i]);
  }
  assert_int_equal(np__http_routes_add(r, "a.com", "", NULL, &holder), UV_EINVAL);
  assert_int_equal(np__http_routes_add(r, NULL, "", A, &holder), UV_EINVAL);
  assert_int_equal(np__http_routes_add(r, "a.com", NULL, A, &holder), UV_EINVAL);
  assert_ptr_equal(holder, C);
  assert_int_equal(np__http_routes_count(r, 0), 0);
  assert_int_equal(np__http_routes_count(r, 1), 0);

  /* And what is just within the rules. */
  const char *good_hosts[] = {long253,
                              label64 + 1,
                              "localhost",
                              "my_host.example.com",
                              "_dmarc.example.com",
                              "1.2.3.4",
                              "xn--bcher-kva.example",
                              "a-b.c--d.com",
                              "*.com",
                              "*.a",
                              "a.",
                              "*.a-1.b_2.c"};
  for (i = 0; i < sizeof(good_hosts) / sizeof(good_hosts[0]); i++) {
    if (np__http_routes_add(r, good_hosts[i], "", A, NULL) != 0)
      fail_msg("host \"%s\" was refused", good_hosts[i]);
  }
  const char *good_locs[] = {loc255, "/a/b", "/a//b", "/%20", "/~user/", "/a;b=c", "/caf\xc3\xa9"};
  for (i = 0; i < sizeof(good_locs) / sizeof(good_locs[0]); i++) {
    if (np__http_routes_add(r, "a.com", good_locs[i], A, NULL) != 0)
      fail_msg("location \"%s\" was refused", good_locs[i]);
  }
  assert_found(r, long253, "/", A);
  assert_found(r, "x.a-1.b_2.c", "/", A);
  assert_found(r, "a.com", "/a//b/c", A);
  /* A request host beyond a name's maximum matches nothing, and is not read past hostlen. */
  assert_route(r, long254, "/", NP_HTTP_ROUTE_NONE);
  np__http_routes_free(r);
}

/* Enough hosts that the hash tables grow several times, each found as its own. */
static void test_many_hosts(void **state) {
  np__http_routes *r = routes();
  char host[64];
  int i, n = 2000;
  (void)state;
  for (i = 0; i < n; i++) {
    snprintf(host, sizeof(host), "%shost%d.zone%d.example", i % 4 == 3 ? "*." : "", i, i % 7);
    add_ok(r, host, i % 2 ? "/app" : "", &owners[i]);
  }
  assert_int_equal(np__http_routes_count(r, 0), n);
  for (i = 0; i < n; i++) {
    snprintf(host, sizeof(host), "%shost%d.zone%d.example", i % 4 == 3 ? "x." : "", i, i % 7);
    assert_found(r, host, "/app/index.html", &owners[i]);
    if (i % 2)
      assert_route(r, host, "/other", NP_HTTP_ROUTE_NONE);
    else
      assert_found(r, host, "/other", &owners[i]);
  }
  /* Half of them leave. */
  for (i = 0; i < n; i += 2)
    np__http_routes_remove(r, &owners[i], i % 4 == 0);
  assert_int_equal(np__http_routes_count(r, 0), n / 2);
  assert_int_equal(np__http_routes_count(r, 1), n / 4);
  for (i = 0; i < n; i++) {
    snprintf(host, sizeof(host), "%shost%d.zone%d.example", i % 4 == 3 ? "x." : "", i, i % 7);
    if (i % 2)
      assert_found(r, host, "/app", &owners[i]);
    else
      assert_route(r, host, "/", i % 4 == 0 ? NP_HTTP_ROUTE_GONE : NP_HTTP_ROUTE_NONE);
  }
  np__http_routes_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_free),
      cmocka_unit_test(test_exact_and_wildcard),
      cmocka_unit_test(test_most_specific_wildcard),
      cmocka_unit_test(test_case_and_trailing_dot),
      cmocka_unit_test(test_locations),
      cmocka_unit_test(test_location_trailing_slash),
      cmocka_unit_test(test_fall_through),
      cmocka_unit_test(test_conflict_and_idempotent),
      cmocka_unit_test(test_remove),
      cmocka_unit_test(test_gone),
      cmocka_unit_test(test_gone_cap),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_many_hosts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
