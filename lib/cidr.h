/* Visitor allow lists: "10.0.0.0/8, 2001:db8::/32" (a proxy's allow_ips, docs/config.md). */
#ifndef NP_CIDR_H
#define NP_CIDR_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NP_CIDR_MAX 32 /* networks in one list */

typedef struct np__cidrs {
  struct {
    unsigned char addr[16]; /* IPv4 as IPv4-mapped IPv6, host bits cleared */
    uint8_t bits;           /* prefix length over those 128 bits */
  } v[NP_CIDR_MAX];
  size_t n; /* 0: everybody */
} np__cidrs;

/* Networks separated by commas and/or spaces; a bare address is one host. Returns 0, or NP_ECONFIG
 * with the reason in err. */
int np__cidrs_parse(const char *s, np__cidrs *out, char *err, size_t errlen);
/* Is sa in one of the networks (or is the list empty)? */
int np__cidrs_allow(const np__cidrs *c, const struct sockaddr *sa);

#endif
