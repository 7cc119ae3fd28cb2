/* The state a server's loops share (lib/server_shared.c): the name registry, the users file's
 * references across a reload's swap, the port memory copied for a save, the counts, and the
 * back-off and failed-login ring under two threads at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include <natproxy.h>

#include "server_shared.h"
#include "tmpfile.h"

static void test_names(void **state) {
  np__shared *sh;
  unsigned widx = 9;
  uint64_t sid = 0;
  char long_name[NP_MSG_NAME_MAX + 2];
  (void)state;

  assert_int_equal(np__shared_new(1000, 8000, &sh), 0);
  assert_int_equal(np__shared_name_find(sh, "alice", &widx, &sid), 0);
  assert_int_equal(widx, 9); /* untouched when absent */
  assert_int_equal(np__shared_name_set(sh, "alice", 0, 1), 0);
  assert_int_equal(np__shared_name_set(sh, "bob", 1, 2), 0);
  assert_int_equal(np__shared_name_find(sh, "alice", &widx, &sid), 1);
  assert_int_equal(widx, 0);
  assert_int_equal(sid, 1);
  /* alice logs in again (a takeover): her new session takes the entry over */
  assert_int_equal(np__shared_name_set(sh, "alice", 1, 3), 0);
  assert_int_equal(np__shared_name_count(sh), 2);
  /* the replaced session closes after that: it must not remove its successor's entry */
  np__shared_name_release(sh, "alice", 1);
  assert_int_equal(np__shared_name_find(sh, "alice", &widx, &sid), 1);
  assert_int_equal(widx, 1);
  assert_int_equal(sid, 3);
  np__shared_name_release(sh, "carol", 3); /* never registered: nothing happens */
  np__shared_name_release(sh, "alice", 3);
  assert_int_equal(np__shared_name_find(sh, "alice", NULL, NULL), 0);
  assert_int_equal(np__shared_name_find(sh, "bob", NULL, NULL), 1);
  assert_int_equal(np__shared_name_count(sh), 1);
  memset(long_name, 'x', sizeof(long_name) - 1);
  long_name[sizeof(long_name) - 1] = '\0';
  assert_int_equal(np__shared_name_set(sh, long_name, 0, 4), UV_EINVAL);
  np__shared_free(sh); /* with bob still in it: freed too */
  np__shared_free(NULL);
}

/* The private proxies' table (proxy_stcp.c): one holder per full name, a copy for the reader,
 * and a session that goes removes its own entry only. */
static void test_privates(void **state) {
  np__shared *sh;
  np__private p = {.kind = NP_PROXY_STCP, .widx = 1, .sid = 7}, got;
  char long_name[NP_MSG_NAME_MAX + 2];
  (void)state;

  assert_int_equal(np__shared_new(1000, 8000, &sh), 0);
  memset(p.verifier, 0xab, sizeof(p.verifier));
  strcpy(p.allow_users, "bob,carol");
  assert_int_equal(np__shared_private_find(sh, "alice.ssh", &got), UV_ENOENT);
  assert_int_equal(np__shared_private_add(sh, "alice.ssh", &p), 0);
  p.sid = 8;
  assert_int_equal(np__shared_private_add(sh, "alice.ssh", &p), UV_EEXIST);
  assert_int_equal(np__shared_private_add(sh, "alice.db", &p), 0);
  assert_int_equal(np__shared_private_find(sh, "alice.ssh", &got), 0);
  assert_true(got.sid == 7 && got.widx == 1 && got.kind == NP_PROXY_STCP);
  assert_string_equal(got.allow_users, "bob,carol");
  assert_memory_equal(got.verifier, p.verifier, sizeof(p.verifier));
  np__shared_private_remove(sh, "alice.ssh", 8); /* not its entry: stays */
  assert_int_equal(np__shared_private_find(sh, "alice.ssh", &got), 0);
  np__shared_private_remove(sh, "alice.ssh", 7);
  assert_int_equal(np__shared_private_find(sh, "alice.ssh", &got), UV_ENOENT);
  np__shared_private_remove(sh, "nobody.x", 7);
  memset(long_name, 'x', sizeof(long_name) - 1);
  long_name[sizeof(long_name) - 1] = '\0';
  assert_int_equal(np__shared_private_add(sh, long_name, &p), UV_EINVAL);
  np__shared_free(sh); /* with alice.db still in it: freed too */
}

static np__users *load_users(const char *text) {
  char path[64], err[512] = "";
  np__users *u = NULL;

  write_tmp(path, text);
  assert_int_equal(np__users_load(path, &u, err, sizeof(err)), 0);
  unlink(path);
  return u;
}

/* As a server and its reload do (server.c, server_reload.c): the server holds the loaded table's
 * reference, the shared state one of its own; a reload swaps both and the old table lives until
 * its last holder lets it go. */
static void test_users_swap(void **state) {
  np__shared *sh;
  np__users *mine, *got, *fresh;
  (void)state;

  assert_int_equal(np__shared_new(1000, 8000, &sh), 0);
  assert_null(np__shared_users_get(sh));
  mine = load_users("[alice]\ntoken = a\n");
  assert_int_equal(np__users_refs(mine), 1);
  np__shared_users_set(sh, mine);
  assert_int_equal(np__users_refs(mine), 2);
  got = np__shared_users_get(sh);
  assert_ptr_equal(got, mine);
  assert_int_equal(np__users_refs(mine), 3);

  /* the reload: a new table, set in the shared state, then in the server */
  fresh = load_users("[bob]\ntoken = b\n");
  np__shared_users_set(sh, fresh);
  assert_int_equal(np__users_refs(fresh), 2);
  assert_int_equal(np__users_refs(mine), 2); /* the server's and got's */
  np__users_unref(mine);                     /* the server moves to fresh */
  /* got (another loop, not yet reloaded) still reads the old table */
  assert_int_equal(np__users_refs(got), 1);
  assert_non_null(np__users_find(got, "alice"));
  assert_null(np__users_find(got, "bob"));
  np__users_unref(got); /* the last reference: freed (valgrind would see a leak otherwise) */
  got = np__shared_users_get(sh);
  assert_ptr_equal(got, fresh);
  assert_non_null(np__users_find(got, "bob"));
  np__users_unref(got);

  /* no users file any more: the shared state lets its reference go */
  np__shared_users_set(sh, NULL);
  assert_int_equal(np__users_refs(fresh), 1);
  assert_null(np__shared_users_get(sh));
  np__shared_users_set(sh, fresh);
  np__users_unref(fresh);
  assert_int_equal(np__users_refs(fresh), 1); /* the shared state's, dropped by free */
  np__shared_free(sh);
}

static void test_ports_clone_and_save(void **state) {
  np__shared *sh;
  np__port_memory *m, *copy, *back;
  char path[64], err[200] = "";
  (void)state;

  assert_int_equal(np__shared_new(1000, 8000, &sh), 0);
  /* off: recall knows nothing, note changes nothing, nothing to save */
  assert_int_equal(np__shared_ports_note(sh, "alpha", "web", 40001), 0);
  assert_int_equal(np__shared_ports_recall(sh, "alpha", "web"), 0);
  assert_int_equal(np__shared_ports_clone(sh, 1, &copy), 0);
  assert_null(copy);

  assert_int_equal(np__port_memory_new(2, &m), 0);
  np__shared_ports_set(sh, m);
  assert_int_equal(np__shared_ports_note(sh, "alpha", "web", 40001), 1);
  assert_int_equal(np__shared_ports_note(sh, "beta", "web", 40002), 1);
  assert_int_equal(np__shared_ports_note(sh, "alpha", "web", 40001), 0); /* now the newest */
  assert_int_equal(np__shared_ports_recall(sh, "alpha", "web"), 40001);
  assert_int_equal(np__shared_ports_clone(sh, 0, &copy), 0);
  assert_non_null(copy);
  /* the mark is cleared: nothing changed since, nothing to save; unless forced */
  assert_int_equal(np__shared_ports_clone(sh, 0, &back), 0);
  assert_null(back);
  assert_int_equal(np__shared_ports_clone(sh, 1, &back), 0);
  assert_non_null(back);
  np__port_memory_free(back);
  /* the copy is its own: a later change in the table does not reach it */
  assert_int_equal(np__shared_ports_note(sh, "gamma", "db", 40003), 1);
  assert_int_equal(np__port_memory_count(copy), 2);
  assert_int_equal(np__port_memory_recall(copy, "gamma", "db"), 0);
  assert_int_equal(np__shared_ports_recall(sh, "beta", "web"), 0); /* the oldest went */

  /* written outside the lock, read back with the same ages: a third entry evicts beta/web, the
   * oldest in the copy too */
  write_tmp(path, "");
  assert_int_equal(np__port_memory_save(copy, path), 0);
  np__port_memory_free(copy);
  assert_int_equal(np__port_memory_new(2, &back), 0);
  assert_int_equal(np__port_memory_load(back, path, err, sizeof(err)), 0);
  unlink(path);
  assert_int_equal(np__port_memory_recall(back, "alpha", "web"), 40001);
  assert_int_equal(np__port_memory_recall(back, "beta", "web"), 40002);
  assert_int_equal(np__port_memory_note(back, "delta", "x", 40004), 1);
  assert_int_equal(np__port_memory_recall(back, "beta", "web"), 0);
  assert_int_equal(np__port_memory_recall(back, "alpha", "web"), 40001);
  np__port_memory_free(back);
  np__shared_free(sh); /* frees the table it was given */
}

static void test_counts(void **state) {
  np__shared *sh;
  (void)state;

  assert_int_equal(np__shared_new(0, 0, &sh), 0);
  for (int i = 0; i < 3; i++)
    assert_int_equal(np__shared_take(&sh->clients, 3), 1);
  assert_int_equal(np__shared_take(&sh->clients, 3), 0); /* full: nothing taken */
  assert_int_equal(atomic_load(&sh->clients), 3);
  assert_int_equal(np__shared_take(&sh->clients, SIZE_MAX), 1); /* a takeover's: no limit */
  np__shared_give(&sh->clients);
  np__shared_give(&sh->clients);
  assert_int_equal(np__shared_take(&sh->clients, 3), 1);
  assert_int_equal(atomic_load(&sh->pending), 0);
  np__shared_free(sh);
}

/* ---- two threads at once -------------------------------------------------------------------- */

#define ROUNDS   20000 /* per thread: some milliseconds, for the two to interleave often */
#define OWN_ADDR 64    /* addresses each thread fails from, beside the one both use */
#define NOW      1000  /* a fixed clock: no record goes stale during the test */

typedef struct hammer {
  np__shared *sh;
  int t; /* 0 or 1: its addresses are 10.0.t.x */
  uv_async_t *done;
  uv_barrier_t *start; /* both threads begin together, so their rounds overlap */
  uint64_t waited;     /* waits it saw (back-off started on its addresses) */
  atomic_int *inside;  /* threads holding the pending slot now */
  int over;            /* times it found the other one there too */
  atomic_int finished;
} hammer;

static const struct sockaddr *ip4(struct sockaddr_in *sin, int a, int b) {
  char s[32];
  snprintf(s, sizeof(s), "10.0.%d.%d", a, b);
  uv_ip4_addr(s, 1000, sin);
  return (const struct sockaddr *)sin;
}

static void hammer_run(void *arg) {
  hammer *h = arg;
  struct sockaddr_in own, both;

  ip4(&both, 9, 9);
  uv_barrier_wait(h->start);
  for (int i = 0; i < ROUNDS; i++) {
    const struct sockaddr *sa = ip4(&own, h->t, i % OWN_ADDR);
    np__shared_backoff_fail(h->sh, sa, NOW, NULL);
    np__shared_backoff_fail(h->sh, (const struct sockaddr *)&both, NOW, NULL);
    h->waited += np__shared_backoff_wait(h->sh, sa, NOW) > 0;
    /* the last round of each address forgets the odd ones (a login that succeeds) */
    if (i >= ROUNDS - OWN_ADDR && i % 2 == 1)
      np__shared_backoff_clear(h->sh, sa, NOW);
    np__shared_fails_add(h->sh, NOW, sa, h->t == 0 ? "zero" : "one", "wrong token");
    /* one slot of pending between the two: never both in it at once */
    if (np__shared_take(&h->sh->pending, 1)) {
      h->over += atomic_fetch_add(h->inside, 1) != 0;
      atomic_fetch_sub(h->inside, 1);
      np__shared_give(&h->sh->pending);
    }
    np__shared_take(&h->sh->clients, SIZE_MAX);
    np__shared_give(&h->sh->clients);
  }
  atomic_store(&h->finished, 1);
  uv_async_send(h->done);
}

typedef struct watch {
  uv_async_t done;
  uv_timer_t watchdog;
  atomic_int *finished[2]; /* the two threads' flags */
} watch;

static void on_done(uv_async_t *a) {
  watch *w = a->data;

  /* Sends coalesce: the threads are counted by the flags they left, not by callbacks. */
  if (!atomic_load(w->finished[0]) || !atomic_load(w->finished[1]))
    return;
  uv_close((uv_handle_t *)&w->done, NULL);
  uv_close((uv_handle_t *)&w->watchdog, NULL);
}

static void on_watchdog(uv_timer_t *t) {
  (void)t;
  fail_msg("the threads did not finish within 5 s");
}

static void test_threads(void **state) {
  uv_loop_t loop;
  np__shared *sh;
  hammer h[2];
  uv_barrier_t start;
  atomic_int inside;
  uv_thread_t th[2];
  watch w;
  struct sockaddr_in both, sin;
  unsigned fails = 0;
  np__login_fails ring;
  (void)state;

  assert_int_equal(np__shared_new(1000, 8000, &sh), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&w, 0, sizeof(w));
  assert_int_equal(uv_async_init(&loop, &w.done, on_done), 0);
  w.done.data = &w;
  w.finished[0] = &h[0].finished;
  w.finished[1] = &h[1].finished;
  assert_int_equal(uv_barrier_init(&start, 2), 0);
  atomic_init(&inside, 0);
  assert_int_equal(uv_timer_init(&loop, &w.watchdog), 0);
  assert_int_equal(uv_timer_start(&w.watchdog, on_watchdog, 5000, 0), 0);
  for (int t = 0; t < 2; t++) {
    h[t] = (hammer){.sh = sh, .t = t, .done = &w.done, .start = &start, .inside = &inside};
    atomic_init(&h[t].finished, 0);
    assert_int_equal(uv_thread_create(&th[t], hammer_run, &h[t]), 0);
  }
  /* Until both have said they are done (the handles then close), or the watchdog fails the test:
   * the join below never waits on a thread still running. */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  for (int t = 0; t < 2; t++)
    assert_int_equal(uv_thread_join(&th[t]), 0);
  uv_barrier_destroy(&start);
  assert_int_equal(uv_loop_close(&loop), 0);

  /* Every failure counted once: the shared address has all 2 x ROUNDS of them (a lost update
   * would show here), and each thread's own addresses are there but for the cleared half. */
  np__shared_backoff_fail(sh, ip4(&both, 9, 9), NOW, &fails);
  assert_int_equal(fails, 2 * ROUNDS + 1);
  assert_int_equal(np__shared_backoff_count(sh), 2 * (OWN_ADDR / 2) + 1);
  assert_int_equal(np__shared_backoff_wait(sh, ip4(&sin, 0, 1), NOW), 0);    /* cleared */
  assert_int_equal(np__shared_backoff_wait(sh, ip4(&sin, 1, 2), NOW), 8000); /* capped */
  for (int t = 0; t < 2; t++) {
    assert_true(h[t].waited > 0);
    assert_int_equal(h[t].over, 0);
  }
  /* the ring: every add counted, its entries whole (one thread's name with its own address) */
  np__shared_fails_copy(sh, &ring);
  assert_int_equal(ring.total, 2 * ROUNDS);
  for (size_t i = 0; i < NP_LOGIN_FAILS_MAX; i++) {
    const np__login_fail *f = np__login_fails_get(&ring, i);
    assert_non_null(f);
    assert_true(strncmp(f->addr, strcmp(f->name, "zero") == 0 ? "10.0.0." : "10.0.1.", 7) == 0);
  }
  assert_int_equal(atomic_load(&sh->pending), 0);
  assert_int_equal(atomic_load(&sh->clients), 0);
  np__shared_free(sh);
}

/* ---- the vhost routes from two threads (workers) ------------------------------------------- */

#define ROUTE_ROUNDS 20008 /* ends past n7 of a new cycle: n0..n7 claimed, the rest gone */
#define ROUTE_NAMES  32

typedef struct router {
  np__shared *sh;
  int t;
  np__route_owner own;
  uv_async_t *done;
  uv_barrier_t *start;
  int bad;       /* a record read torn or another's where its own was expected */
  int seen;      /* the other's names found */
  int contested; /* "both.example.com" claimed here */
  atomic_int finished;
} router;

static void router_run(void *arg) {
  router *r = arg;
  char name[64];
  np__route_owner o, holder;

  uv_barrier_wait(r->start);
  for (int i = 0; i < ROUTE_ROUNDS; i++) {
    int k = i % ROUTE_NAMES, f;
    snprintf(name, sizeof(name), "n%d.t%d.example.com", k, r->t);
    if (np__shared_route_add(r->sh, NP_ROUTES_HTTP, name, "", &r->own, NULL) != 0)
      r->bad++;
    f = np__shared_route_find(r->sh, NP_ROUTES_HTTP, name, strlen(name), "/", 1, &o);
    if (f != NP_HTTP_ROUTE_FOUND || o.px != r->own.px || o.widx != (unsigned)r->t)
      r->bad++;
    /* the other's: absent, gone or found, and then a whole record of the other's */
    snprintf(name, sizeof(name), "n%d.t%d.example.com", k, 1 - r->t);
    if (np__shared_route_find(r->sh, NP_ROUTES_HTTP, name, strlen(name), "", 0, &o) ==
        NP_HTTP_ROUTE_FOUND) {
      r->seen++;
      if (o.widx != (unsigned)(1 - r->t) || o.client[1] != (char)('0' + 1 - r->t))
        r->bad++;
    }
    /* one name both want: either has it, the loser told whose it is */
    f = np__shared_route_add(r->sh, NP_ROUTES_HTTP, "both.example.com", "", &r->own, &holder);
    if (f == 0)
      r->contested++;
    else if (f != UV_EEXIST || holder.widx != (unsigned)(1 - r->t) ||
             strcmp(holder.proxy, 1 - r->t == 0 ? "p0" : "p1") != 0)
      r->bad++;
    /* a proxy that closes now and then: its names go (gone) and come back */
    if (k == ROUTE_NAMES - 1)
      np__shared_route_remove(r->sh, NP_ROUTES_HTTP, &r->own, 1);
  }
  atomic_store(&r->finished, 1);
  uv_async_send(r->done);
}

static void test_routes_threads(void **state) {
  uv_loop_t loop;
  np__shared *sh;
  router r[2];
  uv_barrier_t start;
  uv_thread_t th[2];
  watch w;
  np__route_owner o;
  (void)state;

  assert_int_equal(np__shared_new(0, 0, &sh), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  memset(&w, 0, sizeof(w));
  assert_int_equal(uv_async_init(&loop, &w.done, on_done), 0);
  w.done.data = &w;
  assert_int_equal(uv_barrier_init(&start, 2), 0);
  assert_int_equal(uv_timer_init(&loop, &w.watchdog), 0);
  assert_int_equal(uv_timer_start(&w.watchdog, on_watchdog, 5000, 0), 0);
  for (int t = 0; t < 2; t++) {
    r[t] = (router){.sh = sh, .t = t, .done = &w.done, .start = &start};
    r[t].own = (np__route_owner){.px = &r[t], .widx = (unsigned)t};
    snprintf(r[t].own.client, sizeof(r[t].own.client), "c%d", t);
    snprintf(r[t].own.proxy, sizeof(r[t].own.proxy), "p%d", t);
    atomic_init(&r[t].finished, 0);
    w.finished[t] = &r[t].finished;
  }
  for (int t = 0; t < 2; t++)
    assert_int_equal(uv_thread_create(&th[t], router_run, &r[t]), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  for (int t = 0; t < 2; t++)
    assert_int_equal(uv_thread_join(&th[t]), 0);
  uv_barrier_destroy(&start);
  assert_int_equal(uv_loop_close(&loop), 0);

  for (int t = 0; t < 2; t++)
    assert_int_equal(r[t].bad, 0);
  assert_true(r[0].seen + r[1].seen > 0); /* both at once, or one after the other */
  /* the contested name: claimed by one of them for good (each removal made it gone, and the next
   * claim took it over); the other never held it at the same time */
  assert_true(r[0].contested + r[1].contested > 0);
  assert_int_equal(np__shared_route_find(sh, NP_ROUTES_HTTP, "n3.t1.example.com", 17, "", 0, &o),
                   NP_HTTP_ROUTE_FOUND);
  assert_int_equal(o.widx, 1);
  assert_string_equal(o.client, "c1");
  assert_int_equal(np__shared_route_find(sh, NP_ROUTES_HTTP, "n20.t0.example.com", 18, "", 0, &o),
                   NP_HTTP_ROUTE_GONE);
  /* the HTTPS table is another */
  assert_int_equal(np__shared_route_find(sh, NP_ROUTES_HTTPS, "n3.t1.example.com", 17, "", 0, &o),
                   NP_HTTP_ROUTE_NONE);
  np__shared_free(sh);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),          cmocka_unit_test(test_privates),
      cmocka_unit_test(test_users_swap),     cmocka_unit_test(test_ports_clone_and_save),
      cmocka_unit_test(test_counts),         cmocka_unit_test(test_threads),
      cmocka_unit_test(test_routes_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
