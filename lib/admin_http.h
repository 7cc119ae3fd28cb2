/* The admin endpoint's HTTP server: Debian's libmicrohttpd driven from our libuv loop (its epoll
 * descriptor in a uv_poll, its timeouts in a uv_timer: no thread of its own), with the limits a
 * server on the network needs (connections, head size, a deadline for slow senders, no bodies),
 * the credentials check (Bearer token or Basic user and password) and a back-off for failed ones.
 * Routing and bodies are the caller's (admin.c). docs/design.md says why libmicrohttpd. Not
 * installed. */
#ifndef NP_ADMIN_HTTP_H
#define NP_ADMIN_HTTP_H

#include <stddef.h>

#include <jansson.h>
#include <uv.h>

#include "natproxy/stats.h"

#include "internal.h"

#define NP_ADMIN_MAX_CONNS    64    /* at once, in all */
#define NP_ADMIN_MAX_PER_IP   16    /* at once, from one address */
#define NP_ADMIN_HEAD_MAX     16384 /* request line and header fields */
#define NP_ADMIN_HEAD_TIMEOUT 5000  /* ms for a request head to arrive */
#define NP_ADMIN_IDLE_TIMEOUT 30    /* s a keep-alive connection may idle */

typedef struct np__admin_http np__admin_http;

/* Who may ask: a Bearer token, or a Basic user and password; all NULL or "": nobody needs to
 * (only allowed on loopback, which the caller checks). Copied. */
typedef struct np__admin_auth {
  const char *token;
  const char *user, *password;
} np__admin_auth;

/* An answer: body (malloc'd, taken by the server; NULL with len 0: none) of type, or static_body
 * (not copied, not freed: compiled-in files) when set. */
typedef struct np__admin_reply {
  int status;
  const char *type; /* static text */
  char *body;
  size_t len;
  const void *static_body;
  const char *cache; /* Cache-Control, static text; NULL: no-store */
  const char *csp;   /* Content-Security-Policy, static text; NULL: none */
} np__admin_reply;

/* A request that passed the checks: method ("GET", "POST"), path (no query). Fill out. Paths in
 * open (NULL-terminated list, e.g. "/healthz") need no credentials. */
typedef void (*np__admin_route_cb)(void *arg, const char *method, const char *path,
                                   np__admin_reply *out);

/* Listen on bind ("IP:PORT", port 0: any). Returns 0, UV_EINVAL (a bad address), UV_EADDRINUSE or
 * another bind error, UV_ENOMEM. log is borrowed and must outlive the server. */
int np__admin_http_start(uv_loop_t *loop, const char *bind, const np__admin_auth *auth,
                         const char *const *open, np__logger *log, np__admin_route_cb cb, void *arg,
                         np__admin_http **out);
int np__admin_http_port(const np__admin_http *a);
/* Replace who may ask (a reload): 0, or UV_ENOMEM with the old credentials still in force. */
int np__admin_http_set_auth(np__admin_http *a, const np__admin_auth *auth);
/* Replace the paths that need no credentials (a reload: they follow the kind of credentials). */
void np__admin_http_set_open(np__admin_http *a, const char *const *open);
/* Close every connection and the listener; done (may be NULL) runs once all of its handles are
 * closed, after which a is freed. */
void np__admin_http_close(np__admin_http *a, void (*done)(void *arg), void *arg);

/* Helpers for replies: a copy of text; JSON {"error": message}; 200 with o's text (o taken; NULL,
 * or no memory: a 500). The text is in memory of our malloc (the server frees it with free()), not
 * jansson's allocator, which an embedder may have replaced. */
void np__admin_reply_text(np__admin_reply *out, int status, const char *type, const char *text);
void np__admin_reply_error(np__admin_reply *out, int status, const char *message);
void np__admin_reply_json(np__admin_reply *out, json_t *o);
/* POST /api/v1/reload's answer, the same for both tools: r the reload's result, why its reason
 * ("" when it has none: np_strerror(r) then). */
void np__admin_reply_reload(np__admin_reply *out, int r, const char *why);
/* No route took the request: 405 naming allowed (the methods path answers; NULL: no such
 * endpoint), else 404. */
void np__admin_reply_unrouted(np__admin_reply *out, const char *path, const char *allowed);
/* {"name": value, ...} for every counter of a stats struct that field describes. */
json_t *np__admin_stats_json(const np_stat_field *(*field)(size_t i), const void *st);

#endif
