/* Logging. There is no global logger: each server or client logs through its own callback and level
 * (np_server_set_log, np_client_set_log), so two embedded instances never fight over one sink. */
#ifndef NATPROXY_LOG_H
#define NATPROXY_LOG_H

#include <natproxy/common.h>

NP_BEGIN_DECLS

typedef enum np_log_level {
  NP_LOG_ERROR = 0,
  NP_LOG_WARN = 1,
  NP_LOG_INFO = 2,
  NP_LOG_DEBUG = 3,
  NP_LOG_TRACE = 4
} np_log_level;

/* msg is borrowed for the call and has no trailing newline. */
typedef void (*np_log_cb)(np_log_level level, const char *msg, void *arg);

/* The default sink: "2026-11-25T13:00:00.123Z INFO  msg" on stderr. arg is ignored. */
NP_EXPORT void np_log_stderr(np_log_level level, const char *msg, void *arg);
/* "error", "warn", "info", "debug", "trace" -> level; NP_ECONFIG for anything else. */
NP_EXPORT int np_log_level_parse(const char *name, np_log_level *out);
NP_EXPORT const char *np_log_level_name(np_log_level level);

NP_END_DECLS

#endif
