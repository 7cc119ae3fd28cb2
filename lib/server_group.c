/* np_server_group: one server on several event loops (natproxy/server.h; the plan and its reasons
 * are docs/workers-plan.md). Worker 0 is an np_server on the embedder's loop; worker k > 0 one on
 * a loop and thread of its own, started after worker 0 (it binds the port worker 0 got and shares
 * its TLS context) and told what to do through its inbox (inbox.h): close, drain, reload, say its
 * counters. A thread never touches another's handles; the home thread waits on a worker only for
 * its counters, and never longer than GATHER_MS. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_group.h"

#define START_MS 10000 /* a worker that has not started by then is a failed start */

static void group_log(np_log_level level, const char *msg, void *arg) {
  struct np_server_group *g = arg;
  uv_mutex_lock(&g->log_mu);
  g->log_cb(level, msg, g->log_arg);
  uv_mutex_unlock(&g->log_mu);
}

/* ---- a worker's thread -------------------------------------------------------------------- */

static void maybe_done(struct np_server_group *g);

static void run_exit(np__job *j, void *arg) {
  worker *w = NP_CONTAINER_OF(j, worker, exit_job);
  struct np_server *home = w->g->w[0].srv;
  w->exited = 1; /* set here, on the home thread, which alone reads it */
  if (home != NULL && home->drain_hold > 0)
    home->drain_hold--;
  maybe_done(arg);
}

static void drop_exit(np__job *j) {
  (void)j; /* the home inbox closes only once every worker has exited */
}

static worker *worker_of(const struct np_server *srv) {
  return &srv->group->w[srv->widx];
}

static void worker_srv_closed(struct np_server *srv) {
  worker *w = worker_of(srv);
  w->srv = NULL;
  np__inbox_close(&w->in, NULL); /* the loop's last handle: uv_run returns */
}

static void report(worker *w, int err) {
  uv_mutex_lock(&w->g->mu);
  w->start_err = err;
  w->reported = 1;
  uv_cond_signal(&w->g->cond);
  uv_mutex_unlock(&w->g->mu);
}

static int worker_make(worker *w) {
  struct np_server_group *g = w->g;
  int r;

  if ((r = np_server_new(&w->own, &g->cfg, &w->srv)) != 0)
    return r;
  np_server_set_log(w->srv, g->level, group_log, g);
  np__server_join_group(w->srv, g, w->widx, g->shared, g->w[0].srv->tls);
  np__group_hooks_set(w->srv, w->widx);
  return np_server_start(w->srv);
}

static void worker_main(void *arg) {
  worker *w = arg;
  struct np_server_group *g = w->g;
  char name[16];
  int r;

  snprintf(name, sizeof(name), "np-w%u", w->widx);
  pthread_setname_np(pthread_self(), name);
  r = worker_make(w);
  report(w, r);
  if (r != 0) {
    if (w->srv != NULL)
      np_server_close(w->srv, worker_srv_closed);
    else
      np__inbox_close(&w->in, NULL);
  }
  uv_run(&w->own, UV_RUN_DEFAULT);
  if (uv_loop_close(&w->own) != 0)
    fprintf(stderr, "np-server: worker %u ended with handles open\n", w->widx); /* a bug */
  /* Told last: once the home has it, it may free the group. It cannot fail: the home inbox
   * closes only after every worker's exit came. */
  np__inbox_post(&g->home_in, &w->exit_job);
}

/* ---- jobs for a worker -------------------------------------------------------------------- */

typedef struct {
  np__job job;
  int kind; /* 'c' close, 'd' drain, 'r' reload */
  uint64_t timeout_ms;
} ctl_job;

static void run_ctl(np__job *j, void *arg) {
  ctl_job *c = (ctl_job *)j;
  worker *w = arg;
  if (w->srv != NULL) {
    if (c->kind == 'r')
      np_server_reload(w->srv);
    else if (c->kind == 'd')
      np_server_drain(w->srv, c->timeout_ms, worker_srv_closed);
    else
      np_server_close(w->srv, worker_srv_closed);
  }
  free(c);
}

static void drop_ctl(np__job *j) {
  free(j);
}

static void tell_workers(struct np_server_group *g, int kind, uint64_t timeout_ms) {
  for (unsigned k = 1; k < g->n; k++) {
    ctl_job *c;
    if (!g->w[k].inbox_made || (c = calloc(1, sizeof(*c))) == NULL)
      continue;
    *c = (ctl_job){
        .job = {.run = run_ctl, .drop = drop_ctl}, .kind = kind, .timeout_ms = timeout_ms};
    if (np__inbox_post(&g->w[k].in, &c->job) != 0)
      free(c); /* its inbox is closed: it is on its way out already */
  }
}

/* Worker 0's reload (SIGHUP or the admin API) is every worker's. */
static void group_reload(struct np_server *srv) {
  tell_workers(srv->group, 'r', 0);
}

/* ---- the group ---------------------------------------------------------------------------- */

int np_server_group_new(uv_loop_t *loop, const struct np_config *cfg,
                        struct np_server_group **out) {
  struct np_server_group *g;
  unsigned n;
  int r;

  if (loop == NULL || cfg == NULL || cfg->kind != NP_CONFIG_SERVER)
    return UV_EINVAL;
  if ((g = calloc(1, sizeof(*g))) == NULL)
    return UV_ENOMEM;
  g->home = loop;
  g->home_thread = pthread_self();
  g->cfg = *cfg;
  if (np_config_validate(&g->cfg) != 0) {
    free(g);
    return NP_ECONFIG;
  }
  /* 0 means one per core, but the line codec's fixed ports are bound once: it gets one loop. */
  if (g->cfg.workers != 0)
    n = (unsigned)g->cfg.workers;
  else
    n = strcmp(g->cfg.codec, "line") == 0 ? 1 : uv_available_parallelism();
  g->n = n < 1 ? 1 : n > NP_SERVER_WORKERS_MAX ? NP_SERVER_WORKERS_MAX : n;
  g->level = (np_log_level)cfg->log_level;
  g->log_cb = np_log_stderr_for((np_log_format)cfg->log_format);
  if ((g->w = calloc(g->n, sizeof(*g->w))) == NULL)
    goto nomem;
  if (np__shared_new(g->cfg.login_backoff_ms, g->cfg.login_backoff_max_ms, &g->shared) != 0)
    goto nomem;
  if (uv_mutex_init(&g->mu) != 0 || uv_cond_init(&g->cond) != 0 || uv_mutex_init(&g->log_mu) != 0)
    abort(); /* glibc's never fail */
  if ((r = np__inbox_init(&g->home_in, loop, g)) != 0)
    abort(); /* an eventfd: only when descriptors ran out at startup */
  for (unsigned k = 0; k < g->n; k++)
    g->w[k] = (worker){.g = g, .widx = k, .exit_job = {.run = run_exit, .drop = drop_exit}};
  atomic_store(&g->w[0].inbox_open, 1); /* the home inbox */
  if ((r = np_server_new(loop, &g->cfg, &g->w[0].srv)) != 0) {
    np_server_group_close(g, NULL);
    return r;
  }
  np_server_set_log(g->w[0].srv, g->level, g->n > 1 ? group_log : g->log_cb,
                    g->n > 1 ? g : g->log_arg);
  np__server_join_group(g->w[0].srv, g, 0, g->shared, NULL);
  if (g->n > 1) {
    np__group_hooks_set(g->w[0].srv, 0);
    g->w[0].srv->group_reload = group_reload;
  }
  *out = g;
  return 0;

nomem:
  free(g->w);
  free(g);
  return UV_ENOMEM;
}

void np_server_group_set_log(struct np_server_group *g, np_log_level level, np_log_cb cb,
                             void *arg) {
  g->level = level;
  g->log_cb = cb != NULL ? cb : np_log_stderr;
  g->log_arg = arg;
  if (g->w[0].srv != NULL)
    np_server_set_log(g->w[0].srv, level, g->n > 1 ? group_log : g->log_cb,
                      g->n > 1 ? g : g->log_arg);
}

int np_server_group_start(struct np_server_group *g) {
  sigset_t all, old;
  char host[NP_HOSTPORT_MAX];
  int r, port;

  if (g->started || g->closing)
    return NP_ESTATE;
  g->started = 1;
  if ((r = np_server_start(g->w[0].srv)) != 0)
    return r;
  if (g->n == 1)
    goto started;
  /* The others bind the port worker 0 got (bind's may be 0). */
  np__split_hostport(g->cfg.bind, host, sizeof(host), &port);
  snprintf(g->cfg.bind, sizeof(g->cfg.bind), strchr(host, ':') != NULL ? "[%s]:%d" : "%s:%d", host,
           np_server_port(g->w[0].srv));
  /* Signals stay with the home thread: the workers' threads start with every one blocked. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (unsigned k = 1; k < g->n && r == 0; k++) {
    worker *w = &g->w[k];
    uint64_t deadline = uv_hrtime() + (uint64_t)START_MS * 1000000u;
    /* Its loop and inbox are made here, before any thread can post to them; the loop runs on
     * its thread from then on. */
    if ((r = uv_loop_init(&w->own)) != 0)
      break;
    if ((r = np__inbox_init(&w->in, &w->own, w)) != 0) {
      uv_loop_close(&w->own);
      break;
    }
    w->inbox_made = 1;
    /* One at a time, so worker k is the k-th socket on the port. */
    if ((r = uv_thread_create(&w->thread, worker_main, w)) != 0) {
      np__inbox_close(&w->in, NULL);
      uv_run(&w->own, UV_RUN_DEFAULT);
      uv_loop_close(&w->own);
      w->inbox_made = 0;
      np__inbox_destroy(&w->in);
      break;
    }
    w->running = 1;
    atomic_store(&w->inbox_open, 1); /* only now: a failed start destroys it unseen */
    uv_mutex_lock(&g->mu);
    while (!w->reported && uv_hrtime() < deadline)
      uv_cond_timedwait(&g->cond, &g->mu, deadline - uv_hrtime());
    r = w->reported ? w->start_err : UV_ETIMEDOUT;
    uv_mutex_unlock(&g->mu);
    if (r != 0)
      np__log(&g->w[0].srv->log, NP_LOG_ERROR, "worker %u did not start: %s", k, np_strerror(r));
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
started:
  /* The last line of a start (tests wait for it): what workers = 0 came to. */
  if (r == 0)
    np__log(&g->w[0].srv->log, NP_LOG_INFO, "%u %s on port %d", g->n,
            np__plural(g->n, "worker", "workers"), np_server_port(g->w[0].srv));
  return r;
}

unsigned np_server_group_workers(const struct np_server_group *g) {
  return g->n;
}

struct np_server *np_server_group_home(const struct np_server_group *g) {
  return g->w[0].srv;
}

void np_server_group_get_stats(const struct np_server_group *g, np_server_stats *out, size_t size) {
  np_server_get_stats(g->w[0].srv, out, size);
}

void np_server_group_reload(struct np_server_group *g) {
  if (g->w[0].srv != NULL)
    np_server_reload(g->w[0].srv); /* which tells the others (group_reload) */
}

static void on_home_closed(np__inbox *in) {
  struct np_server_group *g = NP_CONTAINER_OF(in, struct np_server_group, home_in);
  for (unsigned k = 1; k < g->n; k++)
    if (g->w[k].inbox_made)
      np__inbox_destroy(&g->w[k].in);
  np__inbox_destroy(&g->home_in);
  if (g->close_cb != NULL)
    g->close_cb(g);
  np__shared_free(g->shared);
  uv_mutex_destroy(&g->mu);
  uv_cond_destroy(&g->cond);
  uv_mutex_destroy(&g->log_mu);
  explicit_bzero(&g->cfg, sizeof(g->cfg)); /* tokens */
  free(g->w);
  free(g);
}

/* Everything is gone once worker 0's server closed and every thread was joined. */
static void maybe_done(struct np_server_group *g) {
  if (!g->closing || g->home_closed || g->w[0].srv != NULL)
    return;
  for (unsigned k = 1; k < g->n; k++) {
    worker *w = &g->w[k];
    if (w->running && !w->exited)
      return;
  }
  for (unsigned k = 1; k < g->n; k++) {
    worker *w = &g->w[k];
    if (w->running) {
      w->running = 0;
      uv_thread_join(&w->thread); /* it said its last word: this returns at once */
    }
  }
  g->home_closed = 1;
  np__inbox_close(&g->home_in, on_home_closed);
}

static void w0_closed(struct np_server *srv) {
  worker *w = worker_of(srv);
  w->srv = NULL;
  maybe_done(w->g);
}

static void end(struct np_server_group *g, int drain, uint64_t timeout_ms,
                np_server_group_close_cb cb) {
  if (g->closing) {
    /* A second signal: whatever is still draining closes now. */
    if (drain) {
      tell_workers(g, 'd', 0);
      if (g->w[0].srv != NULL)
        np_server_drain(g->w[0].srv, 0, w0_closed);
    }
    return;
  }
  g->closing = 1;
  g->close_cb = cb;
  tell_workers(g, drain ? 'd' : 'c', timeout_ms);
  if (drain && g->w[0].srv != NULL)
    for (unsigned k = 1; k < g->n; k++)
      g->w[0].srv->drain_hold += g->w[k].running && !g->w[k].exited;
  if (g->w[0].srv == NULL)
    maybe_done(g);
  else if (drain)
    np_server_drain(g->w[0].srv, timeout_ms, w0_closed);
  else
    np_server_close(g->w[0].srv, w0_closed);
}

void np_server_group_drain(struct np_server_group *g, uint64_t timeout_ms,
                           np_server_group_close_cb cb) {
  end(g, 1, timeout_ms, cb);
}

void np_server_group_close(struct np_server_group *g, np_server_group_close_cb cb) {
  end(g, 0, 0, cb);
}

void *np_server_group_get_data(const struct np_server_group *g) {
  return g->data;
}

void np_server_group_set_data(struct np_server_group *g, void *data) {
  g->data = data;
}
