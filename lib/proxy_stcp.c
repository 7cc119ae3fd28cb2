/* Private proxies (type = stcp, sudp): a service with no public port, reached only by visitor
 * clients that hold its secret (docs/config.md, "Private services"). The owner's client registers
 * the proxy with a verifier derived from its secret_key (never the key) and, optionally, the
 * client names that may visit (allow_users); the proxy is then known to every worker by its full
 * name, "OWNER.PROXY". A visitor client opens a connection or stream, says VISIT with a proof
 * made from its session key and the verifier, and once answered carries the visitor's bytes (stcp)
 * or framed datagrams (sudp). The server checks the proof where the visitor's session lives, then
 * hands the connection to the owner's worker, where it arrives as any visitor does: a work
 * connection from the owner's client, joined byte for byte. A sudp visitor's frames are the ones a
 * UDP work connection carries, so the server relays them untouched and the owner's client serves
 * them as it serves a UDP flow. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

#include "auth.h"
#include "conn_move.h"

/* A private proxy's own state: its full name in the shared table. */
typedef struct priv {
  char full[NP_MSG_NAME_MAX + 1];
} priv;

static const char *proxy_opt(proxy *px, const char *key) {
  for (size_t i = 0; px->s != NULL && i < px->s->n_opts; i++)
    if (strcmp(px->s->opts[i].name, px->name) == 0 && strcmp(px->s->opts[i].key, key) == 0)
      return px->s->opts[i].value;
  return NULL;
}

static int unhex(const char *hex, unsigned char *out, size_t n) {
  if (hex == NULL || strlen(hex) != 2 * n)
    return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned v = 0;
    for (int k = 0; k < 2; k++) {
      char c = hex[2 * i + k];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= (unsigned)(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= (unsigned)(c - 'a' + 10);
      else
        return -1;
    }
    out[i] = (unsigned char)v;
  }
  return 0;
}

static void say(proxy *px, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(proxy *px, const char *fmt, ...) {
  va_list ap;
  if (px->why == NULL)
    return;
  va_start(ap, fmt);
  vsnprintf(px->why, px->why_len, fmt, ap);
  va_end(ap);
}

static int private_open(proxy *px, const struct sockaddr *addr) {
  struct np_server *srv = px->srv;
  np__private p = {.kind = px->type->kind, .widx = srv->widx};
  const char *users = proxy_opt(px, "allow_users");
  priv *pv;
  int r;

  (void)addr; /* no port: visitors come through VISIT */
  if (px->s == NULL)
    return NP_EUNSUPPORTED;
  p.sid = px->s->id;
  p.direct = px->s->direct_ok;
  if (strchr(px->name, '.') != NULL) { /* OWNER.PROXY splits at its last dot */
    say(px, "a private proxy's name has no dot (the owner's may)");
    return NP_ECONFIG;
  }
  if (unhex(proxy_opt(px, "secret"), p.verifier, sizeof(p.verifier)) != 0) {
    say(px, "a private proxy (type = %s) needs secret_key", px->type->name);
    return NP_ECONFIG;
  }
  if (users != NULL && np__strlcpy(p.allow_users, users, sizeof(p.allow_users)) != 0) {
    say(px, "allow_users is longer than %d bytes", NP_MSG_TEXT_MAX);
    return NP_ECONFIG;
  }
  if ((pv = calloc(1, sizeof(*pv))) == NULL)
    return UV_ENOMEM;
  if ((size_t)snprintf(pv->full, sizeof(pv->full), "%s.%s", px->s->name, px->name) >=
      sizeof(pv->full)) {
    say(px, "the client's name, a dot and the proxy's name make more than %d bytes",
        NP_MSG_NAME_MAX);
    free(pv);
    return NP_ECONFIG;
  }
  if ((r = np__shared_private_add(srv->shared, pv->full, &p)) != 0) {
    if (r == UV_EEXIST)
      say(px, "another client's private proxy is named %s", pv->full);
    free(pv);
    return r == UV_EEXIST ? NP_ENAMETAKEN : r;
  }
  px->port = 0;
  px->impl = pv;
  say(px, "%s", pv->full); /* PROXY_RESP's text: the name visitors give */
  return 0;
}

static void private_close(proxy *px) {
  priv *pv = px->impl;
  np__shared_private_remove(px->srv->shared, pv->full, px->s != NULL ? px->s->id : 0);
  free(pv);
  px->impl = NULL;
  np__proxy_closed(px);
}

static int answer(np_conn *c, const np_codec_ops *codec, const char *name, int status,
                  const char *text) {
  np_msg m = {.type = NP_MSG_VISIT, .status = status};
  np__strlcpy(m.name, name, sizeof(m.name));
  np__strlcpy(m.text, text, sizeof(m.text));
  return np__conn_send_msg(c, codec, &m);
}

/* On the owner's worker: the proxy the visitor proved itself for (its full name, kind and owner's
 * session), if it is still there: a proxy registered again meanwhile is another one. */
static proxy *find_private(struct np_server *srv, const char *full, uint64_t sid, uint8_t kind) {
  session *o = np__session_ids_find(srv, sid);

  for (proxy *px = o != NULL ? o->proxies : NULL; px != NULL; px = px->next)
    if (px->type->kind == kind && (kind == NP_PROXY_STCP || kind == NP_PROXY_SUDP) &&
        px->impl != NULL && strcmp(((priv *)px->impl)->full, full) == 0)
      return px;
  return NULL;
}

/* What travels with a visitor handed to the owner's worker: the proxy's full name and NUL, then
 * its owner's session and kind as proven. */
typedef struct handed {
  char full[NP_MSG_NAME_MAX + 1];
  uint64_t sid;
  uint8_t kind;
} handed;

/* The visitor's connection c, proven, on the owner's worker: answered, then a visitor of its
 * proxy. from: the visitor client's address. */
static void arrive(struct np_server *srv, np_conn *c, const handed *h,
                   const struct sockaddr *from) {
  const char *full = h->full;
  proxy *px = find_private(srv, full, h->sid, h->kind);

  srv->stats.visitors_total++;
  if (px == NULL) { /* gone while the visitor was handed here */
    answer(c, srv->codec, full, NP_ENOPROXY, "the private proxy is gone");
    np__conn_close(c, NULL);
    return;
  }
  if (!np__proxy_admits(px, from)) {
    answer(c, srv->codec, full, NP_EDENIED, "your address is not in the proxy's allow_ips");
    np__conn_close(c, NULL);
    return;
  }
  if (answer(c, srv->codec, full, 0, "") != 0 || np__visitor_arrive(px, c, from, NULL) != 0) {
    srv->stats.visitors_refused++;
    np__conn_close(c, NULL);
  }
}

/* A visitor handed from the worker that checked it: pre is a handed. */
static void private_adopt(struct np_server *srv, np_conn *c, const char *pre, size_t len,
                          unsigned hops) {
  struct sockaddr_storage ss;
  handed h;

  (void)hops;
  if (len != sizeof(h)) {
    np__conn_abort(c, NULL);
    return;
  }
  memcpy(&h, pre, sizeof(h));
  h.full[NP_MSG_NAME_MAX] = '\0';
  arrive(srv, c, &h, np__conn_peer_addr(c, &ss) == 0 ? (struct sockaddr *)&ss : NULL);
}

static int refuse(session *s, const np_msg *m, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(session *s, const np_msg *m, int status, const char *fmt, ...) {
  np_msg resp = {.type = NP_MSG_VISIT, .status = status};
  va_list ap;

  strcpy(resp.name, m->name);
  va_start(ap, fmt);
  vsnprintf(resp.text, sizeof(resp.text), fmt, ap);
  va_end(ap);
  s->srv->stats.private_refused++;
  np__log(&s->srv->log, NP_LOG_INFO, "%s: visit of %s refused: %s", s->peer, m->name, resp.text);
  np__chan_send(s->ch, &resp);
  np__session_close(s, status, resp.text);
  return 0;
}

/* VISIT on the worker of the visitor's session (server.c moved it here). The order of the checks
 * keeps what they say from helping a guesser: an address backed off hears nothing; then only the
 * holder of the session's key learns whether a proxy exists; a wrong secret is a failed login. All
 * of it is charged to the address the VISIT came from, never to the session's it names. */
static int private_visit(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  unsigned char want[NP_MSG_KEY_LEN];
  char why[NP_MSG_NAME_MAX + 64];
  const char *rest;
  size_t rest_len;
  np__private p;
  session *o;
  np_conn *c;
  np__addr peer;
  np__moved mv;
  handed h;
  int r;

  if ((r = np__private_backoff(s, why, sizeof(why))) != 0)
    return refuse(s, m, r, "%s", why);
  o = np__session_ids_find(srv, m->id);
  if (o == NULL || o->state != S_READY) {
    srv->stats.work_unknown++;
    return refuse(s, m, NP_EAUTH, "no logged-in session %llu here", (unsigned long long)m->id);
  }
  if (np__auth_visit_session_mac(o->key, m->id, m->id2, m->kind, m->name, want) != 0 ||
      !np__auth_equal(want, m->nonce)) {
    snprintf(why, sizeof(why), "VISIT not proven for session %llu", (unsigned long long)m->id);
    np__login_failed(srv, &s->addr, s->peer, NP_EAUTH, why, NULL);
    return refuse(s, m, NP_EAUTH, "not proven for the session it names");
  }
  if (!np__serial_fresh(&o->visit_top, &o->visit_seen, m->id2)) {
    srv->stats.work_unknown++;
    return refuse(s, m, NP_EAUTH, "a VISIT serial used before (a replay?)");
  }
  if ((r = np__private_admit(s, m, 0, o->key, m->id, o->name, &p, why, sizeof(why))) != 0)
    return refuse(s, m, r, "%s", why);
  c = np__chan_detach(s->ch, &rest, &rest_len);
  np__session_detached(s);
  if (rest_len > 0) { /* the visitor's bytes must wait for the answer */
    np__conn_abort(c, NULL);
    return 0;
  }
  srv->stats.private_visits++;
  np__log(&srv->log, NP_LOG_DEBUG, "client %s visits %s", o->name, m->name);
  memset(&h, 0, sizeof(h));
  strcpy(h.full, m->name);
  h.sid = p.sid;
  h.kind = m->kind;
  if (p.widx == srv->widx) {
    arrive(srv, c, &h, (struct sockaddr *)&o->addr);
    return 0;
  }
  /* The owner is on another worker: the socket goes there when it can (a plain or TLS connection),
   * else (a stream of a mux) a socketpair bridges it. */
  np__moved_init(&mv);
  if (np__conn_move_out(c, &mv) == 0) {
    np__conn_close(c, NULL);
    mv.peer = o->addr;
    if ((mv.pre = malloc(sizeof(h))) != NULL) {
      memcpy(mv.pre, &h, sizeof(h));
      mv.pre_len = sizeof(h);
      if (srv->group_visitor(srv, p.widx, NP_MOVE_VISIT, 0, &mv) == 0) {
        srv->stats.conns_moved++;
        return 0;
      }
    }
    np__moved_free(&mv);
    return 0;
  }
  memset(&peer, 0, sizeof(peer));
  np__addr_copy(&peer, (struct sockaddr *)&o->addr);
  if ((r = np__server_bridge(srv, c, &peer, (const char *)&h, sizeof(h), p.widx, NP_MOVE_VISIT,
                             0)) != 0) {
    np__log(&srv->log, NP_LOG_WARN, "visit of %s: cannot hand it to worker %u: %s", m->name, p.widx,
            np_strerror(r));
    np__conn_abort(c, NULL);
  }
  return 0;
}

static int private_start(struct np_server *srv, const struct sockaddr *control) {
  (void)control;
  srv->visit = private_visit;
  srv->direct = np__server_direct;
  return 0;
}

const np__proxy_type np__proxy_stcp = {
    .name = "stcp",
    .kind = NP_PROXY_STCP,
    .named = 1,
    .server_start = private_start,
    .open = private_open,
    .close = private_close,
    .join = np__tcp_join,
    .drop = np__tcp_drop,
    .adopt = private_adopt,
};

/* The same for UDP: the frames a UDP work connection carries pass through untouched. */
const np__proxy_type np__proxy_sudp = {
    .name = "sudp",
    .kind = NP_PROXY_SUDP,
    .named = 1,
    .server_start = private_start,
    .open = private_open,
    .close = private_close,
    .join = np__tcp_join,
    .drop = np__tcp_drop,
};
