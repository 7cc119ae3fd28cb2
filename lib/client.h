/* np_client's internals, shared by client.c (the control session: login, proxy registration,
 * heartbeats, reconnect; and the public API), client_work.c (a work item per visitor),
 * client_pool.c (pre-opened work connections) and client_base.c (what they all use). Not
 * installed. */
#ifndef NP_CLIENT_INTERNAL_H
#define NP_CLIENT_INTERNAL_H

#include "natproxy/client.h"

#include "auth.h"
#include "bufcache.h"
#include "chan.h"
#include "config.h"
#include "dial.h"
#include "internal.h"
#include "join.h"
#include "mux.h"
#include "proto.h"
#include "stats.h"
#include "track.h"
#include "transport.h"
#include "udp_link.h"

enum cstate { C_IDLE, C_DIALING, C_HELLO, C_LOGIN, C_READY, C_BACKOFF, C_FATAL };

typedef struct work work;

/* One proxy of the client as it runs: its configuration (a copy, so that a reload that replaces or
 * removes it leaves what its visitors still read in place), what the server said of it, its
 * counters. Referenced by the client's list while it is configured, and by each work item, pre-
 * opened connection and join of its visitors; freed with the last reference (np__cproxy_unref). */
typedef struct np_client_proxy cproxy;
struct np_client_proxy {
  np__proxy_cfg cfg;
  int refs;
  np_client_proxy_state state;
  int port;   /* NP_CLIENT_PROXY_OK: the public port (0: the line codec does not say) */
  int status; /* NP_CLIENT_PROXY_REFUSED: the server's error code, and its text: */
  char error[NP_MSG_TEXT_MAX + 1];
  np_proxy_stats stats;
};

/* REQ_WORK's or START's addresses: where the visitor came from and what it reached ("ip:port",
 * "" when the server did not say). */
typedef struct np__visit {
  char from[NP_MSG_NAME_MAX + 1];
  char to[NP_MSG_TEXT_MAX + 1];
} np__visit;

struct work {
  struct np_client *cl;
  uint64_t visitor_id;
  uint64_t session_id;
  unsigned char key[NP_MSG_KEY_LEN];
  cproxy *px;     /* a reference */
  np__visit seen; /* who the visitor is, for a PROXY protocol header */
  np__dialer *dial_local, *dial_server;
  np_conn *local, *server;
  int local_status;    /* 1 while dialling */
  int in_tunnel_queue; /* line codec: waiting for its turn to dial the tunnel port */
  work *prev, *next;   /* all work items in flight */
  work *qnext;         /* line codec tunnel queue */
};

/* A pre-opened work connection: dialled and proven ahead of time, it waits for START{visitor}. */
typedef struct pooled {
  struct np_client *cl;
  uint64_t session_id;
  uint64_t visitor_id; /* from START */
  cproxy *px;          /* from START: a reference */
  np__visit seen;      /* from START */
  np__dialer *dial, *dial_local;
  np__chan *ch;  /* while idle */
  np_conn *conn; /* after START, while the local service is dialled */
  char *rest;    /* bytes that followed START (the visitor's first), for the join */
  size_t rest_len;
  int counted; /* counts toward cl->pool_idle (dialling or idle) */
  struct pooled *prev, *next;
} pooled;

typedef struct joined {
  np__track t; /* in cl->joins */
  struct np_client *cl;
  cproxy *px; /* a reference: the join counts into it */
  struct np_join *join;
} joined;

/* "name:port (address)" */
#define NP_CLIENT_LABEL_MAX (2 * NP_HOSTPORT_MAX + 4)

struct np_client {
  uv_loop_t *loop;
  struct np_config cfg;
  const np_codec_ops *codec;
  np__logger log;
  np_client_event_cb event_cb;
  enum cstate state;
  uint64_t state_ms;          /* when it entered the state (the loop's clock) */
  unsigned server_caps;       /* the server's HELLO: NP_HELLO_* it takes */
  uint64_t server_instance;   /* ... and its instance id (0: none yet, or an older server) */
  cproxy *px[NP_MAX_PROXIES]; /* the configured proxies, in cfg.proxies' order */
  int served;           /* some proxy of this client was open once (all_refused in client.c) */
  int dns_warned;       /* the server's name failed to resolve, and that was said (once) */
  char reload_err[600]; /* why the last reload changed nothing ("" when it did not fail) */
  /* The admin endpoint (admin_client.c), its start, stop and new credentials: hooks set by
   * builtin.c, so that the session layer calls nothing above it (docs/design.md). */
  struct np__admin_http *admin;
  int (*admin_start)(struct np_client *cl);
  void (*admin_stop)(struct np_client *cl);
  int (*admin_auth)(struct np_client *cl, const struct np_config *cfg);
  np__dialer *dial;
  np__chan *ch;
  np__transport *transport; /* TCP, TLS, mux: how it reaches the server (transport.c) */
  np__tls *tls;             /* NULL with insecure = true */
  uint64_t resume;  /* this client's instance id, random: says "it is us again" at a re-login */
  uv_timer_t timer; /* backoff, heartbeat */
  unsigned attempt;
  uint64_t retry_after_ms; /* the server asked us to wait this long (NP_EBACKOFF) */
  uint64_t last_rx, last_tx, ping_seq;
  uint64_t session_id;
  unsigned char cnonce[NP_MSG_KEY_LEN];
  unsigned char key[NP_MSG_KEY_LEN];
  work *works;
  work *tq_head, *tq_tail; /* line codec tunnel queue */
  int tunnel_dialing;
  np__trackset joins;            /* joined work connections (joined), cut when the client closes */
  pooled *pool;                  /* pre-opened work connections, idle or starting */
  size_t pool_idle;              /* of them dialling or idle: what counts toward work_pool */
  uint64_t pool_serial;          /* WORK_IDLE serials of this session */
  np__bufcache chunks;           /* relay buffers shared by this client's joins */
  np__ulink *ulink;              /* the datagram path for UDP flows; NULL: off, or no UDP proxies */
  struct np__visitors *visitors; /* -L and [visitor NAME] (client_visitor.c); NULL: none */
  struct np__directs *directs;   /* direct paths, both ends (client_direct.c); NULL: a member */
  np__ulink_stats ulink_stats;
  np_client_stats stats;
  int refs;
  unsigned started : 1, closing : 1;
  unsigned draining : 1;        /* np_client_drain: no new visitors, joined ones finish */
  unsigned server_draining : 1; /* the server said it drains: reconnect at once when it ends */
  uv_timer_t *drain_timer;      /* np_client_drain's (client_drain.c), closed by np_client_close */
  uint64_t drain_deadline;
  np_client_close_cb drain_cb;
  np_client_close_cb close_cb;
  void *data;
  /* Several servers (client_set.c): the set has a member client per server, on the same loop,
   * and no session of its own; the public calls go to its set_ops. A member's parent is its set,
   * which gets its events. Hooks, so that this layer calls nothing of the set's, which is above
   * it (docs/design.md). */
  const struct np__client_set_ops *set_ops;
  struct np_client *parent;
  struct np_client *members[NP_MAX_SERVERS];
  size_t n_members;
  struct np__set_names *names; /* the set's: each configured server and its addresses */
  /* Where this client dials: cfg.server, or for a member of a name with several addresses one of
   * them ("203.0.113.5:7000"); TLS, known_servers and the server's name stay cfg.server's. */
  char addr[NP_HOSTPORT_MAX];
  /* For the logs: "name:port (address)" for such a member, else "" (cfg.server says it). */
  char label[NP_CLIENT_LABEL_MAX];
  int item;                /* a member's configured server, an index in its set's names */
  unsigned addr_missing;   /* answers in a row its address was not in (client_set.c) */
  unsigned hold : 1;       /* started, but waits for np__client_go (its name being resolved) */
  unsigned quiet_said : 1; /* a retry while another address of its name serves was logged once */
  /* A set that speaks of several servers (a list, or a name with several addresses), from then
   * on: its members' lines and each proxy's port name their server. A set of one (a host name
   * with one address) speaks as a client alone. */
  unsigned several : 1;
};

/* The server as the logs name it. */
static inline const char *np__client_label(const struct np_client *cl) {
  return cl->label[0] != '\0' ? cl->label : cl->cfg.server;
}

/* What a set does in place of the public calls of the same name (client_set.c). lead: the member
 * whose session got furthest; spread: the set's codec and log to its members. */
typedef struct np__client_set_ops {
  int (*start)(struct np_client *set);
  void (*close)(struct np_client *set);
  void (*drain)(struct np_client *set, uint64_t timeout_ms);
  int (*reconfigure)(struct np_client *set, const struct np_config *cfg);
  void (*stats)(const struct np_client *set, np_client_stats *sum);
  int (*foreach)(const struct np_client *set, np_client_proxy_cb cb, void *arg);
  const struct np_client *(*lead)(const struct np_client *set);
  void (*event)(struct np_client *member, const np_client_event *ev);
  void (*spread)(struct np_client *set);
  /* A member's session is lost or its connection failed: the set resolves its name again. Returns
   * 1 when another member of the same name has a session, so that the retry is logged quietly. */
  int (*retrying)(struct np_client *member);
  void (*free)(struct np_client *set);
} np__client_set_ops;

static inline uint64_t now_ms(struct np_client *cl) {
  return uv_now(cl->loop);
}

/* A line every member of a set would log the same (a reload's outcome): the first member logs it
 * at level, the others at debug, so that the log says it once. */
static inline np_log_level np__client_echo(const struct np_client *cl, np_log_level level) {
  if (cl->parent == NULL)
    return level;
  for (size_t i = 0; i < cl->parent->n_members; i++) /* the first member still there */
    if (cl->parent->members[i] != NULL)
      return cl->parent->members[i] == cl ? level : NP_LOG_DEBUG;
  return level;
}

static inline int native(const struct np_client *cl) {
  return (cl->codec->caps & NP_CODEC_CAP_AUTH) != 0;
}

/* client_base.c */
void np__client_emit(struct np_client *cl, np_client_event_type type, int status, const char *name,
                     const char *text, int port);
/* The configured proxy of that name (the line codec's one whatever the name), or NULL. */
cproxy *np__client_find_proxy(struct np_client *cl, const char *name);
/* A new proxy object of cfg (copied), with one reference, not yet in the list: 0 or UV_ENOMEM. */
int np__cproxy_new(const np__proxy_cfg *cfg, cproxy **out);
void np__cproxy_unref(cproxy *px); /* NULL: nothing */
void np__client_set_state(struct np_client *cl, enum cstate state);
/* Send on the control session: 0, NP_ESTATE without one, or the channel's error. */
int np__client_send(struct np_client *cl, const np_msg *m);
/* Drop a reference; the last one, once closing, frees the client. */
void np__client_unref(struct np_client *cl);

/* client.c: np_client_new without the admin endpoint's hooks (builtin_client.c sets them). */
int np__client_create(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out);

/* admin_client.c: the admin endpoint on admin_bind (0 when there is none), its end, and a reload's
 * new credentials (0 or UV_ENOMEM, the old ones then still in force). */
int np__admin_client_start(struct np_client *cl);
void np__admin_client_stop(struct np_client *cl);
int np__admin_client_auth(struct np_client *cl, const struct np_config *cfg);

/* client_work.c: a visitor's work item (dial the local service and the server, prove, join) */
void np__client_req_work(struct np_client *cl, const np_msg *m); /* REQ_WORK */
/* The tag (np__track.tag) of joins that carry a UDP flow: a drain ends them at once. */
extern const int np__client_udp_flow_tag;
void np__client_work_free(work *w);
/* Dial the server for a work connection (plain TCP/TLS, or a stream of the session's mux). */
int np__client_open_work(struct np_client *cl, np__dial_cb cb, void *data, np__dialer **out);
int np__client_dial_local(struct np_client *cl, const np__proxy_cfg *px, np__dial_cb cb, void *data,
                          np__dialer **out);
/* px's PROXY protocol header about seen, if it has proxy_protocol_version, is written to local
 * first. The join takes a reference of px and counts into it. */
void np__client_start_join(struct np_client *cl, cproxy *px, const np__visit *seen, np_conn *server,
                           np_conn *local, const char *rest, size_t rest_len);
/* Copy m's addresses (REQ_WORK, START). */
void np__client_visit_from(np__visit *seen, const np_msg *m);
/* A UDP proxy's local conn: on the datagram path under the visitor's id, when it is up. */
void np__client_attach_flow(struct np_client *cl, np_conn *local, const np__proxy_cfg *px,
                            uint64_t session_id, uint64_t visitor_id);

/* client.c, for client_reload.c: register one proxy on the live session (its PROXY_OPTs, then
 * PROXY); 0 or the send's error (the session is then being dropped). The datagram path, if a UDP
 * proxy now needs one. Drop the session and reconnect at once (why: for the log). */
int np__client_register(struct np_client *cl, cproxy *px);
void np__client_start_ulink(struct np_client *cl);
void np__client_reconnect(struct np_client *cl, const char *why);

/* client_set.c: np_client_new for a configuration that lists several servers: the set and its
 * members (0, NP_ECONFIG or UV_ENOMEM). lead: the member whose session got furthest (the client
 * itself when it is no set); sessions: the members, or the client itself, into out (at most max);
 * returns how many. */
int np__client_set_new(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out);
const struct np_client *np__client_lead(const struct np_client *cl);
/* A member started with hold set connects now (client.c). */
void np__client_go(struct np_client *cl);
size_t np__client_sessions(const struct np_client *cl, const struct np_client **out, size_t max);

/* client_visitor.c: the local ports of the visitors of private proxies, opened by np_client_start
 * of the client the embedder made (a set's, not its members'), which visit through whichever
 * session is up; closed by np_client_close. Start: 0, or the first error (a port in use: logged),
 * everything then closed again. */
int np__client_visitors_start(struct np_client *cl);
/* client_direct.c: direct paths to and from other clients (docs/config.md, "Direct paths"), kept
 * by the client the embedder made; sessions (members) pass it DIRECT and DIRECT_INTRO. */
typedef struct np__dpath np__dpath;
/* Carry local through the server instead (the path failed, or is not up in time). */
typedef void (*np__direct_relay_cb)(void *ud, np_conn *local);
int np__client_directs_start(struct np_client *cl);
void np__client_directs_close(struct np_client *cl);
/* A visitor's path (cfg and secret must outlive it: the visitor's), made before the first try. */
int np__direct_visitor(struct np_client *cl, const np__visitor_cfg *cfg, const char *secret,
                       np__direct_relay_cb relay, void *ud, np__dpath **out);
/* 1: local is the path's now (a stream of it, or waiting for it); 0: relay it. m: the session to
 * ask through (NULL: none is up). */
int np__direct_take(np__dpath *d, struct np_client *m, np_conn *local);
void np__client_direct_msg(struct np_client *m, const np_msg *msg);
void np__client_visitors_close(struct np_client *cl);

/* client_pool.c: pre-opened work connections */
void np__client_pool_refill(struct np_client *cl);
void np__client_pool_drop_idle(struct np_client *cl);
void np__client_pooled_free(pooled *p);

#endif
