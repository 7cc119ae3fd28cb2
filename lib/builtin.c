/* The built-in proxy types and the admin endpoint: the one place that names them. np_server_new
 * lives here, above both the session core and the types, so the core never refers to a type (the
 * layering check in docs/design.md holds it to that). A new built-in type is a file and a line
 * below. */
#include "proxy.h"
#include "peer.h"
#include "route_store.h"

static const np__proxy_type *const builtin[] = {&np__proxy_tcp,   &np__proxy_udp,  &np__proxy_http,
                                                &np__proxy_https, &np__proxy_stcp, &np__proxy_sudp};

int np_server_new(uv_loop_t *loop, const struct np_config *cfg, struct np_server **out) {
  struct np_server *srv;
  int r;

  if ((r = np__server_create(loop, cfg, &srv)) != 0)
    return r;
  for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
    np__server_add_type(srv, builtin[i]);
  srv->admin_start = np__admin_server_start;
  srv->admin_stop = np__admin_server_stop;
  srv->admin_auth = np__admin_server_auth;
  srv->routes_start = np__routes_start;
  srv->routes_stop = np__routes_stop;
  srv->peers_start = np__peers_start;
  srv->peers_stop = np__peers_stop;
  srv->forward = np__peers_forward;
  *out = srv;
  return 0;
}
