#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "proxy_proto.h"

#define BACKLOG 511
/* Accepts per wakeup: bounded so one busy listener cannot starve the rest of the loop. */
#define BURST 64

typedef struct pp_wait pp_wait;

struct np__listener {
  uv_loop_t *loop;
  const np__cidrs *pp_from; /* NULL: no connection owes a PROXY header */
  uint64_t pp_timeout_ms;
  np__pp_fail_cb pp_fail;
  void *pp_arg;
  pp_wait *waits; /* connections whose PROXY header is being read */
  size_t n_waits;
  uv_poll_t poll;
  int fd;
  int reserve; /* a spare descriptor, given up to refuse connections when none are left */
  int port;
  np__accept_cb on_accept;
  np__accept_err_cb on_error;
  void (*close_cb)(void *data);
  void *data;
};

/* ---- PROXY protocol headers from a load balancer ------------------------------------------------
 */

/* A bound on connections waiting for their header: each holds a descriptor and this struct until
 * its timeout. */
#define PP_MAX_WAITS 512

struct pp_wait {
  np__listener *l; /* NULL once the listener closed */
  int fd;
  uv_poll_t poll;
  uv_timer_t timer;
  struct sockaddr_storage peer;
  char hdr[NP_PP_READ_MAX]; /* the header's bytes read so far (all of them header bytes) */
  size_t have;
  int closes_left;
  pp_wait *prev, *next;
};

static void hand_on(np__listener *l, int fd, const struct sockaddr *peer);

static void on_wait_closed(uv_handle_t *h) {
  pp_wait *w = h->data;
  if (--w->closes_left == 0)
    free(w);
}

/* The wait ends: its handles close; the descriptor is closed too unless keep_fd. */
static void wait_end(pp_wait *w, int keep_fd) {
  np__listener *l = w->l;
  if (l != NULL) {
    NP_DLIST_UNLINK(l->waits, w, prev, next);
    l->n_waits--;
    w->l = NULL;
  }
  w->closes_left = 2;
  uv_close((uv_handle_t *)&w->poll, on_wait_closed);
  uv_close((uv_handle_t *)&w->timer, on_wait_closed);
  if (!keep_fd)
    close(w->fd);
}

static void wait_fail(pp_wait *w, int err) {
  np__listener *l = w->l;
  struct sockaddr_storage peer = w->peer;
  wait_end(w, 0);
  if (l != NULL && l->pp_fail != NULL)
    l->pp_fail(l->pp_arg, (struct sockaddr *)&peer, err);
}

static void on_wait_timeout(uv_timer_t *t) {
  wait_fail(t->data, UV_ETIMEDOUT);
}

/* Peek at what came, take from the socket only bytes known to be the header's (while it is
 * incomplete every byte is; once complete, exactly its length), so the payload stays in the socket
 * for the conn that reads it next, and a partial header does not keep the socket readable. */
static void on_wait_readable(uv_poll_t *p, int status, int events) {
  pp_wait *w = p->data;
  np__pp_header h;
  ssize_t n;
  int r;
  (void)events;

  if (status < 0) {
    /* libuv reports a socket's error (POLLERR) as UV_EBADF: say what the error is */
    int e = 0;
    socklen_t len = sizeof(e);
    if (getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e != 0)
      status = uv_translate_sys_error(e);
    wait_fail(w, status);
    return;
  }
  n = recv(w->fd, w->hdr + w->have, sizeof(w->hdr) - w->have, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return;
  if (n <= 0) {
    wait_fail(w, n == 0 ? UV_EOF : uv_translate_sys_error(errno));
    return;
  }
  r = np__pp_parse(w->hdr, w->have + (size_t)n, &h);
  if (r == NP_PP_MORE || r == NP_PP_DONE) {
    size_t take = r == NP_PP_MORE ? (size_t)n : h.len - w->have;
    if (recv(w->fd, w->hdr + w->have, take, 0) != (ssize_t)take) {
      wait_fail(w, UV_EIO);
      return;
    }
    w->have += take;
  }
  if (r == NP_PP_MORE)
    return;
  if (r != NP_PP_DONE) {
    wait_fail(w, r == NP_PP_NONE ? NP_EPROTO : r);
    return;
  }
  {
    np__listener *l = w->l;
    int fd = w->fd;
    struct sockaddr_storage peer = h.has_addrs ? h.src : w->peer;
    wait_end(w, 1);
    hand_on(l, fd, (struct sockaddr *)&peer);
  }
}

static void wait_start(np__listener *l, int fd, const struct sockaddr_storage *peer) {
  pp_wait *w;

  if (l->n_waits >= PP_MAX_WAITS || (w = calloc(1, sizeof(*w))) == NULL) {
    close(fd);
    if (l->pp_fail != NULL)
      l->pp_fail(l->pp_arg, (const struct sockaddr *)peer, NP_ELIMIT);
    return;
  }
  w->l = l;
  w->fd = fd;
  w->peer = *peer;
  if (uv_poll_init_socket(l->loop, &w->poll, fd) != 0) {
    close(fd);
    free(w);
    return;
  }
  uv_timer_init(l->loop, &w->timer);
  w->poll.data = w->timer.data = w;
  NP_DLIST_PUSH(l->waits, w, prev, next);
  l->n_waits++;
  uv_timer_start(&w->timer, on_wait_timeout, l->pp_timeout_ms, 0);
  if (uv_poll_start(&w->poll, UV_READABLE, on_wait_readable) != 0)
    wait_fail(w, UV_EIO);
}

void np__listener_proxy_protocol(np__listener *l, const np__cidrs *from, uint64_t timeout_ms,
                                 np__pp_fail_cb on_fail, void *arg) {
  l->pp_from = from != NULL && from->n > 0 ? from : NULL;
  l->pp_timeout_ms = timeout_ms;
  l->pp_fail = on_fail;
  l->pp_arg = arg;
}

/* ---- accepting ------------------------------------------------------------------------------ */

static int open_reserve(void) {
  return open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* No descriptor left: accept and close what is waiting, so the listener does not stay readable and
 * spin the loop, and the peers learn at once instead of timing out. */
static uint64_t refuse_pending(np__listener *l) {
  uint64_t n = 0;
  int fd;

  if (l->reserve < 0)
    return 0;
  close(l->reserve);
  l->reserve = -1;
  while ((fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
    close(fd);
    n++;
  }
  l->reserve = open_reserve();
  return n;
}

static void on_readable(uv_poll_t *p, int status, int events) {
  np__listener *l = p->data;
  (void)events;

  if (status < 0) {
    l->on_error(l, status, 0);
    return;
  }
  /* The owner may close the listener from its accept callback: no accept after that. */
  for (int i = 0; i < BURST && l->fd >= 0; i++) {
    int err, r;
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof(peer);
    int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd < 0) {
      err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK)
        return;
      if (err == ECONNABORTED || err == EINTR)
        continue;
      r = uv_translate_sys_error(err);
      l->on_error(l, r, err == EMFILE || err == ENFILE ? refuse_pending(l) : 0);
      return;
    }
    if (l->pp_from != NULL && np__cidrs_allow(l->pp_from, (struct sockaddr *)&peer)) {
      wait_start(l, fd, &peer);
      continue;
    }
    hand_on(l, fd, (struct sockaddr *)&peer);
  }
}

/* A connection is ready for its owner: peer is the address it is known by (a PROXY header's). */
static void hand_on(np__listener *l, int fd, const struct sockaddr *peer) {
  np_conn *c;
  int r;

  if ((r = np__conn_tcp_new(l->loop, &c)) != 0) {
    close(fd);
    l->on_error(l, r, 1);
    return;
  }
  if ((r = uv_tcp_open(np__conn_tcp_handle(c), fd)) != 0) {
    close(fd);
    np__conn_close(c, NULL);
    l->on_error(l, r, 1);
    return;
  }
  uv_tcp_nodelay(np__conn_tcp_handle(c), 1);
  np__conn_tcp_set_peer(c, peer);
  l->on_accept(l, c);
}

int np__listen(uv_loop_t *loop, const struct sockaddr *addr, np__accept_cb on_accept,
               np__accept_err_cb on_error, void *data, np__listener **out) {
  return np__listen_flags(loop, addr, 0, on_accept, on_error, data, out);
}

int np__listen_flags(uv_loop_t *loop, const struct sockaddr *addr, unsigned flags,
                     np__accept_cb on_accept, np__accept_err_cb on_error, void *data,
                     np__listener **out) {
  struct sockaddr_storage ss;
  socklen_t len =
      addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  np__listener *l;
  int one = 1, r;

  if ((l = calloc(1, sizeof(*l))) == NULL)
    return UV_ENOMEM;
  l->fd = l->reserve = -1;
  l->loop = loop;
  l->on_accept = on_accept;
  l->on_error = on_error;
  l->data = data;
  l->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (l->fd < 0)
    goto err_errno;
  setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  /* Before bind: the kernel lets a socket join a port's group only if every member asked. */
  if ((flags & NP_LISTEN_REUSEPORT) != 0 &&
      setsockopt(l->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
    goto err_errno;
  if (addr->sa_family == AF_INET6)
    setsockopt(l->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(l->fd, addr, len) != 0 || listen(l->fd, BACKLOG) != 0)
    goto err_errno;
  len = sizeof(ss);
  getsockname(l->fd, (struct sockaddr *)&ss, &len);
  l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if ((l->reserve = open_reserve()) < 0)
    goto err_errno;
  if ((r = uv_poll_init_socket(loop, &l->poll, l->fd)) != 0)
    goto err_close;
  l->poll.data = l;
  if ((r = uv_poll_start(&l->poll, UV_READABLE, on_readable)) != 0) {
    /* The poll handle is initialised: it must go through uv_close; let close do the rest. */
    np__listener_close(l, NULL);
    return r;
  }
  *out = l;
  return 0;

err_errno:
  r = uv_translate_sys_error(errno);
err_close:
  if (l->fd >= 0)
    close(l->fd);
  if (l->reserve >= 0)
    close(l->reserve);
  free(l);
  return r;
}

void *np__listener_data(np__listener *l) {
  return l->data;
}

int np__listener_port(np__listener *l) {
  return l->port;
}

static void on_poll_closed(uv_handle_t *h) {
  np__listener *l = h->data;
  if (l->close_cb != NULL)
    l->close_cb(l->data);
  free(l);
}

void np__listener_close(np__listener *l, void (*cb)(void *data)) {
  while (l->waits != NULL)
    wait_end(l->waits, 0);
  l->close_cb = cb;
  uv_close((uv_handle_t *)&l->poll, on_poll_closed);
  /* uv_close has stopped polling, so the socket can go now: the port is free at once, and a client
   * that logs in again can bind it in the very next message. */
  close(l->fd);
  if (l->reserve >= 0)
    close(l->reserve);
  l->fd = l->reserve = -1;
}
