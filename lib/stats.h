/* Internal side of natproxy/stats.h: the log line and the size-aware copy the server and the
 * client share. */
#ifndef NP_LIB_STATS_H
#define NP_LIB_STATS_H

#include <stddef.h>

#include "natproxy/client.h"
#include "natproxy/server.h"

#include "internal.h"

/* "stats: key=N key=N ..." at info level, keys and order from the counter list. */
void np__stats_log_server(const np__logger *log, const np_server_stats *st);
void np__stats_log_client(const np__logger *log, const np_client_stats *st);
/* head, then "key=N key=N ..." of NP_PROXY_COUNTERS: a client's or a proxy's line. */
void np__stats_log_proxy(const np__logger *log, const char *head, const np_proxy_stats *st);
/* Copy st (st_size bytes) to a caller's out of size bytes: the common prefix, then zeros. */
void np__stats_copy(void *out, size_t size, const void *st, size_t st_size);

#endif
