/* The state a server's loops share (server_shared.h): the access layer's tables behind one mutex,
 * a registry of names on Debian's uthash, and two atomic counts. The lock is taken per login,
 * proxy open or visitor, never per byte, and is never held across I/O: the port memory's file is
 * written from a copy. */
#include "server_shared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed allocation in HASH_ADD leaves the item out (hh.tbl NULL) rather than ending the
 * process; name_set checks it. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "auth.h"
#include "internal.h"

struct np__shared_name {
  char name[NP_MSG_NAME_MAX + 1];
  unsigned widx;
  uint64_t sid;
  uint64_t denied_ms;    /* when its worker last refused to let it go (0: never) */
  uint64_t denied_login; /* to the login of this instance id */
  char where[64];        /* the live client's address, for the refusal */
  UT_hash_handle hh;
};

int np__shared_new(uint64_t backoff_ms, uint64_t backoff_max_ms, np__shared **out) {
  np__shared *sh = calloc(1, sizeof(*sh));

  if (sh == NULL)
    return UV_ENOMEM;
  if (np__backoff_new(backoff_ms, backoff_max_ms, &sh->backoff) != 0)
    goto err_free;
  if (uv_mutex_init(&sh->mu) != 0)
    goto err_backoff;
  if (uv_rwlock_init(&sh->routes_rw) != 0)
    goto err_mu;
  for (int t = 0; t < NP_ROUTES_N; t++)
    if (np__http_routes_new(&sh->routes[t]) != 0)
      goto err_routes;
  if (np__auth_random(&sh->instance, sizeof(sh->instance)) != 0 ||
      np__auth_random(sh->direct_key, sizeof(sh->direct_key)) != 0)
    goto err_routes;
  sh->instance |= 1;
  atomic_init(&sh->clients, 0);
  atomic_init(&sh->pending, 0);
  *out = sh;
  return 0;
err_routes:
  for (int t = 0; t < NP_ROUTES_N; t++)
    np__http_routes_free(sh->routes[t]);
  uv_rwlock_destroy(&sh->routes_rw);
err_mu:
  uv_mutex_destroy(&sh->mu);
err_backoff:
  np__backoff_free(sh->backoff);
err_free:
  free(sh);
  return UV_ENOMEM;
}

struct np__shared_private {
  char name[NP_MSG_NAME_MAX + 1];
  np__private p;
  UT_hash_handle hh;
};

void np__shared_free(np__shared *sh) {
  np__shared_name *e, *tmp;
  np__shared_private *pe, *ptmp;

  if (sh == NULL)
    return;
  HASH_ITER(hh, sh->names, e, tmp) {
    HASH_DEL(sh->names, e);
    free(e);
  }
  HASH_ITER(hh, sh->privates, pe, ptmp) { /* proxies still open when the group went */
    HASH_DEL(sh->privates, pe);
    free(pe);
  }
  np__users_unref(sh->users);
  np__port_memory_free(sh->ports);
  np__backoff_free(sh->backoff);
  for (int t = 0; t < NP_ROUTES_N; t++)
    np__http_routes_free(sh->routes[t]); /* the owners are their proxies' */
  uv_rwlock_destroy(&sh->routes_rw);
  uv_mutex_destroy(&sh->mu);
  free(sh);
}

/* ---- failed logins -------------------------------------------------------------------------- */

void np__shared_backoff_set(np__shared *sh, uint64_t base_ms, uint64_t max_ms) {
  uv_mutex_lock(&sh->mu);
  np__backoff_set(sh->backoff, base_ms, max_ms);
  uv_mutex_unlock(&sh->mu);
}

uint64_t np__shared_backoff_wait(np__shared *sh, const struct sockaddr *sa, uint64_t now) {
  uint64_t wait;

  uv_mutex_lock(&sh->mu);
  wait = np__backoff_wait(sh->backoff, sa, now);
  uv_mutex_unlock(&sh->mu);
  return wait;
}

uint64_t np__shared_backoff_fail(np__shared *sh, const struct sockaddr *sa, uint64_t now,
                                 unsigned *fails) {
  uint64_t wait;

  uv_mutex_lock(&sh->mu);
  wait = np__backoff_fail(sh->backoff, sa, now, fails);
  uv_mutex_unlock(&sh->mu);
  return wait;
}

void np__shared_backoff_clear(np__shared *sh, const struct sockaddr *sa, uint64_t now) {
  uv_mutex_lock(&sh->mu);
  np__backoff_clear(sh->backoff, sa, now);
  uv_mutex_unlock(&sh->mu);
}

size_t np__shared_backoff_count(np__shared *sh) {
  size_t n;

  uv_mutex_lock(&sh->mu);
  n = np__backoff_count(sh->backoff);
  uv_mutex_unlock(&sh->mu);
  return n;
}

void np__shared_fails_add(np__shared *sh, uint64_t now, const struct sockaddr *addr,
                          const char *name, const char *why) {
  uv_mutex_lock(&sh->mu);
  np__login_fails_add(&sh->fails, now, addr, name, why);
  uv_mutex_unlock(&sh->mu);
}

void np__shared_fails_copy(np__shared *sh, np__login_fails *out) {
  uv_mutex_lock(&sh->mu);
  *out = sh->fails;
  uv_mutex_unlock(&sh->mu);
}

/* ---- port memory ---------------------------------------------------------------------------- */

void np__shared_ports_set(np__shared *sh, np__port_memory *m) {
  np__port_memory *old;

  uv_mutex_lock(&sh->mu);
  old = sh->ports;
  sh->ports = m;
  sh->ports_dirty = 0;
  uv_mutex_unlock(&sh->mu);
  np__port_memory_free(old);
}

int np__shared_ports_recall(np__shared *sh, const char *client, const char *proxy) {
  int port;

  uv_mutex_lock(&sh->mu);
  port = np__port_memory_recall(sh->ports, client, proxy); /* NULL: 0 */
  uv_mutex_unlock(&sh->mu);
  return port;
}

int np__shared_ports_note(np__shared *sh, const char *client, const char *proxy, int port) {
  int r;

  uv_mutex_lock(&sh->mu);
  r = np__port_memory_note(sh->ports, client, proxy, port); /* NULL: 0 */
  if (r == 1)
    sh->ports_dirty = 1;
  uv_mutex_unlock(&sh->mu);
  return r;
}

int np__shared_ports_clone(np__shared *sh, int force, np__port_memory **out) {
  int r = 0;

  *out = NULL;
  uv_mutex_lock(&sh->mu);
  if (sh->ports != NULL && (sh->ports_dirty || force) &&
      (r = np__port_memory_clone(sh->ports, out)) == 0)
    sh->ports_dirty = 0;
  uv_mutex_unlock(&sh->mu);
  return r;
}

/* ---- users file ----------------------------------------------------------------------------- */

void np__shared_users_set(np__shared *sh, np__users *users) {
  np__users *old;

  np__users_ref(users);
  uv_mutex_lock(&sh->mu);
  old = sh->users;
  sh->users = users;
  uv_mutex_unlock(&sh->mu);
  np__users_unref(old); /* outside the lock: it may free the table */
}

np__users *np__shared_users_get(np__shared *sh) {
  np__users *u;

  /* Under the lock: between reading the pointer and taking the reference, a set elsewhere could
   * otherwise drop the last reference. */
  uv_mutex_lock(&sh->mu);
  u = np__users_ref(sh->users);
  uv_mutex_unlock(&sh->mu);
  return u;
}

/* ---- names ---------------------------------------------------------------------------------- */

/* Set name's entry; with exclusive, only when no other worker holds it (UV_EEXIST then). */
static int name_put(np__shared *sh, const char *name, unsigned widx, uint64_t sid, int exclusive) {
  np__shared_name *e = NULL;
  int r = 0;

  if (strlen(name) > NP_MSG_NAME_MAX)
    return UV_EINVAL;
  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->names, name, e);
  if (e != NULL && exclusive && e->widx != widx) {
    r = UV_EEXIST;
    goto out;
  }
  if (e == NULL) {
    if ((e = calloc(1, sizeof(*e))) == NULL) {
      r = UV_ENOMEM;
      goto out;
    }
    strcpy(e->name, name);
    HASH_ADD_STR(sh->names, name, e);
    if (e->hh.tbl == NULL) {
      free(e);
      r = UV_ENOMEM;
      goto out;
    }
  }
  e->widx = widx;
  e->sid = sid;
  e->denied_ms = 0;
out:
  uv_mutex_unlock(&sh->mu);
  return r;
}

int np__shared_name_set(np__shared *sh, const char *name, unsigned widx, uint64_t sid) {
  return name_put(sh, name, widx, sid, 0);
}

int np__shared_name_take(np__shared *sh, const char *name, unsigned widx, uint64_t sid) {
  return name_put(sh, name, widx, sid, 1);
}

int np__shared_name_find(np__shared *sh, const char *name, unsigned *widx, uint64_t *sid) {
  np__shared_name *e = NULL;

  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->names, name, e);
  if (e != NULL && widx != NULL)
    *widx = e->widx;
  if (e != NULL && sid != NULL)
    *sid = e->sid;
  uv_mutex_unlock(&sh->mu);
  return e != NULL;
}

/* ---- private proxies ------------------------------------------------------------------------ */

int np__shared_private_add(np__shared *sh, const char *name, const np__private *p) {
  np__shared_private *e = NULL;
  int r = 0;

  if (strlen(name) > NP_MSG_NAME_MAX)
    return UV_EINVAL;
  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->privates, name, e);
  if (e != NULL) {
    r = UV_EEXIST;
  } else if ((e = calloc(1, sizeof(*e))) == NULL) {
    r = UV_ENOMEM;
  } else {
    strcpy(e->name, name);
    e->p = *p;
    HASH_ADD_STR(sh->privates, name, e);
    if (e->hh.tbl == NULL) { /* HASH_NONFATAL_OOM: left out */
      free(e);
      r = UV_ENOMEM;
    }
  }
  uv_mutex_unlock(&sh->mu);
  return r;
}

void np__shared_private_remove(np__shared *sh, const char *name, uint64_t sid) {
  np__shared_private *e = NULL;

  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->privates, name, e);
  if (e != NULL && e->p.sid == sid)
    HASH_DEL(sh->privates, e);
  else
    e = NULL;
  uv_mutex_unlock(&sh->mu);
  free(e);
}

int np__shared_private_find(np__shared *sh, const char *name, np__private *out) {
  np__shared_private *e = NULL;

  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->privates, name, e);
  if (e != NULL)
    *out = e->p;
  uv_mutex_unlock(&sh->mu);
  return e != NULL ? 0 : UV_ENOENT;
}

void np__shared_name_release(np__shared *sh, const char *name, uint64_t sid) {
  np__shared_name *e = NULL;

  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->names, name, e);
  if (e != NULL && e->sid == sid)
    HASH_DEL(sh->names, e);
  else
    e = NULL;
  uv_mutex_unlock(&sh->mu);
  free(e);
}

void np__shared_name_deny(np__shared *sh, const char *name, uint64_t sid, uint64_t login,
                          uint64_t now, const char *where) {
  np__shared_name *e = NULL;

  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->names, name, e);
  if (e != NULL && e->sid == sid) {
    e->denied_ms = now != 0 ? now : 1;
    e->denied_login = login;
    snprintf(e->where, sizeof(e->where), "%s", where);
  }
  uv_mutex_unlock(&sh->mu);
}

int np__shared_name_denied(np__shared *sh, const char *name, uint64_t login, uint64_t now,
                           uint64_t within, char *where, size_t len) {
  np__shared_name *e = NULL;
  int r = 0;

  uv_mutex_lock(&sh->mu);
  HASH_FIND_STR(sh->names, name, e);
  if (e != NULL && e->denied_ms != 0 && e->denied_login == login && now - e->denied_ms <= within) {
    snprintf(where, len, "%s", e->where);
    r = 1;
  }
  uv_mutex_unlock(&sh->mu);
  return r;
}

size_t np__shared_name_count(np__shared *sh) {
  size_t n;

  uv_mutex_lock(&sh->mu);
  n = HASH_COUNT(sh->names);
  uv_mutex_unlock(&sh->mu);
  return n;
}

/* ---- the vhost ports' routes ---------------------------------------------------------------- */

int np__shared_route_add(np__shared *sh, int t, const char *host, const char *location,
                         np__route_owner *owner, np__route_owner *holder) {
  void *h = NULL;
  int r;

  uv_rwlock_wrlock(&sh->routes_rw);
  r = np__http_routes_add(sh->routes[t], host, location, owner, &h);
  /* copied under the lock: the holder's worker may release (free) it right after */
  if (r == UV_EEXIST && holder != NULL)
    *holder = *(const np__route_owner *)h;
  uv_rwlock_wrunlock(&sh->routes_rw);
  return r;
}

void np__shared_route_remove(np__shared *sh, int t, np__route_owner *owner, int gone) {
  uv_rwlock_wrlock(&sh->routes_rw);
  np__http_routes_remove(sh->routes[t], owner, gone);
  uv_rwlock_wrunlock(&sh->routes_rw);
}

int np__shared_route_hosts(np__shared *sh, int t, int (*cb)(const char *host, void *arg),
                           void *arg) {
  int r;

  uv_rwlock_rdlock(&sh->routes_rw);
  r = np__http_routes_foreach_host(sh->routes[t], cb, arg);
  uv_rwlock_rdunlock(&sh->routes_rw);
  return r;
}

int np__shared_route_find(np__shared *sh, int t, const char *host, size_t hostlen, const char *path,
                          size_t pathlen, np__route_owner *out) {
  void *o = NULL;
  int r;

  uv_rwlock_rdlock(&sh->routes_rw);
  r = np__http_routes_find(sh->routes[t], host, hostlen, path, pathlen, &o);
  if (r == NP_HTTP_ROUTE_FOUND)
    *out = *(const np__route_owner *)o;
  uv_rwlock_rdunlock(&sh->routes_rw);
  return r;
}

/* ---- counts --------------------------------------------------------------------------------- */

int np__shared_take(atomic_size_t *count, size_t max) {
  size_t n = atomic_load_explicit(count, memory_order_relaxed);

  /* A compare-and-swap rather than add-then-undo: two logins racing for the last slot never both
   * see the count over the limit and both refuse. */
  do {
    if (n >= max)
      return 0;
  } while (!atomic_compare_exchange_weak_explicit(count, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed));
  return 1;
}

void np__shared_give(atomic_size_t *count) {
  atomic_fetch_sub_explicit(count, 1, memory_order_relaxed);
}

/* ---- TCP and UDP ports ----------------------------------------------------------------------- */

int np__shared_port_claim(np__shared *sh, int udp, int port, unsigned widx, int *shadowed) {
  int r = 0;

  if (port <= 0 || port > 65535)
    return UV_EINVAL;
  uv_mutex_lock(&sh->mu);
  if (sh->held[udp != 0][port] & NP_TCP_HELD) {
    r = UV_EADDRINUSE;
  } else {
    *shadowed = (sh->held[udp != 0][port] & NP_TCP_SHADOW) != 0;
    sh->held[udp != 0][port] =
        (uint16_t)((sh->held[udp != 0][port] & NP_TCP_SHADOW) | NP_TCP_HELD | (widx & 0xff));
  }
  uv_mutex_unlock(&sh->mu);
  return r;
}

void np__shared_port_take(np__shared *sh, int udp, int port, unsigned widx) {
  if (port <= 0 || port > 65535)
    return;
  uv_mutex_lock(&sh->mu);
  sh->held[udp != 0][port] =
      (uint16_t)((sh->held[udp != 0][port] & NP_TCP_SHADOW) | NP_TCP_HELD | (widx & 0xff));
  uv_mutex_unlock(&sh->mu);
}

void np__shared_port_release(np__shared *sh, int udp, int port, unsigned widx) {
  uint16_t *e;

  if (port <= 0 || port > 65535)
    return;
  uv_mutex_lock(&sh->mu);
  e = &sh->held[udp != 0][port];
  if ((*e & NP_TCP_HELD) && (*e & 0xff) == (widx & 0xff))
    *e &= NP_TCP_SHADOW;
  uv_mutex_unlock(&sh->mu);
}

int np__shared_port_holder(np__shared *sh, int udp, int port, unsigned *widx) {
  int r = UV_ENOENT;

  if (port <= 0 || port > 65535)
    return r;
  uv_mutex_lock(&sh->mu);
  if (sh->held[udp != 0][port] & NP_TCP_HELD) {
    *widx = sh->held[udp != 0][port] & 0xff;
    r = 0;
  }
  uv_mutex_unlock(&sh->mu);
  return r;
}

int np__shared_port_shadow(np__shared *sh, int udp, int port, int on) {
  int r = 0;

  if (port <= 0 || port > 65535)
    return UV_EINVAL;
  uv_mutex_lock(&sh->mu);
  if (!on)
    sh->held[udp != 0][port] &= (uint16_t)~NP_TCP_SHADOW;
  else if (sh->held[udp != 0][port] & NP_TCP_HELD)
    r = UV_EADDRINUSE;
  else
    sh->held[udp != 0][port] |= NP_TCP_SHADOW;
  uv_mutex_unlock(&sh->mu);
  return r;
}

int np__private_listed(const char *list, const char *name) {
  size_t n = strlen(name);
  if (list[0] == '\0')
    return 1;
  for (const char *p = list; *p != '\0';) {
    size_t k = strcspn(p, ",");
    if (k == n && memcmp(p, name, n) == 0)
      return 1;
    p += k + (p[k] == ',');
  }
  return 0;
}
