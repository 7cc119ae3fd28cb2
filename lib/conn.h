/* np_conn: the one duplex byte-stream interface everything above speaks (see docs/design.md). The
 * TCP implementation lives in conn.c; TLS and multiplexed streams will be further implementations.
 */
#ifndef NP_CONN_H
#define NP_CONN_H

#include <stddef.h>
#include <sys/socket.h>

#include <uv.h>

typedef struct np_conn np_conn;
typedef struct np_conn_write np_conn_write;
struct ssl_st;

/* A connection on its way from one loop (thread) to another: what a conn's move_out takes out of
 * it, and what np__conn_move_in (conn_move.c) makes a conn of again on the other loop. libuv cannot
 * detach a socket from its loop (uv_close always closes it), so the socket travels as a duplicate
 * descriptor. Whoever holds an np__moved owns what it holds: np__conn_move_in takes it, or
 * np__moved_free releases it. */
typedef struct np__moved {
  int fd;                       /* a duplicate of the socket's descriptor; -1: none */
  struct sockaddr_storage peer; /* ss_family 0: not known */
  struct ssl_st *ssl;           /* TLS: the session, its handshake done; NULL: plain TCP */
  char *rest;                   /* TLS: ciphertext read from the socket, not yet decrypted */
  size_t rest_len;
  char *pre; /* bytes read above the conn (a chan's, a parser's), to be read first */
  size_t pre_len;
} np__moved;

/* Like libuv's: nread > 0 bytes in buf, UV_EOF at end of stream, < 0 on error. buf came from
 * alloc_cb (its memory belongs to whoever allocated it). */
typedef void (*np_conn_alloc_cb)(np_conn *c, size_t suggested, uv_buf_t *buf);
typedef void (*np_conn_read_cb)(np_conn *c, ssize_t nread, const uv_buf_t *buf);
typedef void (*np_conn_write_cb)(np_conn_write *req, int status);
typedef void (*np_conn_shutdown_cb)(np_conn *c, int status);
typedef void (*np_conn_close_cb)(np_conn *c);

/* A write request the caller allocates and keeps until its callback (like uv_write_t). */
struct np_conn_write {
  uv_write_t uv;
  np_conn *conn;
  np_conn_write_cb cb;
  void *data;
};

typedef struct np_conn_ops {
  int (*read_start)(np_conn *c);
  int (*read_stop)(np_conn *c);
  int (*write)(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs);
  /* Write what fits now, without queueing: bytes written, UV_EAGAIN, or an error. */
  int (*try_write)(np_conn *c, const uv_buf_t *bufs, unsigned nbufs);
  int (*shutdown)(np_conn *c, np_conn_shutdown_cb cb);
  /* Asynchronous; cb runs once the conn is closed, after which its memory is freed. */
  void (*close)(np_conn *c, np_conn_close_cb cb);
  /* Like close, but tell the peer the stream broke (TCP: RST) rather than that it ended. */
  void (*abort)(np_conn *c, np_conn_close_cb cb);
  /* Peer address as "host:port" (a stream says which, over which connection). */
  void (*peer_str)(np_conn *c, char *buf, size_t len);
  /* Optional: the conn this one is layered on (TLS: its TCP conn), for socket options only; bytes
   * must never bypass the upper conn. */
  np_conn *(*lower)(np_conn *c);
  /* Optional: hand the connection over to another loop (np__conn_move_out). */
  int (*move_out)(np_conn *c, np__moved *m);
} np_conn_ops;

struct np_conn {
  const np_conn_ops *ops;
  np_conn_alloc_cb alloc_cb;
  np_conn_read_cb read_cb;
  void *data; /* owner's */
  /* Set by a reader that uses read_cb's bytes during the call only and never as alloc_cb's memory:
   * a conn may then hand it its own memory (a mux stream: the bytes where they arrived). */
  unsigned borrow : 1;
};

static inline int np__conn_read_start(np_conn *c, np_conn_alloc_cb alloc_cb,
                                      np_conn_read_cb read_cb) {
  c->alloc_cb = alloc_cb;
  c->read_cb = read_cb;
  return c->ops->read_start(c);
}
static inline int np__conn_read_stop(np_conn *c) {
  return c->ops->read_stop(c);
}
/* On success req->cb runs exactly once; on failure never. */
static inline int np__conn_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs,
                                 unsigned nbufs, np_conn_write_cb cb) {
  req->conn = c;
  req->cb = cb;
  return c->ops->write(c, req, bufs, nbufs);
}
static inline int np__conn_try_write(np_conn *c, const char *buf, size_t len) {
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned)len);
  return c->ops->try_write(c, &b, 1);
}
static inline int np__conn_try_writev(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  return c->ops->try_write(c, bufs, nbufs);
}
static inline int np__conn_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  return c->ops->shutdown(c, cb);
}
static inline void np__conn_close(np_conn *c, np_conn_close_cb cb) {
  c->ops->close(c, cb);
}
static inline void np__conn_abort(np_conn *c, np_conn_close_cb cb) {
  c->ops->abort(c, cb);
}

/* Take the connection out of c, into m (fd, peer, and for TLS ssl and rest; pre is left as it
 * was, the caller's), for np__conn_move_in on another loop. On success reading has stopped and c
 * is an empty shell the caller must close (np__conn_close; no FIN or close_notify reaches the peer,
 * the socket lives on in m->fd) and use for nothing else; close it before m goes to the other loop,
 * so the socket leaves this loop's epoll set (uv_close does that, synchronously) before it joins
 * the other's. May be called from c's read callback. Only when nothing is on its way out: UV_EBUSY
 * while a write is queued (try again from its callback), UV_EINVAL for a conn that is shut down,
 * closing, failed, ended or (TLS) not past its handshake, UV_ENOTSUP for a conn that cannot move (a
 * mux stream, UDP, a wrapped stream that is not TCP), or the error of dup. On failure m and c are
 * as they were. */
static inline int np__conn_move_out(np_conn *c, np__moved *m) {
  return c->ops->move_out != NULL ? c->ops->move_out(c, m) : UV_ENOTSUP;
}

/* A TCP conn owning a fresh uv_tcp_t, ready for uv_accept or uv_tcp_connect. */
int np__conn_tcp_new(uv_loop_t *loop, np_conn **out);
/* The conn's uv_tcp_t (for accept, connect, getpeername, nodelay). */
uv_tcp_t *np__conn_tcp_handle(np_conn *c);
/* Tell a plain TCP conn its peer's address (from accept, or the address it connects to) so logs
 * can name the peer even after it reset; sa is copied. Other conns ignore it. */
void np__conn_tcp_set_peer(np_conn *c, const struct sockaddr *sa);
/* Wrap a stream somebody else allocated; closing the conn uv_closes the stream but frees only the
 * wrapper, and then calls cb. */
int np__conn_tcp_wrap(uv_stream_t *stream, np_conn **out);
/* A UDP socket connected to peer, as a conn of dgram.c frames (conn_udp.c): reads yield each
 * datagram as a frame, frames written leave as datagrams (dropped, not queued, when the socket is
 * full). EOF after idle_ms without a datagram either way, or once shut down. */
int np__conn_udp_new(uv_loop_t *loop, const struct sockaddr *peer, uint64_t idle_ms, np_conn **out);
/* Send prefix (copied; at most 128 bytes) before every datagram's bytes from now on: a PROXY
 * protocol v2 header naming the visitor. 0, or UV_EINVAL (not a UDP conn, too long). */
int np__conn_udp_set_prefix(np_conn *c, const char *prefix, size_t len);
/* TCP keepalive probes after delay_s idle seconds: finds dead idle connections and keeps NAT
 * mappings alive. Returns 0 or an error (also for conns that are not TCP). */
int np__conn_keepalive(np_conn *c, unsigned delay_s);
/* The socket of a plain TCP conn (and its loop), or UV_EINVAL for any other conn. */
int np__conn_tcp_fd(np_conn *c, uv_loop_t **loop);
/* Keep at most bytes unsent in the kernel (TCP_NOTSENT_LOWAT), so what waits to be sent waits in
 * our queues, where a multiplexer can still interleave streams fairly. */
int np__conn_notsent_lowat(np_conn *c, unsigned bytes);
/* The peer's address of the TCP connection at the bottom of c's layers (not through a mux stream,
 * which has none of its own). Returns 0, UV_EINVAL (not TCP) or UV_ENOTCONN (never known). */
int np__conn_peer_addr(np_conn *c, struct sockaddr_storage *out);
/* The local address of that TCP connection: where a visitor connected to. 0 or UV_EINVAL. */
int np__conn_local_addr(np_conn *c, struct sockaddr_storage *out);
/* Peer address as "host:port" for logs. */
static inline void np__conn_peer_str(np_conn *c, char *buf, size_t len) {
  c->ops->peer_str(c, buf, len);
}

#endif
