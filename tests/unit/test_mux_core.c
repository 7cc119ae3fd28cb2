/* mux_core.c with no loop: two cores wired to each other in memory (what one pulls, the other is
 * fed), or one core fed hand-made frames. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mux_core.h"
#include "natproxy/error.h"

#define MAXS 8

typedef struct side {
  np__mux_core *c;
  struct side *peer;
  np__mux_cstream *acc[MAXS]; /* streams the peer opened, in order */
  int nacc;
  size_t appetite;   /* what the data callback takes */
  char got[1 << 20]; /* bytes taken from the data callback or the buffer (the first MiB kept) */
  size_t ngot;
  int fins, events, write_dones, fin_dones;
  int dead;
  int goaway_offered;
  char out[1 << 21]; /* what the last pulls wrote */
  size_t nout;
} side;

static side A, B;
static char payload[4 * NP_MUX_INITIAL_WINDOW];
static uint64_t now = 1000000000u;
static uint64_t tick; /* how far the clock moves per batch pumped */

static side *side_of(np__mux_core *c) {
  return np__mux_core_data(c);
}

static void cb_accept(np__mux_core *c, np__mux_cstream *cs) {
  side *s = side_of(c);
  assert_true(s->nacc < MAXS);
  s->acc[s->nacc++] = cs;
}

static void keep(side *s, const char *data, size_t len) {
  if (s->ngot + len <= sizeof(s->got))
    memcpy(s->got + s->ngot, data, len);
  s->ngot += len;
}

static size_t cb_data(np__mux_core *c, np__mux_cstream *cs, const char *data, size_t len) {
  side *s = side_of(c);
  size_t take = len < s->appetite ? len : s->appetite;
  keep(s, data, take);
  np__mux_core_consumed(c, cs, take, now);
  return take;
}

static void cb_fin(np__mux_core *c, np__mux_cstream *cs) {
  (void)cs;
  side_of(c)->fins++;
}

static void cb_event(np__mux_core *c, np__mux_cstream *cs) {
  (void)cs;
  side_of(c)->events++;
}

static void cb_write_done(np__mux_core *c, void *token, int status) {
  (void)token;
  assert_int_equal(status, 0);
  side_of(c)->write_dones++;
}

static void cb_fin_done(np__mux_core *c, np__mux_cstream *cs, int status) {
  (void)cs;
  (void)status;
  side_of(c)->fin_dones++;
}

static void cb_want_write(np__mux_core *c) {
  (void)c; /* pump() pulls */
}

static void cb_dead(np__mux_core *c, int err, const unsigned char *goaway) {
  side *s = side_of(c);
  np__mux_hdr h;
  s->dead = err;
  if (goaway != NULL && np__mux_hdr_decode(goaway, &h) == 0)
    s->goaway_offered = 1 + (int)h.length;
}

static const np__mux_core_cbs cbs = {.accept = cb_accept,
                                     .data = cb_data,
                                     .fin = cb_fin,
                                     .stream_event = cb_event,
                                     .write_done = cb_write_done,
                                     .fin_done = cb_fin_done,
                                     .want_write = cb_want_write,
                                     .dead = cb_dead};

#define MAX_WINDOW (4 * NP_MUX_INITIAL_WINDOW)

static void side_init_with(side *s, side *peer, int client, uint64_t session_window,
                           np__mux_budget *shared) {
  np__mux_core_opts o = {.client = client,
                         .max_window = MAX_WINDOW,
                         .max_streams = 4,
                         .session_window = session_window,
                         .shared = shared};
  memset(s, 0, sizeof(*s));
  s->peer = peer;
  s->appetite = SIZE_MAX;
  assert_int_equal(np__mux_core_new(&o, &cbs, s, now, &s->c), 0);
}

static void side_init(side *s, side *peer, int client) {
  side_init_with(s, peer, client, 0, NULL);
}

static int setup(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(payload); i++)
    payload[i] = (char)(i * 7 + i / 251);
  tick = 1000;
  side_init(&A, &B, 1);
  side_init(&B, &A, 0);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  np__mux_core_free(A.c);
  np__mux_core_free(B.c);
  return 0;
}

/* Everything one side has to send, to the other, both ways, until neither has more. */
static void pump(void) {
  int moved = 1, turns = 0;
  while (moved) {
    moved = 0;
    for (side *s = &A; s != NULL; s = s == &A ? &B : NULL) {
      const np__mux_iov *iov;
      unsigned n;
      while (np__mux_core_pull(s->c, &iov, &n)) {
        size_t len = 0;
        assert_true(++turns < 1000); /* a sender that ignores windows never stops */
        for (unsigned i = 0; i < n; i++) {
          memcpy(s->out + len, iov[i].base, iov[i].len);
          len += iov[i].len;
        }
        s->nout = len;
        np__mux_core_written(s->c, 0);
        now += tick;
        np__mux_core_feed(s->peer->c, s->out, len, now);
        moved = 1;
      }
    }
  }
}

static void frame(side *to, uint8_t type, uint16_t flags, uint32_t id, uint32_t len) {
  unsigned char h[NP_MUX_HDR_LEN];
  np__mux_hdr_encode(
      &(np__mux_hdr){.version = 0, .type = type, .flags = flags, .stream = id, .length = len}, h);
  np__mux_core_feed(to->c, (const char *)h, sizeof(h), now);
}

static void write_bytes(side *s, np__mux_cstream *cs, size_t off, size_t len) {
  np__mux_iov iov = {payload + off, len};
  assert_int_equal(np__mux_core_write(s->c, cs, &iov, 1, payload), 0);
}

/* The reader takes everything buffered. */
static void read_all(side *s, np__mux_cstream *cs) {
  const char *p;
  size_t len;
  while ((p = np__mux_core_peek(cs, &len)) != NULL) {
    keep(s, p, len);
    np__mux_core_advance(cs, len);
    np__mux_core_consumed(s->c, cs, len, now);
  }
}

static void test_open_accept(void **state) {
  np__mux_cstream *a;
  (void)state;
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  assert_int_equal(a->id, 1);
  write_bytes(&A, a, 0, 5); /* 0-RTT: right behind the SYN */
  pump();
  assert_int_equal(B.nacc, 1);
  assert_int_equal(B.acc[0]->id, 1);
  assert_int_equal(B.ngot, 5);
  assert_memory_equal(B.got, payload, 5);
  assert_int_equal(A.write_dones, 1);
  write_bytes(&B, B.acc[0], 100, 3);
  pump();
  assert_int_equal(A.ngot, 3);
  assert_memory_equal(A.got, payload + 100, 3);
  assert_int_equal(np__mux_core_stream_count(A.c), 1);
  assert_int_equal(np__mux_core_stream_count(B.c), 1);
  assert_int_equal(A.dead, 0);
  assert_int_equal(B.dead, 0);
}

static void test_window_exhausted_then_updated(void **state) {
  np__mux_cstream *a, *b;
  (void)state;
  B.appetite = 0; /* B's reader does not read: all is buffered */
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  /* A first small write, so the window left is not a multiple of what a frame may carry. */
  write_bytes(&A, a, 0, 1000);
  pump();
  assert_int_equal(a->send_window, NP_MUX_INITIAL_WINDOW - 1000);
  write_bytes(&A, a, 1000, 2 * NP_MUX_INITIAL_WINDOW + 10 - 1000);
  pump();
  assert_int_equal(B.dead, 0);
  b = B.acc[0];
  now += 1000000000u; /* the reader is slow: no reason to grow the window */
  /* Exactly the window got through; the sender waits for an update. */
  assert_int_equal(b->rbytes, NP_MUX_INITIAL_WINDOW);
  assert_int_equal(a->send_window, 0);
  assert_int_equal(a->wbytes, NP_MUX_INITIAL_WINDOW + 10);
  assert_int_equal(A.write_dones, 1); /* the small one */
  read_all(&B, b);
  pump();
  /* The update let the next window's worth through, no more. */
  assert_int_equal(b->rbytes, NP_MUX_INITIAL_WINDOW);
  assert_int_equal(a->wbytes, 10);
  read_all(&B, b);
  pump();
  read_all(&B, b);
  assert_int_equal(B.ngot, 2 * NP_MUX_INITIAL_WINDOW + 10);
  assert_memory_equal(B.got, payload, B.ngot);
  assert_int_equal(A.write_dones, 2);
  assert_int_equal(B.dead, 0);
}

static void test_fin_both_ways(void **state) {
  np__mux_cstream *a, *b;
  (void)state;
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  write_bytes(&A, a, 0, 7);
  assert_int_equal(np__mux_core_shutdown(A.c, a), 0);
  assert_int_equal(np__mux_core_shutdown(A.c, a), NP_MUX_EINVAL);
  assert_int_equal(np__mux_core_write(A.c, a, &(np__mux_iov){payload, 1}, 1, payload),
                   NP_MUX_EPIPE);
  pump();
  b = B.acc[0];
  assert_int_equal(B.ngot, 7);
  assert_int_equal(B.fins, 1);
  assert_true(b->fin_rcvd);
  assert_int_equal(A.fin_dones, 1);
  write_bytes(&B, b, 0, 4); /* half-closed: B still sends */
  assert_int_equal(np__mux_core_shutdown(B.c, b), 0);
  pump();
  assert_int_equal(A.ngot, 4);
  assert_int_equal(A.fins, 1);
  /* Both ways done: the ids are free and closing says nothing more. */
  assert_null(np__mux_core_find(A.c, 1)); /* B's FIN came second: A's id is free */
  np__mux_core_close(A.c, a, 0);
  np__mux_core_close(B.c, b, 0);
  assert_false(np__mux_core_pull(A.c, &(const np__mux_iov *){NULL}, &(unsigned){0}));
  assert_true(np__mux_core_can_free(a));
  np__mux_core_stream_unlink(A.c, a);
  np__mux_core_stream_free(a);
  assert_int_equal(np__mux_core_stream_count(A.c), 0);
}

static void test_rst(void **state) {
  np__mux_cstream *a, *b;
  (void)state;
  B.appetite = 0;
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  write_bytes(&A, a, 0, 1000);
  pump();
  b = B.acc[0];
  assert_int_equal(b->rbytes, 1000);
  np__mux_core_close(A.c, a, 1);
  pump();
  /* The reset drops what was buffered and fails what comes next. */
  assert_int_equal(b->err, NP_MUX_ECONNRESET);
  assert_int_equal(b->rbytes, 0);
  assert_null(np__mux_core_peek(b, &(size_t){0}));
  assert_int_equal(np__mux_core_write(B.c, b, &(np__mux_iov){payload, 1}, 1, payload),
                   NP_MUX_ECONNRESET);
  assert_true(B.events > 0);
  assert_int_equal(B.dead, 0);
}

static void test_goaway(void **state) {
  np__mux_cstream *a, *b;
  (void)state;
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  pump();
  np__mux_core_goaway(A.c);
  assert_int_equal(np__mux_core_open(A.c, now, &a), NP_ECLOSED);
  pump();
  assert_int_equal(np__mux_core_peer_goaway(B.c), NP_MUX_GOAWAY_NORMAL);
  assert_int_equal(np__mux_core_open(B.c, now, &b), NP_ECLOSED);
  /* Once its GO_AWAY is written, A's session is over, as closed here; its stream learns it. */
  assert_int_equal(A.dead, NP_MUX_ECANCELED);
  assert_int_equal(a->err, NP_MUX_ECANCELED);
  assert_int_equal(np__mux_core_peer_goaway(A.c), -1);
}

static void test_ping_answered(void **state) {
  (void)state;
  assert_int_equal(np__mux_core_srtt_ns(A.c), 0);
  pump(); /* each side's first PING, each side's answer */
  assert_true(np__mux_core_srtt_ns(A.c) > 0);
  assert_true(np__mux_core_srtt_ns(B.c) > 0);
  /* A ping from the peer with any opaque value is answered with it. */
  frame(&B, NP_MUX_PING, NP_MUX_SYN, 0, 0xabcdef);
  assert_true(np__mux_core_pull(B.c, &(const np__mux_iov *){NULL}, &(unsigned){0}));
  np__mux_core_written(B.c, 0);
  assert_int_equal(B.dead, 0);
}

static void test_oversized_rejected(void **state) {
  np__mux_cstream *a;
  (void)state;
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  pump();
  /* Within the largest frame but beyond the window granted: a protocol error, said to the peer. */
  frame(&B, NP_MUX_DATA, 0, 1, NP_MUX_INITIAL_WINDOW + 1);
  assert_int_equal(B.dead, NP_EPROTO);
  assert_int_equal(B.goaway_offered, 1 + NP_MUX_GOAWAY_PROTO);
  assert_int_equal(B.acc[0]->err, NP_EPROTO);
  /* Beyond the largest frame at all. */
  frame(&A, NP_MUX_DATA, 0, 1, 4 * NP_MUX_INITIAL_WINDOW + 1);
  assert_int_equal(A.dead, NP_ETOOBIG);
  /* Sticky. */
  assert_int_equal(np__mux_core_feed(A.c, "x", 1, now), NP_ETOOBIG);
}

static void test_unknown_stream(void **state) {
  (void)state;
  /* Data and window updates for a stream B does not know (closed here, say) are dropped. */
  frame(&B, NP_MUX_DATA, 0, 99, 3);
  np__mux_core_feed(B.c, "abc", 3, now);
  frame(&B, NP_MUX_WINDOW_UPDATE, 0, 99, 1000);
  assert_int_equal(B.dead, 0);
  assert_int_equal(B.nacc, 0);
  assert_int_equal(np__mux_core_stream_count(B.c), 0);
  /* A SYN with our parity is not the peer's to open. */
  frame(&B, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, 2, 0);
  assert_int_equal(B.dead, NP_EPROTO);
}

static void test_stream_limit(void **state) {
  (void)state;
  for (uint32_t id = 1; id <= 11; id += 2)
    frame(&B, NP_MUX_WINDOW_UPDATE, NP_MUX_SYN, id, 0);
  assert_int_equal(B.nacc, 4); /* max_streams; the rest got RST */
  assert_int_equal(np__mux_core_stream_count(B.c), 4);
  pump();
  assert_int_equal(A.dead, 0);
  assert_int_equal(B.dead, 0);
}

/* ---- window growth and its budgets ---- */

/* Pings answered (both sides know the round trip), then the clock stands still: every reader that
 * keeps up takes half its window within two round trips, so windows grow as far as allowed. */
static void fast_clock(void) {
  pump();
  assert_true(np__mux_core_srtt_ns(A.c) > 0 && np__mux_core_srtt_ns(B.c) > 0);
  tick = 0;
}

/* len bytes on cs, a payload at a time (held by the writer until written). */
static void send_n(side *s, np__mux_cstream *cs, size_t len) {
  for (size_t done = 0; done < len; done += sizeof(payload))
    write_bytes(s, cs, 0, len - done < sizeof(payload) ? len - done : sizeof(payload));
}

/* A message queued behind a bulk stream's data leaves first in the next batch: bulk takes large
 * turns, and a short write must not wait behind them. Then everything arrives, in order per
 * stream. */
static void test_message_ahead_of_bulk(void **state) {
  np__mux_cstream *bulk, *msg;
  const np__mux_iov *iov;
  unsigned n;
  size_t len = 0;
  np__mux_hdr h;
  (void)state;

  assert_int_equal(np__mux_core_open(A.c, now, &bulk), 0);
  assert_int_equal(np__mux_core_open(A.c, now, &msg), 0);
  pump(); /* the SYNs and their answers */
  send_n(&A, bulk, 200000);
  write_bytes(&A, msg, 0, 100);
  assert_true(np__mux_core_pull(A.c, &iov, &n));
  for (unsigned i = 0; i < n; i++) {
    memcpy(A.out + len, iov[i].base, iov[i].len);
    len += iov[i].len;
  }
  assert_int_equal(np__mux_hdr_decode((const unsigned char *)A.out, &h), 0);
  assert_int_equal(h.type, NP_MUX_DATA);
  assert_int_equal(h.stream, msg->id);
  assert_int_equal(h.length, 100);
  assert_int_equal(np__mux_hdr_decode((const unsigned char *)A.out + NP_MUX_HDR_LEN + 100, &h), 0);
  assert_int_equal(h.stream, bulk->id);
  np__mux_core_written(A.c, 0);
  np__mux_core_feed(B.c, A.out, len, now);
  pump();
  assert_int_equal(B.ngot, 200100);
  assert_int_equal(B.dead, 0);
}

static void unlink_free(side *s, np__mux_cstream *cs) {
  assert_true(np__mux_core_can_free(cs));
  np__mux_core_stream_unlink(s->c, cs);
  np__mux_core_stream_free(cs);
}

/* B again, as a receiver whose session may grow its windows by limit bytes in all; the clock set
 * up as fast_clock says. */
static const np__mux_budget *receiver_with_budget(uint64_t limit) {
  np__mux_core_free(B.c);
  side_init_with(&B, &A, 0, limit, NULL);
  fast_clock();
  return np__mux_core_budget(B.c);
}

static void test_window_grows_alone(void **state) {
  const np__mux_budget *bud = np__mux_core_budget(B.c);
  np__mux_cstream *a, *b;
  (void)state;
  fast_clock();
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  send_n(&A, a, 4 * MAX_WINDOW);
  pump();
  b = B.acc[0];
  assert_int_equal(B.ngot, 4 * MAX_WINDOW);
  assert_int_equal(b->recv_target, MAX_WINDOW);
  assert_int_equal(bud->limit, NP_MUX_DEFAULT_SESSION_WINDOW);
  assert_int_equal(bud->grown, MAX_WINDOW - NP_MUX_INITIAL_WINDOW);
  assert_int_equal(bud->buffered, 0);
  /* Paused, then resumed: with the budget far from spent, it keeps its window (nobody needs it,
   * and a relay whose socket fills now and then would only be slowed). */
  B.appetite = 0;
  send_n(&A, a, 2 * MAX_WINDOW);
  pump();
  assert_true(b->rbytes > 0);
  B.appetite = SIZE_MAX;
  read_all(&B, b);
  pump();
  assert_int_equal(B.ngot, 6 * MAX_WINDOW);
  assert_int_equal(b->recv_target, MAX_WINDOW);
  /* A stream that goes gives its growth back. */
  np__mux_core_close(B.c, b, 1);
  unlink_free(&B, b);
  assert_int_equal(bud->grown, 0);
}

/* The first round trip is sampled on an idle connection; under load (here: each batch takes 50 us
 * to arrive, where the idle answer took 1 us) the receiver samples it again while it updates
 * windows, and a stream whose window limits it grows. Judged against the idle sample alone, it
 * never reads half its window within two round trips and keeps the initial window. */
static void test_window_grows_under_load(void **state) {
  np__mux_cstream *a, *b;
  uint64_t idle;
  (void)state;
  pump(); /* the pings, answered at once */
  idle = np__mux_core_srtt_ns(B.c);
  assert_true(idle > 0);
  tick = 50000;
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  for (int i = 0; i < 8; i++) {
    send_n(&A, a, 4 * MAX_WINDOW);
    pump();
  }
  b = B.acc[0];
  assert_int_equal(B.ngot, 32 * MAX_WINDOW);
  assert_true(np__mux_core_srtt_ns(B.c) > 10 * idle);
  assert_true(b->recv_target > NP_MUX_INITIAL_WINDOW);
}

static void test_streams_that_stop_reading_are_bounded(void **state) {
  const uint64_t limit = 2 * (MAX_WINDOW - NP_MUX_INITIAL_WINDOW); /* two streams' growth */
  const np__mux_budget *bud;
  np__mux_cstream *a[4], **b = B.acc;
  uint64_t held = 0;
  (void)state;
  bud = receiver_with_budget(limit);
  for (int i = 0; i < 4; i++) {
    /* Each reads fast (its window grows as far as the budget lets), then stops reading. */
    assert_int_equal(np__mux_core_open(A.c, now, &a[i]), 0);
    B.appetite = SIZE_MAX;
    send_n(&A, a[i], 2 * MAX_WINDOW);
    pump();
    B.appetite = 0;
    send_n(&A, a[i], 2 * MAX_WINDOW);
    pump();
  }
  for (int i = 0; i < 4; i++) {
    /* What it granted is all used: held, or consumed and not yet acknowledged. */
    assert_int_equal(b[i]->recv_avail, 0);
    assert_int_equal(b[i]->rbytes + b[i]->unacked, b[i]->recv_target);
    held += b[i]->rbytes;
  }
  assert_int_equal(b[0]->recv_target, MAX_WINDOW);
  assert_int_equal(b[1]->recv_target, MAX_WINDOW);
  assert_int_equal(b[2]->recv_target, NP_MUX_INITIAL_WINDOW); /* the budget was spent */
  assert_int_equal(b[3]->recv_target, NP_MUX_INITIAL_WINDOW);
  assert_int_equal(bud->grown, limit);
  assert_int_equal(bud->buffered, held);
  assert_true(held <= 4 * NP_MUX_INITIAL_WINDOW + limit);
  assert_true(held > 4 * NP_MUX_INITIAL_WINDOW + limit - 4 * MAX_WINDOW / 2);

  /* A stream that goes gives its growth back, and a stream that reads gets it. */
  np__mux_core_close(B.c, b[0], 1);
  unlink_free(&B, b[0]);
  assert_int_equal(bud->grown, limit - (MAX_WINDOW - NP_MUX_INITIAL_WINDOW));
  B.appetite = SIZE_MAX;
  read_all(&B, b[2]);
  pump(); /* only b[2] reads: the others still hold what they got */
  assert_int_equal(b[2]->rbytes, 0);
  assert_int_equal(b[2]->recv_target, MAX_WINDOW);
  assert_int_equal(bud->grown, limit);
  /* One that was paused gives its growth back as it works through what it held. */
  read_all(&B, b[1]);
  assert_true(b[1]->recv_target < MAX_WINDOW);
  assert_true(bud->grown < limit);
  assert_int_equal(bud->buffered, b[1]->rbytes + b[3]->rbytes);
  assert_int_equal(B.dead, 0);
  assert_int_equal(A.dead, 0);
}

static void test_paused_stream_gets_credit_back(void **state) {
  const np__mux_budget *bud;
  np__mux_cstream *a, *b;
  size_t sent = 0;
  (void)state;
  /* Room for one stream's growth and a little: once it grew, the budget is short. */
  bud = receiver_with_budget(MAX_WINDOW);
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  send_n(&A, a, 2 * MAX_WINDOW);
  sent += 2 * MAX_WINDOW;
  pump();
  b = B.acc[0];
  assert_int_equal(b->recv_target, MAX_WINDOW);
  /* Paused: it holds its whole window, and the writer waits. */
  B.appetite = 0;
  send_n(&A, a, 6 * MAX_WINDOW);
  sent += 6 * MAX_WINDOW;
  pump();
  assert_int_equal(b->rbytes + b->unacked, MAX_WINDOW);
  assert_int_equal(a->send_window, 0);
  /* It resumes: working through what it held it grants less than it takes (its window shrinks),
   * then, reading as fast as it gets, its window grows back and everything arrives. */
  B.appetite = SIZE_MAX;
  read_all(&B, b);
  assert_true(b->recv_target < MAX_WINDOW);
  assert_int_equal(bud->grown, b->recv_target - NP_MUX_INITIAL_WINDOW);
  assert_true(b->recv_avail > 0); /* credit for what it took, less what it gave back */
  pump();
  assert_int_equal(B.ngot, sent);
  assert_int_equal(b->recv_target, MAX_WINDOW);
  assert_int_equal(bud->grown, MAX_WINDOW - NP_MUX_INITIAL_WINDOW);
  assert_int_equal(bud->buffered, 0);
  assert_int_equal(B.dead, 0);
}

/* A budget both sides share (np-server shares one among all its sessions). */
static np__mux_budget shared;

static void test_shared_budget(void **state) {
  np__mux_cstream *a, *b;
  (void)state;
  shared = (np__mux_budget){.limit = MAX_WINDOW - NP_MUX_INITIAL_WINDOW};
  np__mux_core_free(A.c);
  np__mux_core_free(B.c);
  side_init_with(&A, &B, 1, 0, &shared);
  side_init_with(&B, &A, 0, 0, &shared);
  fast_clock();
  assert_int_equal(np__mux_core_open(A.c, now, &a), 0);
  send_n(&A, a, 4 * MAX_WINDOW);
  pump();
  b = B.acc[0];
  assert_int_equal(b->recv_target, MAX_WINDOW); /* took all the shared budget */
  send_n(&B, b, 4 * MAX_WINDOW);
  pump();
  assert_int_equal(A.ngot, 4 * MAX_WINDOW);
  assert_int_equal(a->recv_target, NP_MUX_INITIAL_WINDOW); /* nothing left for A */
  assert_int_equal(shared.grown, MAX_WINDOW - NP_MUX_INITIAL_WINDOW);
  /* B's stream goes: A's windows may grow now. */
  np__mux_core_close(B.c, b, 1);
  unlink_free(&B, b);
  assert_int_equal(shared.grown, 0);
  pump(); /* the RST */
  assert_int_equal(np__mux_core_open(B.c, now, &b), 0);
  send_n(&B, b, 4 * MAX_WINDOW);
  pump();
  assert_int_equal(A.acc[0]->recv_target, MAX_WINDOW);
  assert_int_equal(shared.grown, MAX_WINDOW - NP_MUX_INITIAL_WINDOW);
  assert_int_equal(shared.buffered, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_open_accept, setup, teardown),
      cmocka_unit_test_setup_teardown(test_window_exhausted_then_updated, setup, teardown),
      cmocka_unit_test_setup_teardown(test_fin_both_ways, setup, teardown),
      cmocka_unit_test_setup_teardown(test_message_ahead_of_bulk, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rst, setup, teardown),
      cmocka_unit_test_setup_teardown(test_goaway, setup, teardown),
      cmocka_unit_test_setup_teardown(test_ping_answered, setup, teardown),
      cmocka_unit_test_setup_teardown(test_oversized_rejected, setup, teardown),
      cmocka_unit_test_setup_teardown(test_unknown_stream, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stream_limit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_window_grows_alone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_window_grows_under_load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_streams_that_stop_reading_are_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_paused_stream_gets_credit_back, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shared_budget, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
