/* Outgoing TCP connections: resolve HOST:PORT (skipped for numeric addresses), try each address in
 * turn, give up after a timeout. */
#ifndef NP_DIAL_H
#define NP_DIAL_H

#include <stdint.h>

#include "conn.h"
#include "mux.h"
#include "tls.h"

typedef struct np__dialer np__dialer;

/* status 0: conn is connected (TCP_NODELAY on) and now the caller's. Otherwise conn is NULL. */
typedef void (*np__dial_cb)(void *data, int status, np_conn *conn);

/* Returns 0 (cb runs later, exactly once unless cancelled) or an error (cb never runs). */
int np__dial(uv_loop_t *loop, const char *hostport, uint64_t timeout_ms, np__dial_cb cb, void *data,
             np__dialer **out);
/* The same, then a TLS handshake with tls (borrowed; it must outlive the dial) within the same
 * timeout: conn is then a TLS conn. Handshake failures (NP_ETLS, NP_ETLSVERIFY, NP_ENOTLS) are
 * reported without trying further addresses. */
int np__dial_tls(uv_loop_t *loop, const char *hostport, uint64_t timeout_ms, np__tls *tls,
                 np__dial_cb cb, void *data, np__dialer **out);
/* A UDP "dial": resolve hostport and give a conn for a UDP socket connected to its first address
 * (np__conn_udp_new, with idle_ms). Nothing is sent, so nothing can be refused yet; cb runs on a
 * later turn of the loop. */
int np__dial_udp(uv_loop_t *loop, const char *hostport, uint64_t idle_ms, np__dial_cb cb,
                 void *data, np__dialer **out);
/* Open a stream on a multiplexed connection instead: no handshake, so cb runs on the next turn of
 * the loop (never from inside this call). Errors of np__mux_open are returned at once. */
int np__dial_stream(uv_loop_t *loop, np__mux *m, np__dial_cb cb, void *data, np__dialer **out);
/* Stop; cb will not run. Memory is released asynchronously. */
void np__dial_cancel(np__dialer *d);

#endif
