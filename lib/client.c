/* np_client: the control session (login, proxy registration, heartbeats, reconnect with backoff and
 * jitter) and one work item per visitor: dial the local service, dial the server, prove the work
 * connection, join the two. docs/protocol.md has the message flow. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"

static void disconnect(struct np_client *cl, int status, const char *why);
static void goodbye(struct np_client *cl, const char *why);
static void drop_session(struct np_client *cl);
static void on_timer(uv_timer_t *t);

/* One PROXY_OPT per list item, then per key set (docs/protocol.md): an HTTP proxy's routing says
 * more than PROXY's fields hold. */
static int send_opts(struct np_client *cl, const char *proxy, const char *key, const char *list) {
  np_msg m = {.type = NP_MSG_PROXY_OPT};
  int r = 0;

  strcpy(m.name, proxy);
  strcpy(m.addr, key);
  for (const char *p = list; *p != '\0' && r == 0;) {
    size_t n = strcspn(p, ",");
    memcpy(m.text, p, n); /* the config checked each item's length */
    m.text[n] = '\0';
    r = np__client_send(cl, &m);
    p += n + (p[n] == ',');
  }
  return r;
}

static int send_http_opts(struct np_client *cl, const np__proxy_cfg *px) {
  static const struct {
    const char *key;
    size_t off;
  } opts[] = {
      {"custom_domain", offsetof(np__proxy_cfg, custom_domains)},
      {"subdomain", offsetof(np__proxy_cfg, subdomain)},
      {"location", offsetof(np__proxy_cfg, locations)},
      {"host_header_rewrite", offsetof(np__proxy_cfg, host_header_rewrite)},
      {"http_user", offsetof(np__proxy_cfg, http_user)},
      {"http_password", offsetof(np__proxy_cfg, http_password)},
  };
  int r = 0;

  for (size_t i = 0; i < NP_ARRAY_SIZE(opts) && r == 0; i++) {
    const char *v = (const char *)px + opts[i].off;
    /* Only the lists are split: a password may hold a comma. */
    if (i < 3)
      r = send_opts(cl, px->name, opts[i].key, v);
    else if (v[0] != '\0') {
      np_msg m = {.type = NP_MSG_PROXY_OPT};
      strcpy(m.name, px->name);
      strcpy(m.addr, opts[i].key);
      strcpy(m.text, v);
      r = np__client_send(cl, &m);
    }
  }
  return r;
}

/* A private proxy's verifier (never its secret_key) and who may visit it, before its PROXY. */
static int send_private_opts(struct np_client *cl, const np__proxy_cfg *px) {
  const char *key = px->secret_key[0] != '\0' ? px->secret_key : cl->cfg.secret_key;
  unsigned char v[NP_MSG_KEY_LEN];
  char full[2 * NP_MSG_NAME_MAX + 2];
  np_msg m = {.type = NP_MSG_PROXY_OPT};
  int r;

  snprintf(full, sizeof(full), "%s.%s", cl->cfg.name, px->name);
  if ((r = np__auth_stcp_verifier(key, full, v)) != 0)
    return r;
  strcpy(m.name, px->name);
  strcpy(m.addr, "secret");
  for (size_t i = 0; i < sizeof(v); i++)
    snprintf(m.text + 2 * i, 3, "%02x", v[i]);
  if ((r = np__client_send(cl, &m)) != 0 || px->allow_users[0] == '\0')
    return r;
  strcpy(m.addr, "allow_users");
  strcpy(m.text, px->allow_users);
  return np__client_send(cl, &m);
}

int np__client_register(struct np_client *cl, cproxy *cp) {
  const np__proxy_cfg *px = &cp->cfg;
  np_msg m = {.type = NP_MSG_PROXY, .port = (uint16_t)px->remote_port};
  int r;

  cp->state = NP_CLIENT_PROXY_PENDING;
  cp->port = cp->status = 0;
  cp->error[0] = '\0';
  if (px->kind == NP_PROXY_HTTP || px->kind == NP_PROXY_HTTPS) {
    m.port = 0;
    if ((r = send_http_opts(cl, px)) != 0)
      return r;
  }
  if (np__kind_private(px->kind)) {
    m.port = 0;
    if ((r = send_private_opts(cl, px)) != 0)
      return r;
  }
  strcpy(m.name, px->name);
  strcpy(m.addr, px->bind_addr);
  strcpy(m.text, px->allow_ips[0] != '\0' ? px->allow_ips : cl->cfg.allow_ips);
  m.kind = (uint8_t)px->kind;
  return np__client_send(cl, &m);
}

static void register_proxies(struct np_client *cl) {
  for (size_t i = 0; i < cl->cfg.n_proxies && cl->state == C_READY; i++)
    np__client_register(cl, cl->px[i]);
}

/* Tell the server at once, so it sends flows' datagrams the way they now get through. */
static void on_ulink(void *arg, int up) {
  struct np_client *cl = arg;
  np_msg m = {.type = NP_MSG_PING, .id = ++cl->ping_seq};
  m.status = up ? NP_UDP_PATH_UP : NP_UDP_PATH_DOWN;
  if (cl->ch != NULL)
    np__client_send(cl, &m);
}

/* The datagram path, when a UDP proxy may use it: keyed from this session's TLS connection (or,
 * with insecure = true, its session key), towards the address the control connection reached. */
void np__client_start_ulink(struct np_client *cl) {
  unsigned char master[NP_SEAL_MASTER];
  struct sockaddr_storage server;
  np_conn *c;
  int r, udp = 0;

  for (size_t i = 0; i < cl->cfg.n_proxies; i++)
    udp |= cl->px[i]->cfg.kind == NP_PROXY_UDP;
  if (!udp || !cl->cfg.udp_datagram_path || cl->ulink != NULL || cl->ch == NULL)
    return;
  c = np__transport_conn(cl->transport, np__chan_conn(cl->ch));
  if (np__conn_peer_addr(c, &server) != 0)
    return;
  if ((r = np__datagram_master(c, cl->tls != NULL, cl->key, master)) == 0)
    r = np__ulink_new(cl->loop, (struct sockaddr *)&server, master, cl->session_id,
                      cl->cfg.udp_keepalive_ms, cl->cfg.udp_path_retry_ms, &cl->log,
                      &cl->ulink_stats, on_ulink, cl, &cl->ulink);
  OPENSSL_cleanse(master, sizeof(master));
  if (r != 0)
    np__log(&cl->log, NP_LOG_WARN, "no datagram path (%s): UDP flows use the tunnel",
            np_strerror(r));
}

/* Where visitors reach a public port, for the log: "host:port" with the address the proxy binds
 * on the server when it names one, else the server's host. Printing the control address instead
 * ("public port 26000 on 127.0.0.1:27000") read as if the proxy were on the control port. */
static void public_addr(const struct np_client *cl, const char *name, unsigned port, char *buf,
                        size_t len) {
  const cproxy *cp = np__client_find_proxy((struct np_client *)cl, name);
  const np__proxy_cfg *px = cp != NULL ? &cp->cfg : NULL;
  char host[NP_HOSTPORT_MAX];
  int control_port;

  if (px != NULL && px->bind_addr[0] != '\0' && strcmp(px->bind_addr, "0.0.0.0") != 0 &&
      strcmp(px->bind_addr, "::") != 0)
    np__strlcpy(host, px->bind_addr, sizeof(host));
  else if (np__split_hostport(cl->addr, host, sizeof(host), &control_port) != 0)
    np__strlcpy(host, cl->addr, sizeof(host)); /* validated at start: not reached */
  snprintf(buf, len, strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host, port);
}

static void ready(struct np_client *cl) {
  np__client_set_state(cl, C_READY);
  cl->attempt = 0;
  cl->dns_warned = 0; /* a later outage is worth a warning again */
  cl->quiet_said = 0;
  cl->stats.connects++;
  np__log(&cl->log, NP_LOG_INFO, "logged in to %s as %s", np__client_label(cl), cl->cfg.name);
  np__client_emit(cl, NP_CLIENT_LOGGED_IN, 0, NULL, NULL, 0);
  if (cl->state != C_READY || cl->closing)
    return; /* the embedder closed the client from its event callback */
  cl->pool_serial = 0;
  if (native(cl)) {
    /* Each step may end the session (a send that fails drops it and schedules a reconnect): the
     * next must not run on a session that is gone (the allocator sweep found start_ulink doing
     * just that). */
    register_proxies(cl);
    if (cl->state == C_READY)
      np__client_pool_refill(cl);
    if (cl->state == C_READY)
      np__client_start_ulink(cl);
  } else {
    /* The line protocol never tells the client its public port (the server's visit port), and
     * nothing about it changes across reconnects: say so once. */
    if (cl->stats.connects == 1)
      np__log(&cl->log, NP_LOG_INFO,
              "proxy %s: visitors arrive on the server's visit port (the line codec does not "
              "tell the client its number)",
              cl->px[0]->cfg.name);
    cl->px[0]->state = NP_CLIENT_PROXY_OK;
    np__client_emit(cl, NP_CLIENT_PROXY_READY, 0, cl->px[0]->cfg.name, "line codec", 0);
  }
}

/* At its first login, before any proxy was ever served, the server refused them all: nothing will
 * change by waiting (a port outside allow_ports, a name taken, a type the server lacks), so the
 * client gives up with a reason rather than sit idle. Later, after reconnects, a refusal may be
 * passing (its old session still holds the port) and the client goes on. */
static int all_refused(const struct np_client *cl) {
  if (cl->served || cl->stats.connects != 1)
    return 0;
  for (size_t i = 0; i < cl->cfg.n_proxies; i++)
    if (cl->px[i]->state != NP_CLIENT_PROXY_REFUSED)
      return 0;
  return cl->cfg.n_proxies > 0;
}

static void fatal(struct np_client *cl, int status, const char *text) {
  np__log(&cl->log, NP_LOG_ERROR, "giving up: %s", text);
  drop_session(cl);
  uv_timer_stop(&cl->timer);
  np__client_set_state(cl, C_FATAL);
  np__client_emit(cl, NP_CLIENT_FATAL, status, NULL, text, 0);
}

/* A member of a set (server = a, b) whose server is one another member has a session with (two
 * addresses of one np-server): a second session under the same name would be refused, so it says
 * so and tries again at the longest back-off, in case the addresses part. */
static int twin(struct np_client *cl, uint64_t instance) {
  const struct np_client *set = cl->parent;
  char why[NP_CLIENT_LABEL_MAX + 120];

  if (set == NULL || instance == 0)
    return 0;
  for (size_t i = 0; i < set->n_members; i++) {
    const struct np_client *m = set->members[i];
    if (m == NULL || m == cl || m->server_instance != instance)
      continue;
    snprintf(why, sizeof(why),
             "the same np-server as %s (one server at two addresses): no second "
             "session",
             np__client_label(m));
    goodbye(cl, "a session with this server is open already");
    cl->retry_after_ms = cl->cfg.reconnect_max_ms;
    disconnect(cl, NP_ECLOSED, why);
    return 1;
  }
  return 0;
}

static void on_msg(np__chan *ch, const np_msg *m) {
  struct np_client *cl = np__chan_data(ch);
  np_msg out;
  int r = 0;

  cl->last_rx = now_ms(cl);
  switch (m->type) {
  case NP_MSG_HELLO:
    if (cl->state != C_HELLO) {
      r = NP_EPROTO;
      break;
    }
    cl->server_caps = (unsigned)m->status; /* what it takes beyond version 1 (NP_HELLO_*) */
    if (twin(cl, m->id))
      return;
    cl->server_instance = m->id;
    memset(&out, 0, sizeof(out));
    out.type = NP_MSG_LOGIN;
    out.version = PROTO_VERSION;
    np__strlcpy(out.name, cl->cfg.name, sizeof(out.name));
    if ((r = np__auth_nonce(cl->cnonce)) != 0)
      break;
    memcpy(out.nonce, cl->cnonce, NP_MSG_KEY_LEN);
    np__auth_login_mac(cl->cfg.token, m->nonce, cl->cnonce, out.name, out.mac);
    np__auth_session_key(cl->cfg.token, m->nonce, cl->cnonce, out.name, cl->key);
    out.id = cl->resume;
    out.status = (cl->cfg.takeover ? NP_LOGIN_TAKEOVER : 0) | NP_LOGIN_DIRECT;
    np__client_set_state(cl, C_LOGIN);
    r = np__client_send(cl, &out);
    break;
  case NP_MSG_LOGIN_RESP:
    if (cl->state != C_LOGIN) {
      r = NP_EPROTO;
      break;
    }
    if (m->status != 0) {
      char text[NP_MSG_TEXT_MAX + 64];
      snprintf(text, sizeof(text), "login refused by %s: %s", np__client_label(cl),
               m->text[0] ? m->text : np_strerror(m->status));
      if (m->status == NP_EAUTH || m->status == NP_ENAMEINUSE || m->status == NP_ECONFIG)
        fatal(cl, m->status, text);
      else {
        if (m->status == NP_EBACKOFF)
          cl->retry_after_ms = m->id; /* trying earlier would only be refused again */
        disconnect(cl, m->status, text);
      }
      return;
    }
    cl->session_id = m->id;
    ready(cl);
    break;
  case NP_MSG_PROXY_RESP: {
    cproxy *cp = np__client_find_proxy(cl, m->name);
    if (cp == NULL) {
      /* The answer to a registration a reload has since closed. */
      np__log(&cl->log, NP_LOG_DEBUG, "proxy %s: answer of the server to a removed proxy", m->name);
      break;
    }
    cp->status = m->status;
    cp->port = m->status == 0 ? m->port : 0;
    cp->state = m->status == 0 ? NP_CLIENT_PROXY_OK : NP_CLIENT_PROXY_REFUSED;
    np__strlcpy(cp->error,
                m->status == 0 ? ""
                : m->text[0]   ? m->text
                               : np_strerror(m->status),
                sizeof(cp->error));
    if (m->status == 0) {
      const np__proxy_cfg *px = &cp->cfg;
      char where[NP_HOSTPORT_MAX + 8];
      public_addr(cl, m->name, m->port, where, sizeof(where));
      if (px->kind == NP_PROXY_HTTP || px->kind == NP_PROXY_HTTPS)
        /* text: the hosts it serves (the server spells subdomain out) */
        np__log(&cl->log, NP_LOG_INFO, "proxy %s: %s://%s on the server's %s port %s", m->name,
                px->kind == NP_PROXY_HTTP ? "http" : "https", m->text,
                px->kind == NP_PROXY_HTTP ? "HTTP" : "HTTPS", where);
      else if (np__kind_private(px->kind)) /* text: its full name */
        np__log(&cl->log, NP_LOG_INFO,
                "proxy %s: private (%s): visitors reach it as %s with its secret_key", m->name,
                px->kind == NP_PROXY_STCP ? "stcp" : "sudp", m->text);
      else
        np__log(&cl->log, NP_LOG_INFO, "proxy %s: public port %u at %s", m->name, m->port, where);
      np__client_emit(cl, NP_CLIENT_PROXY_READY, 0, m->name, NULL, m->port);
      cl->served = 1;
    } else {
      np__log(&cl->log, NP_LOG_ERROR, "proxy %s refused by the server: %s", m->name,
              m->text[0] ? m->text : np_strerror(m->status));
      np__client_emit(cl, NP_CLIENT_PROXY_FAILED, m->status, m->name, m->text, 0);
      if (all_refused(cl)) {
        char text[NP_MSG_TEXT_MAX + NP_MSG_NAME_MAX + 64];
        snprintf(text, sizeof(text), "the server refused every proxy (%s: %s)", m->name, cp->error);
        fatal(cl, NP_EALLREFUSED, text);
        return;
      }
    }
    break;
  }
  case NP_MSG_REQ_WORK:
    if (cl->state != C_READY)
      r = NP_EPROTO;
    else
      np__client_req_work(cl, m);
    break;
  case NP_MSG_PING:
    if (m->status == NP_PING_DRAINING && !cl->server_draining) {
      cl->server_draining = 1;
      np__log(&cl->log, NP_LOG_INFO,
              "the server is draining: it sends no new visitors; the joined ones finish, and the "
              "client reconnects as soon as the server ends the session");
    }
    if (native(cl)) {
      memset(&out, 0, sizeof(out));
      out.type = NP_MSG_PONG;
      out.id = m->id;
      r = np__client_send(cl, &out);
    }
    break;
  case NP_MSG_PONG:
    break;
  case NP_MSG_DIRECT:
  case NP_MSG_DIRECT_INTRO:
    if (cl->state != C_READY)
      r = NP_EPROTO;
    else
      np__client_direct_msg(cl, m);
    break;
  case NP_MSG_CLOSE:
    if (m->status == NP_ENAMEINUSE) {
      /* Replaced by a client with --takeover: coming back would replace it in turn. */
      fatal(cl, NP_ENAMEINUSE, m->text[0] ? m->text : np_strerror(m->status));
      return;
    }
    np__log(&cl->log, NP_LOG_WARN, "server closed the session: %s",
            m->text[0] ? m->text : np_strerror(m->status));
    disconnect(cl, m->status != 0 ? m->status : NP_ECLOSED, m->text);
    return;
  default:
    r = NP_EPROTO;
  }
  if (r != 0)
    disconnect(cl, r, r == NP_EPROTO ? "unexpected message from the server" : np_strerror(r));
}

static void on_chan_error(np__chan *ch, int err) {
  struct np_client *cl = np__chan_data(ch);
  disconnect(cl, err, err == UV_EOF ? "server closed the connection" : np_strerror(err));
}

static void on_chan_closed(np__chan *ch) {
  np__client_unref(np__chan_data(ch));
}

/* The transport's callbacks: the MUX message that starts multiplexing, in our codec; and the
 * client's reference for each mux, held until it is gone. */
static int mux_preface(np_conn *c, void *arg) {
  struct np_client *cl = arg;
  np_msg hello = {.type = NP_MSG_MUX, .version = PROTO_VERSION};
  return np__conn_send_msg(c, cl->codec, &hello);
}

static void transport_ref(void *arg, int delta) {
  struct np_client *cl = arg;
  if (delta > 0)
    cl->refs++;
  else
    np__client_unref(cl);
}

static void on_control_dialed(void *data, int status, np_conn *c) {
  struct np_client *cl = data;
  np_msg hello = {.type = NP_MSG_HELLO, .version = PROTO_VERSION};
  int r;

  cl->dial = NULL;
  if (status != 0) {
    disconnect(cl, status, np_strerror(status));
    return;
  }
  if ((r = np__chan_new(c, cl->codec, cl->cfg.max_frame, CTRL_MAX_QUEUED, &cl->ch)) != 0) {
    np__conn_close(c, NULL);
    disconnect(cl, r, np_strerror(r));
    return;
  }
  cl->refs++; /* the chan's, until its close callback */
  cl->last_rx = cl->last_tx = now_ms(cl);
  if ((r = np__chan_start(cl->ch, on_msg, on_chan_error, cl)) != 0) {
    disconnect(cl, r, np_strerror(r));
    return;
  }
  uv_timer_start(&cl->timer, on_timer, 0, 0);
  if (!native(cl)) {
    ready(cl);
    return;
  }
  np__client_set_state(cl, C_HELLO);
  if ((r = np__client_send(cl, &hello)) != 0)
    disconnect(cl, r, np_strerror(r));
}

static void connect_now(struct np_client *cl) {
  int r;

  np__client_set_state(cl, C_DIALING);
  np__log(&cl->log, NP_LOG_DEBUG, "connecting to %s", np__client_label(cl));
  r = np__transport_connect(cl->transport, on_control_dialed, cl, &cl->dial);
  if (r != 0)
    disconnect(cl, r, np_strerror(r));
}

/* Capped exponential backoff with jitter: the n-th retry waits a random time in [d/2, d], d =
 * min(reconnect_max, reconnect_min * 2^n), so a fleet of clients does not reconnect in lockstep. */
static uint64_t backoff_ms(struct np_client *cl) {
  uint64_t d = cl->cfg.reconnect_min_ms;
  unsigned char rnd[4];
  uint32_t x;

  for (unsigned i = 0; i < cl->attempt && d < cl->cfg.reconnect_max_ms; i++)
    d *= 2;
  if (d > cl->cfg.reconnect_max_ms)
    d = cl->cfg.reconnect_max_ms;
  if (np__auth_random(rnd, sizeof(rnd)) != 0)
    memset(rnd, 0, sizeof(rnd));
  x = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
  return d / 2 + (d / 2 + 1) * (uint64_t)x / ((uint64_t)UINT32_MAX + 1);
}

/* The client always watches the server's silence (a line server sends KEEP_ALIVE too), but pings
 * only when the codec has pongs: a line client never writes on its control connection
 * (docs/protocol.md, line protocol). */
static enum np__heartbeat heartbeat(const struct np_client *cl, uint64_t now, uint64_t *next) {
  int pongs = (cl->codec->caps & NP_CODEC_CAP_PONG) != 0;

  return np__heartbeat_due(now, cl->last_rx, cl->last_tx, cl->cfg.heartbeat_interval_ms,
                           cl->cfg.heartbeat_timeout_ms, 1, pongs, next);
}

/* Backoff expiry, or the session's heartbeat: re-armed for whichever comes first, the moment the
 * server counts as dead (exactly heartbeat_timeout after its last message) or the next ping we owe.
 */
static void on_timer(uv_timer_t *t) {
  struct np_client *cl = t->data;
  uint64_t now = now_ms(cl), next;
  enum np__heartbeat due;
  np_msg ping = {.type = NP_MSG_PING};

  if (cl->state == C_BACKOFF) {
    connect_now(cl);
    return;
  }
  if (cl->ch == NULL)
    return;
  due = heartbeat(cl, now, &next);
  if (due == NP_HEARTBEAT_DEAD) {
    disconnect(cl, NP_EPEERDEAD, "no heartbeat from the server within heartbeat_timeout");
    return;
  }
  np__client_pool_refill(cl); /* opens work connections only: last_rx and last_tx stay */
  if (due == NP_HEARTBEAT_PING) {
    ping.id = ++cl->ping_seq;
    np__client_send(cl, &ping);
    heartbeat(cl, now, &next); /* from the ping's last_tx (unchanged if it could not be sent) */
  }
  uv_timer_start(&cl->timer, on_timer, np__ms_left(next, now), 0);
}

static void drop_session(struct np_client *cl) {
  np__client_pool_drop_idle(cl);
  if (cl->ulink != NULL) {
    np__ulink_close(cl->ulink);
    cl->ulink = NULL;
  }
  if (cl->dial != NULL) {
    np__dial_cancel(cl->dial);
    cl->dial = NULL;
  }
  if (cl->ch != NULL) {
    np__chan_close(cl->ch, on_chan_closed);
    cl->ch = NULL;
  }
  np__transport_disconnect(cl->transport);
  cl->session_id = 0;
  cl->server_caps = 0;
  cl->server_instance = 0;
  for (size_t i = 0; i < cl->cfg.n_proxies; i++) {
    cl->px[i]->state = NP_CLIENT_PROXY_CLOSED;
    cl->px[i]->port = 0;
  }
}

static int is_dns_error(int status) {
  return status == UV_EAI_NONAME || status == UV_EAI_AGAIN || status == UV_EAI_FAIL ||
         status == UV_EAI_NODATA || status == UV_EAI_ADDRFAMILY;
}

/* Drop the control session and schedule a reconnect. */
static void disconnect(struct np_client *cl, int status, const char *why) {
  uint64_t delay;
  int quiet;

  if (cl->closing || cl->state == C_FATAL)
    return;
  if (status == NP_ETLSVERIFY || status == NP_ENOTLS || status == NP_ETLSREQUIRED) {
    /* Retrying cannot help: the server is not the one we trust, or the sides disagree on TLS. */
    char text[NP_MSG_TEXT_MAX + 300];
    snprintf(text, sizeof(text), "%s: %s", np__client_label(cl), np_strerror(status));
    fatal(cl, status, text);
    return;
  }
  drop_session(cl);
  if (cl->state == C_READY || cl->state == C_LOGIN || cl->state == C_HELLO)
    np__client_emit(cl, NP_CLIENT_DISCONNECTED, status, NULL, why, 0);
  delay = backoff_ms(cl);
  if (delay < cl->retry_after_ms)
    delay = cl->retry_after_ms + delay / 4; /* keep some jitter */
  if (cl->server_draining) {
    /* It said it was going: another server behind the same address may take us now. */
    delay = 0;
    cl->server_draining = 0;
    cl->attempt = 0;
  }
  cl->retry_after_ms = 0;
  cl->attempt++;
  /* Another address of the same name serves (a server of a round-robin name is down, or one
   * listens on IPv4 only): said once, then at debug level until this one connects. */
  quiet = cl->parent != NULL && cl->parent->set_ops->retrying(cl) && cl->state != C_READY;
  if (quiet && cl->quiet_said) {
    np__log(&cl->log, NP_LOG_DEBUG, "cannot connect to %s: %s (%s); retrying in %llums",
            np__client_label(cl), why, np_err_name(status), (unsigned long long)delay);
  } else if (is_dns_error(status)) {
    /* A name that does not resolve is a typo or a DNS outage: said once, loudly, then retried
     * quietly (debug) at the back-off until it resolves. */
    np__log(&cl->log, cl->dns_warned ? NP_LOG_DEBUG : NP_LOG_WARN,
            "cannot resolve the server's name %s: %s (%s); retrying at the back-off (next in "
            "%llums)%s",
            np__client_label(cl), why, np_err_name(status), (unsigned long long)delay,
            cl->dns_warned ? "" : "; check --server, further failures are logged at debug level");
    cl->dns_warned = 1;
  } else
    np__log(&cl->log, cl->state == C_READY ? NP_LOG_WARN : NP_LOG_INFO,
            "%s %s: %s (%s); retrying in %llums",
            cl->state == C_READY ? "lost the connection to" : "cannot connect to",
            np__client_label(cl), why, np_err_name(status), (unsigned long long)delay);
  cl->quiet_said |= quiet;
  np__client_set_state(cl, C_BACKOFF);
  uv_timer_start(&cl->timer, on_timer, delay, 0);
}

/* Say goodbye on the control session, so the server ends it now rather than when it notices. */
static void goodbye(struct np_client *cl, const char *why) {
  np_msg bye = {.type = NP_MSG_CLOSE};

  np__strlcpy(bye.text, why, sizeof(bye.text));
  if (native(cl))
    np__chan_send(cl->ch, &bye);
  np__chan_close_flush(cl->ch, on_chan_closed);
  cl->ch = NULL;
}

void np__client_reconnect(struct np_client *cl, const char *why) {
  if (cl->closing || cl->state != C_READY)
    return;
  goodbye(cl, why);
  drop_session(cl);
  np__client_emit(cl, NP_CLIENT_DISCONNECTED, NP_ECLOSED, NULL, why, 0);
  if (cl->closing || cl->state != C_READY)
    return; /* the embedder closed the client from its event callback */
  cl->attempt = 0;
  connect_now(cl);
}

int np__client_create(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out) {
  struct np_client *cl;

  if (loop == NULL || cfg == NULL || cfg->kind != NP_CONFIG_CLIENT)
    return UV_EINVAL;
  if ((cl = calloc(1, sizeof(*cl))) == NULL)
    return UV_ENOMEM;
  cl->loop = loop;
  cl->cfg = *cfg;
  np__strlcpy(cl->addr, cfg->server, sizeof(cl->addr));
  if (np_config_validate(&cl->cfg) != 0) {
    free(cl);
    return NP_ECONFIG;
  }
  for (size_t i = 0; i < cl->cfg.n_proxies; i++) {
    if (np__cproxy_new(&cl->cfg.proxies[i], &cl->px[i]) != 0) {
      while (i-- > 0)
        np__cproxy_unref(cl->px[i]);
      explicit_bzero(&cl->cfg, sizeof(cl->cfg));
      free(cl);
      return UV_ENOMEM;
    }
  }
  cl->codec = np_codec_find(cfg->codec);
  {
    /* Fixed for the client's life, so the server tells its re-logins from another instance's. */
    unsigned char r[NP_MSG_KEY_LEN];
    if (np__auth_nonce(r) == 0)
      memcpy(&cl->resume, r, sizeof(cl->resume));
    cl->resume |= 1; /* never 0, which means "none" */
  }
  np__bufcache_init(&cl->chunks, np__join_chunk_size(), NP_RELAY_CACHE);
  cl->chunks.pipes.enabled = cl->cfg.relay_splice;
  np__logger_init(&cl->log);
  cl->log.level = (np_log_level)cfg->log_level;
  cl->log.cb = np_log_stderr_for((np_log_format)cfg->log_format);
  *out = cl;
  return 0;
}

int np_client_set_codec(struct np_client *cl, const np_codec_ops *codec) {
  if (cl->started)
    return NP_ESTATE;
  if (np__codec_ops_check(codec) != 0)
    return UV_EINVAL;
  cl->codec = codec;
  if (cl->set_ops != NULL)
    cl->set_ops->spread(cl);
  return 0;
}

void np_client_set_log(struct np_client *cl, np_log_level level, np_log_cb cb, void *arg) {
  cl->log.level = level;
  cl->log.cb = cb != NULL ? cb : np_log_stderr;
  cl->log.arg = arg;
  if (cl->set_ops != NULL)
    cl->set_ops->spread(cl);
}

void np_client_set_event_cb(struct np_client *cl, np_client_event_cb cb) {
  cl->event_cb = cb;
}

static int client_start(struct np_client *cl);

int np_client_start(struct np_client *cl) {
  int r;

  if (cl->started || cl->closing)
    return NP_ESTATE;
  /* The visitors' ports first: one in use fails the start before anything dials. */
  if (cl->parent == NULL &&
      ((r = np__client_directs_start(cl)) != 0 || (r = np__client_visitors_start(cl)) != 0)) {
    np__client_directs_close(cl);
    return r;
  }
  r = cl->set_ops != NULL ? cl->set_ops->start(cl) : client_start(cl);
  if (r != 0) {
    np__client_visitors_close(cl);
    np__client_directs_close(cl);
  }
  return r;
}

static int client_start(struct np_client *cl) {
  if (!cl->cfg.insecure) {
    int r = np__tls_client_new(cl->loop, &cl->cfg, &cl->log, &cl->tls);
    if (r != 0)
      return r;
  } else {
    np__log(&cl->log, np__client_echo(cl, NP_LOG_WARN), /* once for a set */
            "TLS is off (insecure = true): tunnelled traffic crosses the network in clear and "
            "anybody on the path can read or change it");
  }
  {
    np__transport_opts o = {
        .loop = cl->loop,
        .server = cl->addr,
        .work = native(cl) ? NULL : cl->cfg.tunnel,
        .dial_timeout_ms = cl->cfg.dial_timeout_ms,
        .tls = cl->tls,
        .mux = cl->cfg.mux && native(cl),
        .mux_max_window = (uint32_t)cl->cfg.mux_max_window,
        .mux_session_window = cl->cfg.mux_session_window,
        .keepalive_s = (unsigned)(cl->cfg.heartbeat_interval_ms / 1000),
        .preface = mux_preface,
        .ref = transport_ref,
        .arg = cl,
    };
    int r = np__transport_new(&o, &cl->transport);
    if (r != 0)
      return r;
  }
  if (cl->admin_start != NULL) {
    int r = cl->admin_start(cl);
    if (r != 0)
      return r;
  }
  cl->started = 1;
  uv_timer_init(cl->loop, &cl->timer);
  cl->timer.data = cl;
  cl->refs++; /* the timer's */
  if (!cl->hold)
    connect_now(cl);
  return 0;
}

void np__client_go(struct np_client *cl) {
  int held = cl->hold;

  cl->hold = 0;
  if (held && cl->started && !cl->closing && cl->state == C_IDLE)
    connect_now(cl);
}

void np_client_get_stats(const struct np_client *cl, np_client_stats *out, size_t size) {
  np_client_stats st = cl->stats;

  if (cl->set_ops != NULL) {
    cl->set_ops->stats(cl, &st);
    np__stats_copy(out, size, &st, sizeof(st));
    return;
  }
  st.udp_path_up = cl->ulink != NULL && np__ulink_is_up(cl->ulink);
  st.udp_path_in = cl->ulink_stats.in;
  st.udp_path_out = cl->ulink_stats.out;
  np__stats_copy(out, size, &st, sizeof(st));
}

void np_client_log_stats(const struct np_client *cl) {
  np_client_stats st;

  np_client_get_stats(cl, &st, sizeof(st));
  np__stats_log_client(&cl->log, &st);
}

static void on_timer_closed(uv_handle_t *h) {
  np__client_unref(h->data);
}

static void on_drain_timer_closed(uv_handle_t *h) {
  free(h);
}

void np_client_close(struct np_client *cl, np_client_close_cb cb) {
  if (cl->closing)
    return;
  cl->closing = 1;
  cl->close_cb = cb;
  cl->refs++;
  if (cl->drain_timer != NULL) /* np_client_drain's (client_drain.c) */
    uv_close((uv_handle_t *)cl->drain_timer, on_drain_timer_closed);
  cl->drain_timer = NULL;
  if (cl->dial != NULL)
    np__dial_cancel(cl->dial);
  if (cl->admin_stop != NULL)
    cl->admin_stop(cl);
  np__client_visitors_close(cl);
  np__client_directs_close(cl);
  if (cl->set_ops != NULL) {
    cl->set_ops->close(cl);
    np__client_unref(cl);
    return;
  }
  if (cl->ch != NULL)
    goodbye(cl, "client shutting down");
  if (cl->transport != NULL)
    np__transport_disconnect(cl->transport); /* after the goodbye above: it is written first */
  if (cl->ulink != NULL) {
    np__ulink_close(cl->ulink);
    cl->ulink = NULL;
  }
  cl->tq_head = cl->tq_tail = NULL;
  while (cl->works != NULL)
    np__client_work_free(cl->works);
  while (cl->pool != NULL)
    np__client_pooled_free(cl->pool);
  np__track_abort_all(&cl->joins);
  if (cl->started)
    uv_close((uv_handle_t *)&cl->timer, on_timer_closed);
  np__client_unref(cl);
}

void *np_client_get_data(const struct np_client *cl) {
  return cl->data;
}

void np_client_set_data(struct np_client *cl, void *data) {
  cl->data = data;
}

const char *np_client_state(const struct np_client *cl) {
  switch ((cl->set_ops != NULL ? cl->set_ops->lead(cl) : cl)->state) {
  case C_DIALING:
    return "connecting";
  case C_HELLO:
  case C_LOGIN:
    return "logging-in";
  case C_READY:
    return "logged-in";
  case C_BACKOFF:
    return "backoff";
  case C_FATAL:
    return "stopped";
  default:
    return "idle";
  }
}

int np_client_foreach_proxy(const struct np_client *cl, np_client_proxy_cb cb, void *arg) {
  int r = 0;
  if (cl->set_ops != NULL)
    return cl->set_ops->foreach (cl, cb, arg);
  for (size_t i = 0; i < cl->cfg.n_proxies && r == 0; i++)
    r = cb(cl->px[i], arg);
  return r;
}

const char *np_client_proxy_name(const np_client_proxy *px) {
  return px->cfg.name;
}

const char *np_client_proxy_type(const np_client_proxy *px) {
  static const char *const names[] = {"tcp", "udp", "http", "https", "stcp", "sudp"};
  return (unsigned)px->cfg.kind < NP_ARRAY_SIZE(names) ? names[px->cfg.kind] : "?";
}

const char *np_client_proxy_local(const np_client_proxy *px) {
  return px->cfg.local;
}

int np_client_proxy_remote_port(const np_client_proxy *px) {
  return px->cfg.remote_port > 0 ? px->cfg.remote_port : 0;
}

np_client_proxy_state np_client_proxy_get_state(const np_client_proxy *px) {
  return px->state;
}

int np_client_proxy_port(const np_client_proxy *px) {
  return px->state == NP_CLIENT_PROXY_OK ? px->port : 0;
}

int np_client_proxy_error(const np_client_proxy *px, const char **text) {
  int refused = px->state == NP_CLIENT_PROXY_REFUSED;
  if (text != NULL)
    *text = refused ? px->error : "";
  return refused ? px->status : 0;
}

void np_client_proxy_get_stats(const np_client_proxy *px, np_proxy_stats *out, size_t size) {
  np__stats_copy(out, size, &px->stats, sizeof(px->stats));
}
