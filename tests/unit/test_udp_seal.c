/* The datagram carrier's packets: what one side seals only the other side of the same session
 * opens, once; forged, cut, replayed, reflected and foreign packets are refused, each for its own
 * reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <uv.h>

#include "udp_seal.h"

static const unsigned char master[NP_SEAL_MASTER] = "0123456789abcdef0123456789abcde";

static char pkt[NP_SEAL_MAX], copy[NP_SEAL_MAX];

static void pair(np__seal *cli, np__seal *srv, uint64_t session) {
  assert_int_equal(np__seal_init(cli, master, session, 0), 0);
  assert_int_equal(np__seal_init(srv, master, session, 1), 0);
}

static void test_round_trip(void **state) {
  np__seal cli, srv;
  uint64_t flow;
  char *payload;
  size_t plen, sizes[] = {0, 1, 1400, NP_SEAL_MAX - NP_SEAL_OVERHEAD};
  int type, n;
  (void)state;

  pair(&cli, &srv, 42);
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    char *data = malloc(sizes[i] + 1);
    for (size_t j = 0; j < sizes[i]; j++)
      data[j] = (char)(j * 7 + i);
    n = np__seal_pack(&cli, NP_SEAL_DATA, 1000 + i, data, sizes[i], pkt);
    assert_int_equal(n, (int)(sizes[i] + NP_SEAL_OVERHEAD));
    assert_int_equal(np__seal_open(&srv, pkt, (size_t)n, &type, &flow, &payload, &plen), 0);
    assert_int_equal(type, NP_SEAL_DATA);
    assert_int_equal(flow, 1000 + i);
    assert_int_equal(plen, sizes[i]);
    assert_memory_equal(payload, data, sizes[i]);
    /* and the other way */
    n = np__seal_pack(&srv, NP_SEAL_DATA, 7, data, sizes[i], pkt);
    assert_int_equal(np__seal_open(&cli, pkt, (size_t)n, &type, &flow, &payload, &plen), 0);
    assert_memory_equal(payload, data, sizes[i]);
    free(data);
  }
  assert_int_equal(
      np__seal_pack(&cli, NP_SEAL_DATA, 1, pkt, NP_SEAL_MAX - NP_SEAL_OVERHEAD + 1, copy),
      UV_EMSGSIZE);
  np__seal_free(&cli);
  np__seal_free(&srv);
}

static void test_refused(void **state) {
  np__seal cli, srv, other;
  uint64_t flow;
  char *payload;
  size_t plen;
  int type, n;
  (void)state;

  pair(&cli, &srv, 42);
  n = np__seal_pack(&cli, NP_SEAL_DATA, 1, "hello", 5, pkt);
  memcpy(copy, pkt, (size_t)n);

  /* every single flipped bit, in header, body and tag */
  for (int i = 0; i < n * 8; i++) {
    copy[i / 8] ^= (char)(1 << (i % 8));
    int r = np__seal_open(&srv, copy, (size_t)n, &type, &flow, &payload, &plen);
    assert_true(r == NP_SEAL_EAUTH || r == NP_SEAL_ESHORT);
    memcpy(copy, pkt, (size_t)n);
  }
  /* cut short: below the overhead it is not even a packet; above, the tag fails */
  assert_int_equal(np__seal_open(&srv, copy, NP_SEAL_OVERHEAD - 1, &type, &flow, &payload, &plen),
                   NP_SEAL_ESHORT);
  assert_int_equal(np__seal_open(&srv, copy, (size_t)n - 1, &type, &flow, &payload, &plen),
                   NP_SEAL_EAUTH);
  /* the genuine one opens once, then is a replay (opening decrypts in place: copy again) */
  memcpy(copy, pkt, (size_t)n);
  assert_int_equal(np__seal_open(&srv, copy, (size_t)n, &type, &flow, &payload, &plen), 0);
  memcpy(copy, pkt, (size_t)n);
  assert_int_equal(np__seal_open(&srv, copy, (size_t)n, &type, &flow, &payload, &plen),
                   NP_SEAL_EREPLAY);
  /* reflected back to its sender: the keys differ per direction (a counter the window has not
   * seen, so it is the key that refuses it) */
  srv.tx_next = 1000;
  n = np__seal_pack(&srv, NP_SEAL_PROBE_ACK, 0, "", 0, pkt);
  assert_int_equal(np__seal_open(&srv, pkt, (size_t)n, &type, &flow, &payload, &plen),
                   NP_SEAL_EAUTH);
  /* another session's keys, or another session's id */
  assert_int_equal(np__seal_init(&other, master, 43, 1), 0);
  n = np__seal_pack(&cli, NP_SEAL_DATA, 1, "x", 1, pkt);
  assert_int_equal(np__seal_open(&other, pkt, (size_t)n, &type, &flow, &payload, &plen),
                   NP_SEAL_ESHORT);
  pkt[8] ^= 1; /* the last byte of the session id: 42 -> 43 */
  assert_int_equal(np__seal_open(&other, pkt, (size_t)n, &type, &flow, &payload, &plen),
                   NP_SEAL_EAUTH);
  /* an unknown type */
  pkt[0] = 9;
  assert_int_equal(np__seal_peek(pkt, (size_t)n, &type, &flow), NP_SEAL_ESHORT);
  np__seal_free(&cli);
  np__seal_free(&srv);
  np__seal_free(&other);
}

/* Packets may arrive out of order within 64 of the newest; older ones and repeats are refused. */
static void test_window(void **state) {
  static char pkts[200][64];
  int lens[200];
  np__seal cli, srv;
  uint64_t flow;
  char *payload;
  size_t plen;
  int type;
  (void)state;

  pair(&cli, &srv, 9);
  for (int i = 0; i < 200; i++)
    lens[i] = np__seal_pack(&cli, NP_SEAL_DATA, 1, "z", 1, pkts[i]);
#define OPEN(i)                                                                                    \
  np__seal_open(&srv, memcpy(copy, pkts[i], (size_t)lens[i]), (size_t)lens[i], &type, &flow,       \
                &payload, &plen)
  assert_int_equal(OPEN(100), 0);
  assert_int_equal(OPEN(37), 0);               /* 63 behind: inside */
  assert_int_equal(OPEN(36), NP_SEAL_EREPLAY); /* 64 behind: too old */
  assert_int_equal(OPEN(99), 0);
  assert_int_equal(OPEN(99), NP_SEAL_EREPLAY);
  assert_int_equal(OPEN(101), 0);
  assert_int_equal(OPEN(199), 0); /* a jump clears the window */
  assert_int_equal(OPEN(150), 0);
  assert_int_equal(OPEN(101), NP_SEAL_EREPLAY);
  assert_int_equal(OPEN(150), NP_SEAL_EREPLAY);
  /* a forged packet with a fresh counter does not move the window */
  memcpy(copy, pkts[160], (size_t)lens[160]);
  copy[lens[160] - 1] ^= 1;
  assert_int_equal(np__seal_open(&srv, copy, (size_t)lens[160], &type, &flow, &payload, &plen),
                   NP_SEAL_EAUTH);
  assert_int_equal(OPEN(160), 0);
#undef OPEN
  np__seal_free(&cli);
  np__seal_free(&srv);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_round_trip),
                                     cmocka_unit_test(test_refused), cmocka_unit_test(test_window)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
