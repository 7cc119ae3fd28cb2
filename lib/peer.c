/* Forwarding to the other servers of a cluster (peer.h). A visitor of a route this server does not
 * hold, which the route table (route_store.c) says another server does, goes there: over one
 * multiplexed connection per such server, made by the client's own transport (TLS pinned to this
 * server's identity, which the servers of a cluster share, or trusting the cluster's CA, then
 * yamux), on which this server logs
 * in with PEER (cluster_token). Each visitor gets a stream: FORWARD says which route and who the
 * visitor is; once the other server answers, the bytes read so far go first and the relay takes
 * over. Runs on each worker's loop for its own visitors; the route table is the one shared part. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "peer.h"

#include "auth.h"
#include "conn_move.h"
#include "proxy.h"
#include "route_store.h"
#include "transport.h"

#define WAITING_MAX 256 /* visitors that wait for one link to come up */
#define RETRY_MIN_MS                                                                               \
  250 /* after a link failed, visitors fail at once until it may be dialed again */
#define RETRY_MAX_MS      10000 /* (doubling up to this) */
#define KEEPALIVE_S       15
#define TICK_MS           250
#define SHADOW_SYNC_TICKS 4 /* the ports other servers hold: shadowed within a second */

typedef struct plink plink;
typedef struct fwd fwd;

typedef struct np__peers {
  struct np_server *srv; /* each link and visitor holds a reference of it */
  int stopped;           /* the server closes: nothing new, nothing logged */
  int busy;              /* np__peers_stop runs: ps stays */
  uv_timer_t timer;      /* deadlines of logins, answers and heartbeats (TICK_MS) */
  int timer_closed;
  unsigned ticks;
  np__shadows *shadows; /* worker 0's, with a route store; NULL once closed */
  int shadows_open;
  const np_codec_ops *codec;
  size_t max_frame;
  np__tls *tls; /* pinned to this server's own identity, or cluster_ca; NULL: in clear */
  char token[sizeof(((struct np_config *)0)->cluster_token)];
  char advertise[NP_HOSTPORT_MAX];
  uint64_t dial_timeout_ms;
  plink *links;
  fwd *fwds; /* every forwarded visitor not yet gone */
  /* A visitor not forwarded is logged at info level once a second at most (a UDP visitor makes a
   * try per datagram while its owner is away): the others at debug level, counted here. */
  uint64_t failed_said_at;
  unsigned failed_unsaid;
} np__peers;

enum lstate { L_IDLE, L_DIALING, L_HELLO, L_LOGIN, L_UP };

struct plink {
  np__peers *ps;
  char owner[NP_HOSTPORT_MAX]; /* the other server's cluster_advertise */
  np__transport *t;
  np__dialer *dialer;
  np__chan *ch; /* the control stream */
  enum lstate state;
  uint64_t since;   /* the state's start (loop time): a login must end within dial_timeout_ms */
  uint64_t last_rx; /* L_UP: its last message; the other server pings when it has nothing to say */
  uint64_t retry_at, backoff_ms;
  unsigned said : 1; /* its failure was logged: the next ones only at debug, until it is up */
  int refs;          /* the list's, its chan's, each of its muxes' */
  size_t n_waiting;
  plink *prev, *next;
};

struct fwd {
  np__peers *ps;
  plink *l;    /* until the answer */
  np_conn *vc; /* the visitor's, until the join has it */
  np__dialer *dialer;
  np__chan *ch; /* the stream, until the answer */
  struct np_join *j;
  np_msg msg; /* FORWARD */
  char *pre;  /* read from the visitor so far: goes first */
  size_t pre_len;
  unsigned waiting : 1; /* for its link to come up */
  unsigned failed : 1;  /* fwd_fail ran: its visitor's conn closes */
  uint64_t deadline;    /* for the answer (loop time) */
  fwd *prev, *next;
};

static void peers_maybe_free(np__peers *ps) {
  if (!ps->stopped || ps->busy > 0 || !ps->timer_closed || ps->shadows_open || ps->links != NULL ||
      ps->fwds != NULL)
    return;
  np__tls_free(ps->tls);
  OPENSSL_cleanse(ps->token, sizeof(ps->token));
  free(ps);
}

/* ---- visitors ------------------------------------------------------------------------------ */

static void fwd_free(fwd *f) {
  np__peers *ps = f->ps;
  struct np_server *srv = ps->srv;
  NP_DLIST_UNLINK(ps->fwds, f, prev, next);
  free(f->pre);
  free(f);
  peers_maybe_free(ps);
  np__server_unref(srv);
}

static void on_vc_closed(np_conn *c) {
  fwd_free(c->data);
}

/* f goes without a join: the visitor hears a 502 when it asked over HTTP, else its connection is
 * reset. */
static void fwd_fail(fwd *f, int err, const char *why) {
  static const char bad_gateway[] =
      "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 63\r\n"
      "Connection: close\r\n\r\nThe server that holds this host could not be reached from here.\n";
  np__peers *ps = f->ps;

  if (f->failed)
    return;
  f->failed = 1;
  ps->srv->stats.peer_forward_failed++;
  if (!ps->stopped) {
    const np__proxy_type *type = ps->srv->types[f->msg.kind];
    uint64_t now = uv_now(ps->srv->loop);
    int say = ps->failed_said_at == 0 || now - ps->failed_said_at >= 1000;
    char more[64] = "";
    if (say && ps->failed_unsaid > 0)
      snprintf(more, sizeof(more), " (and %u more since the last such line)", ps->failed_unsaid);
    np__log(&ps->srv->log, say ? NP_LOG_INFO : NP_LOG_DEBUG,
            "%s visitor %s not forwarded to %s: %s%s", type != NULL ? type->name : "?", f->msg.name,
            f->l != NULL ? f->l->owner : "?", why != NULL ? why : np_strerror(err), more);
    if (say) {
      ps->failed_said_at = now;
      ps->failed_unsaid = 0;
    } else {
      ps->failed_unsaid++;
    }
  }
  if (f->waiting)
    f->l->n_waiting--;
  f->waiting = 0;
  f->l = NULL;
  if (f->dialer != NULL)
    np__dial_cancel(f->dialer);
  f->dialer = NULL;
  if (f->ch != NULL)
    np__chan_close(f->ch, NULL);
  f->ch = NULL;
  f->vc->data = f;
  if (f->msg.kind == NP_PROXY_HTTP) {
    np__conn_try_write(f->vc, bad_gateway, sizeof(bad_gateway) - 1);
    np__conn_close(f->vc, on_vc_closed);
  } else {
    np__conn_abort(f->vc, on_vc_closed);
  }
}

static void on_joined_end(struct np_join *j, int status, const np_join_stats *stats) {
  fwd *f = np_join_get_data(j);
  (void)status;
  (void)stats;
  f->ps->srv->peer_joins--;
  fwd_free(f);
}

static void on_written(np_conn_write *req, int status) {
  (void)status;
  free(req->data);
  free(req);
}

/* Write a copy of buf to c, ahead of anything written after. */
static int write_copy(np_conn *c, const char *buf, size_t len) {
  np_conn_write *req;
  uv_buf_t b;
  int r;

  if (len == 0)
    return 0;
  if ((req = calloc(1, sizeof(*req))) == NULL || (req->data = malloc(len)) == NULL) {
    free(req);
    return UV_ENOMEM;
  }
  memcpy(req->data, buf, len);
  b = uv_buf_init(req->data, (unsigned)len);
  if ((r = np__conn_write(c, req, &b, 1, on_written)) != 0) {
    free(req->data);
    free(req);
  }
  return r;
}

static void on_fwd_msg(np__chan *ch, const np_msg *m) {
  fwd *f = np__chan_data(ch);
  np__peers *ps = f->ps;
  const char *rest;
  size_t rest_len;
  np_conn *stream;
  char why[NP_MSG_TEXT_MAX + 32];
  int r;

  if (m->type != NP_MSG_FORWARD) {
    fwd_fail(f, NP_EPROTO, "the other server answered with another message");
    return;
  }
  if (m->status != 0) {
    snprintf(why, sizeof(why), "refused there: %s", m->text);
    fwd_fail(f, m->status, why);
    return;
  }
  stream = np__chan_detach(ch, &rest, &rest_len);
  f->ch = NULL;
  f->l = NULL;
  /* The service's first bytes may have come with the answer: they go to the visitor first, and
   * the bytes read from the visitor before the route was known go to the stream first. */
  if ((r = write_copy(f->vc, rest, rest_len)) != 0 ||
      (r = write_copy(stream, f->pre, f->pre_len)) != 0 ||
      (r = np__join(f->vc, stream, NULL, 0, NULL, on_joined_end, f, &f->j)) != 0) {
    np__conn_abort(stream, NULL);
    fwd_fail(f, r, NULL);
    return;
  }
  f->vc = NULL;
  free(f->pre);
  f->pre = NULL;
  ps->srv->stats.peer_forwarded++;
  ps->srv->peer_joins++; /* a drain waits for it as for a visitor joined here */
}

static void on_fwd_error(np__chan *ch, int err) {
  fwd_fail(np__chan_data(ch), err, NULL);
}

static void on_stream(void *data, int status, np_conn *c) {
  fwd *f = data;
  np__peers *ps = f->ps;
  int r = status;

  f->dialer = NULL;
  /* FORWARD is written on the conn itself, not through the chan: the chan only reads the answer,
   * and may be detached from inside its callback while a write of its own would still be queued
   * behind other streams' data. */
  if (r == 0 && (r = np__conn_send_msg(c, ps->codec, &f->msg)) != 0)
    np__conn_abort(c, NULL);
  else if (r == 0 && (r = np__chan_new(c, ps->codec, ps->max_frame, CTRL_MAX_QUEUED, &f->ch)) != 0)
    np__conn_abort(c, NULL);
  if (r == 0 && (r = np__chan_start(f->ch, on_fwd_msg, on_fwd_error, f)) != 0) {
    fwd_fail(f, r, NULL);
    return;
  }
  if (r != 0)
    fwd_fail(f, r, NULL);
}

static void fwd_open(fwd *f) {
  int r;

  if (f->waiting)
    f->l->n_waiting--;
  f->waiting = 0;
  if ((r = np__transport_open(f->l->t, on_stream, f, &f->dialer)) != 0)
    fwd_fail(f, r, NULL);
}

/* ---- links --------------------------------------------------------------------------------- */

static void link_unref(plink *l) {
  np__peers *ps = l->ps;
  struct np_server *srv = ps->srv;

  if (--l->refs > 0)
    return;
  NP_DLIST_UNLINK(ps->links, l, prev, next);
  np__transport_free(l->t);
  free(l);
  peers_maybe_free(ps);
  np__server_unref(srv);
}

static void on_link_chan_closed(np__chan *ch) {
  link_unref(np__chan_data(ch));
}

static void on_transport_ref(void *arg, int delta) {
  plink *l = arg;
  if (delta > 0)
    l->refs++;
  else
    link_unref(l);
}

static int mux_preface(np_conn *c, void *arg) {
  plink *l = arg;
  np_msg m = {.type = NP_MSG_MUX, .version = PROTO_VERSION};
  return np__conn_send_msg(c, l->ps->codec, &m);
}

/* The link is down (err, why: for the log): its connection goes, the visitors waiting for it fail,
 * and it is dialed again for the next visitor once its back-off has passed. */
static void fail_waiting(plink *l, int err, const char *why) {
  for (fwd *f = l->ps->fwds, *next; f != NULL; f = next) {
    next = f->next;
    if (f->l == l && f->waiting)
      fwd_fail(f, err, why);
  }
}

static void link_down(plink *l, int err, const char *why) {
  np__peers *ps = l->ps;
  uint64_t now = uv_now(ps->srv->loop);
  int was_up = l->state == L_UP;

  if (!ps->stopped)
    np__log(&ps->srv->log, was_up || !l->said ? NP_LOG_WARN : NP_LOG_DEBUG, "peer %s: %s%s%s",
            l->owner,
            was_up ? "link lost: " : "cannot link: ", why != NULL ? why : np_strerror(err),
            was_up || l->said ? "" : " (visitors of its routes fail here until it answers)");
  l->said = 1;
  if (l->dialer != NULL)
    np__dial_cancel(l->dialer);
  l->dialer = NULL;
  if (l->ch != NULL)
    np__chan_close(l->ch, on_link_chan_closed);
  l->ch = NULL;
  np__transport_disconnect(l->t);
  l->state = L_IDLE;
  l->backoff_ms = l->backoff_ms == 0 ? RETRY_MIN_MS : l->backoff_ms * 2;
  if (l->backoff_ms > RETRY_MAX_MS)
    l->backoff_ms = RETRY_MAX_MS;
  l->retry_at = now + l->backoff_ms;
  fail_waiting(l, err, "the link to it is down");
}

static void on_link_msg(np__chan *ch, const np_msg *m) {
  plink *l = np__chan_data(ch);
  np__peers *ps = l->ps;
  np_msg out = {.type = NP_MSG_PEER, .version = PROTO_VERSION};
  char why[NP_MSG_TEXT_MAX + 64];

  l->last_rx = uv_now(ps->srv->loop);
  if (m->type == NP_MSG_PING) {
    np_msg pong = {.type = NP_MSG_PONG, .id = m->id};
    if (np__chan_send(ch, &pong) != 0)
      link_down(l, NP_ELIMIT, "its control stream is not writable");
    return;
  }
  if (m->type == NP_MSG_CLOSE) {
    snprintf(why, sizeof(why), "it closed the link: %s", m->text);
    link_down(l, NP_ECLOSED, why);
    return;
  }
  if (l->state == L_HELLO && m->type == NP_MSG_HELLO && m->version == PROTO_VERSION) {
    if (m->id == ps->srv->shared->instance) {
      link_down(l, NP_ECONFIG, "that address is this server's own (check cluster_advertise)");
      return;
    }
    np__strlcpy(out.name, ps->advertise, sizeof(out.name));
    if (np__auth_nonce(out.nonce) != 0 ||
        np__auth_peer_mac(ps->token, m->nonce, out.nonce, out.name, out.mac) != 0 ||
        np__chan_send(ch, &out) != 0) {
      link_down(l, UV_EIO, "cannot send its login");
      return;
    }
    l->state = L_LOGIN;
    return;
  }
  if (l->state == L_LOGIN && m->type == NP_MSG_LOGIN_RESP) {
    if (m->status != 0) {
      snprintf(why, sizeof(why), "it refused this server's login: %s%s", m->text,
               m->status == NP_EAUTH ? " (the servers need the same cluster_token)" : "");
      link_down(l, m->status, why);
      return;
    }
    l->state = L_UP;
    l->backoff_ms = 0;
    l->said = 0;
    np__log(&ps->srv->log, NP_LOG_INFO, "peer %s: linked", l->owner);
    for (fwd *f = ps->fwds, *next; f != NULL; f = next) {
      next = f->next;
      if (f->l == l && f->waiting)
        fwd_open(f);
    }
    return;
  }
  snprintf(why, sizeof(why), "unexpected %s message", np_msg_type_name(m->type));
  link_down(l, NP_EPROTO, why);
}

static void on_link_error(np__chan *ch, int err) {
  plink *l = np__chan_data(ch);
  link_down(l, err, err == UV_EOF ? "it closed the connection" : NULL);
}

static void on_dialed(void *data, int status, np_conn *c) {
  plink *l = data;
  np__peers *ps = l->ps;
  np_msg hello = {.type = NP_MSG_HELLO, .version = PROTO_VERSION};
  int r = status;

  l->dialer = NULL;
  if (r == 0 && (r = np__chan_new(c, ps->codec, ps->max_frame, CTRL_MAX_QUEUED, &l->ch)) != 0)
    np__conn_abort(c, NULL);
  if (r != 0) {
    link_down(l, r, NULL);
    return;
  }
  l->refs++; /* the chan's, until on_link_chan_closed */
  l->state = L_HELLO;
  l->since = uv_now(ps->srv->loop);
  if ((r = np__chan_start(l->ch, on_link_msg, on_link_error, l)) != 0 ||
      (r = np__chan_send(l->ch, &hello)) != 0)
    link_down(l, r, NULL);
}

/* Dial l unless it is up or on its way, or failed too recently (then its visitors fail). */
static void link_kick(plink *l) {
  np__peers *ps = l->ps;
  int r;

  if (l->state != L_IDLE)
    return;
  if (uv_now(ps->srv->loop) < l->retry_at) {
    fail_waiting(l, UV_ECONNREFUSED, "the link to it failed a moment ago");
    return;
  }
  l->state = L_DIALING;
  l->since = uv_now(ps->srv->loop);
  if ((r = np__transport_connect(l->t, on_dialed, l, &l->dialer)) != 0) {
    l->dialer = NULL;
    link_down(l, r, NULL);
  }
}

static plink *link_get(np__peers *ps, const char *owner) {
  plink *l;

  for (l = ps->links; l != NULL; l = l->next)
    if (strcmp(l->owner, owner) == 0)
      return l;
  if ((l = calloc(1, sizeof(*l))) == NULL)
    return NULL;
  l->ps = ps;
  np__strlcpy(l->owner, owner, sizeof(l->owner));
  {
    np__transport_opts o = {
        .loop = ps->srv->loop,
        .server = l->owner,
        .dial_timeout_ms = ps->dial_timeout_ms,
        .tls = ps->tls,
        .mux = 1,
        .mux_max_window = (uint32_t)ps->srv->cfg.mux_max_window,
        .mux_session_window = ps->srv->cfg.mux_session_window,
        .keepalive_s = KEEPALIVE_S,
        .preface = mux_preface,
        .ref = on_transport_ref,
        .arg = l,
    };
    if (np__transport_new(&o, &l->t) != 0) {
      free(l);
      return NULL;
    }
  }
  l->refs = 1; /* the list's */
  ps->srv->refs++;
  NP_DLIST_PUSH(ps->links, l, prev, next);
  return l;
}

/* ---- deadlines ----------------------------------------------------------------------------- */

/* A link whose login the other server leaves unanswered, or that stopped hearing its pings, goes
 * down; a visitor whose answer has not come within dial_timeout_ms of its arrival fails. */
static void on_tick(uv_timer_t *t) {
  np__peers *ps = t->data;
  uint64_t now = uv_now(ps->srv->loop);

  for (plink *l = ps->links; l != NULL; l = l->next) {
    if ((l->state == L_HELLO || l->state == L_LOGIN) && now - l->since > ps->dial_timeout_ms)
      link_down(l, UV_ETIMEDOUT, "no answer to its login");
    else if (l->state == L_UP && now - l->last_rx > ps->srv->cfg.heartbeat_timeout_ms)
      link_down(l, NP_EPEERDEAD, "it missed its heartbeats");
  }
  for (fwd *f = ps->fwds, *next; f != NULL; f = next) {
    next = f->next;
    if (f->j == NULL && !f->failed && now > f->deadline)
      fwd_fail(f, UV_ETIMEDOUT, "no answer in time");
  }
  if (ps->shadows != NULL && ++ps->ticks % SHADOW_SYNC_TICKS == 0)
    np__shadows_sync(ps->shadows);
}

static void on_shadows_closed(void *arg) {
  np__peers *ps = arg;
  ps->shadows_open = 0;
  peers_maybe_free(ps);
}

static void on_timer_closed(uv_handle_t *h) {
  np__peers *ps = h->data;
  ps->timer_closed = 1;
  peers_maybe_free(ps);
}

/* ---- the hooks ----------------------------------------------------------------------------- */

int np__peers_forward(struct np_server *srv, const np_msg *fwd_msg, np__moved *mv) {
  np__peers *ps = srv->peers;
  const np__proxy_type *type = srv->types[fwd_msg->kind];
  char owner[NP_HOSTPORT_MAX], key[NP_ROUTE_KEY_MAX];
  np_conn *vc;
  plink *l;
  fwd *f = NULL;
  int r;

  if (ps == NULL || ps->stopped || type == NULL)
    return UV_ENOENT;
  if (fwd_msg->kind == NP_PROXY_HTTP || fwd_msg->kind == NP_PROXY_HTTPS) {
    r = np__routes_owner_host(srv, type->name, fwd_msg->text, owner);
  } else {
    snprintf(key, sizeof(key), "%s:%u", type->name, fwd_msg->port);
    r = np__routes_owner(srv, key, owner);
  }
  if (mv == NULL)
    return r; /* only asked */
  /* From here the visitor is ours, whatever becomes of it (the table may have changed since the
   * caller asked: then it is closed). */
  if (r != 0 || (f = calloc(1, sizeof(*f))) == NULL ||
      np__conn_move_in(srv->loop, NULL, mv, &vc) != 0) {
    free(f);
    np__moved_free(mv);
    srv->stats.peer_forward_failed++;
    return 0;
  }
  f->ps = ps;
  f->deadline = uv_now(srv->loop) + ps->dial_timeout_ms;
  srv->refs++;
  f->vc = vc;
  f->msg = *fwd_msg;
  f->msg.type = NP_MSG_FORWARD;
  f->pre = mv->pre;
  f->pre_len = mv->pre_len;
  mv->pre = NULL;
  mv->pre_len = 0;
  NP_DLIST_PUSH(ps->fwds, f, prev, next);
  if ((l = link_get(ps, owner)) == NULL) {
    fwd_fail(f, UV_ENOMEM, NULL);
    return 0;
  }
  f->l = l;
  if (l->state == L_UP) {
    fwd_open(f);
    return 0;
  }
  if (l->n_waiting >= WAITING_MAX) {
    fwd_fail(f, NP_ELIMIT, "too many visitors wait for the link to it");
    return 0;
  }
  f->waiting = 1;
  l->n_waiting++;
  link_kick(l);
  return 0;
}

int np__peers_start(struct np_server *srv) {
  np__peers *ps;
  int r;

  if (srv->cfg.cluster_token[0] == '\0' || srv->cfg.route_store[0] == '\0')
    return 0;
  if ((ps = calloc(1, sizeof(*ps))) == NULL)
    return UV_ENOMEM;
  ps->srv = srv;
  ps->codec = srv->codec;
  ps->max_frame = srv->cfg.max_frame;
  ps->dial_timeout_ms = srv->cfg.login_timeout_ms;
  np__strlcpy(ps->token, srv->cfg.cluster_token, sizeof(ps->token));
  np__strlcpy(ps->advertise, srv->cfg.cluster_advertise, sizeof(ps->advertise));
  if (srv->tls != NULL && srv->cfg.cluster_ca[0] != '\0') {
    /* Each server has its own certificate from the cluster's CA. */
    if ((r = np__tls_client_ca_only(srv->loop, srv->cfg.cluster_ca, srv->cfg.tls_cert,
                                    srv->cfg.tls_key, &srv->log, &ps->tls)) != 0) {
      free(ps);
      return r;
    }
  } else if (srv->tls != NULL) {
    /* The servers of a cluster share one identity: pin our own. */
    struct np_config *cc = malloc(sizeof(*cc));
    if (cc == NULL) {
      free(ps);
      return UV_ENOMEM;
    }
    *cc = srv->cfg;
    np__strlcpy(cc->server, srv->cfg.cluster_advertise, sizeof(cc->server));
    np__strlcpy(cc->server_fingerprint, np__tls_fingerprint(srv->tls),
                sizeof(cc->server_fingerprint));
    cc->tls_ca[0] = cc->tls_server_name[0] = cc->known_servers[0] = '\0';
    r = np__tls_client_new(srv->loop, cc, &srv->log, &ps->tls);
    OPENSSL_cleanse(cc, sizeof(*cc)); /* it holds every token of the configuration */
    free(cc);
    if (r != 0) {
      free(ps);
      return r;
    }
  }
  if (srv->widx == 0 && srv->routes != NULL) {
    if (np__shadows_new(srv, &ps->shadows) != 0) {
      np__tls_free(ps->tls);
      free(ps);
      return UV_ENOMEM;
    }
    ps->shadows_open = 1;
  }
  uv_timer_init(srv->loop, &ps->timer);
  ps->timer.data = ps;
  uv_timer_start(&ps->timer, on_tick, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&ps->timer);
  srv->peers = ps;
  return 0;
}

void np__peers_stop(struct np_server *srv) {
  np__peers *ps = srv->peers;

  if (ps == NULL)
    return;
  srv->peers = NULL;
  ps->stopped = 1;
  ps->busy++;
  uv_close((uv_handle_t *)&ps->timer, on_timer_closed);
  if (ps->shadows != NULL) {
    np__shadows *set = ps->shadows;
    ps->shadows = NULL;
    np__shadows_close(set, on_shadows_closed, ps);
  }
  for (fwd *f = ps->fwds, *next; f != NULL; f = next) {
    next = f->next;
    if (f->j != NULL)
      np__join_abort(f->j); /* its end frees it */
    else if (!f->failed)
      fwd_fail(f, UV_ECANCELED, "the server closes");
  }
  for (plink *l = ps->links, *next; l != NULL; l = next) {
    next = l->next;
    link_down(l, UV_ECANCELED, NULL);
    link_unref(l);
  }
  ps->busy--;
  peers_maybe_free(ps);
}

int np__peers_foreach(const struct np_server *srv, int (*cb)(const char *owner, int up, void *arg),
                      void *arg) {
  int r;

  if (srv->peers == NULL)
    return 0;
  for (const plink *l = srv->peers->links; l != NULL; l = l->next)
    if ((r = cb(l->owner, l->state == L_UP, arg)) != 0)
      return r;
  return 0;
}
