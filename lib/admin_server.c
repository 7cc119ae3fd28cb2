/* np-server's admin endpoint (docs/api-admin.md): the JSON API under /api/v1/, /healthz, and the
 * route to /metrics (admin_metrics.c), on admin_http.c. It reads the server through the same walk
 * the public API offers embedders (np_server_foreach_client and the proxy views) and the counters
 * as data (natproxy/stats.h), so a counter added to a list shows up here by itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "admin_http.h"
#include "admin_metrics.h"
#include "admin_page.h"
#include "natproxy/version.h"
#include "route_store.h"
#include "server.h"

static const char *const open_paths[] = {"/healthz", NULL};
/* Without Basic credentials (a Bearer token alone, or none on loopback) the dashboard's files are
 * open: a browser cannot send a Bearer token for a page it navigates to, so the page holds no data
 * and asks for the token itself (docs/api-admin.md). With Basic, the browser asks. */
static const char *const open_paths_page[] = {"/healthz", NP_ADMIN_PAGE_PATHS, NULL};

/* ---- JSON ------------------------------------------------------------------------------------ */

typedef struct walk {
  json_t *list;    /* clients, or proxies */
  json_t *proxies; /* the current client's */
  const char *client;
} walk;

static int each_proxy(const np_server_proxy *p, void *arg) {
  walk *w = arg;
  np_proxy_stats st;
  json_t *o;

  np_server_proxy_get_stats(p, &st, sizeof(st));
  o = json_pack("{s:s, s:s, s:s, s:i, s:s, s:o}", "client", w->client, "name",
                np_server_proxy_name(p), "type", np_server_proxy_type(p), "port",
                np_server_proxy_port(p), "hosts", np_server_proxy_hosts(p), "stats",
                np__admin_stats_json(np_proxy_stats_field, &st));
  if (o != NULL)
    json_array_append_new(w->proxies, o);
  return 0;
}

/* Wall-clock milliseconds since 1970: when a client logged in, for people and their dashboards. */
static uint64_t now_unix_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int each_client(const np_server_client *c, void *arg) {
  walk *w = arg;
  np_proxy_stats st;
  json_t *o, *proxies = json_array();

  w->proxies = proxies;
  w->client = np_server_client_name(c);
  np_server_client_foreach_proxy(c, each_proxy, w);
  np_server_client_get_stats(c, &st, sizeof(st));
  int64_t streams = np_server_client_mux_streams(c);
  o = json_pack("{s:s, s:s, s:I, s:I, s:o, s:s, s:I, s:o, s:o}", "name", np_server_client_name(c),
                "addr", np_server_client_addr(c), "uptime_ms",
                (json_int_t)np_server_client_uptime_ms(c), "login_unix_ms",
                (json_int_t)(now_unix_ms() - np_server_client_uptime_ms(c)), "mux_streams",
                streams >= 0 ? json_integer(streams) : json_null(), "udp_path",
                np_server_client_udp_path(c), "worker", (json_int_t)np_server_client_worker(c),
                "stats", np__admin_stats_json(np_proxy_stats_field, &st), "proxies", proxies);
  if (o != NULL)
    json_array_append_new(w->list, o);
  return 0;
}

/* Every proxy of every client in one list. */
static int each_client_proxies(const np_server_client *c, void *arg) {
  walk *w = arg;
  w->proxies = w->list;
  w->client = np_server_client_name(c);
  np_server_client_foreach_proxy(c, each_proxy, w);
  return 0;
}

static json_t *server_info(struct np_server *srv) {
  np_server_stats st;
  np_server_get_stats(srv, &st, sizeof(st));
  return json_pack("{s:s, s:I, s:i, s:s, s:i, s:i, s:b, s:s, s:o}", "version", np_version_string(),
                   "uptime_ms", (json_int_t)(now_ms(srv) - srv->started_ms), "port", srv->port,
                   "codec", srv->codec->name, "vhost_http_port", srv->cfg.vhost_http_port,
                   "vhost_https_port", srv->cfg.vhost_https_port, "tls", srv->tls != NULL,
                   "fingerprint", srv->tls != NULL ? np_server_fingerprint(srv) : "", "stats",
                   np__admin_stats_json(np_server_stats_field, &st));
}

/* GET /api/v1/logins/failed: the ring, newest first. */
static json_t *failed_logins(struct np_server *srv) {
  np_server_stats st;
  json_t *list = json_array();
  const np__login_fail *f;
  uint64_t now = now_ms(srv);
  np__login_fails fails; /* a copy: the ring is shared, and read here without its lock */

  np__shared_fails_copy(srv->shared, &fails);
  for (size_t i = 0; list != NULL && (f = np__login_fails_get(&fails, i)) != NULL; i++)
    json_array_append_new(list,
                          json_pack("{s:I, s:I, s:s, s:s, s:s}", "unix_ms", (json_int_t)f->unix_ms,
                                    "ago_ms", (json_int_t)(now - f->loop_ms), "addr", f->addr,
                                    "name", f->name, "reason", f->why));
  np_server_get_stats(srv, &st, sizeof(st)); /* a group's: every worker's */
  return json_pack("{s:I, s:I, s:I, s:o}", "recorded", (json_int_t)fails.total, "logins_failed",
                   (json_int_t)st.logins_failed, "logins_throttled",
                   (json_int_t)st.logins_throttled, "failed", list);
}

/* POST /api/v1/clients/NAME/disconnect: here, or on the worker that holds it (np_server_group). */
static void disconnect(struct np_server *srv, const char *name, np__admin_reply *out) {
  if (np__server_disconnect(srv, name, 0) ||
      (srv->group_disconnect != NULL && srv->group_disconnect(srv, name)))
    np__admin_reply_json(out, json_pack("{s:s}", "disconnected", name));
  else
    np__admin_reply_error(out, 404, "no client of that name is logged in");
}

/* ---- the route store ------------------------------------------------------------------------- */

static int each_route(const char *route, const char *owner, void *arg) {
  json_array_append_new(arg, json_pack("{s:s, s:s}", "route", route, "server", owner));
  return 0;
}

/* {"store": "redis://...", "up": true, "claimed": 3, "known": 5, "table_age_ms": 812,
 *  "routes": [{"route": "tcp:6000", "server": "10.0.0.2:7000"}, ...]}: the routes of the other
 * servers as last read; "store": null without a route store. */
static json_t *routes_info(const struct np_server *srv) {
  np__routes_view v;
  json_t *list;

  if (np__routes_get_view(srv, &v) != 0)
    return json_pack("{s:n, s:b, s:I, s:I, s:n, s:[]}", "store", "up", 0, "claimed", (json_int_t)0,
                     "known", (json_int_t)0, "table_age_ms", "routes");
  list = json_array();
  np__routes_foreach(srv, each_route, list);
  return json_pack("{s:s, s:b, s:I, s:I, s:o, s:o}", "store", v.store, "up", v.up, "claimed",
                   (json_int_t)v.claimed, "known", (json_int_t)v.known, "table_age_ms",
                   v.table_age_ms == UINT64_MAX ? json_null()
                                                : json_integer((json_int_t)v.table_age_ms),
                   "routes", list);
}

/* ---- routing ----------------------------------------------------------------------------------
 */

/* The methods an endpoint answers, for a 405; NULL: no such endpoint. */
static const char *methods_of(const char *path) {
  static const struct {
    const char *path, *methods;
  } known[] = {
      {"/healthz", "GET or HEAD"}, {"/metrics", "GET"},        {"/api/v1/server", "GET"},
      {"/api/v1/clients", "GET"},  {"/api/v1/proxies", "GET"}, {"/api/v1/reload", "POST"},
      {"/api/v1/routes", "GET"},
  };
  size_t n = strlen(path), tail = strlen("/disconnect");

  for (size_t i = 0; i < NP_ARRAY_SIZE(known); i++)
    if (strcmp(known[i].path, path) == 0)
      return known[i].methods;
  if (strncmp(path, "/api/v1/clients/", 16) == 0 && n > 16 + tail &&
      strcmp(path + n - tail, "/disconnect") == 0)
    return "POST";
  return NULL;
}

static void route(void *arg, const char *method, const char *path, np__admin_reply *out) {
  struct np_server *srv = arg;
  int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
  const char *prefix = "/api/v1/clients/";

  if (np__admin_page(method, path, out)) {
    return;
  } else if (strcmp(path, "/healthz") == 0 && (get || strcmp(method, "HEAD") == 0)) {
    /* A load balancer's health check takes the server out of rotation while it drains. */
    if (np_server_draining(srv))
      np__admin_reply_text(out, 503, "text/plain; charset=utf-8", "draining\n");
    else
      np__admin_reply_text(out, 200, "text/plain; charset=utf-8", "ok\n");
  } else if (strcmp(path, "/metrics") == 0 && get) {
    np__admin_metrics(srv, out);
  } else if (strcmp(path, "/api/v1/server") == 0 && get) {
    np__admin_reply_json(out, server_info(srv));
  } else if (strcmp(path, "/api/v1/clients") == 0 && get) {
    walk w = {.list = json_array()};
    np_server_foreach_client(srv, each_client, &w);
    np__admin_reply_json(out, json_pack("{s:o}", "clients", w.list));
  } else if (strcmp(path, "/api/v1/logins/failed") == 0 && get) {
    np__admin_reply_json(out, failed_logins(srv));
  } else if (strcmp(path, "/api/v1/proxies") == 0 && get) {
    walk w = {.list = json_array()};
    np_server_foreach_client(srv, each_client_proxies, &w);
    np__admin_reply_json(out, json_pack("{s:o}", "proxies", w.list));
  } else if (strncmp(path, prefix, strlen(prefix)) == 0 && post &&
             strlen(path) > strlen(prefix) + strlen("/disconnect") &&
             strcmp(path + strlen(path) - strlen("/disconnect"), "/disconnect") == 0) {
    char name[NP_MSG_NAME_MAX + 1];
    size_t n = strlen(path) - strlen(prefix) - strlen("/disconnect");
    if (n > NP_MSG_NAME_MAX) {
      np__admin_reply_error(out, 404, "no client of that name is logged in");
      return;
    }
    memcpy(name, path + strlen(prefix), n);
    name[n] = '\0';
    disconnect(srv, name, out);
  } else if (strcmp(path, "/api/v1/routes") == 0 && get) {
    np__admin_reply_json(out, routes_info(srv));
  } else if (strcmp(path, "/api/v1/reload") == 0 && post) {
    np__admin_reply_reload(out, np_server_reload(srv), srv->reload_err);
  } else {
    np__admin_reply_unrouted(out, path, methods_of(path));
  }
}

/* ---- life -------------------------------------------------------------------------------------
 */

int np__admin_server_auth(struct np_server *srv, const struct np_config *cfg) {
  np__admin_auth auth = {cfg->admin_token, cfg->admin_user, cfg->admin_password};
  int r;

  if (srv->admin == NULL)
    return 0;
  if ((r = np__admin_http_set_auth(srv->admin, &auth)) == 0)
    np__admin_http_set_open(srv->admin, cfg->admin_user[0] != '\0' ? open_paths : open_paths_page);
  return r;
}

int np__admin_server_start(struct np_server *srv) {
  np__admin_auth auth = {srv->cfg.admin_token, srv->cfg.admin_user, srv->cfg.admin_password};
  int r;

  if (srv->cfg.admin_bind[0] == '\0')
    return 0;
  if ((r = np__admin_http_start(srv->loop, srv->cfg.admin_bind, &auth,
                                srv->cfg.admin_user[0] != '\0' ? open_paths : open_paths_page,
                                &srv->log, route, srv, &srv->admin)) != 0) {
    np__log(&srv->log, NP_LOG_ERROR, "cannot listen on admin_bind %s: %s", srv->cfg.admin_bind,
            np_strerror(r));
    return r;
  }
  srv->refs++;
  np__log(&srv->log, NP_LOG_INFO, "admin API, /metrics, /healthz and the dashboard on %s (port %d)",
          srv->cfg.admin_bind, np__admin_http_port(srv->admin));
  return 0;
}

static void on_admin_closed(void *arg) {
  np__server_unref(arg);
}

void np__admin_server_stop(struct np_server *srv) {
  if (srv->admin == NULL)
    return;
  np__admin_http_close(srv->admin, on_admin_closed, srv);
  srv->admin = NULL;
}
