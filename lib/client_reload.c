/* np_client_reload and np_client_reconfigure: a running client takes a new configuration on its
 * live session, which is not reconnected. Proxies added are registered, proxies removed are closed
 * on the server (PROXY_CLOSE), proxies whose registration changed are closed and registered again,
 * proxies whose local side alone changed take it for new visitors; the others, and their visitors,
 * are untouched. [client] keys read afresh where they are used take effect at once; the others
 * (the server, credentials, TLS, the transport) only at a restart, with a warning. A configuration
 * with any error changes nothing. docs/config.md, "Reload", is the user's view. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* [client] keys a running client takes: each is read where it is used (a backoff, a refill, a
 * registration, a UDP flow's dial, the admin endpoint's check), so the new value is in force from
 * the next use. Every other key waits for a restart. */
#define LIVE(k, f)                                                                                 \
  { k, offsetof(struct np_config, f), sizeof(((struct np_config *)0)->f) }
static const struct {
  const char *key;
  size_t off, size;
} live_keys[] = {
    LIVE("log_level", log_level),
    LIVE("allow_ips", allow_ips),
    LIVE("secret_key", secret_key), /* private proxies registered again with it (above) */
    LIVE("reconnect_min", reconnect_min_ms),
    LIVE("reconnect_max", reconnect_max_ms),
    LIVE("work_pool", work_pool),
    LIVE("relay_splice", relay_splice),
    LIVE("udp_idle_timeout", udp_idle_timeout_ms),
    LIVE("admin_token", admin_token),
    LIVE("admin_user", admin_user),
    LIVE("admin_password", admin_password),
};
#undef LIVE

typedef struct changes {
  struct np_client *cl;
  char list[512]; /* "allow_ips, work_pool" */
} changes;

static int live_key(const char *key) {
  for (size_t i = 0; i < NP_ARRAY_SIZE(live_keys); i++)
    if (strcmp(live_keys[i].key, key) == 0)
      return (int)i;
  return -1;
}

static void on_changed(const char *key, void *arg) {
  changes *c = arg;
  size_t used = strlen(c->list);

  if (live_key(key) < 0) {
    np__log(&c->cl->log, np__client_echo(c->cl, NP_LOG_WARN),
            "reload: %s changed, which takes effect only at a restart; keeping the running value",
            key);
    return;
  }
  if (used + strlen(key) + 8 < sizeof(c->list))
    snprintf(c->list + used, sizeof(c->list) - used, "%s%s", used > 0 ? ", " : "", key);
}

__attribute__((format(printf, 2, 3))) static void failed(struct np_client *cl, const char *fmt,
                                                         ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(cl->reload_err, sizeof(cl->reload_err), fmt, ap);
  va_end(ap);
  np__log(&cl->log, NP_LOG_ERROR, "reload: %s; nothing changed", cl->reload_err);
}

static const char *allow_of(const np__proxy_cfg *px, const struct np_config *cfg) {
  return px->allow_ips[0] != '\0' ? px->allow_ips : cfg->allow_ips;
}

static const char *secret_of(const np__proxy_cfg *px, const struct np_config *cfg) {
  return px->secret_key[0] != '\0' ? px->secret_key : cfg->secret_key;
}

/* What the server holds of a proxy: the PROXY and PROXY_OPT fields (np__client_register). 0 when
 * they are the same; else the first field that differs, for the log. */
static const char *registration_differs(const np__proxy_cfg *a, const struct np_config *ca,
                                        const np__proxy_cfg *b, const struct np_config *cb) {
  if (a->kind != b->kind)
    return "type";
  if (a->remote_port != b->remote_port)
    return "remote_port";
  if (strcmp(a->bind_addr, b->bind_addr) != 0)
    return "bind_addr";
  if (strcmp(allow_of(a, ca), allow_of(b, cb)) != 0)
    return "allow_ips";
  if (strcmp(a->custom_domains, b->custom_domains) != 0 ||
      strcmp(a->subdomain, b->subdomain) != 0 || strcmp(a->locations, b->locations) != 0 ||
      strcmp(a->host_header_rewrite, b->host_header_rewrite) != 0 ||
      strcmp(a->http_user, b->http_user) != 0 || strcmp(a->http_password, b->http_password) != 0)
    return "HTTP options";
  if (np__kind_private(a->kind) && (strcmp(secret_of(a, ca), secret_of(b, cb)) != 0 ||
                                    strcmp(a->allow_users, b->allow_users) != 0))
    return "secret_key or allow_users";
  return NULL;
}

static int local_differs(const np__proxy_cfg *a, const np__proxy_cfg *b) {
  return strcmp(a->local, b->local) != 0 || a->proxy_protocol != b->proxy_protocol;
}

/* The running proxy of that name, or NULL. */
static cproxy *running(struct np_client *cl, const char *name) {
  for (size_t i = 0; i < cl->cfg.n_proxies; i++)
    if (strcmp(cl->px[i]->cfg.name, name) == 0)
      return cl->px[i];
  return NULL;
}

/* Does the server hold (or is it about to answer for) this proxy? */
static int registered(const cproxy *px) {
  return px->state == NP_CLIENT_PROXY_OK || px->state == NP_CLIENT_PROXY_PENDING;
}

static void send_close(struct np_client *cl, const cproxy *px, const char *why) {
  np_msg m = {.type = NP_MSG_PROXY_CLOSE};

  np__strlcpy(m.name, px->cfg.name, sizeof(m.name));
  np__strlcpy(m.text, why, sizeof(m.text));
  /* A send that fails ends the session: the next login registers the new list. */
  np__client_send(cl, &m);
}

/* The new list of proxy objects, for next's proxies: the running object where nothing changed, a
 * new one (with the server's answer carried over) where only the local side did, a fresh one
 * otherwise. 0 or UV_ENOMEM (nothing kept). */
static int build_list(struct np_client *cl, const struct np_config *next, cproxy **nx) {
  for (size_t i = 0; i < next->n_proxies; i++) {
    const np__proxy_cfg *want = &next->proxies[i];
    cproxy *old = running(cl, want->name);

    if (old != NULL && registration_differs(&old->cfg, &cl->cfg, want, next) == NULL &&
        !local_differs(&old->cfg, want)) {
      old->refs++;
      nx[i] = old;
      continue;
    }
    if (np__cproxy_new(want, &nx[i]) != 0) {
      while (i-- > 0)
        np__cproxy_unref(nx[i]);
      return UV_ENOMEM;
    }
    if (old != NULL && registration_differs(&old->cfg, &cl->cfg, want, next) == NULL) {
      nx[i]->state = old->state;
      nx[i]->port = old->port;
      nx[i]->status = old->status;
      memcpy(nx[i]->error, old->error, sizeof(nx[i]->error));
    } else if (!native(cl) && cl->state == C_READY) {
      nx[i]->state = NP_CLIENT_PROXY_OK; /* nothing to register: the visit port is the server's */
    }
  }
  return 0;
}

/* Log what changed and, with send (native codec, logged in, a server that takes PROXY_CLOSE), tell
 * the live session: closes first, so that a proxy registered after them may take a port or a name
 * one of them held. old: the running list before the swap; was: the configuration it came with. */
static void apply_to_session(struct np_client *cl, const struct np_config *was, cproxy **old,
                             size_t n_old, int send) {
  size_t n = cl->cfg.n_proxies;

  for (size_t i = 0; i < n_old; i++) {
    cproxy *now = NULL;
    const char *what;
    for (size_t k = 0; k < n && now == NULL; k++)
      if (strcmp(cl->px[k]->cfg.name, old[i]->cfg.name) == 0)
        now = cl->px[k];
    if (now == old[i])
      continue;
    what = now == NULL ? NULL : registration_differs(&old[i]->cfg, was, &now->cfg, &cl->cfg);
    if (now != NULL && what == NULL) {
      np__log(&cl->log, np__client_echo(cl, NP_LOG_INFO),
              "reload: proxy %s: local service %s%s (new visitors; open ones keep theirs)",
              now->cfg.name, now->cfg.local,
              now->cfg.proxy_protocol != old[i]->cfg.proxy_protocol
                  ? ", PROXY protocol header changed"
                  : "");
      continue;
    }
    if (now == NULL)
      np__log(&cl->log, np__client_echo(cl, NP_LOG_INFO), "reload: proxy %s removed%s",
              old[i]->cfg.name,
              send && registered(old[i]) ? "; closing it on the server with its visitors" : "");
    else
      np__log(&cl->log, np__client_echo(cl, NP_LOG_INFO), "reload: proxy %s changed (%s)%s",
              now->cfg.name, what,
              send && registered(old[i])
                  ? "; closing it on the server and registering it again: its open visitors are "
                    "closed"
                  : "");
    if (send && registered(old[i]))
      send_close(cl, old[i],
                 now == NULL ? "removed from the client's configuration"
                             : "changed in the client's configuration");
  }
  for (size_t k = 0; k < n; k++) {
    cproxy *was_px = NULL;
    for (size_t i = 0; i < n_old && was_px == NULL; i++)
      if (strcmp(old[i]->cfg.name, cl->px[k]->cfg.name) == 0)
        was_px = old[i];
    if (was_px == cl->px[k] || (was_px != NULL && cl->px[k]->state != NP_CLIENT_PROXY_CLOSED))
      continue; /* unchanged, or only its local side changed: the server's registration stands */
    if (was_px == NULL)
      np__log(&cl->log, np__client_echo(cl, NP_LOG_INFO), "reload: proxy %s added",
              cl->px[k]->cfg.name);
    if (send && cl->state == C_READY)
      np__client_register(cl, cl->px[k]);
  }
}

/* Would the change need a proxy closed that the server holds? */
static int needs_close(struct np_client *cl, const struct np_config *next, cproxy **nx) {
  for (size_t i = 0; i < cl->cfg.n_proxies; i++) {
    cproxy *old = cl->px[i];
    int kept = 0;
    for (size_t k = 0; k < next->n_proxies && !kept; k++)
      kept = strcmp(nx[k]->cfg.name, old->cfg.name) == 0 &&
             registration_differs(&old->cfg, &cl->cfg, &nx[k]->cfg, next) == NULL;
    if (!kept && registered(old))
      return 1;
  }
  return 0;
}

int np_client_reconfigure(struct np_client *cl, const struct np_config *cfg) {
  cproxy *nx[NP_MAX_PROXIES] = {NULL}, *old[NP_MAX_PROXIES];
  struct np_config *next = NULL, *was = NULL;
  changes c = {.cl = cl};
  size_t n_old;
  int r = 0, live, reconnect = 0;

  cl->reload_err[0] = '\0';
  if (!cl->started || cl->closing)
    return NP_ESTATE;
  if (cfg == NULL || cfg->kind != NP_CONFIG_CLIENT)
    return UV_EINVAL;
  if (cl->set_ops != NULL)
    return cl->set_ops->reconfigure(cl, cfg);
  if ((next = malloc(sizeof(*next))) == NULL || (was = malloc(sizeof(*was))) == NULL) {
    free(next);
    return UV_ENOMEM;
  }
  *next = *cfg;
  *was = cl->cfg;
  if ((r = np_config_validate(next)) != 0) {
    failed(cl, "%s", next->err);
    goto out;
  }
  if (!native(cl) && next->n_proxies != 1) {
    failed(cl, "the line codec carries exactly one service; the file has %zu proxies",
           next->n_proxies);
    r = NP_ECONFIG;
    goto out;
  }
  /* Everything that can fail, before anything changes. */
  if ((r = build_list(cl, next, nx)) != 0) {
    failed(cl, "%s", np_strerror(r));
    goto out;
  }
  if (cl->admin_auth != NULL && (r = cl->admin_auth(cl, next)) != 0) {
    failed(cl, "admin credentials: %s", np_strerror(r));
    for (size_t i = 0; i < next->n_proxies; i++)
      np__cproxy_unref(nx[i]);
    goto out;
  }

  np__config_diff(was, next, on_changed, &c);
  /* The visitors' local ports are bound once, at start (client_visitor.c). */
  if (was->n_visitors != next->n_visitors ||
      memcmp(was->visitors, next->visitors, was->n_visitors * sizeof(was->visitors[0])) != 0)
    np__log(&cl->log, np__client_echo(cl, NP_LOG_WARN),
            "reload: the visitors ([visitor NAME], -L) changed: that takes a restart; the running "
            "ones stay as they were");
  live = cl->state == C_READY && native(cl);
  if (live && needs_close(cl, next, nx) && !(cl->server_caps & NP_HELLO_PROXY_CLOSE)) {
    np__log(&cl->log, NP_LOG_WARN,
            "reload: %s cannot close one proxy of a session (it predates PROXY_CLOSE): "
            "reconnecting to apply the change",
            np__client_label(cl));
    reconnect = 1;
  }
  for (size_t i = 0; i < NP_ARRAY_SIZE(live_keys); i++)
    memcpy((char *)&cl->cfg + live_keys[i].off, (const char *)next + live_keys[i].off,
           live_keys[i].size);
  n_old = cl->cfg.n_proxies;
  memcpy(old, cl->px, n_old * sizeof(old[0]));
  memcpy(cl->cfg.proxies, next->proxies, next->n_proxies * sizeof(next->proxies[0]));
  cl->cfg.n_proxies = next->n_proxies;
  memcpy(cl->px, nx, next->n_proxies * sizeof(nx[0]));
  if (cl->cfg.log_level != was->log_level)
    cl->log.level = (np_log_level)cl->cfg.log_level;
  cl->chunks.pipes.enabled = cl->cfg.relay_splice;

  apply_to_session(cl, was, old, n_old, live && !reconnect);
  for (size_t i = 0; i < n_old; i++)
    np__cproxy_unref(old[i]);
  if (c.list[0] != '\0')
    np__log(&cl->log, np__client_echo(cl, NP_LOG_INFO), "reload: %s changed; in effect from now on",
            c.list);
  np__log(&cl->log, np__client_echo(cl, NP_LOG_INFO), "reload: done, %zu %s configured",
          cl->cfg.n_proxies, np__plural(cl->cfg.n_proxies, "proxy", "proxies"));
  if (reconnect)
    np__client_reconnect(cl, "reconnecting to apply a reload");
  else if (live) {
    np__client_start_ulink(cl);
    np__client_pool_refill(cl);
  }
out:
  explicit_bzero(next, sizeof(*next));
  explicit_bzero(was, sizeof(*was));
  free(next);
  free(was);
  return r;
}

int np_client_reload(struct np_client *cl) {
  struct np_config *fresh;
  char err[600];
  int r;

  cl->reload_err[0] = '\0';
  if (!cl->started || cl->closing)
    return NP_ESTATE;
  if ((r = np__config_reread(&cl->cfg, &fresh, err, sizeof(err))) != 0) {
    failed(cl, "%s", err);
    return r;
  }
  r = np_client_reconfigure(cl, fresh);
  np_config_free(fresh);
  return r;
}
