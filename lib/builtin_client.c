/* np_client_new: the client's session plus its admin endpoint, whose hooks are set here, above
 * both, so the session layer never calls up into operations (docs/design.md), as builtin.c does for
 * the server. */
#include <string.h>

#include "client.h"

/* server = a, b: a set of clients, one per server (client_set.c); and a host name, which may
 * resolve to several servers (DNS round robin), a set too. An address, or the line codec (one
 * server, always), is one client. */
static int several_servers(const struct np_config *cfg) {
  struct sockaddr_storage ss;
  const np_codec_ops *codec;

  if (cfg == NULL || cfg->kind != NP_CONFIG_CLIENT)
    return 0;
  if (strchr(cfg->server, ',') != NULL)
    return 1;
  codec = np_codec_find(cfg->codec);
  return np__parse_addr(cfg->server, &ss) != 0 && codec != NULL &&
         (codec->caps & NP_CODEC_CAP_AUTH) != 0;
}

int np_client_new(uv_loop_t *loop, const struct np_config *cfg, struct np_client **out) {
  struct np_client *cl;
  int r;

  if ((r = several_servers(cfg) ? np__client_set_new(loop, cfg, &cl)
                                : np__client_create(loop, cfg, &cl)) != 0)
    return r;
  cl->admin_start = np__admin_client_start;
  cl->admin_stop = np__admin_client_stop;
  cl->admin_auth = np__admin_client_auth;
  *out = cl;
  return 0;
}
