/* STUN Binding (lib/stun.c): requests and responses built and parsed back, for IPv4 and IPv6;
 * what the parser refuses (a FINGERPRINT that does not match or is not last, attributes that
 * overrun, addresses of the wrong size) and what it takes (the older MAPPED-ADDRESS, ERROR-CODE,
 * unknown attributes noted, anything after MESSAGE-INTEGRITY but FINGERPRINT ignored). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "internal.h"
#include "stun.h"

static const unsigned char tid[NP_STUN_TID_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static void test_request(void **state) {
  unsigned char b[NP_STUN_BUILD_MAX];
  np__stun m;
  int n;
  (void)state;

  n = np__stun_request(tid, b, sizeof(b));
  assert_int_equal(n, 28);
  assert_true(np__stun_is(b, (size_t)n));
  assert_int_equal(np__stun_parse(b, (size_t)n, &m), 0);
  assert_int_equal(m.type, NP_STUN_BINDING_REQUEST);
  assert_memory_equal(m.tid, tid, sizeof(tid));
  assert_true(m.fingerprint);
  assert_int_equal(m.mapped.ss_family, 0);
  assert_int_equal(np__stun_request(tid, b, 27), UV_ENOBUFS);
  b[27] ^= 1; /* the FINGERPRINT no longer matches */
  assert_int_equal(np__stun_parse(b, (size_t)n, &m), NP_EPROTO);
  assert_false(np__stun_is(b, (size_t)n - 4)); /* the length field says otherwise */
  assert_false(np__stun_is(b, 19));
}

static void round_trip(const char *addr, int port) {
  unsigned char b[NP_STUN_BUILD_MAX];
  struct sockaddr_storage ss;
  np__stun m;
  int n;

  assert_int_equal(np__parse_addr(addr, &ss), 0);
  ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port); /* the same place in both */
  n = np__stun_response(tid, (struct sockaddr *)&ss, b, sizeof(b));
  assert_int_equal(n, ss.ss_family == AF_INET ? 40 : 52);
  assert_int_equal(np__stun_parse(b, (size_t)n, &m), 0);
  assert_int_equal(m.type, NP_STUN_BINDING_SUCCESS);
  assert_true(m.fingerprint);
  assert_int_equal(m.mapped.ss_family, ss.ss_family);
  assert_true(np__addr_equal((struct sockaddr *)&m.mapped, (struct sockaddr *)&ss));
  assert_int_equal(np__stun_response(tid, (struct sockaddr *)&ss, b, (size_t)n - 1), UV_ENOBUFS);
}

static void test_response(void **state) {
  (void)state;
  round_trip("192.0.2.1:0", 32853);
  round_trip("203.0.113.77:0", 1);
  round_trip("[2001:db8:1234:5678:11:2233:4455:6677]:0", 32853);
  round_trip("[::1]:0", 65535);
}

/* A message of the given attributes (type, length, value padded to four), no FINGERPRINT. */
static size_t message(unsigned char *b, uint16_t type, const unsigned char *attrs, size_t n) {
  np__put_be(b, type, 2);
  np__put_be(b + 2, n, 2);
  np__put_be(b + 4, NP_STUN_COOKIE, 4);
  memcpy(b + 8, tid, sizeof(tid));
  if (n > 0)
    memcpy(b + 20, attrs, n);
  return 20 + n;
}

static void test_attributes(void **state) {
  unsigned char b[256];
  np__stun m;
  (void)state;

  /* MAPPED-ADDRESS alone: taken as it is */
  const unsigned char plain[] = {0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x1f, 0x90, 10, 0, 0, 7};
  assert_int_equal(np__stun_parse(b, message(b, NP_STUN_BINDING_SUCCESS, plain, sizeof(plain)), &m),
                   0);
  assert_int_equal(ntohs(((struct sockaddr_in *)&m.mapped)->sin_port), 8080);
  assert_int_equal(ntohl(((struct sockaddr_in *)&m.mapped)->sin_addr.s_addr), 0x0a000007);
  /* ERROR-CODE 420, an unknown comprehension-required attribute, one optional one */
  const unsigned char err[] = {0x00, 0x09, 0x00, 0x05, 0,    0,    4,    20,   'x', 0, 0, 0,
                               0x7f, 0x01, 0x00, 0x00, 0xc0, 0x57, 0x00, 0x01, 9,   0, 0, 0};
  assert_int_equal(np__stun_parse(b, message(b, NP_STUN_BINDING_ERROR, err, sizeof(err)), &m), 0);
  assert_int_equal(m.error, 420);
  assert_int_equal(m.unknown, 0x7f01);
  /* after MESSAGE-INTEGRITY: ignored */
  unsigned char mi[4 + 20 + 12] = {0x00, 0x08, 0x00, 20};
  memcpy(mi + 24, plain, sizeof(plain));
  assert_int_equal(np__stun_parse(b, message(b, NP_STUN_BINDING_SUCCESS, mi, sizeof(mi)), &m), 0);
  assert_int_equal(m.mapped.ss_family, 0);
  /* refused: a value past the end; an IPv4 address of 6 bytes; an unknown family */
  const unsigned char over[] = {0x00, 0x20, 0x00, 0x10, 0, 1, 0, 0};
  assert_int_equal(np__stun_parse(b, message(b, NP_STUN_BINDING_SUCCESS, over, sizeof(over)), &m),
                   NP_EPROTO);
  const unsigned char short4[] = {0x00, 0x20, 0x00, 0x06, 0, 1, 0, 0, 1, 2, 0, 0};
  assert_int_equal(
      np__stun_parse(b, message(b, NP_STUN_BINDING_SUCCESS, short4, sizeof(short4)), &m),
      NP_EPROTO);
  const unsigned char fam[] = {0x00, 0x20, 0x00, 0x08, 0, 3, 0, 0, 1, 2, 3, 4};
  assert_int_equal(np__stun_parse(b, message(b, NP_STUN_BINDING_SUCCESS, fam, sizeof(fam)), &m),
                   NP_EPROTO);
  /* FINGERPRINT not last */
  const unsigned char notlast[] = {0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0, 0x80, 0x22, 0, 0};
  assert_int_equal(
      np__stun_parse(b, message(b, NP_STUN_BINDING_REQUEST, notlast, sizeof(notlast)), &m),
      NP_EPROTO);
  /* not STUN: the top bits, the cookie */
  message(b, NP_STUN_BINDING_REQUEST, NULL, 0);
  b[0] |= 0x80;
  assert_false(np__stun_is(b, 20));
  b[0] &= 0x3f;
  b[5] ^= 1;
  assert_false(np__stun_is(b, 20));
  assert_int_equal(np__stun_parse(b, 20, &m), NP_EPROTO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_request),
      cmocka_unit_test(test_response),
      cmocka_unit_test(test_attributes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
