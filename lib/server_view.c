/* What np_server shows of its clients and proxies to an embedder, an admin API or an exporter:
 * names, addresses, and the per-client and per-proxy counters (meter.c). The opaque handles are the
 * session and the proxy themselves, handed out only for the length of a callback, so nothing is
 * copied and nothing can be held past the object's life. */
#include <stdio.h>
#include <string.h>

#include "proxy.h"
#include "stats.h"

int np_server_get_first_byte(const struct np_server *srv, const char *type, uint64_t *le_us,
                             uint64_t *cum, size_t n, uint64_t *count, uint64_t *sum_us) {
  np__histo h = {0};
  int found = 0;

  for (size_t k = 0; k < sizeof(srv->types) / sizeof(srv->types[0]); k++) {
    if (srv->types[k] == NULL || (type != NULL && strcmp(type, srv->types[k]->name) != 0))
      continue;
    found = 1;
    if (srv->first_byte[k] != NULL)
      np__histo_add(&h, srv->first_byte[k]);
  }
  if (!found)
    return UV_EINVAL;
  if (n > NP__HISTO_BOUNDS)
    n = NP__HISTO_BOUNDS;
  if (le_us != NULL)
    memcpy(le_us, np__histo_le_us, n * sizeof(*le_us));
  if (cum != NULL)
    np__histo_cumulative(&h, cum, n);
  if (count != NULL)
    *count = h.count;
  if (sum_us != NULL)
    *sum_us = h.sum_us;
  return NP__HISTO_BOUNDS;
}

static const session *client_of(const np_server_client *c) {
  return (const session *)c;
}

static const proxy *proxy_of(const np_server_proxy *p) {
  return (const proxy *)p;
}

int np_server_foreach_client(const struct np_server *srv, np_server_client_cb cb, void *arg) {
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
  return client_of(c)->addr_str;
}

uint64_t np_server_client_uptime_ms(const np_server_client *c) {
  const session *s = client_of(c);
  return uv_now(s->srv->loop) - s->started;
}

int64_t np_server_client_mux_streams(const np_server_client *c) {
  const session *s = client_of(c);
  return s->ch != NULL ? np__transport_server_streams(np__chan_conn(s->ch)) : -1;
}

const char *np_server_client_udp_path(const np_server_client *c) {
  const session *s = client_of(c);
  const proxy *px = s->proxies;

  while (px != NULL && px->type->kind != NP_PROXY_UDP)
    px = px->next;
  if (!s->seal_ok || px == NULL)
    return "off";
  return s->udp_client_up && s->udp_last_rx != 0 ? "up" : "down";
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

const char *np_server_proxy_hosts(const np_server_proxy *p) {
  return proxy_of(p)->hosts;
}

void np_server_proxy_get_stats(const np_server_proxy *p, np_proxy_stats *out, size_t size) {
  copy_counts(proxy_of(p)->counts, out, size);
}

/* ---- np_server_log_stats' lines per client and per proxy ---------------------------------------
 */

static int log_proxy(const np_server_proxy *p, void *arg) {
  const session *s = arg;
  np_proxy_stats st;
  char head[2 * NP_MSG_NAME_MAX + 64];

  np_server_proxy_get_stats(p, &st, sizeof(st));
  snprintf(head, sizeof(head), "stats proxy=%s client=%s type=%s port=%d ", np_server_proxy_name(p),
           s->name, np_server_proxy_type(p), np_server_proxy_port(p));
  np__stats_log_proxy(&s->srv->log, head, &st);
  return 0;
}

static int log_client(const np_server_client *c, void *arg) {
  const session *s = client_of(c);
  np_proxy_stats st;
  char head[NP_MSG_NAME_MAX + 128];
  (void)arg;

  np_server_client_get_stats(c, &st, sizeof(st));
  snprintf(head, sizeof(head), "stats client=%s addr=%s proxies=%zu ", s->name, s->addr_str,
           s->n_proxies);
  np__stats_log_proxy(&s->srv->log, head, &st);
  return np_server_client_foreach_proxy(c, log_proxy, (void *)s);
}

void np__server_log_views(const struct np_server *srv) {
  np_server_foreach_client(srv, log_client, NULL);
}
