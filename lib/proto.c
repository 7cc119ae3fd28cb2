/* What both ends of a session do alike (proto.h). */
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
