/* libFuzzer: the STUN parser (lib/stun.c) on any bytes, which the server's datagram port takes
 * from anyone. What parses as a message with an address must come back the same through a built
 * response: the parser and the builder agree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  unsigned char b[NP_STUN_BUILD_MAX];
  np__stun m, back;
  int n;

  np__stun_is(data, size);
  if (np__stun_parse(data, size, &m) != 0 || m.mapped.ss_family == 0)
    return 0;
  if ((n = np__stun_response(m.tid, (struct sockaddr *)&m.mapped, b, sizeof(b))) <= 0)
    abort();
  if (np__stun_parse(b, (size_t)n, &back) != 0 ||
      !np__addr_equal((struct sockaddr *)&back.mapped, (struct sockaddr *)&m.mapped) ||
      memcmp(back.tid, m.tid, sizeof(m.tid)) != 0)
    abort();
  return 0;
}
