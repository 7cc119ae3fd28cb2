/* The client's known_servers file: the certificate fingerprint each server presented the first time
 * (trust on first use, as ssh's known_hosts). One line per server, "HOST:PORT sha256:AB:CD:...";
 * blank lines and '#' comments are kept as they are. A small file read whole at each handshake, so
 * an operator's edit (a line deleted after a planned key change) counts at the next connection. */
#include "known_servers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "internal.h"

/* Far more servers than anybody dials; a bigger file is not ours. */
#define NP_KNOWN_FILE_MAX (1 << 20)

/* The file's bytes (NUL-terminated; NULs inside stay: a line holding one matches nothing), or NULL
 * with *err set (0: the file does not exist). */
static char *slurp(int fd, size_t *len, int *err) {
  struct stat st;
  char *buf;
  size_t got = 0;

  if (fstat(fd, &st) != 0) {
    *err = uv_translate_sys_error(errno);
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    *err = UV_EISDIR;
    return NULL;
  }
  if (st.st_size > NP_KNOWN_FILE_MAX) {
    *err = UV_EFBIG;
    return NULL;
  }
  if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
    *err = UV_ENOMEM;
    return NULL;
  }
  while (got < (size_t)st.st_size) {
    ssize_t n = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      *err = uv_translate_sys_error(errno);
      free(buf);
      return NULL;
    }
    if (n == 0)
      break; /* it shrank meanwhile: what was read is the file */
    got += (size_t)n;
  }
  buf[got] = '\0';
  *len = got;
  return buf;
}

/* Is [p, end) "key fingerprint" (blanks around), and the fingerprint short enough for fp? */
static int match(const char *p, const char *end, const char *key, char *fp, size_t len) {
  size_t klen = strlen(key), vlen;

  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  /* Host names (and IPv6 hex) are case-blind: Tunnel.Example.org is the server recorded as
   * tunnel.example.org. */
  if ((size_t)(end - p) <= klen || strncasecmp(p, key, klen) != 0 ||
      (p[klen] != ' ' && p[klen] != '\t'))
    return 0;
  p += klen;
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  for (vlen = 0; p + vlen < end && p[vlen] != ' ' && p[vlen] != '\t' && p[vlen] != '\r'; vlen++)
    if (p[vlen] == '\0')
      return 0;
  if (vlen == 0 || vlen >= len)
    return 0;
  memcpy(fp, p, vlen);
  fp[vlen] = '\0';
  return 1;
}

int np__known_lookup(const char *path, const char *key, char *fp, size_t len, int *line) {
  int fd = open(path, O_RDONLY | O_CLOEXEC), err = 0, n = 0, found = 0;
  size_t size = 0;
  char *buf, *p, *end;

  if (fd < 0)
    return errno == ENOENT ? 0 : uv_translate_sys_error(errno);
  buf = slurp(fd, &size, &err);
  close(fd);
  if (buf == NULL)
    return err;
  for (p = buf, end = buf + size; p < end && !found;) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *stop = nl != NULL ? nl : end;
    n++;
    /* the first line for a server is the one that counts, as in ssh */
    if (match(p, stop, key, fp, len)) {
      *line = n;
      found = 1;
    }
    if (nl == NULL)
      break;
    p = nl + 1;
  }
  free(buf);
  return found;
}

/* mkdir -p with mode 0700 for what it creates. */
static int make_dirs(const char *path) {
  char dir[NP_KNOWN_PATH_MAX];
  char *slash;

  if (np__strlcpy(dir, path, sizeof(dir)) != 0)
    return UV_ENAMETOOLONG;
  if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
    return 0;
  *slash = '\0';
  for (char *p = dir + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
      return uv_translate_sys_error(errno);
    *p = '/';
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST)
    return uv_translate_sys_error(errno);
  return 0;
}

int np__known_add(const char *path, const char *key, const char *fp, int *line) {
  int fd, r = 0, n = 1;
  size_t size = 0, want;
  char *buf, *text;

  if ((r = make_dirs(path)) != 0)
    return r;
  if ((fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600)) < 0)
    return uv_translate_sys_error(errno);
  if ((buf = slurp(fd, &size, &r)) == NULL) {
    close(fd);
    return r;
  }
  /* Lines as np__known_lookup counts them: ours starts after the last line end. */
  for (size_t i = 0; i < size; i++)
    n += buf[i] == '\n';
  want = strlen(key) + strlen(fp) + 3;
  if ((text = malloc(want + 1)) == NULL) {
    free(buf);
    close(fd);
    return UV_ENOMEM;
  }
  if (size > 0 && buf[size - 1] != '\n')
    n++; /* a last line without its end: ours goes on the next */
  snprintf(text, want + 1, "%s%s %s\n", size > 0 && buf[size - 1] != '\n' ? "\n" : "", key, fp);
  errno = 0;
  if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
    r = errno != 0 ? uv_translate_sys_error(errno) : UV_ENOSPC;
    /* a partial line would make the file refuse this server from now on */
    if (ftruncate(fd, (off_t)size) != 0)
      r = uv_translate_sys_error(errno);
  }
  if (close(fd) != 0 && r == 0)
    r = uv_translate_sys_error(errno);
  free(text);
  free(buf);
  if (r == 0)
    *line = n;
  return r;
}
