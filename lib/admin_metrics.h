/* np-server's /metrics: the Prometheus text (docs/api-admin.md, "Metrics"). */
#ifndef NP_ADMIN_METRICS_H
#define NP_ADMIN_METRICS_H

#include <stdio.h>

#include "admin_http.h"

struct np_server;

/* The text of every family into out (a 500 in out when memory runs out). */
void np__admin_metrics(struct np_server *srv, np__admin_reply *out);

/* What np-client's /metrics (admin_client.c) shares with the server's, on an open_memstream m:
 * natproxy_SCOPE_NAME, with _total on counters (Prometheus' naming rules, which promtool checks);
 * a family's HELP and TYPE lines; a label value escaped as the text format wants it; the
 * natproxy_build_info family. np__metrics_end closes m and puts *buf (len bytes) into out as
 * the answer (a 500 when memory ran out). */
void np__metrics_name(char *buf, size_t len, const char *scope, const np_stat_field *f);
void np__metrics_family(FILE *m, const char *name, const char *type, const char *help);
void np__metrics_label(FILE *m, const char *v);
void np__metrics_build_info(FILE *m);
void np__metrics_end(FILE *m, char **buf, size_t *len, np__admin_reply *out);

#endif
