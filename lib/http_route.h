/* The routing table of the HTTP vhost (issue 15): which proxy claimed which host name and path, so
 * that one public port can serve many HTTP services, each request going where its Host (and path)
 * say. A pure data structure: no I/O, no libuv; lib/proxy_http.c does the rest. Hosts are keyed in
 * hash tables (Debian's uthash), so a lookup costs one hash lookup per label of the name whatever
 * the number of hosts. */
#ifndef NP_HTTP_ROUTE_H
#define NP_HTTP_ROUTE_H

#include <stddef.h>

#define NP_HTTP_ROUTE_HOST_MAX     253 /* a DNS name's longest text form, without the trailing dot */
#define NP_HTTP_ROUTE_LOCATION_MAX 255  /* bytes of a location as given */
#define NP_HTTP_ROUTES_GONE_MAX    4096 /* gone entries kept in all (np__http_routes_remove) */

/* np__http_routes_find's results. */
enum { NP_HTTP_ROUTE_NONE = 0, NP_HTTP_ROUTE_FOUND = 1, NP_HTTP_ROUTE_GONE = 2 };

typedef struct np__http_routes np__http_routes;

/* An empty table in *out (untouched on failure). Returns 0 or UV_ENOMEM. */
int np__http_routes_new(np__http_routes **out);
/* Frees the table and every entry; the owners are the caller's and are not touched. NULL is fine.
 */
void np__http_routes_free(np__http_routes *r);

/* Claim host + location for owner, an opaque non-NULL pointer (the caller's proxy), held by the
 * table until np__http_routes_remove; host and location are copied.
 *
 * host: "a.example.com" (exact) or "*.example.com" (a wildcard: any name ending in ".example.com",
 *   at any depth, "x.example.com" and "x.y.example.com", but not "example.com" itself). Compared
 *   without case (kept in lower case); one trailing dot is dropped. It must then be a DNS name of
 *   at most NP_HTTP_ROUTE_HOST_MAX bytes, in labels of 1..63 letters, digits, '-' and '_' (real
 *   hosts have underscores), none starting or ending with '-'; "*" only as the whole first label of
 *   a name with at least one more.
 * location: "" or "/" is every path; otherwise it starts with '/', has no whitespace, control
 *   character, '?' or '#', and is at most NP_HTTP_ROUTE_LOCATION_MAX bytes. One trailing '/' is
 *   dropped, so "/api/" and "/api" are the same claim; one that still ends in '/' after that
 *   ("/api//") is refused rather than guessed at. Compared byte for byte (no percent-decoding).
 *
 * Returns
 *   0:          claimed; also when owner already holds exactly this host + location (idempotent),
 *               and when that claim is a gone entry (see np__http_routes_remove): taken over;
 *   UV_EEXIST:  another owner holds exactly this host + location; *holder (when holder != NULL) is
 *               set to that owner. Claims that merely overlap ("*.example.com" and
 *               "a.example.com", "/" and "/api") are no conflict: the more specific one wins;
 *   UV_EINVAL:  owner is NULL, or host or location is not valid as above (or NULL);
 *   UV_ENOMEM:  the table is as before. */
int np__http_routes_add(np__http_routes *r, const char *host, const char *location, void *owner,
                        void **holder);

/* Drop every claim of owner (none is fine). gone != 0 keeps them as "gone" entries instead: their
 * client is not connected, so the vhost answers 502 rather than 404 for them, and the next owner to
 * claim one takes it over. At most NP_HTTP_ROUTES_GONE_MAX gone entries are kept in all, the
 * oldest dropped beyond that: a stream of clients that claim random hosts and leave cannot grow
 * the table without bound. Visits every entry (removal is rare), never more than once. */
void np__http_routes_remove(np__http_routes *r, void *owner, int gone);

/* Route a request. host/hostlen: its host name as np__http_head_host gives it (lower case, no
 * port; not NUL-terminated; a trailing dot or upper case are tolerated all the same); borrowed.
 * path/pathlen: the request target in origin form; it ends at the first '?' or '#' (the caller may
 * pass the whole target). An absolute-form target is the caller's to reduce to its path.
 *
 * The host is looked up exactly first, then as each wildcard from the most specific suffix to the
 * least ("*.b.example.com" before "*.example.com"). In a host that has claims, the longest location
 * that is a prefix of path on a segment boundary wins ("/api" matches "/api", "/api/" and "/api/x",
 * not "/apix"; "" matches every path). When a host has claims but none matches path, the search
 * goes on to the next less specific wildcard (and after the exact host, to the wildcards): a
 * service that claims only "/api" of a name does not hide a wider wildcard's other paths.
 *
 * Returns NP_HTTP_ROUTE_FOUND with *owner set; NP_HTTP_ROUTE_GONE when the best match is a gone
 * entry (*owner = NULL); NP_HTTP_ROUTE_NONE (*owner = NULL) when nothing matches, also for an empty
 * or too long host. */
int np__http_routes_find(const np__http_routes *r, const char *host, size_t hostlen,
                         const char *path, size_t pathlen, void **owner);

/* Call cb for each host that has a live claim, once per host ("*.example.com" for a wildcard), in
 * no order, until it returns non-zero (which is returned). The table must not change meanwhile. */
int np__http_routes_foreach_host(const np__http_routes *r, int (*cb)(const char *host, void *arg),
                                 void *arg);

/* How many live claims (gone == 0) or gone entries (gone != 0) the table holds: tests and stats. */
size_t np__http_routes_count(const np__http_routes *r, int gone);

#endif
