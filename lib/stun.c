/* STUN Binding (RFC 8489) for NAT traversal: see stun.h. FINGERPRINT's CRC-32 is zlib's. */
#include "stun.h"

#include <string.h>

#include <netinet/in.h>
#include <uv.h>
#include <zlib.h>

#include "internal.h"

#define ATTR_MAPPED_ADDRESS     0x0001
#define ATTR_MESSAGE_INTEGRITY  0x0008
#define ATTR_ERROR_CODE         0x0009
#define ATTR_MESSAGE_INTEGRITY2 0x001C /* MESSAGE-INTEGRITY-SHA256 */
#define ATTR_XOR_MAPPED_ADDRESS 0x0020
#define ATTR_FINGERPRINT        0x8028
#define FINGERPRINT_XOR         0x5354554Eu

static uint32_t crc(const unsigned char *p, size_t n) {
  return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

int np__stun_is(const void *buf, size_t len) {
  const unsigned char *p = buf;
  return len >= NP_STUN_HDR_LEN && (p[0] & 0xC0) == 0 && np__get_be(p + 4, 4) == NP_STUN_COOKIE &&
         np__get_be(p + 2, 2) == len - NP_STUN_HDR_LEN && (len & 3) == 0;
}

/* An address attribute's value (v, n bytes): plain, or XOR'd with the cookie (and, for IPv6, the
 * transaction id). 0, or NP_EPROTO. */
static int address(const unsigned char *v, size_t n, const unsigned char *hdr, int xor,
                   struct sockaddr_storage *out) {
  unsigned char mask[16];
  uint16_t port;

  if (n < 4)
    return NP_EPROTO;
  memcpy(mask, hdr + 4, 4); /* the cookie, then the transaction id */
  memcpy(mask + 4, hdr + 8, NP_STUN_TID_LEN);
  port = (uint16_t)np__get_be(v + 2, 2) ^ (xor? (uint16_t)(NP_STUN_COOKIE >> 16) : 0);
  memset(out, 0, sizeof(*out));
  if (v[1] == 0x01 && n == 8) {
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    for (int i = 0; i < 4; i++)
      ((unsigned char *)&in->sin_addr)[i] = v[4 + i] ^ (xor? mask[i] : 0);
    return 0;
  }
  if (v[1] == 0x02 && n == 20) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    for (int i = 0; i < 16; i++)
      in6->sin6_addr.s6_addr[i] = v[4 + i] ^ (xor? mask[i] : 0);
    return 0;
  }
  return NP_EPROTO;
}

int np__stun_parse(const void *buf, size_t len, np__stun *out) {
  const unsigned char *p = buf;
  size_t off = NP_STUN_HDR_LEN;
  int have_xor = 0, integrity = 0;

  memset(out, 0, sizeof(*out));
  if (!np__stun_is(buf, len))
    return NP_EPROTO;
  out->type = (uint16_t)np__get_be(p, 2);
  memcpy(out->tid, p + 8, NP_STUN_TID_LEN);
  while (off < len) {
    uint16_t type, n;
    const unsigned char *v;

    if (len - off < 4)
      return NP_EPROTO;
    type = (uint16_t)np__get_be(p + off, 2);
    n = (uint16_t)np__get_be(p + off + 2, 2);
    v = p + off + 4;
    if ((size_t)n > len - off - 4 || (((size_t)n + 3) & ~(size_t)3) > len - off - 4)
      return NP_EPROTO; /* the value, padded to four, runs past the message */
    if (type == ATTR_FINGERPRINT) {
      /* Over the message before it, whose length field already counts it (RFC 8489 14.7). */
      if (n != 4 || off + 8 != len || (crc(p, off) ^ FINGERPRINT_XOR) != (uint32_t)np__get_be(v, 4))
        return NP_EPROTO;
      out->fingerprint = 1;
    } else if (integrity) {
      /* After MESSAGE-INTEGRITY, only FINGERPRINT counts. */
    } else if (type == ATTR_XOR_MAPPED_ADDRESS) {
      if (address(v, n, p, 1, &out->mapped) != 0)
        return NP_EPROTO;
      have_xor = 1;
    } else if (type == ATTR_MAPPED_ADDRESS) {
      struct sockaddr_storage plain;
      if (address(v, n, p, 0, &plain) != 0)
        return NP_EPROTO;
      if (!have_xor)
        out->mapped = plain;
    } else if (type == ATTR_ERROR_CODE) {
      if (n < 4 || (v[2] & 7) < 3 || (v[2] & 7) > 6 || v[3] > 99)
        return NP_EPROTO;
      out->error = (v[2] & 7) * 100 + v[3];
    } else if (type == ATTR_MESSAGE_INTEGRITY || type == ATTR_MESSAGE_INTEGRITY2) {
      integrity = 1; /* not checked: we use no credentials */
    } else if (type < 0x8000 && out->unknown == 0) {
      out->unknown = type;
    }
    off += 4 + (((size_t)n + 3) & ~(size_t)3);
  }
  return 0;
}

/* The header for type, tid and a body of n bytes. */
static void header(unsigned char *p, uint16_t type, const unsigned char *tid, size_t n) {
  np__put_be(p, type, 2);
  np__put_be(p + 2, n, 2);
  np__put_be(p + 4, NP_STUN_COOKIE, 4);
  memcpy(p + 8, tid, NP_STUN_TID_LEN);
}

/* FINGERPRINT at p + off, the message then being off + 8 bytes long (already in the header). */
static int fingerprint(unsigned char *p, size_t off) {
  np__put_be(p + off, ATTR_FINGERPRINT, 2);
  np__put_be(p + off + 2, 4, 2);
  np__put_be(p + off + 4, crc(p, off) ^ FINGERPRINT_XOR, 4);
  return (int)off + 8;
}

int np__stun_request(const unsigned char tid[NP_STUN_TID_LEN], void *out, size_t cap) {
  unsigned char *p = out;

  if (cap < NP_STUN_HDR_LEN + 8)
    return UV_ENOBUFS;
  header(p, NP_STUN_BINDING_REQUEST, tid, 8);
  return fingerprint(p, NP_STUN_HDR_LEN);
}

int np__stun_response(const unsigned char tid[NP_STUN_TID_LEN], const struct sockaddr *mapped,
                      void *out, size_t cap) {
  unsigned char *p = out, mask[16];
  size_t alen;
  const unsigned char *addr;
  uint16_t port;

  if (mapped->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)mapped;
    alen = 4, addr = (const unsigned char *)&in->sin_addr, port = ntohs(in->sin_port);
  } else if (mapped->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)mapped;
    alen = 16, addr = in6->sin6_addr.s6_addr, port = ntohs(in6->sin6_port);
  } else {
    return UV_EAFNOSUPPORT;
  }
  if (cap < NP_STUN_HDR_LEN + 4 + 4 + alen + 8)
    return UV_ENOBUFS;
  header(p, NP_STUN_BINDING_SUCCESS, tid, 4 + 4 + alen + 8);
  np__put_be(mask, NP_STUN_COOKIE, 4);
  memcpy(mask + 4, tid, NP_STUN_TID_LEN);
  np__put_be(p + 20, ATTR_XOR_MAPPED_ADDRESS, 2);
  np__put_be(p + 22, 4 + alen, 2);
  p[24] = 0;
  p[25] = alen == 4 ? 0x01 : 0x02;
  np__put_be(p + 26, port ^ (NP_STUN_COOKIE >> 16), 2);
  for (size_t i = 0; i < alen; i++)
    p[28 + i] = addr[i] ^ mask[i];
  return fingerprint(p, 28 + alen);
}
