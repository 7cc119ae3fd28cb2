/* The users file: parsed whole into a sorted array (bsearch), so a reload swaps one pointer and a
 * bad file never leaves a half-read table behind. */
#include "users.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>
#include <openssl/crypto.h>
#include <uv.h>

#include "internal.h"

struct np__users {
  np__user *v;
  size_t n, cap;
  atomic_int refs;
};

typedef struct parse_state {
  np__users *u;
  char err[400];
} parse_state;

static int cmp_user(const void *a, const void *b) {
  return strcmp(((const np__user *)a)->name, ((const np__user *)b)->name);
}

static np__user *section_user(parse_state *ps, const char *section) {
  np__users *u = ps->u;

  if (u->n > 0 && strcmp(u->v[u->n - 1].name, section) == 0)
    return &u->v[u->n - 1];
  for (size_t i = 0; i < u->n; i++)
    if (strcmp(u->v[i].name, section) == 0) {
      snprintf(ps->err, sizeof(ps->err), "[%s] appears twice", section);
      return NULL;
    }
  if (u->n == u->cap) {
    size_t cap = u->cap ? u->cap * 2 : 16;
    np__user *v = realloc(u->v, cap * sizeof(*v));
    if (v == NULL) {
      snprintf(ps->err, sizeof(ps->err), "out of memory");
      return NULL;
    }
    u->v = v;
    u->cap = cap;
  }
  memset(&u->v[u->n], 0, sizeof(u->v[0]));
  strcpy(u->v[u->n].name, section);
  u->v[u->n].max_proxies = SIZE_MAX;
  return &u->v[u->n++];
}

static int on_pair(void *arg, const char *section, const char *key, const char *value) {
  parse_state *ps = arg;
  np__user *user;

  if (ps->err[0] != '\0')
    return 1; /* keep the first error; inih reports its line */
  if (section[0] == '\0') {
    snprintf(ps->err, sizeof(ps->err), "'%s' appears before any [CLIENT_NAME] section", key);
    return 0;
  }
  if ((user = section_user(ps, section)) == NULL)
    return 0;
  if (strcmp(key, "token") == 0) {
    if (value[0] == '\0' || np__strlcpy(user->token, value, sizeof(user->token)) != 0) {
      snprintf(ps->err, sizeof(ps->err), "[%s] token: must be 1 to %zu bytes", section,
               sizeof(user->token) - 1);
      return 0;
    }
    return 1;
  }
  if (strcmp(key, "allow_ports") == 0)
    return np__ports_parse(key, value, &user->ports, ps->err, sizeof(ps->err)) == 0;
  if (strcmp(key, "max_proxies") == 0) {
    char *end;
    unsigned long n;
    errno = 0;
    n = value[0] >= '0' && value[0] <= '9' ? strtoul(value, &end, 10) : ULONG_MAX;
    if (n == ULONG_MAX || errno != 0 || *end != '\0' || n > NP_MAX_PROXIES) {
      snprintf(ps->err, sizeof(ps->err), "[%s] max_proxies: '%s' is not a number from 0 to %d",
               section, value, NP_MAX_PROXIES);
      return 0;
    }
    user->max_proxies = n;
    return 1;
  }
  snprintf(ps->err, sizeof(ps->err),
           "[%s]: unknown key '%s' (known: token, allow_ports, max_proxies)", section, key);
  return 0;
}

int np__users_load(const char *path, np__users **out, char *err, size_t errlen) {
  parse_state ps = {.err = ""};
  int r;

  if ((ps.u = calloc(1, sizeof(*ps.u))) == NULL)
    return UV_ENOMEM;
  atomic_init(&ps.u->refs, 1);
  r = np__ini_load(path, on_pair, &ps, ps.err, err, errlen);
  for (size_t i = 0; r == 0 && i < ps.u->n; i++)
    if (ps.u->v[i].token[0] == '\0') {
      snprintf(err, errlen, "%s: [%s] has no token", path, ps.u->v[i].name);
      r = NP_ECONFIG;
    }
  if (r != 0) {
    np__users_unref(ps.u);
    return r;
  }
  if (ps.u->n > 1)
    qsort(ps.u->v, ps.u->n, sizeof(ps.u->v[0]), cmp_user);
  *out = ps.u;
  return 0;
}

const np__user *np__users_find(const np__users *users, const char *name) {
  np__user key;

  if (users == NULL || users->n == 0 || np__strlcpy(key.name, name, sizeof(key.name)) != 0)
    return NULL;
  return bsearch(&key, users->v, users->n, sizeof(users->v[0]), cmp_user);
}

size_t np__users_count(const np__users *users) {
  return users != NULL ? users->n : 0;
}

np__users *np__users_ref(np__users *users) {
  if (users != NULL)
    atomic_fetch_add_explicit(&users->refs, 1, memory_order_relaxed);
  return users;
}

int np__users_refs(const np__users *users) {
  return users != NULL ? atomic_load(&((np__users *)users)->refs) : 0;
}

void np__users_unref(np__users *users) {
  /* acq_rel: whatever another holder did with the table happens before it is freed here. */
  if (users == NULL || atomic_fetch_sub_explicit(&users->refs, 1, memory_order_acq_rel) != 1)
    return;
  /* Tokens are secrets: do not leave them in freed memory. */
  if (users->v != NULL)
    OPENSSL_cleanse(users->v, users->cap * sizeof(users->v[0]));
  free(users->v);
  free(users);
}
