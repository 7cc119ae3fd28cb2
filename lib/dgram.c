#include "dgram.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "internal.h"

int np__dgram_hdr(size_t len, unsigned char hdr[NP_DGRAM_HDR_LEN]) {
  if (len > NP_DGRAM_MAX)
    return NP_ETOOBIG;
  np__put_be(hdr, len, NP_DGRAM_HDR_LEN);
  return 0;
}

void np__dgram_parser_init(np__dgram_parser *p) {
  memset(p, 0, sizeof(*p));
}

void np__dgram_parser_free(np__dgram_parser *p) {
  free(p->body);
  free(p->done);
  p->body = p->done = NULL;
}

int np__dgram_feed(np__dgram_parser *p, const char *in, size_t len, np__dgram_cb cb, void *arg) {
  free(p->done);
  p->done = NULL;
  while (len > 0 && p->error == 0) {
    size_t want, take;

    if (p->have < NP_DGRAM_HDR_LEN) {
      p->hdr[p->have++] = (unsigned char)*in++;
      len--;
      if (p->have < NP_DGRAM_HDR_LEN)
        continue;
    }
    want = (size_t)np__get_be(p->hdr, NP_DGRAM_HDR_LEN);
    if (want > NP_DGRAM_MAX)
      return p->error = NP_ETOOBIG;
    if (want == 0) { /* empty: complete now, not with the next bytes */
      p->have = 0;
      cb(arg, "", 0);
      continue;
    }
    if (p->have == NP_DGRAM_HDR_LEN && len >= want) {
      /* Whole: hand it over where it lies. */
      cb(arg, in, want);
      in += want;
      len -= want;
      p->have = 0;
      continue;
    }
    if (len == 0)
      break; /* a header alone: no memory for its body until some of it comes */
    if (p->body == NULL && (p->body = malloc(want)) == NULL)
      return p->error = UV_ENOMEM;
    take = want - (p->have - NP_DGRAM_HDR_LEN);
    if (take > len)
      take = len;
    memcpy(p->body + (p->have - NP_DGRAM_HDR_LEN), in, take);
    p->have += take;
    in += take;
    len -= take;
    if (p->have == NP_DGRAM_HDR_LEN + want) {
      free(p->done); /* one cut datagram completes per feed at most: NULL */
      p->done = p->body;
      p->body = NULL;
      p->have = 0;
      cb(arg, p->done, want);
    }
  }
  return p->error;
}
