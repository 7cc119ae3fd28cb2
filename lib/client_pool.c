/* Pre-opened work connections (work_pool): dialled and proven ahead of time (WORK_IDLE), each
 * waits for START{visitor}, then dials the local service and joins. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"

void np__client_pooled_free(pooled *p) {
  struct np_client *cl = p->cl;

  NP_DLIST_UNLINK(cl->pool, p, prev, next);
  if (p->counted)
    cl->pool_idle--;
  if (p->dial != NULL)
    np__dial_cancel(p->dial);
  if (p->dial_local != NULL)
    np__dial_cancel(p->dial_local);
  if (p->ch != NULL)
    np__chan_close(p->ch, NULL);
  if (p->conn != NULL)
    np__conn_abort(p->conn, NULL); /* a visitor was waiting on it: reset, so it learns at once */
  free(p->rest);
  np__cproxy_unref(p->px);
  free(p);
  np__client_unref(cl);
}

static void on_pool_local(void *data, int status, np_conn *local) {
  pooled *p = data;
  struct np_client *cl = p->cl;
  np_conn *c = p->conn;

  p->dial_local = NULL;
  if (status != 0) {
    np_msg m = np__work_fail_msg(p->visitor_id, NP_ELOCALFAIL);
    cl->stats.local_failed++;
    p->px->stats.visitors_dropped++;
    np__log(&cl->log, NP_LOG_WARN, "proxy %s: cannot reach local service %s: %s", p->px->cfg.name,
            p->px->cfg.local, np_strerror(status));
    /* The reset below closes the visitor; this tells the server why, as the REQ_WORK path does. */
    snprintf(m.text, sizeof(m.text), "cannot reach %s: %s", p->px->cfg.local, np_strerror(status));
    if (p->session_id == cl->session_id)
      np__client_send(cl, &m);
    np__client_pooled_free(p);
    return;
  }
  p->conn = NULL;
  np__client_attach_flow(cl, local, &p->px->cfg, p->session_id, p->visitor_id);
  np__client_start_join(cl, p->px, &p->seen, c, local, p->rest, p->rest_len);
  np__client_pooled_free(p);
}

static void on_pool_msg(np__chan *ch, const np_msg *m) {
  pooled *p = np__chan_data(ch);
  struct np_client *cl = p->cl;
  cproxy *px = m->type == NP_MSG_START ? np__client_find_proxy(cl, m->name) : NULL;
  const char *rest;
  size_t rest_len;

  if (px == NULL) {
    np__log(&cl->log, NP_LOG_WARN, "unexpected %s on a pre-opened work connection",
            np_msg_type_name(m->type));
    np__client_pooled_free(p);
    return;
  }
  p->conn = np__chan_detach(ch, &rest, &rest_len);
  p->ch = NULL;
  p->visitor_id = m->id;
  p->px = px;
  px->refs++;
  px->stats.visitors++;
  np__client_visit_from(&p->seen, m);
  if (rest_len > 0 && (p->rest = malloc(rest_len)) != NULL) {
    memcpy(p->rest, rest, rest_len);
    p->rest_len = rest_len;
  } else if (rest_len > 0) {
    np__client_pooled_free(p);
    return;
  }
  p->counted = 0;
  cl->pool_idle--;
  np__client_pool_refill(cl);
  if (np__client_dial_local(cl, &px->cfg, on_pool_local, p, &p->dial_local) != 0)
    np__client_pooled_free(p);
}

static void on_pool_error(np__chan *ch, int err) {
  pooled *p = np__chan_data(ch);
  (void)err; /* the server dropped it (session gone, over its limit) or the link died */
  np__client_pooled_free(p);
}

static void on_pool_dialed(void *data, int status, np_conn *c) {
  pooled *p = data;
  struct np_client *cl = p->cl;
  np_msg m = {.type = NP_MSG_WORK_IDLE, .id = p->session_id, .id2 = ++cl->pool_serial};

  p->dial = NULL;
  if (status != 0 || p->session_id != cl->session_id) {
    if (c != NULL)
      np__conn_close(c, NULL);
    np__client_pooled_free(p);
    return;
  }
  np__auth_idle_mac(cl->key, m.id, m.id2, m.mac);
  np__conn_keepalive(c, (unsigned)(cl->cfg.heartbeat_interval_ms / 1000));
  if (np__conn_send_msg(c, cl->codec, &m) != 0 ||
      np__chan_new(c, cl->codec, cl->cfg.max_frame, CTRL_MAX_QUEUED, &p->ch) != 0) {
    np__conn_close(c, NULL);
    np__client_pooled_free(p);
    return;
  }
  np__chan_start(p->ch, on_pool_msg, on_pool_error, p);
}

/* Keep work_pool connections dialling or idle while the session is up. Failures are retried on the
 * next heartbeat tick, not at once, so a refusing server is not hammered. */
void np__client_pool_refill(struct np_client *cl) {
  /* A client with visitors alone serves nothing: no work comes to it. */
  while (cl->state == C_READY && !cl->closing && !cl->draining && !cl->server_draining &&
         native(cl) && cl->cfg.n_proxies > 0 && cl->pool_idle < cl->cfg.work_pool) {
    pooled *p = calloc(1, sizeof(*p));
    if (p == NULL)
      return;
    p->cl = cl;
    p->session_id = cl->session_id;
    p->counted = 1;
    NP_DLIST_PUSH(cl->pool, p, prev, next);
    cl->pool_idle++;
    cl->refs++;
    if (np__client_open_work(cl, on_pool_dialed, p, &p->dial) != 0) {
      np__client_pooled_free(p);
      return;
    }
  }
}

/* Drop the idle ones (they belong to the session); those already starting a visitor go on. */
void np__client_pool_drop_idle(struct np_client *cl) {
  pooled *p = cl->pool;
  while (p != NULL) {
    pooled *next = p->next;
    if (p->counted)
      np__client_pooled_free(p);
    p = next;
  }
}
