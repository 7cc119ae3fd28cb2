/* libFuzzer: the yamux state machine (mux_core.c) alone, as a peer and an owner would drive it.
 * The input is a list of steps: bytes from the peer (raw, or a frame built from a few fields with a
 * synthetic body, so windows can be exhausted with a short input), and what the owner does (open,
 * read N bytes, write N bytes, the direct path, shut down, close, reset, let time pass, free what
 * is closed, fail a batch, go away). A shadow model of both directions is checked after every
 * step with real asserts:
 * - every byte the core accepts for a stream fits in the window it has sent (INITIAL + the
 *   WINDOW_UPDATE deltas it wrote): more must end the session;
 * - a stream never holds more than max_window received bytes, nor more than its granted window;
 * - the windows' growth beyond their initial size never exceeds the session's budget, and the
 *   budget's counts (growth, bytes held) are the sums over the streams;
 * - it never sends DATA beyond what the peer's window updates allowed, nor after its FIN;
 * - a closed or reset stream gets no data delivered; the peer never has more than max_streams;
 * - what the core writes always parses as yamux, and input the parser rejects ends the session. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mux_core.h"
#include "natproxy/error.h"

#define MAX_RECS 128

typedef struct rec {
  np__mux_cstream *cs; /* NULL once freed */
  uint32_t id;
  int64_t granted;     /* the receive window the core has written: INITIAL + deltas */
  int64_t received;    /* data bytes it accepted */
  int64_t delivered;   /* handed to the owner (callback or buffer) */
  int64_t peer_window; /* INITIAL + the peer's accepted deltas - DATA bytes written */
  uint32_t appetite;   /* what the data callback takes */
  int theirs, fin_out, close_in_data;
} rec;

static struct {
  const uint8_t *in;
  size_t len, off;
  np__mux_core *c;
  np__mux_core_opts o;
  np__mux_parser inp, outp; /* shadow parsers: what the peer sent, what the core wrote */
  rec recs[MAX_RECS];
  int nrecs;
  uint64_t now;
  uint32_t last_ping;
  int close_on_accept, in_data;
  long writes_open; /* writes queued and not yet completed */
} F;

static char payload[1 << 20];
static const char zeros[1 << 19];

static uint8_t byte(void) {
  return F.off < F.len ? F.in[F.off++] : 0;
}

static uint32_t u32(void) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = v << 8 | byte();
  return v;
}

static rec *rec_of(np__mux_cstream *cs) {
  return &F.recs[*(int *)np__mux_cstream_user(cs)];
}

/* The latest stream with this id (the peer may open an id again once it is free here). */
static rec *rec_by_id(uint32_t id) {
  for (int i = F.nrecs - 1; i >= 0; i--)
    if (F.recs[i].id == id)
      return &F.recs[i];
  return NULL;
}

static rec *pick(void) {
  return F.nrecs == 0 ? NULL : &F.recs[byte() % F.nrecs];
}

static void track(np__mux_cstream *cs, int theirs) {
  rec *r;
  if (F.nrecs == MAX_RECS) {
    /* Out of records: the stream is closed at once and never tracked (still a valid owner). */
    *(int *)np__mux_cstream_user(cs) = 0;
    np__mux_core_close(F.c, cs, 1);
    return;
  }
  r = &F.recs[F.nrecs];
  *r = (rec){.cs = cs, .id = cs->id, .theirs = theirs};
  r->granted = r->peer_window = NP_MUX_INITIAL_WINDOW;
  *(int *)np__mux_cstream_user(cs) = F.nrecs++;
}

/* ---- callbacks: the owner ---- */

static void cb_accept(np__mux_core *c, np__mux_cstream *cs) {
  int theirs = 0;
  for (np__mux_cstream *s = np__mux_core_streams(c); s != NULL; s = s->next)
    theirs += (s->id & 1) != (F.o.client ? 1u : 0u);
  assert(theirs <= (int)F.o.max_streams);
  track(cs, 1);
  if (F.close_on_accept && F.nrecs > 0 && rec_of(cs)->cs == cs)
    np__mux_core_close(c, cs, 0);
}

static size_t cb_data(np__mux_core *c, np__mux_cstream *cs, const char *data, size_t len) {
  rec *r = rec_of(cs);
  size_t take = len < r->appetite ? len : r->appetite;
  (void)data;
  assert(r->cs == cs && !cs->closing && cs->err == 0 && cs->rhead == NULL);
  assert(!F.in_data); /* the core never re-enters */
  F.in_data = 1;
  r->delivered += (int64_t)take;
  r->appetite -= (uint32_t)take;
  np__mux_core_consumed(c, cs, take, F.now);
  if (r->close_in_data)
    np__mux_core_close(c, cs, 0); /* a reader that closes from its read callback */
  F.in_data = 0;
  return take;
}

static void cb_fin(np__mux_core *c, np__mux_cstream *cs) {
  (void)c;
  assert(cs->fin_rcvd);
}

static void cb_event(np__mux_core *c, np__mux_cstream *cs) {
  (void)c;
  (void)cs;
}

static void cb_write_done(np__mux_core *c, void *token, int status) {
  (void)c;
  (void)status;
  assert(token == payload);
  F.writes_open--;
  assert(F.writes_open >= 0);
}

static void cb_fin_done(np__mux_core *c, np__mux_cstream *cs, int status) {
  (void)c;
  (void)status;
  assert(cs->fin_sent);
}

static void cb_want_write(np__mux_core *c) {
  (void)c; /* drained after each step */
}

static void cb_dead(np__mux_core *c, int err, const unsigned char *goaway) {
  np__mux_hdr h;
  (void)c;
  assert(err != 0);
  assert(goaway == NULL || (np__mux_hdr_decode(goaway, &h) == 0 && h.type == NP_MUX_GO_AWAY));
}

static const np__mux_core_cbs cbs = {.accept = cb_accept,
                                     .data = cb_data,
                                     .fin = cb_fin,
                                     .stream_event = cb_event,
                                     .write_done = cb_write_done,
                                     .fin_done = cb_fin_done,
                                     .want_write = cb_want_write,
                                     .dead = cb_dead};

/* ---- what the core writes ---- */

static void out_bytes(const char *buf, size_t len) {
  size_t off = 0, used;
  np__mux_event ev;
  int r;

  while (off < len) {
    r = np__mux_parse(&F.outp, buf + off, len - off, &used, &ev);
    assert(r >= 0); /* the core writes nothing but yamux */
    off += used;
    if (r == 0 || ev.type != NP_MUX_EV_FRAME)
      continue;
    rec *x = rec_by_id(ev.hdr.stream);
    if (ev.hdr.type == NP_MUX_PING && (ev.hdr.flags & NP_MUX_SYN))
      F.last_ping = ev.hdr.length;
    if (x == NULL || ev.hdr.stream == 0)
      continue;
    if (ev.hdr.type == NP_MUX_WINDOW_UPDATE) {
      x->granted += ev.hdr.length;
    } else if (ev.hdr.type == NP_MUX_DATA) {
      assert(!x->fin_out || ev.hdr.length == 0);
      x->peer_window -= ev.hdr.length;
      assert(x->peer_window >= 0); /* never beyond the peer's window */
    }
    if (ev.hdr.flags & NP_MUX_FIN)
      x->fin_out = 1;
  }
}

static void drain(void) {
  const np__mux_iov *iov;
  unsigned n;
  while (np__mux_core_pull(F.c, &iov, &n)) {
    assert(n > 0 && n <= NP_MUX_BATCH_IOVS);
    for (unsigned i = 0; i < n; i++)
      out_bytes(iov[i].base, iov[i].len);
    np__mux_core_written(F.c, 0);
  }
}

/* ---- what the peer sends ---- */

/* Feed bytes one parser event at a time, so every DATA header meets a core that has written all
 * the window updates it granted before it. */
static void peer_bytes(const char *buf, size_t len) {
  size_t off = 0, used;
  np__mux_event ev;
  int r;

  while (off < len && !np__mux_core_dead(F.c)) {
    np__mux_cstream *before = NULL, *s;
    r = np__mux_parse(&F.inp, buf + off, len - off, &used, &ev);
    if (r < 0) {
      np__mux_core_feed(F.c, buf + off, len - off, F.now);
      assert(np__mux_core_dead(F.c) != 0); /* what the parser refuses ends the session */
      return;
    }
    if (r == 1 && ev.type == NP_MUX_EV_FRAME && ev.hdr.stream != 0)
      before = np__mux_core_find(F.c, ev.hdr.stream);
    np__mux_core_feed(F.c, buf + off, used, F.now);
    off += used;
    if (r == 1 && ev.type == NP_MUX_EV_FRAME && ev.hdr.stream != 0 && !np__mux_core_dead(F.c)) {
      s = (ev.hdr.flags & NP_MUX_SYN) ? np__mux_core_find(F.c, ev.hdr.stream) : before;
      if (s != NULL && rec_of(s)->cs == s) {
        rec *x = rec_of(s);
        if (ev.hdr.type == NP_MUX_DATA) {
          x->received += ev.hdr.length;
          assert(x->received <= x->granted); /* never more than the window it wrote */
        } else {
          x->peer_window += ev.hdr.length;
        }
      }
    }
    drain();
  }
}

static void peer_frame(void) {
  uint8_t t = byte(), sel = byte();
  rec *x = pick();
  np__mux_hdr h = {.version = NP_MUX_VERSION, .type = t & 3, .flags = byte() & 0xf};
  unsigned char hb[NP_MUX_HDR_LEN];
  uint32_t len;

  /* Mostly a stream we know, sometimes any id. */
  h.stream = (sel & 3) != 0 && x != NULL ? x->id : (sel >> 2);
  switch (sel >> 6) {
  case 0:
    len = byte();
    break;
  case 1:
    len = (uint32_t)byte() << 10;
    break;
  case 2:
    len = x != NULL ? (uint32_t)(x->granted - x->received) + (byte() & 3) - 1 : 0;
    break;
  default:
    len = u32();
  }
  if (h.type == NP_MUX_PING || h.type == NP_MUX_GO_AWAY)
    h.stream = 0;
  if (h.type == NP_MUX_PING && (t & 0x80)) {
    h.flags = NP_MUX_ACK;
    len = F.last_ping; /* an answer: the RTT estimate starts, windows can grow */
  }
  h.length = len;
  np__mux_hdr_encode(&h, hb);
  peer_bytes((const char *)hb, sizeof(hb));
  if (h.type == NP_MUX_DATA && len <= sizeof(zeros))
    peer_bytes(zeros, len);
}

/* ---- the owner's steps ---- */

static void check_all(void) {
  const np__mux_budget *bud = np__mux_core_budget(F.c);
  uint64_t grown = 0, held = 0;
  int theirs = 0;
  for (np__mux_cstream *s = np__mux_core_streams(F.c); s != NULL; s = s->next) {
    rec *x = rec_of(s);
    assert(s->recv_target >= NP_MUX_INITIAL_WINDOW);
    grown += s->recv_target - NP_MUX_INITIAL_WINDOW;
    held += s->rbytes;
    theirs += (s->id & 1) != (F.o.client ? 1u : 0u) && !s->closing;
    assert(s->recv_target <= F.o.max_window);
    assert(s->rbytes <= F.o.max_window && s->rbytes <= s->recv_target);
    assert(s->err == 0 || s->closing || s->rbytes == 0);
    if (x->cs == s) {
      assert(x->delivered + (int64_t)s->rbytes <= x->received);
      assert(x->received <= x->granted);
    }
  }
  assert(theirs <= (int)F.o.max_streams);
  assert(grown == bud->grown && grown <= bud->limit);
  assert(held == bud->buffered);
}

static void step(void) {
  uint8_t op = byte();
  rec *x = NULL;

  if ((op & 15) >= 3 && (op & 15) <= 10 && ((x = pick()) == NULL || x->cs == NULL))
    return;
  switch (op & 15) {
  case 0: { /* raw bytes from the peer */
    size_t n = byte();
    n = n > F.len - F.off ? F.len - F.off : n;
    peer_bytes((const char *)F.in + F.off, n);
    F.off += n;
    break;
  }
  case 1:
    peer_frame();
    break;
  case 2: {
    np__mux_cstream *cs;
    if (np__mux_core_open(F.c, F.now, &cs) == 0)
      track(cs, 0);
    break;
  }
  case 3: { /* the owner reads up to N buffered bytes, and will take N more as they come */
    size_t want = (size_t)byte() << 10, len;
    const char *p = np__mux_core_peek(x->cs, &len);
    x->appetite = (uint32_t)want;
    if (p != NULL) {
      assert(!x->cs->closing && x->cs->err == 0);
      len = len < want ? len : want;
      x->delivered += (int64_t)len;
      np__mux_core_advance(x->cs, len);
      np__mux_core_consumed(F.c, x->cs, len, F.now);
    }
    break;
  }
  case 4: { /* write */
    np__mux_iov iov[3];
    unsigned n = 1 + byte() % 3;
    for (unsigned i = 0; i < n; i++)
      iov[i] = (np__mux_iov){payload, (size_t)byte() << (byte() & 15)};
    for (unsigned i = 0; i < n; i++)
      iov[i].len = iov[i].len > sizeof(payload) ? sizeof(payload) : iov[i].len;
    if (np__mux_core_write(F.c, x->cs, iov, n, payload) == 0)
      F.writes_open++;
    break;
  }
  case 5: { /* the direct path, the transport taking part of the frame */
    unsigned char hdr[NP_MUX_HDR_LEN];
    size_t want = (size_t)byte() << 8, n = np__mux_core_direct(F.c, x->cs, want, hdr), w;
    if (n == 0)
      break;
    w = 1 + u32() % (NP_MUX_HDR_LEN + n);
    out_bytes((const char *)hdr, w < NP_MUX_HDR_LEN ? w : NP_MUX_HDR_LEN);
    if (w > NP_MUX_HDR_LEN)
      out_bytes(payload, w - NP_MUX_HDR_LEN);
    np__mux_core_direct_done(F.c, x->cs, n, hdr, payload, w);
    break;
  }
  case 6:
    np__mux_core_shutdown(F.c, x->cs);
    break;
  case 7:
    np__mux_core_close(F.c, x->cs, byte() & 1);
    break;
  case 8:
    np__mux_core_reset(F.c, x->cs, NP_MUX_ENOMEM);
    break;
  case 9:
    x->close_in_data = 1;
    break;
  case 10:
    F.close_on_accept = !F.close_on_accept;
    break;
  case 11: /* time passes */
    F.now += (uint64_t)byte() * 1000000u * (op & 0x80 ? 1000u : 1u);
    break;
  case 12: /* the owner frees what can be freed and takes failed writes */
    for (int i = 0; i < F.nrecs; i++) {
      rec *y = &F.recs[i];
      if (y->cs == NULL)
        continue;
      while (np__mux_core_take_failed(y->cs) != NULL)
        F.writes_open--;
      if (np__mux_core_can_free(y->cs)) {
        np__mux_core_stream_unlink(F.c, y->cs);
        np__mux_core_stream_free(y->cs);
        y->cs = NULL;
      }
    }
    break;
  case 13: { /* a batch the transport fails */
    const np__mux_iov *iov;
    unsigned n;
    if (np__mux_core_pull(F.c, &iov, &n))
      np__mux_core_written(F.c, NP_MUX_ECONNRESET);
    break;
  }
  case 14:
    np__mux_core_goaway(F.c);
    break;
  default:
    np__mux_core_fail(F.c, -ETIMEDOUT, byte() & 1 ? NP_MUX_GOAWAY_NORMAL : -1);
  }
  drain();
  check_all();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t b;

  memset(&F, 0, sizeof(F));
  F.in = data;
  F.len = size;
  b = byte();
  F.o = (np__mux_core_opts){.client = b & 1,
                            .max_window = NP_MUX_INITIAL_WINDOW << ((b >> 1) & 3),
                            .max_streams = 1 + ((b >> 3) & 7),
                            .session_window = (uint64_t)(b >> 6) * NP_MUX_INITIAL_WINDOW,
                            .stream_extra = sizeof(int)};
  F.now = 1000000000u;
  np__mux_parser_init(&F.inp, F.o.max_window);
  np__mux_parser_init(&F.outp, UINT32_MAX);
  if (np__mux_core_new(&F.o, &cbs, NULL, F.now, &F.c) != 0)
    return 0;
  drain();
  while (F.off < F.len)
    step();
  /* Streams and writes still open are the core's to free: no callback, no leak. */
  np__mux_core_free(F.c);
  return 0;
}
