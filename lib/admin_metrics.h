/* np-server's /metrics: the Prometheus text (docs/api-admin.md, "Metrics"). */
#ifndef NP_ADMIN_METRICS_H
#define NP_ADMIN_METRICS_H

#include "admin_http.h"

struct np_server;

/* The text of every family into out (a 500 in out when memory runs out). */
void np__admin_metrics(struct np_server *srv, np__admin_reply *out);

#endif
