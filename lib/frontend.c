/* Frontends: the public listeners visitors connect to, apart from the proxies they lead to. A
 * frontend may be shared: a second proxy that asks for the same address with the same frontend
 * ops joins the one already open, and the ops' accept routes each connection to one of the proxies
 * (an HTTP type by Host, a TLS type by SNI). TCP's ops are not shared: one proxy per port, and a
 * second is told the port is in use, as the bind would. The listener closes with its last proxy. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn_move.h"
#include "proxy.h"

struct np__frontend {
  struct np_server *srv;
  const np__frontend_ops *ops;
  np__listener *l;
  struct sockaddr_storage addr; /* as asked (its port 0: the listener's is in port) */
  int port;
  proxy *proxies; /* linked through fe_next, newest first */
  proxy *last;    /* the proxy whose leaving closes the listener */
  np__frontend *prev, *next;
};

static socklen_t addr_len(const struct sockaddr *a) {
  return a->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int port_of(const struct sockaddr *a) {
  return ntohs(a->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
                                        : ((const struct sockaddr_in *)a)->sin_port);
}

static void on_accept(np__listener *l, np_conn *c) {
  np__frontend *fe = np__listener_data(l);
  fe->ops->accept(fe, c);
}

static void on_accept_failed(np__listener *l, int err, uint64_t refused) {
  np__frontend *fe = np__listener_data(l);
  np__server_accept_error(fe->srv, fe->proxies != NULL ? fe->proxies->name : fe->ops->name,
                          fe->port, err, refused);
}

static void attach(np__frontend *fe, proxy *px) {
  px->fe = fe;
  px->fe_next = fe->proxies;
  fe->proxies = px;
  px->port = fe->port;
}

int np__frontend_attach(proxy *px, const struct sockaddr *addr, const np__frontend_ops *ops) {
  return np__frontend_attach_flags(px, addr, ops, 0);
}

proxy *np__frontend_find(struct np_server *srv, int port, const np__frontend_ops *ops) {
  for (np__frontend *fe = srv->frontends; fe != NULL; fe = fe->next)
    if (fe->ops == ops && fe->port == port)
      return fe->proxies;
  return NULL;
}

int np__frontend_attach_flags(proxy *px, const struct sockaddr *addr, const np__frontend_ops *ops,
                              unsigned flags) {
  struct np_server *srv = px->srv;
  np__frontend *fe;
  int r;

  if (port_of(addr) != 0) {
    for (fe = srv->frontends; fe != NULL; fe = fe->next) {
      if (!np__addr_equal((const struct sockaddr *)&fe->addr, addr))
        continue;
      if (fe->ops != ops || !ops->shared)
        return UV_EADDRINUSE; /* what the bind would say */
      attach(fe, px);
      return 0;
    }
  }
  if ((fe = calloc(1, sizeof(*fe))) == NULL)
    return UV_ENOMEM;
  fe->srv = srv;
  fe->ops = ops;
  memcpy(&fe->addr, addr, addr_len(addr));
  if ((r = np__listen_flags(srv->loop, addr, flags, on_accept, on_accept_failed, fe, &fe->l)) !=
      0) {
    free(fe);
    return r;
  }
  fe->port = np__listener_port(fe->l);
  np__server_listener_pp(srv, fe->l);
  NP_DLIST_PUSH(srv->frontends, fe, prev, next);
  attach(fe, px);
  return 0;
}

static void on_listener_closed(void *data) {
  np__frontend *fe = data;
  proxy *px = fe->last;
  free(fe);
  np__proxy_closed(px);
}

void np__frontend_detach(proxy *px) {
  np__frontend *fe = px->fe;
  proxy **pp = &fe->proxies;

  while (*pp != px)
    pp = &(*pp)->fe_next;
  *pp = px->fe_next;
  px->fe = NULL;
  if (fe->proxies != NULL) {
    np__proxy_closed(px); /* the others keep the listener */
    return;
  }
  NP_DLIST_UNLINK(fe->srv->frontends, fe, prev, next);
  fe->last = px;
  np__listener_close(fe->l, on_listener_closed);
}

proxy *np__frontend_proxies(const np__frontend *fe) {
  return fe->proxies;
}

int np__port_forwarded(struct np_server *srv, np_conn *c, int udp, int port,
                       const struct sockaddr *from, const struct sockaddr *to,
                       np__port_arrive_fn arrive) {
  unsigned widx;
  np__addr peer;

  if (np__shared_port_holder(srv->shared, udp, port, &widx) != 0)
    return UV_ENOENT;
  if (widx == srv->widx)
    return arrive(srv, c, port, from, to);
  memset(&peer, 0, sizeof(peer));
  if (from != NULL)
    np__addr_copy(&peer, from);
  return np__server_bridge(srv, c, &peer, NULL, 0, widx, udp ? NP_MOVE_UDP : NP_MOVE_TCP,
                           (unsigned)port);
}

void np__port_adopt(struct np_server *srv, np_conn *c, int port, np__port_arrive_fn arrive) {
  struct sockaddr_storage ss;
  const struct sockaddr *from = np__conn_peer_addr(c, &ss) == 0 ? (struct sockaddr *)&ss : NULL;

  if (arrive(srv, c, port, from, NULL) != 0)
    np__conn_abort(c, NULL);
}

static void on_bridge_end(struct np_join *j, int status, const np_join_stats *stats) {
  (void)status;
  (void)stats;
  np__server_unref(np_join_get_data(j));
}

int np__server_bridge(struct np_server *srv, np_conn *c, const np__addr *peer, const char *pre,
                      size_t len, unsigned widx, int table, unsigned hops) {
  struct np_join *j;
  np_conn *near;
  np__moved mv;
  int sv[2], r;

  if (srv->group_visitor == NULL)
    return UV_ENOTSUP;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return uv_translate_sys_error(errno);
  if ((r = np__conn_tcp_new(srv->loop, &near)) != 0) {
    close(sv[0]);
    close(sv[1]);
    return r;
  }
  /* libuv's TCP handle carries any stream socket; the far end arrives as a moved TCP conn does. */
  if ((r = uv_tcp_open(np__conn_tcp_handle(near), sv[0])) != 0) {
    np__conn_close(near, NULL);
    close(sv[0]);
    close(sv[1]);
    return r;
  }
  np__moved_init(&mv);
  mv.fd = sv[1];
  if (peer->sa.sa_family == AF_INET)
    memcpy(&mv.peer, &peer->in, sizeof(peer->in));
  else if (peer->sa.sa_family == AF_INET6)
    memcpy(&mv.peer, &peer->in6, sizeof(peer->in6));
  if (len > 0 && (mv.pre = malloc(len)) == NULL) {
    np__moved_free(&mv);
    np__conn_close(near, NULL);
    return UV_ENOMEM;
  }
  if (len > 0)
    memcpy(mv.pre, pre, len);
  mv.pre_len = len;
  if ((r = srv->group_visitor(srv, widx, table, hops, &mv)) != 0) {
    np__moved_free(&mv);
    np__conn_close(near, NULL);
    return r;
  }
  /* The far end is on its way: from here c is relayed to it, or (out of memory) the far end sees
   * its connection end at once. */
  if ((r = np__join(c, near, NULL, 0, NULL, on_bridge_end, srv, &j)) != 0) {
    np__conn_close(near, NULL);
    return r;
  }
  srv->refs++; /* the relay's, until on_bridge_end: its stream ends when the peer's link does */
  srv->stats.conns_moved++;
  return 0;
}
