/* What np_server shows of its clients and proxies to an embedder, an admin API or an exporter:
 * names, addresses, and the per-client and per-proxy counters (meter.c). The opaque handles are
 * snapshots taken for the length of a callback, on the thread that owns the session: nothing can
 * be held past the object's life, and a group's worker 0 shows every worker's clients. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"
#include "stats.h"

int np__server_first_byte_local(const struct np_server *srv, const char *type, np__histo *out) {
  int found = 0;

  for (size_t k = 0; k < sizeof(srv->types) / sizeof(srv->types[0]); k++) {
    if (srv->types[k] == NULL || (type != NULL && strcmp(type, srv->types[k]->name) != 0))
      continue;
    found = 1;
    if (srv->first_byte[k] != NULL)
      np__histo_add(out, srv->first_byte[k]);
  }
  return found;
}

int np_server_get_first_byte(const struct np_server *srv, const char *type, uint64_t *le_us,
                             uint64_t *cum, size_t n, uint64_t *count, uint64_t *sum_us) {
  np__histo h = {0};

  if (!np__server_first_byte_local(srv, type, &h))
    return UV_EINVAL;
  if (srv->group_first_byte != NULL)
    srv->group_first_byte(srv, type, &h); /* the other workers' visitors too */
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

/* The handles are snapshots (server.h, np__client_snap): made on the thread of the session's loop
 * just before the callback, so a group's worker 0 can show the clients of every worker. */
static const np__client_snap *client_of(const np_server_client *c) {
  return (const np__client_snap *)c;
}

static const np__proxy_snap *proxy_of(const np_server_proxy *p) {
  return (const np__proxy_snap *)p;
}

static const char *udp_path_of(const session *s) {
  const proxy *px = s->proxies;

  while (px != NULL && px->type->kind != NP_PROXY_UDP)
    px = px->next;
  if (!s->seal_ok || px == NULL)
    return "off";
  return s->udp_client_up && s->udp_last_rx != 0 ? "up" : "down";
}

static void copy_counts(const np__counts *c, np_proxy_stats *out) {
  np_proxy_stats zero = {0};
  *out = c != NULL ? c->st : zero;
}

int np__client_snap_fill(const session *s, np__client_snap *out) {
  size_t i = 0;

  memset(out, 0, sizeof(*out));
  np__strlcpy(out->name, s->name, sizeof(out->name));
  np__strlcpy(out->addr, s->addr_str, sizeof(out->addr));
  out->uptime_ms = uv_now(s->srv->loop) - s->started;
  out->mux_streams = s->ch != NULL ? np__transport_server_streams(np__chan_conn(s->ch)) : -1;
  out->udp_path = udp_path_of(s);
  out->worker = s->srv->widx;
  copy_counts(s->counts, &out->st);
  if (s->n_proxies > 0 && (out->proxies = calloc(s->n_proxies, sizeof(*out->proxies))) == NULL)
    return UV_ENOMEM;
  for (const proxy *px = s->proxies; px != NULL && i < s->n_proxies; px = px->next, i++) {
    np__proxy_snap *p = &out->proxies[i];
    np__strlcpy(p->name, px->name, sizeof(p->name));
    p->type = px->type->name; /* a static string of the type's */
    p->port = px->port;
    np__strlcpy(p->hosts, px->hosts, sizeof(p->hosts));
    copy_counts(px->counts, &p->st);
  }
  out->n_proxies = i;
  return 0;
}

void np__client_snap_clear(np__client_snap *c) {
  free(c->proxies);
  c->proxies = NULL;
  c->n_proxies = 0;
}

int np__server_foreach_client_local(const struct np_server *srv, np_server_client_cb cb,
                                    void *arg) {
  session *last = NULL;
  np__client_snap snap;
  int r;

  /* New sessions are pushed at the head: walk from the tail for oldest first. */
  for (session *s = srv->sessions; s != NULL; s = s->next)
    last = s;
  for (session *s = last; s != NULL; s = s->prev) {
    if (s->state != S_READY || s->closing)
      continue;
    if (np__client_snap_fill(s, &snap) != 0) {
      np__client_snap_clear(&snap);
      continue; /* out of memory: this one is left out of the walk */
    }
    r = cb((const np_server_client *)&snap, arg);
    np__client_snap_clear(&snap);
    if (r != 0)
      return r;
  }
  return 0;
}

int np_server_foreach_client(const struct np_server *srv, np_server_client_cb cb, void *arg) {
  if (srv->group_clients != NULL)
    return srv->group_clients(srv, cb, arg);
  return np__server_foreach_client_local(srv, cb, arg);
}

const char *np_server_client_name(const np_server_client *c) {
  return client_of(c)->name;
}

const char *np_server_client_addr(const np_server_client *c) {
  return client_of(c)->addr;
}

uint64_t np_server_client_uptime_ms(const np_server_client *c) {
  return client_of(c)->uptime_ms;
}

int64_t np_server_client_mux_streams(const np_server_client *c) {
  return client_of(c)->mux_streams;
}

const char *np_server_client_udp_path(const np_server_client *c) {
  return client_of(c)->udp_path;
}

unsigned np_server_client_worker(const np_server_client *c) {
  return client_of(c)->worker;
}

void np_server_client_get_stats(const np_server_client *c, np_proxy_stats *out, size_t size) {
  np__stats_copy(out, size, &client_of(c)->st, sizeof(np_proxy_stats));
}

int np_server_client_foreach_proxy(const np_server_client *c, np_server_proxy_cb cb, void *arg) {
  const np__client_snap *s = client_of(c);
  int r;
  for (size_t i = 0; i < s->n_proxies; i++)
    if ((r = cb((const np_server_proxy *)&s->proxies[i], arg)) != 0)
      return r;
  return 0;
}

const char *np_server_proxy_name(const np_server_proxy *p) {
  return proxy_of(p)->name;
}

const char *np_server_proxy_type(const np_server_proxy *p) {
  return proxy_of(p)->type;
}

int np_server_proxy_port(const np_server_proxy *p) {
  return proxy_of(p)->port;
}

const char *np_server_proxy_hosts(const np_server_proxy *p) {
  return proxy_of(p)->hosts;
}

void np_server_proxy_get_stats(const np_server_proxy *p, np_proxy_stats *out, size_t size) {
  np__stats_copy(out, size, &proxy_of(p)->st, sizeof(np_proxy_stats));
}

/* ---- np_server_log_stats' lines per client and per proxy ---------------------------------------
 */

typedef struct {
  const struct np_server *srv;
  const char *client;
} log_walk;

static int log_proxy(const np_server_proxy *p, void *arg) {
  const log_walk *w = arg;
  np_proxy_stats st;
  char head[2 * NP_MSG_NAME_MAX + 64];

  np_server_proxy_get_stats(p, &st, sizeof(st));
  snprintf(head, sizeof(head), "stats proxy=%s client=%s type=%s port=%d ", np_server_proxy_name(p),
           w->client, np_server_proxy_type(p), np_server_proxy_port(p));
  np__stats_log_proxy(&w->srv->log, head, &st);
  return 0;
}

static int log_client(const np_server_client *c, void *arg) {
  const np__client_snap *s = client_of(c);
  log_walk w = {arg, s->name};
  np_proxy_stats st;
  char head[NP_MSG_NAME_MAX + 128];

  np_server_client_get_stats(c, &st, sizeof(st));
  snprintf(head, sizeof(head), "stats client=%s addr=%s proxies=%zu ", s->name, s->addr,
           s->n_proxies);
  np__stats_log_proxy(&w.srv->log, head, &st);
  return np_server_client_foreach_proxy(c, log_proxy, &w);
}

void np__server_log_views(const struct np_server *srv) {
  np_server_foreach_client(srv, log_client, (void *)srv);
}
