/* The checks every visit of a private proxy passes (lib/proxy.h), whichever way it comes: VISIT,
 * carried through the server (proxy_stcp.c), or DIRECT, a path between the two clients
 * (server_direct.c). One copy, so the two ways cannot drift apart in what they let through or in
 * what a guesser is charged. */
#include <stdio.h>

#include "proxy.h"

#include "auth.h"

int np__private_backoff(session *s, char *why, size_t len) {
  struct np_server *srv = s->srv;
  uint64_t wait = np__shared_backoff_wait(srv->shared, (struct sockaddr *)&s->addr, now_ms(srv));

  if (wait == 0)
    return 0;
  srv->stats.logins_throttled++;
  snprintf(why, len, "too many failed logins or visits from your address; retry in %llu s",
           (unsigned long long)(wait + 999) / 1000);
  return NP_EBACKOFF;
}

int np__private_admit(session *s, const np_msg *m, int direct, const unsigned char *key,
                      uint64_t sid, const char *who, np__private *p, char *why, size_t len) {
  unsigned char want[NP_MSG_KEY_LEN];
  int r;

  if (np__shared_private_find(s->srv->shared, m->name, p) != 0 || p->kind != m->kind) {
    snprintf(why, len, "no private proxy of type %s named %s",
             m->kind == NP_PROXY_SUDP ? "sudp" : "stcp", m->name);
    return NP_ENOPROXY;
  }
  r = direct ? np__auth_direct_mac(p->verifier, key, sid, m->id2, m->kind, m->name, want)
             : np__auth_visit_mac(p->verifier, key, sid, m->id2, m->kind, m->name, want);
  if (r != 0 || !np__auth_equal(want, m->mac)) {
    snprintf(why, len, "wrong secret_key for private proxy %s", m->name);
    np__login_failed(s->srv, &s->addr, s->peer, NP_ESECRET, why, who);
    snprintf(why, len, "wrong secret_key (give the one the proxy's owner set)");
    return NP_ESECRET;
  }
  if (!np__private_listed(p->allow_users, who)) {
    snprintf(why, len, "client '%s' is not in the proxy's allow_users", who);
    return NP_EDENIED;
  }
  return 0;
}
