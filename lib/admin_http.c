/* libmicrohttpd on our loop (admin_http.h). MHD runs in "external select" mode with epoll: its
 * epoll descriptor sits in a uv_poll, and after each MHD_run its own next deadline arms a
 * uv_timer. MHD's connection timeout is an idle timeout (a byte every few seconds keeps a
 * connection), so each connection also gets a deadline for its request head: a uv_timer armed when
 * it starts and after each response, stopped when a head is complete; when it fires the socket is
 * shut down and MHD closes the connection on its next run. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "admin_http.h"
#include "backoff.h"

struct np__admin_http {
  uv_loop_t *loop;
  struct MHD_Daemon *d;
  uv_poll_t poll;
  uv_timer_t timer;
  np__logger *log;
  np__backoff *backoff;
  char *token; /* Bearer; NULL: none */
  char *basic; /* base64(user:password); NULL: none */
  const char *const *open;
  np__admin_route_cb cb;
  void *arg;
  int port;
  int handles; /* open uv handles: the poll, the timer, the connections' deadlines */
  int closing;
  int in_run;   /* inside MHD_run: a close asked for there waits until it returns */
  int poke;     /* run MHD again at once after this run (see on_completed) */
  int stop_due; /* ... and was asked for */
  void (*done)(void *);
  void *done_arg;
};

/* A connection's deadline for its request head. */
typedef struct aconn {
  uv_timer_t t;
  np__admin_http *a;
  int fd;
} aconn;

/* A request's state across MHD's calls of the handler. */
typedef struct areq {
  int body; /* it sent a body: refused */
} areq;

static void kick(np__admin_http *a);

/* The secrets go with the server. */
static void forget(np__admin_http *a) {
  if (a->token != NULL)
    OPENSSL_cleanse(a->token, strlen(a->token));
  if (a->basic != NULL)
    OPENSSL_cleanse(a->basic, strlen(a->basic));
  free(a->token);
  free(a->basic);
}

static void handle_closed(uv_handle_t *h) {
  np__admin_http *a = h->data;
  if (h != (uv_handle_t *)&a->poll && h != (uv_handle_t *)&a->timer)
    free(h); /* a connection's timer */
  if (--a->handles > 0 || !a->closing)
    return;
  np__backoff_free(a->backoff);
  forget(a);
  if (a->done != NULL)
    a->done(a->done_arg);
  free(a);
}

static void on_io(uv_poll_t *p, int status, int events) {
  (void)status, (void)events;
  kick(p->data);
}

static void on_timer(uv_timer_t *t) {
  kick(t->data);
}

/* Run MHD, then wake for its next deadline (0: it has work buffered, run again at once). */
static void stop(np__admin_http *a);

static void kick(np__admin_http *a) {
  MHD_UNSIGNED_LONG_LONG ms;
  if (a->closing)
    return;
  a->in_run = 1;
  MHD_run(a->d);
  a->in_run = 0;
  if (a->stop_due) { /* a handler's callee closed the server: MHD is out of its run now */
    stop(a);
    return;
  }
  if (a->poke) /* a connection was shut down from a callback: MHD looks at it once more */
    ms = 0, a->poke = 0;
  else if (MHD_get_timeout(a->d, &ms) != MHD_YES) {
    uv_timer_stop(&a->timer);
    return;
  }
  uv_timer_start(&a->timer, on_timer, ms, 0);
}

static void on_deadline(uv_timer_t *t) {
  aconn *k = (aconn *)t;
  np__log(k->a->log, NP_LOG_DEBUG, "admin: no request head within %d ms, closing",
          NP_ADMIN_HEAD_TIMEOUT);
  shutdown(k->fd, SHUT_RDWR);
  uv_timer_start(&k->a->timer, on_timer, 0, 0); /* MHD sees it on its next run */
}

static void on_connection(void *cls, struct MHD_Connection *c, void **sock_ctx,
                          enum MHD_ConnectionNotificationCode code) {
  np__admin_http *a = cls;
  aconn *k = *sock_ctx;

  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if ((k = calloc(1, sizeof(*k))) == NULL || i == NULL) {
      free(k);
      return; /* no deadline then: MHD's idle timeout still ends it */
    }
    k->a = a;
    k->fd = i->connect_fd;
    uv_timer_init(a->loop, &k->t);
    k->t.data = a;
    a->handles++;
    uv_timer_start(&k->t, on_deadline, NP_ADMIN_HEAD_TIMEOUT, 0);
    *sock_ctx = k;
  } else if (k != NULL) { /* closed: before MHD closes the descriptor */
    uv_close((uv_handle_t *)&k->t, handle_closed);
    *sock_ctx = NULL;
  }
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx,
                         enum MHD_RequestTerminationCode why) {
  const union MHD_ConnectionInfo *i =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  (void)cls, (void)why;
  free(*ctx);
  *ctx = NULL;
  if (i != NULL && i->socket_context != NULL) { /* the next request on a keep-alive: a deadline */
    aconn *k = i->socket_context;
    char b;
    uv_timer_start(&k->t, on_deadline, NP_ADMIN_HEAD_TIMEOUT, 0);
    /* A client that half-closed right after its request (printf ... | nc -N): MHD's epoll is
     * edge-triggered and its last read came back short, so the FIN already queued wakes nothing
     * and the connection would wait for the deadline. Its end is read here instead. */
    if (recv(k->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
      shutdown(k->fd, SHUT_RDWR);
      k->a->poke = 1; /* kick re-arms the timer after MHD_run: it must not override this */
    }
  }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  np__admin_http *a = cls;
  char msg[256];
  vsnprintf(msg, sizeof(msg), fmt, ap);
  msg[strcspn(msg, "\n")] = '\0';
  np__log(a->log, NP_LOG_DEBUG, "admin: %s", msg);
}

void np__admin_reply_text(np__admin_reply *out, int status, const char *type, const char *text) {
  out->status = status;
  out->type = type;
  out->len = strlen(text);
  out->body = malloc(out->len + 1);
  if (out->body == NULL)
    out->len = 0;
  else
    memcpy(out->body, text, out->len + 1);
}

void np__admin_reply_error(np__admin_reply *out, int status, const char *message) {
  json_t *o = json_pack("{s:s}", "error", message);
  size_t n = o != NULL ? json_dumpb(o, NULL, 0, JSON_COMPACT) : 0;
  char *s = n > 0 ? malloc(n) : NULL; /* ours: MHD frees it with free() */

  if (s != NULL && json_dumpb(o, s, n, JSON_COMPACT) != n) {
    free(s);
    s = NULL;
  }
  json_decref(o);
  out->status = status;
  out->type = "application/json";
  out->body = s;
  out->len = s != NULL ? n : 0;
}

void np__admin_reply_reload(np__admin_reply *out, int r, const char *why) {
  if (r == 0)
    np__admin_reply_json(out, json_pack("{s:b}", "reloaded", 1));
  else
    np__admin_reply_error(out, r == NP_ESTATE ? 409 : 422, why[0] != '\0' ? why : np_strerror(r));
}

void np__admin_reply_unrouted(np__admin_reply *out, const char *path, const char *allowed) {
  if (allowed != NULL) {
    char msg[64];
    snprintf(msg, sizeof(msg), "method not allowed: use %s", allowed);
    np__admin_reply_error(out, 405, msg);
  } else if (strncmp(path, "/api/", 5) == 0) {
    np__admin_reply_error(out, 404, "no such endpoint (see docs/api-admin.md)");
  } else {
    np__admin_reply_error(out, 404, "no such page");
  }
}

void np__admin_reply_json(np__admin_reply *out, json_t *o) {
  size_t n = o != NULL ? json_dumpb(o, NULL, 0, JSON_COMPACT) : 0;
  char *s = n > 0 ? malloc(n) : NULL;
  if (s != NULL && json_dumpb(o, s, n, JSON_COMPACT) != n) {
    free(s);
    s = NULL;
  }
  json_decref(o);
  if (s == NULL) {
    np__admin_reply_error(out, 500, "out of memory");
    return;
  }
  out->status = 200;
  out->type = "application/json";
  out->body = s;
  out->len = n;
}

json_t *np__admin_stats_json(const np_stat_field *(*field)(size_t i), const void *st) {
  json_t *o = json_object();
  const np_stat_field *f;
  for (size_t i = 0; o != NULL && (f = field(i)) != NULL; i++)
    json_object_set_new(
        o, f->name, json_integer((json_int_t) * (const uint64_t *)((const char *)st + f->offset)));
  return o;
}

static enum MHD_Result send_reply(struct MHD_Connection *c, np__admin_reply *r, const char *header,
                                  const char *value) {
  struct MHD_Response *resp;
  enum MHD_Result ret;

  if (r->static_body != NULL) /* MHD reads a persistent buffer and never writes it */
    resp = MHD_create_response_from_buffer(r->len, (void *)(uintptr_t)r->static_body,
                                           MHD_RESPMEM_PERSISTENT);
  else
    resp = MHD_create_response_from_buffer(r->len, r->body != NULL ? r->body : (void *)"",
                                           r->body != NULL ? MHD_RESPMEM_MUST_FREE
                                                           : MHD_RESPMEM_PERSISTENT);
  if (resp == NULL) {
    free(r->body);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                          r->cache != NULL ? r->cache : "no-store");
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  if (r->csp != NULL)
    MHD_add_response_header(resp, "Content-Security-Policy", r->csp);
  if (header != NULL)
    MHD_add_response_header(resp, header, value);
  ret = MHD_queue_response(c, (unsigned)r->status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* Compared as SHA-256 digests, in constant time: not even the secret's length shows. */
static int same(const char *got, const char *want) {
  unsigned char g[32], w[32];
  unsigned gl = 0, wl = 0;
  return EVP_Digest(got, strlen(got), g, &gl, EVP_sha256(), NULL) == 1 &&
         EVP_Digest(want, strlen(want), w, &wl, EVP_sha256(), NULL) == 1 &&
         CRYPTO_memcmp(g, w, sizeof(g)) == 0;
}

static enum MHD_Result count_auth(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
  (void)cls, (void)kind, (void)value;
  /* MHD_get_connection_values counts every header this returns MHD_YES for */
  return strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0 ? MHD_YES : MHD_NO;
}

static int authorized(const np__admin_http *a, struct MHD_Connection *c) {
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  if (a->token == NULL && a->basic == NULL)
    return 1;
  if (h == NULL || MHD_get_connection_values(c, MHD_HEADER_KIND, count_auth, NULL) > 1)
    return 0; /* one Authorization, or none is believed */
  if (a->token != NULL && strncasecmp(h, "Bearer ", 7) == 0)
    return same(h + 7, a->token);
  if (a->basic != NULL && strncasecmp(h, "Basic ", 6) == 0)
    return same(h + 6, a->basic);
  return 0;
}

/* A request a page of another site made the browser send: a form or a fetch posted at us by a site
 * the operator visits while the browser holds the dashboard's Basic credentials (cross-site
 * request forgery: a disconnect, a reload). Browsers say where a request comes from
 * (Sec-Fetch-Site; Origin on every POST); tools such as curl send neither and are believed. */
static int cross_site(struct MHD_Connection *c) {
  const char *site = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Sec-Fetch-Site");
  const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
  const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);

  if (site != NULL)
    return strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0;
  if (origin == NULL)
    return 0;
  /* "http://HOST[:PORT]": this server as the browser addressed it */
  return strncmp(origin, "http://", 7) != 0 || host == NULL || strcmp(origin + 7, host) != 0;
}

static int is_open(const np__admin_http *a, const char *path) {
  for (const char *const *p = a->open; p != NULL && *p != NULL; p++)
    if (strcmp(*p, path) == 0)
      return 1;
  return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **ctx) {
  np__admin_http *a = cls;
  const union MHD_ConnectionInfo *ci;
  np__admin_reply r = {0};
  const struct sockaddr *peer;
  uint64_t now = uv_now(a->loop), wait;
  areq *q = *ctx;

  (void)version, (void)upload;
  if (q == NULL) { /* the first call: the head is complete, no body read yet */
    const char *cl =
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if ((q = calloc(1, sizeof(*q))) == NULL)
      return MHD_NO;
    *ctx = q;
    /* Nothing here takes a body: refused before it is read, so no body can hold the connection
     * (the head deadline stops only for requests without one). MHD closes the connection after
     * this answer, the body unread. */
    if ((cl != NULL && strcmp(cl, "0") != 0) ||
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) !=
            NULL) {
      np__admin_reply_error(&r, 413, "requests here have no body");
      return send_reply(c, &r, MHD_HTTP_HEADER_CONNECTION, "close");
    }
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci != NULL && ci->socket_context != NULL)
      uv_timer_stop(&((aconn *)ci->socket_context)->t);
    return MHD_YES;
  }
  if (*upload_size != 0) { /* nothing here takes a body: dropped, and refused at the end */
    q->body = 1;
    *upload_size = 0;
    return MHD_YES;
  }
  ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  peer = ci != NULL ? ci->client_addr : NULL;
  if (q->body) {
    np__admin_reply_error(&r, 413, "requests here have no body");
    return send_reply(c, &r, NULL, NULL);
  }
  if (!is_open(a, url)) {
    if (peer != NULL && (wait = np__backoff_wait(a->backoff, peer, now)) > 0) {
      char secs[24];
      snprintf(secs, sizeof(secs), "%llu", (unsigned long long)((wait + 999) / 1000));
      np__admin_reply_error(&r, 429, "too many failed logins from this address: wait and retry");
      return send_reply(c, &r, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    if (!authorized(a, c)) {
      /* Only a wrong guess counts: a request without credentials (a browser's first try, a
       * curious scan) must not lock operators behind the same address (a reverse proxy) out. */
      if (peer != NULL &&
          MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION) != NULL)
        np__backoff_fail(a->backoff, peer, now, NULL);
      np__log(a->log, NP_LOG_INFO, "admin: %s %s without valid credentials", method, url);
      np__admin_reply_error(&r, 401, "credentials needed (admin_token or admin_user)");
      /* Basic first when it is configured: browsers then ask for it */
      return send_reply(c, &r, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                        a->basic != NULL ? "Basic realm=\"natproxy\", charset=\"UTF-8\""
                                         : "Bearer realm=\"natproxy\"");
    }
    if (peer != NULL)
      np__backoff_clear(a->backoff, peer, now);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && cross_site(c)) {
    np__log(a->log, NP_LOG_INFO, "admin: %s %s from another site's page, refused", method, url);
    np__admin_reply_error(&r, 403, "a request from another site's page");
    return send_reply(c, &r, NULL, NULL);
  }
  a->cb(a->arg, method, url, &r);
  if (r.status == 0)
    np__admin_reply_error(&r, 500, "no answer");
  return send_reply(c, &r, NULL, NULL);
}

static int copy_auth(np__admin_http *a, const np__admin_auth *auth) {
  if (auth == NULL)
    return 0;
  if (auth->token != NULL && auth->token[0] != '\0' && (a->token = strdup(auth->token)) == NULL)
    return UV_ENOMEM;
  if (auth->user != NULL && auth->user[0] != '\0') {
    size_t n = strlen(auth->user) + 1 + (auth->password != NULL ? strlen(auth->password) : 0);
    char *plain = malloc(n + 1);
    if (plain == NULL || (a->basic = malloc(4 * ((n + 2) / 3) + 1)) == NULL) {
      free(plain);
      return UV_ENOMEM;
    }
    snprintf(plain, n + 1, "%s:%s", auth->user, auth->password != NULL ? auth->password : "");
    EVP_EncodeBlock((unsigned char *)a->basic, (unsigned char *)plain, (int)n);
    OPENSSL_cleanse(plain, n);
    free(plain);
  }
  return 0;
}

void np__admin_http_set_open(np__admin_http *a, const char *const *open) {
  a->open = open;
}

int np__admin_http_set_auth(np__admin_http *a, const np__admin_auth *auth) {
  char *token = a->token, *basic = a->basic;
  int r;

  a->token = a->basic = NULL;
  if ((r = copy_auth(a, auth)) != 0) {
    forget(a); /* the half copied */
    a->token = token;
    a->basic = basic;
    return r;
  }
  char *fresh_token = a->token, *fresh_basic = a->basic;
  a->token = token;
  a->basic = basic;
  forget(a);
  a->token = fresh_token;
  a->basic = fresh_basic;
  return 0;
}

int np__admin_http_start(uv_loop_t *loop, const char *bind, const np__admin_auth *auth,
                         const char *const *open, np__logger *log, np__admin_route_cb cb, void *arg,
                         np__admin_http **out) {
  struct sockaddr_storage ss;
  const union MHD_DaemonInfo *info;
  np__admin_http *a;
  int r;

  if (np__parse_addr(bind, &ss) != 0)
    return UV_EINVAL;
  if ((a = calloc(1, sizeof(*a))) == NULL)
    return UV_ENOMEM;
  a->loop = loop;
  a->log = log;
  a->open = open;
  a->cb = cb;
  a->arg = arg;
  if ((r = copy_auth(a, auth)) != 0 || (r = np__backoff_new(1000, 300000, &a->backoff)) != 0)
    goto err;
  a->d = MHD_start_daemon(
      MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (ss.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0), 0, NULL,
      NULL, on_request, a, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
      MHD_OPTION_CONNECTION_LIMIT, (unsigned)NP_ADMIN_MAX_CONNS, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)NP_ADMIN_MAX_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)NP_ADMIN_IDLE_TIMEOUT,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)NP_ADMIN_HEAD_MAX, MHD_OPTION_STRICT_FOR_CLIENT,
      (int)1, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, MHD_OPTION_NOTIFY_CONNECTION,
      on_connection, a, MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_END);
  if (a->d == NULL) {
    /* MHD says why only in its log; the usual cause is the port */
    r = UV_EADDRINUSE;
    goto err;
  }
  info = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_EPOLL_FD);
  if (info == NULL || (r = uv_poll_init(loop, &a->poll, info->epoll_fd)) != 0) {
    MHD_stop_daemon(a->d);
    r = r != 0 ? r : UV_EINVAL;
    goto err;
  }
  a->poll.data = a;
  uv_timer_init(loop, &a->timer);
  a->timer.data = a;
  a->handles = 2;
  info = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
  a->port = info != NULL ? info->port : 0;
  uv_poll_start(&a->poll, UV_READABLE, on_io);
  kick(a);
  *out = a;
  return 0;
err:
  np__backoff_free(a->backoff);
  forget(a);
  free(a);
  return r;
}

int np__admin_http_port(const np__admin_http *a) {
  return a->port;
}

void np__admin_http_close(np__admin_http *a, void (*done)(void *arg), void *arg) {
  a->done = done;
  a->done_arg = arg;
  if (a->in_run) {
    a->stop_due = 1;
    return;
  }
  stop(a);
}

static void stop(np__admin_http *a) {
  a->closing = 1;
  /* the poll first: MHD closes the descriptor it watches */
  uv_close((uv_handle_t *)&a->poll, handle_closed);
  uv_close((uv_handle_t *)&a->timer, handle_closed);
  MHD_stop_daemon(a->d); /* closes every connection: their deadlines close above */
}
