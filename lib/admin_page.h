/* np-server's dashboard on the admin endpoint (docs/api-admin.md, "The dashboard"): one page and
 * its script, style and icon from lib/dashboard/, compiled into the library (scripts/embed-assets)
 * and served from memory. The page reads the JSON API like any other client. Not installed. */
#ifndef NP_ADMIN_PAGE_H
#define NP_ADMIN_PAGE_H

#include "admin_http.h"

/* The page's paths, for an open list (admin_http.h): they hold no data, so when the API takes a
 * Bearer token alone they are served without one and the page asks for it. lib/meson.build's
 * dashboard files and this list are the same set (the e2e test fetches each). */
#define NP_ADMIN_PAGE_PATHS "/", "/dashboard.css", "/dashboard.js", "/favicon.svg"

/* 1 when path is one of the page's files, out filled (GET and HEAD; 405 for other methods); 0 when
 * it is not one of them, out untouched. */
int np__admin_page(const char *method, const char *path, np__admin_reply *out);

#endif
