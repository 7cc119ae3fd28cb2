/* Login and work-connection proofs (docs/protocol.md §auth). No I/O. */
#ifndef NP_AUTH_H
#define NP_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "natproxy/codec.h"

/* Fresh random bytes from OpenSSL's CSPRNG. Return 0 or UV_EIO. */
int np__auth_nonce(unsigned char out[NP_MSG_KEY_LEN]);
int np__auth_random(void *buf, size_t len);
/* The client's login proof: HMAC-SHA256(token, "np-login-1" | server nonce | client nonce | name).
 * The server's nonce is fresh per connection, so a recorded proof is worthless later. */
int np__auth_login_mac(const char *token, const unsigned char snonce[NP_MSG_KEY_LEN],
                       const unsigned char cnonce[NP_MSG_KEY_LEN], const char *name,
                       unsigned char out[NP_MSG_KEY_LEN]);
/* A server's proof to another of its cluster (PEER): HMAC-SHA256(cluster_token, "np-peer-1" |
 * server nonce | its nonce | its cluster_advertise). Another label than a client's login, so that
 * neither proof passes for the other even where the two tokens are the same. */
int np__auth_peer_mac(const char *cluster_token, const unsigned char snonce[NP_MSG_KEY_LEN],
                      const unsigned char cnonce[NP_MSG_KEY_LEN], const char *advertise,
                      unsigned char out[NP_MSG_KEY_LEN]);
/* The per-session secret both sides derive after login; never on the wire. */
int np__auth_session_key(const char *token, const unsigned char snonce[NP_MSG_KEY_LEN],
                         const unsigned char cnonce[NP_MSG_KEY_LEN], const char *name,
                         unsigned char out[NP_MSG_KEY_LEN]);
/* Proof on a work connection: HMAC-SHA256(session key, "np-work-1" | session id | visitor id). */
int np__auth_work_mac(const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t visitor,
                      unsigned char out[NP_MSG_KEY_LEN]);
/* Proof on a pre-opened work connection: HMAC-SHA256(session key, "np-idle-1" | session | serial).
 * The server accepts each serial once (a sliding window), so a recorded proof cannot be replayed.
 */
int np__auth_idle_mac(const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t serial,
                      unsigned char out[NP_MSG_KEY_LEN]);
/* A private proxy's verifier (type = stcp, sudp): HMAC-SHA256(secret_key, "np-stcp-1" | the
 * proxy's full name "OWNER.PROXY"). The owner sends the server this, never the key itself, so a
 * server's logs or memory give away no secret a user may have chosen for other things too; bound to
 * the name, one proxy's verifier opens no other. */
int np__auth_stcp_verifier(const char *secret_key, const char *name,
                           unsigned char out[NP_MSG_KEY_LEN]);
/* A visitor's proof (VISIT): HMAC-SHA256(verifier, "np-visit-1" | session key | session id |
 * serial | kind | name): only a client of that session that holds the proxy's secret can make it,
 * and the serial (a sliding window, as WORK_IDLE's) keeps a recorded one from being replayed. */
int np__auth_visit_mac(const unsigned char verifier[NP_MSG_KEY_LEN],
                       const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t serial,
                       uint8_t kind, const char *name, unsigned char out[NP_MSG_KEY_LEN]);
/* A visitor's proof of its session (VISIT's nonce), checked before anything about the proxy is
 * looked up or said: HMAC-SHA256(session key, "np-visit-0" | session | serial | kind | name). */
int np__auth_visit_session_mac(const unsigned char key[NP_MSG_KEY_LEN], uint64_t session,
                               uint64_t serial, uint8_t kind, const char *name,
                               unsigned char out[NP_MSG_KEY_LEN]);
/* A direct path's proof of the secret (DIRECT): as VISIT's, labelled "np-direct1", so that one is
 * never the other. */
int np__auth_direct_mac(const unsigned char verifier[NP_MSG_KEY_LEN],
                        const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t serial,
                        uint8_t kind, const char *name, unsigned char out[NP_MSG_KEY_LEN]);
/* The server's token on a DIRECT_INTRO (server_direct.c): HMAC-SHA256(server key, "np-direct0" |
 * path key | path id | the visitor's session | the owner's session | the visitor's name). It comes
 * back with the owner's answer, so the server keeps no state per introduction and an owner can
 * answer only the introductions it was given, with the key it was given. */
int np__auth_direct_token(const unsigned char server_key[NP_MSG_KEY_LEN],
                          const unsigned char path_key[NP_MSG_KEY_LEN], uint64_t path,
                          uint64_t visitor, uint64_t owner, const char *visitor_name,
                          unsigned char out[NP_MSG_KEY_LEN]);
/* Constant-time equality of two proofs. */
int np__auth_equal(const unsigned char a[NP_MSG_KEY_LEN], const unsigned char b[NP_MSG_KEY_LEN]);

#endif
