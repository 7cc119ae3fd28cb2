/* Moving a connection to another loop (thread): the arriving side. The leaving side is each conn's
 * move_out (np__conn_move_out, conn.h). */
#ifndef NP_CONN_MOVE_H
#define NP_CONN_MOVE_H

#include "conn.h"
#include "tls.h"

/* An empty np__moved (fd -1). */
void np__moved_init(np__moved *m);
/* Release what m holds (closing the socket, freeing the TLS session and the buffers) and empty it:
 * for a connection that was never moved in, pre included. Accepts an empty m. */
void np__moved_free(np__moved *m);
/* A conn on loop from m: plain TCP, or TLS over it when m->ssl is set, through tls (a context on
 * loop, np__tls_server_share; may be NULL without ssl). It takes m's fd, ssl and rest whether it
 * succeeds or not (on failure the connection ends); pre stays in m, the caller's to read first and
 * free. Reading starts when the caller starts it. 0, UV_EINVAL (no fd, or ssl without tls),
 * UV_ENOMEM or uv_tcp_open's error. */
int np__conn_move_in(uv_loop_t *loop, np__tls *tls, np__moved *m, np_conn **out);

#endif
