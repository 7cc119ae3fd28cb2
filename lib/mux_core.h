/* The yamux state machine (hashicorp/yamux spec.md, version 0; docs/protocol.md) without I/O: no
 * libuv, no np_conn, no clock. Bytes received go in through np__mux_core_feed; what they mean
 * comes out through callbacks (a stream the peer opened, data, FIN, reset, the session's end);
 * frames to send are pulled as a batch of iovecs that point into the core's own memory and the
 * writers' (never copied), and the batch is reported written. Time is an argument of the calls
 * that need it (nanoseconds from any monotonic origin). mux.c is the libuv adapter. */
#ifndef NP_MUX_CORE_H
#define NP_MUX_CORE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "mux_frame.h"

/* The system errors the core reports itself. On Unix libuv's UV_E* codes are these very values
 * (-errno), so the adapter passes them through unchanged; mux.c checks that at compile time. */
#define NP_MUX_ENOMEM     (-ENOMEM)
#define NP_MUX_ECONNRESET (-ECONNRESET) /* the peer reset the stream */
#define NP_MUX_ECANCELED  (-ECANCELED)  /* closed here */
#define NP_MUX_EPIPE      (-EPIPE)      /* written after shutdown or close */
#define NP_MUX_EINVAL     (-EINVAL)

/* The growth of a session's receive windows beyond their initial NP_MUX_INITIAL_WINDOW, in total,
 * when the owner does not say (docs/performance.md, "What a peer can make us hold"). */
#define NP_MUX_DEFAULT_SESSION_WINDOW (64ull * 1024 * 1024)

#define NP_MUX_BATCH_FRAMES 64
#define NP_MUX_BATCH_IOVS   256

typedef struct np__mux_core np__mux_core;
typedef struct np__mux_cstream np__mux_cstream;
typedef struct np__mux_wq np__mux_wq;
typedef struct np__mux_rq np__mux_rq;

/* What the receive windows of one or several sessions may grow by beyond their initial windows
 * (credit once granted cannot be taken back, so what is granted is what is bounded), and what
 * they hold. Each core has its own (opts.session_window); np-server's cores share one more
 * (opts.shared). Only the cores write it; one loop, no locking. */
typedef struct np__mux_budget {
  uint64_t limit;    /* growth allowed in total */
  uint64_t grown;    /* granted beyond the initial windows of the live streams */
  uint64_t buffered; /* received bytes held for readers that have not taken them */
} np__mux_budget;

/* Same members as uv_buf_t on Unix, but the core does not know libuv. */
typedef struct np__mux_iov {
  char *base;
  size_t len;
} np__mux_iov;

/* A stream's state. Read its fields freely; only the core (mux_core.c, mux_core_send.c) writes
 * them. */
struct np__mux_cstream {
  np__mux_core *core;
  uint32_t id;
  uint32_t send_window; /* what the peer still lets us send */
  uint32_t recv_target; /* the window we grant */
  uint32_t recv_avail;  /* of it, what the peer may still send */
  uint32_t unacked;     /* consumed since the last window update */
  uint64_t epoch_ns;    /* when the last window update went out */
  int err;              /* sticky: reset, the session died, or closed here (NP_MUX_ECANCELED) */
  np__mux_wq *whead, *wtail; /* queued writes, oldest first */
  np__mux_wq *failed;        /* writes to report failed (np__mux_core_take_failed) */
  size_t wbytes;             /* bytes queued and not yet framed */
  np__mux_rq *rhead, *rtail; /* received, not yet consumed */
  size_t rbytes;
  unsigned inflight; /* frames of this stream in the batch being written */
  unsigned in_table : 1, fin_wanted : 1, fin_sent : 1, fin_rcvd : 1, closing : 1, in_ready : 1;
  unsigned lagging : 1; /* bytes were buffered, or taken from the buffer, since the last update */
  np__mux_cstream *prev, *next;   /* all streams */
  np__mux_cstream *rprev, *rnext; /* ready to send */
  max_align_t user[];             /* opts.stream_extra bytes for the adapter, zeroed at creation */
};

typedef struct np__mux_core_cbs {
  /* The peer opened cs (its ACK is queued). The callee owns it: it ends it with
   * np__mux_core_close, and may do so at once. */
  void (*accept)(np__mux_core *c, np__mux_cstream *cs);
  /* Data for cs with nothing buffered ahead of it: len bytes at data (borrowed, this call only).
   * Returns how many the reader took (and reported with np__mux_core_consumed); the core buffers
   * the rest. */
  size_t (*data)(np__mux_core *c, np__mux_cstream *cs, const char *data, size_t len);
  /* The peer finished sending on cs (FIN). */
  void (*fin)(np__mux_core *c, np__mux_cstream *cs);
  /* cs has news for its owner: it was reset (cs->err), writes failed (np__mux_core_take_failed),
   * or, closing, its last frame in flight was written (np__mux_core_can_free). */
  void (*stream_event)(np__mux_core *c, np__mux_cstream *cs);
  /* A queued write's last byte has been written (status 0) or its batch failed. */
  void (*write_done)(np__mux_core *c, void *token, int status);
  /* The batch with cs's FIN is done: the FIN is out (or failed). Once per stream, unless it is
   * closed by then. */
  void (*fin_done)(np__mux_core *c, np__mux_cstream *cs, int status);
  /* Frames wait to be pulled (np__mux_core_pull). */
  void (*want_write)(np__mux_core *c);
  /* The session is over: err says why (NP_MUX_ECANCELED after np__mux_core_goaway). goaway, when
   * not NULL, is a GO_AWAY frame (borrowed) worth trying to write at once: nothing half written
   * precedes it. Every open stream is reset with err right after. */
  void (*dead)(np__mux_core *c, int err, const unsigned char *goaway);
} np__mux_core_cbs;

typedef struct np__mux_core_opts {
  int client;           /* opens odd stream ids */
  uint32_t max_window;  /* >= NP_MUX_INITIAL_WINDOW; also the largest data frame accepted */
  uint32_t max_streams; /* more SYNs from the peer are answered with RST */
  size_t stream_extra;  /* bytes at each stream's user[] */
  /* What this session's windows may grow by in total beyond NP_MUX_INITIAL_WINDOW each (0:
   * NP_MUX_DEFAULT_SESSION_WINDOW): with n streams it holds at most n x NP_MUX_INITIAL_WINDOW +
   * session_window received bytes for readers that do not read. */
  uint64_t session_window;
  np__mux_budget *shared; /* optional: a budget of several cores too (borrowed; outlives them) */
} np__mux_core_opts;

/* A new session; its first PING is queued. opts and cbs are copied. Returns 0 or NP_MUX_ENOMEM. */
int np__mux_core_new(const np__mux_core_opts *opts, const np__mux_core_cbs *cbs, void *data,
                     uint64_t now, np__mux_core **out);
/* Frees the core and every stream still in it (no callbacks). NULL is fine. */
void np__mux_core_free(np__mux_core *c);
void *np__mux_core_data(const np__mux_core *c);

/* ---- receiving ---- */

/* Bytes from the transport, in any chunking. Returns 0, or the error that ended the session
 * (NP_EPROTO, NP_ETOOBIG, NP_ELIMIT, NP_MUX_ENOMEM, NP_ETLSREQUIRED, or whatever ended it
 * before), which sticks. */
int np__mux_core_feed(np__mux_core *c, const char *buf, size_t len, uint64_t now);
/* How much to read next so reads end at frame ends: the rest of the current frame's data, or a
 * header and body_max bytes. */
size_t np__mux_core_read_hint(const np__mux_core *c, size_t body_max);
/* The reader took n bytes of cs (from the data callback or the buffer): may queue a window update.
 */
void np__mux_core_consumed(np__mux_core *c, np__mux_cstream *cs, size_t n, uint64_t now);
/* The oldest buffered bytes of cs: sets *len and returns where they are; NULL and 0 when there are
 * none or cs is closed or reset. */
const char *np__mux_core_peek(const np__mux_cstream *cs, size_t *len);
/* Drop n bytes from the front of the buffer (the reader took them; it says so with _consumed). */
void np__mux_core_advance(np__mux_cstream *cs, size_t n);

/* ---- sending ---- */

/* Open a stream (SYN queued). Returns 0, NP_ECLOSED (dead, going away, or the peer said go away),
 * NP_ELIMIT (ids exhausted) or NP_MUX_ENOMEM. */
int np__mux_core_open(np__mux_core *c, uint64_t now, np__mux_cstream **out);
/* Queue iov[0..n) of the caller's memory (held until write_done(token); token not NULL); the iov
 * array is copied. Returns 0, NP_MUX_EPIPE, cs->err, NP_MUX_EINVAL (no bytes) or NP_MUX_ENOMEM. */
int np__mux_core_write(np__mux_core *c, np__mux_cstream *cs, const np__mux_iov *iov, unsigned n,
                       void *token);
/* FIN after what is queued. Returns 0, NP_MUX_EINVAL (closing or already shut down) or cs->err. */
int np__mux_core_shutdown(np__mux_core *c, np__mux_cstream *cs);
/* The fast path: may len bytes of cs go out right now as one frame, ahead of nothing? Returns how
 * many may (then hdr is that frame's header) or 0. */
size_t np__mux_core_direct(np__mux_core *c, np__mux_cstream *cs, size_t len,
                           unsigned char hdr[NP_MUX_HDR_LEN]);
/* The direct frame (hdr + n bytes of data) went out up to written bytes: the rest is copied and
 * sent before anything else. Returns 0 or NP_MUX_ENOMEM (the session is then dead). */
int np__mux_core_direct_done(np__mux_core *c, np__mux_cstream *cs, size_t n,
                             const unsigned char hdr[NP_MUX_HDR_LEN], const char *data,
                             size_t written);
/* The next batch to write, if none is being written: *iov (the core's; valid until
 * np__mux_core_written) and *niov. Returns 1 when there is one, 0 when not. */
int np__mux_core_pull(np__mux_core *c, const np__mux_iov **iov, unsigned *niov);
/* The pulled batch is written (status 0) or failed (then the session dies with status). */
void np__mux_core_written(np__mux_core *c, int status);

/* ---- ending ---- */

/* Close cs: writes not yet framed fail, and the peer gets a FIN (it finished, we did not; unless
 * reset) or an RST, unless both sides are done. cs is freed with np__mux_core_stream_free once
 * np__mux_core_can_free. */
void np__mux_core_close(np__mux_core *c, np__mux_cstream *cs, int reset);
/* Reset cs here with err (its buffered data dropped, its writes failed), telling the peer nothing.
 */
void np__mux_core_reset(np__mux_core *c, np__mux_cstream *cs, int err);
/* A failed write's token, oldest first, or NULL. */
void *np__mux_core_take_failed(np__mux_cstream *cs);
/* Closed, no frame of it in flight, no failed write to report. */
int np__mux_core_can_free(const np__mux_cstream *cs);
/* Take cs out of the session (the count drops), then free it (user[] with it). */
void np__mux_core_stream_unlink(np__mux_core *c, np__mux_cstream *cs);
void np__mux_core_stream_free(np__mux_cstream *cs);
/* Say go away after what is queued; once that is written the session ends with
 * NP_MUX_ECANCELED. */
void np__mux_core_goaway(np__mux_core *c);
/* End the session now with err; goaway_code >= 0: offer the peer a GO_AWAY with it. */
void np__mux_core_fail(np__mux_core *c, int err, int goaway_code);

/* ---- state ---- */

int np__mux_core_dead(const np__mux_core *c);    /* 0 or why the session ended */
int np__mux_core_closing(const np__mux_core *c); /* np__mux_core_goaway was called */
int np__mux_core_busy(const np__mux_core *c);    /* a batch is being written */
size_t np__mux_core_stream_count(const np__mux_core *c);
np__mux_cstream *np__mux_core_streams(const np__mux_core *c); /* first of all; ->next */
np__mux_cstream *np__mux_core_find(const np__mux_core *c, uint32_t id);
int64_t np__mux_core_peer_goaway(const np__mux_core *c);
uint64_t np__mux_core_srtt_ns(const np__mux_core *c);
/* This session's budget: its limit, what its streams' windows have grown by, what they hold. */
const np__mux_budget *np__mux_core_budget(const np__mux_core *c);
/* The adapter's bytes of cs (opts.stream_extra of them). */
static inline void *np__mux_cstream_user(np__mux_cstream *cs) {
  return cs->user;
}

#endif
