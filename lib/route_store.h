/* Servers that share the load (docs/config.md, "Servers that share the load"): which server holds
 * which proxy, kept in Redis (route_store = redis://HOST[:PORT][/DB]; docs/design.md says why
 * Redis). Each server writes a key per route it holds, with its address in the key's name and a
 * lease as its expiry, renews them every third of the lease while it lives and deletes them when
 * it closes or drains; so a dead server's routes vanish on their own. It reads the whole table
 * every third of the lease and keeps the last one it read: while the store is away, routing goes
 * on from it, and the routes made meanwhile are written when the store is back. Not installed. */
#ifndef NP_ROUTE_STORE_H
#define NP_ROUTE_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "server.h"

#define NP_ROUTE_PREFIX "natproxy:route:"
/* "https:*." + a host and its NUL, or "tcp:65535" */
#define NP_ROUTE_KEY_MAX    (NP_HTTP_ROUTE_HOST_MAX + 10)
#define NP_ROUTES_KNOWN_MAX 65536 /* routes of other servers kept from one read of the store */

/* Start and stop np_server's route store (the hooks builtin.c sets; worker 0 only). Start: 0 when
 * there is none, else 0 or UV_ENOMEM (the store is reached later, and retried while it is away). */
int np__routes_start(struct np_server *srv);
void np__routes_stop(struct np_server *srv);

/* A key's name without the prefix, "tcp:6000@10.0.0.2:7000", into route ("tcp:6000") and owner
 * ("10.0.0.2:7000"): 0, or UV_EINVAL for anything else (a kind other than tcp, udp, http, https;
 * a port out of range; a host that is not a host name; an owner that is not HOST:PORT). Bytes
 * from the store: fuzzed (tests/fuzz/fuzz_route_key.c). */
int np__route_key_parse(const char *key, size_t len, char route[NP_ROUTE_KEY_MAX],
                        char owner[NP_HOSTPORT_MAX]);

/* The server that holds route ("http:www.example.org", "tcp:6000") in the last table read, into
 * owner (its cluster_advertise): 0, or UV_ENOENT. Any worker, any time (under shared's lock). */
int np__routes_owner(const struct np_server *srv, const char *route, char owner[NP_HOSTPORT_MAX]);
/* The same for a host name of kind ("http", "https"): its own route, else the nearest wildcard
 * route that covers it (*.example.org). */
int np__routes_owner_host(const struct np_server *srv, const char *kind, const char *host,
                          char owner[NP_HOSTPORT_MAX]);

/* What the admin API shows (admin_server.c). */
typedef struct np__routes_view {
  const char *store;     /* route_store as configured */
  int up;                /* connected, and its last command answered */
  size_t claimed;        /* routes of this server's */
  size_t known;          /* routes of other servers, in the last table read */
  uint64_t table_age_ms; /* since that read completed (UINT64_MAX: none yet) */
} np__routes_view;
/* 0 and view filled, or UV_ENOENT when there is no route store. */
int np__routes_get_view(const struct np_server *srv, np__routes_view *view);
/* Each route of another server in the last table read: cb(route, owner), until it returns
 * non-zero. */
int np__routes_foreach(const struct np_server *srv,
                       int (*cb)(const char *route, const char *owner, void *arg), void *arg);

#endif
