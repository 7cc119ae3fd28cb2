/* libFuzzer: HTTP request heads as a visitor sends them to the vhost port (lib/http_head.c). The
 * first byte steers: the low 6 bits bound the sizes of the reads the rest is cut into (0: one
 * read), bit 6 trusts X-Forwarded-*, bit 7 rewrites Host. The rest is a connection's bytes: heads
 * one after another, each read with a reset reader (pipelining). Every byte must be accounted for,
 * a done head must be the bytes it took, an error must stick, and each forwarded head must read
 * back as the same request. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "http_head.h"
#include "natproxy/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_span(const np__http_head *h, np__http_span s) {
  if (s.len > 0 &&
      (s.p < np__http_head_bytes(h) || s.p + s.len > np__http_head_bytes(h) + np__http_head_len(h)))
    abort();
}

static int span_eq(np__http_span a, np__http_span b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* The forwarded head, read again: the same request (host_header_rewrite aside). */
static void check_rewrite(const np__http_head *h, int ctl) {
  np__http_rewrite opts = {ctl & 0x80 ? "backend.example:8080" : NULL, "192.0.2.1", "http",
                           (ctl & 0x40) != 0};
  np__http_head back;
  size_t need, len, used;
  char *out;
  int r;

  if (np__http_head_rewrite(h, &opts, NULL, 0, &need) != UV_ENOBUFS || need == 0)
    abort();
  if ((out = malloc(need)) == NULL)
    return;
  if (np__http_head_rewrite(h, &opts, out, need, &len) != 0 || len != need)
    abort();
  np__http_head_init(&back);
  r = np__http_head_feed(&back, out, len, &used);
  if (r == NP_ETOOBIG) {
    /* ours added fields or bytes to a head near a bound */
  } else if (r != NP_HTTP_DONE || used != len) {
    abort();
  } else {
    np__http_span host = np__http_head_host(&back);
    if (strcmp(np__http_head_method(h), np__http_head_method(&back)) != 0 ||
        !span_eq(np__http_head_target(h), np__http_head_target(&back)) ||
        np__http_head_minor(h) != np__http_head_minor(&back) ||
        np__http_head_upgrade(h) != np__http_head_upgrade(&back) ||
        np__http_head_keep_alive(h) != np__http_head_keep_alive(&back) ||
        np__http_head_content_length(h) != np__http_head_content_length(&back) ||
        np__http_head_chunked(h) != np__http_head_chunked(&back))
      abort();
    if (opts.host != NULL ? host.len != 15 || memcmp(host.p, "backend.example", 15) != 0
                          : !span_eq(host, np__http_head_host(h)))
      abort();
  }
  np__http_head_free(&back);
  free(out);
}

static void check_done(const np__http_head *h, const uint8_t *start, size_t took) {
  np__http_span host = np__http_head_host(h), name, value;
  const char *b = np__http_head_bytes(h);

  if (np__http_head_len(h) != took || memcmp(b, start, took) != 0 || b[took - 1] != '\n')
    abort();
  check_span(h, np__http_head_target(h));
  if (np__http_head_nfields(h) > NP_HTTP_FIELDS_MAX)
    abort();
  for (size_t i = 0; i < np__http_head_nfields(h); i++) {
    np__http_head_field(h, i, &name, &value);
    if (name.len == 0)
      abort();
    check_span(h, name);
    check_span(h, value);
  }
  if (host.len > NP_HTTP_HOST_MAX || (host.len == 0 && np__http_head_minor(h) != 0))
    abort();
  for (size_t i = 0; i < host.len; i++)
    if (!((host.p[i] >= 'a' && host.p[i] <= 'z') || (host.p[i] >= '0' && host.p[i] <= '9') ||
          host.p[i] == '-' || host.p[i] == '_' || host.p[i] == '.'))
      abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  np__http_head h;
  uint32_t rng;
  size_t off = 1, head_start = 1, took = 0, maxread;
  int ctl, r = NP_HTTP_MORE;

  if (size < 1)
    return 0;
  ctl = data[0];
  maxread = ctl & 0x3f;
  rng = 2166136261u ^ (uint32_t)size;
  np__http_head_init(&h);
  while (off < size) {
    size_t n = size - off, used;
    if (maxread != 0) {
      rng = rng * 1103515245u + 12345u;
      if (n > 1 + (rng >> 16) % maxread)
        n = 1 + (rng >> 16) % maxread;
    }
    r = np__http_head_feed(&h, (const char *)data + off, n, &used);
    if (used > n || (r == NP_HTTP_MORE && used != n) || (r < 0 && used != 0))
      abort();
    off += used;
    took += used;
    if (r == NP_HTTP_MORE)
      continue;
    if (r != NP_HTTP_DONE) {
      if (r != NP_EPROTO && r != NP_ETOOBIG && r != NP_EHOST && r != UV_ENOMEM)
        abort();
      if (np__http_head_feed(&h, "GET", 3, &used) != r || used != 0)
        abort(); /* sticky */
      break;
    }
    check_done(&h, data + head_start, took);
    check_rewrite(&h, ctl);
    if (np__http_head_feed(&h, "x", 1, &used) != NP_HTTP_DONE || used != 0)
      abort();
    /* The next request on the connection; a body would be the caller's to skip, here the next
     * bytes are taken as the next head. */
    np__http_head_reset(&h);
    head_start = off;
    took = 0;
  }
  np__http_head_free(&h);
  return 0;
}
