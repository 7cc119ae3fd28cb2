/* The pending-connection pool: visitors waiting for their work connection, keyed by a 64-bit id,
 * each with a deadline and a group (the proxy it arrived on). Items are opaque to the pool; the
 * owner frees them. The default is a hash map plus a deadline-ordered list, bounded in total and
 * per group. An embedder can supply its own np_pool_ops; the server only calls these functions. */
#ifndef NATPROXY_POOL_H
#define NATPROXY_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <natproxy/common.h>

NP_BEGIN_DECLS

/* Called for each item removed by expire/remove_group; item is handed back to the caller. */
typedef void (*np_pool_item_cb)(uint64_t id, void *item, void *arg);

/* A pool's functions. Members are only ever added at the end: set .size = sizeof(np_pool_ops), and
 * the server refuses (UV_EINVAL) a size it does not know (0, or a newer header's larger one). */
typedef struct np_pool_ops {
  size_t size; /* sizeof(np_pool_ops), as the pool was compiled */
  /* Add item. Returns 0, NP_EEXIST (id present), NP_EPOOLFULL (a bound is reached) or UV_ENOMEM. */
  int (*put)(void *pool, uint64_t id, const void *group, void *item, uint64_t deadline_ms);
  /* Remove and return the item with this id, or NULL. */
  void *(*take)(void *pool, uint64_t id);
  /* Remove the item that has waited longest in group (NULL: any group) and return it, or NULL.
   * Used by codecs without work headers, which can only match in arrival order. */
  void *(*take_oldest)(void *pool, const void *group, uint64_t *id);
  /* Remove every item whose deadline <= now_ms, calling cb for each; returns how many. */
  size_t (*expire)(void *pool, uint64_t now_ms, np_pool_item_cb cb, void *arg);
  /* Remove every item of group, calling cb for each; returns how many. */
  size_t (*remove_group)(void *pool, const void *group, np_pool_item_cb cb, void *arg);
  /* Items in group, or in total when group is NULL. */
  size_t (*count)(void *pool, const void *group);
  /* Earliest deadline, or UINT64_MAX when empty. */
  uint64_t (*next_deadline)(void *pool);
  /* Free the pool. It must be empty (the owner drains it first). */
  void (*destroy)(void *pool);
} np_pool_ops;

NP_EXPORT const np_pool_ops *np_pool_default_ops(void);
/* A default pool; 0 for a bound means unbounded. Returns 0 or UV_ENOMEM; *out untouched on failure.
 */
NP_EXPORT int np_pool_default_new(size_t max_total, size_t max_per_group, void **out);

NP_END_DECLS

#endif
