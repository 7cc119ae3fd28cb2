/* libFuzzer: the server's remembered ports file (lib/port_memory.c), read at every start from its
 * state directory. The input is the file: it is read into a small table (so the bound is reached),
 * then what was kept is written and read back, which must give the same table. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "port_memory.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[] = "/tmp/np-fuzz-ports-XXXXXX", copy[64], err[1200];
  np__port_memory *m, *again;
  int fd = mkstemp(path);

  if (fd < 0 || write(fd, data, size) != (ssize_t)size)
    abort();
  close(fd);
  if (np__port_memory_new(16, &m) != 0 || np__port_memory_new(16, &again) != 0)
    abort();
  (void)np__port_memory_load(m, path, err, sizeof(err));
  if (np__port_memory_count(m) > 16)
    abort();
  snprintf(copy, sizeof(copy), "%s.copy", path);
  if (np__port_memory_save(m, copy) != 0 ||
      np__port_memory_load(again, copy, err, sizeof(err)) != 0)
    abort(); /* what the table writes, it reads */
  if (np__port_memory_count(again) != np__port_memory_count(m))
    abort();
  np__port_memory_free(again);
  np__port_memory_free(m);
  unlink(copy);
  unlink(path);
  return 0;
}
