#include "natproxy/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

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

/* RFC 3339 in UTC with milliseconds: "2026-11-25T13:00:00.123Z". */
static void stamp_now(char *buf, size_t cap) {
  struct timespec ts;
  struct tm tm;
  char secs[24];

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(secs, sizeof(secs), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf, cap, "%s.%03ldZ", secs, ts.tv_nsec / 1000000L);
}

void np_log_stderr(np_log_level level, const char *msg, void *arg) {
  char stamp[40];

  stamp_now(stamp, sizeof(stamp));
  /* One fprintf per line so lines from two processes sharing stderr do not interleave mid-line. */
  fprintf(stderr, "%s %-5s %s\n", stamp, np_log_level_name(level), msg);
}

/* msg with every byte that is not part of well-formed UTF-8 replaced by U+FFFD (jansson takes
 * only UTF-8, and a collector would choke on the rest). NULL when out of memory. */
static json_t *json_text(const char *msg) {
  static const char replacement[] = "\xef\xbf\xbd";
  json_t *j;
  char *buf, *o;
  unsigned cp;

  if ((j = json_string(msg)) != NULL)
    return j; /* the usual case: it was UTF-8 already */
  if ((buf = malloc(strlen(msg) * 3 + 1)) == NULL)
    return NULL;
  for (o = buf; *msg != '\0';) {
    size_t n = np__utf8_next(msg, &cp);
    if (n == 0) {
      memcpy(o, replacement, 3);
      o += 3;
      msg++;
    } else {
      memcpy(o, msg, n);
      o += n;
      msg += n;
    }
  }
  *o = '\0';
  j = json_string(buf);
  free(buf);
  return j;
}

/* The object's compact text and a newline, in our own malloc (never jansson's allocator, which an
 * embedder may have replaced) unless it fits buf. NULL when out of memory. */
static char *json_line(json_t *obj, char *buf, size_t cap) {
  size_t n = json_dumpb(obj, buf, cap - 1, JSON_COMPACT);
  char *out = buf;

  if (n == 0)
    return NULL;
  if (n >= cap - 1) {
    if ((out = malloc(n + 2)) == NULL || json_dumpb(obj, out, n, JSON_COMPACT) != n) {
      free(out);
      return NULL;
    }
  }
  out[n] = '\n';
  out[n + 1] = '\0';
  return out;
}

void np_log_stderr_json(np_log_level level, const char *msg, void *arg) {
  char stamp[40], buf[2048], *line = NULL;
  json_t *obj;

  stamp_now(stamp, sizeof(stamp));
  /* jansson does the escaping; the keys stay in the order they are set (jansson >= 2.8). */
  if ((obj = json_object()) != NULL && json_object_set_new(obj, "time", json_string(stamp)) == 0 &&
      json_object_set_new(obj, "level", json_string(np_log_level_name(level))) == 0 &&
      (arg == NULL || json_object_set_new(obj, "component", json_text(arg)) == 0) &&
      json_object_set_new(obj, "msg", json_text(msg)) == 0)
    line = json_line(obj, buf, sizeof(buf));
  json_decref(obj);
  if (line == NULL) {
    /* Out of memory: still one valid object, all of it constant or ASCII we made. */
    fprintf(stderr,
            "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"(log line lost: out of memory)\"}\n",
            stamp, np_log_level_name(level));
    return;
  }
  fputs(line, stderr); /* one write per line, as above */
  if (line != buf)
    free(line);
}

np_log_cb np_log_stderr_for(np_log_format format) {
  return format == NP_LOG_FORMAT_JSON ? np_log_stderr_json : np_log_stderr;
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
