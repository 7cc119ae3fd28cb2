/* The zero-copy relay: each socket is watched by one uv_poll handle (readable for the direction it
 * feeds, writable for the one it drains); a direction moves bytes src -> pipe -> dst with splice(2)
 * and holds a pipe from the cache only while bytes are in it. The sockets are dup()ed out of their
 * libuv handles, which are closed, so no two handles ever watch one descriptor. */
#include "splice.h"

#include <stdlib.h>

#include "internal.h"

#ifdef __linux__

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#define PIPE_SIZE   (256 * 1024) /* fewer, larger moves; pages are only held while bytes are */
#define MOVES_A_RUN 16           /* then back to the loop, so one busy relay cannot starve others */

typedef struct side side;

typedef struct sdir {
  side *src, *dst;
  int pipe[2];  /* -1 while empty and returned */
  size_t piped; /* bytes in the pipe */
  uint64_t bytes;
  np__tally total; /* as in join.c: the owner's running totals */
  unsigned want_read : 1, want_write : 1, eof : 1, done : 1;
} sdir;

struct side {
  np__splice *s;
  int fd;
  uv_poll_t poll;
  sdir *out, *in; /* the direction this socket feeds, the one it drains */
};

struct np__splice {
  side a, b;
  sdir ab, ba;
  np__pipes *pipes;
  np__splice_cb cb;
  void *data;
  int status;
  int closing;
  int closes_left;
};

void np__pipes_init(np__pipes *p, int enabled) {
  p->n = 0;
  p->enabled = enabled;
}

void np__pipes_clear(np__pipes *p) {
  while (p->n > 0) {
    p->n--;
    close(p->fds[p->n][0]);
    close(p->fds[p->n][1]);
  }
}

static int pipe_get(np__pipes *p, int out[2]) {
  if (p->n > 0) {
    p->n--;
    out[0] = p->fds[p->n][0];
    out[1] = p->fds[p->n][1];
    return 0;
  }
  if (pipe2(out, O_NONBLOCK | O_CLOEXEC) != 0)
    return -errno;
  fcntl(out[1], F_SETPIPE_SZ, PIPE_SIZE); /* best effort: the default 64 KiB works too */
  return 0;
}

/* An empty pipe goes back to the cache; one with bytes still in it (a relay that broke) is closed.
 */
static void pipe_put(np__pipes *p, sdir *d) {
  if (d->pipe[0] < 0)
    return;
  if (d->piped == 0 && p->n < NP_PIPE_CACHE) {
    p->fds[p->n][0] = d->pipe[0];
    p->fds[p->n][1] = d->pipe[1];
    p->n++;
  } else {
    close(d->pipe[0]);
    close(d->pipe[1]);
  }
  d->pipe[0] = d->pipe[1] = -1;
}

static void on_side_closed(uv_handle_t *h) {
  side *sd = h->data;
  np__splice *s = sd->s;

  close(sd->fd);
  if (--s->closes_left > 0)
    return;
  if (s->cb != NULL) /* NULL: a start that failed half-way */
    s->cb(s->data, s->status, s->ab.bytes, s->ba.bytes);
  free(s);
}

static void finish(np__splice *s, int status) {
  if (s->closing)
    return;
  s->closing = 1;
  s->status = status;
  s->closes_left = 2;
  pipe_put(s->pipes, &s->ab);
  pipe_put(s->pipes, &s->ba);
  if (status != 0) {
    /* Like the copying relay: a broken relay resets both peers, never a clean-looking end. */
    struct linger lg = {1, 0};
    setsockopt(s->a.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    setsockopt(s->b.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  uv_close((uv_handle_t *)&s->a.poll, on_side_closed);
  uv_close((uv_handle_t *)&s->b.poll, on_side_closed);
}

static void on_poll(uv_poll_t *h, int status, int events);

static int watch(side *sd) {
  int ev = (sd->out->want_read ? UV_READABLE : 0) | (sd->in->want_write ? UV_WRITABLE : 0);
  return ev != 0 ? uv_poll_start(&sd->poll, ev, on_poll) : uv_poll_stop(&sd->poll);
}

/* Move what can be moved now; returns 0 or a negative error. */
static int pump(np__splice *s, sdir *d) {
  for (int run = 0; run < MOVES_A_RUN && !d->done; run++) {
    ssize_t n;
    d->want_read = d->want_write = 0;
    if (d->piped == 0 && !d->eof) {
      if (d->pipe[0] < 0) {
        int r = pipe_get(s->pipes, d->pipe);
        if (r != 0)
          return r;
      }
      n = splice(d->src->fd, NULL, d->pipe[1], NULL, PIPE_SIZE, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->piped = (size_t)n;
        d->bytes += (uint64_t)n;
        np__tally_add(&d->total, (uint64_t)n);
      } else if (n == 0) {
        d->eof = 1;
      } else if (errno == EAGAIN) {
        pipe_put(s->pipes, d);
        d->want_read = 1;
        return 0;
      } else {
        return -errno;
      }
    }
    if (d->piped > 0) {
      n = splice(d->pipe[0], NULL, d->dst->fd, NULL, d->piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->piped -= (size_t)n;
      } else if (n < 0 && errno == EAGAIN) {
        d->want_write = 1;
        return 0;
      } else {
        return n == 0 ? UV_EPIPE : -errno;
      }
      if (d->piped > 0)
        continue;
    }
    if (d->eof && d->piped == 0) {
      /* Half-close: pass the EOF on; the other direction goes on until it ends too. */
      pipe_put(s->pipes, d);
      shutdown(d->dst->fd, SHUT_WR);
      d->done = 1;
    }
  }
  if (!d->done && !d->want_write)
    d->want_read = d->piped == 0; /* ran out of turns: come back when there is more */
  if (!d->done && d->piped > 0)
    d->want_write = 1;
  return 0;
}

static void step(np__splice *s, sdir *d) {
  int r = pump(s, d);
  if (r == 0 && s->ab.done && s->ba.done) {
    finish(s, 0);
    return;
  }
  if (r == 0)
    r = watch(d->src);
  if (r == 0)
    r = watch(d->dst);
  if (r != 0)
    finish(s, r);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  side *sd = h->data;
  np__splice *s = sd->s;

  if (s->closing)
    return;
  if (status < 0) {
    finish(s, status);
    return;
  }
  if (events & UV_READABLE)
    step(s, sd->out);
  if (!s->closing && (events & UV_WRITABLE))
    step(s, sd->in);
}

int np__splice_possible(np_conn *a, np_conn *b, const np__pipes *pipes) {
  return pipes != NULL && pipes->enabled && np__conn_tcp_fd(a, NULL) >= 0 &&
         np__conn_tcp_fd(b, NULL) >= 0;
}

int np__splice_start(np_conn *a, np_conn *b, np__pipes *pipes, np__splice_cb cb, void *data,
                     np__splice **out) {
  uv_loop_t *loop;
  np__splice *s;
  int fa, fb;

  if (pipes == NULL || !pipes->enabled || (fa = np__conn_tcp_fd(a, &loop)) < 0 ||
      (fb = np__conn_tcp_fd(b, NULL)) < 0)
    return UV_ENOTSUP;
  if ((s = calloc(1, sizeof(*s))) == NULL)
    return UV_ENOMEM;
  s->a.s = s->b.s = s;
  s->a.poll.data = &s->a;
  s->b.poll.data = &s->b;
  s->a.out = s->b.in = &s->ab;
  s->b.out = s->a.in = &s->ba;
  s->a.fd = fcntl(fa, F_DUPFD_CLOEXEC, 0);
  s->b.fd = fcntl(fb, F_DUPFD_CLOEXEC, 0);
  if (s->a.fd < 0 || s->b.fd < 0 || uv_poll_init_socket(loop, &s->a.poll, s->a.fd) != 0) {
    if (s->a.fd >= 0)
      close(s->a.fd);
    if (s->b.fd >= 0)
      close(s->b.fd);
    free(s);
    return UV_ENOTSUP; /* out of descriptors, say: the copying relay needs none */
  }
  if (uv_poll_init_socket(loop, &s->b.poll, s->b.fd) != 0) {
    close(s->b.fd);
    s->closes_left = 1; /* s is freed once libuv lets go of the first handle; cb stays NULL */
    s->a.poll.data = &s->a;
    uv_close((uv_handle_t *)&s->a.poll, on_side_closed);
    return UV_ENOTSUP;
  }
  s->a.poll.data = &s->a; /* uv_poll_init_socket cleared it */
  s->b.poll.data = &s->b;
  s->pipes = pipes;
  s->cb = cb;
  s->data = data;
  s->ab = (sdir){.src = &s->a, .dst = &s->b, .pipe = {-1, -1}};
  s->ba = (sdir){.src = &s->b, .dst = &s->a, .pipe = {-1, -1}};
  /* The libuv handles let go of the sockets; the duplicates keep them open. */
  np__conn_close(a, NULL);
  np__conn_close(b, NULL);
  s->ab.want_read = s->ba.want_read = 1;
  if (watch(&s->a) != 0 || watch(&s->b) != 0)
    finish(s, UV_EIO);
  if (out != NULL)
    *out = s;
  return 0;
}

void np__splice_count_into(np__splice *s, const np__tally *a_to_b, const np__tally *b_to_a) {
  np__tally_add(a_to_b, s->ab.bytes);
  np__tally_add(b_to_a, s->ba.bytes);
  s->ab.total = *a_to_b;
  s->ba.total = *b_to_a;
}

void np__splice_abort(np__splice *s) {
  finish(s, UV_ECANCELED);
}

size_t np__splice_buffered(const np__splice *s) {
  return s->ab.piped + s->ba.piped;
}

#else /* not Linux: always the copying relay */

void np__pipes_init(np__pipes *p, int enabled) {
  p->n = 0;
  p->enabled = enabled;
}

void np__pipes_clear(np__pipes *p) {
  (void)p;
}

int np__splice_possible(np_conn *a, np_conn *b, const np__pipes *pipes) {
  (void)a, (void)b, (void)pipes;
  return 0;
}

int np__splice_start(np_conn *a, np_conn *b, np__pipes *pipes, np__splice_cb cb, void *data,
                     np__splice **out) {
  (void)a, (void)b, (void)pipes, (void)cb, (void)data, (void)out;
  return UV_ENOTSUP;
}

void np__splice_abort(np__splice *s) {
  (void)s;
}

size_t np__splice_buffered(const np__splice *s) {
  (void)s;
  return 0;
}

#endif
