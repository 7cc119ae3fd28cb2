/* The PROXY protocol (haproxy's proxy-protocol.txt, versions 1 and 2): the header that tells a
 * service behind a relay who the visitor is. np-client writes one towards the local service before
 * the visitor's bytes (proxy_protocol_version); np-server reads one from a load balancer in front
 * of it (proxy_protocol_from). Pure: bytes in, bytes out. */
#ifndef NP_PROXY_PROTO_H
#define NP_PROXY_PROTO_H

#include <stddef.h>
#include <sys/socket.h>

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

#endif
