/* The shared ports of the name-routed proxy types (vhost.h): the listener, the route table, the
 * tick, and the claims of a proxy's names. */
#include <stdlib.h>
#include <string.h>

#include <strings.h>

#include "vhost.h"

#include "conn_move.h"

#define TICK_MS 1000

static void on_tick(uv_timer_t *t) {
  np__vhost *vh = t->data;
  vh->on_tick(vh, uv_now(vh->srv->loop));
}

static void on_accept_failed(np__listener *l, int err, uint64_t refused) {
  np__vhost *vh = np__listener_data(l);
  np__server_accept_error(vh->srv, vh->key, vh->port, err, refused);
}

int np__vhost_open(struct np_server *srv, int port, const char *key, int table,
                   np__accept_cb on_accept, np__vhost_tick_cb tick, np__vhost **out) {
  struct sockaddr_storage ss;
  char spec[NP_MSG_NAME_MAX + 16];
  np__vhost *vh;
  int r;

  snprintf(spec, sizeof(spec), strchr(srv->cfg.proxy_bind_addr, ':') ? "[%s]:%d" : "%s:%d",
           srv->cfg.proxy_bind_addr, port);
  if (np__parse_addr(spec, &ss) != 0)
    return UV_EINVAL; /* validated with the configuration: not reached */
  if ((vh = calloc(1, sizeof(*vh))) == NULL)
    return UV_ENOMEM;
  vh->srv = srv;
  vh->key = key;
  vh->on_tick = tick;
  vh->table = table;
  /* A group's workers all listen on the port: each takes the connections the kernel gives it and
   * routes them against the one table, handing a request to the worker that owns its route. */
  if ((r = np__listen_flags(srv->loop, (struct sockaddr *)&ss,
                            srv->group_visitor != NULL ? NP_LISTEN_REUSEPORT : 0, on_accept,
                            on_accept_failed, vh, &vh->l)) != 0) {
    np__log(&srv->log, NP_LOG_ERROR, "cannot listen on %s %s: %s", key, spec, np_strerror(r));
    free(vh);
    return r;
  }
  vh->port = np__listener_port(vh->l);
  np__server_listener_pp(srv, vh->l);
  uv_timer_init(srv->loop, &vh->tick);
  vh->tick.data = vh;
  uv_timer_start(&vh->tick, on_tick, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&vh->tick);
  vh->refs = 2; /* the listener and the timer */
  srv->refs++;  /* until the last of those lets go */
  *out = vh;
  return 0;
}

void np__vhost_ref(np__vhost *vh) {
  vh->refs++;
}

void np__vhost_unref(np__vhost *vh) {
  struct np_server *srv = vh->srv;
  if (--vh->refs > 0)
    return;
  free(vh);
  np__server_unref(srv);
}

static void on_listener_closed(void *data) {
  np__vhost_unref(data);
}

static void on_tick_closed(uv_handle_t *t) {
  np__vhost_unref(t->data);
}

void np__vhost_stop_listening(np__vhost *vh) {
  if (vh->l != NULL)
    np__listener_close(vh->l, on_listener_closed);
  vh->l = NULL;
}

void np__vhost_close(np__vhost *vh) {
  np__vhost_stop_listening(vh);
  uv_close((uv_handle_t *)&vh->tick, on_tick_closed);
}

static int claim(np__vhost *vh, proxy *px, const char *scheme, const char *host, const char *loc) {
  np__route_owner holder;
  int r = np__shared_route_add(vh->srv->shared, vh->table, host, loc, px->route, &holder);

  if (r == UV_EEXIST && px->why != NULL) {
    snprintf(px->why, px->why_len, "%s://%s%s is served by client %s's proxy %s", scheme, host, loc,
             holder.client[0] != '\0' ? holder.client : "?", holder.proxy);
  } else if (r == UV_EINVAL && px->why != NULL)
    snprintf(px->why, px->why_len, "'%s%s' is not a host name and path this server can route", host,
             loc);
  return r == UV_EEXIST ? NP_EEXIST : r;
}

int np__vhost_claim(np__vhost *vh, proxy *px, const char *scheme, int with_locations) {
  struct np_server *srv = px->srv;
  char names[NP_MSG_TEXT_MAX + 1] = "";
  size_t n = 0;
  int r = 0;

  size_t nloc_all = 0, nname_all = 0;
  size_t sub_len = strlen(srv->cfg.subdomain_host);

  /* Every name with every location, at most NP_VHOST_CLAIMS_MAX in all: each claim is an entry in
   * the table, and a client must not fill the server's memory with their product. */
  for (size_t i = 0; px->s != NULL && i < px->s->n_opts; i++) {
    const np__proxy_opt *o = &px->s->opts[i];
    if (strcmp(o->name, px->name) != 0)
      continue;
    nloc_all += with_locations && strcmp(o->key, "location") == 0;
    nname_all += strcmp(o->key, "custom_domain") == 0 || strcmp(o->key, "subdomain") == 0;
  }
  if (nname_all * (nloc_all > 0 ? nloc_all : 1) > NP_VHOST_CLAIMS_MAX) {
    if (px->why != NULL)
      snprintf(px->why, px->why_len, "%zu names x %zu locations: more than %d routes for one proxy",
               nname_all, nloc_all, NP_VHOST_CLAIMS_MAX);
    return NP_ELIMIT;
  }
  /* What other workers may read of px: it, as a pointer only its own worker follows, and names. */
  if (px->route == NULL) {
    if ((px->route = calloc(1, sizeof(*px->route))) == NULL)
      return UV_ENOMEM;
    px->route->px = px;
    px->route->widx = srv->widx;
    if (px->s != NULL)
      np__strlcpy(px->route->client, px->s->name, sizeof(px->route->client));
    np__strlcpy(px->route->proxy, px->name, sizeof(px->route->proxy));
  }
  for (size_t i = 0; px->s != NULL && i < px->s->n_opts && r == 0; i++) {
    const np__proxy_opt *o = &px->s->opts[i];
    char host[NP_MSG_TEXT_MAX + NP_MSG_NAME_MAX + 2];
    size_t nloc = 0;

    if (strcmp(o->name, px->name) != 0)
      continue;
    if (strcmp(o->key, "custom_domain") == 0) {
      size_t vlen = strlen(o->value);
      np__strlcpy(host, o->value, sizeof(host));
      /* frp's rule: the names under subdomain_host are given out by subdomain alone */
      if (sub_len > 0 && vlen >= sub_len &&
          strcasecmp(o->value + vlen - sub_len, srv->cfg.subdomain_host) == 0 &&
          (vlen == sub_len || o->value[vlen - sub_len - 1] == '.')) {
        if (px->why != NULL)
          snprintf(px->why, px->why_len,
                   "custom_domains = %s: names under %s are taken with subdomain = NAME", o->value,
                   srv->cfg.subdomain_host);
        r = NP_ECONFIG;
        break;
      }
    } else if (strcmp(o->key, "subdomain") == 0) {
      if (strchr(o->value, '.') != NULL || strchr(o->value, '*') != NULL) {
        if (px->why != NULL)
          snprintf(px->why, px->why_len, "subdomain = %s: one label, like blog", o->value);
        r = NP_ECONFIG;
        break;
      }
      if (srv->cfg.subdomain_host[0] == '\0') {
        if (px->why != NULL)
          snprintf(px->why, px->why_len,
                   "subdomain = %s: this server has no subdomain_host to put it under", o->value);
        r = NP_ECONFIG;
        break;
      }
      snprintf(host, sizeof(host), "%s.%s", o->value, srv->cfg.subdomain_host);
    } else
      continue;
    for (size_t j = 0; with_locations && j < px->s->n_opts && r == 0; j++) {
      const np__proxy_opt *l = &px->s->opts[j];
      if (strcmp(l->name, px->name) == 0 && strcmp(l->key, "location") == 0) {
        r = claim(vh, px, scheme, host, l->value);
        nloc++;
      }
    }
    if (nloc == 0 && r == 0)
      r = claim(vh, px, scheme, host, "");
    if (r == 0 && n++ < 3) {
      size_t len = strlen(names);
      snprintf(names + len, sizeof(names) - len, "%s%s", len > 0 ? ", " : "", host);
    }
  }
  if (r == 0 && n == 0) {
    if (px->why != NULL)
      snprintf(px->why, px->why_len, "type = %s needs custom_domains or subdomain", scheme);
    r = NP_ECONFIG;
  }
  if (r != 0) {
    np__shared_route_remove(srv->shared, vh->table, px->route, 0);
    free(px->route);
    px->route = NULL;
    return r;
  }
  if (px->why != NULL) {
    if (n > 3)
      snprintf(px->why, px->why_len, "%s and %zu more", names, n - 3);
    else
      np__strlcpy(px->why, names, px->why_len);
  }
  return 0;
}

void np__vhost_release(struct np_server *srv, int table, proxy *px) {
  /* Its names answer "not connected" until somebody claims them again: the client may come back.
   * Once out of the table (under the write lock) nobody reads the record any more. */
  if (px->route == NULL)
    return;
  np__shared_route_remove(srv->shared, table, px->route, 1);
  free(px->route);
  px->route = NULL;
}

int np__vhost_find(np__vhost *vh, const char *host, size_t hostlen, const char *path,
                   size_t pathlen, proxy **px, unsigned *widx) {
  np__route_owner o;
  int r = np__shared_route_find(vh->srv->shared, vh->table, host, hostlen, path, pathlen, &o);

  *px = NULL;
  *widx = vh->srv->widx;
  if (r != NP_HTTP_ROUTE_FOUND)
    return r;
  /* Only this worker removes its own routes, so a route of its own still names a live proxy. */
  if (o.widx == vh->srv->widx)
    *px = o.px;
  *widx = o.widx;
  return r;
}

/* mv for a conn whose visitor is peer, with a copy of the len bytes pre read from it. */
static int moved_init(np__moved *mv, const np__addr *peer, const char *pre, size_t len) {
  np__moved_init(mv);
  if (peer->sa.sa_family == AF_INET)
    memcpy(&mv->peer, &peer->in, sizeof(peer->in));
  else if (peer->sa.sa_family == AF_INET6)
    memcpy(&mv->peer, &peer->in6, sizeof(peer->in6));
  if (len > 0 && (mv->pre = malloc(len)) == NULL)
    return UV_ENOMEM;
  if (len > 0)
    memcpy(mv->pre, pre, len);
  mv->pre_len = len;
  return 0;
}

int np__vhost_peer_holds(np__vhost *vh, const char *host, size_t hostlen) {
  struct np_server *srv = vh->srv;
  np_msg fwd = {.type = NP_MSG_FORWARD,
                .kind = vh->table == NP_ROUTES_HTTP ? NP_PROXY_HTTP : NP_PROXY_HTTPS};

  if (srv->forward == NULL || hostlen == 0 || hostlen > NP_MSG_TEXT_MAX)
    return 0;
  memcpy(fwd.text, host, hostlen);
  fwd.text[hostlen] = '\0';
  return srv->forward(srv, &fwd, NULL) == 0;
}

int np__vhost_to_peer(np__vhost *vh, np_conn *c, const np__addr *peer, const np__addr *to,
                      const char *host, size_t hostlen, const char *pre, size_t len) {
  struct np_server *srv = vh->srv;
  np_msg fwd = {.type = NP_MSG_FORWARD,
                .kind = vh->table == NP_ROUTES_HTTP ? NP_PROXY_HTTP : NP_PROXY_HTTPS};
  np__moved mv;
  int r;

  if (srv->forward == NULL || hostlen == 0 || hostlen > NP_MSG_TEXT_MAX)
    return UV_ENOENT;
  memcpy(fwd.text, host, hostlen);
  fwd.text[hostlen] = '\0';
  if ((r = srv->forward(srv, &fwd, NULL)) != 0)
    return r; /* nobody else holds it: the caller answers */
  if (peer->sa.sa_family != 0)
    np__addr_str(&peer->sa, fwd.name, sizeof(fwd.name));
  else
    strcpy(fwd.name, "0.0.0.0:0"); /* not known (the socket reset before we asked) */
  if (to->sa.sa_family != 0)
    np__addr_str(&to->sa, fwd.addr, sizeof(fwd.addr));
  if ((r = moved_init(&mv, peer, pre, len)) != 0)
    return r;
  if ((r = np__conn_move_out(c, &mv)) != 0) {
    np__moved_free(&mv);
    return r;
  }
  /* Taken, whatever becomes of the visitor; closed here when forwarding stopped meanwhile. */
  if (srv->forward(srv, &fwd, &mv) != 0)
    np__moved_free(&mv);
  return 0;
}

int np__vhost_bridge(np__vhost *vh, np_conn *c, const np__addr *peer, const char *pre, size_t len,
                     unsigned widx) {
  return np__server_bridge(vh->srv, c, peer, pre, len, widx, vh->table, NP_VHOST_FROM_PEER);
}

int np__vhost_hand(np__vhost *vh, np_conn *c, const np__addr *peer, const char *pre, size_t len,
                   unsigned widx, unsigned hops) {
  struct np_server *srv = vh->srv;
  np__moved mv;
  int r;

  if (srv->group_visitor == NULL)
    return UV_ENOTSUP;
  if ((r = moved_init(&mv, peer, pre, len)) != 0)
    return r;
  if ((r = np__conn_move_out(c, &mv)) == 0 &&
      (r = srv->group_visitor(srv, widx, vh->table, hops, &mv)) == 0)
    srv->stats.conns_moved++;
  else
    np__log(&srv->log, NP_LOG_WARN, "%s: cannot hand a visitor to worker %u: %s", vh->key, widx,
            np_strerror(r));
  if (r != 0)
    np__moved_free(&mv);
  return r;
}
