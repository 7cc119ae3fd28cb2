/* The datagram carrier's packets (docs/protocol.md, "Datagram path"): sealed with
 * ChaCha20-Poly1305 under per-direction keys derived from the session, a 64-bit counter as the
 * nonce, and a sliding replay window. No I/O.
 *
 *   type u8 | session id u64 | counter u64 | AEAD(flow id u64 | payload) | tag (16)
 *
 * The 17-byte header is the AEAD's associated data. */
#ifndef NP_UDP_SEAL_H
#define NP_UDP_SEAL_H

#include <stddef.h>
#include <stdint.h>

#define NP_SEAL_HDR      17
#define NP_SEAL_TAG      16
#define NP_SEAL_OVERHEAD (NP_SEAL_HDR + 8 + NP_SEAL_TAG)
#define NP_SEAL_MAX      65507 /* a whole packet is one UDP datagram */
#define NP_SEAL_MASTER   32
/* The TLS exporter label both ends derive the master from. */
#define NP_UDP_EXPORTER_LABEL "EXPORTER-natproxy-udp-1"

enum np__seal_type {
  NP_SEAL_DATA = 1,      /* a visitor's datagram, either way */
  NP_SEAL_PROBE = 2,     /* client -> server: keeps the NAT mapping, asks for an ack */
  NP_SEAL_PROBE_ACK = 3, /* server -> client */
};

/* Why a packet was refused (np__seal_open), for the counters. */
enum np__seal_err {
  NP_SEAL_ESHORT = -1,  /* shorter than a header and a tag, or an unknown type */
  NP_SEAL_EAUTH = -2,   /* the tag does not verify: forged, corrupted, other keys */
  NP_SEAL_EREPLAY = -3, /* a counter seen already, or older than the window */
};

typedef struct np__seal {
  void *tx, *rx; /* EVP_CIPHER_CTX, keyed once */
  uint64_t session;
  uint64_t tx_next;           /* the next counter we send */
  uint64_t rx_top, rx_window; /* the highest counter accepted, and a bit for each of the 64 below */
  int rx_any;
} np__seal;

/* Keys for one session: each direction's key is HMAC-SHA256(master, "np-udp-1 c2s" or "s2c" |
 * session id). master comes from the TLS session (np__tls_export), or is the session key without
 * TLS. server: which direction is ours. Returns 0 or UV_ENOMEM / NP_ETLS. */
int np__seal_init(np__seal *s, const unsigned char master[NP_SEAL_MASTER], uint64_t session,
                  int server);
void np__seal_free(np__seal *s);

/* The header fields without verifying anything (to find the session). 0 or NP_SEAL_ESHORT. */
int np__seal_peek(const char *pkt, size_t len, int *type, uint64_t *session);

/* Seal len bytes of payload for flow into out (room for len + NP_SEAL_OVERHEAD). Returns the
 * packet's length, or UV_EMSGSIZE when it would exceed NP_SEAL_MAX. */
int np__seal_pack(np__seal *s, int type, uint64_t flow, const char *payload, size_t len, char *out);

/* Verify and decrypt pkt in place; on success *flow and the payload (inside pkt) are set and the
 * counter is marked seen. Returns 0 or an np__seal_err. */
int np__seal_open(np__seal *s, char *pkt, size_t len, int *type, uint64_t *flow, char **payload,
                  size_t *plen);

#endif
