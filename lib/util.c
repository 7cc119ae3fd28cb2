/* Address parsing and string helpers used across modules. */
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "internal.h"

int np__strlcpy(char *dst, const char *src, size_t cap) {
  size_t n = strlen(src);

  if (cap == 0)
    return UV_E2BIG;
  if (n >= cap) {
    memcpy(dst, src, cap - 1);
    dst[cap - 1] = '\0';
    return UV_E2BIG;
  }
  memcpy(dst, src, n + 1);
  return 0;
}

static int parse_port(const char *s, int *port) {
  char *end;
  long v;

  if (*s == '\0' || *s == '+' || *s == '-')
    return UV_EINVAL;
  v = strtol(s, &end, 10);
  if (*end != '\0' || v < 0 || v > 65535)
    return UV_EINVAL;
  *port = (int)v;
  return 0;
}

int np__split_hostport(const char *spec, char *host, size_t hostlen, int *port) {
  const char *colon;
  const char *hs = spec;
  size_t hl;

  if (spec[0] == '[') {
    const char *close = strchr(spec, ']');
    if (close == NULL || close[1] != ':')
      return UV_EINVAL;
    hs = spec + 1;
    hl = (size_t)(close - hs);
    colon = close + 1;
  } else {
    colon = strrchr(spec, ':');
    if (colon == NULL)
      return UV_EINVAL;
    hl = (size_t)(colon - spec);
    /* A bare IPv6 address without brackets is ambiguous: refuse it. */
    if (memchr(spec, ':', hl) != NULL)
      return UV_EINVAL;
  }
  if (hl == 0 || hl >= hostlen)
    return UV_EINVAL;
  memcpy(host, hs, hl);
  host[hl] = '\0';
  return parse_port(colon + 1, port);
}

int np__parse_addr(const char *spec, struct sockaddr_storage *out) {
  char host[INET6_ADDRSTRLEN + 1];
  int port;

  if (np__split_hostport(spec, host, sizeof(host), &port) != 0)
    return UV_EINVAL;
  memset(out, 0, sizeof(*out));
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
    return 0;
  return UV_EINVAL;
}

void np__addr_copy(np__addr *dst, const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET)
    dst->in = *(const struct sockaddr_in *)sa;
  else if (sa->sa_family == AF_INET6)
    dst->in6 = *(const struct sockaddr_in6 *)sa;
}

void np__addr_str(const struct sockaddr *sa, char *buf, size_t len) {
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;

  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    uv_ip4_name(in, ip, sizeof(ip));
    port = ntohs(in->sin_port);
    snprintf(buf, len, "%s:%d", ip, port);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(in6, ip, sizeof(ip));
    port = ntohs(in6->sin6_port);
    snprintf(buf, len, "[%s]:%d", ip, port);
  } else {
    snprintf(buf, len, "?");
  }
}

int np__addr_equal(const struct sockaddr *a, const struct sockaddr *b) {
  if (a->sa_family != b->sa_family)
    return 0;
  if (a->sa_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
  }
  return 0;
}

int np__addr_key16(const struct sockaddr *sa, unsigned char out[16]) {
  if (sa->sa_family == AF_INET) {
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    return 0;
  }
  if (sa->sa_family == AF_INET6) {
    memcpy(out, ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr, 16);
    return 0;
  }
  return -1;
}

void np__heap_trim(void) {
#ifdef __GLIBC__
  malloc_trim(0);
#endif
}

/* Not _Thread_local arrays: glibc zeroes a library's thread-local data in every thread when it
 * starts, so each of them (libuv's pool threads, an embedder's) paid for all of it in memory,
 * whether it ever used UDP or TLS or not (1.3 MiB per process when the UDP buffer was one). */
static pthread_key_t scratch_keys[NP_SCRATCH_N];
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static _Thread_local void *mine[NP_SCRATCH_N]; /* the fast path; the keys free at thread exit */

static void scratch_free(void *p) {
  for (int i = 0; i < NP_SCRATCH_N; i++)
    if (mine[i] == p)
      mine[i] = NULL; /* a later destructor that asks again gets a new one */
  free(p);
}

static void make_scratch_keys(void) {
  int ok = 1;
  for (int i = 0; i < NP_SCRATCH_N; i++)
    ok &= pthread_key_create(&scratch_keys[i], scratch_free) == 0;
  scratch_ok = ok;
}

void *np__scratch(unsigned slot, size_t len) {
  void *p = mine[slot];

  if (p != NULL)
    return p;
  pthread_once(&scratch_once, make_scratch_keys);
  /* calloc: large blocks are fresh pages, backed only once touched. */
  if (!scratch_ok || (p = calloc(1, len)) == NULL)
    return NULL;
  if (pthread_setspecific(scratch_keys[slot], p) != 0) {
    free(p);
    return NULL;
  }
  mine[slot] = p;
  return p;
}

void np__udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  /* libuv's recvmmsg puts one datagram in each 64 KiB of it, 20 at most per call; the headroom
   * keeps each one 16-byte aligned and lets a receiver write before the first. Only the pages a
   * datagram touches are ever backed by memory. */
  enum { LEN = 16 + NP_UDP_RX_CHUNKS * 65536 };
  char *rx = np__scratch(NP_SCRATCH_UDP_RX, LEN);
  (void)h;
  (void)suggested;
  *buf = rx != NULL ? uv_buf_init(rx + 16, LEN - 16) : uv_buf_init(NULL, 0);
}

size_t np__utf8_next(const char *s, unsigned *cp) {
  const unsigned char *p = (const unsigned char *)s;
  unsigned c = p[0], n, v;

  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  /* the length the lead byte says, the smallest code point that length may carry */
  if (c >= 0xc2 && c <= 0xdf)
    n = 1, v = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 2, v = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 3, v = c & 0x07;
  else
    return 0;
  for (unsigned i = 1; i <= n; i++) {
    if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
      return 0;
    v = (v << 6) | (p[i] & 0x3f);
  }
  if ((n == 2 && v < 0x800) || (n == 3 && (v < 0x10000 || v > 0x10ffff)) ||
      (v >= 0xd800 && v <= 0xdfff))
    return 0; /* overlong, beyond Unicode, a surrogate */
  *cp = v;
  return n + 1;
}

int np__name_ok(const char *s) {
  while (*s != '\0') {
    unsigned cp;
    size_t n = np__utf8_next(s, &cp);
    if (n == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0))
      return 0; /* not UTF-8, or a C0 or C1 control */
    s += n;
  }
  return 1;
}
