/* The seed article's text protocol (../shared/seed/SUMMARY.md, docs/protocol.md §line):
 * server-to-client lines "KEEP_ALIVE\n" (our PING) and "NEW_CONNECTION\n" (our REQ_WORK, without an
 * id). Nothing else exists in it: no login, no ids, no answers to pings. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "natproxy/codec.h"
#include "natproxy/error.h"

static const char keep_alive[] = "KEEP_ALIVE";
static const char new_conn[] = "NEW_CONNECTION";

typedef struct decoder {
  size_t max_line; /* without the newline */
  size_t have;
  int error;
  char buf[];
} decoder;

static int decoder_new(size_t max_frame, void **out) {
  decoder *d;
  if (max_frame < sizeof(new_conn))
    return UV_EINVAL;
  /* The protocol's longest line is NEW_CONNECTION; a longer one can only be garbage, so the cap
   * never needs to be larger than that, whatever the caller allows for native frames. */
  if (max_frame > 64)
    max_frame = 64;
  d = calloc(1, sizeof(*d) + max_frame);
  if (d == NULL)
    return UV_ENOMEM;
  d->max_line = max_frame;
  *out = d;
  return 0;
}

static void decoder_free(void *dec) {
  free(dec);
}

static int decode(void *dec, const char *in, size_t len, size_t *consumed, np_msg *msg) {
  decoder *d = dec;
  const char *nl;
  size_t take;

  *consumed = 0;
  if (d->error != 0)
    return d->error;
  nl = memchr(in, '\n', len);
  take = nl != NULL ? (size_t)(nl - in) : len;
  if (d->have + take > d->max_line)
    return d->error = NP_ETOOBIG;
  memcpy(d->buf + d->have, in, take);
  d->have += take;
  if (nl == NULL) {
    *consumed = len;
    return 0;
  }
  *consumed = take + 1;
  memset(msg, 0, sizeof(*msg));
  if (d->have == sizeof(keep_alive) - 1 && memcmp(d->buf, keep_alive, d->have) == 0)
    msg->type = NP_MSG_PING;
  else if (d->have == sizeof(new_conn) - 1 && memcmp(d->buf, new_conn, d->have) == 0)
    msg->type = NP_MSG_REQ_WORK;
  else
    return d->error = NP_EPROTO;
  d->have = 0;
  return 1;
}

static int emit(const char *word, char *buf, size_t cap) {
  size_t n = strlen(word);
  if (cap < n + 1)
    return NP_ETOOBIG;
  memcpy(buf, word, n);
  buf[n] = '\n';
  return (int)(n + 1);
}

static int encode(const np_msg *m, char *buf, size_t cap) {
  switch (m->type) {
  case NP_MSG_PING:
    return emit(keep_alive, buf, cap);
  case NP_MSG_REQ_WORK:
    return emit(new_conn, buf, cap);
  default:
    return NP_EUNSUPPORTED;
  }
}

static const np_codec_ops line_ops = {
    .size = sizeof(np_codec_ops),
    .name = "line",
    .caps = 0,
    .decoder_new = decoder_new,
    .decoder_free = decoder_free,
    .decode = decode,
    .encode = encode,
};

const np_codec_ops *np_codec_line(void) {
  return &line_ops;
}
