/* A work item per visitor (REQ_WORK): dial the local service and the server, prove the work
 * connection (WORK), join the two; report WORK_FAIL when the service cannot be reached. The line
 * codec's tunnel port takes its work connections one at a time, in order. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"
#include "proxy_proto.h"

static void tunnel_next(struct np_client *cl);

static void abort_join(np__track *t) {
  np__join_abort(((joined *)t)->join);
}

static void on_join_done(struct np_join *j, int status, const np_join_stats *st) {
  joined *jn = np_join_get_data(j);
  struct np_client *cl = jn->cl;

  /* a = server side, b = local service (see work_join); the bytes are counted already. */
  np__log(&cl->log, NP_LOG_DEBUG, "work connection done: %s, %llu %s in, %llu out",
          np_strerror(status), (unsigned long long)st->a_to_b,
          np__plural(st->a_to_b, "byte", "bytes"), (unsigned long long)st->b_to_a);
  np__track_remove(&jn->t);
  jn->px->stats.visitors_active--;
  np__cproxy_unref(jn->px);
  free(jn);
  np__client_unref(cl);
}

void np__client_visit_from(np__visit *seen, const np_msg *m) {
  np__strlcpy(seen->from, m->addr, sizeof(seen->from));
  np__strlcpy(seen->to, m->text, sizeof(seen->to));
}

/* The PROXY protocol header px asks for, written to the fresh local connection before anything
 * else. All of it or an error: a few dozen bytes always fit a new socket's buffer, and a header
 * only partly written (or queued behind a splice that writes the socket directly) would corrupt
 * the stream. Addresses the server did not send make a header without them (v1 UNKNOWN, v2
 * LOCAL): the service then sees np-client's own. */
static int proxy_header(const np__proxy_cfg *px, const np__visit *seen, np_conn *local) {
  struct sockaddr_storage from, to;
  int have = seen->from[0] != '\0' && seen->to[0] != '\0' &&
             np__parse_addr(seen->from, &from) == 0 && np__parse_addr(seen->to, &to) == 0;
  int udp = np__kind_udp(px->kind);
  char hdr[NP_PP_WRITE_MAX];
  int n = np__pp_write(px->proxy_protocol, udp, have ? (struct sockaddr *)&from : NULL,
                       have ? (struct sockaddr *)&to : NULL, hdr);
  int r;

  if (n < 0)
    return n;
  if (udp) /* a UDP service has no stream to read it once from: every datagram carries it */
    return np__conn_udp_set_prefix(local, hdr, (size_t)n);
  r = np__conn_try_write(local, hdr, (size_t)n);
  return r == n ? 0 : r < 0 ? r : UV_EAGAIN;
}

const int np__client_udp_flow_tag = 1;

/* Join the server side of a work connection with the local service; takes both conns. rest: bytes
 * already read from server (borrowed). */
void np__client_start_join(struct np_client *cl, cproxy *cp, const np__visit *seen, np_conn *server,
                           np_conn *local, const char *rest, size_t rest_len) {
  const np__proxy_cfg *px = &cp->cfg;
  joined *jn = NULL;
  int r = UV_ENOMEM;

  if (px->proxy_protocol != 0 && (r = proxy_header(px, seen, local)) != 0) {
    np__log(&cl->log, NP_LOG_WARN, "proxy %s: cannot send the PROXY protocol header to %s: %s",
            px->name, px->local, np_strerror(r));
  } else if ((jn = calloc(1, sizeof(*jn))) == NULL) {
    r = UV_ENOMEM;
  } else {
    jn->cl = cl;
    jn->px = cp;
    jn->t.abort = abort_join;
    jn->t.tag = np__kind_udp(px->kind) ? &np__client_udp_flow_tag : NULL;
    r = np__join(server, local, rest, rest_len, &cl->chunks, on_join_done, jn, &jn->join);
  }
  if (r != 0) {
    free(jn);
    np__conn_abort(server, NULL);
    np__conn_close(local, NULL);
    return;
  }
  /* Counted as they flow, so the stats show a long transfer while it runs. */
  np__join_count_into(jn->join, &(np__tally){{&cl->stats.bytes_in, &cp->stats.bytes_in}, 2, NULL},
                      &(np__tally){{&cl->stats.bytes_out, &cp->stats.bytes_out}, 2, NULL});
  cp->refs++;
  cp->stats.visitors_joined++;
  cp->stats.visitors_active++;
  cl->refs++;
  np__track_add(&cl->joins, &jn->t);
  cl->stats.work_opened++;
}

/* A UDP flow of this session may use the datagram path (it falls back on the tunnel by itself). */
void np__client_attach_flow(struct np_client *cl, np_conn *local, const np__proxy_cfg *px,
                            uint64_t session_id, uint64_t visitor_id) {
  np__ulink_flow *f;
  if (px->kind != NP_PROXY_UDP || cl->ulink == NULL || session_id != cl->session_id ||
      (f = np__conn_udp_flow(local)) == NULL)
    return;
  f->id = visitor_id;
  np__ulink_attach(cl->ulink, f);
}

void np__client_work_free(work *w) {
  struct np_client *cl = w->cl;

  NP_DLIST_UNLINK(cl->works, w, prev, next);
  if (w->dial_local != NULL)
    np__dial_cancel(w->dial_local);
  if (w->dial_server != NULL)
    np__dial_cancel(w->dial_server);
  if (w->local != NULL)
    np__conn_close(w->local, NULL);
  if (w->server != NULL)
    np__conn_close(w->server, NULL);
  np__cproxy_unref(w->px);
  free(w);
  np__client_unref(cl);
}

/* Both ends are up: send the proof (native codec) and join. */
static void work_join(work *w) {
  struct np_client *cl = w->cl;
  np_conn *server = w->server, *local = w->local;

  if (cl->codec->caps & NP_CODEC_CAP_WORK_HEADER) {
    np_msg m = {.type = NP_MSG_WORK, .id = w->session_id, .id2 = w->visitor_id};
    np__auth_work_mac(w->key, w->session_id, w->visitor_id, m.mac);
    if (np__conn_send_msg(server, cl->codec, &m) != 0) {
      np__client_work_free(w);
      return;
    }
  }
  w->server = w->local = NULL; /* np__client_start_join owns them now */
  np__client_start_join(cl, w->px, &w->seen, server, local, NULL, 0);
  np__client_work_free(w);
}

static void work_report_fail(work *w, int status) {
  struct np_client *cl = w->cl;
  np_msg m = np__work_fail_msg(w->visitor_id, NP_ELOCALFAIL);

  cl->stats.local_failed++;
  w->px->stats.visitors_dropped++;
  np__log(&cl->log, NP_LOG_WARN, "proxy %s: cannot reach local service %s: %s", w->px->cfg.name,
          w->px->cfg.local, np_strerror(status));
  snprintf(m.text, sizeof(m.text), "cannot reach %s: %s", w->px->cfg.local, np_strerror(status));
  /* Only the native codec can say so; the line codec's server learns it from the tunnel closing. */
  if (native(cl) && w->session_id == cl->session_id)
    np__client_send(cl, &m);
}

static void on_server_dialed(void *data, int status, np_conn *c) {
  work *w = data;
  struct np_client *cl = w->cl;

  w->dial_server = NULL;
  if (!native(cl)) {
    cl->tunnel_dialing = 0;
    tunnel_next(cl);
  }
  if (status != 0) {
    np_msg m = np__work_fail_msg(w->visitor_id, status);
    np__log(&cl->log, NP_LOG_WARN, "proxy %s: cannot open work connection to %s: %s",
            w->px->cfg.name, native(cl) ? np__client_label(cl) : cl->cfg.tunnel,
            np_strerror(status));
    /* Tell the server over the control connection, so the visitor is closed now rather than at
     * the pending timeout. */
    snprintf(m.text, sizeof(m.text), "work connection failed: %s", np_strerror(status));
    if (native(cl) && w->session_id == cl->session_id)
      np__client_send(cl, &m);
    np__client_work_free(w);
    return;
  }
  w->server = c;
  if (w->local_status == 1)
    return; /* the local dial finishes the job */
  if (w->local == NULL) {
    /* Line codec: the local service failed; closing the tunnel tells the server at once. */
    np__client_work_free(w);
    return;
  }
  work_join(w);
}

/* A work connection: a new stream when multiplexing, else a new TCP connection. */
int np__client_open_work(struct np_client *cl, np__dial_cb cb, void *data, np__dialer **out) {
  return np__transport_open(cl->transport, cb, data, out);
}

static int dial_server(work *w) {
  return np__client_open_work(w->cl, on_server_dialed, w, &w->dial_server);
}

/* Line codec: the server matches tunnel connections to visitors in arrival order, so connect them
 * one at a time, in the order the server asked for them. */
static void tunnel_next(struct np_client *cl) {
  while (!cl->tunnel_dialing && cl->tq_head != NULL) {
    work *w = cl->tq_head;
    cl->tq_head = w->qnext;
    if (cl->tq_head == NULL)
      cl->tq_tail = NULL;
    w->in_tunnel_queue = 0;
    if (dial_server(w) == 0) {
      cl->tunnel_dialing = 1;
    } else {
      np__client_work_free(w);
    }
  }
}

static void on_local_dialed(void *data, int status, np_conn *c) {
  work *w = data;

  w->dial_local = NULL;
  w->local_status = status;
  if (status != 0) {
    work_report_fail(w, status);
    if (w->in_tunnel_queue || w->dial_server != NULL)
      return; /* line codec: the tunnel dial to come closes at once, so the server drops the visitor
               */
    np__client_work_free(w);
    return;
  }
  w->local = c;
  np__client_attach_flow(w->cl, c, &w->px->cfg, w->session_id, w->visitor_id);
  if (native(w->cl)) {
    if ((status = dial_server(w)) != 0)
      np__client_work_free(w);
    return;
  }
  if (w->server != NULL)
    work_join(w);
}

/* The local service: a TCP connection, or for a UDP proxy a socket of its own for this flow (so
 * replies come back to it alone), relayed as datagram frames (conn_udp.c). */
int np__client_dial_local(struct np_client *cl, const np__proxy_cfg *px, np__dial_cb cb, void *data,
                          np__dialer **out) {
  if (np__kind_udp(px->kind))
    return np__dial_udp(cl->loop, px->local, cl->cfg.udp_idle_timeout_ms, cb, data, out);
  return np__dial(cl->loop, px->local, cl->cfg.dial_timeout_ms, cb, data, out);
}

void np__client_req_work(struct np_client *cl, const np_msg *m) {
  cproxy *px = np__client_find_proxy(cl, m->name);
  work *w;

  if (px == NULL || (cl->draining && native(cl))) {
    np_msg f = np__work_fail_msg(m->id, px == NULL ? NP_ENOPROXY : NP_ECLOSED);
    if (px == NULL)
      snprintf(f.text, sizeof(f.text), "no proxy named '%s' on this client", m->name);
    else
      snprintf(f.text, sizeof(f.text), "the client is shutting down");
    np__client_send(cl, &f);
    return;
  }
  if ((w = calloc(1, sizeof(*w))) == NULL)
    return;
  w->cl = cl;
  w->px = px;
  px->refs++;
  px->stats.visitors++;
  w->visitor_id = m->id;
  w->session_id = cl->session_id;
  np__client_visit_from(&w->seen, m);
  memcpy(w->key, cl->key, sizeof(w->key));
  w->local_status = 1;
  NP_DLIST_PUSH(cl->works, w, prev, next);
  cl->refs++;
  if (!native(cl)) {
    w->in_tunnel_queue = 1;
    if (cl->tq_tail != NULL)
      cl->tq_tail->qnext = w;
    else
      cl->tq_head = w;
    cl->tq_tail = w;
  }
  if (cl->draining) {
    /* The line codec has no WORK_FAIL: the tunnel connection it owes is opened and closed at once,
     * as when the local service is down, which closes the visitor. */
    w->local_status = NP_ECLOSED;
  } else if (np__client_dial_local(cl, &px->cfg, on_local_dialed, w, &w->dial_local) != 0) {
    w->local_status = UV_EINVAL;
    work_report_fail(w, UV_EINVAL);
    if (native(cl))
      np__client_work_free(w);
  }
  if (!native(cl))
    tunnel_next(cl);
}
