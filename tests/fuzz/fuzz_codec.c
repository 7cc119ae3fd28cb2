/* libFuzzer: the message decoders the server exposes to the network (native and line codec; the
 * harness is built twice, NP_FUZZ_CODEC picks one). Input arrives cut at every third byte's value,
 * like reads of any size; every decoded message must encode again and decode to itself. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <natproxy.h>

static const np_codec_ops *codec(void) {
  return strcmp(NP_FUZZ_CODEC, "line") == 0 ? np_codec_line() : np_codec_native();
}

static void check_round_trip(const np_codec_ops *c, const np_msg *m) {
  char buf[NP_CODEC_MAX_ENCODED];
  np_msg again;
  size_t used;
  void *dec;
  int n = c->encode(m, buf, sizeof(buf));

  if (n < 0)
    return; /* a message the decoder accepts but the encoder refuses (line codec texts) */
  if (c->decoder_new(4096, &dec) != 0)
    abort();
  if (c->decode(dec, buf, (size_t)n, &used, &again) != 1 || used != (size_t)n ||
      again.type != m->type)
    abort();
  c->decoder_free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const np_codec_ops *c = codec();
  size_t off = 0;
  void *dec;

  if (c->decoder_new(4096, &dec) != 0)
    return 0;
  while (off < size) {
    size_t chunk = 1 + (size_t)data[off] % 97, used = 0;
    np_msg m;
    int r;
    if (chunk > size - off)
      chunk = size - off;
    /* Feed one chunk until it is used up, as the channel does. */
    while (chunk > 0) {
      r = c->decode(dec, (const char *)data + off, chunk, &used, &m);
      if (used > chunk)
        abort();
      off += used;
      chunk -= used;
      if (r < 0) {
        /* Sticky. */
        if (c->decode(dec, "x", 1, &used, &m) != r)
          abort();
        c->decoder_free(dec);
        return 0;
      }
      if (r == 1)
        check_round_trip(c, &m);
      else if (used == 0 && chunk > 0)
        abort(); /* no progress without a message or an error */
    }
  }
  c->decoder_free(dec);
  return 0;
}
