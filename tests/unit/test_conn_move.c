/* Moving a connection from one loop (thread) to another (docs/workers-plan.md, step 2): a TCP conn
 * and a TLS conn moved mid-stream from loop A (this thread) to loop B (a thread of its own, posted
 * to through its np__inbox, as the workers will be), with bytes read above the conn (pre) and, for
 * TLS, ciphertext read but not decrypted (rest); the peer, on loop A, must see neither an end nor a
 * byte out of order either way. Also: UV_EBUSY while a write is queued, a chan that decodes pre
 * before it reads, and two SO_REUSEPORT listeners sharing a port. Every wait is bounded by a
 * watchdog (GUARD_MS), and only 127.0.0.1 is used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <natproxy.h>

#include "chan.h"
#include "conn_move.h"
#include "inbox.h"
#include "listen.h"
#include "tls.h"

#define GUARD_MS 5000
#define D_LEN    (256u << 10) /* peer to source, then target */
#define X1_LEN   10000u       /* source to peer, before the move */
#define X2_LEN   (300u << 10) /* target to peer, after it */
#define SRC_READ 1000u        /* the source's one read: half taken, half handed on as pre */

static uv_loop_t loop_a;
static np__logger log_a, log_b;
static char dir[] = "/tmp/np-test-conn-move-XXXXXX";
static np__tls *stls, *ctls;
static char *d_data, *x_data; /* the bytes each way: x_data is X1 then X2 */

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

/* A watchdog on loop, unref'd so it keeps nothing alive; closed by guard_end. */
static void guard_start(uv_loop_t *loop, uv_timer_t *t, uv_timer_cb cb) {
  assert_int_equal(uv_timer_init(loop, t), 0);
  assert_int_equal(uv_timer_start(t, cb, GUARD_MS, 0), 0);
  uv_unref((uv_handle_t *)t);
}

/* Two connected TCP sockets on 127.0.0.1: fds[0] accepted, fds[1] connected. */
static void tcp_pair(int fds[2]) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

  assert_true(l >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(l, 1), 0);
  assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
  fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fds[1] >= 0);
  assert_int_equal(connect(fds[1], (struct sockaddr *)&sa, sizeof(sa)), 0);
  fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
  assert_true(fds[0] >= 0);
  close(l);
}

static np_conn *conn_on(uv_loop_t *loop, int fd) {
  np_conn *c;
  assert_int_equal(np__conn_tcp_new(loop, &c), 0);
  assert_int_equal(uv_tcp_open(np__conn_tcp_handle(c), fd), 0);
  return c;
}

/* ---- loop B: a thread that takes one moved connection through its inbox ---------------------- */

static struct worker {
  uv_loop_t loop;
  np__inbox inbox; /* made on the worker's thread */
  int inbox_status, ready;
  uv_mutex_t mu; /* ready */
  uv_cond_t cond;
  uv_thread_t thread;
  uv_timer_t guard;
  np__tls *tls;
} wb;

/* A connection on its way, as the group's inbox will carry it. */
typedef struct move_job {
  np__job job;
  np__moved m;
} move_job;

/* What the target saw, read by the test's thread once loop B's thread has ended. */
static struct target {
  np_conn *conn;
  int move_in_status, write_status, shutdown_status, read_err;
  size_t pre_len, rest_len, want, got;
  int mismatch_at; /* -1: every byte as sent */
  size_t x_from;   /* where its part of x_data starts: X1 went from the source, or nothing did */
  np_conn_write w;
  char buf[65536];
} dst;

static void on_guard_b(uv_timer_t *t) {
  (void)t;
  /* Not this thread's to fail the test (cmocka's longjmp): stop everything loudly. */
  fprintf(stderr, "loop B: test took too long\n");
  abort();
}

static void dst_check(const char *p, size_t n) {
  for (size_t i = 0; i < n && dst.mismatch_at < 0; i++)
    if (dst.got + i >= D_LEN || p[i] != d_data[dst.got + i])
      dst.mismatch_at = (int)(dst.got + i);
  dst.got += n;
}

static void dst_closed(np_conn *c) {
  (void)c;
  uv_close((uv_handle_t *)&wb.guard, NULL);
}

static void dst_shut(np_conn *c, int status) {
  dst.shutdown_status = status;
  np__conn_close(c, dst_closed);
}

static void dst_written(np_conn_write *w, int status) {
  dst.write_status = status;
  if (status != 0 || (dst.shutdown_status = np__conn_shutdown(w->conn, dst_shut)) != 0)
    np__conn_close(w->conn, dst_closed);
}

static void dst_alloc(np_conn *c, size_t sz, uv_buf_t *b) {
  (void)c;
  (void)sz;
  *b = uv_buf_init(dst.buf, sizeof(dst.buf));
}

static void dst_read(np_conn *c, ssize_t n, const uv_buf_t *b) {
  uv_buf_t out = uv_buf_init(x_data + dst.x_from, (unsigned)(X1_LEN + X2_LEN - dst.x_from));

  if (n == 0)
    return;
  if (n < 0) {
    dst.read_err = (int)n;
    np__conn_close(c, dst_closed);
    return;
  }
  dst_check(b->base, (size_t)n);
  if (dst.got < dst.want)
    return;
  /* All of the peer's bytes arrived: answer, then end the stream the clean way. */
  np__conn_read_stop(c);
  if ((dst.write_status = np__conn_write(c, &dst.w, &out, 1, dst_written)) != 0)
    np__conn_close(c, dst_closed);
}

static void move_job_run(np__job *job, void *arg) {
  move_job *j = (move_job *)job;
  np__moved m = j->m;
  (void)arg;

  free(j);
  np__inbox_close(&wb.inbox, NULL); /* one job per test */
  dst.pre_len = m.pre_len;
  dst.rest_len = m.rest_len;
  if ((dst.move_in_status = np__conn_move_in(&wb.loop, wb.tls, &m, &dst.conn)) != 0) {
    np__moved_free(&m);
    uv_close((uv_handle_t *)&wb.guard, NULL);
    return;
  }
  /* What the source read and did not use comes first, then the conn. */
  dst_check(m.pre, m.pre_len);
  np__moved_free(&m);
  dst.read_err = np__conn_read_start(dst.conn, dst_alloc, dst_read);
}

/* The inbox closed with the job still queued: the connection ends here. */
static void move_job_drop(np__job *job) {
  move_job *j = (move_job *)job;
  np__moved_free(&j->m);
  free(j);
}

static void worker_main(void *arg) {
  (void)arg;
  uv_mutex_lock(&wb.mu);
  wb.inbox_status = np__inbox_init(&wb.inbox, &wb.loop, NULL);
  wb.ready = 1;
  uv_cond_signal(&wb.cond);
  uv_mutex_unlock(&wb.mu);
  if (wb.inbox_status == 0)
    uv_run(&wb.loop, UV_RUN_DEFAULT);
}

static void worker_start(void) {
  memset(&dst, 0, sizeof(dst));
  dst.mismatch_at = -1;
  dst.want = D_LEN;
  assert_int_equal(uv_loop_init(&wb.loop), 0);
  assert_int_equal(uv_mutex_init(&wb.mu), 0);
  assert_int_equal(uv_cond_init(&wb.cond), 0);
  wb.ready = 0;
  /* Made here before the thread starts, which orders it before the thread's first use. */
  guard_start(&wb.loop, &wb.guard, on_guard_b);
  assert_int_equal(np__tls_server_share(stls, &wb.loop, &log_b, &wb.tls), 0);
  assert_int_equal(uv_thread_create(&wb.thread, worker_main, NULL), 0);
  uv_mutex_lock(&wb.mu);
  while (!wb.ready)
    if (uv_cond_timedwait(&wb.cond, &wb.mu, (uint64_t)GUARD_MS * 1000000) != 0)
      break;
  uv_mutex_unlock(&wb.mu);
  assert_true(wb.ready);
  assert_int_equal(wb.inbox_status, 0);
}

static void worker_post(const np__moved *m) {
  move_job *j = calloc(1, sizeof(*j));

  assert_non_null(j);
  j->job.run = move_job_run;
  j->job.drop = move_job_drop;
  j->job.peer = 1;
  j->m = *m;
  assert_int_equal(np__inbox_post(&wb.inbox, &j->job), 0);
}

static void worker_join(void) {
  assert_int_equal(uv_thread_join(&wb.thread), 0);
  assert_int_equal(uv_loop_close(&wb.loop), 0);
  np__inbox_destroy(&wb.inbox);
  uv_cond_destroy(&wb.cond);
  uv_mutex_destroy(&wb.mu);
  np__tls_free(wb.tls);
}

/* ---- loop A: the source (the server's side before the move) and the peer --------------------- */

static struct source {
  int tls, in_read; /* in_read: the move happens inside the read callback, before any write */
  np_conn *conn;
  size_t taken; /* bytes of D the source used itself */
  int read_once, x1_written, moved;
  np_conn_write w;
  char buf[SRC_READ];
  np__moved m;
} src;

static struct peer {
  np_conn *conn;
  np_conn_write w;
  size_t got;
  int end, mismatch_at;
  char buf[65536];
  uv_timer_t guard;
} peer;

static void move_now(void) {
  np__moved m;

  np__moved_init(&m);
  assert_int_equal(np__conn_move_out(src.conn, &m), 0);
  if (src.tls)
    assert_non_null(m.ssl);
  else
    assert_null(m.ssl);
  /* The rest of the source's read: the target reads it first. */
  m.pre_len = src.read_once - src.taken;
  assert_non_null(m.pre = malloc(m.pre_len));
  memcpy(m.pre, src.buf + src.taken, m.pre_len);
  /* The shell closes here; the socket lives on in m.fd: the peer must see no end. */
  np__conn_close(src.conn, NULL);
  src.moved = 1;
  /* Where the target's bytes start (published by the inbox's lock). */
  dst.got = src.taken;
  dst.x_from = src.x1_written ? X1_LEN : 0;
  worker_post(&m);
}

static void src_written(np_conn_write *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
  src.x1_written = 1;
  if (src.read_once > 0)
    move_now();
}

static void src_alloc(np_conn *c, size_t sz, uv_buf_t *b) {
  (void)c;
  (void)sz;
  *b = uv_buf_init(src.buf, SRC_READ);
}

static void src_read(np_conn *c, ssize_t n, const uv_buf_t *b) {
  uv_buf_t out = uv_buf_init(x_data, X1_LEN);

  if (n == 0)
    return;
  assert_true(n > 0);
  assert_memory_equal(b->base, d_data, (size_t)n);
  src.read_once = (int)n;
  src.taken = (size_t)n / 2;
  if (src.in_read) {
    /* As a session moves a conn on the message that names its owner: from inside the read. */
    move_now();
    return;
  }
  /* One read, then the source stops: half of it is its own, half goes along as pre; the rest of
   * what the peer sent waits in the kernel (TCP) or partly in rest and in the SSL (TLS). */
  np__conn_read_stop(c);
  assert_int_equal(np__conn_write(c, &src.w, &out, 1, src_written), 0);
}

static void peer_closed(np_conn *c) {
  (void)c;
  uv_close((uv_handle_t *)&peer.guard, NULL);
}

static void peer_alloc(np_conn *c, size_t sz, uv_buf_t *b) {
  (void)c;
  (void)sz;
  *b = uv_buf_init(peer.buf, sizeof(peer.buf));
}

static void peer_read(np_conn *c, ssize_t n, const uv_buf_t *b) {
  if (n == 0)
    return;
  if (n < 0) {
    peer.end = (int)n;
    np__conn_close(c, peer_closed);
    return;
  }
  for (size_t i = 0; i < (size_t)n && peer.mismatch_at < 0; i++)
    if (peer.got + i >= X1_LEN + X2_LEN || b->base[i] != x_data[peer.got + i])
      peer.mismatch_at = (int)(peer.got + i);
  peer.got += (size_t)n;
}

static void peer_written(np_conn_write *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
}

static void peer_go(np_conn *c) {
  uv_buf_t b = uv_buf_init(d_data, D_LEN);
  assert_int_equal(np__conn_read_start(c, peer_alloc, peer_read), 0);
  assert_int_equal(np__conn_write(c, &peer.w, &b, 1, peer_written), 0);
}

static void on_peer_handshake(np_conn *c, int status, void *data) {
  (void)data;
  assert_int_equal(status, 0);
  peer_go(c);
}

static void move_scenario(int tls, int in_read) {
  np_conn *s, *p;
  int fds[2];

  memset(&src, 0, sizeof(src));
  memset(&peer, 0, sizeof(peer));
  src.tls = tls;
  src.in_read = in_read;
  peer.mismatch_at = -1;
  worker_start();
  guard_start(&loop_a, &peer.guard, on_guard);
  tcp_pair(fds);
  s = conn_on(&loop_a, fds[0]);
  p = conn_on(&loop_a, fds[1]);
  if (tls) {
    assert_int_equal(np__tls_wrap(stls, s, &s), 0);
    assert_int_equal(np__tls_wrap(ctls, p, &p), 0);
    assert_int_equal(np__tls_handshake(p, on_peer_handshake, NULL), 0);
  } else {
    peer_go(p);
  }
  src.conn = s;
  peer.conn = p;
  /* The server's handshake runs once it reads. */
  assert_int_equal(np__conn_read_start(s, src_alloc, src_read), 0);
  uv_run(&loop_a, UV_RUN_DEFAULT);
  worker_join();

  assert_true(src.moved);
  print_message("%s%s: the source took %zu bytes, pre %zu, rest %zu\n", tls ? "tls" : "tcp",
                in_read ? " (in the read callback)" : "", src.taken, dst.pre_len, dst.rest_len);
  assert_int_equal(dst.move_in_status, 0);
  assert_int_equal(dst.pre_len, (size_t)src.read_once - src.taken);
  assert_true(dst.pre_len > 0);
  if (tls) /* the source's one read left ciphertext behind (several records arrived at once) */
    assert_true(dst.rest_len > 0);
  else
    assert_int_equal(dst.rest_len, 0);
  assert_int_equal(dst.mismatch_at, -1);
  assert_int_equal(dst.got, D_LEN);
  assert_int_equal(dst.write_status, 0);
  assert_int_equal(dst.shutdown_status, 0);
  /* The peer: X1 from the source, X2 from the target, in order, then the target's clean end; an
   * end in between (a FIN from the source's close) would cut it short. */
  assert_int_equal(peer.mismatch_at, -1);
  assert_int_equal(peer.got, X1_LEN + X2_LEN);
  assert_int_equal(peer.end, UV_EOF);
}

static void test_move_tcp(void **state) {
  (void)state;
  move_scenario(0, 0);
}

static void test_move_tls(void **state) {
  (void)state;
  move_scenario(1, 0);
}

static void test_move_tcp_in_read(void **state) {
  (void)state;
  move_scenario(0, 1);
}

static void test_move_tls_in_read(void **state) {
  (void)state;
  move_scenario(1, 1);
}

/* ---- UV_EBUSY while a write is queued, then the move from its callback ----------------------- */

static struct busy {
  np_conn *mover, *other;
  np_conn_write w;
  char *big;
  size_t len;
  int first, retried, other_end;
  char buf[65536];
  uv_timer_t guard;
} busy;

/* TCP: more than loopback's buffers take while the other side does not read. A TLS write is in
 * flight until its callback whatever its size: a small one keeps the test quick under valgrind. */
#define BIG_LEN_TCP (32u << 20)
#define BIG_LEN_TLS (64u << 10)

static void busy_closed(np_conn *c) {
  (void)c;
  if (busy.other_end != 0)
    uv_close((uv_handle_t *)&busy.guard, NULL);
}

static void busy_alloc(np_conn *c, size_t sz, uv_buf_t *b) {
  (void)c;
  (void)sz;
  *b = uv_buf_init(busy.buf, sizeof(busy.buf));
}

static void busy_read(np_conn *c, ssize_t n, const uv_buf_t *b) {
  (void)b;
  if (n >= 0)
    return;
  busy.other_end = (int)n;
  np__conn_close(c, busy_closed);
}

static void busy_written(np_conn_write *w, int status) {
  np__moved m;

  assert_int_equal(status, 0);
  /* Nothing queued any more: now it moves (and, going nowhere, ends). */
  np__moved_init(&m);
  busy.retried = np__conn_move_out(w->conn, &m);
  if (busy.retried == 0)
    np__moved_free(&m);
  np__conn_close(w->conn, NULL);
}

static void busy_write(np_conn *c) {
  uv_buf_t b = uv_buf_init(busy.big, (unsigned)busy.len);
  np__moved m;

  assert_int_equal(np__conn_write(c, &busy.w, &b, 1, busy_written), 0);
  np__moved_init(&m);
  busy.first = np__conn_move_out(c, &m);
  assert_int_equal(m.fd, -1); /* untouched */
  /* Let the bytes flow: the write completes, and its callback tries again. */
  assert_int_equal(np__conn_read_start(busy.other, busy_alloc, busy_read), 0);
}

static void on_busy_handshake(np_conn *c, int status, void *data) {
  (void)data;
  assert_int_equal(status, 0);
  busy_write(c);
}

static void busy_case(int tls) {
  int fds[2];

  memset(&busy, 0, sizeof(busy));
  busy.len = tls ? BIG_LEN_TLS : BIG_LEN_TCP;
  assert_non_null(busy.big = calloc(1, busy.len));
  guard_start(&loop_a, &busy.guard, on_guard);
  tcp_pair(fds);
  busy.mover = conn_on(&loop_a, fds[1]);
  busy.other = conn_on(&loop_a, fds[0]);
  if (tls) {
    /* The client's side moves: its handshake runs while the server reads. */
    assert_int_equal(np__tls_wrap(stls, busy.other, &busy.other), 0);
    assert_int_equal(np__tls_wrap(ctls, busy.mover, &busy.mover), 0);
    assert_int_equal(np__tls_handshake(busy.mover, on_busy_handshake, NULL), 0);
    assert_int_equal(np__conn_read_start(busy.other, busy_alloc, busy_read), 0);
  } else {
    busy_write(busy.mover);
  }
  uv_run(&loop_a, UV_RUN_DEFAULT);
  free(busy.big);
  assert_int_equal(busy.first, UV_EBUSY);
  assert_int_equal(busy.retried, 0);
  /* The moved connection went nowhere: its last descriptor closed, without close_notify. */
  assert_int_equal(busy.other_end, tls ? UV_ECONNRESET : UV_EOF);
}

static void test_busy_tcp(void **state) {
  (void)state;
  busy_case(0);
}

static void test_busy_tls(void **state) {
  (void)state;
  busy_case(1);
}

/* ---- a chan fed pre before it reads ---------------------------------------------------------- */

static struct pre_test {
  int in_start, msgs, bad_order;
  uv_timer_t guard;
} pt;

static void pre_chan_closed(np__chan *ch) {
  (void)ch;
  uv_close((uv_handle_t *)&pt.guard, NULL);
}

static void pre_on_msg(np__chan *ch, const np_msg *m) {
  if (pt.in_start || m->type != NP_MSG_REQ_WORK || m->id != (uint64_t)pt.msgs + 1)
    pt.bad_order = 1;
  if (++pt.msgs == 4)
    np__chan_close(ch, pre_chan_closed);
}

static void pre_on_err(np__chan *ch, int err) {
  (void)err;
  pt.bad_order = 1;
  np__chan_close(ch, pre_chan_closed);
}

static void test_chan_pre(void **state) {
  const np_codec_ops *codec = np_codec_native();
  char wire[4 * NP_CODEC_MAX_ENCODED];
  size_t len = 0, cut = 0;
  np__chan *ch;
  int fds[2], n;
  (void)state;

  memset(&pt, 0, sizeof(pt));
  for (int i = 1; i <= 4; i++) {
    np_msg m = {.type = NP_MSG_REQ_WORK, .id = (uint64_t)i, .name = "web"};
    assert_true((n = codec->encode(&m, wire + len, sizeof(wire) - len)) > 0);
    len += (size_t)n;
    if (i == 3)
      cut = len - (size_t)n / 2; /* pre ends inside the third message */
  }
  guard_start(&loop_a, &pt.guard, on_guard);
  tcp_pair(fds);
  /* What a chan on another loop read already, and what is still in the socket. */
  assert_int_equal(write(fds[1], wire + cut, len - cut), (ssize_t)(len - cut));
  assert_int_equal(
      np__chan_new_pre(&loop_a, conn_on(&loop_a, fds[0]), codec, 4096, 0, wire, cut, &ch), 0);
  pt.in_start = 1;
  assert_int_equal(np__chan_start(ch, pre_on_msg, pre_on_err, NULL), 0);
  pt.in_start = 0;
  uv_run(&loop_a, UV_RUN_DEFAULT);
  close(fds[1]);
  assert_int_equal(pt.msgs, 4);
  assert_false(pt.bad_order);
}

/* ---- two SO_REUSEPORT listeners on one port -------------------------------------------------- */

#define RP_TRIES 64 /* both missed: 2^-63 */

static struct reuse {
  np__listener *l[2];
  int accepted[2], tries, closed;
  struct sockaddr_in addr;
  uv_timer_t guard;
} rp;

typedef struct rp_client {
  uv_tcp_t tcp;
  uv_connect_t req;
} rp_client;

static void rp_client_closed(uv_handle_t *h) {
  free(h->data);
}

static void rp_connected(uv_connect_t *req, int status) {
  rp_client *c = req->data;
  assert_int_equal(status, 0);
  uv_close((uv_handle_t *)&c->tcp, rp_client_closed);
}

static void rp_connect(void) {
  rp_client *c = calloc(1, sizeof(*c));

  assert_non_null(c);
  rp.tries++;
  assert_int_equal(uv_tcp_init(&loop_a, &c->tcp), 0);
  c->tcp.data = c->req.data = c;
  assert_int_equal(uv_tcp_connect(&c->req, &c->tcp, (struct sockaddr *)&rp.addr, rp_connected), 0);
}

static void rp_listener_closed(void *data) {
  (void)data;
  if (++rp.closed == 2)
    uv_close((uv_handle_t *)&rp.guard, NULL);
}

static void rp_accept(np__listener *l, np_conn *c) {
  int *count = np__listener_data(l);

  (*count)++;
  np__conn_close(c, NULL);
  if (rp.l[0] == NULL)
    return; /* both closing already */
  if ((rp.accepted[0] > 0 && rp.accepted[1] > 0) || rp.tries == RP_TRIES) {
    np__listener_close(rp.l[0], rp_listener_closed);
    np__listener_close(rp.l[1], rp_listener_closed);
    rp.l[0] = rp.l[1] = NULL;
    return;
  }
  rp_connect(); /* one at a time: each from a port of its own, hashed anew */
}

static void rp_error(np__listener *l, int err, uint64_t refused) {
  (void)l;
  (void)refused;
  fail_msg("accept failed: %s", uv_strerror(err));
}

static void test_reuseport(void **state) {
  (void)state;

  memset(&rp, 0, sizeof(rp));
  guard_start(&loop_a, &rp.guard, on_guard);
  uv_ip4_addr("127.0.0.1", 0, &rp.addr);
  assert_int_equal(np__listen_flags(&loop_a, (struct sockaddr *)&rp.addr, NP_LISTEN_REUSEPORT,
                                    rp_accept, rp_error, &rp.accepted[0], &rp.l[0]),
                   0);
  rp.addr.sin_port = htons((uint16_t)np__listener_port(rp.l[0]));
  assert_int_equal(np__listen_flags(&loop_a, (struct sockaddr *)&rp.addr, NP_LISTEN_REUSEPORT,
                                    rp_accept, rp_error, &rp.accepted[1], &rp.l[1]),
                   0);
  rp_connect();
  uv_run(&loop_a, UV_RUN_DEFAULT);
  assert_true(rp.accepted[0] > 0);
  assert_true(rp.accepted[1] > 0);
}

/* Without the flag the port stays exclusive: the kernel joins only sockets that all asked. */
static void test_reuseport_exclusive(void **state) {
  struct sockaddr_in sa;
  np__listener *a, *b = NULL;
  (void)state;

  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(np__listen(&loop_a, (struct sockaddr *)&sa, rp_accept, rp_error, NULL, &a), 0);
  sa.sin_port = htons((uint16_t)np__listener_port(a));
  assert_int_equal(np__listen_flags(&loop_a, (struct sockaddr *)&sa, NP_LISTEN_REUSEPORT, rp_accept,
                                    rp_error, NULL, &b),
                   UV_EADDRINUSE);
  np__listener_close(a, NULL);
  uv_run(&loop_a, UV_RUN_DEFAULT);
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int setup(void **state) {
  struct np_config *sc, *cc;
  (void)state;

  assert_non_null(mkdtemp(dir));
  assert_int_equal(uv_loop_init(&loop_a), 0);
  np__logger_init(&log_a);
  np__logger_init(&log_b);
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &sc), 0);
  assert_int_equal(np_config_set_flag(sc, "tls-dir", dir), 0);
  assert_int_equal(np__tls_server_new(&loop_a, sc, &log_a, &stls), 0);
  np_config_free(sc);
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cc), 0);
  assert_int_equal(np_config_set_flag(cc, "server", "127.0.0.1:1"), 0);
  assert_int_equal(np_config_set_flag(cc, "server-fingerprint", np__tls_fingerprint(stls)), 0);
  assert_int_equal(np__tls_client_new(&loop_a, cc, &log_a, &ctls), 0);
  np_config_free(cc);
  assert_non_null(d_data = malloc(D_LEN));
  assert_non_null(x_data = malloc(X1_LEN + X2_LEN));
  for (size_t i = 0; i < D_LEN; i++)
    d_data[i] = (char)(i * 7 + i / 4093);
  for (size_t i = 0; i < X1_LEN + X2_LEN; i++)
    x_data[i] = (char)(i * 13 + i / 251);
  return 0;
}

static int teardown(void **state) {
  char path[sizeof(dir) + 16];
  (void)state;

  np__tls_free(stls);
  np__tls_free(ctls);
  assert_int_equal(uv_loop_close(&loop_a), 0);
  free(d_data);
  free(x_data);
  snprintf(path, sizeof(path), "%s/server.crt", dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/server.key", dir);
  unlink(path);
  rmdir(dir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_move_tcp),
      cmocka_unit_test(test_move_tls),
      cmocka_unit_test(test_move_tcp_in_read),
      cmocka_unit_test(test_move_tls_in_read),
      cmocka_unit_test(test_busy_tcp),
      cmocka_unit_test(test_busy_tls),
      cmocka_unit_test(test_chan_pre),
      cmocka_unit_test(test_reuseport),
      cmocka_unit_test(test_reuseport_exclusive),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
