/* The server name (SNI) of a TLS connection, read from its first bytes without terminating TLS: the
 * HTTPS virtual-host port routes each connection by it and then forwards every byte unchanged. The
 * ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) is read through the record layer (RFC 5246
 * §6.2.1: type u8 | version u16 | length u16), reassembled when it spans records, and its
 * server_name extension (RFC 6066 §3) is checked and taken. No I/O, no OpenSSL.
 *
 * The reader never consumes anything: the caller keeps every byte it fed and forwards them as they
 * were. It keeps its own copy of the handshake message alone (record headers stripped), in memory
 * of the message's claimed size, allocated when the message's header arrives and freed as soon as
 * a result is known. Parsing a whole message is simpler to get right than a state machine cut
 * at every byte; the copy is bounded by NP_SNI_MAX. */
#ifndef NP_TLS_SNI_H
#define NP_TLS_SNI_H

#include <stddef.h>

#define NP_SNI_REC_HDR     5                  /* record header: type, version, length */
#define NP_SNI_HS_HDR      4                  /* handshake header: msg_type, u24 length */
#define NP_SNI_MAX         (16 * 1024 + 1024) /* largest ClientHello body taken (real: 0.2-2 KiB) */
#define NP_SNI_MAX_RECORDS 4                  /* records it may span */
#define NP_SNI_NAME_MAX    253                /* a DNS name, without the trailing dot */
/* A result is known once this many bytes were fed, whatever they are: a caller that holds the bytes
 * for forwarding need never hold more. */
#define NP_SNI_MAX_INPUT (NP_SNI_MAX_RECORDS * NP_SNI_REC_HDR + NP_SNI_HS_HDR + NP_SNI_MAX)

/* np__sni_feed's results; errors are negative NP_E* codes. */
enum np__sni_result {
  NP_SNI_MORE = 0,  /* no result yet: feed the bytes that come next */
  NP_SNI_FOUND = 1, /* a valid ClientHello with a host name: np__sni_name */
  NP_SNI_NONE = 2,  /* a valid ClientHello without server_name, or without a host_name in it */
};

typedef struct np__sni_reader {
  unsigned char rec[NP_SNI_REC_HDR]; /* the current record's header */
  size_t rec_have;                   /* its bytes seen */
  size_t rec_left;                   /* bytes of its body still to come */
  unsigned records;                  /* records begun */
  unsigned char hs[NP_SNI_HS_HDR];   /* the handshake message's header */
  size_t hs_have;
  unsigned char *msg; /* its body so far; msg_len bytes once the header is in */
  size_t msg_len, msg_have;
  char name[NP_SNI_NAME_MAX + 1]; /* NUL-terminated, after NP_SNI_FOUND */
  int result;                     /* sticky once it is not NP_SNI_MORE */
} np__sni_reader;

void np__sni_init(np__sni_reader *r);
/* Feed the next len bytes of the connection (borrowed: read during this call only). Returns
 * NP_SNI_MORE, NP_SNI_FOUND, NP_SNI_NONE, or an error:
 *   NP_ENOTLS   not TLS: the first byte is not a handshake record (0x16), or the first record's
 *               version major is not 3. An SSLv2-compatible hello (first byte 0x80) is reported so
 *               too: it cannot carry a server_name, and no client of this century sends one;
 *   NP_EPROTO   a malformed ClientHello: lengths that do not add up, a record of another type or
 *               an empty or over-long one before the message completes, another handshake type, a
 *               server_name extension twice, an empty or invalid host name;
 *   NP_ETOOBIG  a message over NP_SNI_MAX, or more than NP_SNI_MAX_RECORDS records;
 *   UV_ENOMEM.
 * Any result but NP_SNI_MORE sticks: later calls return it and read nothing. Bytes after the
 * ClientHello (in its last record or later) are never looked at. */
int np__sni_feed(np__sni_reader *r, const char *data, size_t len);
/* The host name after NP_SNI_FOUND: lowercased, no trailing dot, 1..253 bytes of letters, digits,
 * '-' and '.', labels of 1..63. NULL otherwise. Valid until np__sni_free. */
const char *np__sni_name(const np__sni_reader *r);
/* Frees what the reader holds (nothing once it has a result); safe to call twice. */
void np__sni_free(np__sni_reader *r);

#endif
