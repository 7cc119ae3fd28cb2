/* libFuzzer: a real np_server's sessions, fed through an in-memory connection. The first input byte
 * picks what the bytes after it are:
 *   0: a fresh connection's first bytes (the login handshake: HELLO, LOGIN, WORK, WORK_IDLE, ...);
 *   1: what a client sends after it logged in honestly (the harness does the HMAC: a fuzzer cannot
 *      guess the server's nonce), so PROXY, PING, WORK_FAIL, CLOSE and garbage meet a live session;
 *   2: a multiplexed connection after MUX: yamux frames that open streams, carry HELLOs, reset,
 *      overrun windows ... through the server's mux and the sessions on its streams;
 *   3: a multiplexed connection whose stream 1 logged in honestly as another server of the cluster
 *      (PEER, with the harness's HMAC), so the yamux frames after it open streams whose FORWARDs
 *      (docs/protocol.md, "Between servers") meet a live peer link, and PINGs its first stream.
 * The second byte sets the chunk size. Each input ends with an end of stream, after which the
 * server must have closed the connection: a session that stays behind is a bug (abort), and
 * LeakSanitizer reports anything it forgot to free. Public ports a fuzzed PROXY asks for are bound
 * on loopback only (uv_tcp_bind is wrapped at link time).
 * The allocator sweep (tests/failmalloc) runs this harness over the seed corpus with each
 * allocation failing in turn (NP_SWEEP): there an allocation that fails in the harness's own steps
 * (the honest login, say) is no bug, the harness goes on to the end of stream; that the server lets
 * go of the connection and frees everything still must hold. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "mux_frame.h"
#include "server.h"

#define OUT_CAP     (1 << 16)
#define MAX_PENDING 4096

typedef struct memconn {
  np_conn base;
  int reading, closed, eof_sent;
  np_conn_close_cb close_cb;
  np_conn_shutdown_cb shutdown_cb;
  np_conn_write *pending[MAX_PENDING];
  size_t n_pending;
  unsigned char out[OUT_CAP]; /* what the server wrote, up to OUT_CAP */
  size_t out_len;
} memconn;

#ifdef NP_SWEEP
#define HARNESS_CANNOT(...) return __VA_ARGS__ /* an allocation failed on the way: end the input   \
                                                */
#else
#define HARNESS_CANNOT(...) abort()
#endif

static uv_loop_t *loop;
static struct np_server *srv;
static memconn *live; /* the conn of the current input, until the server closes it */

/* Binding anywhere but loopback is not this harness's business: a fuzzed PROXY names any address.
 */
int __real_uv_tcp_bind(uv_tcp_t *h, const struct sockaddr *addr, unsigned int flags);
int __wrap_uv_tcp_bind(uv_tcp_t *h, const struct sockaddr *addr, unsigned int flags) {
  unsigned char key[16];
  if (np__addr_key16(addr, key) != 0 ||
      !(key[10] == 0xff && key[11] == 0xff && key[12] == 127)) /* 127.0.0.0/8 */
    return UV_EADDRNOTAVAIL;
  return __real_uv_tcp_bind(h, addr, flags);
}

static void capture(memconn *m, const uv_buf_t *bufs, unsigned nbufs) {
  for (unsigned i = 0; i < nbufs; i++) {
    size_t n = bufs[i].len;
    if (n > OUT_CAP - m->out_len)
      n = OUT_CAP - m->out_len;
    memcpy(m->out + m->out_len, bufs[i].base, n);
    m->out_len += n;
  }
}

static int m_read_start(np_conn *c) {
  memconn *m = (memconn *)c;
  if (m->closed)
    return UV_EINVAL;
  m->reading = 1;
  return 0;
}

static int m_read_stop(np_conn *c) {
  ((memconn *)c)->reading = 0;
  return 0;
}

static int m_write(np_conn *c, np_conn_write *req, const uv_buf_t *bufs, unsigned nbufs) {
  memconn *m = (memconn *)c;
  if (m->closed || m->n_pending == MAX_PENDING)
    return UV_ENOBUFS;
  capture(m, bufs, nbufs);
  m->pending[m->n_pending++] = req;
  return 0;
}

static int m_try_write(np_conn *c, const uv_buf_t *bufs, unsigned nbufs) {
  memconn *m = (memconn *)c;
  size_t total = 0;
  if (m->closed)
    return UV_EPIPE;
  capture(m, bufs, nbufs);
  for (unsigned i = 0; i < nbufs; i++)
    total += bufs[i].len;
  return (int)total;
}

static int m_shutdown(np_conn *c, np_conn_shutdown_cb cb) {
  memconn *m = (memconn *)c;
  if (m->closed || m->shutdown_cb != NULL)
    return UV_EINVAL;
  m->shutdown_cb = cb;
  return 0;
}

static void m_close(np_conn *c, np_conn_close_cb cb) {
  memconn *m = (memconn *)c;
  if (m->closed)
    abort(); /* closed twice */
  m->closed = 1;
  m->reading = 0;
  m->close_cb = cb;
}

static void m_peer_str(np_conn *c, char *buf, size_t len) {
  (void)c;
  snprintf(buf, len, "fuzz");
}

static const np_conn_ops mem_ops = {
    .read_start = m_read_start,
    .read_stop = m_read_stop,
    .write = m_write,
    .try_write = m_try_write,
    .shutdown = m_shutdown,
    .close = m_close,
    .abort = m_close,
    .peer_str = m_peer_str,
};

/* Run what is due: write and shutdown completions (on a later turn, as the contract says), the
 * close, and the loop's timers. Returns 1 once the conn is gone. */
static int settle(memconn *m) {
  for (int round = 0; round < 8; round++) {
    while (m->n_pending > 0) {
      np_conn_write *req = m->pending[0];
      memmove(m->pending, m->pending + 1, --m->n_pending * sizeof(m->pending[0]));
      req->cb(req, m->closed ? UV_ECANCELED : 0);
    }
    if (m->shutdown_cb != NULL) {
      np_conn_shutdown_cb cb = m->shutdown_cb;
      m->shutdown_cb = NULL;
      cb(&m->base, m->closed ? UV_ECANCELED : 0);
    }
    if (m->closed && m->n_pending == 0 && m->shutdown_cb == NULL) {
      if (m->close_cb != NULL)
        m->close_cb(&m->base);
      free(m);
      live = NULL;
      return 1;
    }
    uv_run(loop, UV_RUN_NOWAIT);
  }
  return 0;
}

static void deliver(memconn *m, const uint8_t *data, size_t len) {
  while (len > 0 && m->reading && !m->closed) {
    uv_buf_t b = uv_buf_init(NULL, 0);
    size_t n;
    m->base.alloc_cb(&m->base, 65536, &b);
    if (b.base == NULL || b.len == 0) {
#ifdef NP_SWEEP
      m->base.read_cb(&m->base, UV_ENOBUFS, &b); /* what libuv does when alloc_cb gives nothing */
      return;
#else
      abort();
#endif
    }
    n = len < b.len ? len : b.len;
    memcpy(b.base, data, n);
    m->base.read_cb(&m->base, (ssize_t)n, &b);
    data += n;
    len -= n;
  }
}

/* The messages the server has written so far, decoded from the start. Returns the first of type t,
 * or 0 when there is none (yet). */
static int find_msg(memconn *m, np_msg_type t, np_msg *out) {
  const np_codec_ops *c = np_codec_native();
  size_t off = 0;
  void *dec;
  int found = 0;

  if (c->decoder_new(4096, &dec) != 0)
    HARNESS_CANNOT(0);
  while (off < m->out_len && !found) {
    size_t used;
    int r = c->decode(dec, (const char *)m->out + off, m->out_len - off, &used, out);
    off += used;
    if (r < 0)
      break;
    found = r == 1 && out->type == t;
  }
  c->decoder_free(dec);
  return found;
}

static void send_msg(memconn *m, const np_msg *msg) {
  char buf[NP_CODEC_MAX_ENCODED];
  int n = np_codec_native()->encode(msg, buf, sizeof(buf));
  if (n < 0)
    abort();
  deliver(m, (const uint8_t *)buf, (size_t)n);
  settle(m);
}

/* HELLO, then a LOGIN with the right MAC over the server's nonce. */
static void login(memconn *m) {
  np_msg hello = {.type = NP_MSG_HELLO, .version = PROTO_VERSION};
  np_msg login = {.type = NP_MSG_LOGIN, .version = PROTO_VERSION}, in;

  send_msg(m, &hello);
  if (live == NULL || !find_msg(m, NP_MSG_HELLO, &in))
    HARNESS_CANNOT();
  strcpy(login.name, "fuzz");
  np__auth_nonce(login.nonce);
  np__auth_login_mac("fuzz-token", in.nonce, login.nonce, login.name, login.mac);
  send_msg(m, &login);
  if (live == NULL)
    HARNESS_CANNOT();
  if (!find_msg(m, NP_MSG_LOGIN_RESP, &in) || in.status != 0)
    HARNESS_CANNOT();
}

/* Deliver msg as a yamux data frame on stream sid (with SYN when it opens the stream). */
static void send_on_stream(memconn *m, uint32_t sid, uint16_t flags, const np_msg *msg) {
  char buf[NP_MUX_HDR_LEN + NP_CODEC_MAX_ENCODED];
  np__mux_hdr h = {.type = NP_MUX_DATA, .flags = flags, .stream = sid};
  int n = np_codec_native()->encode(msg, buf + NP_MUX_HDR_LEN, sizeof(buf) - NP_MUX_HDR_LEN);
  if (n < 0)
    abort();
  h.length = (uint32_t)n;
  np__mux_hdr_encode(&h, (unsigned char *)buf);
  deliver(m, (const uint8_t *)buf, NP_MUX_HDR_LEN + (size_t)n);
  settle(m);
}

/* The first message of type t the server wrote on stream sid of a multiplexed connection. */
static int find_stream_msg(memconn *m, uint32_t sid, np_msg_type t, np_msg *out) {
  static char data[OUT_CAP];
  size_t off = 0, have = 0;
  np__mux_parser p;
  np__mux_event ev;
  memconn view;

  np__mux_parser_init(&p, NP_MUX_INITIAL_WINDOW);
  while (off < m->out_len) {
    size_t used;
    int r = np__mux_parse(&p, (const char *)m->out + off, m->out_len - off, &used, &ev);
    off += used;
    if (r < 0)
      return 0;
    if (r == 1 && ev.type == NP_MUX_EV_DATA && ev.hdr.stream == sid) {
      memcpy(data + have, ev.data, ev.len);
      have += ev.len;
    }
  }
  memcpy(view.out, data, have);
  view.out_len = have;
  return find_msg(&view, t, out);
}

/* MUX, then stream 1: HELLO and a PEER with the right MAC of the cluster token. */
static void peer_login(memconn *m) {
  np_msg mux = {.type = NP_MSG_MUX, .version = PROTO_VERSION};
  np_msg hello = {.type = NP_MSG_HELLO, .version = PROTO_VERSION};
  np_msg peer = {.type = NP_MSG_PEER, .version = PROTO_VERSION}, in;

  send_msg(m, &mux);
  if (live == NULL)
    HARNESS_CANNOT();
  send_on_stream(m, 1, NP_MUX_SYN, &hello);
  if (live == NULL || !find_stream_msg(m, 1, NP_MSG_HELLO, &in))
    HARNESS_CANNOT();
  strcpy(peer.name, "127.0.0.1:9");
  np__auth_nonce(peer.nonce);
  np__auth_peer_mac("fuzz-cluster-token", in.nonce, peer.nonce, peer.name, peer.mac);
  send_on_stream(m, 1, 0, &peer);
  if (live == NULL || !find_stream_msg(m, 1, NP_MSG_LOGIN_RESP, &in) || in.status != 0)
    HARNESS_CANNOT();
}

static void quiet(np_log_level level, const char *msg, void *arg) {
  (void)level;
  (void)msg;
  (void)arg;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  static uv_loop_t l;
  struct np_config *cfg;
  (void)argc;
  (void)argv;

  uv_loop_init(&l);
  loop = &l;
  if (np_config_new(NP_CONFIG_SERVER, &cfg) != 0 ||
      np_config_set(cfg, "server", "bind", "127.0.0.1:0") != 0 ||
      np_config_set(cfg, "server", "proxy_bind_addr", "127.0.0.1") != 0 ||
      np_config_set(cfg, "server", "insecure", "true") != 0 ||
      np_config_set(cfg, "server", "token", "fuzz-token") != 0 ||
      np_config_set(cfg, "server", "allow_ports", "40000-40001") != 0 ||
      np_server_new(loop, cfg, &srv) != 0)
    abort();
  np_config_free(cfg);
  /* A cluster token without a route store: the configuration refuses it (a server would have no
   * peers), but the harness only needs the owner's side of a peer link. */
  snprintf(srv->cfg.cluster_token, sizeof(srv->cfg.cluster_token), "fuzz-cluster-token");
  np_server_set_log(srv, NP_LOG_ERROR, quiet, NULL);
#ifdef NP_HARNESS_POOL
  /* A test built on this harness brings a pending pool of its own (tests/failmalloc). */
  if (np_server_set_pool(srv, NP_HARNESS_POOL, NP_HARNESS_POOL_DATA) != 0)
    abort();
#endif
  if (np_server_start(srv) != 0)
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  memconn *m;
  size_t chunk;

  if (size < 2)
    return 0;
  if ((m = calloc(1, sizeof(*m))) == NULL)
    HARNESS_CANNOT(0);
  m->base.ops = &mem_ops;
  live = m;
  np__server_accept(srv, &m->base);
  settle(m);
  if (data[0] % 4 == 1 && live != NULL)
    login(m);
  if (data[0] % 4 == 2 && live != NULL) {
    np_msg mux = {.type = NP_MSG_MUX, .version = PROTO_VERSION};
    send_msg(m, &mux);
  }
  if (data[0] % 4 == 3 && live != NULL)
    peer_login(m);
  chunk = 1 + data[1] % 97;
  for (size_t off = 2; off < size && live != NULL && m->reading; off += chunk) {
    deliver(m, data + off, size - off < chunk ? size - off : chunk);
    settle(m);
  }
  /* The peer goes away: whatever state the bytes left, the server must let go of the conn. */
  for (int i = 0; i < 64 && live != NULL; i++) {
    if (m->reading && !m->eof_sent) {
      uv_buf_t none = uv_buf_init(NULL, 0);
      m->eof_sent = 1;
      m->base.read_cb(&m->base, UV_EOF, &none);
    }
    settle(m);
  }
  if (live != NULL)
    abort(); /* the server kept a connection whose peer is gone */
  return 0;
}
