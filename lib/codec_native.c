/* The native wire format (docs/protocol.md): u32 big-endian body length, then the body: u8 type and
 * the type's fields in a fixed order. Fields appended by a later minor version are ignored by this
 * one, so trailing bytes after the known fields are accepted. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "natproxy/codec.h"
#include "natproxy/error.h"

#include "internal.h"

enum field {
  F_END = 0,
  F_VERSION, /* u16 */
  F_PORT,    /* u16 */
  F_STATUS,  /* i32 */
  F_ID,      /* u64 */
  F_ID2,     /* u64 */
  F_NONCE,   /* 32 bytes */
  F_MAC,     /* 32 bytes */
  F_NAME,    /* u8 length + bytes, <= NP_MSG_NAME_MAX */
  F_ADDR,    /* u8 length + bytes, <= NP_MSG_NAME_MAX */
  F_TEXT,    /* u8 length + bytes, <= NP_MSG_TEXT_MAX */
  F_KIND     /* u8: enum np_proxy_kind */
};

#define HDR_LEN 4
/* The largest body any message type can have: see the layouts below. */
#define MAX_FIELDS 8

static const unsigned char layouts[][MAX_FIELDS] = {
    [NP_MSG_HELLO] = {F_VERSION, F_NONCE, F_STATUS, F_ID}, /* the server's NP_HELLO_*, instance */
    [NP_MSG_LOGIN] = {F_VERSION, F_NAME, F_NONCE, F_MAC, F_ID, F_STATUS}, /* instance, flags */
    [NP_MSG_LOGIN_RESP] = {F_STATUS, F_ID, F_TEXT},
    [NP_MSG_PROXY] = {F_NAME, F_ADDR, F_PORT, F_TEXT, F_KIND}, /* text: allow_ips */
    [NP_MSG_PROXY_RESP] = {F_NAME, F_STATUS, F_PORT, F_TEXT},
    [NP_MSG_REQ_WORK] = {F_ID, F_NAME, F_ADDR, F_TEXT}, /* the visitor's address, the public one */
    [NP_MSG_WORK] = {F_ID, F_ID2, F_MAC},
    [NP_MSG_WORK_FAIL] = {F_ID, F_STATUS, F_TEXT},
    [NP_MSG_PING] = {F_ID, F_STATUS}, /* status: the client's datagram path (NP_UDP_PATH_*) */
    [NP_MSG_PONG] = {F_ID},
    [NP_MSG_CLOSE] = {F_STATUS, F_TEXT},
    [NP_MSG_WORK_IDLE] = {F_ID, F_ID2, F_MAC},
    [NP_MSG_START] = {F_ID, F_NAME, F_ADDR, F_TEXT}, /* as REQ_WORK */
    [NP_MSG_MUX] = {F_VERSION},
    [NP_MSG_PROXY_OPT] = {F_NAME, F_ADDR, F_TEXT},       /* proxy, key, value */
    [NP_MSG_PROXY_CLOSE] = {F_NAME, F_TEXT},             /* proxy, why */
    [NP_MSG_PEER] = {F_VERSION, F_NAME, F_NONCE, F_MAC}, /* its cluster_advertise */
    /* route (kind, port, host), the visitor's address and where it came; the answer's status */
    [NP_MSG_FORWARD] = {F_KIND, F_PORT, F_TEXT, F_NAME, F_ADDR, F_STATUS},
    /* the visitor's session, serial, the proxy's kind and name, the proofs of the session (nonce)
     * and of the secret (mac); the answer's status and why */
    [NP_MSG_VISIT] = {F_ID, F_ID2, F_KIND, F_NAME, F_NONCE, F_MAC, F_STATUS, F_TEXT},
    /* the path's id, the serial, kind and proxy, the path key (answer), the proof of the secret,
     * the answer's status, the candidates (or why not) */
    [NP_MSG_DIRECT] = {F_ID, F_ID2, F_KIND, F_NAME, F_NONCE, F_MAC, F_STATUS, F_TEXT},
    /* the path's id, the visitor's session, the proxy, the visitor's name, the path key, the
     * server's token, the owner's status, the candidates */
    [NP_MSG_DIRECT_INTRO] = {F_ID, F_ID2, F_NAME, F_ADDR, F_NONCE, F_MAC, F_STATUS, F_TEXT},
};

/* Fields appended after a type's first release: a body from an older peer ends before them, and
 * they decode as empty. 0 = every field is required. */
static const unsigned char required[NP_MSG_LAST + 1] = {
    [NP_MSG_HELLO] = 2,    /* the server's features (NP_HELLO_*) and instance id came later */
    [NP_MSG_LOGIN] = 4,    /* the instance id and the flags came later */
    [NP_MSG_PROXY] = 3,    /* allow_ips (text) and kind came later */
    [NP_MSG_PING] = 1,     /* so did status */
    [NP_MSG_REQ_WORK] = 2, /* the addresses came later (PROXY protocol towards the service) */
    [NP_MSG_START] = 2,
};

static int known_type(unsigned t) {
  return t >= NP_MSG_HELLO && t <= NP_MSG_LAST;
}

static int put_str(unsigned char **pp, unsigned char *end, const char *s, size_t max) {
  size_t n = strnlen(s, max + 1);
  if (n > max)
    return NP_EPROTO;
  if ((size_t)(end - *pp) < 1 + n)
    return NP_ETOOBIG;
  **pp = (unsigned char)n;
  memcpy(*pp + 1, s, n);
  *pp += 1 + n;
  return 0;
}

static int encode(const np_msg *m, char *buf, size_t cap) {
  unsigned char *start = (unsigned char *)buf;
  unsigned char *end = start + cap;
  unsigned char *p = start + HDR_LEN + 1;
  int r = 0;

  if (!known_type((unsigned)m->type))
    return NP_EUNSUPPORTED;
  if (cap < HDR_LEN + 1)
    return NP_ETOOBIG;
  for (int i = 0; i < MAX_FIELDS && layouts[m->type][i] != F_END && r == 0; i++) {
    int width = 0;
    uint64_t v = 0;
    switch (layouts[m->type][i]) {
    case F_VERSION:
      width = 2, v = m->version;
      break;
    case F_PORT:
      width = 2, v = m->port;
      break;
    case F_STATUS:
      width = 4, v = (uint32_t)m->status;
      break;
    case F_ID:
      width = 8, v = m->id;
      break;
    case F_ID2:
      width = 8, v = m->id2;
      break;
    case F_NONCE:
    case F_MAC:
      if (end - p < NP_MSG_KEY_LEN)
        return NP_ETOOBIG;
      memcpy(p, layouts[m->type][i] == F_NONCE ? m->nonce : m->mac, NP_MSG_KEY_LEN);
      p += NP_MSG_KEY_LEN;
      break;
    case F_NAME:
      r = put_str(&p, end, m->name, NP_MSG_NAME_MAX);
      break;
    case F_ADDR:
      r = put_str(&p, end, m->addr, NP_MSG_NAME_MAX);
      break;
    case F_TEXT:
      r = put_str(&p, end, m->text, NP_MSG_TEXT_MAX);
      break;
    case F_KIND:
      width = 1, v = m->kind;
      break;
    }
    if (width > 0) {
      if (end - p < width)
        return NP_ETOOBIG;
      np__put_be(p, v, width);
      p += width;
    }
  }
  if (r != 0)
    return r;
  np__put_be(start, (uint64_t)(p - start - HDR_LEN), HDR_LEN);
  start[HDR_LEN] = (unsigned char)m->type;
  return (int)(p - start);
}

static int get_str(const unsigned char **pp, const unsigned char *end, char *dst, size_t max) {
  size_t n;
  if (*pp >= end)
    return NP_EPROTO;
  n = **pp;
  if (n > max || (size_t)(end - *pp - 1) < n || memchr(*pp + 1, '\0', n) != NULL)
    return NP_EPROTO;
  memcpy(dst, *pp + 1, n);
  dst[n] = '\0';
  *pp += 1 + n;
  return 0;
}

/* Parse one complete body (type + fields). */
static int parse_body(const unsigned char *p, size_t len, np_msg *m) {
  const unsigned char *end = p + len;
  unsigned type = p[0];

  memset(m, 0, sizeof(*m));
  if (!known_type(type))
    return NP_EPROTO;
  m->type = (np_msg_type)type;
  p++;
  for (int i = 0; i < MAX_FIELDS && layouts[type][i] != F_END; i++) {
    int width = 0;
    int r = 0;
    uint64_t v;
    if (p == end && required[type] != 0 && i >= required[type])
      break;
    switch (layouts[type][i]) {
    case F_VERSION:
    case F_PORT:
      width = 2;
      break;
    case F_STATUS:
      width = 4;
      break;
    case F_ID:
    case F_ID2:
      width = 8;
      break;
    case F_NONCE:
    case F_MAC:
      if (end - p < NP_MSG_KEY_LEN)
        return NP_EPROTO;
      memcpy(layouts[type][i] == F_NONCE ? m->nonce : m->mac, p, NP_MSG_KEY_LEN);
      p += NP_MSG_KEY_LEN;
      break;
    case F_NAME:
      r = get_str(&p, end, m->name, NP_MSG_NAME_MAX);
      break;
    case F_ADDR:
      r = get_str(&p, end, m->addr, NP_MSG_NAME_MAX);
      break;
    case F_TEXT:
      r = get_str(&p, end, m->text, NP_MSG_TEXT_MAX);
      break;
    case F_KIND:
      width = 1;
      break;
    }
    if (r != 0)
      return r;
    if (width == 0)
      continue;
    if (end - p < width)
      return NP_EPROTO;
    v = np__get_be(p, width);
    p += width;
    switch (layouts[type][i]) {
    case F_VERSION:
      m->version = (uint16_t)v;
      break;
    case F_PORT:
      m->port = (uint16_t)v;
      break;
    case F_STATUS:
      m->status = (int32_t)(uint32_t)v;
      break;
    case F_ID:
      m->id = v;
      break;
    case F_KIND:
      /* Any kind: which ones exist is the server's to say (a PROXY_RESP with NP_EUNSUPPORTED), so a
       * newer client asking for a type this server lacks loses that proxy, not its session. */
      m->kind = (uint8_t)v;
      break;
    default:
      m->id2 = v;
      break;
    }
  }
  return 0;
}

/* A partial frame's body gets memory only while it is partial, and only its own size: a connection
 * that says nothing, or whole frames at a time, costs this struct alone. */
typedef struct decoder {
  size_t max_frame; /* largest body accepted */
  size_t have;      /* bytes buffered of the current frame, header included */
  int error;        /* sticky */
  unsigned char hdr[HDR_LEN];
  unsigned char *body; /* of the partial frame, once its header is complete */
} decoder;

static int decoder_new(size_t max_frame, void **out) {
  decoder *d;
  if (max_frame < 1 || max_frame > (1u << 24))
    return UV_EINVAL;
  if ((d = calloc(1, sizeof(*d))) == NULL)
    return UV_ENOMEM;
  d->max_frame = max_frame;
  *out = d;
  return 0;
}

static void decoder_free(void *dec) {
  decoder *d = dec;
  if (d != NULL)
    free(d->body);
  free(d);
}

static int check_len(decoder *d, const unsigned char *hdr, size_t *body) {
  uint64_t n = np__get_be(hdr, HDR_LEN);
  if (n == 0)
    return d->error = NP_EPROTO;
  /* A TLS record (handshake, version 3.x) read as our header is a length of ~370 MB: a TLS client
   * talking to a plaintext server, which deserves its own error. */
  if (n > d->max_frame)
    return d->error = hdr[0] == 0x16 && hdr[1] == 0x03 ? NP_ETLSREQUIRED : NP_ETOOBIG;
  *body = (size_t)n;
  return 0;
}

static int decode(void *dec, const char *in, size_t len, size_t *consumed, np_msg *msg) {
  decoder *d = dec;
  const unsigned char *p = (const unsigned char *)in;
  size_t body = 0;
  size_t take;
  int r;

  *consumed = 0;
  if (d->error != 0)
    return d->error;

  /* Fast path: nothing buffered and a whole frame in the caller's bytes: parse in place. */
  if (d->have == 0 && len >= HDR_LEN) {
    if ((r = check_len(d, p, &body)) != 0)
      return r;
    if (len - HDR_LEN >= body) {
      if ((r = parse_body(p + HDR_LEN, body, msg)) != 0)
        return d->error = r;
      *consumed = HDR_LEN + body;
      return 1;
    }
  }

  /* Slow path: accumulate a partial header, then a partial body. */
  if (d->have < HDR_LEN) {
    take = HDR_LEN - d->have < len ? HDR_LEN - d->have : len;
    memcpy(d->hdr + d->have, p, take);
    d->have += take;
    *consumed += take;
    p += take;
    len -= take;
    if (d->have < HDR_LEN)
      return 0;
  }
  if ((r = check_len(d, d->hdr, &body)) != 0)
    return r;
  if (d->have == HDR_LEN && len >= body) {
    /* The header came in pieces, the body whole. */
    *consumed += body;
    d->have = 0;
    if ((r = parse_body(p, body, msg)) != 0)
      return d->error = r;
    return 1;
  }
  if (len == 0)
    return 0; /* no body bytes yet, so no memory for them yet: body is set iff have > HDR_LEN */
  if (d->body == NULL && (d->body = malloc(body)) == NULL)
    return d->error = UV_ENOMEM;
  take = HDR_LEN + body - d->have;
  if (take > len)
    take = len;
  memcpy(d->body + (d->have - HDR_LEN), p, take);
  d->have += take;
  *consumed += take;
  if (d->have < HDR_LEN + body)
    return 0;
  d->have = 0;
  r = parse_body(d->body, body, msg);
  free(d->body);
  d->body = NULL;
  if (r != 0)
    return d->error = r;
  return 1;
}

static const np_codec_ops native_ops = {
    .size = sizeof(np_codec_ops),
    .name = "native",
    .caps = NP_CODEC_CAP_AUTH | NP_CODEC_CAP_WORK_HEADER | NP_CODEC_CAP_PONG,
    .decoder_new = decoder_new,
    .decoder_free = decoder_free,
    .decode = decode,
    .encode = encode,
};

const np_codec_ops *np_codec_native(void) {
  return &native_ops;
}
