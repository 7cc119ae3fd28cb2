/* Direct paths between two clients (docs/config.md, "Direct paths"; docs/direct-plan.md). A visitor
 * of type xtcp (an stcp visitor with direct = true) asks the server, through its own session, for
 * a path to the proxy's owner: both clients learn their public mapping by STUN, the server passes
 * each the other's candidates and one fresh key (server_direct.c), both punch (punch.c), and QUIC
 * runs over the hole (quic.c), authenticated by that key. Each local connection is then a QUIC
 * stream, joined at the owner's end with its local service as a work connection is.
 *
 * The relay is never far: a local connection waits for a path being made at most DIRECT_WAIT_MS,
 * then goes through the server as stcp; so does every connection while the path is down, and the
 * path is tried again after DIRECT_RETRY_MS, doubling up to DIRECT_RETRY_MAX_MS. A connection
 * that started on one way stays on it: a path that dies takes its streams with it (as a relay
 * that dies takes its connections). */
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "punch.h"
#include "quic.h"

#include <openssl/crypto.h>

#define DIRECT_WAIT_MS      5000   /* a local connection waits for a path being made */
#define DIRECT_PUNCH_MS     3000   /* the visitor punches this long */
#define DIRECT_OWNER_MS     8000   /* the owner, from the introduction to a path up */
#define DIRECT_IDLE_MS      30000  /* QUIC: the path dies after this long without a packet */
#define DIRECT_RETRY_MS     30000  /* after a failure, the next try; doubling ... */
#define DIRECT_RETRY_MAX_MS 600000 /* ... up to this */
#define DIRECT_WAITING_MAX  64     /* local connections waiting for one path */
#define DIRECT_OWNER_MAX    64     /* paths an owner serves at once ... */
#define DIRECT_PER_VISITOR  4      /* ... and of them, to one visitor client */
#define DIRECT_TICK_MS      100

enum { D_IDLE, D_STUN, D_OFFERED, D_PUNCH, D_QUIC, D_UP };

typedef struct np__dpath dpath;

struct np__directs {
  struct np_client *cl;
  uv_timer_t tick;
  dpath *paths;
  np__trackset joins;      /* the visitors' streams joined with their local connections */
  struct ostream *dialing; /* owners' streams whose local service is being dialled */
  size_t n_owner;
  int closing;
};

struct np__dpath {
  struct np__directs *set;
  int role, state;
  uint64_t id, started, retry_at, backoff_ms;
  uint8_t key[32];
  np__punch *punch;
  np__quic *quic;
  struct np_client *m; /* the session it was asked through (a reference) */
  char peer[64];       /* the other end, once found */
  /* visitor */
  const np__visitor_cfg *vcfg;
  const char *secret;
  np__direct_relay_cb relay;
  void *relay_ud;
  np_conn *waiting[DIRECT_WAITING_MAX];
  size_t n_waiting;
  /* owner */
  cproxy *cp; /* a reference */
  np_msg intro;
  char owner_secret[NP_SECRET_MAX + 1];  /* what the visitor proved: a path outlives neither */
  char owner_users[NP_MSG_TEXT_MAX + 1]; /* a new secret_key nor a new allow_users (revoked) */
  dpath *prev, *next;
};

#define STREAM_HELLO_V1 1
static const char stream_hello = STREAM_HELLO_V1;

typedef struct djoin {
  np__track t;
  struct np_join *join;
  struct np_client *cl; /* a reference: the set may be gone when the join ends */
} djoin;

static uint64_t now(const struct np__directs *set) {
  return uv_now(set->cl->loop);
}

static np__logger *logger(const dpath *d) {
  return &d->set->cl->log;
}

static const char *who(const dpath *d) {
  return d->role == NP_PUNCH_VISITOR ? d->vcfg->name : d->cp->cfg.name;
}

/* ---- ending a try ---------------------------------------------------------------------------- */

static void path_free(dpath *d) {
  struct np__directs *set = d->set;

  NP_DLIST_UNLINK(set->paths, d, prev, next);
  if (d->role == NP_PUNCH_OWNER) {
    set->n_owner--;
    np__cproxy_unref(d->cp);
  }
  OPENSSL_cleanse(d->key, sizeof(d->key));
  OPENSSL_cleanse(&d->intro, sizeof(d->intro));
  OPENSSL_cleanse(d->owner_secret, sizeof(d->owner_secret));
  free(d);
}

/* Stop what the try holds: punching, QUIC (a CONNECTION_CLOSE to the other end; its streams end),
 * the session. No callback of theirs comes after. */
static void path_stop(dpath *d) {
  np__quic_free(d->quic); /* first: its CONNECTION_CLOSE leaves through the punched socket */
  d->quic = NULL;
  if (d->punch != NULL)
    np__punch_close(d->punch);
  d->punch = NULL;
  if (d->m != NULL)
    np__client_unref(d->m);
  d->m = NULL;
}

/* A visitor's try failed, or its path died: waiting connections go through the server, and the
 * next try waits its turn. */
static void visitor_down(dpath *d, const char *why) {
  uint64_t t = now(d->set);

  if (d->state == D_UP)
    np__log(logger(d), NP_LOG_WARN,
            "visitor %s: the direct path to %s at %s is down (%s): new connections go through "
            "the server; the next try in %llu s",
            d->vcfg->name, d->vcfg->server_name, d->peer, why,
            (unsigned long long)d->backoff_ms / 1000);
  else
    np__log(logger(d), NP_LOG_INFO,
            "visitor %s: no direct path to %s (%s): through the server instead; the next try in "
            "%llu s",
            d->vcfg->name, d->vcfg->server_name, why, (unsigned long long)d->backoff_ms / 1000);
  d->state = D_IDLE;
  d->retry_at = t + d->backoff_ms;
  d->backoff_ms = d->backoff_ms * 2 > DIRECT_RETRY_MAX_MS ? DIRECT_RETRY_MAX_MS : d->backoff_ms * 2;
  d->set->cl->stats.direct_failed++;
  OPENSSL_cleanse(d->key, sizeof(d->key));
  path_stop(d);
  for (size_t i = 0; i < d->n_waiting; i++)
    d->relay(d->relay_ud, d->waiting[i]);
  d->n_waiting = 0;
}

static void owner_end(dpath *d, const char *why) {
  np__log(logger(d), NP_LOG_DEBUG, "proxy %s: direct path %016llx to %s ends: %s", who(d),
          (unsigned long long)d->id, d->intro.addr, why);
  path_stop(d);
  path_free(d);
}

static void path_fail(dpath *d, const char *why) {
  if (d->role == NP_PUNCH_VISITOR)
    visitor_down(d, why);
  else
    owner_end(d, why);
}

/* ---- QUIC over the hole ---------------------------------------------------------------------- */

static void on_djoin_done(struct np_join *j, int status, const np_join_stats *st) {
  djoin *dj = np_join_get_data(j);
  struct np_client *cl = dj->cl;

  np__log(&cl->log, NP_LOG_DEBUG,
          "visitor: a direct connection is done: %s, %llu bytes in, %llu out", np_strerror(status),
          (unsigned long long)st->a_to_b, (unsigned long long)st->b_to_a);
  np__track_remove(&dj->t);
  free(dj);
  np__client_unref(cl);
}

static void abort_djoin(np__track *t) {
  np__join_abort(((djoin *)t)->join);
}

/* A visitor's local connection on a stream of the path: 0, or the error (local still ours). */
static int visitor_stream(dpath *d, np_conn *local) {
  struct np_client *cl = d->set->cl;
  np_conn *stream;
  djoin *dj;
  int r;

  if ((r = np__quic_open(d->quic, &stream)) != 0)
    return r;
  /* A QUIC stream nothing was written on is not announced: a service that speaks first (ssh,
   * SMTP) would wait for ever. So each stream opens with one byte, STREAM_HELLO. */
  if (np__conn_try_write(stream, &stream_hello, 1) != 1 || (dj = calloc(1, sizeof(*dj))) == NULL) {
    np__conn_abort(stream, NULL);
    return UV_ENOMEM;
  }
  dj->cl = cl;
  if ((r = np__join(stream, local, NULL, 0, &cl->chunks, on_djoin_done, dj, &dj->join)) != 0) {
    free(dj);
    np__conn_abort(stream, NULL);
    return r;
  }
  /* stream -> local is what came in, as on a relay's work connection */
  np__join_count_into(dj->join, &(np__tally){{&cl->stats.bytes_in}, 1, NULL},
                      &(np__tally){{&cl->stats.bytes_out}, 1, NULL});
  dj->t.abort = abort_djoin;
  np__track_add(&d->set->joins, &dj->t);
  cl->refs++;
  cl->stats.direct_conns++;
  return 0;
}

static void on_quic_send(void *ud, const uint8_t *data, size_t len) {
  dpath *d = ud;
  if (d->punch != NULL)
    np__punch_send(d->punch, data, len);
}

static void on_quic_ready(void *ud) {
  dpath *d = ud;
  const np__punch_stats *ps = np__punch_get_stats(d->punch);

  d->state = D_UP;
  if (d->role == NP_PUNCH_OWNER) {
    np__log(logger(d), NP_LOG_INFO, "proxy %s: direct path to client %s at %s is up", who(d),
            d->intro.addr, d->peer);
    return;
  }
  d->backoff_ms = DIRECT_RETRY_MS;
  d->set->cl->stats.direct_up++;
  np__log(logger(d), NP_LOG_INFO,
          "visitor %s: direct path to %s at %s is up in %llu ms (%s, %llu probes)", d->vcfg->name,
          d->vcfg->server_name, d->peer, (unsigned long long)(now(d->set) - d->started),
          ps->found_as, (unsigned long long)ps->probes_sent);
  for (size_t i = 0; i < d->n_waiting; i++)
    if (visitor_stream(d, d->waiting[i]) != 0)
      d->relay(d->relay_ud, d->waiting[i]);
  d->n_waiting = 0;
}

typedef struct ostream {
  struct np__directs *set;
  struct np_client *m;
  cproxy *cp;
  np_conn *stream;
  np__dialer *dial;
  np__visit seen;
  size_t rest_len; /* what came after STREAM_HELLO, for the service first */
  struct ostream *prev, *next;
  /* The first read only: a path of 256 streams that never say hello holds 512 KiB. */
  char buf[2048];
} ostream;

static void ostream_free(ostream *os) {
  NP_DLIST_UNLINK(os->set->dialing, os, prev, next);
  np__cproxy_unref(os->cp);
  np__client_unref(os->m);
  free(os);
}

static void on_owner_local(void *data, int status, np_conn *local) {
  ostream *os = data;

  os->dial = NULL;
  if (status != 0) {
    np__log(&os->m->log, NP_LOG_WARN, "proxy %s: a direct visitor cannot reach %s: %s",
            os->cp->cfg.name, os->cp->cfg.local, np_strerror(status));
    os->m->stats.local_failed++;
    np__conn_abort(os->stream, NULL);
  } else {
    np__client_start_join(os->m, os->cp, &os->seen, os->stream, local, os->buf + 1, os->rest_len);
  }
  ostream_free(os);
}

/* Whether the owner's path may still take streams: the session it came through is up, not
 * draining, and the proxy is still there with the secret and allow_users the visitor proved
 * itself against (a reload that rotates the key or drops the visitor revokes the path). */
static int owner_valid(const dpath *d) {
  const cproxy *cp = d->cp;
  const char *secret;

  if (d->m == NULL || d->m->state != C_READY || d->m->draining ||
      np__client_find_proxy(d->m, cp->cfg.name) != cp)
    return 0;
  secret = cp->cfg.secret_key[0] != '\0' ? cp->cfg.secret_key : d->m->cfg.secret_key;
  return strcmp(secret, d->owner_secret) == 0 && strcmp(cp->cfg.allow_users, d->owner_users) == 0;
}

/* The owner's end of a new stream: its proxy's local service, joined as a work connection is. */
static void on_hello_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  ostream *os = c->data;
  (void)suggested;
  *buf = uv_buf_init(os->buf, sizeof(os->buf));
}

/* The stream's first byte: STREAM_HELLO, then the service is dialled. */
static void on_hello(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  ostream *os = c->data;
  np__dialer *dial = NULL;

  (void)buf;
  if (n == 0)
    return;
  np__conn_read_stop(c);
  if (n < 0 || os->buf[0] != STREAM_HELLO_V1 ||
      np__client_dial_local(os->m, &os->cp->cfg, on_owner_local, os, &dial) != 0) {
    np__conn_abort(c, NULL);
    ostream_free(os);
    return;
  }
  os->rest_len = (size_t)n - 1;
  os->dial = dial;
}

/* The owner's end of a new stream: its proxy's local service once the stream's first byte came,
 * joined as a work connection is. */
static void on_quic_stream(void *ud, np_conn *c) {
  dpath *d = ud;
  ostream *os;

  if (!owner_valid(d) || (os = calloc(1, sizeof(*os))) == NULL) {
    np__conn_abort(c, NULL);
    return;
  }
  os->set = d->set;
  os->m = d->m;
  os->cp = d->cp;
  os->stream = c;
  np__strlcpy(os->seen.from, d->peer, sizeof(os->seen.from));
  os->m->refs++;
  os->cp->refs++;
  NP_DLIST_PUSH(d->set->dialing, os, prev, next);
  c->data = os;
  if (np__conn_read_start(c, on_hello_alloc, on_hello) != 0) {
    np__conn_abort(c, NULL);
    ostream_free(os);
  }
}

/* It died by itself: the owner's path goes, the visitor's waits for its next try. */
static void on_quic_closed(void *ud, int err) {
  dpath *d = ud;
  path_fail(d, err == UV_ETIMEDOUT ? "no packet from the other end"
               : err == NP_ECLOSED ? "the other end closed it"
                                   : np_strerror(err));
}

static const np__quic_ops quic_ops = {
    .send = on_quic_send,
    .ready = on_quic_ready,
    .stream = on_quic_stream,
    .closed = on_quic_closed,
};

static int quic_start(dpath *d, const struct sockaddr *peer) {
  struct sockaddr_storage local;
  int r;

  if ((r = np__punch_local(d->punch, &local)) != 0 ||
      (r = np__quic_new(d->set->cl->loop, d->role == NP_PUNCH_OWNER, (struct sockaddr *)&local,
                        peer, d->key, DIRECT_IDLE_MS, &quic_ops, d, &d->quic)) != 0) {
    path_fail(d, np_strerror(r));
    return r;
  }
  d->state = D_QUIC;
  return 0;
}

/* ---- punching -------------------------------------------------------------------------------- */

static void on_found(void *ud, const struct sockaddr *peer) {
  dpath *d = ud;

  np__addr_str(peer, d->peer, sizeof(d->peer));
  np__log(logger(d), NP_LOG_DEBUG, "%s %s: the hole to %s is open (%s)",
          d->role == NP_PUNCH_VISITOR ? "visitor" : "proxy", who(d), d->peer,
          np__punch_get_stats(d->punch)->found_as);
  if (d->role == NP_PUNCH_VISITOR) /* the client speaks first; the owner waits for its packets */
    quic_start(d, peer);
}

static void on_packet(void *ud, const uint8_t *data, size_t len, const struct sockaddr *from) {
  dpath *d = ud;
  char at[64];

  np__addr_str(from, at, sizeof(at));
  if (d->quic == NULL && d->role == NP_PUNCH_OWNER && d->state == D_PUNCH) {
    /* The visitor's QUIC comes from where it is: that is the path, whichever of its addresses
     * our probes found first. */
    np__punch_set_peer(d->punch, from);
    np__strlcpy(d->peer, at, sizeof(d->peer));
    if (quic_start(d, from) != 0)
      return;
  }
  if (d->quic != NULL && strcmp(at, d->peer) == 0)
    np__quic_input(d->quic, data, len);
}

static void on_punch_failed(void *ud, int status) {
  dpath *d = ud;
  (void)status;
  path_fail(d, "no probe got through both NATs in time");
}

/* The candidates are known: the visitor asks (DIRECT), the owner answers (DIRECT_INTRO). */
static void on_mapped(void *ud, int status) {
  dpath *d = ud;
  struct np_client *m = d->m;
  np_msg out;
  int r;

  if (status != 0)
    np__log(logger(d), NP_LOG_DEBUG, "%s: no STUN answer from %s: local addresses only", who(d),
            np__client_label(m));
  if (m == NULL || m->state != C_READY) {
    path_fail(d, "the session with the server ended");
    return;
  }
  if (d->role == NP_PUNCH_OWNER) {
    out = d->intro;
    out.status = 0;
    if ((r = np__punch_candidates(d->punch, out.text, sizeof(out.text))) != 0 ||
        (r = np__client_send(m, &out)) != 0 ||
        (r = np__punch_go(d->punch, d->id, NP_PUNCH_OWNER, d->key, d->intro.text,
                          DIRECT_OWNER_MS)) != 0) {
      OPENSSL_cleanse(&out, sizeof(out));
      owner_end(d, np_strerror(r));
      return;
    }
    OPENSSL_cleanse(&out, sizeof(out));
    d->state = D_PUNCH;
    return;
  }
  memset(&out, 0, sizeof(out));
  out.type = NP_MSG_DIRECT;
  out.kind = NP_PROXY_STCP;
  out.id = d->id;
  out.id2 = ++m->pool_serial; /* VISIT's counter: the server takes each serial once */
  np__strlcpy(out.name, d->vcfg->server_name, sizeof(out.name));
  {
    unsigned char verifier[NP_MSG_KEY_LEN];
    r = np__auth_stcp_verifier(d->secret, out.name, verifier);
    if (r == 0)
      r = np__auth_direct_mac(verifier, m->key, m->session_id, out.id2, out.kind, out.name,
                              out.mac);
    OPENSSL_cleanse(verifier, sizeof(verifier));
  }
  if (r == 0)
    r = np__punch_candidates(d->punch, out.text, sizeof(out.text));
  if (r == 0)
    r = np__client_send(m, &out);
  if (r != 0) {
    visitor_down(d, np_strerror(r));
    return;
  }
  d->state = D_OFFERED;
}

static const np__punch_ops punch_ops = {
    .mapped = on_mapped,
    .found = on_found,
    .packet = on_packet,
    .failed = on_punch_failed,
};

/* The server's address, where its STUN answers: the session's control connection's peer. */
static int stun_addr(struct np_client *m, struct sockaddr_storage *out) {
  if (m->ch == NULL || m->transport == NULL)
    return NP_ESTATE;
  return np__conn_peer_addr(np__transport_conn(m->transport, np__chan_conn(m->ch)), out);
}

static void tick_need(struct np__directs *set);

static int punch_start(dpath *d, struct np_client *m) {
  struct sockaddr_storage server;
  int r;

  if ((r = stun_addr(m, &server)) != 0 ||
      (r = np__punch_new(m->loop, (struct sockaddr *)&server, &punch_ops, d, &d->punch)) != 0)
    return r;
  d->m = m;
  m->refs++;
  d->started = now(d->set);
  d->state = D_STUN;
  tick_need(d->set);
  return 0;
}

/* ---- the visitor's side ---------------------------------------------------------------------- */

int np__direct_visitor(struct np_client *cl, const np__visitor_cfg *cfg, const char *secret,
                       np__direct_relay_cb relay, void *ud, dpath **out) {
  struct np__directs *set = cl->directs;
  dpath *d;

  if (set == NULL || (d = calloc(1, sizeof(*d))) == NULL)
    return UV_ENOMEM;
  d->set = set;
  d->role = NP_PUNCH_VISITOR;
  d->vcfg = cfg;
  d->secret = secret;
  d->relay = relay;
  d->relay_ud = ud;
  d->backoff_ms = DIRECT_RETRY_MS;
  NP_DLIST_PUSH(set->paths, d, prev, next);
  *out = d;
  return 0;
}

int np__direct_take(dpath *d, struct np_client *m, np_conn *local) {
  if (d->set->closing)
    return 0;
  switch (d->state) {
  case D_UP:
    return visitor_stream(d, local) == 0;
  case D_IDLE:
    if (now(d->set) < d->retry_at || m == NULL || !(m->server_caps & NP_HELLO_DIRECT))
      return 0;
    if (np__auth_random(&d->id, sizeof(d->id)) != 0 || d->id == 0 || punch_start(d, m) != 0)
      return 0;
    np__log(logger(d), NP_LOG_DEBUG, "visitor %s: trying a direct path to %s", d->vcfg->name,
            d->vcfg->server_name);
    /* the connection waits for the path, as one made while it is being made does */
    /* fall through */
  default:
    if (d->n_waiting == DIRECT_WAITING_MAX)
      return 0;
    d->waiting[d->n_waiting++] = local;
    return 1;
  }
}

static void visitor_answer(struct np__directs *set, const np_msg *msg) {
  dpath *d;
  int r;

  for (d = set->paths; d != NULL; d = d->next)
    if (d->role == NP_PUNCH_VISITOR && d->state == D_OFFERED && d->id == msg->id)
      break;
  if (d == NULL)
    return; /* an answer to a try that ended */
  if (msg->status != 0) {
    char why[NP_MSG_TEXT_MAX + 32];
    snprintf(why, sizeof(why), "the server says: %s",
             msg->text[0] != '\0' ? msg->text : np_strerror(msg->status));
    visitor_down(d, why);
    return;
  }
  memcpy(d->key, msg->nonce, sizeof(d->key));
  if ((r = np__punch_go(d->punch, d->id, NP_PUNCH_VISITOR, d->key, msg->text, DIRECT_PUNCH_MS)) !=
      0) {
    visitor_down(d, "the owner's candidates do not parse");
    return;
  }
  d->state = D_PUNCH;
}

/* ---- the owner's side ------------------------------------------------------------------------ */

static void owner_refuse(struct np_client *m, const np_msg *msg, int status, const char *why) {
  np_msg out = *msg;
  out.status = status;
  np__strlcpy(out.text, why, sizeof(out.text));
  np__client_send(m, &out);
  OPENSSL_cleanse(&out, sizeof(out));
}

static void owner_intro(struct np__directs *set, struct np_client *m, const np_msg *msg) {
  cproxy *cp = np__client_find_proxy(m, msg->name);
  struct sockaddr_storage server, cands[NP_PUNCH_CANDS_MAX];
  size_t to_them = 0;
  dpath *d;

  if (cp == NULL || cp->cfg.kind != NP_PROXY_STCP) {
    owner_refuse(m, msg, NP_ENOPROXY, "no stcp proxy of that name on the owner's client");
    return;
  }
  if (m->draining) {
    owner_refuse(m, msg, NP_ECLOSED, "the owner's client is draining");
    return;
  }
  /* Before saying yes: addresses we could not probe would make the visitor punch for nothing. */
  memset(&server, 0, sizeof(server));
  if (stun_addr(m, &server) != 0 ||
      np__punch_parse((struct sockaddr *)&server, msg->text, cands, NP_PUNCH_CANDS_MAX) < 0) {
    owner_refuse(m, msg, NP_EPROTO,
                 server.ss_family == AF_INET6
                     ? "none of the visitor's addresses is an IPv6 address the owner's client "
                       "may send to"
                     : "none of the visitor's addresses is an IPv4 address the owner's client "
                       "may send to");
    return;
  }
  for (d = set->paths; d != NULL; d = d->next)
    to_them += d->role == NP_PUNCH_OWNER && strcmp(d->intro.addr, msg->addr) == 0;
  if (set->n_owner >= DIRECT_OWNER_MAX || to_them >= DIRECT_PER_VISITOR || set->closing ||
      (d = calloc(1, sizeof(*d))) == NULL) {
    owner_refuse(m, msg, NP_ELIMIT, "the owner's client serves as many direct paths as it may");
    return;
  }
  d->set = set;
  d->role = NP_PUNCH_OWNER;
  d->id = msg->id;
  d->intro = *msg;
  memcpy(d->key, msg->nonce, sizeof(d->key));
  d->cp = cp;
  cp->refs++;
  np__strlcpy(d->owner_secret,
              cp->cfg.secret_key[0] != '\0' ? cp->cfg.secret_key : m->cfg.secret_key,
              sizeof(d->owner_secret));
  np__strlcpy(d->owner_users, cp->cfg.allow_users, sizeof(d->owner_users));
  set->n_owner++;
  NP_DLIST_PUSH(set->paths, d, prev, next);
  if (punch_start(d, m) != 0) {
    owner_refuse(m, msg, NP_ESTATE, "the owner's client cannot open a UDP socket");
    owner_end(d, "no UDP socket");
    return;
  }
  np__log(&m->log, NP_LOG_DEBUG, "proxy %s: client %s asks for a direct path", cp->cfg.name,
          msg->addr);
}

void np__client_direct_msg(struct np_client *m, const np_msg *msg) {
  struct np_client *top = m->parent != NULL ? m->parent : m;

  if (top->directs == NULL)
    return;
  if (msg->type == NP_MSG_DIRECT)
    visitor_answer(top->directs, msg);
  else
    owner_intro(top->directs, m, msg);
}

/* ---- deadlines, start and close -------------------------------------------------------------- */

/* The tick watches paths being made and the owner's paths (whose proxy may change under them); a
 * client with none of those, idle or with only visitor paths up, is not woken ten times a second.
 */
static int tick_wanted(const struct np__directs *set) {
  for (const dpath *d = set->paths; d != NULL; d = d->next)
    if (d->role == NP_PUNCH_OWNER || (d->state != D_IDLE && d->state != D_UP))
      return 1;
  return 0;
}

static void on_tick(uv_timer_t *t) {
  struct np__directs *set = t->data;
  uint64_t n = now(set);
  dpath *d, *next;

  for (d = set->paths; d != NULL; d = next) {
    next = d->next;
    if (d->role == NP_PUNCH_VISITOR && d->state != D_IDLE && d->state != D_UP &&
        n - d->started >= DIRECT_WAIT_MS)
      visitor_down(d, "not up in time");
    else if (d->role == NP_PUNCH_OWNER && d->state != D_UP && n - d->started >= DIRECT_OWNER_MS)
      owner_end(d, "not up in time");
    else if (d->role == NP_PUNCH_OWNER && !owner_valid(d))
      owner_end(d, "the proxy, its secret_key or allow_users changed, or the session ended");
  }
  if (!tick_wanted(set))
    uv_timer_stop(&set->tick);
}

static void tick_need(struct np__directs *set) {
  if (!set->closing && !uv_is_active((uv_handle_t *)&set->tick))
    uv_timer_start(&set->tick, on_tick, DIRECT_TICK_MS, DIRECT_TICK_MS);
}

int np__client_directs_start(struct np_client *cl) {
  struct np__directs *set = calloc(1, sizeof(*set));

  if (set == NULL)
    return UV_ENOMEM;
  set->cl = cl;
  uv_timer_init(cl->loop, &set->tick);
  set->tick.data = set;
  cl->directs = set;
  return 0;
}

static void on_tick_closed(uv_handle_t *h) {
  struct np__directs *set = h->data;
  struct np_client *cl = set->cl;
  free(set);
  np__client_unref(cl);
}

void np__client_directs_close(struct np_client *cl) {
  struct np__directs *set = cl->directs;

  if (set == NULL)
    return;
  cl->directs = NULL;
  set->closing = 1;
  cl->refs++; /* until the timer is closed */
  np__track_abort_all(&set->joins);
  while (set->dialing != NULL) {
    ostream *os = set->dialing;
    if (os->dial != NULL)
      np__dial_cancel(os->dial);
    np__conn_abort(os->stream, NULL);
    ostream_free(os);
  }
  while (set->paths != NULL) {
    dpath *d = set->paths;
    for (size_t i = 0; i < d->n_waiting; i++)
      np__conn_close(d->waiting[i], NULL);
    d->n_waiting = 0;
    path_stop(d);
    path_free(d);
  }
  uv_close((uv_handle_t *)&set->tick, on_tick_closed);
}
