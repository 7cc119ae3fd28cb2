/* A fixed table searched linearly: at most NP_BACKOFF_SLOTS 24-byte records, compared only on
 * logins that fail and on login attempts, far cheaper than the TLS handshake before them. */
#include "backoff.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A record with no wait pending is forgotten this long after its last failure. */
#define FORGET_MS (15 * 60 * 1000)

typedef struct record {
  unsigned char key[16]; /* IPv4 (mapped) or the IPv6 /64 the address is in */
  uint32_t fails;
  uint64_t last;  /* time of the last failure; 0 = free slot */
  uint64_t until; /* no login before this */
} record;

struct np__backoff {
  uint64_t base_ms, max_ms;
  size_t used;
  record slots[NP_BACKOFF_SLOTS];
};

/* One key per IPv4 address and per IPv6 /64: a host with a v6 prefix has 2^64 addresses to try
 * from, but rarely more than one /64. */
static int make_key(const struct sockaddr *sa, unsigned char key[16]) {
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

  if (np__addr_key16(sa, key) != 0)
    return -1;
  if (memcmp(key, mapped, 12) != 0)
    memset(key + 8, 0, 8);
  return 0;
}

static int stale(const record *r, uint64_t now) {
  return r->last == 0 || (now >= r->until && now - r->last >= FORGET_MS);
}

static record *find(np__backoff *b, const unsigned char key[16], uint64_t now) {
  for (size_t i = 0; i < NP_BACKOFF_SLOTS; i++) {
    record *r = &b->slots[i];
    if (r->last != 0 && memcmp(r->key, key, 16) == 0) {
      if (stale(r, now)) {
        r->last = 0;
        b->used--;
        return NULL;
      }
      return r;
    }
  }
  return NULL;
}

int np__backoff_new(uint64_t base_ms, uint64_t max_ms, np__backoff **out) {
  np__backoff *b = calloc(1, sizeof(*b));

  if (b == NULL)
    return UV_ENOMEM;
  b->base_ms = base_ms;
  b->max_ms = max_ms < base_ms ? base_ms : max_ms;
  *out = b;
  return 0;
}

void np__backoff_set(np__backoff *b, uint64_t base_ms, uint64_t max_ms) {
  b->base_ms = base_ms;
  b->max_ms = max_ms < base_ms ? base_ms : max_ms;
}

void np__backoff_free(np__backoff *b) {
  free(b);
}

uint64_t np__backoff_wait(np__backoff *b, const struct sockaddr *sa, uint64_t now) {
  unsigned char key[16];
  record *r;

  if (b->base_ms == 0 || b->used == 0 || make_key(sa, key) != 0 || (r = find(b, key, now)) == NULL)
    return 0;
  return np__ms_left(r->until, now);
}

uint64_t np__backoff_fail(np__backoff *b, const struct sockaddr *sa, uint64_t now,
                          unsigned *fails) {
  unsigned char key[16];
  record *r;
  uint64_t wait;

  if (fails != NULL)
    *fails = 0;
  if (b->base_ms == 0 || make_key(sa, key) != 0)
    return 0;
  if ((r = find(b, key, now)) == NULL) {
    /* A free slot, or else the one whose last failure is oldest: an attacker flooding the table
     * from many addresses evicts its own records before anybody's it does not know. */
    record *victim = NULL;
    for (size_t i = 0; i < NP_BACKOFF_SLOTS; i++) {
      record *c = &b->slots[i];
      if (c->last == 0 || stale(c, now)) {
        if (c->last != 0) {
          c->last = 0;
          b->used--;
        }
        victim = c;
        break;
      }
      if (victim == NULL || c->last < victim->last)
        victim = c;
    }
    if (victim->last == 0)
      b->used++;
    r = victim;
    memset(r, 0, sizeof(*r));
    memcpy(r->key, key, 16);
  }
  r->fails++;
  r->last = now != 0 ? now : 1;
  if (fails != NULL)
    *fails = r->fails;
  if (r->fails <= NP_BACKOFF_FREE_FAILURES)
    return 0;
  wait = b->base_ms;
  for (uint32_t i = NP_BACKOFF_FREE_FAILURES + 1; i < r->fails && wait < b->max_ms; i++)
    wait *= 2;
  if (wait > b->max_ms)
    wait = b->max_ms;
  r->until = now + wait;
  return wait;
}

void np__backoff_clear(np__backoff *b, const struct sockaddr *sa, uint64_t now) {
  unsigned char key[16];
  record *r;

  if (b->base_ms == 0 || b->used == 0 || make_key(sa, key) != 0 || (r = find(b, key, now)) == NULL)
    return;
  r->last = 0;
  b->used--;
}

size_t np__backoff_count(const np__backoff *b) {
  return b->used;
}
