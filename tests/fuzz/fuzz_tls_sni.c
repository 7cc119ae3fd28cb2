/* libFuzzer: the SNI reader (lib/tls_sni.c), the first bytes anybody sends to the HTTPS port. The
 * input's first byte seeds the sizes of the pieces the rest is fed in (0: whole), so the same
 * bytes are cut many ways. The result must not depend on the cutting (a second reader gets the
 * bytes whole), must come by NP_SNI_MAX_INPUT bytes, must stick, and a name must be what the
 * reader promises: lowercased, no trailing dot, letters, digits, '-' and '.', labels of 1..63. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "natproxy/error.h"
#include "tls_sni.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_name(const char *name) {
  size_t n = strlen(name), label = 0;
  if (n == 0 || n > NP_SNI_NAME_MAX || name[n - 1] == '.')
    abort();
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (c == '.') {
      if (label == 0)
        abort();
      label = 0;
    } else if (((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') && ++label <= 63) {
      continue;
    } else {
      abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  np__sni_reader cut, whole;
  const char *in = (const char *)data + 1;
  uint32_t rng;
  size_t off = 0, len;
  int res = NP_SNI_MORE, all;

  if (size == 0)
    return 0;
  rng = data[0];
  len = size - 1;
  np__sni_init(&cut);
  while (off < len && res == NP_SNI_MORE) {
    size_t piece = len - off;
    if (data[0] != 0) {
      rng = rng * 1103515245u + 12345u; /* a quarter of the pieces 1..4 bytes, the rest 1..64 */
      piece = 1 + (rng >> 16) % ((rng >> 28) < 4 ? 4 : 64);
      if (piece > len - off)
        piece = len - off;
    }
    res = np__sni_feed(&cut, in + off, piece);
    off += piece;
  }
  if (res == NP_SNI_MORE && off > NP_SNI_MAX_INPUT)
    abort();
  if (res != NP_SNI_MORE && np__sni_feed(&cut, in, len) != res)
    abort();
  if (res != NP_SNI_MORE && res != NP_SNI_FOUND && res != NP_SNI_NONE && res != NP_ENOTLS &&
      res != NP_EPROTO && res != NP_ETOOBIG && res != UV_ENOMEM)
    abort();
  if ((res == NP_SNI_FOUND) != (np__sni_name(&cut) != NULL))
    abort();
  if (res == NP_SNI_FOUND)
    check_name(np__sni_name(&cut));

  np__sni_init(&whole);
  all = np__sni_feed(&whole, in, len);
  if (all != res || (res == NP_SNI_FOUND && strcmp(np__sni_name(&whole), np__sni_name(&cut)) != 0))
    abort();
  np__sni_free(&whole);
  np__sni_free(&cut);
  return 0;
}
