/* A client of several servers (server = a.example.org, b.example.org): one member client per
 * server, on the same loop, each with its own session, registrations, back-off, work connections
 * and datagram path, as if it ran alone; and this set in front of them, which the public API sees.
 * The set forwards the members' events, and its state, counters and proxies are the members' taken
 * together (docs/config.md, "Several servers"). A server that goes away takes only its member's
 * visitors with it; the others keep serving.
 *
 * A host name that resolves to several addresses is several servers (DNS round robin): a member
 * per address, each dialling its address while TLS checks the name. The set resolves each name at
 * start, whenever one of its members loses its session or fails to connect, and at least every
 * reconnect_max; it adds members for new addresses and closes those whose address is gone. Names
 * whose addresses are all loopback (localhost: 127.0.0.1 and ::1) are one machine, and one member
 * dials the name as a client alone does. Two addresses of one server (IPv4 and IPv6) are told apart
 * by the server's instance id (client.c, twin). */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"

typedef struct set_name set_name;

/* A resolution in flight. Apart from its name, and holding no reference to the set: a close does
 * not wait for a lookup the resolver may take tens of seconds over (uv_cancel cannot stop one
 * that a thread has begun); it cuts the link, and the answer is dropped when it comes. */
typedef struct lookup {
  uv_getaddrinfo_t req;
  set_name *it; /* NULL: the set closed or drains */
} lookup;

/* A configured server of the set. */
struct set_name {
  struct np_client *set;
  char name[NP_HOSTPORT_MAX]; /* "host:port" as configured */
  lookup *pending;            /* a resolution in flight */
  unsigned numeric : 1;       /* an address: nothing to resolve */
  unsigned capped : 1;        /* more addresses than members fit was said */
};

struct np__set_names {
  size_t n;
  set_name item[NP_MAX_SERVERS];
  uv_timer_t refresh; /* every reconnect_max: resolve the names again */
  int refresh_on;
};

static void close_members_now(struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++) {
    if (set->members[i] == NULL)
      continue;
    set->members[i]->parent = NULL; /* not started: freed at once, nobody to tell */
    np_client_close(set->members[i], NULL);
    set->members[i] = NULL;
  }
  set->n_members = 0;
}

static const np__client_set_ops set_ops;
static void spread(struct np_client *set);

/* Counters are all uint64_t (natproxy/stats.h): the members' add up word by word. */
static void add_counters(void *to, const void *from, size_t size) {
  uint64_t *t = to;
  const uint64_t *f = from;
  for (size_t k = 0; k < size / sizeof(uint64_t); k++)
    t[k] += f[k];
}

int np__client_set_new(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out) {
  char(*servers)[NP_HOSTPORT_MAX] = NULL;
  struct np_config *one = NULL;
  struct np_client *set;
  size_t n;
  int r;

  if ((r = np__client_create(loop, cfg, &set)) != 0)
    return r;
  set->set_ops = &set_ops;
  servers = malloc(NP_MAX_SERVERS * sizeof(*servers));
  one = malloc(sizeof(*one));
  set->names = calloc(1, sizeof(*set->names));
  if (servers == NULL || one == NULL || set->names == NULL) {
    r = UV_ENOMEM;
    goto out;
  }
  n = np__config_servers(set->cfg.server, servers, NP_MAX_SERVERS);
  set->several = n > 1;
  for (size_t i = 0; i < n && i < NP_MAX_SERVERS; i++) {
    set_name *it = &set->names->item[set->names->n++];
    struct sockaddr_storage ss;
    struct np_client *m;
    it->set = set;
    np__strlcpy(it->name, servers[i], sizeof(it->name));
    it->numeric = np__parse_addr(it->name, &ss) == 0;
    *one = set->cfg;
    np__strlcpy(one->server, servers[i], sizeof(one->server));
    if ((r = np__client_create(loop, one, &m)) != 0)
      break;
    m->parent = set;
    m->item = (int)i;
    set->members[set->n_members++] = m;
  }
  spread(set);
out:
  if (one != NULL)
    OPENSSL_cleanse(one, sizeof(*one)); /* tokens */
  free(one);
  free(servers);
  if (r != 0) {
    close_members_now(set);
    np_client_close(set, NULL); /* not started: freed at once */
    return r;
  }
  *out = set;
  return 0;
}

static void spread(struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++) {
    if (set->members[i] != NULL) {
      set->members[i]->codec = set->codec;
      set->members[i]->log = set->log;
    }
  }
}

/* ---- names and their addresses -------------------------------------------------------------- */

/* An address missing from this many answers in a row is gone: names that answer with a rotating
 * subset of their addresses (cloud load balancers do) must not close healthy sessions. */
#define ADDR_MISSING_MAX 3

static void on_member_closed(struct np_client *m);
static int all_stopped(const struct np_client *set);

static void go_held(set_name *it) {
  struct np_client *set = it->set;
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    if (m != NULL && &set->names->item[m->item] == it)
      np__client_go(m);
  }
}

/* Dial addr ("203.0.113.5:7000") from now on, and say so in the logs. */
static void pin(struct np_client *m, const set_name *it, const char *addr) {
  char host[NP_HOSTPORT_MAX];
  int port;

  np__strlcpy(m->addr, addr, sizeof(m->addr));
  m->parent->several = 1;
  if (np__split_hostport(addr, host, sizeof(host), &port) != 0)
    np__strlcpy(host, addr, sizeof(host));
  snprintf(m->label, sizeof(m->label), "%s (%s)", it->name, host);
}

/* The address a member's session runs to now ("" when it has none). */
static void connected_to(const struct np_client *m, char *buf, size_t len) {
  struct sockaddr_storage ss;

  buf[0] = '\0';
  if (m->ch != NULL &&
      np__conn_peer_addr(np__transport_conn(m->transport, np__chan_conn(m->ch)), &ss) == 0)
    np__addr_str((struct sockaddr *)&ss, buf, len);
}

static void retire(struct np_client *m, const char *why) {
  struct np_client *set = m->parent;

  if (m->closing || m->draining)
    return;
  np__log(&set->log, NP_LOG_INFO, "%s: %s; closing its session", np__client_label(m), why);
  set->refs++; /* until on_member_closed */
  if (m->state == C_READY)
    np_client_drain(m, NP_DRAIN_CONFIGURED, on_member_closed);
  else
    np_client_close(m, on_member_closed);
}

static void add_member(set_name *it, const char *addr) {
  struct np_client *set = it->set, *m = NULL;
  struct np_config *one = malloc(sizeof(*one));
  size_t slot = 0;
  int r = UV_ENOMEM;

  while (slot < set->n_members && set->members[slot] != NULL)
    slot++;
  if (slot == NP_MAX_SERVERS) {
    if (!it->capped)
      np__log(&set->log, NP_LOG_WARN,
              "%s: more addresses than the %d sessions a client keeps; %s is left out", it->name,
              NP_MAX_SERVERS, addr);
    it->capped = 1;
    free(one);
    return;
  }
  if (one != NULL) {
    *one = set->cfg;
    np__strlcpy(one->server, it->name, sizeof(one->server));
    r = np__client_create(set->loop, one, &m);
    OPENSSL_cleanse(one, sizeof(*one)); /* tokens */
    free(one);
  }
  if (r == 0) {
    m->parent = set;
    m->item = (int)(it - set->names->item);
    pin(m, it, addr);
    set->members[slot] = m;
    if (slot == set->n_members)
      set->n_members++;
    spread(set);
    np__log(&set->log, NP_LOG_INFO, "%s: an address of %s; opening a session", np__client_label(m),
            it->name);
    if ((r = np_client_start(m)) == 0)
      return;
    set->refs++; /* until on_member_closed */
    np_client_close(m, on_member_closed);
  }
  np__log(&set->log, NP_LOG_WARN, "%s (%s): cannot open a session: %s", it->name, addr,
          np_strerror(r));
}

static int is_loopback(const struct sockaddr *sa) {
  static const unsigned char v6_loopback[16] = {[15] = 1};
  if (sa->sa_family == AF_INET)
    return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  return memcmp(&((const struct sockaddr_in6 *)sa)->sin6_addr, v6_loopback, 16) == 0;
}

/* The name's members made to match its addresses now. */
static void reconcile(set_name *it, const struct addrinfo *res) {
  struct np_client *set = it->set;
  char addrs[NP_MAX_SERVERS][NP_HOSTPORT_MAX], now[NP_HOSTPORT_MAX];
  size_t n = 0, pinned = 0;
  int loopback = 1;

  for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    char a[NP_HOSTPORT_MAX];
    size_t k = 0;
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    np__addr_str(ai->ai_addr, a, sizeof(a));
    while (k < n && strcmp(addrs[k], a) != 0)
      k++;
    if (k < n || n == NP_MAX_SERVERS)
      continue;
    np__strlcpy(addrs[n++], a, sizeof(addrs[0]));
    loopback &= is_loopback(ai->ai_addr);
  }
  for (size_t i = 0; i < set->n_members; i++) {
    const struct np_client *m = set->members[i];
    pinned += m != NULL && &set->names->item[m->item] == it && m->label[0] != '\0';
  }
  /* One address, or one machine: one member dials the name, as a client alone does. */
  if (n == 0 || (pinned == 0 && (n == 1 || loopback))) {
    go_held(it);
    return;
  }
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    size_t k = 0;
    if (m == NULL || &set->names->item[m->item] != it || m->closing || m->draining)
      continue;
    if (m->label[0] == '\0') {
      /* Its session stays where it runs; a member not connected takes the first address. */
      connected_to(m, now, sizeof(now));
      pin(m, it, now[0] != '\0' ? now : addrs[0]);
    }
    while (k < n && strcmp(addrs[k], m->addr) != 0)
      k++;
    if (k < n) {
      m->addr_missing = 0;
      addrs[k][0] = '\0'; /* served */
    } else if (++m->addr_missing >= ADDR_MISSING_MAX) {
      retire(m, "no longer an address of its name");
    }
  }
  /* A client that has given up everywhere stays stopped, as a client of one server does. */
  for (size_t k = 0; k < n; k++)
    if (addrs[k][0] != '\0' && !set->closing && !set->draining && !all_stopped(set))
      add_member(it, addrs[k]);
  go_held(it);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  lookup *l = NP_CONTAINER_OF(req, lookup, req);
  set_name *it = l->it;

  free(l);
  if (it != NULL) {
    it->pending = NULL;
    if (status == 0)
      reconcile(it, res);
    else
      go_held(it); /* the member dials the name, and says why that fails */
  }
  if (res != NULL)
    uv_freeaddrinfo(res);
}

static void resolve(set_name *it) {
  struct np_client *set = it->set;
  struct addrinfo hints;
  char host[NP_HOSTPORT_MAX], port[8];
  lookup *l;
  int pnum;

  if (it->numeric || it->pending != NULL || set->closing || set->draining ||
      np__split_hostport(it->name, host, sizeof(host), &pnum) != 0)
    return;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof(port), "%d", pnum);
  if ((l = malloc(sizeof(*l))) == NULL ||
      uv_getaddrinfo(set->loop, &l->req, on_resolved, host, port, &hints) != 0) {
    free(l);
    go_held(it);
    return;
  }
  l->it = it;
  it->pending = l;
}

static void on_refresh(uv_timer_t *t) {
  struct np_client *set = t->data;

  if (!all_stopped(set))
    for (size_t i = 0; i < set->names->n; i++)
      resolve(&set->names->item[i]);
  uv_timer_start(t, on_refresh, set->cfg.reconnect_max_ms, 0);
}

static void on_refresh_closed(uv_handle_t *h) {
  np__client_unref(h->data);
}

static int set_retrying(struct np_client *m) {
  struct np_client *set = m->parent;
  set_name *it = &set->names->item[m->item];

  resolve(it);
  for (size_t i = 0; i < set->n_members; i++) {
    const struct np_client *o = set->members[i];
    if (o != NULL && o != m && &set->names->item[o->item] == it && o->state == C_READY)
      return 1;
  }
  return 0;
}

static void set_free(struct np_client *set) {
  free(set->names);
  set->names = NULL;
}

/* ---- events ---------------------------------------------------------------------------------- */

static int all_stopped(const struct np_client *set) {
  for (size_t i = 0; i < set->n_members; i++)
    if (set->members[i] != NULL && set->members[i]->state != C_FATAL)
      return 0;
  return 1;
}

static void set_event(struct np_client *m, const np_client_event *ev) {
  struct np_client *set = m->parent;
  np_client_event out = *ev;

  if (ev->type == NP_CLIENT_FATAL && !all_stopped(set)) {
    /* The member said why at error level; the client as a whole goes on. */
    np__log(&set->log, NP_LOG_WARN, "%s: stopped trying this server; the others still serve",
            np__client_label(m));
    return;
  }
  /* Which server a proxy got its port on, or a session came up with: the address dialled. */
  if ((ev->type == NP_CLIENT_PROXY_READY || ev->type == NP_CLIENT_LOGGED_IN) && ev->text == NULL &&
      set->several)
    out.text = m->addr;
  if (set->event_cb != NULL)
    set->event_cb(set, &out);
}

/* ---- the members taken together -------------------------------------------------------------- */

/* How far a session got, best first: the set is as far as its furthest member. */
static int rank(enum cstate s) {
  switch (s) {
  case C_READY:
    return 0;
  case C_LOGIN:
  case C_HELLO:
    return 1;
  case C_DIALING:
    return 2;
  case C_BACKOFF:
    return 3;
  case C_IDLE:
    return 4;
  default:
    return 5; /* C_FATAL */
  }
}

const struct np_client *np__client_lead(const struct np_client *cl) {
  const struct np_client *best = NULL;

  if (cl->n_members == 0)
    return cl;
  for (size_t i = 0; i < cl->n_members; i++) {
    const struct np_client *m = cl->members[i];
    if (m != NULL && (best == NULL || rank(m->state) < rank(best->state)))
      best = m;
  }
  return best != NULL ? best : cl;
}

static void set_stats(const struct np_client *set, np_client_stats *sum) {
  memset(sum, 0, sizeof(*sum));
  for (size_t i = 0; i < set->n_members; i++) {
    np_client_stats st;
    if (set->members[i] == NULL)
      continue;
    np_client_get_stats(set->members[i], &st, sizeof(st));
    add_counters(sum, &st, sizeof(st));
  }
  /* The direct paths are the set's own (client_direct.c keeps them on the client made), and so
   * are the bytes of their connections. */
  sum->direct_up += set->stats.direct_up;
  sum->direct_failed += set->stats.direct_failed;
  sum->direct_conns += set->stats.direct_conns;
  sum->bytes_in += set->stats.bytes_in;
  sum->bytes_out += set->stats.bytes_out;
}

/* A proxy of the set: open if any server opened it (its port there), else pending if any still
 * has to answer, else refused if any refused it (that server's reason); the members' counters
 * added up. */
static void gather(const struct np_client *set, cproxy *view) {
  static const int order[] = {NP_CLIENT_PROXY_OK, NP_CLIENT_PROXY_PENDING, NP_CLIENT_PROXY_REFUSED};
  const cproxy *found[NP_MAX_SERVERS] = {NULL};

  memset(&view->stats, 0, sizeof(view->stats));
  view->state = NP_CLIENT_PROXY_CLOSED;
  view->port = 0;
  view->status = 0;
  view->error[0] = '\0';
  for (size_t i = 0; i < set->n_members; i++) {
    if (set->members[i] == NULL)
      continue;
    found[i] = np__client_find_proxy(set->members[i], view->cfg.name);
    if (found[i] != NULL)
      add_counters(&view->stats, &found[i]->stats, sizeof(view->stats));
  }
  for (size_t o = 0; o < NP_ARRAY_SIZE(order); o++) {
    for (size_t i = 0; i < set->n_members; i++) {
      if (found[i] == NULL || (int)found[i]->state != order[o])
        continue;
      view->state = found[i]->state;
      view->port = found[i]->port;
      view->status = found[i]->status;
      memcpy(view->error, found[i]->error, sizeof(view->error));
      return;
    }
  }
}

static int set_foreach(const struct np_client *set, np_client_proxy_cb cb, void *arg) {
  int r = 0;
  for (size_t i = 0; i < set->cfg.n_proxies && r == 0; i++) {
    gather(set, set->px[i]); /* the set's own proxies are only this view */
    r = cb(set->px[i], arg);
  }
  return r;
}

/* ---- life ------------------------------------------------------------------------------------ */

static int set_start(struct np_client *set) {
  int r;

  if (set->admin_start != NULL && (r = set->admin_start(set)) != 0)
    return r;
  set->started = 1;
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    m->hold = !set->names->item[m->item].numeric; /* until its name is resolved */
    if ((r = np_client_start(m)) != 0)
      return r; /* the caller closes the client, and with it the members started so far */
  }
  for (size_t i = 0; i < set->names->n; i++) {
    if (set->names->item[i].numeric)
      continue;
    resolve(&set->names->item[i]);
    if (!set->names->refresh_on) {
      uv_timer_init(set->loop, &set->names->refresh);
      set->names->refresh.data = set;
      set->names->refresh_on = 1;
      set->refs++; /* until on_refresh_closed */
      uv_timer_start(&set->names->refresh, on_refresh, set->cfg.reconnect_max_ms, 0);
    }
  }
  return 0;
}

static void on_member_closed(struct np_client *m) {
  struct np_client *set = m->parent;

  for (size_t i = 0; i < set->n_members; i++)
    if (set->members[i] == m)
      set->members[i] = NULL;
  /* Draining: the set closes once its last member has. */
  if (set->draining && !set->closing) {
    size_t left = 0;
    for (size_t i = 0; i < set->n_members; i++)
      left += set->members[i] != NULL;
    if (left == 0)
      np_client_close(set, set->drain_cb);
  }
  np__client_unref(set);
}

static void stop_resolving(struct np_client *set) {
  if (set->names == NULL)
    return; /* np__client_set_new ran out of memory */
  for (size_t i = 0; i < set->names->n; i++) {
    set_name *it = &set->names->item[i];
    if (it->pending == NULL)
      continue;
    it->pending->it = NULL; /* its answer is dropped when it comes */
    uv_cancel((uv_req_t *)&it->pending->req);
    it->pending = NULL;
  }
  if (set->names->refresh_on) {
    set->names->refresh_on = 0;
    uv_close((uv_handle_t *)&set->names->refresh, on_refresh_closed);
  }
}

static void set_close(struct np_client *set) {
  stop_resolving(set);
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    if (m == NULL || m->closing)
      continue;
    if (m->draining) {
      np_client_drain(m, 0, on_member_closed); /* a drain under way ends now; it holds a ref */
      continue;
    }
    set->refs++; /* until on_member_closed */
    np_client_close(m, on_member_closed);
  }
}

static void set_drain(struct np_client *set, uint64_t timeout_ms) {
  size_t left = 0;

  set->draining = 1;
  stop_resolving(set);
  for (size_t i = 0; i < set->n_members; i++) {
    struct np_client *m = set->members[i];
    if (m != NULL && !m->closing && !m->draining) {
      left++;
      set->refs++; /* until on_member_closed */
      np_client_drain(m, timeout_ms, on_member_closed);
    }
  }
  if (left == 0)
    np_client_close(set, set->drain_cb);
}

size_t np__client_sessions(const struct np_client *cl, const struct np_client **out, size_t max) {
  size_t n = 0;

  if (cl->n_members == 0) {
    out[0] = cl;
    return 1;
  }
  for (size_t i = 0; i < cl->n_members && n < max; i++)
    if (cl->members[i] != NULL)
      out[n++] = cl->members[i];
  return n;
}

/* ---- reload ---------------------------------------------------------------------------------- */

static int set_reconfigure(struct np_client *set, const struct np_config *cfg) {
  struct np_config *next = malloc(sizeof(*next)), *one = malloc(sizeof(*one));
  cproxy *nx[NP_MAX_PROXIES] = {NULL};
  int r = 0;

  if (next == NULL || one == NULL) {
    r = UV_ENOMEM;
    goto out;
  }
  *next = *cfg;
  if ((r = np_config_validate(next)) != 0) {
    snprintf(set->reload_err, sizeof(set->reload_err), "%s", next->err);
    np__log(&set->log, NP_LOG_ERROR, "reload: %s; nothing changed", set->reload_err);
    goto out;
  }
  for (size_t i = 0; i < next->n_proxies; i++) {
    if ((r = np__cproxy_new(&next->proxies[i], &nx[i])) != 0) {
      while (i-- > 0)
        np__cproxy_unref(nx[i]);
      goto out;
    }
  }
  if (set->admin_auth != NULL && (r = set->admin_auth(set, next)) != 0) {
    snprintf(set->reload_err, sizeof(set->reload_err), "admin credentials: %s", np_strerror(r));
    np__log(&set->log, NP_LOG_ERROR, "reload: %s; nothing changed", set->reload_err);
    for (size_t i = 0; i < next->n_proxies; i++)
      np__cproxy_unref(nx[i]);
    goto out;
  }
  if (strcmp(next->server, set->cfg.server) != 0)
    np__log(&set->log, NP_LOG_WARN,
            "reload: server changed, which takes effect only at a restart; keeping the running "
            "value");
  np__strlcpy(next->server, set->cfg.server, sizeof(next->server));
  /* The configuration was checked above, so each member takes it as the first did: a member that
   * still fails (out of memory) keeps its running configuration, and its error is the set's. */
  for (size_t i = 0; i < set->n_members; i++) {
    int e;
    /* One closing (its address left the name) takes no configuration: it is going. */
    if (set->members[i] == NULL || set->members[i]->closing || set->members[i]->draining)
      continue;
    *one = *next;
    np__strlcpy(one->server, set->members[i]->cfg.server, sizeof(one->server));
    if ((e = np_client_reconfigure(set->members[i], one)) != 0 && r == 0) {
      r = e;
      memcpy(set->reload_err, set->members[i]->reload_err, sizeof(set->reload_err));
    }
  }
  for (size_t i = 0; i < set->cfg.n_proxies; i++)
    np__cproxy_unref(set->px[i]);
  memcpy(set->px, nx, sizeof(nx));
  set->log.level = (np_log_level)next->log_level;
  spread(set);
  OPENSSL_cleanse(&set->cfg, sizeof(set->cfg));
  set->cfg = *next;
out:
  if (next != NULL)
    OPENSSL_cleanse(next, sizeof(*next));
  if (one != NULL)
    OPENSSL_cleanse(one, sizeof(*one));
  free(next);
  free(one);
  return r;
}

static const np__client_set_ops set_ops = {
    .start = set_start,
    .close = set_close,
    .drain = set_drain,
    .reconfigure = set_reconfigure,
    .stats = set_stats,
    .foreach = set_foreach,
    .lead = np__client_lead,
    .event = set_event,
    .spread = spread,
    .retrying = set_retrying,
    .free = set_free,
};
