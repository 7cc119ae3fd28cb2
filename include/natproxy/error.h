/* Error codes: 0 or negative. System errors are libuv's UV_E* codes; ours are in -7000..-7999. */
#ifndef NATPROXY_ERROR_H
#define NATPROXY_ERROR_H

#include <natproxy/common.h>

NP_BEGIN_DECLS

/* One list yields the enum, np_strerror() and np_err_name(). */
#define NP_ERRNO_MAP(XX)                                                                           \
  XX(PROTO, -7001, "malformed protocol message")                                                   \
  XX(TOOBIG, -7002, "message larger than the configured limit")                                    \
  XX(VERSION, -7003, "peer speaks an unsupported protocol version")                                \
  XX(AUTH, -7004, "authentication failed (wrong token or client name)")                            \
  XX(PORTDENIED, -7005, "port not allowed by the server's allow-ports")                            \
  XX(NAMETAKEN, -7006, "proxy name already in use")                                                \
  XX(POOLFULL, -7007, "too many visitors waiting for a work connection")                           \
  XX(CONFIG, -7008, "invalid configuration")                                                       \
  XX(UNSUPPORTED, -7009, "operation not supported by this codec")                                  \
  XX(PEERDEAD, -7010, "peer missed its heartbeats")                                                \
  XX(LOCALFAIL, -7011, "client could not reach its local service")                                 \
  XX(CLOSED, -7012, "peer closed the session")                                                     \
  XX(EXIST, -7013, "entry already exists")                                                         \
  XX(LIMIT, -7014, "limit reached")                                                                \
  XX(STATE, -7015, "operation not valid in the object's current state")                            \
  XX(NOPROXY, -7016, "no such proxy")                                                              \
  XX(TLS, -7017, "TLS failure (the log says why)")                                                 \
  XX(TLSVERIFY, -7018, "the server's certificate is not trusted (fingerprint or CA mismatch)")     \
  XX(TLSREQUIRED, -7019, "the peer requires TLS, but this side runs with --insecure")              \
  XX(NOTLS, -7020, "the peer does not speak TLS: both sides need the same --insecure setting")     \
  XX(BACKOFF, -7021, "too many failed logins from this address: wait and retry")                   \
  XX(NAMEINUSE, -7022, "another live client is logged in under this name")                         \
  XX(HOST, -7023, "HTTP request without a valid Host header (none, two, or not a host name)")      \
  XX(ALLREFUSED, -7024, "the server refused every proxy this client asked for")                    \
  XX(SECRET, -7025, "wrong secret_key for this private proxy")                                     \
  XX(DENIED, -7026, "this client may not visit that private proxy (its allow_users)")

typedef enum np_errno {
#define NP_ERR_ENUM_(name, value, text) NP_E##name = (value),
  NP_ERRNO_MAP(NP_ERR_ENUM_)
#undef NP_ERR_ENUM_
      NP_ERRNO_MAX_ = -7000
} np_errno;

/* Text for any code this library returns (ours or libuv's); never NULL. */
NP_EXPORT const char *np_strerror(int err);
/* Symbolic name ("NP_EAUTH", "EADDRINUSE"); never NULL. */
NP_EXPORT const char *np_err_name(int err);

NP_END_DECLS

#endif
