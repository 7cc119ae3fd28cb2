/* Datagrams over a byte stream (a UDP tunnel's stream carrier, docs/protocol.md): each datagram is
 * a u16 big-endian length and that many bytes, so boundaries survive a stream that has none. No
 * I/O. */
#ifndef NP_DGRAM_H
#define NP_DGRAM_H

#include <stddef.h>

#define NP_DGRAM_MAX     65507 /* the largest UDP payload over IPv4 */
#define NP_DGRAM_HDR_LEN 2

/* The header for a datagram of len bytes. 0, or NP_ETOOBIG above NP_DGRAM_MAX. */
int np__dgram_hdr(size_t len, unsigned char hdr[NP_DGRAM_HDR_LEN]);

typedef void (*np__dgram_cb)(void *arg, const char *data, size_t len);

/* A push parser: bytes in any chunks, one callback per whole datagram (an empty one included). A
 * datagram that arrived whole is handed where it lies; only one cut by a read is copied, into
 * memory of its own size, held until it completes. Either way the bytes handed to cb stay where
 * they are until the feed returns (the caller's) or until the next feed (the parser's), so cb may
 * queue them for a batch that the caller sends before its buffer is used again. */
typedef struct np__dgram_parser {
  unsigned char hdr[NP_DGRAM_HDR_LEN];
  size_t have; /* bytes of the current datagram's header and body seen */
  char *body;  /* its body so far, when it was cut */
  char *done;  /* the last cut one, delivered: freed by the next feed */
  int error;   /* sticky */
} np__dgram_parser;

void np__dgram_parser_init(np__dgram_parser *p);
/* Feed len bytes; cb runs for every datagram completed. 0, or a sticky NP_ETOOBIG (a length above
 * NP_DGRAM_MAX) or UV_ENOMEM. cb may not feed the same parser. */
int np__dgram_feed(np__dgram_parser *p, const char *in, size_t len, np__dgram_cb cb, void *arg);
void np__dgram_parser_free(np__dgram_parser *p);

#endif
