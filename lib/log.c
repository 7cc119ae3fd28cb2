#include "natproxy/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

const char *np_log_level_name(np_log_level level) {
  if ((unsigned)level >= NP_ARRAY_SIZE(level_names))
    return "?";
  return level_names[level];
}

int np_log_level_parse(const char *name, np_log_level *out) {
  for (size_t i = 0; i < NP_ARRAY_SIZE(level_names); i++) {
    if (name != NULL && strcmp(name, level_names[i]) == 0) {
      *out = (np_log_level)i;
      return 0;
    }
  }
  return NP_ECONFIG;
}

void np_log_stderr(np_log_level level, const char *msg, void *arg) {
  struct timespec ts;
  struct tm tm;
  char stamp[32];

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  /* One fprintf per line so lines from two processes sharing stderr do not interleave mid-line. */
  fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, ts.tv_nsec / 1000000L, np_log_level_name(level),
          msg);
}

void np__logger_init(np__logger *lg) {
  lg->level = NP_LOG_INFO;
  lg->cb = np_log_stderr;
  lg->arg = NULL;
}

void np__log(const np__logger *lg, np_log_level level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;

  if (lg == NULL || level > lg->level || lg->cb == NULL)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  lg->cb(level, msg, lg->arg);
}
