/* Listening sockets with an accept loop of our own. libuv's listener drops connections silently
 * when the process runs out of descriptors (its EMFILE reserve trick never reaches the callback);
 * ours refuses them the same way but reports how many, so the server can say so once per burst. */
#ifndef NP_LISTEN_H
#define NP_LISTEN_H

#include <stdint.h>

#include <uv.h>

#include "cidr.h"
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
/* np__listen_flags: SO_REUSEPORT, so several listeners (one per loop and thread) share one port,
 * the kernel spreading connections over them by a hash of each one's addresses. Only sockets of the
 * same effective user can join; a port taken without it stays exclusive. */
#define NP_LISTEN_REUSEPORT 1u
/* np__listen with flags (NP_LISTEN_*). Errors as np__listen's. */
int np__listen_flags(uv_loop_t *loop, const struct sockaddr *addr, unsigned flags,
                     np__accept_cb on_accept, np__accept_err_cb on_error, void *data,
                     np__listener **out);
void *np__listener_data(np__listener *l);
/* The port actually bound. */
int np__listener_port(np__listener *l);
/* A connection from proxy_protocol_from was closed without a usable PROXY protocol header: err is
 * NP_PP_NONE's NP_EPROTO (not one at all, or a broken one), NP_ETOOBIG, UV_ETIMEDOUT (none within
 * the timeout), UV_EOF or a read error, NP_ELIMIT (too many waiting); peer is the sender. */
typedef void (*np__pp_fail_cb)(void *arg, const struct sockaddr *peer, int err);
/* From now on connections from the networks in from (borrowed; it must outlive the listener; an
 * empty list: none) must start with a PROXY protocol header (v1 or v2), read before they are
 * handed on: the address in it becomes the conn's peer address (np__conn_peer_addr), and the
 * bytes after it are the conn's first. Connections from elsewhere are handed on as they come. */
void np__listener_proxy_protocol(np__listener *l, const np__cidrs *from, uint64_t timeout_ms,
                                 np__pp_fail_cb on_fail, void *arg);
/* Stop and free; cb (may be NULL) runs once closed. */
void np__listener_close(np__listener *l, void (*cb)(void *data));

#endif
