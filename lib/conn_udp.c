/* A connected UDP socket as an np_conn, so a UDP flow on the client rides the same join as a TCP
 * one: what it reads is each datagram framed as dgram.c frames, what is written to it is parsed
 * back into datagrams and sent. UDP keeps its nature underneath: a datagram the socket cannot take
 * now is dropped, never queued, and backpressure from the tunnel leaves datagrams to the kernel's
 * receive buffer, which drops the excess. The flow ends (EOF) after idle_ms without a datagram
 * either way, or when the tunnel side ends it (UDP has no half-close to pass on). Datagrams come
 * in recvmmsg batches and leave in sendmmsg batches (udp_batch.h); a reader that stops in the
 * middle of a batch gets the rest of it when it reads again, as the kernel would have kept them. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "dgram.h"
#include "internal.h"
#include "udp_batch.h"
#include "udp_link.h"

_Static_assert(NP_DGRAM_HDR_LEN <= NP_UDP_HEADROOM, "a frame header fits before a datagram");

/* A datagram of a batch that came after its reader stopped, framed. */
typedef struct held {
  struct held *next;
  size_t len;
  char frame[];
} held;

typedef struct udp_conn {
  np_conn c;
  uv_udp_t h;
  uv_timer_t idle;  /* checks for silence every idle_ms / 4 */
  uv_timer_t defer; /* completes writes and shutdowns, delivers EOF: never inside the call */
  struct sockaddr_storage peer;
  np__dgram_parser parser;
  np__ulink_flow lf; /* on the datagram path, when the client has one */
  char prefix[128]; /* sent before every datagram's bytes (a PROXY v2 header), prefix_len of them */
  size_t prefix_len;
  uint64_t idle_ms, last;
  np_conn_write *wq_head, *wq_tail; /* written, to complete on the next turn (linked by uv.data) */
  held *held_head, *held_tail;      /* for the reader when it reads again */
  np_conn_shutdown_cb shutdown_cb;
  np_conn_close_cb close_cb;
  int closes_left;
  unsigned reading : 1, ended : 1, eof_sent : 1, shutdown_pending : 1, closing : 1;
  unsigned in_batch : 1;  /* between a recvmmsg's first datagram and its end */
  unsigned receiving : 1; /* uv_udp_recv_start is in force */
} udp_conn;

static void deliver_frame(udp_conn *u, char *frame, size_t len);

static void recv_stop(udp_conn *u) {
  u->receiving = 0;
  uv_udp_recv_stop(&u->h);
}

static void deliver_eof(udp_conn *u) {
  if (u->ended && u->reading && !u->eof_sent && !u->closing) {
    u->eof_sent = 1;
    recv_stop(u);
    u->c.read_cb(&u->c, UV_EOF, &(uv_buf_t){0});
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags);

/* What a stopped reader left of a batch, then the socket again. */
static void deliver_held(udp_conn *u) {
  held *d;
  while ((d = u->held_head) != NULL && u->reading && !u->closing) {
    u->held_head = d->next;
    if (u->held_head == NULL)
      u->held_tail = NULL;
    deliver_frame(u, d->frame, d->len);
    free(d);
  }
  if (u->held_head == NULL && u->reading && !u->closing && !u->ended && !u->receiving &&
      uv_udp_recv_start(&u->h, on_alloc, on_recv) == 0)
    u->receiving = 1;
}

static void on_defer(uv_timer_t *t) {
  udp_conn *u = t->data;
  np_conn_write *req;

  while ((req = u->wq_head) != NULL && !u->closing) {
    u->wq_head = req->uv.data;
    if (u->wq_head == NULL)
      u->wq_tail = NULL;
    req->cb(req, 0);
  }
  if (u->shutdown_pending && !u->closing) {
    u->shutdown_pending = 0;
    u->shutdown_cb(&u->c, 0);
  }
  deliver_held(u);
  deliver_eof(u);
}

static void end(udp_conn *u) {
  u->ended = 1;
  uv_timer_start(&u->defer, on_defer, 0, 0);
}

static void on_idle_check(uv_timer_t *t) {
  udp_conn *u = t->data;
  if (uv_now(t->loop) - u->last >= u->idle_ms) {
    uv_timer_stop(t);
    end(u);
  }
}

/* ---- reading: a datagram in, a frame out ---------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  np__udp_alloc(h, suggested, buf); /* with room for the frame's header before each datagram */
}

/* A reader that must have its own memory gets the frame in as many pieces as it asks for. */
static void deliver_copied(udp_conn *u, const char *frame, size_t len) {
  while (len > 0 && u->reading && !u->closing) {
    uv_buf_t b = uv_buf_init(NULL, 0);
    size_t n;
    u->c.alloc_cb(&u->c, len, &b);
    if (b.base == NULL || b.len == 0) {
      u->c.read_cb(&u->c, UV_ENOBUFS, &b);
      return;
    }
    n = b.len < len ? b.len : len;
    memcpy(b.base, frame, n);
    frame += n;
    len -= n;
    u->c.read_cb(&u->c, (ssize_t)n, &b);
  }
}

static void deliver_frame(udp_conn *u, char *frame, size_t len) {
  if (u->c.borrow)
    u->c.read_cb(&u->c, (ssize_t)len, &(uv_buf_t){frame, len});
  else
    deliver_copied(u, frame, len);
}

/* The reader stopped inside this batch: keep the datagram for when it reads again. */
static void hold(udp_conn *u, const char *frame, size_t len) {
  held *d = malloc(sizeof(*d) + len);
  if (d == NULL)
    return; /* dropped, as a full receive buffer would */
  d->next = NULL;
  d->len = len;
  memcpy(d->frame, frame, len);
  if (u->held_tail != NULL)
    u->held_tail->next = d;
  else
    u->held_head = d;
  u->held_tail = d;
}

static void from_service(udp_conn *u, ssize_t n, const uv_buf_t *buf) {
  char *frame = buf->base - NP_DGRAM_HDR_LEN;

  u->last = uv_now(u->h.loop);
  if (u->lf.link != NULL && np__ulink_send(&u->lf, buf->base, (size_t)n) == 0)
    return;
  np__dgram_hdr((size_t)n, (unsigned char *)frame);
  if (u->reading && u->held_head == NULL)
    deliver_frame(u, frame, (size_t)n + NP_DGRAM_HDR_LEN);
  else
    hold(u, frame, (size_t)n + NP_DGRAM_HDR_LEN);
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  udp_conn *u = h->data;

  /* ECONNREFUSED: an ICMP port unreachable from the local service (not started yet, restarting):
   * the flow stays, as a UDP socket would. A truncated datagram (larger than 64 KiB) is dropped. */
  u->in_batch = (flags & UV_UDP_MMSG_CHUNK) != 0;
  if (n >= 0 && !(n == 0 && addr == NULL) && !(flags & UV_UDP_PARTIAL) && !u->closing && !u->ended)
    from_service(u, n, buf);
  if (!u->in_batch) {
    np__udpq_flush(); /* the batch is over: the sealed packets it made leave together */
    if (!u->reading && u->receiving && !u->closing)
      recv_stop(u); /* the reader stopped inside the batch */
  }
}

static int udp_read_start(np_conn *c) {
  udp_conn *u = (udp_conn *)c;
  int r;
  u->reading = 1;
  if (u->ended || u->held_head != NULL) {
    uv_timer_start(&u->defer, on_defer, 0, 0);
    return 0;
  }
  if (u->receiving)
    return 0; /* stopped and started again inside one batch */
  if ((r = uv_udp_recv_start(&u->h, on_alloc, on_recv)) == 0)
    u->receiving = 1;
  return r;
}

static int udp_read_stop(np_conn *c) {
  udp_conn *u = (udp_conn *)c;
  u->reading = 0;
  /* Inside a batch, libuv would drop the rest of it: the batch's end stops the socket. */
  if (!u->in_batch && u->receiving)
    recv_stop(u);
  return 0;
}

/* ---- writing: frames in, datagrams out ------------------------------------------------------ */

np__ulink_flow *np__conn_udp_flow(np_conn *c) {
  return c->ops->read_start == udp_read_start ? &((udp_conn *)c)->lf : NULL;
}

int np__conn_udp_set_prefix(np_conn *c, const char *prefix, size_t len) {
  udp_conn *u = (udp_conn *)c;
  if (c->ops->read_start != udp_read_start || len > sizeof(u->prefix))
    return UV_EINVAL;
  memcpy(u->prefix, prefix, len);
  u->prefix_len = len;
  return 0;
}

/* One datagram to the peer, after the prefix. Full socket buffer (EAGAIN), the service's port
 * closed (ECONNREFUSED), too big with the prefix (EMSGSIZE): dropped, as on a path. */
static void send_one(udp_conn *u, const char *data, size_t len) {
  uv_buf_t b[2] = {uv_buf_init(u->prefix, (unsigned)u->prefix_len),
                   uv_buf_init((char *)data, (unsigned)len)};
  /* Borrowed until the flush at the end of the write or of the link's receive batch. */
  np__udpq_add(&u->h, NULL, u->prefix_len > 0 ? b : b + 1, u->prefix_len > 0 ? 2 : 1, NULL, NULL);
  u->last = uv_now(u->h.loop);
}

static void inject(np__ulink_flow *f, const char *data, size_t len) {
  udp_conn *u = (udp_conn *)((char *)f - offsetof(udp_conn, lf));
  if (!u->ended && !u->closing)
    send_one(u, data, len);
}

static void send_dgram(void *arg, const char *data, size_t len) {
  udp_conn *u = arg;
  if (!u->ended)
    send_one(u, data, len);
  else
    u->last = uv_now(u->h.loop);
}

static int feed(udp_conn *u, const uv_buf_t *bufs, unsigned nbufs, size_t *total) {
  int r = 0;
  *total = 0;
  for (unsigned i = 0; i < nbufs && r == 0; i++) {
    r = np__dgram_feed(&u->parser, bufs[i].base, bufs[i].len, send_dgram, u);
    *total += bufs[i].len;
  }
  np__udpq_flush(); /* the datagrams lie in the writer's buffers */
  return r;
}

static int udp_try_write(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  size_t total;
  int r = feed((udp_conn *)c, bufs, nbufs, &total);
  return r != 0 ? r : (int)total;
}

static int udp_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  udp_conn *u = (udp_conn *)c;
  size_t total;
  int r;

  if (u->closing)
    return UV_EPIPE;
  if ((r = feed(u, bufs, nbufs, &total)) != 0)
    return r;
  req->uv.data = NULL;
  if (u->wq_tail != NULL)
    u->wq_tail->uv.data = req;
  else
    u->wq_head = req;
  u->wq_tail = req;
  uv_timer_start(&u->defer, on_defer, 0, 0);
  return 0;
}

static int udp_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  udp_conn *u = (udp_conn *)c;
  if (u->shutdown_pending || u->closing)
    return UV_EALREADY;
  u->shutdown_cb = cb;
  u->shutdown_pending = 1;
  end(u); /* the tunnel ended the flow: reading ends too */
  return 0;
}

/* ---- closing -------------------------------------------------------------------------------- */

static void on_part_closed(uv_handle_t *h) {
  udp_conn *u = h->data;
  np_conn_write *req;

  if (--u->closes_left > 0)
    return;
  /* Writes still waiting to be completed: their callbacks run once, as promised. */
  while ((req = u->wq_head) != NULL) {
    u->wq_head = req->uv.data;
    req->cb(req, UV_ECANCELED);
  }
  while (u->held_head != NULL) {
    held *d = u->held_head;
    u->held_head = d->next;
    free(d);
  }
  np__dgram_parser_free(&u->parser);
  if (u->close_cb != NULL)
    u->close_cb(&u->c);
  free(u);
}

static void udp_close(np_conn *c, np_conn_close_cb cb) {
  udp_conn *u = (udp_conn *)c;
  if (u->closing)
    return;
  u->closing = 1;
  np__ulink_detach(&u->lf);
  u->close_cb = cb;
  u->closes_left = 3;
  np__udp_close(&u->h, on_part_closed);
  uv_close((uv_handle_t *)&u->idle, on_part_closed);
  uv_close((uv_handle_t *)&u->defer, on_part_closed);
}

static void udp_peer_str(np_conn *c, char *buf, size_t len) {
  char addr[64];
  np__addr_str((struct sockaddr *)&((udp_conn *)c)->peer, addr, sizeof(addr));
  snprintf(buf, len, "udp %s", addr);
}

static const np_conn_ops udp_ops = {
    .read_start = udp_read_start,
    .read_stop = udp_read_stop,
    .write = udp_write,
    .try_write = udp_try_write,
    .shutdown = udp_shutdown,
    .close = udp_close,
    .abort = udp_close,
    .peer_str = udp_peer_str,
};

int np__conn_udp_new(uv_loop_t *loop, const struct sockaddr *peer, uint64_t idle_ms,
                     np_conn **out) {
  udp_conn *u = calloc(1, sizeof(*u));
  int r;

  if (u == NULL)
    return UV_ENOMEM;
  u->c.ops = &udp_ops;
  u->lf.deliver = inject;
  u->idle_ms = idle_ms;
  u->last = uv_now(loop);
  memcpy(&u->peer, peer,
         peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  np__dgram_parser_init(&u->parser);
  if ((r = np__udp_init_batched(loop, &u->h)) != 0) {
    free(u);
    return r;
  }
  uv_timer_init(loop, &u->idle);
  uv_timer_init(loop, &u->defer);
  u->h.data = u->idle.data = u->defer.data = u;
  if ((r = uv_udp_connect(&u->h, peer)) != 0) {
    udp_close(&u->c, NULL);
    return r;
  }
  int size = 1 << 20; /* a burst from the service waits here while the tunnel catches up */
  uv_recv_buffer_size((uv_handle_t *)&u->h, &size);
  uv_timer_start(&u->idle, on_idle_check, idle_ms / 4 + 1, idle_ms / 4 + 1);
  *out = &u->c;
  return 0;
}
