/* A client of several servers (server = a.example.org, b.example.org): one member client per
 * server, on the same loop, each with its own session, registrations, back-off, work connections
 * and datagram path, as if it ran alone; and this set in front of them, which the public API sees.
 * The set forwards the members' events, and its state, counters and proxies are the members' taken
 * together (docs/config.md, "Several servers"). A server that goes away takes only its member's
 * visitors with it; the others keep serving. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"

static void close_members_now(struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++) {
    if (set->members[i] == NULL)
      continue;
    set->members[i]->parent = NULL; /* not started: freed at once, nobody to tell */
    np_client_close(set->members[i], NULL);
    set->members[i] = NULL;
  }
  set->n_members = 0;
}

static const np__client_set_ops set_ops;
static void spread(struct np_client *set);

/* Counters are all uint64_t (natproxy/stats.h): the members' add up word by word. */
static void add_counters(void *to, const void *from, size_t size) {
  uint64_t *t = to;
  const uint64_t *f = from;
  for (size_t k = 0; k < size / sizeof(uint64_t); k++)
    t[k] += f[k];
}

int np__client_set_new(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out) {
  char(*servers)[NP_HOSTPORT_MAX] = NULL;
  struct np_config *one = NULL;
  struct np_client *set;
  size_t n;
  int r;

  if ((r = np__client_create(loop, cfg, &set)) != 0)
    return r;
  set->set_ops = &set_ops;
  servers = malloc(NP_MAX_SERVERS * sizeof(*servers));
  one = malloc(sizeof(*one));
  if (servers == NULL || one == NULL) {
    r = UV_ENOMEM;
    goto out;
  }
  n = np__config_servers(set->cfg.server, servers, NP_MAX_SERVERS);
  for (size_t i = 0; i < n && i < NP_MAX_SERVERS; i++) {
    struct np_client *m;
    *one = set->cfg;
    np__strlcpy(one->server, servers[i], sizeof(one->server));
    if ((r = np__client_create(loop, one, &m)) != 0)
      break;
    m->parent = set;
    set->members[set->n_members++] = m;
  }
  spread(set);
out:
  if (one != NULL)
    OPENSSL_cleanse(one, sizeof(*one)); /* tokens */
  free(one);
  free(servers);
  if (r != 0) {
    close_members_now(set);
    np_client_close(set, NULL); /* not started: freed at once */
    return r;
  }
  *out = set;
  return 0;
}

static void spread(struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++) {
    if (set->members[i] != NULL) {
      set->members[i]->codec = set->codec;
      set->members[i]->log = set->log;
    }
  }
}

/* ---- events ---------------------------------------------------------------------------------- */

static int all_stopped(const struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++)
    if (set->members[i] != NULL && set->members[i]->state != C_FATAL)
      return 0;
  return 1;
}

static void set_event(struct np_client *m, const np_client_event *ev) {
  struct np_client *set = m->parent;
  np_client_event out = *ev;

  if (ev->type == NP_CLIENT_FATAL && !all_stopped(set)) {
    /* The member said why at error level; the client as a whole goes on. */
    np__log(&set->log, NP_LOG_WARN, "%s: stopped trying this server; the others still serve",
            m->cfg.server);
    return;
  }
  /* Which server a proxy got its port on, or a session came up with. */
  if ((ev->type == NP_CLIENT_PROXY_READY || ev->type == NP_CLIENT_LOGGED_IN) && ev->text == NULL)
    out.text = m->cfg.server;
  if (set->event_cb != NULL)
    set->event_cb(set, &out);
}

/* ---- the members taken together -------------------------------------------------------------- */

/* How far a session got, best first: the set is as far as its furthest member. */
static int rank(enum cstate s) {
  switch (s) {
  case C_READY:
    return 0;
  case C_LOGIN:
  case C_HELLO:
    return 1;
  case C_DIALING:
    return 2;
  case C_BACKOFF:
    return 3;
  case C_IDLE:
    return 4;
  default:
    return 5; /* C_FATAL */
  }
}

const struct np_client *np__client_lead(const struct np_client *cl) {
  const struct np_client *best = NULL;

  if (cl->n_members == 0)
    return cl;
  for (size_t i = 0; i < cl->n_members; i++) {
    const struct np_client *m = cl->members[i];
    if (m != NULL && (best == NULL || rank(m->state) < rank(best->state)))
      best = m;
  }
  return best != NULL ? best : cl;
}

static void set_stats(const struct np_client *set, np_client_stats *sum) {
  memset(sum, 0, sizeof(*sum));
  for (size_t i = 0; i < set->n_members; i++) {
    np_client_stats st;
    if (set->members[i] == NULL)
      continue;
    np_client_get_stats(set->members[i], &st, sizeof(st));
    add_counters(sum, &st, sizeof(st));
  }
}

/* A proxy of the set: open if any server opened it (its port there), else pending if any still
 * has to answer, else refused if any refused it (that server's reason); the members' counters
 * added up. */
static void gather(const struct np_client *set, cproxy *view) {
  static const int order[] = {NP_CLIENT_PROXY_OK, NP_CLIENT_PROXY_PENDING, NP_CLIENT_PROXY_REFUSED};
  const cproxy *found[NP_MAX_SERVERS] = {NULL};

  memset(&view->stats, 0, sizeof(view->stats));
  view->state = NP_CLIENT_PROXY_CLOSED;
  view->port = 0;
  view->status = 0;
  view->error[0] = '\0';
  for (size_t i = 0; i < set->n_members; i++) {
    if (set->members[i] == NULL)
      continue;
    found[i] = np__client_find_proxy(set->members[i], view->cfg.name);
    if (found[i] != NULL)
      add_counters(&view->stats, &found[i]->stats, sizeof(view->stats));
  }
  for (size_t o = 0; o < NP_ARRAY_SIZE(order); o++) {
    for (size_t i = 0; i < set->n_members; i++) {
      if (found[i] == NULL || (int)found[i]->state != order[o])
        continue;
      view->state = found[i]->state;
      view->port = found[i]->port;
      view->status = found[i]->status;
      memcpy(view->error, found[i]->error, sizeof(view->error));
      return;
    }
  }
}

static int set_foreach(const struct np_client *set, np_client_proxy_cb cb, void *arg) {
  int r = 0;
  for (size_t i = 0; i < set->cfg.n_proxies && r == 0; i++) {
    gather(set, set->px[i]); /* the set's own proxies are only this view */
    r = cb(set->px[i], arg);
  }
  return r;
}

/* ---- life ------------------------------------------------------------------------------------ */

static int set_start(struct np_client *set) {
  int r;

  if (set->admin_start != NULL && (r = set->admin_start(set)) != 0)
    return r;
  set->started = 1;
  for (size_t i = 0; i < set->n_members; i++)
    if ((r = np_client_start(set->members[i])) != 0)
      return r; /* the caller closes the client, and with it the members started so far */
  return 0;
}

static void on_member_closed(struct np_client *m) {
  struct np_client *set = m->parent;

  for (size_t i = 0; i < set->n_members; i++)
    if (set->members[i] == m)
      set->members[i] = NULL;
  /* Draining: the set closes once its last member has. */
  if (set->draining && !set->closing) {
    size_t left = 0;
    for (size_t i = 0; i < set->n_members; i++)
      left += set->members[i] != NULL;
    if (left == 0)
      np_client_close(set, set->drain_cb);
  }
  np__client_unref(set);
}

static void set_close(struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    if (m == NULL || m->closing)
      continue;
    if (m->draining) {
      np_client_drain(m, 0, on_member_closed); /* a drain under way ends now; it holds a ref */
      continue;
    }
    set->refs++; /* until on_member_closed */
    np_client_close(m, on_member_closed);
  }
}

static void set_drain(struct np_client *set, uint64_t timeout_ms) {
  size_t left = 0;

  set->draining = 1;
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    if (m != NULL && !m->closing && !m->draining) {
      left++;
      set->refs++; /* until on_member_closed */
      np_client_drain(m, timeout_ms, on_member_closed);
    }
  }
  if (left == 0)
    np_client_close(set, set->drain_cb);
}

size_t np__client_sessions(const struct np_client *cl, const struct np_client **out, size_t max) {
  size_t n = 0;

  if (cl->n_members == 0) {
    out[0] = cl;
    return 1;
  }
  for (size_t i = 0; i < cl->n_members && n < max; i++)
    if (cl->members[i] != NULL)
      out[n++] = cl->members[i];
  return n;
}

/* ---- reload ---------------------------------------------------------------------------------- */

static int set_reconfigure(struct np_client *set, const struct np_config *cfg) {
  struct np_config *next = malloc(sizeof(*next)), *one = malloc(sizeof(*one));
  cproxy *nx[NP_MAX_PROXIES] = {NULL};
  int r = 0;

  if (next == NULL || one == NULL) {
    r = UV_ENOMEM;
    goto out;
  }
  *next = *cfg;
  if ((r = np_config_validate(next)) != 0) {
    snprintf(set->reload_err, sizeof(set->reload_err), "%s", next->err);
    np__log(&set->log, NP_LOG_ERROR, "reload: %s; nothing changed", set->reload_err);
    goto out;
  }
  for (size_t i = 0; i < next->n_proxies; i++) {
    if ((r = np__cproxy_new(&next->proxies[i], &nx[i])) != 0) {
      while (i-- > 0)
        np__cproxy_unref(nx[i]);
      goto out;
    }
  }
  if (set->admin_auth != NULL && (r = set->admin_auth(set, next)) != 0) {
    snprintf(set->reload_err, sizeof(set->reload_err), "admin credentials: %s", np_strerror(r));
    np__log(&set->log, NP_LOG_ERROR, "reload: %s; nothing changed", set->reload_err);
    for (size_t i = 0; i < next->n_proxies; i++)
      np__cproxy_unref(nx[i]);
    goto out;
  }
  if (strcmp(next->server, set->cfg.server) != 0)
    np__log(&set->log, NP_LOG_WARN,
            "reload: server changed, which takes effect only at a restart; keeping the running "
            "value");
  np__strlcpy(next->server, set->cfg.server, sizeof(next->server));
  /* The configuration was checked above, so each member takes it as the first did: a member that
   * still fails (out of memory) keeps its running configuration, and its error is the set's. */
  for (size_t i = 0; i < set->n_members; i++) {
    int e;
    if (set->members[i] == NULL)
      continue;
    *one = *next;
    np__strlcpy(one->server, set->members[i]->cfg.server, sizeof(one->server));
    if ((e = np_client_reconfigure(set->members[i], one)) != 0 && r == 0) {
      r = e;
      memcpy(set->reload_err, set->members[i]->reload_err, sizeof(set->reload_err));
    }
  }
  for (size_t i = 0; i < set->cfg.n_proxies; i++)
    np__cproxy_unref(set->px[i]);
  memcpy(set->px, nx, sizeof(nx));
  set->log.level = (np_log_level)next->log_level;
  spread(set);
  OPENSSL_cleanse(&set->cfg, sizeof(set->cfg));
  set->cfg = *next;
out:
  if (next != NULL)
    OPENSSL_cleanse(next, sizeof(*next));
  if (one != NULL)
    OPENSSL_cleanse(one, sizeof(*one));
  free(next);
  free(one);
  return r;
}

static const np__client_set_ops set_ops = {
    .start = set_start,
    .close = set_close,
    .drain = set_drain,
    .reconfigure = set_reconfigure,
    .stats = set_stats,
    .foreach = set_foreach,
    .lead = np__client_lead,
    .event = set_event,
    .spread = spread,
};
