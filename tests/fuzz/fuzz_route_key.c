/* libFuzzer: the names of the route store's keys (lib/route_store.c, np__route_key_parse), which
 * a server reads back from Redis: whatever else writes there must not make it read out of bounds
 * or keep a route it cannot name. A key it accepts is whole again once its parts are put back
 * together, and each part is a C string within its bound. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route_store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char route[NP_ROUTE_KEY_MAX], owner[NP_HOSTPORT_MAX], again[NP_ROUTE_KEY_MAX + NP_HOSTPORT_MAX];
  char *key = malloc(size > 0 ? size : 1); /* exactly size bytes: a read beyond them is caught */

  if (key == NULL)
    abort();
  memcpy(key, data, size);
  if (np__route_key_parse(key, size, route, owner) == 0) {
    if (strlen(route) >= sizeof(route) || strlen(owner) >= sizeof(owner))
      abort();
    snprintf(again, sizeof(again), "%s@%s", route, owner);
    if (strlen(again) != size || memcmp(again, key, size) != 0)
      abort();
  }
  free(key);
  return 0;
}
