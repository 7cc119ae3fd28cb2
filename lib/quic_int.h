/* Inside the direct path's QUIC transport (quic.h): the connection (quic.c: packets, timers, TLS,
 * the end) and its streams (quic_stream.c: byte queues, the np_conn ops, ngtcp2's stream
 * callbacks) share these structures. Nothing here is seen outside those two files. */
#ifndef NP_QUIC_INT_H
#define NP_QUIC_INT_H

#include "quic.h"

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include "internal.h"

/* ngtcp2's largest datagram: it starts at 1,200 bytes and probes the path up to this. */
#define PKT_MAX 1452
/* Stream buffers come and go in blocks of this. */
#define BLK (16 * 1024)
/* Our application error code in RESET_STREAM and STOP_SENDING: the owner closed a stream that had
 * not finished both ways. The peer only learns that its stream broke (UV_ECONNRESET). */
#define APP_RESET 1

typedef struct blk {
  struct blk *next;
  size_t len;
  uint8_t data[BLK];
} blk;

/* A byte queue in blocks that never move: ngtcp2 keeps pointers to sent bytes until they are
 * acknowledged. pos: bytes of the head block already taken. */
typedef struct bq {
  blk *head, *tail;
  size_t pos, bytes;
} bq;

/* A write waiting for room in its stream's send buffer, or completed and waiting for the tick to
 * tell its writer. The caller's bytes stay where they are until copied. */
typedef struct wnode {
  struct wnode *next;
  np_conn_write *req;
  int status;
  unsigned nbufs, idx;
  size_t off;
  uv_buf_t bufs[];
} wnode;

typedef struct qstream {
  np_conn base;
  np__quic *q;
  int64_t id;
  struct qstream *prev, *next;   /* q->streams: all */
  struct qstream *sprev, *snext; /* q->shead: bytes or a FIN to send */
  struct qstream *nnext;         /* q->nhead: something to tell the owner */
  struct qstream *anext;         /* q->ahead: to hand to ops->stream */
  bq rq, sq;                     /* received and unread; written and unacknowledged */
  uint64_t acked, sent;          /* stream offsets: sq starts at acked; ngtcp2 has up to sent */
  uint64_t skip_round;           /* blocked in this flush */
  wnode *wq, *wq_tail;           /* waiting for room in sq */
  wnode *done, *done_tail;       /* callbacks due */
  np_conn_shutdown_cb shutdown_cb;
  np_conn_close_cb close_cb;
  int rerr, werr, shut_status;
  unsigned reading : 1, fin_rcvd : 1, eof_told : 1, err_told : 1, discard : 1;
  unsigned shut_req : 1, fin_sent : 1, shut_due : 1, shut_told : 1, reset_sent : 1;
  unsigned closing : 1, close_told : 1, gone : 1, owned : 1, local : 1;
  unsigned in_notify : 1, in_senders : 1;
} qstream;

struct np__quic {
  uv_loop_t *loop;
  np__quic_ops ops;
  void *ud;
  /* What a stream asks of its connection, set by quic.c: the tick's and the turn's callbacks, and
   * the end for ngtcp2's error liberr. Pointers, so the streams never call up into quic.c and the
   * two files stay a layer each (docs/design.md, "Layers"). */
  uv_idle_cb on_tick;
  uv_prepare_cb on_turn;
  void (*fail)(np__quic *q, int liberr);
  int server;
  uint8_t key[32];
  uint64_t idle_ms;
  np__addr local, peer;
  ngtcp2_path path;
  ngtcp2_conn *conn; /* the server's is made by the client's first Initial packet */
  ngtcp2_crypto_conn_ref ref;
  gnutls_session_t tls;
  gnutls_psk_client_credentials_t ccred;
  gnutls_psk_server_credentials_t scred;
  uv_timer_t timer;
  uv_idle_t tick;
  uv_prepare_t turn;
  int handles; /* closing: how many are left */
  qstream *streams;
  qstream *shead, *stail; /* senders, round robin */
  qstream *nhead, *ntail;
  qstream *ahead, *atail;
  uint64_t round;
  uint64_t conn_credit;  /* bytes read or dropped since the window was last extended */
  size_t streams_credit; /* the peer's streams gone since its limit was last raised */
  int cb_err;            /* why a callback failed ngtcp2's call */
  int err;               /* why the connection ended; 0 while it lives */
  uint64_t sent_bytes, recvd_bytes, lost;
  unsigned handshaken : 1, ready_due : 1, closed_due : 1, closed_told : 1, freed : 1;
  unsigned closing_handles : 1, reset_seen : 1, in_timer : 1, got_crypto : 1;
  uint8_t pkt[PKT_MAX];
};

/* Wake the tick (which tells owners) and the turn (which writes packets) on this loop turn. */
static inline void np__quic_tick_start(np__quic *q) {
  if (!q->closing_handles)
    uv_idle_start(&q->tick, q->on_tick);
}

static inline void np__quic_turn_start(np__quic *q) {
  if (!q->closing_handles && q->err == 0)
    uv_prepare_start(&q->turn, q->on_turn);
}

/* quic_stream.c */
qstream *np__qs_new(np__quic *q, int64_t id, int local);
void np__qs_release(qstream *s);
int np__qs_fin_due(const qstream *s);
int np__qs_pending_send(const qstream *s);
size_t np__qs_bq_vecs(const bq *b, size_t off, ngtcp2_vec *v, size_t max, size_t *total);
void np__qs_write_broke(qstream *s, int err);
void np__qs_notify(qstream *s);
void np__qs_tell(qstream *s);
void np__qs_senders_add(np__quic *q, qstream *s);
void np__qs_senders_del(np__quic *q, qstream *s);
int np__qs_on_open(ngtcp2_conn *conn, int64_t id, void *ud);
int np__qs_on_recv(ngtcp2_conn *conn, uint32_t flags, int64_t id, uint64_t offset,
                   const uint8_t *data, size_t len, void *ud, void *sud);
int np__qs_on_acked(ngtcp2_conn *conn, int64_t id, uint64_t offset, uint64_t len, void *ud,
                    void *sud);
int np__qs_on_close(ngtcp2_conn *conn, uint32_t flags, int64_t id, uint64_t app_err, void *ud,
                    void *sud);
int np__qs_on_reset(ngtcp2_conn *conn, int64_t id, uint64_t final_size, uint64_t app_err, void *ud,
                    void *sud);
int np__qs_on_extend(ngtcp2_conn *conn, int64_t id, uint64_t max_data, void *ud, void *sud);

#endif
