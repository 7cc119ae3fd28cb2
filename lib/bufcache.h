/* A cache of equal-sized relay buffers, owned by one server or client. Freed chunks go back to the
 * cache (up to a bound) instead of to malloc, which would hand their pages back to the kernel and
 * fault them in again on the next read: that cost ~12% of a relay's CPU (docs/performance.md). */
#ifndef NP_BUFCACHE_H
#define NP_BUFCACHE_H

#include <stddef.h>

#include "splice.h"

typedef struct np__bufcache {
  void *free;      /* singly linked through the first word of each chunk */
  size_t count;    /* chunks in the cache */
  size_t max;      /* bound: at most max * size bytes are kept */
  size_t size;     /* bytes per chunk */
  char *scratch;   /* one chunk-sized read buffer, reused by every read of the owner's loop */
  np__pipes pipes; /* for the zero-copy relay (splice.h); off unless the owner turns it on */
} np__bufcache;

/* How many relay chunks a server or client keeps for reuse: 64 x 64 KiB = 4 MiB at most. */
#define NP_RELAY_CACHE 64

void np__bufcache_init(np__bufcache *c, size_t size, size_t max);
/* A chunk of c->size bytes, or NULL when out of memory. */
void *np__bufcache_get(np__bufcache *c);
void np__bufcache_put(np__bufcache *c, void *chunk);
void np__bufcache_clear(np__bufcache *c);
/* The shared read buffer (c->size bytes), or NULL when out of memory. Its contents are only good
 * until the next read on the same loop: a relay writes them on at once, or copies what it must
 * keep. */
char *np__bufcache_scratch(np__bufcache *c);

#endif
