/* The default pending pool: lookup, deadline order, bounds per group and in total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

static const np_pool_ops *ops;
static int g1, g2; /* two groups: only their addresses matter */

static void collect(uint64_t id, void *item, void *arg) {
  uint64_t *log = arg;
  (void)item;
  log[++log[0]] = id;
}

static void test_put_take(void **state) {
  void *p;
  (void)state;
  ops = np_pool_default_ops();
  assert_int_equal(np_pool_default_new(0, 0, &p), 0);
  assert_int_equal(ops->put(p, 1, &g1, (void *)"one", 100), 0);
  assert_int_equal(ops->put(p, 2, &g2, (void *)"two", 50), 0);
  assert_int_equal(ops->put(p, 1, &g2, (void *)"dup", 10), NP_EEXIST);
  assert_int_equal(ops->count(p, NULL), 2);
  assert_int_equal(ops->count(p, &g1), 1);
  assert_true(ops->next_deadline(p) == 50);
  assert_string_equal(ops->take(p, 1), "one");
  assert_null(ops->take(p, 1));
  assert_null(ops->take(p, 99));
  assert_int_equal(ops->count(p, &g1), 0);
  assert_string_equal(ops->take(p, 2), "two");
  assert_true(ops->next_deadline(p) == UINT64_MAX);
  ops->destroy(p);
}

static void test_expire_order(void **state) {
  uint64_t log[16] = {0};
  void *p;
  (void)state;
  assert_int_equal(np_pool_default_new(0, 0, &p), 0);
  /* Out-of-order deadlines still expire in deadline order. */
  assert_int_equal(ops->put(p, 10, &g1, NULL, 300), 0);
  assert_int_equal(ops->put(p, 11, &g1, NULL, 100), 0);
  assert_int_equal(ops->put(p, 12, &g2, NULL, 200), 0);
  assert_int_equal(ops->put(p, 13, &g2, NULL, 200), 0);
  assert_int_equal(ops->expire(p, 99, collect, log), 0);
  assert_int_equal(ops->expire(p, 200, collect, log), 3);
  assert_int_equal(log[0], 3);
  assert_true(log[1] == 11 && log[2] == 12 && log[3] == 13);
  assert_true(ops->next_deadline(p) == 300);
  assert_int_equal(ops->expire(p, UINT64_MAX, collect, log), 1);
  assert_int_equal(ops->count(p, NULL), 0);
  ops->destroy(p);
}

static void test_bounds(void **state) {
  void *p;
  (void)state;
  assert_int_equal(np_pool_default_new(3, 2, &p), 0);
  assert_int_equal(ops->put(p, 1, &g1, NULL, 1), 0);
  assert_int_equal(ops->put(p, 2, &g1, NULL, 1), 0);
  assert_int_equal(ops->put(p, 3, &g1, NULL, 1), NP_EPOOLFULL); /* per group */
  assert_int_equal(ops->put(p, 3, &g2, NULL, 1), 0);
  assert_int_equal(ops->put(p, 4, &g2, NULL, 1), NP_EPOOLFULL); /* in total */
  ops->take(p, 1);
  assert_int_equal(ops->put(p, 4, &g2, NULL, 1), 0);
  assert_int_equal(ops->count(p, &g2), 2);
  ops->expire(p, UINT64_MAX, NULL, NULL);
  ops->destroy(p);
}

static void test_oldest_and_groups(void **state) {
  uint64_t log[16] = {0};
  uint64_t id = 0;
  void *p;
  (void)state;
  assert_int_equal(np_pool_default_new(0, 0, &p), 0);
  for (uint64_t i = 1; i <= 6; i++)
    assert_int_equal(ops->put(p, i, i % 2 ? &g1 : &g2, NULL, 1000 - i), 0);
  /* Oldest by arrival (id), not by deadline. */
  ops->take_oldest(p, &g2, &id);
  assert_true(id == 2);
  ops->take_oldest(p, NULL, &id);
  assert_true(id == 1);
  assert_int_equal(ops->remove_group(p, &g1, collect, log), 2);
  assert_true(log[1] == 5 || log[1] == 3);
  assert_int_equal(ops->count(p, &g1), 0);
  assert_int_equal(ops->count(p, NULL), 2);
  assert_null(ops->take_oldest(p, &g1, &id));
  ops->destroy(p); /* destroy with items left does not leak (valgrind checks) */
}

static void test_many(void **state) {
  void *p;
  (void)state;
  assert_int_equal(np_pool_default_new(0, 0, &p), 0);
  for (uint64_t i = 0; i < 20000; i++)
    assert_int_equal(ops->put(p, i * 7919, &g1, (void *)(uintptr_t)(i + 1), i), 0);
  for (uint64_t i = 0; i < 20000; i += 2)
    assert_true(ops->take(p, i * 7919) == (void *)(uintptr_t)(i + 1));
  assert_int_equal(ops->count(p, &g1), 10000);
  assert_int_equal(ops->expire(p, UINT64_MAX, NULL, NULL), 10000);
  ops->destroy(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_take), cmocka_unit_test(test_expire_order),
      cmocka_unit_test(test_bounds),   cmocka_unit_test(test_oldest_and_groups),
      cmocka_unit_test(test_many),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
