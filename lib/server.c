/* np_server: the control port, the first message of every connection (HELLO, WORK, WORK_IDLE,
 * MUX) and the dispatch of control messages to login.c and work.c, and the server's public API.
 * How a connection arrives (TLS, the multiplexer) is transport_server.c's. Sessions' lifecycle is
 * in session.c, visitors and proxies in work.c and behind the proxy types (proxy.h).
 *
 * Every connection to the control port starts as a session in S_NEW; its first message decides what
 * it is: HELLO starts a control session, WORK makes it a work connection for one pending visitor.
 * Codecs without a handshake (line) skip straight to S_READY and their work connections arrive on a
 * separate tunnel port, matched in arrival order. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "proxy.h"

#include "conn_move.h"
#include "mux_frame.h"
#include "stats.h"

static int start_mux(session *s, const np_msg *m);

/* A work connection (mux = false) lands on whichever worker the kernel picked; its WORK names the
 * session it works for, whose worker is the session id's low byte. The connection goes there:
 * its first message, re-encoded, and what followed it travel as the bytes to read first. 1 when
 * it went (s is gone), 0 when it stays here (this worker's, or a second move), < 0 on an error. */
static int move_work(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;
  unsigned widx = (unsigned)(m->id & 0xff);
  const char *rest;
  size_t rest_len;
  char head[512];
  np__moved mv;
  np_conn *c;
  int n, r;

  if (srv->group_move == NULL || widx == srv->widx || s->moved)
    return 0;
  if ((n = srv->codec->encode(m, head, sizeof(head))) < 0)
    return n;
  np__moved_init(&mv);
  c = np__chan_detach(s->ch, &rest, &rest_len);
  if ((mv.pre = malloc((size_t)n + rest_len + 1)) == NULL) {
    r = UV_ENOMEM;
  } else {
    memcpy(mv.pre, head, (size_t)n);
    if (rest_len > 0)
      memcpy(mv.pre + n, rest, rest_len);
    mv.pre_len = (size_t)n + rest_len;
    mv.peer = s->addr;
    r = np__conn_move_out(c, &mv);
  }
  np__session_detached(s);
  np__conn_close(c, NULL); /* the socket lives on in mv.fd; leaves this loop's epoll set now */
  if (r == 0 && (r = srv->group_move(srv, widx, &mv)) == 0) {
    srv->stats.conns_moved++;
  } else if (r == UV_EINVAL) {
    /* An id no worker gave: an unproven work connection, as one naming no session here. */
    srv->stats.work_unknown++;
    np__log(&srv->log, NP_LOG_INFO,
            "%s: work connection not proven (its session id names worker %u, which does not "
            "exist): closed",
            s->peer, widx);
  } else {
    np__log(&srv->log, NP_LOG_WARN, "%s: cannot hand a work connection to worker %u: %s", s->peer,
            widx, np_strerror(r));
  }
  if (r != 0)
    np__moved_free(&mv);
  return 1;
}

static void on_session_msg(np__chan *ch, const np_msg *m) {
  session *s = np__chan_data(ch);
  struct np_server *srv = s->srv;
  int r = 0;

  if (s->closing)
    return;
  s->last_rx = now_ms(srv);
  np__log(&srv->log, NP_LOG_TRACE, "%s: got %s", s->peer, np_msg_type_name(m->type));
  switch (s->state) {
  case S_NEW:
    if (m->type == NP_MSG_HELLO)
      r = np__login_hello(s, m);
    else if ((m->type == NP_MSG_WORK || m->type == NP_MSG_WORK_IDLE ||
              (m->type == NP_MSG_VISIT && srv->visit != NULL)) &&
             (r = move_work(s, m)) != 0)
      return; /* gone to its worker (or closed there on an error) */
    else if (m->type == NP_MSG_VISIT && srv->visit != NULL && native(srv))
      r = srv->visit(s, m);
    else if (m->type == NP_MSG_WORK)
      np__work(s, m);
    else if (m->type == NP_MSG_WORK_IDLE)
      r = np__work_idle(s, m);
    else if (m->type == NP_MSG_MUX && native(srv) &&
             !np__transport_server_is_stream(srv->transport, np__chan_conn(s->ch)))
      r = start_mux(s, m);
    else if (m->type == NP_MSG_FORWARD &&
             np__transport_server_is_peer(srv->transport, np__chan_conn(s->ch)))
      r = np__peer_forwarded(s, m);
    else
      r = NP_EPROTO;
    break;
  case S_AUTH:
    r = m->type == NP_MSG_LOGIN  ? np__login(s, m)
        : m->type == NP_MSG_PEER ? np__peer_login(s, m)
                                 : NP_EPROTO;
    break;
  case S_PEER:
    if (m->type == NP_MSG_PING) {
      np_msg pong = {.type = NP_MSG_PONG, .id = m->id};
      r = np__session_send(s, &pong);
    } else if (m->type == NP_MSG_CLOSE) {
      np__session_close(s, 0, "the peer closed its connection");
      return;
    } else if (m->type != NP_MSG_PONG) {
      r = NP_EPROTO;
    }
    break;
  case S_READY:
    switch (m->type) {
    case NP_MSG_PROXY:
      np__work_proxy_msg(s, m);
      break;
    case NP_MSG_PROXY_OPT:
      r = np__work_proxy_opt(s, m);
      break;
    case NP_MSG_PROXY_CLOSE:
      np__work_proxy_close(s, m);
      break;
    case NP_MSG_PING: {
      np_msg pong = {.type = NP_MSG_PONG, .id = m->id};
      if (m->status == NP_UDP_PATH_UP || m->status == NP_UDP_PATH_DOWN) {
        s->udp_client_up = m->status == NP_UDP_PATH_UP;
        np__log(&srv->log, NP_LOG_DEBUG, "client %s: its datagram path is %s", s->name,
                s->udp_client_up ? "up" : "down");
      }
      r = np__session_send(s, &pong);
      break;
    }
    case NP_MSG_PONG:
      break;
    case NP_MSG_WORK_FAIL:
      np__work_fail(s, m);
      break;
    case NP_MSG_DIRECT:
    case NP_MSG_DIRECT_INTRO:
      r = srv->direct != NULL && native(srv) ? srv->direct(s, m) : NP_EPROTO;
      break;
    case NP_MSG_CLOSE:
      np__log(&srv->log, NP_LOG_INFO, "client %s says goodbye: %s", s->name, m->text);
      np__session_close(s, 0, "client closed the session");
      return;
    default:
      r = NP_EPROTO;
    }
    break;
  case S_IDLE:
    r = NP_EPROTO; /* an idle work connection has nothing to say until START */
    break;
  }
  if (r != 0 && !s->closing) {
    if (r == NP_EPROTO)
      np__log(&srv->log, NP_LOG_WARN, "%s: unexpected %s message, closing", s->peer,
              np_msg_type_name(m->type));
    /* A name in use is no failed login: the credentials were right. */
    if ((s->state == S_NEW || s->state == S_AUTH) && r != NP_EAUTH && r != NP_EBACKOFF &&
        r != NP_ENAMEINUSE)
      np__login_failed(srv, &s->addr, s->peer, r, np_strerror(r), /* login() counted those */
                       m->type == NP_MSG_LOGIN ? m->name : NULL);
    np__session_close(s, r, np_strerror(r));
  }
}

static void on_session_error(np__chan *ch, int err) {
  session *s = np__chan_data(ch);
  if (err == NP_ETLSREQUIRED && s->state == S_NEW) {
    /* A TLS client reads this as "not TLS" and says so, instead of waiting for a ServerHello. */
    np_msg m = {.type = NP_MSG_CLOSE, .status = NP_ENOTLS};
    snprintf(m.text, sizeof(m.text), "this server runs without TLS (--insecure)");
    np__conn_send_msg(np__chan_conn(ch), s->srv->codec, &m);
    np__log(&s->srv->log, NP_LOG_WARN,
            "%s: TLS client, but this server runs with --insecure; closing (both sides need the "
            "same setting)",
            s->peer);
    np__login_failed(s->srv, &s->addr, s->peer, err,
                     "a TLS client, but this server runs --insecure",
                     NULL); /* counted, not charged: an honest client's mistake */
    np__session_close(s, err, np_strerror(err));
    return;
  }
  if (s->state == S_NEW && (err == UV_EOF || err == UV_ECONNRESET)) {
    /* Load balancers' health checks and port scans connect and leave without a word: neither a
     * login attempt (nothing is counted against the address) nor worth a warning. */
    np__log(&s->srv->log, NP_LOG_DEBUG, "%s: closed the connection before saying anything",
            s->peer);
    np__session_close(s, err, np_strerror(err));
    return;
  }
  /* A logged-in client's end is logged once, by np__session_close ("disconnected: why"). */
  if (err != UV_EOF && s->state != S_READY)
    np__log(&s->srv->log, NP_LOG_WARN, "%s (%s): %s, closing", s->name[0] ? s->name : "connection",
            s->peer, np_strerror(err));
  if ((s->state == S_NEW || s->state == S_AUTH) && err != UV_EOF && err != UV_ECONNRESET)
    np__login_failed(s->srv, &s->addr, s->peer, err, np_strerror(err), NULL);
  np__session_close(s, err, np_strerror(err));
}

/* A new connection to the control port, or a new stream on a multiplexed one (the transport's conn
 * callback): its first message says what it is. */
static void session_start_pre(struct np_server *srv, np_conn *c,
                              const struct sockaddr_storage *addr, const char *peer,
                              const char *pre, size_t pre_len) {
  session *s;
  int r;

  if ((s = calloc(1, sizeof(*s))) == NULL) {
    np__conn_close(c, NULL);
    return;
  }
  if (srv->draining) {
    /* A new stream on a client's multiplexed connection: nothing new starts while draining. */
    free(s);
    np__conn_close(c, NULL);
    return;
  }
  s->srv = srv;
  s->started = s->last_rx = s->last_tx = now_ms(srv);
  s->addr = *addr;
  np__strlcpy(s->peer, peer, sizeof(s->peer));
  if (addr->ss_family != 0)
    np__addr_str((const struct sockaddr *)addr, s->addr_str, sizeof(s->addr_str));
  else
    strcpy(s->addr_str, "?");
  if ((r = pre != NULL
               ? np__chan_new_pre(srv->loop, c, srv->codec, srv->cfg.max_frame, CTRL_MAX_QUEUED,
                                  pre, pre_len, &s->ch)
               : np__chan_new(c, srv->codec, srv->cfg.max_frame, CTRL_MAX_QUEUED, &s->ch)) != 0) {
    np__conn_close(c, NULL);
    free(s);
    return;
  }
  s->moved = pre != NULL;
  srv->refs++;
  s->closes_left = 2;
  uv_timer_init(srv->loop, &s->timer);
  s->timer.data = s;
  NP_DLIST_PUSH(srv->sessions, s, prev, next);
  np__log(&srv->log, NP_LOG_DEBUG, "connection from %s", s->peer);

  if (!native(srv)) {
    /* No handshake in this codec: the connection is the client. One client at a time; a new one
     * replaces the old, which is most likely dead if its owner reconnected. */
    for (session *o = s->next; o != NULL;) {
      session *next = o->next;
      if (o->state == S_READY)
        np__session_close(o, NP_ECLOSED, "replaced by a new client");
      o = next;
    }
    s->state = S_READY;
    strcpy(s->name, "seed");
    srv->stats.clients++;
    np__log(&srv->log, NP_LOG_INFO, "client connected from %s (line codec)", s->peer);
  }
  r = np__chan_start(s->ch, on_session_msg, on_session_error, s);
  if (r == 0)
    r = uv_timer_start(&s->timer, np__session_on_timer, 0, 0);
  if (r != 0)
    np__session_close(s, r, np_strerror(r));
}

static void session_start(void *arg, np_conn *c, const struct sockaddr_storage *addr,
                          const char *peer) {
  session_start_pre(arg, c, addr, peer, NULL, 0);
}

void np__server_adopt(struct np_server *srv, np__moved *m) {
  struct sockaddr_storage addr = m->peer;
  char peer[64] = "?";
  np_conn *c;

  if (addr.ss_family != 0)
    np__addr_str((const struct sockaddr *)&addr, peer, sizeof(peer));
  if (srv->closing || srv->draining || np__conn_move_in(srv->loop, srv->tls, m, &c) != 0) {
    np__moved_free(m);
    return;
  }
  session_start_pre(srv, c, &addr, peer, m->pre, m->pre_len); /* pre is copied */
  free(m->pre);
  m->pre = NULL;
}

void np__server_adopt_visitor(struct np_server *srv, int table, unsigned hops, np__moved *m) {
  const np__proxy_type *t = srv->types[table == NP_MOVE_TCP      ? NP_PROXY_TCP
                                       : table == NP_MOVE_UDP    ? NP_PROXY_UDP
                                       : table == NP_MOVE_VISIT  ? NP_PROXY_STCP
                                       : table == NP_ROUTES_HTTP ? NP_PROXY_HTTP
                                                                 : NP_PROXY_HTTPS];
  np_conn *c;

  if (srv->closing || srv->draining || t == NULL || t->adopt == NULL ||
      np__conn_move_in(srv->loop, srv->tls, m, &c) != 0) {
    np__moved_free(m);
    return;
  }
  t->adopt(srv, c, m->pre, m->pre_len, hops);
  free(m->pre);
  m->pre = NULL;
}

void np__server_accept(struct np_server *srv, np_conn *c) {
  np__transport_server_accept(srv->transport, c);
}

static void on_control(np__listener *l, np_conn *c) {
  np__server_accept(((proxy *)np__listener_data(l))->srv, c);
}

/* The transport's connection handed over by the session that said MUX: that session goes. */
static np_conn *take_for_mux(void *arg, const char **rest, size_t *rest_len) {
  session *s = arg;
  np_conn *c = np__chan_detach(s->ch, rest, rest_len);
  np__session_detached(s);
  return c;
}

/* MUX as a connection's first message: the rest of it is yamux, each stream a connection. */
static int start_mux(session *s, const np_msg *m) {
  struct np_server *srv = s->srv;

  if (m->version != PROTO_VERSION)
    return NP_EVERSION;
  /* The deadline counts from the accept, as it did for the session that said MUX. */
  return np__transport_server_multiplex(srv->transport, s->peer, &s->addr,
                                        s->started + srv->cfg.login_timeout_ms, take_for_mux, s);
}

/* A multiplexed connection that ended in garbage before anybody logged in on it. */
static void on_transport_garbage(void *arg, const struct sockaddr_storage *addr, const char *peer,
                                 int err) {
  np__login_failed(arg, addr, peer, err, np_strerror(err), NULL);
}

static void on_transport_ref(void *arg, int delta) {
  struct np_server *srv = arg;
  if (delta > 0)
    srv->refs += delta;
  else
    np__server_unref(srv);
}

static int transport_new(struct np_server *srv) {
  np__transport_server_opts o = {.loop = srv->loop,
                                 .log = &srv->log,
                                 .tls = srv->tls,
                                 .mux_max_window = (uint32_t)srv->cfg.mux_max_window,
                                 .mux_max_streams = (uint32_t)srv->cfg.mux_max_streams,
                                 .mux_session_window = srv->cfg.mux_session_window,
                                 .mux_server_window = srv->cfg.mux_server_window,
                                 .keepalive_s = (unsigned)(srv->cfg.heartbeat_interval_ms / 1000),
                                 .conn = session_start,
                                 .garbage = on_transport_garbage,
                                 .ref = on_transport_ref,
                                 .arg = srv};
  return np__transport_server_new(&o, &srv->transport);
}

/* np_server_new is in builtin.c: this core, and the proxy types every server has. */
int np__server_create(uv_loop_t *loop, const struct np_config *cfg, struct np_server **out) {
  struct np_server *srv;

  if (loop == NULL || cfg == NULL || cfg->kind != NP_CONFIG_SERVER)
    return UV_EINVAL;
  if ((srv = calloc(1, sizeof(*srv))) == NULL)
    return UV_ENOMEM;
  srv->loop = loop;
  srv->cfg = *cfg;
  srv->session_closing = np__work_session_closing;
  if (np_config_validate(&srv->cfg) != 0) {
    free(srv);
    return NP_ECONFIG;
  }
  /* One code path: alone, the server shares its state with nobody but keeps it the same way. */
  if (np__shared_new(srv->cfg.login_backoff_ms, srv->cfg.login_backoff_max_ms, &srv->shared) != 0) {
    free(srv);
    return UV_ENOMEM;
  }
  srv->codec = np_codec_find(cfg->codec);
  np__bufcache_init(&srv->chunks, np__join_chunk_size(), NP_RELAY_CACHE);
  srv->chunks.pipes.enabled = srv->cfg.relay_splice;
  np__logger_init(&srv->log);
  srv->log.level = (np_log_level)cfg->log_level;
  srv->log.cb = np_log_stderr_for((np_log_format)cfg->log_format);
  {
    char err[128];
    np__cidrs_parse(srv->cfg.proxy_protocol_from, &srv->pp_from, err, sizeof(err)); /* validated */
  }
  *out = srv;
  return 0;
}

int np_server_set_codec(struct np_server *srv, const np_codec_ops *codec) {
  if (srv->started)
    return NP_ESTATE;
  if (np__codec_ops_check(codec) != 0)
    return UV_EINVAL;
  srv->codec = codec;
  return 0;
}

int np_server_set_pool(struct np_server *srv, const np_pool_ops *ops, void *pool) {
  if (srv->started)
    return NP_ESTATE;
  if (np__pool_ops_check(ops) != 0 || pool == NULL)
    return UV_EINVAL;
  if (srv->pool != NULL)
    srv->pool_ops->destroy(srv->pool);
  srv->pool_ops = ops;
  srv->pool = pool;
  return 0;
}

void np_server_set_log(struct np_server *srv, np_log_level level, np_log_cb cb, void *arg) {
  srv->log.level = level;
  srv->log.cb = cb != NULL ? cb : np_log_stderr;
  srv->log.arg = arg;
}

/* The control and tunnel ports are listeners like the public ones, under a proxy of their own
 * (never in the pool), so accept errors are reported the same way. */
static int listen_on(struct np_server *srv, proxy *px, np__listener **l, const char *spec,
                     np__accept_cb cb, int *port) {
  struct sockaddr_storage ss;
  int r;

  np__parse_addr(spec, &ss); /* validated with the config */
  px->srv = srv;
  np__strlcpy(px->name, l == &srv->listener ? "control" : "tunnel", sizeof(px->name));
  /* A group's workers each listen on the control port (the kernel spreads connections). */
  if ((r = np__listen_flags(srv->loop, (struct sockaddr *)&ss,
                            srv->group_move != NULL && l == &srv->listener ? NP_LISTEN_REUSEPORT
                                                                           : 0,
                            cb, np__server_accept_failed, px, l)) != 0) {
    np__log(&srv->log, NP_LOG_ERROR, "cannot listen on %s: %s", spec, np_strerror(r));
    return r;
  }
  srv->refs++;
  np__server_listener_pp(srv, *l);
  px->port = np__listener_port(*l);
  if (port != NULL)
    *port = px->port;
  return 0;
}

static void on_listener_closed(void *data) {
  np__server_unref(((proxy *)data)->srv);
}

static void on_handle_closed(uv_handle_t *h) {
  np__server_unref(h->data);
}

/* Read cfg's users_file into *out, logging why not. */
int np__server_load_users(struct np_server *srv, const struct np_config *cfg, np__users **out,
                          char *err, size_t errlen) {
  struct stat st;
  int r;

  if ((r = np__users_load(cfg->users_file, out, err, errlen)) != 0) {
    np__log(&srv->log, np__server_echo(srv, NP_LOG_ERROR), "users file: %s", err);
    return r;
  }
  if (stat(cfg->users_file, &st) == 0 && (st.st_mode & 077) != 0)
    np__log(&srv->log, np__server_echo(srv, NP_LOG_WARN),
            "users file %s holds tokens but others may read it (chmod 600)", cfg->users_file);
  np__log(&srv->log, np__server_echo(srv, NP_LOG_INFO), "users file %s: %zu %s%s", cfg->users_file,
          np__users_count(*out), np__plural(np__users_count(*out), "client", "clients"),
          cfg->token[0] != '\0' ? "; other names log in with the shared token" : "");
  return 0;
}

/* What the TLS port answers a client that speaks in clear (tls.c calls it; the protocol is ours to
 * know): a yamux GO_AWAY if it opened with MUX, else a CLOSE in the server's codec, so the client
 * can say "start np-client without --insecure" rather than "connection reset". */
static int plaintext_refusal(const char *buf, size_t len, unsigned char *out, size_t cap,
                             void *arg) {
  const np_codec_ops *codec = ((struct np_server *)arg)->codec;
  np_msg m = {.type = NP_MSG_CLOSE};
  int mux = 0;
  size_t used;
  void *dec;

  if (codec->decoder_new(NP_CODEC_MAX_ENCODED, &dec) == 0) {
    mux = codec->decode(dec, buf, len, &used, &m) == 1 && m.type == NP_MSG_MUX;
    codec->decoder_free(dec);
  }
  if (mux && cap >= NP_MUX_HDR_LEN) {
    np__mux_hdr h = {.type = NP_MUX_GO_AWAY, .length = NP_MUX_GOAWAY_TLS};
    np__mux_hdr_encode(&h, out);
    return NP_MUX_HDR_LEN;
  }
  memset(&m, 0, sizeof(m));
  m.type = NP_MSG_CLOSE;
  m.status = NP_ETLSREQUIRED;
  snprintf(m.text, sizeof(m.text),
           "this server requires TLS: start np-client without --insecure (and with "
           "--server-fingerprint)");
  return codec->encode(&m, (char *)out, cap);
}

int np_server_start(struct np_server *srv) {
  int r;

  if (srv->started)
    return NP_ESTATE;
  /* Before anything that np_server_close would have to undo. */
  if (srv->cfg.users_file[0] != '\0') {
    if ((r = np__server_load_users(srv, &srv->cfg, &srv->users, srv->reload_err,
                                   sizeof(srv->reload_err))) != 0)
      return r;
    np__shared_users_set(srv->shared, srv->users);
  }
  srv->started = 1;
  srv->started_ms = uv_now(srv->loop);
  uv_timer_init(srv->loop, &srv->pool_timer);
  uv_timer_init(srv->loop, &srv->trim_timer);
  uv_timer_init(srv->loop, &srv->drain_timer);
  uv_unref((uv_handle_t *)&srv->trim_timer);
  srv->pool_timer.data = srv->trim_timer.data = srv->drain_timer.data = srv;
  srv->refs += 3;
  np__server_ports_start(srv);
  if (srv->pool == NULL) {
    if ((r = np_pool_default_new(srv->cfg.max_pending, srv->cfg.max_pending_per_proxy,
                                 &srv->pool)) != 0)
      return r;
    srv->pool_ops = np_pool_default_ops();
  }
  if (!srv->cfg.insecure) {
    /* A group's workers share worker 0's context: one identity, loaded or made once. */
    if ((r = srv->tls_base != NULL
                 ? np__tls_server_share(srv->tls_base, srv->loop, &srv->log, &srv->tls)
                 : np__tls_server_new(srv->loop, &srv->cfg, &srv->log, &srv->tls)) != 0)
      return r;
    np__tls_set_refusal(srv->tls, plaintext_refusal, srv);
  }
  if ((r = transport_new(srv)) != 0)
    return r;
  if ((r = listen_on(srv, &srv->control_px, &srv->listener, srv->cfg.bind, on_control,
                     &srv->port)) != 0)
    return r;
  {
    /* The control port's address as bound, for the types that listen beside it (the datagram
     * path, on the same number over UDP, on each worker of a group, which share it). Every
     * worker starts them. */
    struct sockaddr_storage ua;
    np__parse_addr(srv->cfg.bind, &ua);
    ((struct sockaddr_in *)&ua)->sin_port = htons((uint16_t)srv->port); /* v4 and v6 alike */
    if ((r = np__server_types_start(srv, (struct sockaddr *)&ua)) != 0)
      return r;
  }
  if (srv->admin_start != NULL && (r = srv->admin_start(srv)) != 0)
    return r;
  if (srv->routes_start != NULL && (r = srv->routes_start(srv)) != 0)
    return r;
  if (srv->peers_start != NULL && (r = srv->peers_start(srv)) != 0)
    return r;
  if (srv->cfg.token[0] == '\0' && srv->users == NULL && native(srv))
    np__log(&srv->log, np__server_echo(srv, NP_LOG_WARN),
            "no token set: any client can open public ports");
  np__log(&srv->log, np__server_echo(srv, NP_LOG_INFO), "listening on %s (port %d, codec %s)",
          srv->cfg.bind, srv->port, srv->codec->name);
  if (srv->tls != NULL)
    np__log(&srv->log, np__server_echo(srv, NP_LOG_INFO),
            "TLS certificate %s (clients: --server-fingerprint %s)", np__tls_fingerprint(srv->tls),
            np__tls_fingerprint(srv->tls));
  else
    np__log(&srv->log, np__server_echo(srv, NP_LOG_WARN),
            "TLS is off (insecure = true): tunnelled traffic crosses the network in clear and "
            "anybody on the path can read or change it");
  if (!(srv->codec->caps & NP_CODEC_CAP_WORK_HEADER)) {
    char host[NP_HOSTPORT_MAX];
    int vport, tport;
    if ((r = listen_on(srv, &srv->tunnel_px, &srv->tunnel_listener, srv->cfg.tunnel_bind,
                       np__server_on_tunnel, &tport)) != 0)
      return r;
    np__split_hostport(srv->cfg.visit_bind, host, sizeof(host), &vport);
    if ((r = np__proxy_open(srv, NULL, "visit", NP_PROXY_TCP, host, vport, NULL, 0,
                            &srv->visit_proxy)) != 0) {
      np__log(&srv->log, NP_LOG_ERROR, "cannot listen on %s: %s", srv->cfg.visit_bind,
              np_strerror(r));
      return r;
    }
    np__log(&srv->log, NP_LOG_INFO, "line codec: tunnel port %d, visit port %d", tport,
            srv->visit_proxy->port);
  }
  return 0;
}

const char *np_server_fingerprint(const struct np_server *srv) {
  return srv->tls != NULL ? np__tls_fingerprint(srv->tls) : NULL;
}

int np_server_identity(const struct np_config *cfg, np_log_cb log_cb, void *log_arg, char *buf,
                       size_t len) {
  np__logger log;
  np__tls *t;
  int r;

  if (cfg == NULL || cfg->kind != NP_CONFIG_SERVER || buf == NULL || len <= NP_TLS_FP_LEN)
    return UV_EINVAL;
  /* The embedder's log, as the server's own would be: never straight to stderr. */
  np__logger_init(&log);
  log.level = NP_LOG_INFO;
  log.cb = np_log_stderr_for((np_log_format)cfg->log_format);
  if (log_cb != NULL) {
    log.cb = log_cb;
    log.arg = log_arg;
  }
  if ((r = np__tls_server_new(NULL, cfg, &log, &t)) != 0)
    return r;
  np__strlcpy(buf, np__tls_fingerprint(t), len);
  np__tls_free(t);
  return 0;
}

int np_server_port(const struct np_server *srv) {
  return srv->port;
}

void np__server_get_stats_local(const struct np_server *srv, np_server_stats *out) {
  *out = srv->stats;
  out->pending = srv->pool != NULL ? srv->pool_ops->count(srv->pool, NULL) : 0;
  np__transport_server_count(srv->transport, &out->mux_conns, &out->mux_streams);
  np__transport_server_held(srv->transport, &out->mux_buffered, &out->mux_window_grown);
}

void np_server_get_stats(const struct np_server *srv, np_server_stats *out, size_t size) {
  np_server_stats st;

  if (srv->group_stats != NULL)
    srv->group_stats(srv, &st);
  else
    np__server_get_stats_local(srv, &st);
  np__stats_copy(out, size, &st, sizeof(st));
}

int np__server_disconnect(struct np_server *srv, const char *name, uint64_t sid) {
  for (session *s = srv->sessions; s != NULL; s = s->next) {
    if (s->state != S_READY || s->closing || strcmp(s->name, name) != 0 ||
        (sid != 0 && s->id != sid))
      continue;
    np__log(&srv->log, NP_LOG_INFO, "client %s: disconnected through the admin API", name);
    np__session_send_close(s, NP_ECLOSED, "disconnected by the server's operator");
    np__session_close(s, NP_ECLOSED, "disconnected through the admin API");
    return 1;
  }
  return 0;
}

void np__server_join_group(struct np_server *srv, struct np_server_group *g, unsigned widx,
                           np__shared *sh, const np__tls *tls_base) {
  np__shared_free(srv->shared);
  srv->shared = sh;
  srv->group = g;
  srv->widx = widx;
  srv->tls_base = tls_base;
  if (widx > 0) {
    srv->admin_start = NULL, srv->admin_stop = NULL, srv->admin_auth = NULL;
    srv->routes_start = NULL, srv->routes_stop = NULL;
  }
}

void np_server_log_stats(const struct np_server *srv) {
  np_server_stats st;

  np_server_get_stats(srv, &st, sizeof(st));
  np__stats_log_server(&srv->log, &st);
  np__server_log_views(srv);
}

void np__server_close_listeners(struct np_server *srv) {
  if (srv->listener != NULL)
    np__listener_close(srv->listener, on_listener_closed);
  if (srv->tunnel_listener != NULL)
    np__listener_close(srv->tunnel_listener, on_listener_closed);
  srv->listener = srv->tunnel_listener = NULL;
}

void np_server_close(struct np_server *srv, np_server_close_cb cb) {
  if (srv->closing)
    return;
  srv->closing = 1;
  srv->close_cb = cb;
  srv->refs++; /* held until the end of this function */
  while (srv->sessions != NULL)
    np__session_close(srv->sessions, NP_ECLOSED, "server shutting down");
  if (srv->transport != NULL)
    np__transport_server_close(srv->transport);
  if (srv->visit_proxy != NULL)
    np__proxy_close(srv->visit_proxy);
  np__server_types_stop(srv);
  if (srv->admin_stop != NULL)
    srv->admin_stop(srv);
  if (srv->routes_stop != NULL)
    srv->routes_stop(srv);
  if (srv->peers_stop != NULL)
    srv->peers_stop(srv);
  if (srv->pool != NULL)
    srv->pool_ops->expire(srv->pool, UINT64_MAX, np__visitor_removed, srv);
  if (srv->started) {
    uv_close((uv_handle_t *)&srv->pool_timer, on_handle_closed);
    uv_close((uv_handle_t *)&srv->trim_timer, on_handle_closed);
    uv_close((uv_handle_t *)&srv->drain_timer, on_handle_closed);
    np__server_ports_stop(srv);
    np__server_close_listeners(srv);
  }
  np__server_unref(srv);
}

void *np_server_get_data(const struct np_server *srv) {
  return srv->data;
}

void np_server_set_data(struct np_server *srv, void *data) {
  srv->data = data;
}
