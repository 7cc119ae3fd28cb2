/* np_client_drain: a client that is going away turns new visitors away at once and lets the ones
 * joined finish, within a deadline (docs/config.md, "Drain"). Its session stays up meanwhile:
 * under a multiplexer the joins run inside it. */
#include "client.h"

#include <stdlib.h>

/* As the server's drain: a join's end has no client-wide hook; ten looks a second. */
#define DRAIN_CHECK_MS 100

static size_t busy(const struct np_client *cl) {
  size_t n = 0;
  for (const np__track *t = cl->joins.head; t != NULL; t = t->next)
    n++;
  for (const work *w = cl->works; w != NULL; w = w->next)
    n++;
  return n;
}

/* A member of a set (server = a, b) says which server's session it drains. */
static const char *whose(const struct np_client *cl, char *buf, size_t len) {
  if (cl->parent == NULL || !cl->parent->several)
    return "";
  snprintf(buf, len, " (%s)", np__client_label(cl));
  return buf;
}

static void finish(struct np_client *cl, const char *how) {
  char at[NP_CLIENT_LABEL_MAX + 4];
  np__log(&cl->log, NP_LOG_INFO, "drain%s: %s; closing", whose(cl, at, sizeof(at)), how);
  np_client_close(cl, cl->drain_cb);
}

static void on_drain_timer(uv_timer_t *t) {
  struct np_client *cl = t->data;
  size_t n = busy(cl);

  if (n == 0)
    finish(cl, "every joined visitor has finished");
  else if (uv_now(cl->loop) >= cl->drain_deadline)
    finish(cl, "visitors still joined at drain_timeout");
}

void np_client_drain(struct np_client *cl, uint64_t timeout_ms, np_client_close_cb cb) {
  char at[NP_CLIENT_LABEL_MAX + 4];
  size_t n;

  if (cl->closing)
    return;
  if (timeout_ms == NP_DRAIN_CONFIGURED)
    timeout_ms = cl->cfg.drain_timeout_ms;
  if (!cl->started || cl->draining || timeout_ms == 0) {
    if (cl->draining)
      np__log(&cl->log, NP_LOG_INFO, "drain%s: asked to stop now; closing",
              whose(cl, at, sizeof(at)));
    np_client_close(cl, cl->draining ? cl->drain_cb : cb);
    return;
  }
  if (cl->set_ops != NULL) {
    cl->drain_cb = cb;
    cl->set_ops->drain(cl, timeout_ms);
    return;
  }
  cl->draining = 1;
  cl->drain_cb = cb;
  cl->drain_deadline = uv_now(cl->loop) + timeout_ms;
  np__client_pool_drop_idle(cl);
  /* A datagram has nothing to finish: UDP flows end now, as the server's do when it drains. */
  np__track_abort_tag(&cl->joins, &np__client_udp_flow_tag);
  if ((n = busy(cl)) == 0) {
    finish(cl, "no visitor is joined");
    return;
  }
  if ((cl->drain_timer = malloc(sizeof(*cl->drain_timer))) == NULL) {
    finish(cl, "out of memory");
    return;
  }
  uv_timer_init(cl->loop, cl->drain_timer);
  cl->drain_timer->data = cl;
  uv_timer_start(cl->drain_timer, on_drain_timer, DRAIN_CHECK_MS, DRAIN_CHECK_MS);
  np__log(&cl->log, NP_LOG_INFO,
          "draining%s: new visitors are turned away; waiting up to %llus for %zu joined %s to "
          "finish (SIGTERM or SIGINT again stops at once)",
          whose(cl, at, sizeof(at)), (unsigned long long)((timeout_ms + 999) / 1000), n,
          np__plural(n, "visitor", "visitors"));
}
