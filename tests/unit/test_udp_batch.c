/* UDP batches (lib/udp_batch.c): a burst larger than one recvmmsg is received in batches and
 * relayed through the send queue with its memory borrowed from the receive buffer, every datagram
 * arriving whole, byte for byte, in order; the queue keeps each socket's order when sockets
 * interleave and when it fills; a datagram the kernel refuses is counted and its neighbours go. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "internal.h"
#include "udp_batch.h"

#define BURST 300 /* datagrams: 15 recvmmsg batches of 20, 5 queues of 64 */

typedef struct relay {
  uv_loop_t loop;
  uv_udp_t in, out, sink;
  struct sockaddr_in in_addr, sink_addr;
  int chunks;      /* receive calls with UV_UDP_MMSG_CHUNK */
  int ends;        /* calls that ended a batch */
  int relayed;     /* datagrams queued on out */
  int sent_ok;     /* done callbacks with status 0 */
  int got;         /* datagrams at the sink */
  int bad;         /* at the sink out of order or not the bytes sent */
  char scratch[4]; /* where the test writes over the receive buffer between batches */
} relay;

/* Datagram i: its number, then bytes that depend on it, 100 to 1,299 of them in all. */
static size_t make(int i, char *out) {
  size_t len = 100 + (size_t)(i * 37 % 1200);
  for (size_t k = 0; k < len; k++)
    out[k] = (char)(i * 7 + (int)k);
  memcpy(out, &i, sizeof(i));
  return len;
}

static void done(void *arg, size_t len, int status) {
  relay *r = arg;
  assert_true(len >= 100);
  if (status == 0)
    r->sent_ok++;
}

static void on_in(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                  unsigned flags) {
  relay *r = h->data;
  if (flags & UV_UDP_MMSG_CHUNK)
    r->chunks++;
  if (n > 0 && addr != NULL) {
    /* Borrowed from the receive buffer until the flush below. */
    uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
    np__udpq_add(&r->out, (const struct sockaddr *)&r->sink_addr, &b, 1, done, r);
    r->relayed++;
  }
  if (!(flags & UV_UDP_MMSG_CHUNK)) {
    r->ends++;
    np__udpq_flush();
  }
}

static void on_sink(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  relay *r = h->data;
  char want[1400];
  if (n <= 0 || addr == NULL)
    goto out;
  size_t len = make(r->got, want);
  if ((size_t)n != len || memcmp(buf->base, want, len) != 0)
    r->bad++;
  r->got++;
out:
  if (!(flags & UV_UDP_MMSG_CHUNK))
    np__udpq_flush();
}

static void bind_any(uv_udp_t *h, struct sockaddr_in *addr) {
  int len = sizeof(*addr);
  assert_int_equal(uv_ip4_addr("127.0.0.1", 0, addr), 0);
  assert_int_equal(uv_udp_bind(h, (const struct sockaddr *)addr, 0), 0);
  assert_int_equal(uv_udp_getsockname(h, (struct sockaddr *)addr, &len), 0);
  int size = 4 << 20;
  uv_recv_buffer_size((uv_handle_t *)h, &size);
}

static void on_timeout(uv_timer_t *t) {
  uv_stop(t->loop);
}

static void test_burst_in_batches(void **state) {
  relay r;
  uv_timer_t limit;
  char d[1400];
  (void)state;

  memset(&r, 0, sizeof(r));
  assert_int_equal(uv_loop_init(&r.loop), 0);
  assert_int_equal(np__udp_init_batched(&r.loop, &r.in), 0);
  assert_int_equal(np__udp_init_batched(&r.loop, &r.sink), 0);
  assert_int_equal(uv_udp_init(&r.loop, &r.out), 0);
  r.in.data = r.sink.data = &r;
  bind_any(&r.in, &r.in_addr);
  bind_any(&r.sink, &r.sink_addr);
  struct sockaddr_in any;
  uv_ip4_addr("127.0.0.1", 0, &any);
  assert_int_equal(uv_udp_bind(&r.out, (const struct sockaddr *)&any, 0), 0);

  /* The whole burst waits in the receiver's buffer before the loop first reads it. */
  uv_udp_t src;
  assert_int_equal(uv_udp_init(&r.loop, &src), 0);
  for (int i = 0; i < BURST; i++) {
    uv_buf_t b = uv_buf_init(d, (unsigned)make(i, d));
    assert_true(uv_udp_try_send(&src, &b, 1, (const struct sockaddr *)&r.in_addr) > 0);
  }
  assert_int_equal(uv_udp_recv_start(&r.in, np__udp_alloc, on_in), 0);
  assert_int_equal(uv_udp_recv_start(&r.sink, np__udp_alloc, on_sink), 0);
  uv_timer_init(&r.loop, &limit);
  uv_timer_start(&limit, on_timeout, 10000, 0);
  while (r.got < BURST && uv_run(&r.loop, UV_RUN_ONCE) != 0 && uv_is_active((uv_handle_t *)&limit))
    ;
  assert_int_equal(r.relayed, BURST);
  assert_int_equal(r.sent_ok, BURST);
  assert_int_equal(r.got, BURST);
  assert_int_equal(r.bad, 0);
  assert_true(r.chunks >= BURST);  /* libuv read them with recvmmsg */
  assert_true(r.ends < BURST / 2); /* in batches, not one by one */

  uv_close((uv_handle_t *)&src, NULL);
  np__udp_close(&r.in, NULL);
  np__udp_close(&r.out, NULL);
  np__udp_close(&r.sink, NULL);
  uv_close((uv_handle_t *)&limit, NULL);
  uv_run(&r.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&r.loop), 0);
}

/* Three connected senders interleaved, more datagrams than the queue holds, one too big for UDP. */
typedef struct counts {
  int ok, refused;
  int last_status;
} counts;

static void count(void *arg, size_t len, int status) {
  counts *c = arg;
  (void)len;
  if (status == 0)
    c->ok++;
  else
    c->refused++, c->last_status = status;
}

static void test_interleaved_and_refused(void **state) {
  uv_loop_t loop;
  uv_udp_t tx[3];
  int rx[3];
  counts c = {0};
  static char big[70000];
  (void)state;

  assert_int_equal(uv_loop_init(&loop), 0);
  for (int s = 0; s < 3; s++) {
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int size = 1 << 20;
    rx[s] = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(rx[s] >= 0);
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(bind(rx[s], (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(rx[s], (struct sockaddr *)&a, &alen), 0);
    setsockopt(rx[s], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    assert_int_equal(uv_udp_init(&loop, &tx[s]), 0);
    assert_int_equal(uv_udp_connect(&tx[s], (const struct sockaddr *)&a), 0);
  }
  /* 150 datagrams: socket i % 3 gets "s:n", its n-th; the queue fills and sends on its own twice.
   * Number 40 is followed by one over UDP's limit on the same socket. */
  static char msgs[150][16];
  for (int i = 0; i < 150; i++) {
    int len = snprintf(msgs[i], sizeof(msgs[i]), "%d:%d", i % 3, i / 3);
    uv_buf_t b = uv_buf_init(msgs[i], (unsigned)len);
    np__udpq_add(&tx[i % 3], NULL, &b, 1, count, &c);
    if (i == 40) {
      uv_buf_t two[2] = {uv_buf_init(big, 35000), uv_buf_init(big + 35000, 35000)};
      np__udpq_add(&tx[i % 3], NULL, two, 2, count, &c);
    }
  }
  np__udpq_flush();
  assert_int_equal(c.ok, 150);
  assert_int_equal(c.refused, 1);
  assert_int_equal(c.last_status, UV_EMSGSIZE);
  for (int s = 0; s < 3; s++) {
    char buf[64], want[16];
    for (int n = 0; n < 50; n++) {
      ssize_t got = recv(rx[s], buf, sizeof(buf), MSG_DONTWAIT);
      int len = snprintf(want, sizeof(want), "%d:%d", s, n);
      assert_int_equal(got, len);
      assert_memory_equal(buf, want, (size_t)len);
    }
    assert_int_equal(recv(rx[s], buf, sizeof(buf), MSG_DONTWAIT), -1);
  }
  /* A datagram written in the queue's own memory (as a sealed packet is), between borrowed ones. */
  uv_buf_t b = uv_buf_init(msgs[0], 3);
  np__udpq_add(&tx[1], NULL, &b, 1, NULL, NULL);
  char *room = np__udpq_room(65507);
  memcpy(room, "own", 3);
  np__udpq_commit(&tx[1], NULL, 3, count, &c);
  np__udpq_add(&tx[1], NULL, &b, 1, NULL, NULL);
  np__udpq_flush();
  assert_int_equal(c.ok, 151);
  for (int k = 0; k < 3; k++) {
    char buf[64];
    assert_int_equal(recv(rx[1], buf, sizeof(buf), MSG_DONTWAIT), 3);
    assert_memory_equal(buf, k == 1 ? "own" : "0:0", 3);
  }
  for (int s = 0; s < 3; s++) {
    close(rx[s]);
    np__udp_close(&tx[s], NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_burst_in_batches),
      cmocka_unit_test(test_interleaved_and_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
