#!/usr/bin/env python3
"""The HTTP vhost with services and visitors that lie, stall or vanish: a service that answers more
than it was asked (its surplus must never answer another client's request), 304s with a
Content-Length, an Upgrade the service declines, a service that is down, 40 pipelined requests, a
visitor that stops reading, and the server stopped under a connection that is still busy."""

import os
import re
import signal
import socket
import socketserver
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, check, run  # noqa: E402
from test_http_vhost import echo_service, start_client, vhost_server  # noqa: E402


def read_all(s, timeout=10):
    """Everything until the peer closes; a timeout or a reset is marked in what is returned."""
    s.settimeout(timeout)
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except socket.timeout:
        got += b"<TIMEOUT>"
    except ConnectionResetError:
        got += b"<RST>"
    return got


def read_response(s, timeout=10):
    """One response with a Content-Length, read whole."""
    s.settimeout(timeout)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, body = got.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
    while len(body) < n:
        body += s.recv(65536)
    return head, body


def two_clients(env, a_handler=None):
    srv, vport = vhost_server(env)
    a = env.service(a_handler) if a_handler else echo_service(env, "A")
    b = echo_service(env, "B")
    start_client(env, srv, "ca", {"pa": f"local = {LOOP}:{a}\ncustom_domains = a.example.com"})
    start_client(env, srv, "cb", {"pb": f"local = {LOOP}:{b}\ncustom_domains = b.example.com"})
    return srv, vport


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        b = sock.recv(4096)
        if not b:
            return None
        buf += b
    return buf


class Surplus(socketserver.BaseRequestHandler):
    """Answers the first request, and in the same write a second answer nobody asked for."""

    def handle(self):
        if read_head(self.request) is None:
            return
        self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nA-1"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nNOT FROM B, FROM A!!")
        self.request.recv(10)  # until the server closes the connection


def test_surplus_response(env):
    """A's service answers twice to one request, pipelined with a request for another client's
    host: the visitor gets A's one answer and B's own, never A's extra bytes; the server says so."""
    srv, vport = two_clients(env, Surplus)
    s = socket.create_connection((LOOP, vport))
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
              b"GET /2 HTTP/1.1\r\nHost: b.example.com\r\nConnection: close\r\n\r\n")
    got = read_all(s)
    check(b"FROM A" not in got and got.count(b"HTTP/1.1 200") == 2 and b'"service": "B"' in got,
          f"what the visitor got: {got!r}")
    srv.wait_line(r"proxy pa: its service sent a response nobody asked for")


class NotModified(socketserver.BaseRequestHandler):
    """304 with the Content-Length of the representation (RFC 9110 §8.6 allows it), keep-alive."""

    def handle(self):
        while read_head(self.request) is not None:
            self.request.sendall(b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n"
                                 b"Content-Length: 1234\r\n\r\n")


def test_304_with_length(env):
    """A 304 carrying Content-Length has no body: the next request, for another host, is answered."""
    srv, vport = two_clients(env, NotModified)
    s = socket.create_connection((LOOP, vport))
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: a.example.com\r\nIf-None-Match: \"x\"\r\n\r\n")
    s.settimeout(10)
    check(s.recv(4096).startswith(b"HTTP/1.1 304"), "the 304 came")
    s.sendall(b"GET /2 HTTP/1.1\r\nHost: b.example.com\r\nConnection: close\r\n\r\n")
    got = read_all(s)
    check(b'"service": "B"' in got, f"after a 304 with Content-Length: {got!r}")


def test_declined_upgrade(env):
    """An Upgrade the service answers with 200 leaves the connection HTTP: the next request is
    routed to its own host and gets its X-Forwarded-For rewritten, not passed raw."""
    srv, vport = two_clients(env)
    s = socket.create_connection((LOOP, vport))
    s.sendall(b"GET /1 HTTP/1.1\r\nHost: a.example.com\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
    head, body = read_response(s)
    check(b'"service": "A"' in body, f"the upgrade request's answer: {head + body!r}")
    s.sendall(b"GET /2 HTTP/1.1\r\nHost: b.example.com\r\nX-Forwarded-For: 6.6.6.6\r\n"
              b"Connection: close\r\n\r\n")
    got = read_all(s)
    check(b'"service": "B"' in got and b"6.6.6.6" not in got, f"after a declined upgrade: {got!r}")


def test_service_down(env):
    """A service that is not listening: 502 for the visitor, with either kind of work connection
    (pre-opened ones report it as a reset)."""
    srv, vport = vhost_server(env)
    dead = socket.socket()
    dead.bind((LOOP, 0))
    port = dead.getsockname()[1]
    dead.close()
    for pool in ("0", "4"):
        cl = start_client(env, srv, f"c{pool}", {"pa": f"local = {LOOP}:{port}\n"
                                                        "custom_domains = a.example.com"},
                          extra=f"work_pool = {pool}")
        s = socket.create_connection((LOOP, vport))
        s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
        got = read_all(s)
        check(got.startswith(b"HTTP/1.1 502") and (b"refused" in got or b"without an answer" in got),
              f"work_pool = {pool}: {got[:200]!r}")
        cl.signal(signal.SIGTERM)
        cl.wait_exit()


def test_deep_pipeline(env):
    """40 pipelined requests for A (the first a HEAD), then one for B, in one write: every one is
    answered, in order (at most 32 wait for their answers at once)."""
    srv, vport = two_clients(env)
    s = socket.create_connection((LOOP, vport))
    reqs = b"HEAD /0 HTTP/1.1\r\nHost: a.example.com\r\n\r\n"
    reqs += b"".join(b"GET /%d HTTP/1.1\r\nHost: a.example.com\r\n\r\n" % i for i in range(1, 40))
    reqs += b"GET /b HTTP/1.1\r\nHost: b.example.com\r\nConnection: close\r\n\r\n"
    s.sendall(reqs)
    got = read_all(s)
    paths = re.findall(rb'"path": "([^"]*)"', got)
    want = [b"/%d" % i for i in range(1, 40)] + [b"/b"]
    check(got.count(b"HTTP/1.1 200") == 41 and paths == want, f"{len(paths)} bodies, {paths[-3:]}")


class Big(socketserver.BaseRequestHandler):
    """3 MiB for every request, then close."""

    def handle(self):
        if read_head(self.request) is None:
            return
        n = 3 << 20
        try:
            self.request.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                                 % n + b"x" * n)
        except OSError:
            pass


def small_window(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((LOOP, port))
    return s


def test_stop_under_a_busy_connection(env):
    """SIGINT while a visitor does not read its 3 MiB answer: np-server stops at once and cleanly
    (ASan and valgrind runs check that nothing is touched after it is freed). SIGTERM would drain:
    test_drain.py."""
    srv, vport = vhost_server(env)
    big = env.service(Big)
    start_client(env, srv, "ca", {"pa": f"local = {LOOP}:{big}\ncustom_domains = a.example.com"})
    # The visitor is joined with a pre-opened work connection once one is there (with workers = 2
    # and mux = false they first go to the session's worker): else it waits for a new one, which
    # logs nothing to wait for.
    srv.wait_line(r"client ca: pre-opened work connection \d+ parked")
    s = small_window(vport)
    mark = srv.mark()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    srv.wait_line(r"proxy pa: visitor \d+ joined", after=mark)
    srv.signal(signal.SIGINT)
    check(srv.wait_exit(20) == 0, "np-server stopped with status 0")
    got = read_all(s, 10)
    check(len(got) < (3 << 20), f"the visitor got {len(got)} bytes, not the whole answer")


def test_visitor_stops_reading(env):
    """A visitor that asks for 3 MiB and reads none of it is closed once nothing has moved for
    vhost_http_timeout (3 s here). The service closed long before: its run is over, the answer
    waits in the server's queue for the visitor, and that must not hold memory for ever."""
    srv, vport = vhost_server(env, "--vhost-http-timeout", "3s")
    big = env.service(Big)
    start_client(env, srv, "ca", {"pa": f"local = {LOOP}:{big}\ncustom_domains = a.example.com"})
    s = small_window(vport)
    mark = srv.mark()
    s.sendall(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n")
    t0 = time.monotonic()
    srv.wait_line(r"http: visitor 127\.0\.0\.1:\d+: nothing moved for 3000ms, closed",
                  after=mark, timeout=30)
    waited = time.monotonic() - t0
    # The vhost looks once a second: 3 to 4 s after the last byte, and a little for a loaded box.
    check(2.9 <= waited <= 8, f"closed after {waited:.1f}s")


TESTS = {
    "http_surplus_response": test_surplus_response,
    "http_304_with_length": test_304_with_length,
    "http_declined_upgrade": test_declined_upgrade,
    "http_service_down": test_service_down,
    "http_deep_pipeline": test_deep_pipeline,
    "http_stop_under_a_busy_connection": test_stop_under_a_busy_connection,
    "http_visitor_stops_reading": test_visitor_stops_reading,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
