/* Jobs for another loop's thread, and rounds of answers (inbox.h says why). */
#include "inbox.h"

#include <stdlib.h>

#include "internal.h"

/* ---- the inbox ---------------------------------------------------------------------------- */

/* Everything queued is taken at once, under the lock, and run without it: a job may post again
 * (to this inbox too), and a poster never waits while jobs run. */
static np__job *take_all(np__inbox *in) {
  np__job *list;
  uv_mutex_lock(&in->mu);
  list = in->head;
  in->head = in->tail = NULL;
  in->n_peer = 0;
  uv_mutex_unlock(&in->mu);
  return list;
}

static void on_async(uv_async_t *a) {
  np__inbox *in = NP_CONTAINER_OF(a, np__inbox, async);
  np__job *j = take_all(in), *next;
  for (; j != NULL; j = next) {
    next = j->next;
    if (in->closed)
      j->drop(j); /* a job before this one closed the inbox */
    else
      j->run(j, in->arg);
  }
}

int np__inbox_init(np__inbox *in, uv_loop_t *loop, void *arg) {
  int r;
  in->head = in->tail = NULL;
  in->n_peer = 0;
  in->closed = 0;
  in->arg = arg;
  in->close_cb = NULL;
  if ((r = uv_mutex_init(&in->mu)) != 0)
    return r;
  if ((r = uv_async_init(loop, &in->async, on_async)) != 0) {
    uv_mutex_destroy(&in->mu);
    return r;
  }
  return 0;
}

int np__inbox_post(np__inbox *in, np__job *job) {
  int r = 0;
  uv_mutex_lock(&in->mu);
  if (in->closed)
    r = UV_ECANCELED;
  else if (job->peer && in->n_peer >= NP_INBOX_PEER_MAX)
    r = UV_ENOBUFS;
  else {
    job->next = NULL;
    if (in->tail != NULL)
      in->tail->next = job;
    else
      in->head = job;
    in->tail = job;
    in->n_peer += job->peer;
    /* Sent under the lock: once closed is set (under it too), the handle may be closing, and a
     * send to a closing handle is undefined. */
    uv_async_send(&in->async);
  }
  uv_mutex_unlock(&in->mu);
  return r;
}

static void on_closed(uv_handle_t *h) {
  np__inbox *in = NP_CONTAINER_OF((uv_async_t *)h, np__inbox, async);
  if (in->close_cb != NULL)
    in->close_cb(in);
}

void np__inbox_close(np__inbox *in, void (*close_cb)(np__inbox *in)) {
  np__job *j, *next;
  if (in->closed)
    return; /* closed already (closed is only set on this thread) */
  uv_mutex_lock(&in->mu);
  in->closed = 1;
  uv_mutex_unlock(&in->mu);
  for (j = take_all(in); j != NULL; j = next) {
    next = j->next;
    j->drop(j);
  }
  in->close_cb = close_cb;
  uv_close((uv_handle_t *)&in->async, on_closed);
}

void np__inbox_destroy(np__inbox *in) {
  uv_mutex_destroy(&in->mu);
}

/* ---- rounds ------------------------------------------------------------------------------- */

struct np__round {
  uv_mutex_t mu;
  uv_cond_t cond;
  unsigned n, left, answered, refs;
  void (*free_data)(void *data);
  _Alignas(max_align_t) unsigned char data[];
};

np__round *np__round_new(unsigned n, size_t size, void (*free_data)(void *data)) {
  np__round *r = calloc(1, sizeof(*r) + size);
  if (r == NULL)
    return NULL;
  if (uv_mutex_init(&r->mu) != 0) {
    free(r);
    return NULL;
  }
  if (uv_cond_init(&r->cond) != 0) {
    uv_mutex_destroy(&r->mu);
    free(r);
    return NULL;
  }
  r->n = r->left = n;
  r->refs = n + 1;
  r->free_data = free_data;
  return r;
}

void *np__round_data(np__round *r) {
  return r->data;
}

static void unref_locked(np__round *r) {
  if (--r->refs > 0) {
    uv_mutex_unlock(&r->mu);
    return;
  }
  uv_mutex_unlock(&r->mu);
  if (r->free_data != NULL)
    r->free_data(r->data);
  uv_cond_destroy(&r->cond);
  uv_mutex_destroy(&r->mu);
  free(r);
}

static void finish(np__round *r, int answered) {
  uv_mutex_lock(&r->mu);
  r->answered += (unsigned)answered;
  if (--r->left == 0)
    uv_cond_signal(&r->cond);
  unref_locked(r);
}

void np__round_done(np__round *r) {
  finish(r, 1);
}

void np__round_abandon(np__round *r) {
  finish(r, 0);
}

int np__round_wait(np__round *r, uint64_t timeout_ms) {
  uint64_t now = uv_hrtime(), deadline;
  if (timeout_ms > (UINT64_MAX - now) / 1000000u)
    timeout_ms = (UINT64_MAX - now) / 1000000u; /* "for ever" must not wrap into "at once" */
  deadline = now + timeout_ms * 1000000u;
  int res = 0;
  uv_mutex_lock(&r->mu);
  while (r->left > 0) {
    if ((now = uv_hrtime()) >= deadline) {
      res = UV_ETIMEDOUT;
      break;
    }
    /* A timeout or a spurious wakeup both come back here: the deadline is the one exit. */
    (void)uv_cond_timedwait(&r->cond, &r->mu, deadline - now);
  }
  if (res == 0 && r->answered < r->n)
    res = UV_ECANCELED;
  uv_mutex_unlock(&r->mu);
  return res;
}

unsigned np__round_answered(np__round *r) {
  unsigned n;
  uv_mutex_lock(&r->mu);
  n = r->answered;
  uv_mutex_unlock(&r->mu);
  return n;
}

void np__round_release(np__round *r) {
  uv_mutex_lock(&r->mu);
  unref_locked(r);
}
