/* What the workers of an np_server_group ask of each other (server_group.h), each through the
 * other's inbox: worker 0 gathers the counters, clients and first-byte waits of all (a round, at
 * most GATHER_MS) and passes the operator's disconnect on; any worker hands a work connection or a
 * vhost visitor to its session's or route's worker, a datagram-path packet to its session's, and a
 * login's claim on a name to the worker that holds it. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn_move.h"
#include "server_group.h"
#include "udp_path.h"

#include <openssl/crypto.h>

/* Bytes of datagram-path packets handed to one worker and not yet taken: a flood of packets the
 * steering misses (forged ids, or no cBPF) holds at most this much on their way. */
#define UDP_HELD_MAX (8u << 20)

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

/* ---- a message for a session of another worker (direct-path introductions) ---------------- */

typedef struct {
  np__job job;
  worker *to;
  uint64_t sid;
  np_msg m;
} msg_job;

/* The message may hold a path key: wiped before its memory goes. */
static void free_msg(np__job *j) {
  msg_job *mj = (msg_job *)j;
  OPENSSL_cleanse(&mj->m, sizeof(mj->m));
  free(mj);
}

static void run_msg(np__job *j, void *arg) {
  msg_job *mj = (msg_job *)j;
  (void)arg;
  if (mj->to->srv != NULL)
    np__session_deliver(mj->to->srv, mj->sid, &mj->m);
  free_msg(j);
}

static int group_msg(struct np_server *srv, unsigned widx, uint64_t sid, const np_msg *m) {
  struct np_server_group *g = srv->group;
  np__inbox *in = peer_inbox(g, widx);
  msg_job *mj;
  int r;

  if (in == NULL)
    return UV_EINVAL;
  if ((mj = malloc(sizeof(*mj))) == NULL)
    return UV_ENOMEM;
  /* A peer's doing (a client asked for a path), so bounded like the moves. */
  mj->job = (np__job){.run = run_msg, .drop = free_msg, .peer = 1};
  mj->to = &g->w[widx];
  mj->sid = sid;
  mj->m = *m;
  if ((r = np__inbox_post(in, &mj->job)) != 0)
    free_msg(&mj->job);
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

void np__group_hooks_set(struct np_server *srv, unsigned widx) {
  srv->group_move = group_move;
  srv->group_visitor = group_visitor;
  srv->group_claim = group_claim;
  srv->group_udp = group_udp;
  srv->group_msg = group_msg;
  if (widx > 0)
    return;
  srv->group_stats = group_stats;
  srv->group_clients = group_clients;
  srv->group_workers = group_workers;
  srv->group_first_byte = group_first_byte;
  srv->group_disconnect = group_disconnect;
}
