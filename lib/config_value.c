/* The value parsers of the configuration, shared by config.c and config_proxy.c: each is 0, or
 * NP_ECONFIG with cfg's error set and naming the key. And the replay both record into. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "cidr.h"
#include "config.h"
#include "internal.h"

void np__config_record(struct np_config *cfg, char op, const char *a, const char *b,
                       const char *c) {
  const char *parts[3] = {a, b, c};
  size_t need = 1, at = cfg->replay_len;

  if (cfg->busy > 0)
    return;
  for (int i = 0; i < 3 && parts[i] != NULL; i++)
    need += strlen(parts[i]) + 1;
  if (need > sizeof(cfg->replay) - at) {
    cfg->replay_lost = 1;
    return;
  }
  cfg->replay[at++] = op;
  for (int i = 0; i < 3 && parts[i] != NULL; i++) {
    size_t n = strlen(parts[i]) + 1;
    memcpy(cfg->replay + at, parts[i], n);
    at += n;
  }
  cfg->replay_len = at;
}

int np__config_err(struct np_config *cfg, const char *fmt, ...) {
  char msg[400];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  /* np_config_load_file adds "FILE:LINE: " once inih has told it the line. */
  snprintf(cfg->err, sizeof(cfg->err), "%s", msg);
  return NP_ECONFIG;
}

int np__config_uint(struct np_config *cfg, const char *key, const char *v, uint64_t max,
                    uint64_t *out) {
  char *end;
  unsigned long long n;

  errno = 0;
  if (*v == '\0' || *v == '-' || *v == '+')
    return np__config_err(cfg, "%s: '%s' is not a number", key, v);
  n = strtoull(v, &end, 10);
  if (errno != 0 || *end != '\0' || n > max)
    return np__config_err(cfg, "%s: '%s' is not a number from 0 to %llu", key, v,
                          (unsigned long long)max);
  *out = n;
  return 0;
}

int np__config_hostport(struct np_config *cfg, const char *key, const char *v, int numeric) {
  struct sockaddr_storage ss;
  char host[NP_HOSTPORT_MAX];
  int port;

  if (numeric ? np__parse_addr(v, &ss) != 0 : np__split_hostport(v, host, sizeof(host), &port) != 0)
    return np__config_err(cfg, "%s: '%s' is not %s:PORT", key, v, numeric ? "IP" : "HOST");
  return 0;
}

size_t np__config_servers(const char *list, char (*out)[NP_HOSTPORT_MAX], size_t max) {
  size_t n = 0;

  for (const char *p = list; *p != '\0';) {
    size_t len = strcspn(p, ",");
    if (n < max) {
      size_t k = len < NP_HOSTPORT_MAX - 1 ? len : NP_HOSTPORT_MAX - 1;
      memcpy(out[n], p, k);
      out[n][k] = '\0';
    }
    n++;
    p += len + (p[len] == ',');
  }
  return n;
}

int np__config_copy(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap) {
  if (np__strlcpy(dst, v, cap) != 0)
    return np__config_err(cfg, "%s: value longer than %zu bytes", key, cap - 1);
  return 0;
}

/* Checked here so a bad list fails at start with FILE:LINE; the server parses it again from the
 * PROXY message. */
int np__config_cidrs(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap) {
  np__cidrs c;
  char why[200];

  /* np__cidrs_parse names the list allow_ips, its most common use; say which key it was. */
  if (np__cidrs_parse(v, &c, why, sizeof(why)) != 0)
    return np__config_err(cfg, "%s: %s", key,
                          strncmp(why, "allow_ips: ", 11) == 0 ? why + 11 : why);
  if (strlen(v) >= cap)
    return np__config_err(cfg, "%s: at most %zu bytes (write networks, not single hosts)", key,
                          cap - 1);
  return np__config_copy(cfg, key, v, dst, cap);
}

int np__config_split(char *s, char **fields, int max) {
  int n = 0, depth = 0;

  fields[n++] = s;
  for (; *s != '\0'; s++) {
    if (*s == '[')
      depth++;
    else if (*s == ']')
      depth--;
    else if (*s == ':' && depth == 0) {
      if (n == max)
        return max + 1;
      *s = '\0';
      fields[n++] = s + 1;
    }
  }
  return n;
}

void np__config_unbracket(char *s) {
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
    memmove(s, s + 1, n - 2);
    s[n - 2] = '\0';
  }
}

int np__config_names(struct np_config *cfg, const char *key, const char *v, char *dst, size_t cap) {
  size_t len = 0;

  dst[0] = '\0';
  for (const char *p = v; *p != '\0';) {
    char name[NP_MSG_NAME_MAX + 1];
    size_t n;
    while (*p == ' ' || *p == ',' || *p == '\t')
      p++;
    n = strcspn(p, ", \t");
    if (n == 0)
      break;
    if (n > NP_MSG_NAME_MAX)
      return np__config_err(cfg, "%s: '%.*s' is longer than a client name (%d bytes)", key, (int)n,
                            p, NP_MSG_NAME_MAX);
    memcpy(name, p, n);
    name[n] = '\0';
    if (!np__name_ok(name))
      return np__config_err(cfg, "%s: '%s' is not a client name (printable UTF-8)", key, name);
    if (len + (len > 0) + n + 1 > cap)
      return np__config_err(cfg, "%s: the list is longer than %zu bytes in all", key, cap - 1);
    if (len > 0)
      dst[len++] = ',';
    memcpy(dst + len, name, n + 1);
    len += n;
    p += n;
  }
  return 0;
}
