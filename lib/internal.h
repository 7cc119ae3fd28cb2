/* Internal helpers shared by the library's modules. Not installed. */
#ifndef NP_INTERNAL_H
#define NP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "natproxy/error.h"
#include "natproxy/log.h"

#define NP_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))
#define NP_ARRAY_SIZE(a)                  (sizeof(a) / sizeof((a)[0]))

/* n-byte big-endian integers: the byte order of every format the library speaks. */
static inline void np__put_be(unsigned char *p, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
}
static inline uint64_t np__get_be(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* Intrusive doubly linked lists headed by a plain pointer (NULL when empty), for any struct with
 * two link fields, named by the caller. Unlinking a node that is not in the list leaves the list
 * alone. */
#define NP_DLIST_PUSH(head, n, prev, next)                                                         \
  do {                                                                                             \
    (n)->prev = NULL;                                                                              \
    (n)->next = (head);                                                                            \
    if ((head) != NULL)                                                                            \
      (head)->prev = (n);                                                                          \
    (head) = (n);                                                                                  \
  } while (0)
#define NP_DLIST_UNLINK(head, n, prev, next)                                                       \
  do {                                                                                             \
    if ((n)->prev != NULL)                                                                         \
      (n)->prev->next = (n)->next;                                                                 \
    else if ((head) == (n))                                                                        \
      (head) = (n)->next;                                                                          \
    if ((n)->next != NULL)                                                                         \
      (n)->next->prev = (n)->prev;                                                                 \
    (n)->prev = (n)->next = NULL;                                                                  \
  } while (0)

/* One logger per server or client object (no global logger, see log.h). */
typedef struct np__logger {
  np_log_level level;
  np_log_cb cb;
  void *arg;
} np__logger;

void np__logger_init(np__logger *lg);
void np__log(const np__logger *lg, np_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The noun that agrees with a count ("1 client", "2 clients"), for every line that shows one. */
static inline const char *np__plural(uint64_t n, const char *one, const char *many) {
  return n == 1 ? one : many;
}

/* An IPv4 or IPv6 address, for objects that keep one each (a sockaddr_storage is 128 bytes);
 * sa.sa_family 0: none. */
typedef union np__addr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} np__addr;
/* Copy sa into dst if it is IPv4 or IPv6; anything else leaves dst alone. */
void np__addr_copy(np__addr *dst, const struct sockaddr *sa);

/* "host:port" or "[v6]:port" -> sockaddr; port 0 allowed. Returns 0 or UV_EINVAL. */
int np__parse_addr(const char *spec, struct sockaddr_storage *out);
/* Split "host:port" into host (copied, bracket-free) and port. Returns 0 or UV_EINVAL. */
int np__split_hostport(const char *spec, char *host, size_t hostlen, int *port);
/* sockaddr -> "host:port". */
void np__addr_str(const struct sockaddr *sa, char *buf, size_t len);
/* Same family, address and port (IPv4 and IPv6 only; anything else is never equal). */
int np__addr_equal(const struct sockaddr *a, const struct sockaddr *b);

/* An IP address as 16 bytes, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d), so a v4 client on a
 * dual-stack socket and on a v4 one look the same. Returns 0, or -1 for another family. */
int np__addr_key16(const struct sockaddr *sa, unsigned char out[16]);

/* Return the allocator's free memory to the system (glibc: malloc_trim; elsewhere nothing). After
 * a crowd of connections has gone, their freed memory is otherwise kept, scattered between what
 * lives on. */
void np__heap_trim(void);

/* uv_udp_recv_start's alloc_cb for sockets whose datagrams are used up inside their receive
 * batch (udp_batch.h): one buffer per thread (a loop's), shared by all of them, with room for
 * NP_UDP_RX_CHUNKS datagrams of a recvmmsg. A receiver may write NP_UDP_HEADROOM bytes before
 * the datagram it was given (its frame's header): before the first one that is headroom, before
 * the others the end of the previous 64 KiB, which no UDP datagram (at most 65,527 bytes) fills. */
#define NP_UDP_RX_CHUNKS 20 /* libuv 1.44 reads at most 20 datagrams per recvmmsg */
#define NP_UDP_HEADROOM  8
void np__udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Scratch memory of one thread (a loop's), made zeroed on first use and freed when the thread
 * ends; NULL when out of memory. Each slot has one user and one size. */
enum {
  NP_SCRATCH_UDP_RX,    /* np__udp_alloc */
  NP_SCRATCH_UDPQ,      /* udp_batch.c's queue */
  NP_SCRATCH_UDP_WORK,  /* proxy_udp.c, a work conn's reads */
  NP_SCRATCH_TLS_RX,    /* tls.c, ciphertext read */
  NP_SCRATCH_TLS_STAGE, /* tls.c, small pieces gathered into a record */
  NP_SCRATCH_N
};
void *np__scratch(unsigned slot, size_t len);

/* Copy at most cap-1 bytes and terminate; returns UV_E2BIG when src did not fit. */
int np__strlcpy(char *dst, const char *src, size_t cap);
/* The length of the well-formed UTF-8 sequence s starts with (1 to 4; 1 for ASCII) and its code
 * point in *cp; 0 when s does not start one (a stray continuation byte, an overlong form, a
 * surrogate, beyond U+10FFFF, or cut short by the terminating NUL). */
size_t np__utf8_next(const char *s, unsigned *cp);
/* Whether a name a peer chose (a client's, a proxy's) is well-formed UTF-8 without control
 * characters: it ends up in logs, JSON and Prometheus labels, which all need that. */
int np__name_ok(const char *s);
/* Milliseconds from now until deadline; 0 once it has passed (never a wrapped, huge wait). */
static inline uint64_t np__ms_left(uint64_t deadline, uint64_t now) {
  return deadline > now ? deadline - now : 0;
}

/* 0 when an embedder's ops table has a size this library knows and the functions it needs, else
 * UV_EINVAL (codec.c, pool.c): the one check np_server_set_codec, np_client_set_codec and
 * np_server_set_pool share. */
struct np_codec_ops;
struct np_pool_ops;
int np__codec_ops_check(const struct np_codec_ops *ops);
int np__pool_ops_check(const struct np_pool_ops *ops);
/* New limits for the default pool (a reload); UV_ENOTSUP for another pool. Entries already in stay
 * until they leave. */
int np__pool_default_set_limits(const struct np_pool_ops *ops, void *pool, size_t max_total,
                                size_t max_per_group);

#endif
