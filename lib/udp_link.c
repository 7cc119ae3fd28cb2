#include "udp_link.h"

#include <stdlib.h>
#include <string.h>

#include "udp_batch.h"

#define PROBE_EVERY_MS 1000 /* while finding out */
#define PROBES         3    /* unanswered, and the path is down */

enum lstate { L_PROBING, L_UP, L_DOWN };

struct np__ulink {
  uv_udp_t h;
  uv_timer_t timer;
  np__seal seal;
  const np__logger *log;
  np__ulink_stats *stats;
  char server[64];
  enum lstate state;
  uint64_t keepalive_ms, retry_ms;
  uint64_t last_ack;
  unsigned probes;       /* sent since the last ack */
  int told_down;         /* logged that UDP does not get through: once at warn, then at debug */
  np__ulink_flow *flows; /* by id */
  np__ulink_cb cb;
  void *arg;
  int closes_left;
};

/* Queued: the caller flushes (a timer right away, a receive batch at its end). */
static void probe(np__ulink *l, uint64_t flow) {
  unsigned char p[4];
  char *tx = np__udpq_room(sizeof(p) + NP_SEAL_OVERHEAD);
  int n;

  np__put_be(p, l->keepalive_ms, 4);
  if (tx == NULL ||
      (n = np__seal_pack(&l->seal, NP_SEAL_PROBE, flow, (char *)p, sizeof(p), tx)) < 0)
    return;
  np__udpq_commit(&l->h, NULL, (size_t)n, NULL, NULL);
  if (flow == 0)
    l->probes++;
}

static void on_timer(uv_timer_t *t);

static void go_down(np__ulink *l, const char *why) {
  if (l->state == L_UP)
    l->cb(l->arg, 0);
  l->state = L_DOWN;
  l->stats->downs++;
  np__log(l->log, l->told_down ? NP_LOG_DEBUG : NP_LOG_WARN,
          "datagram path to %s %s; UDP flows use the tunnel, trying again every %llus", l->server,
          why, (unsigned long long)(l->retry_ms / 1000));
  l->told_down = 1;
  uv_timer_start(&l->timer, on_timer, l->retry_ms, 0);
}

static void tick(np__ulink *l);

static void on_timer(uv_timer_t *t) {
  tick(t->data);
  np__udpq_flush();
}

static void tick(np__ulink *l) {
  uv_timer_t *t = &l->timer;
  switch (l->state) {
  case L_PROBING:
    if (l->probes >= PROBES) {
      go_down(l, "does not answer (UDP blocked on the way?)");
      return;
    }
    probe(l, 0);
    uv_timer_start(t, on_timer, PROBE_EVERY_MS, 0);
    return;
  case L_UP:
    if (l->probes >= 2) { /* two keepalives unanswered */
      go_down(l, "stopped answering");
      return;
    }
    probe(l, 0);
    uv_timer_start(t, on_timer, l->keepalive_ms, 0);
    return;
  case L_DOWN:
    l->state = L_PROBING;
    l->probes = 0;
    probe(l, 0);
    uv_timer_start(t, on_timer, PROBE_EVERY_MS, 0);
    return;
  }
}

static void from_server(np__ulink *l, ssize_t n, const uv_buf_t *buf) {
  np__ulink_flow *f;
  uint64_t flow;
  char *payload;
  size_t plen;
  int type;

  if (np__seal_open(&l->seal, buf->base, (size_t)n, &type, &flow, &payload, &plen) != 0 ||
      type == NP_SEAL_PROBE) {
    l->stats->rejected++;
    return;
  }
  if (type == NP_SEAL_PROBE_ACK) {
    l->last_ack = uv_now(l->h.loop);
    l->probes = 0;
    if (l->state != L_UP) {
      l->state = L_UP;
      l->stats->ups++;
      np__log(l->log, NP_LOG_INFO, "datagram path to %s up: UDP flows use it", l->server);
      l->told_down = 0;
      uv_timer_start(&l->timer, on_timer, l->keepalive_ms, 0);
      /* Flows that started meanwhile: the server sends theirs over the path once told. */
      for (f = l->flows; f != NULL; f = f->hh.next)
        probe(l, f->id);
      l->cb(l->arg, 1);
    }
    return;
  }
  HASH_FIND(hh, l->flows, &flow, sizeof(flow), f);
  if (f != NULL) {
    l->stats->in++;
    f->deliver(f, payload, plen);
  } /* else a flow that ended here before the server noticed: dropped, as UDP would */
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  /* Errors (ECONNREFUSED: nothing on the server's UDP port) are silence: the probes time out. */
  if (n > 0 && addr != NULL && !(flags & UV_UDP_PARTIAL))
    from_server(h->data, n, buf);
  if (!(flags & UV_UDP_MMSG_CHUNK))
    np__udpq_flush(); /* the batch is over: what it made leaves, the buffer is used again */
}

int np__ulink_new(uv_loop_t *loop, const struct sockaddr *server,
                  const unsigned char master[NP_SEAL_MASTER], uint64_t session,
                  uint64_t keepalive_ms, uint64_t retry_ms, const np__logger *log,
                  np__ulink_stats *stats, np__ulink_cb cb, void *arg, np__ulink **out) {
  np__ulink *l = calloc(1, sizeof(*l));
  int r, size = 4 << 20;

  if (l == NULL)
    return UV_ENOMEM;
  if ((r = np__seal_init(&l->seal, master, session, 0)) != 0) {
    free(l);
    return r;
  }
  l->log = log;
  l->stats = stats;
  l->cb = cb;
  l->arg = arg;
  l->keepalive_ms = keepalive_ms;
  l->retry_ms = retry_ms;
  np__addr_str(server, l->server, sizeof(l->server));
  if ((r = np__udp_init_batched(loop, &l->h)) != 0) {
    np__seal_free(&l->seal);
    free(l);
    return r;
  }
  uv_timer_init(loop, &l->timer);
  l->h.data = l->timer.data = l;
  if ((r = uv_udp_connect(&l->h, server)) != 0 ||
      (r = uv_udp_recv_start(&l->h, np__udp_alloc, on_recv)) != 0) {
    np__ulink_close(l);
    return r;
  }
  uv_recv_buffer_size((uv_handle_t *)&l->h, &size);
  size = 4 << 20;
  uv_send_buffer_size((uv_handle_t *)&l->h, &size);
  l->state = L_PROBING;
  probe(l, 0);
  np__udpq_flush();
  uv_timer_start(&l->timer, on_timer, PROBE_EVERY_MS, 0);
  *out = l;
  return 0;
}

static void on_closed(uv_handle_t *h) {
  np__ulink *l = h->data;
  if (--l->closes_left > 0)
    return;
  np__seal_free(&l->seal);
  free(l);
}

void np__ulink_close(np__ulink *l) {
  while (l->flows != NULL)
    np__ulink_detach(l->flows);
  l->closes_left = 2;
  np__udp_close(&l->h, on_closed);
  uv_close((uv_handle_t *)&l->timer, on_closed);
}

int np__ulink_is_up(const np__ulink *l) {
  return l->state == L_UP;
}

void np__ulink_attach(np__ulink *l, np__ulink_flow *f) {
  HASH_ADD(hh, l->flows, id, sizeof(f->id), f);
  if (f->hh.tbl == NULL)
    return; /* out of memory: the tunnel carries it */
  f->link = l;
  if (l->state == L_UP) {
    probe(l, f->id);
    np__udpq_flush();
  }
}

void np__ulink_detach(np__ulink_flow *f) {
  if (f->link == NULL)
    return;
  HASH_DEL(f->link->flows, f);
  f->link = NULL;
}

static void sent(void *arg, size_t len, int status) {
  np__ulink *l = arg;
  (void)len;
  if (status == 0)
    l->stats->out++;
}

int np__ulink_send(np__ulink_flow *f, const char *data, size_t len) {
  np__ulink *l = f->link;
  char *tx;
  int n;

  if (l == NULL || l->state != L_UP)
    return UV_EAGAIN;
  if (len > NP_SEAL_MAX - NP_SEAL_OVERHEAD)
    return UV_EMSGSIZE;
  if ((tx = np__udpq_room(len + NP_SEAL_OVERHEAD)) == NULL)
    return UV_ENOMEM;
  if ((n = np__seal_pack(&l->seal, NP_SEAL_DATA, f->id, data, len, tx)) < 0)
    return n;
  /* Sent with the batch the caller's receive callback flushes, or dropped by a full socket buffer
   * as the path might have. */
  np__udpq_commit(&l->h, NULL, (size_t)n, sent, l);
  return 0;
}
