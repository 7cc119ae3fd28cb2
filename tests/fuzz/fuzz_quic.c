/* libFuzzer: what anybody who reaches a punched path's socket can send to the server side of its
 * QUIC connection (lib/quic.c) while it waits for its client and during the handshake. The input is
 * datagrams, each a 2-byte big-endian length and that many bytes; the seed is a real client's first
 * flight for the harness's key (tests/fuzz/corpus/quic). Each run has a loop of its own, freed at
 * the end: a handle or a byte left behind fails the run. The server's own datagrams go nowhere. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "internal.h"
#include "quic.h"

static void on_send(void *ud, const uint8_t *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
}

static void on_closed(np_conn *c) {
  (void)c;
}

/* A stream only an authenticated client could open: closed at once if it ever comes. */
static void on_stream(void *ud, np_conn *c) {
  (void)ud;
  np__conn_close(c, on_closed);
}

static void on_quic_closed(void *ud, int err) {
  (void)ud;
  (void)err;
}

static const np__quic_ops ops = {.send = on_send, .stream = on_stream, .closed = on_quic_closed};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t key[32];
  struct sockaddr_in local, peer;
  uv_loop_t loop;
  np__quic *q;

  memset(key, 0x42, sizeof(key)); /* the seed's client used this key */
  uv_ip4_addr("127.0.0.1", 4001, &local);
  uv_ip4_addr("127.0.0.1", 4000, &peer);
  if (uv_loop_init(&loop) != 0)
    abort();
  if (np__quic_new(&loop, 1, (struct sockaddr *)&local, (struct sockaddr *)&peer, key, 1000, &ops,
                   NULL, &q) != 0)
    abort();
  while (size >= 2) {
    size_t len = (size_t)data[0] << 8 | data[1];
    if (len > size - 2)
      len = size - 2;
    np__quic_input(q, data + 2, len);
    uv_run(&loop, UV_RUN_NOWAIT); /* what the datagram caused runs: answers, the tick */
    data += 2 + len;
    size -= 2 + len;
  }
  np__quic_free(q);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    abort();
  return 0;
}
