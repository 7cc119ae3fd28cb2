/* Frontends: the public listeners visitors connect to, apart from the proxies they lead to. A
 * frontend may be shared: a second proxy that asks for the same address with the same frontend
 * ops joins the one already open, and the ops' accept routes each connection to one of the proxies
 * (an HTTP type by Host, a TLS type by SNI). TCP's ops are not shared: one proxy per port, and a
 * second is told the port is in use, as the bind would. The listener closes with its last proxy. */
#include <stdlib.h>
#include <string.h>

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
  if ((r = np__listen(srv->loop, addr, on_accept, on_accept_failed, fe, &fe->l)) != 0) {
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
