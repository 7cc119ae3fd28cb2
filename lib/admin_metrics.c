/* np-server's /metrics in Prometheus' text format 0.0.4 (docs/api-admin.md lists the families):
 * the counters as data (natproxy/stats.h), so a counter added to a list shows up here by itself;
 * labeled views over some of them (logins by result, visitors by outcome); proxies by type; the
 * first-byte histogram; the build. Per-proxy series are bounded (MAX_PROXY_SERIES). */
#include "admin_metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "natproxy/version.h"
#include "proxy.h"
#include "route_store.h"

/* Per-proxy metric series at most: labels come from clients (their names and proxies' names), so
 * the count is bounded here whatever max_clients says (docs/api-admin.md, "Cardinality"). */
#define MAX_PROXY_SERIES 10000

/* natproxy_server_visitors_joined_total: counters end in _total (Prometheus' naming rules, which
 * promtool checks), gauges do not. */
void np__metrics_name(char *buf, size_t len, const char *scope, const np_stat_field *f) {
  size_t n = strlen(f->name);
  int has_total = n > 6 && strcmp(f->name + n - 6, "_total") == 0;
  snprintf(buf, len, "natproxy_%s_%.*s%s", scope, (int)(has_total ? n - 6 : n), f->name,
           f->kind == NP_STAT_COUNTER ? "_total" : "");
}

void np__metrics_family(FILE *m, const char *name, const char *type, const char *help) {
  fprintf(m, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Names are printable UTF-8 (the server refuses others at login, the client's configuration
 * others), so nothing but \ " and newline needs care. */
void np__metrics_label(FILE *m, const char *v) {
  for (; *v != '\0'; v++) {
    if (*v == '\\' || *v == '"')
      fputc('\\', m);
    if (*v == '\n')
      fputs("\\n", m);
    else
      fputc(*v, m);
  }
}

static uint64_t field_value(const void *st, const np_stat_field *f) {
  return *(const uint64_t *)((const char *)st + f->offset);
}

/* ---- labeled views over the server's counters ------------------------------------------------ */

/* One label value of a family and the counter of np_server_stats it shows (offsetof). */
typedef struct view {
  const char *label;
  size_t member;
} view;

/* How visitors ended. The flat counters stay (scripts read them); this is the same numbers as one
 * family, so that sum() and rate() work over all outcomes. */
static const view outcomes[] = {
    {"joined", offsetof(np_server_stats, visitors_joined)},
    {"expired", offsetof(np_server_stats, visitors_expired)},
    {"refused", offsetof(np_server_stats, visitors_refused)},
    {"failed", offsetof(np_server_stats, visitors_failed)},
    {"denied", offsetof(np_server_stats, visitors_denied)},
    {"aborted", offsetof(np_server_stats, visitors_aborted)},
};

static void labeled(FILE *m, const np_server_stats *st) {
  /* logins_failed holds bad_token and timeout too: what is left of it is "error" (a malformed
   * login, a protocol version or TLS mismatch, garbage). */
  uint64_t error = st->logins_failed - st->logins_bad_token - st->logins_timeout;
  const char *ln = "natproxy_server_logins_total";

  np__metrics_family(
      m, ln, "counter",
      "Logins by result: ok; bad_token (wrong token, or a name the users file lacks); timeout "
      "(none within login_timeout); error (malformed, wrong version, TLS); throttled (refused "
      "unheard by the back-off); refused (max_clients, or the name in use).");
  fprintf(m, "%s{result=\"ok\"} %llu\n", ln, (unsigned long long)st->logins_ok);
  fprintf(m, "%s{result=\"bad_token\"} %llu\n", ln, (unsigned long long)st->logins_bad_token);
  fprintf(m, "%s{result=\"timeout\"} %llu\n", ln, (unsigned long long)st->logins_timeout);
  fprintf(m, "%s{result=\"error\"} %llu\n", ln, (unsigned long long)error);
  fprintf(m, "%s{result=\"throttled\"} %llu\n", ln, (unsigned long long)st->logins_throttled);
  fprintf(m, "%s{result=\"refused\"} %llu\n", ln, (unsigned long long)st->logins_refused);

  np__metrics_family(
      m, "natproxy_server_visitor_outcomes_total", "counter",
      "Visitors by how they ended: joined with a work connection, expired waiting for one, "
      "refused (a bound), failed (the client's service unreachable), denied (allow_ips), "
      "aborted (their proxy or client went).");
  for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
    fprintf(m, "natproxy_server_visitor_outcomes_total{outcome=\"%s\"} %llu\n", outcomes[i].label,
            (unsigned long long)*(const uint64_t *)((const char *)st + outcomes[i].member));
}

/* ---- one walk over the clients per scrape --------------------------------------------------
 * A group's worker 0 gathers every worker's clients for a walk (server_group_hooks.c), so the
 * families below read one copy instead of walking once each. */

typedef struct {
  char client[NP_MSG_NAME_MAX + 1];
  char proxy[NP_MSG_NAME_MAX + 1];
  const char *type; /* the type's own name: lives as long as the server */
  np_proxy_stats st;
} mproxy;

typedef struct {
  const struct np_server *srv;
  uint64_t
      by_type[sizeof(((struct np_server *)0)->types) / sizeof(((struct np_server *)0)->types[0])];
  uint64_t by_worker[NP_SERVER_WORKERS_MAX];
  mproxy *p; /* the first MAX_PROXY_SERIES proxies, in the walk's order */
  size_t n, cap;
  const char *client;
} scrape;

static int scrape_proxy(const np_server_proxy *p, void *arg) {
  scrape *sc = arg;
  const char *type = np_server_proxy_type(p);

  for (size_t k = 0; k < sizeof(sc->by_type) / sizeof(sc->by_type[0]); k++)
    if (sc->srv->types[k] != NULL && strcmp(sc->srv->types[k]->name, type) == 0)
      sc->by_type[k]++;
  if (sc->n == MAX_PROXY_SERIES)
    return 0;
  if (sc->n == sc->cap) {
    size_t cap = sc->cap ? 2 * sc->cap : 64;
    mproxy *more = realloc(sc->p, cap * sizeof(*more));
    if (more == NULL)
      return 0; /* the per-proxy series stop here; the counts go on */
    sc->p = more;
    sc->cap = cap;
  }
  np__strlcpy(sc->p[sc->n].client, sc->client, sizeof(sc->p[sc->n].client));
  np__strlcpy(sc->p[sc->n].proxy, np_server_proxy_name(p), sizeof(sc->p[sc->n].proxy));
  sc->p[sc->n].type = type;
  np_server_proxy_get_stats(p, &sc->p[sc->n].st, sizeof(sc->p[sc->n].st));
  sc->n++;
  return 0;
}

static int scrape_client(const np_server_client *c, void *arg) {
  scrape *sc = arg;
  unsigned k = np_server_client_worker(c);

  if (k < NP_SERVER_WORKERS_MAX)
    sc->by_worker[k]++;
  sc->client = np_server_client_name(c);
  return np_server_client_foreach_proxy(c, scrape_proxy, sc);
}

/* ---- proxy types: how many, and the first-byte histogram ---------------------------------- */

static void by_type(FILE *m, struct np_server *srv, const scrape *sc) {
  size_t kinds = sizeof(srv->types) / sizeof(srv->types[0]);

  np__metrics_family(m, "natproxy_server_proxies_by_type", "gauge",
                     "Proxies the logged-in clients have open now, by type.");
  for (size_t k = 0; k < kinds; k++)
    if (srv->types[k] != NULL)
      fprintf(m, "natproxy_server_proxies_by_type{type=\"%s\"} %llu\n", srv->types[k]->name,
              (unsigned long long)sc->by_type[k]);

  np__metrics_family(
      m, "natproxy_server_first_byte_seconds", "histogram",
      "Time from a visitor's arrival to the first byte from its service, of joined visitors, "
      "by proxy type.");
  for (size_t k = 0; k < kinds; k++) {
    uint64_t le[NP__HISTO_BOUNDS], cum[NP__HISTO_BOUNDS], count, sum;
    const char *t;
    if (srv->types[k] == NULL)
      continue;
    t = srv->types[k]->name;
    np_server_get_first_byte(srv, t, le, cum, NP__HISTO_BOUNDS, &count, &sum);
    for (size_t i = 0; i < NP__HISTO_BOUNDS; i++)
      fprintf(m, "natproxy_server_first_byte_seconds_bucket{type=\"%s\",le=\"%g\"} %llu\n", t,
              (double)le[i] / 1e6, (unsigned long long)cum[i]);
    fprintf(m, "natproxy_server_first_byte_seconds_bucket{type=\"%s\",le=\"+Inf\"} %llu\n", t,
            (unsigned long long)count);
    fprintf(m, "natproxy_server_first_byte_seconds_sum{type=\"%s\"} %.6f\n", t, (double)sum / 1e6);
    fprintf(m, "natproxy_server_first_byte_seconds_count{type=\"%s\"} %llu\n", t,
            (unsigned long long)count);
  }
}

/* ---- per proxy -------------------------------------------------------------------------------
 */

static void per_proxy(FILE *m, const np_stat_field *f, const scrape *sc) {
  char name[96];

  np__metrics_name(name, sizeof(name), "proxy", f);
  for (size_t i = 0; i < sc->n; i++) {
    fprintf(m, "%s{client=\"", name);
    np__metrics_label(m, sc->p[i].client);
    fputs("\",proxy=\"", m);
    np__metrics_label(m, sc->p[i].proxy);
    fprintf(m, "\",type=\"%s\"} %llu\n", sc->p[i].type,
            (unsigned long long)field_value(&sc->p[i].st, f));
  }
}

/* ---- workers (np_server_group): how many, each one's clients and CPU --------------------------
 */

static void workers(FILE *m, struct np_server *srv, const scrape *sc) {
  uint64_t cpu[NP_SERVER_WORKERS_MAX] = {0};
  unsigned n = 1;
  struct timespec ts;

  if (srv->group_workers != NULL)
    n = srv->group_workers(srv, cpu, NP_SERVER_WORKERS_MAX);
  else if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) /* this is the server's thread */
    cpu[0] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  np__metrics_family(m, "natproxy_server_workers", "gauge",
                     "Event loops serving, each on a thread of its own (workers).");
  fprintf(m, "natproxy_server_workers %u\n", n);
  np__metrics_family(m, "natproxy_server_worker_clients", "gauge",
                     "Logged-in clients on each worker now.");
  for (unsigned k = 0; k < n; k++)
    fprintf(m, "natproxy_server_worker_clients{worker=\"%u\"} %llu\n", k,
            (unsigned long long)sc->by_worker[k]);
  np__metrics_family(m, "natproxy_server_worker_cpu_seconds_total", "counter",
                     "CPU time each worker's thread has used (user and system).");
  for (unsigned k = 0; k < n; k++)
    fprintf(m, "natproxy_server_worker_cpu_seconds_total{worker=\"%u\"} %.6f\n", k,
            (double)cpu[k] / 1e9);
}

/* route_store's: only when there is one. */
static void routes(FILE *m, const struct np_server *srv) {
  np__routes_view v;

  if (np__routes_get_view(srv, &v) != 0)
    return;
  np__metrics_family(m, "natproxy_server_route_store_up", "gauge",
                     "1 while the route store (route_store) is connected, else 0.");
  fprintf(m, "natproxy_server_route_store_up %d\n", v.up);
  np__metrics_family(m, "natproxy_server_routes", "gauge",
                     "Routes in the route store: this server's (owner=\"self\") and those of "
                     "the other servers in the last table read (owner=\"others\").");
  fprintf(m, "natproxy_server_routes{owner=\"self\"} %zu\n", v.claimed);
  fprintf(m, "natproxy_server_routes{owner=\"others\"} %zu\n", v.known);
}

void np__admin_metrics(struct np_server *srv, np__admin_reply *out) {
  np_server_stats st;
  const np_stat_field *f;
  char name[96], help[320];
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  scrape *sc;

  if (m == NULL || (sc = calloc(1, sizeof(*sc))) == NULL) {
    if (m != NULL)
      fclose(m);
    free(buf);
    np__admin_reply_error(out, 500, "out of memory");
    return;
  }
  sc->srv = srv;
  np_server_get_stats(srv, &st, sizeof(st));
  np_server_foreach_client(srv, scrape_client, sc);
  np__metrics_build_info(m);
  for (size_t i = 0; (f = np_server_stats_field(i)) != NULL; i++) {
    np__metrics_name(name, sizeof(name), "server", f);
    snprintf(help, sizeof(help), "%s (%s).", f->help, f->unit);
    np__metrics_family(m, name, f->kind == NP_STAT_COUNTER ? "counter" : "gauge", help);
    fprintf(m, "%s %llu\n", name, (unsigned long long)field_value(&st, f));
  }
  labeled(m, &st);
  by_type(m, srv, sc);
  workers(m, srv, sc);
  routes(m, srv);
  for (size_t i = 0; (f = np_proxy_stats_field(i)) != NULL; i++) {
    np__metrics_name(name, sizeof(name), "proxy", f);
    snprintf(help, sizeof(help), "Per proxy: %s (%s).", f->help, f->unit);
    np__metrics_family(m, name, f->kind == NP_STAT_COUNTER ? "counter" : "gauge", help);
    per_proxy(m, f, sc);
  }
  free(sc->p);
  free(sc);
  np__metrics_end(m, &buf, &len, out);
}

void np__metrics_build_info(FILE *m) {
  np__metrics_family(m, "natproxy_build_info", "gauge",
                     "The versions of libnatproxy serving and of the libraries it runs on.");
  fprintf(m, "natproxy_build_info{version=\"");
  np__metrics_label(m, np_version_string());
  fputs("\",libuv=\"", m);
  np__metrics_label(m, uv_version_string());
  fputs("\",openssl=\"", m);
  np__metrics_label(m, OpenSSL_version(OPENSSL_VERSION_STRING));
  fputs("\"} 1\n", m);
}

void np__metrics_end(FILE *m, char **buf, size_t *len, np__admin_reply *out) {
  if (fclose(m) != 0 || *buf == NULL) {
    free(*buf);
    np__admin_reply_error(out, 500, "out of memory");
    return;
  }
  out->status = 200;
  out->type = "text/plain; version=0.0.4; charset=utf-8";
  out->body = *buf;
  out->len = *len;
}
