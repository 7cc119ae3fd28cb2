/* The relay between two np_conns (public wrapper: natproxy/join.h). */
#ifndef NP_JOIN_INTERNAL_H
#define NP_JOIN_INTERNAL_H

#include "bufcache.h"
#include "conn.h"
#include "natproxy/join.h"
#include "splice.h"

/* Read chunk size and the per-direction backpressure marks: reading pauses while more than HIGH
 * bytes wait to be written to the other side, and resumes once at most LOW do. So a direction holds
 * at most HIGH + CHUNK bytes, whatever the speeds of the two peers. */
#define NP_JOIN_CHUNK (64 * 1024)
#define NP_JOIN_HIGH  (256 * 1024)
#define NP_JOIN_LOW   (64 * 1024)

/* Relay a <-> b; takes ownership of both conns (closed at the end). prefix (borrowed, copied) holds
 * prefix_len <= NP_JOIN_CHUNK bytes already read from a that go to b first. Relay chunks come from
 * cache (made with np__join_chunk_size(); it must outlive the join) or, when NULL, from malloc.
 * Returns 0, UV_EINVAL or UV_ENOMEM (then nothing was taken over and cb never runs). The join's
 * memory is freed after cb. */
int np__join(np_conn *a, np_conn *b, const char *prefix, size_t prefix_len, np__bufcache *cache,
             np_join_cb cb, void *data, struct np_join **out);
/* From now on also add the bytes each direction relays to the counters of a_to_b / b_to_a (copied)
 * as they pass (after a switch to splice too), and add those relayed so far at once: the owner's
 * counters grow while a long transfer runs instead of when it ends. The counters must outlive the
 * join (until its cb). */
void np__join_count_into(struct np_join *j, const np__tally *a_to_b, const np__tally *b_to_a);
/* The chunk size a cache for np__join must be made with. */
size_t np__join_chunk_size(void);
void np__join_abort(struct np_join *j);
/* Whether the zero-copy relay carries the join now (it takes over bulk transfers). */
int np__join_spliced(const struct np_join *j);
/* Bytes read from one side and not yet written to the other, both directions together. */
size_t np__join_buffered(const struct np_join *j);

#endif
