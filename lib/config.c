/* Configuration: INI files through inih and the same keys from flags, validated with FILE:LINE
 * errors. */
#include "config.h"
#include "config_keys.h"
#include "natproxy/server.h"

#include "cidr.h"
#include "mux.h"
#include "mux_frame.h"
#include "tls.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>
#include <uv.h>

#include "internal.h"

/* Value parsers: 0 or NP_ECONFIG with cfg->err set. */

/* "250ms", "10s", "2m", "1h" or a bare number of seconds. */
static int parse_duration(struct np_config *cfg, const char *key, const char *v, uint64_t *ms) {
  char num[32];
  const char *unit = v;
  uint64_t n, mult = 1000;

  while (*unit >= '0' && *unit <= '9')
    unit++;
  if (unit == v || (size_t)(unit - v) >= sizeof(num))
    return np__config_err(cfg, "%s: '%s' is not a duration (like 500ms, 10s, 2m)", key, v);
  memcpy(num, v, (size_t)(unit - v));
  num[unit - v] = '\0';
  if (strcmp(unit, "ms") == 0)
    mult = 1;
  else if (strcmp(unit, "s") == 0 || *unit == '\0')
    mult = 1000;
  else if (strcmp(unit, "m") == 0)
    mult = 60000;
  else if (strcmp(unit, "h") == 0)
    mult = 3600000;
  else
    return np__config_err(cfg, "%s: unknown unit in '%s' (use ms, s, m or h)", key, v);
  if (np__config_uint(cfg, key, num, UINT32_MAX, &n) != 0)
    return NP_ECONFIG;
  *ms = n * mult;
  return 0;
}

static int port_num(const char *v, uint64_t *out) {
  char *end;
  unsigned long n;

  if (*v < '0' || *v > '9')
    return -1;
  errno = 0;
  n = strtoul(v, &end, 10);
  if (errno != 0 || *end != '\0' || n > 65535)
    return -1;
  *out = n;
  return 0;
}

int np__ports_parse(const char *key, const char *v, np__ports *out, char *err, size_t errlen) {
  char buf[1024];
  char *save = NULL, *tok;

  out->n = 0;
  if (np__strlcpy(buf, v, sizeof(buf)) != 0) {
    snprintf(err, errlen, "%s: list too long", key);
    return NP_ECONFIG;
  }
  for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
    uint64_t lo, hi;
    char *dash;
    while (*tok == ' ')
      tok++;
    for (char *e = tok + strlen(tok); e > tok && e[-1] == ' '; e--)
      e[-1] = '\0';
    dash = strchr(tok, '-');
    if (dash != NULL)
      *dash = '\0';
    if (port_num(tok, &lo) != 0 || port_num(dash != NULL ? dash + 1 : tok, &hi) != 0 || lo == 0 ||
        lo > hi) {
      snprintf(err, errlen, "%s: bad port or range '%s%s%s' (ports are 1-65535, low-high)", key,
               tok, dash ? "-" : "", dash ? dash + 1 : "");
      out->n = 0;
      return NP_ECONFIG;
    }
    if (out->n == NP_MAX_PORT_RANGES) {
      snprintf(err, errlen, "%s: more than %d ranges", key, NP_MAX_PORT_RANGES);
      out->n = 0;
      return NP_ECONFIG;
    }
    out->r[out->n].lo = (uint16_t)lo;
    out->r[out->n].hi = (uint16_t)hi;
    out->n++;
  }
  if (out->n == 0) {
    snprintf(err, errlen, "%s: empty list", key);
    return NP_ECONFIG;
  }
  return 0;
}

int np__ports_allow(const np__ports *p, int port) {
  if (p->n == 0)
    return 1;
  for (size_t i = 0; i < p->n; i++)
    if (port >= p->r[i].lo && port <= p->r[i].hi)
      return 1;
  return 0;
}

/* The port a client dials when --server names none, as bore and frp default theirs. */
#define NP_DEFAULT_SERVER_PORT "7000"

/* server = HOST: HOST:7000 ("[::1]" and a bare IPv6 address too). Else v itself. */
static const char *default_port(const char *v, char *buf, size_t len) {
  const char *colon = strchr(v, ':');
  size_t n = strlen(v);

  if (colon == NULL)
    snprintf(buf, len, "%s:%s", v, NP_DEFAULT_SERVER_PORT);
  else if (v[0] == '[' && n > 1 && v[n - 1] == ']')
    snprintf(buf, len, "%s:%s", v, NP_DEFAULT_SERVER_PORT);
  else if (v[0] != '[' && strchr(colon + 1, ':') != NULL) {
    struct sockaddr_storage ss;
    char probe[NP_HOSTPORT_MAX + 8];
    snprintf(probe, sizeof(probe), "[%s]:0", v);
    if (np__parse_addr(probe, &ss) != 0)
      return v; /* not an IPv6 address: its error comes later */
    snprintf(buf, len, "[%s]:%s", v, NP_DEFAULT_SERVER_PORT);
  } else
    return v;
  return buf;
}

/* Where to listen: ":7000" is every IPv4 address ("0.0.0.0:7000"), and a host name is resolved now
 * to its first address ("localhost:7000" -> "127.0.0.1:7000"), so the listener and the logs show
 * what was bound. NULL with the error set when the name does not resolve. */
static const char *bind_addr(struct np_config *cfg, const char *key, const char *v, char *buf,
                             size_t len) {
  struct sockaddr_storage ss;
  /* No AI_ADDRCONFIG: it hides "localhost" on a host whose only interface is the loopback. */
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
  char host[NP_HOSTPORT_MAX];
  int port, r;

  if (v[0] == ':') {
    snprintf(buf, len, "0.0.0.0%s", v);
    return buf;
  }
  if (np__parse_addr(v, &ss) == 0 || np__split_hostport(v, host, sizeof(host), &port) != 0)
    return v; /* an address, or not HOST:PORT at all (its error comes later) */
  /* IPv4 first: "localhost:7000" means 127.0.0.1, as people expect, not ::1 (glibc's order). */
  hints.ai_family = AF_INET;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) {
    hints.ai_family = AF_UNSPEC;
    res = NULL;
  }
  if (res == NULL && ((r = getaddrinfo(host, NULL, &hints, &res)) != 0 || res == NULL)) {
    np__config_err(cfg, "%s: cannot resolve '%s': %s", key, host, gai_strerror(r));
    return NULL;
  }
  ((struct sockaddr_in *)res->ai_addr)->sin_port = htons((uint16_t)port); /* same offset in v6 */
  np__addr_str(res->ai_addr, buf, len);
  freeaddrinfo(res);
  return buf;
}

/* token_file: the token is the file's first line, without its line end and surrounding blanks, so
 * it stays out of the command line (ps) and the INI file. Read as the key is set: a reload reads
 * it again (a rotated token). */
static int read_token_file(struct np_config *cfg, const char *key, const char *path, char *dst,
                           size_t cap) {
  char line[512];
  size_t n;
  char *p = line;
  FILE *f = fopen(path, "r");

  if (f == NULL)
    return np__config_err(cfg, "%s: cannot read %s: %s", key, path, strerror(errno));
  setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer left holding the token in freed memory */
  if (fgets(line, sizeof(line), f) == NULL)
    line[0] = '\0';
  fclose(f);
  while (*p == ' ' || *p == '\t')
    p++;
  n = strcspn(p, "\r\n");
  while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
    n--;
  p[n] = '\0';
  if (n == 0) {
    explicit_bzero(line, sizeof(line));
    return np__config_err(cfg, "%s: %s holds no token on its first line", key, path);
  }
  if (n >= cap) {
    explicit_bzero(line, sizeof(line));
    return np__config_err(cfg, "%s: the token in %s is longer than %zu bytes", key, path, cap - 1);
  }
  memcpy(dst, p, n + 1);
  explicit_bzero(line, sizeof(line));
  return 0;
}

/* server = a.example.org, b.example.org:7001: one session per server (client_set.c). Each item gets
 * the default port if it has none and is checked; the list is kept as "HOST:PORT,HOST:PORT". */
static int server_list(struct np_config *cfg, const np__key *k, const char *v, char *field) {
  char out[NP_MAX_SERVERS * NP_HOSTPORT_MAX] = "", seen[NP_MAX_SERVERS][NP_HOSTPORT_MAX];
  size_t n = 0, used = 0;

  for (const char *p = v;; p++) {
    char item[NP_HOSTPORT_MAX + 8], norm[NP_HOSTPORT_MAX + 8];
    const char *one;
    size_t len = strcspn(p, ",");
    size_t a = 0, b = len;

    while (a < b && (p[a] == ' ' || p[a] == '\t'))
      a++;
    while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
      b--;
    if (a == b)
      return np__config_err(cfg, "%s: an empty item in '%s' (HOST[:PORT], comma-separated)",
                            k->name, v);
    if (b - a >= NP_HOSTPORT_MAX)
      return np__config_err(cfg, "%s: '%.*s' is longer than %d bytes", k->name, (int)(b - a), p + a,
                            NP_HOSTPORT_MAX - 1);
    memcpy(item, p + a, b - a);
    item[b - a] = '\0';
    one = default_port(item, norm, sizeof(norm));
    if (np__config_hostport(cfg, k->name, one, 0) != 0)
      return NP_ECONFIG;
    if (n == NP_MAX_SERVERS)
      return np__config_err(cfg, "%s: at most %d servers", k->name, NP_MAX_SERVERS);
    for (size_t i = 0; i < n; i++)
      if (strcmp(seen[i], one) == 0)
        return np__config_err(cfg, "%s: %s is listed twice", k->name, one);
    if (np__strlcpy(seen[n], one, sizeof(seen[n])) != 0)
      return np__config_err(cfg, "%s: '%s' is longer than %d bytes", k->name, one,
                            NP_HOSTPORT_MAX - 1);
    /* NP_MAX_SERVERS items of less than NP_HOSTPORT_MAX bytes and a comma each: it fits. */
    used += (size_t)snprintf(out + used, sizeof(out) - used, n > 0 ? ",%s" : "%s", one);
    n++;
    p += len;
    if (*p == '\0')
      break;
  }
  return np__config_copy(cfg, k->name, out, field, k->size);
}

static int set_key(struct np_config *cfg, const np__key *k, const char *v) {
  char *field = (char *)cfg + k->offset;
  uint64_t n = 0;
  np_log_level lvl;

  switch (k->type) {
  case V_STR:
    return np__config_copy(cfg, k->name, v, field, k->size);
  case V_HOSTPORT:
  case V_IPPORT: {
    char norm[NP_HOSTPORT_MAX + 8];
    if (k->type == V_HOSTPORT && strcmp(k->name, "server") == 0)
      return server_list(cfg, k, v, field);
    if (k->type == V_IPPORT && (v = bind_addr(cfg, k->name, v, norm, sizeof(norm))) == NULL)
      return NP_ECONFIG;
    if (np__config_hostport(cfg, k->name, v, k->type == V_IPPORT) != 0)
      return NP_ECONFIG;
    return np__config_copy(cfg, k->name, v, field, k->size);
  }
  case V_DURATION:
    if (parse_duration(cfg, k->name, v, &n) != 0)
      return NP_ECONFIG;
    *(uint64_t *)(void *)field = n;
    return 0;
  case V_COUNT:
    if (np__config_uint(cfg, k->name, v, 1u << 30, &n) != 0)
      return NP_ECONFIG;
    *(size_t *)(void *)field = (size_t)n;
    return 0;
  case V_PORTS:
    return np__ports_parse(k->name, v, (np__ports *)(void *)field, cfg->err, sizeof(cfg->err));
  case V_LEVEL:
    if (np_log_level_parse(v, &lvl) != 0)
      return np__config_err(cfg, "%s: '%s' is not one of error, warn, info, debug, trace", k->name,
                            v);
    cfg->log_level = (int)lvl;
    return 0;
  case V_LOG_FORMAT:
    if (strcmp(v, "text") == 0)
      cfg->log_format = NP_LOG_FORMAT_TEXT;
    else if (strcmp(v, "json") == 0)
      cfg->log_format = NP_LOG_FORMAT_JSON;
    else
      return np__config_err(cfg, "%s: '%s' is not text or json", k->name, v);
    return 0;
  case V_BOOL:
    if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0 ||
        strcmp(v, "1") == 0)
      *(int *)(void *)field = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0 ||
             strcmp(v, "0") == 0)
      *(int *)(void *)field = 0;
    else
      return np__config_err(cfg, "%s: '%s' is not true or false", k->name, v);
    return 0;
  case V_FINGERPRINT: {
    unsigned char md[32];
    if (np__tls_fingerprint_parse(v, md) != 0)
      return np__config_err(
          cfg, "%s: '%s' is not a SHA-256 fingerprint (sha256:AB:CD:... as np-server prints it)",
          k->name, v);
    return np__config_copy(cfg, k->name, v, field, k->size);
  }
  case V_CIDRS:
    return np__config_cidrs(cfg, k->name, v, field, k->size);
  case V_PORT:
    if (np__config_uint(cfg, k->name, v, 65535, &n) != 0)
      return NP_ECONFIG;
    *(int *)(void *)field = (int)n;
    return 0;
  case V_TOKEN_FILE:
    return read_token_file(cfg, k->name, v, field, k->size);
  case V_SEED_LOCAL:
    return np__config_set_proxy_key(cfg, "seed", "local", v); /* the line codec's one service */
  case V_CODEC:
    if (np_codec_find(v) == NULL)
      return np__config_err(cfg, "%s: '%s' is not a codec (native or line)", k->name, v);
    return np__config_copy(cfg, k->name, v, field, k->size);
  }
  return NP_ECONFIG;
}

static int config_set(struct np_config *cfg, const char *section, const char *key,
                      const char *value) {
  const char *want = cfg->kind == NP_CONFIG_SERVER ? "server" : "client";

  cfg->err[0] = '\0';
  if (section != NULL && strncmp(section, "proxy ", 6) == 0)
    return np__config_set_proxy_key(cfg, section + 6, key, value);
  if (section != NULL && strncmp(section, "visitor ", 8) == 0)
    return np__config_set_visitor_key(cfg, section + 8, key, value);
  if (section != NULL && strcmp(section, want) != 0)
    return np__config_err(cfg, "unknown section [%s] (expected [%s]%s)", section, want,
                          cfg->kind == NP_CONFIG_CLIENT ? ", [proxy NAME] or [visitor NAME]" : "");
  for (size_t i = 0; i < np__config_nkeys; i++) {
    const np__key *k = &np__config_keys[i];
    if (strcmp(k->name, key) != 0)
      continue;
    if (!(k->kinds & (int)cfg->kind))
      break;
    return set_key(cfg, k, value);
  }
  return np__config_err(cfg, "unknown key '%s' in [%s]", key, want);
}

int np_config_set(struct np_config *cfg, const char *section, const char *key, const char *value) {
  int r;

  cfg->busy++;
  r = config_set(cfg, section, key, value);
  cfg->busy--;
  if (r == 0)
    np__config_record(cfg, 'K', section != NULL ? section : "", key, value);
  return r;
}

static int on_ini_pair(void *user, const char *section, const char *name, const char *value) {
  struct np_config *cfg = user;

  if (cfg->err[0] != '\0')
    return 1; /* keep only the first error */
  if (section[0] == '\0')
    section = NULL;
  if (section == NULL)
    return np__config_err(cfg, "'%s' appears before any [section]", name), 0;
  return np_config_set(cfg, section, name, value) == 0;
}

/* inih reads lines into a 200-byte buffer and section names into 50: a longer line would go on as a
 * new line, and a longer [name] would be cut short without a word. This reader hands inih whole
 * lines only and records the first line it had to refuse. */
typedef struct ini_stream {
  FILE *f;
  int line;
  int bad_line;
  char why[96];
} ini_stream;

static char *ini_read(char *str, int num, void *arg) {
  ini_stream *st = arg;
  size_t n;
  char *close;

  if (fgets(str, num, st->f) == NULL)
    return NULL;
  st->line++;
  n = strlen(str);
  if (n == (size_t)num - 1 && str[n - 1] != '\n' && !feof(st->f)) {
    int c;
    while ((c = fgetc(st->f)) != EOF && c != '\n')
      ;
    if (st->bad_line == 0) {
      st->bad_line = st->line;
      snprintf(st->why, sizeof(st->why), "line longer than %d bytes", num - 2);
    }
    str[0] = '\0';
    return str;
  }
  /* inih keeps 49 bytes of a section name. */
  for (char *p = str; *p == ' ' || *p == '\t' || *p == '['; p++)
    if (*p == '[' && (close = strchr(p, ']')) != NULL && close - p - 1 > NP_INI_SECTION_MAX) {
      if (st->bad_line == 0) {
        st->bad_line = st->line;
        snprintf(st->why, sizeof(st->why), "section name longer than %d bytes", NP_INI_SECTION_MAX);
      }
      str[0] = '\0';
      break;
    }
  return str;
}

int np__ini_load(const char *path, ini_handler handler, void *user, char *msg, char *err,
                 size_t errlen) {
  ini_stream st = {.line = 0};
  struct stat sb;
  int line;

  if ((st.f = fopen(path, "r")) == NULL) {
    int r = uv_translate_sys_error(errno);
    snprintf(err, errlen, "%s: cannot open: %s", path, uv_strerror(r));
    return r;
  }
  /* A directory opens for reading and reads as empty: it would pass for a file with no entries
   * (a users file of "0 clients"). */
  if (fstat(fileno(st.f), &sb) != 0) {
    int r = uv_translate_sys_error(errno);
    fclose(st.f);
    snprintf(err, errlen, "%s: cannot open: %s", path, uv_strerror(r));
    return r;
  }
  if (!S_ISREG(sb.st_mode)) {
    fclose(st.f);
    snprintf(err, errlen, "%s: not a regular file%s", path,
             S_ISDIR(sb.st_mode) ? " (it is a directory)" : "");
    return NP_ECONFIG;
  }
  /* inih reports the first failing line through its return value; the handler recorded the
   * message in msg without the line, so build it once the line is known. */
  line = ini_parse_stream(ini_read, &st, handler, user);
  fclose(st.f);
  if (st.bad_line != 0 && (line == 0 || st.bad_line <= line)) {
    snprintf(err, errlen, "%.200s:%d: %s", path, st.bad_line, st.why);
    return NP_ECONFIG;
  }
  if (line != 0) {
    char m[400];
    np__strlcpy(m, msg[0] != '\0' ? msg : "syntax error (expected 'key = value' or '[section]')",
                sizeof(m));
    snprintf(err, errlen, "%.200s:%d: %s", path, line, m);
    return NP_ECONFIG;
  }
  return 0;
}

int np_config_load_file(struct np_config *cfg, const char *path) {
  char err[sizeof(cfg->err)];
  int r;

  cfg->err[0] = '\0';
  cfg->busy++;
  r = np__ini_load(path, on_ini_pair, cfg, cfg->err, err, sizeof(err));
  cfg->busy--;
  if (r != 0) {
    memcpy(cfg->err, err, sizeof(err));
    return r;
  }
  /* Absolute, so that a reload finds it whatever the directory is by then; symbolic links are not
   * resolved: a reload follows where the link points then (a Kubernetes ConfigMap's ..data). */
  char cwd[1024], abs[2048];
  if (path[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL &&
      (size_t)snprintf(abs, sizeof(abs), "%s/%s", cwd, path) < sizeof(abs))
    path = abs;
  np__config_record(cfg, 'F', path, NULL, NULL);
  return 0;
}

static int config_set_flag(struct np_config *cfg, const char *flag, const char *value) {
  const np__key *k;
  char key[64];
  size_t i;

  if (strcmp(flag, "R") == 0)
    return np_config_add_remote(cfg, value);
  if (strcmp(flag, "U") == 0)
    return np_config_add_udp(cfg, value);
  if (strcmp(flag, "L") == 0)
    return np_config_add_local(cfg, value);
  if (strcmp(flag, "to") == 0)
    flag = "server"; /* bore's spelling: np-client --to HOST LOCAL_PORT */
  if ((k = np__config_key_by_flag(flag)) != NULL && (k->kinds & (int)cfg->kind))
    snprintf(key, sizeof(key), "%s", k->name); /* --trust-on-first-use is tofu */
  else { /* not a flag of this kind: the key of the same name says why */
    for (i = 0; flag[i] != '\0' && i + 1 < sizeof(key); i++)
      key[i] = flag[i] == '-' ? '_' : flag[i];
    key[i] = '\0';
  }
  if (np_config_set(cfg, NULL, key, value) != 0) {
    /* Name the flag the user typed, not the INI key. */
    char msg[sizeof(cfg->err)];
    memcpy(msg, cfg->err, sizeof(msg));
    snprintf(cfg->err, sizeof(cfg->err), "--%s: %.400s", flag, msg);
    return NP_ECONFIG;
  }
  return 0;
}

int np_config_set_flag(struct np_config *cfg, const char *flag, const char *value) {
  int r;

  cfg->busy++;
  r = config_set_flag(cfg, flag, value);
  cfg->busy--;
  if (r == 0)
    np__config_record(cfg, 'S', flag, value, NULL);
  return r;
}

/* The next string of a record; *at moves past it. */
static const char *replay_str(const struct np_config *cfg, size_t *at) {
  const char *p = cfg->replay + *at;
  *at += strlen(p) + 1;
  return p;
}

int np__config_reread(const struct np_config *cfg, struct np_config **out, char *err,
                      size_t errlen) {
  struct np_config *fresh;
  size_t at = 0;
  int r = 0;

  *out = NULL;
  if (cfg->replay_lost) {
    snprintf(err, errlen, "the configuration was set by more flags than a reload can repeat");
    return NP_ECONFIG;
  }
  if ((r = np_config_new(cfg->kind, &fresh)) != 0) {
    snprintf(err, errlen, "%s", np_strerror(r));
    return r;
  }
  while (r == 0 && at < cfg->replay_len) {
    char op = cfg->replay[at++];
    const char *a = replay_str(cfg, &at), *b, *c;
    switch (op) {
    case 'F':
      r = np_config_load_file(fresh, a);
      break;
    case 'K':
      b = replay_str(cfg, &at);
      c = replay_str(cfg, &at);
      r = np_config_set(fresh, a[0] != '\0' ? a : NULL, b, c);
      break;
    case 'S':
      b = replay_str(cfg, &at);
      r = np_config_set_flag(fresh, a, b);
      break;
    case 'R':
      r = np_config_add_remote(fresh, a);
      break;
    case 'L':
      r = np_config_add_local(fresh, a);
      break;
    default: /* 'U' */
      r = np_config_add_udp(fresh, a);
      break;
    }
  }
  if (r == 0)
    r = np_config_validate(fresh);
  if (r != 0) {
    snprintf(err, errlen, "%s", fresh->err[0] != '\0' ? fresh->err : np_strerror(r));
    np_config_free(fresh);
    return r;
  }
  *out = fresh;
  return 0;
}

static int is_text(enum np__vtype t) {
  return t == V_STR || t == V_HOSTPORT || t == V_IPPORT || t == V_FINGERPRINT || t == V_CIDRS ||
         t == V_CODEC;
}

void np__config_diff(const struct np_config *a, const struct np_config *b,
                     void (*cb)(const char *key, void *arg), void *arg) {
  for (size_t i = 0; i < np__config_nkeys; i++) {
    const np__key *k = &np__config_keys[i];
    const char *x = (const char *)a + k->offset, *y = (const char *)b + k->offset;
    int same;
    if (!(k->kinds & (int)a->kind) || k->type == V_TOKEN_FILE || k->type == V_SEED_LOCAL)
      continue; /* token_file: what it reads is token's, which is compared; local: a proxy's */
    if (is_text(k->type))
      same = strcmp(x, y) == 0;
    else if (k->type == V_PORTS) {
      const np__ports *p = (const void *)x, *q = (const void *)y;
      same = p->n == q->n && memcmp(p->r, q->r, p->n * sizeof(p->r[0])) == 0;
    } else
      same = memcmp(x, y, k->size) == 0;
    if (!same)
      cb(k->name, arg);
  }
}

/* An admin endpoint others can reach needs credentials: it can disconnect clients. */
static int check_admin(struct np_config *cfg) {
  struct sockaddr_storage ss;
  int loopback;

  np__parse_addr(cfg->admin_bind, &ss); /* checked as the key was set */
  loopback = ss.ss_family == AF_INET
                 ? (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127
                 : IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
  if ((cfg->admin_user[0] != '\0') != (cfg->admin_password[0] != '\0'))
    return np__config_err(cfg, "admin_user and admin_password go together");
  if (strchr(cfg->admin_user, ':') != NULL)
    return np__config_err(cfg, "admin_user: a Basic auth user name cannot hold ':'");
  if (!loopback && cfg->admin_token[0] == '\0' && cfg->admin_user[0] == '\0')
    return np__config_err(cfg,
                          "admin_bind %s is not a loopback address: set admin_token (or "
                          "admin_user and admin_password)",
                          cfg->admin_bind);
  return 0;
}

int np_config_validate(struct np_config *cfg) {
  int line_codec = strcmp(cfg->codec, "line") == 0;
  int r;

  cfg->err[0] = '\0';
  if (cfg->heartbeat_interval_ms == 0 || cfg->heartbeat_timeout_ms <= cfg->heartbeat_interval_ms)
    return np__config_err(
        cfg, "heartbeat_timeout (%llums) must be longer than heartbeat_interval (%llums)",
        (unsigned long long)cfg->heartbeat_timeout_ms,
        (unsigned long long)cfg->heartbeat_interval_ms);
  if (cfg->max_frame < 64 || cfg->max_frame > (1u << 24))
    return np__config_err(cfg, "max_frame must be from 64 to 16777216 bytes");
  if (cfg->mux_max_window < NP_MUX_INITIAL_WINDOW || cfg->mux_max_window > (1u << 30))
    return np__config_err(
        cfg, "mux_max_window must be from 262144 (yamux's initial window) to 1073741824 "
             "bytes");
  /* One stream alone must still be able to grow to mux_max_window. */
  if (cfg->mux_session_window + NP_MUX_INITIAL_WINDOW < cfg->mux_max_window ||
      (cfg->kind == NP_CONFIG_SERVER &&
       cfg->mux_server_window + NP_MUX_INITIAL_WINDOW < cfg->mux_max_window))
    return np__config_err(cfg,
                          "mux_session_window%s must be at least mux_max_window - 262144 (%zu "
                          "bytes), so that a stream alone can grow to mux_max_window",
                          cfg->kind == NP_CONFIG_SERVER ? " and mux_server_window" : "",
                          cfg->mux_max_window - NP_MUX_INITIAL_WINDOW);
  if (line_codec && !cfg->insecure)
    return np__config_err(
        cfg, "codec line is the seed article's plaintext protocol: it needs insecure = "
             "true (--insecure)");
  if (cfg->udp_idle_timeout_ms < 1000)
    return np__config_err(cfg, "udp_idle_timeout must be at least 1s");
  if (cfg->admin_bind[0] != '\0' && (r = check_admin(cfg)) != 0)
    return r;
  if ((cfg->tls_cert[0] == '\0') != (cfg->tls_key[0] == '\0'))
    return np__config_err(cfg, "tls_cert and tls_key go together (--tls-cert, --tls-key)");
  if (cfg->kind == NP_CONFIG_SERVER) {
    if (cfg->pending_timeout_ms == 0)
      return np__config_err(cfg, "pending_timeout must be above 0");
    if (cfg->login_timeout_ms == 0)
      return np__config_err(cfg, "login_timeout must be above 0");
    if (cfg->udp_max_flows == 0)
      return np__config_err(cfg, "udp_max_flows must be above 0");
    if (cfg->login_backoff_max_ms < cfg->login_backoff_ms)
      return np__config_err(cfg, "login_backoff_max must be at least login_backoff");
    struct sockaddr_storage ss;
    char spec[NP_MSG_NAME_MAX + 8];
    snprintf(spec, sizeof(spec), strchr(cfg->proxy_bind_addr, ':') ? "[%s]:0" : "%s:0",
             cfg->proxy_bind_addr);
    if (np__parse_addr(spec, &ss) != 0)
      return np__config_err(cfg, "proxy_bind_addr: '%s' is not an IP address",
                            cfg->proxy_bind_addr);
    if (cfg->subdomain_host[0] != '\0' &&
        (strchr(cfg->subdomain_host, '*') != NULL ||
         !np__config_host_ok(cfg->subdomain_host, strlen(cfg->subdomain_host))))
      return np__config_err(cfg, "subdomain_host: '%s' is not a host name (like example.com)",
                            cfg->subdomain_host);
    if (line_codec && cfg->users_file[0] != '\0')
      return np__config_err(cfg, "codec line has no logins: users_file needs codec native");
    if (cfg->route_store[0] != '\0') {
      char host[NP_HOSTPORT_MAX];
      int port, db;
      if (strchr(cfg->route_store, '@') != NULL) /* not echoed: it may hold a password */
        return np__config_err(cfg, "route_store: a password does not go in the URL: give "
                                   "route_store_password_file (and route_store_user) instead");
      if (np__config_route_store(cfg->route_store, host, sizeof(host), &port, &db) != 0)
        return np__config_err(cfg,
                              "route_store: '%s' is not redis://HOST[:PORT][/DB] (e.g. "
                              "redis://10.0.0.5:6379/0)",
                              cfg->route_store);
      if (cfg->cluster_advertise[0] == '\0')
        return np__config_err(cfg, "route_store needs cluster_advertise: the address other "
                                   "servers reach this one's control port at (e.g. "
                                   "cluster_advertise = 10.0.0.1:7000)");
      if (line_codec)
        return np__config_err(cfg, "codec line runs alone: route_store needs codec native");
    } else if (cfg->cluster_token[0] != '\0') {
      return np__config_err(cfg, "cluster_token needs route_store: servers find each other's "
                                 "proxies there (e.g. route_store = redis://10.0.0.5:6379)");
    } else if (cfg->route_store_password[0] != '\0' || cfg->route_store_user[0] != '\0') {
      return np__config_err(cfg, "route_store_password and route_store_user need route_store "
                                 "(e.g. route_store = redis://10.0.0.5:6379)");
    }
    if (cfg->cluster_ca[0] != '\0' && cfg->cluster_token[0] == '\0')
      return np__config_err(cfg, "cluster_ca needs cluster_token: the servers of a cluster prove "
                                 "the token as well (cluster_token_file = FILE)");
    if (cfg->cluster_ca[0] != '\0' && cfg->insecure)
      return np__config_err(cfg, "cluster_ca needs TLS: drop insecure");
    if (cfg->cluster_ca[0] != '\0' && cfg->tls_cert[0] == '\0')
      return np__config_err(cfg, "cluster_ca needs tls_cert and tls_key: this server's own "
                                 "certificate from the cluster's CA");
    if (cfg->route_store_user[0] != '\0' && cfg->route_store_password[0] == '\0')
      return np__config_err(cfg, "route_store_user needs route_store_password (or "
                                 "route_store_password_file): Redis's AUTH takes both");
    if (cfg->vhost_http_timeout_ms < 1000)
      return np__config_err(cfg, "vhost_http_timeout must be at least 1s");
    if (cfg->route_lease_ms < 1000)
      return np__config_err(cfg, "route_lease must be at least 1s");
    if (cfg->workers > NP_SERVER_WORKERS_MAX)
      return np__config_err(cfg, "workers: at most %d", NP_SERVER_WORKERS_MAX);
    if (cfg->workers > 1 && line_codec)
      return np__config_err(cfg, "codec line runs on one loop: workers = 1 (--workers 1)");
    if (line_codec && (cfg->tunnel_bind[0] == '\0' || cfg->visit_bind[0] == '\0'))
      return np__config_err(
          cfg, "codec line needs tunnel_bind and visit_bind (--tunnel-bind, --visit-bind)");
    return 0;
  }
  if (cfg->server[0] == '\0')
    return np__config_err(cfg, "no server given (--server HOST:PORT or server = in [client])");
  if (line_codec && strchr(cfg->server, ',') != NULL)
    return np__config_err(cfg, "codec line talks to one server: server = lists several");
  if (cfg->udp_keepalive_ms < 1000 || cfg->udp_path_retry_ms < 1000)
    return np__config_err(cfg, "udp_keepalive and udp_path_retry must be at least 1s");
  if (cfg->reconnect_min_ms == 0 || cfg->reconnect_max_ms < cfg->reconnect_min_ms)
    return np__config_err(cfg, "reconnect_min must be above 0 and at most reconnect_max");
  if (cfg->tofu && cfg->server_fingerprint[0] != '\0')
    return np__config_err(cfg, "tofu (--trust-on-first-use) and server_fingerprint: give one, "
                               "the pin or trust on first use");
  if (cfg->tofu && cfg->insecure)
    return np__config_err(cfg, "tofu (--trust-on-first-use) needs TLS: drop insecure");
  if (cfg->tofu && cfg->tls_ca[0] != '\0' && strcmp(cfg->tls_ca, "system") != 0)
    return np__config_err(cfg, "tofu (--trust-on-first-use) and tls_ca: a server your CA signs "
                               "needs no trust on first use; give one of them");
  if (line_codec) {
    if (cfg->tunnel[0] == '\0')
      return np__config_err(cfg, "codec line needs the tunnel address (--tunnel HOST:PORT)");
    if (cfg->n_proxies != 1)
      return np__config_err(cfg, "codec line carries exactly one service (--local HOST:PORT)");
  }
  if (cfg->n_proxies == 0 && cfg->n_visitors == 0)
    return np__config_err(cfg, "no proxies (give -R REMOTE_PORT:LOCAL_HOST:LOCAL_PORT or a [proxy "
                               "NAME]) and no visitors (-L PORT:OWNER.PROXY or a [visitor NAME])");
  if ((r = np__config_check_proxies(cfg, line_codec)) != 0)
    return r;
  return np__config_check_visitors(cfg, line_codec);
}

int np__config_route_store(const char *url, char *host, size_t hostlen, int *port, int *db) {
  static const char scheme[] = "redis://";
  char spec[NP_HOSTPORT_MAX + 16];
  const char *rest, *slash;
  char *end;
  long n = 0;

  if (strncmp(url, scheme, sizeof(scheme) - 1) != 0)
    return UV_EINVAL;
  rest = url + sizeof(scheme) - 1;
  slash = strchr(rest, '/');
  if (slash != NULL) {
    errno = 0;
    n = strtol(slash + 1, &end, 10);
    if (slash[1] == '\0' || *end != '\0' || errno != 0 || n < 0 || n > 65535)
      return UV_EINVAL;
  }
  if ((size_t)(slash != NULL ? slash - rest : (ptrdiff_t)strlen(rest)) >= sizeof(spec) - 8)
    return UV_EINVAL;
  snprintf(spec, sizeof(spec), "%.*s", slash != NULL ? (int)(slash - rest) : (int)strlen(rest),
           rest);
  if (spec[0] == '\0')
    return UV_EINVAL;
  /* HOST alone: Redis's port */
  if (np__split_hostport(spec, host, hostlen, port) != 0) {
    if (strchr(spec, ':') != NULL && spec[0] != '[')
      return UV_EINVAL;
    if (spec[0] == '[') {
      size_t len = strlen(spec);
      if (len < 3 || spec[len - 1] != ']')
        return UV_EINVAL;
      snprintf(host, hostlen, "%.*s", (int)(len - 2), spec + 1);
    } else
      np__strlcpy(host, spec, hostlen);
    *port = 6379;
  }
  if (*port <= 0 || *port > 65535 ||
      (strchr(host, ':') == NULL && !np__config_host_ok(host, strlen(host))))
    return UV_EINVAL; /* an IPv6 address has colons, anything else must be a host name */
  *db = (int)n;
  return 0;
}

int np_config_new(np_config_kind kind, struct np_config **out) {
  struct np_config *cfg;

  if (kind != NP_CONFIG_SERVER && kind != NP_CONFIG_CLIENT)
    return UV_EINVAL;
  if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
    return UV_ENOMEM;
  cfg->kind = kind;
  /* The defaults are the key table's, read as a file's values are: what --help and the docs say is
   * what runs. Every kind gets every default, so no field is left at zero for code that reads it.
   */
  for (size_t i = 0; i < np__config_nkeys; i++) {
    const np__key *k = &np__config_keys[i];
    if (k->def != NULL && set_key(cfg, k, k->def) != 0) {
      free(cfg);
      return NP_ECONFIG; /* a bad default in the table: tests/unit/test_config.c catches it */
    }
  }
  if (gethostname(cfg->name, sizeof(cfg->name) - 1) != 0 || cfg->name[0] == '\0')
    strcpy(cfg->name, "client");
  *out = cfg;
  return 0;
}

void np_config_free(struct np_config *cfg) {
  if (cfg != NULL)
    explicit_bzero(cfg, sizeof(*cfg)); /* tokens, and the flags that set them (replay) */
  free(cfg);
}

const char *np_config_error(const struct np_config *cfg) {
  return cfg->err;
}

const char *np_config_server(const struct np_config *cfg) {
  return cfg->server;
}

int np_config_log_level(const struct np_config *cfg) {
  return cfg->log_level;
}

np_log_format np_config_log_format(const struct np_config *cfg) {
  return (np_log_format)cfg->log_format;
}
