/* np_server_reload and np_server_reconfigure: a running server takes a new configuration. What a
 * reload changes is for new work (logins, proxies, visitors from now on); what it revokes (a
 * client no longer in the users file or with another token, a port no longer allowed) is closed
 * with the reason logged and told to the client; what only a restart can change (the ports the
 * server itself listens on, TLS, the codec) is kept, with a warning. A configuration with any
 * error changes nothing. docs/config.md, "Reload", is the user's view. */
#include "server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

/* Keys a running server cannot take: its own listeners, its TLS identity, its codec, the frame
 * size its sessions' decoders were made with, the log sink the embedder or tool was given. */
static const char *const restart_keys[] = {
    "bind",
    "codec",
    "tunnel_bind",
    "visit_bind",
    "insecure",
    "tls_cert",
    "tls_key",
    "tls_dir",
    "tls_client_ca",
    "admin_bind",
    "max_frame",
    "mux_max_streams",
    "vhost_http_port",
    "vhost_https_port",
    "log_format",
    "mux_max_window",
    "remember_ports",
    "workers",
    "mux_session_window",
    "mux_server_window",
    "route_store",
    "route_store_password",
    "route_store_user",
    "route_lease",
    "cluster_advertise",
    "cluster_token",
    "cluster_ca",
};

typedef struct changes {
  char list[512]; /* "allow_ports, max_clients" */
  size_t n;
  const struct np_config *was;
  struct np_config *next;
  struct np_server *srv;
} changes;

static int is_restart_key(const char *key) {
  for (size_t i = 0; i < NP_ARRAY_SIZE(restart_keys); i++)
    if (strcmp(restart_keys[i], key) == 0)
      return 1;
  return 0;
}

/* Copy one key's value back from the running configuration (it keeps the value it started with). */
static void keep(struct np_config *next, const struct np_config *was, const char *key) {
#define KEEP(k, f)                                                                                 \
  if (strcmp(key, k) == 0)                                                                         \
    memcpy(&next->f, &was->f, sizeof(next->f));
  KEEP("bind", bind)
  KEEP("codec", codec)
  KEEP("tunnel_bind", tunnel_bind)
  KEEP("visit_bind", visit_bind)
  KEEP("insecure", insecure)
  KEEP("tls_cert", tls_cert)
  KEEP("tls_key", tls_key)
  KEEP("tls_dir", tls_dir)
  KEEP("tls_client_ca", tls_client_ca)
  KEEP("admin_bind", admin_bind)
  KEEP("max_frame", max_frame)
  KEEP("mux_max_streams", mux_max_streams)
  KEEP("vhost_http_port", vhost_http_port)
  KEEP("vhost_https_port", vhost_https_port)
  KEEP("log_format", log_format)
  KEEP("mux_max_window", mux_max_window)
  KEEP("mux_session_window", mux_session_window)
  KEEP("mux_server_window", mux_server_window)
  KEEP("remember_ports", remember_ports)
  KEEP("route_store", route_store)
  KEEP("route_store_password", route_store_password)
  KEEP("route_store_user", route_store_user)
  KEEP("route_lease", route_lease_ms)
  KEEP("cluster_advertise", cluster_advertise)
  KEEP("cluster_token", cluster_token)
  KEEP("cluster_ca", cluster_ca)
#undef KEEP
}

static void on_changed(const char *key, void *arg) {
  changes *c = arg;
  size_t used = strlen(c->list);

  if (is_restart_key(key)) {
    np__log(&c->srv->log, np__server_echo(c->srv, NP_LOG_WARN),
            "reload: %s changed, which takes effect only at a restart; keeping the running value",
            key);
    keep(c->next, c->was, key);
    return;
  }
  c->n++;
  if (used + strlen(key) + 8 < sizeof(c->list))
    snprintf(c->list + used, sizeof(c->list) - used, "%s%s", used > 0 ? ", " : "", key);
}

/* Is px's port still one its client may hold? Named types (HTTP, HTTPS) share the server's port,
 * which allow_ports does not govern. */
static int port_allowed(const struct np_server *srv, const session *s, const proxy *px) {
  const np__ports *mine = np__session_ports(s);

  if (px->type->named)
    return 1;
  return np__ports_allow(mine != NULL && mine->n > 0 ? mine : &srv->cfg.allow_ports, px->port);
}

/* Close what the new configuration revokes: sessions whose name no longer logs in with the token
 * it used, proxies on ports no longer allowed. was_token and was_users: the old configuration's. */
static void revoke_gone(struct np_server *srv, const char *was_token, const np__users *was_users) {
  session *s, *next;

  for (s = srv->sessions; s != NULL; s = next) {
    const char *was, *now;
    proxy *px, *pnext;

    next = s->next;
    if (s->state != S_READY)
      continue;
    was = np__login_token(was_token, was_users, s->name, NULL);
    now = np__login_token(srv->cfg.token, srv->users, s->name, &s->user);
    if (now == NULL || was == NULL || strcmp(was, now) != 0) {
      const char *what = now == NULL       ? "no longer in the users file"
                         : s->user != NULL ? "new token in the users file"
                                           : "the shared token changed";
      if (now == NULL && srv->users == NULL)
        what = "no longer allowed to log in (no token)";
      np__log(&srv->log, NP_LOG_INFO, "client %s: %s, closing its session", s->name, what);
      s->user = NULL;
      np__session_close(s, NP_EAUTH, "credentials revoked by the server");
      /* Closing s may have closed its idle work connections, which could be next. */
      next = srv->sessions;
      continue;
    }
    for (px = s->proxies; px != NULL; px = pnext) {
      pnext = px->next;
      if (!port_allowed(srv, s, px)) {
        char why[96];
        snprintf(why, sizeof(why), "port %d is no longer allowed (allow_ports)", px->port);
        np__proxy_revoke(s, px, NP_EPORTDENIED, why);
      }
    }
  }
}

/* A reload that changes nothing: why, to the log and for the admin API's answer. */
__attribute__((format(printf, 2, 3))) static void failed(struct np_server *srv, const char *fmt,
                                                         ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(srv->reload_err, sizeof(srv->reload_err), fmt, ap);
  va_end(ap);
  np__log(&srv->log, np__server_echo(srv, NP_LOG_ERROR), "reload: %s; nothing changed",
          srv->reload_err);
}

/* The log level follows the file only when the file changed it: an embedder's
 * np_server_set_log stays otherwise. */
static void apply_level(struct np_server *srv, const struct np_config *was) {
  if (srv->cfg.log_level != was->log_level)
    srv->log.level = (np_log_level)srv->cfg.log_level;
}

int np_server_reconfigure(struct np_server *srv, const struct np_config *cfg) {
  struct np_config *was = NULL, *next = NULL;
  np__users *fresh = NULL, *old_users;
  np__cidrs pp;
  changes c;
  char err[600];
  int r;

  srv->reload_err[0] = '\0';
  if (!srv->started || srv->closing || srv->draining) {
    snprintf(srv->reload_err, sizeof(srv->reload_err), "the server is %s",
             srv->draining ? "draining" : "not running");
    return NP_ESTATE;
  }
  if (cfg == NULL || cfg->kind != NP_CONFIG_SERVER)
    return UV_EINVAL;
  if ((next = malloc(sizeof(*next))) == NULL || (was = malloc(sizeof(*was))) == NULL) {
    free(next);
    return UV_ENOMEM;
  }
  *next = *cfg;
  *was = srv->cfg;
  memset(&c, 0, sizeof(c));
  c.was = was;
  c.next = next;
  c.srv = srv;
  np__config_diff(was, next, on_changed, &c);
  /* Validate what will run: the new keys with the restart keys put back. Checked before they were
   * put back, an admin_bind moved to loopback would let admin credentials go while the endpoint
   * still listens on the old, public address. */
  if ((r = np_config_validate(next)) != 0) {
    failed(srv, "%s", next->err);
    goto out;
  }
  /* Everything that can fail, before anything changes. */
  if (next->users_file[0] != '\0' &&
      (r = np__server_load_users(srv, next, &fresh, err, sizeof(err))) != 0) {
    failed(srv, "keeping the users file read before: %s", err);
    goto out;
  }
  memset(&pp, 0, sizeof(pp));
  if (next->proxy_protocol_from[0] != '\0' &&
      (r = np__cidrs_parse(next->proxy_protocol_from, &pp, err, sizeof(err))) != 0) {
    failed(srv, "proxy_protocol_from: %s", err);
    np__users_unref(fresh);
    goto out;
  }
  if (srv->admin_auth != NULL) {
    if ((r = srv->admin_auth(srv, next)) != 0) {
      failed(srv, "admin credentials: %s", np_strerror(r));
      np__users_unref(fresh);
      goto out;
    }
  }

  srv->cfg = *next;
  /* The shared table takes a reference of its own; this server keeps the load's. The old table
   * goes with the last of its references, once revoke_gone has re-pointed the sessions. */
  np__shared_users_set(srv->shared, fresh);
  old_users = srv->users;
  srv->users = fresh;
  srv->pp_from = pp;
  srv->chunks.pipes.enabled = srv->cfg.relay_splice;
  np__shared_backoff_set(srv->shared, srv->cfg.login_backoff_ms, srv->cfg.login_backoff_max_ms);
  if ((was->max_pending != srv->cfg.max_pending ||
       was->max_pending_per_proxy != srv->cfg.max_pending_per_proxy) &&
      np__pool_default_set_limits(srv->pool_ops, srv->pool, srv->cfg.max_pending,
                                  srv->cfg.max_pending_per_proxy) != 0)
    np__log(&srv->log, np__server_echo(srv, NP_LOG_WARN),
            "reload: max_pending and max_pending_per_proxy do not apply to this embedder's pool");
  apply_level(srv, was);
  if (c.n == 0 && fresh == NULL)
    np__log(&srv->log, np__server_echo(srv, NP_LOG_INFO), "reload: the configuration is unchanged");
  else if (c.n > 0)
    np__log(&srv->log, np__server_echo(srv, NP_LOG_INFO),
            "reload: %s changed; in effect for new work", c.list);
  revoke_gone(srv, was->token, old_users);
  np__users_unref(old_users);
out:
  explicit_bzero(next, sizeof(*next));
  explicit_bzero(was, sizeof(*was));
  free(next);
  free(was);
  return r;
}

int np_server_reload(struct np_server *srv) {
  struct np_config *fresh;
  char err[600];
  int r;

  srv->reload_err[0] = '\0';
  if (!srv->started || srv->closing || srv->draining) {
    np__log(&srv->log, np__server_echo(srv, NP_LOG_WARN), "reload: ignored, the server is %s",
            srv->draining ? "draining" : "not running");
    snprintf(srv->reload_err, sizeof(srv->reload_err), "the server is %s",
             srv->draining ? "draining" : "not running");
    return NP_ESTATE;
  }
  /* Worker 0 of a group: the others reread the file too, each on its own thread (whoever asked:
   * SIGHUP or the admin API). */
  if (srv->group_reload != NULL)
    srv->group_reload(srv);
  if ((r = np__config_reread(&srv->cfg, &fresh, err, sizeof(err))) != 0) {
    failed(srv, "%s", err);
    return r;
  }
  r = np_server_reconfigure(srv, fresh);
  np_config_free(fresh);
  return r;
}
