/* The HTTP proxy type (type = http, docs/config.md "HTTP services on a shared port"): one public
 * listener for all of them, vhost_http_port, opened when the server starts. Each request on a
 * visitor's connection is routed by its Host and path (http_route.c) to the proxy that claimed
 * them, and forwarded with X-Forwarded-* (http_head.c) over a work connection of that proxy's
 * client. Requests that follow on the same connection go over the same work connection while they
 * name the same proxy; one naming another waits until every response before it is complete, then
 * the work connection is closed and the request goes to the new proxy over a new one (a "run" is
 * the requests of one connection that share a work connection: the pool's visitor, the access
 * log's line). Responses are read only to find where each ends. After a request with Upgrade
 * (WebSocket) or CONNECT, the two connections are joined as bytes (join.c) until they end.
 *
 * The server answers itself, and then closes the connection: 400 (a head http_parser refuses, no
 * valid Host), 431 (a head over 16 KiB), 404 (no proxy claimed the host), 401 (http_user), 403
 * (allow_ips), 502 (the client that claimed the host is gone, its service refused, or no work
 * connection came in time). */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "http_head.h"
#include "vhost.h"

#define HEAD_TIMEOUT_MS 30000 /* for a request head to arrive, and for an idle keep-alive */
#define READ_SIZE       (16 * 1024)
#define QUEUE_HIGH      NP_JOIN_HIGH /* per direction, as the byte relay */
#define QUEUE_LOW       NP_JOIN_LOW
#define PIPELINE_MAX    32 /* requests forwarded whose responses have not ended */

typedef struct hconn hconn;
typedef np__vhost vhost;

/* A proxy's own part (px->impl). */
typedef struct hproxy {
  char host_rewrite[NP_MSG_TEXT_MAX + 1]; /* "": keep the visitor's Host */
  char *auth;                             /* the Authorization value to expect, or NULL */
} hproxy;

enum hstate {
  H_HEAD,    /* reading a request head */
  H_WAIT,    /* its proxy's client was asked for a work connection (a visitor in the pool) */
  H_BODY,    /* forwarding a request's body */
  H_DRAIN,   /* the next request goes elsewhere (or is answered here): waiting for responses */
  H_ANSWER,  /* writing the server's own answer, then closing */
  H_JOINED,  /* upgraded: the byte relay has both connections */
  H_CLOSING, /* closing */
};

/* A write of ours, with its bytes. */
typedef struct wreq {
  np_conn_write w;
  hconn *h;
  int to_visitor;
  size_t len;
  char data[];
} wreq;

/* A visitor's connection. */
struct hconn {
  vhost *vh;
  np_conn *vc, *work;
  enum hstate state;
  np__http_head head;
  http_parser req, resp; /* the forwarded requests' framing; the responses' */
  int req_done, resp_done;
  char *stash; /* read from the visitor, not yet handled */
  size_t stash_len;
  unsigned char methods[PIPELINE_MAX]; /* of requests whose responses are outstanding: HEAD? */
  unsigned pending, first;
  size_t to_work, to_visitor; /* bytes queued */
  unsigned reading_v : 1, reading_w : 1, visitor_eof : 1, work_eof : 1, trusted : 1;
  uint64_t deadline;
  np__addr addr, to;
  char rbuf[READ_SIZE];
  /* the run: the proxy its work connection serves, and what the access log says of it */
  proxy *px;
  char px_name[NP_MSG_NAME_MAX + 1];
  np__meter meter;
  np__track t;
  uint64_t since, in, out;
  const char *end;
  struct np_join *join;
  int refs; /* conns open, writes queued, and the join */
  hconn *prev, *next;
};

static void pump(hconn *h);
static void finish(hconn *h, int abort);
static void join_raw(hconn *h);
static void next_request(hconn *h);
static int on_req_complete(http_parser *p);

static const http_parser_settings req_settings = {.on_message_complete = on_req_complete};

static vhost *vhost_of(struct np_server *srv) {
  return srv->type_data[NP_PROXY_HTTP];
}

/* vh->conns, typed */
#define CONNS(vh) (*(hconn **)&(vh)->conns)

static void unref(hconn *h) {
  if (--h->refs > 0)
    return;
  vhost *vh = h->vh;
  struct np_server *srv = vh->srv;
  NP_DLIST_UNLINK(CONNS(vh), h, prev, next);
  np__http_head_free(&h->head);
  free(h->stash);
  free(h);
  np__vhost_unref(vh);
  np__server_unref(srv);
}

static void on_conn_closed(np_conn *c) {
  unref(c->data);
}

/* ---- the run: a work connection of one proxy ---------------------------------------------------
 */

static void end_run(hconn *h, const char *end) {
  if (h->work == NULL)
    return;
  np__access_log(h->vh->srv, h->px_name, &h->addr, h->since, h->in, h->out,
                 h->end != NULL ? h->end : end);
  np__track_remove(&h->t);
  np__meter_end(&h->meter);
  h->work->data = h;
  np__conn_close(h->work, on_conn_closed);
  h->work = NULL;
  h->px = NULL;
  h->end = NULL;
  h->reading_w = 0;
  h->pending = 0;
  h->work_eof = 0;
  h->to_work = 0; /* its writes are cancelled */
}

static void abort_run(np__track *t) {
  hconn *h = (hconn *)((char *)t - offsetof(hconn, t));
  if (h->state == H_JOINED)
    np__join_abort(h->join);
  else
    finish(h, 1);
}

static void note_end(np__track *t, const char *end) {
  ((hconn *)((char *)t - offsetof(hconn, t)))->end = end;
}

/* ---- writing --------------------------------------------------------------------------------- */

static void on_written(np_conn_write *req, int status) {
  wreq *w = (wreq *)req;
  hconn *h = w->h;
  /* A write to a run's work connection that was closed since is cancelled: no harm. */
  int current = w->to_visitor ? 1 : req->conn == h->work;

  if (current && w->to_visitor)
    h->to_visitor -= w->len;
  else if (current)
    h->to_work -= w->len;
  free(w);
  if (status != 0 && current)
    finish(h, 1);
  else if (current)
    pump(h);
  unref(h);
}

/* Queue a copy of len bytes (bufs may be two pieces) to the visitor or the work connection. */
static int send2(hconn *h, int to_visitor, const char *a, size_t alen, const char *b, size_t blen) {
  np_conn *c = to_visitor ? h->vc : h->work;
  wreq *w = malloc(sizeof(*w) + alen + blen);
  uv_buf_t buf;
  int r;

  if (w == NULL)
    return UV_ENOMEM;
  w->h = h;
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

/* The server's own answer, after which the connection closes. */
static void answer(hconn *h, int status, const char *reason, const char *extra, const char *text) {
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
  h->state = H_ANSWER;
  if (h->reading_v)
    np__conn_read_stop(h->vc); /* what it sends now is not read */
  h->reading_v = 0;
  if (send2(h, 1, head, (size_t)hlen, body, is_head ? 0 : (size_t)blen) != 0)
    finish(h, 1);
  else
    pump(h);
}

/* ---- routing -----------------------------------------------------------------------------------
 */

/* Whether the head carries the credentials px wants (constant time in the secret). */
static int authorized(const hconn *h, const hproxy *hp) {
  np__http_span v;
  size_t n;

  if (hp->auth == NULL)
    return 1;
  if (!np__http_head_find(&h->head, "Authorization", &v))
    return 0;
  n = strlen(hp->auth);
  if (v.len < 6 || strncasecmp(v.p, "Basic ", 6) != 0)
    return 0;
  v.p += 6, v.len -= 6;
  while (v.len > 0 && *v.p == ' ')
    v.p++, v.len--;
  return v.len == n && CRYPTO_memcmp(v.p, hp->auth, n) == 0;
}

/* The path of the target: origin-form as is, absolute-form after its authority. */
static np__http_span target_path(const hconn *h) {
  np__http_span t = np__http_head_target(&h->head);
  if (t.len > 0 && t.p[0] != '/') {
    const char *s = memchr(t.p, ':', t.len);
    if (s != NULL && (size_t)(t.p + t.len - s) > 3 && s[1] == '/' && s[2] == '/') {
      const char *p = memchr(s + 3, '/', (size_t)(t.p + t.len - (s + 3)));
      t.len = p != NULL ? (size_t)(t.p + t.len - p) : 0;
      t.p = p != NULL ? p : "/";
    }
  }
  return t;
}

/* Forward the head just read to the run's work connection, and start following its body. */
static int forward_head(hconn *h) {
  hproxy *hp = h->px->impl;
  char addr[64] = "";
  np__http_rewrite rw = {.proto = "http", .trust_forwarded = h->trusted};
  size_t len = 0;
  char *out;
  int r;

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
  rw.host = hp->host_rewrite[0] != '\0' ? hp->host_rewrite : NULL;
  np__http_head_rewrite(&h->head, &rw, NULL, 0, &len);
  if ((out = malloc(len)) == NULL)
    return UV_ENOMEM;
  if ((r = np__http_head_rewrite(&h->head, &rw, out, len, &len)) == 0)
    r = send2(h, 0, out, len, NULL, 0);
  free(out);
  if (r != 0)
    return r;
  h->methods[(h->first + h->pending) % PIPELINE_MAX] =
      strcmp(np__http_head_method(&h->head), "HEAD") == 0;
  h->pending++;
  /* The body's framing comes from the head as the visitor sent it: http_parser reads it again. */
  http_parser_init(&h->req, HTTP_REQUEST);
  h->req.data = h;
  h->req_done = 0;
  http_parser_execute(&h->req, &req_settings, np__http_head_bytes(&h->head),
                      np__http_head_len(&h->head));
  if (np__http_head_upgrade(&h->head)) {
    join_raw(h); /* the stash holds what followed the head */
    return 0;
  }
  if (h->req_done)
    next_request(h);
  else
    h->state = H_BODY;
  return 0;
}

/* Answer an error in the head (NP_EPROTO, NP_ETOOBIG, NP_EHOST) and close. */
static void answer_bad_head(hconn *h, int err) {
  answer(h, err == NP_ETOOBIG ? 431 : 400,
         err == NP_ETOOBIG ? "Request Header Fields Too Large" : "Bad Request", NULL,
         err == NP_ETOOBIG ? "The request head is over 16 KiB or 100 fields."
         : err == NP_EHOST ? "The request has no valid Host header."
                           : "The request is not HTTP/1.x.");
}

/* A complete head (or a broken one) in h->head: route it. A run that is open goes on only when the
 * request is for its proxy; anything else waits for the run's responses (H_DRAIN, then here
 * again with no run). */
static void dispatch(hconn *h) {
  vhost *vh = h->vh;
  np__http_span host = {NULL, 0}, path;
  void *owner = NULL;
  char text[NP_HTTP_HOST_MAX + 128];
  int found = NP_HTTP_ROUTE_NONE;
  proxy *px = NULL;

  if (h->head.state == NP_HTTP_DONE) {
    host = np__http_head_host(&h->head);
    path = target_path(h);
    if (host.len > 0)
      found = np__http_routes_find(vh->routes, host.p, host.len, path.p, path.len, &owner);
    px = found == NP_HTTP_ROUTE_FOUND ? owner : NULL;
  }
  if (h->work != NULL) {
    if (px != NULL && px == h->px && authorized(h, px->impl)) {
      if (forward_head(h) != 0)
        finish(h, 1);
    } else
      h->state = H_DRAIN;
    return;
  }
  if (h->head.state < 0) {
    answer_bad_head(h, h->head.state);
    return;
  }
  if (host.len == 0) {
    answer(h, 400, "Bad Request", NULL, "The request names no host (HTTP/1.0 without Host).");
    return;
  }
  if (px == NULL) {
    /* host is a checked host name: nothing in it needs escaping */
    snprintf(text, sizeof(text),
             found == NP_HTTP_ROUTE_GONE
                 ? "The client that serves %.*s is not connected to this server."
                 : "No service is registered for %.*s on this server.",
             (int)host.len, host.p);
    if (found == NP_HTTP_ROUTE_GONE)
      vh->srv->stats.visitors_failed++;
    answer(h, found == NP_HTTP_ROUTE_GONE ? 502 : 404,
           found == NP_HTTP_ROUTE_GONE ? "Bad Gateway" : "Not Found", NULL, text);
    return;
  }
  vh->srv->stats.visitors_total++;
  if (!authorized(h, px->impl)) {
    answer(h, 401, "Unauthorized", "WWW-Authenticate: Basic realm=\"Restricted\"\r\n",
           "This service needs a user name and password.");
    return;
  }
  if (!np__proxy_admits(px, h->addr.sa.sa_family != 0 ? &h->addr.sa : NULL)) {
    answer(h, 403, "Forbidden", NULL, "Your address may not use this service.");
    return;
  }
  h->state = H_WAIT;
  h->px = px;
  if (np__visitor_arrive(px, h, h->addr.sa.sa_family != 0 ? &h->addr.sa : NULL,
                         h->to.sa.sa_family != 0 ? &h->to.sa : NULL) != 0) {
    h->px = NULL;
    vh->srv->stats.visitors_refused++;
    answer(h, 503, "Service Unavailable", NULL, "The server is out of memory.");
  }
  /* on in http_join, or http_drop */
}

/* ---- the visitor's bytes -----------------------------------------------------------------------
 */

static int on_req_complete(http_parser *p) {
  ((hconn *)p->data)->req_done = 1;
  http_parser_pause(p, 1);
  return 0;
}

/* The request's body is over: the next head may come. */
static void next_request(hconn *h) {
  np__http_head_reset(&h->head);
  h->state = H_HEAD;
  h->deadline = uv_now(h->vh->srv->loop) + HEAD_TIMEOUT_MS;
}

/* Keep bytes for later (appended to what is kept): they are handled once the state allows. */
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

    if (h->state == H_HEAD) {
      r = np__http_head_feed(&h->head, data, len, &used);
      data += used, len -= used;
      if (r == NP_HTTP_MORE)
        continue;
      h->deadline = 0;
      if (keep(h, data, len) != 0) {
        finish(h, 1);
        return;
      }
      dispatch(h);
      return;
    }
    if (h->state == H_BODY) {
      used = http_parser_execute(&h->req, &req_settings, data, len);
      if (HTTP_PARSER_ERRNO(&h->req) != HPE_OK && HTTP_PARSER_ERRNO(&h->req) != HPE_PAUSED) {
        finish(h, 1); /* its head passed: a broken body (chunks) is the visitor's loss */
        return;
      }
      if (used > 0 && send2(h, 0, data, used, NULL, 0) != 0) {
        finish(h, 1);
        return;
      }
      data += used, len -= used;
      if (h->req_done)
        next_request(h);
      continue;
    }
    break; /* H_WAIT, H_DRAIN: later. H_ANSWER, H_CLOSING: never */
  }
  if (h->state == H_WAIT || h->state == H_DRAIN) {
    if (keep(h, data, len) != 0)
      finish(h, 1);
  }
}

/* Handle what is kept, as far as the state allows. */
static void handle_stash(hconn *h) {
  while (h->stash != NULL && (h->state == H_HEAD || h->state == H_BODY)) {
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

static void on_shut(np_conn *c, int status) {
  (void)c, (void)status;
}

static void on_visitor_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  hconn *h = c->data;

  if (nread == 0)
    return;
  h->refs++; /* what follows may finish h */
  if (nread < 0) {
    h->visitor_eof = 1;
    h->reading_v = 0;
    np__conn_read_stop(c);
    if (nread != UV_EOF || h->work == NULL)
      finish(h, nread != UV_EOF);
    else if (h->state == H_BODY || h->pending > 0)
      /* a body cut short, or responses still to come: the service sees the end too */
      np__conn_shutdown(h->work, on_shut);
  } else
    handle(h, buf->base, (size_t)nread);
  pump(h);
  unref(h);
}

/* ---- the responses -----------------------------------------------------------------------------
 */

static int on_resp_headers(http_parser *p) {
  hconn *h = p->data;
  if (p->status_code / 100 == 1)
    return 0;
  if (h->pending > 0 && h->methods[h->first % PIPELINE_MAX])
    return 1; /* a response to HEAD has no body, whatever its Content-Length says */
  return 0;
}

static int on_resp_complete(http_parser *p) {
  hconn *h = p->data;
  /* 100 Continue and its kind come before the final response */
  if (p->status_code / 100 == 1 && p->status_code != 101)
    return 0;
  if (h->pending > 0) {
    h->pending--;
    h->first = (h->first + 1) % PIPELINE_MAX;
  }
  if (h->pending == 0 && h->state == H_HEAD)
    h->deadline = uv_now(h->vh->srv->loop) + HEAD_TIMEOUT_MS;
  return 0;
}

static const http_parser_settings resp_settings = {.on_headers_complete = on_resp_headers,
                                                   .on_message_complete = on_resp_complete};

static void on_work_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  hconn *h = c->data;

  if (nread == 0)
    return;
  h->refs++;
  if (nread < 0) {
    /* The service closed (Connection: close, its keep-alive timeout) or broke: so does the
     * visitor's connection, once what it was sent has gone out. */
    h->work_eof = 1;
    finish(h, nread != UV_EOF);
  } else {
    if (!h->resp_done) {
      size_t n = http_parser_execute(&h->resp, &resp_settings, buf->base, (size_t)nread);
      if (HTTP_PARSER_ERRNO(&h->resp) != HPE_OK || h->resp.upgrade || n < (size_t)nread)
        h->resp_done = 1; /* not a response we can follow: bytes from now on, until the end */
    }
    if (send2(h, 1, buf->base, (size_t)nread, NULL, 0) != 0)
      finish(h, 1);
  }
  pump(h);
  unref(h);
}

/* ---- the state machine's driver ----------------------------------------------------------------
 */

static void set_reading(hconn *h) {
  int v = !h->visitor_eof && (h->state == H_HEAD || h->state == H_BODY) && h->stash == NULL &&
          h->to_work <= (h->reading_v ? QUEUE_HIGH : QUEUE_LOW) && h->pending < PIPELINE_MAX;
  int w =
      h->work != NULL && !h->work_eof && h->to_visitor <= (h->reading_w ? QUEUE_HIGH : QUEUE_LOW);

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

/* After every event: move on where the state allows, then read what may be read. */
static void pump(hconn *h) {
  if (h->state == H_ANSWER && h->to_visitor == 0)
    finish(h, 0);
  if (h->state == H_DRAIN && h->pending == 0) {
    end_run(h, "closed");
    dispatch(h); /* the head that waited, with no run now */
  }
  handle_stash(h);
  if (h->state == H_HEAD && h->visitor_eof && h->pending == 0)
    finish(h, 0); /* it said all it had to */
  if (h->state == H_HEAD || h->state == H_BODY || h->state == H_DRAIN || h->state == H_WAIT)
    set_reading(h);
}

static void on_visitor_shut(np_conn *c, int status) {
  (void)status;
  np__conn_close(c, on_conn_closed);
}

/* End the connection: abort (reset), or close once what is queued for the visitor has gone out. */
static void finish(hconn *h, int abort) {
  if (h->state == H_CLOSING || h->state == H_JOINED)
    return; /* the join ends it */
  if (h->state == H_WAIT) {
    /* in the pool: the core ends it through http_drop (or http_join) */
    h->visitor_eof = 1;
    return;
  }
  h->state = H_CLOSING;
  h->deadline = 0;
  end_run(h, abort ? "reset" : "closed");
  if (abort)
    np__conn_abort(h->vc, on_conn_closed);
  else if (h->to_visitor == 0 || np__conn_shutdown(h->vc, on_visitor_shut) != 0)
    np__conn_close(h->vc, on_conn_closed);
}

/* ---- joins with work connections ---------------------------------------------------------------
 */

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
  h->state = H_CLOSING;
  unref(h);
}

/* After an upgrade, bytes both ways: the byte relay takes both connections, and what followed the
 * head (the stash) goes first. */
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
    finish(h, 1);
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

/* The core's join: the work connection for the head that waited came. */
static int http_join(visitor *v, session *s, np_conn *work, const char *rest, size_t rest_len) {
  hconn *h = v->impl;

  work->data = h;
  h->refs++;
  if (h->visitor_eof) {
    /* it left while it waited (the server stops) */
    np__meter_end(&v->meter);
    np__conn_close(work, on_conn_closed);
    h->state = H_HEAD;
    finish(h, 1);
    return 0;
  }
  h->refs++;
  h->work = work;
  work->borrow = 1; /* read_cb copies what it keeps */
  h->meter = v->meter;
  h->since = v->since;
  h->in = h->out = 0;
  h->end = NULL;
  np__strlcpy(h->px_name, v->px->name, sizeof(h->px_name));
  memset(&h->t, 0, sizeof(h->t));
  h->t.id = v->id;
  h->t.abort = abort_run;
  h->t.note = note_end;
  np__session_track(s, &h->t);
  http_parser_init(&h->resp, HTTP_RESPONSE);
  h->resp.data = h;
  h->resp_done = 0;
  h->pending = h->first = 0;
  h->work_eof = 0;
  h->state = H_HEAD;
  if (forward_head(h) != 0)
    finish(h, 1);
  if (rest_len > 0 && h->state != H_CLOSING && h->state != H_JOINED) {
    uv_buf_t b = uv_buf_init((char *)rest, (unsigned)rest_len);
    on_work_read(work, (ssize_t)rest_len, &b);
  }
  pump(h);
  unref(h);
  return 0;
}

static void http_drop(visitor *v, const char *end) {
  hconn *h = v->impl;
  np__access_log(v->srv, v->px->name, &v->addr, v->since, 0, 0, end);
  h->px = NULL;
  h->state = H_HEAD;
  if (h->visitor_eof) {
    finish(h, 1);
    return;
  }
  answer(h, 502, "Bad Gateway", NULL,
         strcmp(end, "local_failed") == 0
             ? "The service behind this host refused the connection."
             : "The client that serves this host did not answer in time.");
}

/* ---- the listener ------------------------------------------------------------------------------
 */

static void on_visitor(np__listener *l, np_conn *c) {
  vhost *vh = np__listener_data(l);
  struct np_server *srv = vh->srv;
  struct sockaddr_storage ss;
  hconn *h = calloc(1, sizeof(*h));
  uv_loop_t *loop;
  int fd;

  if (h == NULL) {
    np__conn_abort(c, NULL);
    return;
  }
  h->vh = vh;
  h->vc = c;
  c->data = h;
  h->refs = 1; /* the visitor's conn */
  h->state = H_HEAD;
  np__http_head_init(&h->head);
  if (np__conn_peer_addr(c, &ss) == 0)
    np__addr_copy(&h->addr, (struct sockaddr *)&ss);
  if (np__conn_local_addr(c, &ss) == 0)
    np__addr_copy(&h->to, (struct sockaddr *)&ss);
  /* Its X-Forwarded-* are believed when it came through a load balancer of proxy_protocol_from */
  if ((fd = np__conn_tcp_fd(c, &loop)) >= 0) {
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && srv->pp_from.n > 0 &&
        np__cidrs_allow(&srv->pp_from, (struct sockaddr *)&ss))
      h->trusted = 1;
  }
  h->deadline = uv_now(srv->loop) + HEAD_TIMEOUT_MS;
  srv->refs++;
  np__vhost_ref(vh);
  NP_DLIST_PUSH(CONNS(vh), h, prev, next);
  pump(h);
}

static void on_tick(np__vhost *vh, uint64_t now) {
  hconn *next;
  for (hconn *h = CONNS(vh); h != NULL; h = next) {
    next = h->next;
    /* no head in time, or idle that long after the last response */
    if (h->deadline != 0 && now >= h->deadline && h->state == H_HEAD && h->pending == 0)
      finish(h, 0);
  }
}

static int server_start(struct np_server *srv, const struct sockaddr *control) {
  vhost *vh;
  int r;

  (void)control;
  if (srv->cfg.vhost_http_port == 0 || !native(srv))
    return 0;
  if ((r = np__vhost_open(srv, srv->cfg.vhost_http_port, "vhost_http_port", on_visitor, on_tick,
                          &vh)) != 0)
    return r;
  srv->type_data[NP_PROXY_HTTP] = vh;
  np__log(&srv->log, NP_LOG_INFO, "HTTP services on port %d (vhost_http_port)%s%s", vh->port,
          srv->cfg.subdomain_host[0] ? ", subdomains of " : "", srv->cfg.subdomain_host);
  return 0;
}

static void server_stop(struct np_server *srv) {
  vhost *vh = vhost_of(srv);
  hconn *next;

  if (vh == NULL)
    return;
  srv->type_data[NP_PROXY_HTTP] = NULL;
  for (hconn *h = CONNS(vh); h != NULL; h = next) {
    next = h->next;
    if (h->state == H_JOINED)
      np__join_abort(h->join);
    else
      finish(h, 1);
  }
  np__vhost_close(vh);
}

/* ---- proxies -----------------------------------------------------------------------------------
 */

static int http_open(proxy *px, const struct sockaddr *addr) {
  vhost *vh = vhost_of(px->srv);
  const char *user = NULL, *pass = NULL;
  hproxy *hp;
  int r;

  (void)addr;
  if (vh == NULL) {
    if (px->why != NULL)
      snprintf(px->why, px->why_len, "this server has no vhost_http_port for type = http");
    return NP_EUNSUPPORTED;
  }
  if ((hp = calloc(1, sizeof(*hp))) == NULL)
    return UV_ENOMEM;
  for (size_t i = 0; i < px->s->n_opts; i++) {
    const np__proxy_opt *o = &px->s->opts[i];
    if (strcmp(o->name, px->name) != 0)
      continue;
    if (strcmp(o->key, "host_header_rewrite") == 0)
      np__strlcpy(hp->host_rewrite, o->value, sizeof(hp->host_rewrite));
    else if (strcmp(o->key, "http_user") == 0)
      user = o->value;
    else if (strcmp(o->key, "http_password") == 0)
      pass = o->value;
  }
  r = 0;
  if (user != NULL && pass != NULL) {
    /* base64(user:pass), compared with what follows "Basic " in the visitor's Authorization */
    size_t n = strlen(user) + 1 + strlen(pass);
    char *plain = malloc(n + 1);
    if (plain == NULL || (hp->auth = malloc(4 * ((n + 2) / 3) + 1)) == NULL)
      r = UV_ENOMEM;
    else {
      snprintf(plain, n + 1, "%s:%s", user, pass);
      EVP_EncodeBlock((unsigned char *)hp->auth, (unsigned char *)plain, (int)n);
    }
    if (plain != NULL)
      OPENSSL_cleanse(plain, n);
    free(plain);
  }
  if (r == 0 && (r = np__vhost_claim(vh, px, "http", 1)) == 0) {
    px->impl = hp;
    px->port = vh->port;
    return 0;
  }
  free(hp->auth);
  free(hp);
  return r;
}

static void http_close(proxy *px) {
  vhost *vh = vhost_of(px->srv);
  hproxy *hp = px->impl;

  if (vh != NULL)
    np__vhost_release(vh, px); /* 502 for its names until somebody claims them again */
  if (hp != NULL) {
    free(hp->auth);
    free(hp);
  }
  np__proxy_closed(px);
}

const np__proxy_type np__proxy_http = {
    .name = "http",
    .kind = NP_PROXY_HTTP,
    .server_start = server_start,
    .server_stop = server_stop,
    .open = http_open,
    .close = http_close,
    .join = http_join,
    .drop = http_drop,
};
