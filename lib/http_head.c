#include "http_head.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "internal.h"

_Static_assert(NP_HTTP_HEAD_MAX <= UINT16_MAX, "np__http_field's offsets are 16 bits");

#define FIRST_CAP 1024

enum { LAST_NONE, LAST_FIELD, LAST_VALUE };

static np__http_head *head_of(http_parser *p) {
  return p->data;
}

/* Where the bytes at `at` will sit in buf: the caller's chunk is copied to buf + len afterwards. */
static size_t off_of(const np__http_head *h, const char *at) {
  return h->len + (size_t)(at - h->chunk);
}

static int on_url(http_parser *p, const char *at, size_t n) {
  np__http_head *h = head_of(p);
  size_t off = off_of(h, at);
  if (h->url_len == 0)
    h->url = (uint16_t)off;
  h->url_len = (uint16_t)(off + n - h->url); /* pieces are contiguous: one head, one copy */
  return 0;
}

static int on_field(http_parser *p, const char *at, size_t n) {
  np__http_head *h = head_of(p);
  size_t off = off_of(h, at);
  np__http_field *f;
  if (h->last != LAST_FIELD) {
    if (h->nfields == NP_HTTP_FIELDS_MAX) {
      h->cb_error = NP_ETOOBIG;
      return -1;
    }
    f = &h->fields[h->nfields++];
    f->name = (uint16_t)off;
    h->last = LAST_FIELD;
  }
  f = &h->fields[h->nfields - 1];
  f->name_len = (uint16_t)(off + n - f->name);
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  np__http_head *h = head_of(p);
  size_t off = off_of(h, at);
  np__http_field *f = &h->fields[h->nfields - 1];
  if (h->last != LAST_VALUE) {
    h->last = LAST_VALUE;
    if (n == 0) {
      /* An empty value comes as nothing at the next line's start: put it after the colon (a
       * field name runs up to it, http_parser has checked). */
      f->value = (uint16_t)(f->name + f->name_len + 1);
      f->value_len = 0;
      return 0;
    }
    f->value = (uint16_t)off;
  }
  /* A folded line (obs-fold) comes as a second piece further on: the span then covers the line
   * break, which finish() refuses. */
  if (n > 0)
    f->value_len = (uint16_t)(off + n - f->value);
  return 0;
}

/* Stop at the empty line so that no byte after it is parsed: those are the caller's. */
static int on_headers_complete(http_parser *p) {
  head_of(p)->complete = 1;
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
};

void np__http_head_init(np__http_head *h) {
  memset(h, 0, sizeof(*h));
  http_parser_init(&h->parser, HTTP_REQUEST);
  h->parser.data = h;
  h->host = -1;
}

void np__http_head_free(np__http_head *h) {
  free(h->buf);
  h->buf = NULL;
  h->cap = h->len = 0;
}

void np__http_head_reset(np__http_head *h) {
  np__http_head_free(h);
  np__http_head_init(h);
}

/* Append n bytes to the copy, growing it by doubling up to NP_HTTP_HEAD_MAX (feed never takes
 * more). */
static int keep(np__http_head *h, const char *data, size_t n) {
  if (h->len + n > h->cap) {
    size_t cap = h->cap ? h->cap : FIRST_CAP;
    char *b;
    while (cap < h->len + n)
      cap *= 2;
    if (cap > NP_HTTP_HEAD_MAX)
      cap = NP_HTTP_HEAD_MAX;
    if ((b = realloc(h->buf, cap)) == NULL)
      return UV_ENOMEM;
    h->buf = b;
    h->cap = cap;
  }
  memcpy(h->buf + h->len, data, n);
  h->len += n;
  return 0;
}

static int is_tchar(unsigned char c) {
  /* RFC 9110 5.6.2 token characters */
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int name_is(const np__http_head *h, const np__http_field *f, const char *name) {
  size_t n = strlen(name);
  return f->name_len == n && strncasecmp(h->buf + f->name, name, n) == 0;
}

/* The Host value -> h->hostname: lower case, without :port and a trailing dot, a host name of
 * letters, digits, '-', '_' and '.' in labels of 1..63 bytes, 253 at most ('_' is no DNS host
 * name's, but container and service names have it, browsers send it, and http_route.c lets it be
 * claimed). No IP-literal ([v6]): we route names. */
static int host_norm(np__http_head *h, const char *v, size_t n) {
  size_t i, label = 0, port = n;

  for (i = n; i > 0; i--)
    if (v[i - 1] == ':') {
      port = i - 1;
      break;
    }
  if (n - port > 6) /* ':' and up to 5 digits */
    return NP_EHOST;
  for (i = port + 1; i < n; i++)
    if (v[i] < '0' || v[i] > '9')
      return NP_EHOST;
  if (n - port == 6 && memcmp(v + port + 1, "65535", 5) > 0)
    return NP_EHOST;
  n = port;
  if (n > 0 && v[n - 1] == '.')
    n--;
  if (n == 0 || n > NP_HTTP_HOST_MAX)
    return NP_EHOST;
  for (i = 0; i < n; i++) {
    char c = v[i];
    if (c == '.') {
      if (label == 0)
        return NP_EHOST;
      label = 0;
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
      label++;
    } else if (c >= 'A' && c <= 'Z') {
      c = (char)(c - 'A' + 'a');
      label++;
    } else {
      return NP_EHOST;
    }
    if (label > 63)
      return NP_EHOST;
    h->hostname[i] = c;
  }
  if (label == 0)
    return NP_EHOST;
  h->hostname[n] = '\0';
  h->hostlen = n;
  return 0;
}

/* Does a Connection value list token (any case, whitespace around it ignored)? */
static int has_token(const char *v, size_t n, const char *token) {
  size_t tl = strlen(token);
  while (n > 0) {
    const char *comma = memchr(v, ',', n);
    size_t item = comma != NULL ? (size_t)(comma - v) : n, a = 0, z = item;
    while (a < z && (v[a] == ' ' || v[a] == '\t'))
      a++;
    while (z > a && (v[z - 1] == ' ' || v[z - 1] == '\t'))
      z--;
    if (z - a == tl && strncasecmp(v + a, token, tl) == 0)
      return 1;
    n -= comma != NULL ? item + 1 : item;
    v += comma != NULL ? item + 1 : item;
  }
  return 0;
}

/* Keep-alive and upgrade from Connection and Upgrade ourselves: http_parser reads "Connection:
 * close<TAB>" as no close (it skips spaces around tokens, not tabs), where a backend reads the
 * head we forward (without the tab) as close. RFC 9112 9.3, RFC 9110 7.8 (an HTTP/1.0 Upgrade is
 * ignored). */
static void connection(np__http_head *h) {
  int close = 0, keep = 0, upgrade = 0, upgrade_field = 0;
  for (size_t i = 0; i < h->nfields; i++) {
    const np__http_field *f = &h->fields[i];
    const char *v = h->buf + f->value;
    if (name_is(h, f, "connection")) {
      close |= has_token(v, f->value_len, "close");
      keep |= has_token(v, f->value_len, "keep-alive");
      upgrade |= has_token(v, f->value_len, "upgrade");
    } else if (name_is(h, f, "upgrade")) {
      upgrade_field = 1;
    }
  }
  h->keep_alive = !close && (h->parser.http_minor >= 1 || keep);
  h->upgrade =
      h->parser.method == HTTP_CONNECT || (upgrade && upgrade_field && h->parser.http_minor >= 1);
}

/* "METHOD SP target SP HTTP/1.d" and a line end, nothing else (RFC 9112 3). Built without
 * HTTP_PARSER_STRICT, http_parser skips runs of spaces, lets tabs into the target and takes any
 * byte for the letters of "HTTP/" (so "HTTP\n1.1" passes with a line break in it): a backend would
 * read such a line otherwise, and we forward it as sent. */
static int request_line_ok(const np__http_head *h) {
  const char *b = h->buf, *m = np__http_head_method(h);
  size_t ml = strlen(m), i = h->start + ml + 1, end = h->url + (size_t)h->url_len;

  if (h->len - h->start < ml + 1 || memcmp(b + h->start, m, ml) != 0 || b[i - 1] != ' ' ||
      h->url != i || h->url_len == 0)
    return 0;
  for (; i < end; i++)
    if ((unsigned char)b[i] <= ' ' || b[i] == 0x7f)
      return 0;
  if (end + 11 > h->len) /* " HTTP/1.1\n", and the empty line's LF after it */
    return 0;
  if (memcmp(b + end, " HTTP/1.", 8) != 0 || b[end + 8] < '0' || b[end + 8] > '9')
    return 0;
  return b[end + 9] == '\n' || (b[end + 9] == '\r' && b[end + 10] == '\n');
}

/* The head is complete in buf: check what http_parser leaves to us. */
static int finish(np__http_head *h) {
  const http_parser *p = &h->parser;
  size_t i, hosts = 0;

  while (h->start < h->len && (h->buf[h->start] == '\r' || h->buf[h->start] == '\n'))
    h->start++;
  if (p->http_major != 1 || !request_line_ok(h))
    return NP_EPROTO;
  /* http_parser checks this after the empty line, where we paused: a request body's length is
   * unknowable without chunked last (RFC 9112 6.3), and guessing invites request smuggling. */
  if (p->uses_transfer_encoding && !(p->flags & F_CHUNKED))
    return NP_EPROTO;
  for (i = 0; i < h->nfields; i++) {
    np__http_field *f = &h->fields[i];
    const char *b = h->buf;
    /* Non-strict http_parser lets spaces into names ("Host : x"), which a backend may read
     * otherwise than we do (RFC 9112 5.1: refuse). */
    for (size_t k = 0; k < f->name_len; k++)
      if (!is_tchar((unsigned char)b[f->name + k]))
        return NP_EPROTO;
    if (memchr(b + f->name, '\n', (size_t)(f->value + f->value_len - f->name)) != NULL)
      return NP_EPROTO; /* obs-fold: RFC 9112 5.2 lets a server refuse it */
    while (f->value_len > 0 &&
           (b[f->value + f->value_len - 1] == ' ' || b[f->value + f->value_len - 1] == '\t'))
      f->value_len--;
    if (name_is(h, f, "host")) {
      hosts++;
      h->host = (int)i;
    }
  }
  connection(h);
  if (hosts > 1)
    return NP_EHOST;
  if (hosts == 0)
    return p->http_minor == 0 ? NP_HTTP_DONE : NP_EHOST; /* RFC 9112 3.2 */
  if (host_norm(h, h->buf + h->fields[h->host].value, h->fields[h->host].value_len) != 0)
    return NP_EHOST;
  return NP_HTTP_DONE;
}

int np__http_head_feed(np__http_head *h, const char *data, size_t len, size_t *used) {
  size_t take, n;
  int err;

  *used = 0;
  if (h->state != NP_HTTP_MORE)
    return h->state;
  if (len == 0)
    return NP_HTTP_MORE; /* http_parser would take an empty chunk for the end of the stream */
  take = len < NP_HTTP_HEAD_MAX - h->len ? len : NP_HTTP_HEAD_MAX - h->len;
  h->chunk = data;
  n = http_parser_execute(&h->parser, &settings, data, take);
  h->chunk = NULL;
  if (h->complete && HTTP_PARSER_ERRNO(&h->parser) == HPE_PAUSED) {
    /* It pauses on the empty line's last byte, before counting it. Built without
     * HTTP_PARSER_STRICT (Debian's is), it ends a head at a CR and any byte after it: a backend
     * that waits for the LF would read what follows as more fields. */
    if (data[n] != '\n')
      return h->state = NP_EPROTO;
    n++;
  } else if (HTTP_PARSER_ERRNO(&h->parser) != HPE_OK)
    return h->state = h->cb_error != 0 ? h->cb_error : NP_EPROTO;
  if ((err = keep(h, data, n)) != 0)
    return h->state = err;
  if (h->complete) {
    if ((h->state = finish(h)) == NP_HTTP_DONE)
      *used = n;
    return h->state;
  }
  if (h->len == NP_HTTP_HEAD_MAX)
    return h->state = NP_ETOOBIG; /* full, and no empty line yet */
  *used = n;
  return NP_HTTP_MORE;
}

const char *np__http_head_bytes(const np__http_head *h) {
  return h->buf;
}

size_t np__http_head_len(const np__http_head *h) {
  return h->len;
}

const char *np__http_head_method(const np__http_head *h) {
  return http_method_str((enum http_method)h->parser.method);
}

static np__http_span span(const np__http_head *h, size_t off, size_t len) {
  np__http_span s = {h->buf + off, len};
  return s;
}

np__http_span np__http_head_target(const np__http_head *h) {
  return span(h, h->url, h->url_len);
}

int np__http_head_minor(const np__http_head *h) {
  return h->parser.http_minor;
}

int np__http_head_upgrade(const np__http_head *h) {
  return h->upgrade;
}

int np__http_head_keep_alive(const np__http_head *h) {
  return h->keep_alive;
}

np__http_span np__http_head_host(const np__http_head *h) {
  np__http_span s = {NULL, 0};
  if (h->hostlen > 0) {
    s.p = h->hostname;
    s.len = h->hostlen;
  }
  return s;
}

uint64_t np__http_head_content_length(const np__http_head *h) {
  return h->parser.flags & F_CONTENTLENGTH ? h->parser.content_length : NP_HTTP_NO_LENGTH;
}

int np__http_head_chunked(const np__http_head *h) {
  return (h->parser.flags & F_CHUNKED) != 0;
}

size_t np__http_head_nfields(const np__http_head *h) {
  return h->nfields;
}

void np__http_head_field(const np__http_head *h, size_t i, np__http_span *name,
                         np__http_span *value) {
  const np__http_field *f = &h->fields[i];
  *name = span(h, f->name, f->name_len);
  *value = span(h, f->value, f->value_len);
}

int np__http_head_find(const np__http_head *h, const char *name, np__http_span *value) {
  for (size_t i = 0; i < h->nfields; i++)
    if (name_is(h, &h->fields[i], name)) {
      *value = span(h, h->fields[i].value, h->fields[i].value_len);
      return 1;
    }
  return 0;
}

/* The rewriter's output: counts everything, writes what fits. */
typedef struct out {
  char *p;
  size_t cap, len;
} out;

static void put(out *o, const char *s, size_t n) {
  if (n > 0 && o->len + n <= o->cap)
    memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void put_str(out *o, const char *s) {
  put(o, s, strlen(s));
}

/* A field line we add: "Name: value\r\n". */
static void put_field(out *o, const char *name, const char *value, size_t n) {
  put_str(o, name);
  put(o, ": ", 2);
  put(o, value, n);
  put(o, "\r\n", 2);
}

static int bad_text(const char *s) {
  for (; s != NULL && *s != '\0'; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f)
      return 1;
  return 0;
}

enum { F_OTHER, F_HOST, F_XFF, F_XFP, F_XFH, F_FORWARDED };

static int kind(const np__http_head *h, const np__http_field *f) {
  return name_is(h, f, "host")                ? F_HOST
         : name_is(h, f, "x-forwarded-for")   ? F_XFF
         : name_is(h, f, "x-forwarded-proto") ? F_XFP
         : name_is(h, f, "x-forwarded-host")  ? F_XFH
         : name_is(h, f, "forwarded")         ? F_FORWARDED
                                              : F_OTHER;
}

int np__http_head_rewrite(const np__http_head *h, const np__http_rewrite *opts, char *out_,
                          size_t cap, size_t *len) {
  out o = {out_, cap, 0};
  const char *b = h->buf, *eol;
  int trust = opts->trust_forwarded, seen[F_FORWARDED + 1] = {0};
  size_t i, last_xff = SIZE_MAX;

  *len = 0;
  if (h->state != NP_HTTP_DONE)
    return NP_ESTATE;
  if (bad_text(opts->host) || bad_text(opts->addr) || bad_text(opts->proto))
    return UV_EINVAL;
  eol = memchr(b + h->start, '\n', h->len - h->start); /* finish() saw one: the head ends in two */
  put(&o, b + h->start, (size_t)(eol - (b + h->start)) - (eol[-1] == '\r'));
  put(&o, "\r\n", 2);
  for (i = 0; i < h->nfields; i++)
    if (kind(h, &h->fields[i]) == F_XFF)
      last_xff = i;
  for (i = 0; i < h->nfields; i++) {
    const np__http_field *f = &h->fields[i];
    int k = kind(h, f);
    seen[k] = 1;
    if (k == F_HOST && opts->host != NULL) {
      put_field(&o, "Host", opts->host, strlen(opts->host));
      continue;
    }
    if (k != F_OTHER && k != F_HOST && !trust)
      continue;
    /* The line as sent, from its name to its value's end (the whitespace after a value and the
     * line break are not part of it). */
    put(&o, b + f->name, (size_t)(f->value + f->value_len - f->name));
    if (i == last_xff && opts->addr != NULL) {
      put_str(&o, f->value_len > 0 ? ", " : " ");
      put_str(&o, opts->addr);
    }
    put(&o, "\r\n", 2);
  }
  if (opts->host != NULL && !seen[F_HOST])
    put_field(&o, "Host", opts->host, strlen(opts->host));
  if (opts->addr != NULL && !(trust && seen[F_XFF]))
    put_field(&o, "X-Forwarded-For", opts->addr, strlen(opts->addr));
  if (opts->proto != NULL && !(trust && seen[F_XFP]))
    put_field(&o, "X-Forwarded-Proto", opts->proto, strlen(opts->proto));
  if (h->host >= 0 && !(trust && seen[F_XFH]))
    put_field(&o, "X-Forwarded-Host", b + h->fields[h->host].value, h->fields[h->host].value_len);
  put(&o, "\r\n", 2);
  *len = o.len;
  return o.len <= cap ? 0 : UV_ENOBUFS;
}
