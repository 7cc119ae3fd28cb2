/* The plain TCP implementation of np_conn over a uv_tcp_t. */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "internal.h"

typedef struct tcp_conn {
  np_conn base;
  uv_stream_t *stream; /* &tcp, or a wrapped stream */
  int owned;           /* stream memory is ours (embedded) */
  uv_shutdown_t shutdown_req;
  np_conn_shutdown_cb shutdown_cb;
  np_conn_close_cb close_cb;
  /* The peer's address, kept from accept or connect: once the peer has reset, getpeername fails,
   * and that is when a log line most needs to say who it was. sa_family 0: not known yet. */
  np__addr peer;
  uv_tcp_t tcp;
} tcp_conn;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tcp_conn *t = h->data;
  t->base.alloc_cb(&t->base, suggested, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  tcp_conn *t = s->data;
  t->base.read_cb(&t->base, nread, buf);
}

static int tcp_read_start(np_conn *c) {
  tcp_conn *t = (tcp_conn *)c;
  return uv_read_start(t->stream, on_alloc, on_read);
}

static int tcp_read_stop(np_conn *c) {
  tcp_conn *t = (tcp_conn *)c;
  return uv_read_stop(t->stream);
}

static void on_write(uv_write_t *w, int status) {
  np_conn_write *req = NP_CONTAINER_OF(w, np_conn_write, uv);
  req->cb(req, status);
}

static int tcp_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  tcp_conn *t = (tcp_conn *)c;
  return uv_write(&req->uv, t->stream, bufs, nbufs, on_write);
}

static int tcp_try_write(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  tcp_conn *t = (tcp_conn *)c;
  return uv_try_write(t->stream, bufs, nbufs);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  tcp_conn *t = req->data;
  t->shutdown_cb(&t->base, status);
}

static int tcp_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  tcp_conn *t = (tcp_conn *)c;
  t->shutdown_cb = cb;
  t->shutdown_req.data = t;
  return uv_shutdown(&t->shutdown_req, t->stream, on_shutdown);
}

static void on_close(uv_handle_t *h) {
  tcp_conn *t = h->data;
  if (t->close_cb != NULL)
    t->close_cb(&t->base);
  free(t);
}

static void tcp_close(np_conn *c, np_conn_close_cb cb) {
  tcp_conn *t = (tcp_conn *)c;
  t->close_cb = cb;
  if (!uv_is_closing((uv_handle_t *)t->stream))
    uv_close((uv_handle_t *)t->stream, on_close);
}

static void tcp_abort(np_conn *c, np_conn_close_cb cb) {
  tcp_conn *t = (tcp_conn *)c;
  t->close_cb = cb;
  if (uv_is_closing((uv_handle_t *)t->stream))
    return;
  /* uv_tcp_close_reset refuses while a shutdown is pending; then a plain close will do. */
  if (t->stream->type != UV_TCP || uv_tcp_close_reset((uv_tcp_t *)t->stream, on_close) != 0)
    uv_close((uv_handle_t *)t->stream, on_close);
}

static void tcp_peer_str(np_conn *c, char *buf, size_t len);
static const struct sockaddr *tcp_peer(tcp_conn *t);

/* The socket goes on as a duplicate; the caller's close then closes the original descriptor only:
 * uv_close takes it out of this loop's epoll set while it is still open (the open file, shared
 * with the duplicate, would otherwise stay registered here), and no FIN is sent while another
 * descriptor holds the socket. Bytes in the kernel's buffers stay there for the new owner. */
static int tcp_move_out(np_conn *c, np__moved *m) {
  tcp_conn *t = (tcp_conn *)c;
  const struct sockaddr *sa;
  uv_os_fd_t fd;
  int dup;

  if (t->stream->type != UV_TCP)
    return UV_ENOTSUP;
  if (uv_is_closing((uv_handle_t *)t->stream) || !uv_is_writable(t->stream) ||
      uv_fileno((uv_handle_t *)t->stream, &fd) != 0)
    return UV_EINVAL;
  /* Written bytes already in the kernel travel with the socket; queued ones would be lost. */
  if (uv_stream_get_write_queue_size(t->stream) > 0)
    return UV_EBUSY;
  if ((dup = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
    return uv_translate_sys_error(errno);
  uv_read_stop(t->stream);
  m->fd = dup;
  memset(&m->peer, 0, sizeof(m->peer));
  if ((sa = tcp_peer(t)) != NULL)
    memcpy(&m->peer, sa,
           sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
  return 0;
}

static const np_conn_ops tcp_ops = {
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write,
    .try_write = tcp_try_write,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .abort = tcp_abort,
    .peer_str = tcp_peer_str,
    .move_out = tcp_move_out,
};

int np__conn_tcp_new(uv_loop_t *loop, np_conn **out) {
  tcp_conn *t = calloc(1, sizeof(*t));
  int r;

  if (t == NULL)
    return UV_ENOMEM;
  if ((r = uv_tcp_init(loop, &t->tcp)) != 0) {
    free(t);
    return r;
  }
  t->base.ops = &tcp_ops;
  t->stream = (uv_stream_t *)&t->tcp;
  t->stream->data = t;
  t->owned = 1;
  *out = &t->base;
  return 0;
}

uv_tcp_t *np__conn_tcp_handle(np_conn *c) {
  return (uv_tcp_t *)((tcp_conn *)c)->stream;
}

int np__conn_tcp_wrap(uv_stream_t *stream, np_conn **out) {
  tcp_conn *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return UV_ENOMEM;
  t->base.ops = &tcp_ops;
  t->stream = stream;
  stream->data = t;
  *out = &t->base;
  return 0;
}

/* The TCP conn at the bottom of c's layers, for socket options. */
static np_conn *bottom(np_conn *c) {
  while (c->ops->lower != NULL)
    c = c->ops->lower(c);
  return c;
}

int np__conn_keepalive(np_conn *c, unsigned delay_s) {
  tcp_conn *t = (tcp_conn *)(c = bottom(c));
  if (c->ops != &tcp_ops || t->stream->type != UV_TCP)
    return UV_EINVAL;
  return uv_tcp_keepalive((uv_tcp_t *)t->stream, 1, delay_s > 0 ? delay_s : 1);
}

void np__conn_tcp_set_peer(np_conn *c, const struct sockaddr *sa) {
  if (c->ops == &tcp_ops)
    np__addr_copy(&((tcp_conn *)c)->peer, sa);
}

/* The peer's address: the one kept, else getpeername's (kept from then on). NULL if unknown. */
static const struct sockaddr *tcp_peer(tcp_conn *t) {
  struct sockaddr_storage ss;
  int n = sizeof(ss);

  if (t->peer.sa.sa_family == 0 && t->stream->type == UV_TCP &&
      uv_tcp_getpeername((uv_tcp_t *)t->stream, (struct sockaddr *)&ss, &n) == 0)
    np__conn_tcp_set_peer(&t->base, (struct sockaddr *)&ss);
  return t->peer.sa.sa_family != 0 ? &t->peer.sa : NULL;
}

static void tcp_peer_str(np_conn *c, char *buf, size_t len) {
  const struct sockaddr *sa = tcp_peer((tcp_conn *)c);

  if (sa == NULL) {
    snprintf(buf, len, "?");
    return;
  }
  np__addr_str(sa, buf, len);
}

int np__conn_peer_addr(np_conn *c, struct sockaddr_storage *out) {
  const struct sockaddr *sa;

  c = bottom(c);
  if (c->ops != &tcp_ops || ((tcp_conn *)c)->stream->type != UV_TCP)
    return UV_EINVAL;
  if ((sa = tcp_peer((tcp_conn *)c)) == NULL)
    return UV_ENOTCONN;
  memset(out, 0, sizeof(*out));
  memcpy(out, sa,
         sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
  return 0;
}

int np__conn_local_addr(np_conn *c, struct sockaddr_storage *out) {
  int len = sizeof(*out);

  c = bottom(c);
  if (c->ops != &tcp_ops || ((tcp_conn *)c)->stream->type != UV_TCP)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  return uv_tcp_getsockname((uv_tcp_t *)((tcp_conn *)c)->stream, (struct sockaddr *)out, &len);
}

int np__conn_tcp_fd(np_conn *c, uv_loop_t **loop) {
  tcp_conn *t = (tcp_conn *)c;
  uv_os_fd_t fd;

  if (c->ops != &tcp_ops || t->stream->type != UV_TCP ||
      uv_fileno((uv_handle_t *)t->stream, &fd) != 0)
    return UV_EINVAL;
  if (loop != NULL)
    *loop = t->stream->loop;
  return fd;
}

int np__conn_notsent_lowat(np_conn *c, unsigned bytes) {
#ifdef TCP_NOTSENT_LOWAT
  tcp_conn *t = (tcp_conn *)(c = bottom(c));
  uv_os_fd_t fd;
  int v = (int)bytes;

  if (c->ops != &tcp_ops || t->stream->type != UV_TCP ||
      uv_fileno((uv_handle_t *)t->stream, &fd) != 0)
    return UV_EINVAL;
  return setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &v, sizeof(v)) == 0 ? 0 : UV_EINVAL;
#else
  (void)c;
  (void)bytes;
  return UV_ENOTSUP;
#endif
}
