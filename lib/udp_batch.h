/* UDP datagrams in batches (issue 18): received with recvmmsg through libuv, sent with one
 * sendmmsg(2) per socket for all the datagrams queued since the last flush. */
#ifndef NP_UDP_BATCH_H
#define NP_UDP_BATCH_H

#include <stddef.h>

#include <uv.h>

/* Datagrams queued before the queue sends them on its own. */
#define NP_UDPQ_MAX 64

/* After the kernel took a queued datagram of len bytes (status 0) or refused it (a negative
 * UV_E* code: a full socket buffer, an ICMP refusal, too big), from inside np__udpq_flush. It
 * counts; it must not queue. */
typedef void (*np__udpq_done_cb)(void *arg, size_t len, int status);

/* uv_udp_init for a socket that receives many datagrams: libuv reads them with recvmmsg when its
 * alloc callback is np__udp_alloc. Its receive callback must call np__udpq_flush when a call has
 * no UV_UDP_MMSG_CHUNK flag (the batch is over: the buffer is used again next). */
int np__udp_init_batched(uv_loop_t *loop, uv_udp_t *h);

/* Queue one datagram for h (to: its destination, copied; NULL for a connected socket), made of
 * nbufs (1 or 2) pieces. The pieces are borrowed until the next np__udpq_flush, which whoever
 * handed them down must call before they go (the end of a receive batch, of a read callback).
 * done, if not NULL, runs once from that flush, with arg (at once, with UV_ENOMEM, when the
 * thread's queue cannot be made). */
void np__udpq_add(uv_udp_t *h, const struct sockaddr *to, const uv_buf_t *bufs, unsigned nbufs,
                  np__udpq_done_cb done, void *arg);

/* Room for a datagram of at most max bytes (<= 65536) that the caller writes in place (a sealed
 * packet), owned by the queue, or NULL when out of memory; np__udpq_commit then queues its first
 * len bytes as np__udpq_add would. Nothing may be queued in between. */
char *np__udpq_room(size_t max);
void np__udpq_commit(uv_udp_t *h, const struct sockaddr *to, size_t len, np__udpq_done_cb done,
                     void *arg);

/* Send everything queued, one sendmmsg per socket in the order queued, and run the done callbacks.
 * A socket that would block (EAGAIN) drops the rest of its datagrams, as one send per datagram
 * would have. Call it before a socket with queued datagrams closes, and before the memory of a
 * done callback's arg goes. */
void np__udpq_flush(void);

/* np__udpq_flush, then uv_close. */
void np__udp_close(uv_udp_t *h, uv_close_cb cb);
/* Bind h (from np__udp_init_batched) to addr with SO_REUSEPORT: a socket beside another one bound
 * so (a shadow and the proxy it gives way to). 0 or a libuv error. */
int np__udp_bind_reuseport(uv_udp_t *h, const struct sockaddr *addr);

#endif
