/* The heartbeat decision both ends share (np__heartbeat_due): a ping falls due exactly
 * heartbeat_interval after we last sent, the peer is dead exactly heartbeat_timeout after it last
 * spoke and not a millisecond before, death wins over a ping, the next look is the earlier of the
 * two deadlines, and a flag that is off takes its rule and its deadline away. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proto.h"

#define INTERVAL 500
#define TIMEOUT  3000

/* Both rules on, as the native codec has them on either side. */
static enum np__heartbeat due(uint64_t now, uint64_t last_rx, uint64_t last_tx, uint64_t *next) {
  return np__heartbeat_due(now, last_rx, last_tx, INTERVAL, TIMEOUT, 1, 1, next);
}

static void test_ping_at_interval(void **state) {
  uint64_t next;
  (void)state;

  assert_int_equal(due(10000 + INTERVAL - 1, 10000, 10000, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + INTERVAL);
  assert_int_equal(due(10000 + INTERVAL, 10000, 10000, &next), NP_HEARTBEAT_PING);
  assert_int_equal(due(10000 + INTERVAL + 1, 10000, 10000, &next), NP_HEARTBEAT_PING);
  /* The caller sent it and asks again: the next ping is an interval after this one. */
  assert_int_equal(due(10000 + INTERVAL, 10000, 10000 + INTERVAL, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + 2 * INTERVAL);
  /* What the peer says does not put our ping off: only what we send does. */
  assert_int_equal(due(10000 + INTERVAL, 10000 + INTERVAL, 10000, &next), NP_HEARTBEAT_PING);
}

static void test_dead_at_timeout(void **state) {
  uint64_t next;
  (void)state;

  /* We kept sending; the peer fell silent at 10000. */
  assert_int_equal(due(10000 + TIMEOUT - 1, 10000, 10000 + TIMEOUT - 1, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + TIMEOUT);
  assert_int_equal(due(10000 + TIMEOUT, 10000, 10000 + TIMEOUT - 1, &next), NP_HEARTBEAT_DEAD);
  assert_int_equal(due(10000 + TIMEOUT + 1, 10000, 10000 + TIMEOUT - 1, &next), NP_HEARTBEAT_DEAD);
  /* Both due at once: a dead peer is not pinged once more. */
  assert_int_equal(due(10000 + TIMEOUT, 10000, 10000, &next), NP_HEARTBEAT_DEAD);
  /* A word from the peer a millisecond before puts death off by a whole timeout. */
  assert_int_equal(due(10000 + TIMEOUT, 10001, 10000 + TIMEOUT, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10001 + TIMEOUT);
  /* From the very start (both times 0, as at a connect on a fresh loop's clock). */
  assert_int_equal(due(TIMEOUT - 1, 0, TIMEOUT - 1, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(due(TIMEOUT, 0, TIMEOUT - 1, &next), NP_HEARTBEAT_DEAD);
}

static void test_next_is_earlier(void **state) {
  uint64_t next;
  (void)state;

  /* The ping comes first: we sent at 10000, the peer spoke at 9000. */
  assert_int_equal(due(10100, 9000, 10000, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + INTERVAL);
  /* The peer's death comes first: it last spoke long ago, we sent just now. */
  assert_int_equal(due(12800, 10000, 12700, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + TIMEOUT);
  /* Both at the same moment. */
  assert_int_equal(due(12600, 10000, 10000 + TIMEOUT - INTERVAL, &next), NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + TIMEOUT);
  /* A deadline already passed is still the one given: the caller's timer fires at once. */
  assert_int_equal(due(20000, 10000, 10000, &next), NP_HEARTBEAT_DEAD);
  assert_int_equal(next, 10000 + INTERVAL);
}

static void test_flags_off(void **state) {
  uint64_t next;
  (void)state;

  /* Not watching the peer (the server with the line codec): never dead, pings go on, and the next
   * look is the next ping however long the peer has been silent. */
  assert_int_equal(np__heartbeat_due(100000, 0, 100000 - INTERVAL, INTERVAL, TIMEOUT, 0, 1, &next),
                   NP_HEARTBEAT_PING);
  assert_int_equal(np__heartbeat_due(100000, 0, 100000, INTERVAL, TIMEOUT, 0, 1, &next),
                   NP_HEARTBEAT_NONE);
  assert_int_equal(next, 100000 + INTERVAL);

  /* No pings (the client with the line codec): never a ping however long we were silent, death
   * as before, and the next look is the peer's deadline. */
  assert_int_equal(np__heartbeat_due(10000 + TIMEOUT - 1, 10000, 0, INTERVAL, TIMEOUT, 1, 0, &next),
                   NP_HEARTBEAT_NONE);
  assert_int_equal(next, 10000 + TIMEOUT);
  assert_int_equal(np__heartbeat_due(10000 + TIMEOUT, 10000, 0, INTERVAL, TIMEOUT, 1, 0, &next),
                   NP_HEARTBEAT_DEAD);

  /* Neither: nothing is ever due, and there is nothing to look for. */
  assert_int_equal(np__heartbeat_due(100000, 0, 0, INTERVAL, TIMEOUT, 0, 0, &next),
                   NP_HEARTBEAT_NONE);
  assert_true(next == UINT64_MAX);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ping_at_interval),
      cmocka_unit_test(test_dead_at_timeout),
      cmocka_unit_test(test_next_is_earlier),
      cmocka_unit_test(test_flags_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
