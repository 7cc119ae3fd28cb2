/* np_server: sessions and the control protocol (docs/protocol.md); public ports and visitors are in
 * proxy_tcp.c.
 *
 * Every connection to the control port starts as a session in S_NEW; its first message decides what
 * it is: HELLO starts a control session, WORK makes it a work connection for one pending visitor.
 * Codecs without a handshake (line) skip straight to S_READY and their work connections arrive on a
 * separate tunnel port, matched in arrival order. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

#include "server.h"

#include "auth.h"
#include "stats.h"

/* ---- small helpers ----------------------------------------------------------------------------
 */

int np__session_send(session *s, const np_msg *m) {
  int r = np__chan_send(s->ch, m);
  if (r == 0)
    s->last_tx = now_ms(s->srv);
  else if (r != NP_EUNSUPPORTED)
    np__log(&s->srv->log, NP_LOG_WARN, "client %s (%s): cannot send %s: %s", s->name, s->peer,
            np_msg_type_name(m->type), np_strerror(r));
  return r;
}

static void send_close(session *s, int status, const char *text) {
  np_msg m = {.type = NP_MSG_CLOSE, .status = status};
  /* A channel that failed has nobody left to tell (the peer reset or hung up, or sent garbage): the
   * disconnect line already says why, and "cannot send CLOSE" would only add noise. */
  if (!native(s->srv) || !np__chan_is_open(s->ch))
    return;
  np__strlcpy(m.text, text, sizeof(m.text));
  np__session_send(s, &m);
}

/* ---- pending visitors --------------------------------------------------------------------------
 */

/* ---- joins -------------------------------------------------------------------------------------
 */

/* ---- proxies -----------------------------------------------------------------------------------
 */

const np__ports *np__session_ports(const session *s) {
  return s->user != NULL ? &s->user->ports : NULL;
}

static size_t max_proxies(const session *s) {
  if (s->user != NULL && s->user->max_proxies != SIZE_MAX)
    return s->user->max_proxies;
  return s->srv->cfg.max_proxies_per_client;
}

static void on_proxy_msg(session *s, const np_msg *m) {
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
    r = np__proxy_open(srv, s, m->name, (np_proxy_kind)m->kind, addr, m->port, &px);
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
    case NP_ECONFIG:
    case NP_EUNSUPPORTED:
      break; /* said above */
    default:
      snprintf(resp.text, sizeof(resp.text), "%s (%s:%u)", np_strerror(r), addr, m->port);
    }
    np__log(&srv->log, NP_LOG_WARN, "client %s: proxy %s refused: %s", s->name, m->name, resp.text);
    np__session_send(s, &resp);
    return;
  }
  px->allow_ips = allow;
  px->next = s->proxies;
  s->proxies = px;
  s->n_proxies++;
  resp.port = (uint16_t)px->port;
  np__log(&srv->log, NP_LOG_INFO, "client %s: proxy %s listening on %s:%d%s%s", s->name, px->name,
          addr, px->port, allow.n > 0 ? ", visitors only from " : "", allow.n > 0 ? m->text : "");
  np__session_send(s, &resp);
}

/* ---- sessions ----------------------------------------------------------------------------------
 */

static void on_session_part_closed(session *s) {
  struct np_server *srv = s->srv;
  if (--s->closes_left > 0)
    return;
  free(s);
  np__server_unref(srv);
}

static void on_session_chan_closed(np__chan *ch) {
  on_session_part_closed(np__chan_data(ch));
}

static void on_session_timer_closed(uv_handle_t *h) {
  on_session_part_closed(h->data);
}

static void session_unlink(session *s) {
  NP_DLIST_UNLINK(s->srv->sessions, s, prev, next);
}

static void idle_unlink(session *w) {
  session *o = w->owner;
  NP_DLIST_UNLINK(o->idle, w, idle_prev, idle_next);
  w->owner = NULL;
  o->n_idle--;
}

/* Tear down a session and everything it owns. status/why go to the log (and, for a live control
 * session, to the client in a CLOSE message). */
void np__session_close(session *s, int status, const char *why) {
  struct np_server *srv = s->srv;

  if (s->closing)
    return;
  s->closing = 1;
  session_unlink(s);
  np__upath_forget(srv, s);
  if (s->state == S_IDLE && s->owner != NULL)
    idle_unlink(s);
  while (s->idle != NULL)
    np__session_close(s->idle, NP_ECLOSED, "its session ended");
  if (s->state == S_READY) {
    srv->stats.clients--;
    np__log(&srv->log,
            status == UV_EOF || status == 0 || status == NP_ECLOSED ? NP_LOG_INFO : NP_LOG_WARN,
            "client %s (%s) disconnected: %s", s->name, s->peer, why);
    /* Tell the client why, unless it left on its own (EOF, or its own CLOSE: status 0). */
    if (status != UV_EOF && status != 0)
      send_close(s, status, why);
    /* The line codec's visit port outlives its client; its waiting visitors do not. */
    if (!native(srv) && srv->visit_proxy != NULL)
      srv->pool_ops->remove_group(srv->pool, srv->visit_proxy, np__visitor_removed, srv);
  }
  while (s->proxies != NULL) {
    proxy *px = s->proxies;
    s->proxies = px->next;
    np__proxy_close(px);
  }
  /* Work connections of a dead session are dead too; cut their visitors off now rather than leave
   * them hanging until TCP gives up. */
  for (active *a = s->joins; a != NULL; a = a->next) {
    a->s = NULL;
    np__join_abort(a->join);
  }
  s->joins = NULL;
  uv_close((uv_handle_t *)&s->timer, on_session_timer_closed);
  {
    /* A client's multiplexed connection lives as long as its control session. */
    np__mux *m = s->state == S_READY ? np__mux_of(np__chan_conn(s->ch)) : NULL;
    np__chan_close_flush(s->ch, on_session_chan_closed);
    if (m != NULL)
      np__mux_close(m);
  }
}

/* One timer per session, re-armed for whichever comes first: the login deadline, the moment the
 * peer counts as dead (exactly heartbeat_timeout after its last message), or the next ping we owe.
 */
static void on_session_timer(uv_timer_t *t) {
  session *s = t->data;
  struct np_server *srv = s->srv;
  uint64_t now = now_ms(srv), next;
  np_msg ping = {.type = NP_MSG_PING};

  if (s->state == S_IDLE)
    return; /* TCP keepalive watches it; its owner's heartbeats say whether the client lives */
  if (s->state != S_READY) {
    /* From the accept, not the last byte: a peer dribbling its login a byte at a time is closed as
     * soon as one that says nothing. */
    if (now - s->started >= srv->cfg.login_timeout_ms) {
      srv->stats.logins_failed++;
      np__log(&srv->log, NP_LOG_INFO, "%s: no login within %llums (login_timeout), closing",
              s->peer, (unsigned long long)srv->cfg.login_timeout_ms);
      np__session_close(s, UV_ETIMEDOUT, "login timed out");
      return;
    }
    next = s->started + srv->cfg.login_timeout_ms;
  } else {
    int pongs = (srv->codec->caps & NP_CODEC_CAP_PONG) != 0;
    if (pongs && now - s->last_rx >= srv->cfg.heartbeat_timeout_ms) {
      np__session_close(s, NP_EPEERDEAD, "no heartbeat within heartbeat_timeout");
      return;
    }
    if (now - s->last_tx >= srv->cfg.heartbeat_interval_ms) {
      ping.id = ++s->ping_seq;
      if (np__session_send(s, &ping) != 0) {
        np__session_close(s, NP_ELIMIT, "control stream not writable");
        return;
      }
      if (s->ping_out <= s->last_rx)
        s->ping_out = now; /* the first ping since the client last spoke */
    }
    next = s->last_tx + srv->cfg.heartbeat_interval_ms;
    if (pongs && s->last_rx + srv->cfg.heartbeat_timeout_ms < next)
      next = s->last_rx + srv->cfg.heartbeat_timeout_ms;
  }
  uv_timer_start(&s->timer, on_session_timer, np__ms_left(next, now), 0);
}

static int hello(session *s, const np_msg *m) {
  np_msg resp = {.type = NP_MSG_HELLO, .version = PROTO_VERSION};

  if (m->version != PROTO_VERSION) {
    np_msg c = {.type = NP_MSG_CLOSE, .status = NP_EVERSION};
    snprintf(c.text, sizeof(c.text), "protocol version %u is not supported (server speaks %u)",
             m->version, PROTO_VERSION);
    np__chan_send(s->ch, &c);
    return NP_EVERSION;
  }
  if (np__auth_nonce(s->snonce) != 0)
    return UV_EIO;
  memcpy(resp.nonce, s->snonce, NP_MSG_KEY_LEN);
  s->state = S_AUTH;
  return np__session_send(s, &resp);
}

/* The datagram path's keys for a session that just logged in: from the TLS session of its
 * connection, or (insecure = true) from the session key, which only the two ends know if the token
 * is secret. */
static void datagram_keys(session *s, np_conn *c) {
  unsigned char master[NP_SEAL_MASTER];
  int r = np__tls_export(c, NP_UDP_EXPORTER_LABEL, master, sizeof(master));

  if (r != 0 && s->srv->tls == NULL) {
    memcpy(master, s->key, sizeof(master));
    r = 0;
  }
  if (r == 0 && np__seal_init(&s->seal, master, s->id, 1) == 0)
    s->seal_ok = 1;
  OPENSSL_cleanse(master, sizeof(master));
}

static session *find_ready(struct np_server *srv, const char *name) {
  for (session *o = srv->sessions; o != NULL; o = o->next)
    if (o->state == S_READY && strcmp(o->name, name) == 0)
      return o;
  return NULL;
}

/* The token name must log in with: its users file entry's, else the shared one; NULL when the name
 * may not log in at all (a users file without it, and no shared token). */
static const char *token_for(const struct np_server *srv, const np__users *users, const char *name,
                             const np__user **user) {
  const np__user *u = np__users_find(users, name);

  if (user != NULL)
    *user = u;
  if (u != NULL)
    return u->token;
  if (users != NULL && srv->cfg.token[0] == '\0')
    return NULL;
  return srv->cfg.token;
}

/* A failed login, or garbage where one belonged: counted; charged to the address (the back-off)
 * when it is something only a guesser or a hostile peer produces. Silence, resets and refusals that
 * an honest client meets (limits, the back-off itself) are not. */
static void login_failed(struct np_server *srv, const struct sockaddr_storage *addr,
                         const char *peer, int err, const char *why) {
  unsigned fails = 0;
  uint64_t wait = 0;

  srv->stats.logins_failed++;
  if (err == NP_EAUTH || err == NP_EPROTO || err == NP_EVERSION || err == NP_ETOOBIG ||
      err == NP_ETLS)
    wait = np__backoff_fail(srv->backoff, (const struct sockaddr *)addr, now_ms(srv), &fails);
  if (wait > 0)
    np__log(&srv->log, NP_LOG_WARN,
            "%s: %s; %u failed %s from this address, its next login is refused unheard for "
            "%llums",
            peer, why, fails, np__plural(fails, "login", "logins"), (unsigned long long)wait);
}

static int login(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  np_msg resp = {.type = NP_MSG_LOGIN_RESP};
  unsigned char want[NP_MSG_KEY_LEN];
  const np__user *user = NULL;
  const char *token;
  uint64_t wait;
  session *old;
  size_t n = 0;

  wait = np__backoff_wait(srv->backoff, (struct sockaddr *)&s->addr, now_ms(srv));
  if (wait > 0) {
    /* Not even checked: a guess made now tells the guesser nothing. */
    srv->stats.logins_throttled++;
    np__log(&srv->log, NP_LOG_INFO, "%s: login as '%s' refused unheard: too many failed logins",
            s->peer, m->name);
    resp.status = NP_EBACKOFF;
    resp.id = wait; /* ms: the client waits at least this long before it tries again */
    snprintf(resp.text, sizeof(resp.text),
             "too many failed logins from your address; retry in %llu s",
             (unsigned long long)(wait + 999) / 1000);
    np__chan_send(s->ch, &resp);
    return NP_EBACKOFF;
  }
  token = token_for(srv, srv->users, m->name, &user);
  if (m->version != PROTO_VERSION || m->name[0] == '\0' || token == NULL ||
      np__auth_login_mac(token, s->snonce, m->nonce, m->name, want) != 0 ||
      !np__auth_equal(want, m->mac)) {
    np__log(&srv->log, NP_LOG_WARN, "%s: login as '%s' refused: %s", s->peer, m->name,
            token == NULL ? "no such client in the users file" : "wrong token");
    login_failed(srv, &s->addr, s->peer, NP_EAUTH, "login refused");
    resp.status = NP_EAUTH;
    /* The same words whether the name exists or not. */
    snprintf(resp.text, sizeof(resp.text), "wrong token for client '%s'", m->name);
    np__chan_send(s->ch, &resp);
    return NP_EAUTH;
  }
  for (session *o = srv->sessions; o != NULL; o = o->next)
    n += o->state == S_READY;
  old = find_ready(srv, m->name);
  if (old == NULL && n >= srv->cfg.max_clients) {
    resp.status = NP_ELIMIT;
    snprintf(resp.text, sizeof(resp.text), "the server takes at most %zu %s", srv->cfg.max_clients,
             np__plural(srv->cfg.max_clients, "client", "clients"));
    np__chan_send(s->ch, &resp);
    return NP_ELIMIT;
  }
  if (old != NULL) {
    uint64_t now = now_ms(srv), grace = srv->cfg.heartbeat_interval_ms / 2;
    /* The same client process coming back (its instance id: a reconnect after its connection died
     * unnoticed, or after it never got our answer), a session that has missed its heartbeats (it
     * left a ping of ours unanswered for half an interval: whatever the client's own interval, a
     * live one answers within a round trip), or a login told to (--takeover) replaces the old
     * session at once; another live client under the same name (two hosts with one host name) is
     * told so instead of silently taking the ports over. */
    int same = m->id != 0 && m->id == old->resume;
    int stale =
        old->ping_out > old->last_rx && now - old->ping_out >= (grace > 1000 ? grace : 1000);
    if (!same && !stale && !(m->status & NP_LOGIN_TAKEOVER)) {
      char where[64];
      np__addr_str((const struct sockaddr *)&old->addr, where, sizeof(where));
      np__log(&srv->log, NP_LOG_WARN,
              "%s: login as '%s' refused: a live client from %s already uses that name", s->peer,
              m->name, where);
      resp.status = NP_ENAMEINUSE;
      snprintf(resp.text, sizeof(resp.text),
               "client name '%s' is in use by a live client from %s: give each client its own "
               "name with --name (or --takeover to replace that one)",
               m->name, where);
      np__chan_send(s->ch, &resp);
      /* Ask the old one now: should it be gone, a try after the grace finds it stale. */
      if (old->ping_out <= old->last_rx) {
        np_msg ping = {.type = NP_MSG_PING, .id = ++old->ping_seq};
        if (np__session_send(old, &ping) == 0)
          old->ping_out = now;
      }
      return NP_ENAMEINUSE;
    }
    np__log(&srv->log, NP_LOG_INFO,
            "client %s logged in again from %s; closing its old session (%s)", m->name, s->peer,
            same    ? "the same client coming back"
            : stale ? "it missed its heartbeats"
                    : "--takeover");
    if (!same && !stale) {
      /* A live client replaced on purpose: told why, and as final (NP_ENAMEINUSE ends np-client),
       * or two clients with --takeover would replace each other for ever. */
      char why[NP_MSG_TEXT_MAX + 1];
      snprintf(why, sizeof(why), "replaced by a client logged in as '%s' with --takeover from %s",
               m->name, s->peer);
      np__session_close(old, NP_ENAMEINUSE, why);
    } else {
      np__session_close(old, NP_ECLOSED, "replaced by a new login");
    }
  }
  np__auth_session_key(token, s->snonce, m->nonce, m->name, s->key);
  np__strlcpy(s->name, m->name, sizeof(s->name));
  s->user = user;
  np__backoff_clear(srv->backoff, (struct sockaddr *)&s->addr, now_ms(srv));
  s->state = S_READY;
  s->id = ++srv->next_session_id;
  srv->stats.clients++;
  resp.id = s->id;
  s->resume = m->id;
  {
    np__mux *mx = np__mux_of(np__chan_conn(s->ch));
    if (mx != NULL)
      ((muxconn *)np__mux_data(mx))->logged_in = 1;
    datagram_keys(s, mx != NULL ? np__mux_transport(mx) : np__chan_conn(s->ch));
  }
  np__log(&srv->log, NP_LOG_INFO, "client %s logged in from %s%s", s->name, s->peer,
          user != NULL ? " (users file)" : "");
  /* The timer was set for the login deadline; from now on it keeps the heartbeat. */
  uv_timer_start(&s->timer, on_session_timer, srv->cfg.heartbeat_interval_ms, 0);
  return np__session_send(s, &resp);
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

static void work_fail(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  visitor *v = srv->pool_ops->take(srv->pool, m->id);

  if (v == NULL) {
    /* Expired meanwhile, or a visitor sent over a pre-opened connection, which the client has
     * already reset; either way only the reason is left to report. The reset would make the
     * access log say end=reset: mark the join, in case its end has not been logged yet (with mux
     * it has not: the reset travels behind this message on the same connection). */
    for (active *a = s->joins; a != NULL; a = a->next)
      if (a->id == m->id)
        a->end = "local_failed";
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
static void work(session *s, const np_msg *m) {
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
  s->ch = NULL;
  s->closing = 1;
  session_unlink(s);
  np__server_join(srv, owner, c, v, rest, rest_len);
  /* The chan frees itself; only the timer is left. */
  s->closes_left = 1;
  uv_close((uv_handle_t *)&s->timer, on_session_timer_closed);
}

/* Anti-replay window: accept each serial once, and only within 64 of the highest seen. */
static int serial_fresh(session *o, uint64_t n) {
  if (n == 0)
    return 0;
  if (n > o->idle_top) {
    uint64_t shift = n - o->idle_top;
    o->idle_seen = shift >= 64 ? 0 : o->idle_seen << shift;
    o->idle_seen |= 1;
    o->idle_top = n;
    return 1;
  }
  if (o->idle_top - n >= 64 || (o->idle_seen >> (o->idle_top - n)) & 1)
    return 0;
  o->idle_seen |= (uint64_t)1 << (o->idle_top - n);
  return 1;
}

/* First message WORK_IDLE: a pre-opened work connection; park it with its owner until a visitor
 * comes. */
static int work_idle(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  unsigned char want[NP_MSG_KEY_LEN];
  session *o;

  for (o = srv->sessions; o != NULL && !(o->state == S_READY && o->id == m->id); o = o->next)
    ;
  if (o == NULL || np__auth_idle_mac(o->key, m->id, m->id2, want) != 0 ||
      !np__auth_equal(want, m->mac) || !serial_fresh(o, m->id2)) {
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
int np__server_start_pooled(struct np_server *srv, session *owner, proxy *px, visitor *v,
                            uint64_t id) {
  np_msg m = {.type = NP_MSG_START, .id = id};
  session *w = owner->idle;
  np_conn *c;
  int r;

  if (w == NULL)
    return NP_ESTATE;
  idle_unlink(w);
  c = np__chan_release(w->ch);
  w->ch = NULL;
  w->closing = 1;
  session_unlink(w);
  w->closes_left = 1; /* only the timer is left to close */
  uv_close((uv_handle_t *)&w->timer, on_session_timer_closed);
  strcpy(m.name, px->name);
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

static int start_mux(session *s, const np_msg *m);

static void on_session_msg(np__chan *ch, const np_msg *m) {
  session *s = np__chan_data(ch);
  struct np_server *srv = s->srv;
  int r = 0;

  if (s->closing)
    return;
  s->last_rx = now_ms(srv);
  np__log(&srv->log, NP_LOG_TRACE, "%s: got %s", s->peer, np_msg_type_name(m->type));
  switch (s->state) {
  case S_NEW:
    if (m->type == NP_MSG_HELLO)
      r = hello(s, m);
    else if (m->type == NP_MSG_WORK)
      work(s, m);
    else if (m->type == NP_MSG_WORK_IDLE)
      r = work_idle(s, m);
    else if (m->type == NP_MSG_MUX && native(srv) && np__mux_of(np__chan_conn(s->ch)) == NULL)
      r = start_mux(s, m);
    else
      r = NP_EPROTO;
    break;
  case S_AUTH:
    r = m->type == NP_MSG_LOGIN ? login(s, m) : NP_EPROTO;
    break;
  case S_READY:
    switch (m->type) {
    case NP_MSG_PROXY:
      on_proxy_msg(s, m);
      break;
    case NP_MSG_PING: {
      np_msg pong = {.type = NP_MSG_PONG, .id = m->id};
      if (m->status == NP_UDP_PATH_UP || m->status == NP_UDP_PATH_DOWN) {
        s->udp_client_up = m->status == NP_UDP_PATH_UP;
        np__log(&srv->log, NP_LOG_DEBUG, "client %s: its datagram path is %s", s->name,
                s->udp_client_up ? "up" : "down");
      }
      r = np__session_send(s, &pong);
      break;
    }
    case NP_MSG_PONG:
      break;
    case NP_MSG_WORK_FAIL:
      work_fail(s, m);
      break;
    case NP_MSG_CLOSE:
      np__log(&srv->log, NP_LOG_INFO, "client %s says goodbye: %s", s->name, m->text);
      np__session_close(s, 0, "client closed the session");
      return;
    default:
      r = NP_EPROTO;
    }
    break;
  case S_IDLE:
    r = NP_EPROTO; /* an idle work connection has nothing to say until START */
    break;
  }
  if (r != 0 && !s->closing) {
    if (r == NP_EPROTO)
      np__log(&srv->log, NP_LOG_WARN, "%s: unexpected %s message, closing", s->peer,
              np_msg_type_name(m->type));
    /* A name in use is no failed login: the credentials were right. */
    if ((s->state == S_NEW || s->state == S_AUTH) && r != NP_EAUTH && r != NP_EBACKOFF &&
        r != NP_ENAMEINUSE)
      login_failed(srv, &s->addr, s->peer, r, "malformed login"); /* login() counted those */
    np__session_close(s, r, np_strerror(r));
  }
}

static void on_session_error(np__chan *ch, int err) {
  session *s = np__chan_data(ch);
  if (err == NP_ETLSREQUIRED && s->state == S_NEW) {
    /* A TLS client reads this as "not TLS" and says so, instead of waiting for a ServerHello. */
    np_msg m = {.type = NP_MSG_CLOSE, .status = NP_ENOTLS};
    snprintf(m.text, sizeof(m.text), "this server runs without TLS (--insecure)");
    np__conn_send_msg(np__chan_conn(ch), s->srv->codec, &m);
    np__log(&s->srv->log, NP_LOG_WARN,
            "%s: TLS client, but this server runs with --insecure; closing (both sides need the "
            "same setting)",
            s->peer);
    s->srv->stats.logins_failed++;
    np__session_close(s, err, np_strerror(err));
    return;
  }
  if (s->state == S_NEW && (err == UV_EOF || err == UV_ECONNRESET)) {
    /* Load balancers' health checks and port scans connect and leave without a word: neither a
     * login attempt (nothing is counted against the address) nor worth a warning. */
    np__log(&s->srv->log, NP_LOG_DEBUG, "%s: closed the connection before saying anything",
            s->peer);
    np__session_close(s, err, np_strerror(err));
    return;
  }
  /* A logged-in client's end is logged once, by np__session_close ("disconnected: why"). */
  if (err != UV_EOF && s->state != S_READY)
    np__log(&s->srv->log, NP_LOG_WARN, "%s (%s): %s, closing", s->name[0] ? s->name : "connection",
            s->peer, np_strerror(err));
  if ((s->state == S_NEW || s->state == S_AUTH) && err != UV_EOF && err != UV_ECONNRESET)
    login_failed(s->srv, &s->addr, s->peer, err, np_strerror(err));
  np__session_close(s, err, np_strerror(err));
}

/* A new connection to the control port, or a new stream on a multiplexed one: its first message
 * says what it is. */
static void session_start(struct np_server *srv, np_conn *c, const struct sockaddr_storage *addr) {
  session *s;
  int r;

  if ((s = calloc(1, sizeof(*s))) == NULL) {
    np__conn_close(c, NULL);
    return;
  }
  s->srv = srv;
  s->started = s->last_rx = s->last_tx = now_ms(srv);
  if (addr != NULL)
    s->addr = *addr;
  /* From the address taken at accept: a peer that reset at once has none to ask for any more. */
  if (addr != NULL && addr->ss_family != 0 && np__mux_of(c) == NULL)
    np__addr_str((const struct sockaddr *)addr, s->peer, sizeof(s->peer));
  else
    np__conn_peer_str(c, s->peer, sizeof(s->peer));
  if ((r = np__chan_new(c, srv->codec, srv->cfg.max_frame, CTRL_MAX_QUEUED, &s->ch)) != 0) {
    np__conn_close(c, NULL);
    free(s);
    return;
  }
  srv->refs++;
  s->closes_left = 2;
  uv_timer_init(srv->loop, &s->timer);
  s->timer.data = s;
  NP_DLIST_PUSH(srv->sessions, s, prev, next);
  np__log(&srv->log, NP_LOG_DEBUG, "connection from %s", s->peer);

  if (!native(srv)) {
    /* No handshake in this codec: the connection is the client. One client at a time; a new one
     * replaces the old, which is most likely dead if its owner reconnected. */
    for (session *o = s->next; o != NULL;) {
      session *next = o->next;
      if (o->state == S_READY)
        np__session_close(o, NP_ECLOSED, "replaced by a new client");
      o = next;
    }
    s->state = S_READY;
    strcpy(s->name, "seed");
    srv->stats.clients++;
    np__log(&srv->log, NP_LOG_INFO, "client connected from %s (line codec)", s->peer);
  }
  r = np__chan_start(s->ch, on_session_msg, on_session_error, s);
  if (r == 0)
    r = uv_timer_start(&s->timer, on_session_timer, 0, 0);
  if (r != 0)
    np__session_close(s, r, np_strerror(r));
}

void np__server_accept(struct np_server *srv, np_conn *c) {
  struct sockaddr_storage addr;
  np_conn *tc;

  if (np__conn_peer_addr(c, &addr) != 0)
    addr.ss_family = 0;
  if (srv->tls != NULL) {
    if (np__tls_wrap(srv->tls, c, &tc) != 0) {
      np__conn_close(c, NULL);
      return;
    }
    c = tc;
  }
  session_start(srv, c, &addr);
}

static void on_control(np__listener *l, np_conn *c) {
  np__server_accept(((proxy *)np__listener_data(l))->srv, c);
}

/* ---- multiplexed connections ------------------------------------------------------------------
 */

static void on_muxconn_part_closed(muxconn *mc) {
  struct np_server *srv = mc->srv;
  if (--mc->closes_left > 0)
    return;
  free(mc);
  np__server_unref(srv);
}

static void on_muxconn_timer_closed(uv_handle_t *h) {
  on_muxconn_part_closed(h->data);
}

static void on_mux_closed(np__mux *m) {
  muxconn *mc = np__mux_data(m);
  int st = np__mux_status(m);
  np__log(&mc->srv->log, st == UV_ECANCELED ? NP_LOG_DEBUG : NP_LOG_INFO,
          "multiplexed connection from %s closed: %s", mc->peer,
          st == UV_ECANCELED ? "done" : np_strerror(st));
  if (!mc->logged_in && (st == NP_EPROTO || st == NP_ETOOBIG || st == NP_ETLS))
    login_failed(mc->srv, &mc->addr, mc->peer, st, np_strerror(st)); /* garbage, no login */
  NP_DLIST_UNLINK(mc->srv->muxes, mc, prev, next);
  mc->mux = NULL;
  uv_close((uv_handle_t *)&mc->timer, on_muxconn_timer_closed);
  on_muxconn_part_closed(mc);
}

static void on_mux_stream(np__mux *m, np_conn *stream) {
  muxconn *mc = np__mux_data(m);
  session_start(mc->srv, stream, &mc->addr);
}

static void on_mux_login_deadline(uv_timer_t *t) {
  muxconn *mc = t->data;
  if (mc->logged_in || mc->mux == NULL)
    return;
  np__log(&mc->srv->log, NP_LOG_INFO, "%s: no login on its multiplexed connection in time, closing",
          mc->peer);
  np__mux_close(mc->mux);
}

/* MUX as a connection's first message: the rest of it is yamux, each stream a connection. */
static int start_mux(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  np__mux_opts o = {.client = 0,
                    .max_window = (uint32_t)srv->cfg.mux_max_window,
                    .max_streams = (uint32_t)srv->cfg.mux_max_streams};
  const char *rest;
  size_t rest_len;
  muxconn *mc;
  np_conn *c;
  int r;

  if (m->version != PROTO_VERSION)
    return NP_EVERSION;
  if (srv->mux_rbuf == NULL && (srv->mux_rbuf = malloc(NP_MUX_SHARED_READ_BUF)) == NULL)
    return UV_ENOMEM;
  o.read_buf = srv->mux_rbuf;
  o.read_buf_len = NP_MUX_SHARED_READ_BUF;
  if ((mc = calloc(1, sizeof(*mc))) == NULL)
    return UV_ENOMEM;
  mc->srv = srv;
  memcpy(mc->peer, s->peer, sizeof(mc->peer));
  mc->addr = s->addr;
  c = np__chan_detach(s->ch, &rest, &rest_len);
  s->ch = NULL;
  s->closing = 1;
  NP_DLIST_UNLINK(srv->sessions, s, prev, next);
  s->closes_left = 1; /* the chan frees itself; only the timer is left */
  uv_close((uv_handle_t *)&s->timer, on_session_timer_closed);
  np__conn_keepalive(c, (unsigned)(srv->cfg.heartbeat_interval_ms / 1000));
  if ((r = np__mux_new(srv->loop, c, &o, rest, rest_len, on_mux_stream, mc, &mc->mux)) != 0) {
    np__conn_close(c, NULL);
    free(mc);
    return 0;
  }
  srv->refs++;
  mc->closes_left = 2;
  uv_timer_init(srv->loop, &mc->timer);
  mc->timer.data = mc;
  /* The deadline counts from the accept, as it did for the session that said MUX. */
  uv_timer_start(&mc->timer, on_mux_login_deadline,
                 np__ms_left(s->started + srv->cfg.login_timeout_ms, now_ms(srv)), 0);
  np__mux_set_closed_cb(mc->mux, on_mux_closed);
  NP_DLIST_PUSH(srv->muxes, mc, prev, next);
  np__log(&srv->log, NP_LOG_DEBUG, "%s: multiplexed connection", s->peer);
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------------------
 */

int np_server_new(uv_loop_t *loop, const struct np_config *cfg, struct np_server **out) {
  struct np_server *srv;

  if (loop == NULL || cfg == NULL || cfg->kind != NP_CONFIG_SERVER)
    return UV_EINVAL;
  if ((srv = calloc(1, sizeof(*srv))) == NULL)
    return UV_ENOMEM;
  srv->loop = loop;
  srv->cfg = *cfg;
  if (np_config_validate(&srv->cfg) != 0) {
    free(srv);
    return NP_ECONFIG;
  }
  srv->codec = np_codec_find(cfg->codec);
  np__bufcache_init(&srv->chunks, np__join_chunk_size(), NP_RELAY_CACHE);
  srv->chunks.pipes.enabled = srv->cfg.relay_splice;
  np__logger_init(&srv->log);
  srv->log.level = (np_log_level)cfg->log_level;
  *out = srv;
  return 0;
}

int np_server_set_codec(struct np_server *srv, const np_codec_ops *codec) {
  if (srv->started)
    return NP_ESTATE;
  if (np__codec_ops_check(codec) != 0)
    return UV_EINVAL;
  srv->codec = codec;
  return 0;
}

int np_server_set_pool(struct np_server *srv, const np_pool_ops *ops, void *pool) {
  if (srv->started)
    return NP_ESTATE;
  if (np__pool_ops_check(ops) != 0 || pool == NULL)
    return UV_EINVAL;
  if (srv->pool != NULL)
    srv->pool_ops->destroy(srv->pool);
  srv->pool_ops = ops;
  srv->pool = pool;
  return 0;
}

void np_server_set_log(struct np_server *srv, np_log_level level, np_log_cb cb, void *arg) {
  srv->log.level = level;
  srv->log.cb = cb != NULL ? cb : np_log_stderr;
  srv->log.arg = arg;
}

/* The control and tunnel ports are listeners like the public ones, under a proxy of their own
 * (never in the pool), so accept errors are reported the same way. */
static int listen_on(struct np_server *srv, proxy *px, np__listener **l, const char *spec,
                     np__accept_cb cb, int *port) {
  struct sockaddr_storage ss;
  int r;

  np__parse_addr(spec, &ss); /* validated with the config */
  px->srv = srv;
  np__strlcpy(px->name, l == &srv->listener ? "control" : "tunnel", sizeof(px->name));
  if ((r = np__listen(srv->loop, (struct sockaddr *)&ss, cb, np__server_accept_failed, px, l)) !=
      0) {
    np__log(&srv->log, NP_LOG_ERROR, "cannot listen on %s: %s", spec, np_strerror(r));
    return r;
  }
  srv->refs++;
  px->port = np__listener_port(*l);
  if (port != NULL)
    *port = px->port;
  return 0;
}

static void on_listener_closed(void *data) {
  np__server_unref(((proxy *)data)->srv);
}

static void on_handle_closed(uv_handle_t *h) {
  np__server_unref(h->data);
}

/* Read users_file into *out, logging why not. */
static int load_users(struct np_server *srv, np__users **out) {
  char err[600];
  struct stat st;
  int r;

  if ((r = np__users_load(srv->cfg.users_file, out, err, sizeof(err))) != 0) {
    np__log(&srv->log, NP_LOG_ERROR, "users file: %s", err);
    return r;
  }
  if (stat(srv->cfg.users_file, &st) == 0 && (st.st_mode & 077) != 0)
    np__log(&srv->log, NP_LOG_WARN, "users file %s holds tokens but others may read it (chmod 600)",
            srv->cfg.users_file);
  np__log(&srv->log, NP_LOG_INFO, "users file %s: %zu %s%s", srv->cfg.users_file,
          np__users_count(*out), np__plural(np__users_count(*out), "client", "clients"),
          srv->cfg.token[0] != '\0' ? "; other names log in with the shared token" : "");
  return 0;
}

int np_server_reload(struct np_server *srv) {
  np__users *fresh = NULL;
  session *s, *next;
  int r;

  if (!srv->started || srv->closing || srv->cfg.users_file[0] == '\0') {
    np__log(&srv->log, NP_LOG_INFO, "reload: nothing to reload (no users_file)");
    return NP_ESTATE;
  }
  if ((r = load_users(srv, &fresh)) != 0) {
    np__log(&srv->log, NP_LOG_ERROR, "reload: keeping the users file read before");
    return r;
  }
  /* A session stays if its name still logs in with the token it used; otherwise its credentials
   * were revoked and it goes now, not at its next reconnect. */
  for (s = srv->sessions; s != NULL; s = next) {
    const char *was, *now;
    next = s->next;
    if (s->state != S_READY)
      continue;
    was = token_for(srv, srv->users, s->name, NULL);
    now = token_for(srv, fresh, s->name, &s->user);
    if (now == NULL || was == NULL || strcmp(was, now) != 0) {
      np__log(&srv->log, NP_LOG_INFO, "client %s: %s in the users file, closing its session",
              s->name, now == NULL ? "no longer" : "new token");
      s->user = NULL;
      np__session_close(s, NP_EAUTH, "credentials revoked by the server");
      /* Closing s may have closed its idle work connections, which could be next. */
      next = srv->sessions;
    }
  }
  np__users_free(srv->users);
  srv->users = fresh;
  return 0;
}

int np_server_start(struct np_server *srv) {
  int r;

  if (srv->started)
    return NP_ESTATE;
  /* Before anything that np_server_close would have to undo. */
  if (srv->cfg.users_file[0] != '\0' && (r = load_users(srv, &srv->users)) != 0)
    return r;
  if ((r = np__backoff_new(srv->cfg.login_backoff_ms, srv->cfg.login_backoff_max_ms,
                           &srv->backoff)) != 0)
    return r;
  srv->started = 1;
  uv_timer_init(srv->loop, &srv->pool_timer);
  uv_timer_init(srv->loop, &srv->trim_timer);
  uv_unref((uv_handle_t *)&srv->trim_timer);
  srv->pool_timer.data = srv->trim_timer.data = srv;
  srv->refs += 2;
  if (srv->pool == NULL) {
    if ((r = np_pool_default_new(srv->cfg.max_pending, srv->cfg.max_pending_per_proxy,
                                 &srv->pool)) != 0)
      return r;
    srv->pool_ops = np_pool_default_ops();
  }
  if (!srv->cfg.insecure &&
      (r = np__tls_server_new(srv->loop, &srv->cfg, &srv->log, &srv->tls)) != 0)
    return r;
  if ((r = listen_on(srv, &srv->control_px, &srv->listener, srv->cfg.bind, on_control,
                     &srv->port)) != 0)
    return r;
  if (native(srv)) {
    /* The datagram path listens on the same number over UDP; without it, UDP proxies still work
     * over the tunnel. */
    struct sockaddr_storage ua;
    np__parse_addr(srv->cfg.bind, &ua);
    ((struct sockaddr_in *)&ua)->sin_port = htons((uint16_t)srv->port); /* v4 and v6 alike */
    if ((r = np__upath_open(srv, (struct sockaddr *)&ua)) != 0)
      np__log(&srv->log, NP_LOG_WARN,
              "datagram path off: cannot bind UDP port %d (%s); UDP proxies use the tunnel",
              srv->port, np_strerror(r));
  }
  if (srv->cfg.token[0] == '\0' && srv->users == NULL && native(srv))
    np__log(&srv->log, NP_LOG_WARN, "no token set: any client can open public ports");
  np__log(&srv->log, NP_LOG_INFO, "listening on %s (port %d, codec %s)", srv->cfg.bind, srv->port,
          srv->codec->name);
  if (srv->tls != NULL)
    np__log(&srv->log, NP_LOG_INFO, "TLS certificate %s (clients: --server-fingerprint %s)",
            np__tls_fingerprint(srv->tls), np__tls_fingerprint(srv->tls));
  else
    np__log(&srv->log, NP_LOG_WARN,
            "TLS is off (insecure = true): tunnelled traffic crosses the network in clear and "
            "anybody on the path can read or change it");
  if (!(srv->codec->caps & NP_CODEC_CAP_WORK_HEADER)) {
    char host[NP_HOSTPORT_MAX];
    int vport, tport;
    if ((r = listen_on(srv, &srv->tunnel_px, &srv->tunnel_listener, srv->cfg.tunnel_bind,
                       np__server_on_tunnel, &tport)) != 0)
      return r;
    np__split_hostport(srv->cfg.visit_bind, host, sizeof(host), &vport);
    if ((r = np__proxy_open(srv, NULL, "visit", NP_PROXY_TCP, host, vport, &srv->visit_proxy)) !=
        0) {
      np__log(&srv->log, NP_LOG_ERROR, "cannot listen on %s: %s", srv->cfg.visit_bind,
              np_strerror(r));
      return r;
    }
    np__log(&srv->log, NP_LOG_INFO, "line codec: tunnel port %d, visit port %d", tport,
            srv->visit_proxy->port);
  }
  return 0;
}

const char *np_server_fingerprint(const struct np_server *srv) {
  return srv->tls != NULL ? np__tls_fingerprint(srv->tls) : NULL;
}

int np_server_identity(const struct np_config *cfg, np_log_cb log_cb, void *log_arg, char *buf,
                       size_t len) {
  np__logger log;
  np__tls *t;
  int r;

  if (cfg == NULL || cfg->kind != NP_CONFIG_SERVER || buf == NULL || len <= NP_TLS_FP_LEN)
    return UV_EINVAL;
  /* The embedder's log, as the server's own would be: never straight to stderr. */
  np__logger_init(&log);
  log.level = NP_LOG_INFO;
  if (log_cb != NULL) {
    log.cb = log_cb;
    log.arg = log_arg;
  }
  if ((r = np__tls_server_new(NULL, cfg, &log, &t)) != 0)
    return r;
  np__strlcpy(buf, np__tls_fingerprint(t), len);
  np__tls_free(t);
  return 0;
}

int np_server_port(const struct np_server *srv) {
  return srv->port;
}

void np_server_get_stats(const struct np_server *srv, np_server_stats *out, size_t size) {
  np_server_stats st = srv->stats;

  st.pending = srv->pool != NULL ? srv->pool_ops->count(srv->pool, NULL) : 0;
  np__stats_copy(out, size, &st, sizeof(st));
}

/* Objects that came and went since the last trim before it is worth one: a crowd of connections. */
#define TRIM_BURST 256

static void on_trim(uv_timer_t *t) {
  struct np_server *srv = t->data;
  np__heap_trim();
  np__log(&srv->log, NP_LOG_DEBUG,
          "%d connections and visitors came and went: freed memory given "
          "back to the system",
          srv->refs_peak - srv->refs);
  srv->refs_peak = srv->refs;
}

void np_server_log_stats(const struct np_server *srv) {
  np_server_stats st;

  np_server_get_stats(srv, &st, sizeof(st));
  np__stats_log_server(&srv->log, &st);
}

void np__server_unref(struct np_server *srv) {
  /* Every object holds a reference, and the highest count is always followed by a release: so
   * this sees the peak. */
  if (srv->refs > srv->refs_peak)
    srv->refs_peak = srv->refs;
  if (--srv->refs > 0 && !srv->closing && srv->started &&
      srv->refs_peak - srv->refs >= TRIM_BURST && srv->refs <= srv->refs_peak / 2 &&
      !uv_is_active((uv_handle_t *)&srv->trim_timer))
    uv_timer_start(&srv->trim_timer, on_trim, 1000, 0); /* once the crowd has gone */
  if (srv->refs > 0 || !srv->closing)
    return;
  if (srv->pool != NULL)
    srv->pool_ops->destroy(srv->pool);
  np__bufcache_clear(&srv->chunks);
  free(srv->mux_rbuf);
  np__tls_free(srv->tls);
  np__users_free(srv->users);
  np__backoff_free(srv->backoff);
  if (srv->close_cb != NULL)
    srv->close_cb(srv);
  free(srv);
}

void np_server_close(struct np_server *srv, np_server_close_cb cb) {
  if (srv->closing)
    return;
  srv->closing = 1;
  srv->close_cb = cb;
  srv->refs++; /* held until the end of this function */
  while (srv->sessions != NULL)
    np__session_close(srv->sessions, NP_ECLOSED, "server shutting down");
  for (muxconn *mc = srv->muxes; mc != NULL; mc = mc->next)
    np__mux_close(mc->mux);
  if (srv->visit_proxy != NULL)
    np__proxy_close(srv->visit_proxy);
  np__upath_close(srv);
  if (srv->pool != NULL)
    srv->pool_ops->expire(srv->pool, UINT64_MAX, np__visitor_removed, srv);
  if (srv->started) {
    uv_close((uv_handle_t *)&srv->pool_timer, on_handle_closed);
    uv_close((uv_handle_t *)&srv->trim_timer, on_handle_closed);
    if (srv->listener != NULL)
      np__listener_close(srv->listener, on_listener_closed);
    if (srv->tunnel_listener != NULL)
      np__listener_close(srv->tunnel_listener, on_listener_closed);
  }
  np__server_unref(srv);
}

void *np_server_get_data(const struct np_server *srv) {
  return srv->data;
}

void np_server_set_data(struct np_server *srv, void *data) {
  srv->data = data;
}
