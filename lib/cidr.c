/* Prefix lists over 128-bit keys: IPv4 networks become ::ffff:0:0/96 networks, so one comparison
 * serves both families and dual-stack sockets. */
#include "cidr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int prefix_match(const unsigned char *a, const unsigned char *net, unsigned bits) {
  unsigned full = bits / 8, rest = bits % 8;

  if (memcmp(a, net, full) != 0)
    return 0;
  return rest == 0 || ((a[full] ^ net[full]) & (0xff00 >> rest) & 0xff) == 0;
}

static int parse_one(char *tok, np__cidrs *out, char *err, size_t errlen) {
  struct sockaddr_storage ss;
  char *slash = strchr(tok, '/');
  unsigned long bits;
  unsigned max;
  char *end;
  int v4;

  if (slash != NULL)
    *slash = '\0';
  memset(&ss, 0, sizeof(ss));
  v4 = uv_ip4_addr(tok, 0, (struct sockaddr_in *)&ss) == 0;
  if (!v4 && uv_ip6_addr(tok, 0, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, errlen, "allow_ips: '%s' is not an IP address", tok);
    return NP_ECONFIG;
  }
  max = v4 ? 32 : 128;
  bits = max;
  if (slash != NULL) {
    bits = slash[1] >= '0' && slash[1] <= '9' ? strtoul(slash + 1, &end, 10) : max + 1;
    if (bits > max || *end != '\0') {
      snprintf(err, errlen, "allow_ips: '%s/%s' has a bad prefix length (0 to %u)", tok, slash + 1,
               max);
      return NP_ECONFIG;
    }
  }
  if (out->n == NP_CIDR_MAX) {
    snprintf(err, errlen, "allow_ips: more than %d networks", NP_CIDR_MAX);
    return NP_ECONFIG;
  }
  np__addr_key16((struct sockaddr *)&ss, out->v[out->n].addr);
  out->v[out->n].bits = (uint8_t)(v4 ? bits + 96 : bits);
  /* Clear host bits, so 10.1.2.3/8 means 10.0.0.0/8 as users mean it. */
  for (unsigned i = out->v[out->n].bits; i < 128; i++)
    out->v[out->n].addr[i / 8] &= (unsigned char)~(0x80 >> (i % 8));
  out->n++;
  return 0;
}

int np__cidrs_parse(const char *s, np__cidrs *out, char *err, size_t errlen) {
  char buf[1024];
  char *save = NULL, *tok;

  out->n = 0;
  if (np__strlcpy(buf, s, sizeof(buf)) != 0) {
    snprintf(err, errlen, "allow_ips: list too long");
    return NP_ECONFIG;
  }
  for (tok = strtok_r(buf, ", \t", &save); tok != NULL; tok = strtok_r(NULL, ", \t", &save))
    if (parse_one(tok, out, err, errlen) != 0) {
      out->n = 0;
      return NP_ECONFIG;
    }
  if (out->n == 0) {
    snprintf(err, errlen, "allow_ips: empty list");
    return NP_ECONFIG;
  }
  return 0;
}

int np__cidrs_allow(const np__cidrs *c, const struct sockaddr *sa) {
  unsigned char a[16];

  if (c->n == 0)
    return 1;
  if (np__addr_key16(sa, a) != 0)
    return 0;
  for (size_t i = 0; i < c->n; i++)
    if (prefix_match(a, c->v[i].addr, c->v[i].bits))
      return 1;
  return 0;
}
