/* The direct path's QUIC connection: ngtcp2 0.12 with GnuTLS, on our loop, through the caller's
 * socket (see quic.h). ngtcp2 is the state machine (handshake, loss recovery, congestion control,
 * flow control); this file is its adapter: it hands ngtcp2 the datagrams that arrive, writes the
 * packets it builds to ops->send and wakes it at its expiry with one timer; its streams, each an
 * np_conn with the behaviour of a mux stream, are quic_stream.c's.
 *
 * Three handles: the timer (ngtcp2's expiry; on the server, before the client's first packet, the
 * wait for it), a prepare handle that writes packets once per loop turn, before the loop waits
 * (what a turn's input, reads and writes cause leaves together), and an idle handle, the tick,
 * from which every callback to the owners runs (ready, stream, closed, reads, write and shutdown
 * completions, closes). So nothing calls an owner from inside ngtcp2 (whose calls must not be
 * re-entered) or from inside an owner's own call into this module. */
#include "quic_int.h"

#include <stdlib.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

/* A stream's first window, and the connection's: ngtcp2 grows them up to the ..._MAX of quic.h
 * while readers keep up. */
#define STREAM_WINDOW (256 * 1024)
#define CONN_WINDOW   (1024 * 1024)
/* A packet's stream data spans at most two blocks; a little spare. */
#define VEC_MAX 4
/* Most datagrams one flush writes; ngtcp2's send quantum and pacing decide below that. */
#define BURST_MAX 64
#define CID_LEN   16
/* The PSK identity: one key per path, so the name is the same for all and says only what it is. */
#define PSK_IDENTITY "np-direct"
/* TLS 1.3 only, with an (EC)DHE exchange beside the PSK (psk_dhe_ke: forward secrecy, a stolen
 * path key opens no recorded session) and no PSK-only mode; ciphers whose hash is SHA-256, the
 * PSK's; no middlebox compatibility mode, which QUIC forbids (RFC 9001, 8.4). */
#define PRIORITY                                                                                   \
  "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305:-KX-ALL:+ECDHE-PSK:"  \
  "+DHE-PSK:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:%DISABLE_TLS13_COMPAT_MODE"

static void on_tick(uv_idle_t *h);
static void on_turn(uv_prepare_t *h);
static void fail_conn(np__quic *q, int liberr);

/* ---- packets out --------------------------------------------------------------------------- */

static void send_datagram(np__quic *q, const uint8_t *p, size_t n) {
  q->sent_bytes += n;
  q->ops.send(q->ud, p, n);
}

/* Grants decided where ngtcp2 may not be called (inside its callbacks) go out with the packets. */
static void grant(np__quic *q) {
  if (q->conn_credit > 0) {
    ngtcp2_conn_extend_max_offset(q->conn, q->conn_credit);
    q->conn_credit = 0;
  }
  if (q->streams_credit > 0) {
    ngtcp2_conn_extend_max_streams_bidi(q->conn, q->streams_credit);
    q->streams_credit = 0;
  }
}

static void on_timer(uv_timer_t *t);

/* ngtcp2's clock is uv_hrtime's (nanoseconds); the timer rounds up to the next millisecond, and
 * ngtcp2 paces with a millisecond's slack for it. From the timer's own callback never 0 ms: libuv
 * 1.44 would run it again in the same pass. */
static void arm_timer(np__quic *q) {
  ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(q->conn), now = uv_hrtime();
  uint64_t ms;

  if (exp == UINT64_MAX) {
    uv_timer_stop(&q->timer);
    return;
  }
  ms = exp <= now ? 0 : (exp - now + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS;
  if (ms == 0 && q->in_timer)
    ms = 1;
  uv_timer_start(&q->timer, on_timer, ms, 0);
}

/* The first sender with something to send that is not blocked in this round. */
static qstream *next_sender(np__quic *q, uint64_t round) {
  qstream *s, *next;
  for (s = q->shead; s != NULL; s = next) {
    next = s->snext;
    if (!np__qs_pending_send(s))
      np__qs_senders_del(q, s);
    else if (s->skip_round != round)
      return s;
  }
  return NULL;
}

static void stream_sent(qstream *s, size_t n, int fin) {
  s->sent += n;
  if (fin) {
    s->fin_sent = 1;
    if (!s->shut_due) {
      s->shut_due = 1;
      s->shut_status = 0;
      np__qs_notify(s);
    }
  }
}

/* Write packets until ngtcp2 has nothing more (or congestion control or pacing says wait), the
 * streams' data round robin, one packet each in turn, several streams' small writes coalesced into
 * one packet (NGTCP2_WRITE_STREAM_FLAG_MORE). */
static void flush(np__quic *q) {
  ngtcp2_tstamp ts = uv_hrtime();
  ngtcp2_pkt_info pi;
  size_t pkts = 0, burst, mtu;
  uint64_t round;

  if (q->conn == NULL || q->err != 0)
    return;
  grant(q);
  round = ++q->round;
  mtu = ngtcp2_conn_get_path_max_tx_udp_payload_size(q->conn);
  burst = ngtcp2_conn_get_send_quantum(q->conn) / (mtu > 0 ? mtu : 1);
  burst = burst == 0 ? 1 : burst > BURST_MAX ? BURST_MAX : burst;
  for (;;) {
    qstream *s = next_sender(q, round);
    ngtcp2_vec v[VEC_MAX];
    size_t nv = 0, total = 0;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
    ngtcp2_ssize n, datalen = -1;
    int fin = 0;

    if (s != NULL) {
      nv = np__qs_bq_vecs(&s->sq, (size_t)(s->sent - s->acked), v, VEC_MAX, &total);
      flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
      if (np__qs_fin_due(s) && !s->fin_sent && s->sent + total == s->acked + s->sq.bytes) {
        flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        fin = 1;
      }
    }
    n = ngtcp2_conn_writev_stream(q->conn, NULL, &pi, q->pkt, sizeof(q->pkt), &datalen, flags,
                                  s != NULL ? s->id : -1, v, nv, ts);
    if (s != NULL && datalen >= 0)
      stream_sent(s, (size_t)datalen, fin && (size_t)datalen == total);
    if (n == NGTCP2_ERR_WRITE_MORE && s != NULL) {
      /* Room left in the packet: the next stream's bytes join it. */
      np__qs_senders_del(q, s);
      if (np__qs_pending_send(s)) {
        np__qs_senders_add(q, s);
        if (datalen == 0)
          s->skip_round = round;
      }
      continue;
    }
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
      s->skip_round = round; /* its window or the connection's; a MAX_DATA frees it */
      continue;
    }
    if (n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
      np__qs_write_broke(s, UV_ECONNRESET); /* the peer asked it to stop (STOP_SENDING) */
      continue;
    }
    if (n < 0) {
      fail_conn(q, (int)n);
      return;
    }
    if (n == 0)
      break;
    if (s != NULL && s->in_senders) {
      np__qs_senders_del(q, s);
      np__qs_senders_add(q, s);
    }
    send_datagram(q, q->pkt, (size_t)n);
    if (q->err != 0)
      return;
    if (++pkts >= burst)
      break;
  }
  ngtcp2_conn_update_pkt_tx_time(q->conn, ts);
  arm_timer(q);
}

static void on_turn(uv_prepare_t *h) {
  uv_prepare_stop(h);
  flush(h->data);
}

static void on_timer(uv_timer_t *t) {
  np__quic *q = t->data;
  int r;

  if (q->err != 0)
    return;
  if (q->conn == NULL) {
    fail_conn(q, NGTCP2_ERR_IDLE_CLOSE); /* the server waited idle_ms for the client */
    return;
  }
  if ((r = ngtcp2_conn_handle_expiry(q->conn, uv_hrtime())) != 0) {
    fail_conn(q, r);
    return;
  }
  q->in_timer = 1;
  flush(q);
  q->in_timer = 0;
}

/* ---- the end ------------------------------------------------------------------------------- */

/* One CONNECTION_CLOSE, best effort: lost, the peer idles out instead. */
static void write_close(np__quic *q, const ngtcp2_connection_close_error *e) {
  ngtcp2_pkt_info pi;
  ngtcp2_ssize n;

  if (q->conn == NULL || ngtcp2_conn_is_in_closing_period(q->conn) ||
      ngtcp2_conn_is_in_draining_period(q->conn))
    return;
  n = ngtcp2_conn_write_connection_close(q->conn, NULL, &pi, q->pkt, sizeof(q->pkt), e,
                                         uv_hrtime());
  if (n > 0)
    send_datagram(q, q->pkt, (size_t)n);
}

/* The connection is over: streams learn it (readers after what they had, writers at once), and
 * closed() follows from the tick. ngtcp2's state stays until the memory goes. */
static void die(np__quic *q, int err) {
  if (q->err != 0)
    return;
  q->err = err;
  uv_timer_stop(&q->timer);
  uv_prepare_stop(&q->turn);
  for (qstream *s = q->streams; s != NULL; s = s->next) {
    if (!s->fin_rcvd && s->rerr == 0)
      s->rerr = UV_ECONNRESET;
    np__qs_write_broke(s, UV_ECONNRESET);
  }
  q->closed_due = 1;
  np__quic_tick_start(q);
}

/* What the peer's CONNECTION_CLOSE said. */
static int peer_err(np__quic *q) {
  ngtcp2_connection_close_error e;

  if (q->reset_seen)
    return UV_ECONNRESET;
  ngtcp2_conn_get_connection_close_error(q->conn, &e);
  if (e.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION)
    return e.error_code == 0 ? NP_ECLOSED : NP_EPROTO;
  if (e.type != NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT)
    return NP_EPROTO;
  /* An application close during the handshake travels as APPLICATION_ERROR (RFC 9000, 10.2.3). */
  if (e.error_code == NGTCP2_NO_ERROR || e.error_code == NGTCP2_APPLICATION_ERROR)
    return NP_ECLOSED;
  if ((e.error_code & ~(uint64_t)0xff) == NGTCP2_CRYPTO_ERROR)
    return q->handshaken ? NP_ETLS : NP_EAUTH; /* a TLS alert: before the end, the key */
  return NP_EPROTO;
}

/* ngtcp2 said the connection is over (liberr): tell the peer why unless it is gone or told us. */
static void fail_conn(np__quic *q, int liberr) {
  ngtcp2_connection_close_error e;
  int err, send = 1;

  ngtcp2_connection_close_error_default(&e);
  switch (liberr) {
  case NGTCP2_ERR_DRAINING:
  case NGTCP2_ERR_CLOSING:
    err = peer_err(q);
    send = 0;
    break;
  case NGTCP2_ERR_IDLE_CLOSE:
    err = UV_ETIMEDOUT;
    send = 0;
    break;
  case NGTCP2_ERR_DROP_CONN:
    err = NP_EPROTO;
    send = 0;
    break;
  case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
    err = UV_ETIMEDOUT;
    break;
  case NGTCP2_ERR_CRYPTO:
    err = q->handshaken ? NP_ETLS : NP_EAUTH;
    ngtcp2_connection_close_error_set_transport_error_tls_alert(
        &e, ngtcp2_conn_get_tls_alert(q->conn), NULL, 0);
    break;
  case NGTCP2_ERR_NOMEM:
    err = UV_ENOMEM;
    break;
  case NGTCP2_ERR_CALLBACK_FAILURE:
    err = q->cb_err != 0 ? q->cb_err : NP_EPROTO;
    break;
  default:
    err = NP_EPROTO;
    break;
  }
  if (liberr != NGTCP2_ERR_CRYPTO)
    ngtcp2_connection_close_error_set_transport_error_liberr(&e, liberr, NULL, 0);
  if (send)
    write_close(q, &e);
  die(q, err);
}

/* ---- ngtcp2's callbacks: no owner is called from here, only marks and queues ---------------- */

/* The TLS bytes go to GnuTLS; that some came marks a packet that decrypted (see np__quic_input). */
static int on_crypto_data(ngtcp2_conn *conn, ngtcp2_crypto_level level, uint64_t offset,
                          const uint8_t *data, size_t len, void *ud) {
  ((np__quic *)ud)->got_crypto = 1;
  return ngtcp2_crypto_recv_crypto_data_cb(conn, level, offset, data, len, ud);
}

static int on_handshake_completed(ngtcp2_conn *conn, void *ud) {
  np__quic *q = ud;
  gnutls_datum_t alpn;
  gnutls_kx_algorithm_t kx = gnutls_kx_get(q->tls);
  (void)conn;

  /* What the priority string already demands, checked where it counts: the peer proved the key
   * (PSK, not some other credential), with an (EC)DHE exchange, and speaks our protocol. */
  if (gnutls_auth_get_type(q->tls) != GNUTLS_CRD_PSK ||
      (kx != GNUTLS_KX_ECDHE_PSK && kx != GNUTLS_KX_DHE_PSK) ||
      gnutls_alpn_get_selected_protocol(q->tls, &alpn) != 0 ||
      alpn.size != sizeof(NP_QUIC_ALPN) - 1 || memcmp(alpn.data, NP_QUIC_ALPN, alpn.size) != 0) {
    q->cb_err = NP_EAUTH;
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  q->handshaken = 1;
  q->ready_due = 1;
  np__quic_tick_start(q);
  return 0;
}

static int on_stateless_reset(ngtcp2_conn *conn, const ngtcp2_pkt_stateless_reset *sr, void *ud) {
  (void)conn;
  (void)sr;
  ((np__quic *)ud)->reset_seen = 1;
  return 0;
}

static void on_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx) {
  (void)ctx;
  (void)gnutls_rnd(GNUTLS_RND_RANDOM, dest, len);
}

static int on_new_cid(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *ud) {
  (void)conn;
  (void)ud;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, cid->data, cidlen) != 0 ||
      gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
    return NGTCP2_ERR_CALLBACK_FAILURE;
  cid->datalen = cidlen;
  return 0;
}

/* ---- TLS ----------------------------------------------------------------------------------- */

static ngtcp2_conn *ref_conn(ngtcp2_crypto_conn_ref *ref) {
  return ((np__quic *)ref->user_data)->conn;
}

/* The server's key for whatever identity the client names: there is one key per path. */
static int psk_key(gnutls_session_t sess, const char *user, gnutls_datum_t *key) {
  ngtcp2_crypto_conn_ref *ref = gnutls_session_get_ptr(sess);
  np__quic *q = ref->user_data;
  (void)user;

  if ((key->data = gnutls_malloc(sizeof(q->key))) == NULL)
    return -1;
  memcpy(key->data, q->key, sizeof(q->key));
  key->size = sizeof(q->key);
  return 0;
}

static int creds_new(np__quic *q) {
  gnutls_datum_t key = {q->key, sizeof(q->key)};

  if (q->server) {
    if (gnutls_psk_allocate_server_credentials(&q->scred) != 0) {
      q->scred = NULL;
      return -1;
    }
    gnutls_psk_set_server_credentials_function(q->scred, psk_key);
    return 0;
  }
  if (gnutls_psk_allocate_client_credentials(&q->ccred) != 0) {
    q->ccred = NULL;
    return -1;
  }
  return gnutls_psk_set_client_credentials(q->ccred, PSK_IDENTITY, &key, GNUTLS_PSK_KEY_RAW) == 0
             ? 0
             : -1;
}

static int session_new(np__quic *q) {
  static const gnutls_datum_t alpn = {(unsigned char *)NP_QUIC_ALPN, sizeof(NP_QUIC_ALPN) - 1};
  /* No tickets: a path's key is used once, nothing is ever resumed (and no 0-RTT, replayable). */
  if (gnutls_init(&q->tls, (q->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_TICKETS) != 0) {
    q->tls = NULL;
    return -1;
  }
  gnutls_session_set_ptr(q->tls, &q->ref);
  if (gnutls_priority_set_direct(q->tls, PRIORITY, NULL) != 0 ||
      (q->server ? ngtcp2_crypto_gnutls_configure_server_session(q->tls)
                 : ngtcp2_crypto_gnutls_configure_client_session(q->tls)) != 0 ||
      gnutls_credentials_set(q->tls, GNUTLS_CRD_PSK,
                             q->server ? (void *)q->scred : (void *)q->ccred) != 0 ||
      gnutls_alpn_set_protocols(q->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0)
    return -1;
  return 0;
}

/* ---- the connection ------------------------------------------------------------------------ */

static void conn_drop(np__quic *q) {
  if (q->conn != NULL)
    ngtcp2_conn_del(q->conn);
  if (q->tls != NULL)
    gnutls_deinit(q->tls);
  q->conn = NULL;
  q->tls = NULL;
}

/* The ngtcp2 connection: the client's at once, the server's at the client's first Initial (hd). */
static int conn_start(np__quic *q, const ngtcp2_pkt_hd *hd) {
  ngtcp2_callbacks cb = {
      .recv_crypto_data = on_crypto_data,
      .handshake_completed = on_handshake_completed,
      .encrypt = ngtcp2_crypto_encrypt_cb,
      .decrypt = ngtcp2_crypto_decrypt_cb,
      .hp_mask = ngtcp2_crypto_hp_mask_cb,
      .recv_stream_data = np__qs_on_recv,
      .acked_stream_data_offset = np__qs_on_acked,
      .stream_open = np__qs_on_open,
      .stream_close = np__qs_on_close,
      .recv_stateless_reset = on_stateless_reset,
      .rand = on_rand,
      .get_new_connection_id = on_new_cid,
      .update_key = ngtcp2_crypto_update_key_cb,
      .stream_reset = np__qs_on_reset,
      .extend_max_stream_data = np__qs_on_extend,
      .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
      .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
      .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
      .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
  };
  ngtcp2_settings set;
  ngtcp2_transport_params tp;
  ngtcp2_cid scid, dcid;
  int r;

  if (session_new(q) != 0) {
    conn_drop(q);
    return NP_ETLS;
  }
  ngtcp2_settings_default(&set);
  set.initial_ts = uv_hrtime();
  set.cc_algo = NGTCP2_CC_ALGO_CUBIC;
  set.max_window = NP_QUIC_CONN_WINDOW_MAX;
  set.max_stream_window = NP_QUIC_STREAM_WINDOW_MAX;
  set.handshake_timeout = q->idle_ms * NGTCP2_MILLISECONDS;
  ngtcp2_transport_params_default(&tp);
  tp.initial_max_stream_data_bidi_local = STREAM_WINDOW;
  tp.initial_max_stream_data_bidi_remote = STREAM_WINDOW;
  tp.initial_max_data = CONN_WINDOW;
  tp.initial_max_streams_bidi = q->server ? NP_QUIC_MAX_STREAMS : 0;
  /* ngtcp2 restarts its idle timer at the first packet it sends after one it received: with a
   * keepalive idle_ms/3 after the last packet, a timeout of 2/3 ends a vanished peer's connection
   * idle_ms after its last packet. */
  tp.max_idle_timeout = q->idle_ms * 2 / 3 * NGTCP2_MILLISECONDS;
  tp.disable_active_migration = 1; /* the path is the punched one: nowhere to move */
  scid.datalen = CID_LEN;
  if (gnutls_rnd(GNUTLS_RND_RANDOM, scid.data, scid.datalen) != 0) {
    conn_drop(q);
    return NP_ETLS;
  }
  if (q->server) {
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    tp.original_dcid = hd->dcid;
    r = ngtcp2_conn_server_new(&q->conn, &hd->scid, &scid, &q->path, hd->version, &cb, &set, &tp,
                               NULL, q);
  } else {
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    dcid.datalen = CID_LEN;
    if (gnutls_rnd(GNUTLS_RND_RANDOM, dcid.data, dcid.datalen) != 0) {
      conn_drop(q);
      return NP_ETLS;
    }
    r = ngtcp2_conn_client_new(&q->conn, &dcid, &scid, &q->path, NGTCP2_PROTO_VER_V1, &cb, &set,
                               &tp, NULL, q);
  }
  if (r != 0) {
    q->conn = NULL;
    conn_drop(q);
    return r == NGTCP2_ERR_NOMEM ? UV_ENOMEM : NP_ETLS;
  }
  ngtcp2_conn_set_tls_native_handle(q->conn, q->tls);
  ngtcp2_conn_set_keep_alive_timeout(q->conn, q->idle_ms / 3 * NGTCP2_MILLISECONDS);
  return 0;
}

static void destroy(np__quic *q) {
  conn_drop(q);
  if (q->ccred != NULL)
    gnutls_psk_free_client_credentials(q->ccred);
  if (q->scred != NULL)
    gnutls_psk_free_server_credentials(q->scred);
  free(q);
}

static void on_handle_closed(uv_handle_t *h) {
  np__quic *q = h->data;
  if (--q->handles == 0)
    destroy(q);
}

/* Freed, and the owners have closed every stream they got: what is left goes, then the handles. */
static void maybe_free(np__quic *q) {
  qstream *s, *next;

  if (!q->freed || q->closing_handles || q->nhead != NULL || q->ahead != NULL)
    return;
  for (s = q->streams; s != NULL; s = s->next)
    if (s->owned && !s->close_told)
      return;
  for (s = q->streams; s != NULL; s = next) {
    next = s->next;
    np__qs_release(s);
  }
  q->closing_handles = 1;
  q->handles = 3;
  uv_close((uv_handle_t *)&q->timer, on_handle_closed);
  uv_close((uv_handle_t *)&q->tick, on_handle_closed);
  uv_close((uv_handle_t *)&q->turn, on_handle_closed);
}

static void on_tick(uv_idle_t *h) {
  np__quic *q = h->data;
  qstream *s;

  if (q->ready_due) {
    q->ready_due = 0;
    if (q->err == 0 && q->ops.ready != NULL)
      q->ops.ready(q->ud);
  }
  while ((s = q->ahead) != NULL) {
    q->ahead = s->anext;
    if (q->ahead == NULL)
      q->atail = NULL;
    if (q->err != 0) {
      np__qs_release(s); /* never handed out, and ngtcp2 is done with it */
      continue;
    }
    s->owned = 1;
    q->ops.stream(q->ud, &s->base);
  }
  while ((s = q->nhead) != NULL) {
    q->nhead = s->nnext;
    if (q->nhead == NULL)
      q->ntail = NULL;
    s->in_notify = 0;
    np__qs_tell(s);
  }
  if (q->closed_due && !q->closed_told) {
    q->closed_told = 1;
    if (!q->freed)
      q->ops.closed(q->ud, q->err);
  }
  if (q->nhead == NULL && q->ahead == NULL && !q->ready_due)
    uv_idle_stop(&q->tick);
  maybe_free(q);
}

int np__quic_new(uv_loop_t *loop, int server, const struct sockaddr *local,
                 const struct sockaddr *peer, const uint8_t key[32], uint64_t idle_ms,
                 const np__quic_ops *ops, void *ud, np__quic **out) {
  np__quic *q;
  int r;

  if (loop == NULL || local == NULL || peer == NULL || key == NULL || ops == NULL || out == NULL ||
      ops->send == NULL || ops->closed == NULL || (server && ops->stream == NULL) || idle_ms < 3)
    return UV_EINVAL;
  if ((local->sa_family != AF_INET && local->sa_family != AF_INET6) ||
      (peer->sa_family != AF_INET && peer->sa_family != AF_INET6))
    return UV_EINVAL;
  if ((q = calloc(1, sizeof(*q))) == NULL)
    return UV_ENOMEM;
  q->loop = loop;
  q->server = server != 0;
  memcpy(q->key, key, sizeof(q->key));
  q->idle_ms = idle_ms;
  q->ops = *ops;
  q->ud = ud;
  np__addr_copy(&q->local, local);
  np__addr_copy(&q->peer, peer);
  q->path.local.addr = &q->local.sa;
  q->path.local.addrlen =
      local->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  q->path.remote.addr = &q->peer.sa;
  q->path.remote.addrlen =
      peer->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
  q->on_tick = on_tick;
  q->on_turn = on_turn;
  q->fail = fail_conn;
  q->ref.get_conn = ref_conn;
  q->ref.user_data = q;
  if (creds_new(q) != 0) {
    destroy(q);
    return NP_ETLS;
  }
  if (!q->server && (r = conn_start(q, NULL)) != 0) {
    destroy(q);
    return r;
  }
  uv_timer_init(loop, &q->timer);
  uv_idle_init(loop, &q->tick);
  uv_prepare_init(loop, &q->turn);
  q->timer.data = q->tick.data = q->turn.data = q;
  if (q->server)
    uv_timer_start(&q->timer, on_timer, idle_ms, 0);
  else
    np__quic_turn_start(q); /* the first flight leaves before the loop next waits */
  *out = q;
  return 0;
}

void np__quic_input(np__quic *q, const uint8_t *data, size_t len) {
  ngtcp2_pkt_hd hd;
  int fresh = 0, r;

  if (q == NULL || q->err != 0 || data == NULL || len == 0)
    return;
  q->recvd_bytes += len;
  if (q->conn == NULL) {
    if (!q->server || ngtcp2_accept(&hd, data, len) != 0 || conn_start(q, &hd) != 0)
      return;
    fresh = 1;
  }
  q->got_crypto = 0;
  r = ngtcp2_conn_read_pkt(q->conn, &q->path, NULL, data, len, uv_hrtime());
  if (fresh && r != NGTCP2_ERR_CRYPTO && (r != 0 || !q->got_crypto)) {
    /* What looked like a client's first packet and was not (it did not decrypt, or carried no
     * ClientHello's start): forget it and go on waiting, or a stray datagram would end the server,
     * or take the place of its client, before the client came. */
    conn_drop(q);
    return;
  }
  if (r != 0) {
    fail_conn(q, r);
    return;
  }
  np__quic_turn_start(q);
}

int np__quic_open(np__quic *q, np_conn **out) {
  qstream *s;
  int64_t id;
  int r;

  if (q->server)
    return UV_EINVAL;
  if (q->err != 0)
    return UV_ENOTCONN;
  if (!q->handshaken)
    return UV_EAGAIN;
  if ((s = np__qs_new(q, -1, 1)) == NULL)
    return UV_ENOMEM;
  if ((r = ngtcp2_conn_open_bidi_stream(q->conn, &id, s)) != 0) {
    np__qs_release(s);
    return r == NGTCP2_ERR_STREAM_ID_BLOCKED ? UV_EAGAIN : UV_ENOMEM;
  }
  s->id = id;
  s->owned = 1;
  *out = &s->base;
  return 0;
}

void np__quic_close(np__quic *q) {
  ngtcp2_connection_close_error e;

  if (q == NULL || q->err != 0)
    return;
  ngtcp2_connection_close_error_set_application_error(&e, 0, NULL, 0);
  write_close(q, &e);
  die(q, UV_ECANCELED);
}

void np__quic_free(np__quic *q) {
  if (q == NULL || q->freed)
    return;
  q->freed = 1;
  np__quic_close(q);
  maybe_free(q);
}

void np__quic_stats(np__quic *q, uint64_t *sent, uint64_t *recvd, uint64_t *srtt_us,
                    uint64_t *lost) {
  ngtcp2_conn_stat st;
  uint64_t l = q->lost;

  if (sent != NULL)
    *sent = q->sent_bytes;
  if (recvd != NULL)
    *recvd = q->recvd_bytes;
  if (srtt_us != NULL) {
    *srtt_us = 0;
    if (q->conn != NULL) {
      ngtcp2_conn_get_conn_stat(q->conn, &st);
      if (st.first_rtt_sample_ts != UINT64_MAX)
        *srtt_us = st.smoothed_rtt / NGTCP2_MICROSECONDS;
    }
  }
  if (lost != NULL) {
    for (qstream *s = q->streams; q->conn != NULL && s != NULL; s = s->next)
      if (!s->gone && s->id >= 0)
        l += ngtcp2_conn_get_stream_loss_count(q->conn, s->id);
    *lost = l;
  }
}
