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

/* What a heartbeat timer has to do now (np__heartbeat_due). */
enum np__heartbeat {
  NP_HEARTBEAT_NONE, /* nothing yet */
  NP_HEARTBEAT_PING, /* we sent nothing for heartbeat_interval: send a PING */
  NP_HEARTBEAT_DEAD, /* the peer sent nothing for heartbeat_timeout: NP_EPEERDEAD */
};

/* The liveness rule of both ends (docs/protocol.md §Liveness), with no clock of its own: all times
 * are milliseconds on one clock, last_rx and last_tx when the peer last spoke and when we last
 * sent. DEAD once watch_peer is set and now - last_rx >= timeout; otherwise PING once send_pings is
 * set and now - last_tx >= interval; otherwise NONE. The two flags are each side's, from its
 * codec's capabilities. *next is when to look again, the earlier of last_tx + interval (send_pings)
 * and last_rx + timeout (watch_peer), UINT64_MAX with both off; it is computed from the times
 * given, so a caller that sends the ping asks again with its new last_tx for the deadline after it.
 */
enum np__heartbeat np__heartbeat_due(uint64_t now, uint64_t last_rx, uint64_t last_tx,
                                     uint64_t interval, uint64_t timeout, int watch_peer,
                                     int send_pings, uint64_t *next);

/* The datagram path's master key for a session logged in over c (for a multiplexed session, the
 * mux's transport): from c's TLS exporter, or in clear (tls_on 0) the session key, which only the
 * two ends know if the token is secret. Both ends derive it the same way. 0, or the exporter's
 * error. */
int np__datagram_master(np_conn *c, int tls_on, const unsigned char key[NP_MSG_KEY_LEN],
                        unsigned char master[NP_SEAL_MASTER]);

#endif
