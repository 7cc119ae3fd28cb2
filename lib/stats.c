/* The counter tables made from the lists in natproxy/stats.h, and the log line made from a table:
 * the one place that knows a counter's name, key, kind and help, so the struct, the log line,
 * exporters and the docs cannot drift apart. */
#include "natproxy/stats.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "natproxy/client.h"
#include "natproxy/server.h"

#include "internal.h"
#include "stats.h"

#define FIELD_(type, name, kind, key, unit, help)                                                  \
  {sizeof(np_stat_field), #name, key, unit, help, NP_STAT_##kind, offsetof(type, name)},
#define SERVER_FIELD_(name, kind, key, unit, help)                                                 \
  FIELD_(np_server_stats, name, kind, key, unit, help)
#define CLIENT_FIELD_(name, kind, key, unit, help)                                                 \
  FIELD_(np_client_stats, name, kind, key, unit, help)
#define PROXY_FIELD_(name, kind, key, unit, help)                                                  \
  FIELD_(np_proxy_stats, name, kind, key, unit, help)

static const np_stat_field server_fields[] = {NP_SERVER_COUNTERS(SERVER_FIELD_)};
static const np_stat_field client_fields[] = {NP_CLIENT_COUNTERS(CLIENT_FIELD_)};
static const np_stat_field proxy_fields[] = {NP_PROXY_COUNTERS(PROXY_FIELD_)};

/* Every member is a counter of the list: a member added by hand would break the tables' offsets. */
_Static_assert(sizeof(np_server_stats) == NP_ARRAY_SIZE(server_fields) * sizeof(uint64_t),
               "np_server_stats holds exactly the counters of NP_SERVER_COUNTERS");
_Static_assert(sizeof(np_client_stats) == NP_ARRAY_SIZE(client_fields) * sizeof(uint64_t),
               "np_client_stats holds exactly the counters of NP_CLIENT_COUNTERS");
_Static_assert(sizeof(np_proxy_stats) == NP_ARRAY_SIZE(proxy_fields) * sizeof(uint64_t),
               "np_proxy_stats holds exactly the counters of NP_PROXY_COUNTERS");

const np_stat_field *np_server_stats_field(size_t i) {
  return i < NP_ARRAY_SIZE(server_fields) ? &server_fields[i] : NULL;
}

const np_stat_field *np_client_stats_field(size_t i) {
  return i < NP_ARRAY_SIZE(client_fields) ? &client_fields[i] : NULL;
}

const np_stat_field *np_proxy_stats_field(size_t i) {
  return i < NP_ARRAY_SIZE(proxy_fields) ? &proxy_fields[i] : NULL;
}

static void log_line(const np__logger *log, const char *head, const np_stat_field *fields, size_t n,
                     const void *st) {
  /* 40 counters of 20 digits and a 17-byte key fit; np__log's own buffer is as large. */
  char line[1024];
  size_t used = 0;

  for (size_t i = 0; i < n && used < sizeof(line); i++) {
    uint64_t v = *(const uint64_t *)((const char *)st + fields[i].offset);
    int k = snprintf(line + used, sizeof(line) - used, "%s%s=%llu", i > 0 ? " " : "", fields[i].key,
                     (unsigned long long)v);
    if (k < 0)
      break;
    used += (size_t)k;
  }
  np__log(log, NP_LOG_INFO, "%s%s", head, n > 0 ? line : "");
}

void np__stats_log_server(const np__logger *log, const np_server_stats *st) {
  log_line(log, "stats: ", server_fields, NP_ARRAY_SIZE(server_fields), st);
}

void np__stats_log_client(const np__logger *log, const np_client_stats *st) {
  log_line(log, "stats: ", client_fields, NP_ARRAY_SIZE(client_fields), st);
}

void np__stats_log_proxy(const np__logger *log, const char *head, const np_proxy_stats *st) {
  log_line(log, head, proxy_fields, NP_ARRAY_SIZE(proxy_fields), st);
}

void np__stats_copy(void *out, size_t size, const void *st, size_t st_size) {
  memcpy(out, st, size < st_size ? size : st_size);
  /* A caller built against a newer header: the counters this library does not have read as 0. */
  if (size > st_size)
    memset((char *)out + st_size, 0, size - st_size);
}
