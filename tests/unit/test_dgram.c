/* Datagrams over a stream: boundaries survive any cutting of the stream, empty and largest
 * datagrams included; an oversized length is refused for good. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dgram.h"
#include "natproxy/error.h"

#define N 5
static const size_t sizes[N] = {1, 0, 1400, NP_DGRAM_MAX, 3};

typedef struct got {
  size_t n;
  size_t len[16];
  uint32_t sum[16];
} got;

static uint32_t sum(const char *d, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ (unsigned char)d[i]) * 16777619u;
  return h;
}

static void on_dgram(void *arg, const char *d, size_t n) {
  got *g = arg;
  assert_true(g->n < 16);
  g->len[g->n] = n;
  g->sum[g->n++] = sum(d, n);
}

/* The stream of all N datagrams, and their checksums. */
static char *stream(size_t *len, uint32_t sums[N]) {
  size_t total = 0, off = 0;
  char *s;
  for (int i = 0; i < N; i++)
    total += NP_DGRAM_HDR_LEN + sizes[i];
  s = malloc(total);
  for (int i = 0; i < N; i++) {
    assert_int_equal(np__dgram_hdr(sizes[i], (unsigned char *)s + off), 0);
    off += NP_DGRAM_HDR_LEN;
    for (size_t k = 0; k < sizes[i]; k++)
      s[off + k] = (char)(k * 31 + (size_t)i);
    sums[i] = sum(s + off, sizes[i]);
    off += sizes[i];
  }
  *len = total;
  return s;
}

static void check_all(const got *g, const uint32_t sums[N]) {
  assert_int_equal(g->n, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(g->len[i], sizes[i]);
    assert_int_equal(g->sum[i], sums[i]);
  }
}

/* Cut into two reads at offsets around every boundary, and into reads of k bytes. */
static void test_cuts(void **state) {
  uint32_t sums[N];
  size_t len;
  char *s = stream(&len, sums);
  (void)state;
  for (size_t cut = 0; cut <= len; cut += cut < 2000 || cut > len - 2000 ? 1 : 997) {
    np__dgram_parser p;
    got g = {0};
    np__dgram_parser_init(&p);
    assert_int_equal(np__dgram_feed(&p, s, cut, on_dgram, &g), 0);
    assert_int_equal(np__dgram_feed(&p, s + cut, len - cut, on_dgram, &g), 0);
    check_all(&g, sums);
    assert_null(p.body);
    np__dgram_parser_free(&p);
  }
  for (size_t k = 1; k < 8; k++) {
    np__dgram_parser p;
    got g = {0};
    np__dgram_parser_init(&p);
    for (size_t off = 0; off < len; off += k)
      assert_int_equal(np__dgram_feed(&p, s + off, len - off < k ? len - off : k, on_dgram, &g), 0);
    check_all(&g, sums);
    np__dgram_parser_free(&p);
  }
  free(s);
}

static void test_limits(void **state) {
  unsigned char hdr[NP_DGRAM_HDR_LEN];
  const char big[] = {(char)0xff, (char)0xe4, 'x'}; /* 65508 */
  np__dgram_parser p;
  got g = {0};
  (void)state;
  assert_int_equal(np__dgram_hdr(NP_DGRAM_MAX + 1, hdr), NP_ETOOBIG);
  np__dgram_parser_init(&p);
  assert_int_equal(np__dgram_feed(&p, big, sizeof(big), on_dgram, &g), NP_ETOOBIG);
  assert_int_equal(np__dgram_feed(&p, "\0\0", 2, on_dgram, &g), NP_ETOOBIG); /* sticky */
  assert_int_equal(g.n, 0);
  np__dgram_parser_free(&p);
  /* An empty datagram completes with its header, not with the bytes after it. */
  np__dgram_parser_init(&p);
  assert_int_equal(np__dgram_feed(&p, "\0", 1, on_dgram, &g), 0);
  assert_int_equal(g.n, 0);
  assert_int_equal(np__dgram_feed(&p, "\0", 1, on_dgram, &g), 0);
  assert_int_equal(g.n, 1);
  /* A header alone holds no memory; a cut body then frees its own when complete. */
  assert_int_equal(np__dgram_feed(&p, "\0\5", 2, on_dgram, &g), 0);
  assert_null(p.body);
  assert_int_equal(np__dgram_feed(&p, "ab", 2, on_dgram, &g), 0);
  assert_non_null(p.body);
  assert_int_equal(np__dgram_feed(&p, "cde", 3, on_dgram, &g), 0);
  assert_null(p.body);
  assert_int_equal(g.n, 2);
  assert_int_equal(g.len[1], 5);
  assert_int_equal(g.sum[1], sum("abcde", 5));
  np__dgram_parser_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_cuts), cmocka_unit_test(test_limits)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
