/* np-client's admin endpoint (docs/api-admin.md, "np-client"): its session and proxies as JSON at
 * /api/v1/status, a reload at /api/v1/reload, /metrics and /healthz, on admin_http.c. It reads the
 * proxies through the walk the public API offers embedders (np_client_foreach_proxy) and the
 * counters as data (natproxy/stats.h), so a counter added to a list shows up here by itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin_http.h"
#include "admin_metrics.h"
#include "client.h"
#include "natproxy/version.h"

static const char *const open_paths[] = {"/healthz", NULL};

static const char *const state_names[] = {"closed", "pending", "ok", "refused"};

static const char *proxy_state(const np_client_proxy *p) {
  unsigned s = (unsigned)np_client_proxy_get_state(p);
  return s < NP_ARRAY_SIZE(state_names) ? state_names[s] : "?";
}

/* ---- JSON ------------------------------------------------------------------------------------ */

static int each_proxy(const np_client_proxy *p, void *arg) {
  json_t *list = arg;
  np_proxy_stats st;
  const char *text;
  int status = np_client_proxy_error(p, &text);

  np_client_proxy_get_stats(p, &st, sizeof(st));
  json_array_append_new(list,
                        json_pack("{s:s, s:s, s:s, s:i, s:s, s:i, s:i, s:s, s:o}", "name",
                                  np_client_proxy_name(p), "type", np_client_proxy_type(p), "local",
                                  np_client_proxy_local(p), "remote_port",
                                  np_client_proxy_remote_port(p), "status", proxy_state(p), "port",
                                  np_client_proxy_port(p), "error_code", status, "error", text,
                                  "stats", np__admin_stats_json(np_proxy_stats_field, &st)));
  return 0;
}

/* A proxy as one server sees it, in a session's entry of "sessions". */
static int each_session_proxy(const np_client_proxy *p, void *arg) {
  json_t *list = arg;
  const char *text;
  int status = np_client_proxy_error(p, &text);

  json_array_append_new(list,
                        json_pack("{s:s, s:s, s:i, s:i, s:s}", "name", np_client_proxy_name(p),
                                  "status", proxy_state(p), "port", np_client_proxy_port(p),
                                  "error_code", status, "error", text));
  return 0;
}

/* One entry per server: with server = a, b each has a session of its own (client_set.c). */
static json_t *sessions(const struct np_client *cl) {
  const struct np_client *each[NP_MAX_SERVERS];
  size_t n = np__client_sessions(cl, each, NP_ARRAY_SIZE(each));
  json_t *list = json_array();

  for (size_t i = 0; i < n; i++) {
    const struct np_client *s = each[i];
    json_t *proxies = json_array();
    np_client_stats st;
    np_client_get_stats(s, &st, sizeof(st));
    np_client_foreach_proxy(s, each_session_proxy, proxies);
    json_array_append_new(
        list, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:b, s:b, s:o}", "server", s->cfg.server,
                        "address", s->addr, "state", np_client_state(s), "since_ms",
                        (json_int_t)(now_ms((struct np_client *)s) - s->state_ms), "logins",
                        (json_int_t)st.connects, "reconnects",
                        (json_int_t)(st.connects > 0 ? st.connects - 1 : 0), "tls", s->tls != NULL,
                        "udp_path_up", st.udp_path_up != 0, "proxies", proxies));
  }
  return list;
}

static json_t *status(struct np_client *cl) {
  json_t *proxies = json_array(), *session;
  const struct np_client *lead = np__client_lead(cl);
  np_client_stats st;

  np_client_get_stats(cl, &st, sizeof(st));
  np_client_foreach_proxy(cl, each_proxy, proxies);
  session = json_pack(
      "{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:b, s:b, s:b}", "server", cl->cfg.server, "name",
      cl->cfg.name, "state", np_client_state(cl), "since_ms",
      (json_int_t)(now_ms(cl) - lead->state_ms), "logins", (json_int_t)st.connects, "reconnects",
      (json_int_t)(st.connects > 0 ? st.connects - 1 : 0), "codec", cl->codec->name, "mux",
      cl->cfg.mux && native(cl), "tls", !cl->cfg.insecure, "udp_path_up", st.udp_path_up != 0);
  return json_pack("{s:s, s:o, s:o, s:o, s:o}", "version", np_version_string(), "session", session,
                   "sessions", sessions(cl), "proxies", proxies, "stats",
                   np__admin_stats_json(np_client_stats_field, &st));
}

/* ---- /metrics -------------------------------------------------------------------------------- */

typedef struct mwalk {
  FILE *m;
  const np_stat_field *f; /* NULL: the status family */
} mwalk;

static void proxy_labels(FILE *m, const np_client_proxy *p) {
  fputs("{proxy=\"", m);
  np__metrics_label(m, np_client_proxy_name(p));
  fprintf(m, "\",type=\"%s\"", np_client_proxy_type(p));
}

/* At most NP_MAX_PROXIES proxies, so the series are bounded by the configuration. */
static int metric_proxy(const np_client_proxy *p, void *arg) {
  mwalk *w = arg;
  np_proxy_stats st;
  char name[96];

  if (w->f == NULL) {
    for (size_t s = 0; s < NP_ARRAY_SIZE(state_names); s++) {
      fputs("natproxy_client_proxy_status", w->m);
      proxy_labels(w->m, p);
      fprintf(w->m, ",status=\"%s\"} %d\n", state_names[s],
              (unsigned)np_client_proxy_get_state(p) == s);
    }
    return 0;
  }
  np_client_proxy_get_stats(p, &st, sizeof(st));
  np__metrics_name(name, sizeof(name), "client_proxy", w->f);
  fputs(name, w->m);
  proxy_labels(w->m, p);
  fprintf(w->m, "} %llu\n",
          (unsigned long long)*(const uint64_t *)((const char *)&st + w->f->offset));
  return 0;
}

static void metrics(struct np_client *cl, np__admin_reply *out) {
  np_client_stats st;
  const np_stat_field *f;
  char name[96], help[320];
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  mwalk w = {.m = m};

  if (m == NULL) {
    np__admin_reply_error(out, 500, "out of memory");
    return;
  }
  np_client_get_stats(cl, &st, sizeof(st));
  np__metrics_build_info(m);
  for (size_t i = 0; (f = np_client_stats_field(i)) != NULL; i++) {
    np__metrics_name(name, sizeof(name), "client", f);
    snprintf(help, sizeof(help), "%s (%s).", f->help, f->unit);
    np__metrics_family(m, name, f->kind == NP_STAT_COUNTER ? "counter" : "gauge", help);
    fprintf(m, "%s %llu\n", name,
            (unsigned long long)*(const uint64_t *)((const char *)&st + f->offset));
  }
  np__metrics_family(m, "natproxy_client_logged_in", "gauge",
                     "1 while a session of the client with a server is logged in, else 0.");
  fprintf(m, "natproxy_client_logged_in %d\n", np__client_lead(cl)->state == C_READY);
  {
    const struct np_client *each[NP_MAX_SERVERS];
    size_t n = np__client_sessions(cl, each, NP_ARRAY_SIZE(each));
    np__metrics_family(m, "natproxy_client_session_logged_in", "gauge",
                       "Per server the client dials (server = a, b: a session each; a name "
                       "with several addresses: a session per address), 1 while its session "
                       "is logged in, else 0.");
    for (size_t i = 0; i < n; i++) {
      fputs("natproxy_client_session_logged_in{server=\"", m);
      np__metrics_label(m, each[i]->cfg.server);
      fputs("\",address=\"", m);
      np__metrics_label(m, each[i]->addr);
      fprintf(m, "\"} %d\n", each[i]->state == C_READY);
    }
  }
  np__metrics_family(m, "natproxy_client_proxy_status", "gauge",
                     "Per proxy, what the server made of it: 1 for its status now (closed: no "
                     "session; pending: no answer yet; ok: open; refused: refused or closed by "
                     "the server), 0 for the others.");
  np_client_foreach_proxy(cl, metric_proxy, &w);
  for (size_t i = 0; (f = np_proxy_stats_field(i)) != NULL; i++) {
    w.f = f;
    np__metrics_name(name, sizeof(name), "client_proxy", f);
    snprintf(help, sizeof(help), "Per proxy, as the client counts: %s (%s).", f->help, f->unit);
    np__metrics_family(m, name, f->kind == NP_STAT_COUNTER ? "counter" : "gauge", help);
    np_client_foreach_proxy(cl, metric_proxy, &w);
  }
  np__metrics_end(m, &buf, &len, out);
}

/* ---- routing --------------------------------------------------------------------------------- */

static const char *methods_of(const char *path) {
  static const struct {
    const char *path, *methods;
  } known[] = {
      {"/healthz", "GET or HEAD"},
      {"/metrics", "GET"},
      {"/api/v1/status", "GET"},
      {"/api/v1/reload", "POST"},
  };
  for (size_t i = 0; i < NP_ARRAY_SIZE(known); i++)
    if (strcmp(known[i].path, path) == 0)
      return known[i].methods;
  return NULL;
}

static void route(void *arg, const char *method, const char *path, np__admin_reply *out) {
  struct np_client *cl = arg;
  int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

  if (strcmp(path, "/healthz") == 0 && (get || strcmp(method, "HEAD") == 0)) {
    np__admin_reply_text(out, 200, "text/plain; charset=utf-8", "ok\n");
  } else if (strcmp(path, "/metrics") == 0 && get) {
    metrics(cl, out);
  } else if (strcmp(path, "/api/v1/status") == 0 && get) {
    np__admin_reply_json(out, status(cl));
  } else if (strcmp(path, "/api/v1/reload") == 0 && post) {
    np__admin_reply_reload(out, np_client_reload(cl), cl->reload_err);
  } else {
    np__admin_reply_unrouted(out, path, methods_of(path));
  }
}

/* ---- life ------------------------------------------------------------------------------------ */

int np__admin_client_auth(struct np_client *cl, const struct np_config *cfg) {
  np__admin_auth auth = {cfg->admin_token, cfg->admin_user, cfg->admin_password};
  return cl->admin != NULL ? np__admin_http_set_auth(cl->admin, &auth) : 0;
}

int np__admin_client_start(struct np_client *cl) {
  np__admin_auth auth = {cl->cfg.admin_token, cl->cfg.admin_user, cl->cfg.admin_password};
  int r;

  if (cl->cfg.admin_bind[0] == '\0')
    return 0;
  if ((r = np__admin_http_start(cl->loop, cl->cfg.admin_bind, &auth, open_paths, &cl->log, route,
                                cl, &cl->admin)) != 0) {
    np__log(&cl->log, NP_LOG_ERROR, "cannot listen on admin_bind %s: %s", cl->cfg.admin_bind,
            np_strerror(r));
    return r;
  }
  cl->refs++;
  np__log(&cl->log, NP_LOG_INFO, "admin API, /metrics and /healthz on %s (port %d)",
          cl->cfg.admin_bind, np__admin_http_port(cl->admin));
  return 0;
}

static void on_admin_closed(void *arg) {
  np__client_unref(arg);
}

void np__admin_client_stop(struct np_client *cl) {
  if (cl->admin == NULL)
    return;
  np__admin_http_close(cl->admin, on_admin_closed, cl);
  cl->admin = NULL;
}
