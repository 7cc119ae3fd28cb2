/* What the client's files all use: events to the embedder, proxies by name, the control channel,
 * and the client's reference count. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"

void np__client_emit(struct np_client *cl, np_client_event_type type, int status, const char *name,
                     const char *text, int port) {
  np_client_event ev = {sizeof(ev), type, status, name, text, port};
  if (cl->event_cb != NULL)
    cl->event_cb(cl, &ev);
}

const np__proxy_cfg *np__client_find_proxy(struct np_client *cl, const char *name) {
  if (!native(cl))
    return &cl->cfg.proxies[0]; /* the line codec carries exactly one service */
  for (size_t i = 0; i < cl->cfg.n_proxies; i++)
    if (strcmp(cl->cfg.proxies[i].name, name) == 0)
      return &cl->cfg.proxies[i];
  return NULL;
}

int np__client_send(struct np_client *cl, const np_msg *m) {
  int r;
  if (cl->ch == NULL)
    return NP_ESTATE;
  if ((r = np__chan_send(cl->ch, m)) == 0)
    cl->last_tx = now_ms(cl);
  return r;
}

void np__client_unref(struct np_client *cl) {
  if (--cl->refs > 0 || !cl->closing)
    return;
  np__bufcache_clear(&cl->chunks);
  np__transport_free(cl->transport);
  np__tls_free(cl->tls);
  if (cl->close_cb != NULL)
    cl->close_cb(cl);
  free(cl);
}
