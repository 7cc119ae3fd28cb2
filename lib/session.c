/* Sessions: the lifecycle every connection to the control port has (one per multiplexed stream),
 * its heartbeats, and the server's reference count. What a session holds above this (proxies,
 * visitors, joins) is torn down through srv->session_closing, so this file calls nothing above it.
 */
#include <stdlib.h>
#include <string.h>

#include "server.h"

int np__session_send(session *s, const np_msg *m) {
  int r = np__chan_send(s->ch, m);
  if (r == 0)
    s->last_tx = now_ms(s->srv);
  else if (r != NP_EUNSUPPORTED)
    np__log(&s->srv->log, NP_LOG_WARN, "client %s (%s): cannot send %s: %s", s->name, s->peer,
            np_msg_type_name(m->type), np_strerror(r));
  return r;
}

void np__session_send_close(session *s, int status, const char *text) {
  np_msg m = {.type = NP_MSG_CLOSE, .status = status};
  /* A channel that failed has nobody left to tell (the peer reset or hung up, or sent garbage): the
   * disconnect line already says why, and "cannot send CLOSE" would only add noise. */
  if (!native(s->srv) || !np__chan_is_open(s->ch))
    return;
  np__strlcpy(m.text, text, sizeof(m.text));
  np__session_send(s, &m);
}

static void on_session_part_closed(session *s) {
  struct np_server *srv = s->srv;
  if (--s->closes_left > 0)
    return;
  free(s);
  np__server_unref(srv);
}

static void on_session_chan_closed(np__chan *ch) {
  on_session_part_closed(np__chan_data(ch));
}

static void on_session_timer_closed(uv_handle_t *h) {
  on_session_part_closed(h->data);
}

static void session_unlink(session *s) {
  NP_DLIST_UNLINK(s->srv->sessions, s, prev, next);
}

static void idle_unlink(session *w) {
  session *o = w->owner;
  NP_DLIST_UNLINK(o->idle, w, idle_prev, idle_next);
  w->owner = NULL;
  o->n_idle--;
}

/* A logged-in session gives back its place among max_clients and its name, the latter only while it
 * still holds it: once loops share the registry, a takeover from another loop hands the name to
 * its successor before this session closes (here, login.c closes the old one first). */
static void uncount(session *s) {
  if (!s->counted)
    return;
  s->counted = 0;
  np__shared_name_release(s->srv->shared, s->name, s->id);
  np__shared_give(&s->srv->shared->clients);
}

/* Tear down a session and everything it owns. status/why go to the log (and, for a live control
 * session, to the client in a CLOSE message). */
void np__session_close(session *s, int status, const char *why) {
  struct np_server *srv = s->srv;

  if (s->closing)
    return;
  s->closing = 1;
  session_unlink(s);
  np__session_ids_del(srv, s);
  if (s->state == S_IDLE && s->owner != NULL)
    idle_unlink(s);
  while (s->idle != NULL)
    np__session_close(s->idle, NP_ECLOSED, "its session ended");
  uncount(s);
  if (s->state == S_READY) {
    srv->stats.clients--;
    np__log(&srv->log,
            status == UV_EOF || status == 0 || status == NP_ECLOSED ? NP_LOG_INFO : NP_LOG_WARN,
            "client %s (%s) disconnected: %s", s->name, s->peer, why);
    /* Tell the client why, unless it left on its own (EOF, or its own CLOSE: status 0). */
    if (status != UV_EOF && status != 0)
      np__session_send_close(s, status, why);
  } else if (s->state == S_PEER) {
    np__log(&srv->log, NP_LOG_INFO, "peer %s (%s) disconnected: %s", s->name, s->peer, why);
  }
  /* What it holds above this file: its proxies, their visitors and joins (work.c). */
  srv->session_closing(s);
  if (s->seal_ok)
    np__seal_free(&s->seal);
  s->seal_ok = 0;
  uv_close((uv_handle_t *)&s->timer, on_session_timer_closed);
  {
    /* A client's multiplexed connection lives as long as its control session. */
    np_conn *c = np__chan_conn(s->ch);
    np__chan_close_flush(s->ch, on_session_chan_closed);
    if (s->state == S_READY || s->state == S_PEER)
      np__transport_server_end(srv->transport, c);
  }
}

/* s's connection left its chan (np__chan_detach or np__chan_release): a work connection joined, a
 * multiplexed connection started. The session goes; only its timer is left to close. */
void np__session_detached(session *s) {
  uncount(s);
  if (s->state == S_IDLE && s->owner != NULL)
    idle_unlink(s);
  s->ch = NULL;
  s->closing = 1;
  session_unlink(s);
  np__session_ids_del(s->srv, s);
  s->closes_left = 1; /* the chan frees itself */
  uv_close((uv_handle_t *)&s->timer, on_session_timer_closed);
}

/* The server pings whenever it owes one (the line codec's KEEP_ALIVE), but watches the client's
 * silence only when the codec has pongs: a line client never writes on its control connection, so
 * it notices a dead one from EOF or a failed write (docs/protocol.md, line protocol). */
static enum np__heartbeat heartbeat(const session *s, uint64_t now, uint64_t *next) {
  const struct np_server *srv = s->srv;
  int pongs = (srv->codec->caps & NP_CODEC_CAP_PONG) != 0;

  return np__heartbeat_due(now, s->last_rx, s->last_tx, srv->cfg.heartbeat_interval_ms,
                           srv->cfg.heartbeat_timeout_ms, pongs, 1, next);
}

/* One timer per session, re-armed for whichever comes first: the login deadline, the moment the
 * peer counts as dead (exactly heartbeat_timeout after its last message), or the next ping we owe.
 */
void np__session_on_timer(uv_timer_t *t) {
  session *s = t->data;
  struct np_server *srv = s->srv;
  uint64_t now = now_ms(srv), next;
  np_msg ping = {.type = NP_MSG_PING};

  if (s->state == S_IDLE)
    return; /* TCP keepalive watches it; its owner's heartbeats say whether the client lives */
  if (s->state != S_READY && s->state != S_PEER) {
    /* From the accept, not the last byte: a peer dribbling its login a byte at a time is closed as
     * soon as one that says nothing. */
    if (now - s->started >= srv->cfg.login_timeout_ms) {
      srv->stats.logins_failed++; /* as np__login_failed does (login.c calls this file) */
      srv->stats.logins_timeout++;
      np__shared_fails_add(srv->shared, now, (struct sockaddr *)&s->addr, NULL,
                           "no login within login_timeout");
      np__log(&srv->log, NP_LOG_INFO, "%s: no login within %llums (login_timeout), closing",
              s->peer, (unsigned long long)srv->cfg.login_timeout_ms);
      np__session_close(s, UV_ETIMEDOUT, "login timed out");
      return;
    }
    next = s->started + srv->cfg.login_timeout_ms;
  } else {
    enum np__heartbeat due = heartbeat(s, now, &next);
    if (due == NP_HEARTBEAT_DEAD) {
      np__session_close(s, NP_EPEERDEAD, "no heartbeat within heartbeat_timeout");
      return;
    }
    if (due == NP_HEARTBEAT_PING) {
      ping.id = ++s->ping_seq;
      if (np__session_send(s, &ping) != 0) {
        np__session_close(s, NP_ELIMIT, "control stream not writable");
        return;
      }
      if (s->ping_out <= s->last_rx)
        s->ping_out = now;      /* the first ping since the client last spoke */
      heartbeat(s, now, &next); /* the next deadline counts from this ping */
    }
  }
  uv_timer_start(&s->timer, np__session_on_timer, np__ms_left(next, now), 0);
}

/* Objects that came and went since the last trim before it is worth one: a crowd of connections. */
#define TRIM_BURST 256

static void on_trim(uv_timer_t *t) {
  struct np_server *srv = t->data;
  np__heap_trim();
  np__log(&srv->log, NP_LOG_DEBUG,
          "%d connections and visitors came and went: freed memory given "
          "back to the system",
          srv->refs_peak - srv->refs);
  srv->refs_peak = srv->refs;
}

void np__server_unref(struct np_server *srv) {
  /* Every object holds a reference, and the highest count is always followed by a release: so
   * this sees the peak. */
  if (srv->refs > srv->refs_peak)
    srv->refs_peak = srv->refs;
  if (--srv->refs > 0 && !srv->closing && srv->started &&
      srv->refs_peak - srv->refs >= TRIM_BURST && srv->refs <= srv->refs_peak / 2 &&
      !uv_is_active((uv_handle_t *)&srv->trim_timer))
    uv_timer_start(&srv->trim_timer, on_trim, 1000, 0); /* once the crowd has gone */
  if (srv->refs > 0 || !srv->closing)
    return;
  if (srv->pool != NULL)
    srv->pool_ops->destroy(srv->pool);
  np__bufcache_clear(&srv->chunks);
  np__session_ids_clear(srv);
  np__transport_server_free(srv->transport);
  np__tls_free(srv->tls);
  np__users_unref(srv->users);
  if (srv->group == NULL)
    np__shared_free(srv->shared); /* a group's is the group's */
  for (size_t k = 0; k < sizeof(srv->first_byte) / sizeof(srv->first_byte[0]); k++)
    free(srv->first_byte[k]);
  if (srv->close_cb != NULL)
    srv->close_cb(srv);
  explicit_bzero(&srv->cfg, sizeof(srv->cfg)); /* tokens, and the flags that set them (replay) */
  free(srv);
}
