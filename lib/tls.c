/* TLS conns: ciphertext moves between the inner conn and a BIO of our own (conn_bio below); OpenSSL
 * never touches a socket, so the conn works over anything that is an np_conn. This file is the
 * conn: the pump, reading, writing, shutdown and close, the handshake, key export, and a conn's
 * move to another loop (move_out, np__tls_adopt). The contexts conns are made from (settings, the
 * check of the server's certificate and the report of a failed handshake, fingerprints) are
 * tls_ctx.c's; this file calls it, and it calls nothing here. */
#include "tls.h"

#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls_int.h"

/* TLS record content types (RFC 8446 §5.1): a peer speaking TLS starts with a handshake record, and
 * a TLS server answers with a handshake record or an alert. */
#define REC_ALERT     21
#define REC_HANDSHAKE 22
#define READ_CHUNK    65536
/* TLS 1.3 record: at most 16 KiB of plaintext; on the wire 5 bytes of header, the content type and
 * a 16-byte tag more (RFC 8446 §5.2). */
#define RECORD_MAX      16384
#define RECORD_OVERHEAD 22

typedef struct tls_conn tls_conn;

/* Ciphertext on its way to the inner conn; outer is the caller's write it completes, if any. */
typedef struct txbuf {
  np_conn_write w;
  tls_conn *c;
  np_conn_write *outer;
  size_t len, cap;
  char data[];
} txbuf;

struct tls_conn {
  np_conn base;
  np_conn *inner;
  np__tls *t;
  SSL *ssl;
  /* The network side, what conn_bio reads and writes. tx: the records made since the last flush,
   * sent as they are. in/in_len: the inner conn's buffer, only during on_inner_read; what OpenSSL
   * has not taken of it when that returns (a reader that paused) is kept in rest. */
  txbuf *tx;
  const char *in;
  size_t in_len;
  char *rest;
  size_t rest_off, rest_len, rest_cap;
  uv_timer_t pump; /* delivers what read_start finds already decrypted or pending */
  np__tls_handshake_cb hs_cb;
  void *hs_data;
  np_conn_shutdown_cb shutdown_cb;
  np_conn_close_cb close_cb;
  int in_err;        /* the inner conn's end (UV_EOF or an error), or ours, to be delivered */
  int rx_end;        /* close_notify (UV_EOF) or a TLS error read, not yet delivered */
  unsigned inflight; /* txbufs not yet completed */
  uint64_t wire_bytes;
  int closes_left;                /* inner and pump */
  struct np__tls_verdict verdict; /* filled in by tls_ctx.c's verify callback */
  unsigned hs_done : 1, sniffed : 1, reading : 1, inner_reading : 1, rx_done : 1;
  unsigned refused : 1, lingering : 1; /* a plaintext peer, answered in its own terms */
  unsigned closing : 1, err_after_flush : 1, failed : 1;
};

static void progress(tls_conn *c);
static void on_pump(uv_timer_t *t);

/* ---- writing ------------------------------------------------------------------------------- */

static void on_tx_done(np_conn_write *w, int status) {
  txbuf *b = NP_CONTAINER_OF(w, txbuf, w);
  tls_conn *c = b->c;
  np_conn_write *outer = b->outer;

  free(b);
  c->inflight--;
  if (c->err_after_flush && c->inflight == 0 && !c->closing)
    uv_timer_start(&c->pump, on_pump, 0, 0);
  if (outer != NULL)
    outer->cb(outer, status);
}

/* ---- conn_bio: OpenSSL's network side ------------------------------------------------------ */

/* A memory BIO zeroed and copied every ciphertext byte once more on each side, and kept its largest
 * size for the life of the connection. This one appends records to the txbuf that is then sent as
 * it is, and reads from the inner conn's buffer in place. */

/* Room for n more bytes in c->tx: grown by doubling, so a batch's records are copied at most once
 * more in all (encrypt reserves the whole batch up front, so usually never). */
static int tx_reserve(tls_conn *c, size_t n) {
  size_t len = c->tx != NULL ? c->tx->len : 0, cap = c->tx != NULL ? c->tx->cap : 0;
  txbuf *b;

  if (c->tx != NULL && len + n <= cap)
    return 0;
  cap = cap * 2 > len + n ? cap * 2 : len + n;
  if ((b = realloc(c->tx, sizeof(*b) + cap)) == NULL)
    return UV_ENOMEM;
  if (c->tx == NULL)
    b->len = 0;
  b->cap = cap;
  c->tx = b;
  return 0;
}

static int bio_write(BIO *bio, const char *data, size_t len, size_t *written) {
  tls_conn *c = BIO_get_data(bio);

  BIO_clear_retry_flags(bio);
  if (tx_reserve(c, len) != 0)
    return 0;
  memcpy(c->tx->data + c->tx->len, data, len);
  c->tx->len += len;
  *written = len;
  return 1;
}

static size_t rx_pending(const tls_conn *c) {
  return c->rest_len + c->in_len;
}

static int bio_read(BIO *bio, char *out, size_t len, size_t *got) {
  tls_conn *c = BIO_get_data(bio);
  size_t n;

  BIO_clear_retry_flags(bio);
  if (c->rest_len > 0) {
    n = len < c->rest_len ? len : c->rest_len;
    memcpy(out, c->rest + c->rest_off, n);
    c->rest_off += n;
    c->rest_len -= n;
    if (c->rest_len == 0) {
      /* Kept only while a reader pauses: an idle conn holds none. */
      free(c->rest);
      c->rest = NULL;
      c->rest_cap = c->rest_off = 0;
    }
  } else if (c->in_len > 0) {
    n = len < c->in_len ? len : c->in_len;
    memcpy(out, c->in, n);
    c->in += n;
    c->in_len -= n;
  } else {
    /* No bytes yet, not the end: the inner conn's end is handled above OpenSSL. */
    BIO_set_retry_read(bio);
    return 0;
  }
  *got = n;
  return 1;
}

/* What on_inner_read's buffer still holds when it returns: copied, since the buffer is reused. */
static int rx_keep(tls_conn *c) {
  if (c->in_len == 0)
    return 0;
  if (c->rest_len == 0)
    c->rest_off = 0;
  if (c->rest_off + c->rest_len + c->in_len > c->rest_cap) {
    size_t cap = c->rest_len + c->in_len;
    char *r;
    if (c->rest_len > 0 && c->rest_off > 0) /* (never with a NULL rest: UBSan) */
      memmove(c->rest, c->rest + c->rest_off, c->rest_len);
    c->rest_off = 0;
    if (cap > c->rest_cap) {
      if ((r = realloc(c->rest, cap)) == NULL)
        return UV_ENOMEM;
      c->rest = r;
      c->rest_cap = cap;
    }
  }
  memcpy(c->rest + c->rest_off + c->rest_len, c->in, c->in_len);
  c->rest_len += c->in_len;
  c->in_len = 0;
  return 0;
}

static long bio_ctrl(BIO *bio, int cmd, long num, void *ptr) {
  tls_conn *c = BIO_get_data(bio);
  (void)num;
  (void)ptr;
  switch (cmd) {
  case BIO_CTRL_FLUSH: /* records go out when the conn flushes */
    return 1;
  case BIO_CTRL_PENDING:
    return (long)rx_pending(c);
  case BIO_CTRL_WPENDING:
    return c->tx != NULL ? (long)c->tx->len : 0;
  default:
    return 0;
  }
}

static int bio_create(BIO *bio) {
  BIO_set_init(bio, 1);
  return 1;
}

/* Made once per process and never freed (it holds no conn); a failure to make it (out of memory)
 * is tried again by the next conn, not remembered. */
static BIO_METHOD *bio_method;
static uv_mutex_t bio_method_mu;
static uv_once_t bio_method_once = UV_ONCE_INIT;
static int bio_method_mu_ok;

static void init_bio_method_mu(void) {
  bio_method_mu_ok = uv_mutex_init(&bio_method_mu) == 0;
}

static BIO_METHOD *conn_bio_method(void) {
  BIO_METHOD *m;
  int index;

  uv_once(&bio_method_once, init_bio_method_mu);
  if (!bio_method_mu_ok)
    return NULL;
  uv_mutex_lock(&bio_method_mu);
  if (bio_method == NULL && (index = BIO_get_new_index()) != -1 &&
      (m = BIO_meth_new(index | BIO_TYPE_SOURCE_SINK, "np conn")) != NULL) {
    if (BIO_meth_set_write_ex(m, bio_write) == 1 && BIO_meth_set_read_ex(m, bio_read) == 1 &&
        BIO_meth_set_ctrl(m, bio_ctrl) == 1 && BIO_meth_set_create(m, bio_create) == 1)
      bio_method = m;
    else
      BIO_meth_free(m);
  }
  m = bio_method;
  uv_mutex_unlock(&bio_method_mu);
  return m;
}

static txbuf *take_ciphertext(tls_conn *c) {
  txbuf *b = c->tx;

  if (b == NULL && tx_reserve(c, 0) != 0)
    return NULL;
  b = c->tx;
  c->tx = NULL;
  b->c = c;
  b->outer = NULL;
  return b;
}

/* Send the first skip bytes' remainder of b on the inner conn; b completes outer. */
static int send_txbuf(tls_conn *c, txbuf *b, size_t skip, np_conn_write *outer) {
  uv_buf_t u = uv_buf_init(b->data + skip, (unsigned)(b->len - skip));
  int r;

  b->outer = outer;
  if ((r = np__conn_write(c->inner, &b->w, &u, 1, on_tx_done)) != 0) {
    free(b);
    return r;
  }
  c->wire_bytes += u.len;
  c->inflight++;
  return 0;
}

/* Whatever OpenSSL produced (handshake messages, alerts, records): onto the wire, completing outer
 * when the inner conn has taken it. */
static int flush(tls_conn *c, np_conn_write *outer) {
  txbuf *b;

  if (outer == NULL && (c->tx == NULL || c->tx->len == 0))
    return 0;
  if ((b = take_ciphertext(c)) == NULL)
    return UV_ENOMEM;
  return send_txbuf(c, b, 0, outer);
}

/* Plaintext to records. Pieces are gathered into records of up to 16 KiB: a 12-byte mux header or
 * a short message written as its own record cost a record's overhead and an AEAD call each, so
 * small pieces are copied together and only pieces of a record or more go to OpenSSL as they are
 * (a copy of a few bytes is cheaper than a record; a copy of a bulk piece is not). */
static int encrypt_pieces(tls_conn *c, const uv_buf_t *bufs, unsigned nbufs, char *stage) {
  size_t staged = 0, n;

  for (unsigned i = 0; i < nbufs; i++) {
    const char *p = bufs[i].base;
    size_t len = bufs[i].len;
    if (len >= RECORD_MAX) {
      /* Its own records: what is staged goes first, in order. */
      if (staged > 0 && SSL_write_ex(c->ssl, stage, staged, &n) != 1)
        return NP_ETLS;
      staged = 0;
      if (SSL_write_ex(c->ssl, p, len - len % RECORD_MAX, &n) != 1)
        return NP_ETLS;
      p += len - len % RECORD_MAX;
      len %= RECORD_MAX;
    }
    while (len > 0) {
      size_t take = RECORD_MAX - staged < len ? RECORD_MAX - staged : len;
      memcpy(stage + staged, p, take);
      staged += take;
      p += take;
      len -= take;
      if (staged == RECORD_MAX) {
        if (SSL_write_ex(c->ssl, stage, staged, &n) != 1)
          return NP_ETLS;
        staged = 0;
      }
    }
  }
  /* Our BIO takes everything: SSL_write never stops half way here. */
  if (staged > 0 && SSL_write_ex(c->ssl, stage, staged, &n) != 1)
    return NP_ETLS;
  return 0;
}

static int encrypt(tls_conn *c, const uv_buf_t *bufs, unsigned nbufs, size_t *total) {
  char *stage = np__scratch(NP_SCRATCH_TLS_STAGE, RECORD_MAX);
  size_t want = 0, mark;

  if (c->failed)
    return c->in_err;
  if (!c->hs_done || c->closing)
    return UV_ENOTCONN;
  if (stage == NULL)
    return UV_ENOMEM;
  for (unsigned i = 0; i < nbufs; i++) {
    if (bufs[i].len > INT32_MAX - want)
      return UV_E2BIG;
    want += bufs[i].len;
  }
  /* Room for every record up front, so the BIO cannot fail in the middle of the batch. */
  if (tx_reserve(c, want + (want / RECORD_MAX + nbufs + 1) * RECORD_OVERHEAD) != 0)
    return UV_ENOMEM;
  *total = want;
  mark = c->tx->len;
  ERR_clear_error();
  if (encrypt_pieces(c, bufs, nbufs, stage) != 0) {
    /* Part of a batch must never reach the peer (a cut frame), and OpenSSL may hold half a
     * record: the conn is done. */
    c->tx->len = mark;
    c->in_err = NP_ETLS;
    c->failed = 1;
    return NP_ETLS;
  }
  return 0;
}

static int tls_write(np_conn *conn, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  tls_conn *c = (tls_conn *)conn;
  size_t total;
  int r;

  if ((r = encrypt(c, bufs, nbufs, &total)) != 0)
    return r;
  return flush(c, req);
}

/* All or nothing: what is encrypted must be sent, so a short inner write queues the rest, and the
 * next try answers EAGAIN until it is gone (one batch queued at most). */
static int tls_try_write(np_conn *conn, const uv_buf_t *bufs, unsigned nbufs) {
  tls_conn *c = (tls_conn *)conn;
  size_t total;
  txbuf *b;
  int r, w;

  if (c->inflight > 0 && c->hs_done)
    return UV_EAGAIN;
  if ((r = encrypt(c, bufs, nbufs, &total)) != 0)
    return r;
  if ((b = take_ciphertext(c)) == NULL)
    return UV_ENOMEM;
  w = np__conn_try_write(c->inner, b->data, b->len);
  if (w == UV_EAGAIN)
    w = 0;
  if (w > 0)
    c->wire_bytes += (size_t)w;
  if (w < 0 || (size_t)w == b->len) {
    free(b);
    return w < 0 ? w : (int)total;
  }
  if ((r = send_txbuf(c, b, (size_t)w, NULL)) != 0)
    return r;
  return (int)total;
}

static void on_inner_shutdown(np_conn *in, int status) {
  tls_conn *c = in->data;
  c->shutdown_cb(&c->base, status);
}

static int tls_shutdown(np_conn *conn, np_conn_shutdown_cb cb) {
  tls_conn *c = (tls_conn *)conn;
  int r;

  if (!c->hs_done)
    return UV_ENOTCONN;
  /* close_notify: the peer can tell our end from a cut connection. TLS 1.3 keeps the other
   * direction open. */
  ERR_clear_error();
  SSL_shutdown(c->ssl);
  if ((r = flush(c, NULL)) != 0)
    return r;
  c->shutdown_cb = cb;
  return np__conn_shutdown(c->inner, on_inner_shutdown);
}

/* ---- reading ------------------------------------------------------------------------------- */

static void set_reading(tls_conn *c, int on) {
  if (on && !c->inner_reading && c->in_err == 0)
    c->inner_reading = c->inner->ops->read_start(c->inner) == 0;
  else if (!on && c->inner_reading) {
    np__conn_read_stop(c->inner);
    c->inner_reading = 0;
  }
}

static void deliver(tls_conn *c, int err) {
  uv_buf_t none = uv_buf_init(NULL, 0);
  c->rx_done = 1;
  set_reading(c, 0);
  c->base.read_cb(&c->base, err, &none);
}

static void hs_failed(tls_conn *c, int err) {
  np__tls_handshake_cb cb = c->hs_cb;

  c->hs_cb = NULL;
  c->in_err = err;
  c->failed = 1;
  if (cb != NULL) {
    set_reading(c, 0);
    cb(&c->base, err, c->hs_data);
  } else if (c->reading) {
    deliver(c, err);
  }
}

/* The first bytes a TLS server got are not TLS: tell the peer in its own terms (what the refusal
 * callback of the context writes: the session knows its protocol, TLS does not) and end the
 * connection once that is sent. */
static void plaintext_peer(tls_conn *c, const char *buf, size_t len, const char *peer) {
  unsigned char out[NP_TLS_REFUSAL_MAX];
  int n = c->t->refusal != NULL ? c->t->refusal(buf, len, out, sizeof(out), c->t->refusal_arg) : 0;
  txbuf *b;

  np__log(c->t->log, NP_LOG_WARN,
          "%s: plaintext connection to the TLS port; closing (is the client running with "
          "--insecure? both sides need the same setting)",
          peer);
  c->in_err = NP_ENOTLS;
  c->failed = 1;
  c->refused = 1;
  set_reading(c, 0);
  if (n > 0 && (b = malloc(sizeof(*b) + (size_t)n)) != NULL) {
    b->c = c;
    b->len = (size_t)n;
    memcpy(b->data, out, (size_t)n);
    if (send_txbuf(c, b, 0, NULL) == 0) {
      c->err_after_flush = 1;
      return;
    }
  }
  if (c->reading)
    deliver(c, NP_ENOTLS);
}

static void handshake(tls_conn *c) {
  char peer[64];
  int r, e;

  ERR_clear_error();
  if (c->ssl != NULL) {
    r = SSL_do_handshake(c->ssl);
    e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  } else {
    r = -1, e = SSL_ERROR_WANT_READ; /* a server that has not heard a byte yet */
  }
  /* Send what the handshake produced, alerts included, before reporting anything. */
  if (flush(c, NULL) != 0 && r == 1)
    r = 0, e = SSL_ERROR_SSL;
  if (r == 1 && c->verdict.tofu_pending && np__tls_known_commit(c->t, &c->verdict) != 0) {
    np__conn_peer_str(c->inner, peer, sizeof(peer));
    np__tls_report_failure(c->t, &c->verdict, peer);
    hs_failed(c, NP_ETLSVERIFY);
    return;
  }
  if (r == 1) {
    np__tls_handshake_cb cb = c->hs_cb;
    c->hs_done = 1;
    c->hs_cb = NULL;
    if (cb != NULL) {
      if (!c->reading)
        set_reading(c, 0);
      cb(&c->base, 0, c->hs_data);
    }
    return;
  }
  if (e == SSL_ERROR_WANT_READ && c->in_err == 0)
    return;
  if (e == SSL_ERROR_WANT_READ && c->t->server && !c->sniffed &&
      (c->in_err == UV_EOF || c->in_err == UV_ECONNRESET)) {
    /* Not a byte before the end: a health check or a port scan, not a TLS client that failed.
     * Reported as a plain EOF, which the session above neither warns about nor counts. */
    hs_failed(c, UV_EOF);
    return;
  }
  np__conn_peer_str(c->inner, peer, sizeof(peer));
  if (e == SSL_ERROR_WANT_READ) {
    np__log(c->t->log, NP_LOG_WARN, "%s: %s during the TLS handshake%s", peer,
            c->in_err == UV_EOF ? "connection closed" : np_strerror(c->in_err),
            c->t->server ? "" : " (does the server require a client certificate?)");
    hs_failed(c, c->in_err == UV_EOF ? NP_ETLS : c->in_err);
    return;
  }
  np__tls_report_failure(c->t, &c->verdict, peer);
  hs_failed(c, c->verdict.verify_failed ? NP_ETLSVERIFY : NP_ETLS);
}

/* Hand decrypted bytes to the reader while it reads; then the inner conn's end, if it came. */
static void drain(tls_conn *c) {
  while (c->reading && !c->closing && !c->rx_done && c->rx_end == 0 &&
         (SSL_has_pending(c->ssl) || rx_pending(c) > 0)) {
    uv_buf_t b = uv_buf_init(NULL, 0);
    size_t got = 0, n;
    int e = SSL_ERROR_NONE;
    char why[200] = "";

    c->base.alloc_cb(&c->base, READ_CHUNK, &b);
    if (b.base == NULL || b.len == 0) {
      deliver(c, UV_ENOBUFS);
      return;
    }
    /* Fill the reader's buffer from as many records as have arrived before handing it up, not a
     * record (16 KiB at most) at a time: the mux sizes the buffer to the rest of a frame, so a
     * 64 KiB frame reaches its stream, and the service, in one write instead of four. */
    ERR_clear_error();
    while (got < b.len) {
      n = 0;
      if (SSL_read_ex(c->ssl, b.base + got, b.len - got, &n) != 1) {
        e = SSL_get_error(c->ssl, 0);
        break;
      }
      got += n;
    }
    /* The error's text now: the reader may write (and clear OpenSSL's error queue) in read_cb. */
    if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_ZERO_RETURN)
      ssl_err(why, sizeof(why));
    if (got > 0) {
      c->base.read_cb(&c->base, (ssize_t)got, &b);
      if (c->closing)
        return;
    }
    /* A KeyUpdate read on the way wants an answer. */
    flush(c, NULL);
    if (e == SSL_ERROR_NONE)
      continue; /* the buffer is full: another */
    if (got == 0)
      c->base.read_cb(&c->base, 0, &b); /* the buffer back, unused */
    if (c->closing || (e == SSL_ERROR_WANT_READ && !c->reading))
      return;
    if (e == SSL_ERROR_WANT_READ)
      break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      c->rx_end = UV_EOF; /* close_notify: a clean end */
    } else {
      char peer[64];
      np__conn_peer_str(c->inner, peer, sizeof(peer));
      np__log(c->t->log, NP_LOG_WARN, "%s: TLS error: %s", peer, why);
      c->rx_end = NP_ETLS;
    }
    break; /* the end, delivered below once the reader reads */
  }
  /* An end read past the data the reader took before it paused waits until it reads again. */
  if (c->rx_end != 0 && c->reading && !c->closing && !c->rx_done) {
    deliver(c, c->rx_end);
    return;
  }
  if (!c->reading || c->closing || c->rx_done)
    return;
  if (c->in_err != 0 && !c->err_after_flush) {
    /* An end without close_notify may be a cut made by somebody else: never a clean EOF. */
    deliver(c, c->in_err == UV_EOF ? UV_ECONNRESET : c->in_err);
    return;
  }
  set_reading(c, 1);
}

static void progress(tls_conn *c) {
  if (c->closing)
    return;
  if (c->err_after_flush) {
    if (c->inflight > 0)
      return;
    c->err_after_flush = 0;
  }
  if (c->failed) {
    if (c->reading && !c->rx_done)
      deliver(c, c->in_err);
    return;
  }
  if (!c->hs_done) {
    handshake(c);
    if (!c->hs_done || c->closing)
      return;
  }
  drain(c);
}

static void on_inner_alloc(np_conn *in, size_t suggested, uv_buf_t *buf) {
  char *rx = np__scratch(NP_SCRATCH_TLS_RX, READ_CHUNK);
  (void)in;
  (void)suggested;
  *buf = uv_buf_init(rx, rx != NULL ? READ_CHUNK : 0);
}

static int make_ssl(tls_conn *c);

static int looks_like_tls(tls_conn *c, unsigned char first) {
  return c->t->server ? first == REC_HANDSHAKE : first == REC_HANDSHAKE || first == REC_ALERT;
}

static void linger_end(tls_conn *c);

static void on_inner_read(np_conn *in, ssize_t nread, const uv_buf_t *buf) {
  tls_conn *c = in->data;
  char peer[64];

  if (c->lingering) {
    if (nread < 0)
      linger_end(c); /* the peer read our answer and left */
    return;
  }
  if (nread == 0 || c->closing)
    return;
  if (nread < 0) {
    c->in_err = (int)nread;
    set_reading(c, 0);
  } else if (!c->sniffed && !looks_like_tls(c, (unsigned char)buf->base[0])) {
    c->sniffed = 1;
    np__conn_peer_str(c->inner, peer, sizeof(peer));
    if (c->t->server) {
      plaintext_peer(c, buf->base, (size_t)nread, peer);
      return;
    }
    np__log(c->t->log, NP_LOG_ERROR,
            "%s does not speak TLS: is np-server running with --insecure? both sides need the "
            "same setting",
            peer);
    c->in_err = NP_ENOTLS;
    hs_failed(c, NP_ENOTLS);
    return;
  } else {
    c->sniffed = 1;
    if (c->ssl == NULL && make_ssl(c) != 0) {
      c->in_err = UV_ENOMEM;
      set_reading(c, 0);
    } else if (c->rest_len > 0) {
      /* Behind what is kept (the reader paused meanwhile): in order, after it. */
      c->in = buf->base;
      c->in_len = (size_t)nread;
      if (rx_keep(c) != 0) {
        c->in_err = UV_ENOMEM;
        set_reading(c, 0);
      }
    } else {
      c->in = buf->base;
      c->in_len = (size_t)nread;
    }
  }
  progress(c);
  /* The buffer is the loop's, reused by the next read of any conn. */
  if (!c->closing && rx_keep(c) != 0) {
    c->in_err = UV_ENOMEM;
    set_reading(c, 0);
    progress(c);
  }
  c->in_len = 0;
}

static void on_pump(uv_timer_t *t) {
  progress(t->data);
}

static int tls_read_start(np_conn *conn) {
  tls_conn *c = (tls_conn *)conn;

  if (c->closing)
    return UV_EINVAL;
  c->reading = 1;
  if (c->rx_done)
    return 0;
  if (c->in_err != 0 || c->rx_end != 0 ||
      (c->ssl != NULL && (SSL_has_pending(c->ssl) || rx_pending(c) > 0)))
    return uv_timer_start(&c->pump, on_pump, 0, 0);
  set_reading(c, 1);
  return 0;
}

static int tls_read_stop(np_conn *conn) {
  tls_conn *c = (tls_conn *)conn;
  c->reading = 0;
  uv_timer_stop(&c->pump);
  if (c->hs_cb == NULL)
    set_reading(c, 0);
  return 0;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void part_closed(tls_conn *c) {
  np_conn_close_cb cb = c->close_cb;
  if (--c->closes_left > 0)
    return;
  SSL_free(c->ssl);
  free(c->tx);
  free(c->rest);
  if (cb != NULL)
    cb(&c->base);
  free(c);
}

static void on_inner_closed(np_conn *in) {
  part_closed(in->data);
}

static void on_pump_closed(uv_handle_t *h) {
  part_closed(h->data);
}

/* A refused plaintext peer may still be sending (a client sends MUX, SYN and HELLO back to back).
 * Closing with its bytes unread would answer them with a reset, and the peer, failing to write,
 * might never read our answer. So: FIN after the answer, read and drop until the peer closes, for
 * LINGER_MS at most. */
#define LINGER_MS 2000

static void linger_end(tls_conn *c) {
  if (!c->lingering)
    return;
  c->lingering = 0;
  uv_close((uv_handle_t *)&c->pump, on_pump_closed);
  np__conn_close(c->inner, on_inner_closed);
}

static void on_linger_timeout(uv_timer_t *t) {
  linger_end(t->data);
}

static void on_linger_shutdown(np_conn *in, int status) {
  (void)in; /* may run after the close began: touch nothing */
  (void)status;
}

static void close_with(tls_conn *c, np_conn_close_cb cb, void (*how)(np_conn *, np_conn_close_cb)) {
  if (c->closing)
    return;
  c->closing = 1;
  c->close_cb = cb;
  c->hs_cb = NULL;
  if (c->refused && how == np__conn_close && c->in_err == NP_ENOTLS &&
      np__conn_shutdown(c->inner, on_linger_shutdown) == 0 &&
      (c->inner_reading || c->inner->ops->read_start(c->inner) == 0)) {
    c->inner_reading = 1;
    c->lingering = 1;
    uv_timer_start(&c->pump, on_linger_timeout, LINGER_MS, 0);
    return;
  }
  uv_close((uv_handle_t *)&c->pump, on_pump_closed);
  how(c->inner, on_inner_closed);
}

static void tls_close(np_conn *conn, np_conn_close_cb cb) {
  close_with((tls_conn *)conn, cb, np__conn_close);
}

static void tls_abort(np_conn *conn, np_conn_close_cb cb) {
  close_with((tls_conn *)conn, cb, np__conn_abort);
}

static void tls_peer_str(np_conn *conn, char *buf, size_t len) {
  np__conn_peer_str(((tls_conn *)conn)->inner, buf, len);
}

static np_conn *tls_lower(np_conn *conn) {
  return ((tls_conn *)conn)->inner;
}

/* Only between records: the handshake done (tickets are off, tls_ctx.c, so nothing more of it
 * follows), nothing on its way out, no end seen. What the peer sent and OpenSSL has not decrypted
 * goes along as rest; decrypted bytes the reader has not taken stay inside the SSL. */
static int tls_move_out(np_conn *conn, np__moved *m) {
  tls_conn *c = (tls_conn *)conn;
  int r;

  if (c->closing || !c->hs_done || c->failed || c->ssl == NULL || c->in_err != 0 ||
      c->rx_end != 0 || c->rx_done)
    return UV_EINVAL;
  if (c->inflight > 0 || (c->tx != NULL && c->tx->len > 0))
    return UV_EBUSY;
  /* Called from a read callback: what the inner conn's buffer still holds joins rest (where it
   * would go anyway when the callback returns). */
  if ((r = rx_keep(c)) != 0 || (r = np__conn_move_out(c->inner, m)) != 0)
    return r;
  c->inner_reading = 0; /* the inner conn's move stopped it */
  if (c->rest_len > 0 && c->rest_off > 0)
    memmove(c->rest, c->rest + c->rest_off, c->rest_len);
  m->rest = c->rest;
  m->rest_len = c->rest_len;
  c->rest = NULL;
  c->rest_off = c->rest_len = c->rest_cap = 0;
  BIO_set_data(SSL_get_rbio(c->ssl), NULL);
  SSL_set_app_data(c->ssl, NULL); /* the slot exists: nothing to allocate, nothing to fail */
  m->ssl = c->ssl;
  c->ssl = NULL;
  /* An empty shell until it is closed: whatever it is asked reports ECANCELED. */
  c->hs_done = c->reading = 0;
  c->failed = 1;
  c->in_err = UV_ECANCELED;
  uv_timer_stop(&c->pump);
  return 0;
}

static const np_conn_ops tls_ops = {
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .write = tls_write,
    .try_write = tls_try_write,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .abort = tls_abort,
    .peer_str = tls_peer_str,
    .lower = tls_lower,
    .move_out = tls_move_out,
};

/* The OpenSSL side of a conn: some kilobytes, so a server makes it only once the peer has sent
 * something that looks like TLS (a crowd of silent connections costs little more than their
 * sockets). */
static int make_ssl(tls_conn *c) {
  np__tls *t = c->t;
  BIO_METHOD *m = conn_bio_method();
  struct in6_addr a6;
  BIO *bio;

  if (m == NULL || (bio = BIO_new(m)) == NULL)
    return UV_ENOMEM;
  if ((c->ssl = SSL_new(t->ctx)) == NULL) {
    BIO_free(bio);
    return UV_ENOMEM;
  }
  BIO_set_data(bio, c);
  SSL_set_bio(c->ssl, bio, bio); /* one BIO both ways: the SSL owns its one reference */
  /* Each of these allocates and can fail. Unchecked, a failed app data made the verify callback
   * dereference NULL, and a failed set1_host would have dropped the host name check (the
   * allocator sweep, tests/failmalloc, found the first). */
  if (SSL_set_app_data(c->ssl, &c->verdict) != 1)
    goto err_free_ssl;
  if (t->server) {
    SSL_set_accept_state(c->ssl);
  } else {
    SSL_set_connect_state(c->ssl);
    if (!t->pinned && !t->ca_only && t->host[0] != '\0' && SSL_set1_host(c->ssl, t->host) != 1)
      goto err_free_ssl;
    if (!t->ca_only && t->host[0] != '\0' && inet_pton(AF_INET, t->host, &a6) != 1 &&
        inet_pton(AF_INET6, t->host, &a6) != 1 && SSL_set_tlsext_host_name(c->ssl, t->host) != 1)
      goto err_free_ssl;
  }
  return 0;

err_free_ssl:
  SSL_free(c->ssl); /* and the BIO with it */
  c->ssl = NULL;
  return UV_ENOMEM;
}

int np__tls_export(np_conn *conn, const char *label, unsigned char *out, size_t len) {
  tls_conn *c = (tls_conn *)conn;
  if (conn->ops != &tls_ops || c->ssl == NULL || !SSL_is_init_finished(c->ssl))
    return UV_EINVAL;
  return SSL_export_keying_material(c->ssl, out, len, label, strlen(label), NULL, 0, 0) == 1
             ? 0
             : NP_ETLS;
}

uint64_t np__tls_wire_bytes(np_conn *conn) {
  return conn->ops == &tls_ops ? ((tls_conn *)conn)->wire_bytes : 0;
}

/* The conn's handles and its place above inner: the part of a new conn that cannot fail. */
static np_conn *conn_start(tls_conn *c, np__tls *t, np_conn *inner) {
  c->t = t;
  c->inner = inner;
  uv_timer_init(t->loop, &c->pump);
  c->pump.data = c;
  c->closes_left = 2;
  c->base.ops = &tls_ops;
  inner->data = c;
  inner->alloc_cb = on_inner_alloc;
  inner->read_cb = on_inner_read;
  inner->borrow = 1;
  return &c->base;
}

int np__tls_wrap(np__tls *t, np_conn *inner, np_conn **out) {
  tls_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return UV_ENOMEM;
  c->t = t;
  if (!t->server && make_ssl(c) != 0) {
    free(c);
    return UV_ENOMEM;
  }
  *out = conn_start(c, t, inner);
  return 0;
}

int np__tls_adopt(np__tls *t, np_conn *inner, struct ssl_st *ssl, char *rest, size_t rest_len,
                  np_conn **out) {
  tls_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return UV_ENOMEM;
  /* The verify callback's slot was set by make_ssl: re-pointing it allocates nothing. */
  SSL_set_app_data(ssl, &c->verdict);
  BIO_set_data(SSL_get_rbio(ssl), c);
  c->ssl = ssl;
  c->rest = rest;
  c->rest_len = c->rest_cap = rest_len;
  c->hs_done = c->sniffed = 1;
  *out = conn_start(c, t, inner);
  return 0;
}

int np__tls_handshake(np_conn *conn, np__tls_handshake_cb cb, void *data) {
  tls_conn *c = (tls_conn *)conn;

  if (conn->ops != &tls_ops || c->hs_done || c->hs_cb != NULL)
    return UV_EINVAL;
  /* The ClientHello goes out now (a failure here is returned, not called back); the answer
   * arrives through on_inner_read. */
  handshake(c);
  if (c->failed)
    return c->in_err;
  c->hs_cb = cb;
  c->hs_data = data;
  set_reading(c, 1);
  return 0;
}
