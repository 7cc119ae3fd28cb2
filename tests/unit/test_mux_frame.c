/* yamux framing: header round trips, the spec's rules, and a parser fed at every split point. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

#include "mux_frame.h"

static size_t put(unsigned char *out, uint8_t type, uint16_t flags, uint32_t stream, uint32_t len,
                  const char *body) {
  np__mux_hdr h = {NP_MUX_VERSION, type, flags, stream, len};
  np__mux_hdr_encode(&h, out);
  if (type == NP_MUX_DATA && body != NULL)
    memcpy(out + NP_MUX_HDR_LEN, body, len);
  return NP_MUX_HDR_LEN + (type == NP_MUX_DATA ? len : 0);
}

static void test_header(void **state) {
  unsigned char b[NP_MUX_HDR_LEN];
  np__mux_hdr h;
  (void)state;
  put(b, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN | NP_MUX_ACK, 0x01020304, 0xfffffffe, NULL);
  /* The spec's layout, big endian: version, type, flags, stream, length. */
  assert_memory_equal(b, "\x00\x01\x00\x03\x01\x02\x03\x04\xff\xff\xff\xfe", 12);
  assert_int_equal(np__mux_hdr_decode(b, &h), 0);
  assert_int_equal(h.type, NP_MUX_WINDOW_UPDATE);
  assert_int_equal(h.flags, NP_MUX_SYN | NP_MUX_ACK);
  assert_true(h.stream == 0x01020304 && h.length == 0xfffffffe);
  b[0] = 1; /* version 1 does not exist */
  assert_int_equal(np__mux_hdr_decode(b, &h), NP_EPROTO);
  put(b, 4, 0, 1, 0, NULL); /* unknown type */
  assert_int_equal(np__mux_hdr_decode(b, &h), NP_EPROTO);
  put(b, NP_MUX_PING, NP_MUX_SYN, 3, 7, NULL); /* ping off stream 0 */
  assert_int_equal(np__mux_hdr_decode(b, &h), NP_EPROTO);
  put(b, NP_MUX_DATA, 0, 0, 0, NULL); /* data on stream 0 */
  assert_int_equal(np__mux_hdr_decode(b, &h), NP_EPROTO);
  put(b, NP_MUX_GO_AWAY, 0, 0, NP_MUX_GOAWAY_PROTO, NULL);
  assert_int_equal(np__mux_hdr_decode(b, &h), 0);
  put(b, NP_MUX_DATA, 0x8000 | NP_MUX_FIN, 5, 0, NULL); /* unknown flag bits: ignored */
  assert_int_equal(np__mux_hdr_decode(b, &h), 0);
}

/* A stream of frames cut in two at every offset yields the same headers and the same data bytes. */
static void test_split_points(void **state) {
  unsigned char s[256];
  size_t len = 0;
  (void)state;
  len += put(s + len, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 1, 0, NULL);
  len += put(s + len, NP_MUX_DATA, 0, 1, 11, "hello world");
  len += put(s + len, NP_MUX_PING, NP_MUX_SYN, 0, 42, NULL);
  len += put(s + len, NP_MUX_DATA, NP_MUX_FIN, 3, 0, NULL);
  len += put(s + len, NP_MUX_DATA, 0, 2, 3, "abc");
  len += put(s + len, NP_MUX_GO_AWAY, 0, 0, 0, NULL);
  for (size_t cut = 0; cut <= len; cut++) {
    np__mux_parser p;
    size_t bounds[3] = {0, cut, len};
    char data[64];
    size_t got = 0;
    int frames = 0;
    np__mux_parser_init(&p, 1024);
    for (int part = 0; part < 2; part++) {
      size_t off = bounds[part];
      while (off < bounds[part + 1]) {
        np__mux_event ev;
        size_t used;
        int r = np__mux_parse(&p, (const char *)s + off, bounds[part + 1] - off, &used, &ev);
        assert_true(r == 0 || r == 1);
        off += used;
        if (r == 1 && ev.type == NP_MUX_EV_FRAME)
          frames++;
        if (r == 1 && ev.type == NP_MUX_EV_DATA) {
          assert_true(ev.hdr.stream == 1 || ev.hdr.stream == 2);
          memcpy(data + got, ev.data, ev.len);
          got += ev.len;
        }
      }
    }
    assert_int_equal(frames, 6);
    assert_int_equal(got, 14);
    assert_memory_equal(data, "hello worldabc", 14);
  }
}

static void test_bad_streams(void **state) {
  unsigned char s[64];
  np__mux_parser p;
  np__mux_event ev;
  size_t used;
  (void)state;
  /* A data frame longer than the receiver allows: refused before any byte of it is taken. */
  np__mux_parser_init(&p, 1000);
  put(s, NP_MUX_DATA, 0, 1, 1001, NULL);
  assert_int_equal(np__mux_parse(&p, (const char *)s, NP_MUX_HDR_LEN, &used, &ev), NP_ETOOBIG);
  assert_int_equal(np__mux_parse(&p, (const char *)s, 1, &used, &ev), NP_ETOOBIG); /* sticky */
  /* 2^32-1 bytes announced */
  np__mux_parser_init(&p, 1 << 20);
  put(s, NP_MUX_DATA, 0, 1, 0xffffffff, NULL);
  assert_int_equal(np__mux_parse(&p, (const char *)s, NP_MUX_HDR_LEN, &used, &ev), NP_ETOOBIG);
  /* garbage */
  np__mux_parser_init(&p, 1024);
  assert_int_equal(
      np__mux_parse(&p, "\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07\x07", 12, &used, &ev),
      NP_EPROTO);
  /* a truncated header is not an error */
  np__mux_parser_init(&p, 1024);
  assert_int_equal(np__mux_parse(&p, "\x00\x00\x00", 3, &used, &ev), 0);
  assert_int_equal(used, 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header),
      cmocka_unit_test(test_split_points),
      cmocka_unit_test(test_bad_streams),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
