#include "chan.h"

#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Control messages are small (NP_CODEC_MAX_ENCODED), and every connection to the control port has
 * a chan before it has said a word: keep its read buffer small. */
#define RBUF_LEN 1024

/* Bytes read from the conn before the chan was made (a connection moved from another loop: what a
 * chan there had read past the last message), decoded before the conn is read. Fed from a timer so
 * that on_msg never runs inside np__chan_start. Its own allocation: the timer's close may end
 * after the chan is freed. */
typedef struct pre_feed {
  uv_timer_t timer;
  np__chan *ch; /* NULL once the chan no longer wants it */
  size_t len;
  char bytes[];
} pre_feed;

struct np__chan {
  np_conn *conn;
  const np_codec_ops *codec;
  void *dec;
  np__chan_msg_cb on_msg;
  np__chan_err_cb on_error;
  np__chan_close_cb close_cb;
  void *data;
  size_t queued, max_queued;
  const char *rest; /* valid inside on_msg */
  size_t rest_len;
  int in_read;
  unsigned failed : 1, closing : 1, detached : 1;
  pre_feed *pre; /* until fed */
  char rbuf[RBUF_LEN];
};

typedef struct out_msg {
  np_conn_write req;
  np__chan *ch;
  size_t len;
  char bytes[];
} out_msg;

int np__chan_new(np_conn *conn, const np_codec_ops *codec, size_t max_frame, size_t max_queued,
                 np__chan **out) {
  np__chan *ch = calloc(1, sizeof(*ch));
  int r;

  if (ch == NULL)
    return UV_ENOMEM;
  if ((r = codec->decoder_new(max_frame, &ch->dec)) != 0) {
    free(ch);
    return r;
  }
  ch->conn = conn;
  ch->codec = codec;
  ch->max_queued = max_queued;
  conn->data = ch;
  *out = ch;
  return 0;
}

void *np__chan_data(np__chan *ch) {
  return ch->data;
}

static void fail(np__chan *ch, int err) {
  if (ch->failed || ch->closing)
    return;
  ch->failed = 1;
  ch->on_error(ch, err);
}

static void on_alloc(np_conn *c, size_t suggested, uv_buf_t *buf) {
  np__chan *ch = c->data;
  (void)suggested;
  *buf = uv_buf_init(ch->rbuf, sizeof(ch->rbuf));
}

static void on_pre_closed(uv_handle_t *h) {
  free(h->data);
}

static void pre_end(np__chan *ch) {
  if (ch->pre == NULL)
    return;
  ch->pre->ch = NULL;
  uv_close((uv_handle_t *)&ch->pre->timer, on_pre_closed);
  ch->pre = NULL;
}

static void free_chan(np__chan *ch) {
  pre_end(ch);
  ch->codec->decoder_free(ch->dec);
  free(ch);
}

/* Decode len bytes into messages. 0 when every byte was taken; otherwise the chan failed, closes,
 * or was detached (and then it is freed here when no other call is inside it). */
static int feed(np__chan *ch, const char *bytes, size_t len) {
  np_conn *c = ch->conn;
  size_t off = 0;
  int more;

  ch->in_read++;
  while (off < len && !ch->failed && !ch->closing && !ch->detached) {
    np_msg msg;
    size_t used;
    int r = ch->codec->decode(ch->dec, bytes + off, len - off, &used, &msg);
    off += used;
    if (r < 0) {
      np__conn_read_stop(c);
      fail(ch, r);
      break;
    }
    if (r == 1) {
      ch->rest = bytes + off;
      ch->rest_len = len - off;
      ch->on_msg(ch, &msg);
    }
  }
  ch->in_read--;
  more = ch->failed || ch->closing || ch->detached;
  if (ch->detached && ch->in_read == 0)
    free_chan(ch);
  return more ? NP_ESTATE : 0;
}

static void on_read(np_conn *c, ssize_t nread, const uv_buf_t *buf) {
  np__chan *ch = c->data;

  if (nread < 0) {
    np__conn_read_stop(c);
    fail(ch, (int)nread);
    return;
  }
  feed(ch, buf->base, (size_t)nread);
}

static void on_pre(uv_timer_t *t) {
  pre_feed *p = t->data;
  np__chan *ch = p->ch;
  int r;

  /* The bytes stay where they are until the timer's close frees them: a message's rest points
   * into them during on_msg. */
  pre_end(ch);
  if (feed(ch, p->bytes, p->len) == 0 &&
      (r = np__conn_read_start(ch->conn, on_alloc, on_read)) != 0)
    fail(ch, r);
}

int np__chan_new_pre(uv_loop_t *loop, np_conn *conn, const np_codec_ops *codec, size_t max_frame,
                     size_t max_queued, const char *pre, size_t pre_len, np__chan **out) {
  pre_feed *p = NULL;
  np__chan *ch;
  int r;

  if (pre_len > 0) {
    if ((p = malloc(sizeof(*p) + pre_len)) == NULL)
      return UV_ENOMEM;
    memcpy(p->bytes, pre, pre_len);
    p->len = pre_len;
  }
  if ((r = np__chan_new(conn, codec, max_frame, max_queued, &ch)) != 0) {
    free(p);
    return r;
  }
  if (p != NULL) {
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->ch = ch;
    ch->pre = p;
  }
  *out = ch;
  return 0;
}

int np__chan_start(np__chan *ch, np__chan_msg_cb on_msg, np__chan_err_cb on_error, void *data) {
  ch->on_msg = on_msg;
  ch->on_error = on_error;
  ch->data = data;
  if (ch->pre != NULL)
    return uv_timer_start(&ch->pre->timer, on_pre, 0, 0);
  return np__conn_read_start(ch->conn, on_alloc, on_read);
}

static void on_write(np_conn_write *req, int status) {
  out_msg *m = NP_CONTAINER_OF(req, out_msg, req);
  np__chan *ch = m->ch;

  ch->queued -= m->len;
  free(m);
  if (status != 0 && status != UV_ECANCELED)
    fail(ch, status);
}

/* Encode msg into a fresh write request on c (at most limit bytes when limit > 0); cb frees it.
 * Returns the encoded length or an error. */
static int write_msg(np_conn *c, const np_codec_ops *codec, const np_msg *msg, np__chan *ch,
                     size_t limit, np_conn_write_cb cb) {
  char tmp[NP_CODEC_MAX_ENCODED];
  out_msg *m;
  uv_buf_t b;
  int n, r;

  if ((n = codec->encode(msg, tmp, sizeof(tmp))) < 0)
    return n;
  if (limit > 0 && (size_t)n > limit)
    return NP_ELIMIT;
  if ((m = malloc(sizeof(*m) + (size_t)n)) == NULL)
    return UV_ENOMEM;
  memcpy(m->bytes, tmp, (size_t)n);
  m->ch = ch;
  m->len = (size_t)n;
  b = uv_buf_init(m->bytes, (unsigned)n);
  if ((r = np__conn_write(c, &m->req, &b, 1, cb)) != 0) {
    free(m);
    return r;
  }
  return n;
}

int np__chan_send(np__chan *ch, const np_msg *msg) {
  size_t room = ch->max_queued > ch->queued ? ch->max_queued - ch->queued : 0;
  int n;

  if (!np__chan_is_open(ch))
    return NP_ESTATE;
  if (ch->max_queued != 0 && room == 0)
    return NP_ELIMIT;
  n = write_msg(ch->conn, ch->codec, msg, ch, ch->max_queued != 0 ? room : 0, on_write);
  if (n < 0)
    return n;
  ch->queued += (size_t)n;
  return 0;
}

int np__chan_is_open(const np__chan *ch) {
  return !ch->closing && !ch->failed && !ch->detached;
}

static void on_standalone_written(np_conn_write *req, int status) {
  (void)status;
  free(NP_CONTAINER_OF(req, out_msg, req));
}

int np__conn_send_msg(np_conn *c, const np_codec_ops *codec, const np_msg *msg) {
  int n = write_msg(c, codec, msg, NULL, 0, on_standalone_written);
  return n < 0 ? n : 0;
}

np_conn *np__chan_detach(np__chan *ch, const char **rest, size_t *rest_len) {
  np_conn *c = ch->conn;

  np__conn_read_stop(c);
  ch->detached = 1;
  *rest = ch->rest;
  *rest_len = ch->rest_len;
  c->data = NULL;
  return c;
}

np_conn *np__chan_release(np__chan *ch) {
  np_conn *c = ch->conn;

  np__conn_read_stop(c);
  c->data = NULL;
  ch->detached = 1;
  if (ch->in_read == 0)
    free_chan(ch);
  return c;
}

np_conn *np__chan_conn(np__chan *ch) {
  return ch->conn;
}

static void on_close(np_conn *c) {
  np__chan *ch = c->data;
  if (ch->close_cb != NULL)
    ch->close_cb(ch);
  free_chan(ch);
}

void np__chan_close(np__chan *ch, np__chan_close_cb cb) {
  if (ch->closing)
    return;
  ch->closing = 1;
  ch->close_cb = cb;
  np__conn_close(ch->conn, on_close);
}

static void on_flushed(np_conn *c, int status) {
  (void)status;
  np__conn_close(c, on_close);
}

void np__chan_close_flush(np__chan *ch, np__chan_close_cb cb) {
  if (ch->closing)
    return;
  ch->closing = 1;
  ch->close_cb = cb;
  np__conn_read_stop(ch->conn);
  /* The shutdown completes once every queued write has been handed to the kernel. */
  if (np__conn_shutdown(ch->conn, on_flushed) != 0)
    np__conn_close(ch->conn, on_close);
}

void np__chan_peer_str(np__chan *ch, char *buf, size_t len) {
  np__conn_peer_str(ch->conn, buf, len);
}
