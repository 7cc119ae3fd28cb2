#include "http_route.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

/* uthash exits the process when an allocation fails unless told otherwise; in its non-fatal mode a
 * failed HASH_ADD leaves the item out with hh.tbl == NULL, which host_add checks to return
 * UV_ENOMEM with the table as it was. Its hash (Jenkins) is not keyed: the names are chosen by
 * authenticated clients, not by visitors, whose lookups never insert. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

typedef struct route_host route_host;

/* One claim: a location of a host. Allocated apart so that the gone list can point at it while
 * its host's array moves. */
typedef struct route_loc {
  route_host *host;
  void *owner;                             /* NULL: gone */
  struct route_loc *gone_prev, *gone_next; /* the gone entries, oldest first */
  size_t len;
  char path[]; /* normalised: "" for every path, else "/..." without a trailing '/' */
} route_loc;

struct route_host {
  UT_hash_handle hh;
  int wild;
  route_loc **locs; /* longest first: the first that matches is the longest */
  size_t n, cap;
  size_t len;
  char name[]; /* exact: the name; a wildcard: what follows its "*." (the key of r->wild) */
};

struct np__http_routes {
  /* Apart, so that a lookup of a suffix of the request's host needs no copy with "*." before it. */
  route_host *exact, *wild;
  route_loc *gone_head, *gone_tail;
  size_t live, gone;
};

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* host -> buf (lower case, without the trailing dot and a wildcard's "*."), *len, *wild. */
static int norm_host(const char *host, char buf[NP_HTTP_ROUTE_HOST_MAX + 1], size_t *len,
                     int *wild) {
  /* strnlen: a name of more than the maximum is refused without reading all of it. */
  size_t n = strnlen(host, NP_HTTP_ROUTE_HOST_MAX + 2), i, label = 0;
  int w = 0;

  if (n > 0 && host[n - 1] == '.')
    n--;
  if (n > NP_HTTP_ROUTE_HOST_MAX)
    return UV_EINVAL;
  if (n >= 2 && host[0] == '*' && host[1] == '.') {
    w = 1;
    host += 2;
    n -= 2;
  }
  if (n == 0)
    return UV_EINVAL;
  for (i = 0; i < n; i++) {
    char c = lower(host[i]);
    if (c == '.') {
      if (label == 0 || buf[i - 1] == '-')
        return UV_EINVAL;
      label = 0;
    } else if (label_char(c)) {
      if (label == 0 && c == '-')
        return UV_EINVAL;
      if (++label > 63)
        return UV_EINVAL;
    } else {
      return UV_EINVAL;
    }
    buf[i] = c;
  }
  if (label == 0 || buf[n - 1] == '-')
    return UV_EINVAL;
  buf[n] = '\0';
  *len = n;
  *wild = w;
  return 0;
}

/* The normalised length of location (a prefix of it: only a trailing '/' goes). */
static int norm_location(const char *loc, size_t *len) {
  size_t n = strnlen(loc, NP_HTTP_ROUTE_LOCATION_MAX + 1), i;

  if (n > NP_HTTP_ROUTE_LOCATION_MAX)
    return UV_EINVAL;
  if (n > 0 && loc[0] != '/')
    return UV_EINVAL;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)loc[i];
    if (c <= 0x20 || c == 0x7f || c == '?' || c == '#')
      return UV_EINVAL;
  }
  if (n > 0 && loc[n - 1] == '/')
    n--;
  /* "/api//": an empty last segment is more likely a slip than a path anyone routes by. */
  if (n > 0 && loc[n - 1] == '/')
    return UV_EINVAL;
  *len = n;
  return 0;
}

static route_host *host_get(route_host *table, const char *name, size_t len) {
  route_host *h;
  HASH_FIND(hh, table, name, (unsigned)len, h);
  return h;
}

/* Does l take path, on a segment boundary? */
static int loc_matches(const route_loc *l, const char *path, size_t pathlen) {
  if (l->len == 0)
    return 1;
  return pathlen >= l->len && memcmp(path, l->path, l->len) == 0 &&
         (pathlen == l->len || path[l->len] == '/');
}

static const route_loc *host_match(const route_host *h, const char *path, size_t pathlen) {
  size_t i;
  if (h == NULL)
    return NULL;
  for (i = 0; i < h->n; i++)
    if (loc_matches(h->locs[i], path, pathlen))
      return h->locs[i];
  return NULL;
}

static route_host **table_of(np__http_routes *r, const route_host *h) {
  return h->wild ? &r->wild : &r->exact;
}

static void host_free(route_host *h) {
  size_t i;
  for (i = 0; i < h->n; i++)
    free(h->locs[i]);
  free(h->locs);
  free(h);
}

static void host_drop(np__http_routes *r, route_host *h) {
  HASH_DEL(*table_of(r, h), h);
  host_free(h);
}

/* Room for one more location in h. */
static int host_reserve(route_host *h) {
  route_loc **locs;
  size_t cap;
  if (h->n < h->cap)
    return 0;
  /* Most hosts have one location; a few have a handful. */
  cap = h->cap == 0 ? 1 : h->cap * 2;
  if ((locs = realloc(h->locs, cap * sizeof(*locs))) == NULL)
    return UV_ENOMEM;
  h->locs = locs;
  h->cap = cap;
  return 0;
}

/* After host_reserve: l in its place, after the locations at least as long. */
static void host_insert(route_host *h, route_loc *l) {
  size_t i = 0;
  while (i < h->n && h->locs[i]->len >= l->len)
    i++;
  memmove(h->locs + i + 1, h->locs + i, (h->n - i) * sizeof(*h->locs));
  h->locs[i] = l;
  h->n++;
  l->host = h;
}

static void gone_unlink(np__http_routes *r, route_loc *l) {
  if (l->gone_prev != NULL)
    l->gone_prev->gone_next = l->gone_next;
  else
    r->gone_head = l->gone_next;
  if (l->gone_next != NULL)
    l->gone_next->gone_prev = l->gone_prev;
  else
    r->gone_tail = l->gone_prev;
  l->gone_prev = l->gone_next = NULL;
  r->gone--;
}

static void gone_append(np__http_routes *r, route_loc *l) {
  l->gone_prev = r->gone_tail;
  l->gone_next = NULL;
  if (r->gone_tail != NULL)
    r->gone_tail->gone_next = l;
  else
    r->gone_head = l;
  r->gone_tail = l;
  r->gone++;
}

/* Drop the oldest gone entries beyond the cap, and a host with them when it has nothing left. */
static void gone_trim(np__http_routes *r) {
  while (r->gone > NP_HTTP_ROUTES_GONE_MAX) {
    route_loc *l = r->gone_head;
    route_host *h = l->host;
    size_t i = 0;
    gone_unlink(r, l);
    while (h->locs[i] != l)
      i++;
    memmove(h->locs + i, h->locs + i + 1, (h->n - i - 1) * sizeof(*h->locs));
    h->n--;
    free(l);
    if (h->n == 0)
      host_drop(r, h);
  }
}

int np__http_routes_new(np__http_routes **out) {
  np__http_routes *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return UV_ENOMEM;
  *out = r;
  return 0;
}

static void free_table(route_host **table) {
  route_host *h, *tmp;
  HASH_ITER(hh, *table, h, tmp) {
    HASH_DEL(*table, h);
    host_free(h);
  }
}

void np__http_routes_free(np__http_routes *r) {
  if (r == NULL)
    return;
  free_table(&r->exact);
  free_table(&r->wild);
  free(r);
}

int np__http_routes_add(np__http_routes *r, const char *host, const char *location, void *owner,
                        void **holder) {
  char name[NP_HTTP_ROUTE_HOST_MAX + 1];
  size_t nlen, llen, i;
  int wild, err;
  route_host **table, *h;
  route_loc *l;

  /* NULL is what a gone entry holds: it cannot be an owner. */
  if (r == NULL || host == NULL || location == NULL || owner == NULL)
    return UV_EINVAL;
  if ((err = norm_host(host, name, &nlen, &wild)) != 0 ||
      (err = norm_location(location, &llen)) != 0)
    return err;
  table = wild ? &r->wild : &r->exact;
  if ((h = host_get(*table, name, nlen)) != NULL) {
    for (i = 0; i < h->n; i++) {
      l = h->locs[i];
      if (l->len != llen || memcmp(l->path, location, llen) != 0)
        continue;
      if (l->owner == owner)
        return 0;
      if (l->owner != NULL) {
        if (holder != NULL)
          *holder = l->owner;
        return UV_EEXIST;
      }
      gone_unlink(r, l);
      l->owner = owner;
      r->live++;
      return 0;
    }
  }

  if ((l = malloc(sizeof(*l) + llen + 1)) == NULL)
    return UV_ENOMEM;
  l->owner = owner;
  l->gone_prev = l->gone_next = NULL;
  l->len = llen;
  memcpy(l->path, location, llen);
  l->path[llen] = '\0';

  if (h != NULL) {
    if (host_reserve(h) != 0) {
      free(l);
      return UV_ENOMEM;
    }
    host_insert(h, l);
  } else {
    if ((h = calloc(1, sizeof(*h) + nlen + 1)) == NULL) {
      free(l);
      return UV_ENOMEM;
    }
    h->wild = wild;
    h->len = nlen;
    memcpy(h->name, name, nlen + 1);
    if (host_reserve(h) != 0) {
      free(l);
      free(h);
      return UV_ENOMEM;
    }
    host_insert(h, l);
    HASH_ADD_KEYPTR(hh, *table, h->name, (unsigned)h->len, h);
    if (h->hh.tbl == NULL) {
      host_free(h); /* l with it */
      return UV_ENOMEM;
    }
  }
  r->live++;
  return 0;
}

static void remove_in(np__http_routes *r, route_host **table, void *owner, int gone) {
  route_host *h, *tmp;
  HASH_ITER(hh, *table, h, tmp) {
    size_t i, k = 0;
    /* One pass that keeps the others in order: linear in the host's locations. */
    for (i = 0; i < h->n; i++) {
      route_loc *l = h->locs[i];
      if (l->owner == owner) {
        r->live--;
        if (!gone) {
          free(l);
          continue;
        }
        l->owner = NULL;
        gone_append(r, l);
      }
      h->locs[k++] = l;
    }
    h->n = k;
    if (k == 0)
      host_drop(r, h);
  }
}

static int live_host(const route_host *h) {
  for (size_t i = 0; i < h->n; i++)
    if (h->locs[i]->owner != NULL)
      return 1;
  return 0;
}

int np__http_routes_foreach_host(const np__http_routes *r, int (*cb)(const char *host, void *arg),
                                 void *arg) {
  char name[NP_HTTP_ROUTE_HOST_MAX + 3];
  const route_host *h, *tmp;
  int ret;

  if (r == NULL)
    return 0;
  HASH_ITER(hh, r->exact, h, tmp) {
    if (live_host(h) && (ret = cb(h->name, arg)) != 0)
      return ret;
  }
  HASH_ITER(hh, r->wild, h, tmp) {
    snprintf(name, sizeof(name), "*.%s", h->name);
    if (live_host(h) && (ret = cb(name, arg)) != 0)
      return ret;
  }
  return 0;
}

void np__http_routes_remove(np__http_routes *r, void *owner, int gone) {
  if (r == NULL || owner == NULL)
    return;
  remove_in(r, &r->exact, owner, gone);
  remove_in(r, &r->wild, owner, gone);
  /* After the walk: trimming drops hosts, which the walk must not meet freed. */
  gone_trim(r);
}

int np__http_routes_find(const np__http_routes *r, const char *host, size_t hostlen,
                         const char *path, size_t pathlen, void **owner) {
  char name[NP_HTTP_ROUTE_HOST_MAX + 1];
  const route_loc *l;
  size_t i;

  if (owner != NULL)
    *owner = NULL;
  if (r == NULL || host == NULL)
    return NP_HTTP_ROUTE_NONE;
  if (hostlen > 0 && host[hostlen - 1] == '.')
    hostlen--;
  if (hostlen == 0 || hostlen > NP_HTTP_ROUTE_HOST_MAX)
    return NP_HTTP_ROUTE_NONE;
  for (i = 0; i < hostlen; i++)
    name[i] = lower(host[i]);
  if (path == NULL)
    pathlen = 0;
  for (i = 0; i < pathlen; i++)
    if (path[i] == '?' || path[i] == '#') {
      pathlen = i;
      break;
    }

  /* One hash lookup per label: the name itself, then each suffix after a dot, the longest (most
   * specific wildcard) first. */
  l = host_match(host_get(r->exact, name, hostlen), path, pathlen);
  for (i = 0; l == NULL && i < hostlen; i++)
    if (name[i] == '.')
      l = host_match(host_get(r->wild, name + i + 1, hostlen - i - 1), path, pathlen);
  if (l == NULL)
    return NP_HTTP_ROUTE_NONE;
  if (l->owner == NULL)
    return NP_HTTP_ROUTE_GONE;
  if (owner != NULL)
    *owner = l->owner;
  return NP_HTTP_ROUTE_FOUND;
}

size_t np__http_routes_count(const np__http_routes *r, int gone) {
  if (r == NULL)
    return 0;
  return gone ? r->gone : r->live;
}
