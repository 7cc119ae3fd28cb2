#include "mux_frame.h"

#include <string.h>

#include "natproxy/error.h"

void np__mux_hdr_encode(const np__mux_hdr *h, unsigned char out[NP_MUX_HDR_LEN]) {
  out[0] = h->version;
  out[1] = h->type;
  out[2] = (unsigned char)(h->flags >> 8);
  out[3] = (unsigned char)h->flags;
  for (int i = 0; i < 4; i++) {
    out[4 + i] = (unsigned char)(h->stream >> (24 - 8 * i));
    out[8 + i] = (unsigned char)(h->length >> (24 - 8 * i));
  }
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int np__mux_hdr_decode(const unsigned char in[NP_MUX_HDR_LEN], np__mux_hdr *out) {
  np__mux_hdr h;

  h.version = in[0];
  h.type = in[1];
  h.flags = (uint16_t)(in[2] << 8 | in[3]);
  h.stream = be32(in + 4);
  h.length = be32(in + 8);
  if (h.version != NP_MUX_VERSION || h.type > NP_MUX_GO_AWAY)
    return NP_EPROTO;
  /* The spec reserves stream 0 for the session: pings and go-aways only. */
  if ((h.type == NP_MUX_PING || h.type == NP_MUX_GO_AWAY) != (h.stream == 0))
    return NP_EPROTO;
  *out = h;
  return 0;
}

void np__mux_parser_init(np__mux_parser *p, uint32_t max_data) {
  memset(p, 0, sizeof(*p));
  p->max_data = max_data;
}

int np__mux_parse(np__mux_parser *p, const char *buf, size_t len, size_t *consumed,
                  np__mux_event *ev) {
  size_t take;
  int r;

  *consumed = 0;
  if (p->error != 0)
    return p->error;
  if (p->body_left > 0) {
    if (len == 0)
      return 0;
    take = len < p->body_left ? len : p->body_left;
    p->body_left -= (uint32_t)take;
    ev->type = NP_MUX_EV_DATA;
    ev->hdr = p->cur;
    ev->data = buf;
    ev->len = take;
    *consumed = take;
    return 1;
  }
  take = NP_MUX_HDR_LEN - p->have;
  if (take > len)
    take = len;
  memcpy(p->buf + p->have, buf, take);
  p->have += take;
  *consumed = take;
  if (p->have < NP_MUX_HDR_LEN)
    return 0;
  p->have = 0;
  if ((r = np__mux_hdr_decode(p->buf, &p->cur)) != 0)
    return p->error = r;
  if (p->cur.type == NP_MUX_DATA) {
    if (p->cur.length > p->max_data)
      return p->error = NP_ETOOBIG;
    p->body_left = p->cur.length;
  }
  ev->type = NP_MUX_EV_FRAME;
  ev->hdr = p->cur;
  ev->data = NULL;
  ev->len = 0;
  return 1;
}
