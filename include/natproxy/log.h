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

/* How a stock sink writes a line (config key log_format, docs/config.md). */
typedef enum np_log_format { NP_LOG_FORMAT_TEXT = 0, NP_LOG_FORMAT_JSON = 1 } np_log_format;

/* The default sink: "2026-11-25T13:00:00.123Z info  msg" on stderr. arg is ignored. */
NP_EXPORT void np_log_stderr(np_log_level level, const char *msg, void *arg);
/* The same as one JSON object per line, for log collectors:
 *   {"time":"2026-11-25T13:00:00.123Z","level":"info","component":"np-server","msg":"..."}
 * time is RFC 3339 in UTC with milliseconds, level is np_log_level_name()'s. arg is NULL or a
 * NUL-terminated string (borrowed for the call) written as "component"; without it the key is left
 * out. msg may hold any bytes: what is not well-formed UTF-8 becomes U+FFFD, so every line is valid
 * JSON. */
NP_EXPORT void np_log_stderr_json(np_log_level level, const char *msg, void *arg);
/* The stock sink for a format: np_log_stderr or np_log_stderr_json. */
NP_EXPORT np_log_cb np_log_stderr_for(np_log_format format);
/* "error", "warn", "info", "debug", "trace" -> level; NP_ECONFIG for anything else. */
NP_EXPORT int np_log_level_parse(const char *name, np_log_level *out);
NP_EXPORT const char *np_log_level_name(np_log_level level);

NP_END_DECLS

#endif
