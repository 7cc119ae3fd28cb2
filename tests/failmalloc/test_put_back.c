/* A visitor the server takes out of the pending pool to look at (a WORK whose proof fails) goes
 * back into the pool; an embedder's pool may refuse it then (full, out of memory). Issue 13: the
 * server ignored that, so the visitor was held by nobody, its connection stayed open, and
 * np_server_close waited for it forever. Now it is dropped and counted. Runs the real server
 * through the in-memory harness of tests/fuzz/fuzz_session.c, with a pool that wraps the default
 * one and refuses puts when told to, and a real TCP visitor on loopback. */
#define NP_SWEEP 1
#include <stddef.h>
#include <stdint.h>

#include <natproxy/error.h>
#include <natproxy/pool.h>
#include <uv.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int __wrap_uv_tcp_bind(uv_tcp_t *h, const struct sockaddr *addr, unsigned int flags);

static int refuse_puts;
static void *inner;

static int t_put(void *p, uint64_t id, const void *g, void *item, uint64_t d) {
  (void)p;
  return refuse_puts ? NP_EPOOLFULL : np_pool_default_ops()->put(inner, id, g, item, d);
}
static void *t_take(void *p, uint64_t id) {
  (void)p;
  return np_pool_default_ops()->take(inner, id);
}
static void *t_take_oldest(void *p, const void *g, uint64_t *id) {
  (void)p;
  return np_pool_default_ops()->take_oldest(inner, g, id);
}
static size_t t_expire(void *p, uint64_t now, np_pool_item_cb cb, void *arg) {
  (void)p;
  return np_pool_default_ops()->expire(inner, now, cb, arg);
}
static size_t t_remove_group(void *p, const void *g, np_pool_item_cb cb, void *arg) {
  (void)p;
  return np_pool_default_ops()->remove_group(inner, g, cb, arg);
}
static size_t t_count(void *p, const void *g) {
  (void)p;
  return np_pool_default_ops()->count(inner, g);
}
static uint64_t t_next_deadline(void *p) {
  (void)p;
  return np_pool_default_ops()->next_deadline(inner);
}
static void t_destroy(void *p) {
  (void)p;
  np_pool_default_ops()->destroy(inner);
}

static const np_pool_ops refusing_pool = {
    sizeof(np_pool_ops), t_put,   t_take,          t_take_oldest, t_expire,
    t_remove_group,      t_count, t_next_deadline, t_destroy};
#define NP_HARNESS_POOL      &refusing_pool
#define NP_HARNESS_POOL_DATA &inner /* the ops above use inner */

#include "../fuzz/fuzz_session.c"

static uv_tcp_t vtcp;
static uv_connect_t vreq;
static int visitor_connected, visitor_ended;
static char vbuf[64];

static void v_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  (void)h, (void)sz;
  *b = uv_buf_init(vbuf, sizeof(vbuf));
}

static void v_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  (void)s, (void)b;
  if (n < 0)
    visitor_ended = 1;
}

static void v_connected(uv_connect_t *req, int status) {
  (void)req;
  visitor_connected = status == 0 ? 1 : -1;
  if (status == 0)
    uv_read_start((uv_stream_t *)&vtcp, v_alloc, v_read);
}

static void on_closed(struct np_server *s) {
  *(int *)np_server_get_data(s) = 1;
}

static void on_guard(uv_timer_t *t) {
  (void)t;
  fprintf(stderr, "FAIL: the server kept the refused visitor (still open after 5 s)\n");
  exit(1);
}

static memconn *new_conn(void) {
  memconn *m = calloc(1, sizeof(*m));
  if (m == NULL)
    abort();
  m->base.ops = &mem_ops;
  live = m;
  np__server_accept(srv, &m->base);
  settle(m);
  return m;
}

int main(void) {
  np_msg px = {.type = NP_MSG_PROXY, .port = 0}, in, work = {.type = NP_MSG_WORK};
  struct sockaddr_in sa;
  uv_timer_t guard;
  memconn *ctl, *w;
  uint64_t sid;
  int closed = 0;

  signal(SIGPIPE, SIG_IGN);
  if (np_pool_default_new(0, 0, &inner) != 0)
    return 1;
  LLVMFuzzerInitialize(NULL, NULL);
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, on_guard, 5000, 0);
  uv_unref((uv_handle_t *)&guard);

  /* A logged-in client with a proxy on 127.0.0.1 (port 0: a free one of the harness's allow_ports,
   * 40000-40001), and a visitor waiting there. */
  ctl = new_conn();
  login(ctl);
  if (live != ctl || !find_msg(ctl, NP_MSG_LOGIN_RESP, &in) || in.status != 0)
    return fprintf(stderr, "FAIL: login\n"), 1;
  sid = in.id;
  strcpy(px.name, "p");
  strcpy(px.addr, "127.0.0.1");
  send_msg(ctl, &px);
  if (!find_msg(ctl, NP_MSG_PROXY_RESP, &in) || in.status != 0)
    return fprintf(stderr, "FAIL: proxy refused: %s\n", in.text), 1;
  uv_tcp_init(loop, &vtcp);
  uv_ip4_addr("127.0.0.1", in.port, &sa);
  uv_tcp_connect(&vreq, &vtcp, (struct sockaddr *)&sa, v_connected);
  while (!find_msg(ctl, NP_MSG_REQ_WORK, &in))
    uv_run(loop, UV_RUN_ONCE);
  /* Another connection claims the visitor without the session's key: the server takes it out of
   * the pool, finds the proof wrong and puts it back, which this pool refuses. */
  live = NULL;
  w = new_conn();
  work.id = sid;
  work.id2 = in.id;
  refuse_puts = 1;
  send_msg(w, &work);
  refuse_puts = 0;
  if (live == NULL)
    w = NULL; /* the server closed that connection (unproven), and settle freed it */
  /* The visitor is let go at once, not kept by nobody. */
  while (!visitor_ended)
    uv_run(loop, UV_RUN_ONCE);
  printf("the refused visitor was closed\n");
  /* And the server closes completely (it waited for that visitor forever before). */
  np_server_set_data(srv, &closed);
  np_server_close(srv, on_closed);
  uv_close((uv_handle_t *)&vtcp, NULL);
  while (!closed) {
    /* The harness's connections complete their writes and closes only when settled. */
    if (ctl != NULL && settle(ctl))
      ctl = NULL;
    if (w != NULL && settle(w))
      w = NULL;
    uv_run(loop, UV_RUN_NOWAIT);
  }
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0)
    return fprintf(stderr, "FAIL: handles left open\n"), 1;
  printf("1 passed, 0 failed\n");
  return 0;
}
