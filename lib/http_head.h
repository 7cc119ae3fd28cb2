/* An HTTP/1.x request head, read incrementally and within bounds, for the HTTP vhost frontend
 * (routing by Host, docs/design.md "Proxy types"), and the head to forward with X-Forwarded-*
 * added. http_parser parses; this module collects what it reports and checks what routing needs.
 * No I/O. */
#ifndef NP_HTTP_HEAD_H
#define NP_HTTP_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include <http_parser.h>

#define NP_HTTP_HEAD_MAX   16384 /* a head above this is NP_ETOOBIG (the server answers 431) */
#define NP_HTTP_FIELDS_MAX 100   /* header fields; one more is NP_ETOOBIG too */
#define NP_HTTP_HOST_MAX   253   /* a DNS name's longest text form, without the trailing dot */
#define NP_HTTP_NO_LENGTH  UINT64_MAX

/* np__http_head_feed's results other than errors. */
enum { NP_HTTP_MORE = 0, NP_HTTP_DONE = 1 };

/* Bytes inside the reader's copy of the head: valid until its next reset or free. */
typedef struct np__http_span {
  const char *p;
  size_t len;
} np__http_span;

/* A header field as offsets into the copy (a head fits in 16 bits), so the copy may move as it
 * grows. */
typedef struct np__http_field {
  uint16_t name, name_len, value, value_len;
} np__http_field;

/* The copy grows from 1 KiB by doubling up to NP_HTTP_HEAD_MAX rather than sitting in the struct:
 * most heads are well under 2 KiB, and a keep-alive connection idle between requests (after a
 * reset) holds no copy at all, where a fixed buffer would cost 16 KiB per connection. */
typedef struct np__http_head {
  http_parser parser;
  char *buf; /* the head's bytes so far; NULL until some come */
  size_t cap, len;
  const char *chunk; /* while http_parser runs: the caller's bytes, which start at buf + len */
  size_t start;      /* the request line's offset (empty lines before it are allowed) */
  uint16_t url, url_len;
  np__http_field fields[NP_HTTP_FIELDS_MAX];
  size_t nfields;
  int last; /* which callback ran last: a field's name or value may come in pieces */
  int complete;
  int cb_error; /* why a callback stopped the parser */
  int state;    /* NP_HTTP_MORE, NP_HTTP_DONE or a sticky error */
  int keep_alive, upgrade;
  int host; /* the Host field's index, or -1 */
  size_t hostlen;
  char hostname[NP_HTTP_HOST_MAX + 1]; /* the Host normalised: lower case, no port or last dot */
} np__http_head;

void np__http_head_init(np__http_head *h);
/* Feed len bytes of a connection. *used is how many belong to the head: after NP_HTTP_DONE the rest
 * (a body, the next request) is the caller's. Returns
 *   NP_HTTP_MORE: all len bytes taken, the head is not complete yet;
 *   NP_HTTP_DONE: the head is complete (and later calls say so again, taking nothing);
 *   NP_EPROTO:    not an HTTP/1.x request head (http_parser refused it; a field name that is not a
 *                 token; a folded field; Transfer-Encoding without chunked last; HTTP/0.9 or 2+);
 *   NP_ETOOBIG:   more than NP_HTTP_HEAD_MAX bytes or NP_HTTP_FIELDS_MAX fields;
 *   NP_EHOST:     HTTP/1.1 without Host, two Host fields, or one that is not a valid host name
 *                 (HTTP/1.0 without Host is fine: np__http_head_host is then empty);
 *   UV_ENOMEM.
 * Errors stick until a reset, and take nothing (*used = 0). data is borrowed for this call. */
int np__http_head_feed(np__http_head *h, const char *data, size_t len, size_t *used);
/* Ready for the next request on the connection: releases the copy (every span of it). */
void np__http_head_reset(np__http_head *h);
void np__http_head_free(np__http_head *h);

/* What a complete head says (after NP_HTTP_DONE; spans live until the next reset or free). */
/* Its bytes, up to and including the empty line; np__http_head_len of them. */
const char *np__http_head_bytes(const np__http_head *h);
size_t np__http_head_len(const np__http_head *h);
const char *np__http_head_method(const np__http_head *h);   /* "GET"; static text */
np__http_span np__http_head_target(const np__http_head *h); /* the request target as sent */
int np__http_head_minor(const np__http_head *h);            /* HTTP/1.<minor> */
/* Upgrade with Connection: upgrade in HTTP/1.1 (WebSocket), or CONNECT: after the head, the
 * connection may become a tunnel. */
int np__http_head_upgrade(const np__http_head *h);
/* Connection: close, or HTTP/1.0 without Connection: keep-alive, ends the connection after this
 * request; otherwise it is kept. */
int np__http_head_keep_alive(const np__http_head *h);
/* The Host normalised for routing: lower case, no :port, no trailing dot; {NULL, 0} when an
 * HTTP/1.0 request has none. */
np__http_span np__http_head_host(const np__http_head *h);
/* The body's framing, for finding the next request: Content-Length, NP_HTTP_NO_LENGTH without
 * one; chunked (http_parser refuses a head with both). */
uint64_t np__http_head_content_length(const np__http_head *h);
int np__http_head_chunked(const np__http_head *h);
/* The header fields in order, as sent (value without the whitespace around it). */
size_t np__http_head_nfields(const np__http_head *h);
void np__http_head_field(const np__http_head *h, size_t i, np__http_span *name,
                         np__http_span *value);
/* The first field named name (any case): 1 and its value, or 0. */
int np__http_head_find(const np__http_head *h, const char *name, np__http_span *value);

/* How to forward a head. Strings are borrowed for the call. */
typedef struct np__http_rewrite {
  const char *host;  /* host_header_rewrite: Host's new value; NULL keeps the visitor's */
  const char *addr;  /* the visitor's address for X-Forwarded-For; NULL adds none */
  const char *proto; /* X-Forwarded-Proto ("http"); NULL adds none */
  /* The visitor is a proxy we trust: append addr to its X-Forwarded-For and keep its
   * X-Forwarded-Proto, X-Forwarded-Host and Forwarded (adding ours only where it sent none).
   * Otherwise all four are dropped and ours stand alone. */
  int trust_forwarded;
} np__http_rewrite;

/* The head to forward, into out (cap bytes; out may be NULL with cap 0 to measure): the request
 * line as sent; the fields as sent and in order, except Host when opts->host replaces it, and the
 * X-Forwarded-* / Forwarded fields as opts->trust_forwarded says; then ours: Host (opts->host on
 * a request that had none), X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host (the Host field's
 * value as sent, port included; none without one). Every line ends in CRLF. *len is the length,
 * also when it does not fit. 0; UV_ENOBUFS when more than cap; NP_ESTATE before NP_HTTP_DONE;
 * UV_EINVAL when an opts string holds a control character (it would split the head). */
int np__http_head_rewrite(const np__http_head *h, const np__http_rewrite *opts, char *out,
                          size_t cap, size_t *len);

#endif
