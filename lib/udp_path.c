/* The server's end of the datagram carrier (docs/protocol.md, "Datagram path"): one UDP socket on
 * the control port's number. Clients send sealed packets (udp_seal.c) to it from behind their NAT;
 * a session whose packets keep arriving gets its flows' datagrams back the same way, to the address
 * they came from. Anything that does not open under a live session's keys is dropped and counted,
 * and costs no memory.
 *
 * In a group of workers each has one, all on that port with SO_REUSEPORT: a cBPF program on the
 * first hands each packet to the socket of the worker that holds its session, and one that lands
 * elsewhere anyway is handed to that worker's thread (group_udp): each worker touches its own
 * sessions only, and answers from its own socket, which has the same address and port. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/filter.h>

#include "udp_path.h"

#include "stun.h"
#include "udp_batch.h"

/* STUN answers a worker sends in a second at most: a spoofed source can be sent no more than this
 * many (each 32 or 44 bytes, for a request of at least 20). */
#define STUN_PER_SECOND 500

typedef struct np__upath {
  struct np_server *srv;
  const np__upath_handlers *to;
  uv_udp_t h;
  session *last; /* the session of the last valid packet: most packets belong to a busy one */
  uint64_t stun_second; /* the second (loop time) stun_sent counts in */
  unsigned stun_sent;
} upath;

static int usable(const session *s) {
  return s->state == S_READY && s->seal_ok && !s->closing;
}

/* A session's packets: the last one's, or the one the server's table has under that id (an id
 * nobody has costs a lookup, not a walk over every session). */
static session *find_session(upath *p, uint64_t id) {
  session *s;
  if (p->last != NULL && p->last->id == id && p->last->seal_ok && !p->last->closing)
    return p->last;
  s = np__session_ids_find(p->srv, id);
  return s != NULL && usable(s) ? (p->last = s) : NULL;
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

/* A STUN Binding request (RFC 8489) on this port: a client behind a NAT learns the address and port
 * its NAT gave this socket's packets, for a direct path to another client (docs/protocol.md,
 * "STUN"). Stateless: any worker answers. */
static void stun(upath *p, const char *buf, size_t n, const struct sockaddr *from) {
  struct np_server *srv = p->srv;
  uint64_t second = uv_now(p->h.loop) / 1000;
  np__stun m;
  char *tx;
  int len;

  if (np__stun_parse(buf, n, &m) != 0 || m.type != NP_STUN_BINDING_REQUEST || m.unknown != 0) {
    srv->stats.stun_dropped++; /* not a request we know how to answer */
    return;
  }
  if (second != p->stun_second) {
    p->stun_second = second;
    p->stun_sent = 0;
  }
  if (p->stun_sent >= STUN_PER_SECOND || (tx = np__udpq_room(NP_STUN_BUILD_MAX)) == NULL) {
    srv->stats.stun_dropped++;
    return;
  }
  if ((len = np__stun_response(m.tid, from, tx, NP_STUN_BUILD_MAX)) > 0) {
    np__udpq_commit(&p->h, from, (size_t)len, NULL, NULL);
    p->stun_sent++;
    srv->stats.stun_answered++;
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

  if (!(flags & UV_UDP_PARTIAL) && np__stun_is(buf->base, (size_t)n)) {
    stun(p, buf->base, (size_t)n, addr);
    return;
  }
  if ((flags & UV_UDP_PARTIAL) || np__seal_peek(buf->base, (size_t)n, &type, &sid) != 0) {
    rejected(p, addr, "not a packet (truncated, oversized or unknown type)");
    return;
  }
  if (srv->group_udp != NULL && (sid & 0xff) != srv->widx) {
    /* Another worker's session (login.c: ids are (n << 8) | widx): the steering missed it (no
     * cBPF, or the sockets' order shifted as one closed). */
    if ((r = srv->group_udp(srv, (unsigned)(sid & 0xff), buf->base, (size_t)n, addr)) == 0)
      srv->stats.udp_path_forwarded++;
    else
      rejected(p, addr, r == UV_EINVAL ? "no such worker" : "its worker cannot take it now");
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

void np__upath_deliver(struct np_server *srv, char *pkt, size_t len, const struct sockaddr *from) {
  uv_buf_t b = uv_buf_init(pkt, (unsigned)len);
  if (srv->upath == NULL) {
    srv->stats.udp_path_rejected++; /* its path closed meanwhile, or never opened here */
    return;
  }
  from_client(srv->upath, (ssize_t)len, &b, from, 0);
  np__udpq_flush(); /* what it queued borrows pkt, which goes when we return */
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

int np__upath_socket(const struct sockaddr *addr, int steer, int *steered, int *fd) {
  socklen_t len =
      addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int one = 1, s;

  *steered = 0;
  if ((s = socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
    return uv_translate_sys_error(errno);
  /* Before bind: the kernel lets a socket join a port's group only if every member asked. */
  if (setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 || bind(s, addr, len) != 0) {
    int r = uv_translate_sys_error(errno);
    close(s);
    return r;
  }
  if (steer) {
    /* The program returns the index of the socket that gets the packet: the byte at offset 8 of
     * the UDP payload, the low byte of the big-endian session id (udp_seal.h: type u8 | session
     * id u64), which is the worker's index (login.c). Workers bind in index order, so socket k
     * is worker k's. An index out of range, or a packet too short to load from (the program
     * then returns 0: worker 0, which drops it), is no harm: it falls back to the hash. */
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 8),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    struct sock_fprog prog;
    memset(&prog, 0, sizeof(prog)); /* its padding too: the kernel copies the whole struct */
    prog.len = sizeof(code) / sizeof(code[0]);
    prog.filter = code;
    *steered = setsockopt(s, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) == 0
                   ? 1
                   : uv_translate_sys_error(errno);
  }
  *fd = s;
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
  if (srv->group_udp != NULL) {
    int fd, steered;
    if ((r = np__upath_socket(addr, srv->widx == 0, &steered, &fd)) == 0 &&
        (r = uv_udp_open(&p->h, fd)) != 0)
      close(fd);
    if (r == 0 && srv->widx == 0 && steered != 1)
      np__log(&srv->log, NP_LOG_INFO,
              "datagram path: the kernel does not steer packets to their worker (%s); the "
              "worker that gets one hands it over",
              np_strerror(steered));
  } else {
    r = uv_udp_bind(&p->h, addr, 0);
  }
  if (r != 0 || (r = uv_udp_recv_start(&p->h, np__udp_alloc, on_recv)) != 0) {
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
  np__udp_close(&srv->upath->h, on_closed);
  srv->upath = NULL;
}

void np__upath_forget_session(session *s) {
  upath *p = s->srv->upath;
  if (p != NULL && p->last == s)
    p->last = NULL;
}
