/* The direct path's transport: one QUIC connection (ngtcp2 with GnuTLS) over a punched UDP 4-tuple,
 * each of its bidirectional streams an np_conn (docs/design.md, "The direct path's transport";
 * docs/direct-plan.md, step 4). The caller owns the socket: datagrams come in through
 * np__quic_input and leave through ops->send, so this module does no I/O of its own and runs no
 * thread; a timer of its own drives ngtcp2's retransmissions, pacing, keepalives and idle timeout.
 *
 * The two ends authenticate each other with a 32-byte key only they and the np-server know (TLS 1.3
 * with an external pre-shared key and an (EC)DHE exchange, for forward secrecy): no certificates,
 * nothing to verify but that the other end proved it holds the key. */
#ifndef NP_QUIC_H
#define NP_QUIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <uv.h>

#include "conn.h"

/* The ALPN both ends insist on: a QUIC endpoint of some other protocol that reached the path by
 * accident fails the handshake instead of being taken for ours. */
#define NP_QUIC_ALPN "np-direct/1"
/* Most bytes a stream holds that its writer wrote and the peer has not acknowledged yet (ngtcp2
 * references sent bytes until they are acknowledged, so they are copied here): a write completes
 * once its bytes are in, as with a kernel socket buffer, so np__join's backpressure holds. */
#define NP_QUIC_STREAM_SNDBUF (1024 * 1024)
/* Most bytes a stream's reader may leave unread: the peer's stream window, which grows from 256 KiB
 * to this while the reader keeps up; a reader that stops holds the peer's writer here. */
#define NP_QUIC_STREAM_WINDOW_MAX (4 * 1024 * 1024)
/* Most bytes all streams' readers together may leave unread (the connection's window). */
#define NP_QUIC_CONN_WINDOW_MAX (16 * 1024 * 1024)
/* Most streams the server side lets the client have open at once. */
#define NP_QUIC_MAX_STREAMS 256

typedef struct np__quic np__quic;

typedef struct np__quic_ops {
  /* Send one datagram to the peer. The caller owns the UDP socket: it sends with uv_udp_try_send
   * and drops what does not fit (QUIC retransmits). data is borrowed for this call only. Must not
   * call into this np__quic. */
  void (*send)(void *ud, const uint8_t *data, size_t len);
  /* The handshake is done and the peer proved it holds the path key: the client may open streams.
   * Optional. */
  void (*ready)(void *ud);
  /* Server side only (required there): the peer opened a stream; c is an np_conn the callee owns
   * and must close. Bytes may already wait in it; reading is not started. */
  void (*stream)(void *ud, np_conn *c);
  /* The connection is over: idle timeout or handshake timeout (UV_ETIMEDOUT), the peer closed it
   * (NP_ECLOSED), the handshake failed or the peer holds another key (NP_EAUTH), a TLS failure
   * after it (NP_ETLS), a protocol error (NP_EPROTO), a stateless reset (UV_ECONNRESET),
   * np__quic_close (UV_ECANCELED), no memory (UV_ENOMEM). Runs once, never from inside a call the
   * user made into this module (always from the loop), and not at all once np__quic_free was
   * called; after it only np__quic_free is allowed. Open stream conns that read are told first:
   * what they had received, then EOF if the peer had finished, else UV_ECONNRESET. */
  void (*closed)(void *ud, int err);
} np__quic_ops;

/* A connection over the punched path. server: 1 for the side that accepts streams (the proxy's
 * owner), which waits for the other's first packet; 0 for the side that opens them (the visitor),
 * which starts the handshake on the next loop turn. local/peer: the path's 4-tuple (copied; IPv4 or
 * IPv6). key: 32 bytes shared by the two ends only (each got it from the np-server over its own TLS
 * session; copied). idle_ms: the connection dies after this long without a packet from the peer
 * (and the server side if the client's first packet does not come within it; the handshake must
 * finish within it too); keepalive PINGs go every idle_ms/3, so a NAT mapping stays open and a
 * live peer never idles out. ops is copied; ud is passed to its callbacks.
 * Returns 0 and *out, or UV_EINVAL (a NULL argument, a missing callback, idle_ms < 3, an address
 * that is not IPv4 or IPv6), UV_ENOMEM, or NP_ETLS (GnuTLS or ngtcp2 refused the setup); *out is
 * untouched on failure. */
int np__quic_new(uv_loop_t *loop, int server, const struct sockaddr *local,
                 const struct sockaddr *peer, const uint8_t key[32], uint64_t idle_ms,
                 const np__quic_ops *ops, void *ud, np__quic **out);
/* A datagram that arrived from the peer on the path (borrowed for this call only). Never fails
 * loudly: a packet that does not authenticate or parse is dropped; one that is authentic and breaks
 * the protocol ends the connection (closed() follows). Stream readers are told on a later turn. */
void np__quic_input(np__quic *q, const uint8_t *data, size_t len);
/* Client side: a new stream as an np_conn (the caller owns it and must close it). Returns 0,
 * UV_EAGAIN before ready() or while the peer's stream limit is reached (retry after a stream
 * closed), UV_EINVAL on the server side, UV_ENOTCONN once the connection is over, UV_ENOMEM. */
int np__quic_open(np__quic *q, np_conn **out);
/* Close: a CONNECTION_CLOSE to the peer (best effort: one datagram), open streams get an error;
 * closed(UV_ECANCELED) follows on a later turn. Nothing once the connection is over. */
void np__quic_close(np__quic *q);
/* Free after closed() ran, or at any time (it then closes first, and closed() never runs). The
 * memory goes once the uv handles are closed and the owners have closed every stream conn they got
 * (those keep working meanwhile, as conns of a dead connection). Accepts NULL; call it once. */
void np__quic_free(np__quic *q);
/* Counters for logs: bytes of datagrams sent and received on the path, the smoothed RTT in
 * microseconds (0 before the first sample), and packets carrying stream data that were declared
 * lost. Any pointer may be NULL. */
void np__quic_stats(np__quic *q, uint64_t *sent, uint64_t *recvd, uint64_t *srtt_us,
                    uint64_t *lost);
/* Bytes a stream conn of this module holds for its writer (written, not yet acknowledged by the
 * peer): at most NP_QUIC_STREAM_SNDBUF. 0 for any other conn. */
size_t np__quic_stream_sndbuf(np_conn *c);
/* Bytes a stream conn holds for its reader (received, not yet read). 0 for any other conn. */
size_t np__quic_stream_rcvbuf(np_conn *c);

#endif
