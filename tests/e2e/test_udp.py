#!/usr/bin/env python3
"""UDP proxies (issue 6, work in progress): the server's side of the stream carrier, driven by a
client written from docs/protocol.md (npwire.py)."""

import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import LOOP, check, run  # noqa: E402


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        b = s.recv(n - len(buf))
        if not b:
            raise EOFError("connection closed")
        buf += b
    return buf


def recv_dgram(w):
    (n,) = struct.unpack(">H", recv_exact(w, 2))
    return recv_exact(w, n)


def send_dgram(w, data):
    w.sendall(struct.pack(">H", len(data)) + data)


def test_server_stream_carrier(env):
    """Each visitor address is a flow with a work connection of its own; datagrams keep their
    boundaries both ways, replies reach the right visitor, datagrams sent before the work connection
    came are delivered."""
    srv = env.server("--token", "s3cret")
    raw = npwire.Client(srv, name="u")
    resp = raw.proxy("dns", kind=1)
    check(resp["status"] == 0, f"UDP proxy refused: {resp}")
    port = resp["port"]
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.settimeout(5)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.settimeout(5)
    a.sendto(b"a1", (LOOP, port))
    a.sendto(b"", (LOOP, port))  # empty datagrams are datagrams too
    _, m = raw.expect(npwire.REQ_WORK)
    wa = raw.work(m["id"])
    check(recv_dgram(wa) == b"a1" and recv_dgram(wa) == b"", "a's early datagrams, in order")
    b.sendto(b"b1" * 700, (LOOP, port))
    _, m = raw.expect(npwire.REQ_WORK)
    wb = raw.work(m["id"])
    check(recv_dgram(wb) == b"b1" * 700, "b's datagram on b's work connection")
    send_dgram(wa, b"to a")
    send_dgram(wb, b"to b" * 1000)
    check(a.recvfrom(65536)[0] == b"to a", "a's reply")
    check(b.recvfrom(65536)[0] == b"to b" * 1000, "b's reply, one datagram")
    a.sendto(b"a2", (LOOP, port))
    check(recv_dgram(wa) == b"a2", "a's later datagram on the same work connection")
    srv.wait_line(r"client u: proxy dns listening")


TESTS = {"server_stream_carrier": test_server_stream_carrier}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
