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
  const np__proxy_cfg *px;
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
  const np__proxy_cfg *px;
  np__visit seen; /* from START */
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
  struct np_join *join;
} joined;

struct np_client {
  uv_loop_t *loop;
  struct np_config cfg;
  const np_codec_ops *codec;
  np__logger log;
  np_client_event_cb event_cb;
  enum cstate state;
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
  np__trackset joins;   /* joined work connections (joined), cut when the client closes */
  pooled *pool;         /* pre-opened work connections, idle or starting */
  size_t pool_idle;     /* of them dialling or idle: what counts toward work_pool */
  uint64_t pool_serial; /* WORK_IDLE serials of this session */
  np__bufcache chunks;  /* relay buffers shared by this client's joins */
  np__ulink *ulink;     /* the datagram path for UDP flows; NULL: off, or no UDP proxies */
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
};

static inline uint64_t now_ms(struct np_client *cl) {
  return uv_now(cl->loop);
}

static inline int native(const struct np_client *cl) {
  return (cl->codec->caps & NP_CODEC_CAP_AUTH) != 0;
}

/* client_base.c */
void np__client_emit(struct np_client *cl, np_client_event_type type, int status, const char *name,
                     const char *text, int port);
const np__proxy_cfg *np__client_find_proxy(struct np_client *cl, const char *name);
/* Send on the control session: 0, NP_ESTATE without one, or the channel's error. */
int np__client_send(struct np_client *cl, const np_msg *m);
/* Drop a reference; the last one, once closing, frees the client. */
void np__client_unref(struct np_client *cl);

/* client_work.c: a visitor's work item (dial the local service and the server, prove, join) */
void np__client_req_work(struct np_client *cl, const np_msg *m); /* REQ_WORK */
void np__client_work_free(work *w);
/* Dial the server for a work connection (plain TCP/TLS, or a stream of the session's mux). */
int np__client_open_work(struct np_client *cl, np__dial_cb cb, void *data, np__dialer **out);
int np__client_dial_local(struct np_client *cl, const np__proxy_cfg *px, np__dial_cb cb, void *data,
                          np__dialer **out);
/* px's PROXY protocol header about seen, if it has proxy_protocol_version, is written to local
 * first. */
void np__client_start_join(struct np_client *cl, const np__proxy_cfg *px, const np__visit *seen,
                           np_conn *server, np_conn *local, const char *rest, size_t rest_len);
/* Copy m's addresses (REQ_WORK, START). */
void np__client_visit_from(np__visit *seen, const np_msg *m);
/* A UDP proxy's local conn: on the datagram path under the visitor's id, when it is up. */
void np__client_attach_flow(struct np_client *cl, np_conn *local, const np__proxy_cfg *px,
                            uint64_t session_id, uint64_t visitor_id);

/* client_pool.c: pre-opened work connections */
void np__client_pool_refill(struct np_client *cl);
void np__client_pool_drop_idle(struct np_client *cl);
void np__client_pooled_free(pooled *p);

#endif
