/* Moving a visitor's HTTP requests to the run's work connection and the responses back
 * (http_conn.h): request heads rewritten (http_head.c), bodies framed with http_parser, responses
 * followed with another to count them, backpressure both ways, deadlines, and the end of a
 * connection: an abort, or a shutdown after which what the visitor still sends is read and dropped
 * for a moment (so our last answer is not destroyed by a reset of unread bytes). */
#include <stdlib.h>
#include <string.h>

#include "http_conn.h"

#define QUEUE_HIGH NP_JOIN_HIGH /* per direction, as the byte relay */
#define QUEUE_LOW  NP_JOIN_LOW

typedef np__hconn hconn;

/* A write of ours, with its bytes. */
typedef struct wreq {
  np_conn_write w;
  hconn *h;
  unsigned run; /* h->run when queued: a write to an earlier run's work conn is no longer ours */
  int to_visitor;
  size_t len;
  char data[];
} wreq;

static int on_req_complete(http_parser *p);
static int on_resp_headers(http_parser *p);
static int on_resp_begin(http_parser *p);
static int on_resp_complete(http_parser *p);

static const http_parser_settings req_settings = {.on_message_complete = on_req_complete};
static const http_parser_settings resp_settings = {.on_message_begin = on_resp_begin,
                                                   .on_headers_complete = on_resp_headers,
                                                   .on_message_complete = on_resp_complete};

static uint64_t now(const hconn *h) {
  return uv_now(h->vh->srv->loop);
}

void np__hconn_unref(hconn *h) {
  np__vhost *vh;
  struct np_server *srv;

  if (--h->refs > 0)
    return;
  vh = h->vh;
  srv = vh->srv;
  NP_DLIST_UNLINK(*(hconn **)&vh->conns, h, prev, next);
  np__http_head_free(&h->head);
  free(h->stash);
  free(h);
  np__vhost_unref(vh);
  np__server_unref(srv);
}

static void on_conn_closed(np_conn *c) {
  np__hconn_unref(c->data);
}

/* ---- the run -----------------------------------------------------------------------------------
 */

static void end_run(hconn *h, const char *end) {
  if (h->work == NULL)
    return;
  np__access_log(h->vh->srv, h->px_name, &h->addr, h->since, h->in, h->out,
                 h->end != NULL ? h->end : end);
  np__track_remove(&h->t);
  np__meter_end(&h->meter);
  h->work->data = h;
  np__conn_close(h->work, on_conn_closed); /* its queued writes are cancelled */
  h->work = NULL;
  h->px = NULL;
  h->end = NULL;
  h->reading_w = 0;
  h->pending = 0;
  h->to_work = 0;
  h->switching = 0;
  h->run++;
}

static void abort_run(np__track *t) {
  hconn *h = (hconn *)((char *)t - offsetof(hconn, t));
  if (h->state == H_JOINED)
    np__join_abort(h->join);
  else
    np__hconn_finish(h, 1);
}

static void note_end(np__track *t, const char *end) {
  ((hconn *)((char *)t - offsetof(hconn, t)))->end = end;
}

/* ---- writing -----------------------------------------------------------------------------------
 */

static void work_ended(hconn *h, ssize_t err);

static void on_written(np_conn_write *req, int status) {
  wreq *w = (wreq *)req;
  hconn *h = w->h;
  int current = w->to_visitor || w->run == h->run, w_to_visitor = w->to_visitor;

  if (current && w->to_visitor)
    h->to_visitor -= w->len;
  else if (current)
    h->to_work -= w->len;
  free(w);
  if (current && status == 0)
    h->last_io = now(h);
  if (current && status != 0 && !w_to_visitor && h->work != NULL)
    work_ended(h, status); /* the service's side broke before it answered: a 502, as on a read */
  else if (current && status != 0)
    np__hconn_finish(h, 1);
  else if (current)
    np__hconn_pump(h);
  np__hconn_unref(h);
}

/* Queue a copy of alen + blen bytes (two pieces) to the visitor or the work connection. */
static int send2(hconn *h, int to_visitor, const char *a, size_t alen, const char *b, size_t blen) {
  np_conn *c = to_visitor ? h->vc : h->work;
  wreq *w = malloc(sizeof(*w) + alen + blen);
  uv_buf_t buf;
  int r;

  if (w == NULL)
    return UV_ENOMEM;
  w->h = h;
  w->run = h->run;
  w->to_visitor = to_visitor;
  w->len = alen + blen;
  if (alen > 0)
    memcpy(w->data, a, alen);
  if (blen > 0)
    memcpy(w->data + alen, b, blen);
  buf = uv_buf_init(w->data, (unsigned)w->len);
  if ((r = np__conn_write(c, &w->w, &buf, 1, on_written)) != 0) {
    free(w);
    return r;
  }
  h->refs++;
  if (to_visitor) {
    h->to_visitor += w->len;
    h->out += w->len;
    np__meter_add(&h->meter, 0, w->len);
  } else {
    h->to_work += w->len;
    h->in += w->len;
    np__meter_add(&h->meter, w->len, 0);
  }
  return 0;
}

void np__hconn_answer(hconn *h, int status, const char *reason, const char *extra,
                      const char *text) {
  char head[512], body[768];
  int blen = snprintf(body, sizeof(body),
                      "<!DOCTYPE html>\n<html><head><title>%d %s</title></head>\n"
                      "<body><h1>%d %s</h1>\n<p>%s</p>\n<hr><p>np-server</p></body></html>\n",
                      status, reason, status, reason, text);
  int is_head =
      h->head.state == NP_HTTP_DONE && strcmp(np__http_head_method(&h->head), "HEAD") == 0;
  int hlen;

  if (blen < 0 || (size_t)blen >= sizeof(body))
    blen = 0;
  hlen = snprintf(head, sizeof(head),
                  "HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\n"
                  "Content-Length: %d\r\nConnection: close\r\nCache-Control: no-store\r\n%s\r\n",
                  status, reason, blen, extra != NULL ? extra : "");
  np__log(&h->vh->srv->log, NP_LOG_DEBUG, "http: %d %s to a visitor: %s", status, reason, text);
  /* the shutdown in finish waits for this write */
  np__hconn_finish(h, send2(h, 1, head, (size_t)hlen, body, is_head ? 0 : (size_t)blen) != 0);
}

/* ---- requests ----------------------------------------------------------------------------------
 */

static int on_req_complete(http_parser *p) {
  ((hconn *)p->data)->req_done = 1;
  http_parser_pause(p, 1); /* so execute returns where the next request begins */
  return 0;
}

/* The request is forwarded whole: the next head may come. */
static void next_request(hconn *h) {
  np__http_head_reset(&h->head);
  h->state = H_HEAD;
  h->deadline = now(h) + NP_HTTP_HEAD_TIMEOUT;
}

int np__hconn_forward(hconn *h) {
  const char *rewrite = h->host_rewrite[0] != '\0' ? h->host_rewrite : NULL;
  char addr[64] = "";
  np__http_rewrite rw = {.proto = "http", .trust_forwarded = h->trusted, .host = rewrite};
  const char *method = np__http_head_method(&h->head);
  size_t len = 0;
  char *out;
  int r, kind;

  if (h->addr.sa.sa_family != 0) {
    /* X-Forwarded-For holds the address alone: "192.0.2.1", "2001:db8::1" */
    char *colon;
    np__addr_str(&h->addr.sa, addr, sizeof(addr));
    if ((colon = strrchr(addr, ':')) != NULL)
      *colon = '\0';
    if (addr[0] == '[') {
      memmove(addr, addr + 1, strlen(addr));
      addr[strlen(addr) - 1] = '\0';
    }
    rw.addr = addr;
  }
  np__http_head_rewrite(&h->head, &rw, NULL, 0, &len);
  if ((out = malloc(len)) == NULL)
    return UV_ENOMEM;
  if ((r = np__http_head_rewrite(&h->head, &rw, out, len, &len)) == 0)
    r = send2(h, 0, out, len, NULL, 0);
  free(out);
  if (r != 0)
    return r;
  if (!np__http_head_keep_alive(&h->head))
    h->last_request = 1; /* the connection ends with its response */
  kind = strcmp(method, "HEAD") == 0       ? M_HEAD
         : strcmp(method, "CONNECT") == 0  ? M_CONNECT
         : np__http_head_upgrade(&h->head) ? M_UPGRADE
                                           : M_PLAIN;
  h->kinds[(h->first + h->pending) % NP_HTTP_PIPELINE_MAX] = (unsigned char)kind;
  h->pending++;
  /* The body's framing comes from the head as the visitor sent it: http_parser reads it again. */
  http_parser_init(&h->req, HTTP_REQUEST);
  h->req.data = h;
  h->req_done = 0;
  http_parser_execute(&h->req, &req_settings, np__http_head_bytes(&h->head),
                      np__http_head_len(&h->head));
  h->body_then_upgrade = kind == M_UPGRADE || kind == M_CONNECT;
  if (!h->req_done)
    h->state = H_BODY;
  else if (h->body_then_upgrade)
    h->state = H_UPGRADE; /* nothing more is read until the answer says which protocol follows */
  else
    next_request(h);
  return 0;
}

/* Keep bytes for later (after what is kept): handled once the state allows. */
static int keep(hconn *h, const char *data, size_t len) {
  char *s;
  if (len == 0)
    return 0;
  if ((s = realloc(h->stash, h->stash_len + len)) == NULL)
    return UV_ENOMEM;
  memcpy(s + h->stash_len, data, len);
  h->stash = s;
  h->stash_len += len;
  return 0;
}

/* Handle visitor bytes in order while the state allows; the rest is kept. A finished head stops
 * the walk: what follows it is kept, so that a join after an upgrade finds it in the stash. */
static void handle(hconn *h, const char *data, size_t len) {
  while (len > 0) {
    size_t used = 0;
    int r;

    if (h->state == H_HEAD && h->pending < NP_HTTP_PIPELINE_MAX && !h->last_request) {
      r = np__http_head_feed(&h->head, data, len, &used);
      data += used, len -= used;
      if (r == NP_HTTP_MORE)
        continue;
      h->deadline = 0;
      if (keep(h, data, len) != 0) {
        np__hconn_finish(h, 1);
        return;
      }
      h->dispatch(h);
      return;
    }
    if (h->state == H_BODY) {
      used = http_parser_execute(&h->req, &req_settings, data, len);
      if (HTTP_PARSER_ERRNO(&h->req) != HPE_OK && HTTP_PARSER_ERRNO(&h->req) != HPE_PAUSED) {
        np__hconn_finish(h, 1); /* its head passed: a broken body (chunks) is the visitor's loss */
        return;
      }
      if (used > 0 && send2(h, 0, data, used, NULL, 0) != 0) {
        np__hconn_finish(h, 1);
        return;
      }
      data += used, len -= used;
      if (h->req_done && h->body_then_upgrade)
        h->state = H_UPGRADE;
      else if (h->req_done)
        next_request(h);
      continue;
    }
    break; /* H_WAIT, H_UPGRADE, H_DRAIN, a full pipeline: later. H_CLOSING: never */
  }
  if (h->state != H_CLOSING && h->state != H_JOINED && keep(h, data, len) != 0)
    np__hconn_finish(h, 1);
}

static int can_handle(const hconn *h) {
  return (h->state == H_HEAD && h->pending < NP_HTTP_PIPELINE_MAX && !h->last_request) ||
         h->state == H_BODY;
}

/* Handle what is kept, as far as the state allows. */
static void handle_stash(hconn *h) {
  while (h->stash != NULL && can_handle(h)) {
    char *s = h->stash;
    size_t n = h->stash_len;
    h->stash = NULL;
    h->stash_len = 0;
    handle(h, s, n);
    free(s);
  }
}

static void on_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  hconn *h = c->data;
  (void)suggested;
  *buf = uv_buf_init(h->rbuf, sizeof(h->rbuf));
}

static void on_work_shut(np_conn *c, int status) {
  (void)c, (void)status;
}

static void on_visitor_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  hconn *h = c->data;

  if (nread == 0)
    return;
  h->refs++; /* what follows may finish h */
  h->last_io = now(h);
  if (nread < 0) {
    h->visitor_eof = 1;
    h->reading_v = 0;
    np__conn_read_stop(c);
    if (nread != UV_EOF || h->work == NULL)
      np__hconn_finish(h, nread != UV_EOF);
    else if (h->state == H_BODY || h->pending > 0)
      /* a body cut short, or responses still to come: the service sees the end too */
      np__conn_shutdown(h->work, on_work_shut);
  } else
    handle(h, buf->base, (size_t)nread);
  np__hconn_pump(h);
  np__hconn_unref(h);
}

/* ---- responses ---------------------------------------------------------------------------------
 */

static int on_resp_begin(http_parser *p) {
  /* a response nobody asked for: never passed on (it would answer the next request) */
  return ((hconn *)p->data)->pending == 0 ? -1 : 0;
}

static int on_resp_headers(http_parser *p) {
  hconn *h = p->data;
  int kind = h->kinds[h->first % NP_HTTP_PIPELINE_MAX];
  unsigned status = p->status_code;

  if (status == 101) {
    h->switching = kind == M_UPGRADE; /* else http_parser stops here: a broken response */
    return 0;
  }
  if (kind == M_CONNECT && status / 100 == 2) {
    h->switching = 1;
    return 2; /* no body, no further responses: a tunnel from here */
  }
  /* No body, whatever Content-Length says (RFC 9110 §6.4.1) */
  if (status / 100 == 1 || status == 204 || status == 304 || kind == M_HEAD)
    return 1;
  return 0;
}

static int on_resp_complete(http_parser *p) {
  hconn *h = p->data;
  if (p->status_code / 100 == 1 && p->status_code != 101)
    return 0; /* 100 Continue and its kind come before the final response */
  h->pending--;
  h->first = (h->first + 1) % NP_HTTP_PIPELINE_MAX;
  if (!http_should_keep_alive(p))
    h->last_request = 1; /* Connection: close, or HTTP/1.0: the visitor closes after it */
  if (h->pending == 0 && h->state == H_HEAD && np__http_head_len(&h->head) == 0)
    h->deadline = now(h) + NP_HTTP_HEAD_TIMEOUT;
  return 0;
}

static void join_raw(hconn *h);

/* The work connection ended: the service closed it (Connection: close, its keep-alive timeout) or
 * broke it. */
static void work_ended(hconn *h, ssize_t err) {
  const char *end = err == UV_EOF ? "closed" : "reset";
  if (h->pending > 0 && h->out == 0) {
    /* nothing came back: a gateway's 502, as nginx gives (a pre-opened work connection reports a
     * service that is down this way) */
    int refused = h->end != NULL && strcmp(h->end, "local_failed") == 0;
    end_run(h, end);
    np__hconn_answer(h, 502, "Bad Gateway", NULL,
                     refused ? "The service behind this host refused the connection."
                             : "The service behind this host closed the connection "
                               "without an answer.");
  } else if (h->pending > 0)
    np__hconn_finish(h, 0); /* an answer cut short, or one that ends with the connection */
  else
    end_run(h, end); /* between requests: the visitor's connection stays */
}

static void on_work_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  hconn *h = c->data;
  size_t n;
  enum http_errno e;

  if (nread == 0)
    return;
  h->refs++;
  h->last_io = now(h);
  if (nread < 0) {
    work_ended(h, nread);
    goto out;
  }
  n = http_parser_execute(&h->resp, &resp_settings, buf->base, (size_t)nread);
  e = HTTP_PARSER_ERRNO(&h->resp);
  if (h->switching) {
    /* 101 (or 2xx to CONNECT): its head, then the new protocol's bytes, then bytes both ways */
    if (send2(h, 1, buf->base, (size_t)nread, NULL, 0) != 0)
      np__hconn_finish(h, 1);
    else
      join_raw(h);
    goto out;
  }
  if (e == HPE_CB_message_begin)
    n--; /* http_parser counts the first byte of the response it refused */
  if (n > 0 && send2(h, 1, buf->base, n, NULL, 0) != 0) {
    np__hconn_finish(h, 1);
    goto out;
  }
  if (e == HPE_CB_message_begin) {
    np__log(&h->vh->srv->log, NP_LOG_WARN,
            "proxy %s: its service sent a response nobody asked for; its connection is closed",
            h->px_name);
    end_run(h, "closed");
  } else if (e != HPE_OK) {
    np__log(&h->vh->srv->log, NP_LOG_WARN,
            "proxy %s: its service's response is not HTTP/1.x (%s); the visitor's connection is "
            "closed",
            h->px_name, http_errno_description(e));
    np__hconn_finish(h, 0);
  }
out:
  np__hconn_pump(h);
  np__hconn_unref(h);
}

/* ---- the driver --------------------------------------------------------------------------------
 */

static void set_reading(hconn *h) {
  int v = !h->visitor_eof && can_handle(h) && h->stash == NULL &&
          h->to_work <= (h->reading_v ? QUEUE_HIGH : QUEUE_LOW);
  int w = h->work != NULL && h->to_visitor <= (h->reading_w ? QUEUE_HIGH : QUEUE_LOW);

  if (v != (int)h->reading_v) {
    if (v)
      np__conn_read_start(h->vc, on_alloc, on_visitor_read);
    else
      np__conn_read_stop(h->vc);
    h->reading_v = (unsigned)v;
  }
  if (h->work != NULL && w != (int)h->reading_w) {
    if (w)
      np__conn_read_start(h->work, on_alloc, on_work_read);
    else
      np__conn_read_stop(h->work);
    h->reading_w = (unsigned)w;
  }
}

void np__hconn_pump(hconn *h) {
  if (h->state == H_UPGRADE && h->pending == 0)
    next_request(h); /* the service declined the upgrade: HTTP goes on */
  if (h->state == H_DRAIN && h->pending == 0) {
    end_run(h, "closed");
    h->dispatch(h); /* the head that waited, with no run now */
  }
  handle_stash(h);
  if (h->state == H_HEAD && h->pending == 0 &&
      ((h->visitor_eof && h->stash == NULL) || h->last_request))
    np__hconn_finish(h, 0); /* it said all it had to, or the last answer is out */
  if (h->state == H_HEAD || h->state == H_BODY || h->state == H_DRAIN || h->state == H_UPGRADE ||
      h->state == H_WAIT)
    set_reading(h);
}

void np__hconn_drain(hconn *h) {
  if (h->state == H_JOINED || h->state == H_CLOSING || h->vc_closing)
    return;
  h->last_request = 1; /* no request is read after those already forwarded */
  np__hconn_pump(h);
}

void np__hconn_start(hconn *h) {
  h->last_io = now(h);
  h->deadline = h->last_io + NP_HTTP_HEAD_TIMEOUT;
  h->refs++; /* what follows may let go of its conn (np__hconn_bridge) */
  np__hconn_pump(h);
  np__hconn_unref(h);
}

/* ---- the end of a connection -------------------------------------------------------------------
 */

static void close_vc(hconn *h, int abort);

/* What the hand-overs share: the bytes read so far (the head, then the stash) in one buffer,
 * reading stopped, then go hands the conn over with them. On an error h is as it was (its reading
 * resumed when resume says so) and the caller answers. */
typedef int (*hand_fn)(hconn *h, const char *pre, size_t n, const void *arg);

static int hand_over(hconn *h, hand_fn go, const void *arg, int resume) {
  size_t hl = np__http_head_len(&h->head), n = hl + h->stash_len;
  int was_reading = h->reading_v, r;
  char *pre;

  if (h->work != NULL || h->to_visitor > 0)
    return UV_EBUSY;
  if ((pre = malloc(n > 0 ? n : 1)) == NULL)
    return UV_ENOMEM;
  memcpy(pre, np__http_head_bytes(&h->head), hl);
  if (h->stash_len > 0)
    memcpy(pre + hl, h->stash, h->stash_len);
  if (h->reading_v)
    np__conn_read_stop(h->vc);
  h->reading_v = 0;
  r = go(h, pre, n, arg);
  free(pre);
  if (r != 0 && resume && was_reading && np__conn_read_start(h->vc, on_alloc, on_visitor_read) == 0)
    h->reading_v = 1;
  return r;
}

typedef struct {
  const char *host;
  size_t len;
} host_arg;

static int to_peer(hconn *h, const char *pre, size_t n, const void *arg) {
  const host_arg *a = arg;
  return np__vhost_to_peer(h->vh, h->vc, &h->addr, &h->to, a->host, a->len, pre, n);
}

static int to_bridge(hconn *h, const char *pre, size_t n, const void *arg) {
  return np__vhost_bridge(h->vh, h->vc, &h->addr, pre, n, *(const unsigned *)arg);
}

static int to_worker(hconn *h, const char *pre, size_t n, const void *arg) {
  return np__vhost_hand(h->vh, h->vc, &h->addr, pre, n, *(const unsigned *)arg, h->hops + 1);
}

int np__hconn_to_peer(hconn *h, const char *host, size_t hostlen) {
  host_arg a = {host, hostlen};
  int r;

  if (h->from_peer || h->vh->srv->forward == NULL)
    return UV_ENOENT; /* one hop at most */
  if (h->work == NULL && h->to_visitor == 0 && !np__vhost_peer_holds(h->vh, host, hostlen))
    return UV_ENOENT; /* before copying anything: most unknown names are just unknown */
  if ((r = hand_over(h, to_peer, &a, 1)) != 0)
    return r;
  h->state = H_CLOSING;
  h->deadline = 0;
  close_vc(h, 0); /* the socket lives on in the forwarder: no FIN */
  return 0;
}

int np__hconn_bridge(hconn *h, unsigned widx) {
  int r;

  if ((r = hand_over(h, to_bridge, &widx, 1)) != 0)
    return r;
  /* The relay has the conn now: h lets go of it as if it had closed. */
  h->state = H_CLOSING;
  h->deadline = 0;
  h->vc_closing = 1;
  np__hconn_unref(h);
  return 0;
}

int np__hconn_move(hconn *h, unsigned widx) {
  int r;

  if ((r = hand_over(h, to_worker, &widx, 0)) != 0)
    return r;
  h->state = H_CLOSING;
  h->deadline = 0;
  close_vc(h, 0); /* the socket lives on over there: no FIN */
  return 0;
}

static void close_vc(hconn *h, int abort) {
  if (h->vc_closing)
    return;
  h->vc_closing = 1;
  h->deadline = 0;
  np__conn_read_stop(h->vc);
  if (abort)
    np__conn_abort(h->vc, on_conn_closed);
  else
    np__conn_close(h->vc, on_conn_closed);
}

static void on_linger_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  if (nread < 0)
    close_vc(c->data, 0);
}

static void on_visitor_shut(np_conn *c, int status) {
  hconn *h = c->data;
  if (h->vc_closing)
    return; /* stopped meanwhile */
  if (status != 0 || h->visitor_eof || np__conn_read_start(c, on_alloc, on_linger_read) != 0) {
    close_vc(h, 0);
    return;
  }
  h->lingering = 1;
  h->deadline = now(h) + NP_HTTP_LINGER;
}

void np__hconn_finish(hconn *h, int abort) {
  if (h->state == H_CLOSING || h->state == H_JOINED)
    return; /* closing already, or the join ends it */
  if (h->state == H_WAIT) {
    /* in the pool: the core ends it through http_drop (or http_join) */
    h->visitor_eof = 1;
    return;
  }
  h->state = H_CLOSING;
  h->deadline = 0;
  end_run(h, abort ? "reset" : "closed");
  if (h->reading_v)
    np__conn_read_stop(h->vc);
  h->reading_v = 0;
  if (abort || np__conn_shutdown(h->vc, on_visitor_shut) != 0)
    close_vc(h, abort);
}

void np__hconn_stop(hconn *h) {
  if (h->state == H_JOINED)
    np__join_abort(h->join);
  else if (h->state == H_WAIT)
    h->visitor_eof = 1; /* the core drops the pool's visitors */
  else {
    if (h->state != H_CLOSING)
      np__hconn_finish(h, 1);
    end_run(h, "aborted");
    close_vc(h, 1);
  }
}

/* vhost_http_timeout: no byte moved either way with work outstanding. Read at each tick, so that a
 * reload's value applies at once. */
static uint64_t io_timeout(const hconn *h) {
  return h->vh->srv->cfg.vhost_http_timeout_ms;
}

static void stalled(hconn *h) {
  char who[64] = "?";
  if (h->addr.sa.sa_family != 0)
    np__addr_str(&h->addr.sa, who, sizeof(who));
  np__log(&h->vh->srv->log, NP_LOG_DEBUG, "http: visitor %s: nothing moved for %llums, closed", who,
          (unsigned long long)io_timeout(h));
}

void np__hconn_tick(hconn *h, uint64_t t) {
  if (h->state == H_JOINED || h->state == H_WAIT || h->vc_closing)
    return;
  if (h->state == H_CLOSING) {
    /* lingering over; or a visitor that does not read what is queued for it */
    if (h->lingering && t >= h->deadline)
      close_vc(h, 0);
    else if (!h->lingering && t - h->last_io >= io_timeout(h)) {
      stalled(h);
      close_vc(h, 1);
    }
    return;
  }
  if (h->state == H_HEAD && h->pending == 0) {
    if (h->deadline != 0 && t >= h->deadline)
      np__hconn_finish(h, 0); /* no head in time, or idle that long after the last response */
    return;
  }
  if (t - h->last_io >= io_timeout(h)) {
    stalled(h);
    np__hconn_finish(h, 1); /* nothing moved either way */
  }
}

/* ---- joins --------------------------------------------------------------------------------- */

static void on_join_done(struct np_join *j, int status, const np_join_stats *st) {
  hconn *h = np_join_get_data(j);
  char end[48];
  /* a = visitor, b = work (join_raw) */
  np__access_log(h->vh->srv, h->px_name, &h->addr, h->since, h->in + st->a_to_b,
                 h->out + st->b_to_a,
                 h->end != NULL ? h->end : np__join_end(status, end, sizeof(end)));
  np__track_remove(&h->t);
  np__meter_end(&h->meter);
  h->work = NULL;
  h->vc_closing = 1;
  h->state = H_CLOSING;
  np__hconn_unref(h);
}

/* After a 101, bytes both ways: the byte relay takes both connections, and what followed the
 * upgrade request (the stash) goes first. */
static void join_raw(hconn *h) {
  struct np_server *srv = h->vh->srv;
  np__tally in, out;
  int r = UV_E2BIG;

  np__conn_read_stop(h->vc);
  np__conn_read_stop(h->work);
  h->reading_v = h->reading_w = 0;
  if (h->stash_len <= NP_JOIN_CHUNK)
    r = np__join(h->vc, h->work, h->stash, h->stash_len, &srv->chunks, on_join_done, h, &h->join);
  if (r != 0) {
    np__hconn_finish(h, 1);
    return;
  }
  free(h->stash);
  h->stash = NULL;
  h->stash_len = 0;
  h->state = H_JOINED;
  h->deadline = 0;
  h->refs -= 1; /* the two conns' references become the join's one */
  np__meter_tally(&h->meter, &in, &out);
  np__join_count_into(h->join, &in, &out);
}

void np__hconn_join(hconn *h, visitor *v, session *s, np_conn *work, const char *rest,
                    size_t rest_len) {
  work->data = h;
  h->refs++; /* the work conn's */
  if (h->visitor_eof) {
    /* it left while it waited (the server stops) */
    np__meter_end(&v->meter);
    np__conn_close(work, on_conn_closed);
    h->state = H_HEAD;
    np__hconn_finish(h, 1);
    return;
  }
  h->refs++; /* this call's */
  h->work = work;
  work->borrow = 1; /* on_work_read copies what it keeps */
  h->meter = v->meter;
  h->since = v->since;
  h->in = h->out = 0;
  h->end = NULL;
  np__strlcpy(h->px_name, v->px->name, sizeof(h->px_name));
  memset(&h->t, 0, sizeof(h->t));
  h->t.id = v->id;
  h->t.tag = v->px;
  h->t.abort = abort_run;
  h->t.note = note_end;
  np__session_track(s, &h->t);
  http_parser_init(&h->resp, HTTP_RESPONSE);
  h->resp.data = h;
  h->pending = h->first = 0;
  h->switching = 0;
  h->state = H_HEAD;
  if (np__hconn_forward(h) != 0)
    np__hconn_finish(h, 1);
  if (rest_len > 0 && h->work == work) {
    uv_buf_t b = uv_buf_init((char *)rest, (unsigned)rest_len);
    on_work_read(work, (ssize_t)rest_len, &b);
  }
  np__hconn_pump(h);
  np__hconn_unref(h);
}
