/* The HTTPS proxy type (type = https): one public port for all of them, vhost_https_port, where
 * each TLS connection goes to the proxy that claimed the server name (SNI) of its ClientHello,
 * read without terminating TLS (tls_sni.c): the certificate and the keys stay with the private
 * service. Once routed, a visitor is a TCP proxy's: the ClientHello goes first, then bytes both
 * ways (np__tcp_join). A connection without a name, with a name nobody claimed, or that is not TLS
 * is closed (after a TLS alert when it spoke TLS) and counted as refused. */
#include <stdlib.h>
#include <string.h>

#include "tls_sni.h"
#include "vhost.h"

#define HELLO_TIMEOUT_MS 10000 /* for the ClientHello to arrive */

typedef struct sconn sconn;

/* A visitor's connection until its ClientHello is read and routed. */
struct sconn {
  np__vhost *vh;
  np_conn *c;
  np__sni_reader sni;
  char *buf; /* the bytes read so far, forwarded as they came */
  size_t len;
  uint64_t deadline;
  np__addr addr, to;
  unsigned hops;      /* moves between workers (NP_VHOST_HOPS_MAX) */
  unsigned from_peer; /* forwarded here by another server of the cluster: never forwarded on */
  int listed;         /* in vh->conns */
  sconn *prev, *next;
};

#define CONNS(vh) (*(sconn **)&(vh)->conns)

static np__vhost *vhost_of(struct np_server *srv) {
  return srv->type_data[NP_PROXY_HTTPS];
}

static void unlist(sconn *sc) {
  if (sc->listed)
    NP_DLIST_UNLINK(CONNS(sc->vh), sc, prev, next);
  sc->listed = 0;
}

/* Frees sc and lets go of what it holds (the vhost, a server reference). */
static void sconn_free(sconn *sc) {
  np__vhost *vh = sc->vh;
  struct np_server *srv = vh->srv;
  unlist(sc);
  np__sni_free(&sc->sni);
  free(sc->buf);
  free(sc);
  np__vhost_unref(vh);
  np__server_unref(srv);
}

static void on_closed(np_conn *c) {
  sconn_free(c->data);
}

/* Turn a connection away; a TLS one hears why first (a fatal unrecognized_name alert, RFC 6066
 * §3), so a browser says "no such site" rather than "connection reset". */
static void refuse(sconn *sc, const char *why, int alert) {
  static const char unrecognized_name[] = {0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x70};
  struct np_server *srv = sc->vh->srv;
  char who[64] = "?";

  if (sc->addr.sa.sa_family != 0)
    np__addr_str(&sc->addr.sa, who, sizeof(who));
  np__log(&srv->log, NP_LOG_DEBUG, "https: %s from %s, closed", why, who);
  srv->stats.visitors_refused++;
  unlist(sc);
  np__conn_read_stop(sc->c);
  if (alert)
    np__conn_try_write(sc->c, unrecognized_name, sizeof(unrecognized_name));
  np__conn_close(sc->c, on_closed);
}

static void route(sconn *sc) {
  np__vhost *vh = sc->vh;
  struct np_server *srv = vh->srv;
  const char *name = np__sni_name(&sc->sni);
  unsigned widx;
  proxy *px;
  int found = np__vhost_find(vh, name, strlen(name), "", 0, &px, &widx);
  char why[NP_SNI_NAME_MAX + 48];

  if (found != NP_HTTP_ROUTE_FOUND && !sc->from_peer) {
    /* Another server of the cluster may hold it (route_store, cluster_token). */
    np__conn_read_stop(sc->c);
    if (np__vhost_to_peer(vh, sc->c, &sc->addr, &sc->to, name, strlen(name), sc->buf, sc->len) ==
        0) {
      unlist(sc);
      np__conn_close(sc->c, on_closed);
      return;
    }
  }
  if (found != NP_HTTP_ROUTE_FOUND) {
    snprintf(why, sizeof(why), "%s name %s",
             found == NP_HTTP_ROUTE_GONE ? "the client gone for" : "no proxy for", name);
    refuse(sc, why, 1);
    return;
  }
  if (px == NULL && sc->from_peer) {
    /* another worker's, and a stream of a peer's connection: bridged there */
    np__conn_read_stop(sc->c);
    if (np__vhost_bridge(vh, sc->c, &sc->addr, sc->buf, sc->len, widx) != 0) {
      snprintf(why, sizeof(why), "cannot hand name %s to worker %u", name, widx);
      refuse(sc, why, 1);
      return;
    }
    unlist(sc);
    sconn_free(sc); /* the relay has its conn */
    return;
  }
  if (px == NULL) {
    /* another worker's: the connection goes there with the ClientHello read so far */
    np__conn_read_stop(sc->c);
    if (sc->hops >= NP_VHOST_HOPS_MAX ||
        np__vhost_hand(vh, sc->c, &sc->addr, sc->buf, sc->len, widx, sc->hops + 1) != 0) {
      snprintf(why, sizeof(why), "cannot hand name %s to worker %u", name, widx);
      refuse(sc, why, 1);
      return;
    }
    unlist(sc);
    np__conn_close(sc->c, on_closed);
    return;
  }
  srv->stats.visitors_total++;
  if (!np__proxy_admits(px, sc->addr.sa.sa_family != 0 ? &sc->addr.sa : NULL)) {
    unlist(sc);
    np__conn_abort(sc->c, on_closed);
    return;
  }
  np__conn_read_stop(sc->c);
  unlist(sc);
  if (np__visitor_arrive(px, sc, sc->addr.sa.sa_family != 0 ? &sc->addr.sa : NULL,
                         sc->to.sa.sa_family != 0 ? &sc->to.sa : NULL) != 0) {
    srv->stats.visitors_refused++;
    np__conn_close(sc->c, on_closed);
  }
}

static void on_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  sconn *sc = c->data;
  (void)suggested;
  if (sc->buf == NULL)
    sc->buf = malloc(NP_SNI_MAX_INPUT);
  if (sc->buf == NULL || sc->len == NP_SNI_MAX_INPUT)
    *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: closed below */
  else
    *buf = uv_buf_init(sc->buf + sc->len, (unsigned)(NP_SNI_MAX_INPUT - sc->len));
}

/* What np__sni_feed said of the bytes so far. */
static void fed(sconn *sc, int r) {
  if (r == NP_SNI_FOUND)
    route(sc);
  else if (r == NP_SNI_NONE)
    refuse(sc, "a ClientHello without a server name", 1);
  else if (r < 0)
    refuse(sc, r == NP_ENOTLS ? "not TLS" : np_strerror(r), r != NP_ENOTLS);
}

static void on_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  sconn *sc = c->data;
  int r;

  (void)buf;
  if (nread == 0)
    return;
  if (nread < 0) {
    unlist(sc);
    np__conn_read_stop(c);
    np__conn_close(c, on_closed);
    return;
  }
  r = np__sni_feed(&sc->sni, sc->buf + sc->len, (size_t)nread);
  sc->len += (size_t)nread;
  fed(sc, r);
}

/* A visitor's connection, accepted here or handed over by another worker: NULL when out of
 * memory (c is then aborted). */
static sconn *take(np__vhost *vh, np_conn *c) {
  struct np_server *srv = vh->srv;
  struct sockaddr_storage ss;
  sconn *sc = calloc(1, sizeof(*sc));

  if (sc == NULL) {
    np__conn_abort(c, NULL);
    return NULL;
  }
  sc->vh = vh;
  sc->c = c;
  c->data = sc;
  np__sni_init(&sc->sni);
  if (np__conn_peer_addr(c, &ss) == 0)
    np__addr_copy(&sc->addr, (struct sockaddr *)&ss);
  if (np__conn_local_addr(c, &ss) == 0)
    np__addr_copy(&sc->to, (struct sockaddr *)&ss);
  sc->deadline = uv_now(srv->loop) + HELLO_TIMEOUT_MS;
  srv->refs++; /* until sconn_free */
  np__vhost_ref(vh);
  sc->listed = 1;
  NP_DLIST_PUSH(CONNS(vh), sc, prev, next);
  return sc;
}

static void on_visitor(np__listener *l, np_conn *c) {
  sconn *sc = take(np__listener_data(l), c);

  if (sc != NULL && np__conn_read_start(c, on_alloc, on_read) != 0) {
    unlist(sc);
    np__conn_close(c, on_closed);
  }
}

/* From another worker, which read the ClientHello (pre): it is read again here, then routed. */
static void https_adopt(struct np_server *srv, np_conn *c, const char *pre, size_t len,
                        unsigned hops) {
  np__vhost *vh = vhost_of(srv);
  sconn *sc;
  int r;

  if (vh == NULL) {
    np__conn_abort(c, NULL);
    return;
  }
  if ((sc = take(vh, c)) == NULL)
    return;
  sc->hops = hops;
  if (hops >= NP_VHOST_FROM_PEER) { /* bridged here from a peer's stream (np__vhost_bridge) */
    sc->from_peer = 1;
    sc->hops = NP_VHOST_HOPS_MAX;
  }
  if (len > NP_SNI_MAX_INPUT || (sc->buf = malloc(NP_SNI_MAX_INPUT)) == NULL) {
    unlist(sc);
    np__conn_abort(c, on_closed);
    return;
  }
  memcpy(sc->buf, pre, len);
  sc->len = len;
  r = np__sni_feed(&sc->sni, sc->buf, len);
  if (r == NP_SNI_MORE && np__conn_read_start(c, on_alloc, on_read) != 0) {
    unlist(sc);
    np__conn_close(c, on_closed);
    return;
  }
  fed(sc, r);
}

/* From another server of the cluster (peer_serve.c): c is a stream of its connection. */
static int https_forwarded(struct np_server *srv, np_conn *c, const np_msg *fwd,
                           const struct sockaddr *from, const struct sockaddr *to) {
  np__vhost *vh = vhost_of(srv);
  sconn *sc;

  (void)fwd;
  if (vh == NULL)
    return UV_ENOENT;
  if ((sc = take(vh, c)) == NULL)
    return 0; /* out of memory: c was aborted */
  sc->from_peer = 1;
  sc->hops = NP_VHOST_HOPS_MAX; /* a stream cannot move to another worker */
  if (from != NULL)
    np__addr_copy(&sc->addr, from);
  if (to != NULL)
    np__addr_copy(&sc->to, to);
  if (np__conn_read_start(c, on_alloc, on_read) != 0) {
    unlist(sc);
    np__conn_close(c, on_closed);
  }
  return 0;
}

static void on_tick(np__vhost *vh, uint64_t now) {
  sconn *next;
  for (sconn *sc = CONNS(vh); sc != NULL; sc = next) {
    next = sc->next;
    if (now >= sc->deadline)
      refuse(sc, "no ClientHello within 10s", 0);
  }
}

/* ---- joins: the visitor becomes a TCP proxy's ------------------------------------------------ */

typedef struct hello_write {
  np_conn_write w;
  char *buf;
} hello_write;

static void on_hello_written(np_conn_write *req, int status) {
  hello_write *hw = (hello_write *)req;
  (void)status; /* a failure ends the join that follows it */
  free(hw->buf);
  free(hw);
}

static int https_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len) {
  sconn *sc = v->impl;
  hello_write *hw = malloc(sizeof(*hw));
  struct np_server *srv = v->srv;
  uv_buf_t b = uv_buf_init(sc->buf, (unsigned)sc->len);
  int r;

  /* The ClientHello first, queued ahead of everything the relay writes to work. */
  v->impl = sc->c;
  if (hw == NULL || np__conn_write(work, &hw->w, &b, 1, on_hello_written) != 0) {
    free(hw);
    sconn_free(sc);
    np__conn_close(work, NULL);
    np__tcp_drop(v, "aborted");
    return UV_ENOMEM;
  }
  hw->buf = sc->buf;
  sc->buf = NULL;
  srv->refs++; /* sconn_free's unref must not be the server's last: the join takes its own */
  sconn_free(sc);
  r = np__tcp_join(v, s, work, rest, rest_len);
  np__server_unref(srv);
  return r;
}

static void https_drop(visitor *v, const char *end) {
  sconn *sc = v->impl;
  v->impl = sc->c;
  v->srv->refs++; /* as in https_join */
  sconn_free(sc);
  np__tcp_drop(v, end);
  np__server_unref(v->srv);
}

/* ---- the type -------------------------------------------------------------------------------- */

static int server_start(struct np_server *srv, const struct sockaddr *control) {
  np__vhost *vh;
  int r;

  (void)control;
  if (srv->cfg.vhost_https_port == 0 || !native(srv))
    return 0;
  if ((r = np__vhost_open(srv, srv->cfg.vhost_https_port, "vhost_https_port", NP_ROUTES_HTTPS,
                          on_visitor, on_tick, &vh)) != 0)
    return r;
  srv->type_data[NP_PROXY_HTTPS] = vh;
  np__log(&srv->log, NP_LOG_INFO, "HTTPS services on port %d (vhost_https_port, routed by SNI)",
          vh->port);
  return 0;
}

static void server_drain(struct np_server *srv) {
  if (vhost_of(srv) != NULL)
    np__vhost_stop_listening(vhost_of(srv));
}

static void server_stop(struct np_server *srv) {
  np__vhost *vh = vhost_of(srv);
  sconn *next;

  if (vh == NULL)
    return;
  srv->type_data[NP_PROXY_HTTPS] = NULL;
  for (sconn *sc = CONNS(vh); sc != NULL; sc = next) {
    next = sc->next;
    unlist(sc);
    np__conn_read_stop(sc->c);
    np__conn_abort(sc->c, on_closed);
  }
  np__vhost_close(vh);
}

static int https_open(proxy *px, const struct sockaddr *addr) {
  np__vhost *vh = vhost_of(px->srv);
  int r;

  (void)addr;
  if (vh == NULL) {
    if (px->why != NULL)
      snprintf(px->why, px->why_len, "this server has no vhost_https_port for type = https");
    return NP_EUNSUPPORTED;
  }
  if ((r = np__vhost_claim(vh, px, "https", 0)) != 0)
    return r;
  px->port = vh->port;
  return 0;
}

static void https_close(proxy *px) {
  np__vhost_release(px->srv, NP_ROUTES_HTTPS, px);
  np__proxy_closed(px);
}

const np__proxy_type np__proxy_https = {
    .name = "https",
    .kind = NP_PROXY_HTTPS,
    .named = 1,
    .server_start = server_start,
    .server_stop = server_stop,
    .server_drain = server_drain,
    .open = https_open,
    .close = https_close,
    .join = https_join,
    .drop = https_drop,
    .adopt = https_adopt,
    .forwarded = https_forwarded,
};
