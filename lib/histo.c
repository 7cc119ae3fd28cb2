/* Latency histograms with fixed bounds (histo.h). */
#include "histo.h"

#include <uv.h>

const uint64_t np__histo_le_us[NP__HISTO_BOUNDS] = {1000,    2500,    5000,    10000,  25000,
                                                    50000,   100000,  250000,  500000, 1000000,
                                                    2500000, 5000000, 10000000};

void np__histo_observe(np__histo *h, uint64_t us) {
  size_t i = 0;
  while (i < NP__HISTO_BOUNDS && us > np__histo_le_us[i])
    i++;
  h->n[i]++;
  h->count++;
  h->sum_us += us;
}

void np__histo_cumulative(const np__histo *h, uint64_t *cum, size_t n) {
  uint64_t run = 0;
  for (size_t i = 0; i < n && i < NP__HISTO_BOUNDS; i++)
    cum[i] = run += h->n[i];
}

void np__histo_add(np__histo *a, const np__histo *b) {
  a->count += b->count;
  a->sum_us += b->sum_us;
  for (size_t i = 0; i <= NP__HISTO_BOUNDS; i++)
    a->n[i] += b->n[i];
}

void np__first_note(np__first *f) {
  if (f->h == NULL)
    return;
  np__histo_observe(f->h, (uv_hrtime() - f->since_ns) / 1000);
  f->h = NULL;
}
