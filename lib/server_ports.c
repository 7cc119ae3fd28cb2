/* Stable port-0 ports (remember_ports, docs/config.md): the server's port memory (port_memory.c)
 * kept in its state directory, read at start, written a second after a change and at close. */
#include "server.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "port_memory.h"
#include "tls_cert.h"

/* Changes come in bursts (every client after a restart): written once a second at most. */
#define PORTS_SAVE_DELAY_MS 1000

/* Written from a copy taken under the shared lock (only when the table changed since the last
 * one), so the lock is never held across the file's I/O. */
static void save(struct np_server *srv) {
  /* The workers of a group (np_server_group) save the one table they share, each from its own
   * thread: copy and write under one lock, so the file is never written by two at once and a copy
   * taken later is never overwritten by one taken before. */
  static pthread_mutex_t save_mu = PTHREAD_MUTEX_INITIALIZER;
  np__port_memory *copy;
  int r;

  pthread_mutex_lock(&save_mu);
  if ((r = np__shared_ports_clone(srv->shared, 0, &copy)) == 0 && copy == NULL) {
    pthread_mutex_unlock(&save_mu);
    return;
  }
  if (r == 0) {
    r = np__port_memory_save(copy, srv->ports_path);
    np__port_memory_free(copy);
  }
  pthread_mutex_unlock(&save_mu);
  if (r != 0 && !srv->ports_save_failed) {
    srv->ports_save_failed = 1; /* said once: it would repeat at every change */
    np__log(&srv->log, NP_LOG_WARN,
            "cannot write %s: %s; the ports given to port-0 proxies are remembered until the "
            "server stops only",
            srv->ports_path, np_strerror(r));
  }
}

static void on_save_timer(uv_timer_t *t) {
  save(t->data);
}

static void on_timer_closed(uv_handle_t *h) {
  np__server_unref(h->data); /* the table is the shared state's, freed with it */
}

/* The file's path in the state directory: 0, or -1 when there is none (remembered while it runs).
 */
static int ports_path(struct np_server *srv) {
  char dir[1024];

  if (srv->cfg.tls_dir[0] != '\0')
    np__strlcpy(dir, srv->cfg.tls_dir, sizeof(dir));
  else if (np__tls_state_dir(dir, sizeof(dir)) != 0)
    return -1;
  if ((size_t)snprintf(srv->ports_path, sizeof(srv->ports_path), "%s/ports", dir) >=
      sizeof(srv->ports_path)) {
    srv->ports_path[0] = '\0';
    return -1;
  }
  return 0;
}

void np__server_ports_start(struct np_server *srv) {
  np__port_memory *m;
  char err[600];
  int r;

  if (!srv->cfg.remember_ports || np__port_memory_new(NP_PORT_MEMORY_MAX, &m) != 0)
    return;
  uv_timer_init(srv->loop, &srv->ports_timer);
  uv_unref((uv_handle_t *)&srv->ports_timer); /* a pending save does not keep the loop alive */
  srv->ports_timer.data = srv;
  srv->refs++;
  srv->ports_on = 1;
  if (srv->widx > 0) {
    /* A group's worker 0 read the table into the state they share; the others note and save. */
    np__port_memory_free(m);
    ports_path(srv);
    return;
  }
  /* Read before it is shared: nobody else can see it yet. */
  if (ports_path(srv) == 0) {
    if ((r = np__port_memory_load(m, srv->ports_path, err, sizeof(err))) != 0)
      np__log(&srv->log, NP_LOG_WARN, "remembered ports: %s, skipped; %zu read", err,
              np__port_memory_count(m));
    else if (np__port_memory_count(m) > 0)
      np__log(&srv->log, NP_LOG_INFO, "remembered ports: %zu from %s", np__port_memory_count(m),
              srv->ports_path);
  }
  np__shared_ports_set(srv->shared, m);
}

void np__server_ports_stop(struct np_server *srv) {
  if (!srv->ports_on)
    return;
  srv->ports_on = 0;
  if (srv->ports_path[0] != '\0')
    save(srv);
  uv_close((uv_handle_t *)&srv->ports_timer, on_timer_closed);
}

int np__server_ports_recall(struct np_server *srv, const session *s, const char *pname) {
  return s != NULL ? np__shared_ports_recall(srv->shared, s->name, pname) : 0; /* off: 0 */
}

void np__server_ports_note(struct np_server *srv, const session *s, const char *pname, int port) {
  if (!srv->ports_on || s == NULL || srv->closing)
    return;
  if (np__shared_ports_note(srv->shared, s->name, pname, port) == 1 && srv->ports_path[0] != '\0' &&
      !uv_is_active((uv_handle_t *)&srv->ports_timer))
    uv_timer_start(&srv->ports_timer, on_save_timer, PORTS_SAVE_DELAY_MS, 0);
}
