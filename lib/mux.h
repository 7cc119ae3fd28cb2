/* The stream multiplexer: yamux (hashicorp/yamux spec.md, version 0) over one np_conn, each stream
 * an np_conn of its own, so join, chan and codec run over streams unchanged. Public wrapper:
 * natproxy/mux.h. */
#ifndef NP_MUX_H
#define NP_MUX_H

#include <stdint.h>

#include "conn.h"

typedef struct np__mux np__mux;
struct np__mux_budget;

typedef struct np__mux_opts {
  int client;           /* opens odd stream ids (the spec: client odd, server even) */
  uint32_t max_window;  /* a stream's receive window grows with the bandwidth-delay product up to
                           this (>= NP_MUX_INITIAL_WINDOW) */
  uint32_t max_streams; /* streams open at once; the peer's SYNs beyond it are answered with RST */
  /* What all its streams' windows may grow by in total beyond 256 KiB each (0: 64 MiB), and a
   * budget it shares with other muxes (NULL: none; borrowed, outlives the mux): see mux_core.h. */
  uint64_t session_window;
  struct np__mux_budget *shared;
  /* Where the transport is read into (borrowed; outlives the mux). Every byte is handed on or
   * copied before the read callback returns, so one buffer can serve all the muxes of a loop; a
   * large one means fewer, larger reads. NULL: a 64 KiB buffer of the mux's own. */
  char *read_buf;
  size_t read_buf_len;
} np__mux_opts;

/* The read buffer a server or client shares between its muxes. */
#define NP_MUX_SHARED_READ_BUF (128 * 1024)

#define NP_MUX_DEFAULT_MAX_WINDOW  (16u * 1024 * 1024)
#define NP_MUX_DEFAULT_MAX_STREAMS 16384u

/* A stream the peer opened; the callee owns it (read it, close it). */
typedef void (*np__mux_accept_cb)(np__mux *m, np_conn *stream);
/* The mux is gone: transport closed and every stream closed by its owner. */
typedef void (*np__mux_closed_cb)(np__mux *m);
/* The session ended (np__mux_end_status says why); runs once, from the loop. */
typedef void (*np__mux_end_cb)(np__mux *m);

/* Run yamux over transport (taken over; closed by the mux). prefix holds bytes already read from
 * it (copied). Returns 0, UV_EINVAL or UV_ENOMEM (then transport was not taken). */
int np__mux_new(uv_loop_t *loop, np_conn *transport, const np__mux_opts *opts, const char *prefix,
                size_t prefix_len, np__mux_accept_cb accept_cb, void *data, np__mux **out);
void np__mux_set_closed_cb(np__mux *m, np__mux_closed_cb cb);
/* For an owner that keeps its handle past the end (the public np_mux): cb runs once when the
 * session ends, and the mux is then freed only after np__mux_close, never by itself. Set it right
 * after np__mux_new. Without it the mux frees itself once dead and all its streams are closed. */
void np__mux_set_end_cb(np__mux *m, np__mux_end_cb cb);
void *np__mux_data(const np__mux *m);
/* Open a stream. It is usable at once: data written now travels right behind the SYN (0-RTT).
 * Returns 0, NP_ECLOSED (mux closing or dead, or the peer said go away) or UV_ENOMEM. */
int np__mux_open(np__mux *m, np_conn **out);
/* Say go away, write what is already queued (bounded in time), then close the transport. Open
 * streams then fail with UV_ECANCELED; their owners close them. Idempotent. */
void np__mux_close(np__mux *m);
/* The mux a stream belongs to, or NULL if c is not a mux stream. */
np__mux *np__mux_of(np_conn *c);
/* The conn the mux runs over (TLS or TCP), for what belongs to the connection: its TLS exporter. */
np_conn *np__mux_transport(np__mux *m);
size_t np__mux_stream_count(const np__mux *m);
/* Something is queued for the transport or being written to it. */
int np__mux_writing(const np__mux *m);
uint32_t np__mux_stream_id(np_conn *c);
/* Bytes received on a stream and not yet read. */
size_t np__mux_stream_buffered(np_conn *c);
/* Why the mux ended: UV_ECANCELED when closed here, the error otherwise; 0 while it runs. */
int np__mux_status(const np__mux *m);
/* The same for the owner: UV_ECANCELED whenever np__mux_close came first (the connection may then
 * have failed otherwise), UV_EOF where the peer closed the transport in order (which the streams it
 * cut see as UV_ECONNRESET). */
int np__mux_end_status(const np__mux *m);
/* The code of the peer's GO_AWAY (docs/protocol.md), -1 if it sent none. */
int64_t np__mux_peer_goaway(const np__mux *m);
/* Smoothed round-trip time from mux pings, in microseconds (0 before the first answer). */
uint64_t np__mux_rtt_us(const np__mux *m);

#endif
