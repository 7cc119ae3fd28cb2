/* The allocator sweep of moving a connection (lib/conn_move.c, the move_out of conn.c and tls.c,
 * np__tls_adopt, np__tls_server_share, np__chan_new_pre): a TLS connection whose server side reads
 * the first of three messages, leaves its chan (the other two, or part of them, are the chan's
 * rest), moves out and in again through a context shared for the "other" loop, and answers the
 * other two from a chan fed the rest first. One loop and one thread: the sweep's counter is not
 * thread-safe, and the allocations are the same on any loop (test_conn_move covers two threads).
 * Whatever fails must end in an error, every handle closed (uv_loop_close succeeds) and, in the
 * AddressSanitizer build, nothing leaked: the descriptor, the SSL and the buffers of a connection
 * that never arrived included. */
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
#include "tls.h"

#include "failmalloc.h"

#define MAX_FRAME 4096

static uv_loop_t loop;
static np__logger logger;
static np__tls *stls, *ctls;
static char tls_dir[] = "/tmp/np-fm-conn-move-XXXXXX";
static long answered_runs;

static struct run {
  np__tls *share;     /* the "other" loop's context */
  np_conn *peer_conn; /* until its chan takes it */
  np__chan *peer;
  np_conn *srv_conn; /* until its chan takes it */
  np__chan *srv;     /* before the move */
  np__chan *moved;   /* after it */
  int got, answered, finished;
  uv_timer_t stuck;
} r;

static void on_stuck(uv_timer_t *t) {
  (void)t;
  fail_msg("the scenario did not end within 5 s");
}

static void chan_closed(np__chan *ch) {
  (void)ch;
}

static void conn_closed(np_conn *c) {
  (void)c;
}

/* The run is over, by success or by an error: close whatever is open. */
static void finish(void) {
  if (r.finished)
    return;
  r.finished = 1;
  if (r.peer != NULL)
    np__chan_close(r.peer, chan_closed);
  else if (r.peer_conn != NULL)
    np__conn_close(r.peer_conn, conn_closed);
  if (r.srv != NULL)
    np__chan_close(r.srv, chan_closed);
  else if (r.srv_conn != NULL)
    np__conn_close(r.srv_conn, conn_closed);
  if (r.moved != NULL)
    np__chan_close(r.moved, chan_closed);
  r.peer = r.srv = r.moved = NULL;
  r.peer_conn = r.srv_conn = NULL;
  uv_close((uv_handle_t *)&r.stuck, NULL);
}

static void on_error(np__chan *ch, int err) {
  (void)ch;
  (void)err;
  finish();
}

static void on_moved_msg(np__chan *ch, const np_msg *m) {
  np_msg answer = {.type = NP_MSG_REQ_WORK, .id = 100, .name = "done"};

  assert_int_equal(m->type, NP_MSG_REQ_WORK);
  assert_int_equal(m->id, (uint64_t)++r.got);
  if (r.got == 3 && np__chan_send(ch, &answer) != 0)
    finish();
}

/* The arriving side: what a worker's inbox would do with the job. */
static void move_in(np__moved *m) {
  np_conn *c;

  if (np__conn_move_in(&loop, r.share, m, &c) != 0) {
    np__moved_free(m);
    finish();
    return;
  }
  if (np__chan_new_pre(&loop, c, np_codec_native(), MAX_FRAME, 0, m->pre, m->pre_len, &r.moved) !=
      0) {
    np__moved_free(m);
    np__conn_close(c, conn_closed);
    finish();
    return;
  }
  np__moved_free(m); /* pre was copied */
  if (np__chan_start(r.moved, on_moved_msg, on_error, NULL) != 0)
    finish();
}

static void on_srv_msg(np__chan *ch, const np_msg *msg) {
  const char *rest;
  size_t rest_len;
  np_conn *c;
  np__moved m;

  assert_int_equal(msg->id, 1);
  r.got = 1;
  /* The message that says where the connection belongs: it leaves with what came after. */
  c = np__chan_detach(ch, &rest, &rest_len);
  r.srv = NULL;
  np__moved_init(&m);
  if (np__conn_move_out(c, &m) != 0) {
    np__conn_close(c, conn_closed);
    finish();
    return;
  }
  np__conn_close(c, conn_closed);
  if (rest_len > 0) {
    if ((m.pre = malloc(rest_len)) == NULL) {
      np__moved_free(&m);
      finish();
      return;
    }
    memcpy(m.pre, rest, rest_len);
    m.pre_len = rest_len;
  }
  move_in(&m);
}

static void on_peer_msg(np__chan *ch, const np_msg *m) {
  (void)ch;
  assert_int_equal(m->id, 100);
  r.answered = 1;
  finish();
}

static void on_handshake(np_conn *c, int status, void *data) {
  (void)data;
  if (status != 0) {
    finish();
    return;
  }
  if (np__chan_new(c, np_codec_native(), MAX_FRAME, 0, &r.peer) != 0) {
    finish();
    return;
  }
  r.peer_conn = NULL;
  if (np__chan_start(r.peer, on_peer_msg, on_error, NULL) != 0) {
    finish();
    return;
  }
  for (int i = 1; i <= 3; i++) {
    np_msg m = {.type = NP_MSG_REQ_WORK, .id = (uint64_t)i, .name = "web"};
    if (np__chan_send(r.peer, &m) != 0) {
      finish();
      return;
    }
  }
}

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

/* A TCP conn on fd, or -1 with fd closed. */
static int conn_on(int fd, np_conn **out) {
  if (np__conn_tcp_new(&loop, out) != 0) {
    close(fd);
    return -1;
  }
  if (uv_tcp_open(np__conn_tcp_handle(*out), fd) != 0) {
    close(fd);
    np__conn_close(*out, conn_closed);
    *out = NULL;
    return -1;
  }
  return 0;
}

/* 0, or -1 when something failed before the handshake began. */
static int start(void) {
  np_conn *c;
  int fds[2];

  tcp_pair(fds);
  if (conn_on(fds[0], &r.srv_conn) != 0) {
    close(fds[1]);
    return -1;
  }
  if (conn_on(fds[1], &r.peer_conn) != 0 ||
      np__tls_server_share(stls, &loop, &logger, &r.share) != 0 ||
      np__tls_wrap(stls, r.srv_conn, &c) != 0)
    return -1;
  r.srv_conn = c;
  if (np__tls_wrap(ctls, r.peer_conn, &c) != 0)
    return -1;
  r.peer_conn = c;
  if (np__chan_new(r.srv_conn, np_codec_native(), MAX_FRAME, 0, &r.srv) != 0)
    return -1;
  r.srv_conn = NULL;
  if (np__chan_start(r.srv, on_srv_msg, on_error, NULL) != 0 ||
      np__tls_handshake(r.peer_conn, on_handshake, NULL) != 0)
    return -1;
  return 0;
}

static void scenario(void *arg) {
  (void)arg;
  memset(&r, 0, sizeof(r));
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &r.stuck);
  uv_timer_start(&r.stuck, on_stuck, 5000, 0);
  uv_unref((uv_handle_t *)&r.stuck);
  if (start() != 0)
    finish();
  uv_run(&loop, UV_RUN_DEFAULT);
  np__tls_free(r.share);
  if (r.answered)
    answered_runs++;
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_sweep(void **state) {
  const char *env = getenv("NP_FM_SSL_STRIDE");
  long n, stride = env != NULL && atol(env) > 0 ? atol(env) : 29;
  (void)state;

  answered_runs = 0;
  n = np_fm_sweep(scenario, NULL, NP_FM_OURS, 1, 100000);
  print_message("conn move: %ld allocations of ours, each failed once; %ld runs still answered\n",
                n, answered_runs);
  assert_true(n > 0);
  assert_true(answered_runs > 0); /* the clean last run at least */
  answered_runs = 0;
  n = np_fm_sweep(scenario, NULL, NP_FM_OPENSSL, stride, 1000000);
  print_message("conn move: %ld allocations of OpenSSL's, 1 in %ld failed; %ld runs answered\n", n,
                stride, answered_runs);
  assert_true(n > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sweep),
  };
  struct np_config *cfg;
  char path[sizeof(tls_dir) + 16];
  int r1;

  np_fm_install();
  np__logger_init(&logger);
  logger.cb = NULL; /* each failure says what failed: thousands of lines, not needed here */
  if (mkdtemp(tls_dir) == NULL || np_config_new(NP_CONFIG_SERVER, &cfg) != 0 ||
      np_config_set_flag(cfg, "tls-dir", tls_dir) != 0 ||
      np__tls_server_new(&loop, cfg, &logger, &stls) != 0)
    return 1;
  np_config_free(cfg);
  if (np_config_new(NP_CONFIG_CLIENT, &cfg) != 0 ||
      np_config_set_flag(cfg, "server", "127.0.0.1:1") != 0 ||
      np_config_set_flag(cfg, "server-fingerprint", np__tls_fingerprint(stls)) != 0 ||
      np__tls_client_new(&loop, cfg, &logger, &ctls) != 0)
    return 1;
  np_config_free(cfg);
  r1 = cmocka_run_group_tests(tests, NULL, NULL);
  np__tls_free(stls);
  np__tls_free(ctls);
  snprintf(path, sizeof(path), "%s/server.crt", tls_dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/server.key", tls_dir);
  unlink(path);
  rmdir(tls_dir);
  return r1;
}
