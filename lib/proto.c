/* What both ends of a session do alike (proto.h). */
#include <stdint.h>
#include <string.h>

#include "proto.h"

#include "tls.h"

int np__datagram_master(np_conn *c, int tls_on, const unsigned char key[NP_MSG_KEY_LEN],
                        unsigned char master[NP_SEAL_MASTER]) {
  int r = np__tls_export(c, NP_UDP_EXPORTER_LABEL, master, NP_SEAL_MASTER);

  if (r != 0 && !tls_on) {
    memcpy(master, key, NP_SEAL_MASTER < NP_MSG_KEY_LEN ? NP_SEAL_MASTER : NP_MSG_KEY_LEN);
    r = 0;
  }
  return r;
}

enum np__heartbeat np__heartbeat_due(uint64_t now, uint64_t last_rx, uint64_t last_tx,
                                     uint64_t interval, uint64_t timeout, int watch_peer,
                                     int send_pings, uint64_t *next) {
  *next = UINT64_MAX;
  if (send_pings)
    *next = last_tx + interval;
  if (watch_peer && last_rx + timeout < *next)
    *next = last_rx + timeout;
  /* Death first: a peer silent for the timeout is not pinged once more. */
  if (watch_peer && now - last_rx >= timeout)
    return NP_HEARTBEAT_DEAD;
  if (send_pings && now - last_tx >= interval)
    return NP_HEARTBEAT_PING;
  return NP_HEARTBEAT_NONE;
}
