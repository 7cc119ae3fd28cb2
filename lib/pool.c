/* The default pending pool: OpenSSL's LHASH maps id -> entry (no hand-written hash map), a doubly
 * linked list keeps entries in deadline order, and a second LHASH counts entries per group for the
 * per-proxy bound. Visitors of one server usually share one timeout, so inserting from the tail is
 * O(1) in practice and O(n) (n bounded by max_total) when an embedder mixes deadlines. */
#include <stdlib.h>

#include <openssl/lhash.h>
#include <uv.h>

#include "natproxy/error.h"
#include "natproxy/pool.h"

#include "internal.h"

typedef struct entry {
  uint64_t id;
  uint64_t deadline;
  const void *group;
  void *item;
  struct entry *prev, *next; /* deadline order */
} entry;

typedef struct group_count {
  const void *group;
  size_t n;
} group_count;

typedef struct pool {
  OPENSSL_LHASH *by_id;
  OPENSSL_LHASH *groups;
  entry *head, *tail;
  size_t total;
  size_t max_total;
  size_t max_per_group;
} pool;

static unsigned long hash_u64(uint64_t v) {
  /* Ids are sequential; mix them so LHASH's low bits spread. */
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdULL;
  v ^= v >> 33;
  return (unsigned long)v;
}

static unsigned long entry_hash(const void *e) {
  return hash_u64(((const entry *)e)->id);
}

static int entry_cmp(const void *a, const void *b) {
  uint64_t x = ((const entry *)a)->id, y = ((const entry *)b)->id;
  return x < y ? -1 : x > y;
}

static unsigned long group_hash(const void *g) {
  return hash_u64((uint64_t)(uintptr_t)((const group_count *)g)->group);
}

static int group_cmp(const void *a, const void *b) {
  uintptr_t x = (uintptr_t)((const group_count *)a)->group;
  uintptr_t y = (uintptr_t)((const group_count *)b)->group;
  return x < y ? -1 : x > y;
}

static group_count *group_find(pool *p, const void *group) {
  group_count key = {group, 0};
  return OPENSSL_LH_retrieve(p->groups, &key);
}

static void unlink_entry(pool *p, entry *e) {
  group_count *g = group_find(p, e->group);

  if (e->prev != NULL)
    e->prev->next = e->next;
  else
    p->head = e->next;
  if (e->next != NULL)
    e->next->prev = e->prev;
  else
    p->tail = e->prev;
  OPENSSL_LH_delete(p->by_id, e);
  p->total--;
  if (g != NULL && --g->n == 0) {
    OPENSSL_LH_delete(p->groups, g);
    free(g);
  }
}

static int pool_put(void *self, uint64_t id, const void *group, void *item, uint64_t deadline) {
  pool *p = self;
  entry key = {.id = id};
  group_count *g;
  entry *e, *at;
  int errors;

  if (OPENSSL_LH_retrieve(p->by_id, &key) != NULL)
    return NP_EEXIST;
  if (p->max_total != 0 && p->total >= p->max_total)
    return NP_EPOOLFULL;
  g = group_find(p, group);
  if (g != NULL && p->max_per_group != 0 && g->n >= p->max_per_group)
    return NP_EPOOLFULL;

  e = calloc(1, sizeof(*e));
  if (e == NULL)
    return UV_ENOMEM;
  e->id = id;
  e->deadline = deadline;
  e->group = group;
  e->item = item;
  if (g == NULL) {
    g = calloc(1, sizeof(*g));
    if (g == NULL)
      goto err_free_entry;
    g->group = group;
    errors = OPENSSL_LH_error(p->groups);
    OPENSSL_LH_insert(p->groups, g);
    if (OPENSSL_LH_error(p->groups) != errors) {
      free(g);
      goto err_free_entry;
    }
  }
  errors = OPENSSL_LH_error(p->by_id);
  OPENSSL_LH_insert(p->by_id, e);
  if (OPENSSL_LH_error(p->by_id) != errors)
    goto err_drop_group;
  g->n++;
  p->total++;

  /* Walk back from the tail to the last entry due no later than this one. */
  for (at = p->tail; at != NULL && at->deadline > deadline; at = at->prev)
    ;
  e->prev = at;
  e->next = at != NULL ? at->next : p->head;
  if (e->next != NULL)
    e->next->prev = e;
  else
    p->tail = e;
  if (at != NULL)
    at->next = e;
  else
    p->head = e;
  return 0;

err_drop_group:
  if (g->n == 0) {
    OPENSSL_LH_delete(p->groups, g);
    free(g);
  }
err_free_entry:
  free(e);
  return UV_ENOMEM;
}

static void *take_entry(pool *p, entry *e) {
  void *item = e->item;
  unlink_entry(p, e);
  free(e);
  return item;
}

static void *pool_take(void *self, uint64_t id) {
  pool *p = self;
  entry key = {.id = id};
  entry *e = OPENSSL_LH_retrieve(p->by_id, &key);
  return e != NULL ? take_entry(p, e) : NULL;
}

static void *pool_take_oldest(void *self, const void *group, uint64_t *id) {
  pool *p = self;
  entry *e, *oldest = NULL;

  /* Arrival order is id order for the server's ids, which only grow. */
  for (e = p->head; e != NULL; e = e->next) {
    if ((group == NULL || e->group == group) && (oldest == NULL || e->id < oldest->id))
      oldest = e;
  }
  if (oldest == NULL)
    return NULL;
  if (id != NULL)
    *id = oldest->id;
  return take_entry(p, oldest);
}

static size_t pool_expire(void *self, uint64_t now, np_pool_item_cb cb, void *arg) {
  pool *p = self;
  size_t n = 0;

  while (p->head != NULL && p->head->deadline <= now) {
    uint64_t id = p->head->id;
    void *item = take_entry(p, p->head);
    n++;
    if (cb != NULL)
      cb(id, item, arg);
  }
  return n;
}

static size_t pool_remove_group(void *self, const void *group, np_pool_item_cb cb, void *arg) {
  pool *p = self;
  entry *e = p->head;
  size_t n = 0;

  while (e != NULL) {
    entry *next = e->next;
    if (e->group == group) {
      uint64_t id = e->id;
      void *item = take_entry(p, e);
      n++;
      if (cb != NULL)
        cb(id, item, arg);
    }
    e = next;
  }
  return n;
}

static size_t pool_count(void *self, const void *group) {
  pool *p = self;
  group_count *g;

  if (group == NULL)
    return p->total;
  g = group_find(p, group);
  return g != NULL ? g->n : 0;
}

static uint64_t pool_next_deadline(void *self) {
  pool *p = self;
  return p->head != NULL ? p->head->deadline : UINT64_MAX;
}

static void pool_destroy(void *self) {
  pool *p = self;
  if (p == NULL)
    return;
  /* The owner should have drained us; free what is left without touching the items. */
  while (p->head != NULL)
    take_entry(p, p->head);
  OPENSSL_LH_free(p->by_id);
  OPENSSL_LH_free(p->groups);
  free(p);
}

static const np_pool_ops default_ops = {
    .size = sizeof(np_pool_ops),
    .put = pool_put,
    .take = pool_take,
    .take_oldest = pool_take_oldest,
    .expire = pool_expire,
    .remove_group = pool_remove_group,
    .count = pool_count,
    .next_deadline = pool_next_deadline,
    .destroy = pool_destroy,
};

const np_pool_ops *np_pool_default_ops(void) {
  return &default_ops;
}

int np__pool_default_set_limits(const struct np_pool_ops *ops, void *data, size_t max_total,
                                size_t max_per_group) {
  pool *p = data;
  if (ops != np_pool_default_ops())
    return UV_ENOTSUP; /* an embedder's pool has its own limits */
  p->max_total = max_total;
  p->max_per_group = max_per_group;
  return 0;
}

int np_pool_default_new(size_t max_total, size_t max_per_group, void **out) {
  pool *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return UV_ENOMEM;
  p->by_id = OPENSSL_LH_new(entry_hash, entry_cmp);
  p->groups = OPENSSL_LH_new(group_hash, group_cmp);
  if (p->by_id == NULL || p->groups == NULL) {
    OPENSSL_LH_free(p->by_id);
    OPENSSL_LH_free(p->groups);
    free(p);
    return UV_ENOMEM;
  }
  p->max_total = max_total;
  p->max_per_group = max_per_group;
  *out = p;
  return 0;
}

int np__pool_ops_check(const np_pool_ops *ops) {
  /* As np__codec_ops_check: one layout so far, and the server calls every function. */
  if (ops == NULL || ops->size != sizeof(np_pool_ops) || ops->put == NULL || ops->take == NULL ||
      ops->take_oldest == NULL || ops->expire == NULL || ops->remove_group == NULL ||
      ops->count == NULL || ops->next_deadline == NULL || ops->destroy == NULL)
    return UV_EINVAL;
  return 0;
}
