/* The server's users file (docs/config.md "Users file"): one [NAME] section per client with its own
 * token, the ports it may open and how many proxies. */
#ifndef NP_USERS_H
#define NP_USERS_H

#include <stddef.h>

#include "config.h"

typedef struct np__user {
  char name[NP_MSG_NAME_MAX + 1];
  char token[256];
  np__ports ports;    /* narrows the server's allow_ports; n == 0: no narrowing */
  size_t max_proxies; /* SIZE_MAX: the server's max_proxies_per_client */
} np__user;

typedef struct np__users np__users;

/* Parse path. Returns 0 and *out (with one reference, the caller's), or NP_ECONFIG / a UV_E* open
 * error with "FILE:LINE: why" in err. *out is untouched on failure. */
int np__users_load(const char *path, np__users **out, char *err, size_t errlen);
/* NULL when name has no section. The pointer lives as long as a reference to users. */
const np__user *np__users_find(const np__users *users, const char *name);
size_t np__users_count(const np__users *users);
/* A table is read-only once loaded and may be shared by several loops' threads: each holder keeps
 * a reference (atomic), so a reload can swap in a new table and drop the old one while a session
 * elsewhere still points into it. ref returns users; unref frees it with the last reference (NULL
 * is fine for both). */
np__users *np__users_ref(np__users *users);
void np__users_unref(np__users *users);
/* References held now (0 for NULL): for tests. */
int np__users_refs(const np__users *users);

#endif
