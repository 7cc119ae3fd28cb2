/* The TCP proxy type: a public listener (frontend.c, not shared) per proxy; each accepted
 * connection is a visitor, joined with its work connection by the relay (join.c) and logged in the
 * access log when it ends. */
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "proxy.h"

/* A join of a visitor with its work connection, tracked by its session (which cuts it short when
 * it ends) until the relay is done. */
typedef struct active {
  np__track t;
  struct np_server *srv;
  struct np_join *join;
  /* For its access log line, which comes after its proxy and its visitor's conn may be gone. */
  uint64_t since;
  np__addr visitor_addr;
  np__meter meter;
  char proxy[NP_MSG_NAME_MAX + 1];
  const char *end; /* how it ended when the join's status cannot tell (local_failed), or NULL */
} active;

/* One proxy per port (not shared), so the frontend's proxy is the visitor's. */
static void on_visitor(np__frontend *fe, np_conn *c) {
  proxy *px = np__frontend_proxies(fe);
  struct sockaddr_storage ss, ls;
  const struct sockaddr *from = np__conn_peer_addr(c, &ss) == 0 ? (struct sockaddr *)&ss : NULL;
  const struct sockaddr *to = np__conn_local_addr(c, &ls) == 0 ? (struct sockaddr *)&ls : NULL;

  px->srv->stats.visitors_total++;
  if (!np__proxy_admits(px, from)) {
    np__conn_abort(c, NULL);
    return;
  }
  if (np__visitor_arrive(px, c, from, to) != 0) {
    px->srv->stats.visitors_refused++;
    np__conn_close(c, NULL);
  }
}

static void on_closed_unref(np_conn *c) {
  np__server_unref(c->data);
}

void np__tcp_drop(visitor *v, const char *end) {
  np_conn *c = v->impl;
  np__access_log(v->srv, v->px->name, &v->addr, v->since, 0, 0, end);
  v->srv->refs++; /* until the conn is closed */
  c->data = v->srv;
  np__conn_close(c, on_closed_unref);
}

static void on_join_done(struct np_join *j, int status, const np_join_stats *st) {
  active *a = np_join_get_data(j);
  struct np_server *srv = a->srv;
  char end[48];

  /* a = work connection, b = visitor (see np__tcp_join); the bytes are counted already. */
  np__log(&srv->log, NP_LOG_DEBUG, "join done: %s, %llu %s to visitor, %llu from visitor",
          np_strerror(status), (unsigned long long)st->a_to_b,
          np__plural(st->a_to_b, "byte", "bytes"), (unsigned long long)st->b_to_a);
  np__access_log(srv, a->proxy, &a->visitor_addr, a->since, st->b_to_a, st->a_to_b,
                 a->end != NULL ? a->end : np__join_end(status, end, sizeof(end)));
  np__track_remove(&a->t);
  np__meter_end(&a->meter);
  free(a);
  np__server_unref(srv);
}

static void abort_join(np__track *t) {
  np__join_abort(((active *)t)->join);
}

static void note_end(np__track *t, const char *end) {
  ((active *)t)->end = end;
}

/* Join a work connection with its visitor; rest holds bytes the client sent after its WORK header.
 */
int np__tcp_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len) {
  struct np_server *srv = v->srv;
  np_conn *vc = v->impl;
  active *a = calloc(1, sizeof(*a));
  int r = UV_ENOMEM;

  if (a != NULL) {
    a->srv = srv;
    a->t.id = v->id;
    a->t.tag = v->px;
    a->t.abort = abort_join;
    a->t.note = note_end;
    a->since = v->since;
    a->visitor_addr = v->addr;
    np__strlcpy(a->proxy, v->px->name, sizeof(a->proxy));
    r = np__join(work, vc, rest, rest_len, &srv->chunks, on_join_done, a, &a->join);
  }
  if (r == 0) {
    /* Counted as they flow, so the stats show a long transfer while it runs. a = work connection,
     * b = visitor: a_to_b is out, b_to_a in. */
    np__tally in, out;
    a->meter = v->meter;
    np__meter_tally(&a->meter, &in, &out);
    np__join_count_into(a->join, &out, &in);
  }
  if (r != 0) {
    char end[48];
    np__log(&srv->log, NP_LOG_ERROR, "cannot join visitor: %s", np_strerror(r));
    np__access_log(srv, v->px->name, &v->addr, v->since, 0, 0, np__join_end(r, end, sizeof(end)));
    free(a);
    np__conn_close(work, NULL);
    np__conn_close(vc, NULL);
    return r;
  }
  srv->refs++; /* the join's, until on_join_done */
  np__session_track(s, &a->t);
  return 0;
}

static const np__frontend_ops frontend = {.name = "tcp", .accept = on_visitor};

static int port_of(const struct sockaddr *a) {
  return ntohs(a->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
                                        : ((const struct sockaddr_in *)a)->sin_port);
}

/* The port goes in the server-wide table of TCP ports first: a proxy of another worker that holds
 * it is refused here as the bind would refuse it, and a shadow (a listener forwarding the port's
 * visitors to another server of the cluster, peer.c) gives way: the proxy binds beside it
 * (SO_REUSEPORT), and the shadow closes once it sees the port held. */
static int tcp_open(proxy *px, const struct sockaddr *addr) {
  struct np_server *srv = px->srv;
  int port = port_of(addr), shadowed = 0, r;

  if (port != 0 && (r = np__shared_tcp_claim(srv->shared, port, srv->widx, &shadowed)) != 0)
    return r;
  r = np__frontend_attach(px, addr, &frontend);
  if (r == UV_EADDRINUSE && shadowed)
    r = np__frontend_attach_flags(px, addr, &frontend, NP_LISTEN_REUSEPORT);
  if (r != 0) {
    if (port != 0)
      np__shared_tcp_release(srv->shared, port, srv->widx);
    return r;
  }
  if (port == 0) /* the kernel picked a free port: nobody holds it */
    np__shared_tcp_take(srv->shared, px->port, srv->widx);
  return 0;
}

/* The port is let go once its socket is closed (the detach closes it at once), so that a shadow
 * that binds it next finds it free. */
static void tcp_close(proxy *px) {
  struct np_server *srv = px->srv;
  int port = px->port;

  srv->refs++; /* the detach may free px, and with it the last reference */
  np__frontend_detach(px);
  np__shared_tcp_release(srv->shared, port, srv->widx);
  np__server_unref(srv);
}

/* A visitor of this loop's proxy on port, from another server of the cluster (or bridged here from
 * the worker that holds that server's link). */
static int arrive_forwarded(struct np_server *srv, np_conn *c, int port,
                            const struct sockaddr *from, const struct sockaddr *to) {
  proxy *px = np__frontend_find(srv, port, &frontend);

  if (px == NULL)
    return UV_ENOENT;
  srv->stats.visitors_total++;
  if (!np__proxy_admits(px, from)) {
    np__conn_abort(c, NULL);
    return 0;
  }
  if (np__visitor_arrive(px, c, from, to) != 0) {
    srv->stats.visitors_refused++;
    np__conn_close(c, NULL);
  }
  return 0;
}

static int tcp_forwarded(struct np_server *srv, np_conn *c, const np_msg *fwd,
                         const struct sockaddr *from, const struct sockaddr *to) {
  return np__port_forwarded(srv, c, 0, fwd->port, from, to, arrive_forwarded);
}

static void tcp_adopt(struct np_server *srv, np_conn *c, const char *pre, size_t len,
                      unsigned port) {
  (void)pre;
  (void)len;
  np__port_adopt(srv, c, (int)port, arrive_forwarded);
}

const np__proxy_type np__proxy_tcp = {
    .name = "tcp",
    .kind = NP_PROXY_TCP,
    .open = tcp_open,
    .close = tcp_close,
    .join = np__tcp_join,
    .drop = np__tcp_drop,
    .forwarded = tcp_forwarded,
    .adopt = tcp_adopt,
};
