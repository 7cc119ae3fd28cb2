#include "listen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define BACKLOG 511
/* Accepts per wakeup: bounded so one busy listener cannot starve the rest of the loop. */
#define BURST 64

struct np__listener {
  uv_loop_t *loop;
  uv_poll_t poll;
  int fd;
  int reserve; /* a spare descriptor, given up to refuse connections when none are left */
  int port;
  np__accept_cb on_accept;
  np__accept_err_cb on_error;
  void (*close_cb)(void *data);
  void *data;
};

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
  for (int i = 0; i < BURST; i++) {
    np_conn *c;
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
    if ((r = np__conn_tcp_new(l->loop, &c)) != 0) {
      close(fd);
      l->on_error(l, r, 1);
      return;
    }
    if ((r = uv_tcp_open(np__conn_tcp_handle(c), fd)) != 0) {
      close(fd);
      np__conn_close(c, NULL);
      l->on_error(l, r, 1);
      continue;
    }
    uv_tcp_nodelay(np__conn_tcp_handle(c), 1);
    np__conn_tcp_set_peer(c, (struct sockaddr *)&peer);
    l->on_accept(l, c);
  }
}

int np__listen(uv_loop_t *loop, const struct sockaddr *addr, np__accept_cb on_accept,
               np__accept_err_cb on_error, void *data, np__listener **out) {
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
  l->close_cb = cb;
  uv_close((uv_handle_t *)&l->poll, on_poll_closed);
  /* uv_close has stopped polling, so the socket can go now: the port is free at once, and a client
   * that logs in again can bind it in the very next message. */
  close(l->fd);
  if (l->reserve >= 0)
    close(l->reserve);
  l->fd = l->reserve = -1;
}
