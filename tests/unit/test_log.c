/* The stock log sinks (natproxy/log.h): np_log_stderr_json writes one valid JSON object per line
 * whatever bytes the message holds (quotes, backslashes, line breaks, control characters, bytes
 * that are not UTF-8, long messages), with an RFC 3339 UTC time with milliseconds, the level's
 * name, and the component when given; the text sink's line; log_format in the configuration; and
 * the UTF-8 reader that both the JSON sink and the check of peers' names use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "config.h"
#include "internal.h"

/* What sink(level, msg, arg) wrote to stderr, NUL-terminated; the caller frees it. */
static char *capture(np_log_cb sink, np_log_level level, const char *msg, void *arg) {
  FILE *f = tmpfile();
  int saved;
  long n;
  char *out;

  assert_non_null(f);
  fflush(stderr);
  saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_int_equal(dup2(fileno(f), STDERR_FILENO), STDERR_FILENO);
  sink(level, msg, arg);
  fflush(stderr);
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
  close(saved);
  n = ftell(f);
  assert_true(n > 0);
  out = malloc((size_t)n + 1);
  assert_non_null(out);
  rewind(f);
  assert_int_equal(fread(out, 1, (size_t)n, f), (size_t)n);
  out[n] = '\0';
  fclose(f);
  return out;
}

static int is_utf8(const char *s) {
  unsigned cp;
  for (size_t n; *s != '\0'; s += n)
    if ((n = np__utf8_next(s, &cp)) == 0)
      return 0;
  return 1;
}

/* The JSON sink's line for msg: exactly one line, valid UTF-8, an object with time, level,
 * component (when given; read back as shown, NULL: as given) and msg in that order; returns msg as
 * JSON carried it (caller frees). */
static char *json_msg_as(np_log_level level, const char *msg, const char *component,
                         const char *shown) {
  char *line = capture(np_log_stderr_json, level, msg, (void *)component);
  size_t len = strlen(line);
  json_error_t err;
  json_t *obj;
  const char *key, *keys[] = {"time", "level", "component", "msg"};
  const char *time;
  json_t *v;
  size_t i = 0;
  char *out;

  assert_true(len > 1 && line[len - 1] == '\n');
  assert_null(memchr(line, '\n', len - 1)); /* one line */
  assert_true(is_utf8(line));
  obj = json_loads(line, 0, &err);
  if (obj == NULL)
    fail_msg("not JSON (%s): %s", err.text, line);
  assert_true(json_is_object(obj));
  json_object_foreach(obj, key, v) {
    if (component == NULL && i == 2)
      i++;
    assert_true(i < 4);
    assert_string_equal(key, keys[i++]);
    assert_true(json_is_string(v));
  }
  assert_int_equal(i, 4);
  /* 2026-11-25T13:00:00.123Z */
  time = json_string_value(json_object_get(obj, "time"));
  assert_int_equal(strlen(time), 24);
  for (i = 0; i < 24; i++) {
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (shape[i] == 'd')
      assert_true(time[i] >= '0' && time[i] <= '9');
    else
      assert_int_equal(time[i], shape[i]);
  }
  assert_string_equal(json_string_value(json_object_get(obj, "level")), np_log_level_name(level));
  if (component != NULL)
    assert_string_equal(json_string_value(json_object_get(obj, "component")),
                        shown != NULL ? shown : component);
  out = strdup(json_string_value(json_object_get(obj, "msg")));
  json_decref(obj);
  free(line);
  return out;
}

static char *json_msg(np_log_level level, const char *msg, const char *component) {
  return json_msg_as(level, msg, component, NULL);
}

static void json_plain(void **state) {
  char *m = json_msg(NP_LOG_INFO, "listening on 127.0.0.1:7000", "np-server");
  assert_string_equal(m, "listening on 127.0.0.1:7000");
  free(m);
  m = json_msg(NP_LOG_TRACE, "", NULL);
  assert_string_equal(m, "");
  free(m);
  for (int l = NP_LOG_ERROR; l <= NP_LOG_TRACE; l++) {
    m = json_msg((np_log_level)l, "x", NULL);
    free(m);
  }
}

/* Whatever JSON needs escaped comes back as it went in. */
static void json_escapes(void **state) {
  const char *msgs[] = {
      "client we\"ird\\one logged in",
      "line one\nline two\r\n\tend",
      "\x01\x1b[31mred\x1b[0m\x7f",
      "</script> and \\u0041 as text",
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e", /* 2, 3 and 4-byte UTF-8 */
      "\xe2\x80\xa8 and \xe2\x80\xa9",             /* line separators: valid in JSON */
  };
  for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
    char *m = json_msg(NP_LOG_WARN, msgs[i], "a \"component\"\n");
    assert_string_equal(m, msgs[i]);
    free(m);
  }
}

/* Bytes that are not UTF-8 each become U+FFFD; what is UTF-8 around them stays. */
static void json_not_utf8(void **state) {
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"bad \xff byte", "bad \xef\xbf\xbd byte"},
      {"\x80 stray continuation", "\xef\xbf\xbd stray continuation"},
      {"overlong \xc0\xaf", "overlong \xef\xbf\xbd\xef\xbf\xbd"},
      {"surrogate \xed\xa0\x80!", "surrogate \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!"},
      {"beyond \xf4\x90\x80\x80", "beyond \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"cut at the end \xe2\x82", "cut at the end \xef\xbf\xbd\xef\xbf\xbd"},
      {"\xe2\x82\xac\xff\xe2\x82\xac", "\xe2\x82\xac\xef\xbf\xbd\xe2\x82\xac"},
      {"path /tmp/we\"ird\\\n\xfe.ini", "path /tmp/we\"ird\\\n\xef\xbf\xbd.ini"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char *m = json_msg_as(NP_LOG_ERROR, cases[i].in, "np-\xff", "np-\xef\xbf\xbd");
    assert_string_equal(m, cases[i].out);
    free(m);
  }
}

/* Longer than the sink's stack buffer, escaped to twice its length. */
static void json_long(void **state) {
  size_t n = 20000;
  char *big = malloc(n + 1), *m;

  assert_non_null(big);
  for (size_t i = 0; i < n; i++)
    big[i] = i % 3 == 0 ? '"' : i % 3 == 1 ? '\\' : '\xff';
  big[n] = '\0';
  m = json_msg(NP_LOG_DEBUG, big, NULL);
  /* each '"' and '\\' one byte again, each 0xff three (U+FFFD) */
  assert_int_equal(strlen(m), (n + 2) / 3 + (n + 1) / 3 + n / 3 * 3);
  assert_memory_equal(m, "\"\\\xef\xbf\xbd\"", 6);
  free(m);
  free(big);
}

static void text_line(void **state) {
  char *line = capture(np_log_stderr, NP_LOG_WARN, "hello", (void *)"ignored");
  /* 2026-11-25T13:00:00.123Z warn  hello */
  assert_int_equal(strlen(line), 24 + 1 + 5 + 1 + 5 + 1);
  assert_int_equal(line[23], 'Z');
  assert_string_equal(line + 24, " warn  hello\n");
  free(line);
  assert_ptr_equal(np_log_stderr_for(NP_LOG_FORMAT_TEXT), np_log_stderr);
  assert_ptr_equal(np_log_stderr_for(NP_LOG_FORMAT_JSON), np_log_stderr_json);
}

static void config_log_format(void **state) {
  struct np_config *cfg;

  assert_int_equal(np_config_new(NP_CONFIG_SERVER, &cfg), 0);
  assert_int_equal(np_config_log_format(cfg), NP_LOG_FORMAT_TEXT);
  assert_int_equal(np_config_set(cfg, "server", "log_format", "json"), 0);
  assert_int_equal(np_config_log_format(cfg), NP_LOG_FORMAT_JSON);
  assert_int_equal(np_config_set_flag(cfg, "log-format", "text"), 0);
  assert_int_equal(np_config_log_format(cfg), NP_LOG_FORMAT_TEXT);
  assert_int_equal(np_config_set(cfg, "server", "log_format", "JSON"), NP_ECONFIG);
  assert_string_equal(np_config_error(cfg), "log_format: 'JSON' is not text or json");
  np_config_free(cfg);
  assert_int_equal(np_config_new(NP_CONFIG_CLIENT, &cfg), 0);
  assert_int_equal(np_config_set(cfg, "client", "log_format", "json"), 0);
  assert_int_equal(np_config_log_format(cfg), NP_LOG_FORMAT_JSON);
  np_config_free(cfg);
}

/* The reader behind the JSON sink and np__name_ok. */
static void utf8_reader(void **state) {
  unsigned cp = 0;

  assert_int_equal(np__utf8_next("A", &cp), 1);
  assert_int_equal(cp, 'A');
  assert_int_equal(np__utf8_next("\xc2\x80", &cp), 2);
  assert_int_equal(cp, 0x80);
  assert_int_equal(np__utf8_next("\xef\xbf\xbd", &cp), 3);
  assert_int_equal(cp, 0xfffd);
  assert_int_equal(np__utf8_next("\xf4\x8f\xbf\xbf", &cp), 4);
  assert_int_equal(cp, 0x10ffff);
  assert_int_equal(np__utf8_next("\xc1\xbf", &cp), 0);         /* overlong */
  assert_int_equal(np__utf8_next("\xe0\x9f\xbf", &cp), 0);     /* overlong */
  assert_int_equal(np__utf8_next("\xf0\x8f\xbf\xbf", &cp), 0); /* overlong */
  assert_int_equal(np__utf8_next("\xed\xbf\xbf", &cp), 0);     /* surrogate */
  assert_int_equal(np__utf8_next("\xf4\x90\x80\x80", &cp), 0); /* beyond U+10FFFF */
  assert_int_equal(np__utf8_next("\xf5\x80\x80\x80", &cp), 0);
  assert_int_equal(np__utf8_next("\xe2\x82", &cp), 0); /* cut by the NUL */
  assert_int_equal(np__utf8_next("\xbf", &cp), 0);
  assert_true(np__name_ok("we\"ird\\one caf\xc3\xa9"));
  assert_false(np__name_ok("tab\there"));
  assert_false(np__name_ok("del\x7f"));
  assert_false(np__name_ok("c1 \xc2\x85"));
  assert_false(np__name_ok("bad \xff"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(json_plain),    cmocka_unit_test(json_escapes),
      cmocka_unit_test(json_not_utf8), cmocka_unit_test(json_long),
      cmocka_unit_test(text_line),     cmocka_unit_test(config_log_format),
      cmocka_unit_test(utf8_reader),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
