/* libFuzzer: what anybody who reaches the admin port sends (lib/admin_http.c). MHD reads only from
 * a socket, so one real server listens on 127.0.0.1 for the whole run, with a Bearer token and
 * Basic credentials and a route callback that answers as admin_server.c's does, and each input is
 * one TCP connection: the input is written to it (whole, or in pieces whose size comes from a hash
 * of the input, with the server's loop run between them), then the client shuts down its sending
 * side and reads until the server closes. Each input connects from its own address in 127.0.0.0/8,
 * so the failed-credentials back-off of one input does not answer for the next (and a crash
 * reproduces alone). Checked for every input:
 *   - the server reads all of it (or closes first) and, after the client's end, closes the
 *     connection within 2 s (never by its own 5 s head deadline), and keeps no descriptor of it;
 *   - what it sends is nothing, or responses that each start "HTTP/1.1 " or "HTTP/1.0 " and a
 *     3-digit status, one after another as their Content-Length says;
 *   - the route callback runs for a path other than the open /healthz, and a response is 200 with
 *     another type than /healthz's, at most as often as the input holds the valid credentials (a
 *     request can only pass with its own copy of them).
 * At exit the server is closed and the loop must close with no handle left; LeakSanitizer checks
 * the rest.
 *
 * The client's end is sent only once the server has read every byte before it: MHD's epoll is
 * edge-triggered and takes a short read for an empty socket, so an end already queued when it reads
 * the last bytes wakes nothing, and the connection stays until the 5 s head deadline (a known
 * weakness, not checked here; docs/testing.md).
 *
 * Debian's libmicrohttpd is not built with the fuzzer's instrumentation, so the coverage that
 * steers libFuzzer is ours (admin_http.c, the back-off, the reply helpers): inside MHD's parser it
 * mutates blind, from the seeds. */
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "admin_http.h"

#define TOKEN        "fuzz-admin-token"
#define USER         "admin"
#define PASSWORD     "fuzz-password"
#define BASIC        "YWRtaW46ZnV6ei1wYXNzd29yZA==" /* base64 of USER ":" PASSWORD */
#define HEALTHZ_TYPE "text/plain; charset=utf-8"

#define OUT_CAP   (1 << 20) /* response bytes kept per input; more are read and dropped */
#define MAX_TURNS 4096      /* loop turns per input */
#define MAX_MS    2000      /* wall time per input, well inside NP_ADMIN_HEAD_TIMEOUT */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const open_paths[] = {"/healthz", NULL};

static uv_loop_t loop;
static np__admin_http *admin;
static np__logger logger;
static int port;
static uint32_t inputs;
static size_t closed_calls; /* route calls for a path that needs credentials, this input */
static unsigned char out[OUT_CAP];

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Answers as admin_server.c's route does, with fixed bodies. */
static void route(void *arg, const char *method, const char *path, np__admin_reply *r) {
  int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;

  (void)arg;
  if (strcmp(path, "/healthz") != 0)
    closed_calls++;
  if (strcmp(path, "/healthz") == 0 && get)
    np__admin_reply_text(r, 200, HEALTHZ_TYPE, "ok\n");
  else if (strcmp(path, "/metrics") == 0 && get)
    np__admin_reply_text(r, 200, "text/plain; version=0.0.4; charset=utf-8", "np_up 1\n");
  else if (strcmp(path, "/api/v1/server") == 0 && get)
    np__admin_reply_text(r, 200, "application/json", "{\"version\":\"fuzz\",\"port\":7000}");
  else if (strcmp(path, "/api/v1/clients") == 0 && get)
    np__admin_reply_text(r, 200, "application/json", "{\"clients\":[]}");
  else if (strncmp(path, "/api/v1/clients/", 16) == 0 && post && ends_with(path, "/disconnect"))
    np__admin_reply_error(r, 404, "no client of that name is logged in");
  else if (strcmp(path, "/api/v1/reload") == 0 && post)
    np__admin_reply_text(r, 200, "application/json", "{\"reloaded\":true}");
  else if (strncmp(path, "/api/", 5) == 0 || strcmp(path, "/metrics") == 0 ||
           strcmp(path, "/healthz") == 0)
    np__admin_reply_error(r, get || post ? 404 : 405,
                          get || post ? "no such endpoint" : "method not allowed");
  else
    np__admin_reply_error(r, 404, "no such page");
}

static void quiet(np_log_level level, const char *msg, void *arg) {
  (void)level, (void)msg, (void)arg;
}

static void on_closed(void *arg) {
  *(int *)arg = 1;
}

static void stop_server(void) {
  int done = 0;
  np__admin_http_close(admin, on_closed, &done);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (!done || uv_loop_close(&loop) != 0) {
    fprintf(stderr, "fuzz_admin: the server left handles open at exit\n");
    abort();
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  np__admin_auth auth = {TOKEN, USER, PASSWORD};
  int r;

  (void)argc, (void)argv;
  np__logger_init(&logger);
  logger.level = NP_LOG_ERROR;
  logger.cb = quiet;
  if (uv_loop_init(&loop) != 0)
    abort();
  r = np__admin_http_start(&loop, "127.0.0.1:0", &auth, open_paths, &logger, route, NULL, &admin);
  if (r != 0)
    abort();
  port = np__admin_http_port(admin);
  atexit(stop_server);
  return 0;
}

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000;
}

static size_t count(const uint8_t *p, size_t n, const char *s) {
  size_t m = strlen(s), c = 0;
  for (size_t i = 0; i + m <= n; i++)
    c += memcmp(p + i, s, m) == 0;
  return c;
}

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  if (d == NULL)
    abort();
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n;
}

/* Wait up to ms for the client socket (events) or the loop, then run the loop once. */
static void turn(int fd, short events, int ms) {
  struct pollfd p[2] = {{fd, events, 0}, {uv_backend_fd(&loop), POLLIN, 0}};
  int t = uv_backend_timeout(&loop);
  poll(p, 2, t >= 0 && t < ms ? t : ms); /* a negative fd is skipped */
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* Linux's struct tcp_info as far as tcpi_bytes_received (Linux 4.1): glibc's copy stops at
 * tcpi_total_retrans, and linux/tcp.h cannot be included beside netinet/tcp.h (uv.h has it). */
struct tcp_info_received {
  struct tcp_info glibc;
  uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
};

/* Whether the server has read all sent bytes of fd: its socket (MHD's descriptor, found by its
 * peer address, which is fd's own) has received them all and holds none unread. Not yet accepted:
 * no. */
static int all_read(int fd, size_t sent) {
  struct sockaddr_in me, peer;
  socklen_t n = sizeof(me);
  int found = 0, unread = -1;
  struct tcp_info_received ti;
  struct dirent *e;
  DIR *d;

  if (getsockname(fd, (struct sockaddr *)&me, &n) != 0 || (d = opendir("/proc/self/fd")) == NULL)
    return 0;
  while (!found && (e = readdir(d)) != NULL) {
    int s = atoi(e->d_name);
    n = sizeof(peer);
    found = s != fd && s != dirfd(d) && getpeername(s, (struct sockaddr *)&peer, &n) == 0 &&
            n == sizeof(peer) && peer.sin_family == AF_INET && peer.sin_port == me.sin_port &&
            peer.sin_addr.s_addr == me.sin_addr.s_addr;
    n = sizeof(ti);
    if (found && (getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &n) != 0 || n < sizeof(ti) ||
                  ti.bytes_received != sent || ioctl(s, FIONREAD, &unread) != 0))
      unread = -1;
  }
  closedir(d);
  return unread == 0;
}

/* A non-blocking connection to the server from 127.x.y.z, a new address for each input. */
static int dial(void) {
  uint32_t n = inputs++ % (254u * 256 * 254);
  struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET};
  struct linger no_time_wait = {1, 0};
  int one = 1; /* no Nagle: each piece goes out as it is written */
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  from.sin_addr.s_addr =
      htonl(127u << 24 | (1 + n / (254 * 256)) << 16 | (n / 254 % 256) << 8 | (1 + n % 254));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons((uint16_t)port);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_time_wait, sizeof(no_time_wait)) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
      bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0 ||
      (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0 && errno != EINPROGRESS)) {
    perror("fuzz_admin: connect");
    abort();
  }
  return fd;
}

/* Read what is there. Returns 0 while the connection is open, 1 at its end (EOF), 2 at a reset. */
static int drain(int fd, size_t *got) {
  char buf[16384];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0)
      return 1;
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : 2;
    if (*got < OUT_CAP)
      memcpy(out + *got, buf, (size_t)n < OUT_CAP - *got ? (size_t)n : OUT_CAP - *got);
    *got += (size_t)n;
  }
}

static size_t content_length(const char *head, size_t len, int *has) {
  size_t v = 0;
  *has = 0;
  for (const char *p = head; p + 16 < head + len; p++) {
    if (p[0] != '\n' || strncasecmp(p + 1, "Content-Length:", 15) != 0)
      continue;
    *has = 1;
    for (p += 16; *p == ' '; p++)
      ;
    for (; *p >= '0' && *p <= '9'; p++)
      v = v * 10 + (size_t)(*p - '0');
    break;
  }
  return v;
}

static void fail(const char *what, size_t at, size_t got) {
  fprintf(stderr, "fuzz_admin: %s at byte %zu of %zu the server sent:\n%.*s\n", what, at, got,
          (int)(got < 4096 ? got : 4096), (const char *)out);
  abort();
}

/* The responses in out, one after another; returns how many are 200 for a path with credentials.
 * cut: the bytes may stop short (a reset, or more than OUT_CAP). */
static size_t check_responses(size_t got, int cut) {
  size_t n = got < OUT_CAP ? got : OUT_CAP, off = 0, ok_closed = 0;

  while (off < n) {
    const char *r = (const char *)out + off, *end;
    int status, has_len;
    size_t head, len;

    if (n - off < 13) {
      if (!cut)
        fail("a short response", off, got);
      break;
    }
    if ((memcmp(r, "HTTP/1.1 ", 9) != 0 && memcmp(r, "HTTP/1.0 ", 9) != 0) || r[9] < '1' ||
        r[9] > '5' || r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9' ||
        (r[12] != ' ' && r[12] != '\r'))
      fail("no status line", off, got);
    status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
    if ((end = memmem(r, n - off, "\r\n\r\n", 4)) == NULL) {
      if (!cut)
        fail("a head without its end", off, got);
      break;
    }
    head = (size_t)(end - r) + 4;
    len = content_length(r, head, &has_len);
    if (status == 200) {
      const char *type = memmem(r, head, "\r\nContent-Type: ", 16);
      if (type == NULL || strncmp(type + 16, HEALTHZ_TYPE "\r\n", strlen(HEALTHZ_TYPE) + 2) != 0)
        ok_closed++;
    }
    off += head;
    if (status < 200 || status == 204 || status == 304)
      continue;
    if (!has_len)
      break; /* the body runs to the end */
    /* after a HEAD the next response, or the end, follows the head at once (no body here starts
     * with "HTTP/1.") */
    if (off == n || (n - off >= 7 && memcmp(out + off, "HTTP/1.", 7) == 0))
      continue;
    if (n - off < len && !cut)
      fail("a short body", off, got);
    off += len;
  }
  return ok_closed;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint32_t h = 2166136261u; /* FNV-1a: the pieces' size */
  size_t piece, sent = 0, got = 0, creds = count(data, size, TOKEN) + count(data, size, BASIC);
  int fds = open_fds(), fd, writing = 1, full = 0, end = 0, turns;
  uint64_t start = now_ms();

  for (size_t i = 0; i < size; i++)
    h = (h ^ data[i]) * 16777619u;
  piece = h & 1 ? size : 1 + (h >> 1) % 64;
  if (piece < size / 1024 + 1)
    piece = size / 1024 + 1;
  closed_calls = 0;
  fd = dial();
  for (turns = 0; !end && turns < MAX_TURNS && now_ms() - start < MAX_MS; turns++) {
    if (writing && sent < size) {
      size_t n = size - sent < piece ? size - sent : piece;
      ssize_t w = send(fd, data + sent, n, MSG_NOSIGNAL);
      full = w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
      if (w > 0)
        sent += (size_t)w;
      else if (w < 0 && !full && errno != EINTR)
        writing = 0; /* the server is gone already */
    }
    if (writing && sent == size && all_read(fd, sent)) {
      shutdown(fd, SHUT_WR);
      writing = 0;
    }
    if (writing && sent < size)
      turn(fd, POLLIN | POLLOUT, full ? 10 : 0);
    else
      turn(fd, POLLIN, writing ? 1 : 10);
    end = drain(fd, &got);
  }
  if (!end) {
    fprintf(stderr,
            "fuzz_admin: %d ms and %d turns into the input, %zu of %zu bytes sent, the server %s\n",
            (int)(now_ms() - start), turns, sent, size,
            writing ? "has not read them all" : "has not closed after the client's end");
    fail("still open", got, got);
  }
  close(fd);
  /* the server's side is gone once its descriptor is: a few turns for the closes to complete */
  for (int i = 0; i < 100 && (i < 2 || open_fds() > fds); i++)
    turn(-1, 0, i < 2 ? 0 : 10);
  if (open_fds() > fds) {
    fprintf(stderr, "fuzz_admin: %d descriptors open after the input, %d before\n", open_fds(),
            fds);
    abort();
  }
  if (check_responses(got, end == 2 || got > OUT_CAP) > creds)
    fail("200 for a path that needs credentials, more often than the input holds them", 0, got);
  if (closed_calls > creds) {
    fprintf(stderr,
            "fuzz_admin: %zu requests reached the route for a closed path, the input holds "
            "the credentials %zu times\n",
            closed_calls, creds);
    abort();
  }
  return 0;
}
