/* The zero-copy relay (Linux): bytes go socket -> pipe -> socket with splice(2), never through user
 * memory. For joins of two plain TCP connections; everything else (mux streams, TLS, other systems)
 * uses the copying relay in join.c, which also keeps the public semantics: backpressure (a pipe
 * holds at most its capacity per direction), half-close, a reset for a relay that broke. */
#ifndef NP_SPLICE_H
#define NP_SPLICE_H

#include <stdint.h>

#include "conn.h"
#include "histo.h"

/* Empty pipes kept for reuse by one server or client: a direction holds a pipe only while bytes are
 * in it, so a few serve many idle connections. */
#define NP_PIPE_CACHE 16

typedef struct np__pipes {
  int fds[NP_PIPE_CACHE][2];
  size_t n;
  int enabled; /* 0: np__splice_start always declines */
} np__pipes;

void np__pipes_init(np__pipes *p, int enabled);
void np__pipes_clear(np__pipes *p);

/* The running totals one direction of a relay adds the bytes it moves to, as they move: the
 * server's, its proxy's and its client's counters, say; and a latency noted at its first byte (the
 * visitor's wait for its service's answer), or NULL. Copied by value; the counters and first must
 * outlive the relay. */
#define NP_TALLY_MAX 3
typedef struct np__tally {
  uint64_t *to[NP_TALLY_MAX];
  unsigned n;
  np__first *first;
} np__tally;

static inline void np__tally_add(const np__tally *t, uint64_t n) {
  for (unsigned i = 0; i < t->n; i++)
    *t->to[i] += n;
  if (n > 0 && t->first != NULL && t->first->h != NULL)
    np__first_note(t->first);
}

typedef struct np__splice np__splice;
/* Once, after both sockets are closed: status 0 when both directions ended with EOF. */
typedef void (*np__splice_cb)(void *data, int status, uint64_t a_to_b, uint64_t b_to_a);

/* Whether np__splice_start could take a and b: splicing is on and both are plain TCP conns. */
int np__splice_possible(np_conn *a, np_conn *b, const np__pipes *pipes);
/* Relay between the sockets of two TCP conns. On success the conns are closed (their sockets live
 * on in the relay) and cb runs later, once. UV_ENOTSUP when splicing is off, not available here, or
 * a or b is not a plain TCP conn: then nothing was touched and the caller relays by copying. */
int np__splice_start(np_conn *a, np_conn *b, np__pipes *pipes, np__splice_cb cb, void *data,
                     np__splice **out);
/* End now; both peers get a reset; cb runs with UV_ECANCELED. */
void np__splice_abort(np__splice *s);
/* As np__join_count_into: also add the bytes moved to these counters as they move. */
void np__splice_count_into(np__splice *s, const np__tally *a_to_b, const np__tally *b_to_a);
/* Bytes read from one socket and not yet written to the other (in pipes). */
size_t np__splice_buffered(const np__splice *s);

#endif
