/* UDP datagrams in batches (issue 18). One queue per thread (a loop's): datagrams for any socket go
 * in as they are produced, and np__udpq_flush sends each socket's share with one sendmmsg. The
 * queue borrows what it sends (a datagram in the receive buffer, in a stream's read buffer), so it
 * copies nothing; the price is the rule that whoever hands it memory flushes before that memory is
 * used again, which the receive and read callbacks do when they return. Sealed packets are built
 * in the queue's own memory (np__udpq_room), which the sealing writes anyway. */
#include "udp_batch.h"

#include "internal.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ARENA (256 * 1024) /* the queue's own memory: at least one largest datagram */

typedef struct entry {
  int fd;
  unsigned nbufs;
  struct iovec iov[2];
  struct sockaddr_in6 to; /* or a sockaddr_in; tolen 0: a connected socket */
  socklen_t tolen;
  size_t len;
  np__udpq_done_cb done;
  void *arg;
} entry;

typedef struct queue {
  entry e[NP_UDPQ_MAX];
  size_t n;
  size_t used; /* of arena */
  char arena[ARENA];
} queue;

/* The thread's queue, made on first use (internal.h, np__scratch: why not _Thread_local). */
static queue *the_queue(void) {
  return np__scratch(NP_SCRATCH_UDPQ, sizeof(queue));
}

int np__udp_init_batched(uv_loop_t *loop, uv_udp_t *h) {
  /* The domain comes with the bind or connect, as with uv_udp_init. */
  return uv_udp_init_ex(loop, h, AF_UNSPEC | UV_UDP_RECVMMSG);
}

int np__udp_bind_reuseport(uv_udp_t *h, const struct sockaddr *addr) {
  socklen_t len =
      addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1, r;

  if (fd < 0)
    return uv_translate_sys_error(errno);
  /* libuv 1.44's UV_UDP_REUSEADDR is SO_REUSEADDR on Linux, which leaves the choice of socket for
   * a unicast datagram to the kernel's order; SO_REUSEPORT groups hash each sender to one. */
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
      bind(fd, addr, len) != 0) {
    r = uv_translate_sys_error(errno);
    close(fd);
    return r;
  }
  if ((r = uv_udp_open(h, fd)) != 0) {
    close(fd);
    return r;
  }
  /* uv_udp_open sets SO_REUSEADDR, with which Linux lets a socket of any user bind the same
   * address beside ours; SO_REUSEPORT alone asks for the same user. */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){0}, sizeof(int));
  return 0;
}

static entry *next_entry(queue *q, uv_udp_t *h, const struct sockaddr *to) {
  entry *e;
  uv_os_fd_t fd;

  if (q->n == NP_UDPQ_MAX)
    np__udpq_flush();
  e = &q->e[q->n++];
  e->fd = uv_fileno((uv_handle_t *)h, &fd) == 0 ? fd : -1; /* -1: EBADF from the flush */
  e->tolen = 0;
  if (to != NULL) {
    e->tolen = to->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memcpy(&e->to, to, e->tolen);
  }
  return e;
}

void np__udpq_add(uv_udp_t *h, const struct sockaddr *to, const uv_buf_t *bufs, unsigned nbufs,
                  np__udpq_done_cb done, void *arg) {
  queue *q = the_queue();
  entry *e;

  if (q == NULL) { /* out of memory: dropped, as a full socket buffer would */
    size_t len = 0;
    for (unsigned i = 0; i < nbufs; i++)
      len += bufs[i].len;
    if (done != NULL)
      done(arg, len, UV_ENOMEM);
    return;
  }
  e = next_entry(q, h, to);
  e->nbufs = nbufs;
  e->len = 0;
  for (unsigned i = 0; i < nbufs; i++) {
    e->iov[i].iov_base = bufs[i].base;
    e->iov[i].iov_len = bufs[i].len;
    e->len += bufs[i].len;
  }
  e->done = done;
  e->arg = arg;
}

char *np__udpq_room(size_t max) {
  queue *q = the_queue();

  if (q == NULL)
    return NULL;
  if (q->n == NP_UDPQ_MAX || ARENA - q->used < max)
    np__udpq_flush();
  return q->arena + q->used;
}

void np__udpq_commit(uv_udp_t *h, const struct sockaddr *to, size_t len, np__udpq_done_cb done,
                     void *arg) {
  queue *q = the_queue(); /* room() made it */
  char *at = q->arena + q->used;
  entry *e = next_entry(q, h, to); /* room() left a free entry: no flush here */
  e->nbufs = 1;
  e->iov[0].iov_base = at;
  e->iov[0].iov_len = len;
  e->len = len;
  e->done = done;
  e->arg = arg;
  q->used += (len + 15) & ~(size_t)15;
}

/* k datagrams of one socket; status[i]: 0 or the error that dropped datagram i. */
static void send_socket(int fd, struct mmsghdr *m, size_t k, int *status) {
  size_t i = 0;
  while (i < k) {
    int r = sendmmsg(fd, m + i, (unsigned)(k - i), 0);
    if (r > 0) {
      while (r-- > 0)
        status[i++] = 0;
      continue;
    }
    if (r < 0 && errno == EINTR)
      continue;
    int err = r < 0 ? uv_translate_sys_error(errno) : UV_EIO;
    if (err == UV_EAGAIN) { /* the buffer is full: the rest would be refused too */
      while (i < k)
        status[i++] = err;
      return;
    }
    status[i++] = err; /* that datagram alone (too big, an ICMP refusal): the rest go on */
  }
}

void np__udpq_flush(void) {
  queue *q = the_queue();
  struct mmsghdr m[NP_UDPQ_MAX];
  int status[NP_UDPQ_MAX], st[NP_UDPQ_MAX];
  size_t idx[NP_UDPQ_MAX], len[NP_UDPQ_MAX], n;
  np__udpq_done_cb done[NP_UDPQ_MAX];
  void *arg[NP_UDPQ_MAX];
  unsigned char taken[NP_UDPQ_MAX] = {0};

  if (q == NULL || (n = q->n) == 0)
    return;
  /* Each socket's datagrams in their order; most batches have one socket, a few have several. */
  for (size_t i = 0; i < n; i++) {
    size_t k = 0;
    if (taken[i])
      continue;
    for (size_t j = i; j < n; j++) {
      entry *e = &q->e[j];
      if (taken[j] || e->fd != q->e[i].fd)
        continue;
      taken[j] = 1;
      memset(&m[k], 0, sizeof(m[k]));
      m[k].msg_hdr.msg_iov = e->iov;
      m[k].msg_hdr.msg_iovlen = e->nbufs;
      if (e->tolen > 0) {
        m[k].msg_hdr.msg_name = &e->to;
        m[k].msg_hdr.msg_namelen = e->tolen;
      }
      idx[k++] = j;
    }
    send_socket(q->e[i].fd, m, k, st);
    for (size_t j = 0; j < k; j++)
      status[idx[j]] = st[j];
  }
  for (size_t i = 0; i < n; i++) {
    done[i] = q->e[i].done;
    arg[i] = q->e[i].arg;
    len[i] = q->e[i].len;
  }
  q->n = 0;
  q->used = 0;
  for (size_t i = 0; i < n; i++)
    if (done[i] != NULL)
      done[i](arg[i], len[i], status[i]);
}

void np__udp_close(uv_udp_t *h, uv_close_cb cb) {
  np__udpq_flush();
  uv_close((uv_handle_t *)h, cb);
}
