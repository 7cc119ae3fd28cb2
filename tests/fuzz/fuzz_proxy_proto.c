/* libFuzzer: the PROXY protocol header reader (lib/proxy_proto.c), which reads what a load balancer
 * in front of the server sends, and what anybody else connecting from its addresses sends. Checks
 * more than "no crash": a header found is found again in exactly its own bytes and is "more" in any
 * shorter prefix, and a header the writer makes from addresses taken from the input reads back to
 * the same addresses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include "proxy_proto.h"

static void roundtrip(const uint8_t *d, size_t n) {
  struct sockaddr_storage s, t;
  char out[NP_PP_WRITE_MAX];
  np__pp_header h;
  int six = n > 0 && (d[0] & 1), version = n > 0 && (d[0] & 2) ? 2 : 1, len;
  size_t need = six ? 37 : 13;

  if (n < need)
    return;
  memset(&s, 0, sizeof(s));
  memset(&t, 0, sizeof(t));
  if (six) {
    struct sockaddr_in6 *a = (void *)&s, *b = (void *)&t;
    a->sin6_family = b->sin6_family = AF_INET6;
    memcpy(&a->sin6_addr, d + 1, 16);
    memcpy(&b->sin6_addr, d + 17, 16);
    memcpy(&a->sin6_port, d + 33, 2);
    memcpy(&b->sin6_port, d + 35, 2);
  } else {
    struct sockaddr_in *a = (void *)&s, *b = (void *)&t;
    a->sin_family = b->sin_family = AF_INET;
    memcpy(&a->sin_addr, d + 1, 4);
    memcpy(&b->sin_addr, d + 5, 4);
    memcpy(&a->sin_port, d + 9, 2);
    memcpy(&b->sin_port, d + 11, 2);
  }
  len = np__pp_write(version, 0, (struct sockaddr *)&s, (struct sockaddr *)&t, out);
  if (len <= 0 || np__pp_parse(out, (size_t)len, &h) != NP_PP_DONE || h.len != (size_t)len ||
      !h.has_addrs)
    abort();
  if (memcmp(&h.src, &s, sizeof(s)) != 0 || memcmp(&h.dst, &t, sizeof(t)) != 0)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  np__pp_header h, again;
  /* A copy of exactly size bytes, so reading one past the end is caught. */
  char *buf = malloc(size > 0 ? size : 1);
  int r;

  if (buf == NULL)
    return 0;
  memcpy(buf, data, size);
  r = np__pp_parse(buf, size, &h);
  if (r != NP_PP_MORE && r != NP_PP_DONE && r != NP_PP_NONE && r != NP_EPROTO && r != NP_ETOOBIG)
    abort();
  if (r == NP_PP_DONE) {
    if (h.len == 0 || h.len > size || h.len > NP_PP_READ_MAX)
      abort();
    if (np__pp_parse(buf, h.len, &again) != NP_PP_DONE || again.len != h.len)
      abort();
    if (np__pp_parse(buf, h.len - 1, &again) != NP_PP_MORE)
      abort();
  }
  if (r == NP_PP_MORE && size >= NP_PP_READ_MAX)
    abort(); /* a caller peeking NP_PP_READ_MAX bytes always gets an answer */
  free(buf);
  roundtrip(data, size);
  return 0;
}
