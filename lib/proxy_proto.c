/* PROXY protocol headers (proxy_proto.h). The layouts follow haproxy's proxy-protocol.txt: v1 is
 * one text line, v2 a 16-byte binary head (signature, version and command, family and transport,
 * length) and the addresses in network order. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>

static const unsigned char v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Both addresses known and of one family: that family, else 0. */
static int family_of(const struct sockaddr *src, const struct sockaddr *dst) {
  if (src == NULL || dst == NULL || src->sa_family != dst->sa_family)
    return 0;
  return src->sa_family == AF_INET || src->sa_family == AF_INET6 ? src->sa_family : 0;
}

static int write_v1(int fam, const struct sockaddr *src, const struct sockaddr *dst, char *out) {
  char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
  int n;

  if (fam == 0) {
    memcpy(out, "PROXY UNKNOWN\r\n", 15);
    return 15;
  }
  if (fam == AF_INET) {
    const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
    inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
    inet_ntop(AF_INET, &d->sin_addr, b, sizeof(b));
    n = snprintf(out, NP_PP_WRITE_MAX, "PROXY TCP4 %s %s %u %u\r\n", a, b, ntohs(s->sin_port),
                 ntohs(d->sin_port));
  } else {
    const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
    inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
    inet_ntop(AF_INET6, &d->sin6_addr, b, sizeof(b));
    n = snprintf(out, NP_PP_WRITE_MAX, "PROXY TCP6 %s %s %u %u\r\n", a, b, ntohs(s->sin6_port),
                 ntohs(d->sin6_port));
  }
  return n > 0 && n < NP_PP_WRITE_MAX ? n : UV_EINVAL;
}

static int write_v2(int fam, int udp, const struct sockaddr *src, const struct sockaddr *dst,
                    char *out) {
  unsigned char *p = (unsigned char *)out;
  uint16_t len = 0;

  memcpy(p, v2_sig, sizeof(v2_sig));
  p[12] = fam == 0 ? 0x20 : 0x21; /* version 2; LOCAL, or PROXY */
  if (fam == AF_INET) {
    const struct sockaddr_in *s = (const void *)src, *d = (const void *)dst;
    p[13] = udp ? 0x12 : 0x11;
    memcpy(p + 16, &s->sin_addr, 4);
    memcpy(p + 20, &d->sin_addr, 4);
    memcpy(p + 24, &s->sin_port, 2);
    memcpy(p + 26, &d->sin_port, 2);
    len = 12;
  } else if (fam == AF_INET6) {
    const struct sockaddr_in6 *s = (const void *)src, *d = (const void *)dst;
    p[13] = udp ? 0x22 : 0x21;
    memcpy(p + 16, &s->sin6_addr, 16);
    memcpy(p + 32, &d->sin6_addr, 16);
    memcpy(p + 48, &s->sin6_port, 2);
    memcpy(p + 50, &d->sin6_port, 2);
    len = 36;
  } else {
    p[13] = 0x00; /* UNSPEC: the receiver keeps the connection's own addresses */
  }
  p[14] = (unsigned char)(len >> 8);
  p[15] = (unsigned char)len;
  return 16 + len;
}

int np__pp_write(int version, int udp, const struct sockaddr *src, const struct sockaddr *dst,
                 char out[NP_PP_WRITE_MAX]) {
  int fam = family_of(src, dst);
  if (version == 1 && !udp)
    return write_v1(fam, src, dst, out);
  if (version == 2)
    return write_v2(fam, udp, src, dst, out);
  return UV_EINVAL;
}
