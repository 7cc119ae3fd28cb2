/* The server state that several event loops (the workers of docs/workers-plan.md) share: the
 * failed-login back-off and ring, the port memory, the users file, the registry of logged-in client
 * names and the group-wide counts behind max_clients and max_pending. A standalone np_server owns
 * one of its own, so there is a single code path. Every function here may be called from any
 * thread; none waits on anything but the short lock around its own table. Not installed. */
#ifndef NP_SERVER_SHARED_H
#define NP_SERVER_SHARED_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "backoff.h"
#include "http_route.h"
#include "login_fails.h"
#include "port_memory.h"
#include "users.h"

#include <natproxy/codec.h>

typedef struct np__shared_name np__shared_name; /* server_shared.c: an entry of the registry */
typedef struct np__shared_private np__shared_private; /* server_shared.c: a private proxy */

/* A private proxy (type = stcp, sudp) as every worker may read it, by its full name "OWNER.PROXY":
 * what a VISIT on any worker is checked against before the visitor goes to the owner's worker
 * (proxy_stcp.c). */
typedef struct np__private {
  uint8_t kind;
  unsigned widx; /* its owner's worker */
  uint64_t sid;  /* its owner's session */
  unsigned char verifier[NP_MSG_KEY_LEN];
  char allow_users[NP_MSG_TEXT_MAX + 1]; /* client names, ","-separated; "": any client */
  uint8_t direct; /* its owner's client takes DIRECT_INTRO (its LOGIN said so) */
} np__private;

/* The route tables of the name-routed types (vhost.h), one per kind of vhost port. */
enum { NP_ROUTES_HTTP = 0, NP_ROUTES_HTTPS = 1, NP_ROUTES_N = 2 };

/* Who claimed a route: one record per proxy, made by its claim and freed by its release, both on
 * its own worker. Another worker reads it only under the routes' lock, through a copy: px is that
 * worker's pointer, never dereferenced elsewhere; client and proxy are what a refused claim on
 * another worker says of the holder. */
typedef struct np__route_owner {
  void *px;
  unsigned widx;
  char client[NP_MSG_NAME_MAX + 1];
  char proxy[NP_MSG_NAME_MAX + 1];
} np__route_owner;

typedef struct np__shared {
  /* This server's random instance id, sent in HELLO (never 0; set once, then only read): a client
   * of several servers tells two addresses of one server from two servers. */
  uint64_t instance;
  /* The key of the tokens of direct-path introductions (server_direct.c), random, set once. */
  unsigned char direct_key[NP_MSG_KEY_LEN];
  /* Guards the tables below it, never held while anything waits (no I/O, no callback). */
  uv_mutex_t mu;
  np__backoff *backoff;
  np__login_fails fails;
  np__port_memory *ports;       /* NULL: remember_ports is off */
  unsigned ports_dirty : 1;     /* a note changed the table since the last clone for a save */
  np__users *users;             /* the users file (NULL: none), with a reference of its own */
  np__shared_name *names;       /* logged-in clients by name (uthash) */
  np__shared_private *privates; /* private proxies by full name (uthash) */
  /* Logged-in clients, for max_clients: taken by a login before it is decided, given back by a
   * refused one and by the session's end. */
  atomic_size_t clients;
  /* Visitors waiting in the default pool, for max_pending: taken before the pool's put, given back
   * when the visitor is joined or dropped. */
  atomic_size_t pending;
  /* The vhost ports' routes (http_route.h), with np__route_owner values: claims and releases take
   * the write lock, each request's routing the read lock; apart from mu, which logins take. */
  /* The other servers' routes, as the route store last read them (route_store.c; NULL: none),
   * under mu. */
  struct np__known_route *remote_routes;
  /* Each TCP port ([0]) and UDP port ([1]): held by a proxy of worker (low byte) when NP_TCP_HELD
   * is set; NP_TCP_SHADOW: a socket of worker 0 forwards its visitors to the server of the cluster
   * that holds it (peer_shadow.c). Under mu. */
  uint16_t held[2][65536];
  uv_rwlock_t routes_rw;
  np__http_routes *routes[NP_ROUTES_N];
} np__shared;

/* A table with the back-off's limits (login_backoff_ms, login_backoff_max_ms; base 0: off): 0 or
 * UV_ENOMEM (then *out is untouched). */
int np__shared_new(uint64_t backoff_ms, uint64_t backoff_max_ms, np__shared **out);
/* Frees sh and drops its references (users, port memory). NULL is fine. */
void np__shared_free(np__shared *sh);

/* ---- failed logins: np__backoff and np__login_fails under mu (backoff.h, login_fails.h) ------ */
void np__shared_backoff_set(np__shared *sh, uint64_t base_ms, uint64_t max_ms);
uint64_t np__shared_backoff_wait(np__shared *sh, const struct sockaddr *sa, uint64_t now);
uint64_t np__shared_backoff_fail(np__shared *sh, const struct sockaddr *sa, uint64_t now,
                                 unsigned *fails);
void np__shared_backoff_clear(np__shared *sh, const struct sockaddr *sa, uint64_t now);
size_t np__shared_backoff_count(np__shared *sh);
void np__shared_fails_add(np__shared *sh, uint64_t now, const struct sockaddr *addr,
                          const char *name, const char *why);
/* A copy of the ring (out: copied), so that whoever reads it does not hold the lock meanwhile. */
void np__shared_fails_copy(np__shared *sh, np__login_fails *out);

/* ---- port memory (port_memory.h) ------------------------------------------------------------ */
/* Make m (held: sh frees it) the table; a previous one is freed. NULL turns the memory off. */
void np__shared_ports_set(np__shared *sh, np__port_memory *m);
/* 0 when off or unknown. */
int np__shared_ports_recall(np__shared *sh, const char *client, const char *proxy);
/* As np__port_memory_note; 1 (changed) also marks the table for the next save. */
int np__shared_ports_note(np__shared *sh, const char *client, const char *proxy, int port);
/* When the table changed since the last call (or force): *out a copy of it (the caller's, freed
 * with np__port_memory_free) and the mark cleared, so the file is written outside the lock.
 * Returns 0 (*out NULL: nothing to save) or UV_ENOMEM (the mark kept). */
int np__shared_ports_clone(np__shared *sh, int force, np__port_memory **out);

/* ---- users file (users.h) ------------------------------------------------------------------- */
/* Make users (may be NULL) the current table: sh takes a reference of its own and drops the one it
 * held on the previous table. */
void np__shared_users_set(np__shared *sh, np__users *users);
/* The current table with a reference for the caller (np__users_unref), or NULL. */
np__users *np__shared_users_get(np__shared *sh);

/* ---- names of logged-in clients ------------------------------------------------------------- */
/* name (copied) is now served by session sid on worker widx, replacing any entry: 0 or UV_ENOMEM
 * (then the name is not registered, and the login should be refused). */
int np__shared_name_set(np__shared *sh, const char *name, unsigned widx, uint64_t sid);
/* As np__shared_name_set, but only when no other worker holds name: checked and set under one
 * lock, so two workers never both take a name. UV_EEXIST when another holds it. */
int np__shared_name_take(np__shared *sh, const char *name, unsigned widx, uint64_t sid);
/* 1 and the entry's worker and session (each optional) when name is registered, else 0. */
/* Private proxies: add p under name (0, UV_EEXIST when another holds the name, UV_ENOMEM), drop
 * the one of session sid under name (another's stays), find a copy (0 or UV_ENOENT). */
int np__shared_private_add(np__shared *sh, const char *name, const np__private *p);
void np__shared_private_remove(np__shared *sh, const char *name, uint64_t sid);
int np__shared_private_find(np__shared *sh, const char *name, np__private *out);
/* Whether name is in a private proxy's allow_users list ("a,b,c"; "" lets everyone in). */
int np__private_listed(const char *list, const char *name);
int np__shared_name_find(np__shared *sh, const char *name, unsigned *widx, uint64_t *sid);
/* Forget name, but only when session sid still holds it: a session that a takeover replaced must
 * not remove its successor's entry when it closes. */
void np__shared_name_release(np__shared *sh, const char *name, uint64_t sid);
size_t np__shared_name_count(np__shared *sh);
/* Session sid's worker (in a group) refused to let name go to the login of instance id login, on
 * another worker: the client from where is live. That login's next try there is told so
 * (NAMEINUSE); another login asks again. */
void np__shared_name_deny(np__shared *sh, const char *name, uint64_t sid, uint64_t login,
                          uint64_t now, const char *where);
/* 1 (and where) when name's worker refused it to login at most within ms before now. */
int np__shared_name_denied(np__shared *sh, const char *name, uint64_t login, uint64_t now,
                           uint64_t within, char *where, size_t len);

/* ---- the vhost ports' routes (http_route.h) ------------------------------------------------- */
/* np__http_routes_add in table t (NP_ROUTES_*) for owner (held until np__shared_route_remove);
 * on UV_EEXIST *holder (when not NULL) is a copy of the holder's record. */
int np__shared_route_add(np__shared *sh, int t, const char *host, const char *location,
                         np__route_owner *owner, np__route_owner *holder);
/* np__http_routes_remove in table t. */
void np__shared_route_remove(np__shared *sh, int t, np__route_owner *owner, int gone);
/* Each host with a live claim in table t, under the read lock (cb must not take it again). */
int np__shared_route_hosts(np__shared *sh, int t, int (*cb)(const char *host, void *arg),
                           void *arg);
/* np__http_routes_find in table t; on NP_HTTP_ROUTE_FOUND *out is a copy of the owner's record. */
int np__shared_route_find(np__shared *sh, int t, const char *host, size_t hostlen, const char *path,
                          size_t pathlen, np__route_owner *out);

/* ---- TCP and UDP ports (a local proxy's, or a shadow forwarding to another server) ----------- */
#define NP_TCP_HELD   0x100
#define NP_TCP_SHADOW 0x200
/* udp: 0 for TCP ports, 1 for UDP ports. A proxy of worker widx takes port: 0, or UV_EADDRINUSE
 * when a proxy holds it; *shadowed says whether a shadow is bound to it now (bind beside it with
 * SO_REUSEPORT: it gives way). */
int np__shared_port_claim(np__shared *sh, int udp, int port, unsigned widx, int *shadowed);
/* A port the kernel just gave a proxy of worker widx (a bind to port 0): nobody else has it bound,
 * whatever the table says (a proxy that closed its socket on another worker and has not let go of
 * the entry yet): it is widx's from now on. */
void np__shared_port_take(np__shared *sh, int udp, int port, unsigned widx);
/* Let go of port, if a proxy of worker widx holds it (else it is another's now: left alone). */
void np__shared_port_release(np__shared *sh, int udp, int port, unsigned widx);
/* 0 and *widx when a proxy holds port, else UV_ENOENT. */
int np__shared_port_holder(np__shared *sh, int udp, int port, unsigned *widx);
/* A shadow on port: on: 0, or UV_EADDRINUSE when a proxy holds it; off: 0. */
int np__shared_port_shadow(np__shared *sh, int udp, int port, int on);
#define np__shared_tcp_claim(sh, port, widx, shadowed)                                             \
  np__shared_port_claim((sh), 0, (port), (widx), (shadowed))
#define np__shared_tcp_take(sh, port, widx)    np__shared_port_take((sh), 0, (port), (widx))
#define np__shared_tcp_release(sh, port, widx) np__shared_port_release((sh), 0, (port), (widx))
#define np__shared_tcp_holder(sh, port, widx)  np__shared_port_holder((sh), 0, (port), (widx))
#define np__shared_tcp_shadow(sh, port, on)    np__shared_port_shadow((sh), 0, (port), (on))

/* ---- counts --------------------------------------------------------------------------------- */
/* Take one of max slots of *count: 1, or 0 when all were taken (nothing then changes). */
int np__shared_take(atomic_size_t *count, size_t max);
void np__shared_give(atomic_size_t *count);

#endif
