/* The yamux core's insides, shared by its two files and nothing else (not installed): mux_core.c,
 * the state machine (the session, its streams' lifecycle, reading, windows), and mux_core_send.c,
 * the sending side (queued writes, the direct path, the batch). The struct layouts live here so
 * both can reach the fields; the helpers both need are static inline so that mux_core.c calls
 * nothing in mux_core_send.c and the two files do not call each other (tests/check-layers.py fails
 * on a cycle). */
#ifndef NP_MUX_CORE_INT_H
#define NP_MUX_CORE_INT_H

#include "mux_core.h"

#include <openssl/lhash.h>

struct np__mux_wq {
  np__mux_wq *next;
  void *token;
  size_t left; /* bytes not yet framed */
  unsigned idx, nbufs;
  size_t off; /* into iov[idx] */
  np__mux_iov iov[];
};

typedef struct batch {
  np__mux_iov iov[NP_MUX_BATCH_IOVS];
  unsigned niov;
  unsigned char hdrs[NP_MUX_BATCH_FRAMES][NP_MUX_HDR_LEN];
  np__mux_cstream *frames[NP_MUX_BATCH_FRAMES]; /* NULL for session frames */
  unsigned nframes;
  np__mux_wq *done; /* writes whose last byte is in this batch */
  size_t bytes;
  char *raw; /* the rest of a direct frame, written first; freed after */
} batch;

struct np__mux_core {
  np__mux_core_opts o;
  np__mux_core_cbs cb;
  void *data;
  OPENSSL_LHASH *by_id;
  np__mux_cstream *streams;
  size_t nstreams;
  np__mux_cstream *rhead, *rtail; /* ready ring */
  size_t nready;
  np__mux_parser parser;
  np__mux_cstream *cur; /* stream of the data frame being read (NULL: discard) */
  uint16_t cur_fin;     /* FIN/RST of the data frame being read, applied at its end */
  uint32_t next_id;
  char *raw; /* the unwritten rest of a direct frame: goes out before anything else */
  size_t raw_len;
  np__mux_hdr *ctrl; /* control frames waiting */
  size_t nctrl, ctrl_cap;
  batch b;
  np__mux_budget own; /* this session's window growth and buffered bytes (opts.shared too) */
  uint64_t ping_sent_ns, srtt_ns;
  uint32_t ping_id;
  unsigned ping_out : 1; /* ping_id is not answered yet */
  int dead;              /* 0, or why the session is over */
  int64_t peer_goaway;   /* the code of the peer's first GO_AWAY, -1 before one */
  unsigned busy : 1;     /* b is being written */
  unsigned closing : 1, goaway_pending : 1, goaway_in_batch : 1, remote_goaway : 1;
};

/* ---- the ready ring and when to ask for a write, for both files --------------------------- */

static inline void ready_add(np__mux_core *c, np__mux_cstream *s) {
  if (s->in_ready)
    return;
  s->in_ready = 1;
  s->rnext = NULL;
  s->rprev = c->rtail;
  if (c->rtail != NULL)
    c->rtail->rnext = s;
  else
    c->rhead = s;
  c->rtail = s;
  c->nready++;
}

static inline void ready_del(np__mux_core *c, np__mux_cstream *s) {
  if (!s->in_ready)
    return;
  if (s->rprev != NULL)
    s->rprev->rnext = s->rnext;
  else
    c->rhead = s->rnext;
  if (s->rnext != NULL)
    s->rnext->rprev = s->rprev;
  else
    c->rtail = s->rprev;
  s->in_ready = 0;
  c->nready--;
}

/* Something to frame now: data the window lets through, or the FIN once the data is out. */
static inline int sendable(const np__mux_cstream *s) {
  return (s->wbytes > 0 && s->send_window > 0) || (s->wbytes == 0 && s->fin_wanted && !s->fin_sent);
}

static inline void want_write(np__mux_core *c) {
  if (!c->busy && !c->dead)
    c->cb.want_write(c);
}

#endif
