/* What both ends of a session agree on (docs/protocol.md): the protocol's version and the limits
 * and messages the server and the client build alike. */
#ifndef NP_PROTO_H
#define NP_PROTO_H

#include "natproxy/codec.h"

#include "conn.h"
#include "udp_seal.h"

#define PROTO_VERSION   1      /* docs/protocol.md §versions */
#define CTRL_MAX_QUEUED 262144 /* a peer that stops reading its control stream is cut off */

/* WORK_FAIL{id, status}: the client could not serve visitor id. */
static inline np_msg np__work_fail_msg(uint64_t id, int status) {
  np_msg m = {.type = NP_MSG_WORK_FAIL, .id = id, .status = status};
  return m;
}

/* The datagram path's master key for a session logged in over c (for a multiplexed session, the
 * mux's transport): from c's TLS exporter, or in clear (tls_on 0) the session key, which only the
 * two ends know if the token is secret. Both ends derive it the same way. 0, or the exporter's
 * error. */
int np__datagram_master(np_conn *c, int tls_on, const unsigned char key[NP_MSG_KEY_LEN],
                        unsigned char master[NP_SEAL_MASTER]);

#endif
