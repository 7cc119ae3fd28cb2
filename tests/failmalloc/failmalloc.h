/* Allocation failure injection for the allocator sweeps (nghttp2's failmalloc habit): a program
 * linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (the library's objects statically)
 * and that calls np_fm_install() first can make exactly the n-th allocation from now fail, in our
 * code and in OpenSSL (CRYPTO_set_mem_functions). libuv's own allocations are left alone: libuv
 * aborts on some of them by design. */
#ifndef NP_FAILMALLOC_H
#define NP_FAILMALLOC_H

#include <stddef.h>

/* Whose allocations fail: the library's (and the test's) own, or OpenSSL's. Counted apart, so that
 * every one of ours can be failed while OpenSSL's thousands per handshake are sampled. */
enum np_fm_source { NP_FM_OURS, NP_FM_OPENSSL };

/* Route OpenSSL's allocations through the counter. Call before anything allocates. */
void np_fm_install(void);
/* Fail the n-th allocation of source from now (1-based); 0 counts without failing. */
void np_fm_arm(enum np_fm_source source, long n);
/* Allocations since np_fm_arm, and whether the armed one has been failed. */
long np_fm_count(void);
int np_fm_hit(void);
/* Stop failing and counting (the test's own bookkeeping). */
void np_fm_disarm(void);

/* Run scenario once as it is, then with the n-th allocation of source failing for n = stride,
 * 2 stride, ... until a run makes fewer than n (the failure was never reached: with stride 1 every
 * allocation of the scenario has failed once), n <= max_n. NP_FM_FROM=n in the environment starts
 * there, NP_FM_VERBOSE says each n. Returns the allocations of the last (clean) run, or -1 when
 * max_n was reached. */
long np_fm_sweep(void (*scenario)(void *arg), void *arg, enum np_fm_source source, long stride,
                 long max_n);

#endif
