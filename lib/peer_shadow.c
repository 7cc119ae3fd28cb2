/* Shadows (peer.h): worker 0 listens on each TCP port that another server of the cluster holds,
 * by the route table, and forwards each visitor that connects there to that server; on each such
 * UDP port, a socket forwards each visitor address's datagrams (peer_dgram.c). A shadow binds with
 * SO_REUSEPORT and gives way to a client of this server's that registers the port: the proxy binds
 * beside it (proxy_tcp.c, proxy_udp.c) and the next sync closes the shadow, its visitors meanwhile
 * still served through the other server. Only the ports in allow_ports, at most NP_SHADOWS_MAX of
 * both kinds together. */
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "peer.h"

#include "conn_move.h"
#include "proxy.h"
#include "route_store.h"

#define NP_SHADOWS_MAX  1024
#define RETRY_FAILED_MS 30000 /* a port another program holds is tried again after this */

typedef struct shadow {
  UT_hash_handle hh;
  int key; /* port, + 65536 for a UDP one */
  int port, udp;
  np__listener *l; /* TCP */
  np__dshadow *d;  /* UDP */
  np__shadows *set;
} shadow;

struct np__shadows {
  struct np_server *srv;
  shadow *by_port;
  size_t n, closing;                                      /* listeners open, and closing */
  unsigned char want[2][65536 / 8], failed[2][65536 / 8]; /* [0]: TCP, [1]: UDP */
  uint64_t failed_since;
  int said_full;
  void (*done)(void *arg);
  void *done_arg;
};

#define BIT(map, p)     ((map)[(p) >> 3] & (1u << ((p)&7)))
#define SET_BIT(map, p) ((map)[(p) >> 3] |= (unsigned char)(1u << ((p)&7)))

int np__shadows_new(struct np_server *srv, np__shadows **out) {
  np__shadows *set = calloc(1, sizeof(*set));

  if (set == NULL)
    return UV_ENOMEM;
  set->srv = srv;
  *out = set;
  return 0;
}

size_t np__shadows_count(const np__shadows *set) {
  return set != NULL ? set->n + set->closing : 0;
}

static void on_shadow_closed(void *data) {
  shadow *sd = data;
  np__shadows *set = sd->set;

  free(sd);
  set->closing--;
  if (set->closing == 0 && set->n == 0 && set->done != NULL) {
    void (*done)(void *) = set->done;
    void *arg = set->done_arg;
    free(set);
    done(arg);
  }
}

static void shadow_close(np__shadows *set, shadow *sd) {
  HASH_DEL(set->by_port, sd);
  set->n--;
  set->closing++;
  if (sd->udp) /* the port is free on return, either way */
    np__dshadow_close(sd->d, on_shadow_closed, sd);
  else
    np__listener_close(sd->l, on_shadow_closed);
  np__shared_port_shadow(set->srv->shared, sd->udp, sd->port, 0);
}

/* A visitor of another server's port: forwarded there, or (the route gone meanwhile) reset. */
static void on_shadow_visitor(np__listener *l, np_conn *c) {
  shadow *sd = np__listener_data(l);
  struct np_server *srv = sd->set->srv;
  struct sockaddr_storage ss;
  np_msg fwd = {.type = NP_MSG_FORWARD, .kind = NP_PROXY_TCP, .port = (uint16_t)sd->port};
  np__moved mv;

  if (np__conn_peer_addr(c, &ss) == 0)
    np__addr_str((struct sockaddr *)&ss, fwd.name, sizeof(fwd.name));
  else
    strcpy(fwd.name, "0.0.0.0:0");
  if (np__conn_local_addr(c, &ss) == 0)
    np__addr_str((struct sockaddr *)&ss, fwd.addr, sizeof(fwd.addr));
  np__moved_init(&mv);
  if (np__conn_move_out(c, &mv) != 0) {
    np__conn_abort(c, NULL);
    return;
  }
  np__conn_close(c, NULL);                                         /* the socket lives on in mv */
  if (srv->forward == NULL || srv->forward(srv, &fwd, &mv) != 0) { /* peer.c, through the hook */
    srv->stats.visitors_refused++;
    np__moved_free(&mv);
  }
}

static void on_shadow_failed(np__listener *l, int err, uint64_t refused) {
  shadow *sd = np__listener_data(l);
  np__server_accept_error(sd->set->srv, "shadow", sd->port, err, refused);
}

static int want_route(const char *route, const char *owner, void *arg) {
  np__shadows *set = arg;
  int udp = strncmp(route, "udp:", 4) == 0;
  char *end;
  long port;

  (void)owner;
  if (!udp && strncmp(route, "tcp:", 4) != 0)
    return 0;
  port = strtol(route + 4, &end, 10);
  if (*end == '\0' && port > 0 && port <= 65535)
    SET_BIT(set->want[udp], port);
  return 0;
}

/* This server's own ports: never a shadow's, even where another server's clients may take them
 * (a shadow would join their SO_REUSEPORT group and take a share of their connections). Over UDP,
 * the control port's number is the datagram path's. */
static int own_port(const struct np_server *srv, int udp, int port) {
  char host[NP_HOSTPORT_MAX];
  int admin = 0;

  if (udp)
    return port == srv->port;
  if (srv->cfg.admin_bind[0] != '\0')
    np__split_hostport(srv->cfg.admin_bind, host, sizeof(host), &admin);
  return port == srv->port || port == srv->cfg.vhost_http_port ||
         port == srv->cfg.vhost_https_port || (admin != 0 && port == admin);
}

static void shadow_open(np__shadows *set, int udp, int port) {
  struct np_server *srv = set->srv;
  const char *addr = srv->cfg.proxy_bind_addr;
  struct sockaddr_storage ss;
  char spec[NP_MSG_NAME_MAX + 16];
  shadow *sd;
  int r;

  if (set->n >= NP_SHADOWS_MAX) {
    if (!set->said_full)
      np__log(&srv->log, NP_LOG_WARN,
              "cluster: more than %d TCP and UDP ports held by other servers; visitors of the rest "
              "reach them only there",
              NP_SHADOWS_MAX);
    set->said_full = 1;
    return;
  }
  snprintf(spec, sizeof(spec), strchr(addr, ':') ? "[%s]:%d" : "%s:%d", addr, port);
  if (np__parse_addr(spec, &ss) != 0 || (sd = calloc(1, sizeof(*sd))) == NULL)
    return;
  if (np__shared_port_shadow(srv->shared, udp, port, 1) != 0) {
    free(sd); /* a proxy of ours took it meanwhile */
    return;
  }
  sd->port = port;
  sd->udp = udp;
  sd->key = port + (udp ? 65536 : 0);
  sd->set = set;
  if ((r = udp ? np__dshadow_open(srv, (struct sockaddr *)&ss, port, &sd->d)
               : np__listen_flags(srv->loop, (struct sockaddr *)&ss, NP_LISTEN_REUSEPORT,
                                  on_shadow_visitor, on_shadow_failed, sd, &sd->l)) != 0) {
    np__shared_port_shadow(srv->shared, udp, port, 0);
    np__log(&srv->log, NP_LOG_DEBUG,
            "cluster: cannot %s %s for another server's proxy: %s (tried again in %ds)",
            udp ? "bind UDP" : "listen on", spec, np_strerror(r), RETRY_FAILED_MS / 1000);
    SET_BIT(set->failed[udp], port);
    free(sd);
    return;
  }
  if (!udp)
    np__server_listener_pp(srv, sd->l);
  HASH_ADD_INT(set->by_port, key, sd);
  set->n++;
  np__log(&srv->log, NP_LOG_DEBUG, "cluster: %sport %d forwards to the server that holds it",
          udp ? "UDP " : "", port);
}

void np__shadows_sync(np__shadows *set) {
  struct np_server *srv = set->srv;
  uint64_t now = uv_now(srv->loop);
  shadow *sd, *tmp;
  unsigned widx;

  if (set->done != NULL)
    return; /* closing */
  if (now - set->failed_since >= RETRY_FAILED_MS) {
    memset(set->failed, 0, sizeof(set->failed));
    set->failed_since = now;
  }
  memset(set->want, 0, sizeof(set->want));
  np__routes_foreach(srv, want_route, set);
  HASH_ITER(hh, set->by_port, sd, tmp) {
    int mine = np__shared_port_holder(srv->shared, sd->udp, sd->port, &widx) == 0;
    if (!mine && BIT(set->want[sd->udp], sd->port)) {
      if (sd->udp)
        np__dshadow_sweep(sd->d); /* its idle flows */
      continue;
    }
    int udp = sd->udp, port = sd->port;
    /* Closed first, then said: whoever reads the line (an operator, a test) may count on the
     * shadow's socket being gone, so a datagram sent after it reaches the proxy's own socket. */
    shadow_close(set, sd);
    np__log(&srv->log, NP_LOG_DEBUG, "cluster: %sport %d %s", udp ? "UDP " : "", port,
            mine ? "is a proxy's of this server now: it no longer forwards"
                 : "is no other server's any more");
  }
  for (int udp = 0; udp < 2; udp++)
    for (int port = 1; port <= 65535; port++) {
      int key = port + (udp ? 65536 : 0);
      if (!BIT(set->want[udp], port) || BIT(set->failed[udp], port) || own_port(srv, udp, port) ||
          !np__ports_allow(&srv->cfg.allow_ports, port))
        continue;
      HASH_FIND_INT(set->by_port, &key, sd);
      if (sd == NULL && np__shared_port_holder(srv->shared, udp, port, &widx) != 0)
        shadow_open(set, udp, port);
    }
}

void np__shadows_close(np__shadows *set, void (*done)(void *arg), void *arg) {
  shadow *sd, *tmp;

  if (set == NULL) {
    done(arg);
    return;
  }
  set->done = done;
  set->done_arg = arg;
  HASH_ITER(hh, set->by_port, sd, tmp) {
    shadow_close(set, sd);
  }
  if (set->closing == 0) {
    free(set);
    done(arg);
  }
}
