/* The server's end of the datagram carrier (docs/protocol.md, "Datagram path"): one UDP socket on
 * the control port's number. Clients send sealed packets (udp_seal.c) to it from behind their NAT;
 * a session whose packets keep arriving gets its flows' datagrams back the same way, to the address
 * they came from. Anything that does not open under a live session's keys is dropped and counted,
 * and costs no memory. */
#include <stdlib.h>
#include <string.h>

#include "udp_path.h"

typedef struct np__upath {
  struct np_server *srv;
  const np__upath_handlers *to;
  uv_udp_t h;
  session *last; /* the session of the last valid packet: most packets belong to a busy one */
} upath;

/* The packet being sent, per thread as a loop is. */
static _Thread_local char tx[NP_SEAL_MAX];

static session *find_session(upath *p, uint64_t id) {
  if (p->last != NULL && p->last->id == id && p->last->seal_ok && !p->last->closing)
    return p->last;
  for (session *s = p->srv->sessions; s != NULL; s = s->next)
    if (s->id == id && s->state == S_READY && s->seal_ok && !s->closing)
      return p->last = s;
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

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  upath *p = h->data;
  struct np_server *srv = p->srv;
  uint64_t sid, flow;
  char *payload;
  size_t plen;
  session *s;
  int type, r;

  if (n <= 0 || addr == NULL)
    return;
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
  s->udp_last_rx = uv_now(h->loop);
  if (type == NP_SEAL_PROBE) {
    /* The payload says how often the client probes: it is gone after three missed. */
    if (plen >= 4)
      s->udp_keepalive_ms = (uint32_t)np__get_be((const unsigned char *)payload, 4);
    if (flow != 0)
      p->to->ready(s, flow);
    int len = np__seal_pack(&s->seal, NP_SEAL_PROBE_ACK, flow, payload, plen, tx);
    uv_buf_t b = uv_buf_init(tx, (unsigned)len);
    if (len > 0)
      uv_udp_try_send(&p->h, &b, 1, addr);
    return;
  }
  srv->stats.udp_path_in++;
  p->to->from_path(s, flow, payload, plen);
}

int np__upath_send(session *s, uint64_t flow, const char *data, size_t len) {
  struct np_server *srv = s->srv;
  upath *p = srv->upath;
  uint64_t timeout = 3 * (uint64_t)(s->udp_keepalive_ms ? s->udp_keepalive_ms : 5000) + 1000;
  uv_buf_t b;
  int n;

  if (p == NULL || !s->seal_ok || !s->udp_client_up || s->udp_last_rx == 0)
    return UV_EAGAIN;
  if (uv_now(srv->loop) - s->udp_last_rx > timeout) {
    np__log(&srv->log, NP_LOG_INFO, "client %s: datagram path silent for %llums, using the tunnel",
            s->name, (unsigned long long)(uv_now(srv->loop) - s->udp_last_rx));
    s->udp_last_rx = 0;
    return UV_EAGAIN;
  }
  if ((n = np__seal_pack(&s->seal, NP_SEAL_DATA, flow, data, len, tx)) < 0)
    return n; /* too large for one packet: the tunnel carries it */
  b = uv_buf_init(tx, (unsigned)n);
  /* A full socket buffer drops the datagram, as the path itself may: UDP. */
  if (uv_udp_try_send(&p->h, &b, 1, (struct sockaddr *)&s->udp_peer) < 0)
    srv->stats.udp_dropped++;
  else
    srv->stats.udp_path_out++;
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
  uv_udp_init(srv->loop, &p->h);
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
  free(p);
  np__server_unref(srv);
}

void np__upath_close(struct np_server *srv) {
  if (srv->upath == NULL)
    return;
  uv_close((uv_handle_t *)&srv->upath->h, on_closed);
  srv->upath = NULL;
}

void np__upath_forget_session(session *s) {
  if (s->srv->upath != NULL && s->srv->upath->last == s)
    s->srv->upath->last = NULL;
}
