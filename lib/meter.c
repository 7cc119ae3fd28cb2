/* Per-proxy and per-client counters (natproxy/stats.h, NP_PROXY_COUNTERS) and the meter a joined
 * visitor counts into. A join ends a few loop turns after its proxy or its session may have gone,
 * so the counters are shared and reference-counted instead of living in the proxy or the session:
 * nothing a join touches is freed under it. */
#include <stdlib.h>

#include "proxy.h"

np__counts *np__counts_new(void) {
  np__counts *c = calloc(1, sizeof(*c));
  if (c != NULL)
    c->refs = 1;
  return c;
}

void np__counts_unref(np__counts *c) {
  if (c != NULL && --c->refs == 0)
    free(c);
}

static np__counts *ref(np__counts *c) {
  if (c != NULL)
    c->refs++;
  return c;
}

/* The client's counters for px, whose visitor's work came from s: the owner's, or for the line
 * codec's server-wide port, the connected client's. */
static np__counts *client_counts(proxy *px, session *s) {
  session *o = px->s != NULL ? px->s : s;
  return o != NULL ? o->counts : NULL;
}

void np__meter_start(np__meter *m, proxy *px, session *s, uint64_t since_ns) {
  m->srv = &px->srv->stats;
  m->first.h = px->srv->first_byte[px->type->kind];
  m->first.since_ns = since_ns;
  m->px = ref(px->counts);
  m->cl = ref(client_counts(px, s));
  if (m->px != NULL)
    m->px->st.visitors_active++;
  if (m->cl != NULL)
    m->cl->st.visitors_active++;
}

void np__meter_end(np__meter *m) {
  m->first.h = NULL; /* a visitor that got no byte back is no observation */
  if (m->px != NULL)
    m->px->st.visitors_active--;
  if (m->cl != NULL)
    m->cl->st.visitors_active--;
  np__counts_unref(m->px);
  np__counts_unref(m->cl);
  m->px = m->cl = NULL;
}

void np__meter_tally(np__meter *m, np__tally *in, np__tally *out) {
  in->n = out->n = 0;
  in->first = NULL;
  out->first = &m->first;
  in->to[in->n++] = &m->srv->bytes_in;
  out->to[out->n++] = &m->srv->bytes_out;
  if (m->px != NULL) {
    in->to[in->n++] = &m->px->st.bytes_in;
    out->to[out->n++] = &m->px->st.bytes_out;
  }
  if (m->cl != NULL) {
    in->to[in->n++] = &m->cl->st.bytes_in;
    out->to[out->n++] = &m->cl->st.bytes_out;
  }
}

void np__meter_add(np__meter *m, uint64_t in, uint64_t out) {
  if (m->srv == NULL)
    return;
  if (out > 0)
    np__first_note(&m->first);
  m->srv->bytes_in += in;
  m->srv->bytes_out += out;
  if (m->px != NULL) {
    m->px->st.bytes_in += in;
    m->px->st.bytes_out += out;
  }
  if (m->cl != NULL) {
    m->cl->st.bytes_in += in;
    m->cl->st.bytes_out += out;
  }
}

/* A visitor event counted for px and its client (one of the visitors_* members, by offset). */
void np__proxy_count(proxy *px, session *s, size_t member) {
  np__counts *c[2] = {px->counts, client_counts(px, s)};
  for (int i = 0; i < 2; i++)
    if (c[i] != NULL)
      (*(uint64_t *)((char *)&c[i]->st + member))++;
}
