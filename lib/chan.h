/* A message channel: an np_conn plus a codec. Decodes whatever arrives into messages and encodes
 * what the session sends; bounds what it buffers both ways. */
#ifndef NP_CHAN_H
#define NP_CHAN_H

#include "conn.h"
#include "natproxy/codec.h"

typedef struct np__chan np__chan;

/* A decoded message; msg is borrowed for the call. */
typedef void (*np__chan_msg_cb)(np__chan *ch, const np_msg *msg);
/* Runs at most once: EOF (UV_EOF), a read or write error, or a decode error (NP_EPROTO, ...). The
 * owner then closes the channel. */
typedef void (*np__chan_err_cb)(np__chan *ch, int err);
typedef void (*np__chan_close_cb)(np__chan *ch);

/* Takes ownership of conn. max_frame caps one incoming message; max_queued caps bytes waiting to be
 * written (a peer that stops reading gets NP_ELIMIT). Returns 0 or UV_ENOMEM (conn not taken). */
int np__chan_new(np_conn *conn, const np_codec_ops *codec, size_t max_frame, size_t max_queued,
                 np__chan **out);
/* Like np__chan_new, for a conn whose first pre_len bytes were read before (pre, copied): a
 * connection moved from another loop (np__moved's pre). np__chan_start decodes them, on a later
 * turn of loop (conn's), before it reads the conn; a chan released or closed before that drops
 * them. */
int np__chan_new_pre(uv_loop_t *loop, np_conn *conn, const np_codec_ops *codec, size_t max_frame,
                     size_t max_queued, const char *pre, size_t pre_len, np__chan **out);
int np__chan_start(np__chan *ch, np__chan_msg_cb on_msg, np__chan_err_cb on_error, void *data);
void *np__chan_data(np__chan *ch);
/* Encode and queue msg. Returns 0, NP_EUNSUPPORTED (the codec cannot say it), NP_ELIMIT, or a write
 * error. */
int np__chan_send(np__chan *ch, const np_msg *msg);
/* Whether np__chan_send may still succeed: not once the channel failed (its connection broke, or
 * the peer sent what does not decode) or closes. */
int np__chan_is_open(const np__chan *ch);
/* Only from inside on_msg, with no message still being written: stop decoding and hand the conn
 * back, with the bytes that arrived after the current message (borrowed until on_msg returns). The
 * channel frees itself once on_msg returns. */
np_conn *np__chan_detach(np__chan *ch, const char **rest, size_t *rest_len);
/* Outside on_msg: stop decoding and hand the conn back; the channel is freed (at once, or when the
 * read callback it is in returns). Only for a channel with no message still being written. */
np_conn *np__chan_release(np__chan *ch);
np_conn *np__chan_conn(np__chan *ch);
/* Close the conn; the channel is freed after cb (which may be NULL). Idempotent. */
void np__chan_close(np__chan *ch, np__chan_close_cb cb);
/* Like np__chan_close, but first let queued messages reach the peer (a refusal it should read). */
void np__chan_close_flush(np__chan *ch, np__chan_close_cb cb);
/* Encode msg and write it on a conn that has no channel (a work connection's first message). The
 * write completes on its own; an error shows up in whatever reads or writes the conn next. Returns
 * 0 or the encode/write error. */
int np__conn_send_msg(np_conn *c, const np_codec_ops *codec, const np_msg *msg);
void np__chan_peer_str(np__chan *ch, char *buf, size_t len);

#endif
