/* np_mux: many independent byte streams over one connected libuv stream, in the yamux wire format
 * (hashicorp/yamux spec.md, version 0), so either end may be any yamux implementation. What
 * np-client and np-server use for `mux = true`, usable on its own:
 *
 *   np_mux_new(transport) on both ends (one with opts.client = 1); np_mux_open() on either end
 * makes a stream that the other end's accept callback receives; read, write, shut down and close it
 *   like a TCP connection, or np_mux_join() it with another libuv stream.
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

typedef struct np_mux_options {
  int client; /* 1 on the end that opens odd stream ids (the dialling side), 0 on the other */
  uint32_t max_window;  /* receive window cap per stream in bytes; 0: 16 MiB, at least 256 KiB */
  uint32_t max_streams; /* streams open at once; the peer's opens beyond are reset. 0: 16384 */
} np_mux_options;

/* A stream the peer opened; the callee owns it and must close it (or join it) eventually. */
typedef void (*np_mux_accept_cb)(struct np_mux *mux, struct np_mux_stream *stream);
/* The mux and its transport are closed and freed. */
typedef void (*np_mux_close_cb)(struct np_mux *mux);
/* nread > 0: bytes in buf (borrowed for the call). UV_EOF: the peer shut down its side. Other
 * negative values: the stream broke (UV_ECONNRESET: reset by the peer; UV_ECANCELED: the mux was
 * closed here); no more reads follow. */
typedef void (*np_mux_read_cb)(struct np_mux_stream *stream, ssize_t nread, const uv_buf_t *buf);
/* A write or shutdown finished: status 0 or a negative error. */
typedef void (*np_mux_done_cb)(struct np_mux_stream *stream, int status, void *arg);
typedef void (*np_mux_stream_close_cb)(struct np_mux_stream *stream);

/* Run a multiplexer over transport, a connected stream nobody else reads. The mux takes it over and
 * uv_closes it when the mux closes; the caller keeps its memory and may free it from close_cb.
 * opts is copied (NULL: defaults, server side). Returns 0, UV_EINVAL (no transport or accept_cb,
 * transport closing) or UV_ENOMEM; then transport is untouched and no callback runs. */
NP_EXPORT int np_mux_new(uv_stream_t *transport, const np_mux_options *opts,
                         np_mux_accept_cb accept_cb, void *data, struct np_mux **out);
NP_EXPORT void *np_mux_get_data(const struct np_mux *mux);
NP_EXPORT void np_mux_set_data(struct np_mux *mux, void *data);
/* Open a stream; data may be written at once (it follows the open on the wire). Returns 0,
 * NP_ECLOSED (the mux is closing or broken, or the peer said go away), NP_ELIMIT (stream ids used
 * up) or UV_ENOMEM. */
NP_EXPORT int np_mux_open(struct np_mux *mux, struct np_mux_stream **out);
/* Say go away, write what is queued (for at most 2 s), close the transport. Open streams fail with
 * UV_ECANCELED; cb (may be NULL) runs once their owners have closed them all. Idempotent. */
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
