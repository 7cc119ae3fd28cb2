/* The datagram path's steering (lib/udp_path.c, np__upath_socket): two sockets share one UDP port
 * with SO_REUSEPORT, the first carrying the cBPF program, and every packet whose session id's low
 * byte (the payload's byte 8) is k arrives at socket k, whatever port it came from, where the
 * kernel's hash alone would spread the senders over both. Skipped when the kernel refuses the
 * program (the server then hands packets over between workers instead). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <cmocka.h>

#include "udp_path.h"

#define SENDERS 16 /* source ports per worker index: the hash would split them */
#define WAIT_MS 5000

/* A sealed packet's header as far as the steering reads it: type, then the big-endian session id
 * whose low byte is the worker's index (the rest need not verify: nothing opens it here). */
static void packet(char *out, size_t len, unsigned widx, unsigned n) {
  memset(out, 0, len);
  out[0] = 1;
  out[7] = (char)n; /* the session number, above the index */
  out[8] = (char)widx;
}

/* One datagram from sock, or -1 when none came within WAIT_MS. */
static int recv_one(int sock, char *buf, size_t len) {
  struct pollfd p = {.fd = sock, .events = POLLIN};
  if (poll(&p, 1, WAIT_MS) != 1)
    return -1;
  return (int)recv(sock, buf, len, 0);
}

/* Nothing more is queued on sock (the loopback delivers within sendto). */
static int empty(int sock) {
  char b[64];
  return recv(sock, b, sizeof(b), MSG_DONTWAIT) < 0;
}

static void test_steer_by_low_byte(void **state) {
  struct sockaddr_in addr = {.sin_family = AF_INET};
  socklen_t alen = sizeof(addr);
  int fd[2], steered, other;
  (void)state;

  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(np__upath_socket((struct sockaddr *)&addr, 1, &steered, &fd[0]), 0);
  if (steered != 1) {
    print_message("the kernel refused SO_ATTACH_REUSEPORT_CBPF (%s): skipped\n",
                  uv_strerror(steered));
    close(fd[0]);
    skip();
  }
  assert_int_equal(getsockname(fd[0], (struct sockaddr *)&addr, &alen), 0);
  /* The second joins the port's group (it must not bind a port of its own). */
  assert_int_equal(np__upath_socket((struct sockaddr *)&addr, 0, &other, &fd[1]), 0);
  assert_int_equal(other, 0);

  for (unsigned i = 0; i < SENDERS; i++) {
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    char pkt[64], got[64];
    assert_true(c >= 0);
    for (unsigned k = 0; k < 2; k++) {
      packet(pkt, sizeof(pkt), k, i);
      assert_int_equal(sendto(c, pkt, sizeof(pkt), 0, (struct sockaddr *)&addr, sizeof(addr)),
                       sizeof(pkt));
      assert_int_equal(recv_one(fd[k], got, sizeof(got)), sizeof(pkt));
      assert_memory_equal(got, pkt, sizeof(pkt));
      assert_true(empty(fd[!k])); /* not also, nor instead, at the other */
    }
    close(c);
  }
  /* An index no socket has: the kernel's hash picks one, and the packet is not lost. */
  {
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    char pkt[64], got[64];
    struct pollfd p[2] = {{.fd = fd[0], .events = POLLIN}, {.fd = fd[1], .events = POLLIN}};
    packet(pkt, sizeof(pkt), 7, 1);
    assert_int_equal(sendto(c, pkt, sizeof(pkt), 0, (struct sockaddr *)&addr, sizeof(addr)),
                     sizeof(pkt));
    assert_int_equal(poll(p, 2, WAIT_MS), 1);
    assert_int_equal(recv(p[0].revents ? fd[0] : fd[1], got, sizeof(got), 0), sizeof(pkt));
    close(c);
  }
  close(fd[0]);
  close(fd[1]);
}

/* Without SO_REUSEPORT on both, the second socket cannot take the port: the group is opt-in. */
static void test_port_taken_without_reuseport(void **state) {
  struct sockaddr_in addr = {.sin_family = AF_INET};
  socklen_t alen = sizeof(addr);
  int plain, fd, steered;
  (void)state;

  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  plain = socket(AF_INET, SOCK_DGRAM, 0);
  assert_true(plain >= 0);
  assert_int_equal(bind(plain, (struct sockaddr *)&addr, sizeof(addr)), 0);
  assert_int_equal(getsockname(plain, (struct sockaddr *)&addr, &alen), 0);
  assert_int_equal(np__upath_socket((struct sockaddr *)&addr, 1, &steered, &fd), UV_EADDRINUSE);
  close(plain);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_steer_by_low_byte),
      cmocka_unit_test(test_port_taken_without_reuseport),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
