/* np_join: relay bytes both ways between two connected libuv streams (the seed's Join2Conn, done
 * right): backpressure both ways (reading one side pauses while the other side's write queue is
 * above a high-water mark), true half-close (EOF one way shuts down writing the other way), byte
 * counts, one completion. */
#ifndef NATPROXY_JOIN_H
#define NATPROXY_JOIN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include <natproxy/common.h>

NP_BEGIN_DECLS

struct np_join;

/* Lent to np_join_cb for the call. Members are only ever added at the end; size says how many this
 * library fills in. */
typedef struct np_join_stats {
  size_t size;     /* sizeof(np_join_stats) of the library */
  uint64_t a_to_b; /* bytes read from a and written to b */
  uint64_t b_to_a;
} np_join_stats;

/* Runs once, after both streams are closed (their memory may then be freed). status is 0 when both
 * directions ended with EOF, otherwise the first error seen. stats is borrowed for the call. */
typedef void (*np_join_cb)(struct np_join *join, int status, const np_join_stats *stats);

/* Start relaying. a and b must be open, connected streams that nobody else reads; the join takes
 * them over and closes them with uv_close when it ends. The caller keeps the memory of a and b and
 * may free it from cb. Returns 0, or UV_EINVAL / UV_ENOMEM (then cb never runs and the streams are
 * untouched). */
NP_EXPORT int np_join(uv_stream_t *a, uv_stream_t *b, np_join_cb cb, void *data,
                      struct np_join **out);
NP_EXPORT void *np_join_get_data(const struct np_join *join);
/* End the relay now (both streams are closed; cb runs with UV_ECANCELED). */
NP_EXPORT void np_join_abort(struct np_join *join);

NP_END_DECLS

#endif
