/* np_mux: many independent byte streams over one connected libuv stream, in the yamux wire format
 * (hashicorp/yamux spec.md, version 0), so either end may be any yamux implementation. What
 * np-client and np-server use for `mux = true`, usable on its own:
 *
 *   np_mux_new(transport) on both ends (one with opts.client = 1); np_mux_open() on either end
 * makes a stream that the other end's accept callback receives; read, write, shut down and close it
 *   like a TCP connection, or np_mux_join() it with another libuv stream.
 *
 * A mux's life: it runs until either side ends the session (np_mux_close() here; the peer's close,
 * after a GO_AWAY or not; a broken transport or protocol). Then the options' end_cb runs once with
 * the reason, and the handle stays valid: only np_mux_close() frees it, and it must be called once
 * for every mux, before or after the end (its callback runs once, when it is gone).
 *
 * Flow control is per stream: a stream whose reader stops holds at most its window at the receiver
 * and never blocks the others. Windows start at yamux's 256 KiB and double, up to max_window,
 * while they are what limits the sender (measured against the round-trip time of mux pings). */
#ifndef NATPROXY_MUX_H
#define NATPROXY_MUX_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <natproxy/common.h>
#include <natproxy/join.h>

NP_BEGIN_DECLS

struct np_mux;
struct np_mux_stream;

/* The session ended. Runs exactly once for every mux np_mux_new() made, whichever side ended it, on
 * a later loop turn than the event, before np_mux_close()'s callback. By then the transport is
 * closed or closing, open streams have failed (their read callbacks get the error too; their
 * owners still close them), np_mux_open() returns NP_ECLOSED, and the handle stays valid until
 * np_mux_close(), which may be called from here. status says why:
 *   UV_ECANCELED     np_mux_close() was called here first, whatever the connection did after (the
 *                    peer hanging up, or the 2 s for writing what was queued running out)
 *   UV_EOF           the peer closed the connection in order; goaway says if it said go away first
 *   UV_ECONNRESET    the connection was reset; other UV_E* codes: the transport failed so
 *                    (UV_ETIMEDOUT: TCP keepalive gave up, UV_EPIPE: a write found it closed, ...)
 *   NP_EPROTO        the peer broke the yamux protocol (we said go away, code 1)
 *   NP_ETOOBIG       the peer sent a data frame larger than any window we grant (code 1)
 *   NP_ELIMIT        the peer kept sending pings or opens without reading our answers (code 2)
 *   NP_ETLSREQUIRED  (client side) a natproxy TLS server refused our plaintext: its go away "NPTL"
 *   UV_ENOMEM        out of memory here (code 2)
 * goaway: the code of the peer's GO_AWAY frame (0 normal, 1 protocol error, 2 internal error, or
 * what the peer chose; docs/protocol.md), or -1 if it sent none. */
typedef void (*np_mux_end_cb)(struct np_mux *mux, int status, int64_t goaway);

/* Options are read by size, so the struct can grow without breaking programs built against an
 * older header: fields are only ever added at the end, and a library reads an older caller's
 * options with the fields that caller lacks as 0. Start from NP_MUX_OPTIONS_INIT (or set .size =
 * sizeof(np_mux_options)) and set what you need. A size this library does not know (0: no size
 * set; larger: a newer header) is refused with UV_EINVAL. The size field came in with end_cb:
 * earlier headers had neither, so programs built against them must be rebuilt (before 1.0, the
 * soname stays 0). */
typedef struct np_mux_options {
  size_t size; /* sizeof(np_mux_options), as the caller was compiled */
  int client;  /* 1 on the end that opens odd stream ids (the dialling side), 0 on the other */
  uint32_t max_window;  /* receive window cap per stream in bytes; 0: 16 MiB, at least 256 KiB */
  uint32_t max_streams; /* streams open at once; the peer's opens beyond are reset. 0: 16384 */
  np_mux_end_cb end_cb; /* may be NULL: then streams' errors are the only news of the end */
} np_mux_options;

#define NP_MUX_OPTIONS_INIT                                                                        \
  { sizeof(np_mux_options), 0, 0, 0, NULL }

/* A stream the peer opened; the callee owns it and must close it (or join it) eventually. */
typedef void (*np_mux_accept_cb)(struct np_mux *mux, struct np_mux_stream *stream);
/* The mux and its transport are closed and freed: the handle is gone. */
typedef void (*np_mux_close_cb)(struct np_mux *mux);
/* nread > 0: bytes in buf (borrowed for the call). UV_EOF: the peer shut down its side. Other
 * negative values: the stream broke (UV_ECONNRESET: reset by the peer; UV_ECANCELED: the mux was
 * closed here); no more reads follow. */
typedef void (*np_mux_read_cb)(struct np_mux_stream *stream, ssize_t nread, const uv_buf_t *buf);
/* A write or shutdown finished: status 0 or a negative error. */
typedef void (*np_mux_done_cb)(struct np_mux_stream *stream, int status, void *arg);
typedef void (*np_mux_stream_close_cb)(struct np_mux_stream *stream);

/* Run a multiplexer over transport, a connected stream nobody else reads. The mux takes it over and
 * uv_closes it when the session ends; the caller keeps its memory and may free it from the close
 * callback. opts is copied (NULL: defaults, server side, no end_cb). Returns 0, UV_EINVAL (no
 * transport, accept_cb or out; transport closing; opts->size not one this library knows) or
 * UV_ENOMEM; then transport is untouched and no callback runs. */
NP_EXPORT int np_mux_new(uv_stream_t *transport, const np_mux_options *opts,
                         np_mux_accept_cb accept_cb, void *data, struct np_mux **out);
NP_EXPORT void *np_mux_get_data(const struct np_mux *mux);
NP_EXPORT void np_mux_set_data(struct np_mux *mux, void *data);
/* Open a stream; data may be written at once (it follows the open on the wire). Returns 0,
 * NP_ECLOSED (np_mux_close() was called, the session ended, or the peer said go away), NP_ELIMIT
 * (stream ids used up) or UV_ENOMEM. */
NP_EXPORT int np_mux_open(struct np_mux *mux, struct np_mux_stream **out);
/* End the mux and free it: the only way to, and needed for every mux, also after end_cb. While the
 * session runs: say go away, write what is queued (for at most 2 s), close the transport; open
 * streams fail with UV_ECANCELED and end_cb runs with UV_ECANCELED. Then cb (may be NULL) runs
 * once, on a later loop turn, after end_cb and after the owners have closed every stream; the
 * handle is freed when cb returns. Later calls do nothing (their cb is not used) until then; after
 * cb, mux must not be used. */
NP_EXPORT void np_mux_close(struct np_mux *mux, np_mux_close_cb cb);
/* Streams open now, and the round-trip time measured by the mux's pings (microseconds, 0 before
 * the first answer). */
NP_EXPORT size_t np_mux_stream_count(const struct np_mux *mux);
NP_EXPORT uint64_t np_mux_rtt_us(const struct np_mux *mux);

/* Reading. Returns 0 or UV_EINVAL (the stream is closing). */
NP_EXPORT int np_mux_stream_read_start(struct np_mux_stream *stream, np_mux_read_cb cb);
NP_EXPORT int np_mux_stream_read_stop(struct np_mux_stream *stream);
/* Queue bufs (their memory is held until cb; the array itself is copied). cb runs once, after the
 * bytes went to the transport. Returns 0, UV_EPIPE (shut down or closing), UV_EINVAL (no bytes),
 * the stream's error, or UV_ENOMEM; then cb never runs. */
NP_EXPORT int np_mux_stream_write(struct np_mux_stream *stream, const uv_buf_t bufs[],
                                  unsigned nbufs, np_mux_done_cb cb, void *arg);
/* Half-close: FIN after the queued bytes. Same errors as write. */
NP_EXPORT int np_mux_stream_shutdown(struct np_mux_stream *stream, np_mux_done_cb cb, void *arg);
/* Close (the peer sees EOF if it had finished, a reset otherwise) or reset at once. Unwritten
 * writes complete with UV_ECANCELED first; cb (may be NULL) runs after, then the stream is freed.
 */
NP_EXPORT void np_mux_stream_close(struct np_mux_stream *stream, np_mux_stream_close_cb cb);
NP_EXPORT void np_mux_stream_reset(struct np_mux_stream *stream, np_mux_stream_close_cb cb);
NP_EXPORT uint32_t np_mux_stream_id(const struct np_mux_stream *stream);
NP_EXPORT void *np_mux_stream_get_data(const struct np_mux_stream *stream);
NP_EXPORT void np_mux_stream_set_data(struct np_mux_stream *stream, void *data);

/* Relay stream <-> other like np_join (other: a connected libuv stream nobody reads; its memory
 * stays the caller's). On success both are taken over and the stream handle is gone: use the join.
 * Returns 0, UV_EINVAL or UV_ENOMEM (then nothing was taken over). */
NP_EXPORT int np_mux_join(struct np_mux_stream *stream, uv_stream_t *other, np_join_cb cb,
                          void *data, struct np_join **out);

NP_END_DECLS

#endif
