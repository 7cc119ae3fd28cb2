/* STUN (RFC 8489) as far as NAT traversal needs it: Binding requests, and the responses that tell
 * a host which address and port its NAT mapped it to (XOR-MAPPED-ADDRESS). A protocol core with no
 * I/O (docs/design.md): bytes in, a parsed message out; a message to send, into the caller's
 * buffer. The parser reads no byte past len, bounds every attribute by the message's own length,
 * allocates nothing and keeps nothing. Not installed. */
#ifndef NP_STUN_H
#define NP_STUN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NP_STUN_HDR_LEN 20
#define NP_STUN_TID_LEN 12
#define NP_STUN_COOKIE  0x2112A442u
/* What np__stun_request and np__stun_response write at most: a header, XOR-MAPPED-ADDRESS of an
 * IPv6 address and FINGERPRINT. */
#define NP_STUN_BUILD_MAX 64

enum {
  NP_STUN_BINDING_REQUEST = 0x0001,
  NP_STUN_BINDING_SUCCESS = 0x0101,
  NP_STUN_BINDING_ERROR = 0x0111,
};

typedef struct np__stun {
  uint16_t type; /* message class and method, as on the wire (NP_STUN_BINDING_*, or another) */
  unsigned char tid[NP_STUN_TID_LEN];
  /* XOR-MAPPED-ADDRESS (RFC 8489), or the older MAPPED-ADDRESS when there is no XOR one;
   * ss_family 0: neither. */
  struct sockaddr_storage mapped;
  int error;        /* ERROR-CODE: class * 100 + number (0: none) */
  uint16_t unknown; /* a comprehension-required attribute we do not know (the first; 0: none) */
  unsigned fingerprint : 1; /* FINGERPRINT was there (and matched: else the parse fails) */
} np__stun;

/* Whether len bytes look like a STUN message: the two top bits zero, the magic cookie, a length
 * that is the rest of the datagram and a multiple of four. A demultiplexer's test (RFC 7983), made
 * before anything is parsed: the datagram path's sealed packets never pass it but by a chance of
 * 2^-32 (and then fail the parse or the type). */
int np__stun_is(const void *buf, size_t len);
/* Parse one message: 0, or NP_EPROTO (not STUN; an attribute that overruns the message; an
 * address attribute of the wrong size or family; FINGERPRINT that does not match, or is not last).
 * Attributes after MESSAGE-INTEGRITY but FINGERPRINT are ignored, as RFC 8489 says. */
int np__stun_parse(const void *buf, size_t len, np__stun *out);
/* A Binding request with transaction id tid, and FINGERPRINT, into out (cap bytes): its length,
 * or UV_ENOBUFS. */
int np__stun_request(const unsigned char tid[NP_STUN_TID_LEN], void *out, size_t cap);
/* The Binding success response to tid: mapped (AF_INET or AF_INET6) as XOR-MAPPED-ADDRESS, and
 * FINGERPRINT. Its length, UV_ENOBUFS, or UV_EAFNOSUPPORT. */
int np__stun_response(const unsigned char tid[NP_STUN_TID_LEN], const struct sockaddr *mapped,
                      void *out, size_t cap);

#endif
