/* The allocator sweep of the HTTP vhost's routing table (lib/http_route.c): a table of enough hosts
 * that uthash grows its buckets several times, hosts with several locations, wildcards, gone
 * entries taken over, runs again and again with the n-th allocation failing, for every n until a
 * run no longer reaches n. A claim that failed must have left the table as it was: every claim
 * that succeeded is found as its own, the counts are those of the successes, and (in the
 * AddressSanitizer build) LeakSanitizer finds nothing once the table is freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "http_route.h"

#include "failmalloc.h"

#define HOSTS     300 /* exact names: uthash starts with 32 buckets of about 10 */
#define WILDCARDS 40
#define LOCS      4 /* per exact name: "" and /p1../p3, so its array grows twice */

typedef struct claim {
  char host[32];
  char loc[8];
  char path[8]; /* a request path this claim, and no longer one, takes */
  size_t owner; /* an exact name's claims have one owner: removal visits every host per owner */
  int ok;
} claim;

static claim claims[HOSTS * LOCS + WILDCARDS];
#define OWNERS (HOSTS + WILDCARDS)
static char owners[OWNERS];

static size_t make_claims(void) {
  size_t n = 0;
  for (int h = 0; h < HOSTS; h++)
    for (int l = 0; l < LOCS; l++, n++) {
      snprintf(claims[n].host, sizeof(claims[n].host), "h%d.example", h);
      snprintf(claims[n].loc, sizeof(claims[n].loc), l == 0 ? "" : "/p%d", l);
      snprintf(claims[n].path, sizeof(claims[n].path), l == 0 ? "/" : "/p%d/", l);
      claims[n].owner = (size_t)h;
    }
  for (int w = 0; w < WILDCARDS; w++, n++) {
    snprintf(claims[n].host, sizeof(claims[n].host), "*.w%d.example", w);
    strcpy(claims[n].path, "/");
    claims[n].owner = HOSTS + (size_t)w;
  }
  return n;
}

/* The request host of claim i: a wildcard's "*" made a label. */
static const char *request_host(size_t i, char *buf, size_t len) {
  snprintf(buf, len, "%s", claims[i].host);
  if (buf[0] == '*')
    buf[0] = 'x';
  return buf;
}

/* What a request to claim i's host and path must reach: the claim, or when it failed, what is left
 * under it (its name's "" claim for a location, else nothing). */
static int expect(size_t i, int gone_half) {
  if (claims[i].ok)
    return gone_half && claims[i].owner % 2 == 0 ? NP_HTTP_ROUTE_GONE : NP_HTTP_ROUTE_FOUND;
  if (i < HOSTS * LOCS && i % LOCS != 0)
    return expect(i - i % LOCS, gone_half);
  return NP_HTTP_ROUTE_NONE;
}

static void check(const np__http_routes *r, size_t n, int gone_half) {
  size_t live = 0, i;
  char host[32];
  for (i = 0; i < n; i++) {
    void *o = NULL;
    int want = expect(i, gone_half);
    request_host(i, host, sizeof(host));
    assert_int_equal(
        np__http_routes_find(r, host, strlen(host), claims[i].path, strlen(claims[i].path), &o),
        want);
    if (want == NP_HTTP_ROUTE_FOUND)
      assert_ptr_equal(o, &owners[claims[i].owner]);
    live += claims[i].ok && want == NP_HTTP_ROUTE_FOUND;
  }
  assert_int_equal(np__http_routes_count(r, 0), live);
}

static void scenario(void *arg) {
  size_t n = make_claims(), i, even_ok = 0;
  np__http_routes *r = NULL;
  int e;
  (void)arg;

  if ((e = np__http_routes_new(&r)) != 0) {
    assert_int_equal(e, UV_ENOMEM);
    assert_null(r); /* untouched */
    return;
  }
  for (i = 0; i < n; i++) {
    e = np__http_routes_add(r, claims[i].host, claims[i].loc, &owners[claims[i].owner], NULL);
    if (e != 0)
      assert_int_equal(e, UV_ENOMEM);
    claims[i].ok = e == 0;
    even_ok += claims[i].ok && claims[i].owner % 2 == 0;
  }
  check(r, n, 0);
  /* Half go, their claims kept as gone entries (no allocation); then new owners take them over,
   * and the other half go for good. */
  for (i = 0; i < OWNERS; i += 2)
    np__http_routes_remove(r, &owners[i], 1);
  check(r, n, 1);
  assert_int_equal(np__http_routes_count(r, 1), even_ok);
  for (i = 0; i < n; i++)
    if (claims[i].ok && claims[i].owner % 2 == 0)
      assert_int_equal(
          np__http_routes_add(r, claims[i].host, claims[i].loc, &owners[claims[i].owner], NULL), 0);
  assert_int_equal(np__http_routes_count(r, 1), 0);
  check(r, n, 0);
  for (i = 1; i < OWNERS; i += 2)
    np__http_routes_remove(r, &owners[i], 0);
  np__http_routes_free(r);
}

static void test_sweep(void **state) {
  long n;
  (void)state;
  n = np_fm_sweep(scenario, NULL, NP_FM_OURS, 1, 100000);
  print_message("http routes: %ld allocations, each failed once\n", n);
  assert_true(n > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sweep),
  };
  np_fm_install();
  return cmocka_run_group_tests(tests, NULL, NULL);
}
