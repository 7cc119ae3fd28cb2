/* A latency histogram with fixed bounds (Prometheus' cumulative buckets are made from it when
 * read), and a latency noted once: the time from a visitor's arrival to the first byte its service
 * sends back (docs/api-admin.md, natproxy_server_first_byte_seconds). No I/O; the clock is
 * libuv's. */
#ifndef NP_HISTO_H
#define NP_HISTO_H

#include <stddef.h>
#include <stdint.h>

/* 1 ms .. 10 s: what a visitor waits for a work connection and its service's first answer, from
 * a pre-opened connection on loopback to a client that dials a slow service across the world. */
#define NP__HISTO_BOUNDS 13
extern const uint64_t np__histo_le_us[NP__HISTO_BOUNDS];

typedef struct np__histo {
  uint64_t count;
  uint64_t sum_us;
  uint64_t n[NP__HISTO_BOUNDS + 1]; /* per bucket, not cumulative; the last: above every bound */
} np__histo;

/* One observation of us microseconds: into the first bucket whose bound is >= us (Prometheus'
 * "le", inclusive). */
void np__histo_observe(np__histo *h, uint64_t us);
/* cum[i] = observations <= np__histo_le_us[i], for i < n and n <= NP__HISTO_BOUNDS. */
void np__histo_cumulative(const np__histo *h, uint64_t *cum, size_t n);
/* a += b (a type's histogram into the server-wide sum). */
void np__histo_add(np__histo *a, const np__histo *b);

/* A latency to note once, when a direction of a relay first moves a byte (splice.h's np__tally
 * points to it). */
typedef struct np__first {
  np__histo *h;      /* where to; NULL: noted already, or nothing to note */
  uint64_t since_ns; /* uv_hrtime() when the wait began */
} np__first;

/* Observe now - since_ns into h, once: h is NULL afterwards. Nothing when h is NULL. */
void np__first_note(np__first *f);

#endif
