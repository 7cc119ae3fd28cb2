/* The inbox and rounds across real threads: jobs posted from another thread run on the inbox's,
 * in order; peer jobs are bounded; a closed inbox drops what it held and refuses more; a round
 * gathers answers, times out on a missing one, and survives an answer after its deadline. Every
 * wait is bounded (a loop watchdog, round deadlines). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "inbox.h"

#define JOBS 20000

typedef struct {
  np__job job;
  unsigned seq;
  int *dropped;
} tjob;

typedef struct {
  uv_loop_t loop;
  np__inbox in;
  uv_timer_t watchdog;
  unsigned ran, next_seq, want;
  int out_of_order, post_failed;
} home;

static void run_job(np__job *j, void *arg) {
  home *h = arg;
  tjob *t = (tjob *)j;
  if (t->seq != h->next_seq)
    h->out_of_order = 1;
  h->next_seq = t->seq + 1;
  h->ran++;
  free(t);
  if (h->ran == h->want) {
    uv_close((uv_handle_t *)&h->watchdog, NULL);
    np__inbox_close(&h->in, NULL);
  }
}

static void drop_job(np__job *j) {
  tjob *t = (tjob *)j;
  if (t->dropped != NULL)
    (*t->dropped)++;
  free(t);
}

static tjob *new_job(unsigned seq, int peer, int *dropped) {
  tjob *t = calloc(1, sizeof(*t));
  assert_non_null(t);
  t->job.run = run_job;
  t->job.drop = drop_job;
  t->job.peer = (unsigned)peer;
  t->seq = seq;
  t->dropped = dropped;
  return t;
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fail_msg("the loop did not finish in time");
}

static void home_init(home *h, unsigned want) {
  memset(h, 0, sizeof(*h));
  h->want = want;
  assert_int_equal(uv_loop_init(&h->loop), 0);
  assert_int_equal(np__inbox_init(&h->in, &h->loop, h), 0);
  assert_int_equal(uv_timer_init(&h->loop, &h->watchdog), 0);
  assert_int_equal(uv_timer_start(&h->watchdog, on_watchdog, 5000, 0), 0);
}

static void home_end(home *h) {
  assert_int_equal(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
  np__inbox_destroy(&h->in);
  assert_int_equal(uv_loop_close(&h->loop), 0);
}

/* On its own thread: no cmocka asserts here (they jump back into the main thread's stack). */
static void poster(void *arg) {
  home *h = arg;
  for (unsigned i = 0; i < JOBS; i++) {
    tjob *t = calloc(1, sizeof(*t));
    if (t == NULL) {
      h->post_failed = 1;
      return;
    }
    t->job.run = run_job;
    t->job.drop = drop_job;
    t->seq = i;
    if (np__inbox_post(&h->in, &t->job) != 0) {
      free(t);
      h->post_failed = 1;
    }
  }
}

/* Jobs from another thread, posted faster than they run: all run, on the inbox's thread, in the
 * order posted. */
static void test_jobs_run_in_order(void **state) {
  home h;
  uv_thread_t t;
  (void)state;
  home_init(&h, JOBS);
  assert_int_equal(uv_thread_create(&t, poster, &h), 0);
  home_end(&h);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_false(h.post_failed);
  assert_int_equal(h.ran, JOBS);
  assert_false(h.out_of_order);
}

/* Peer jobs past the bound are refused and stay the caller's; others still go in. Closing drops
 * every queued job, and a post after it fails. */
static void test_peer_bound_and_close(void **state) {
  home h;
  int dropped = 0;
  tjob *extra, *late;
  (void)state;
  home_init(&h, 1);
  for (unsigned i = 0; i < NP_INBOX_PEER_MAX; i++)
    assert_int_equal(np__inbox_post(&h.in, &new_job(i, 1, &dropped)->job), 0);
  extra = new_job(0, 1, &dropped);
  assert_int_equal(np__inbox_post(&h.in, &extra->job), UV_ENOBUFS);
  free(extra);
  assert_int_equal(np__inbox_post(&h.in, &new_job(0, 0, &dropped)->job), 0);
  /* Closed before the loop ran any: everything queued is dropped, nothing runs. */
  np__inbox_close(&h.in, NULL);
  assert_int_equal(dropped, NP_INBOX_PEER_MAX + 1);
  late = new_job(0, 0, &dropped);
  assert_int_equal(np__inbox_post(&h.in, &late->job), UV_ECANCELED);
  free(late);
  uv_close((uv_handle_t *)&h.watchdog, NULL);
  home_end(&h);
  assert_int_equal(h.ran, 0);
}

typedef struct {
  np__round *r;
  unsigned slot;
  uv_sem_t *go; /* NULL: answer at once */
} answerer;

static void answer(void *arg) {
  answerer *a = arg;
  unsigned *room = np__round_data(a->r);
  if (a->go != NULL)
    uv_sem_wait(a->go);
  room[a->slot] = a->slot + 100;
  np__round_done(a->r);
}

static int freed;
static void free_room(void *data) {
  (void)data;
  freed++;
}

/* Three threads answer: the asker sees every answer. */
static void test_round_gathers(void **state) {
  np__round *r = np__round_new(3, 3 * sizeof(unsigned), free_room);
  answerer a[3];
  uv_thread_t t[3];
  unsigned *room;
  (void)state;
  freed = 0;
  assert_non_null(r);
  for (unsigned i = 0; i < 3; i++) {
    a[i] = (answerer){r, i, NULL};
    assert_int_equal(uv_thread_create(&t[i], answer, &a[i]), 0);
  }
  assert_int_equal(np__round_wait(r, 5000), 0);
  room = np__round_data(r);
  for (unsigned i = 0; i < 3; i++)
    assert_int_equal(room[i], i + 100);
  assert_int_equal(np__round_answered(r), 3);
  np__round_release(r);
  for (unsigned i = 0; i < 3; i++)
    assert_int_equal(uv_thread_join(&t[i]), 0);
  assert_int_equal(freed, 1);
}

/* One answerer is late: the asker times out and lets go; the late answer still lands in memory
 * that exists (ASan and valgrind would say otherwise), and the round goes with it. An abandoned
 * answer ends the wait at once, as incomplete. */
static void test_round_late_and_abandoned(void **state) {
  np__round *r = np__round_new(2, 2 * sizeof(unsigned), free_room);
  answerer a = {r, 1, NULL};
  uv_sem_t go;
  uv_thread_t t;
  uint64_t t0;
  (void)state;
  freed = 0;
  assert_non_null(r);
  assert_int_equal(uv_sem_init(&go, 0), 0);
  a.go = &go;
  assert_int_equal(uv_thread_create(&t, answer, &a), 0);
  np__round_done(r); /* slot 0 answers at once (nothing written) */
  t0 = uv_hrtime();
  assert_int_equal(np__round_wait(r, 50), UV_ETIMEDOUT);
  assert_true(uv_hrtime() - t0 >= 50 * 1000000u);
  assert_int_equal(np__round_answered(r), 1);
  np__round_release(r);
  assert_int_equal(freed, 0);
  uv_sem_post(&go);
  assert_int_equal(uv_thread_join(&t), 0);
  assert_int_equal(freed, 1);
  uv_sem_destroy(&go);

  r = np__round_new(2, 0, NULL);
  assert_non_null(r);
  np__round_done(r);
  np__round_abandon(r);
  t0 = uv_hrtime();
  assert_int_equal(np__round_wait(r, 5000), UV_ECANCELED);
  assert_true(uv_hrtime() - t0 < 1000 * 1000000u);
  np__round_release(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jobs_run_in_order),
      cmocka_unit_test(test_peer_bound_and_close),
      cmocka_unit_test(test_round_gathers),
      cmocka_unit_test(test_round_late_and_abandoned),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
