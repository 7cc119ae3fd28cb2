/* The ring of recent failed logins (login_fails.h). */
#include "login_fails.h"

#include <string.h>

#include "internal.h"

/* name as printable UTF-8 whatever it was: each character that np__name_ok takes is kept, each
 * byte that starts none becomes '?'. */
static void printable(char *dst, size_t len, const char *name) {
  const unsigned char *p = (const unsigned char *)name;
  size_t n = 0;

  while (*p != '\0') {
    size_t k = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : *p >= 0xc0 ? 2 : 1, i;
    char one[5] = {0};
    for (i = 0; i < k && p[i] != '\0'; i++)
      one[i] = (char)p[i];
    if (i < k || !np__name_ok(one))
      one[0] = '?', one[1] = '\0', k = 1;
    if (n + strlen(one) >= len)
      break;
    memcpy(dst + n, one, strlen(one));
    n += strlen(one);
    p += k;
  }
  dst[n] = '\0';
}

void np__login_fails_add(np__login_fails *l, uint64_t now, const struct sockaddr *addr,
                         const char *name, const char *why) {
  np__login_fail *f = &l->ring[l->total++ % NP_LOGIN_FAILS_MAX];
  uv_timeval64_t tv;

  memset(f, 0, sizeof(*f));
  if (uv_gettimeofday(&tv) == 0)
    f->unix_ms = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
  f->loop_ms = now;
  if (addr != NULL && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
    np__addr_str(addr, f->addr, sizeof(f->addr));
  else
    np__strlcpy(f->addr, "?", sizeof(f->addr));
  printable(f->name, sizeof(f->name), name != NULL ? name : "");
  for (size_t i = 0; why != NULL && why[i] != '\0' && i + 1 < sizeof(f->why); i++)
    f->why[i] = why[i] >= 0x20 && why[i] < 0x7f ? why[i] : '?';
}

const np__login_fail *np__login_fails_get(const np__login_fails *l, size_t i) {
  if (i >= l->total || i >= NP_LOGIN_FAILS_MAX)
    return NULL;
  return &l->ring[(l->total - 1 - i) % NP_LOGIN_FAILS_MAX];
}
