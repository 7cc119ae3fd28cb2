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

#include "conn_move.h"
#include "inbox.h"
#include "server.h"
#include "udp_path.h"

#define START_MS  10000 /* a worker that has not started by then is a failed start */
#define GATHER_MS 1000  /* how long the home waits for a worker's counters */
/* Bytes of datagram-path packets handed to one worker and not yet taken: a flood of packets the
 * steering misses (forged ids, or no cBPF) holds at most this much on their way. */
#define UDP_HELD_MAX (8u << 20)

typedef struct worker {
  struct np_server_group *g;
  unsigned widx;
  uv_loop_t own; /* k > 0 */
  uv_thread_t thread;
  np__inbox in;     /* k > 0, made on its thread */
  np__job exit_job; /* k > 0: its last word, posted to the home when its loop has ended */
  struct np_server *srv;
  int start_err;
  /* Plain ints, not bit-fields: the worker's thread writes reported and inbox_made (under the
   * group's mu, before the home reads them), the home the others. */
  int reported;                    /* the worker's */
  int inbox_made, running, exited; /* the home's */
  /* Other workers read these: whether its inbox may be posted to (its loop and inbox exist: k = 0,
   * or set by the home before its thread starts), and the bytes of packets queued for it. */
  atomic_int inbox_open;
  atomic_size_t udp_held;
} worker;

struct np_server_group {
  uv_loop_t *home;
  pthread_t home_thread; /* for its CPU time */
  struct np_config cfg;  /* the workers' (bind set to worker 0's port once it has one) */
  unsigned n;
  worker *w;
  np__shared *shared;
  np__inbox home_in; /* workers' exits */
  uv_mutex_t mu;     /* start reports */
  uv_cond_t cond;
  uv_mutex_t log_mu; /* one log line at a time, whatever thread writes it */
  np_log_level level;
  np_log_cb log_cb;
  void *log_arg;
  np_server_group_close_cb close_cb;
  void *data;
  unsigned started : 1, closing : 1, home_closed : 1;
};

static void group_log(np_log_level level, const char *msg, void *arg) {
  struct np_server_group *g = arg;
  uv_mutex_lock(&g->log_mu);
  g->log_cb(level, msg, g->log_arg);
  uv_mutex_unlock(&g->log_mu);
}

/* ---- asking every other worker (counters, clients, first-byte waits) ----------------------- */

/* One worker's answer, written into its slot of the round's room on its own thread. q: the
 * question ("" when there is none). */
typedef void (*ask_fn)(struct np_server *srv, void *slot, const char *q);

/* The head of an asking round's room; the slots follow, one per worker past 0. */
typedef struct {
  unsigned n;
  size_t slot_size;
  void (*clear)(void *slot); /* frees what an answer left in its slot, or NULL */
  char q[32];                /* kept here: an answer may run after the asker stopped waiting */
} ask_head;

#define ASK_HEAD ((sizeof(ask_head) + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1))

typedef struct {
  np__job job;
  worker *to;
  np__round *r;
  unsigned slot;
  ask_fn fn;
} ask_job;

static void *ask_slot(np__round *r, unsigned k) {
  ask_head *h = np__round_data(r);
  return (char *)h + ASK_HEAD + (size_t)k * h->slot_size;
}

static void free_asked(void *data) {
  ask_head *h = data;
  if (h->clear != NULL)
    for (unsigned k = 0; k < h->n; k++)
      h->clear((char *)data + ASK_HEAD + (size_t)k * h->slot_size);
}

static void run_ask(np__job *j, void *arg) {
  ask_job *aj = (ask_job *)j;
  (void)arg;
  if (aj->to->srv != NULL)
    aj->fn(aj->to->srv, ask_slot(aj->r, aj->slot), ((ask_head *)np__round_data(aj->r))->q);
  np__round_done(aj->r);
  free(aj);
}

static void drop_ask(np__job *j) {
  ask_job *aj = (ask_job *)j;
  np__round_abandon(aj->r);
  free(aj);
}

/* Ask every worker past 0 fn(q) on its own thread, each answering into a zeroed slot of slot_size
 * bytes, and wait up to GATHER_MS. Returns the round (read it with ask_slot, then
 * np__round_release it) when every worker answered in time; else NULL, logged for what (the
 * caller then shows worker 0's own figures rather than a partial sum). */
static np__round *ask_others(const struct np_server *srv, const char *what, ask_fn fn,
                             const char *q, size_t slot_size, void (*clear)(void *)) {
  struct np_server_group *g = srv->group;
  unsigned others = g->n - 1;
  np__round *r;
  ask_head *h;

  if (others == 0 || (q != NULL && strlen(q) >= sizeof(h->q)) ||
      (r = np__round_new(others, ASK_HEAD + others * slot_size, free_asked)) == NULL)
    return NULL;
  h = np__round_data(r);
  *h = (ask_head){.n = others, .slot_size = slot_size, .clear = clear};
  if (q != NULL)
    strcpy(h->q, q);
  for (unsigned k = 1; k < g->n; k++) {
    ask_job *aj = calloc(1, sizeof(*aj));
    if (aj == NULL || !g->w[k].inbox_made) {
      free(aj);
      np__round_abandon(r);
      continue;
    }
    *aj = (ask_job){
        .job = {.run = run_ask, .drop = drop_ask}, .to = &g->w[k], .r = r, .slot = k - 1, .fn = fn};
    if (np__inbox_post(&g->w[k].in, &aj->job) != 0) {
      free(aj);
      np__round_abandon(r);
    }
  }
  if (np__round_wait(r, GATHER_MS) == 0)
    return r;
  /* A worker that is stuck or gone. */
  np__log(&srv->log, NP_LOG_WARN,
          "%s: %u of %u workers answered within %d ms; showing worker 0's only", what,
          np__round_answered(r), others, GATHER_MS);
  np__round_release(r);
  return NULL;
}

/* ---- counters ----------------------------------------------------------------------------- */

static void ask_stats(struct np_server *srv, void *slot, const char *q) {
  (void)q;
  np__server_get_stats_local(srv, slot);
}

/* Worker 0's np_server_get_stats: every counter is a sum or a gauge of things that add up. */
static void group_stats(const struct np_server *srv, np_server_stats *out) {
  np__round *r;

  np__server_get_stats_local(srv, out);
  if ((r = ask_others(srv, "counters", ask_stats, NULL, sizeof(*out), NULL)) == NULL)
    return;
  for (unsigned k = 0; k < srv->group->n - 1; k++) {
    const uint64_t *add = ask_slot(r, k);
    uint64_t *sum = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
      sum[i] += add[i];
  }
  np__round_release(r);
}

/* ---- connections handed to their session's worker ---------------------------------------- */

typedef struct {
  np__job job;
  worker *to;
  int table; /* -1: a work connection; else a vhost visitor's (NP_ROUTES_*) */
  unsigned hops;
  np__moved m;
} move_job;

static void run_move(np__job *j, void *arg) {
  move_job *mj = (move_job *)j;
  worker *w = mj->to;
  (void)arg;
  if (w->srv == NULL)
    np__moved_free(&mj->m);
  else if (mj->table < 0)
    np__server_adopt(w->srv, &mj->m);
  else
    np__server_adopt_visitor(w->srv, mj->table, mj->hops, &mj->m);
  free(mj);
}

static void drop_move(np__job *j) {
  move_job *mj = (move_job *)j;
  np__moved_free(&mj->m); /* the peer sees its connection end */
  free(mj);
}

/* Worker widx's inbox, for a job a peer caused on another thread; NULL when there is no such
 * worker, or it has not started yet (a forged session id during the start). */
static np__inbox *peer_inbox(struct np_server_group *g, unsigned widx) {
  if (widx >= g->n || !atomic_load(&g->w[widx].inbox_open))
    return NULL;
  return widx == 0 ? &g->home_in : &g->w[widx].in;
}

/* A connection to worker widx's thread: a work connection (table -1) or a vhost visitor. */
static int post_move(struct np_server *srv, unsigned widx, int table, unsigned hops, np__moved *m) {
  struct np_server_group *g = srv->group;
  np__inbox *in = peer_inbox(g, widx);
  move_job *mj;
  worker *to;
  int r;

  if (in == NULL)
    return UV_EINVAL; /* a session id no worker gave: the WORK is a lie */
  to = &g->w[widx];
  if ((mj = calloc(1, sizeof(*mj))) == NULL)
    return UV_ENOMEM;
  mj->job = (np__job){.run = run_move, .drop = drop_move, .peer = 1};
  mj->to = to;
  mj->table = table;
  mj->hops = hops;
  mj->m = *m;
  if ((r = np__inbox_post(in, &mj->job)) != 0) {
    free(mj);
    return r;
  }
  np__moved_init(m); /* the job's now */
  return 0;
}

/* ---- datagram-path packets that reached another worker's socket -------------------------- */

typedef struct {
  np__job job;
  worker *to;
  struct sockaddr_storage from;
  size_t len;
  char pkt[];
} udp_job;

static void run_udp(np__job *j, void *arg) {
  udp_job *uj = (udp_job *)j;
  (void)arg;
  atomic_fetch_sub(&uj->to->udp_held, uj->len);
  if (uj->to->srv != NULL)
    np__upath_deliver(uj->to->srv, uj->pkt, uj->len, (struct sockaddr *)&uj->from);
  free(uj);
}

static void drop_udp(np__job *j) {
  udp_job *uj = (udp_job *)j;
  atomic_fetch_sub(&uj->to->udp_held, uj->len);
  free(uj); /* UDP: the sender's problem, as a full socket buffer would have been */
}

/* Any worker's group_udp: a copy of the packet and its source, to worker widx's thread. */
static int group_udp(struct np_server *srv, unsigned widx, const char *pkt, size_t len,
                     const struct sockaddr *from) {
  np__inbox *in = peer_inbox(srv->group, widx);
  udp_job *uj;
  worker *to;
  int r;

  if (in == NULL)
    return UV_EINVAL;
  to = &srv->group->w[widx];
  if (atomic_fetch_add(&to->udp_held, len) + len > UDP_HELD_MAX) {
    atomic_fetch_sub(&to->udp_held, len);
    return UV_ENOBUFS;
  }
  if ((uj = malloc(sizeof(*uj) + len)) == NULL) {
    atomic_fetch_sub(&to->udp_held, len);
    return UV_ENOMEM;
  }
  /* A peer's doing, so bounded like the moves (and by UDP_HELD_MAX in bytes). */
  uj->job = (np__job){.run = run_udp, .drop = drop_udp, .peer = 1};
  uj->to = to;
  uj->len = len;
  memcpy(&uj->from, from,
         from->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
  memcpy(uj->pkt, pkt, len);
  if ((r = np__inbox_post(in, &uj->job)) != 0) {
    atomic_fetch_sub(&to->udp_held, len);
    free(uj);
  }
  return r;
}

/* Any worker's group_move: from its own thread, to worker widx's. */
static int group_move(struct np_server *srv, unsigned widx, np__moved *m) {
  return post_move(srv, widx, -1, 0, m);
}

/* Any worker's group_visitor: a vhost visitor to the worker that owns its route. */
static int group_visitor(struct np_server *srv, unsigned widx, int table, unsigned hops,
                         np__moved *m) {
  return post_move(srv, widx, table, hops, m);
}

static void drop_free(np__job *j) {
  free(j);
}

/* ---- a client name wanted by a login on another worker ------------------------------------ */

typedef struct {
  np__job job;
  worker *to;
  np__claim c;
} claim_job;

static void run_claim(np__job *j, void *arg) {
  claim_job *cj = (claim_job *)j;
  (void)arg;
  if (cj->to->srv != NULL)
    np__login_claim(cj->to->srv, &cj->c);
  free(cj);
}

static int group_claim(struct np_server *srv, unsigned widx, const np__claim *c) {
  struct np_server_group *g = srv->group;
  np__inbox *in = peer_inbox(g, widx);
  claim_job *cj;
  int r;

  if (in == NULL)
    return UV_EINVAL;
  if ((cj = calloc(1, sizeof(*cj))) == NULL)
    return UV_ENOMEM;
  /* A peer's doing (a login), so bounded like the moves. */
  cj->job = (np__job){.run = run_claim, .drop = drop_free, .peer = 1};
  cj->to = &g->w[widx];
  cj->c = *c;
  if ((r = np__inbox_post(in, &cj->job)) != 0)
    free(cj);
  return r;
}

/* ---- the clients of every worker (the admin API's list, /metrics, SIGUSR1) ---------------- */

typedef struct {
  np__client_snap *c;
  size_t n, cap;
  int failed;
} snaps;

static void clear_snaps(void *slot) {
  snaps *sn = slot;
  for (size_t i = 0; i < sn->n; i++)
    np__client_snap_clear(&sn->c[i]);
  free(sn->c);
}

/* A deep copy: the walk clears its snapshot once the callback returns. */
static int keep_snap(const np_server_client *c, void *arg) {
  const np__client_snap *from = (const np__client_snap *)c;
  snaps *to = arg;
  np__client_snap *d;

  if (to->n == to->cap) {
    size_t cap = to->cap ? 2 * to->cap : 16;
    np__client_snap *n = realloc(to->c, cap * sizeof(*n));
    if (n == NULL) {
      to->failed = 1;
      return 0;
    }
    to->c = n;
    to->cap = cap;
  }
  d = &to->c[to->n];
  *d = *from;
  d->proxies = NULL;
  if (from->n_proxies > 0 && (d->proxies = malloc(from->n_proxies * sizeof(*d->proxies))) == NULL) {
    to->failed = 1;
    return 0;
  }
  if (from->n_proxies > 0)
    memcpy(d->proxies, from->proxies, from->n_proxies * sizeof(*d->proxies));
  to->n++;
  return 0;
}

static void ask_clients(struct np_server *srv, void *slot, const char *q) {
  (void)q;
  np__server_foreach_client_local(srv, keep_snap, slot);
}

/* Worker 0's np_server_foreach_client: its own clients, then each other worker's, in order. A
 * worker that does not answer within GATHER_MS is left out, and the log says so. */
static int group_clients(const struct np_server *srv, np_server_client_cb cb, void *arg) {
  np__round *r;
  int res;

  if ((res = np__server_foreach_client_local(srv, cb, arg)) != 0)
    return res;
  if ((r = ask_others(srv, "clients", ask_clients, NULL, sizeof(snaps), clear_snaps)) == NULL)
    return 0;
  for (unsigned k = 0; k < srv->group->n - 1 && res == 0; k++) {
    const snaps *sn = ask_slot(r, k);
    for (size_t i = 0; i < sn->n && res == 0; i++)
      res = cb((const np_server_client *)&sn->c[i], arg);
  }
  np__round_release(r);
  return res;
}

/* ---- first-byte waits ------------------------------------------------------------------- */

static void ask_first_byte(struct np_server *srv, void *slot, const char *q) {
  np__server_first_byte_local(srv, q[0] != '\0' ? q : NULL, slot);
}

static void group_first_byte(const struct np_server *srv, const char *type, np__histo *h) {
  np__round *r = ask_others(srv, "first-byte waits", ask_first_byte, type, sizeof(*h), NULL);
  if (r == NULL)
    return;
  for (unsigned k = 0; k < srv->group->n - 1; k++)
    np__histo_add(h, ask_slot(r, k));
  np__round_release(r);
}

/* ---- each worker's CPU time (read by the home without asking: the kernel keeps it) ---------- */

static unsigned group_workers(const struct np_server *srv, uint64_t *cpu_ns, unsigned max) {
  struct np_server_group *g = srv->group;
  for (unsigned k = 0; k < g->n && k < max; k++) {
    clockid_t cid;
    struct timespec ts;
    cpu_ns[k] = 0;
    /* A worker's thread is joined only here, on the home thread, after its exit came. */
    if (k > 0 && !g->w[k].running)
      continue;
    if (pthread_getcpuclockid(k == 0 ? g->home_thread : g->w[k].thread, &cid) == 0 &&
        clock_gettime(cid, &ts) == 0)
      cpu_ns[k] = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
  }
  return g->n;
}

/* ---- the operator's disconnect, on the worker that holds the client ----------------------- */

typedef struct {
  np__job job;
  worker *to;
  uint64_t sid;
  char name[NP_MSG_NAME_MAX + 1];
} kick_job;

static void run_kick(np__job *j, void *arg) {
  kick_job *kj = (kick_job *)j;
  (void)arg;
  if (kj->to->srv != NULL)
    np__server_disconnect(kj->to->srv, kj->name, kj->sid);
  free(kj);
}

static int group_disconnect(struct np_server *srv, const char *name) {
  struct np_server_group *g = srv->group;
  kick_job *kj;
  unsigned widx;
  uint64_t sid;

  if (!np__shared_name_find(srv->shared, name, &widx, &sid) || widx == 0 || widx >= g->n ||
      strlen(name) > NP_MSG_NAME_MAX || (kj = calloc(1, sizeof(*kj))) == NULL)
    return 0;
  *kj = (kick_job){.job = {.run = run_kick, .drop = drop_free}, .to = &g->w[widx], .sid = sid};
  strcpy(kj->name, name);
  if (np__inbox_post(&g->w[widx].in, &kj->job) != 0) {
    free(kj);
    return 0;
  }
  return 1; /* closed on its worker's next turn */
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
  w->srv->group_move = group_move;
  w->srv->group_visitor = group_visitor;
  w->srv->group_claim = group_claim;
  w->srv->group_udp = group_udp;
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
    g->w[0].srv->group_stats = group_stats;
    g->w[0].srv->group_move = group_move;
    g->w[0].srv->group_visitor = group_visitor;
    g->w[0].srv->group_claim = group_claim;
    g->w[0].srv->group_reload = group_reload;
    g->w[0].srv->group_clients = group_clients;
    g->w[0].srv->group_workers = group_workers;
    g->w[0].srv->group_first_byte = group_first_byte;
    g->w[0].srv->group_disconnect = group_disconnect;
    g->w[0].srv->group_udp = group_udp;
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
