/* The TCP proxy: public listeners, visitors waiting in the pending pool (and their expiry), and
 * joins of visitors with work connections. Sessions (server.c) open and close proxies and hand work
 * connections in. */
#include <stdlib.h>
#include <string.h>

#include "server.h"

static void arm_pool_timer(struct np_server *srv);

/* Out of descriptors and the like: say so once per second at most, with how many connections were
 * refused meanwhile, not once per connection. */
void np__server_accept_failed(np__listener *l, int err, uint64_t refused) {
  proxy *px = np__listener_data(l);
  struct np_server *srv = px->srv;
  uint64_t now = now_ms(srv);

  srv->stats.accept_errors++;
  srv->stats.refused_no_fd += refused;
  srv->refused_unlogged += refused;
  if (srv->accept_error_logged == 0 || now - srv->accept_error_logged >= 1000) {
    srv->accept_error_logged = now;
    np__log(&srv->log, NP_LOG_ERROR,
            "%s port %d: accept failed: %s; %llu %s refused since the last report%s", px->name,
            px->port, np_strerror(err), (unsigned long long)srv->refused_unlogged,
            np__plural(srv->refused_unlogged, "connection", "connections"),
            err == UV_EMFILE || err == UV_ENFILE ? " (raise the descriptor limit: ulimit -n)" : "");
    srv->refused_unlogged = 0;
  }
}

/* The access log: one line per TCP visitor once it is gone, telling what haproxy's tcplog tells
 * (who, which proxy, bytes, duration, how it ended) as key=value fields an operator can grep;
 * docs/config.md gives the format. in: visitor -> client, out: client -> visitor, as in the
 * counters. addr NULL: not known. */
static void log_access(struct np_server *srv, const char *name, const struct sockaddr *addr,
                       uint64_t since, uint64_t in, uint64_t out, const char *end) {
  char who[64] = "?";
  uint64_t ms = now_ms(srv) - since;

  if (!srv->cfg.access_log)
    return;
  if (addr != NULL && addr->sa_family != 0)
    np__addr_str(addr, who, sizeof(who));
  np__log(&srv->log, NP_LOG_INFO,
          "access proxy=%s visitor=%s in=%llu out=%llu duration=%llu.%03llus end=%s", name, who,
          (unsigned long long)in, (unsigned long long)out, (unsigned long long)(ms / 1000),
          (unsigned long long)(ms % 1000), end);
}

/* A TCP visitor that goes without a join: nothing crossed either way. */
static void log_unjoined(visitor *v, const char *end) {
  struct sockaddr_storage ss;

  if (!v->srv->cfg.access_log)
    return;
  log_access(v->srv, v->px->name,
             np__conn_peer_addr(v->conn, &ss) == 0 ? (struct sockaddr *)&ss : NULL, v->since, 0, 0,
             end);
}

/* How a join ended, in the access log's words. */
static const char *join_end(int status, char *buf, size_t len) {
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

static void on_visitor_closed(np_conn *c) {
  visitor *v = c->data;
  struct np_server *srv = v->srv;
  free(v);
  np__server_unref(srv);
}

void np__visitor_drop(visitor *v, const char *end) {
  if (v->flow != NULL) {
    struct np_server *srv = v->srv;
    np__udp_flow_unjoined(v->flow);
    free(v);
    np__server_unref(srv);
    return;
  }
  log_unjoined(v, end);
  v->conn->data = v;
  np__conn_close(v->conn, on_visitor_closed);
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

void np__visitor_removed(uint64_t id, void *item, void *arg) {
  (void)id;
  (void)arg;
  np__visitor_drop(item, "aborted");
}

static void on_join_done(struct np_join *j, int status, const np_join_stats *st) {
  active *a = np_join_get_data(j);
  struct np_server *srv = a->srv;
  char end[48];

  /* a = work connection, b = visitor (see np__server_join); the bytes are counted already. */
  np__log(&srv->log, NP_LOG_DEBUG, "join done: %s, %llu %s to visitor, %llu from visitor",
          np_strerror(status), (unsigned long long)st->a_to_b,
          np__plural(st->a_to_b, "byte", "bytes"), (unsigned long long)st->b_to_a);
  log_access(srv, a->proxy, &a->visitor_addr.sa, a->since, st->b_to_a, st->a_to_b,
             a->end != NULL ? a->end : join_end(status, end, sizeof(end)));
  if (a->s != NULL)
    NP_DLIST_UNLINK(a->s->joins, a, prev, next);
  free(a);
  np__server_unref(srv);
}

/* Join a work connection with its visitor; rest holds bytes the client sent after its WORK header.
 * The visitor's reference on the server passes to the join. */
void np__server_join(struct np_server *srv, session *s, np_conn *work, visitor *v, const char *rest,
                     size_t rest_len) {
  active *a;
  np_conn *vc = v->conn;
  int r = UV_ENOMEM;

  if (v->flow != NULL) {
    np__udp_flow_join(v->flow, work, rest, rest_len);
    free(v);
    np__server_unref(srv);
    return;
  }
  a = calloc(1, sizeof(*a));
  if (a != NULL) {
    struct sockaddr_storage ss;
    a->srv = srv;
    a->s = s;
    a->id = v->id;
    a->since = v->since;
    np__strlcpy(a->proxy, v->px->name, sizeof(a->proxy));
    if (np__conn_peer_addr(vc, &ss) == 0)
      np__addr_copy(&a->visitor_addr, (struct sockaddr *)&ss);
    r = np__join(work, vc, rest, rest_len, &srv->chunks, on_join_done, a, &a->join);
    /* Counted as they flow, so the stats show a long transfer while it runs. */
    if (r == 0)
      np__join_count_into(a->join, &srv->stats.bytes_out, &srv->stats.bytes_in);
  }
  if (r != 0) {
    char end[48];
    np__log(&srv->log, NP_LOG_ERROR, "cannot join visitor: %s", np_strerror(r));
    log_unjoined(v, join_end(r, end, sizeof(end)));
    free(v);
    free(a);
    np__conn_close(work, NULL);
    np__conn_close(vc, NULL);
    np__server_unref(srv);
    return;
  }
  free(v); /* what the access line needs went to a; the join holds the visitor's conn */
  if (s != NULL)
    NP_DLIST_PUSH(s->joins, a, prev, next);
  srv->stats.visitors_joined++;
}

static void on_proxy_closed(void *data) {
  proxy *px = data;
  struct np_server *srv = px->srv;
  free(px);
  np__server_unref(srv);
}

void np__proxy_close(proxy *px) {
  struct np_server *srv = px->srv;
  srv->pool_ops->remove_group(srv->pool, px, np__visitor_removed, srv);
  srv->stats.proxies--;
  if (px->kind == NP_PROXY_UDP)
    np__udp_close(px, on_proxy_closed);
  else
    np__listener_close(px->listener, on_proxy_closed);
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

void np__server_on_visitor(np__listener *l, np_conn *c) {
  proxy *px = np__listener_data(l);
  struct np_server *srv = px->srv;
  visitor *v;

  srv->stats.visitors_total++;
  if (px->allow_ips.n > 0) {
    struct sockaddr_storage ss;
    if (np__conn_peer_addr(c, &ss) != 0 ||
        !np__cidrs_allow(&px->allow_ips, (struct sockaddr *)&ss)) {
      char peer[64];
      srv->stats.visitors_denied++;
      np__conn_peer_str(c, peer, sizeof(peer));
      /* DEBUG: a scan from outside would otherwise write a line per port and probe. */
      np__log(&srv->log, NP_LOG_DEBUG, "proxy %s: visitor %s is outside allow_ips, closed",
              px->name, peer);
      np__conn_abort(c, NULL);
      return;
    }
  }
  if ((v = calloc(1, sizeof(*v))) == NULL) {
    srv->stats.visitors_refused++;
    np__conn_close(c, NULL);
    return;
  }
  v->conn = c;
  np__server_visitor_arrived(srv, px, v);
}

/* A new visitor (a TCP connection, or a UDP flow) on px: its client is asked for a work connection,
 * or it joins a pre-opened one at once. v is the server's from here on, dropped on any failure. */
void np__server_visitor_arrived(struct np_server *srv, proxy *px, visitor *v) {
  np_msg m = {.type = NP_MSG_REQ_WORK};
  session *s;
  int r;

  v->srv = srv;
  v->px = px;
  v->since = now_ms(srv);
  srv->refs++; /* the visitor's, until it is closed or joined */
  if ((s = visit_owner(srv, px)) == NULL) {
    srv->stats.visitors_refused++;
    np__log(&srv->log, NP_LOG_INFO, "proxy %s: visitor refused: no client connected", px->name);
    np__visitor_drop(v, "refused");
    return;
  }
  v->session_id = s->id;
  v->deadline = now_ms(srv) + srv->cfg.pending_timeout_ms;
  m.id = v->id = ++srv->next_visitor_id;
  if (v->flow != NULL)
    np__udp_flow_set_id(v->flow, m.id);
  if (s->idle != NULL && np__server_start_pooled(srv, s, px, v, m.id) == 0)
    return;
  strcpy(m.name, px->name);
  if ((r = srv->pool_ops->put(srv->pool, m.id, px, v, v->deadline)) != 0) {
    srv->stats.visitors_refused++;
    np__log(&srv->log, NP_LOG_WARN,
            "proxy %s: visitor refused: %s (max_pending %zu, per proxy %zu)", px->name,
            np_strerror(r), srv->cfg.max_pending, srv->cfg.max_pending_per_proxy);
    np__visitor_drop(v, "refused");
    return;
  }
  if ((r = np__session_send(s, &m)) != 0) {
    srv->pool_ops->take(srv->pool, m.id);
    np__visitor_drop(v, "aborted");
    np__session_close(s, r, "control stream not writable");
    return;
  }
  arm_pool_timer(srv);
}

/* Open a public listener named name for session s on addr:port. Port 0 picks a free port, inside
 * allow_ports and the client's own ports (users file) when they are set. Returns 0 and *out, or the
 * bind error (NP_EPORTDENIED when the two lists share no port). */
int np__proxy_open(struct np_server *srv, session *s, const char *name, np_proxy_kind kind,
                   const char *addr, int port, proxy **out) {
  const np__ports *mine = s != NULL ? np__session_ports(s) : NULL;
  const np__ports *from = mine != NULL && mine->n > 0 ? mine : &srv->cfg.allow_ports;
  uint32_t span = 0, start = 0;
  int tries = 1, r = UV_EADDRINUSE, bound = 0;

  if (port == 0 && from->n > 0) {
    for (size_t i = 0; i < from->n; i++)
      span += (uint32_t)(from->r[i].hi - from->r[i].lo) + 1;
    tries = span < 64 ? (int)span : 64;
    start = (uint32_t)(uv_hrtime() % span);
  }
  for (int t = 0; t < tries; t++) {
    struct sockaddr_storage ss;
    char spec[NP_MSG_NAME_MAX + 16];
    int p = port;
    proxy *px;

    if (span > 0) {
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
    px->kind = kind;
    np__strlcpy(px->name, name, sizeof(px->name));
    if (kind == NP_PROXY_UDP)
      r = np__udp_open(px, (struct sockaddr *)&ss);
    else
      r = np__listen(srv->loop, (struct sockaddr *)&ss, np__server_on_visitor,
                     np__server_accept_failed, px, &px->listener);
    if (r == 0) {
      if (kind != NP_PROXY_UDP)
        px->port = np__listener_port(px->listener);
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
