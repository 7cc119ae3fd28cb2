/* The owner's side of forwarding between the servers of a cluster (docs/config.md, "Servers that
 * share the load"; the other side is peer.c). Another server logs in with PEER on the first stream
 * of a multiplexed connection, proving cluster_token as a client proves its token; from then on
 * each stream it opens on that connection starts with FORWARD and carries one visitor, which the
 * route's proxy type takes as one of its own. The session core knows a type here only through its
 * table's forwarded hook. */
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "proxy.h"

int np__peer_login(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  np_msg resp = {.type = NP_MSG_LOGIN_RESP};
  unsigned char want[NP_MSG_KEY_LEN];
  np_conn *c = np__chan_conn(s->ch);
  const char *why = NULL;
  uint64_t wait;

  wait = np__shared_backoff_wait(srv->shared, (struct sockaddr *)&s->addr, now_ms(srv));
  if (wait > 0) {
    srv->stats.logins_throttled++;
    np__log(&srv->log, NP_LOG_INFO, "%s: peer login refused unheard: too many failed logins",
            s->peer);
    resp.status = NP_EBACKOFF;
    resp.id = wait;
    snprintf(resp.text, sizeof(resp.text), "too many failed logins from your address");
    np__chan_send(s->ch, &resp);
    return NP_EBACKOFF;
  }
  if (srv->cfg.cluster_token[0] == '\0')
    why = "this server has no cluster_token";
  else if (!np__transport_server_is_stream(srv->transport, c))
    why = "a peer's connection is multiplexed";
  else if (m->version != PROTO_VERSION || m->name[0] == '\0' ||
           np__auth_peer_mac(srv->cfg.cluster_token, s->snonce, m->nonce, m->name, want) != 0 ||
           !np__auth_equal(want, m->mac))
    why = "wrong cluster_token";
  if (why != NULL) {
    np__log(&srv->log, NP_LOG_WARN, "%s: peer login as %s refused: %s", s->peer,
            m->name[0] != '\0' ? m->name : "?", why);
    np__login_failed(srv, &s->addr, s->peer, NP_EAUTH, why, NULL);
    resp.status = NP_EAUTH;
    snprintf(resp.text, sizeof(resp.text), "%s", why);
    np__chan_send(s->ch, &resp);
    return NP_EAUTH;
  }
  np__strlcpy(s->name, m->name, sizeof(s->name));
  s->state = S_PEER;
  np__transport_server_logged_in(srv->transport, c);
  np__transport_server_set_peer(srv->transport, c);
  np__shared_backoff_clear(srv->shared, (struct sockaddr *)&s->addr, now_ms(srv));
  np__log(&srv->log, NP_LOG_INFO, "peer %s logged in from %s", s->name, s->peer);
  uv_timer_start(&s->timer, np__session_on_timer, srv->cfg.heartbeat_interval_ms, 0);
  return np__session_send(s, &resp);
}

static void on_refused_shut(np_conn *c, int status) {
  (void)status;
  np__conn_close(c, NULL);
}

int np__peer_forwarded(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  const np__proxy_type *type = srv->types[m->kind];
  struct sockaddr_storage from, to;
  np_msg resp = {.type = NP_MSG_FORWARD, .kind = m->kind, .port = m->port};
  const char *rest;
  size_t rest_len;
  np_conn *c;
  int r;

  if (np__parse_addr(m->name, &from) != 0)
    from.ss_family = 0; /* not known */
  if (m->addr[0] == '\0' || np__parse_addr(m->addr, &to) != 0)
    to.ss_family = 0;
  np__strlcpy(resp.text, m->text, sizeof(resp.text));
  c = np__chan_detach(s->ch, &rest, &rest_len);
  np__session_detached(s);
  if (rest_len > 0) {
    /* The peer sends the visitor's bytes only after the answer. */
    np__conn_abort(c, NULL);
    return 0;
  }
  if (type == NULL || type->forwarded == NULL || srv->draining ||
      (r = type->forwarded(srv, c, m, from.ss_family != 0 ? (const struct sockaddr *)&from : NULL,
                           to.ss_family != 0 ? (const struct sockaddr *)&to : NULL)) != 0) {
    srv->stats.visitors_refused++;
    resp.status = srv->draining ? NP_ECLOSED : NP_ENOPROXY;
    snprintf(resp.text, sizeof(resp.text), "%s",
             srv->draining ? "this server drains"
                           : "this server takes no forwarded visitors of this kind");
    np__log(&srv->log, NP_LOG_INFO, "peer visitor from %s for a %s route refused: %s", m->name,
            type != NULL ? type->name : "?", resp.text);
    if (np__conn_send_msg(c, srv->codec, &resp) != 0 || np__conn_shutdown(c, on_refused_shut) != 0)
      np__conn_close(c, NULL);
    return 0;
  }
  /* The type took c and only reads it so far (its hook writes nothing before it returns): the
   * answer goes first, and whatever the type writes later queues behind it. A failed write shows
   * in the type's next read or write of c. */
  np__conn_send_msg(c, srv->codec, &resp);
  srv->stats.peer_visitors++;
  return 0;
}
