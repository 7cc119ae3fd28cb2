/* Failed-login back-off per source address (docs/security.md): a few free attempts, then every
 * failure doubles the wait before that address may try again, up to a cap. The table has a fixed
 * size, so an attacker with many addresses costs memory once and then evicts its own entries. */
#ifndef NP_BACKOFF_H
#define NP_BACKOFF_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NP_BACKOFF_FREE_FAILURES 3    /* failures before the first wait */
#define NP_BACKOFF_SLOTS         4096 /* addresses remembered at once */

typedef struct np__backoff np__backoff;

/* base_ms 0 turns the back-off off (every call then reports no wait). */
int np__backoff_new(uint64_t base_ms, uint64_t max_ms, np__backoff **out);
void np__backoff_free(np__backoff *b);
/* New limits (a reload): waits already started run out as they were. */
void np__backoff_set(np__backoff *b, uint64_t base_ms, uint64_t max_ms);
/* Milliseconds sa must still wait at now; 0 if it may log in. An address of another family than
 * IPv4/IPv6 (unknown: family 0) never has a record, here or below. */
uint64_t np__backoff_wait(np__backoff *b, const struct sockaddr *sa, uint64_t now);
/* Count a failure from sa; returns the wait it starts (0 while attempts are still free). *fails
 * (optional) receives the failures counted for sa so far. */
uint64_t np__backoff_fail(np__backoff *b, const struct sockaddr *sa, uint64_t now, unsigned *fails);
/* A successful login from sa forgets its failures. */
void np__backoff_clear(np__backoff *b, const struct sockaddr *sa, uint64_t now);
/* Addresses with a record now (for tests and stats). */
size_t np__backoff_count(const np__backoff *b);

#endif
