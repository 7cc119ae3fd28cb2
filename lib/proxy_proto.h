/* The PROXY protocol (haproxy's proxy-protocol.txt, versions 1 and 2): the header that tells a
 * service behind a relay who the visitor is. np-client writes one towards the local service before
 * the visitor's bytes (proxy_protocol_version); np-server reads one from a load balancer in front
 * of it (proxy_protocol_from). Pure: bytes in, bytes out. */
#ifndef NP_PROXY_PROTO_H
#define NP_PROXY_PROTO_H

#include <stddef.h>
#include <sys/socket.h>

#include "natproxy/error.h"

/* The longest header np__pp_write makes: v1 with two IPv6 addresses is 104 bytes (the spec's
 * 107 with room for the longest form), v2 with them 16 + 36. */
#define NP_PP_WRITE_MAX 108

/* Write the header of the given version (1 or 2) saying a connection (udp 0) or datagrams (udp
 * 1, v2 only) came from src to dst into out. src or dst NULL, of a family other than IPv4/IPv6, or
 * of different families: v1 says "PROXY UNKNOWN", v2 sends the LOCAL command (the service then uses
 * the connection's own addresses). Returns the header's length, or UV_EINVAL (a version other than
 * 1 or 2, or v1 with udp). */
int np__pp_write(int version, int udp, const struct sockaddr *src, const struct sockaddr *dst,
                 char out[NP_PP_WRITE_MAX]);

/* ---- reading (a load balancer's header, proxy_protocol_from) --------------------------------- */

/* The most bytes a header np__pp_parse accepts may take: v1's 107, or v2's 16-byte head and up to
 * 512 bytes of addresses and TLVs (more is NP_ETOOBIG). A caller that peeks at a connection needs
 * no more than this many bytes to get an answer. */
#define NP_PP_READ_MAX (16 + 512)

enum np__pp_result {
  NP_PP_MORE = 0, /* a header may still come: more bytes needed */
  NP_PP_DONE = 1, /* a whole header: see np__pp_header */
  NP_PP_NONE = 2  /* the bytes are not a PROXY header at all */
};

typedef struct np__pp_header {
  int version;                 /* 1 or 2 */
  size_t len;                  /* its bytes: the payload starts after them */
  int has_addrs;               /* 0: UNKNOWN / LOCAL / UNSPEC / UNIX: keep the connection's own */
  int udp;                     /* v2 DGRAM */
  struct sockaddr_storage src; /* the client's address, when has_addrs */
  struct sockaddr_storage dst; /* where it connected to, when has_addrs */
} np__pp_header;

/* Look at the first len bytes of a connection (all of them each time: a caller peeking with
 * MSG_PEEK gets the stream's start again). Returns NP_PP_MORE, NP_PP_DONE (*out filled),
 * NP_PP_NONE, NP_EPROTO (it starts as a PROXY header and breaks the format) or NP_ETOOBIG (a v1
 * line with no CRLF in 107 bytes, a v2 header over NP_PP_READ_MAX). */
int np__pp_parse(const char *data, size_t len, np__pp_header *out);

#endif
