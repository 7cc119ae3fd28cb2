/* The yamux core's sending side: each stream queues its writes (the caller's memory, not copied);
 * one batch at a time is pulled, built round-robin over the streams that have data and window, a
 * quantum each, so a bulk stream cannot starve a short one; the direct path lets one frame skip the
 * queue when nothing waits ahead of it. Its own file because it is its own job: mux_core.c, the
 * state machine, decides what is owed (control frames, windows, FINs) and this file turns that
 * into bytes to write. It calls into mux_core.c (np__mux_core_fail) and never the other way round;
 * the shared struct layouts are in mux_core_int.h. */
#include "mux_core_int.h"

#include <stdlib.h>
#include <string.h>

/* Per stream and turn when several have data. Large, since every frame is a write to the service
 * at the other end (16 KiB turns made 8 bulk streams 12 % slower than 64 KiB ones, at 15 % more
 * CPU per byte); short messages do not wait behind them (SHORT below). */
#define QUANTUM_SHARED (64 * 1024)
#define QUANTUM_ALONE  (256 * 1024) /* when one has: no one to be fair to */
#define BATCH_BYTES    (512 * 1024)
/* A stream with at most this much queued is a message (a request, an answer, keystrokes): it is
 * framed ahead of the bulk streams' turns, in up to half of a batch, so bulk's large turns do not
 * delay it (behind 7 turns of 64 KiB on a 100 Mbit/s link it would wait 36 ms). */
#define SHORT_BYTES (16 * 1024)

/* ---- writing ------------------------------------------------------------------------------ */

static int batch_room(const batch *b) {
  return b->nframes < NP_MUX_BATCH_FRAMES && b->niov + 2 < NP_MUX_BATCH_IOVS &&
         b->bytes < BATCH_BYTES;
}

static void batch_hdr(batch *b, np__mux_cstream *s, uint8_t type, uint16_t flags, uint32_t id,
                      uint32_t len) {
  np__mux_hdr h = {
      .version = NP_MUX_VERSION, .type = type, .flags = flags, .stream = id, .length = len};
  np__mux_hdr_encode(&h, b->hdrs[b->nframes]);
  b->iov[b->niov++] = (np__mux_iov){(char *)b->hdrs[b->nframes], NP_MUX_HDR_LEN};
  b->frames[b->nframes++] = s;
  if (s != NULL)
    s->inflight++;
  b->bytes += NP_MUX_HDR_LEN;
}

/* One data frame of up to quantum bytes from s's queue (fewer if the batch runs out of iovecs). */
static void frame_data(batch *b, np__mux_cstream *s, size_t quantum) {
  size_t want = s->wbytes, take = 0;
  unsigned hdr_iov;

  if (want > s->send_window)
    want = s->send_window;
  if (want > quantum)
    want = quantum;
  hdr_iov = b->niov;
  batch_hdr(b, s, NP_MUX_DATA, 0, s->id, 0);
  while (take < want && b->niov < NP_MUX_BATCH_IOVS) {
    np__mux_wq *w = s->whead;
    np__mux_iov *src = &w->iov[w->idx];
    size_t n = src->len - w->off;
    if (n > want - take)
      n = want - take;
    if (n > 0)
      b->iov[b->niov++] = (np__mux_iov){src->base + w->off, n};
    take += n;
    w->off += n;
    w->left -= n;
    if (w->off == src->len) {
      w->idx++;
      w->off = 0;
    }
    if (w->left == 0) {
      s->whead = w->next;
      if (s->whead == NULL)
        s->wtail = NULL;
      w->next = b->done;
      b->done = w;
    }
  }
  np__mux_hdr_encode(&(np__mux_hdr){.version = NP_MUX_VERSION,
                                    .type = NP_MUX_DATA,
                                    .stream = s->id,
                                    .length = (uint32_t)take},
                     (unsigned char *)b->iov[hdr_iov].base);
  s->wbytes -= take;
  s->send_window -= (uint32_t)take;
  b->bytes += take;
}

int np__mux_core_pull(np__mux_core *c, const np__mux_iov **iov, unsigned *niov) {
  batch *b = &c->b;
  size_t i;

  if (c->busy || c->dead)
    return 0;
  b->niov = b->nframes = 0;
  b->bytes = 0;
  b->done = NULL;
  b->raw = NULL;
  if (c->raw != NULL) {
    b->raw = c->raw;
    b->iov[b->niov++] = (np__mux_iov){c->raw, c->raw_len};
    b->bytes += c->raw_len;
    c->raw = NULL;
  }
  for (i = 0; i < c->nctrl && batch_room(b); i++) {
    np__mux_hdr *h = &c->ctrl[i];
    batch_hdr(b, NULL, h->type, h->flags, h->stream, h->length);
  }
  memmove(c->ctrl, c->ctrl + i, (c->nctrl - i) * sizeof(*c->ctrl));
  c->nctrl -= i;
  /* Messages first. One that stays sendable (its FIN) goes to the ring's tail and is passed over
   * when the walk gets there. */
  for (np__mux_cstream *s = c->rhead, *next;
       s != NULL && batch_room(b) && b->bytes < BATCH_BYTES / 2; s = next) {
    next = s->rnext;
    if (s->wbytes > 0 && s->wbytes <= SHORT_BYTES && s->send_window >= s->wbytes) {
      ready_del(c, s);
      frame_data(b, s, SHORT_BYTES);
      if (sendable(s))
        ready_add(c, s);
    }
  }
  while (c->rhead != NULL && batch_room(b)) {
    np__mux_cstream *s = c->rhead;
    size_t quantum = c->nready > 1 ? QUANTUM_SHARED : QUANTUM_ALONE;
    ready_del(c, s);
    if (s->wbytes > 0 && s->send_window > 0) {
      frame_data(b, s, quantum);
    } else if (s->wbytes == 0 && s->fin_wanted && !s->fin_sent) {
      batch_hdr(b, s, NP_MUX_DATA, NP_MUX_FIN, s->id, 0);
      s->fin_sent = 1;
    }
    if (sendable(s))
      ready_add(c, s);
  }
  if (c->goaway_pending && batch_room(b)) {
    batch_hdr(b, NULL, NP_MUX_GO_AWAY, 0, 0, NP_MUX_GOAWAY_NORMAL);
    c->goaway_pending = 0;
    c->goaway_in_batch = 1;
  }
  if (b->niov == 0)
    return 0;
  c->busy = 1;
  *iov = b->iov;
  *niov = b->niov;
  return 1;
}

void np__mux_core_written(np__mux_core *c, int status) {
  batch *b = &c->b;
  np__mux_wq *done = b->done, *rev = NULL;
  int goaway_done = c->goaway_in_batch;

  /* Still busy while the callbacks run: a write or shutdown they make must not rebuild b under
   * these loops; it is pulled below. */
  c->goaway_in_batch = 0;
  b->done = NULL;
  free(b->raw);
  b->raw = NULL;
  for (unsigned i = 0; i < b->nframes; i++) {
    np__mux_cstream *s = b->frames[i];
    if (s == NULL)
      continue;
    s->inflight--;
    if (s->closing && s->inflight == 0)
      c->cb.stream_event(c, s);
  }
  /* Completions run in the order the writes were made. */
  while (done != NULL) {
    np__mux_wq *n = done->next;
    done->next = rev;
    rev = done;
    done = n;
  }
  while (rev != NULL) {
    np__mux_wq *n = rev->next;
    c->cb.write_done(c, rev->token, status);
    free(rev);
    rev = n;
  }
  for (unsigned i = 0; i < b->nframes; i++) {
    np__mux_cstream *s = b->frames[i];
    /* Only a stream's DATA frame with FIN is one (flags are bytes 2-3 of the header). */
    if (s != NULL && (b->hdrs[i][3] & NP_MUX_FIN) && b->hdrs[i][1] == NP_MUX_DATA && !s->closing)
      c->cb.fin_done(c, s, status);
  }
  b->nframes = 0;
  c->busy = 0;
  if (status != 0) {
    np__mux_core_fail(c, status, -1);
    return;
  }
  if (goaway_done && c->closing) {
    np__mux_core_fail(c, NP_MUX_ECANCELED, -1);
    return;
  }
  /* Only with something to send: a batch completed inside the turn would otherwise ask for a turn
   * of its own (mux.c keeps the loop from blocking for it) for nothing. */
  if (c->raw != NULL || c->nctrl > 0 || c->rhead != NULL || c->goaway_pending)
    want_write(c);
}

int np__mux_core_busy(const np__mux_core *c) {
  return c->busy;
}

/* ---- what the owner of a stream sends ----------------------------------------------------- */

int np__mux_core_write(np__mux_core *c, np__mux_cstream *s, const np__mux_iov *iov, unsigned n,
                       void *token) {
  size_t total = 0;
  np__mux_wq *w;

  if (s->closing || s->fin_wanted)
    return NP_MUX_EPIPE;
  if (s->err != 0)
    return s->err;
  for (unsigned i = 0; i < n; i++)
    total += iov[i].len;
  if (total == 0)
    return NP_MUX_EINVAL;
  if ((w = malloc(sizeof(*w) + n * sizeof(*iov))) == NULL)
    return NP_MUX_ENOMEM;
  w->next = NULL;
  w->token = token;
  w->left = total;
  w->idx = 0;
  w->off = 0;
  w->nbufs = n;
  memcpy(w->iov, iov, n * sizeof(*iov));
  /* Skip empty buffers up front, so framing always finds bytes at w->idx. */
  while (w->iov[w->idx].len == 0)
    w->idx++;
  if (s->wtail != NULL)
    s->wtail->next = w;
  else
    s->whead = w;
  s->wtail = w;
  s->wbytes += total;
  if (sendable(s))
    ready_add(c, s);
  want_write(c);
  return 0;
}

size_t np__mux_core_direct(np__mux_core *c, np__mux_cstream *s, size_t len,
                           unsigned char hdr[NP_MUX_HDR_LEN]) {
  size_t n = len;

  if (s->closing || s->fin_wanted || s->err != 0 || c->dead || c->busy || c->nctrl > 0 ||
      c->raw != NULL || c->rhead != NULL || s->whead != NULL || s->send_window == 0 || len == 0)
    return 0;
  if (n > s->send_window)
    n = s->send_window;
  if (n > QUANTUM_ALONE)
    n = QUANTUM_ALONE;
  np__mux_hdr_encode(
      &(np__mux_hdr){
          .version = NP_MUX_VERSION, .type = NP_MUX_DATA, .stream = s->id, .length = (uint32_t)n},
      hdr);
  return n;
}

int np__mux_core_direct_done(np__mux_core *c, np__mux_cstream *s, size_t n,
                             const unsigned char hdr[NP_MUX_HDR_LEN], const char *data,
                             size_t written) {
  size_t total = NP_MUX_HDR_LEN + n;

  if (written < total) {
    /* The frame is cut: the rest goes first, or the peer would read the next frame's header out
     * of this one's data. */
    size_t left = total - written;
    if ((c->raw = malloc(left)) == NULL) {
      np__mux_core_fail(c, NP_MUX_ENOMEM, -1);
      return NP_MUX_ENOMEM;
    }
    if (written < NP_MUX_HDR_LEN) {
      memcpy(c->raw, hdr + written, NP_MUX_HDR_LEN - written);
      memcpy(c->raw + NP_MUX_HDR_LEN - written, data, n);
    } else {
      memcpy(c->raw, data + (written - NP_MUX_HDR_LEN), left);
    }
    c->raw_len = left;
    want_write(c);
  }
  s->send_window -= (uint32_t)n;
  return 0;
}

int np__mux_core_shutdown(np__mux_core *c, np__mux_cstream *s) {
  if (s->closing || s->fin_wanted)
    return NP_MUX_EINVAL;
  if (s->err != 0)
    return s->err;
  s->fin_wanted = 1;
  if (sendable(s))
    ready_add(c, s);
  want_write(c);
  return 0;
}
