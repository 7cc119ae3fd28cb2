/* Codecs: round trips, decoding at every split point, and malformed, truncated and oversized input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

static np_msg sample(np_msg_type t) {
  np_msg m;
  memset(&m, 0, sizeof(m));
  m.type = t;
  m.version = 1;
  m.port = 6553;
  m.status = NP_EPORTDENIED;
  m.kind = NP_PROXY_UDP;
  m.id = 0x0102030405060708ULL;
  m.id2 = UINT64_MAX;
  for (int i = 0; i < NP_MSG_KEY_LEN; i++) {
    m.nonce[i] = (unsigned char)i;
    m.mac[i] = (unsigned char)(255 - i);
  }
  strcpy(m.name, "web-1");
  strcpy(m.addr, "127.0.0.1");
  memset(m.text, 'x', NP_MSG_TEXT_MAX);
  return m;
}

/* The fields each type carries (docs/protocol.md); the rest must come back zeroed. */
static void assert_same(const np_msg *a, const np_msg *b) {
  assert_int_equal(a->type, b->type);
  switch (a->type) {
  case NP_MSG_HELLO:
    assert_int_equal(a->version, b->version);
    assert_memory_equal(a->nonce, b->nonce, NP_MSG_KEY_LEN);
    assert_int_equal(a->status, b->status);
    assert_true(a->id == b->id); /* the server's instance */
    break;
  case NP_MSG_LOGIN:
    assert_int_equal(a->version, b->version);
    assert_string_equal(a->name, b->name);
    assert_memory_equal(a->nonce, b->nonce, NP_MSG_KEY_LEN);
    assert_memory_equal(a->mac, b->mac, NP_MSG_KEY_LEN);
    break;
  case NP_MSG_LOGIN_RESP:
    assert_int_equal(a->status, b->status);
    assert_true(a->id == b->id);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_PROXY:
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->addr, b->addr);
    assert_int_equal(a->port, b->port);
    assert_string_equal(a->text, b->text);
    assert_int_equal(a->kind, b->kind);
    break;
  case NP_MSG_PROXY_RESP:
    assert_string_equal(a->name, b->name);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->port, b->port);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_REQ_WORK:
    assert_true(a->id == b->id);
    assert_string_equal(a->name, b->name);
    break;
  case NP_MSG_WORK:
    assert_true(a->id == b->id);
    assert_true(a->id2 == b->id2);
    assert_memory_equal(a->mac, b->mac, NP_MSG_KEY_LEN);
    break;
  case NP_MSG_WORK_FAIL:
    assert_true(a->id == b->id);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_PING:
    assert_true(a->id == b->id);
    assert_int_equal(a->status, b->status);
    break;
  case NP_MSG_PONG:
    assert_true(a->id == b->id);
    break;
  case NP_MSG_CLOSE:
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_PROXY_CLOSE:
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_PROXY_OPT:
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->addr, b->addr);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_WORK_IDLE:
    assert_true(a->id == b->id);
    assert_true(a->id2 == b->id2);
    assert_memory_equal(a->mac, b->mac, NP_MSG_KEY_LEN);
    break;
  case NP_MSG_START:
    assert_true(a->id == b->id);
    assert_string_equal(a->name, b->name);
    break;
  case NP_MSG_PEER:
    assert_int_equal(a->version, b->version);
    assert_string_equal(a->name, b->name);
    assert_memory_equal(a->nonce, b->nonce, NP_MSG_KEY_LEN);
    assert_memory_equal(a->mac, b->mac, NP_MSG_KEY_LEN);
    break;
  case NP_MSG_FORWARD:
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->port, b->port);
    assert_string_equal(a->text, b->text);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->addr, b->addr);
    assert_int_equal(a->status, b->status);
    break;
  case NP_MSG_DIRECT_INTRO:
    assert_string_equal(a->addr, b->addr);
    /* fall through: the rest as DIRECT's, but kind */
  case NP_MSG_DIRECT:
  case NP_MSG_VISIT:
    assert_true(a->id == b->id);
    assert_true(a->id2 == b->id2);
    if (a->type != NP_MSG_DIRECT_INTRO)
      assert_int_equal(a->kind, b->kind);
    assert_string_equal(a->name, b->name);
    assert_memory_equal(a->nonce, b->nonce, NP_MSG_KEY_LEN);
    assert_memory_equal(a->mac, b->mac, NP_MSG_KEY_LEN);
    assert_int_equal(a->status, b->status);
    assert_string_equal(a->text, b->text);
    break;
  case NP_MSG_MUX:
    assert_int_equal(a->version, b->version);
    break;
  }
}

static void test_native_round_trip(void **state) {
  const np_codec_ops *c = np_codec_native();
  (void)state;
  for (int t = NP_MSG_HELLO; t <= NP_MSG_LAST; t++) {
    np_msg in = sample((np_msg_type)t), out;
    char buf[NP_CODEC_MAX_ENCODED];
    size_t used;
    void *dec;
    int n = c->encode(&in, buf, sizeof(buf));
    assert_true(n > 4);
    assert_int_equal(c->decoder_new(4096, &dec), 0);
    assert_int_equal(c->decode(dec, buf, (size_t)n, &used, &out), 1);
    assert_int_equal(used, n);
    assert_same(&in, &out);
    c->decoder_free(dec);
  }
}

/* A stream of every message type, cut into two chunks at every offset, decodes to the same
 * messages. */
static void test_split_points(const np_codec_ops *c, const np_msg *msgs, int count) {
  char stream[16 * NP_CODEC_MAX_ENCODED];
  size_t len = 0;

  for (int i = 0; i < count; i++) {
    int n = c->encode(&msgs[i], stream + len, sizeof(stream) - len);
    assert_true(n > 0);
    len += (size_t)n;
  }
  for (size_t cut = 0; cut <= len; cut++) {
    size_t bounds[3] = {0, cut, len};
    int got = 0;
    void *dec;
    assert_int_equal(c->decoder_new(4096, &dec), 0);
    for (int part = 0; part < 2; part++) {
      size_t off = bounds[part];
      while (off < bounds[part + 1]) {
        np_msg out;
        size_t used;
        int r = c->decode(dec, stream + off, bounds[part + 1] - off, &used, &out);
        assert_true(r == 0 || r == 1);
        off += used;
        if (r == 1) {
          assert_true(got < count);
          assert_same(&msgs[got], &out);
          got++;
        } else {
          assert_int_equal(off, bounds[part + 1]);
        }
      }
    }
    assert_int_equal(got, count);
    c->decoder_free(dec);
  }
}

static void test_native_split(void **state) {
  np_msg msgs[NP_MSG_LAST];
  (void)state;
  for (int t = NP_MSG_HELLO; t <= NP_MSG_LAST; t++)
    msgs[t - 1] = sample((np_msg_type)t);
  test_split_points(np_codec_native(), msgs, NP_MSG_LAST);
}

static void test_line_split(void **state) {
  np_msg msgs[5];
  (void)state;
  for (int i = 0; i < 5; i++) {
    memset(&msgs[i], 0, sizeof(msgs[i]));
    msgs[i].type = i % 2 ? NP_MSG_PING : NP_MSG_REQ_WORK;
  }
  test_split_points(np_codec_line(), msgs, 5);
}

/* Feed raw bytes; return the first non-zero result. */
static int feed(const np_codec_ops *c, size_t max, const void *bytes, size_t len, np_msg *out) {
  size_t used;
  void *dec;
  int r;
  assert_int_equal(c->decoder_new(max, &dec), 0);
  r = c->decode(dec, bytes, len, &used, out);
  if (r < 0) {
    /* Errors stick. */
    assert_int_equal(c->decode(dec, "\0\0\0\1\11", 5, &used, out), r);
  }
  c->decoder_free(dec);
  return r;
}

static void test_native_malformed(void **state) {
  const np_codec_ops *c = np_codec_native();
  np_msg m;
  (void)state;
  /* length 2^32-1 */
  assert_int_equal(feed(c, 4096, "\xff\xff\xff\xff\x01", 5, &m), NP_ETOOBIG);
  /* just above the cap */
  assert_int_equal(feed(c, 64, "\x00\x00\x00\x41\x01", 5, &m), NP_ETOOBIG);
  /* zero length */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x00", 4, &m), NP_EPROTO);
  /* unknown types */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x01\x00", 5, &m), NP_EPROTO);
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x01\x63", 5, &m), NP_EPROTO);
  /* PING whose body is shorter than its u64 */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x04\x09\x00\x00\x00", 8, &m), NP_EPROTO);
  /* string length beyond the body */
  assert_int_equal(
      feed(c, 4096, "\x00\x00\x00\x0d\x06\x00\x00\x00\x00\x00\x00\x00\x01\x09\x61\x61\x61", 17, &m),
      NP_EPROTO);
  /* a NUL inside a string */
  assert_int_equal(
      feed(c, 4096, "\x00\x00\x00\x0c\x06\x00\x00\x00\x00\x00\x00\x00\x01\x02\x61\x00", 16, &m),
      NP_EPROTO);
  /* name longer than NP_MSG_NAME_MAX */
  {
    unsigned char b[4 + 1 + 8 + 1 + 65];
    memset(b, 'a', sizeof(b));
    memcpy(b, "\x00\x00\x00\x4b\x06\x00\x00\x00\x00\x00\x00\x00\x01\x41", 14);
    assert_int_equal(feed(c, 4096, b, sizeof(b), &m), NP_EPROTO);
  }
  /* truncated input is not an error, just incomplete */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x09\x09\x00\x00", 7, &m), 0);
  /* trailing fields from a newer minor version are ignored */
  assert_int_equal(feed(c, 4096,
                        "\x00\x00\x00\x0f\x09\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00\x02"
                        "\xaa\xbb",
                        19, &m),
                   1);
  assert_int_equal(m.type, NP_MSG_PING);
  assert_true(m.id == 7 && m.status == NP_UDP_PATH_DOWN);
  /* PING from before its status: none */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x09\x09\x00\x00\x00\x00\x00\x00\x00\x08", 13, &m),
                   1);
  assert_true(m.type == NP_MSG_PING && m.id == 8 && m.status == 0);
  /* ... and half a status is an error */
  assert_int_equal(
      feed(c, 4096, "\x00\x00\x00\x0b\x09\x00\x00\x00\x00\x00\x00\x00\x07\xaa\xbb", 15, &m),
      NP_EPROTO);
  /* PROXY from before allow_ips: name "a", addr "", port 80, no text */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x06\x04\x01\x61\x00\x00\x50", 10, &m), 1);
  assert_true(m.type == NP_MSG_PROXY && m.port == 80 && strcmp(m.name, "a") == 0 && m.text[0] == 0);
  /* ... but a field cut in half is still an error */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x07\x04\x01\x61\x00\x00\x50\x05", 11, &m),
                   NP_EPROTO);
  /* any kind passes: the server refuses the ones it has no type for (test_proxy_types.c) */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x08\x04\x01\x61\x00\x00\x50\x00\x07", 12, &m), 1);
  assert_int_equal(m.kind, 7);
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x08\x04\x01\x61\x00\x00\x50\x00\x01", 12, &m), 1);
  assert_int_equal(m.kind, NP_PROXY_UDP);
  /* and required fields stay required */
  assert_int_equal(feed(c, 4096, "\x00\x00\x00\x04\x04\x01\x61\x00", 8, &m), NP_EPROTO);
  {
    /* HELLO from a server before its instance id (version 1, a nonce, features 1): id 0 */
    char old_hello[4 + 39] = {0, 0, 0, 39, NP_MSG_HELLO, 0, 1};
    memset(old_hello + 7, 0xab, NP_MSG_KEY_LEN);
    old_hello[4 + 38] = 1;
    assert_int_equal(feed(c, 4096, old_hello, sizeof(old_hello), &m), 1);
    assert_true(m.type == NP_MSG_HELLO && m.status == 1 && m.id == 0 && m.nonce[31] == 0xab);
  }
}

/* A header alone, then its body whole, then a longer frame in pieces: the decoder must not keep
 * memory sized for the first frame and fill it with the second (found by fuzz_session). */
static void test_native_header_then_body(void **state) {
  const np_codec_ops *c = np_codec_native();
  np_msg small = sample(NP_MSG_PING), big = sample(NP_MSG_WORK_FAIL), out;
  char a[NP_CODEC_MAX_ENCODED], b[NP_CODEC_MAX_ENCODED];
  int na = c->encode(&small, a, sizeof(a)), nb = c->encode(&big, b, sizeof(b));
  size_t used;
  void *dec;
  (void)state;
  assert_int_equal(c->decoder_new(4096, &dec), 0);
  assert_int_equal(c->decode(dec, a, 4, &used, &out), 0);
  assert_int_equal(used, 4);
  assert_int_equal(c->decode(dec, a + 4, (size_t)na - 4, &used, &out), 1);
  assert_same(&small, &out);
  assert_int_equal(c->decode(dec, b, 7, &used, &out), 0);
  assert_int_equal(c->decode(dec, b + 7, (size_t)nb - 7, &used, &out), 1);
  assert_same(&big, &out);
  c->decoder_free(dec);
}

static void test_native_encode_errors(void **state) {
  const np_codec_ops *c = np_codec_native();
  np_msg m = sample(NP_MSG_PROXY);
  char buf[NP_CODEC_MAX_ENCODED];
  (void)state;
  assert_int_equal(c->encode(&m, buf, 10), NP_ETOOBIG);
  m.type = (np_msg_type)77;
  assert_int_equal(c->encode(&m, buf, sizeof(buf)), NP_EUNSUPPORTED);
  m = sample(NP_MSG_PROXY);
  memset(m.name, 'n', sizeof(m.name)); /* unterminated: longer than the maximum */
  assert_int_equal(c->encode(&m, buf, sizeof(buf)), NP_EPROTO);
}

static void test_line(void **state) {
  const np_codec_ops *c = np_codec_line();
  np_msg m;
  char buf[64];
  (void)state;
  assert_int_equal(feed(c, 4096, "KEEP_ALIVE\n", 11, &m), 1);
  assert_int_equal(m.type, NP_MSG_PING);
  assert_int_equal(feed(c, 4096, "NEW_CONNECTION\n", 15, &m), 1);
  assert_int_equal(m.type, NP_MSG_REQ_WORK);
  assert_int_equal(feed(c, 4096, "HELLO\n", 6, &m), NP_EPROTO);
  assert_int_equal(feed(c, 4096, "KEEP_ALIVE\r\n", 12, &m), NP_EPROTO);
  assert_int_equal(feed(c, 4096, "\n", 1, &m), NP_EPROTO);
  {
    char longline[200];
    memset(longline, 'A', sizeof(longline));
    assert_int_equal(feed(c, 4096, longline, sizeof(longline), &m), NP_ETOOBIG);
  }
  m.type = NP_MSG_PING;
  assert_int_equal(c->encode(&m, buf, sizeof(buf)), 11);
  assert_memory_equal(buf, "KEEP_ALIVE\n", 11);
  m.type = NP_MSG_REQ_WORK;
  assert_int_equal(c->encode(&m, buf, sizeof(buf)), 15);
  assert_memory_equal(buf, "NEW_CONNECTION\n", 15);
  m.type = NP_MSG_LOGIN;
  assert_int_equal(c->encode(&m, buf, sizeof(buf)), NP_EUNSUPPORTED);
  m.type = NP_MSG_PING;
  assert_int_equal(c->encode(&m, buf, 5), NP_ETOOBIG);
}

static void test_lookup(void **state) {
  (void)state;
  assert_ptr_equal(np_codec_find("native"), np_codec_native());
  assert_ptr_equal(np_codec_find("line"), np_codec_line());
  assert_null(np_codec_find("json"));
  assert_string_equal(np_msg_type_name(NP_MSG_WORK), "WORK");
  assert_string_equal(np_err_name(NP_EAUTH), "NP_EAUTH");
  assert_string_equal(np_err_name(UV_EADDRINUSE), "EADDRINUSE");
  assert_true(strstr(np_strerror(NP_EPORTDENIED), "allow-ports") != NULL);
  /* A status from the network that is nobody's code: named without libuv's leaking fallback. */
  assert_string_equal(np_strerror(-424242), "unknown error");
  assert_string_equal(np_err_name(-424242), "UNKNOWN");
  assert_string_equal(np_strerror(12345), "unknown error");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_native_round_trip),
      cmocka_unit_test(test_native_split),
      cmocka_unit_test(test_line_split),
      cmocka_unit_test(test_native_malformed),
      cmocka_unit_test(test_native_header_then_body),
      cmocka_unit_test(test_native_encode_errors),
      cmocka_unit_test(test_line),
      cmocka_unit_test(test_lookup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
