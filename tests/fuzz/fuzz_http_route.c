/* libFuzzer: the HTTP vhost's routing table (lib/http_route.c). Its names and locations come from
 * logged-in clients' proxies, its lookups from any visitor's Host and path. The input is a program
 * run on one table with four owners (and NULL); each step is one byte, then its operands:
 *   add      owner, host, location (strings from the input: any bytes, or a chunk repeated up to
 *            2047 bytes, so the length limits are reached with short inputs);
 *   re-add   a claim the model holds, by another or the same owner, in another spelling (case,
 *            trailing dot, trailing '/');
 *   remove   owner, gone or not;
 *   find     host and path as raw bytes (NULs too);
 *   probe    a find built from a claim the model holds (its host or a name under its wildcard, its
 *            location with or without more after it), so that lookups hit;
 *   bulk     generated names "N.base" for one owner: up to 239, or 4,000..4,300 so that one
 *            owner's names alone pass NP_HTTP_ROUTES_GONE_MAX.
 * A reference model written from the rules in http_route.h (an array of claims, linear search;
 * validity included) checks every result: add's 0, UV_EEXIST with the holder (which is left alone
 * otherwise) or UV_EINVAL; find's answer and owner; both counts after every step. LeakSanitizer
 * checks that freeing the table frees everything.
 *
 * What the header leaves open: which gone entries the cap drops among those one remove made gone
 * at once (equally old; the table drops them in its hash order). The model drops older batches
 * exactly and marks the survivors of a batch cut in part "uncertain": it knows how many survive,
 * not which. A find whose answer would depend on one is not checked; an add that takes one over
 * must still return 0, and the table's gone count then tells whether it was still there. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "http_route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOWNERS 4
#define STR_MAX 2047
/* A bulk step's count byte c: c names, or from 0xf0 BULK_BIG + (c - 0xf0) * 20, so that one
 * owner's names alone can pass the gone cap. */
#define BULK_BIG   4000
#define BULK_TOTAL 5000  /* per input: the model's linear search stays fast enough */
#define MAX_CLAIMS 16384 /* beyond that a program stops: the bulk limit and the input's length */
#define EXACT_RANK 1000  /* above any wildcard's suffix length: the exact host comes first */

typedef struct claim {
  int wild, owner;     /* owner: 0..NOWNERS-1, or -1 for a gone entry */
  int uncertain;       /* gone, in a batch the cap cut in part: maybe no longer in the table */
  unsigned long batch; /* gone: the remove that made it gone (older ones are dropped first) */
  size_t hlen, llen;
  char host[NP_HTTP_ROUTE_HOST_MAX + 1];    /* lower case, no trailing dot, no "*." */
  char loc[NP_HTTP_ROUTE_LOCATION_MAX + 1]; /* "" for every path, no trailing '/' */
} claim;

static struct {
  const uint8_t *in;
  size_t len, off, step;
  np__http_routes *r;
  size_t n;            /* claims in the model */
  size_t live, gone;   /* what np__http_routes_count must say (gone counts the survivors) */
  size_t survivors;    /* of the uncertain claims, how many the table still holds */
  unsigned long batch; /* removes with gone so far */
  size_t bulk;         /* generated names so far */
} F;

static claim claims[MAX_CLAIMS];
/* An index of the claims by a hash of wild, host and location (keys[i]), so that an add among
 * thousands of claims does not search them all: chains of indices, -1 ends one. */
#define BUCKETS 32768 /* a power of two above MAX_CLAIMS */
static uint64_t keys[MAX_CLAIMS];
static int bucket[BUCKETS], chain[MAX_CLAIMS];
static char owners[NOWNERS], untouched; /* &untouched: what find and add must overwrite, or not */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "fuzz_http_route: step %zu: ", F.step);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  abort();
}

static uint8_t byte(void) {
  return F.off < F.len ? F.in[F.off++] : 0;
}

/* A string in buf (NUL after it; NULs inside are possible), its length returned. A first byte
 * below 0xf8 is the length of the bytes that follow; 0xf8..0xff: 11 bits of length, then a chunk
 * of 0..15 bytes repeated to that length. */
static size_t str(char buf[STR_MAX + 1]) {
  size_t n = byte(), i;
  if (n < 0xf8) {
    for (i = 0; i < n && F.off < F.len; i++)
      buf[i] = (char)F.in[F.off++];
    n = i;
  } else {
    char chunk[16];
    size_t clen;
    n = (n & 7) << 8 | byte();
    clen = byte() % 16;
    for (i = 0; i < clen; i++)
      chunk[i] = (char)byte();
    if (clen == 0)
      chunk[clen++] = 'a';
    for (i = 0; i < n; i++)
      buf[i] = chunk[i % clen];
  }
  buf[n] = '\0';
  return n;
}

static char lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ---- the model: the rules as http_route.h states them ---- */

/* np__http_routes_add's host: one trailing dot dropped, then at most NP_HTTP_ROUTE_HOST_MAX bytes
 * of labels separated by dots, each 1..63 of [a-z0-9_-] (compared without case), not starting or
 * ending with '-'; "*" only as the whole first label with at least one more after it. */
static int model_host(const char *s, claim *c) {
  size_t n = strlen(s), i = 0, k = 0;
  if (n > 0 && s[n - 1] == '.')
    n--;
  if (n > NP_HTTP_ROUTE_HOST_MAX)
    return 0;
  c->wild = n >= 2 && s[0] == '*' && s[1] == '.';
  if (c->wild)
    i = 2;
  for (;;) {
    size_t j = i;
    while (j < n && s[j] != '.')
      j++;
    if (j == i || j - i > 63 || s[i] == '-' || s[j - 1] == '-')
      return 0;
    for (; i < j; i++) {
      char ch = lower(s[i]);
      if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
        return 0;
      c->host[k++] = ch;
    }
    if (j == n)
      break;
    c->host[k++] = '.';
    i = j + 1;
  }
  c->host[k] = '\0';
  c->hlen = k;
  return 1;
}

/* Its location: "" or "/" is every path; else '/' first, at most NP_HTTP_ROUTE_LOCATION_MAX
 * bytes, no space, control character, '?' or '#'; one trailing '/' dropped, a second refused. */
static int model_loc(const char *s, claim *c) {
  size_t n = strlen(s), i;
  if (n > NP_HTTP_ROUTE_LOCATION_MAX || (n > 0 && s[0] != '/'))
    return 0;
  for (i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch <= ' ' || ch == 0x7f || ch == '?' || ch == '#')
      return 0;
  }
  if (n > 0 && s[n - 1] == '/')
    n--;
  if (n > 0 && s[n - 1] == '/')
    return 0;
  memcpy(c->loc, s, n);
  c->loc[n] = '\0';
  c->llen = n;
  return 1;
}

/* The model's searches are not what coverage should steer by, and its comparisons, traced, would
 * take most of the time of a program with thousands of claims. */
#define UNTRACED __attribute__((no_sanitize("coverage")))

UNTRACED static uint64_t key_of(const claim *c) {
  uint64_t h = 14695981039346656037u ^ (uint64_t)c->wild;
  size_t i;
  for (i = 0; i < c->hlen; i++)
    h = (h ^ (unsigned char)c->host[i]) * 1099511628211u;
  h = (h ^ 0x100) * 1099511628211u;
  for (i = 0; i < c->llen; i++)
    h = (h ^ (unsigned char)c->loc[i]) * 1099511628211u;
  return h;
}

UNTRACED static claim *model_get(const claim *k, uint64_t key) {
  int i;
  for (i = bucket[key & (BUCKETS - 1)]; i >= 0; i = chain[i]) {
    claim *c = &claims[i];
    if (keys[i] == key && c->wild == k->wild && c->hlen == k->hlen && c->llen == k->llen &&
        memcmp(c->host, k->host, k->hlen) == 0 && memcmp(c->loc, k->loc, k->llen) == 0)
      return c;
  }
  return NULL;
}

/* Where index i is linked in its chain. */
static int *link_of(size_t i) {
  int *p = &bucket[keys[i] & (BUCKETS - 1)];
  while (*p != (int)i)
    p = &chain[*p];
  return p;
}

static void link_in(size_t i) {
  chain[i] = bucket[keys[i] & (BUCKETS - 1)];
  bucket[keys[i] & (BUCKETS - 1)] = (int)i;
}

static claim *model_put(const claim *k, uint64_t key) {
  if (F.n == MAX_CLAIMS)
    fail("model: out of room"); /* the steps stop before */
  claims[F.n] = *k;
  keys[F.n] = key;
  link_in(F.n);
  return &claims[F.n++];
}

/* The last claim moves to c's place. */
static void model_drop(claim *c) {
  size_t i = (size_t)(c - claims), last = --F.n;
  *link_of(i) = chain[i];
  if (i == last)
    return;
  *link_of(last) = chain[last];
  claims[i] = claims[last];
  keys[i] = keys[last];
  link_in(i);
}

/* The uncertain claims: when the table holds none or all of them, they are certain again. */
UNTRACED static void settle(void) {
  size_t i, u = 0;
  for (i = 0; i < F.n; i++)
    u += (size_t)claims[i].uncertain;
  if (u == 0 || (F.survivors != 0 && F.survivors != u))
    return;
  for (i = F.n; i-- > 0;) {
    if (!claims[i].uncertain)
      continue;
    if (F.survivors == 0)
      model_drop(&claims[i]);
    else
      claims[i].uncertain = 0;
  }
  F.survivors = 0;
}

/* More gone entries than the cap: the oldest go. The uncertain ones are always the oldest (the
 * rest of the batch they came from went before them). */
UNTRACED static void model_trim(void) {
  size_t excess, i;
  if (F.gone <= NP_HTTP_ROUTES_GONE_MAX)
    return;
  excess = F.gone - NP_HTTP_ROUTES_GONE_MAX;
  F.gone = NP_HTTP_ROUTES_GONE_MAX;
  if (F.survivors > excess) {
    F.survivors -= excess;
    settle();
    return;
  }
  excess -= F.survivors;
  F.survivors = 0;
  settle(); /* drops them all */
  while (excess > 0) {
    unsigned long oldest = (unsigned long)-1;
    size_t m = 0;
    for (i = 0; i < F.n; i++)
      if (claims[i].owner < 0 && claims[i].batch < oldest)
        oldest = claims[i].batch;
    for (i = 0; i < F.n; i++)
      m += (size_t)(claims[i].owner < 0 && claims[i].batch == oldest);
    if (m == 0)
      fail("model: %zu gone entries too many and none left", excess);
    if (m <= excess) {
      for (i = F.n; i-- > 0;)
        if (claims[i].owner < 0 && claims[i].batch == oldest)
          model_drop(&claims[i]);
      excess -= m;
      continue;
    }
    for (i = 0; i < F.n; i++)
      if (claims[i].owner < 0 && claims[i].batch == oldest)
        claims[i].uncertain = 1;
    F.survivors = m - excess;
    excess = 0;
  }
}

/* np__http_routes_find as documented: the exact host, then wildcards from the longest suffix; in
 * a host, the longest location on a '/' boundary; a host none of whose locations match is passed
 * over. Returns the answer and *owner (an index, -1 for none), or -1 when an uncertain claim
 * could be the answer. */
UNTRACED static int model_find(const char *host, size_t hostlen, const char *path, size_t pathlen,
                               int *owner) {
  char name[NP_HTTP_ROUTE_HOST_MAX];
  const claim *best = NULL;
  long best_rank = -1, unsure_rank = -1;
  size_t i;

  *owner = -1;
  if (hostlen > 0 && host[hostlen - 1] == '.')
    hostlen--;
  if (hostlen == 0 || hostlen > NP_HTTP_ROUTE_HOST_MAX)
    return NP_HTTP_ROUTE_NONE;
  for (i = 0; i < hostlen; i++)
    name[i] = lower(host[i]);
  for (i = 0; i < pathlen; i++)
    if (path[i] == '?' || path[i] == '#')
      break;
  pathlen = i;
  for (i = 0; i < F.n; i++) {
    const claim *c = &claims[i];
    long rank;
    if (!c->wild) {
      if (c->hlen != hostlen || memcmp(c->host, name, hostlen) != 0)
        continue;
      rank = EXACT_RANK;
    } else {
      if (hostlen <= c->hlen || name[hostlen - c->hlen - 1] != '.' ||
          memcmp(name + hostlen - c->hlen, c->host, c->hlen) != 0)
        continue;
      rank = (long)c->hlen;
    }
    if (c->llen > 0 && (pathlen < c->llen || memcmp(path, c->loc, c->llen) != 0 ||
                        (pathlen > c->llen && path[c->llen] != '/')))
      continue;
    rank = rank * 1024 + (long)c->llen;
    if (c->uncertain) {
      if (rank > unsure_rank)
        unsure_rank = rank;
    } else if (rank > best_rank) {
      best_rank = rank;
      best = c;
    }
  }
  if (unsure_rank > best_rank)
    return -1;
  if (best == NULL)
    return NP_HTTP_ROUTE_NONE;
  *owner = best->owner;
  return best->owner < 0 ? NP_HTTP_ROUTE_GONE : NP_HTTP_ROUTE_FOUND;
}

/* ---- the steps ---- */

static void check_counts(void) {
  size_t live = np__http_routes_count(F.r, 0), gone = np__http_routes_count(F.r, 1);
  if (live != F.live || gone != F.gone)
    fail("counts: live %zu gone %zu, the model has %zu and %zu", live, gone, F.live, F.gone);
}

static void do_find(const char *host, size_t hostlen, const char *path, size_t pathlen) {
  void *got = &untouched;
  int want_owner, res = np__http_routes_find(F.r, host, hostlen, path, pathlen, &got);
  int want = model_find(host, hostlen, path, pathlen, &want_owner);

  if (want < 0)
    return;
  if (res != want)
    fail("find \"%.*s\" \"%.*s\": %d, the model says %d", (int)hostlen, host, (int)pathlen, path,
         res, want);
  if (got != (want == NP_HTTP_ROUTE_FOUND ? (void *)&owners[want_owner] : NULL))
    fail("find \"%.*s\" \"%.*s\": owner %p, the model says %d", (int)hostlen, host, (int)pathlen,
         path, got, want_owner);
}

/* o: an owner, NOWNERS for NULL. */
static void do_add(const char *host, const char *loc, int o, int with_holder) {
  void *holder = &untouched, *owner = o < NOWNERS ? &owners[o] : NULL;
  size_t gone = np__http_routes_count(F.r, 1);
  claim k = {0}, *c;
  uint64_t key;
  int res, want;

  res = np__http_routes_add(F.r, host, loc, owner, with_holder ? &holder : NULL);
  if (res == UV_ENOMEM) /* the table is as before */
    return;
  if (owner == NULL || !model_host(host, &k) || !model_loc(loc, &k)) {
    if (res != UV_EINVAL)
      fail("add \"%s\" \"%s\" owner %d: %d, the model says invalid", host, loc, o, res);
    return;
  }
  key = key_of(&k);
  c = model_get(&k, key);
  want = c != NULL && c->owner >= 0 && c->owner != o ? UV_EEXIST : 0;
  if (res != want)
    fail("add \"%s\" \"%s\" owner %d: %d, the model says %d", host, loc, o, res, want);
  if (holder != (want == UV_EEXIST && with_holder ? (void *)&owners[c->owner] : &untouched))
    fail("add \"%s\" \"%s\" owner %d: holder %p", host, loc, o, holder);
  if (want != 0 || (c != NULL && c->owner == o))
    return;
  if (c == NULL) {
    c = model_put(&k, key);
  } else if (c->uncertain) {
    /* Taken over if the cap had left it, a new claim if not: the gone count says which. */
    size_t now = np__http_routes_count(F.r, 1);
    if (now + 1 != gone && now != gone)
      fail("add \"%s\" \"%s\": gone %zu before, %zu after", host, loc, gone, now);
    c->uncertain = 0;
    F.survivors -= now + 1 == gone;
    F.gone -= now + 1 == gone;
    settle();
    c = model_get(&k, key); /* settle may have moved it */
  } else {
    F.gone--;
  }
  c->owner = o;
  F.live++;
}

static void do_remove(int o, int gone) {
  size_t i;
  np__http_routes_remove(F.r, o < NOWNERS ? &owners[o] : NULL, gone);
  if (o >= NOWNERS)
    return;
  F.batch += gone != 0;
  for (i = F.n; i-- > 0;) {
    if (claims[i].owner != o)
      continue;
    F.live--;
    if (!gone) {
      model_drop(&claims[i]);
      continue;
    }
    claims[i].owner = -1;
    claims[i].batch = F.batch;
    F.gone++;
  }
  model_trim();
}

/* A spelling of claim c's host in buf: upper case where bits say, a trailing dot or not; for a
 * wildcard, "*." first (as_claim) or a name under it. */
static size_t spell_host(const claim *c, unsigned v, int as_claim, char *buf) {
  size_t n = 0, i;
  if (c->wild) {
    const char *pre = as_claim ? "*." : (v & 4) ? "x." : "a-b.c_d.";
    n = strlen(pre);
    memcpy(buf, pre, n);
  }
  for (i = 0; i < c->hlen; i++)
    buf[n++] = (v & 1) && (i % 3 == 0) && c->host[i] >= 'a' && c->host[i] <= 'z'
                   ? (char)(c->host[i] - 'a' + 'A')
                   : c->host[i];
  if (v & 2)
    buf[n++] = '.';
  buf[n] = '\0';
  return n;
}

static void do_readd(unsigned k, unsigned v, int o) {
  char host[NP_HTTP_ROUTE_HOST_MAX + 8], loc[NP_HTTP_ROUTE_LOCATION_MAX + 8];
  const claim *c;
  size_t n;
  if (F.n == 0)
    return;
  c = &claims[k % F.n];
  spell_host(c, v, 1, host);
  n = c->llen;
  memcpy(loc, c->loc, n);
  if (v & 8)
    loc[n++] = '/';
  loc[n] = '\0';
  do_add(host, loc, o, 1);
}

static void do_probe(const claim *c, unsigned v) {
  static const char *const tails[] = {"", "/", "/x", "x", "?q=/", "#/", "/x/y", "-"};
  char host[NP_HTTP_ROUTE_HOST_MAX + 16], path[NP_HTTP_ROUTE_LOCATION_MAX + 8];
  size_t hn = spell_host(c, v, 0, host), pn = c->llen, tn;

  if (c->wild && (v & 8)) { /* the wildcard's own suffix: not under it */
    memcpy(host, c->host, c->hlen);
    hn = c->hlen;
  }
  memcpy(path, c->loc, pn);
  tn = strlen(tails[(v >> 4) & 7]);
  memcpy(path + pn, tails[(v >> 4) & 7], tn);
  do_find(host, hn, path, pn + tn);
}

static void do_bulk(int o, size_t count, const char *base, const char *loc) {
  char host[320];
  size_t i;
  if (count > BULK_TOTAL - F.bulk)
    count = BULK_TOTAL - F.bulk;
  F.bulk += count;
  for (i = 0; i < count && F.n < MAX_CLAIMS; i++) {
    /* 300 bytes of base: past every limit, and no slower for more. */
    snprintf(host, sizeof(host), "%zu.%.300s", i, *base != '\0' ? base : "bulk.example");
    do_add(host, loc, o, 1);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char a[STR_MAX + 1], b[STR_MAX + 1];
  size_t i;

  memset(&F, 0, sizeof(F));
  memset(bucket, 0xff, sizeof(bucket));
  F.in = data;
  F.len = size;
  if (np__http_routes_new(&F.r) != 0)
    return 0;
  while (F.off < F.len && F.n + 1 < MAX_CLAIMS) {
    uint8_t op = byte(), o, v;
    size_t an, bn, count, k;
    F.step++;
    switch (op % 8) {
    case 0:
    case 1:
      o = byte();
      str(a);
      str(b);
      do_add(a, b, (o & 0x7f) % 5, !(o & 0x80));
      break;
    case 2:
      o = byte();
      k = byte();
      v = byte();
      do_readd((unsigned)k, v, o % 4);
      break;
    case 3:
      o = byte();
      do_remove((o & 0x7f) % 5, o & 0x80);
      break;
    case 4:
      an = str(a);
      bn = str(b);
      do_find(a, an, b, bn);
      break;
    case 5:
    case 6:
      k = (size_t)byte() << 8;
      k |= byte();
      v = byte();
      if (F.n > 0)
        do_probe(&claims[k % F.n], v);
      break;
    case 7:
      o = byte();
      count = byte();
      if (count >= 0xf0)
        count = BULK_BIG + (count - 0xf0) * 20;
      str(a);
      str(b);
      do_bulk(o % 4, count, a, b);
      break;
    }
    check_counts();
  }
  /* Claims are found where they were put: every one of a small table, 64 of a large one. */
  for (i = 0; i < F.n && i < 64; i++)
    do_probe(&claims[F.n <= 64 ? i : i * F.n / 64], 0);
  np__http_routes_free(F.r);
  return 0;
}
