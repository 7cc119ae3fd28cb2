/* HTTP request heads: the same result however the bytes are cut, nothing after the empty line
 * taken, bounds and Host checks with their own errors, and the forwarded head byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "http_head.h"
#include "natproxy/error.h"

#define S(lit) lit, sizeof(lit) - 1

static const char get[] = "GET /index.html?q=1 HTTP/1.1\r\n"
                          "Host: example.com\r\n"
                          "User-Agent: t/1\r\n"
                          "Accept: */*\r\n"
                          "\r\n";

/* Feed s in pieces of step bytes until the head is done or refused; *used sums what was taken. */
static int feed_by(np__http_head *h, const char *s, size_t len, size_t step, size_t *used) {
  size_t off = 0;
  int r = NP_HTTP_MORE;
  *used = 0;
  while (off < len) {
    size_t n = len - off < step ? len - off : step, u;
    r = np__http_head_feed(h, s + off, n, &u);
    assert_true(u <= n);
    *used += u;
    off += n;
    if (r != NP_HTTP_MORE)
      break;
    assert_int_equal(u, n); /* "more" takes everything */
  }
  return r;
}

static int feed(np__http_head *h, const char *s, size_t len) {
  size_t used;
  return feed_by(h, s, len, len, &used);
}

static void assert_span(np__http_span s, const char *want) {
  assert_non_null(s.p);
  assert_int_equal(s.len, strlen(want));
  assert_memory_equal(s.p, want, s.len);
}

static void check_get(const np__http_head *h) {
  np__http_span name, value;
  assert_int_equal(np__http_head_len(h), sizeof(get) - 1);
  assert_memory_equal(np__http_head_bytes(h), get, sizeof(get) - 1);
  assert_string_equal(np__http_head_method(h), "GET");
  assert_span(np__http_head_target(h), "/index.html?q=1");
  assert_int_equal(np__http_head_minor(h), 1);
  assert_span(np__http_head_host(h), "example.com");
  assert_true(np__http_head_keep_alive(h));
  assert_false(np__http_head_upgrade(h));
  assert_int_equal(np__http_head_content_length(h), NP_HTTP_NO_LENGTH);
  assert_false(np__http_head_chunked(h));
  assert_int_equal(np__http_head_nfields(h), 3);
  np__http_head_field(h, 1, &name, &value);
  assert_span(name, "User-Agent");
  assert_span(value, "t/1");
  np__http_head_field(h, 2, &name, &value);
  assert_span(name, "Accept");
  assert_span(value, "*/*");
  assert_true(np__http_head_find(h, "user-agent", &value));
  assert_span(value, "t/1");
  assert_false(np__http_head_find(h, "cookie", &value));
}

static void test_get(void **state) {
  np__http_head h;
  size_t used;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(np__http_head_feed(&h, get, 0, &used), NP_HTTP_MORE); /* not the stream's end */
  assert_int_equal(used, 0);
  assert_int_equal(feed_by(&h, get, sizeof(get) - 1, 1 << 20, &used), NP_HTTP_DONE);
  assert_int_equal(used, sizeof(get) - 1);
  check_get(&h);
  np__http_head_free(&h);
}

/* One byte at a time, and cut in two at every offset: the same head. */
static void test_cuts(void **state) {
  np__http_head h;
  size_t used, len = sizeof(get) - 1;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(feed_by(&h, get, len, 1, &used), NP_HTTP_DONE);
  assert_int_equal(used, len);
  check_get(&h);
  np__http_head_free(&h);
  for (size_t cut = 1; cut < len; cut++) {
    size_t u1, u2;
    np__http_head_init(&h);
    assert_int_equal(np__http_head_feed(&h, get, cut, &u1), NP_HTTP_MORE);
    assert_int_equal(np__http_head_feed(&h, get + cut, len - cut, &u2), NP_HTTP_DONE);
    assert_int_equal(u1 + u2, len);
    check_get(&h);
    np__http_head_free(&h);
  }
}

/* Names and values that arrive in pieces (http_parser reports each piece). */
static void test_split_fields(void **state) {
  static const char *parts[] = {"GET / HTTP/1.1\r\nHo",  "st: exa",
                                "mple.com\r\nX-Long-Na", "me: va",
                                "lue  \r\nE:",           "\r\n\r\n"};
  np__http_head h;
  np__http_span v;
  int r = NP_HTTP_MORE;
  (void)state;
  np__http_head_init(&h);
  for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
    size_t used;
    r = np__http_head_feed(&h, parts[i], strlen(parts[i]), &used);
    assert_int_equal(used, strlen(parts[i]));
  }
  assert_int_equal(r, NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), "example.com");
  assert_true(np__http_head_find(&h, "x-long-name", &v));
  assert_span(v, "value"); /* without the whitespace after it */
  assert_true(np__http_head_find(&h, "E", &v));
  assert_int_equal(v.len, 0);
  np__http_head_free(&h);
}

static void test_body_not_taken(void **state) {
  static const char req[] = "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  np__http_head h;
  size_t used;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(np__http_head_feed(&h, S(req), &used), NP_HTTP_DONE);
  assert_int_equal(used, sizeof(req) - 1 - 5);
  assert_int_equal(np__http_head_len(&h), used);
  assert_int_equal(np__http_head_content_length(&h), 5);
  assert_string_equal(np__http_head_method(&h), "POST");
  /* Done says so again and takes nothing. */
  assert_int_equal(np__http_head_feed(&h, S("hello"), &used), NP_HTTP_DONE);
  assert_int_equal(used, 0);
  np__http_head_free(&h);
  /* Byte by byte: the body's first byte is not taken either. */
  np__http_head_init(&h);
  assert_int_equal(feed_by(&h, S(req), 1, &used), NP_HTTP_DONE);
  assert_int_equal(used, sizeof(req) - 1 - 5);
  np__http_head_free(&h);
  np__http_head_init(&h);
  assert_int_equal(feed(&h, S("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_true(np__http_head_chunked(&h));
  assert_int_equal(np__http_head_content_length(&h), NP_HTTP_NO_LENGTH);
  np__http_head_free(&h);
}

static void test_pipelined(void **state) {
  static const char two[] = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
                            "GET /2 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n";
  np__http_head h;
  size_t used, first;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(np__http_head_feed(&h, S(two), &first), NP_HTTP_DONE);
  assert_span(np__http_head_target(&h), "/1");
  assert_true(np__http_head_keep_alive(&h));
  np__http_head_reset(&h);
  assert_null(h.buf); /* an idle connection holds no copy */
  assert_int_equal(np__http_head_feed(&h, two + first, sizeof(two) - 1 - first, &used),
                   NP_HTTP_DONE);
  assert_int_equal(first + used, sizeof(two) - 1);
  assert_span(np__http_head_target(&h), "/2");
  assert_span(np__http_head_host(&h), "b.example");
  assert_false(np__http_head_keep_alive(&h));
  np__http_head_free(&h);
}

static void test_http10(void **state) {
  np__http_head h;
  size_t used;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.0\r\n\r\n")), NP_HTTP_DONE);
  assert_int_equal(np__http_head_minor(&h), 0);
  assert_null(np__http_head_host(&h).p);
  assert_int_equal(np__http_head_host(&h).len, 0);
  assert_false(np__http_head_keep_alive(&h));
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")), NP_HTTP_DONE);
  assert_true(np__http_head_keep_alive(&h));
  np__http_head_reset(&h);
  /* HTTP/1.1 must send Host; the error sticks. */
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n")), NP_EHOST);
  assert_int_equal(np__http_head_feed(&h, S("GET / HTTP/1.1\r\n"), &used), NP_EHOST);
  assert_int_equal(used, 0);
  np__http_head_free(&h);
}

static int host_result(const char *host, np__http_head *h) {
  char req[1024];
  int n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host);
  np__http_head_reset(h);
  return feed(h, req, (size_t)n);
}

static void test_hosts(void **state) {
  char label63[64], name253[254], long_label[65], name254[255];
  np__http_head h;
  const char *bad[] = {"exa mple.com",
                       "a..b",
                       ".a",
                       "[::1]:80",
                       "a:b:80",
                       "a b",
                       "",
                       ".",
                       "a.com..",
                       "a.com:123456",
                       "a.com:65536",
                       "a.c:x",
                       "\xc3\xbc.com",
                       "a/b",
                       "a.com:8 0"};
  (void)state;
  memset(label63, 'a', 63);
  label63[63] = '\0';
  memset(long_label, 'a', 64);
  long_label[64] = '\0';
  /* 253 = 63 + 1 + 63 + 1 + 63 + 1 + 61 */
  snprintf(name253, sizeof(name253), "%s.%s.%s.%.61s", label63, label63, label63, label63);
  snprintf(name254, sizeof(name254), "%s.%s.%s.%.62s", label63, label63, label63, label63);
  assert_int_equal(strlen(name253), 253);
  np__http_head_init(&h);

  assert_int_equal(host_result("WWW.Example.COM.:8080", &h), NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), "www.example.com");
  assert_int_equal(host_result("a.com:", &h), NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), "a.com");
  assert_int_equal(host_result("localhost:65535", &h), NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), "localhost");
  assert_int_equal(host_result("192.0.2.1:80", &h), NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), "192.0.2.1");
  assert_int_equal(host_result("x-1.b", &h), NP_HTTP_DONE);
  /* '_': no DNS host name's, but service names have it and browsers send it */
  assert_int_equal(host_result("My_Service.local", &h), NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), "my_service.local");
  assert_int_equal(host_result(label63, &h), NP_HTTP_DONE);
  assert_int_equal(host_result(name253, &h), NP_HTTP_DONE);
  assert_span(np__http_head_host(&h), name253);
  assert_int_equal(host_result(long_label, &h), NP_EHOST);
  assert_int_equal(host_result(name254, &h), NP_EHOST);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    if (host_result(bad[i], &h) != NP_EHOST)
      fail_msg("Host '%s' was taken", bad[i]);

  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n")), NP_EHOST);
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n")), NP_EHOST);
  np__http_head_free(&h);
}

/* A head of `size` bytes: a Host and one long field. */
static char *head_of_size(size_t size) {
  static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  char *s = malloc(size + 16);
  size_t pad = size - (sizeof(pre) - 1) - 4;
  memcpy(s, pre, sizeof(pre) - 1);
  memset(s + sizeof(pre) - 1, 'v', pad);
  memcpy(s + sizeof(pre) - 1 + pad, "\r\n\r\nBODY", 8);
  return s;
}

static void test_too_big(void **state) {
  np__http_head h;
  size_t used;
  char *s, fields[4096];
  int n;
  (void)state;
  np__http_head_init(&h);
  s = head_of_size(NP_HTTP_HEAD_MAX);
  assert_int_equal(np__http_head_feed(&h, s, NP_HTTP_HEAD_MAX + 4, &used), NP_HTTP_DONE);
  assert_int_equal(used, NP_HTTP_HEAD_MAX);
  np__http_head_reset(&h);
  assert_int_equal(feed_by(&h, s, NP_HTTP_HEAD_MAX + 4, 1000, &used), NP_HTTP_DONE);
  assert_int_equal(used, NP_HTTP_HEAD_MAX);
  assert_int_equal(h.cap, NP_HTTP_HEAD_MAX);
  free(s);
  np__http_head_reset(&h);
  s = head_of_size(NP_HTTP_HEAD_MAX + 1);
  assert_int_equal(np__http_head_feed(&h, s, NP_HTTP_HEAD_MAX + 1, &used), NP_ETOOBIG);
  assert_int_equal(used, 0);
  np__http_head_reset(&h);
  assert_int_equal(feed_by(&h, s, NP_HTTP_HEAD_MAX + 1, 1, &used), NP_ETOOBIG);
  assert_int_equal(used, NP_HTTP_HEAD_MAX - 1); /* the byte that filled it was refused */
  assert_int_equal(np__http_head_feed(&h, "\n", 1, &used), NP_ETOOBIG);
  free(s);

  /* 100 fields are fine, 101 are not. */
  n = snprintf(fields, sizeof(fields), "GET / HTTP/1.1\r\nHost: a\r\n");
  for (int i = 1; i < NP_HTTP_FIELDS_MAX; i++)
    n += snprintf(fields + n, sizeof(fields) - (size_t)n, "F%d: %d\r\n", i, i);
  memcpy(fields + n, "\r\n", 2);
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, fields, (size_t)n + 2), NP_HTTP_DONE);
  assert_int_equal(np__http_head_nfields(&h), NP_HTTP_FIELDS_MAX);
  n += snprintf(fields + n, sizeof(fields) - (size_t)n, "F: 101\r\n\r\n");
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, fields, (size_t)n), NP_ETOOBIG);
  np__http_head_free(&h);
}

static void test_malformed(void **state) {
  static const char *bad[] = {
      "garbage\r\n\r\n",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
      "GET / HTTP/2.0\r\nHost: a\r\n\r\n",            /* not HTTP/1.x */
      "GET / HTTP/0.9\r\n\r\n",
      "GET /\r\n\r\n",                                   /* HTTP/0.9 */
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",              /* space before the colon */
      "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", /* folded */
      "GET / HTTP/1.1\r\nHost: a\r\nX:\r\n 2\r\n\r\n",   /* folded after an empty value */
      "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",    /* a bare CR */
      "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\n\r\n", /* a response */
      /* http_parser ends a head at CR and any byte: found by fuzz_http_head */
      "GET / HTTP/1.1\r\nHost: a\n\r.Connection: close\r\n\r\n",
      /* http_parser takes any byte for the letters of "HTTP/": found by fuzz_http_head */
      "GET /1 HTTP\n1.1\r\nHost: a\r\n\r\n",
      "GET /1 XTTP/1.1\r\nHost: a\r\n\r\n",
      "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",  /* two spaces */
      "GET /\t HTTP/1.1\r\nHost: a\r\n\r\n", /* a tab in the target */
      "GET / HTTP/1.12\r\nHost: a\r\n\r\n",
  };
  np__http_head h;
  size_t used;
  (void)state;
  np__http_head_init(&h);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    np__http_head_reset(&h);
    if (feed(&h, bad[i], strlen(bad[i])) != NP_EPROTO)
      fail_msg("case %zu was not refused as malformed", i);
    assert_int_equal(np__http_head_feed(&h, S("GET / HTTP/1.1\r\n"), &used), NP_EPROTO);
    assert_int_equal(used, 0);
  }
  np__http_head_free(&h);
}

static void test_upgrade_keep_alive(void **state) {
  np__http_head h;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(feed(&h, S("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_true(np__http_head_upgrade(&h));
  np__http_head_reset(&h);
  /* Upgrade without Connection: upgrade only announces support. */
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_false(np__http_head_upgrade(&h));
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_false(np__http_head_keep_alive(&h));
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nHost: a\r\n\r\n")), NP_HTTP_DONE);
  assert_true(np__http_head_keep_alive(&h));
  /* Tokens in lists, any case, with tabs around them (http_parser misses "close\t": found by
   * fuzz_http_head, as an upgrade the forwarded head gained). */
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,\tCLOSE\t\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_false(np__http_head_keep_alive(&h));
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
                              "Connection: keep-alive\r\nConnection: Upgrade\t\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_true(np__http_head_upgrade(&h));
  assert_true(np__http_head_keep_alive(&h));
  /* An HTTP/1.0 Upgrade is ignored (RFC 9110 7.8). */
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("GET / HTTP/1.0\r\nUpgrade: websocket\r\n"
                              "Connection: upgrade, keep-alive\r\n\r\n")),
                   NP_HTTP_DONE);
  assert_false(np__http_head_upgrade(&h));
  assert_true(np__http_head_keep_alive(&h));
  np__http_head_reset(&h);
  assert_int_equal(feed(&h, S("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n")), NP_HTTP_DONE);
  assert_true(np__http_head_upgrade(&h));
  assert_span(np__http_head_target(&h), "a:443");
  np__http_head_free(&h);
}

static const char fwd[] = "GET /chat?x=1 HTTP/1.1\r\n"
                          "Host: App.Example.com:8080\r\n"
                          "X-Forwarded-For: 10.0.0.1\r\n"
                          "User-Agent: t/1\r\n"
                          "x-forwarded-proto: https\r\n"
                          "Forwarded: for=10.0.0.1\r\n"
                          "X-Forwarded-Host: elsewhere\r\n"
                          "Accept:  */* \r\n"
                          "\r\n";

static void assert_rewrite(const char *req, const np__http_rewrite *opts, const char *want) {
  np__http_head h;
  char out[1024];
  size_t len;
  np__http_head_init(&h);
  assert_int_equal(feed(&h, req, strlen(req)), NP_HTTP_DONE);
  assert_int_equal(np__http_head_rewrite(&h, opts, out, sizeof(out), &len), 0);
  if (len != strlen(want) || memcmp(out, want, len) != 0)
    fail_msg("rewrite gave\n%.*s\nwanted\n%s", (int)len, out, want);
  np__http_head_free(&h);
}

static void test_rewrite(void **state) {
  np__http_rewrite opts = {NULL, "192.0.2.7", "http", 0};
  (void)state;
  /* Untrusted: theirs dropped, ours at the end. */
  assert_rewrite(fwd, &opts,
                 "GET /chat?x=1 HTTP/1.1\r\n"
                 "Host: App.Example.com:8080\r\n"
                 "User-Agent: t/1\r\n"
                 "Accept:  */*\r\n"
                 "X-Forwarded-For: 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\n"
                 "X-Forwarded-Host: App.Example.com:8080\r\n"
                 "\r\n");
  /* Trusted: appended to theirs, theirs kept. */
  opts.trust_forwarded = 1;
  assert_rewrite(fwd, &opts,
                 "GET /chat?x=1 HTTP/1.1\r\n"
                 "Host: App.Example.com:8080\r\n"
                 "X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"
                 "User-Agent: t/1\r\n"
                 "x-forwarded-proto: https\r\n"
                 "Forwarded: for=10.0.0.1\r\n"
                 "X-Forwarded-Host: elsewhere\r\n"
                 "Accept:  */*\r\n"
                 "\r\n");
  /* Trusted, none sent: ours; two X-Forwarded-For: the last one gets the address. */
  assert_rewrite("GET / HTTP/1.1\r\nHost: a\r\n\r\n", &opts,
                 "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n");
  assert_rewrite("GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\n"
                 "X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-For:\r\n\r\n",
                 &opts,
                 "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\n"
                 "X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-For: 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n");
  /* host_header_rewrite: in place; X-Forwarded-Host keeps what the visitor asked for. */
  opts.trust_forwarded = 0;
  opts.host = "backend.local:81";
  assert_rewrite(fwd, &opts,
                 "GET /chat?x=1 HTTP/1.1\r\n"
                 "Host: backend.local:81\r\n"
                 "User-Agent: t/1\r\n"
                 "Accept:  */*\r\n"
                 "X-Forwarded-For: 192.0.2.7\r\n"
                 "X-Forwarded-Proto: http\r\n"
                 "X-Forwarded-Host: App.Example.com:8080\r\n"
                 "\r\n");
  /* HTTP/1.0 without Host: rewritten gets one, no X-Forwarded-Host; bare LFs become CRLF, empty
   * lines before the request line go. */
  opts.addr = NULL;
  opts.proto = NULL;
  assert_rewrite("\r\nGET / HTTP/1.0\nEmpty:\nX:  v  \n\n", &opts,
                 "GET / HTTP/1.0\r\nEmpty:\r\nX:  v\r\nHost: backend.local:81\r\n\r\n");
}

static void test_rewrite_errors(void **state) {
  np__http_rewrite opts = {"b", "192.0.2.7", "http", 0};
  np__http_head h;
  char out[512];
  size_t len, need;
  (void)state;
  np__http_head_init(&h);
  assert_int_equal(np__http_head_rewrite(&h, &opts, out, sizeof(out), &len), NP_ESTATE);
  assert_int_equal(feed(&h, S(fwd)), NP_HTTP_DONE);
  assert_int_equal(np__http_head_rewrite(&h, &opts, NULL, 0, &need), UV_ENOBUFS);
  assert_true(need > 0 && need < sizeof(out));
  /* One byte short: refused, and nothing written past cap. */
  memset(out, '#', sizeof(out));
  assert_int_equal(np__http_head_rewrite(&h, &opts, out, need - 1, &len), UV_ENOBUFS);
  assert_int_equal(len, need);
  for (size_t i = need - 1; i < sizeof(out); i++)
    assert_int_equal(out[i], '#');
  assert_int_equal(np__http_head_rewrite(&h, &opts, out, need, &len), 0);
  assert_int_equal(len, need);
  /* A value that would split the head. */
  opts.host = "b\r\nX-Evil: 1";
  assert_int_equal(np__http_head_rewrite(&h, &opts, out, sizeof(out), &len), UV_EINVAL);
  np__http_head_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_get),          cmocka_unit_test(test_cuts),
      cmocka_unit_test(test_split_fields), cmocka_unit_test(test_body_not_taken),
      cmocka_unit_test(test_pipelined),    cmocka_unit_test(test_http10),
      cmocka_unit_test(test_hosts),        cmocka_unit_test(test_too_big),
      cmocka_unit_test(test_malformed),    cmocka_unit_test(test_upgrade_keep_alive),
      cmocka_unit_test(test_rewrite),      cmocka_unit_test(test_rewrite_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
