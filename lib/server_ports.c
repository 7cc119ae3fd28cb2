/* Stable port-0 ports (remember_ports, docs/config.md): the server's port memory (port_memory.c)
 * kept in its state directory, read at start, written a second after a change and at close. */
#include "server.h"

#include <stdio.h>
#include <string.h>

#include "port_memory.h"
#include "tls_cert.h"

/* Changes come in bursts (every client after a restart): written once a second at most. */
#define PORTS_SAVE_DELAY_MS 1000

static void save(struct np_server *srv) {
  int r;
  if (!srv->ports_dirty)
    return;
  srv->ports_dirty = 0;
  if ((r = np__port_memory_save(srv->ports, srv->ports_path)) != 0 && !srv->ports_save_failed) {
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
  struct np_server *srv = h->data;
  np__port_memory_free(srv->ports);
  srv->ports = NULL;
  np__server_unref(srv);
}

void np__server_ports_start(struct np_server *srv) {
  char dir[1024], err[600];
  int r;

  if (!srv->cfg.remember_ports || np__port_memory_new(NP_PORT_MEMORY_MAX, &srv->ports) != 0)
    return;
  uv_timer_init(srv->loop, &srv->ports_timer);
  uv_unref((uv_handle_t *)&srv->ports_timer); /* a pending save does not keep the loop alive */
  srv->ports_timer.data = srv;
  srv->refs++;
  if (srv->cfg.tls_dir[0] != '\0')
    np__strlcpy(dir, srv->cfg.tls_dir, sizeof(dir));
  else if (np__tls_state_dir(dir, sizeof(dir)) != 0)
    return; /* no state directory: remembered while it runs */
  if ((size_t)snprintf(srv->ports_path, sizeof(srv->ports_path), "%s/ports", dir) >=
      sizeof(srv->ports_path)) {
    srv->ports_path[0] = '\0';
    return;
  }
  if ((r = np__port_memory_load(srv->ports, srv->ports_path, err, sizeof(err))) != 0)
    np__log(&srv->log, NP_LOG_WARN, "remembered ports: %s, skipped; %zu read", err,
            np__port_memory_count(srv->ports));
  else if (np__port_memory_count(srv->ports) > 0)
    np__log(&srv->log, NP_LOG_INFO, "remembered ports: %zu from %s",
            np__port_memory_count(srv->ports), srv->ports_path);
}

void np__server_ports_stop(struct np_server *srv) {
  if (srv->ports == NULL)
    return;
  if (srv->ports_path[0] != '\0')
    save(srv);
  uv_close((uv_handle_t *)&srv->ports_timer, on_timer_closed);
}

int np__server_ports_recall(struct np_server *srv, const session *s, const char *pname) {
  return srv->ports != NULL && s != NULL ? np__port_memory_recall(srv->ports, s->name, pname) : 0;
}

void np__server_ports_note(struct np_server *srv, const session *s, const char *pname, int port) {
  if (srv->ports == NULL || s == NULL || srv->closing)
    return;
  if (np__port_memory_note(srv->ports, s->name, pname, port) == 1 && srv->ports_path[0] != '\0') {
    srv->ports_dirty = 1;
    if (!uv_is_active((uv_handle_t *)&srv->ports_timer))
      uv_timer_start(&srv->ports_timer, on_save_timer, PORTS_SAVE_DELAY_MS, 0);
  }
}
