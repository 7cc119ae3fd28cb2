/* The SNI reader (lib/tls_sni.c) on real ClientHellos from OpenSSL (TLS 1.3 and 1.2-only, with and
 * without a name), cut at every byte and re-framed into several records, and on hand-built ones
 * for what OpenSSL never sends: several names, a name extension twice, bad names, lengths that do
 * not add up, too many records, messages too big, and bytes that are not TLS at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/ssl.h>

#include "natproxy/error.h"
#include "tls_sni.h"

typedef struct msg {
  unsigned char b[NP_SNI_MAX_INPUT + 2048];
  size_t n;
} msg;

static void put(msg *m, const void *p, size_t n) {
  assert_true(m->n + n <= sizeof(m->b));
  memcpy(m->b + m->n, p, n);
  m->n += n;
}

static void put_be(msg *m, uint64_t v, int n) {
  unsigned char b[8];
  for (int i = n - 1; i >= 0; i--, v >>= 8)
    b[i] = (unsigned char)v;
  put(m, b, (size_t)n);
}

/* Start a vector with an n-byte length; end_vec fills the length in. */
static size_t begin_vec(msg *m, int n) {
  put_be(m, 0, n);
  return m->n;
}

static void end_vec(msg *m, size_t start, int n) {
  size_t len = m->n - start;
  for (int i = 0; i < n; i++)
    m->b[start - 1 - (size_t)i] = (unsigned char)(len >> (8 * i));
}

/* A ClientHello from OpenSSL (one record, as OpenSSL sends it), with sni as the host name unless
 * NULL, at most max_version. */
static void openssl_hello(const char *sni, int max_version, msg *out) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  SSL *ssl;
  BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
  int n;

  assert_non_null(ctx);
  assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
  assert_non_null(ssl = SSL_new(ctx));
  SSL_set_bio(ssl, rbio, wbio);
  if (sni != NULL)
    assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
  assert_int_equal(SSL_connect(ssl), -1);
  assert_int_equal(SSL_get_error(ssl, -1), SSL_ERROR_WANT_READ);
  n = BIO_read(wbio, out->b, (int)sizeof(out->b));
  assert_true(n > 0);
  out->n = (size_t)n;
  SSL_free(ssl);
  SSL_CTX_free(ctx);
}

/* The handshake bytes of a record stream (headers dropped). */
static void unframe(const msg *recs, msg *hs) {
  hs->n = 0;
  for (size_t off = 0; off < recs->n;) {
    size_t len = (size_t)recs->b[off + 3] << 8 | recs->b[off + 4];
    assert_int_equal(recs->b[off], 0x16);
    put(hs, recs->b + off + 5, len);
    off += 5 + len;
  }
}

/* Handshake bytes re-framed into parts records of about equal size; the record at odd_at (if
 * below parts) gets content type odd_type instead of handshake. */
static void frame(const msg *hs, size_t parts, size_t odd_at, int odd_type, msg *out) {
  out->n = 0;
  for (size_t i = 0, off = 0; i < parts; i++) {
    size_t len = i + 1 == parts ? hs->n - off : hs->n / parts;
    put_be(out, i == odd_at ? (uint64_t)odd_type : 0x16, 1);
    put_be(out, 0x0301, 2);
    put_be(out, len, 2);
    put(out, hs->b + off, len);
    off += len;
  }
}

/* A minimal ClientHello with the extensions block exts (none at all when NULL), framed as one
 * record. */
static void hand_hello(const msg *exts, msg *out) {
  msg body = {.n = 0};
  size_t at;
  static const unsigned char rnd[32] = {1, 2, 3};
  put_be(&body, 0x0303, 2);
  put(&body, rnd, sizeof(rnd));
  put_be(&body, 0, 1);      /* session id */
  put_be(&body, 2, 2);      /* cipher suites */
  put_be(&body, 0x1301, 2); /* TLS_AES_128_GCM_SHA256 */
  put_be(&body, 0x0100, 2); /* one compression method: null */
  if (exts != NULL) {
    at = begin_vec(&body, 2);
    put(&body, exts->b, exts->n);
    end_vec(&body, at, 2);
  }
  out->n = 0;
  put_be(out, 0x16030100, 4);
  put_be(out, 0, 1); /* record length below */
  put_be(out, 1, 1);
  put_be(out, body.n, 3);
  put(out, body.b, body.n);
  out->b[3] = (unsigned char)((out->n - 5) >> 8);
  out->b[4] = (unsigned char)(out->n - 5);
}

/* A server_name extension of entries (type, name) given as pairs; names may hold any bytes. */
static void sni_ext(msg *exts, size_t n, const int *types, const char *const *names,
                    const size_t *lens) {
  size_t ext, list, host;
  put_be(exts, 0, 2);
  ext = begin_vec(exts, 2);
  list = begin_vec(exts, 2);
  for (size_t i = 0; i < n; i++) {
    put_be(exts, (uint64_t)types[i], 1);
    host = begin_vec(exts, 2);
    put(exts, names[i], lens != NULL ? lens[i] : strlen(names[i]));
    end_vec(exts, host, 2);
  }
  end_vec(exts, list, 2);
  end_vec(exts, ext, 2);
}

static void other_ext(msg *exts, int type, size_t len) {
  put_be(exts, (uint64_t)type, 2);
  put_be(exts, len, 2);
  for (size_t i = 0; i < len; i++)
    put_be(exts, i, 1);
}

/* Feed m in pieces of step bytes; every piece before the last must leave the reader wanting more
 * (when whole) and the result must stick. Returns the result. */
static int feed(np__sni_reader *r, const msg *m, size_t step, int whole) {
  int res = NP_SNI_MORE;
  size_t off;
  for (off = 0; off < m->n && res == NP_SNI_MORE; off += step) {
    size_t len = m->n - off < step ? m->n - off : step;
    res = np__sni_feed(r, (const char *)m->b + off, len);
  }
  if (whole)
    assert_true(off >= m->n); /* the result came with the last piece, not before */
  if (res != NP_SNI_MORE)
    assert_int_equal(np__sni_feed(r, "\x16\x03\x01", 3), res); /* sticky */
  return res;
}

/* The result of m fed whole, one byte at a time and in 7-byte pieces; the name if any. */
static int read_sni(const msg *m, char *name) {
  static const size_t steps[] = {SIZE_MAX, 1, 7};
  int first = 0;
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    np__sni_reader r;
    int res;
    np__sni_init(&r);
    res = feed(&r, m, steps[i] > m->n ? m->n : steps[i], 0);
    if (i == 0)
      first = res;
    assert_int_equal(res, first);
    if (res == NP_SNI_FOUND) {
      assert_true(strlen(np__sni_name(&r)) <= NP_SNI_NAME_MAX);
      if (name != NULL)
        strcpy(name, np__sni_name(&r));
    } else {
      assert_null(np__sni_name(&r));
    }
    assert_null(r.msg); /* nothing held once there is a result */
    np__sni_free(&r);
  }
  return first;
}

static void test_openssl(void **state) {
  static const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};
  (void)state;
  for (size_t v = 0; v < 2; v++) {
    msg *hello = malloc(sizeof(*hello)), *hs = malloc(sizeof(*hs)), *re = malloc(sizeof(*re));
    char name[NP_SNI_NAME_MAX + 1];

    openssl_hello("Example.COM.", versions[v], hello);
    assert_int_equal(read_sni(hello, name), NP_SNI_FOUND);
    assert_string_equal(name, "example.com");
    for (size_t step = 1; step < 4; step++) { /* the result comes with the message's last byte */
      np__sni_reader r;
      np__sni_init(&r);
      assert_int_equal(feed(&r, hello, step, 1), NP_SNI_FOUND);
      np__sni_free(&r);
    }
    /* The same message over two records, then over the most records taken, then one more. */
    unframe(hello, hs);
    for (size_t parts = 2; parts <= NP_SNI_MAX_RECORDS; parts++) {
      frame(hs, parts, SIZE_MAX, 0, re);
      name[0] = '\0';
      assert_int_equal(read_sni(re, name), NP_SNI_FOUND);
      assert_string_equal(name, "example.com");
    }
    frame(hs, NP_SNI_MAX_RECORDS + 1, SIZE_MAX, 0, re);
    assert_int_equal(read_sni(re, NULL), NP_ETOOBIG);
    /* Only handshake records before the message is complete. */
    frame(hs, 3, 1, 0x15, re);
    assert_int_equal(read_sni(re, NULL), NP_EPROTO);
    /* Bytes after the message (early data, anything) are never looked at. */
    frame(hs, 1, SIZE_MAX, 0, re);
    put(re, "\x17\x03\x03\x00\x01x", 6);
    put(re, "GET / HTTP/1.1\r\n", 16);
    assert_int_equal(read_sni(re, name), NP_SNI_FOUND);

    openssl_hello(NULL, versions[v], hello);
    assert_int_equal(read_sni(hello, NULL), NP_SNI_NONE);
    free(hello);
    free(hs);
    free(re);
  }
}

static void test_not_tls(void **state) {
  static const char *const inputs[] = {
      "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
      "\x80\x2e\x01\x03\x01\x00\x15", /* an SSLv2-compatible hello */
      "\x15\x03\x01\x00\x02\x02\x28", /* an alert */
      "\x16\x02\x00",                 /* version major 2 */
      "\x16\x30\x01",
      "SSH-2.0-OpenSSH_9.2\r\n",
  };
  (void)state;
  for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
    np__sni_reader r;
    np__sni_init(&r);
    assert_int_equal(np__sni_feed(&r, "", 0), NP_SNI_MORE);
    assert_int_equal(np__sni_feed(&r, inputs[i], strlen(inputs[i])), NP_ENOTLS);
    assert_int_equal(np__sni_feed(&r, "\x16\x03\x01", 3), NP_ENOTLS); /* sticky */
    assert_null(np__sni_name(&r));
    np__sni_free(&r);
  }
}

/* Set the record's and the handshake message's lengths of a one-record message. */
static void set_lengths(msg *m, size_t rec, size_t hs) {
  m->b[3] = (unsigned char)(rec >> 8);
  m->b[4] = (unsigned char)rec;
  m->b[6] = (unsigned char)(hs >> 16);
  m->b[7] = (unsigned char)(hs >> 8);
  m->b[8] = (unsigned char)hs;
}

static void test_lengths(void **state) {
  msg *hello = malloc(sizeof(*hello)), *m = malloc(sizeof(*m));
  np__sni_reader r;
  size_t len;
  (void)state;

  openssl_hello("example.com", TLS1_3_VERSION, hello);
  len = hello->n;
  /* Every prefix wants more. */
  for (size_t cut = 0; cut < len; cut++) {
    np__sni_init(&r);
    assert_int_equal(np__sni_feed(&r, (const char *)hello->b, cut), NP_SNI_MORE);
    np__sni_free(&r);
  }
  /* A message that claims 10 bytes less than its fields use: malformed when it is complete. */
  *m = *hello;
  set_lengths(m, len - 5 - 10, len - 9 - 10);
  np__sni_init(&r);
  assert_int_equal(np__sni_feed(&r, (const char *)m->b, len - 11), NP_SNI_MORE);
  assert_int_equal(np__sni_feed(&r, (const char *)m->b + len - 11, 1), NP_EPROTO);
  np__sni_free(&r);
  /* ... and one that claims more than its record holds waits for the next record. */
  *m = *hello;
  set_lengths(m, len - 5, len - 9 + 10);
  np__sni_init(&r);
  assert_int_equal(np__sni_feed(&r, (const char *)m->b, len), NP_SNI_MORE);
  assert_int_equal(np__sni_feed(&r, "\x16\x03\x03\x00\x0a", 5), NP_SNI_MORE);
  assert_int_equal(np__sni_feed(&r, "\0\0\0\0\0\0\0\0\0\0", 10), NP_EPROTO);
  np__sni_free(&r);
  /* Too big: claimed at once from the header; the largest taken is waited for. */
  for (size_t claim = NP_SNI_MAX; claim <= 0xffffff; claim = claim * 2 + 1) {
    *m = *hello;
    set_lengths(m, len - 5, claim);
    np__sni_init(&r);
    assert_int_equal(np__sni_feed(&r, (const char *)m->b, 9),
                     claim > NP_SNI_MAX ? NP_ETOOBIG : NP_SNI_MORE);
    np__sni_free(&r);
  }
  /* An empty and an over-long record; another handshake type; a body too short to be one. */
#define BAD(s)                                                                                     \
  { s, sizeof(s) - 1 }
  static const struct {
    const char *b;
    size_t n;
  } bad[] = {BAD("\x16\x03\x01\x00\x00"), BAD("\x16\x03\x01\x40\x01"),
             BAD("\x16\x03\x01\x00\x04\x02"), BAD("\x16\x03\x01\x00\x04\x01\x00\x00\x28")};
#undef BAD
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    np__sni_init(&r);
    assert_int_equal(np__sni_feed(&r, bad[i].b, bad[i].n), NP_EPROTO);
    np__sni_free(&r);
  }
  /* A record of another version in the middle of the message. */
  set_lengths(m, 20, len - 9);
  np__sni_init(&r);
  assert_int_equal(np__sni_feed(&r, (const char *)m->b, 25), NP_SNI_MORE);
  assert_int_equal(np__sni_feed(&r, "\x16\x04", 2), NP_EPROTO);
  np__sni_free(&r);
  /* The most bytes before a result: the largest message not complete after the most records. */
  m->n = 0;
  put_be(m, 0x01000000 | NP_SNI_MAX, 4);
  for (size_t i = 4; i < NP_SNI_MAX; i++)
    put_be(m, 0, 1);
  frame(m, NP_SNI_MAX_RECORDS, SIZE_MAX, 0, hello);
  np__sni_init(&r);
  assert_int_equal(np__sni_feed(&r, (const char *)hello->b, hello->n), NP_SNI_MORE);
  assert_int_equal(np__sni_feed(&r, "\x16", 1), NP_ETOOBIG);
  assert_true(hello->n + 1 <= NP_SNI_MAX_INPUT);
  np__sni_free(&r);
  free(hello);
  free(m);
}

/* The result of a hand-built hello with one server_name extension of n entries, and its name. */
static int hand(size_t n, const int *types, const char *const *names, const size_t *lens,
                char *name) {
  msg *exts = malloc(sizeof(*exts)), *m = malloc(sizeof(*m));
  int res;
  exts->n = 0;
  other_ext(exts, 10, 4);
  sni_ext(exts, n, types, names, lens);
  other_ext(exts, 43, 3);
  hand_hello(exts, m);
  res = read_sni(m, name);
  free(exts);
  free(m);
  return res;
}

static void test_names(void **state) {
  static const int host[] = {0, 0};
  char name[NP_SNI_NAME_MAX + 1], big[320];
  static const char *const bad[] = {"a b.com", "a..b",           ".a",     "..",   ".",
                                    "a_b.com", "caf\xc3\xa9.fr", "a.com/", "a:443"};
  (void)state;

  /* Two host_names: the first, as OpenSSL takes it. */
  assert_int_equal(hand(2, host, (const char *const[]){"One.example", "two.example"}, NULL, name),
                   NP_SNI_FOUND);
  assert_string_equal(name, "one.example");
  /* Other name types are stepped over; only they: no name. */
  assert_int_equal(
      hand(2, (const int[]){7, 0}, (const char *const[]){"\x01\x02", "x-1.EXAMPLE"}, NULL, name),
      NP_SNI_FOUND);
  assert_string_equal(name, "x-1.example");
  assert_int_equal(hand(1, (const int[]){1}, (const char *const[]){"x"}, NULL, NULL), NP_SNI_NONE);

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(hand(1, host, &bad[i], NULL, NULL), NP_EPROTO);
  assert_int_equal(hand(1, host, (const char *const[]){""}, NULL, NULL), NP_EPROTO);
  assert_int_equal(hand(1, host, (const char *const[]){"a\0b"}, (const size_t[]){3}, NULL),
                   NP_EPROTO);
  /* A bad first name is malformed, a bad later one is not looked at. */
  assert_int_equal(hand(2, host, (const char *const[]){"ok", "n o"}, NULL, name), NP_SNI_FOUND);

  /* Lengths: 253 with or without the dot, labels of 63; one more of each is refused. */
  memset(big, 'a', sizeof(big));
  for (size_t i = 63; i < sizeof(big); i += 64)
    big[i] = '.';
  big[253] = '\0';
  assert_int_equal(hand(1, host, (const char *const[]){big}, NULL, name), NP_SNI_FOUND);
  assert_string_equal(name, big);
  big[253] = '.';
  big[254] = '\0';
  assert_int_equal(hand(1, host, (const char *const[]){big}, NULL, name), NP_SNI_FOUND);
  big[253] = 'a';
  assert_int_equal(hand(1, host, (const char *const[]){big}, NULL, NULL), NP_EPROTO);
  memset(big, 'a', sizeof(big));
  big[300] = '\0';
  assert_int_equal(hand(1, host, (const char *const[]){big}, NULL, NULL), NP_EPROTO);
  big[63] = '\0';
  assert_int_equal(hand(1, host, (const char *const[]){big}, NULL, NULL), NP_SNI_FOUND);
  big[63] = 'a';
  big[64] = '\0';
  assert_int_equal(hand(1, host, (const char *const[]){big}, NULL, NULL), NP_EPROTO);
}

/* One hand-built hello from its body's fields after the random, as raw bytes. */
static int fields(const char *after_random, size_t n) {
  msg *m = malloc(sizeof(*m));
  int res;
  m->n = 0;
  put(m, "\x16\x03\x01\x00\x00\x01\x00\x00\x00\x03\x03", 11);
  for (int i = 0; i < 32; i++)
    put_be(m, 0, 1);
  put(m, after_random, n);
  m->b[3] = (unsigned char)((m->n - 5) >> 8);
  m->b[4] = (unsigned char)(m->n - 5);
  m->b[7] = (unsigned char)((m->n - 9) >> 8);
  m->b[8] = (unsigned char)(m->n - 9);
  res = read_sni(m, NULL);
  free(m);
  return res;
}

#define FIELDS(s) fields(s, sizeof(s) - 1)

/* The result of a minimal hello whose extensions block is the n bytes exts. */
static int ext_block(const char *exts, size_t n) {
  char f[64] = "\x00\x00\x02\x13\x01\x01\x00";
  assert_true(n + 9 <= sizeof(f));
  f[7] = (char)(n >> 8);
  f[8] = (char)n;
  memcpy(f + 9, exts, n);
  return fields(f, n + 9);
}

#define EXTS(s) ext_block(s, sizeof(s) - 1)

static void test_structure(void **state) {
  msg exts = {.n = 0}, *m = malloc(sizeof(*m));
  char sid[80];
  (void)state;

  /* No extensions at all (TLS 1.2 allows it), an empty block, a block without server_name. */
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00"), NP_SNI_NONE);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00\x00\x00"), NP_SNI_NONE);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00\x00\x04\x00\x0a\x00\x00"), NP_SNI_NONE);
  /* A session id of 32, then of 33. */
  memcpy(sid, "\x20", 1);
  memset(sid + 1, 7, 32);
  memcpy(sid + 33, "\x00\x02\x13\x01\x01\x00", 6);
  assert_int_equal(fields(sid, 39), NP_SNI_NONE);
  sid[0] = 0x21;
  memcpy(sid + 34, "\x00\x02\x13\x01\x01\x00", 6);
  assert_int_equal(fields(sid, 40), NP_EPROTO);
  /* Odd or no cipher suites, no compression method, a byte after the extensions, an extension
   * longer than the block, a block longer than the message, a legacy_version 2.x. */
  assert_int_equal(FIELDS("\x00\x00\x03\x13\x01\x13\x01\x00"), NP_EPROTO);
  assert_int_equal(FIELDS("\x00\x00\x00\x01\x00\x00\x00\x00\x00"), NP_EPROTO);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x00\x00\x00"), NP_EPROTO);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00\x00\x00\x00"), NP_EPROTO);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00\x00\x04\x00\x0a\x00\x01"), NP_EPROTO);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00\x00\x05\x00\x0a\x00\x00"), NP_EPROTO);
  assert_int_equal(FIELDS("\x00\x00\x02\x13\x01\x01\x00\x00\x01\x00"), NP_EPROTO);
  m->n = 0;
  hand_hello(NULL, m);
  m->b[9] = 2;
  assert_int_equal(read_sni(m, NULL), NP_EPROTO);

  /* server_name twice, even with the same name. */
  sni_ext(&exts, 1, (const int[]){0}, (const char *const[]){"a.example"}, NULL);
  sni_ext(&exts, 1, (const int[]){0}, (const char *const[]){"a.example"}, NULL);
  hand_hello(&exts, m);
  assert_int_equal(read_sni(m, NULL), NP_EPROTO);
  /* An empty server_name extension (a server's answer), an empty list, a list shorter or longer
   * than its extension, a host name longer than its list, half an entry after one. */
  assert_int_equal(EXTS("\x00\x00\x00\x00"), NP_EPROTO);
  assert_int_equal(EXTS("\x00\x00\x00\x02\x00\x00"), NP_EPROTO);
  assert_int_equal(EXTS("\x00\x00\x00\x07\x00\x04\x00\x00\x01x\x00"), NP_EPROTO);
  assert_int_equal(EXTS("\x00\x00\x00\x06\x00\x05\x00\x00\x01x"), NP_EPROTO);
  assert_int_equal(EXTS("\x00\x00\x00\x06\x00\x04\x00\x00\x02x"), NP_EPROTO);
  assert_int_equal(EXTS("\x00\x00\x00\x07\x00\x05\x00\x00\x01x\x00"), NP_EPROTO);
  assert_int_equal(EXTS("\x00\x00\x00\x06\x00\x04\x00\x00\x01X"), NP_SNI_FOUND);
  free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_openssl),   cmocka_unit_test(test_not_tls),
      cmocka_unit_test(test_lengths),   cmocka_unit_test(test_names),
      cmocka_unit_test(test_structure),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
