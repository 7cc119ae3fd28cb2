/* np_client_new: the client's session plus its admin endpoint, whose hooks are set here, above
 * both, so the session layer never calls up into operations (docs/design.md), as builtin.c does for
 * the server. */
#include <string.h>

#include "client.h"

int np_client_new(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out) {
  struct np_client *cl;
  int r;

  /* server = a, b: a set of clients, one per server (client_set.c). */
  if ((r = cfg != NULL && strchr(cfg->server, ',') != NULL
               ? np__client_set_new(loop, cfg, &cl)
               : np__client_create(loop, cfg, &cl)) != 0)
    return r;
  cl->admin_start = np__admin_client_start;
  cl->admin_stop = np__admin_client_stop;
  cl->admin_auth = np__admin_client_auth;
  *out = cl;
  return 0;
}
