/* What np_server shows of its clients and proxies to an embedder, an admin API or an exporter:
 * names, addresses, and the per-client and per-proxy counters (meter.c). The opaque handles are the
 * session and the proxy themselves, handed out only for the length of a callback, so nothing is
 * copied and nothing can be held past the object's life. */
#include "proxy.h"
#include "stats.h"

static const session *client_of(const np_server_client *c) {
  return (const session *)c;
}

static const proxy *proxy_of(const np_server_proxy *p) {
  return (const proxy *)p;
}

int np_server_foreach_client(struct np_server *srv, np_server_client_cb cb, void *arg) {
  session *last = NULL;
  int r;

  /* New sessions are pushed at the head: walk from the tail for oldest first. */
  for (session *s = srv->sessions; s != NULL; s = s->next)
    last = s;
  for (session *s = last; s != NULL; s = s->prev) {
    if (s->state != S_READY || s->closing)
      continue;
    if ((r = cb((const np_server_client *)s, arg)) != 0)
      return r;
  }
  return 0;
}

const char *np_server_client_name(const np_server_client *c) {
  return client_of(c)->name;
}

const char *np_server_client_addr(const np_server_client *c) {
  return client_of(c)->peer;
}

uint64_t np_server_client_uptime_ms(const np_server_client *c) {
  const session *s = client_of(c);
  return uv_now(s->srv->loop) - s->started;
}

static void copy_counts(const np__counts *c, np_proxy_stats *out, size_t size) {
  np_proxy_stats zero = {0};
  np__stats_copy(out, size, c != NULL ? &c->st : &zero, sizeof(zero));
}

void np_server_client_get_stats(const np_server_client *c, np_proxy_stats *out, size_t size) {
  copy_counts(client_of(c)->counts, out, size);
}

int np_server_client_foreach_proxy(const np_server_client *c, np_server_proxy_cb cb, void *arg) {
  int r;
  for (const proxy *px = client_of(c)->proxies; px != NULL; px = px->next)
    if ((r = cb((const np_server_proxy *)px, arg)) != 0)
      return r;
  return 0;
}

const char *np_server_proxy_name(const np_server_proxy *p) {
  return proxy_of(p)->name;
}

const char *np_server_proxy_type(const np_server_proxy *p) {
  return proxy_of(p)->type->name;
}

int np_server_proxy_port(const np_server_proxy *p) {
  return proxy_of(p)->port;
}

void np_server_proxy_get_stats(const np_server_proxy *p, np_proxy_stats *out, size_t size) {
  copy_counts(proxy_of(p)->counts, out, size);
}
