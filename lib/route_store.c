/* The route store (route_store.h): Redis through hiredis's libuv adapter, on worker 0's loop.
 *
 * Keys: NP_ROUTE_PREFIX + "tcp:6000@10.0.0.2:7000", one per route and server, written with
 * SET ... PX route_lease; the value is the writer's instance id (what a restarted server at the
 * same address tells apart). A key per server rather than one per route: servers that hold the
 * same route (every server with a client of several servers) do not overwrite each other, and
 * each route's owners expire one by one. Reading the table is SCAN over the prefix: the owners are
 * in the key names, so no value is read.
 *
 * One tick does everything, every third of the lease (at most a second): it takes this server's
 * routes from what is open now (TCP and UDP ports through the public views, which on a group
 * gather every worker's; HTTP and HTTPS names from the vhost's shared table), deletes those gone,
 * writes the new ones and renews the rest when due, starts a read of the table when due, and
 * (re)connects with a back-off when the store is away. A store that stops answering for half a
 * lease is dropped and reconnected: its routes are kept until the next full read. */
#include "route_store.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <openssl/crypto.h>
#include <hiredis/hiredis.h>
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "http_route.h"
#include "natproxy/server.h"

#define TICK_MAX_MS    1000
#define CONNECT_MIN_MS 500
#define SCAN_COUNT     "512"

/* An entry of the table of the other servers' routes. The table is published in srv->shared (under
 * its mu) for every worker's lookups (np__routes_owner); only worker 0's route store changes it. */
typedef struct np__known_route {
  UT_hash_handle hh;
  char key[NP_ROUTE_KEY_MAX];
  char owner[NP_HOSTPORT_MAX]; /* the first owner read; others of the same route are not kept */
} known;

/* A route of this server's. */
typedef struct claim {
  UT_hash_handle hh;
  char key[NP_ROUTE_KEY_MAX];
  uint64_t written_ms; /* when it was last sent (0: not in the store, as far as we know) */
  int seen;            /* in this tick's sweep */
} claim;

typedef struct np__routes np__routes;

/* Make t (n routes) the table, for this loop and, through shared, the workers' lookups; the old
 * one is freed once no lookup can see it. */
static void table_set(np__routes *rs, np__shared *sh, known *t, size_t n);

struct np__routes {
  struct np_server *srv; /* NULL once the server closed: what follows is the route store's own */
  uv_loop_t *loop;
  np__logger *log; /* the server's; NULL once it closed (its sink may be gone with it) */
  char url[NP_HOSTPORT_MAX + 16], advertise[NP_HOSTPORT_MAX];
  char host[NP_HOSTPORT_MAX];
  int port, db;
  char user[64], password[256]; /* AUTH, when password is set (wiped at the end) */
  uint64_t lease_ms, tick_ms;
  char value[24];        /* this server's instance id, hex */
  redisAsyncContext *ac; /* NULL: none */
  uv_getaddrinfo_t gai;
  uv_timer_t timer;
  uint64_t connect_at, connecting_since, backoff_ms;
  uint64_t next_read, last_reply, waiting_since;
  unsigned waiting; /* commands sent and not answered */
  claim *claims;
  known *table, *reading;
  size_t n_table, n_reading;
  uint64_t table_ms; /* 0: no table read yet */
  unsigned resolving : 1, connected : 1, scanning : 1, said_down : 1, closing : 1, full_said : 1;
  unsigned timer_closed : 1;
  unsigned error_said : 1; /* an error reply was logged: the next ones are not, until one is OK */
  unsigned refused : 1;    /* AUTH or SELECT failed: the tick drops the connection, saying why */
  char refusal[320];
  const char *dropping; /* why drop() frees the context, for on_disconnect's line */
  int refs;             /* the timer, a resolution, a context not yet gone */
};

/* ---- keys ------------------------------------------------------------------------------------ */

int np__route_key_parse(const char *key, size_t len, char route[NP_ROUTE_KEY_MAX],
                        char owner[NP_HOSTPORT_MAX]) {
  static const char *const kinds[] = {"tcp:", "udp:", "http:", "https:"};
  const char *at = NULL, *name;
  struct sockaddr_storage ss;
  size_t k, rlen, olen, nlen;
  char host[NP_HOSTPORT_MAX];
  int port;

  for (size_t i = len; i > 0; i--)
    if (key[i - 1] == '@') {
      at = key + i - 1;
      break;
    }
  if (at == NULL || memchr(key, '\0', len) != NULL)
    return UV_EINVAL;
  rlen = (size_t)(at - key);
  olen = len - rlen - 1;
  if (rlen >= NP_ROUTE_KEY_MAX || olen == 0 || olen >= NP_HOSTPORT_MAX)
    return UV_EINVAL;
  for (k = 0; k < NP_ARRAY_SIZE(kinds); k++)
    if (rlen > strlen(kinds[k]) && strncmp(key, kinds[k], strlen(kinds[k])) == 0)
      break;
  if (k == NP_ARRAY_SIZE(kinds))
    return UV_EINVAL;
  name = key + strlen(kinds[k]);
  nlen = rlen - strlen(kinds[k]);
  if (k < 2) { /* a port */
    unsigned long p = 0;
    if (nlen > 5)
      return UV_EINVAL;
    for (size_t i = 0; i < nlen; i++) {
      if (name[i] < '0' || name[i] > '9')
        return UV_EINVAL;
      p = p * 10 + (unsigned long)(name[i] - '0');
    }
    if (p == 0 || p > 65535 || name[0] == '0')
      return UV_EINVAL;
  } else { /* a host name, or a wildcard's "*.example.com" */
    size_t skip = nlen > 2 && name[0] == '*' && name[1] == '.' ? 2 : 0;
    if (nlen > NP_HTTP_ROUTE_HOST_MAX + 2 || !np__config_host_ok(name + skip, nlen - skip))
      return UV_EINVAL;
  }
  memcpy(route, key, rlen);
  route[rlen] = '\0';
  memcpy(owner, at + 1, olen);
  owner[olen] = '\0';
  /* HOST:PORT, the host an address or a host name */
  if (np__parse_addr(owner, &ss) != 0 &&
      (np__split_hostport(owner, host, sizeof(host), &port) != 0 || port <= 0 ||
       !np__config_host_ok(host, strlen(host))))
    return UV_EINVAL;
  return 0;
}

static void table_free(known **t) {
  known *r, *tmp;
  HASH_ITER(hh, *t, r, tmp) {
    HASH_DEL(*t, r);
    free(r);
  }
}

/* ---- hiredis on the loop -----------------------------------------------------------------------
 */

/* hiredis's event hooks on a uv_poll_t. Debian 12's hiredis (0.14) has a libuv adapter, but it
 * drops a poll's error: a refused connect is then never reported, and the error wakes the loop
 * again at once until something gives up. Here an error is handed to hiredis as readiness: its
 * read or write then meets the socket's error and reports it. */
typedef struct rpoll {
  uv_poll_t h;
  redisAsyncContext *ac; /* NULL once hiredis let go (cleanup) */
  int events;
} rpoll;

static void on_poll(uv_poll_t *h, int status, int events) {
  rpoll *p = h->data;

  if (status < 0)
    events = p->events;
  if (p->ac != NULL && (events & UV_READABLE))
    redisAsyncHandleRead(p->ac);
  if (p->ac != NULL && (events & UV_WRITABLE)) /* the read may have ended it */
    redisAsyncHandleWrite(p->ac);
}

static void poll_set(rpoll *p, int events) {
  p->events = events;
  if (events != 0)
    uv_poll_start(&p->h, events, on_poll);
  else
    uv_poll_stop(&p->h);
}

static void add_read(void *data) {
  rpoll *p = data;
  poll_set(p, p->events | UV_READABLE);
}

static void del_read(void *data) {
  rpoll *p = data;
  poll_set(p, p->events & ~UV_READABLE);
}

static void add_write(void *data) {
  rpoll *p = data;
  poll_set(p, p->events | UV_WRITABLE);
}

static void del_write(void *data) {
  rpoll *p = data;
  poll_set(p, p->events & ~UV_WRITABLE);
}

static void on_poll_closed(uv_handle_t *h) {
  free(h->data);
}

static void cleanup(void *data) {
  rpoll *p = data;
  p->ac = NULL;
  uv_close((uv_handle_t *)&p->h, on_poll_closed);
}

static int attach(redisAsyncContext *ac, uv_loop_t *loop) {
  rpoll *p = calloc(1, sizeof(*p));

  if (p == NULL)
    return -1;
  if (uv_poll_init(loop, &p->h, ac->c.fd) != 0) {
    free(p);
    return -1;
  }
  p->h.data = p;
  p->ac = ac;
  ac->ev.data = p;
  ac->ev.addRead = add_read;
  ac->ev.delRead = del_read;
  ac->ev.addWrite = add_write;
  ac->ev.delWrite = del_write;
  ac->ev.cleanup = cleanup;
  /* The connect is known done once the socket is writable: hiredis asked for that before it had
   * hooks to ask with. */
  add_write(p);
  return 0;
}

/* ---- the connection -------------------------------------------------------------------------- */

static void unref(np__routes *rs) {
  if (--rs->refs > 0)
    return;
  table_free(&rs->table);
  table_free(&rs->reading);
  {
    claim *c, *tmp;
    HASH_ITER(hh, rs->claims, c, tmp) {
      HASH_DEL(rs->claims, c);
      free(c);
    }
  }
  OPENSSL_cleanse(rs->password, sizeof(rs->password));
  free(rs);
}

static np__logger *logger(np__routes *rs) {
  return rs->log;
}

/* Retries of a store that is away: at most every lease, and at most every 5 s. */
static uint64_t backoff_max(const np__routes *rs) {
  return rs->lease_ms < 5000 ? rs->lease_ms : 5000;
}

/* The store is away: say so once, forget what it holds of ours (all of it is written again when it
 * is back), and try again after a back-off. */
static void lost(np__routes *rs, const char *why) {
  claim *c, *tmp;
  uint64_t now = uv_now(rs->loop);

  rs->connected = rs->scanning = 0;
  rs->waiting = 0;
  table_free(&rs->reading);
  rs->n_reading = 0;
  HASH_ITER(hh, rs->claims, c, tmp) {
    c->written_ms = 0;
  }
  if (rs->closing)
    return;
  np__log(logger(rs), rs->said_down ? NP_LOG_DEBUG : NP_LOG_WARN,
          "route store %s: %s; routing from the last table read (%zu routes of other servers), "
          "new routes are written when it is back; retrying in %" PRIu64 "ms",
          rs->url, why, rs->n_table, rs->backoff_ms);
  rs->said_down = 1;
  rs->connect_at = now + rs->backoff_ms;
  rs->backoff_ms = rs->backoff_ms * 2 > backoff_max(rs) ? backoff_max(rs) : rs->backoff_ms * 2;
}

static void close_timer(np__routes *rs);

static void on_disconnect(const redisAsyncContext *ac, int status) {
  np__routes *rs = ac->data;

  rs->ac = NULL; /* hiredis frees it after this */
  lost(rs, rs->dropping != NULL ? rs->dropping
           : status == REDIS_OK ? "closed the connection"
                                : ac->errstr);
  rs->dropping = NULL;
  if (rs->closing)
    close_timer(rs); /* the deletes were answered: nothing is left to wait for */
  unref(rs);
}

static void up(np__routes *rs);

static void on_connect(const redisAsyncContext *ac, int status) {
  np__routes *rs = ac->data;

  if (status != REDIS_OK) {
    /* hiredis frees it after this, without on_disconnect */
    rs->ac = NULL;
    lost(rs, ac->errstr);
    unref(rs);
    return;
  }
  if (rs->db == 0 && rs->password[0] == '\0')
    up(rs);
  /* else up once AUTH and SELECT said OK (on_auth, on_select) */
}

static void up(np__routes *rs) {
  rs->connected = 1;
  rs->last_reply = uv_now(rs->loop);
  rs->backoff_ms = CONNECT_MIN_MS;
  rs->next_read = 0; /* read the table at once */
  np__log(logger(rs), rs->said_down ? NP_LOG_INFO : NP_LOG_DEBUG,
          "route store %s: connected; writing %u routes of this server", rs->url,
          HASH_COUNT(rs->claims));
  rs->said_down = 0;
}

/* A wrong password (or user) is no store to write to either: said as a refusal, and tried again
 * at the back-off (the password may be fixed on the store's side). */
static void on_auth(redisAsyncContext *ac, void *r, void *data) {
  np__routes *rs = ac->data;
  redisReply *reply = r;
  (void)data;

  if (reply == NULL)
    return; /* the connection went */
  if (reply->type == REDIS_REPLY_ERROR) {
    int creds = strncmp(reply->str, "WRONGPASS", 9) == 0 || strstr(reply->str, "password") != NULL;
    snprintf(rs->refusal, sizeof(rs->refusal), "AUTH%s%s: %s%s", rs->user[0] != '\0' ? " as " : "",
             rs->user, reply->str,
             creds ? " (check route_store_user and route_store_password)" : "");
    rs->refused = 1;
    return;
  }
  if (rs->db == 0)
    up(rs);
}

/* A database that does not exist (redis://HOST/20 with 16 databases) is no store to write to:
 * said, and the connection dropped and tried again at the back-off. */
static void on_select(redisAsyncContext *ac, void *r, void *data) {
  np__routes *rs = ac->data;
  redisReply *reply = r;
  (void)data;

  if (reply == NULL || rs->refused)
    return; /* the connection went, or AUTH failed first (then SELECT did too) */
  if (reply->type == REDIS_REPLY_ERROR) {
    snprintf(rs->refusal, sizeof(rs->refusal), "SELECT %d: %s", rs->db, reply->str);
    rs->refused = 1;
    return;
  }
  up(rs);
}

/* Every reply: the store answers. Errors are said (a read-only replica, out of memory), and the
 * routes are written again at the next tick. */
static void on_reply(redisAsyncContext *ac, void *r, void *data) {
  np__routes *rs = ac->data;
  redisReply *reply = r;
  (void)data;

  if (rs->waiting > 0)
    rs->waiting--;
  if (reply == NULL)
    return; /* the connection went: on_disconnect says so */
  rs->last_reply = uv_now(rs->loop);
  if (reply->type == REDIS_REPLY_ERROR) {
    claim *c, *tmp;
    /* Once: a store that refuses every write (a replica, out of memory, a password it wants)
     * would otherwise fill the log with a line per route and tick. */
    np__log(logger(rs), rs->error_said ? NP_LOG_DEBUG : NP_LOG_WARN,
            "route store %s: %s; the routes are written again at each tick until it takes them",
            rs->url, reply->str);
    rs->error_said = 1;
    HASH_ITER(hh, rs->claims, c, tmp) {
      c->written_ms = 0;
    }
  } else if (reply->type == REDIS_REPLY_STATUS && rs->error_said) {
    np__log(logger(rs), NP_LOG_INFO, "route store %s: takes writes again", rs->url);
    rs->error_said = 0;
  }
}

static int send_cmd(np__routes *rs, redisCallbackFn *fn, const char *fmt, ...) {
  va_list ap;
  int r;

  if (rs->ac == NULL || !rs->connected)
    return -1;
  va_start(ap, fmt);
  r = redisvAsyncCommand(rs->ac, fn, NULL, fmt, ap);
  va_end(ap);
  if (r != REDIS_OK)
    return -1;
  if (rs->waiting++ == 0)
    rs->waiting_since = uv_now(rs->loop);
  return 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  np__routes *rs = req->data;
  char ip[64] = "";

  rs->resolving = 0;
  if (status == 0 && res != NULL) {
    if (res->ai_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof(ip));
    else if (res->ai_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof(ip));
  }
  uv_freeaddrinfo(res);
  if (!rs->closing) {
    if (ip[0] == '\0') {
      lost(rs, status != 0 ? uv_strerror(status) : "no address");
    } else {
      /* A numeric address: hiredis then connects without blocking the loop on a lookup. */
      redisAsyncContext *ac = redisAsyncConnect(ip, rs->port);
      if (ac == NULL || ac->err != 0 || attach(ac, rs->loop) != 0) {
        lost(rs, ac != NULL && ac->err != 0 ? ac->errstr : "out of memory");
        if (ac != NULL)
          redisAsyncFree(ac);
      } else {
        ac->data = rs;
        rs->ac = ac;
        rs->refused = 0; /* a refusal was the last connection's */
        rs->refs++;      /* until hiredis is done with it */
        rs->connecting_since = uv_now(rs->loop);
        redisAsyncSetConnectCallback(ac, on_connect);
        redisAsyncSetDisconnectCallback(ac, on_disconnect);
        /* queued: written once connected, AUTH first */
        if ((rs->password[0] != '\0' && rs->user[0] != '\0' &&
             redisAsyncCommand(ac, on_auth, NULL, "AUTH %s %s", rs->user, rs->password) !=
                 REDIS_OK) ||
            (rs->password[0] != '\0' && rs->user[0] == '\0' &&
             redisAsyncCommand(ac, on_auth, NULL, "AUTH %s", rs->password) != REDIS_OK)) {
          /* never up without it: the tick drops this connection and tries again */
          snprintf(rs->refusal, sizeof(rs->refusal), "cannot send AUTH (out of memory)");
          rs->refused = 1;
        }
        if (rs->db != 0)
          redisAsyncCommand(ac, on_select, NULL, "SELECT %d", rs->db);
      }
    }
  }
  unref(rs);
}

static void connect_store(np__routes *rs) {
  struct addrinfo hints;
  char port[8];

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port, sizeof(port), "%d", rs->port);
  rs->gai.data = rs;
  if (uv_getaddrinfo(rs->loop, &rs->gai, on_resolved, rs->host, port, &hints) != 0) {
    lost(rs, "cannot resolve its host");
    return;
  }
  rs->resolving = 1;
  rs->refs++;
}

/* Drop the connection now (not from inside a hiredis callback): its pending callbacks run with no
 * reply, then on_disconnect or nothing (a connect not done). */
static void drop(np__routes *rs, const char *why) {
  redisAsyncContext *ac = rs->ac;

  if (ac == NULL)
    return;
  rs->dropping = why; /* for on_disconnect's line, when it was connected */
  rs->refused = 0;
  redisAsyncFree(ac);
  rs->dropping = NULL;
  if (rs->ac != NULL) { /* a connect not done: hiredis called neither callback */
    rs->ac = NULL;
    lost(rs, why);
    unref(rs);
  }
}

/* ---- reading the table ----------------------------------------------------------------------- */

static void scan_from(np__routes *rs, const char *cursor);

static void on_scan(redisAsyncContext *ac, void *r, void *data) {
  np__routes *rs = ac->data;
  redisReply *reply = r;
  const size_t pre = sizeof(NP_ROUTE_PREFIX) - 1;

  on_reply(ac, r, data);
  if (reply == NULL || !rs->scanning)
    return;
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
      reply->element[0]->type != REDIS_REPLY_STRING ||
      reply->element[1]->type != REDIS_REPLY_ARRAY) {
    rs->scanning = 0;
    table_free(&rs->reading);
    rs->n_reading = 0;
    return;
  }
  for (size_t i = 0; i < reply->element[1]->elements; i++) {
    const redisReply *k = reply->element[1]->element[i];
    known *e;
    char key[NP_ROUTE_KEY_MAX], owner[NP_HOSTPORT_MAX];
    if (k->type != REDIS_REPLY_STRING || k->len <= pre ||
        np__route_key_parse(k->str + pre, k->len - pre, key, owner) != 0 ||
        strcmp(owner, rs->advertise) == 0)
      continue; /* not a route, or one of ours */
    HASH_FIND_STR(rs->reading, key, e);
    if (e != NULL)
      continue;
    if (rs->n_reading >= NP_ROUTES_KNOWN_MAX) {
      if (!rs->full_said)
        np__log(logger(rs), NP_LOG_WARN,
                "route store %s: more than %d routes of other servers; the rest are not kept",
                rs->url, NP_ROUTES_KNOWN_MAX);
      rs->full_said = 1;
      break;
    }
    if ((e = calloc(1, sizeof(*e))) == NULL)
      break;
    np__strlcpy(e->key, key, sizeof(e->key));
    np__strlcpy(e->owner, owner, sizeof(e->owner));
    HASH_ADD_STR(rs->reading, key, e);
    if (e->hh.tbl == NULL) { /* uthash out of memory (HASH_NONFATAL_OOM) */
      free(e);
      break;
    }
    rs->n_reading++;
  }
  if (strcmp(reply->element[0]->str, "0") != 0) {
    scan_from(rs, reply->element[0]->str);
    return;
  }
  /* A whole pass: the new table (not after the server closed: nobody would look it up). */
  if (rs->srv != NULL)
    table_set(rs, rs->srv->shared, rs->reading, rs->n_reading);
  else
    table_free(&rs->reading);
  rs->reading = NULL;
  rs->n_reading = 0;
  rs->scanning = 0;
  rs->table_ms = uv_now(rs->loop);
}

static void scan_from(np__routes *rs, const char *cursor) {
  if (send_cmd(rs, on_scan, "SCAN %s MATCH %s* COUNT %s", cursor, NP_ROUTE_PREFIX, SCAN_COUNT) !=
      0) {
    rs->scanning = 0;
    table_free(&rs->reading);
    rs->n_reading = 0;
  }
}

/* ---- this server's routes -------------------------------------------------------------------- */

static void note(np__routes *rs, const char *kind, const char *name) {
  char key[NP_ROUTE_KEY_MAX];
  claim *c;

  if (snprintf(key, sizeof(key), "%s:%s", kind, name) >= (int)sizeof(key))
    return;
  HASH_FIND_STR(rs->claims, key, c);
  if (c == NULL) {
    if ((c = calloc(1, sizeof(*c))) == NULL)
      return;
    np__strlcpy(c->key, key, sizeof(c->key));
    HASH_ADD_STR(rs->claims, key, c);
    if (c->hh.tbl == NULL) {
      free(c);
      return;
    }
  }
  c->seen = 1;
}

static int each_proxy(const np_server_proxy *p, void *arg) {
  const char *type = np_server_proxy_type(p);
  char port[8];

  if (strcmp(type, "tcp") == 0 || strcmp(type, "udp") == 0) {
    snprintf(port, sizeof(port), "%d", np_server_proxy_port(p));
    note(arg, type, port);
  }
  return 0;
}

static int each_client(const np_server_client *c, void *arg) {
  return np_server_client_foreach_proxy(c, each_proxy, arg);
}

static int each_http(const char *host, void *arg) {
  note(arg, "http", host);
  return 0;
}

static int each_https(const char *host, void *arg) {
  note(arg, "https", host);
  return 0;
}

/* Which routes this server holds now; those gone are deleted from the store. Nothing while it
 * drains or closes: its visitors should go to the others. */
static void sweep(np__routes *rs) {
  claim *c, *tmp;

  HASH_ITER(hh, rs->claims, c, tmp) {
    c->seen = 0;
  }
  if (!rs->closing && !np_server_draining(rs->srv)) {
    np_server_foreach_client(rs->srv, each_client, rs);
    np__shared_route_hosts(rs->srv->shared, NP_ROUTES_HTTP, each_http, rs);
    np__shared_route_hosts(rs->srv->shared, NP_ROUTES_HTTPS, each_https, rs);
  }
  HASH_ITER(hh, rs->claims, c, tmp) {
    if (c->seen)
      continue;
    if (c->written_ms != 0)
      send_cmd(rs, on_reply, "DEL %s%s@%s", NP_ROUTE_PREFIX, c->key, rs->advertise);
    HASH_DEL(rs->claims, c);
    free(c);
  }
}

static void write_due(np__routes *rs, uint64_t now) {
  claim *c, *tmp;

  HASH_ITER(hh, rs->claims, c, tmp) {
    if (c->written_ms != 0 && now - c->written_ms < rs->lease_ms / 3)
      continue;
    if (send_cmd(rs, on_reply, "SET %s%s@%s %s PX %" PRIu64, NP_ROUTE_PREFIX, c->key, rs->advertise,
                 rs->value, rs->lease_ms) != 0)
      return;
    c->written_ms = now;
  }
}

static void on_tick(uv_timer_t *t) {
  np__routes *rs = t->data;
  uint64_t now = uv_now(rs->loop);

  sweep(rs);
  if (rs->ac == NULL && !rs->resolving && now >= rs->connect_at) {
    connect_store(rs);
    return;
  }
  if (rs->refused) {
    drop(rs, rs->refusal);
    return;
  }
  if (rs->ac != NULL && !rs->connected && now - rs->connecting_since >= rs->lease_ms / 2) {
    drop(rs, "no connection within half a lease");
    return;
  }
  if (!rs->connected)
    return;
  if (rs->waiting > 0 && now - rs->waiting_since >= rs->lease_ms / 2 &&
      now - rs->last_reply >= rs->lease_ms / 2) {
    drop(rs, "no answer within half a lease");
    return;
  }
  write_due(rs, now);
  if (!rs->scanning && now >= rs->next_read) {
    rs->scanning = 1;
    rs->next_read = now + rs->lease_ms / 3;
    table_free(&rs->reading);
    rs->n_reading = 0;
    scan_from(rs, "0");
  }
}

static void on_timer_closed(uv_handle_t *h) {
  unref(h->data);
}

static void close_timer(np__routes *rs) {
  if (rs->timer_closed)
    return;
  rs->timer_closed = 1;
  uv_close((uv_handle_t *)&rs->timer, on_timer_closed);
}

/* Closing, and the store did not answer the deletes within a second: they are left to expire. */
static void on_give_up(uv_timer_t *t) {
  np__routes *rs = t->data;
  drop(rs, "closing");
  close_timer(rs);
}

/* ---- the server's hooks ---------------------------------------------------------------------- */

int np__routes_start(struct np_server *srv) {
  np__routes *rs;

  if (srv->cfg.route_store[0] == '\0' || srv->widx != 0)
    return 0;
  if ((rs = calloc(1, sizeof(*rs))) == NULL)
    return UV_ENOMEM;
  rs->srv = srv;
  rs->loop = srv->loop;
  rs->log = &srv->log;
  np__strlcpy(rs->url, srv->cfg.route_store, sizeof(rs->url));
  np__strlcpy(rs->advertise, srv->cfg.cluster_advertise, sizeof(rs->advertise));
  np__strlcpy(rs->user, srv->cfg.route_store_user, sizeof(rs->user));
  np__strlcpy(rs->password, srv->cfg.route_store_password, sizeof(rs->password));
  if (np__config_route_store(srv->cfg.route_store, rs->host, sizeof(rs->host), &rs->port,
                             &rs->db) != 0) {
    OPENSSL_cleanse(rs->password, sizeof(rs->password));
    free(rs); /* validated with the configuration: not reached */
    return NP_ECONFIG;
  }
  rs->lease_ms = srv->cfg.route_lease_ms;
  rs->tick_ms = rs->lease_ms / 3 < TICK_MAX_MS ? rs->lease_ms / 3 : TICK_MAX_MS;
  rs->backoff_ms = CONNECT_MIN_MS;
  snprintf(rs->value, sizeof(rs->value), "%016" PRIx64, srv->shared->instance);
  uv_timer_init(srv->loop, &rs->timer);
  rs->timer.data = rs;
  uv_timer_start(&rs->timer, on_tick, 0, rs->tick_ms);
  uv_unref((uv_handle_t *)&rs->timer); /* the server's life is not the timer's */
  rs->refs = 1;                        /* the timer's */
  srv->routes = rs;
  np__log(&srv->log, NP_LOG_INFO,
          "route store %s: routes of this server as %s, lease %" PRIu64 "ms", srv->cfg.route_store,
          srv->cfg.cluster_advertise, rs->lease_ms);
  return 0;
}

void np__routes_stop(struct np_server *srv) {
  np__routes *rs = srv->routes;

  if (rs == NULL)
    return;
  table_set(rs, srv->shared, NULL, 0);
  srv->routes = NULL;
  rs->closing = 1;
  sweep(rs); /* deletes every route of ours the store holds */
  /* The server goes before the store's last callbacks may: they log nothing. */
  rs->log = NULL;
  rs->srv = NULL;
  if (rs->resolving)
    uv_cancel((uv_req_t *)&rs->gai);
  if (rs->ac != NULL && rs->connected) {
    /* Once the deletes are answered, on_disconnect; else on_give_up. The timer now holds the loop
     * for that second at most. */
    redisAsyncDisconnect(rs->ac);
    if (rs->ac == NULL)
      return; /* nothing was pending: it is gone, and on_disconnect closed the timer */
    uv_ref((uv_handle_t *)&rs->timer);
    uv_timer_start(&rs->timer, on_give_up, 1000, 0);
    return;
  }
  drop(rs, "closing");
  close_timer(rs);
}

static void table_set(np__routes *rs, np__shared *sh, known *t, size_t n) {
  known *old = rs->table;

  uv_mutex_lock(&sh->mu);
  sh->remote_routes = t;
  uv_mutex_unlock(&sh->mu);
  rs->table = t;
  rs->n_table = n;
  table_free(&old);
}

int np__routes_owner(const struct np_server *srv, const char *route, char owner[NP_HOSTPORT_MAX]) {
  np__shared *sh = srv->shared;
  known *table, *e;
  int r = UV_ENOENT;

  uv_mutex_lock(&sh->mu);
  table = sh->remote_routes;
  HASH_FIND_STR(table, route, e);
  if (e != NULL) {
    np__strlcpy(owner, e->owner, NP_HOSTPORT_MAX);
    r = 0;
  }
  uv_mutex_unlock(&sh->mu);
  return r;
}

int np__routes_owner_host(const struct np_server *srv, const char *kind, const char *host,
                          char owner[NP_HOSTPORT_MAX]) {
  char key[NP_ROUTE_KEY_MAX];
  const char *dot;

  if (snprintf(key, sizeof(key), "%s:%s", kind, host) >= (int)sizeof(key))
    return UV_ENOENT;
  if (np__routes_owner(srv, key, owner) == 0)
    return 0;
  /* Then the wildcards that cover it, the nearest first: *.b.example.com, *.example.com, ... */
  for (dot = strchr(host, '.'); dot != NULL; dot = strchr(dot + 1, '.')) {
    snprintf(key, sizeof(key), "%s:*%s", kind, dot);
    if (np__routes_owner(srv, key, owner) == 0)
      return 0;
  }
  return UV_ENOENT;
}

int np__routes_get_view(const struct np_server *srv, np__routes_view *view) {
  const np__routes *rs = srv->routes;

  if (rs == NULL)
    return UV_ENOENT;
  view->store = srv->cfg.route_store;
  view->up = rs->connected;
  view->claimed = HASH_COUNT(rs->claims);
  view->known = rs->n_table;
  view->table_age_ms = rs->table_ms == 0 ? UINT64_MAX : uv_now(srv->loop) - rs->table_ms;
  return 0;
}

int np__routes_foreach(const struct np_server *srv,
                       int (*cb)(const char *route, const char *owner, void *arg), void *arg) {
  const known *e, *tmp;
  int r;

  if (srv->routes == NULL)
    return 0;
  HASH_ITER(hh, srv->routes->table, e, tmp) {
    if ((r = cb(e->key, e->owner, arg)) != 0)
      return r;
  }
  return 0;
}
