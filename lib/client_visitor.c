/* The visitor side of private proxies (docs/config.md, "Private services"): for each [visitor
 * NAME] or -L, a local port, as ssh -L opens one. Each local connection (stcp), or each local
 * UDP sender (sudp), gets a connection or stream of its own to the server that starts with VISIT
 * {the session, a fresh serial, the proxy's full name, a proof made from the session key and the
 * proxy's secret}; once the server answers, it carries the bytes (stcp: joined with the local
 * connection) or the datagrams framed as a UDP work connection frames them (sudp). A refusal is
 * logged with the server's reason and the local side is closed: the visitor gets nothing. */
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "dgram.h"
#include "listen.h"

#include <openssl/crypto.h>

#define VISIT_FLOWS_MAX        256 /* sudp: local senders at once per visitor */
#define VISIT_EARLY_MAX        16  /* sudp: datagrams held per flow until the server answers */
#define VISIT_QUEUED_MAX       (256 * 1024) /* sudp: bytes on their way to the server per flow */
#define VISIT_REFUSED_QUIET_MS 1000         /* sudp: no new visit this long after a refusal */

typedef struct cvisitor cvisitor;
typedef struct vconn vconn;

struct np__visitors {
  struct np_client *cl;
  uv_timer_t deadline; /* ends visits the server has not answered within dial_timeout */
  cvisitor *list;
  np__trackset joins; /* stcp joins, cut when the client closes */
  vconn *pending;     /* visits waiting for the server's answer */
  int closes_left;
};

struct cvisitor {
  struct np__visitors *set;
  np__visitor_cfg cfg;
  char secret[NP_SECRET_MAX + 1];
  np__listener *l; /* stcp */
  uv_udp_t udp;    /* sudp */
  uv_timer_t sweep;
  vconn *flows; /* sudp: by sender, linked; at most VISIT_FLOWS_MAX */
  size_t n_flows;
  uint64_t refused_ms;   /* when "not logged in" was last said (once a second at most) */
  int closes_left;       /* sudp: its socket and timer, closing */
  uint64_t quiet_until;  /* sudp: no new flow before (a visit was refused) */
  uint64_t refused_said; /* sudp: when a refusal was last logged */
  np__dpath *direct;     /* type = xtcp (direct = true): its direct path; NULL: relay only */
  cvisitor *next;
};

/* One visit: a local connection (stcp) or a local sender (sudp), and its way to the server. */
struct vconn {
  cvisitor *v;
  struct np_client *cl; /* the visitors' client (v may be gone once joined) */
  struct np_client *m;  /* the client (a member of a set) whose session it uses; a reference */
  uint64_t session_id;
  np_conn *local;               /* stcp */
  struct sockaddr_storage from; /* sudp: the local sender */
  np__dialer *dial;
  np__chan *ch;    /* until the answer */
  np_conn *server; /* sudp, after the answer */
  np__dgram_parser parser;
  char *early[VISIT_EARLY_MAX];
  size_t early_len[VISIT_EARLY_MAX], n_early;
  size_t queued;
  uint64_t last, started;
  size_t writes; /* sudp: frames queued towards the server, each holding vc until its callback */
  np__track t;   /* stcp, once joined */
  struct np_join *join;
  unsigned pending : 1, dead : 1;
  vconn *prev, *next;
};

/* A client with a session: the client itself, or of a set the first member logged in. */
static struct np_client *session_client(struct np_client *cl) {
  if (cl->n_members == 0)
    return cl->state == C_READY ? cl : NULL;
  for (size_t i = 0; i < cl->n_members; i++)
    if (cl->members[i] != NULL && cl->members[i]->state == C_READY)
      return cl->members[i];
  return NULL;
}

static void vconn_release(vconn *vc) {
  if (vc->m != NULL)
    np__client_unref(vc->m);
  free(vc);
}

/* The visit ends: its connections are closed now, its memory once no frame of it is queued. */
static void vconn_free(vconn *vc) {
  cvisitor *v = vc->v;

  if (vc->pending)
    NP_DLIST_UNLINK(v->set->pending, vc, prev, next);
  else if (v->cfg.kind == NP_PROXY_SUDP)
    NP_DLIST_UNLINK(v->flows, vc, prev, next);
  if (v->cfg.kind == NP_PROXY_SUDP)
    v->n_flows--; /* counted from the first datagram on, pending or not */
  if (vc->dial != NULL)
    np__dial_cancel(vc->dial);
  if (vc->ch != NULL)
    np__chan_close(vc->ch, NULL);
  if (vc->local != NULL)
    np__conn_close(vc->local, NULL);
  if (vc->server != NULL)
    np__conn_close(vc->server, NULL);
  for (size_t i = 0; i < vc->n_early; i++)
    free(vc->early[i]);
  np__dgram_parser_free(&vc->parser);
  vc->dead = 1;
  if (vc->writes == 0) /* else the last write's callback frees it */
    vconn_release(vc);
}

/* ---- the answer, and the join (stcp) -------------------------------------------------------- */

static void abort_join(np__track *t) {
  np__join_abort(((vconn *)((char *)t - offsetof(vconn, t)))->join);
}

static void on_join_done(struct np_join *j, int status, const np_join_stats *st) {
  vconn *vc = np_join_get_data(j);
  struct np_client *cl = vc->cl;

  np__log(&cl->log, NP_LOG_DEBUG, "visitor: a connection is done: %s, %llu bytes in, %llu out",
          np_strerror(status), (unsigned long long)st->a_to_b, (unsigned long long)st->b_to_a);
  np__track_remove(&vc->t);
  vconn_release(vc);
  np__client_unref(cl);
}

static void stcp_join(vconn *vc, np_conn *server, const char *rest, size_t rest_len) {
  struct np_client *cl = vc->v->set->cl;
  np_conn *local = vc->local;

  vc->local = NULL;
  if (np__join(server, local, rest, rest_len, NULL, on_join_done, vc, &vc->join) != 0) {
    np__conn_abort(server, NULL);
    np__conn_close(local, NULL);
    vconn_free(vc);
    return;
  }
  vc->t.abort = abort_join;
  np__track_add(&vc->v->set->joins, &vc->t);
  cl->refs++;
  cl->stats.work_opened++;
}

static void sudp_start(vconn *vc, np_conn *server, const char *rest, size_t rest_len);

static void on_answer(np__chan *ch, const np_msg *m) {
  vconn *vc = np__chan_data(ch);
  cvisitor *v = vc->v;
  struct np_client *cl = v->set->cl;
  const char *rest;
  size_t rest_len;
  np_conn *server;

  if (m->type != NP_MSG_VISIT) {
    np__log(&cl->log, NP_LOG_WARN, "visitor %s: the server answered VISIT with %s", v->cfg.name,
            np_msg_type_name(m->type));
    vconn_free(vc);
    return;
  }
  if (m->status != 0) {
    uint64_t now = uv_now(cl->loop);
    /* A UDP sender retries by itself: its datagrams for the next second are dropped rather than
     * each becoming a VISIT the server refuses again (a wrong key would back the address off). */
    if (v->cfg.kind == NP_PROXY_SUDP)
      v->quiet_until = now + VISIT_REFUSED_QUIET_MS;
    if (v->cfg.kind == NP_PROXY_STCP || now - v->refused_said >= 1000 || v->refused_said == 0) {
      np__log(&cl->log, NP_LOG_WARN, "visitor %s: the server refused the visit of %s: %s",
              v->cfg.name, v->cfg.server_name,
              m->text[0] != '\0' ? m->text : np_strerror(m->status));
      v->refused_said = now;
    }
    vconn_free(vc);
    return;
  }
  server = np__chan_detach(ch, &rest, &rest_len);
  vc->ch = NULL;
  NP_DLIST_UNLINK(v->set->pending, vc, prev, next);
  vc->pending = 0;
  np__log(&cl->log, NP_LOG_DEBUG, "visitor %s: %s answered", v->cfg.name, v->cfg.server_name);
  if (v->cfg.kind == NP_PROXY_STCP)
    stcp_join(vc, server, rest, rest_len);
  else
    sudp_start(vc, server, rest, rest_len);
}

static void on_answer_error(np__chan *ch, int err) {
  vconn *vc = np__chan_data(ch);
  np__log(&vc->v->set->cl->log, NP_LOG_WARN, "visitor %s: no answer from the server: %s",
          vc->v->cfg.name, np_strerror(err));
  vconn_free(vc);
}

static void on_dialed(void *data, int status, np_conn *c) {
  vconn *vc = data;
  struct np_client *m = vc->m;
  cvisitor *v = vc->v;
  np_msg msg = {.type = NP_MSG_VISIT, .kind = (uint8_t)v->cfg.kind};
  unsigned char verifier[NP_MSG_KEY_LEN];

  vc->dial = NULL;
  if (status != 0 || m->state != C_READY || m->session_id != vc->session_id) {
    np__log(&v->set->cl->log, NP_LOG_WARN, "visitor %s: cannot open a connection to %s: %s",
            v->cfg.name, np__client_label(m), np_strerror(status != 0 ? status : NP_ECLOSED));
    if (c != NULL)
      np__conn_close(c, NULL);
    vconn_free(vc);
    return;
  }
  msg.id = m->session_id;
  msg.id2 =
      ++m->pool_serial; /* a counter shared with WORK_IDLE's; the server keeps a window each */
  strcpy(msg.name, v->cfg.server_name);
  if (np__auth_stcp_verifier(v->secret, v->cfg.server_name, verifier) != 0 ||
      np__auth_visit_mac(verifier, m->key, msg.id, msg.id2, msg.kind, msg.name, msg.mac) != 0 ||
      np__auth_visit_session_mac(m->key, msg.id, msg.id2, msg.kind, msg.name, msg.nonce) != 0 ||
      np__conn_send_msg(c, m->codec, &msg) != 0 ||
      np__chan_new(c, m->codec, m->cfg.max_frame, CTRL_MAX_QUEUED, &vc->ch) != 0) {
    np__conn_close(c, NULL);
    vconn_free(vc);
    return;
  }
  if (np__chan_start(vc->ch, on_answer, on_answer_error, vc) != 0)
    vconn_free(vc);
}

/* A new visit through whichever session is up: 0, or why not (vc then as it was: the caller
 * closes its side). */
static int visit(cvisitor *v, vconn *vc) {
  struct np_client *cl = v->set->cl, *m = session_client(cl);
  uint64_t now = uv_now(cl->loop);
  int r;

  if (m == NULL) {
    if (now - v->refused_ms >= 1000 || v->refused_ms == 0)
      np__log(&cl->log, NP_LOG_WARN,
              "visitor %s: not logged in to a server yet: the local visitor is turned away",
              v->cfg.name);
    v->refused_ms = now;
    return NP_ESTATE;
  }
  if (!(m->server_caps & NP_HELLO_PRIVATE)) {
    if (now - v->refused_ms >= 1000 || v->refused_ms == 0)
      np__log(&cl->log, NP_LOG_WARN,
              "visitor %s: the server %s has no private proxies (it is older than them): the "
              "local visitor is turned away",
              v->cfg.name, np__client_label(m));
    v->refused_ms = now;
    return NP_EUNSUPPORTED;
  }
  vc->v = v;
  vc->cl = cl;
  vc->session_id = m->session_id;
  if ((r = np__client_open_work(m, on_dialed, vc, &vc->dial)) != 0)
    return r;
  vc->m = m;
  m->refs++;
  vc->started = now;
  vc->pending = 1;
  NP_DLIST_PUSH(v->set->pending, vc, prev, next);
  return 0;
}

/* A local connection through the server (stcp). */
static void relay_local(void *ud, np_conn *c) {
  cvisitor *v = ud;
  vconn *vc = calloc(1, sizeof(*vc));

  if (vc == NULL) {
    np__conn_close(c, NULL);
    return;
  }
  vc->local = c;
  vc->v = v;
  np__dgram_parser_init(&vc->parser);
  if (visit(v, vc) != 0) {
    np__conn_close(c, NULL);
    free(vc);
  }
}

static void on_local(np__listener *l, np_conn *c) {
  cvisitor *v = np__listener_data(l);

  if (v->direct != NULL && np__direct_take(v->direct, session_client(v->set->cl), c))
    return;
  relay_local(v, c);
}

/* ---- sudp: local senders as flows ----------------------------------------------------------- */

typedef struct dwrite {
  np_conn_write req;
  vconn *vc;
  size_t len;
  char frame[];
} dwrite;

static void on_frame_written(np_conn_write *req, int status) {
  dwrite *w = (dwrite *)req;
  vconn *vc = w->vc;
  (void)status;
  vc->queued -= w->len;
  free(w);
  if (--vc->writes == 0 && vc->dead)
    vconn_release(vc);
}

static void to_server(vconn *vc, const char *data, size_t len) {
  dwrite *w;
  uv_buf_t b;

  if (vc->queued + len > VISIT_QUEUED_MAX || (w = malloc(sizeof(*w) + 2 + len)) == NULL)
    return; /* UDP: dropped rather than queued without a bound */
  if (np__dgram_hdr(len, (unsigned char *)w->frame) != 0) {
    free(w);
    return;
  }
  memcpy(w->frame + 2, data, len);
  w->vc = vc;
  w->len = len + 2;
  b = uv_buf_init(w->frame, (unsigned)w->len);
  if (np__conn_write(vc->server, &w->req, &b, 1, on_frame_written) != 0) {
    free(w);
    return;
  }
  vc->queued += w->len;
  vc->writes++;
}

static void to_local(void *arg, const char *data, size_t len) {
  vconn *vc = arg;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  uv_udp_try_send(&vc->v->udp, &b, 1, (struct sockaddr *)&vc->from);
  vc->last = uv_now(vc->v->udp.loop);
}

static void on_server_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  (void)c;
  buf->base = malloc(suggested);
  buf->len = buf->base != NULL ? suggested : 0;
}

static void on_server_read(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  vconn *vc = c->data;
  if (n > 0 && np__dgram_feed(&vc->parser, buf->base, (size_t)n, to_local, vc) != 0)
    n = NP_EPROTO;
  free(buf->base);
  if (n < 0) {
    np__log(&vc->v->set->cl->log, NP_LOG_DEBUG, "visitor %s: a flow ended: %s", vc->v->cfg.name,
            np_strerror((int)n));
    vconn_free(vc);
  }
}

static void sudp_start(vconn *vc, np_conn *server, const char *rest, size_t rest_len) {
  cvisitor *v = vc->v;

  NP_DLIST_PUSH(v->flows, vc, prev, next); /* in the list from VISIT on; counted since then */
  vc->server = server;
  server->data = vc;
  if (rest_len > 0 && np__dgram_feed(&vc->parser, rest, rest_len, to_local, vc) != 0) {
    vconn_free(vc);
    return;
  }
  for (size_t i = 0; i < vc->n_early; i++) {
    to_server(vc, vc->early[i], vc->early_len[i]);
    free(vc->early[i]);
  }
  vc->n_early = 0;
  if (np__conn_read_start(server, on_server_alloc, on_server_read) != 0)
    vconn_free(vc);
}

static vconn *flow_find(cvisitor *v, const struct sockaddr *from) {
  for (vconn *vc = v->flows; vc != NULL; vc = vc->next)
    if (np__addr_equal((struct sockaddr *)&vc->from, from))
      return vc;
  for (vconn *vc = v->set->pending; vc != NULL; vc = vc->next)
    if (vc->v == v && np__addr_equal((struct sockaddr *)&vc->from, from))
      return vc;
  return NULL;
}

static void on_local_datagram(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                              const struct sockaddr *addr, unsigned flags) {
  cvisitor *v = h->data;
  vconn *vc;

  if (n < 0 || addr == NULL || (flags & UV_UDP_PARTIAL))
    return;
  if ((vc = flow_find(v, addr)) == NULL) {
    if (uv_now(h->loop) < v->quiet_until || v->n_flows >= VISIT_FLOWS_MAX ||
        (vc = calloc(1, sizeof(*vc))) == NULL)
      return;
    memcpy(&vc->from, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    np__dgram_parser_init(&vc->parser);
    if (visit(v, vc) != 0) {
      free(vc);
      return;
    }
    v->n_flows++;
  }
  vc->last = uv_now(h->loop);
  if (vc->server != NULL) { /* answered */
    to_server(vc, buf->base, (size_t)n);
  } else if (vc->n_early < VISIT_EARLY_MAX && (vc->early[vc->n_early] = malloc((size_t)n + 1))) {
    memcpy(vc->early[vc->n_early], buf->base, (size_t)n);
    vc->early_len[vc->n_early++] = (size_t)n;
  }
}

static void on_sweep(uv_timer_t *t) {
  cvisitor *v = t->data;
  uint64_t now = uv_now(t->loop), idle = v->set->cl->cfg.udp_idle_timeout_ms;
  vconn *vc, *next;

  for (vc = v->flows; vc != NULL; vc = next) {
    next = vc->next;
    if (now - vc->last >= idle)
      vconn_free(vc);
  }
}

static void on_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char room[NP_DGRAM_MAX + 1]; /* the loop's: used during the read callback only */
  (void)h;
  (void)suggested;
  buf->base = room;
  buf->len = sizeof(room);
}

/* ---- start and close ------------------------------------------------------------------------ */

static void visitor_free(cvisitor *v) {
  OPENSSL_cleanse(v->secret, sizeof(v->secret));
  free(v);
}

static void on_failed_closed(uv_handle_t *h) {
  visitor_free(h->data);
}

static int open_visitor(struct np__visitors *set, const np__visitor_cfg *cfg) {
  struct np_client *cl = set->cl;
  struct sockaddr_storage ss;
  cvisitor *v = calloc(1, sizeof(*v));
  int r;

  if (v == NULL)
    return UV_ENOMEM;
  v->set = set;
  v->cfg = *cfg;
  np__strlcpy(v->secret, cfg->secret_key[0] != '\0' ? cfg->secret_key : cl->cfg.secret_key,
              sizeof(v->secret));
  int udp_open = 0;

  if ((r = np__parse_addr(cfg->bind, &ss)) == 0 && cfg->kind == NP_PROXY_STCP) {
    r = np__listen(cl->loop, (struct sockaddr *)&ss, on_local, NULL, v, &v->l);
  } else if (r == 0) {
    udp_open = 1;
    uv_udp_init(cl->loop, &v->udp);
    v->udp.data = v;
    if ((r = uv_udp_bind(&v->udp, (struct sockaddr *)&ss, 0)) != 0 ||
        (r = uv_udp_recv_start(&v->udp, on_udp_alloc, on_local_datagram)) != 0) {
      uv_close((uv_handle_t *)&v->udp, on_failed_closed); /* frees v */
    } else {
      uint64_t every = cl->cfg.udp_idle_timeout_ms / 4 + 1;
      uv_timer_init(cl->loop, &v->sweep);
      v->sweep.data = v;
      uv_timer_start(&v->sweep, on_sweep, every, every);
    }
  }
  if (r != 0) {
    np__log(&cl->log, NP_LOG_ERROR,
            "visitor %s: cannot listen on %s: %s (give it another bind, or stop what holds it)",
            cfg->name, cfg->bind, np_strerror(r));
    if (!udp_open) /* else the socket's close callback frees v */
      visitor_free(v);
    return r;
  }
  if (cfg->direct && np__direct_visitor(cl, &v->cfg, v->secret, relay_local, v, &v->direct) != 0)
    np__log(&cl->log, NP_LOG_WARN, "visitor %s: no direct path (out of memory): relay only",
            cfg->name);
  np__log(&cl->log, NP_LOG_INFO, "visitor %s: %s %s reaches %s (%s)", cfg->name,
          cfg->kind == NP_PROXY_STCP ? "TCP" : "UDP", cfg->bind, cfg->server_name,
          cfg->kind == NP_PROXY_SUDP ? "sudp"
          : cfg->direct              ? "xtcp: direct when it can, else through the server"
                                     : "stcp");
  v->next = set->list;
  set->list = v;
  return 0;
}

static void part_closed(struct np__visitors *set);

/* Visits the server has not answered (nor the dial finished) within dial_timeout end. */
static void on_deadline(uv_timer_t *t) {
  struct np__visitors *set = t->data;
  uint64_t now = uv_now(t->loop), limit = set->cl->cfg.dial_timeout_ms;
  vconn *vc, *next;

  for (vc = set->pending; vc != NULL; vc = next) {
    next = vc->next;
    if (now - vc->started >= limit) {
      np__log(&set->cl->log, NP_LOG_WARN, "visitor %s: no answer from the server within %llums",
              vc->v->cfg.name, (unsigned long long)limit);
      vconn_free(vc);
    }
  }
}

static void on_deadline_closed(uv_handle_t *h) {
  part_closed(h->data);
}

static void part_closed(struct np__visitors *set) {
  struct np_client *cl = set->cl;

  if (--set->closes_left > 0)
    return;
  free(set);
  np__client_unref(cl);
}

static void on_listener_closed(void *data) {
  cvisitor *v = data;
  struct np__visitors *set = v->set;
  visitor_free(v);
  part_closed(set);
}

/* An sudp visitor's socket and timer: v goes once both are closed (libuv runs the close callbacks
 * in no order we should count on). */
static void on_udp_part_closed(uv_handle_t *h) {
  cvisitor *v = h->data;
  struct np__visitors *set = v->set;
  if (--v->closes_left > 0)
    return;
  visitor_free(v);
  part_closed(set);
}

void np__client_visitors_close(struct np_client *cl) {
  struct np__visitors *set = cl->visitors;

  if (set == NULL)
    return;
  cl->visitors = NULL;
  set->closes_left = 2; /* this call's, and the deadline timer's */
  cl->refs++;           /* until every handle is closed */
  uv_close((uv_handle_t *)&set->deadline, on_deadline_closed);
  while (set->pending != NULL)
    vconn_free(set->pending);
  np__track_abort_all(&set->joins);
  while (set->list != NULL) {
    cvisitor *v = set->list;
    set->list = v->next;
    while (v->flows != NULL)
      vconn_free(v->flows);
    if (v->cfg.kind == NP_PROXY_STCP) {
      set->closes_left++;
      np__listener_close(v->l, on_listener_closed);
    } else {
      set->closes_left++;
      v->closes_left = 2;
      uv_close((uv_handle_t *)&v->udp, on_udp_part_closed);
      uv_close((uv_handle_t *)&v->sweep, on_udp_part_closed);
    }
  }
  part_closed(set);
}

int np__client_visitors_start(struct np_client *cl) {
  struct np__visitors *set;
  int r = 0;

  if (cl->cfg.n_visitors == 0)
    return 0;
  if ((set = calloc(1, sizeof(*set))) == NULL)
    return UV_ENOMEM;
  set->cl = cl;
  cl->visitors = set;
  uv_timer_init(cl->loop, &set->deadline);
  set->deadline.data = set;
  uv_timer_start(&set->deadline, on_deadline, 1000, 1000);
  for (size_t i = 0; i < cl->cfg.n_visitors && r == 0; i++)
    r = open_visitor(set, &cl->cfg.visitors[i]);
  if (r != 0)
    np__client_visitors_close(cl);
  return r;
}
