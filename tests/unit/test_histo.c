/* The latency histogram of lib/histo.c: which bucket an observation lands in (the bounds are
 * inclusive, as Prometheus' "le"), the cumulative view, sums, and a first byte noted once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <uv.h>

#include "histo.h"

static void test_buckets(void **state) {
  np__histo h = {0};
  uint64_t cum[NP__HISTO_BOUNDS];
  (void)state;

  for (size_t i = 1; i < NP__HISTO_BOUNDS; i++)
    assert_true(np__histo_le_us[i - 1] < np__histo_le_us[i]);
  assert_int_equal(np__histo_le_us[0], 1000);                        /* 1 ms */
  assert_int_equal(np__histo_le_us[NP__HISTO_BOUNDS - 1], 10000000); /* 10 s */

  np__histo_observe(&h, 0);
  np__histo_observe(&h, 1000); /* on the bound: still in it */
  np__histo_observe(&h, 1001);
  np__histo_observe(&h, 10000000);
  np__histo_observe(&h, 10000001); /* above every bound: only in +Inf */
  np__histo_observe(&h, UINT64_MAX / 2);
  assert_int_equal(h.n[0], 2);
  assert_int_equal(h.n[1], 1);
  assert_int_equal(h.n[NP__HISTO_BOUNDS - 1], 1);
  assert_int_equal(h.n[NP__HISTO_BOUNDS], 2);
  assert_int_equal(h.count, 6);
  assert_int_equal(h.sum_us, 0 + 1000 + 1001 + 10000000 + 10000001 + UINT64_MAX / 2);

  np__histo_cumulative(&h, cum, NP__HISTO_BOUNDS);
  assert_int_equal(cum[0], 2);
  assert_int_equal(cum[1], 3);
  for (size_t i = 2; i < NP__HISTO_BOUNDS - 1; i++)
    assert_int_equal(cum[i], 3);
  assert_int_equal(cum[NP__HISTO_BOUNDS - 1], 4); /* the rest are +Inf's: count */

  /* n shorter than the bounds: only n written */
  cum[1] = 77;
  np__histo_cumulative(&h, cum, 1);
  assert_int_equal(cum[0], 2);
  assert_int_equal(cum[1], 77);
}

static void test_add(void **state) {
  np__histo a = {0}, b = {0};
  (void)state;

  np__histo_observe(&a, 3000);
  np__histo_observe(&b, 3000);
  np__histo_observe(&b, 20000000);
  np__histo_add(&a, &b);
  assert_int_equal(a.count, 3);
  assert_int_equal(a.sum_us, 20006000);
  assert_int_equal(a.n[2], 2); /* 2.5 ms < 3 ms <= 5 ms */
  assert_int_equal(a.n[NP__HISTO_BOUNDS], 1);
}

static void test_first_once(void **state) {
  np__histo h = {0};
  np__first f = {&h, uv_hrtime()};
  np__first none = {NULL, 0};
  (void)state;

  np__first_note(&f);
  assert_null(f.h);
  np__first_note(&f); /* a second byte is no second observation */
  np__first_note(&none);
  assert_int_equal(h.count, 1);
  assert_true(h.sum_us < 1000000); /* just now, not since the clock's epoch */
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_buckets), cmocka_unit_test(test_add),
                                     cmocka_unit_test(test_first_once)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
