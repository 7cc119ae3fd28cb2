/* Logins: HELLO and LOGIN (docs/protocol.md), the users file's tokens, the failed-login back-off,
 * and one live client per name. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "server.h"

#include "auth.h"

int np__login_hello(session *s, const np_msg *m) {
  /* The features this server takes beyond version 1's messages (docs/protocol.md, "Versions"). */
  np_msg resp = {.type = NP_MSG_HELLO, .version = PROTO_VERSION, .status = NP_HELLO_PROXY_CLOSE};
  if (s->srv->visit != NULL) /* the private proxy types are registered */
    resp.status |= NP_HELLO_PRIVATE;
  if (s->srv->direct != NULL && s->srv->upath != NULL) /* STUN answers on the datagram port */
    resp.status |= NP_HELLO_DIRECT;

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
  resp.id = s->srv->shared->instance;
  s->state = S_AUTH;
  return np__session_send(s, &resp);
}

/* The datagram path's keys for a session that just logged in: from the TLS session of its
 * connection, or (insecure = true) from the session key, which only the two ends know if the token
 * is secret. */
static void datagram_keys(session *s, np_conn *c) {
  unsigned char master[NP_SEAL_MASTER];
  int r = np__datagram_master(c, s->srv->tls != NULL, s->key, master);

  if (r == 0 && np__seal_init(&s->seal, master, s->id, 1) == 0)
    s->seal_ok = 1;
  OPENSSL_cleanse(master, sizeof(master));
}

/* The live session logged in as name, or NULL. Its loop's list is where a takeover finds it; the
 * registry of names (srv->shared) must say the same, since it is what other loops will go by. */
static session *find_ready(struct np_server *srv, const char *name) {
  uint64_t sid = 0;
  int known = np__shared_name_find(srv->shared, name, NULL, &sid);
  session *o;

  for (o = srv->sessions; o != NULL; o = o->next)
    if (o->state == S_READY && strcmp(o->name, name) == 0)
      break;
  assert((known && (sid & (srv->group_move != NULL ? 0xff : 0)) != srv->widx) ||
         (known == (o != NULL) && (o == NULL || o->id == sid)));
  (void)known;
  return o;
}

/* The token name must log in with: its users file entry's, else the shared one; NULL when the name
 * may not log in at all (a users file without it, and no shared token). */
const char *np__login_token(const char *shared, const np__users *users, const char *name,
                            const np__user **user) {
  const np__user *u = np__users_find(users, name);

  if (user != NULL)
    *user = u;
  if (u != NULL)
    return u->token;
  if (users != NULL && shared[0] == '\0')
    return NULL;
  return shared;
}

/* A failed login, or garbage where one belonged: counted; charged to the address (the back-off)
 * when it is something only a guesser or a hostile peer produces. Silence, resets and refusals that
 * an honest client meets (limits, the back-off itself) are not. */
void np__login_failed(struct np_server *srv, const struct sockaddr_storage *addr, const char *peer,
                      int err, const char *why, const char *name) {
  unsigned fails = 0;
  uint64_t wait = 0;

  srv->stats.logins_failed++;
  if (err == NP_EAUTH)
    srv->stats.logins_bad_token++;
  np__shared_fails_add(srv->shared, now_ms(srv), (const struct sockaddr *)addr, name, why);
  if (err == NP_EAUTH || err == NP_EPROTO || err == NP_EVERSION || err == NP_ETOOBIG ||
      err == NP_ETLS || err == NP_ESECRET) /* a wrong secret_key: a guess at a private proxy */
    wait = np__shared_backoff_fail(srv->shared, (const struct sockaddr *)addr, now_ms(srv), &fails);
  if (wait > 0)
    np__log(&srv->log, NP_LOG_WARN,
            "%s: %s; %u failed %s from this address, its next login is refused unheard for "
            "%llums",
            peer, why, fails, np__plural(fails, "login", "logins"), (unsigned long long)wait);
}

/* Whether a login (instance id resume, --takeover or not) replaces the live session old under
 * its name: why it goes, or NULL when it stays. The same client process coming back (its instance
 * id: a reconnect after its connection died unnoticed, or after it never got our answer), a
 * session that has missed its heartbeats (it left a ping of ours unanswered for half an interval:
 * whatever the client's own interval, a live one answers within a round trip), or a login told to
 * (--takeover) replaces the old session at once; another live client under the same name (two
 * hosts with one host name) is told so instead of silently taking the ports over. */
static const char *old_goes(session *old, uint64_t resume, int takeover) {
  struct np_server *srv = old->srv;
  uint64_t now = now_ms(srv), grace = srv->cfg.heartbeat_interval_ms / 2;
  if (resume != 0 && resume == old->resume)
    return "the same client coming back";
  if (old->ping_out > old->last_rx && now - old->ping_out >= (grace > 1000 ? grace : 1000))
    return "it missed its heartbeats";
  return takeover ? "--takeover" : NULL;
}

/* Ask the old one now: should it be gone, a try after the grace finds it stale. */
static void ask_old(session *old) {
  if (old->ping_out <= old->last_rx) {
    np_msg ping = {.type = NP_MSG_PING, .id = ++old->ping_seq};
    if (np__session_send(old, &ping) == 0)
      old->ping_out = now_ms(old->srv);
  }
}

static void close_old(session *old, const char *why, const char *peer) {
  np__log(&old->srv->log, NP_LOG_INFO,
          "client %s logged in again from %s; closing its old session (%s)", old->name, peer, why);
  if (strcmp(why, "--takeover") == 0) {
    /* A live client replaced on purpose: told why, and as final (NP_ENAMEINUSE ends np-client),
     * or two clients with --takeover would replace each other for ever. */
    char text[NP_MSG_TEXT_MAX + 1];
    snprintf(text, sizeof(text), "replaced by a client logged in as '%s' with --takeover from %s",
             old->name, peer);
    np__session_close(old, NP_ENAMEINUSE, text);
  } else {
    np__session_close(old, NP_ECLOSED, "replaced by a new login");
  }
}

/* Refuse s's login: a live client from where already uses name. */
static int name_in_use(session *s, const char *name, const char *where) {
  struct np_server *srv = s->srv;
  np_msg resp = {.type = NP_MSG_LOGIN_RESP, .status = NP_ENAMEINUSE};
  np__log(&srv->log, NP_LOG_WARN,
          "%s: login as '%s' refused: a live client from %s already uses that name", s->peer, name,
          where);
  srv->stats.logins_refused++;
  snprintf(resp.text, sizeof(resp.text),
           "client name '%s' is in use by a live client from %s: give each client its own "
           "name with --name (or --takeover to replace that one)",
           name, where);
  np__chan_send(s->ch, &resp);
  return NP_ENAMEINUSE;
}

/* In a group, the name is held by a session on another worker: that worker decides, as above, and
 * the client tries again in a moment (told to wait, as by the back-off); by then the old session
 * is gone, or the refusal is in the registry and the client is told the name is in use. */
#define CLAIM_RETRY_MS  250
#define CLAIM_DENIED_MS 5000
static int claim_elsewhere(session *s, const np_msg *m, unsigned widx, uint64_t sid) {
  struct np_server *srv = s->srv;
  np_msg resp = {.type = NP_MSG_LOGIN_RESP, .status = NP_EBACKOFF, .id = CLAIM_RETRY_MS};
  np__claim c = {.sid = sid, .resume = m->id, .takeover = (m->status & NP_LOGIN_TAKEOVER) != 0};
  char where[64];

  /* Refused to this client just now (it retries by itself after the claim): told, as at home.
   * --takeover is never refused. */
  if (!c.takeover && np__shared_name_denied(srv->shared, m->name, m->id, now_ms(srv),
                                            CLAIM_DENIED_MS, where, sizeof(where)))
    return name_in_use(s, m->name, where);
  np__strlcpy(c.name, m->name, sizeof(c.name));
  np__strlcpy(c.peer, s->peer, sizeof(c.peer));
  if (srv->group_claim(srv, widx, &c) != 0)
    resp.id = 1000; /* its worker is busy or going: later */
  np__log(&srv->log, NP_LOG_INFO,
          "%s: login as '%s': its old session is on worker %u, asked to let the name go", s->peer,
          m->name, widx);
  snprintf(resp.text, sizeof(resp.text),
           "client name '%s' is held by an older session on another worker of this server; "
           "retrying",
           m->name);
  np__chan_send(s->ch, &resp);
  return NP_EBACKOFF;
}

void np__login_claim(struct np_server *srv, const np__claim *c) {
  const char *why;
  session *old;
  char where[64];

  for (old = srv->sessions; old != NULL; old = old->next)
    if (old->state == S_READY && old->id == c->sid && strcmp(old->name, c->name) == 0)
      break;
  if (old == NULL || old->closing)
    return; /* gone already: the client's next try finds the name free */
  if ((why = old_goes(old, c->resume, c->takeover)) != NULL) {
    close_old(old, why, c->peer);
    return;
  }
  np__addr_str((const struct sockaddr *)&old->addr, where, sizeof(where));
  np__shared_name_deny(srv->shared, c->name, c->sid, c->resume, now_ms(srv), where);
  ask_old(old);
}

int np__login(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  np_msg resp = {.type = NP_MSG_LOGIN_RESP};
  unsigned char want[NP_MSG_KEY_LEN];
  const np__user *user = NULL;
  const char *token;
  uint64_t wait;
  session *old;
  int r;

  wait = np__shared_backoff_wait(srv->shared, (struct sockaddr *)&s->addr, now_ms(srv));
  if (wait > 0) {
    /* Not even checked: a guess made now tells the guesser nothing. */
    srv->stats.logins_throttled++;
    np__shared_fails_add(srv->shared, now_ms(srv), (struct sockaddr *)&s->addr, m->name,
                         "refused unheard: too many failed logins from this address");
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
  if (!np__name_ok(m->name)) {
    np__log(&srv->log, NP_LOG_WARN, "%s: login refused: the client name is not printable UTF-8",
            s->peer);
    np__login_failed(srv, &s->addr, s->peer, NP_EPROTO, "the client name is not printable UTF-8",
                     m->name);
    resp.status = NP_ECONFIG; /* the client gives up: its name will not change */
    snprintf(resp.text, sizeof(resp.text), "a client name is printable UTF-8");
    np__chan_send(s->ch, &resp);
    return NP_EAUTH; /* counted above */
  }
  token = np__login_token(srv->cfg.token, srv->users, m->name, &user);
  if (m->version != PROTO_VERSION || m->name[0] == '\0' || token == NULL ||
      np__auth_login_mac(token, s->snonce, m->nonce, m->name, want) != 0 ||
      !np__auth_equal(want, m->mac)) {
    np__log(&srv->log, NP_LOG_WARN, "%s: login as '%s' refused: %s", s->peer, m->name,
            token == NULL ? "no such client in the users file" : "wrong token");
    np__login_failed(srv, &s->addr, s->peer, NP_EAUTH,
                     token == NULL ? "no such client in the users file" : "wrong token", m->name);
    resp.status = NP_EAUTH;
    /* The same words whether the name exists or not. */
    snprintf(resp.text, sizeof(resp.text), "wrong token for client '%s'", m->name);
    np__chan_send(s->ch, &resp);
    return NP_EAUTH;
  }
  {
    unsigned widx;
    uint64_t sid;
    if (srv->group_claim != NULL && np__shared_name_find(srv->shared, m->name, &widx, &sid) &&
        widx != srv->widx)
      return claim_elsewhere(s, m, widx, sid);
  }
  old = find_ready(srv, m->name);
  /* A place among max_clients, taken now and given back if the login goes no further. One that
   * replaces a session under its name does not count against the limit: the old one's goes. */
  if (!np__shared_take(&srv->shared->clients, old != NULL ? SIZE_MAX : srv->cfg.max_clients)) {
    srv->stats.logins_refused++;
    resp.status = NP_ELIMIT;
    snprintf(resp.text, sizeof(resp.text), "the server takes at most %zu %s", srv->cfg.max_clients,
             np__plural(srv->cfg.max_clients, "client", "clients"));
    np__chan_send(s->ch, &resp);
    return NP_ELIMIT;
  }
  if (old != NULL) {
    const char *why = old_goes(old, m->id, m->status & NP_LOGIN_TAKEOVER);
    if (why == NULL) {
      char where[64];
      np__addr_str((const struct sockaddr *)&old->addr, where, sizeof(where));
      ask_old(old);
      np__shared_give(&srv->shared->clients);
      return name_in_use(s, m->name, where);
    }
    close_old(old, why, s->peer);
  }
  np__auth_session_key(token, s->snonce, m->nonce, m->name, s->key);
  np__strlcpy(s->name, m->name, sizeof(s->name));
  s->user = user;
  /* In a group, a session id says which worker holds the session: its low byte. */
  s->id =
      srv->group_move != NULL ? (++srv->next_session_id << 8) | srv->widx : ++srv->next_session_id;
  if ((r = np__shared_name_take(srv->shared, s->name, srv->widx, s->id)) != 0) {
    np__shared_give(&srv->shared->clients);
    if (r != UV_EEXIST)
      return r;
    /* Another worker took the name since it was looked up (a login there at the same moment): the
     * client tries again and meets it by the claim above. */
    resp.status = NP_EBACKOFF;
    resp.id = CLAIM_RETRY_MS;
    snprintf(resp.text, sizeof(resp.text),
             "client name '%s' was just taken on another worker; "
             "retrying",
             s->name);
    s->name[0] = '\0';
    np__chan_send(s->ch, &resp);
    return NP_EBACKOFF;
  }
  s->counted = 1;
  if ((r = np__session_ids_add(srv, s)) != 0)
    return r;
  np__shared_backoff_clear(srv->shared, (struct sockaddr *)&s->addr, now_ms(srv));
  s->state = S_READY;
  srv->stats.clients++;
  srv->stats.logins_ok++;
  resp.id = s->id;
  s->resume = m->id;
  s->direct_ok = (m->status & NP_LOGIN_DIRECT) != 0;
  np__transport_server_logged_in(srv->transport, np__chan_conn(s->ch));
  datagram_keys(s, np__transport_server_conn(srv->transport, np__chan_conn(s->ch)));
  {
    char on[32] = "";
    if (srv->group_move != NULL) /* several workers: which one holds it */
      snprintf(on, sizeof(on), " on worker %u", srv->widx);
    np__log(&srv->log, NP_LOG_INFO, "client %s logged in from %s%s%s", s->name, s->peer,
            user != NULL ? " (users file)" : "", on);
  }
  /* The timer was set for the login deadline; from now on it keeps the heartbeat. */
  uv_timer_start(&s->timer, np__session_on_timer, srv->cfg.heartbeat_interval_ms, 0);
  return np__session_send(s, &resp);
}
