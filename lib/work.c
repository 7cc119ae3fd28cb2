/* Work matching, the session core's half that deals with visitors: proxies opened through their
 * type, visitors in the pending pool (and their expiry), REQ_WORK to their client, and the handover
 * of each to its type once its work connection came. Nothing here knows what a visitor is (a TCP
 * connection, a UDP flow): proxy.h is the whole of what a type and the core say to each other. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#include "auth.h"

static void arm_pool_timer(struct np_server *srv);
static int start_pooled(struct np_server *srv, session *owner, proxy *px, visitor *v, uint64_t id);

/* ---- types -------------------------------------------------------------------------------- */

int np__server_add_type(struct np_server *srv, const np__proxy_type *type) {
  if (srv->started || type == NULL || type->open == NULL || type->close == NULL ||
      type->join == NULL || type->drop == NULL)
    return UV_EINVAL;
  /* Out of memory: the type works, its visitors' waits go unmeasured (np__meter_start). */
  if (srv->first_byte[type->kind] == NULL)
    srv->first_byte[type->kind] = calloc(1, sizeof(np__histo));
  srv->types[type->kind] = type;
  return 0;
}

int np__server_types_start(struct np_server *srv, const struct sockaddr *control) {
  for (size_t k = 0; k < sizeof(srv->types) / sizeof(srv->types[0]); k++) {
    int r;
    if (srv->types[k] != NULL && srv->types[k]->server_start != NULL &&
        (r = srv->types[k]->server_start(srv, control)) != 0)
      return r;
  }
  return 0;
}

void np__server_types_stop(struct np_server *srv) {
  for (size_t k = 0; k < sizeof(srv->types) / sizeof(srv->types[0]); k++)
    if (srv->types[k] != NULL && srv->types[k]->server_stop != NULL)
      srv->types[k]->server_stop(srv);
}

void np__server_types_drain(struct np_server *srv) {
  for (size_t k = 0; k < sizeof(srv->types) / sizeof(srv->types[0]); k++)
    if (srv->types[k] != NULL && srv->types[k]->server_drain != NULL)
      srv->types[k]->server_drain(srv);
}

size_t np__session_joins(const session *s) {
  size_t n = 0;
  for (const np__track *t = s->joins.head; t != NULL; t = t->next)
    n++;
  return n;
}

void np__session_close_proxies(session *s) {
  while (s->proxies != NULL) {
    proxy *px = s->proxies;
    s->proxies = px->next;
    s->n_proxies--;
    np__proxy_close(px);
  }
}

void np__server_types_session_end(session *s) {
  struct np_server *srv = s->srv;
  for (size_t k = 0; k < sizeof(srv->types) / sizeof(srv->types[0]); k++)
    if (srv->types[k] != NULL && srv->types[k]->session_end != NULL)
      srv->types[k]->session_end(s);
}

/* ---- joins a session tracks ------------------------------------------------------------------ */

void np__session_track(session *s, np__track *t) {
  np__track_add(s != NULL ? &s->joins : NULL, t);
}

/* Work connections of a dead session are dead too: cut their visitors off now rather than leave
 * them hanging until TCP gives up. */
void np__session_end_joins(session *s) {
  np__track_abort_all(&s->joins);
}

void np__session_local_failed(session *s, uint64_t id) {
  np__track_note(&s->joins, id, "local_failed");
}

/* ---- logs ----------------------------------------------------------------------------------- */

/* Out of descriptors and the like: say so once per second at most, with how many connections were
 * refused meanwhile, not once per connection. */
void np__server_accept_error(struct np_server *srv, const char *name, int port, int err,
                             uint64_t refused) {
  uint64_t now = now_ms(srv);

  srv->stats.accept_errors++;
  srv->stats.refused_no_fd += refused;
  srv->refused_unlogged += refused;
  if (srv->accept_error_logged == 0 || now - srv->accept_error_logged >= 1000) {
    srv->accept_error_logged = now;
    np__log(&srv->log, NP_LOG_ERROR,
            "%s port %d: accept failed: %s; %llu %s refused since the last report%s", name, port,
            np_strerror(err), (unsigned long long)srv->refused_unlogged,
            np__plural(srv->refused_unlogged, "connection", "connections"),
            err == UV_EMFILE || err == UV_ENFILE ? " (raise the descriptor limit: ulimit -n)" : "");
    srv->refused_unlogged = 0;
  }
}

/* How long a load balancer's connection may take to send its PROXY header: it sends it at once. */
#define PP_TIMEOUT_MS 5000

static void pp_failed(void *arg, const struct sockaddr *peer, int err) {
  struct np_server *srv = arg;
  char who[64];

  srv->stats.pp_refused++;
  np__addr_str(peer, who, sizeof(who));
  np__log(&srv->log, NP_LOG_WARN,
          "%s is in proxy_protocol_from but sent no valid PROXY protocol header%s%s: closed", who,
          err == UV_ETIMEDOUT ? " within 5s" : ": ",
          err == UV_ETIMEDOUT ? ""
          : err == NP_ELIMIT  ? "too many connections waiting for theirs"
                              : np_strerror(err));
}

void np__server_listener_pp(struct np_server *srv, np__listener *l) {
  np__listener_proxy_protocol(l, &srv->pp_from, PP_TIMEOUT_MS, pp_failed, srv);
}

void np__server_accept_failed(np__listener *l, int err, uint64_t refused) {
  proxy *px = np__listener_data(l);
  np__server_accept_error(px->srv, px->name, px->port, err, refused);
}

/* The access log: one line per visitor once it is gone, telling what haproxy's tcplog tells (who,
 * which proxy, bytes, duration, how it ended) as key=value fields an operator can grep;
 * docs/config.md gives the format. */
void np__access_log(struct np_server *srv, const char *name, const np__addr *from, uint64_t since,
                    uint64_t in, uint64_t out, const char *end) {
  char who[64] = "?";
  uint64_t ms = now_ms(srv) - since;

  if (!srv->cfg.access_log)
    return;
  if (from != NULL && from->sa.sa_family != 0)
    np__addr_str(&from->sa, who, sizeof(who));
  np__log(&srv->log, NP_LOG_INFO,
          "access proxy=%s visitor=%s in=%llu out=%llu duration=%llu.%03llus end=%s", name, who,
          (unsigned long long)in, (unsigned long long)out, (unsigned long long)(ms / 1000),
          (unsigned long long)(ms % 1000), end);
}

const char *np__join_end(int status, char *buf, size_t len) {
  switch (status) {
  case 0:
    return "closed"; /* both ways ended with EOF */
  case UV_ECONNRESET:
  case UV_EPIPE:
    return "reset";
  case UV_ETIMEDOUT:
    return "timeout";
  case UV_ECANCELED:
    return "aborted"; /* its client's session ended, or the server is stopping */
  default:
    snprintf(buf, len, "error:%s", np_err_name(status));
    return buf;
  }
}

/* ---- visitors ------------------------------------------------------------------------------- */

/* The core's part of a visitor ends here; whatever the type holds ends in its join or drop. */
static void visitor_free(visitor *v) {
  struct np_server *srv = v->srv;
  if (v->pend)
    np__shared_give(&srv->shared->pending);
  free(v);
  np__server_unref(srv);
}

void np__visitor_drop(visitor *v, const char *end) {
  np__proxy_count(v->px, NULL, offsetof(np_proxy_stats, visitors_dropped));
  v->px->type->drop(v, end);
  visitor_free(v);
}

void np__visitor_removed(uint64_t id, void *item, void *arg) {
  (void)id;
  (void)arg;
  ((visitor *)item)->srv->stats.visitors_aborted++;
  np__visitor_drop(item, "aborted");
}

void np__server_join(struct np_server *srv, session *s, np_conn *work, visitor *v, const char *rest,
                     size_t rest_len) {
  np__meter_start(&v->meter, v->px, s, v->since_ns);
  if (v->px->type->join(v, s, work, rest, rest_len) == 0) {
    srv->stats.visitors_joined++;
    np__proxy_count(v->px, s, offsetof(np_proxy_stats, visitors_joined));
  } else {
    srv->stats.visitors_aborted++;
    np__meter_end(&v->meter);
  }
  visitor_free(v);
}

static void on_expired(uint64_t id, void *item, void *arg) {
  visitor *v = item;
  struct np_server *srv = arg;
  srv->stats.visitors_expired++;
  np__log(&srv->log, NP_LOG_INFO, "proxy %s: visitor %llu got no work connection within %llums",
          v->px->name, (unsigned long long)id, (unsigned long long)srv->cfg.pending_timeout_ms);
  np__visitor_drop(v, "timeout");
}

static void on_pool_timer(uv_timer_t *t) {
  struct np_server *srv = t->data;
  srv->pool_ops->expire(srv->pool, now_ms(srv), on_expired, srv);
  arm_pool_timer(srv);
}

static void arm_pool_timer(struct np_server *srv) {
  uint64_t next = srv->pool_ops->next_deadline(srv->pool);
  uint64_t now = now_ms(srv);

  if (srv->closing)
    return;
  if (next == UINT64_MAX) {
    uv_timer_stop(&srv->pool_timer);
    return;
  }
  uv_timer_start(&srv->pool_timer, on_pool_timer, np__ms_left(next, now), 0);
}

static session *visit_owner(struct np_server *srv, proxy *px) {
  if (px->s != NULL)
    return px->s;
  /* The line codec's visit port belongs to whichever client is connected. */
  for (session *s = srv->sessions; s != NULL; s = s->next)
    if (s->state == S_READY && !s->closing)
      return s;
  return NULL;
}

int np__proxy_admits(proxy *px, const struct sockaddr *addr) {
  struct np_server *srv = px->srv;
  char peer[64];

  if (px->allow_ips.n == 0 || (addr != NULL && np__cidrs_allow(&px->allow_ips, addr)))
    return 1;
  srv->stats.visitors_denied++;
  np__proxy_count(px, NULL, offsetof(np_proxy_stats, visitors_denied));
  if (srv->log.level >= NP_LOG_DEBUG) {
    /* DEBUG: a scan from outside would otherwise write a line per port and probe. */
    if (addr != NULL)
      np__addr_str(addr, peer, sizeof(peer));
    np__log(&srv->log, NP_LOG_DEBUG, "proxy %s: visitor %s is outside allow_ips, closed", px->name,
            addr != NULL ? peer : "?");
  }
  return 0;
}

/* A new visitor on px: its client is asked for a work connection, or it joins a pre-opened one at
 * once. */
/* REQ_WORK's and START's addresses (docs/protocol.md): empty when not known. */
static void put_addrs(np_msg *m, const visitor *v) {
  if (v->addr.sa.sa_family != 0)
    np__addr_str(&v->addr.sa, m->addr, sizeof(m->addr));
  if (v->to.sa.sa_family != 0)
    np__addr_str(&v->to.sa, m->text, sizeof(m->text));
}

/* max_pending holds for every loop that shares srv->shared, so a visitor takes its place there
 * before the pool's put (which checks max_pending_per_proxy, and max_pending once more on its own
 * visitors); it gives it back when it is freed, joined or dropped. An embedder's pool (which the
 * limits do not reach: np_server_set_pool) counts alone. */
static int reserve_pending(struct np_server *srv, visitor *v) {
  size_t max = srv->cfg.max_pending != 0 ? srv->cfg.max_pending : SIZE_MAX; /* 0: no limit */

  if (srv->pool_ops != np_pool_default_ops())
    return 0;
  if (!np__shared_take(&srv->shared->pending, max))
    return NP_EPOOLFULL;
  v->pend = 1;
  return 0;
}

int np__visitor_arrive(proxy *px, void *impl, const struct sockaddr *from,
                       const struct sockaddr *to) {
  struct np_server *srv = px->srv;
  np_msg m = {.type = NP_MSG_REQ_WORK};
  visitor *v;
  session *s;
  int r;

  np__proxy_count(px, NULL, offsetof(np_proxy_stats, visitors));
  if ((v = calloc(1, sizeof(*v))) == NULL) {
    np__proxy_count(px, NULL, offsetof(np_proxy_stats, visitors_dropped));
    return UV_ENOMEM;
  }
  v->srv = srv;
  v->px = px;
  v->impl = impl;
  v->since = now_ms(srv);
  v->since_ns = uv_hrtime();
  if (from != NULL)
    np__addr_copy(&v->addr, from);
  if (to != NULL)
    np__addr_copy(&v->to, to);
  srv->refs++; /* the visitor's, until it is dropped or joined */
  if ((s = visit_owner(srv, px)) == NULL) {
    srv->stats.visitors_refused++;
    np__log(&srv->log, NP_LOG_INFO, "proxy %s: visitor refused: no client connected", px->name);
    np__visitor_drop(v, "refused");
    return 0;
  }
  v->session_id = s->id;
  v->deadline = now_ms(srv) + srv->cfg.pending_timeout_ms;
  m.id = v->id = ++srv->next_visitor_id;
  if (px->type->visitor_id != NULL)
    px->type->visitor_id(v);
  if (s->idle != NULL && start_pooled(srv, s, px, v, m.id) == 0)
    return 0;
  strcpy(m.name, px->name);
  put_addrs(&m, v);
  r = reserve_pending(srv, v);
  if (r != 0 || (r = srv->pool_ops->put(srv->pool, m.id, px, v, v->deadline)) != 0) {
    srv->stats.visitors_refused++;
    np__log(&srv->log, NP_LOG_WARN,
            "proxy %s: visitor refused: %s (max_pending %zu, per proxy %zu)", px->name,
            np_strerror(r), srv->cfg.max_pending, srv->cfg.max_pending_per_proxy);
    np__visitor_drop(v, "refused");
    return 0;
  }
  if ((r = np__session_send(s, &m)) != 0) {
    srv->pool_ops->take(srv->pool, m.id);
    srv->stats.visitors_aborted++;
    np__visitor_drop(v, "aborted");
    np__session_close(s, r, "control stream not writable");
    return 0;
  }
  arm_pool_timer(srv);
  return 0;
}

/* ---- proxies -------------------------------------------------------------------------------- */

void np__proxy_closed(proxy *px) {
  struct np_server *srv = px->srv;
  np__counts_unref(px->counts);
  free(px);
  np__server_unref(srv);
}

void np__proxy_close(proxy *px) {
  struct np_server *srv = px->srv;
  srv->pool_ops->remove_group(srv->pool, px, np__visitor_removed, srv);
  srv->stats.proxies--;
  px->type->close(px);
}

void np__proxy_revoke(session *s, proxy *px, int status, const char *why) {
  np_msg m = {.type = NP_MSG_PROXY_RESP, .status = status};
  proxy **pp = &s->proxies;

  while (*pp != NULL && *pp != px)
    pp = &(*pp)->next;
  if (*pp == NULL)
    return;
  *pp = px->next;
  s->n_proxies--;
  np__log(&s->srv->log, NP_LOG_INFO, "client %s: proxy %s closed: %s", s->name, px->name, why);
  if (status != 0) {
    np__strlcpy(m.name, px->name, sizeof(m.name));
    np__strlcpy(m.text, why, sizeof(m.text));
    np__session_send(s, &m);
  }
  np__track_abort_tag(&s->joins, px);
  np__proxy_close(px);
}

/* Open a proxy named name of the given kind for session s on addr:port. Port 0 picks a free port,
 * inside allow_ports and the client's own ports (users file) when they are set. Returns 0 and *out,
 * NP_EUNSUPPORTED for a kind no type is registered for, or the bind error (NP_EPORTDENIED when the
 * two lists share no port). */
int np__proxy_open(struct np_server *srv, session *s, const char *name, uint8_t kind,
                   const char *addr, int port, char *why, size_t why_len, proxy **out) {
  const np__ports *mine = s != NULL ? np__session_ports(s) : NULL;
  const np__ports *from = mine != NULL && mine->n > 0 ? mine : &srv->cfg.allow_ports;
  const np__proxy_type *type = srv->types[kind];
  uint32_t span = 0, start = 0;
  int tries = 1, r = UV_EADDRINUSE, bound = 0, again = 0;

  if (type == NULL)
    return NP_EUNSUPPORTED;
  /* A port-0 proxy of a client that comes back tries the port it had first (remember_ports). */
  if (port == 0 && !type->named && (again = np__server_ports_recall(srv, s, name)) != 0 &&
      (!np__ports_allow(from, again) || !np__ports_allow(&srv->cfg.allow_ports, again)))
    again = 0;
  /* Counters are not worth failing a proxy for: without memory for them it runs uncounted. */
  if (s != NULL && s->counts == NULL)
    s->counts = np__counts_new();
  if (type->named)
    port = 0; /* the type has its port; one try */
  else if (port == 0 && from->n > 0) {
    for (size_t i = 0; i < from->n; i++)
      span += (uint32_t)(from->r[i].hi - from->r[i].lo) + 1;
    tries = span < 64 ? (int)span : 64;
    start = (uint32_t)(uv_hrtime() % span);
  }
  for (int t = again != 0 ? -1 : 0; t < tries; t++) {
    struct sockaddr_storage ss;
    char spec[NP_MSG_NAME_MAX + 16];
    int p = t < 0 ? again : port;
    proxy *px;

    if (span > 0 && t >= 0) {
      /* Step through the ranges by a prime so retries spread out. */
      uint32_t k = (start + (uint32_t)t * 7919u) % span;
      for (size_t i = 0; i < from->n; i++) {
        uint32_t len = (uint32_t)(from->r[i].hi - from->r[i].lo) + 1;
        if (k < len) {
          p = from->r[i].lo + (int)k;
          break;
        }
        k -= len;
      }
      if (!np__ports_allow(&srv->cfg.allow_ports, p))
        continue;
    }
    bound++;
    snprintf(spec, sizeof(spec), strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, p);
    if (np__parse_addr(spec, &ss) != 0)
      return UV_EINVAL;
    if ((px = calloc(1, sizeof(*px))) == NULL)
      return UV_ENOMEM;
    px->srv = srv;
    px->s = s;
    px->type = type;
    np__strlcpy(px->name, name, sizeof(px->name));
    px->why = why;
    px->why_len = why_len;
    r = type->open(px, (struct sockaddr *)&ss);
    px->why = NULL;
    if (r == 0) {
      if (port == 0 && !type->named)
        np__server_ports_note(srv, s, name, px->port);
      px->counts = s != NULL ? np__counts_new() : NULL;
      srv->refs++;
      srv->stats.proxies++;
      *out = px;
      return 0;
    }
    free(px);
  }
  return bound == 0 ? NP_EPORTDENIED : r;
}

/* Line codec: a tunnel connection carries no header, so it takes the visitor that waited longest.
 */
void np__server_on_tunnel(np__listener *l, np_conn *c) {
  struct np_server *srv = ((proxy *)np__listener_data(l))->srv;
  visitor *v;

  v = srv->pool_ops->take_oldest(srv->pool, srv->visit_proxy, NULL);
  if (v == NULL) {
    srv->stats.work_unknown++;
    np__log(&srv->log, NP_LOG_INFO, "tunnel connection with no visitor waiting, closing");
    np__conn_close(c, NULL);
    return;
  }
  np__server_join(srv, visit_owner(srv, v->px), c, v, NULL, 0);
}

/* ---- control messages about work (server.c dispatches them) --------------------------------- */

const np__ports *np__session_ports(const session *s) {
  return s->user != NULL ? &s->user->ports : NULL;
}

static size_t max_proxies(const session *s) {
  if (s->user != NULL && s->user->max_proxies != SIZE_MAX)
    return s->user->max_proxies;
  return s->srv->cfg.max_proxies_per_client;
}

int np__work_proxy_opt(session *s, const np_msg *m) {
  np__proxy_opt *o;

  if (s->n_opts == NP_PROXY_OPTS_MAX) {
    np__log(&s->srv->log, NP_LOG_WARN,
            "client %s: more than %d proxy options before their PROXY, closing", s->name,
            NP_PROXY_OPTS_MAX);
    return NP_ELIMIT;
  }
  /* Grown by doubling: most proxies send none or a few. */
  if (s->n_opts == s->cap_opts) {
    size_t cap = s->cap_opts == 0 ? 8 : s->cap_opts * 2;
    np__proxy_opt *n = realloc(s->opts, cap * sizeof(*n));
    if (n == NULL)
      return UV_ENOMEM;
    s->opts = n;
    s->cap_opts = cap;
  }
  o = &s->opts[s->n_opts];
  if ((o->value = strdup(m->text)) == NULL)
    return UV_ENOMEM;
  strcpy(o->name, m->name);
  strcpy(o->key, m->addr);
  s->n_opts++;
  return 0;
}

/* Forget the options of proxy name (after its PROXY), or every one (name NULL: the session goes).
 */
static void drop_opts(session *s, const char *name) {
  size_t k = 0;
  for (size_t i = 0; i < s->n_opts; i++) {
    if (name == NULL || strcmp(s->opts[i].name, name) == 0)
      free(s->opts[i].value);
    else
      s->opts[k++] = s->opts[i];
  }
  s->n_opts = k;
  if (k == 0) {
    free(s->opts);
    s->opts = NULL;
    s->cap_opts = 0;
  }
}

void np__work_proxy_msg(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  np_msg resp = {.type = NP_MSG_PROXY_RESP};
  const char *addr = m->addr[0] != '\0' ? m->addr : srv->cfg.proxy_bind_addr;
  np__cidrs allow = {.n = 0};
  proxy *px = NULL;
  int r = 0;

  strcpy(resp.name, m->name);
  for (px = s->proxies; px != NULL; px = px->next)
    if (strcmp(px->name, m->name) == 0)
      r = NP_ENAMETAKEN;
  if (r == 0 && (m->name[0] == '\0' || !np__name_ok(m->name))) {
    r = NP_ECONFIG;
    resp.name[0] = '\0'; /* it goes back in logs and replies */
    snprintf(resp.text, sizeof(resp.text), "a proxy name is printable UTF-8");
  }
  if (r == 0 && srv->draining) {
    r = NP_ECLOSED;
    snprintf(resp.text, sizeof(resp.text), "the server is draining: it opens no new proxies");
  }
  if (r == 0 && s->n_proxies >= max_proxies(s))
    r = NP_ELIMIT;
  if (r == 0 && m->port != 0 && !np__ports_allow(&srv->cfg.allow_ports, m->port)) {
    r = NP_EPORTDENIED;
    snprintf(resp.text, sizeof(resp.text), "port %u is outside the server's allow_ports", m->port);
  }
  if (r == 0 && m->port != 0 && s->user != NULL && !np__ports_allow(&s->user->ports, m->port)) {
    r = NP_EPORTDENIED;
    snprintf(resp.text, sizeof(resp.text), "port %u is outside the ports client '%s' may open",
             m->port, s->name);
  }
  /* PROXY's text is its allow_ips (docs/protocol.md). */
  if (r == 0 && m->text[0] != '\0' &&
      np__cidrs_parse(m->text, &allow, resp.text, sizeof(resp.text)) != 0)
    r = NP_ECONFIG;
  if (r == 0)
    r = np__proxy_open(srv, s, m->name, m->kind, addr, m->port, resp.text, sizeof(resp.text), &px);
  drop_opts(s, m->name);
  resp.status = r;
  if (r != 0) {
    switch (r) {
    case UV_EADDRINUSE:
      snprintf(resp.text, sizeof(resp.text), "port %u is already in use on the server", m->port);
      break;
    case NP_EPORTDENIED:
      if (m->port == 0)
        snprintf(resp.text, sizeof(resp.text),
                 "no free port is both in allow_ports and among those client '%s' may open",
                 s->name);
      break;
    case NP_ELIMIT:
      snprintf(resp.text, sizeof(resp.text), "at most %zu %s for client '%s'", max_proxies(s),
               np__plural(max_proxies(s), "proxy", "proxies"), s->name);
      break;
    case NP_EUNSUPPORTED:
      if (resp.text[0] == '\0') /* else the type said why (no vhost port configured) */
        snprintf(resp.text, sizeof(resp.text), "this server has no proxy type of kind %u",
                 (unsigned)m->kind);
      break;
    case NP_ECONFIG:
      break; /* said above */
    default:
      if (resp.text[0] != '\0')
        break; /* the type said why */
      snprintf(resp.text, sizeof(resp.text), "%s (%s:%u)", np_strerror(r), addr, m->port);
    }
    np__log(&srv->log, NP_LOG_WARN, "client %s: proxy %s refused: %s", s->name, m->name, resp.text);
    np__session_send(s, &resp);
    return;
  }
  px->allow_ips = allow;
  if (px->type->named && resp.text[0] != '\0')
    np__strlcpy(px->hosts, resp.text, sizeof(px->hosts)); /* for the admin API */
  px->next = s->proxies;
  s->proxies = px;
  s->n_proxies++;
  resp.port = (uint16_t)px->port;
  if (px->type->named && px->port == 0) /* a private proxy: its full name (resp.text) */
    np__log(&srv->log, NP_LOG_INFO, "client %s: proxy %s (%s) open to visitors of %s", s->name,
            px->name, px->type->name, resp.text);
  else
    np__log(&srv->log, NP_LOG_INFO, "client %s: proxy %s listening on %s:%d%s%s", s->name, px->name,
            addr, px->port, allow.n > 0 ? ", visitors only from " : "", allow.n > 0 ? m->text : "");
  np__session_send(s, &resp);
}

/* PROXY_CLOSE: the client no longer serves this proxy (a reload of its file). No answer: the
 * control stream is ordered, so a PROXY under the same name right after it finds the name and the
 * port free (a listener's socket is closed at once), and the client has nothing to do on a
 * failure. A name the session does not hold (a proxy refused earlier) is no error. */
void np__work_proxy_close(session *s, const np_msg *m) {
  char why[NP_MSG_TEXT_MAX + 32];
  proxy *px;

  drop_opts(s, m->name);
  for (px = s->proxies; px != NULL && strcmp(px->name, m->name) != 0; px = px->next)
    ;
  if (px == NULL) {
    np__log(&s->srv->log, NP_LOG_DEBUG, "client %s: PROXY_CLOSE of %s, which it does not hold",
            s->name, m->name);
    return;
  }
  snprintf(why, sizeof(why), "at the client's request (%s)",
           m->text[0] != '\0' ? m->text : "no reason given");
  np__proxy_revoke(s, px, 0, why);
}

/* Return a visitor taken to be looked at. The pool may be the embedder's and refuse it (full, out
 * of memory): then the visitor is let go, or it would be held by nobody and np_server_close would
 * wait for it forever. */
static void put_back(struct np_server *srv, uint64_t id, visitor *v) {
  int r = srv->pool_ops->put(srv->pool, id, v->px, v, v->deadline);
  if (r != 0) {
    srv->stats.visitors_failed++;
    np__log(&srv->log, NP_LOG_WARN, "visitor %llu dropped: the pending pool refused it back: %s",
            (unsigned long long)id, np_strerror(r));
    np__visitor_drop(v, "aborted");
  }
}

void np__work_fail(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  visitor *v = srv->pool_ops->take(srv->pool, m->id);

  if (v == NULL) {
    /* Expired meanwhile, or a visitor sent over a pre-opened connection, which the client has
     * already reset; either way only the reason is left to report. The reset would make the
     * access log say end=reset: mark the join, in case its end has not been logged yet (with mux
     * it has not: the reset travels behind this message on the same connection). */
    np__session_local_failed(s, m->id);
    srv->stats.visitors_failed++;
    np__log(&srv->log, NP_LOG_INFO, "client %s: visitor %llu closed: %s%s%s", s->name,
            (unsigned long long)m->id, np_strerror(m->status), m->text[0] ? ": " : "", m->text);
    return;
  }
  if (v->session_id != s->id) {
    put_back(srv, m->id, v);
    return;
  }
  srv->stats.visitors_failed++;
  np__log(&srv->log, NP_LOG_INFO, "proxy %s: visitor %llu closed: %s%s%s", v->px->name,
          (unsigned long long)m->id,
          np_strerror(m->status == NP_ELOCALFAIL ? NP_ELOCALFAIL : m->status),
          m->text[0] ? ": " : "", m->text);
  np__visitor_drop(v, "local_failed");
}

/* First message WORK: this connection is the work connection for one pending visitor. */
void np__work(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  unsigned char want[NP_MSG_KEY_LEN];
  session *owner = NULL;
  const char *rest;
  size_t rest_len;
  np_conn *c;
  visitor *v;

  v = srv->pool_ops->take(srv->pool, m->id2);
  if (v != NULL) {
    for (owner = srv->sessions; owner != NULL && owner->id != v->session_id; owner = owner->next)
      ;
    if (owner == NULL || owner->id != m->id ||
        np__auth_work_mac(owner->key, m->id, m->id2, want) != 0 || !np__auth_equal(want, m->mac)) {
      /* Not proven: leave the visitor for its real work connection. */
      put_back(srv, m->id2, v);
      v = NULL;
    }
  }
  if (v == NULL) {
    srv->stats.work_unknown++;
    np__log(&srv->log, NP_LOG_INFO, "%s: work connection for unknown or unproven visitor %llu",
            s->peer, (unsigned long long)m->id2);
    np__session_close(s, NP_EPROTO, "unknown visitor");
    return;
  }
  c = np__chan_detach(s->ch, &rest, &rest_len);
  np__session_detached(s);
  np__server_join(srv, owner, c, v, rest, rest_len);
}

/* Anti-replay window: accept each serial once, and only within 64 of the highest seen. */
int np__serial_fresh(uint64_t *top, uint64_t *seen, uint64_t n) {
  if (n == 0)
    return 0;
  if (n > *top) {
    uint64_t shift = n - *top;
    *seen = shift >= 64 ? 0 : *seen << shift;
    *seen |= 1;
    *top = n;
    return 1;
  }
  if (*top - n >= 64 || (*seen >> (*top - n)) & 1)
    return 0;
  *seen |= (uint64_t)1 << (*top - n);
  return 1;
}

/* First message WORK_IDLE: a pre-opened work connection; park it with its owner until a visitor
 * comes. */
int np__work_idle(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  unsigned char want[NP_MSG_KEY_LEN];
  session *o;

  o = np__session_ids_find(srv, m->id);
  if (o == NULL || o->state != S_READY || np__auth_idle_mac(o->key, m->id, m->id2, want) != 0 ||
      !np__auth_equal(want, m->mac) || !np__serial_fresh(&o->idle_top, &o->idle_seen, m->id2)) {
    srv->stats.work_unknown++;
    np__log(&srv->log, NP_LOG_INFO, "%s: pre-opened work connection not proven (session %llu)",
            s->peer, (unsigned long long)m->id);
    return NP_EAUTH;
  }
  if (o->n_idle >= srv->cfg.max_work_pool) {
    np__log(&srv->log, NP_LOG_DEBUG, "client %s: more than %zu pre-opened work connections",
            o->name, srv->cfg.max_work_pool);
    return NP_ELIMIT;
  }
  s->state = S_IDLE;
  s->owner = o;
  NP_DLIST_PUSH(o->idle, s, idle_prev, idle_next);
  o->n_idle++;
  np__strlcpy(s->name, o->name, sizeof(s->name));
  np__conn_keepalive(np__chan_conn(s->ch), (unsigned)(srv->cfg.heartbeat_interval_ms / 1000));
  np__log(&srv->log, NP_LOG_DEBUG, "client %s: pre-opened work connection %llu parked (%zu idle)",
          o->name, (unsigned long long)m->id2, o->n_idle);
  return 0;
}

/* Join a visitor with one of its client's idle work connections right away: START{id} on it, and
 * the client joins its end with the local service. Returns 0, or NP_NOPROXY-like errors when none.
 */
static int start_pooled(struct np_server *srv, session *owner, proxy *px, visitor *v, uint64_t id) {
  np_msg m = {.type = NP_MSG_START, .id = id};
  session *w = owner->idle;
  np_conn *c;
  int r;

  if (w == NULL)
    return NP_ESTATE;
  c = np__chan_release(w->ch);
  np__session_detached(w);
  strcpy(m.name, px->name);
  put_addrs(&m, v);
  if ((r = np__conn_send_msg(c, srv->codec, &m)) != 0) {
    np__conn_abort(c, NULL);
    return r;
  }
  srv->stats.visitors_pooled++;
  np__log(&srv->log, NP_LOG_DEBUG,
          "proxy %s: visitor %llu joined with a pre-opened work connection", px->name,
          (unsigned long long)id);
  np__server_join(srv, owner, c, v, NULL, 0);
  return 0;
}

/* srv->session_closing: what a closing session holds here goes with it. */
void np__work_session_closing(session *s) {
  struct np_server *srv = s->srv;

  if (s->state == S_READY) {
    np__server_types_session_end(s);
    /* The line codec's visit port outlives its client; its waiting visitors do not. */
    if (!native(srv) && srv->visit_proxy != NULL)
      srv->pool_ops->remove_group(srv->pool, srv->visit_proxy, np__visitor_removed, srv);
  }
  while (s->proxies != NULL) {
    proxy *px = s->proxies;
    s->proxies = px->next;
    np__proxy_close(px);
  }
  np__session_end_joins(s);
  drop_opts(s, NULL);
  np__counts_unref(s->counts); /* the joins still ending hold their own reference */
  s->counts = NULL;
}
