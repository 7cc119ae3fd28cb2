/* The server's end of the datagram carrier (docs/protocol.md, "Datagram path"): one UDP socket on
 * the control port's number. Clients send sealed packets (udp_seal.c) to it from behind their NAT;
 * a session whose packets keep arriving gets its flows' datagrams back the same way, to the address
 * they came from. Anything that does not open under a live session's keys is dropped and counted,
 * and costs no memory. */
#include <stdlib.h>
#include <string.h>

#include "udp_path.h"

#include "udp_batch.h"

/* uthash in its non-fatal mode (see http_route.c): a session it cannot add is found by the scan. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

/* A session that sent a valid packet, by id (ids are the server's, not a sender's choice). */
typedef struct known {
  uint64_t id;
  session *s;
  UT_hash_handle hh;
} known;

typedef struct np__upath {
  struct np_server *srv;
  const np__upath_handlers *to;
  uv_udp_t h;
  session *last; /* the session of the last valid packet: most packets belong to a busy one */
  known *known;  /* sessions found once, until they end */
} upath;

static int usable(const session *s) {
  return s->state == S_READY && s->seal_ok && !s->closing;
}

/* A session's packets: the last one's, one known by id, or one scanned for (once per session; a
 * packet under an unknown id costs the scan each time, as before the table). */
static session *find_session(upath *p, uint64_t id) {
  known *k;
  if (p->last != NULL && p->last->id == id && p->last->seal_ok && !p->last->closing)
    return p->last;
  HASH_FIND(hh, p->known, &id, sizeof(id), k);
  if (k != NULL)
    return usable(k->s) ? (p->last = k->s) : NULL;
  for (session *s = p->srv->sessions; s != NULL; s = s->next) {
    if (s->id == id && usable(s)) {
      if ((k = malloc(sizeof(*k))) != NULL) {
        k->id = id;
        k->s = s;
        HASH_ADD(hh, p->known, id, sizeof(k->id), k);
        if (k->hh.tbl == NULL)
          free(k);
      }
      return p->last = s;
    }
  }
  return NULL;
}

static void rejected(upath *p, const struct sockaddr *addr, const char *why) {
  struct np_server *srv = p->srv;
  srv->stats.udp_path_rejected++;
  if (srv->log.level >= NP_LOG_TRACE) {
    char a[64];
    np__addr_str(addr, a, sizeof(a));
    np__log(&srv->log, NP_LOG_TRACE, "datagram path: packet from %s dropped: %s", a, why);
  }
}

static void from_client(upath *p, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                        unsigned flags) {
  struct np_server *srv = p->srv;
  uint64_t sid, flow;
  char *payload;
  size_t plen;
  session *s;
  int type, r;

  if ((flags & UV_UDP_PARTIAL) || np__seal_peek(buf->base, (size_t)n, &type, &sid) != 0) {
    rejected(p, addr, "not a packet (truncated, oversized or unknown type)");
    return;
  }
  if ((s = find_session(p, sid)) == NULL) {
    rejected(p, addr, "no such session");
    return;
  }
  r = np__seal_open(&s->seal, buf->base, (size_t)n, &type, &flow, &payload, &plen);
  if (r != 0 || type == NP_SEAL_PROBE_ACK) {
    rejected(p, addr, r == NP_SEAL_EREPLAY ? "replayed" : "does not verify");
    return;
  }
  /* Authentic: this is where the client's datagrams come from now (its NAT may have moved). */
  memcpy(&s->udp_peer, addr,
         addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  if (s->udp_last_rx == 0)
    np__log(&srv->log, NP_LOG_INFO, "client %s: datagram path up", s->name);
  s->udp_last_rx = uv_now(p->h.loop);
  if (type == NP_SEAL_PROBE) {
    /* The payload says how often the client probes: it is gone after three missed. */
    if (plen >= 4)
      s->udp_keepalive_ms = (uint32_t)np__get_be((const unsigned char *)payload, 4);
    if (flow != 0)
      p->to->ready(s, flow);
    char *tx = np__udpq_room(plen + NP_SEAL_OVERHEAD);
    int len = tx != NULL ? np__seal_pack(&s->seal, NP_SEAL_PROBE_ACK, flow, payload, plen, tx) : -1;
    if (len > 0)
      np__udpq_commit(&p->h, addr, (size_t)len, NULL, NULL);
    return;
  }
  srv->stats.udp_path_in++;
  p->to->from_path(s, flow, payload, plen);
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  if (n > 0 && addr != NULL)
    from_client(h->data, n, buf, addr, flags);
  if (!(flags & UV_UDP_MMSG_CHUNK))
    np__udpq_flush(); /* the batch is over: its datagrams leave, the buffer is used again */
}

static void sent(void *arg, size_t len, int status) {
  struct np_server *srv = arg;
  (void)len;
  if (status < 0)
    srv->stats.udp_dropped++; /* a full socket buffer, as the path itself may drop: UDP */
  else
    srv->stats.udp_path_out++;
}

int np__upath_send(session *s, uint64_t flow, const char *data, size_t len) {
  struct np_server *srv = s->srv;
  upath *p = srv->upath;
  uint64_t timeout = 3 * (uint64_t)(s->udp_keepalive_ms ? s->udp_keepalive_ms : 5000) + 1000;
  char *tx;
  int n;

  if (p == NULL || !s->seal_ok || !s->udp_client_up || s->udp_last_rx == 0)
    return UV_EAGAIN;
  if (uv_now(srv->loop) - s->udp_last_rx > timeout) {
    np__log(&srv->log, NP_LOG_INFO, "client %s: datagram path silent for %llums, using the tunnel",
            s->name, (unsigned long long)(uv_now(srv->loop) - s->udp_last_rx));
    s->udp_last_rx = 0;
    return UV_EAGAIN;
  }
  if (len > NP_SEAL_MAX - NP_SEAL_OVERHEAD)
    return UV_EMSGSIZE; /* too large for one packet: the tunnel carries it */
  if ((tx = np__udpq_room(len + NP_SEAL_OVERHEAD)) == NULL)
    return UV_ENOMEM;
  if ((n = np__seal_pack(&s->seal, NP_SEAL_DATA, flow, data, len, tx)) < 0)
    return n;
  /* Sealed into the queue's memory: sent with the batch (the caller's receive or read callback
   * flushes it). */
  np__udpq_commit(&p->h, (struct sockaddr *)&s->udp_peer, (size_t)n, sent, srv);
  return 0;
}

static void on_failed(uv_handle_t *h) {
  free(h->data);
}

int np__upath_open(struct np_server *srv, const struct sockaddr *addr,
                   const np__upath_handlers *to) {
  upath *p = calloc(1, sizeof(*p));
  int r, size = 4 << 20;

  if (p == NULL)
    return UV_ENOMEM;
  p->srv = srv;
  p->to = to;
  if ((r = np__udp_init_batched(srv->loop, &p->h)) != 0) {
    free(p);
    return r;
  }
  p->h.data = p;
  if ((r = uv_udp_bind(&p->h, addr, 0)) != 0 ||
      (r = uv_udp_recv_start(&p->h, np__udp_alloc, on_recv)) != 0) {
    uv_close((uv_handle_t *)&p->h, on_failed);
    return r;
  }
  /* Every client's datagrams share it: room for bursts (capped by net.core.rmem_max). */
  uv_recv_buffer_size((uv_handle_t *)&p->h, &size);
  size = 4 << 20;
  uv_send_buffer_size((uv_handle_t *)&p->h, &size);
  srv->upath = p;
  srv->refs++;
  return 0;
}

static void on_closed(uv_handle_t *h) {
  upath *p = h->data;
  struct np_server *srv = p->srv;
  known *k, *tmp;
  HASH_ITER(hh, p->known, k, tmp) {
    HASH_DEL(p->known, k);
    free(k);
  }
  free(p);
  np__server_unref(srv);
}

void np__upath_close(struct np_server *srv) {
  if (srv->upath == NULL)
    return;
  np__udp_close(&srv->upath->h, on_closed);
  srv->upath = NULL;
}

void np__upath_forget_session(session *s) {
  upath *p = s->srv->upath;
  known *k;
  if (p == NULL)
    return;
  if (p->last == s)
    p->last = NULL;
  HASH_FIND(hh, p->known, &s->id, sizeof(s->id), k);
  if (k != NULL && k->s == s) {
    HASH_DEL(p->known, k);
    free(k);
  }
}
