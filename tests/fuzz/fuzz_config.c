/* libFuzzer: the INI configuration parser and validator (operators' files, and what a control
 * panel might pass on). The input is a file; errors must come with a message. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <natproxy.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("fuzz.ini", MFD_CLOEXEC);
  char path[64];

  if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
    if (fd >= 0)
      close(fd);
    return 0;
  }
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  for (int kind = 0; kind < 2; kind++) {
    struct np_config *cfg;
    if (np_config_new(kind == 0 ? NP_CONFIG_SERVER : NP_CONFIG_CLIENT, &cfg) != 0)
      abort();
    if (np_config_load_file(cfg, path) != 0 || np_config_validate(cfg) != 0) {
      const char *e = np_config_error(cfg);
      if (e == NULL || e[0] == '\0')
        abort(); /* an error nobody can read */
    }
    np_config_free(cfg);
  }
  close(fd);
  return 0;
}
