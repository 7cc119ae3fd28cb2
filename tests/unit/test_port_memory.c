/* The port memory (lib/port_memory.c): what a port-0 proxy got, by client and proxy; bounded by
 * age; a file that survives the server. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <natproxy.h>

#include "port_memory.h"
#include "tmpfile.h"

static void test_note_recall_and_age(void **state) {
  np__port_memory *m;
  (void)state;

  assert_int_equal(np__port_memory_new(3, &m), 0);
  assert_int_equal(np__port_memory_recall(m, "alpha", "web"), 0);
  assert_int_equal(np__port_memory_note(m, "alpha", "web", 40001), 1);
  assert_int_equal(np__port_memory_note(m, "alpha", "web", 40001), 0); /* known already */
  assert_int_equal(np__port_memory_note(m, "alpha", "ssh", 40002), 1);
  assert_int_equal(np__port_memory_note(m, "beta", "web", 40003), 1);
  assert_int_equal(np__port_memory_recall(m, "alpha", "web"), 40001);
  assert_int_equal(np__port_memory_recall(m, "beta", "web"), 40003);
  /* alpha/web is used again (the newest), then a fourth entry pushes the oldest, alpha/ssh, out */
  assert_int_equal(np__port_memory_note(m, "alpha", "web", 40001), 0);
  assert_int_equal(np__port_memory_note(m, "gamma", "db", 40004), 1);
  assert_int_equal(np__port_memory_count(m), 3);
  assert_int_equal(np__port_memory_recall(m, "alpha", "ssh"), 0);
  assert_int_equal(np__port_memory_recall(m, "alpha", "web"), 40001);
  /* a port changes; names that cannot be keys are ignored */
  assert_int_equal(np__port_memory_note(m, "beta", "web", 40005), 1);
  assert_int_equal(np__port_memory_recall(m, "beta", "web"), 40005);
  assert_int_equal(np__port_memory_note(m, "a\tb", "web", 1), 0);
  assert_int_equal(np__port_memory_note(m, "alpha", "web", 0), 0);
  np__port_memory_free(m);
}

static void test_file(void **state) {
  np__port_memory *m, *again;
  char path[64], err[200];
  struct stat st;
  (void)state;

  write_tmp(path, "");
  assert_int_equal(np__port_memory_new(100, &m), 0);
  assert_int_equal(np__port_memory_note(m, "alpha", "web", 40001), 1);
  assert_int_equal(np__port_memory_note(m, "we ird", "p", 40002), 1);
  assert_int_equal(np__port_memory_save(m, path), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(np__port_memory_new(100, &again), 0);
  assert_int_equal(np__port_memory_load(again, path, err, sizeof(err)), 0);
  assert_int_equal(np__port_memory_recall(again, "alpha", "web"), 40001);
  assert_int_equal(np__port_memory_recall(again, "we ird", "p"), 40002);
  np__port_memory_free(again);
  np__port_memory_free(m);

  /* a missing file is an empty table; a broken line is refused with FILE:LINE, the lines before
   * it kept */
  unlink(path);
  assert_int_equal(np__port_memory_new(100, &m), 0);
  assert_int_equal(np__port_memory_load(m, path, err, sizeof(err)), 0);
  assert_int_equal(np__port_memory_count(m), 0);
  np__port_memory_free(m);
  write_tmp(path, "# comment\nalpha\tweb\t40001\nalpha\tweb\t99999\n#lab\tp\t40002\nx\n"
                  "beta\tweb\t40003\textra\n");
  assert_int_equal(np__port_memory_new(100, &m), 0);
  assert_int_equal(np__port_memory_load(m, path, err, sizeof(err)), NP_ECONFIG);
  assert_non_null(strstr(err, ":3: not CLIENT<TAB>PROXY<TAB>PORT (and 2 more lines)"));
  assert_int_equal(np__port_memory_recall(m, "alpha", "web"), 40001);
  assert_int_equal(np__port_memory_recall(m, "#lab", "p"), 40002); /* a name, not a comment */
  np__port_memory_free(m);
  unlink(path);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_note_recall_and_age),
      cmocka_unit_test(test_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
