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

/* ---- reading ------------------------------------------------------------------------------- */

#define V1_MAX 107

/* A decimal port: 0-65535, no sign, no leading zero but "0" itself. */
static int parse_port(const char *s, uint16_t *out) {
  unsigned long v = 0;
  size_t n = strlen(s);

  if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
    return -1;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  if (v > 65535)
    return -1;
  *out = (uint16_t)v;
  return 0;
}

static int put_addr(int fam, const char *ip, const char *port, struct sockaddr_storage *ss) {
  uint16_t p;

  memset(ss, 0, sizeof(*ss));
  if (parse_port(port, &p) != 0)
    return -1;
  if (fam == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(p);
    return inet_pton(AF_INET, ip, &in->sin_addr) == 1 ? 0 : -1;
  }
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(p);
  return inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1 ? 0 : -1;
}

static int parse_v1(const char *data, size_t len, np__pp_header *out) {
  char line[V1_MAX + 1], *f[6], *save = NULL;
  const char *crlf = NULL;
  int n = 0, fam;

  for (size_t i = 0; i < len && i + 1 < V1_MAX; i++) {
    /* A bare LF is broken at once: after UNKNOWN it would let the line run on into the payload */
    if (data[i] == '\n')
      return NP_EPROTO;
    if (data[i] == '\r' && i + 1 < len) {
      if (data[i + 1] != '\n')
        return NP_EPROTO;
      crlf = data + i;
      break;
    }
  }
  if (crlf == NULL)
    return len >= V1_MAX ? NP_ETOOBIG : NP_PP_MORE;
  memcpy(line, data, (size_t)(crlf - data));
  line[crlf - data] = '\0';
  if (memchr(line, '\0', (size_t)(crlf - data)) != NULL)
    return NP_EPROTO;
  memset(out, 0, sizeof(*out));
  out->version = 1;
  out->len = (size_t)(crlf - data) + 2;
  /* "PROXY" and one space-separated word after another; single spaces only. */
  for (char *w = strtok_r(line, " ", &save); w != NULL && n < 6; w = strtok_r(NULL, " ", &save))
    f[n++] = w;
  if (n < 2 || strcmp(f[0], "PROXY") != 0)
    return NP_EPROTO;
  if (strcmp(f[1], "UNKNOWN") == 0)
    return NP_PP_DONE; /* anything may follow UNKNOWN */
  if (strcmp(f[1], "TCP4") == 0)
    fam = AF_INET;
  else if (strcmp(f[1], "TCP6") == 0)
    fam = AF_INET6;
  else
    return NP_EPROTO;
  if (n != 6 || put_addr(fam, f[2], f[4], &out->src) != 0 ||
      put_addr(fam, f[3], f[5], &out->dst) != 0)
    return NP_EPROTO;
  /* Exactly six fields, one space between each (strtok ran over runs of spaces and stopped at
   * six): the spec's grammar, and no room for a smuggled seventh. */
  if ((size_t)snprintf(NULL, 0, "PROXY %s %s %s %s %s", f[1], f[2], f[3], f[4], f[5]) !=
      out->len - 2)
    return NP_EPROTO;
  out->has_addrs = 1;
  return NP_PP_DONE;
}

static int parse_v2(const unsigned char *p, size_t len, np__pp_header *out) {
  size_t body, need;
  unsigned cmd, fam, proto;

  if (len < 16)
    return NP_PP_MORE;
  if ((p[12] >> 4) != 2)
    return NP_EPROTO;
  cmd = p[12] & 0x0F;
  fam = p[13] >> 4;
  proto = p[13] & 0x0F;
  body = (size_t)p[14] << 8 | p[15];
  if (cmd > 1 || fam > 3 || proto > 2)
    return NP_EPROTO;
  if (16 + body > NP_PP_READ_MAX)
    return NP_ETOOBIG;
  if (len < 16 + body)
    return NP_PP_MORE;
  memset(out, 0, sizeof(*out));
  out->version = 2;
  out->len = 16 + body;
  need = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
  if (body < need)
    return NP_EPROTO;
  if (cmd == 0 || proto == 0 || fam == 0 || fam == 3)
    return NP_PP_DONE; /* LOCAL, UNSPEC, or AF_UNIX: no address we can use */
  out->udp = proto == 2;
  out->has_addrs = 1;
  if (fam == 1) {
    struct sockaddr_in *s = (struct sockaddr_in *)&out->src, *d = (struct sockaddr_in *)&out->dst;
    s->sin_family = d->sin_family = AF_INET;
    memcpy(&s->sin_addr, p + 16, 4);
    memcpy(&d->sin_addr, p + 20, 4);
    memcpy(&s->sin_port, p + 24, 2);
    memcpy(&d->sin_port, p + 26, 2);
  } else {
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
    struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
    s->sin6_family = d->sin6_family = AF_INET6;
    memcpy(&s->sin6_addr, p + 16, 16);
    memcpy(&d->sin6_addr, p + 32, 16);
    memcpy(&s->sin6_port, p + 48, 2);
    memcpy(&d->sin6_port, p + 50, 2);
  }
  return NP_PP_DONE; /* TLVs after the addresses are skipped: nothing here needs them */
}

int np__pp_parse(const char *data, size_t len, np__pp_header *out) {
  size_t n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);

  if (memcmp(data, v2_sig, n) == 0)
    return len < sizeof(v2_sig) ? NP_PP_MORE : parse_v2((const unsigned char *)data, len, out);
  n = len < 6 ? len : 6;
  if (memcmp(data, "PROXY ", n) == 0)
    return len < 6 ? NP_PP_MORE : parse_v1(data, len, out);
  return NP_PP_NONE;
}
