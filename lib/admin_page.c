/* The dashboard's files, served from the library's memory (admin_page.h). */
#include "admin_page.h"

#include <string.h>

typedef struct asset {
  const char *path, *type;
  const unsigned char *data;
  size_t len;
} asset;

#include "dashboard_assets.h" /* generated: assets[], ASSETS_COUNT */

/* Only our own files, no inline script or style, no framing (clickjacking),
 * no form posted anywhere: the page's fetches go to this origin's API alone. */
#define CSP                                                                                        \
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "  \
  "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

int np__admin_page(const char *method, const char *path, np__admin_reply *out) {
  for (size_t i = 0; i < ASSETS_COUNT; i++) {
    if (strcmp(assets[i].path, path) != 0)
      continue;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
      np__admin_reply_error(out, 405, "method not allowed");
      return 1;
    }
    out->status = 200;
    out->type = assets[i].type;
    out->static_body = assets[i].data;
    out->len = assets[i].len;
    /* Small and compiled in: asked again each time (no validators to answer 304 with), so a
     * browser never runs an old script against a newer server's API. */
    out->cache = "no-cache";
    out->csp = CSP;
    return 1;
  }
  return 0;
}
