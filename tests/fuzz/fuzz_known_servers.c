/* libFuzzer: the client's known_servers file (lib/known_servers.c), which an operator edits by hand
 * and the client appends to. The input is the file; each run looks two names up in it, appends a
 * line and looks that line up again: whatever the file held before, the new line must be found (or
 * an earlier line for the same name) and read back as it was written. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "known_servers.h"

static const char fp[] = "sha256:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:"
                         "45:67:89:AB:CD:EF:01:23:45:67:89";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[] = "/tmp/np-fuzz-known-XXXXXX", got[128], again[128];
  int fd = mkstemp(path), line = 0, line2 = 0, r, before;

  if (fd < 0)
    abort();
  if (write(fd, data, size) != (ssize_t)size)
    abort();
  close(fd);
  (void)np__known_lookup(path, "127.0.0.1:7000", got, sizeof(got), &line);
  before = np__known_lookup(path, "fuzz.example:7000", got, sizeof(got), &line);
  r = np__known_add(path, "fuzz.example:7000", fp, &line2);
  if (r != 0)
    abort(); /* a writable temporary file: appending cannot fail */
  r = np__known_lookup(path, "fuzz.example:7000", again, sizeof(again), &line);
  if (r != 1)
    abort(); /* the line just added, or an earlier one for the name */
  if (before != 1 && (line != line2 || strcmp(again, fp) != 0))
    abort(); /* no earlier line: the new one is found, where add said, as written */
  if (before == 1 && strcmp(again, got) != 0)
    abort(); /* an earlier line still counts first */
  unlink(path);
  return 0;
}
