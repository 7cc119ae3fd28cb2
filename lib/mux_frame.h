/* yamux framing (hashicorp/yamux spec.md, version 0): the 12-byte header and a push parser over a
 * byte stream. No I/O and no stream state: the multiplexer (mux.c, to come) keeps windows and
 * streams. */
#ifndef NP_MUX_FRAME_H
#define NP_MUX_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define NP_MUX_HDR_LEN        12
#define NP_MUX_VERSION        0
#define NP_MUX_INITIAL_WINDOW (256 * 1024) /* every stream starts with it (spec: Flow Control) */

enum np_mux_type { NP_MUX_DATA = 0, NP_MUX_WINDOW_UPDATE = 1, NP_MUX_PING = 2, NP_MUX_GO_AWAY = 3 };
enum np_mux_flags { NP_MUX_SYN = 1, NP_MUX_ACK = 2, NP_MUX_FIN = 4, NP_MUX_RST = 8 };
enum np_mux_goaway {
  NP_MUX_GOAWAY_NORMAL = 0,
  NP_MUX_GOAWAY_PROTO = 1,
  NP_MUX_GOAWAY_INTERNAL = 2,
  /* Ours: a TLS server's answer to a plaintext client that opened with MUX (docs/protocol.md). */
  NP_MUX_GOAWAY_TLS = 0x4e50544c /* "NPTL" */
};

typedef struct np__mux_hdr {
  uint8_t version;
  uint8_t type;
  uint16_t flags;
  uint32_t stream;
  uint32_t length; /* data: bytes that follow; window update: delta; ping: opaque; go away: code */
} np__mux_hdr;

void np__mux_hdr_encode(const np__mux_hdr *h, unsigned char out[NP_MUX_HDR_LEN]);
/* Parse and check one header: version 0, a known type, ping and go-away on stream 0, data and
 * window updates on any other. Unknown flag bits are ignored (room for later versions). 0 or
 * NP_EPROTO. */
int np__mux_hdr_decode(const unsigned char in[NP_MUX_HDR_LEN], np__mux_hdr *out);

typedef enum np__mux_event_type {
  NP_MUX_EV_FRAME = 1, /* a header: every frame starts with one (for data, before its bytes) */
  NP_MUX_EV_DATA = 2   /* data bytes of the current frame: data/len point into the caller's input */
} np__mux_event_type;

typedef struct np__mux_event {
  np__mux_event_type type;
  np__mux_hdr hdr; /* the current frame's header (both event types) */
  const char *data;
  size_t len;
} np__mux_event;

typedef struct np__mux_parser {
  unsigned char buf[NP_MUX_HDR_LEN];
  size_t have;        /* header bytes buffered */
  np__mux_hdr cur;    /* header of the frame being read */
  uint32_t body_left; /* data bytes of cur still to come */
  uint32_t max_data;  /* largest data frame accepted */
  int error;          /* sticky */
} np__mux_parser;

void np__mux_parser_init(np__mux_parser *p, uint32_t max_data);
/* Consume bytes from buf[0..len). Returns 1 with *ev set (a header, or a run of data bytes), 0 when
 * everything was consumed without an event, or NP_EPROTO / NP_ETOOBIG, which then sticks. *consumed
 * is always set. Data is never copied: ev->data points into buf. */
int np__mux_parse(np__mux_parser *p, const char *buf, size_t len, size_t *consumed,
                  np__mux_event *ev);

#endif
