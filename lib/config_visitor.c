/* The client's visitors of private proxies: [visitor NAME] keys, -L specs, and their checks once
 * every key is in (config.c calls them). */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "internal.h"

static np__visitor_cfg *visitor_get(struct np_config *cfg, const char *name) {
  np__visitor_cfg *v;

  for (size_t i = 0; i < cfg->n_visitors; i++)
    if (strcmp(cfg->visitors[i].name, name) == 0)
      return &cfg->visitors[i];
  if (cfg->n_visitors == NP_MAX_VISITORS) {
    np__config_err(cfg, "more than %d visitors", NP_MAX_VISITORS);
    return NULL;
  }
  if (name[0] == '\0' || strlen(name) > NP_MSG_NAME_MAX) {
    np__config_err(cfg, "visitor name '%s' must be 1 to %d bytes", name, NP_MSG_NAME_MAX);
    return NULL;
  }
  v = &cfg->visitors[cfg->n_visitors++];
  memset(v, 0, sizeof(*v));
  strcpy(v->name, name);
  v->kind = NP_PROXY_STCP;
  return v;
}

/* bind = PORT or ADDR:PORT: kept as ADDR:PORT, 127.0.0.1 unless given (a private service stays
 * on this host unless asked otherwise, as ssh -L's does). */
static int set_bind(struct np_config *cfg, const char *key, const char *v, np__visitor_cfg *vc) {
  struct sockaddr_storage ss;
  uint64_t port;

  if (strchr(v, ':') == NULL) {
    if (np__config_uint(cfg, key, v, 65535, &port) != 0)
      return NP_ECONFIG;
    snprintf(vc->bind, sizeof(vc->bind), "127.0.0.1:%llu", (unsigned long long)port);
  } else if (np__strlcpy(vc->bind, v, sizeof(vc->bind)) != 0) {
    return np__config_err(cfg, "%s: '%s' is too long", key, v);
  }
  if (np__parse_addr(vc->bind, &ss) != 0)
    return np__config_err(cfg, "%s: '%s' is not PORT or ADDRESS:PORT (127.0.0.1:6000, [::1]:6000)",
                          key, v);
  return 0;
}

static int set_server_name(struct np_config *cfg, const char *key, const char *v,
                           np__visitor_cfg *vc) {
  const char *dot = strrchr(v, '.');
  if (dot == NULL || dot == v || dot[1] == '\0' || !np__name_ok(v))
    return np__config_err(cfg,
                          "%s: '%s' is not OWNER.PROXY (the owner's client name, a dot, the "
                          "proxy's name: alice.ssh)",
                          key, v);
  return np__config_copy(cfg, key, v, vc->server_name, sizeof(vc->server_name));
}

int np__config_set_visitor_key(struct np_config *cfg, const char *vname, const char *key,
                               const char *v) {
  np__visitor_cfg *vc;

  if (cfg->kind != NP_CONFIG_CLIENT)
    return np__config_err(cfg, "[visitor %s]: visitors are configured on the client", vname);
  if ((vc = visitor_get(cfg, vname)) == NULL)
    return NP_ECONFIG;
  if (strcmp(key, "type") == 0) {
    if (strcmp(v, "stcp") == 0 || strcmp(v, "xtcp") == 0)
      vc->kind = NP_PROXY_STCP;
    else if (strcmp(v, "sudp") == 0)
      vc->kind = NP_PROXY_SUDP;
    else
      return np__config_err(cfg, "type: '%s' is not a visitor type (stcp, xtcp or sudp)", v);
    if (strcmp(v, "xtcp") == 0) /* frp's name for an stcp visitor that goes direct */
      vc->direct = 1;
    return 0;
  }
  if (strcmp(key, "direct") == 0) {
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0 ||
        strcmp(v, "1") == 0)
      vc->direct = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0 ||
             strcmp(v, "0") == 0)
      vc->direct = 0;
    else
      return np__config_err(cfg, "direct: '%s' is not true or false", v);
    return 0;
  }
  if (strcmp(key, "server_name") == 0)
    return set_server_name(cfg, key, v, vc);
  if (strcmp(key, "secret_key") == 0)
    return np__config_copy(cfg, key, v, vc->secret_key, sizeof(vc->secret_key));
  if (strcmp(key, "bind") == 0)
    return set_bind(cfg, key, v, vc);
  return np__config_err(cfg,
                        "unknown key '%s' in [visitor %s] (known: type, server_name, secret_key, "
                        "bind, direct)",
                        key, vname);
}

int np__config_add_local(struct np_config *cfg, const char *spec) {
  char buf[NP_HOSTPORT_MAX * 2], name[NP_MSG_NAME_MAX + 1], bind[NP_HOSTPORT_MAX];
  char *f[3];
  np__visitor_cfg *vc;
  int n;

  cfg->err[0] = '\0';
  if (cfg->kind != NP_CONFIG_CLIENT)
    return np__config_err(cfg, "-L is a client option");
  if (np__strlcpy(buf, spec, sizeof(buf)) != 0)
    return np__config_err(cfg, "-L %s: too long", spec);
  n = np__config_split(buf, f, 3);
  if (n < 2 || n > 3)
    return np__config_err(cfg, "-L %s: expected [BIND_ADDR:]PORT:OWNER.PROXY", spec);
  if (n == 3) {
    np__config_unbracket(f[0]);
    snprintf(bind, sizeof(bind), strchr(f[0], ':') != NULL ? "[%s]:%s" : "%s:%s", f[0], f[1]);
  } else {
    np__strlcpy(bind, f[0], sizeof(bind));
  }
  /* "stcp-PORT", or with an address of its own "stcp-ADDR:PORT": ssh -L takes one port on two
   * addresses */
  snprintf(name, sizeof(name), "stcp-%s", n == 3 ? bind : f[n - 2]);
  for (size_t i = 0; i < cfg->n_visitors; i++)
    if (strcmp(cfg->visitors[i].name, name) == 0)
      return np__config_err(cfg, "-L %s: the same local address and port are given twice", spec);
  if ((vc = visitor_get(cfg, name)) == NULL)
    return NP_ECONFIG;
  if (set_bind(cfg, "-L local port", bind, vc) != 0 ||
      set_server_name(cfg, "-L OWNER.PROXY", f[n - 1], vc) != 0) {
    cfg->n_visitors--;
    return NP_ECONFIG;
  }
  return 0;
}

int np_config_add_local(struct np_config *cfg, const char *spec) {
  int r = np__config_add_local(cfg, spec);
  if (r == 0)
    np__config_record(cfg, 'L', spec, NULL, NULL);
  return r;
}

int np__config_check_visitors(struct np_config *cfg, int line_codec) {
  for (size_t i = 0; i < cfg->n_visitors; i++) {
    const np__visitor_cfg *v = &cfg->visitors[i];
    if (line_codec)
      return np__config_err(cfg, "[visitor %s]: codec line has no private proxies", v->name);
    if (v->server_name[0] == '\0')
      return np__config_err(cfg, "[visitor %s]: server_name = OWNER.PROXY is missing", v->name);
    if (v->bind[0] == '\0')
      return np__config_err(cfg, "[visitor %s]: bind = [ADDRESS:]PORT is missing", v->name);
    if (v->secret_key[0] == '\0' && cfg->secret_key[0] == '\0')
      return np__config_err(cfg,
                            "[visitor %s]: secret_key is missing (the one the owner of %s set; "
                            "for -L: --secret-key-file FILE)",
                            v->name, v->server_name);
    if (v->direct && v->kind != NP_PROXY_STCP)
      return np__config_err(cfg, "[visitor %s]: direct = true is for stcp visitors only", v->name);
    for (size_t j = 0; j < i; j++)
      if (strcmp(cfg->visitors[j].bind, v->bind) == 0 && cfg->visitors[j].kind == v->kind)
        return np__config_err(cfg, "[visitor %s]: bind %s is [visitor %s]'s too", v->name, v->bind,
                              cfg->visitors[j].name);
  }
  return 0;
}
