/* The ports given to port-0 proxies (port_memory.h), on Debian's uthash: a hash by "client\tproxy"
 * for the lookups, and the insertion order (uthash keeps it) as the age: a noted entry moves to
 * the end, the first one is the oldest. */
#include "port_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

/* A failed allocation in HASH_ADD leaves the item out (hh.tbl NULL) rather than ending the
 * process; note() checks it. The keys come from logged-in clients only. */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "internal.h"

#define NAME_MAX_ 64 /* NP_MSG_NAME_MAX: client and proxy names */

typedef struct entry {
  char key[2 * NAME_MAX_ + 2]; /* "client\tproxy" */
  int port;
  UT_hash_handle hh;
} entry;

struct np__port_memory {
  entry *all;
  size_t max;
};

static int make_key(char *key, size_t len, const char *client, const char *proxy) {
  if (strlen(client) > NAME_MAX_ || strlen(proxy) > NAME_MAX_ || strchr(client, '\t') != NULL ||
      strchr(proxy, '\t') != NULL)
    return UV_EINVAL;
  snprintf(key, len, "%s\t%s", client, proxy);
  return 0;
}

int np__port_memory_new(size_t max, np__port_memory **out) {
  np__port_memory *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return UV_ENOMEM;
  m->max = max;
  *out = m;
  return 0;
}

void np__port_memory_free(np__port_memory *m) {
  entry *e, *tmp;
  if (m == NULL)
    return;
  HASH_ITER(hh, m->all, e, tmp) {
    HASH_DEL(m->all, e);
    free(e);
  }
  free(m);
}

int np__port_memory_recall(np__port_memory *m, const char *client, const char *proxy) {
  char key[sizeof(((entry *)0)->key)];
  entry *e = NULL;

  if (m == NULL || make_key(key, sizeof(key), client, proxy) != 0)
    return 0;
  HASH_FIND_STR(m->all, key, e);
  return e != NULL ? e->port : 0;
}

int np__port_memory_note(np__port_memory *m, const char *client, const char *proxy, int port) {
  char key[sizeof(((entry *)0)->key)];
  entry *e = NULL;
  int changed = 1;

  if (m == NULL || make_key(key, sizeof(key), client, proxy) != 0 || port <= 0 || port > 65535)
    return 0;
  HASH_FIND_STR(m->all, key, e);
  if (e != NULL) {
    changed = e->port != port;
    HASH_DEL(m->all, e); /* added again below: the newest */
  } else if ((e = calloc(1, sizeof(*e))) == NULL) {
    return UV_ENOMEM;
  } else {
    memcpy(e->key, key, sizeof(key));
  }
  e->port = port;
  HASH_ADD_STR(m->all, key, e);
  if (e->hh.tbl == NULL) {
    free(e);
    return UV_ENOMEM;
  }
  while (HASH_COUNT(m->all) > m->max) {
    entry *oldest = m->all;
    HASH_DEL(m->all, oldest);
    free(oldest);
  }
  return changed;
}

size_t np__port_memory_count(const np__port_memory *m) {
  return m != NULL ? HASH_COUNT(m->all) : 0;
}

int np__port_memory_clone(const np__port_memory *m, np__port_memory **out) {
  np__port_memory *c;
  const entry *e;

  if (np__port_memory_new(m->max, &c) != 0)
    return UV_ENOMEM;
  /* In insertion order, oldest first: the copy ages its entries as the original does. */
  for (e = m->all; e != NULL; e = e->hh.next) {
    entry *d = calloc(1, sizeof(*d));
    if (d == NULL)
      goto err_free;
    memcpy(d->key, e->key, sizeof(d->key));
    d->port = e->port;
    HASH_ADD_STR(c->all, key, d);
    if (d->hh.tbl == NULL) {
      free(d);
      goto err_free;
    }
  }
  *out = c;
  return 0;
err_free:
  np__port_memory_free(c);
  return UV_ENOMEM;
}

int np__port_memory_load(np__port_memory *m, const char *path, char *err, size_t errlen) {
  char line[2 * NAME_MAX_ + 32];
  int n = 0, start = 1, bad = 0, r = 0;
  FILE *f = fopen(path, "r");

  if (f == NULL) {
    if (errno == ENOENT)
      return 0;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return uv_translate_sys_error(errno);
  }
  while (fgets(line, sizeof(line), f) != NULL) {
    size_t len = strlen(line);
    char *client = line, *proxy, *port, *end;
    long p;
    int whole = start;
    start = len > 0 && line[len - 1] == '\n';
    if (!whole) /* the rest of an overlong line, already refused */
      continue;
    n++;
    /* A comment has no tab: a client name may start with '#' */
    if (line[0] == '\n' || (line[0] == '#' && strchr(line, '\t') == NULL))
      continue;
    line[strcspn(line, "\r\n")] = '\0';
    if (!start && !feof(f))
      goto bad; /* longer than two names and a port */
    if ((proxy = strchr(client, '\t')) == NULL || (port = strchr(proxy + 1, '\t')) == NULL)
      goto bad;
    *proxy++ = '\0';
    *port++ = '\0';
    errno = 0;
    p = strtol(port, &end, 10);
    if (client[0] == '\0' || proxy[0] == '\0' || end == port || *end != '\0' || errno != 0 ||
        p < 1 || p > 65535 || np__port_memory_note(m, client, proxy, (int)p) < 0)
      goto bad;
    continue;
  bad:
    /* Skipped, not fatal: the lines after it (a newer version's, a hand edit) still count. */
    if (bad++ == 0)
      snprintf(err, errlen, "%s:%d: not CLIENT<TAB>PROXY<TAB>PORT", path, n);
    r = NP_ECONFIG;
  }
  fclose(f);
  if (bad > 1)
    snprintf(err + strlen(err), errlen - strlen(err), " (and %d more lines)", bad - 1);
  return r;
}

int np__port_memory_save(const np__port_memory *m, const char *path) {
  char tmp[1100];
  const entry *e, *next;
  FILE *f;
  int fd, r = 0;

  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", path) >= sizeof(tmp))
    return UV_ENAMETOOLONG;
  /* The state directory may not exist yet (no TLS identity was made there): mkdir -p, 0700. */
  for (char *p = strchr(tmp + 1, '/'); p != NULL; p = strchr(p + 1, '/')) {
    *p = '\0';
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
      r = uv_translate_sys_error(errno);
      *p = '/';
      return r;
    }
    *p = '/';
  }
  if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
    return uv_translate_sys_error(errno);
  if ((f = fdopen(fd, "w")) == NULL) {
    r = uv_translate_sys_error(errno);
    close(fd);
    unlink(tmp);
    return r;
  }
  fputs("# np-server: the ports it gave to proxies that asked for port 0, by client and proxy\n"
        "# (oldest first), so that a client that comes back gets its port again.\n",
        f);
  for (e = m->all; e != NULL; e = next) {
    next = e->hh.next;
    if (fprintf(f, "%s\t%d\n", e->key, e->port) < 0)
      r = UV_EIO;
  }
  if (fflush(f) != 0 || fsync(fileno(f)) != 0)
    r = r != 0 ? r : uv_translate_sys_error(errno);
  if (fclose(f) != 0 && r == 0)
    r = uv_translate_sys_error(errno);
  if (r == 0 && rename(tmp, path) != 0)
    r = uv_translate_sys_error(errno);
  if (r != 0)
    unlink(tmp);
  return r;
}
