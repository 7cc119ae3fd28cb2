/* The last few failed logins, for an operator to see (the admin API's /api/v1/logins/failed and the
 * dashboard): a fixed ring, so a storm of guesses costs nothing more than its last entries. The
 * counters (logins_failed, logins_throttled) say how many there were in all. Not installed. */
#ifndef NP_LOGIN_FAILS_H
#define NP_LOGIN_FAILS_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "natproxy/codec.h"

#define NP_LOGIN_FAILS_MAX 32 /* entries kept; older ones are overwritten */

typedef struct np__login_fail {
  uint64_t unix_ms;               /* wall clock, for people */
  uint64_t loop_ms;               /* the loop's clock, for "how long ago" */
  char addr[64];                  /* "IP:PORT", "[IPv6]:PORT", "?" when not known */
  char name[NP_MSG_NAME_MAX + 1]; /* the client name tried: "" when none was sent */
  char why[96];                   /* printable ASCII */
} np__login_fail;

typedef struct np__login_fails {
  np__login_fail ring[NP_LOGIN_FAILS_MAX];
  uint64_t total; /* entries ever added: the next one goes to ring[total % MAX] */
} np__login_fails;

/* Remember a failed login from addr (family 0: not known) at loop time now. name (may be NULL) and
 * why are copied, cut to fit; a name that is not printable UTF-8 (a refused one) is kept with its
 * other bytes as '?', so that whatever reads the ring may hand it on as text. */
void np__login_fails_add(np__login_fails *l, uint64_t now, const struct sockaddr *addr,
                         const char *name, const char *why);
/* The i-th most recent (0: the newest); NULL when there are not that many. */
const np__login_fail *np__login_fails_get(const np__login_fails *l, size_t i);

#endif
