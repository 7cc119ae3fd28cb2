/* libFuzzer: the yamux frame parser (every multiplexed connection's bytes go through it first). Any
 * chunking; events must account for every byte, and data never exceed the frame's length. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "mux_frame.h"
#include "natproxy/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  np__mux_parser p;
  size_t off = 0, body = 0;

  np__mux_parser_init(&p, 1 << 20);
  while (off < size) {
    size_t used;
    np__mux_event ev;
    int r = np__mux_parse(&p, (const char *)data + off, size - off, &used, &ev);
    if (used > size - off)
      abort();
    off += used;
    if (r < 0) {
      if (r != NP_EPROTO && r != NP_ETOOBIG)
        abort();
      return 0;
    }
    if (r == 0)
      continue;
    if (ev.type == NP_MUX_EV_FRAME) {
      if (body != 0)
        abort(); /* a header inside a frame's data */
      body = ev.hdr.type == NP_MUX_DATA ? ev.hdr.length : 0;
    } else {
      if (ev.len == 0 || ev.len > body || ev.data != (const char *)data + off - used)
        abort();
      body -= ev.len;
    }
  }
  return 0;
}
