/* Interop with HashiCorp's yamux, the reference implementation of the format np_mux speaks: the
 * public natproxy/mux.h against yamuxpeer (Go, over Debian's golang-github-hashicorp-yamux-dev),
 * run as a child over one loopback TCP connection per case, each case in both roles: C as the
 * yamux client that dials, and C as the server that is dialled.
 *
 *   echo       50 streams each way at once, 1 MiB each, echoed byte-exact by the other side
 *   bulk_up    64 MiB from C on one stream; bulk_down: 64 MiB from Go
 *   half_c     C sends 1 MiB and its FIN while Go's 4 MiB flow (3 MiB of them after that FIN)
 *   half_go    Go sends 1 MiB and its FIN while C's bytes flow (128 KiB of them after that FIN)
 *   close_c    np_mux_close with a stream open: Go sees the stream and the session end;
 *              end_cb says UV_ECANCELED, no go away from the peer
 *   close_go   Go says go away (np_mux_open here: NP_ECLOSED), later closes the session with no
 *              stream open: end_cb UV_EOF with go away code 0, np_mux_close after it on a later
 * turn drop_go    Go closes the session without a go away while our stream is open: the stream is
 *              reset, end_cb UV_EOF with no go away, np_mux_close from inside end_cb
 *
 * The side that did not dial opens streams in both roles (Go: echo, bulk_down, half_go, close_go;
 * C: echo, bulk_up, half_c, close_c, drop_go). Both sides check the bytes they get (the pattern
 * below, so nothing is stored); the Go side exits 0 only if its part went as planned, and a case
 * passes here only then, with end_cb and np_mux_close's callback run exactly once. Every case is
 * bounded by a timer here and by the peer's own deadline. argv[1] is the built peer;
 * run-yamux-interop.sh builds it and skips the test where Go is absent. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <natproxy.h>

#define MIB     (1024u * 1024)
#define GO_BASE 0x80000000u /* the peer's bytes are pattern(GO_BASE + i); ours start at 0 */
#define N_ECHO  50
#define BULK    (64 * MIB)
#define CASE_MS 60000 /* a case takes well under a second here; valgrind or a loaded CI, more */

static const char *peer_path;
static char *pat; /* pat[i] == pattern(i) for i < BULK: every byte we send comes from here */

/* The same function as pat() in yamuxpeer/main.go. */
static char pattern(uint32_t i) {
  return (char)(unsigned char)((i * 2654435761u) >> 24);
}

typedef struct run run;
typedef struct xs xs;

typedef struct kase {
  const char *name;
  void (*start)(run *r);                            /* the mux is up: our first moves */
  void (*accept)(run *r, struct np_mux_stream *st); /* a stream the peer opened */
  int close_when_done; /* we close the session once our streams are done (else the case does) */
  int close_in_end;    /* the peer ends it: np_mux_close from end_cb (else on a later turn) */
  int status;          /* what end_cb must say */
  int64_t goaway;
} kase;

/* One stream's plan and progress: what the peer must send (then its FIN), what we send. */
struct xs {
  run *r;
  struct np_mux_stream *st;
  uint32_t base;           /* the peer's bytes are pattern(base + i) */
  size_t expect, got;      /* bytes due before the peer's FIN */
  int echo;                /* instead: write back what comes, FIN after the peer's */
  size_t after_off, after; /* pat[after_off..+after) to send once the peer's FIN came, then ours */
  int want_err;            /* the error that must end the stream (0: it ends with EOF) */
  void (*on_got)(xs *x);   /* all expected bytes came */
  void (*on_fin_out)(xs *x); /* our FIN went out */
  size_t got_after_fin;      /* of the bytes, those that came after our FIN went out */
  int writes, fin, fin_out, eof, err, closing;
};

struct run {
  const kase *k;
  int c_client;
  uv_loop_t loop;
  uv_timer_t guard, later;
  uv_process_t proc;
  uv_pipe_t out; /* the peer's stdout: its port, when it listens */
  uv_tcp_t listener, tcp;
  uv_connect_t creq;
  char port[16];
  size_t port_len;
  struct np_mux *mux;
  int left; /* our streams still to finish */
  int spawned, exited, term_signal, ends, status, closes;
  int64_t goaway, exit_status;
};

/* Fail the case: the peer goes first, so no process outlives the test. */
static void die(run *r, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (r->spawned && !r->exited)
    uv_process_kill(&r->proc, SIGKILL);
  fail_msg("%s %s: %s", r->c_client ? "C client" : "C server", r->k->name, msg);
}

#define CHECK(r, cond)                                                                             \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      die((r), "%s:%d: %s", __FILE__, __LINE__, #cond);                                            \
  } while (0)

/* ---- the session ------------------------------------------------------------------------- */

static void on_mux_closed(struct np_mux *mux) {
  run *r = np_mux_get_data(mux);
  CHECK(r, r->ends == 1);
  r->closes++;
}

static void close_mux(run *r) {
  np_mux_close(r->mux, on_mux_closed);
  np_mux_close(r->mux, on_mux_closed); /* idempotent: the callback still runs once */
}

static void on_later(uv_timer_t *t) {
  close_mux(t->data);
}

static void on_end(struct np_mux *mux, int status, int64_t goaway) {
  run *r = np_mux_get_data(mux);
  struct np_mux_stream *st;
  if (r->ends++ > 0 || r->closes > 0)
    die(r, "end_cb ran again (%s), or after the close callback", np_err_name(status));
  r->status = status;
  r->goaway = goaway;
  if (status != r->k->status || goaway != r->k->goaway)
    die(r, "end_cb said %s, go away %lld; expected %s, %lld", np_err_name(status),
        (long long)goaway, np_err_name(r->k->status), (long long)r->k->goaway);
  CHECK(r, np_mux_open(mux, &st) == NP_ECLOSED);
  if (r->k->close_when_done || r->k->status == UV_ECANCELED)
    return; /* we closed it */
  if (r->k->close_in_end)
    close_mux(r);
  else
    uv_timer_start(&r->later, on_later, 0, 0);
}

/* ---- streams ----------------------------------------------------------------------------- */

static void xs_read(struct np_mux_stream *st, ssize_t n, const uv_buf_t *b);

static xs *xs_new(run *r, struct np_mux_stream *st) {
  xs *x = calloc(1, sizeof(*x));
  CHECK(r, x != NULL);
  x->r = r;
  x->st = st;
  np_mux_stream_set_data(st, x);
  CHECK(r, np_mux_stream_read_start(st, xs_read) == 0);
  return x;
}

static xs *xs_open(run *r) {
  struct np_mux_stream *st;
  CHECK(r, np_mux_open(r->mux, &st) == 0);
  return xs_new(r, st);
}

static void xs_closed(struct np_mux_stream *st) {
  xs *x = np_mux_stream_get_data(st);
  run *r = x->r;
  free(x);
  if (--r->left == 0 && r->k->close_when_done)
    close_mux(r);
}

static void xs_maybe_close(xs *x) {
  if (x->closing || (x->err == 0 && !(x->eof && x->writes == 0 && x->fin == x->fin_out)))
    return;
  if (x->err == 0 && !x->echo && x->got != x->expect)
    die(x->r, "stream %u: EOF after %zu of %zu bytes", np_mux_stream_id(x->st), x->got, x->expect);
  x->closing = 1;
  np_mux_stream_close(x->st, xs_closed);
}

static void xs_written(struct np_mux_stream *st, int status, void *arg) {
  xs *x = np_mux_stream_get_data(st);
  free(arg); /* an echoed copy, or NULL */
  x->writes--;
  if (status != 0 && x->err == 0 && !x->closing)
    die(x->r, "stream %u: write: %s", np_mux_stream_id(st), np_err_name(status));
  xs_maybe_close(x);
}

static void xs_write(xs *x, char *bytes, size_t len, void *copy) {
  uv_buf_t b = uv_buf_init(bytes, (unsigned)len);
  int r = np_mux_stream_write(x->st, &b, 1, xs_written, copy);
  if (r != 0)
    die(x->r, "stream %u: write: %s", np_mux_stream_id(x->st), np_err_name(r));
  x->writes++;
}

static void xs_send(xs *x, size_t off, size_t len) {
  xs_write(x, pat + off, len, NULL);
}

static void xs_fin_out(struct np_mux_stream *st, int status, void *arg) {
  xs *x = np_mux_stream_get_data(st);
  (void)arg;
  CHECK(x->r, status == 0);
  x->fin_out = 1;
  if (x->on_fin_out != NULL)
    x->on_fin_out(x);
  xs_maybe_close(x);
}

static void xs_fin(xs *x) {
  x->fin = 1;
  CHECK(x->r, np_mux_stream_shutdown(x->st, xs_fin_out, NULL) == 0);
}

static void xs_read(struct np_mux_stream *st, ssize_t n, const uv_buf_t *b) {
  xs *x = np_mux_stream_get_data(st);
  uint32_t id = np_mux_stream_id(st);

  if (n > 0 && x->echo) {
    char *copy = malloc((size_t)n);
    CHECK(x->r, copy != NULL);
    memcpy(copy, b->base, (size_t)n);
    xs_write(x, copy, (size_t)n, copy);
    return;
  }
  if (n > 0) {
    if (x->got + (size_t)n > x->expect)
      die(x->r, "stream %u: %zu bytes past the %zu due", id, x->got + (size_t)n - x->expect,
          x->expect);
    for (size_t i = 0; i < (size_t)n; i++) {
      if (b->base[i] != pattern(x->base + (uint32_t)(x->got + i)))
        die(x->r, "stream %u: byte %zu differs", id, x->got + i);
    }
    x->got += (size_t)n;
    if (x->fin_out)
      x->got_after_fin += (size_t)n;
    if (x->got == x->expect && x->on_got != NULL)
      x->on_got(x);
    return;
  }
  if (n == UV_EOF) {
    if (x->want_err != 0)
      die(x->r, "stream %u: EOF, not %s", id, np_err_name(x->want_err));
    x->eof = 1;
    if (x->after > 0)
      xs_send(x, x->after_off, x->after);
    if (x->echo || x->after > 0)
      xs_fin(x);
  } else {
    if (n != x->want_err)
      die(x->r, "stream %u: %s", id, np_err_name((int)n));
    x->err = (int)n;
  }
  xs_maybe_close(x);
}

/* ---- the cases ----------------------------------------------------------------------------- */

static void unexpected_stream(run *r, struct np_mux_stream *st) {
  die(r, "the peer opened stream %u", np_mux_stream_id(st));
}

static void echo_start(run *r) {
  r->left = 2 * N_ECHO; /* ours and the peer's */
  for (uint32_t k = 0; k < N_ECHO; k++) {
    xs *x = xs_open(r);
    x->base = k * MIB;
    x->expect = MIB;
    xs_send(x, k * MIB, MIB);
    xs_fin(x);
  }
}

static void echo_accept(run *r, struct np_mux_stream *st) {
  xs_new(r, st)->echo = 1;
}

static void bulk_up_start(run *r) {
  xs *x = xs_open(r);
  r->left = 1;
  xs_send(x, 0, BULK);
  xs_fin(x);
}

static void bulk_down_start(run *r) {
  r->left = 1;
}

static void bulk_down_accept(run *r, struct np_mux_stream *st) {
  xs *x = xs_new(r, st);
  x->base = GO_BASE;
  x->expect = BULK;
}

/* The peer holds its last 3 MiB back until it has read our FIN (at exactly 1 MiB: it checks that),
 * so they flowed after it. Here only some are seen to: our FIN's write is reported a loop turn
 * after it left, and a turn may read up to 2 MiB before that. */
static void half_c_got(xs *x) {
  CHECK(x->r, x->got_after_fin > 0);
}

static void half_c_start(run *r) {
  xs *x = xs_open(r);
  r->left = 1;
  x->base = GO_BASE;
  x->expect = 4 * MIB;
  x->on_got = half_c_got;
  xs_send(x, 0, MIB);
  xs_fin(x);
}

static void half_go_start(run *r) {
  r->left = 2; /* the peer's stream and our marker */
}

/* The marker tells the peer that our bytes and FIN are all sent; it closes it when they checked. */
static void half_go_marker(xs *x) {
  xs_open(x->r);
}

static void half_go_accept(run *r, struct np_mux_stream *st) {
  xs *x = xs_new(r, st);
  x->base = GO_BASE;
  x->expect = MIB;
  x->after_off = 64 * 1024;
  x->after = 128 * 1024;
  x->on_fin_out = half_go_marker;
  xs_send(x, 0, 64 * 1024);
}

static void close_c_got(xs *x) {
  close_mux(x->r); /* the peer answered: it has the stream, still open */
}

static void close_c_start(run *r) {
  xs *x = xs_open(r);
  x->base = GO_BASE;
  x->expect = 1;
  x->want_err = UV_ECANCELED;
  x->on_got = close_c_got;
  xs_send(x, 0, 1024);
}

/* The peer's go away came before this stream: no more opens here, but its streams go on. */
static void close_go_got(xs *x) {
  struct np_mux_stream *st;
  CHECK(x->r, np_mux_open(x->r->mux, &st) == NP_ECLOSED);
  xs_send(x, 0, 1);
  xs_fin(x);
}

static void close_go_accept(run *r, struct np_mux_stream *st) {
  xs *x = xs_new(r, st);
  x->base = GO_BASE;
  x->expect = 1;
  x->on_got = close_go_got;
}

static void drop_go_start(run *r) {
  xs *x = xs_open(r);
  x->want_err = UV_ECONNRESET;
  xs_send(x, 0, 1024);
}

static const kase kases[] = {
    {"echo", echo_start, echo_accept, 1, 0, UV_ECANCELED, -1},
    {"bulk_up", bulk_up_start, unexpected_stream, 1, 0, UV_ECANCELED, -1},
    {"bulk_down", bulk_down_start, bulk_down_accept, 1, 0, UV_ECANCELED, -1},
    {"half_c", half_c_start, unexpected_stream, 1, 0, UV_ECANCELED, -1},
    {"half_go", half_go_start, half_go_accept, 1, 0, UV_ECANCELED, -1},
    {"close_c", close_c_start, unexpected_stream, 0, 0, UV_ECANCELED, -1},
    {"close_go", NULL, close_go_accept, 0, 0, UV_EOF, 0},
    {"drop_go", drop_go_start, unexpected_stream, 0, 1, UV_EOF, -1},
};

/* ---- the peer and the connection --------------------------------------------------------- */

static void on_mux_accept(struct np_mux *mux, struct np_mux_stream *st) {
  run *r = np_mux_get_data(mux);
  r->k->accept(r, st);
}

static void start_mux(run *r) {
  np_mux_options o = NP_MUX_OPTIONS_INIT;
  o.client = r->c_client;
  o.end_cb = on_end;
  CHECK(r, np_mux_new((uv_stream_t *)&r->tcp, &o, on_mux_accept, r, &r->mux) == 0);
  if (r->k->start != NULL)
    r->k->start(r);
}

static void on_guard(uv_timer_t *t) {
  die(t->data, "took longer than %d ms", CASE_MS);
}

static void on_peer_exit(uv_process_t *p, int64_t status, int sig) {
  run *r = p->data;
  r->exited = 1;
  r->exit_status = status;
  r->term_signal = sig;
  uv_close((uv_handle_t *)p, NULL);
  if (status != 0 || sig != 0)
    die(r, "the Go peer failed: exit %lld, signal %d", (long long)status, sig);
}

static void on_connect(uv_connect_t *req, int status) {
  run *r = req->data;
  if (status != 0)
    die(r, "connect: %s", np_err_name(status));
  start_mux(r);
}

/* As the client we dial the port the peer prints once it listens. */
static void dial(run *r) {
  struct sockaddr_in sa;
  r->port[r->port_len] = '\0';
  CHECK(r, uv_ip4_addr("127.0.0.1", atoi(r->port), &sa) == 0);
  uv_tcp_init(&r->loop, &r->tcp);
  r->creq.data = r;
  CHECK(r, uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&sa, on_connect) == 0);
}

static void out_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  run *r = h->data;
  (void)suggested;
  *b = uv_buf_init(r->port + r->port_len, (unsigned)(sizeof(r->port) - 1 - r->port_len));
}

static void out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  run *r = s->data;
  char *nl;
  (void)b;
  if (n < 0) {
    uv_close((uv_handle_t *)s, NULL);
    if (r->c_client && r->mux == NULL && r->creq.data == NULL)
      die(r, "the Go peer ended before it listened");
    return;
  }
  r->port_len += (size_t)n;
  if (!r->c_client || r->creq.data != NULL)
    return; /* nothing more is expected; keep reading until the peer exits */
  if ((nl = memchr(r->port, '\n', r->port_len)) != NULL) {
    r->port_len = (size_t)(nl - r->port);
    dial(r);
  } else if (r->port_len == sizeof(r->port) - 1) {
    die(r, "the Go peer printed no port");
  }
}

static void spawn_peer(run *r, const char *addr) {
  char *args[] = {(char *)peer_path, r->c_client ? "server" : "client", (char *)r->k->name,
                  (char *)addr, NULL};
  uv_stdio_container_t io[3];
  uv_process_options_t o;
  int e;

  memset(&o, 0, sizeof(o));
  uv_pipe_init(&r->loop, &r->out, 0);
  r->out.data = r;
  io[0].flags = UV_IGNORE;
  io[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  io[1].data.stream = (uv_stream_t *)&r->out;
  io[2].flags = UV_INHERIT_FD;
  io[2].data.fd = 2;
  o.file = peer_path;
  o.args = args;
  o.exit_cb = on_peer_exit;
  o.stdio = io;
  o.stdio_count = 3;
  r->proc.data = r;
  if ((e = uv_spawn(&r->loop, &r->proc, &o)) != 0)
    die(r, "spawn %s: %s", peer_path, np_err_name(e));
  r->spawned = 1;
  CHECK(r, uv_read_start((uv_stream_t *)&r->out, out_alloc, out_read) == 0);
}

/* As the server we listen and let the peer dial. */
static void on_listen_accept(uv_stream_t *l, int status) {
  run *r = l->data;
  CHECK(r, status == 0);
  uv_tcp_init(&r->loop, &r->tcp);
  CHECK(r, uv_accept(l, (uv_stream_t *)&r->tcp) == 0);
  uv_close((uv_handle_t *)l, NULL);
  start_mux(r);
}

static void listen_and_spawn(run *r) {
  struct sockaddr_in sa;
  struct sockaddr_storage bound;
  int n = sizeof(bound);
  char addr[32];

  uv_ip4_addr("127.0.0.1", 0, &sa);
  uv_tcp_init(&r->loop, &r->listener);
  r->listener.data = r;
  CHECK(r, uv_tcp_bind(&r->listener, (struct sockaddr *)&sa, 0) == 0);
  CHECK(r, uv_listen((uv_stream_t *)&r->listener, 1, on_listen_accept) == 0);
  uv_tcp_getsockname(&r->listener, (struct sockaddr *)&bound, &n);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(((struct sockaddr_in *)&bound)->sin_port));
  spawn_peer(r, addr);
}

typedef struct param {
  const kase *k;
  int c_client;
  char name[48];
} param;

static void run_case(void **state) {
  const param *p = *state;
  run *r = calloc(1, sizeof(*r));
  uint64_t t0 = uv_hrtime();

  assert_non_null(r);
  r->k = p->k;
  r->c_client = p->c_client;
  uv_loop_init(&r->loop);
  uv_timer_init(&r->loop, &r->guard);
  uv_timer_init(&r->loop, &r->later);
  r->guard.data = r->later.data = r;
  uv_timer_start(&r->guard, on_guard, CASE_MS, 0);
  if (r->c_client)
    spawn_peer(r, NULL);
  else
    listen_and_spawn(r);
  while (r->closes == 0 || !r->exited)
    uv_run(&r->loop, UV_RUN_ONCE);
  CHECK(r, r->ends == 1 && r->closes == 1);
  uv_close((uv_handle_t *)&r->guard, NULL);
  uv_close((uv_handle_t *)&r->later, NULL);
  uv_run(&r->loop, UV_RUN_DEFAULT); /* the peer's stdout, at its EOF */
  CHECK(r, uv_loop_close(&r->loop) == 0);
  print_message("%s: %.2f s\n", p->name, (double)(uv_hrtime() - t0) / 1e9);
  free(r);
}

int main(int argc, char **argv) {
  enum { N = sizeof(kases) / sizeof(kases[0]) };
  static param params[2 * N];
  struct CMUnitTest tests[2 * N];

  if (argc != 2) {
    fprintf(stderr, "usage: %s YAMUXPEER (run-yamux-interop.sh builds it)\n", argv[0]);
    return 2;
  }
  peer_path = argv[1];
  signal(SIGPIPE, SIG_IGN);
  if ((pat = malloc(BULK)) == NULL)
    return 1;
  for (uint32_t i = 0; i < BULK; i++)
    pat[i] = pattern(i);
  for (size_t i = 0; i < 2 * N; i++) {
    param *p = &params[i];
    p->k = &kases[i % N];
    p->c_client = i < N;
    snprintf(p->name, sizeof(p->name), "%s %s", p->c_client ? "C client" : "C server", p->k->name);
    tests[i] = (struct CMUnitTest){p->name, run_case, NULL, NULL, p};
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
