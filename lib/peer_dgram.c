/* A UDP shadow (peer.h): worker 0's socket on a UDP port another server of the cluster holds. Each
 * visitor address is a flow; its datagrams cross to the owner as a forwarded visitor does (peer.c:
 * FORWARD on a stream of the link, then the relay), framed as on a UDP proxy's work connection
 * (dgram.h). peer.c relays byte streams, so each flow hands it one end of a socketpair and keeps
 * the other: datagrams go in framed, the owner's replies come out framed and leave from this
 * socket, to the visitor's address. Datagrams are dropped, never queued without bound. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "peer.h"

#include "auth.h"
#include "conn_move.h"
#include "dgram.h"
#include "udp_batch.h"

#define RCVBUF     (1 << 20)
#define MAX_QUEUED (256 * 1024) /* bytes written to a flow's socketpair, not yet taken */

typedef struct dkey {
  uint32_t salt;
  uint16_t family, port;
  unsigned char ip[16];
} dkey;

typedef struct dflow {
  np__dshadow *d;
  np_conn *c; /* this side of its socketpair; peer.c holds the other */
  struct sockaddr_storage addr;
  dkey key;
  np__dgram_parser parser;
  size_t queued;
  uint64_t last;
  int closing;
  UT_hash_handle hh;
} dflow;

struct np__dshadow {
  struct np_server *srv;
  uv_udp_t h;
  int port;
  uint32_t salt;
  dflow *flows;
  size_t n;        /* flows, closing ones included */
  int closes_left; /* once closing: the flows' conns and the socket */
  void (*done)(void *arg);
  void *done_arg;
};

typedef struct dout {
  np_conn_write req;
  dflow *f;
  size_t len;
  unsigned char bytes[];
} dout;

static void make_key(const np__dshadow *d, const struct sockaddr *sa, dkey *k) {
  memset(k, 0, sizeof(*k));
  k->salt = d->salt;
  k->family = sa->sa_family;
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)sa;
    k->port = a->sin6_port;
    memcpy(k->ip, &a->sin6_addr, 16);
  } else {
    const struct sockaddr_in *a = (const void *)sa;
    k->port = a->sin_port;
    memcpy(k->ip, &a->sin_addr, 4);
  }
}

static void maybe_done(np__dshadow *d) {
  if (d->done == NULL || --d->closes_left > 0)
    return;
  d->done(d->done_arg);
  free(d);
}

static void on_flow_closed(np_conn *c) {
  dflow *f = c->data;
  np__dshadow *d = f->d;

  np__dgram_parser_free(&f->parser);
  free(f);
  d->n--;
  if (d->done != NULL)
    maybe_done(d);
}

static void flow_close(dflow *f) {
  if (f->closing)
    return;
  f->closing = 1;
  HASH_DEL(f->d->flows, f);
  np__conn_close(f->c, on_flow_closed);
}

static void on_written(np_conn_write *req, int status) {
  dout *o = NP_CONTAINER_OF(req, dout, req);
  (void)status;
  o->f->queued -= o->len;
  free(o);
}

/* A datagram of the visitor's, framed into its flow's socketpair. */
static void to_flow(dflow *f, const char *data, size_t len) {
  struct np_server *srv = f->d->srv;
  dout *o;
  uv_buf_t b;

  if (f->queued + NP_DGRAM_HDR_LEN + len > MAX_QUEUED || len > NP_DGRAM_MAX ||
      (o = malloc(sizeof(*o) + NP_DGRAM_HDR_LEN + len)) == NULL) {
    srv->stats.udp_dropped++; /* over IPv6 a datagram may be longer than a frame can say */
    return;
  }
  np__dgram_hdr(len, o->bytes);
  memcpy(o->bytes + NP_DGRAM_HDR_LEN, data, len);
  o->f = f;
  o->len = NP_DGRAM_HDR_LEN + len;
  b = uv_buf_init((char *)o->bytes, (unsigned)o->len);
  if (np__conn_write(f->c, &o->req, &b, 1, on_written) != 0) {
    free(o);
    srv->stats.udp_dropped++;
    return;
  }
  f->queued += o->len;
}

static void to_visitor_done(void *arg, size_t len, int status) {
  np__dshadow *d = arg;
  (void)len;
  if (status < 0)
    d->srv->stats.udp_dropped++;
}

/* A reply from the owner: to the visitor, from this socket. */
static void on_reply(void *arg, const char *data, size_t len) {
  dflow *f = arg;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

  f->last = uv_now(f->d->h.loop);
  np__udpq_add(&f->d->h, (const struct sockaddr *)&f->addr, &b, 1, to_visitor_done, f->d);
}

static void flow_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  char *rx = np__scratch(NP_SCRATCH_UDP_WORK, 65536);
  (void)c;
  (void)suggested;
  *buf = uv_buf_init(rx, rx != NULL ? 65536 : 0);
}

static void flow_read(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  dflow *f = c->data;

  /* The end: the owner ended it, refused it, or could not be reached (peer.c logged why). */
  if (n < 0 || np__dgram_feed(&f->parser, buf->base, (size_t)n, on_reply, f) != 0)
    flow_close(f);
  np__udpq_flush(); /* before buf is read into again */
}

/* A flow for a new visitor address: a socketpair, whose far end peer.c forwards as a visitor of
 * udp:PORT. NULL when it cannot be (counted, dropped). */
static dflow *flow_new(np__dshadow *d, const struct sockaddr *addr) {
  struct np_server *srv = d->srv;
  np_msg fwd = {.type = NP_MSG_FORWARD, .kind = NP_PROXY_UDP, .port = (uint16_t)d->port};
  struct sockaddr_storage local;
  int sv[2], n = sizeof(local);
  np__moved mv;
  dflow *f;

  if (d->n >= srv->cfg.udp_max_flows || srv->forward == NULL || (f = calloc(1, sizeof(*f))) == NULL)
    return NULL;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    free(f);
    return NULL;
  }
  if (np__conn_tcp_new(srv->loop, &f->c) != 0) {
    close(sv[0]);
    close(sv[1]);
    free(f);
    return NULL;
  }
  /* libuv's TCP handle carries any stream socket (as np__server_bridge's do). */
  if (uv_tcp_open(np__conn_tcp_handle(f->c), sv[0]) != 0) {
    np__conn_close(f->c, NULL);
    close(sv[0]);
    close(sv[1]);
    free(f);
    return NULL;
  }
  f->d = d;
  f->c->data = f;
  f->last = uv_now(srv->loop);
  memcpy(&f->addr, addr,
         addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  np__dgram_parser_init(&f->parser);
  make_key(d, addr, &f->key);
  np__addr_str(addr, fwd.name, sizeof(fwd.name));
  if (uv_udp_getsockname(&d->h, (struct sockaddr *)&local, &n) == 0)
    np__addr_str((struct sockaddr *)&local, fwd.addr, sizeof(fwd.addr));
  np__moved_init(&mv);
  mv.fd = sv[1];
  memcpy(&mv.peer, &f->addr, sizeof(f->addr) < sizeof(mv.peer) ? sizeof(f->addr) : sizeof(mv.peer));
  d->n++;
  HASH_ADD(hh, d->flows, key, sizeof(f->key), f);
  if (f->hh.tbl == NULL || srv->forward(srv, &fwd, &mv) != 0) { /* peer.c, through the hook */
    srv->stats.visitors_refused++;
    np__moved_free(&mv);
    if (f->hh.tbl != NULL)
      HASH_DEL(d->flows, f);
    f->closing = 1;
    np__conn_close(f->c, on_flow_closed);
    return NULL;
  }
  if (np__conn_read_start(f->c, flow_alloc, flow_read) != 0) {
    flow_close(f);
    return NULL;
  }
  return f;
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  np__dshadow *d = h->data;
  dkey k;
  dflow *f;

  if (n >= 0 && addr != NULL && !(flags & UV_UDP_PARTIAL) && d->done == NULL &&
      (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    make_key(d, addr, &k);
    HASH_FIND(hh, d->flows, &k, sizeof(k), f);
    if (f == NULL && (f = flow_new(d, addr)) == NULL)
      d->srv->stats.udp_dropped++;
    if (f != NULL) {
      f->last = uv_now(h->loop);
      to_flow(f, buf->base, (size_t)n);
    }
  }
  if (!(flags & UV_UDP_MMSG_CHUNK))
    np__udpq_flush();
}

static void on_failed_closed(uv_handle_t *h) {
  free(h->data);
}

int np__dshadow_open(struct np_server *srv, const struct sockaddr *addr, int port,
                     np__dshadow **out) {
  np__dshadow *d = calloc(1, sizeof(*d));
  int r, size = RCVBUF;

  if (d == NULL)
    return UV_ENOMEM;
  d->srv = srv;
  d->port = port;
  if ((r = np__auth_random(&d->salt, sizeof(d->salt))) != 0 ||
      (r = np__udp_init_batched(srv->loop, &d->h)) != 0) {
    free(d);
    return r;
  }
  d->h.data = d;
  if ((r = np__udp_bind_reuseport(&d->h, addr)) != 0 ||
      (r = uv_udp_recv_start(&d->h, np__udp_alloc, on_recv)) != 0) {
    uv_close((uv_handle_t *)&d->h, on_failed_closed);
    return r;
  }
  uv_recv_buffer_size((uv_handle_t *)&d->h, &size);
  *out = d;
  return 0;
}

void np__dshadow_sweep(np__dshadow *d) {
  uint64_t now = uv_now(d->h.loop);
  dflow *f, *tmp;

  HASH_ITER(hh, d->flows, f, tmp) {
    if (now - f->last >= d->srv->cfg.udp_idle_timeout_ms)
      flow_close(f);
  }
}

static void on_socket_closed(uv_handle_t *h) {
  maybe_done(h->data);
}

void np__dshadow_close(np__dshadow *d, void (*done)(void *arg), void *arg) {
  dflow *f, *tmp;

  d->done = done;
  d->done_arg = arg;
  HASH_ITER(hh, d->flows, f, tmp) {
    flow_close(f);
  }
  d->closes_left = (int)d->n + 1;
  np__udp_close(&d->h, on_socket_closed); /* the port is free on return */
}
