/* Listening sockets with an accept loop of our own. libuv's listener drops connections silently
 * when the process runs out of descriptors (its EMFILE reserve trick never reaches the callback);
 * ours refuses them the same way but reports how many, so the server can say so once per burst. */
#ifndef NP_LISTEN_H
#define NP_LISTEN_H

#include <stdint.h>

#include <uv.h>

#include "conn.h"

typedef struct np__listener np__listener;

/* A new connection (TCP_NODELAY on), now the callee's. */
typedef void (*np__accept_cb)(np__listener *l, np_conn *c);
/* Accepting failed with err; refused connections were accepted and closed at once because no
 * descriptor was left for them (err is UV_EMFILE or UV_ENFILE then). */
typedef void (*np__accept_err_cb)(np__listener *l, int err, uint64_t refused);

/* Bind and listen on addr. Returns 0 and *out, or the error (UV_EADDRINUSE, ...). */
int np__listen(uv_loop_t *loop, const struct sockaddr *addr, np__accept_cb on_accept,
               np__accept_err_cb on_error, void *data, np__listener **out);
void *np__listener_data(np__listener *l);
/* The port actually bound. */
int np__listener_port(np__listener *l);
/* Stop and free; cb (may be NULL) runs once closed. */
void np__listener_close(np__listener *l, void (*cb)(void *data));

#endif
