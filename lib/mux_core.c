/* The yamux state machine: the session, its streams' lifecycle, reading and window accounting.
 * The sending side (queued writes, the direct path, building and completing the batch) is
 * mux_core_send.c; the two share the struct layouts through mux_core_int.h, and mux_core.c calls
 * nothing there. Reading: frames are parsed straight out of the caller's buffer and handed to the
 * stream's reader, or buffered (never more than the window we granted) while it does not read.
 * Windows: a stream's receive window doubles (up to max_window) whenever the reader consumes half
 * of it within two round trips, i.e. when the window, not the reader, limits the sender, and only
 * as far as the session's budget (and the server's, opts.shared) allows: that bounds what all the
 * streams of a session can make us hold, since credit once granted cannot be taken back. When the
 * budget runs short, a stream whose reader fell behind (bytes were buffered) gives its growth
 * back, halving its window at each update, by granting less than was consumed; it grows again once
 * it reads as fast as it gets. */
#include "mux_core_int.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/lhash.h>

#include "natproxy/error.h"

#define CTRL_MAX      4096 /* queued control frames: more means the peer does not read */
#define PING_EVERY_NS (5 * 1000000000ull)
/* While windows are updated (data flows), the round trip is sampled again once the last ping was
 * answered and this long has passed: the first sample is taken on an idle connection, and the
 * round trip under load, with socket buffers full, can be a hundred times longer. Judged against
 * the idle sample, a stream that shares the connection never reads half its window "within two
 * round trips", and its window never grows. */
#define PING_LOADED_MIN_NS (1000000ull)

struct np__mux_rq {
  np__mux_rq *next;
  size_t len, off;
  char bytes[];
};

/* ---- small helpers ------------------------------------------------------------------------ */

static unsigned long stream_hash(const void *p) {
  uint64_t v = ((const np__mux_cstream *)p)->id;
  v *= 0x9e3779b97f4a7c15ull;
  return (unsigned long)(v >> 17);
}

static int stream_cmp(const void *a, const void *b) {
  uint32_t x = ((const np__mux_cstream *)a)->id, y = ((const np__mux_cstream *)b)->id;
  return x < y ? -1 : x > y;
}

np__mux_cstream *np__mux_core_find(const np__mux_core *c, uint32_t id) {
  np__mux_cstream key;
  key.id = id;
  return OPENSSL_LH_retrieve(c->by_id, &key);
}

static void untable(np__mux_core *c, np__mux_cstream *s) {
  if (s->in_table) {
    OPENSSL_LH_delete(c->by_id, s);
    s->in_table = 0;
  }
}

static int ctrl_push(np__mux_core *c, uint8_t type, uint16_t flags, uint32_t id, uint32_t len) {
  if (c->dead)
    return NP_ECLOSED;
  if (c->nctrl == c->ctrl_cap) {
    size_t cap = c->ctrl_cap ? c->ctrl_cap * 2 : 16;
    np__mux_hdr *n;
    if (c->nctrl >= CTRL_MAX) {
      /* The peer keeps asking (pings, opens) and does not read our answers. */
      np__mux_core_fail(c, NP_ELIMIT, NP_MUX_GOAWAY_INTERNAL);
      return NP_ELIMIT;
    }
    if ((n = realloc(c->ctrl, cap * sizeof(*n))) == NULL) {
      np__mux_core_fail(c, NP_MUX_ENOMEM, NP_MUX_GOAWAY_INTERNAL);
      return NP_MUX_ENOMEM;
    }
    c->ctrl = n;
    c->ctrl_cap = cap;
  }
  c->ctrl[c->nctrl++] = (np__mux_hdr){
      .version = NP_MUX_VERSION, .type = type, .flags = flags, .stream = id, .length = len};
  return 0;
}

static void send_ping(np__mux_core *c, uint64_t now) {
  c->ping_id++;
  c->ping_sent_ns = now;
  c->ping_out = 1;
  ctrl_push(c, NP_MUX_PING, NP_MUX_SYN, 0, c->ping_id);
}

/* ---- the window budget -------------------------------------------------------------------- */

static uint64_t room_of(const np__mux_budget *b) {
  return b->grown < b->limit ? b->limit - b->grown : 0;
}

/* Grow by up to want: returns what the session's budget and the shared one allow, taken. */
static uint32_t budget_take(np__mux_core *c, uint32_t want) {
  uint64_t room = room_of(&c->own);
  if (c->o.shared != NULL && room_of(c->o.shared) < room)
    room = room_of(c->o.shared);
  if (room < want)
    want = (uint32_t)room;
  c->own.grown += want;
  if (c->o.shared != NULL)
    c->o.shared->grown += want;
  return want;
}

/* Too little is left for one more stream to grow to max_window: growth held by readers that fall
 * behind is better given back. While there is room, shrinking would only slow a reader that falls
 * behind now and then (a relay whose socket is full for a moment) and help nobody. */
static int budget_tight(const np__mux_core *c) {
  uint64_t want = c->o.max_window - NP_MUX_INITIAL_WINDOW;
  return room_of(&c->own) < want || (c->o.shared != NULL && room_of(c->o.shared) < want);
}

static void budget_put(np__mux_core *c, uint32_t n) {
  c->own.grown -= n;
  if (c->o.shared != NULL)
    c->o.shared->grown -= n;
}

/* n bytes more (or fewer) are buffered for readers. */
static void buffered_add(np__mux_core *c, int64_t n) {
  c->own.buffered += (uint64_t)n;
  if (c->o.shared != NULL)
    c->o.shared->buffered += (uint64_t)n;
}

/* s takes no more data (reset, or leaving the session): its growth returns to the budget. Its
 * window no longer matters, so it counts as the initial one, and a second call gives nothing. */
static void give_back(np__mux_core *c, np__mux_cstream *s) {
  budget_put(c, s->recv_target - NP_MUX_INITIAL_WINDOW);
  s->recv_target = NP_MUX_INITIAL_WINDOW;
}

/* ---- streams ------------------------------------------------------------------------------ */

static np__mux_cstream *stream_new(np__mux_core *c, uint32_t id, uint64_t now) {
  np__mux_cstream *s = calloc(1, sizeof(*s) + c->o.stream_extra);
  int errors;

  if (s == NULL)
    return NULL;
  s->core = c;
  s->id = id;
  s->send_window = NP_MUX_INITIAL_WINDOW;
  s->recv_target = s->recv_avail = NP_MUX_INITIAL_WINDOW;
  s->epoch_ns = now;
  errors = OPENSSL_LH_error(c->by_id);
  OPENSSL_LH_insert(c->by_id, s);
  if (OPENSSL_LH_error(c->by_id) != errors) {
    free(s);
    return NULL;
  }
  s->in_table = 1;
  s->prev = NULL;
  s->next = c->streams;
  if (c->streams != NULL)
    c->streams->prev = s;
  c->streams = s;
  c->nstreams++;
  return s;
}

/* Writes not yet framed are failed with s->err (the owner takes them with _take_failed). */
static void drop_writes(np__mux_core *c, np__mux_cstream *s) {
  if (s->whead == NULL)
    return;
  s->wtail->next = s->failed;
  s->failed = s->whead;
  s->whead = s->wtail = NULL;
  s->wbytes = 0;
  ready_del(c, s);
  c->cb.stream_event(c, s);
}

static void drop_rbufs(np__mux_cstream *s) {
  buffered_add(s->core, -(int64_t)s->rbytes);
  while (s->rhead != NULL) {
    np__mux_rq *r = s->rhead;
    s->rhead = r->next;
    free(r);
  }
  s->rtail = NULL;
  s->rbytes = 0;
}

void np__mux_core_reset(np__mux_core *c, np__mux_cstream *s, int err) {
  if (s->err == 0)
    s->err = err;
  untable(c, s);
  drop_rbufs(s);
  give_back(c, s);
  drop_writes(c, s);
  ready_del(c, s);
  c->cb.stream_event(c, s);
}

static void window_update(np__mux_core *c, np__mux_cstream *s, uint64_t now) {
  uint32_t delta = s->unacked, t = s->recv_target;

  if (s->lagging && budget_tight(c)) {
    /* The reader, not the window, holds the sender back: a larger window would only be held here,
     * and other streams may need the budget. Halve it (not below the initial one) out of what was
     * consumed, so the credit never goes negative, and hand the growth to the streams that read. */
    uint32_t shrink = t - NP_MUX_INITIAL_WINDOW < t / 2 ? t - NP_MUX_INITIAL_WINDOW : t / 2;
    if (shrink > delta)
      shrink = delta;
    delta -= shrink;
    s->recv_target -= shrink;
    budget_put(c, shrink);
  } else if (!s->lagging && c->srtt_ns > 0 && now - s->epoch_ns < 2 * c->srtt_ns &&
             t < c->o.max_window) {
    /* The reader took half the window in under two round trips: the window is what limits the
     * sender, so double it, as far as the budgets allow. */
    uint32_t grow = budget_take(c, t < c->o.max_window - t ? t : c->o.max_window - t);
    delta += grow;
    s->recv_target += grow;
  }
  s->lagging = 0;
  s->unacked = 0;
  s->recv_avail += delta;
  s->epoch_ns = now;
  if (delta == 0)
    return; /* all of it went to shrinking: nothing to say */
  if (ctrl_push(c, NP_MUX_WINDOW_UPDATE, 0, s->id, delta) == 0) {
    /* Every 8 round trips (at least PING_LOADED_MIN_NS) once answered; a peer that does not
     * answer is asked again only every PING_EVERY_NS. */
    uint64_t every = c->ping_out || 8 * c->srtt_ns > PING_EVERY_NS ? PING_EVERY_NS : 8 * c->srtt_ns;
    if (every < PING_LOADED_MIN_NS)
      every = PING_LOADED_MIN_NS;
    if (now - c->ping_sent_ns > every)
      send_ping(c, now);
    want_write(c);
  }
}

void np__mux_core_consumed(np__mux_core *c, np__mux_cstream *s, size_t n, uint64_t now) {
  s->unacked += (uint32_t)n;
  if (s->unacked >= s->recv_target / 2 && !s->fin_rcvd && s->err == 0 && !s->closing)
    window_update(c, s, now);
}

static int buffer_bytes(np__mux_core *c, np__mux_cstream *s, const char *data, size_t len) {
  np__mux_rq *r = malloc(sizeof(*r) + len);
  if (r == NULL)
    return NP_MUX_ENOMEM;
  memcpy(r->bytes, data, len);
  r->len = len;
  r->off = 0;
  r->next = NULL;
  if (s->rtail != NULL)
    s->rtail->next = r;
  else
    s->rhead = r;
  s->rtail = r;
  s->rbytes += len;
  s->lagging = 1;
  buffered_add(c, (int64_t)len);
  return 0;
}

const char *np__mux_core_peek(const np__mux_cstream *s, size_t *len) {
  /* A closed or reset stream hands out nothing more, whatever it still holds. */
  if (s->rhead == NULL || s->closing || s->err != 0) {
    *len = 0;
    return NULL;
  }
  *len = s->rhead->len - s->rhead->off;
  return s->rhead->bytes + s->rhead->off;
}

void np__mux_core_advance(np__mux_cstream *s, size_t n) {
  while (n > 0 && s->rhead != NULL) {
    np__mux_rq *r = s->rhead;
    size_t take = r->len - r->off < n ? r->len - r->off : n;
    r->off += take;
    s->rbytes -= take;
    buffered_add(s->core, -(int64_t)take);
    s->lagging = 1;
    n -= take;
    if (r->off < r->len)
      break;
    s->rhead = r->next;
    if (s->rhead == NULL)
      s->rtail = NULL;
    free(r);
  }
}

void np__mux_core_stream_unlink(np__mux_core *c, np__mux_cstream *s) {
  /* A DATA frame for it may be half read: the rest is dropped, as for any closed stream. */
  if (c->cur == s)
    c->cur = NULL;
  untable(c, s);
  ready_del(c, s);
  drop_rbufs(s);
  give_back(c, s);
  if (s->prev != NULL)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next != NULL)
    s->next->prev = s->prev;
  c->nstreams--;
}

void np__mux_core_stream_free(np__mux_cstream *s) {
  while (s->failed != NULL) {
    np__mux_wq *w = s->failed;
    s->failed = w->next;
    free(w);
  }
  while (s->whead != NULL) {
    np__mux_wq *w = s->whead;
    s->whead = w->next;
    free(w);
  }
  free(s);
}

void *np__mux_core_take_failed(np__mux_cstream *s) {
  np__mux_wq *w = s->failed;
  void *token;

  if (w == NULL)
    return NULL;
  s->failed = w->next;
  token = w->token;
  free(w);
  return token;
}

int np__mux_core_can_free(const np__mux_cstream *s) {
  return s->closing && s->inflight == 0 && s->failed == NULL;
}
/* ---- what the owner of a stream does ------------------------------------------------------ */

void np__mux_core_close(np__mux_core *c, np__mux_cstream *s, int reset) {
  if (s->closing)
    return;
  s->closing = 1;
  if (s->err == 0)
    s->err = NP_MUX_ECANCELED;
  drop_writes(c, s);
  /* A stream that ended both ways needs no goodbye. One the peer finished gets our FIN; otherwise
   * the peer may still be sending and we will not read it: reset. */
  if (s->in_table && !(s->fin_sent && s->fin_rcvd) && !c->dead) {
    if (!reset && s->fin_rcvd)
      ctrl_push(c, NP_MUX_WINDOW_UPDATE, NP_MUX_FIN, s->id, 0);
    else
      ctrl_push(c, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, s->id, 0);
    want_write(c);
  }
  untable(c, s);
  ready_del(c, s);
  c->cb.stream_event(c, s);
}

int np__mux_core_open(np__mux_core *c, uint64_t now, np__mux_cstream **out) {
  np__mux_cstream *s;

  if (c->dead || c->closing || c->remote_goaway)
    return NP_ECLOSED;
  if (c->next_id > UINT32_MAX - 2)
    return NP_ELIMIT; /* ids are never reused (spec) */
  if ((s = stream_new(c, c->next_id, now)) == NULL)
    return NP_MUX_ENOMEM;
  c->next_id += 2;
  ctrl_push(c, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, s->id, 0);
  want_write(c);
  *out = s;
  return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void on_fin_or_rst(np__mux_core *c, np__mux_cstream *s, uint16_t flags) {
  if (flags & NP_MUX_RST) {
    np__mux_core_reset(c, s, NP_MUX_ECONNRESET);
    return;
  }
  if (flags & NP_MUX_FIN) {
    s->fin_rcvd = 1;
    if (s->fin_sent)
      untable(c, s); /* both ways done: the id is free */
    c->cb.fin(c, s);
  }
}

/* A SYN: a new stream of the peer's, or an RST when we take no more. 0 or NP_EPROTO. */
static int on_syn(np__mux_core *c, const np__mux_hdr *h, uint64_t now, np__mux_cstream **out) {
  int theirs = (h->stream & 1) != (c->o.client ? 1u : 0u);
  np__mux_cstream *s = NULL;

  *out = NULL;
  if (!theirs || np__mux_core_find(c, h->stream) != NULL)
    return NP_EPROTO;
  if (c->closing || c->nstreams >= c->o.max_streams ||
      (s = stream_new(c, h->stream, now)) == NULL) {
    ctrl_push(c, NP_MUX_WINDOW_UPDATE, NP_MUX_RST, h->stream, 0);
    want_write(c);
    return 0;
  }
  ctrl_push(c, NP_MUX_WINDOW_UPDATE, NP_MUX_ACK, s->id, 0);
  want_write(c);
  c->cb.accept(c, s);
  if (!c->dead)
    *out = np__mux_core_find(c, h->stream); /* the callee may have closed it already */
  return 0;
}

/* A frame's header. Returns 0 or a protocol error. */
static int on_frame(np__mux_core *c, const np__mux_hdr *h, uint64_t now) {
  np__mux_cstream *s = NULL;
  int r;

  if (h->type == NP_MUX_PING) {
    if (h->flags & NP_MUX_SYN) {
      if (ctrl_push(c, NP_MUX_PING, NP_MUX_ACK, 0, h->length) == 0)
        want_write(c);
      return 0;
    }
    if ((h->flags & NP_MUX_ACK) && h->length == c->ping_id && c->ping_sent_ns != 0) {
      uint64_t sample = now - c->ping_sent_ns;
      c->srtt_ns = c->srtt_ns == 0 ? sample : (7 * c->srtt_ns + sample) / 8;
      c->ping_out = 0;
    }
    return 0;
  }
  if (h->type == NP_MUX_GO_AWAY) {
    if (!c->remote_goaway)
      c->peer_goaway = h->length;
    c->remote_goaway = 1;
    if (h->length == NP_MUX_GOAWAY_TLS && c->o.client)
      np__mux_core_fail(c, NP_ETLSREQUIRED, -1); /* a TLS server saw our plaintext */
    return 0;
  }
  if (h->flags & NP_MUX_SYN) {
    if ((r = on_syn(c, h, now, &s)) != 0 || c->dead)
      return r;
  } else {
    s = np__mux_core_find(c, h->stream);
  }
  if (h->type == NP_MUX_WINDOW_UPDATE) {
    if (s == NULL)
      return 0; /* closed here; the peer did not know yet */
    if ((uint64_t)s->send_window + h->length > UINT32_MAX)
      return NP_EPROTO;
    s->send_window += h->length;
    if (sendable(s))
      ready_add(c, s);
    on_fin_or_rst(c, s, h->flags);
    want_write(c);
    return 0;
  }
  /* Data: checked against the window we granted; bytes for a stream closed here are dropped. */
  if (s != NULL && (s->fin_rcvd || h->length > s->recv_avail))
    return NP_EPROTO;
  if (s != NULL)
    s->recv_avail -= h->length;
  c->cur = s;
  c->cur_fin = h->flags & (NP_MUX_FIN | NP_MUX_RST);
  if (h->length == 0 && s != NULL) {
    on_fin_or_rst(c, s, c->cur_fin);
    c->cur = NULL;
  }
  return 0;
}

static void on_data(np__mux_core *c, const char *data, size_t len, int last) {
  np__mux_cstream *s = c->cur;

  if (s != NULL && !s->closing && s->err == 0) {
    size_t done = s->rhead == NULL ? c->cb.data(c, s, data, len) : 0;
    /* The reader may have stopped, closed the stream or failed meanwhile. */
    if (done < len && !s->closing && s->err == 0 &&
        buffer_bytes(c, s, data + done, len - done) != 0)
      np__mux_core_reset(c, s, NP_MUX_ENOMEM);
  }
  if (last) {
    if (c->cur != NULL && !c->cur->closing)
      on_fin_or_rst(c, c->cur, c->cur_fin);
    c->cur = NULL;
  }
}

int np__mux_core_feed(np__mux_core *c, const char *buf, size_t len, uint64_t now) {
  size_t off = 0, used;
  np__mux_event ev;
  int r;

  while (off < len && !c->dead) {
    r = np__mux_parse(&c->parser, buf + off, len - off, &used, &ev);
    off += used;
    if (r == 1 && ev.type == NP_MUX_EV_FRAME) {
      r = on_frame(c, &ev.hdr, now);
    } else if (r == 1) {
      on_data(c, ev.data, ev.len, c->parser.body_left == 0);
      r = 0;
    }
    if (r < 0)
      np__mux_core_fail(c, r, NP_MUX_GOAWAY_PROTO);
  }
  return c->dead;
}

size_t np__mux_core_read_hint(const np__mux_core *c, size_t body_max) {
  if (c->parser.body_left > 0)
    return c->parser.body_left;
  return NP_MUX_HDR_LEN - c->parser.have + body_max;
}

/* ---- the session ------------------------------------------------------------------------- */

void np__mux_core_fail(np__mux_core *c, int err, int goaway_code) {
  unsigned char h[NP_MUX_HDR_LEN];
  int offer = goaway_code >= 0 && !c->busy && c->raw == NULL;

  if (c->dead)
    return;
  if (offer)
    np__mux_hdr_encode(&(np__mux_hdr){.version = NP_MUX_VERSION,
                                      .type = NP_MUX_GO_AWAY,
                                      .length = (uint32_t)goaway_code},
                       h);
  c->dead = err;
  c->cb.dead(c, err, offer ? h : NULL);
  for (np__mux_cstream *s = c->streams; s != NULL; s = s->next) {
    if (!s->closing)
      np__mux_core_reset(c, s, err);
  }
}

void np__mux_core_goaway(np__mux_core *c) {
  if (c->dead || c->closing)
    return;
  c->closing = 1;
  c->goaway_pending = 1;
  want_write(c);
}

int np__mux_core_new(const np__mux_core_opts *opts, const np__mux_core_cbs *cbs, void *data,
                     uint64_t now, np__mux_core **out) {
  np__mux_core *c;

  if ((c = calloc(1, sizeof(*c))) == NULL)
    return NP_MUX_ENOMEM;
  c->o = *opts;
  if (c->o.max_window < NP_MUX_INITIAL_WINDOW)
    c->o.max_window = NP_MUX_INITIAL_WINDOW;
  if (c->o.max_streams == 0)
    c->o.max_streams = 1;
  c->own.limit = c->o.session_window != 0 ? c->o.session_window : NP_MUX_DEFAULT_SESSION_WINDOW;
  c->cb = *cbs;
  c->data = data;
  c->next_id = c->o.client ? 1 : 2;
  c->peer_goaway = -1;
  np__mux_parser_init(&c->parser, c->o.max_window);
  /* Room for the first PING now: a constructor never calls back, so it cannot fail later. */
  c->ctrl_cap = 16;
  if ((c->ctrl = malloc(c->ctrl_cap * sizeof(*c->ctrl))) == NULL ||
      (c->by_id = OPENSSL_LH_new(stream_hash, stream_cmp)) == NULL) {
    free(c->ctrl);
    free(c);
    return NP_MUX_ENOMEM;
  }
  send_ping(c, now);
  *out = c;
  return 0;
}

void np__mux_core_free(np__mux_core *c) {
  if (c == NULL)
    return;
  while (c->streams != NULL) {
    np__mux_cstream *s = c->streams;
    np__mux_core_stream_unlink(c, s);
    np__mux_core_stream_free(s);
  }
  for (np__mux_wq *w = c->b.done; w != NULL;) {
    np__mux_wq *n = w->next;
    free(w);
    w = n;
  }
  free(c->b.raw);
  OPENSSL_LH_free(c->by_id);
  free(c->ctrl);
  free(c->raw);
  free(c);
}

void *np__mux_core_data(const np__mux_core *c) {
  return c->data;
}

int np__mux_core_dead(const np__mux_core *c) {
  return c->dead;
}

int np__mux_core_closing(const np__mux_core *c) {
  return c->closing;
}

size_t np__mux_core_stream_count(const np__mux_core *c) {
  return c->nstreams;
}

np__mux_cstream *np__mux_core_streams(const np__mux_core *c) {
  return c->streams;
}

int64_t np__mux_core_peer_goaway(const np__mux_core *c) {
  return c->peer_goaway;
}

uint64_t np__mux_core_srtt_ns(const np__mux_core *c) {
  return c->srtt_ns;
}

const np__mux_budget *np__mux_core_budget(const np__mux_core *c) {
  return &c->own;
}
