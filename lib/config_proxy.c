/* The client's proxies: [proxy NAME] keys, -R / -U specs, and the checks of each proxy once all
 * keys are in (config.c calls them; the shared value parsers are declared in config.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "config.h"
#include "internal.h"

static np__proxy_cfg *proxy_get(struct np_config *cfg, const char *name) {
  np__proxy_cfg *p;

  for (size_t i = 0; i < cfg->n_proxies; i++)
    if (strcmp(cfg->proxies[i].name, name) == 0)
      return &cfg->proxies[i];
  if (cfg->n_proxies == NP_MAX_PROXIES) {
    np__config_err(cfg, "more than %d proxies", NP_MAX_PROXIES);
    return NULL;
  }
  if (name[0] == '\0' || strlen(name) > NP_MSG_NAME_MAX) {
    np__config_err(cfg, "proxy name '%s' must be 1 to %d bytes", name, NP_MSG_NAME_MAX);
    return NULL;
  }
  p = &cfg->proxies[cfg->n_proxies++];
  memset(p, 0, sizeof(*p));
  strcpy(p->name, name);
  p->remote_port = -1;
  return p;
}

/* What a custom_domains or locations item may be; the server checks them fully (http_route.c), so
 * this only catches what would garble the list or the wire: the item's length and its characters.
 */
enum { NP_HTTP_HOST_NAME, NP_HTTP_LOCATION };

static int list_item_ok(const char *v, size_t n, int what) {
  if (n == 0 || n > (what == NP_HTTP_HOST_NAME ? 253 : NP_MSG_TEXT_MAX))
    return 0;
  if (what == NP_HTTP_LOCATION && v[0] != '/')
    return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)v[i] <= ' ' || v[i] == ',' || v[i] == 0x7f)
      return 0;
  return 1;
}

/* Append a ", "-separated list to dst (the key may come on several lines, as a long list must:
 * inih's lines are short). Each item is checked; the list is kept as "a,b,c". */
static int add_list(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap,
                    int what) {
  size_t len = strlen(dst);

  for (const char *p = v; *p != '\0';) {
    size_t n;
    while (*p == ' ' || *p == ',' || *p == '\t')
      p++;
    n = strcspn(p, ", \t");
    if (n == 0)
      break;
    if (!list_item_ok(p, n, what))
      return np__config_err(cfg, "%s: '%.*s' is not %s", key, (int)n, p,
                            what == NP_HTTP_HOST_NAME
                                ? "a host name (a.example.com or *.example.com)"
                                : "a path (/api)");
    if (len + (len > 0) + n + 1 > cap)
      return np__config_err(cfg, "%s: the list is longer than %zu bytes in all", key, cap - 1);
    if (len > 0)
      dst[len++] = ',';
    memcpy(dst + len, p, n);
    len += n;
    dst[len] = '\0';
    p += n;
  }
  return 0;
}

static int has_http_keys(const np__proxy_cfg *p) {
  return p->custom_domains[0] != '\0' || p->subdomain[0] != '\0' || p->locations[0] != '\0' ||
         p->host_header_rewrite[0] != '\0' || p->http_user[0] != '\0' ||
         p->http_password[0] != '\0';
}

static int check_http_proxy(struct np_config *cfg, const np__proxy_cfg *p) {
  const char *type = p->kind == NP_PROXY_HTTPS ? "https" : "http";
  if (p->custom_domains[0] == '\0' && p->subdomain[0] == '\0')
    return np__config_err(cfg,
                          "[proxy %s]: type = %s needs custom_domains = HOST[, HOST...] or "
                          "subdomain = NAME (under the server's subdomain_host)",
                          p->name, type);
  if (p->remote_port >= 0)
    return np__config_err(
        cfg,
        "[proxy %s]: remote_port is for tcp and udp proxies; %s proxies share the "
        "server's vhost_%s_port",
        p->name, type, type);
  if (p->kind == NP_PROXY_HTTPS &&
      (p->locations[0] != '\0' || p->host_header_rewrite[0] != '\0' || p->http_user[0] != '\0'))
    return np__config_err(
        cfg,
        "[proxy %s]: type = https routes by the TLS server name alone and never sees the "
        "requests: locations, host_header_rewrite and http_user are for type = http",
        p->name);
  if ((p->http_user[0] != '\0') != (p->http_password[0] != '\0'))
    return np__config_err(cfg, "[proxy %s]: http_user and http_password go together", p->name);
  return 0;
}

int np__config_set_proxy_key(struct np_config *cfg, const char *pname, const char *key,
                             const char *v) {
  np__proxy_cfg *p;
  uint64_t n;

  if (cfg->kind != NP_CONFIG_CLIENT)
    return np__config_err(cfg, "[proxy %s]: proxies are configured on the client", pname);
  if ((p = proxy_get(cfg, pname)) == NULL)
    return NP_ECONFIG;
  if (strcmp(key, "type") == 0) {
    if (strcmp(v, "tcp") == 0)
      p->kind = NP_PROXY_TCP;
    else if (strcmp(v, "udp") == 0)
      p->kind = NP_PROXY_UDP;
    else if (strcmp(v, "http") == 0)
      p->kind = NP_PROXY_HTTP;
    else if (strcmp(v, "https") == 0)
      p->kind = NP_PROXY_HTTPS;
    else if (strcmp(v, "stcp") == 0 || strcmp(v, "xtcp") == 0) /* xtcp: frp's name; the owner
                                                                * of an stcp proxy serves both */
      p->kind = NP_PROXY_STCP;
    else if (strcmp(v, "sudp") == 0)
      p->kind = NP_PROXY_SUDP;
    else
      return np__config_err(
          cfg, "type: '%s' is not a proxy type (tcp, udp, http, https, stcp, xtcp or sudp)", v);
    return 0;
  }
  if (strcmp(key, "secret_key") == 0)
    return np__config_copy(cfg, key, v, p->secret_key, sizeof(p->secret_key));
  if (strcmp(key, "allow_users") == 0)
    return np__config_names(cfg, key, v, p->allow_users, sizeof(p->allow_users));
  if (strcmp(key, "custom_domains") == 0)
    return add_list(cfg, key, v, p->custom_domains, sizeof(p->custom_domains), NP_HTTP_HOST_NAME);
  if (strcmp(key, "locations") == 0)
    return add_list(cfg, key, v, p->locations, sizeof(p->locations), NP_HTTP_LOCATION);
  if (strcmp(key, "subdomain") == 0) {
    if (strchr(v, '.') != NULL || !list_item_ok(v, strlen(v), NP_HTTP_HOST_NAME))
      return np__config_err(cfg, "subdomain: '%s' is not one DNS label (like blog)", v);
    return np__config_copy(cfg, key, v, p->subdomain, sizeof(p->subdomain));
  }
  if (strcmp(key, "host_header_rewrite") == 0) {
    if (!list_item_ok(v, strlen(v), NP_HTTP_HOST_NAME) && v[0] != '\0')
      return np__config_err(cfg, "host_header_rewrite: '%s' is not a host name", v);
    return np__config_copy(cfg, key, v, p->host_header_rewrite, sizeof(p->host_header_rewrite));
  }
  if (strcmp(key, "http_user") == 0) {
    if (strchr(v, ':') != NULL)
      return np__config_err(cfg, "http_user: a Basic auth user name cannot hold ':'");
    return np__config_copy(cfg, key, v, p->http_user, sizeof(p->http_user));
  }
  if (strcmp(key, "http_password") == 0)
    return np__config_copy(cfg, key, v, p->http_password, sizeof(p->http_password));
  if (strcmp(key, "remote_port") == 0) {
    if (np__config_uint(cfg, key, v, 65535, &n) != 0)
      return NP_ECONFIG;
    p->remote_port = (int)n;
    return 0;
  }
  if (strcmp(key, "local") == 0)
    return np__config_hostport(cfg, key, v, 0) != 0
               ? NP_ECONFIG
               : np__config_copy(cfg, key, v, p->local, sizeof(p->local));
  if (strcmp(key, "bind_addr") == 0)
    return np__config_copy(cfg, key, v, p->bind_addr, sizeof(p->bind_addr));
  if (strcmp(key, "allow_ips") == 0)
    return np__config_cidrs(cfg, key, v, p->allow_ips, sizeof(p->allow_ips));
  if (strcmp(key, "proxy_protocol_version") == 0) {
    /* frp's values; an empty value turns it off again */
    if (strcmp(v, "v1") == 0 || strcmp(v, "v2") == 0 || v[0] == '\0') {
      p->proxy_protocol = v[0] == '\0' ? 0 : v[1] - '0';
      return 0;
    }
    return np__config_err(cfg, "proxy_protocol_version: '%s' is not v1 or v2", v);
  }
  return np__config_err(
      cfg,
      "unknown key '%s' in [proxy %s] (known: type, local, remote_port, bind_addr, "
      "allow_ips, proxy_protocol_version; type = http: custom_domains, subdomain, "
      "locations, host_header_rewrite, http_user, http_password; type = https: "
      "custom_domains, subdomain; type = stcp, sudp: secret_key, allow_users)",
      key, pname);
}

int np__config_host_ok(const char *v, size_t n) {
  return list_item_ok(v, n, NP_HTTP_HOST_NAME);
}

/* [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT; hosts may be [v6]. flag is "R" or "U". */
static int add_remote(struct np_config *cfg, const char *flag, np_proxy_kind kind,
                      const char *spec) {
  const char *pfx = kind == NP_PROXY_UDP ? "udp" : "tcp";
  char buf[NP_HOSTPORT_MAX * 2];
  char *f[4];
  char name[NP_MSG_NAME_MAX + 1];
  char bind[NP_MSG_NAME_MAX + 1] = "";
  np__proxy_cfg *px;
  uint64_t rp;
  int n;

  cfg->err[0] = '\0';
  if (cfg->kind != NP_CONFIG_CLIENT)
    return np__config_err(cfg, "-%s is a client option", flag);
  if (np__strlcpy(buf, spec, sizeof(buf)) != 0)
    return np__config_err(cfg, "-%s %s: too long", flag, spec);
  n = np__config_split(buf, f, 4);
  if (n < 3 || n > 4)
    return np__config_err(cfg, "-%s %s: expected [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT",
                          flag, spec);
  if (n == 4) {
    if (np__strlcpy(bind, f[0], sizeof(bind)) != 0)
      return np__config_err(cfg, "-%s %s: bind address too long", flag, spec);
    np__config_unbracket(bind);
  }
  if (np__config_uint(cfg, kind == NP_PROXY_UDP ? "-U remote port" : "-R remote port", f[n - 3],
                      65535, &rp) != 0)
    return NP_ECONFIG;
  if (rp == 0)
    snprintf(name, sizeof(name), "%s-%s-%s", pfx, f[n - 2], f[n - 1]);
  else
    snprintf(name, sizeof(name), "%s-%llu", pfx, (unsigned long long)rp);
  for (size_t i = 0; i < cfg->n_proxies; i++)
    if (strcmp(cfg->proxies[i].name, name) == 0)
      return np__config_err(cfg, "-%s %s: the same remote port is given twice", flag, spec);
  if ((px = proxy_get(cfg, name)) == NULL)
    return NP_ECONFIG;
  px->remote_port = (int)rp;
  px->kind = kind;
  strcpy(px->bind_addr, bind);
  snprintf(px->local, sizeof(px->local), "%s:%s", f[n - 2], f[n - 1]);
  if (np__config_hostport(cfg, kind == NP_PROXY_UDP ? "-U local address" : "-R local address",
                          px->local, 0) != 0) {
    cfg->n_proxies--;
    return NP_ECONFIG;
  }
  return 0;
}

int np_config_add_remote(struct np_config *cfg, const char *spec) {
  int r = add_remote(cfg, "R", NP_PROXY_TCP, spec);
  if (r == 0)
    np__config_record(cfg, 'R', spec, NULL, NULL);
  return r;
}

int np_config_add_udp(struct np_config *cfg, const char *spec) {
  int r = add_remote(cfg, "U", NP_PROXY_UDP, spec);
  if (r == 0)
    np__config_record(cfg, 'U', spec, NULL, NULL);
  return r;
}

/* The [proxy NAME] sections as a whole, once every key is in. */
int np__config_check_proxies(struct np_config *cfg, int line_codec) {
  int r;

  for (size_t i = 0; i < cfg->n_proxies; i++) {
    np__proxy_cfg *p = &cfg->proxies[i];
    if (p->local[0] == '\0')
      return np__config_err(cfg, "[proxy %s]: local = HOST:PORT is missing", p->name);
    if (p->kind != NP_PROXY_TCP && line_codec)
      return np__config_err(
          cfg, "[proxy %s]: codec line carries TCP only; UDP and HTTP need codec native", p->name);
    if (!np__kind_private(p->kind) && (p->secret_key[0] != '\0' || p->allow_users[0] != '\0'))
      return np__config_err(
          cfg, "[proxy %s]: secret_key and allow_users are for private proxies (type = stcp, sudp)",
          p->name);
    if (np__kind_private(p->kind) && p->secret_key[0] == '\0' && cfg->secret_key[0] == '\0')
      return np__config_err(cfg,
                            "[proxy %s]: a private proxy (type = stcp, sudp) needs secret_key = "
                            "KEY (or the [client]'s secret_key)",
                            p->name);
    if (np__kind_private(p->kind) && strchr(p->name, '.') != NULL)
      return np__config_err(cfg,
                            "[proxy %s]: a private proxy's name has no dot: visitors name it "
                            "OWNER.PROXY, which splits at the last dot",
                            p->name);
    if (np__kind_private(p->kind)) {
      if (p->remote_port >= 0 || p->bind_addr[0] != '\0')
        return np__config_err(cfg,
                              "[proxy %s]: a private proxy has no public port: drop remote_port "
                              "and bind_addr (visitors use -L or [visitor NAME])",
                              p->name);
      if (has_http_keys(p))
        return np__config_err(cfg, "[proxy %s]: the HTTP keys are for type = http and https",
                              p->name);
      if (p->proxy_protocol == 1 && p->kind == NP_PROXY_SUDP)
        return np__config_err(cfg, "[proxy %s]: a sudp proxy takes proxy_protocol_version = v2",
                              p->name);
      continue;
    }
    if (p->kind == NP_PROXY_HTTP || p->kind == NP_PROXY_HTTPS) {
      if ((r = check_http_proxy(cfg, p)) != 0)
        return r;
      continue;
    }
    if (has_http_keys(p))
      return np__config_err(
          cfg,
          "[proxy %s]: custom_domains, subdomain, locations, host_header_rewrite and "
          "http_user/http_password are for type = http (the first two also https)",
          p->name);
    if (p->remote_port < 0 && !line_codec)
      return np__config_err(cfg, "[proxy %s]: remote_port is missing (0 lets the server choose)",
                            p->name);
    if (p->proxy_protocol == 1 && p->kind == NP_PROXY_UDP)
      return np__config_err(
          cfg,
          "[proxy %s]: proxy_protocol_version = v1 has no form for datagrams; a UDP "
          "proxy takes v2",
          p->name);
  }
  return 0;
}
