/* np_server_group's insides, shared by server_group.c (the threads: start, reload, end) and
 * server_group_hooks.c (what the workers ask of each other: counters, clients, connections and
 * packets for another worker, a client name). */
#ifndef NP_SERVER_GROUP_H
#define NP_SERVER_GROUP_H

#include <pthread.h>
#include <stdatomic.h>

#include "inbox.h"
#include "server.h"

#define GATHER_MS 1000 /* how long the home waits for a worker's counters */

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

/* The hooks through which srv, worker widx of its group, reaches the other workers: every worker
 * hands connections, packets and name claims to the others; worker 0 also answers for the whole
 * group (counters, clients, first-byte waits, CPU, the admin's disconnect). */
void np__group_hooks_set(struct np_server *srv, unsigned widx);

#endif
