/* The known_servers file (lib/known_servers.c): lookup by HOST:PORT, whatever the host's case, the
 * first line for a server counting, lines that are not ours skipped, and appends that say where
 * they went. */
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

#include "known_servers.h"
#include "tmpfile.h"

#define FP_A "sha256:AA:BB"
#define FP_B "sha256:CC:DD"

static void test_lookup(void **state) {
  char path[64], fp[128];
  int line = 0;
  (void)state;

  write_tmp(path, "# a comment\n"
                  "\n"
                  "tunnel.example.org:7000 " FP_A "\n"
                  "garbage without a fingerprint\n"
                  "tunnel.example.org:7000 " FP_B "\n"
                  "  [2001:DB8::1]:7000\t" FP_B "\r\n");
  assert_int_equal(np__known_lookup(path, "tunnel.example.org:7000", fp, sizeof(fp), &line), 1);
  assert_string_equal(fp, FP_A); /* the first line for a server counts, as in ssh */
  assert_int_equal(line, 3);
  /* host names and IPv6 hex are case-blind: another spelling is the same server */
  assert_int_equal(np__known_lookup(path, "Tunnel.Example.ORG:7000", fp, sizeof(fp), &line), 1);
  assert_int_equal(line, 3);
  assert_int_equal(np__known_lookup(path, "[2001:db8::1]:7000", fp, sizeof(fp), &line), 1);
  assert_string_equal(fp, FP_B);
  assert_int_equal(line, 6);
  /* a prefix of a name, another port: not this server */
  assert_int_equal(np__known_lookup(path, "tunnel.example.org:700", fp, sizeof(fp), &line), 0);
  assert_int_equal(np__known_lookup(path, "example.org:7000", fp, sizeof(fp), &line), 0);
  /* no room for the fingerprint: not a match rather than a cut one */
  assert_int_equal(np__known_lookup(path, "tunnel.example.org:7000", fp, 4, &line), 0);
  unlink(path);
}

static void test_add(void **state) {
  char dir[] = "/tmp/np-known-XXXXXX", path[128], fp[128];
  struct stat st;
  int line = 0;
  (void)state;

  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/a/b/known_servers", dir);
  assert_int_equal(np__known_lookup(path, "h:1", fp, sizeof(fp), &line), 0); /* no file yet */
  assert_int_equal(np__known_add(path, "h:1", FP_A, &line), 0);
  assert_int_equal(line, 1);
  assert_int_equal(np__known_add(path, "g:2", FP_B, &line), 0);
  assert_int_equal(line, 2);
  assert_int_equal(np__known_lookup(path, "g:2", fp, sizeof(fp), &line), 1);
  assert_string_equal(fp, FP_B);
  assert_int_equal(line, 2);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  unlink(path);
  snprintf(path, sizeof(path), "%s/a/b", dir);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0700);
  rmdir(path);
  snprintf(path, sizeof(path), "%s/a", dir);
  rmdir(path);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lookup),
      cmocka_unit_test(test_add),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
