/* Jobs for another loop's thread, and rounds of answers from several (docs/workers-plan.md).
 *
 * A loop's handles may be touched only on that loop's thread, so work for another loop is posted
 * to its inbox: a locked list and a uv_async_t that runs the list on the owner's thread. Posts
 * never block on the owner (a mutex held for a list append), and sends coalesce: one wakeup may
 * run many jobs. Jobs a peer can cause (a connection handed over, a datagram forwarded) are
 * bounded per inbox; past the bound, or once the inbox is closed, a post fails and the caller
 * still owns the job, so it closes what the job holds: nothing is lost without being counted.
 *
 * A round is the answer of several loops to one question (a snapshot, a reload): the asker waits
 * for all of them under a deadline. It is reference counted so that an answer arriving after the
 * deadline writes into memory that still exists, and is freed by whoever lets go last. */
#ifndef NP_INBOX_H
#define NP_INBOX_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define NP_INBOX_PEER_MAX 4096 /* jobs a peer can cause, queued in one inbox */

typedef struct np__job np__job;
struct np__job {
  np__job *next;
  /* Runs on the inbox's thread; owns the job from there (frees it). */
  void (*run)(np__job *job, void *arg);
  /* The inbox closed with the job still queued (on the closing thread): close what it holds and
   * free it. A job that answers a round must abandon it here (np__round_abandon), or the asker
   * waits out its deadline. */
  void (*drop)(np__job *job);
  unsigned peer : 1; /* caused by a peer: counts against NP_INBOX_PEER_MAX */
};

typedef struct np__inbox {
  uv_async_t async;
  uv_mutex_t mu;
  np__job *head, *tail;
  size_t n_peer;
  int closed;
  void *arg; /* passed to each job's run */
  void (*close_cb)(struct np__inbox *in);
} np__inbox;

/* On the thread that runs loop. Returns 0 or a libuv error. */
int np__inbox_init(np__inbox *in, uv_loop_t *loop, void *arg);
/* From any thread. 0: the job is queued and will run (or be dropped if the inbox closes first).
 * UV_ECANCELED: the inbox is closed; UV_ENOBUFS: too many peer jobs are queued. On an error the
 * caller keeps the job. */
int np__inbox_post(np__inbox *in, np__job *job);
/* On the inbox's thread: no post succeeds from here on, queued jobs are dropped, and close_cb
 * (may be NULL) runs once the async handle is closed. Posts still fail cleanly after that: the
 * lock lives until np__inbox_destroy, which is for when no thread can post any more (the poster
 * threads were joined, or forgot the inbox); then its memory may go. */
void np__inbox_close(np__inbox *in, void (*close_cb)(np__inbox *in)); /* a second call: nothing */
void np__inbox_destroy(np__inbox *in);

typedef struct np__round np__round;
/* A round awaiting n answers, with size bytes of zeroed room for them (np__round_data).
 * free_data, if not NULL, frees what the answers left in that room when the round goes. The
 * asker holds one reference and each answerer one. NULL when out of memory. */
np__round *np__round_new(unsigned n, size_t size, void (*free_data)(void *data));
void *np__round_data(np__round *r);
/* An answerer is done writing its part: counts it and lets go of its reference. */
void np__round_done(np__round *r);
/* An answerer that will never answer (its post failed): lets go of its reference. */
void np__round_abandon(np__round *r);
/* The asker waits until every answer came (0) or timeout_ms passed (UV_ETIMEDOUT; answers may
 * still arrive, into the room, until the last reference goes). It may wait only once. */
int np__round_wait(np__round *r, uint64_t timeout_ms);
/* How many answers came. */
unsigned np__round_answered(np__round *r);
/* The asker lets go of its reference. */
void np__round_release(np__round *r);

#endif
