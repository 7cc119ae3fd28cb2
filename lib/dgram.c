#include "dgram.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "natproxy/error.h"

int np__dgram_hdr(size_t len, unsigned char hdr[NP_DGRAM_HDR_LEN]) {
  if (len > NP_DGRAM_MAX)
    return NP_ETOOBIG;
  hdr[0] = (unsigned char)(len >> 8);
  hdr[1] = (unsigned char)len;
  return 0;
}

void np__dgram_parser_init(np__dgram_parser *p) {
  memset(p, 0, sizeof(*p));
}

void np__dgram_parser_free(np__dgram_parser *p) {
  free(p->body);
  p->body = NULL;
}

int np__dgram_feed(np__dgram_parser *p, const char *in, size_t len, np__dgram_cb cb, void *arg) {
  while (len > 0 && p->error == 0) {
    size_t want, take;

    if (p->have < NP_DGRAM_HDR_LEN) {
      p->hdr[p->have++] = (unsigned char)*in++;
      len--;
      if (p->have < NP_DGRAM_HDR_LEN)
        continue;
      if (((size_t)p->hdr[0] << 8 | p->hdr[1]) > NP_DGRAM_MAX)
        return p->error = NP_ETOOBIG;
      if (p->hdr[0] == 0 && p->hdr[1] == 0) { /* empty: complete now, not with the next bytes */
        p->have = 0;
        cb(arg, "", 0);
        continue;
      }
    }
    want = (size_t)p->hdr[0] << 8 | p->hdr[1];
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
      char *b = p->body;
      p->body = NULL;
      p->have = 0;
      cb(arg, b, want);
      free(b);
    }
  }
  return p->error;
}
