/* The PROXY protocol's header (lib/proxy_proto.c): the writer's exact bytes for each form, against
 * bytes written out by hand from haproxy's proxy-protocol.txt; the reader on those, on every prefix
 * of them, with payload behind them, and on each way a header can be broken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "proxy_proto.h"

static const char SIG[] = "\r\n\r\n\0\r\nQUIT\n";

static struct sockaddr_storage v4(const char *ip, int port) {
  struct sockaddr_storage ss;
  struct sockaddr_in *in = (struct sockaddr_in *)&ss;
  memset(&ss, 0, sizeof(ss));
  in->sin_family = AF_INET;
  in->sin_port = htons((uint16_t)port);
  assert_int_equal(inet_pton(AF_INET, ip, &in->sin_addr), 1);
  return ss;
}

static struct sockaddr_storage v6(const char *ip, int port) {
  struct sockaddr_storage ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
  memset(&ss, 0, sizeof(ss));
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons((uint16_t)port);
  assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
  return ss;
}

static void same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  assert_int_equal(a->ss_family, b->ss_family);
  assert_memory_equal(
      a, b, a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
}

/* Every strict prefix of a header needs more; the whole, with payload behind, is DONE at len. */
static void reads_back(const char *h, size_t n, np__pp_header *out) {
  char buf[NP_PP_READ_MAX + 16];
  np__pp_header tmp;
  for (size_t i = 0; i < n; i++)
    assert_int_equal(np__pp_parse(h, i, &tmp), NP_PP_MORE);
  memcpy(buf, h, n);
  memcpy(buf + n, "GET / HTTP/1.1\r\n", 16);
  assert_int_equal(np__pp_parse(buf, n + 16, out), NP_PP_DONE);
  assert_int_equal(out->len, n);
}

static void test_v1(void **state) {
  struct sockaddr_storage s = v4("203.0.113.7", 51234), d = v4("198.51.100.1", 8080);
  struct sockaddr_storage s6 = v6("2001:db8::1", 443), d6 = v6("2001:db8:ffff::2", 65535);
  char out[NP_PP_WRITE_MAX];
  np__pp_header h;
  int n;
  (void)state;

  n = np__pp_write(1, 0, (struct sockaddr *)&s, (struct sockaddr *)&d, out);
  assert_int_equal(n, 48);
  assert_memory_equal(out, "PROXY TCP4 203.0.113.7 198.51.100.1 51234 8080\r\n", 48);
  reads_back(out, (size_t)n, &h);
  assert_true(h.version == 1 && h.has_addrs);
  same_addr(&h.src, &s);
  same_addr(&h.dst, &d);

  n = np__pp_write(1, 0, (struct sockaddr *)&s6, (struct sockaddr *)&d6, out);
  assert_memory_equal(out, "PROXY TCP6 2001:db8::1 2001:db8:ffff::2 443 65535\r\n", (size_t)n);
  reads_back(out, (size_t)n, &h);
  same_addr(&h.src, &s6);
  same_addr(&h.dst, &d6);

  /* Unknown, or families that differ: UNKNOWN, and the reader keeps the connection's own. */
  n = np__pp_write(1, 0, NULL, (struct sockaddr *)&d, out);
  assert_memory_equal(out, "PROXY UNKNOWN\r\n", (size_t)n);
  assert_int_equal(np__pp_write(1, 0, (struct sockaddr *)&s, (struct sockaddr *)&d6, out), 15);
  reads_back(out, 15, &h);
  assert_false(h.has_addrs);
  assert_int_equal(np__pp_parse("PROXY UNKNOWN whatever follows\r\n", 32, &h), NP_PP_DONE);
  assert_int_equal(np__pp_write(1, 1, (struct sockaddr *)&s, (struct sockaddr *)&d, out),
                   UV_EINVAL); /* v1 has no UDP */
  assert_int_equal(np__pp_write(3, 0, (struct sockaddr *)&s, (struct sockaddr *)&d, out),
                   UV_EINVAL);
}

static void test_v2(void **state) {
  struct sockaddr_storage s = v4("203.0.113.7", 51234), d = v4("198.51.100.1", 8080);
  struct sockaddr_storage s6 = v6("2001:db8::1", 443), d6 = v6("2001:db8:ffff::2", 65535);
  static const unsigned char tcp4[28] = {'\r', '\n', '\r', '\n', 0,    '\r', '\n', 'Q', 'U', 'I',
                                         'T',  '\n', 0x21, 0x11, 0,    12,   203,  0,   113, 7,
                                         198,  51,   100,  1,    0xC8, 0x22, 0x1F, 0x90};
  char out[NP_PP_WRITE_MAX];
  np__pp_header h;
  int n;
  (void)state;

  n = np__pp_write(2, 0, (struct sockaddr *)&s, (struct sockaddr *)&d, out);
  assert_int_equal(n, 28);
  assert_memory_equal(out, tcp4, 28);
  reads_back(out, 28, &h);
  assert_true(h.version == 2 && h.has_addrs && !h.udp);
  same_addr(&h.src, &s);
  same_addr(&h.dst, &d);

  n = np__pp_write(2, 1, (struct sockaddr *)&s6, (struct sockaddr *)&d6, out);
  assert_int_equal(n, 52);
  assert_int_equal((unsigned char)out[13], 0x22); /* INET6, DGRAM */
  reads_back(out, 52, &h);
  assert_true(h.has_addrs && h.udp);
  same_addr(&h.src, &s6);
  same_addr(&h.dst, &d6);

  /* Not known: the LOCAL command, UNSPEC, no addresses. */
  n = np__pp_write(2, 0, NULL, NULL, out);
  assert_int_equal(n, 16);
  assert_memory_equal(out, SIG, 12);
  assert_int_equal((unsigned char)out[12], 0x20);
  assert_int_equal((unsigned char)out[13], 0x00);
  reads_back(out, 16, &h);
  assert_false(h.has_addrs);
}

static void test_v2_tlvs_and_bounds(void **state) {
  unsigned char h2[16 + 512 + 1];
  np__pp_header h;
  (void)state;

  memcpy(h2, SIG, 12);
  h2[12] = 0x21;
  h2[13] = 0x11;
  /* 12 bytes of addresses and a 4-byte TLV (type 0x04 NOOP, length 1): skipped */
  h2[14] = 0, h2[15] = 16;
  memset(h2 + 16, 1, 12);
  memcpy(h2 + 28, "\x04\x00\x01\x00", 4);
  assert_int_equal(np__pp_parse((char *)h2, 32, &h), NP_PP_DONE);
  assert_int_equal(h.len, 32);
  /* the largest body accepted, and one byte more */
  h2[14] = 512 >> 8, h2[15] = 512 & 0xFF;
  assert_int_equal(np__pp_parse((char *)h2, 16, &h), NP_PP_MORE);
  memset(h2 + 16, 0, 512);
  assert_int_equal(np__pp_parse((char *)h2, 16 + 512, &h), NP_PP_DONE);
  h2[15] = (512 + 1) & 0xFF;
  assert_int_equal(np__pp_parse((char *)h2, 16, &h), NP_ETOOBIG);
  /* version 1 in the binary form, command 2, family 4, transport 3: broken */
  h2[14] = 0, h2[15] = 12;
  for (int i = 0; i < 4; i++) {
    unsigned char b[28];
    memcpy(b, h2, 28);
    if (i == 0)
      b[12] = 0x11;
    if (i == 1)
      b[12] = 0x22;
    if (i == 2)
      b[13] = 0x41;
    if (i == 3)
      b[13] = 0x13;
    assert_int_equal(np__pp_parse((char *)b, 28, &h), NP_EPROTO);
  }
  /* an address block shorter than its family's */
  h2[13] = 0x21, h2[15] = 12; /* INET6 in 12 bytes */
  assert_int_equal(np__pp_parse((char *)h2, 28, &h), NP_EPROTO);
  /* AF_UNIX (216 bytes of paths): a header, but no address for us */
  h2[13] = 0x31, h2[14] = 0, h2[15] = 216;
  memset(h2 + 16, 0, 216);
  assert_int_equal(np__pp_parse((char *)h2, 16 + 216, &h), NP_PP_DONE);
  assert_false(h.has_addrs);
}

static void test_broken_v1(void **state) {
  static const char *bad[] = {
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   /* a seventh field */
      "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* a missing one */
      "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",    /* two spaces */
      "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    /* a leading zero */
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /* a port out of range */
      "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",    /* a sign */
      "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",         /* the wrong family */
      "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
      "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
      "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", /* v1 knows no UDP */
      "PROXY \r\n",
      "PROXY UNKNOWNX\r\n",
      "PROXY UNKNOWN\nGET / HTTP/1.1\r\n", /* a bare LF */
      "PROXY UNKNOWN\rGET / HTTP/1.1\r\n", /* a bare CR */
  };
  char longline[200];
  np__pp_header h;
  (void)state;

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(np__pp_parse(bad[i], strlen(bad[i]), &h), NP_EPROTO);
  /* a NUL inside the line */
  assert_int_equal(np__pp_parse("PROXY UNKNOWN\0x\r\n", 17, &h), NP_EPROTO);
  /* no CRLF within 107 bytes: too big, not "more" forever */
  memset(longline, 'x', sizeof(longline));
  memcpy(longline, "PROXY UNKNOWN ", 14);
  assert_int_equal(np__pp_parse(longline, 106, &h), NP_PP_MORE);
  assert_int_equal(np__pp_parse(longline, 107, &h), NP_ETOOBIG);
  /* not PROXY at all: said at the first byte that differs */
  assert_int_equal(np__pp_parse("GET / HTTP/1.1\r\n", 16, &h), NP_PP_NONE);
  assert_int_equal(np__pp_parse("PROX", 4, &h), NP_PP_MORE);
  assert_int_equal(np__pp_parse("PROXx", 5, &h), NP_PP_NONE);
  assert_int_equal(np__pp_parse("\r\n\r\n\0", 5, &h), NP_PP_MORE);
  assert_int_equal(np__pp_parse("\r\n\r\nx", 5, &h), NP_PP_NONE);
  assert_int_equal(np__pp_parse("SSH-2.0-OpenSSH\r\n", 17, &h), NP_PP_NONE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_v1),
      cmocka_unit_test(test_v2),
      cmocka_unit_test(test_v2_tlvs_and_bounds),
      cmocka_unit_test(test_broken_v1),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
