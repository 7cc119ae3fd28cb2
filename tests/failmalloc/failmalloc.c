#include "failmalloc.h"

#include <stdio.h>
#include <stdlib.h>

#include <openssl/crypto.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);

static long armed_at = -1; /* -1: off */
static enum np_fm_source armed_source;
static long count;
static int hit;

/* One allocation from source: 1 when it must fail. */
static int fail_now(enum np_fm_source source) {
  if (armed_at < 0 || source != armed_source)
    return 0;
  count++;
  if (armed_at > 0 && count == armed_at) {
    hit = 1;
    return 1;
  }
  return 0;
}

void *__wrap_malloc(size_t n);
void *__wrap_malloc(size_t n) {
  return fail_now(NP_FM_OURS) ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size) {
  return fail_now(NP_FM_OURS) ? NULL : __real_calloc(n, size);
}

static void *realloc_from(enum np_fm_source source, void *p, size_t n) {
  /* realloc(p, 0) frees: not an allocation that can fail. */
  if (n == 0 || !fail_now(source))
    return __real_realloc(p, n);
  return NULL;
}

void *__wrap_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n) {
  return realloc_from(NP_FM_OURS, p, n);
}

static void *ssl_malloc(size_t n, const char *file, int line) {
  (void)file, (void)line;
  return fail_now(NP_FM_OPENSSL) ? NULL : __real_malloc(n);
}

static void *ssl_realloc(void *p, size_t n, const char *file, int line) {
  (void)file, (void)line;
  return realloc_from(NP_FM_OPENSSL, p, n);
}

static void ssl_free(void *p, const char *file, int line) {
  (void)file, (void)line;
  free(p);
}

void np_fm_install(void) {
  /* Not libuv's: it aborts when some of its own allocations fail (its signal set-up, the growth of
   * its watcher array), which tells nothing about our code. */
  if (CRYPTO_set_mem_functions(ssl_malloc, ssl_realloc, ssl_free) != 1) {
    fprintf(stderr, "failmalloc: OpenSSL allocated before np_fm_install\n");
    abort();
  }
}

void np_fm_arm(enum np_fm_source source, long n) {
  armed_source = source;
  armed_at = n;
  count = 0;
  hit = 0;
}

void np_fm_disarm(void) {
  armed_at = -1;
}

long np_fm_count(void) {
  return count;
}

int np_fm_hit(void) {
  return hit;
}

long np_fm_sweep(void (*scenario)(void *arg), void *arg, enum np_fm_source source, long stride,
                 long max_n) {
  /* Once without failures first: what a library does only once (OpenSSL's global set-up) is done
   * then, and a failure in it would leave it failing for good, not tell us about our code. */
  const char *from = getenv("NP_FM_FROM"); /* to rerun a failing n at once */
  scenario(arg);
  for (long n = from != NULL ? atol(from) : stride; n <= max_n; n += stride) {
    if (getenv("NP_FM_VERBOSE") != NULL)
      fprintf(stderr, "failmalloc: allocation %ld (%s) fails\n", n,
              source == NP_FM_OURS ? "ours" : "OpenSSL's");
    np_fm_arm(source, n);
    scenario(arg);
    np_fm_disarm();
    if (!hit)
      return count;
  }
  return -1;
}
