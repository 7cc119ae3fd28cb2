/* Direct paths between two clients (docs/protocol.md, "Direct paths"): the server only introduces.
 * A visitor client that holds a private proxy's secret sends DIRECT on its control stream with its
 * candidate addresses; once its proof passes the checks VISIT's passes (back-off, the secret,
 * allow_users), the server picks a fresh path key and passes the candidates, the key and a token
 * to the owner's session (DIRECT_INTRO), wherever that session lives. The owner answers with its
 * own candidates and the token, and the server passes them and the key back to the visitor. The
 * two clients then punch and talk to each other; nothing of that passes here. The token binds the
 * answer to the introduction, so the server keeps nothing per introduction, and an owner can only
 * answer what it was asked. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "proxy.h"

#include "auth.h"

#include <openssl/crypto.h>

#define DIRECT_PER_SECOND 8 /* DIRECT and DIRECT_INTRO a session may send; more are dropped */

int np__session_deliver(struct np_server *srv, uint64_t sid, const np_msg *m) {
  session *s = np__session_ids_find(srv, sid);

  if (s == NULL || s->state != S_READY || s->closing)
    return UV_ENOENT;
  np__session_send(s, m);
  return 0;
}

/* To session sid of worker widx, here or through that worker's inbox. */
static int deliver(struct np_server *srv, unsigned widx, uint64_t sid, const np_msg *m) {
  if (widx == srv->widx)
    return np__session_deliver(srv, sid, m);
  return srv->group_msg != NULL ? srv->group_msg(srv, widx, sid, m) : UV_EINVAL;
}

/* A session's DIRECT and DIRECT_INTRO cost it no connection, as a VISIT does, and each makes the
 * server write to another session and the owner punch: so a few a second, and the rest dropped
 * unheard (counted as refused, logged once a second at most). */
static int too_many(session *s) {
  uint64_t second = now_ms(s->srv) / 1000;

  if (second != s->direct_second) {
    if (s->direct_count > DIRECT_PER_SECOND)
      np__log(&s->srv->log, NP_LOG_WARN,
              "client %s: %u direct-path messages in a second, %u of them dropped", s->name,
              s->direct_count, s->direct_count - DIRECT_PER_SECOND);
    s->direct_second = second;
    s->direct_count = 0;
  }
  if (++s->direct_count <= DIRECT_PER_SECOND)
    return 0;
  s->srv->stats.direct_refused++;
  return 1;
}

/* The visitor hears no, on its control stream: the session itself stays. */
static int refuse(session *s, const np_msg *m, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(session *s, const np_msg *m, int status, const char *fmt, ...) {
  np_msg resp = {.type = NP_MSG_DIRECT, .id = m->id, .status = status};
  va_list ap;

  np__strlcpy(resp.name, m->name, sizeof(resp.name));
  va_start(ap, fmt);
  vsnprintf(resp.text, sizeof(resp.text), fmt, ap);
  va_end(ap);
  s->srv->stats.direct_refused++;
  np__log(&s->srv->log, NP_LOG_INFO, "client %s: direct path to %s refused: %s", s->name, m->name,
          resp.text);
  return np__session_send(s, &resp);
}

/* DIRECT from a visitor client s. Checked in VISIT's order (proxy_stcp.c), charged to s's address:
 * a backed-off address hears nothing more; a wrong secret is a failed login. */
static int offer(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  np_msg intro = {.type = NP_MSG_DIRECT_INTRO, .id = m->id, .id2 = s->id};
  const char *dot = strrchr(m->name, '.');
  char why[NP_MSG_NAME_MAX + 64];
  np__private p;
  int r;

  if (too_many(s))
    return 0;
  if ((r = np__private_backoff(s, why, sizeof(why))) != 0)
    return refuse(s, m, r, "%s", why);
  if (!np__serial_fresh(&s->visit_top, &s->visit_seen, m->id2))
    return refuse(s, m, NP_EAUTH, "a serial used before (a replay?)");
  if (m->kind != NP_PROXY_STCP || dot == NULL)
    return refuse(s, m, NP_ENOPROXY, "no private proxy of type stcp named %s", m->name);
  if ((r = np__private_admit(s, m, 1, s->key, s->id, s->name, &p, why, sizeof(why))) != 0)
    return refuse(s, m, r, "%s", why);
  if (m->id == 0)
    return refuse(s, m, NP_EPROTO, "a path id of 0");
  if (!p.direct) /* it would take DIRECT_INTRO for a protocol error and lose its session */
    return refuse(s, m, NP_EUNSUPPORTED,
                  "the owner's client is older than direct paths (through the server instead)");
  np__strlcpy(intro.name, dot + 1, sizeof(intro.name));
  np__strlcpy(intro.addr, s->name, sizeof(intro.addr));
  np__strlcpy(intro.text, m->text, sizeof(intro.text));
  if ((r = np__auth_random(intro.nonce, sizeof(intro.nonce))) != 0 ||
      (r = np__auth_direct_token(srv->shared->direct_key, intro.nonce, intro.id, s->id, p.sid,
                                 s->name, intro.mac)) != 0 ||
      (r = deliver(srv, p.widx, p.sid, &intro)) != 0) {
    OPENSSL_cleanse(&intro, sizeof(intro));
    return refuse(s, m, NP_ECLOSED, "the owner's client cannot be reached now (%s)",
                  r == UV_ENOENT ? "it is gone" : np_strerror(r));
  }
  OPENSSL_cleanse(&intro, sizeof(intro));
  srv->stats.direct_introduced++;
  np__log(&srv->log, NP_LOG_DEBUG, "client %s asks for a direct path to %s (path %016llx)", s->name,
          m->name, (unsigned long long)m->id);
  return 0;
}

/* DIRECT_INTRO back from the owner o: its answer goes to the visitor with the key, if the token
 * says this server introduced exactly this (path, visitor, owner, key). Anything else is dropped:
 * an owner cannot make the server say things to sessions it was not introduced to. */
static int answer(session *o, const np_msg *m) {
  struct np_server *srv = o->srv;
  unsigned char want[NP_MSG_KEY_LEN];
  np_msg resp = {.type = NP_MSG_DIRECT, .id = m->id, .status = m->status};
  unsigned widx;
  uint64_t sid;

  if (too_many(o))
    return 0;
  if (np__auth_direct_token(srv->shared->direct_key, m->nonce, m->id, m->id2, o->id, m->addr,
                            want) != 0 ||
      !np__auth_equal(want, m->mac)) {
    if (o->direct_said != o->direct_second) { /* once a second at most */
      o->direct_said = o->direct_second;
      np__log(&srv->log, NP_LOG_WARN,
              "client %s: an answer to a direct path it was not asked for (dropped)", o->name);
    }
    return 0;
  }
  if (!np__shared_name_find(srv->shared, m->addr, &widx, &sid) || sid != m->id2)
    return 0; /* the visitor went meanwhile */
  if (m->status == 0) {
    memcpy(resp.nonce, m->nonce, sizeof(resp.nonce));
    np__strlcpy(resp.text, m->text, sizeof(resp.text));
  } else { /* the visitor's log says who said no */
    snprintf(resp.text, sizeof(resp.text), "the owner's client says: %s", m->text);
  }
  deliver(srv, widx, sid, &resp);
  OPENSSL_cleanse(&resp, sizeof(resp));
  return 0;
}

int np__server_direct(session *s, const np_msg *m) {
  return m->type == NP_MSG_DIRECT ? offer(s, m) : answer(s, m);
}
