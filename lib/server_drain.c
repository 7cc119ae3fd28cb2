/* np_server_drain: a server that is going away stops taking new work at once and lets the
 * visitors already joined finish, within a deadline (docs/config.md, "Drain"). The sessions stay
 * up meanwhile: under a multiplexer the joins run inside them. */
#include "server.h"

#include <stdio.h>

/* How often the drain looks whether every join is gone: a join's end has no server-wide hook, and
 * a tenth of a second is below what anyone waiting for a stop notices. */
#define DRAIN_CHECK_MS 100

static size_t joined(const struct np_server *srv) {
  size_t n = 0;
  for (const session *s = srv->sessions; s != NULL; s = s->next)
    if (s->state == S_READY)
      n += np__session_joins(s);
  return n + srv->peer_joins;
}

static void finish(struct np_server *srv, const char *how) {
  np_server_close_cb cb = srv->drain_cb;
  np__log(&srv->log, NP_LOG_INFO, "drain: %s; closing", how);
  np_server_close(srv, cb);
}

static void on_drain_timer(uv_timer_t *t) {
  struct np_server *srv = t->data;
  size_t n = joined(srv);
  char why[96];

  if (n == 0 && srv->drain_hold == 0) {
    finish(srv, "every joined visitor has finished");
    return;
  }
  if (uv_now(srv->loop) >= srv->drain_deadline) {
    snprintf(why, sizeof(why), "%zu %s still joined at drain_timeout", n,
             np__plural(n, "visitor", "visitors"));
    finish(srv, why);
  }
}

/* Everything that brings new work: the ports, logins in progress, pre-opened work connections. */
static void stop_taking(struct np_server *srv) {
  session *s, *next;
  np_msg ping = {.type = NP_MSG_PING, .status = NP_PING_DRAINING};

  np__server_close_listeners(srv);
  if (srv->visit_proxy != NULL)
    np__proxy_close(srv->visit_proxy);
  srv->visit_proxy = NULL;
  np__server_types_drain(srv);
  /* First the connections that bring nothing to finish, then the clients are told, once each. */
  for (s = srv->sessions; s != NULL; s = next) {
    next = s->next;
    if (s->state == S_READY || s->state == S_PEER)
      continue; /* a peer's link carries visitors joined here: it goes with the close */
    np__session_close(s, NP_ECLOSED, "the server is draining");
    next = srv->sessions; /* a close may take others (its idle work connections) along */
  }
  for (s = srv->sessions; s != NULL; s = s->next) {
    np__session_close_proxies(s);
    if (native(srv)) {
      ping.id = ++s->ping_seq;
      np__session_send(s, &ping);
    }
  }
  if (srv->pool != NULL)
    srv->pool_ops->expire(srv->pool, UINT64_MAX, np__visitor_removed, srv);
}

static void begin(struct np_server *srv, uint64_t timeout_ms) {
  size_t n;

  srv->draining = 1;
  srv->drain_deadline = uv_now(srv->loop) + timeout_ms;
  stop_taking(srv);
  n = joined(srv);
  if (n == 0 && srv->drain_hold == 0) {
    finish(srv, "no visitor is joined");
    return;
  }
  np__log(&srv->log, NP_LOG_INFO,
          "draining: no new logins or visitors; waiting up to %llus for %zu joined %s to finish "
          "(SIGTERM or SIGINT again stops at once)",
          (unsigned long long)((timeout_ms + 999) / 1000), n, np__plural(n, "visitor", "visitors"));
  uv_timer_start(&srv->drain_timer, on_drain_timer, DRAIN_CHECK_MS, DRAIN_CHECK_MS);
}

static void on_drain_delay(uv_timer_t *t) {
  struct np_server *srv = t->data;

  srv->drain_delaying = 0;
  begin(srv, srv->drain_after_ms);
}

void np_server_drain(struct np_server *srv, uint64_t timeout_ms, np_server_close_cb cb) {
  int under_way = srv->draining || srv->drain_delaying;

  if (srv->closing)
    return;
  if (timeout_ms == NP_DRAIN_CONFIGURED)
    timeout_ms = srv->cfg.drain_timeout_ms;
  if (!srv->started || under_way || timeout_ms == 0) {
    if (under_way)
      np__log(&srv->log, NP_LOG_INFO, "drain: asked to stop now; closing");
    np_server_close(srv, under_way ? srv->drain_cb : cb);
    return;
  }
  srv->drain_cb = cb;
  if (srv->cfg.drain_delay_ms > 0) {
    /* A load balancer learns from /healthz that this server goes, and sends no more visitors,
     * before its ports close: the visitors it sent meanwhile are served, not refused. */
    srv->drain_delaying = 1;
    srv->drain_after_ms = timeout_ms;
    np__log(&srv->log, np__server_echo(srv, NP_LOG_INFO),
            "draining in %llums (drain_delay): /healthz says 503 now, visitors are still taken "
            "until then",
            (unsigned long long)srv->cfg.drain_delay_ms);
    uv_timer_start(&srv->drain_timer, on_drain_delay, srv->cfg.drain_delay_ms, 0);
    return;
  }
  begin(srv, timeout_ms);
}

int np_server_draining(const struct np_server *srv) {
  return (srv->draining || srv->drain_delaying) && !srv->closing;
}
