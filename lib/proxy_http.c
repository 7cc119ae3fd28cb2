/* The HTTP proxy type (type = http, docs/config.md "HTTP services on a shared port"): one public
 * listener for all of them, vhost_http_port, opened when the server starts. Each request on a
 * visitor's connection is routed by its Host and path (http_route.c) to the proxy that claimed
 * them, and forwarded with X-Forwarded-* (http_head.c) over a work connection of that proxy's
 * client. Requests that follow on the same connection go over the same work connection while they
 * name the same proxy; one naming another waits until every response before it is complete, then
 * the work connection is closed and the request goes to the new proxy over a new one (a "run" is
 * the requests of one connection that share a work connection: the pool's visitor, the access
 * log's line). Responses are read only to find where each ends. After a request with Upgrade
 * (WebSocket) or CONNECT, the two connections are joined as bytes (join.c) until they end.
 *
 * The server answers itself, and then closes the connection: 400 (a head http_parser refuses, no
 * valid Host), 431 (a head over 16 KiB), 404 (no proxy claimed the host), 401 (http_user), 403
 * (allow_ips), 502 (the client that claimed the host is gone, its service refused, or no work
 * connection came in time). */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "http_conn.h"

typedef np__hconn hconn;

/* A proxy's own part (px->impl). */
typedef struct hproxy {
  char host_rewrite[NP_MSG_TEXT_MAX + 1]; /* "": keep the visitor's Host */
  char *auth;                             /* base64(user:password) to expect, or NULL */
} hproxy;

static np__vhost *vhost_of(struct np_server *srv) {
  return srv->type_data[NP_PROXY_HTTP];
}

#define CONNS(vh) (*(hconn **)&(vh)->conns)

/* ---- routing -----------------------------------------------------------------------------------
 */

/* Whether the head carries the credentials px wants (constant time in the secret). */
static int authorized(const hconn *h, const hproxy *hp) {
  np__http_span v;
  size_t n;

  if (hp->auth == NULL)
    return 1;
  if (!np__http_head_find(&h->head, "Authorization", &v))
    return 0;
  n = strlen(hp->auth);
  if (v.len < 6 || strncasecmp(v.p, "Basic ", 6) != 0)
    return 0;
  v.p += 6, v.len -= 6;
  while (v.len > 0 && *v.p == ' ')
    v.p++, v.len--;
  return v.len == n && CRYPTO_memcmp(v.p, hp->auth, n) == 0;
}

/* The path of the target: origin-form as is, absolute-form after its authority. */
static np__http_span target_path(const hconn *h) {
  np__http_span t = np__http_head_target(&h->head);
  if (t.len > 0 && t.p[0] != '/') {
    const char *s = memchr(t.p, ':', t.len);
    if (s != NULL && (size_t)(t.p + t.len - s) > 3 && s[1] == '/' && s[2] == '/') {
      const char *p = memchr(s + 3, '/', (size_t)(t.p + t.len - (s + 3)));
      t.len = p != NULL ? (size_t)(t.p + t.len - p) : 0;
      t.p = p != NULL ? p : "/";
    }
  }
  return t;
}

/* Answer an error in the head (NP_EPROTO, NP_ETOOBIG, NP_EHOST) and close. */
static void answer_bad_head(hconn *h, int err) {
  np__hconn_answer(h, err == NP_ETOOBIG ? 431 : 400,
                   err == NP_ETOOBIG ? "Request Header Fields Too Large" : "Bad Request", NULL,
                   err == NP_ETOOBIG ? "The request head is over 16 KiB or 100 fields."
                   : err == NP_EHOST ? "The request has no valid Host header."
                                     : "The request is not HTTP/1.x.");
}

/* A run that is open goes on only when the request is for its proxy; anything else waits for the
 * run's responses (H_DRAIN), then comes here again with no run. A request for a proxy of another
 * worker goes there with its connection, once nothing is being written to the visitor. */
static void dispatch(hconn *h) {
  np__vhost *vh = h->vh;
  np__http_span host = {NULL, 0}, path;
  char text[NP_HTTP_HOST_MAX + 128];
  int found = NP_HTTP_ROUTE_NONE;
  unsigned widx = vh->srv->widx;
  proxy *px = NULL;

  if (h->head.state == NP_HTTP_DONE) {
    host = np__http_head_host(&h->head);
    path = target_path(h);
    if (host.len > 0)
      found = np__vhost_find(vh, host.p, host.len, path.p, path.len, &px, &widx);
  }
  if (h->work != NULL) {
    if (px != NULL && px == h->px && authorized(h, px->impl)) {
      if (np__hconn_forward(h) != 0)
        np__hconn_finish(h, 1);
    } else
      h->state = H_DRAIN;
    return;
  }
  if (h->head.state < 0) {
    answer_bad_head(h, h->head.state);
    return;
  }
  if (host.len == 0) {
    np__hconn_answer(h, 400, "Bad Request", NULL,
                     "The request names no host (HTTP/1.0 without Host).");
    return;
  }
  if (found == NP_HTTP_ROUTE_FOUND && px == NULL) {
    if (h->to_visitor > 0) {
      h->state = H_DRAIN; /* the previous response is still going out: here again after it */
      return;
    }
    if (h->from_peer ? np__hconn_bridge(h, widx) == 0
                     : h->hops < NP_VHOST_HOPS_MAX && np__hconn_move(h, widx) == 0)
      return;
    vh->srv->stats.visitors_failed++;
    np__hconn_answer(h, 502, "Bad Gateway", NULL,
                     "The client that serves this host could not be reached on this server.");
    return;
  }
  if (px == NULL && !h->from_peer) {
    /* Another server of the cluster may hold it (route_store, cluster_token). */
    int r = np__hconn_to_peer(h, host.p, host.len);
    if (r == 0)
      return;
    if (r == UV_EBUSY) {
      h->state = H_DRAIN; /* the previous response is still going out: here again after it */
      return;
    }
  }
  if (px == NULL) {
    /* host is a checked host name: nothing in it needs escaping */
    snprintf(text, sizeof(text),
             found == NP_HTTP_ROUTE_GONE
                 ? "The client that serves %.*s is not connected to this server."
                 : "No service is registered for %.*s on this server.",
             (int)host.len, host.p);
    if (found == NP_HTTP_ROUTE_GONE)
      vh->srv->stats.visitors_failed++;
    np__hconn_answer(h, found == NP_HTTP_ROUTE_GONE ? 502 : 404,
                     found == NP_HTTP_ROUTE_GONE ? "Bad Gateway" : "Not Found", NULL, text);
    return;
  }
  if (!h->from_peer)
    h->hops = 0; /* served here: a later request may move again (a peer's stream cannot) */
  vh->srv->stats.visitors_total++;
  if (!authorized(h, px->impl)) {
    np__hconn_answer(h, 401, "Unauthorized", "WWW-Authenticate: Basic realm=\"Restricted\"\r\n",
                     "This service needs a user name and password.");
    return;
  }
  if (!np__proxy_admits(px, h->addr.sa.sa_family != 0 ? &h->addr.sa : NULL)) {
    np__hconn_answer(h, 403, "Forbidden", NULL, "Your address may not use this service.");
    return;
  }
  h->state = H_WAIT;
  h->px = px;
  if (np__visitor_arrive(px, h, h->addr.sa.sa_family != 0 ? &h->addr.sa : NULL,
                         h->to.sa.sa_family != 0 ? &h->to.sa : NULL) != 0) {
    h->px = NULL;
    h->state = H_HEAD;
    vh->srv->stats.visitors_refused++;
    np__hconn_answer(h, 503, "Service Unavailable", NULL, "The server is out of memory.");
  }
  /* on in http_join, or http_drop */
}

/* ---- the core's calls --------------------------------------------------------------------------
 */

static int http_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len) {
  hconn *h = v->impl;
  np__strlcpy(h->host_rewrite, ((const hproxy *)v->px->impl)->host_rewrite,
              sizeof(h->host_rewrite));
  np__hconn_join(h, v, s, work, rest, rest_len);
  return 0;
}

static void http_drop(visitor *v, const char *end) {
  hconn *h = v->impl;
  np__access_log(v->srv, v->px->name, &v->addr, v->since, 0, 0, end);
  h->px = NULL;
  h->state = H_HEAD;
  if (h->visitor_eof) {
    np__hconn_finish(h, 1);
    return;
  }
  np__hconn_answer(h, 502, "Bad Gateway", NULL,
                   strcmp(end, "local_failed") == 0
                       ? "The service behind this host refused the connection."
                       : "The client that serves this host did not answer in time.");
}

/* ---- the listener ------------------------------------------------------------------------------
 */

/* A visitor's connection, accepted here or handed over by another worker: NULL when out of
 * memory (c is then aborted). */
static hconn *take(np__vhost *vh, np_conn *c) {
  struct np_server *srv = vh->srv;
  struct sockaddr_storage ss;
  hconn *h = calloc(1, sizeof(*h));
  uv_loop_t *loop;
  int fd;

  if (h == NULL) {
    np__conn_abort(c, NULL);
    return NULL;
  }
  h->vh = vh;
  h->vc = c;
  c->data = h;
  h->refs = 1; /* the visitor's conn */
  h->state = H_HEAD;
  h->dispatch = dispatch;
  np__http_head_init(&h->head);
  if (np__conn_peer_addr(c, &ss) == 0)
    np__addr_copy(&h->addr, (struct sockaddr *)&ss);
  if (np__conn_local_addr(c, &ss) == 0)
    np__addr_copy(&h->to, (struct sockaddr *)&ss);
  /* Its X-Forwarded-* are believed when it came through a load balancer of proxy_protocol_from */
  if ((fd = np__conn_tcp_fd(c, &loop)) >= 0) {
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && srv->pp_from.n > 0 &&
        np__cidrs_allow(&srv->pp_from, (struct sockaddr *)&ss))
      h->trusted = 1;
  }
  srv->refs++;
  np__vhost_ref(vh);
  NP_DLIST_PUSH(CONNS(vh), h, prev, next);
  return h;
}

static void on_visitor(np__listener *l, np_conn *c) {
  hconn *h = take(np__listener_data(l), c);
  if (h != NULL)
    np__hconn_start(h);
}

/* From another worker: its bytes read there are read again here, first. */
static void http_adopt(struct np_server *srv, np_conn *c, const char *pre, size_t len,
                       unsigned hops) {
  np__vhost *vh = vhost_of(srv);
  hconn *h;

  if (vh == NULL) {
    np__conn_abort(c, NULL);
    return;
  }
  if ((h = take(vh, c)) == NULL)
    return;
  h->hops = hops;
  if (hops >= NP_VHOST_FROM_PEER) { /* bridged here from a peer's stream (np__vhost_bridge) */
    h->from_peer = 1;
    h->hops = NP_VHOST_HOPS_MAX;
  }
  if (len > 0 && (h->stash = malloc(len)) == NULL) {
    np__hconn_finish(h, 1);
    return;
  }
  if (len > 0)
    memcpy(h->stash, pre, len);
  h->stash_len = len;
  np__hconn_start(h);
}

/* From another server of the cluster (peer_serve.c): c is a stream of its connection, whose
 * requests are routed here and never forwarded again. */
static int http_forwarded(struct np_server *srv, np_conn *c, const np_msg *fwd,
                          const struct sockaddr *from, const struct sockaddr *to) {
  np__vhost *vh = vhost_of(srv);
  hconn *h;

  (void)fwd;
  if (vh == NULL)
    return UV_ENOENT;
  if ((h = take(vh, c)) == NULL)
    return 0; /* out of memory: c was aborted */
  h->from_peer = 1;
  h->hops = NP_VHOST_HOPS_MAX; /* a stream cannot move to another worker */
  if (from != NULL)
    np__addr_copy(&h->addr, from);
  if (to != NULL)
    np__addr_copy(&h->to, to);
  np__hconn_start(h);
  return 0;
}

static void on_tick(np__vhost *vh, uint64_t now) {
  hconn *next;
  for (hconn *h = CONNS(vh); h != NULL; h = next) {
    next = h->next;
    np__hconn_tick(h, now);
  }
}

static int server_start(struct np_server *srv, const struct sockaddr *control) {
  np__vhost *vh;
  int r;

  (void)control;
  if (srv->cfg.vhost_http_port == 0)
    return 0;
  if (!native(srv)) {
    np__log(&srv->log, NP_LOG_WARN, "vhost_http_port needs codec native: not listening");
    return 0;
  }
  if ((r = np__vhost_open(srv, srv->cfg.vhost_http_port, "vhost_http_port", NP_ROUTES_HTTP,
                          on_visitor, on_tick, &vh)) != 0)
    return r;
  srv->type_data[NP_PROXY_HTTP] = vh;
  np__log(&srv->log, NP_LOG_INFO, "HTTP services on port %d (vhost_http_port)%s%s", vh->port,
          srv->cfg.subdomain_host[0] ? ", subdomains of " : "", srv->cfg.subdomain_host);
  return 0;
}

static void server_drain(struct np_server *srv) {
  np__vhost *vh = vhost_of(srv);
  hconn *next;

  if (vh == NULL)
    return;
  np__vhost_stop_listening(vh);
  /* An idle keep-alive connection would hold its run (a joined visitor) until drain_timeout. */
  for (hconn *h = CONNS(vh); h != NULL; h = next) {
    next = h->next;
    np__hconn_drain(h);
  }
}

static void server_stop(struct np_server *srv) {
  np__vhost *vh = vhost_of(srv);
  hconn *next;

  if (vh == NULL)
    return;
  srv->type_data[NP_PROXY_HTTP] = NULL;
  for (hconn *h = CONNS(vh); h != NULL; h = next) {
    next = h->next;
    np__hconn_stop(h);
  }
  np__vhost_close(vh);
}

/* ---- proxies -----------------------------------------------------------------------------------
 */

static int http_open(proxy *px, const struct sockaddr *addr) {
  np__vhost *vh = vhost_of(px->srv);
  const char *user = NULL, *pass = NULL;
  hproxy *hp;
  int r;

  (void)addr;
  if (vh == NULL) {
    if (px->why != NULL)
      snprintf(px->why, px->why_len, "this server has no vhost_http_port for type = http");
    return NP_EUNSUPPORTED;
  }
  if ((hp = calloc(1, sizeof(*hp))) == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < px->s->n_opts; i++) {
    const np__proxy_opt *o = &px->s->opts[i];
    if (strcmp(o->name, px->name) != 0)
      continue;
    if (strcmp(o->key, "host_header_rewrite") == 0)
      np__strlcpy(hp->host_rewrite, o->value, sizeof(hp->host_rewrite));
    else if (strcmp(o->key, "http_user") == 0)
      user = o->value;
    else if (strcmp(o->key, "http_password") == 0)
      pass = o->value;
  }
  r = 0;
  if (user != NULL && pass != NULL) {
    /* base64(user:pass), compared with what follows "Basic " in the visitor's Authorization */
    size_t n = strlen(user) + 1 + strlen(pass);
    char *plain = malloc(n + 1);
    if (plain == NULL || (hp->auth = malloc(4 * ((n + 2) / 3) + 1)) == NULL)
      r = UV_ENOMEM;
    else {
      snprintf(plain, n + 1, "%s:%s", user, pass);
      EVP_EncodeBlock((unsigned char *)hp->auth, (unsigned char *)plain, (int)n);
    }
    if (plain != NULL)
      OPENSSL_cleanse(plain, n);
    free(plain);
  }
  if (r == 0 && (r = np__vhost_claim(vh, px, "http", 1)) == 0) {
    px->impl = hp;
    px->port = vh->port;
    return 0;
  }
  free(hp->auth);
  free(hp);
  return r;
}

static void http_close(proxy *px) {
  hproxy *hp = px->impl;

  np__vhost_release(px->srv, NP_ROUTES_HTTP, px); /* 502 for its names until claimed again */
  if (hp != NULL) {
    free(hp->auth);
    free(hp);
  }
  np__proxy_closed(px);
}

const np__proxy_type np__proxy_http = {
    .name = "http",
    .kind = NP_PROXY_HTTP,
    .named = 1,
    .server_start = server_start,
    .server_stop = server_stop,
    .server_drain = server_drain,
    .open = http_open,
    .close = http_close,
    .join = http_join,
    .drop = http_drop,
    .adopt = http_adopt,
    .forwarded = http_forwarded,
};
