/* What the client's files all use: events to the embedder, proxies by name, the control channel,
 * and the client's reference count. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "client.h"

void np__client_emit(struct np_client *cl, np_client_event_type type, int status, const char *name,
                     const char *text, int port) {
  np_client_event ev = {sizeof(ev), type, status, name, text, port};
  if (cl->parent != NULL)
    cl->parent->set_ops->event(cl, &ev);
  else if (cl->event_cb != NULL)
    cl->event_cb(cl, &ev);
}

cproxy *np__client_find_proxy(struct np_client *cl, const char *name) {
  if (!native(cl))
    return cl->px[0]; /* the line codec carries exactly one service */
  for (size_t i = 0; i < cl->cfg.n_proxies; i++)
    if (strcmp(cl->px[i]->cfg.name, name) == 0)
      return cl->px[i];
  return NULL;
}

int np__cproxy_new(const np__proxy_cfg *cfg, cproxy **out) {
  cproxy *px = calloc(1, sizeof(*px));

  if (px == NULL)
    return UV_ENOMEM;
  px->cfg = *cfg;
  px->refs = 1;
  *out = px;
  return 0;
}

void np__cproxy_unref(cproxy *px) {
  if (px == NULL || --px->refs > 0)
    return;
  OPENSSL_cleanse(px->cfg.http_password, sizeof(px->cfg.http_password));
  free(px);
}

void np__client_set_state(struct np_client *cl, enum cstate state) {
  if (cl->state != state)
    cl->state_ms = now_ms(cl);
  cl->state = state;
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
  for (size_t i = 0; i < cl->cfg.n_proxies; i++)
    np__cproxy_unref(cl->px[i]);
  np__bufcache_clear(&cl->chunks);
  np__transport_free(cl->transport);
  np__tls_free(cl->tls);
  if (cl->set_ops != NULL)
    cl->set_ops->free(cl);
  if (cl->close_cb != NULL)
    cl->close_cb(cl);
  explicit_bzero(&cl->cfg, sizeof(cl->cfg)); /* tokens, and the flags that set them (replay) */
  free(cl);
}
