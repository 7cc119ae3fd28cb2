/* Unit tests' temporary files: text written to a fresh /tmp file whose name stays in path (for
 * the FILE:LINE an error names) until the caller unlinks it. Include after cmocka.h. */
#ifndef NP_TEST_TMPFILE_H
#define NP_TEST_TMPFILE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void write_tmp(char path[64], const char *text) {
  FILE *f;
  int fd;

  strcpy(path, "/tmp/np-test-XXXXXX");
  fd = mkstemp(path);
  assert_true(fd >= 0);
  f = fdopen(fd, "w");
  fputs(text, f);
  fclose(f);
}

#endif
