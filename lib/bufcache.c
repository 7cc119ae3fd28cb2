#include "bufcache.h"

#include <stdlib.h>

void np__bufcache_init(np__bufcache *c, size_t size, size_t max) {
  c->free = NULL;
  c->count = 0;
  c->max = max;
  c->size = size;
  c->scratch = NULL;
  np__pipes_init(&c->pipes, 0);
}

char *np__bufcache_scratch(np__bufcache *c) {
  if (c->scratch == NULL)
    c->scratch = malloc(c->size);
  return c->scratch;
}

void *np__bufcache_get(np__bufcache *c) {
  void *chunk = c->free;
  if (chunk == NULL)
    return malloc(c->size);
  c->free = *(void **)chunk;
  c->count--;
  return chunk;
}

void np__bufcache_put(np__bufcache *c, void *chunk) {
  if (c->count >= c->max) {
    free(chunk);
    return;
  }
  *(void **)chunk = c->free;
  c->free = chunk;
  c->count++;
}

void np__bufcache_clear(np__bufcache *c) {
  while (c->free != NULL) {
    void *next = *(void **)c->free;
    free(c->free);
    c->free = next;
  }
  c->count = 0;
  free(c->scratch);
  c->scratch = NULL;
  np__pipes_clear(&c->pipes);
}
