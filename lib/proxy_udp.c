/* The UDP proxy (issue 6, stream carrier): one UDP socket per proxy, one flow per visitor address.
 * A new flow is a visitor like a TCP one (pending pool, REQ_WORK, proofs); its work connection then
 * carries its datagrams as dgram.c frames both ways. Datagrams are dropped, never queued without
 * bound: before the work connection comes, and behind a slow one. A visitor another server of the
 * cluster forwards here (peer_shadow.c there) is a flow too, whose datagrams come and go as the
 * same frames on the peer's stream instead of this proxy's socket. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "dgram.h"
#include "proxy.h"
#include "udp_batch.h"
#include "udp_path.h"

/* uthash in its non-fatal mode: a failed HASH_ADD leaves the item out with its hh.tbl NULL (see
 * http_route.c). Its hash (Jenkins) is not keyed, and visitors choose their ports: each proxy's
 * keys start with a random salt of its own, and udp_max_flows bounds a chain in any case. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#define RCVBUF          (1 << 20)    /* the public socket's receive buffer */
#define EARLY_MAX       32           /* datagrams queued before the work connection */
#define WORK_MAX_QUEUED (256 * 1024) /* bytes queued on a work connection before we drop */

typedef struct early {
  struct early *next;
  size_t len;
  char data[];
} early;

/* A visitor address as a hash key: no padding, zeros where a family has no bytes. A forwarded
 * flow's key has its own sequence number (0: a visitor of this socket), so it never answers for a
 * local visitor's address, nor two forwarded ones for each other. */
typedef struct addr_key {
  uint32_t salt, seq;
  uint16_t family, port;
  unsigned char ip[16];
} addr_key;

typedef struct np__udp_flow {
  struct np__udp *u;
  struct np_server *srv; /* u may be gone before the work connection has closed */
  struct sockaddr_storage addr;
  uint64_t last; /* a datagram either way */
  uint64_t id;   /* its visitor id */
  int path_ok;   /* the client takes its datagrams over the datagram path */
  np_conn *work; /* NULL until it comes */
  int pending;   /* its visitor waits in the pool */
  int arriving;  /* inside np__visitor_arrive */
  int refused;   /* ... which dropped its visitor */
  early *qhead, *qtail;
  size_t nq;
  size_t queued; /* bytes written to work, not yet done */
  np__dgram_parser parser;
  np__meter meter; /* once joined */
  np_conn *peer;   /* a forwarded flow's stream from the other server: its visitor's side */
  np__dgram_parser pparser;
  size_t pqueued; /* bytes written to peer, not yet done */
  int holds;      /* freed once the flow and its peer stream have both let go */
  unsigned closing : 1;
  addr_key key;
  UT_hash_handle hh;    /* in u->flows, by key */
  UT_hash_handle hh_id; /* in u->by_id, by id, once it has one */
} flow;

typedef struct np__udp {
  proxy *px;
  uv_udp_t h;
  uv_timer_t sweep;
  flow *flows; /* by visitor address */
  flow *by_id; /* by visitor id: what the datagram path names */
  size_t nflows;
  uint32_t salt, seq;
  struct sockaddr_storage local; /* the socket's address: where visitors send to */
  int closes_left;
} udp;

typedef struct out_dgram {
  np_conn_write req;
  size_t *queued; /* the counter of the conn it goes to */
  size_t len;
  char bytes[];
} out_dgram;

static struct np_server *srv_of(const udp *u) {
  return u->px->srv;
}

/* ---- flows ---------------------------------------------------------------------------------- */

static void make_key(const udp *u, const struct sockaddr *sa, uint32_t seq, addr_key *k) {
  memset(k, 0, sizeof(*k));
  k->salt = u->salt;
  k->seq = seq;
  k->family = sa->sa_family;
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)sa;
    k->port = a->sin6_port;
    memcpy(k->ip, &a->sin6_addr, 16);
  } else if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)sa;
    k->port = a->sin_port;
    memcpy(k->ip, &a->sin_addr, 4);
  }
}

static flow *flow_at(udp *u, const struct sockaddr *sa) {
  addr_key k;
  flow *f;
  make_key(u, sa, 0, &k);
  HASH_FIND(hh, u->flows, &k, sizeof(k), f);
  return f;
}

static void flow_free(flow *f) {
  struct np_server *srv = f->srv;
  if (--f->holds > 0)
    return;         /* its peer stream closes */
  np__udpq_flush(); /* datagrams queued for its visitor count into its meter */
  while (f->qhead != NULL) {
    early *e = f->qhead;
    f->qhead = e->next;
    free(e);
  }
  np__dgram_parser_free(&f->parser);
  np__dgram_parser_free(&f->pparser);
  np__meter_end(&f->meter);
  free(f);
  np__server_unref(srv);
}

static void on_work_closed(np_conn *c) {
  flow_free(c->data);
}

static void on_peer_closed(np_conn *c) {
  flow_free(c->data);
}

/* A debug line about flow f (its address formatted only when the line will be logged). */
static void flow_debug(const flow *f, const char *what, const char *why) {
  char a[64];
  if (f->srv->log.level < NP_LOG_DEBUG)
    return;
  np__addr_str((const struct sockaddr *)&f->addr, a, sizeof(a));
  np__log(&f->srv->log, NP_LOG_DEBUG, "proxy %s: UDP flow %s %s%s", f->u->px->name, a, what, why);
}

/* why: for the debug log, NULL for none (the proxy is going, the visitor never got a tunnel). */
static void flow_close(flow *f, const char *why) {
  udp *u = f->u;
  if (f->closing)
    return;
  f->closing = 1;
  if (why != NULL)
    flow_debug(f, "closed: ", why);
  HASH_DELETE(hh, u->flows, f);
  if (f->hh_id.tbl != NULL)
    HASH_DELETE(hh_id, u->by_id, f);
  u->nflows--;
  f->srv->stats.udp_flows--;
  if (f->peer != NULL) {
    f->peer->data = f;
    np__conn_close(f->peer, on_peer_closed); /* its hold, and its writes' counter, until then */
  }
  if (f->work != NULL) {
    f->work->data = f;
    np__conn_close(f->work, on_work_closed);
  } else if (!f->pending && !f->arriving) {
    flow_free(f);
  } /* else its visitor is in the pool (udp_drop frees it), or flow_new is still on the stack */
}

static void on_dgram_written(np_conn_write *req, int status) {
  out_dgram *o = NP_CONTAINER_OF(req, out_dgram, req);
  (void)status;
  *o->queued -= o->len;
  free(o);
}

/* One datagram framed on c (the work connection, or a forwarded flow's peer stream), whose bytes
 * not yet written *queued counts: 0, or -1 when it was dropped (c this far behind). */
static int frame_to(flow *f, np_conn *c, size_t *queued, const char *data, size_t len) {
  out_dgram *o;
  uv_buf_t b;

  if (*queued + 2 + len > WORK_MAX_QUEUED || len > NP_DGRAM_MAX ||
      (o = malloc(sizeof(*o) + 2 + len)) == NULL) {
    f->srv->stats.udp_dropped++; /* over IPv6 a datagram may be longer than a frame can say */
    return -1;
  }
  np__dgram_hdr(len, (unsigned char *)o->bytes);
  memcpy(o->bytes + 2, data, len);
  o->queued = queued;
  o->len = 2 + len;
  b = uv_buf_init(o->bytes, (unsigned)o->len);
  if (np__conn_write(c, &o->req, &b, 1, on_dgram_written) != 0) {
    free(o);
    f->srv->stats.udp_dropped++;
    return -1;
  }
  *queued += o->len;
  return 0;
}

/* One datagram to the client: over the datagram path when the client is ready for it there, else
 * framed on the work connection, dropped when that is this far behind. */
static void to_work(flow *f, const char *data, size_t len) {
  session *s = f->u->px->s;

  if (f->path_ok && s != NULL && np__upath_send(s, f->id, data, len) == 0) {
    np__meter_add(&f->meter, len, 0);
    return;
  }
  if (frame_to(f, f->work, &f->queued, data, len) == 0)
    np__meter_add(&f->meter, len, 0);
}

/* The flow of s named id, if s still has it. */
static flow *find_flow(session *s, uint64_t id) {
  for (proxy *px = s->proxies; px != NULL; px = px->next) {
    if (px->type != &np__proxy_udp)
      continue;
    flow *f;
    HASH_FIND(hh_id, ((udp *)px->impl)->by_id, &id, sizeof(id), f);
    if (f != NULL)
      return f;
  }
  return NULL;
}

static void udp_visitor_id(visitor *v) {
  flow *f = v->impl;
  f->id = v->id;
  /* Out of memory: the datagram path cannot name it (hh_id.tbl stays NULL), the tunnel carries
   * it. */
  if (!f->closing)
    HASH_ADD(hh_id, f->u->by_id, id, sizeof(f->id), f);
}

/* The datagram path's news (udp_path.c): the client takes flow id's datagrams there now. */
static void path_ready(session *s, uint64_t id) {
  flow *f = find_flow(s, id);
  if (f != NULL)
    f->path_ok = 1;
}

static void on_client_dgram(void *arg, const char *data, size_t len);

/* A datagram for flow id of s's proxies, from the datagram path: to its visitor. */
static void from_path(session *s, uint64_t id, const char *data, size_t len) {
  flow *f = find_flow(s, id);
  if (f == NULL) {
    s->srv->stats.udp_dropped++; /* it ended meanwhile */
    return;
  }
  f->path_ok = 1;
  on_client_dgram(f, data, len);
}

static void to_visitor_done(void *arg, size_t len, int status) {
  flow *f = arg;
  if (status < 0)
    f->srv->stats.udp_dropped++;
  else
    np__meter_add(&f->meter, 0, len);
}

/* One datagram from the client: to the visitor, with the others of this batch, or never (UDP); a
 * forwarded flow's to the other server, which sends it on from its own socket. */
static void on_client_dgram(void *arg, const char *data, size_t len) {
  flow *f = arg;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  f->last = uv_now(f->u->h.loop);
  if (f->peer != NULL) {
    if (!f->closing && frame_to(f, f->peer, &f->pqueued, data, len) == 0)
      np__meter_add(&f->meter, 0, len);
    return;
  }
  np__udpq_add(&f->u->h, (const struct sockaddr *)&f->addr, &b, 1, to_visitor_done, f);
}

static void work_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  char *rx = np__scratch(NP_SCRATCH_UDP_WORK, 65536);
  (void)c;
  (void)suggested;
  *buf = uv_buf_init(rx, rx != NULL ? 65536 : 0);
}

static void work_read(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  flow *f = c->data;
  if (n < 0)
    flow_close(f, n == UV_EOF ? "the client ended it" : np_strerror((int)n));
  else if (np__dgram_feed(&f->parser, buf->base, (size_t)n, on_client_dgram, f) != 0)
    flow_close(f, "malformed datagram frame from the client");
  np__udpq_flush(); /* before buf is read into again */
}

/* The flow's work connection came (rest: bytes after its header): datagrams flow both ways. */
static int udp_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len) {
  flow *f = v->impl;

  (void)s;
  f->pending = 0;
  if (f->closing) { /* its proxy went meanwhile */
    work->data = f;
    f->work = work;
    np__conn_close(work, on_work_closed);
    return UV_ECANCELED;
  }
  f->work = work;
  work->data = f;
  f->meter = v->meter;
  flow_debug(f, "has its work connection", "");
  while (f->qhead != NULL) {
    early *e = f->qhead;
    f->qhead = e->next;
    to_work(f, e->data, e->len);
    free(e);
  }
  f->qtail = NULL;
  f->nq = 0;
  if (rest_len > 0 && np__dgram_feed(&f->parser, rest, rest_len, on_client_dgram, f) != 0)
    flow_close(f, "malformed datagram frame from the client");
  else if (np__conn_read_start(work, work_alloc, work_read) != 0)
    flow_close(f, "cannot read its work connection");
  np__udpq_flush(); /* the early datagrams (datagram path), the replies in rest */
  return 0;         /* joined: an end after this is the flow's own */
}

/* The flow's visitor expired or was refused before a work connection came: the flow goes. */
static void udp_drop(visitor *v, const char *end) {
  flow *f = v->impl;

  (void)end; /* the access log is TCP's (docs/config.md) */
  f->pending = 0;
  if (f->arriving) {
    f->refused = 1; /* flow_new cleans up */
    return;
  }
  if (f->closing)
    flow_free(f);
  else
    flow_close(f, "no work connection (see the visitor's log line)");
}

/* A new visitor address refused before it reached the core: counted as the core would. */
static void refuse(udp *u) {
  srv_of(u)->stats.visitors_refused++;
  np__proxy_count(u->px, NULL, offsetof(np_proxy_stats, visitors));
  np__proxy_count(u->px, NULL, offsetof(np_proxy_stats, visitors_dropped));
}

/* flow_new's refusal: counted, and a forwarded flow's stream closed (flow_new takes it). */
static flow *refuse_new(udp *u, np_conn *peer) {
  refuse(u);
  if (peer != NULL)
    np__conn_close(peer, NULL);
  return NULL;
}

/* A new flow for a visitor from addr (NULL: not known, a forwarded one's); peer: a forwarded
 * flow's stream, which it takes (closes) whatever becomes of the flow, else NULL. */
static flow *flow_new(udp *u, const struct sockaddr *addr, const struct sockaddr *to,
                      np_conn *peer) {
  static const struct sockaddr none = {.sa_family = AF_UNSPEC};
  struct np_server *srv = srv_of(u);
  flow *f;

  if (to == NULL)
    to = (const struct sockaddr *)&u->local;
  if (addr == NULL)
    addr = &none; /* a forwarded visitor whose address the other server did not know */
  if (u->nflows >= srv->cfg.udp_max_flows) {
    char a[64];
    np__addr_str(addr, a, sizeof(a));
    /* debug, not warn: one sender spraying source ports must not flood the log; the count shows */
    np__log(&srv->log, NP_LOG_DEBUG, "proxy %s: %zu UDP %s (udp_max_flows), dropped %s",
            u->px->name, u->nflows, np__plural(u->nflows, "flow", "flows"), a);
    return refuse_new(u, peer);
  }
  if ((f = calloc(1, sizeof(*f))) == NULL) {
    return refuse_new(u, peer);
  }
  f->u = u;
  f->srv = srv;
  f->holds = 1;
  if (addr != &none)
    memcpy(&f->addr, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  if (peer != NULL && ++u->seq == 0)
    u->seq = 1; /* 0 is a local visitor's */
  make_key(u, addr, peer != NULL ? u->seq : 0, &f->key);
  HASH_ADD(hh, u->flows, key, sizeof(f->key), f);
  if (f->hh.tbl == NULL) {
    free(f);
    return refuse_new(u, peer);
  }
  if (peer != NULL) {
    f->peer = peer;
    f->holds++; /* the peer stream's, until it has closed */
    np__dgram_parser_init(&f->pparser);
  }
  f->last = uv_now(u->h.loop);
  f->pending = 1;
  f->meter.srv = &srv->stats; /* the proxy's and client's come with the join */
  np__dgram_parser_init(&f->parser);
  u->nflows++;
  srv->stats.udp_flows++;
  srv->refs++; /* the flow's */
  f->arriving = 1;
  if (np__visitor_arrive(u->px, f, addr != &none ? addr : NULL, to) != 0) {
    srv->stats.visitors_refused++; /* the core counts the visitors it refuses itself */
    f->refused = 1, f->pending = 0;
  }
  f->arriving = 0;
  if (f->closing) {
    /* Its session, and with it this proxy, closed during the arrival (REQ_WORK could not be
     * sent), or its work connection came and failed at once: flow_close left the flow to us,
     * unless that connection's close frees it. */
    if (f->work == NULL)
      flow_free(f);
    return NULL;
  }
  if (f->refused) {
    flow_close(f, NULL);
    return NULL;
  }
  return f;
}

/* ---- the socket ----------------------------------------------------------------------------- */

static void flow_in(flow *f, const char *data, size_t n);

/* One datagram from a visitor. */
static void from_visitor(udp *u, const char *data, size_t n, const struct sockaddr *addr) {
  proxy *px = u->px;
  struct np_server *srv = px->srv;
  flow *f;

  if (!np__proxy_admits(px, addr))
    return;
  if ((f = flow_at(u, addr)) == NULL) {
    srv->stats.visitors_total++;
    if ((f = flow_new(u, addr, NULL, NULL)) == NULL) { /* counted as refused where it was */
      srv->stats.udp_dropped++;
      return;
    }
  }
  flow_in(f, data, n);
}

/* One datagram from f's visitor: to the client, or queued (a few) until its work connection. */
static void flow_in(flow *f, const char *data, size_t n) {
  struct np_server *srv = f->srv;

  f->last = uv_now(f->u->h.loop);
  if (f->work != NULL) {
    to_work(f, data, n);
    return;
  }
  if (f->nq >= EARLY_MAX) {
    srv->stats.udp_dropped++;
  } else {
    early *e = malloc(sizeof(*e) + n);
    if (e == NULL) {
      srv->stats.udp_dropped++;
      return;
    }
    e->next = NULL;
    e->len = n;
    memcpy(e->data, data, n);
    if (f->qtail != NULL)
      f->qtail->next = e;
    else
      f->qhead = e;
    f->qtail = e;
    f->nq++;
  }
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  if (n >= 0 && addr != NULL && !(flags & UV_UDP_PARTIAL))
    from_visitor(h->data, buf->base, (size_t)n, addr);
  if (!(flags & UV_UDP_MMSG_CHUNK))
    np__udpq_flush(); /* the batch is over: what it made leaves in one sendmmsg per socket */
}

static void on_sweep(uv_timer_t *t) {
  udp *u = t->data;
  uint64_t now = uv_now(t->loop);
  flow *f, *next;
  HASH_ITER(hh, u->flows, f, next) {
    if (now - f->last >= srv_of(u)->cfg.udp_idle_timeout_ms && !f->pending)
      flow_close(f, "idle (udp_idle_timeout)");
  }
}

static void on_failed_closed(uv_handle_t *h) {
  free(h->data);
}

static int port_of(const struct sockaddr *sa) {
  return ntohs(sa->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)sa)->sin6_port
                                         : ((const struct sockaddr_in *)sa)->sin_port);
}

static int udp_open(proxy *px, const struct sockaddr *addr) {
  struct np_server *srv = px->srv;
  struct sockaddr_storage ss;
  int n = sizeof(ss), r, want = port_of(addr), shadowed = 0;
  udp *u = calloc(1, sizeof(*u));

  if (u == NULL)
    return UV_ENOMEM;
  u->px = px;
  if ((r = np__auth_random(&u->salt, sizeof(u->salt))) != 0) {
    free(u);
    return r;
  }
  /* The server's table of ports keeps two workers' proxies off one port, as the bind alone did
   * before shadows: a port another server's visitors reach here through a shadow (peer_shadow.c)
   * is bound beside it, and the shadow gives way. */
  if (want != 0 && (r = np__shared_port_claim(srv->shared, 1, want, srv->widx, &shadowed)) != 0) {
    free(u);
    return r;
  }
  if ((r = np__udp_init_batched(px->srv->loop, &u->h)) != 0) {
    np__shared_port_release(srv->shared, 1, want, srv->widx);
    free(u);
    return r;
  }
  u->h.data = u;
  if ((r = shadowed ? np__udp_bind_reuseport(&u->h, addr) : uv_udp_bind(&u->h, addr, 0)) != 0 ||
      (r = uv_udp_getsockname(&u->h, (void *)&ss, &n)) != 0 ||
      (r = uv_udp_recv_start(&u->h, np__udp_alloc, on_recv)) != 0) {
    np__shared_port_release(srv->shared, 1, want, srv->widx);
    uv_close((uv_handle_t *)&u->h, on_failed_closed);
    return r;
  }
  if (want == 0) /* the kernel's pick: nobody else has it bound */
    np__shared_port_take(srv->shared, 1, port_of((struct sockaddr *)&ss), srv->widx);
  /* Every visitor of the proxy shares this socket: room for bursts (best effort; the kernel caps it
   * at net.core.rmem_max). */
  memcpy(&u->local, &ss, sizeof(ss));
  int size = RCVBUF;
  uv_recv_buffer_size((uv_handle_t *)&u->h, &size);
  px->port = port_of((struct sockaddr *)&ss);
  uv_timer_init(px->srv->loop, &u->sweep);
  u->sweep.data = u;
  uint64_t every = px->srv->cfg.udp_idle_timeout_ms / 4 + 1;
  uv_timer_start(&u->sweep, on_sweep, every, every);
  px->impl = u;
  return 0;
}

static void on_part_closed(uv_handle_t *h) {
  udp *u = h->data;
  if (--u->closes_left > 0)
    return;
  np__proxy_closed(u->px);
  free(u);
}

/* Close px's flows and socket. */
static void udp_close(proxy *px) {
  udp *u = px->impl;
  flow *f, *next;
  HASH_ITER(hh, u->flows, f, next)
  flow_close(f, NULL);
  u->closes_left = 2;
  np__udp_close(&u->h, on_part_closed); /* the socket is closed on return: the port is free */
  np__shared_port_release(px->srv->shared, 1, px->port, px->srv->widx);
  uv_close((uv_handle_t *)&u->sweep, on_part_closed);
}

/* ---- visitors forwarded by another server of the cluster ------------------------------------ */

static void on_peer_dgram(void *arg, const char *data, size_t len) {
  flow_in(arg, data, len);
}

static void peer_read(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  flow *f = c->data;
  if (n < 0)
    flow_close(f, n == UV_EOF ? "the other server ended it" : np_strerror((int)n));
  else if (np__dgram_feed(&f->pparser, buf->base, (size_t)n, on_peer_dgram, f) != 0)
    flow_close(f, "malformed datagram frame from the other server");
  np__udpq_flush(); /* what went to the datagram path borrows buf */
}

/* A visitor of this loop's proxy on port, whose datagrams c carries (a peer's stream, or a
 * socketpair from the worker that holds the peer's link): a flow of its own. 0 (c taken, whatever
 * became of the flow), or UV_ENOENT (no such proxy here; c untouched). */
static int arrive_peer(struct np_server *srv, np_conn *c, int port, const struct sockaddr *from,
                       const struct sockaddr *to) {
  proxy *px = NULL;
  flow *f;

  for (session *s = srv->sessions; s != NULL && px == NULL; s = s->next)
    for (proxy *p = s->proxies; p != NULL && px == NULL; p = p->next)
      if (p->type == &np__proxy_udp && p->port == port && p->impl != NULL)
        px = p;
  if (px == NULL)
    return UV_ENOENT;
  srv->stats.visitors_total++;
  if (!np__proxy_admits(px, from)) {
    np__conn_abort(c, NULL);
    return 0;
  }
  if ((f = flow_new(px->impl, from, to, c)) == NULL)
    return 0; /* counted; c closed */
  c->data = f;
  if (np__conn_read_start(c, work_alloc, peer_read) != 0)
    flow_close(f, "cannot read the other server's stream");
  return 0;
}

static int udp_forwarded(struct np_server *srv, np_conn *c, const np_msg *fwd,
                         const struct sockaddr *from, const struct sockaddr *to) {
  return np__port_forwarded(srv, c, 1, fwd->port, from, to, arrive_peer);
}

static void udp_adopt(struct np_server *srv, np_conn *c, const char *pre, size_t len,
                      unsigned port) {
  (void)pre;
  (void)len;
  np__port_adopt(srv, c, (int)port, arrive_peer);
}

/* ---- the server's datagram path (udp_path.c) ----------------------------------------------- */

/* It listens on the control port's number over UDP; without it, UDP proxies still work over the
 * tunnel. Only the native codec has the session keys it needs. */
static int server_start(struct np_server *srv, const struct sockaddr *control) {
  static const np__upath_handlers handlers = {.ready = path_ready, .from_path = from_path};
  int r;

  /* On every worker of a group: the packets are steered to their session's (udp_path.c). */
  if (!native(srv))
    return 0;
  if ((r = np__upath_open(srv, control, &handlers)) != 0)
    np__log(&srv->log, NP_LOG_WARN,
            "datagram path off: cannot bind UDP port %d (%s); UDP proxies use the tunnel",
            srv->port, np_strerror(r));
  return 0; /* the server runs without it */
}

const np__proxy_type np__proxy_udp = {
    .name = "udp",
    .kind = NP_PROXY_UDP,
    .server_start = server_start,
    .server_stop = np__upath_close,
    .session_end = np__upath_forget_session,
    .open = udp_open,
    .close = udp_close,
    .visitor_id = udp_visitor_id,
    .join = udp_join,
    .drop = udp_drop,
    .forwarded = udp_forwarded,
    .adopt = udp_adopt,
};
