/* The allocator sweep over the session fuzzer's seed corpus: each input of
 * tests/fuzz/corpus/session runs through the real server (the harness of tests/fuzz/fuzz_session.c,
 * built without libFuzzer) again and again with the n-th allocation failing, for every n until a
 * run no longer reaches n. Each run must end with the server letting go of the connection (the
 * harness aborts otherwise); at the end the server closes and every handle with it; LeakSanitizer,
 * in the AddressSanitizer build, reports anything a failure path forgot to free. */
#define NP_SWEEP 1
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

/* What libFuzzer would declare, and the link-time wrap the harness defines. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int __wrap_uv_tcp_bind(uv_tcp_t *h, const struct sockaddr *addr, unsigned int flags);

#include "../fuzz/fuzz_session.c"

#include <dirent.h>
#include <signal.h>
#include <stdio.h>

#include "failmalloc.h"

static uint8_t input[1 << 16];
static size_t input_len;

static void one_input(void *arg) {
  (void)arg;
  LLVMFuzzerTestOneInput(input, input_len);
}

static void on_closed(struct np_server *s) {
  *(int *)np_server_get_data(s) = 1;
}

int main(int argc, char **argv) {
  struct dirent **names;
  int n, failed = 0, closed = 0;

  if (argc != 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  np_fm_install();
  LLVMFuzzerInitialize(NULL, NULL);
  if ((n = scandir(argv[1], &names, NULL, alphasort)) < 0) {
    perror(argv[1]);
    return 2;
  }
  for (int i = 0; i < n; i++) {
    char path[4096];
    FILE *f;
    long allocs;

    if (names[i]->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "%s/%s", argv[1], names[i]->d_name);
    if ((f = fopen(path, "rb")) == NULL) {
      perror(path);
      return 2;
    }
    input_len = fread(input, 1, sizeof(input), f);
    fclose(f);
    allocs = np_fm_sweep(one_input, NULL, NP_FM_OURS, 1, 100000);
    printf("%s %s: %ld allocations, each failed once\n", allocs >= 0 ? "ok  " : "FAIL",
           names[i]->d_name, allocs);
    failed += allocs < 0;
  }
  for (int i = 0; i < n; i++)
    free(names[i]);
  free(names);
  np_server_set_data(srv, &closed);
  np_server_close(srv, on_closed);
  while (!closed)
    uv_run(loop, UV_RUN_ONCE);
  uv_run(loop, UV_RUN_DEFAULT);
  if (uv_loop_close(loop) != 0) {
    printf("FAIL: handles left open after the server closed\n");
    failed++;
  }
  printf("%d passed, %d failed\n", failed ? 0 : 1, failed);
  return failed ? 1 : 0;
}
