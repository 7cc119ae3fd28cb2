/* The datagram path's packets as an attacker sends them: any bytes at the server's UDP port go to
 * np__seal_open under a live session's keys, and must be refused without a crash, a leak or a read
 * out of bounds; the window must stay consistent (a packet the real client seals after the garbage
 * still opens, exactly once). The input's first byte also picks a counter to forge, so forgeries
 * that carry plausible counters around the window are tried too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "udp_seal.h"

static const unsigned char master[NP_SEAL_MASTER] = "fuzz-master-fuzz-master-fuzz-ma";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static np__seal cli, srv;
  static int ready;
  static char buf[NP_SEAL_MAX];
  uint64_t flow;
  char *payload;
  size_t plen;
  int type, n;

  if (!ready) {
    if (np__seal_init(&cli, master, 77, 0) != 0 || np__seal_init(&srv, master, 77, 1) != 0)
      abort();
    ready = 1;
  }
  if (size > sizeof(buf))
    size = sizeof(buf);
  memcpy(buf, data, size);
  if (size >= NP_SEAL_HDR && size > 0 && (data[0] & 0x80)) {
    /* keep the session id right and put the counter near the window */
    memcpy(buf + 1, "\0\0\0\0\0\0\0\x4d", 8);
    buf[16] = (char)(cli.tx_next + (data[size - 1] & 7) - 4);
  }
  if (np__seal_open(&srv, buf, size, &type, &flow, &payload, &plen) == 0)
    abort(); /* nobody but cli can seal for srv */
  /* The real client's next packet still opens, once. */
  n = np__seal_pack(&cli, NP_SEAL_DATA, 5, (const char *)data, size < 100 ? size : 100, buf);
  if (n < 0 || np__seal_open(&srv, buf, (size_t)n, &type, &flow, &payload, &plen) != 0 ||
      flow != 5 || memcmp(payload, data, plen) != 0)
    abort();
  if (np__seal_open(&srv, buf, (size_t)n, &type, &flow, &payload, &plen) != NP_SEAL_EREPLAY)
    abort();
  return 0;
}
