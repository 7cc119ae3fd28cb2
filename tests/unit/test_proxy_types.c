/* A proxy type added by a test alone, through lib/proxy.h (issue 14): "discard" (kind 200) takes
 * visitors on a port of its own, reads what they send until they half-close, answers how many bytes
 * it threw away, and closes. It goes through everything the session core does for a real type (the
 * pending pool, REQ_WORK, the client's work connection, the join or the drop, closing the proxy)
 * without a line of lib/ knowing it exists. A kind that no type claims is refused for that proxy
 * alone: the client's session stays up. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cmocka.h>

#include <natproxy.h>

#include "config.h"
#include "proxy.h"

#define KIND_DISCARD 200
#define KIND_NOBODY  201
#define SENT         (300 * 1000) /* bytes a visitor sends */

/* ---- the discard type -------------------------------------------------------------------------
 */

static struct {
  int opened, closed, joined, dropped, ids, freed;
  char last_drop[32];
  uint64_t discarded;
} d;

typedef struct sink {
  np_conn *c;
  np__meter meter; /* the core's counters for this visitor, held until it is gone */
  uint64_t n;
  np_conn_write w;
  char reply[64];
  char buf[16384];
} sink;

static void sink_closed(np_conn *c) {
  sink *k = c->data;
  np__meter_end(&k->meter);
  free(k);
  d.freed++;
}

static void sink_written(np_conn_write *req, int status) {
  sink *k = req->data;
  (void)status;
  np__conn_close(k->c, sink_closed);
}

static void sink_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  sink *k = c->data;
  (void)suggested;
  *buf = uv_buf_init(k->buf, sizeof(k->buf));
}

static void sink_read(np_conn *c, ssize_t n, const uv_buf_t *buf) {
  sink *k = c->data;
  uv_buf_t b;
  (void)buf;
  if (n > 0) {
    k->n += (uint64_t)n;
    np__meter_add(&k->meter, (uint64_t)n, 0);
    return;
  }
  if (n == 0)
    return;
  np__conn_read_stop(c);
  d.discarded += k->n;
  b = uv_buf_init(k->reply, (unsigned)snprintf(k->reply, sizeof(k->reply), "discarded %llu\n",
                                               (unsigned long long)k->n));
  k->w.data = k;
  np__meter_add(&k->meter, 0, b.len);
  if (n != UV_EOF || np__conn_write(c, &k->w, &b, 1, sink_written) != 0)
    np__conn_close(c, sink_closed);
}

/* The frontend is shared: every discard proxy that asks for the same port gets the same listener,
 * and visitors go to its proxies in turn. */
static void on_visitor(np__frontend *fe, np_conn *c) {
  static unsigned turn;
  proxy *px = np__frontend_proxies(fe);
  struct sockaddr_storage ss;
  const struct sockaddr *from = np__conn_peer_addr(c, &ss) == 0 ? (struct sockaddr *)&ss : NULL;
  unsigned n = 0;
  for (proxy *p = px; p != NULL; p = p->fe_next)
    n++;
  for (unsigned i = turn++ % n; i > 0; i--)
    px = px->fe_next;
  if (np__visitor_arrive(px, c, from, NULL) != 0)
    np__conn_close(c, NULL);
}

static const np__frontend_ops shared_frontend = {
    .name = "discard", .shared = 1, .accept = on_visitor};

static int discard_open(proxy *px, const struct sockaddr *addr) {
  int r = np__frontend_attach(px, addr, &shared_frontend);
  d.opened += r == 0;
  return r;
}

static void discard_close(proxy *px) {
  d.closed++;
  np__frontend_detach(px);
}

static void discard_visitor_id(visitor *v) {
  assert_true(v->id > 0);
  d.ids++;
}

/* The work connection is not needed: what the visitor sends goes nowhere. */
static int discard_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len) {
  sink *k = calloc(1, sizeof(*k));
  (void)s;
  (void)rest;
  (void)rest_len;
  assert_non_null(k);
  d.joined++;
  np__conn_close(work, NULL);
  k->meter = v->meter;
  k->c = v->impl;
  k->c->data = k;
  assert_int_equal(np__conn_read_start(k->c, sink_alloc, sink_read), 0);
  return 0;
}

static void discard_drop(visitor *v, const char *end) {
  d.dropped++;
  snprintf(d.last_drop, sizeof(d.last_drop), "%s", end);
  np__conn_close(v->impl, NULL);
}

static const np__proxy_type discard = {
    .name = "discard",
    .kind = KIND_DISCARD,
    .open = discard_open,
    .close = discard_close,
    .visitor_id = discard_visitor_id,
    .join = discard_join,
    .drop = discard_drop,
};

/* ---- the test's world: a loop, a server, a client, visitors ------------------------------------
 */

static uv_loop_t loop;
static int port_sink, port_sink2, port_dead, refused_status;
static char refused_text[256];

static void on_event(struct np_client *cl, const np_client_event *ev) {
  (void)cl;
  if (ev->type == NP_CLIENT_PROXY_READY)
    *(strcmp(ev->name, "sink") == 0    ? &port_sink
      : strcmp(ev->name, "sink2") == 0 ? &port_sink2
                                       : &port_dead) = ev->port;
  if (ev->type == NP_CLIENT_PROXY_FAILED) {
    refused_status = ev->status;
    snprintf(refused_text, sizeof(refused_text), "%s: %s", ev->name, ev->text);
  }
}

static void on_guard(uv_timer_t *t) {
  (void)t;
  fail_msg("test took too long");
}

static void quiet(np_log_level l, const char *m, void *a) {
  (void)l;
  (void)m;
  (void)a;
}

/* The local service the client dials for "sink": accepts and closes (it is never used). */
static void svc_accept(uv_stream_t *l, int status) {
  uv_tcp_t *c = malloc(sizeof(*c));
  (void)status;
  uv_tcp_init(&loop, c);
  uv_accept(l, (uv_stream_t *)c);
  uv_close((uv_handle_t *)c, (uv_close_cb)free);
}

static int listen_any(uv_tcp_t *t, uv_connection_cb cb) {
  struct sockaddr_in sa;
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  uv_tcp_init(&loop, t);
  uv_ip4_addr("127.0.0.1", 0, &sa);
  assert_int_equal(uv_tcp_bind(t, (struct sockaddr *)&sa, 0), 0);
  if (cb != NULL)
    assert_int_equal(uv_listen((uv_stream_t *)t, 16, cb), 0);
  uv_tcp_getsockname(t, (struct sockaddr *)&ss, &n);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* A visitor: connect, send SENT bytes, half-close, collect the answer until EOF. */
typedef struct guest {
  uv_tcp_t tcp;
  uv_connect_t c;
  uv_write_t w;
  uv_shutdown_t sd;
  char *out;
  char in[128];
  size_t got;
  int done;
  int hold; /* connect and wait: guest_send later */
} guest;

static void g_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf) {
  guest *g = (guest *)h;
  (void)sz;
  *buf = uv_buf_init(g->in + g->got, (unsigned)(sizeof(g->in) - g->got - 1));
}

static void g_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  guest *g = (guest *)s;
  (void)buf;
  if (n > 0) {
    g->got += (size_t)n;
    return;
  }
  if (n < 0) {
    g->done = 1;
    uv_close((uv_handle_t *)s, NULL);
  }
}

static void guest_send(guest *g) {
  uv_buf_t b = uv_buf_init(g->out, SENT);
  assert_int_equal(uv_write(&g->w, (uv_stream_t *)&g->tcp, &b, 1, NULL), 0);
  assert_int_equal(uv_shutdown(&g->sd, (uv_stream_t *)&g->tcp, NULL), 0);
}

static void g_connected(uv_connect_t *req, int status) {
  guest *g = req->data;
  assert_int_equal(status, 0);
  if (!g->hold)
    guest_send(g);
  assert_int_equal(uv_read_start((uv_stream_t *)&g->tcp, g_alloc, g_read), 0);
}

static void visit(guest *g, int port, int hold) {
  struct sockaddr_in sa;
  memset(g, 0, sizeof(*g));
  g->hold = hold;
  g->out = malloc(SENT);
  assert_non_null(g->out);
  memset(g->out, 'x', SENT);
  g->c.data = g;
  uv_tcp_init(&loop, &g->tcp);
  uv_ip4_addr("127.0.0.1", port, &sa);
  uv_tcp_connect(&g->c, &g->tcp, (struct sockaddr *)&sa, g_connected);
}

/* A port nothing listens on now, for two proxies to ask for by number. */
static int free_port(void) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  close(fd);
  return ntohs(sa.sin_port);
}

/* Counters of the one client and its proxies, through the public walk (natproxy/server.h). */
static struct {
  int clients;
  char name[32];
  np_proxy_stats client, sink, sink2, dead;
} seen;

static int see_proxy(const np_server_proxy *p, void *arg) {
  const char *name = np_server_proxy_name(p);
  np_proxy_stats *st = strcmp(name, "sink") == 0    ? &seen.sink
                       : strcmp(name, "sink2") == 0 ? &seen.sink2
                                                    : &seen.dead;
  (void)arg;
  assert_string_equal(np_server_proxy_type(p), "discard");
  assert_true(np_server_proxy_port(p) > 0);
  np_server_proxy_get_stats(p, st, sizeof(*st));
  return 0;
}

static int see_client(const np_server_client *c, void *arg) {
  (void)arg;
  seen.clients++;
  snprintf(seen.name, sizeof(seen.name), "%s", np_server_client_name(c));
  assert_non_null(strstr(np_server_client_addr(c), "127.0.0.1:"));
  np_server_client_get_stats(c, &seen.client, sizeof(seen.client));
  return np_server_client_foreach_proxy(c, see_proxy, NULL);
}

static char tls_dir[] = "/tmp/np-test-types-XXXXXX";

static void tls_dir_remove(void) {
  char path[sizeof(tls_dir) + 16];
  snprintf(path, sizeof(path), "%s/server.crt", tls_dir);
  unlink(path);
  snprintf(path, sizeof(path), "%s/server.key", tls_dir);
  unlink(path);
  rmdir(tls_dir);
}

static void set_kind(struct np_config *cfg, const char *name, int kind) {
  for (size_t i = 0; i < cfg->n_proxies; i++)
    if (strcmp(cfg->proxies[i].name, name) == 0)
      cfg->proxies[i].kind = (np_proxy_kind)kind;
}

static void test_discard_type(void **state) {
  struct np_config *cfg;
  struct np_server *srv;
  struct np_client *cl;
  np_server_stats st;
  uv_timer_t guard;
  int shared_port = free_port();
  uv_tcp_t svc, dead;
  guest g;
  char spec[64];
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &guard);
  uv_timer_start(&guard, on_guard, 20000, 0);
  int svc_port = listen_any(&svc, svc_accept);
  int dead_port = listen_any(&dead, NULL); /* bound, not listening: connections are refused */

  assert_non_null(mkdtemp(tls_dir));
  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_set_flag(cfg, "tls-dir", tls_dir), 0);
  assert_int_equal(np_config_set_flag(cfg, "bind", "127.0.0.1:0"), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t0ken"), 0);
  assert_int_equal(np_config_set_flag(cfg, "proxy-bind-addr", "127.0.0.1"), 0);
  assert_int_equal(np_server_new(&loop, cfg, &srv), 0);
  np_config_free(cfg);
  assert_int_equal(np__server_add_type(srv, &discard), 0);
  np_server_set_log(srv, NP_LOG_ERROR, quiet, NULL);
  assert_int_equal(np_server_start(srv), 0);
  assert_int_equal(np__server_add_type(srv, &discard), UV_EINVAL); /* only before the start */

  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", np_server_port(srv));
  assert_int_equal(np_config_set_flag(cfg, "server", spec), 0);
  assert_int_equal(np_config_set_flag(cfg, "server-fingerprint", np_server_fingerprint(srv)), 0);
  assert_int_equal(np_config_set_flag(cfg, "token", "t0ken"), 0);
  assert_int_equal(np_config_set_flag(cfg, "work-pool", "0"), 0); /* REQ_WORK for each visitor */
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", svc_port);
  assert_int_equal(np_config_set(cfg, "proxy sink", "local", spec), 0);
  snprintf(spec, sizeof(spec), "%d", shared_port);
  assert_int_equal(np_config_set(cfg, "proxy sink", "remote_port", spec), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", svc_port);
  assert_int_equal(np_config_set(cfg, "proxy sink2", "local", spec), 0);
  snprintf(spec, sizeof(spec), "%d", shared_port);
  assert_int_equal(np_config_set(cfg, "proxy sink2", "remote_port", spec), 0);
  snprintf(spec, sizeof(spec), "127.0.0.1:%d", dead_port);
  assert_int_equal(np_config_set(cfg, "proxy dead", "local", spec), 0);
  assert_int_equal(np_config_set(cfg, "proxy dead", "remote_port", "0"), 0);
  assert_int_equal(np_config_set(cfg, "proxy nobody", "local", spec), 0);
  assert_int_equal(np_config_set(cfg, "proxy nobody", "remote_port", "0"), 0);
  /* The client has no flag for a kind it does not know: set it where the config keeps it. */
  set_kind(cfg, "sink", KIND_DISCARD);
  set_kind(cfg, "sink2", KIND_DISCARD);
  set_kind(cfg, "dead", KIND_DISCARD);
  set_kind(cfg, "nobody", KIND_NOBODY);
  assert_int_equal(np_client_new(&loop, cfg, &cl), 0);
  np_config_free(cfg);
  np_client_set_log(cl, NP_LOG_ERROR, quiet, NULL);
  np_client_set_event_cb(cl, on_event);
  assert_int_equal(np_client_start(cl), 0);
  while (port_sink == 0 || port_sink2 == 0 || port_dead == 0 || refused_status == 0)
    uv_run(&loop, UV_RUN_ONCE);

  /* The kind nobody registered: that proxy is refused, and why; the others are up. */
  assert_int_equal(refused_status, NP_EUNSUPPORTED);
  assert_non_null(strstr(refused_text, "nobody: this server has no proxy type of kind 201"));
  assert_int_equal(d.opened, 3);
  /* sink and sink2 share one listener (the type's frontend is shared); dead has its own. */
  assert_int_equal(port_sink, shared_port);
  assert_int_equal(port_sink2, shared_port);

  /* Visitors through the whole path: pool, REQ_WORK, work connection, the type's join; the
   * shared frontend gives one to each of its proxies. */
  for (int i = 0; i < 2; i++) {
    visit(&g, shared_port, 0);
    while (!g.done)
      uv_run(&loop, UV_RUN_ONCE);
    g.in[g.got] = '\0';
    assert_string_equal(g.in, "discarded 300000\n");
    free(g.out);
  }
  assert_int_equal(d.joined, 2);
  assert_int_equal(d.discarded, 2 * SENT);
  while (d.freed < 2)
    uv_run(&loop, UV_RUN_ONCE);

  /* The client cannot reach dead's service: WORK_FAIL, and the core drops the visitor through the
   * type with the access log's word for it. */
  visit(&g, port_dead, 0);
  while (!g.done)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(g.got, 0);
  assert_int_equal(d.dropped, 1);
  assert_string_equal(d.last_drop, "local_failed");
  assert_int_equal(d.ids, 3);
  free(g.out);

  np_server_get_stats(srv, &st, sizeof(st));
  assert_true(st.proxies == 3 && st.visitors_total == 0); /* the type counts its own visitors */
  assert_true(st.visitors_joined == 2 && st.visitors_failed == 1);
  assert_true(st.bytes_in == 2 * SENT && st.bytes_out == 2 * 17); /* through the type's meter */

  /* Per proxy and per client, as an admin API would walk them. */
  assert_int_equal(np_server_foreach_client(srv, see_client, NULL), 0);
  assert_int_equal(seen.clients, 1);
  for (int i = 0; i < 2; i++) {
    const np_proxy_stats *p = i == 0 ? &seen.sink : &seen.sink2;
    assert_true(p->visitors == 1 && p->visitors_joined == 1 && p->visitors_dropped == 0);
    assert_true(p->bytes_in == SENT && p->bytes_out == 17 && p->visitors_active == 0);
  }
  assert_true(seen.dead.visitors == 1 && seen.dead.visitors_dropped == 1);
  assert_true(seen.dead.visitors_joined == 0 && seen.dead.bytes_in == 0);
  assert_true(seen.client.visitors == 3 && seen.client.visitors_joined == 2);
  assert_true(seen.client.visitors_dropped == 1 && seen.client.visitors_active == 0);
  assert_true(seen.client.bytes_in == 2 * SENT && seen.client.bytes_out == 2 * 17);

  /* A joined visitor outlives its proxy and its client's session: the type still counts into the
   * meter it holds (the counters are the core's, reference-counted), and ends it once it is done.
   * Under ASan a counter freed with its proxy would show here. */
  visit(&g, shared_port, 1);
  while (d.joined < 3)
    uv_run(&loop, UV_RUN_ONCE);
  np_client_close(cl, NULL);
  while (d.closed < 3)
    uv_run(&loop, UV_RUN_ONCE);
  guest_send(&g);
  while (!g.done || d.freed < 3)
    uv_run(&loop, UV_RUN_ONCE);
  g.in[g.got] = '\0';
  assert_string_equal(g.in, "discarded 300000\n");
  free(g.out);
  np_server_get_stats(srv, &st, sizeof(st));
  assert_true(st.bytes_in == 3 * SENT && st.bytes_out == 3 * 17 && st.proxies == 0);

  np_server_close(srv, NULL);
  uv_close((uv_handle_t *)&svc, NULL);
  uv_close((uv_handle_t *)&dead, NULL);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(d.closed, 3); /* every proxy closed through the type (above) */
  assert_int_equal(uv_loop_close(&loop), 0);
  tls_dir_remove();
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_discard_type)};
  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
