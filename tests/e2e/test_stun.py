#!/usr/bin/env python3
"""STUN (RFC 8489) on np-server's datagram-path port: the first piece of the direct path between
two clients (issue 20), where each learns the address and port its NAT maps it to. Checked against
coturn's turnutils_stunclient (another implementation) and a client written here from the RFC, over
IPv4 and IPv6; malformed messages get no answer, answers are bounded per second, and the datagram
path's own packets still work beside it."""
import math
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, check, run, server_stats  # noqa: E402

COOKIE = 0x2112A442


def request(tid, fingerprint=True):
    hdr = struct.pack(">HHI", 0x0001, 8 if fingerprint else 0, COOKIE) + tid
    if not fingerprint:
        return hdr
    crc = (zlib.crc32(hdr) ^ 0x5354554E) & 0xFFFFFFFF
    return hdr + struct.pack(">HHI", 0x8028, 4, crc)


def parse_response(data, tid):
    """(ip, port) of the XOR-MAPPED-ADDRESS of a Binding success response to tid, its FINGERPRINT
    checked; written from RFC 8489 sections 5, 14.2 and 14.7."""
    mtype, length, cookie = struct.unpack(">HHI", data[:8])
    check(mtype == 0x0101 and cookie == COOKIE and data[8:20] == tid and length == len(data) - 20,
          f"a success response to our transaction: {data[:20].hex()}")
    off, mapped, fp = 20, None, False
    while off < len(data):
        atype, alen = struct.unpack(">HH", data[off:off + 4])
        value = data[off + 4:off + 4 + alen]
        if atype == 0x0020:
            family, xport = value[1], struct.unpack(">H", value[2:4])[0]
            mask = struct.pack(">I", COOKIE) + tid
            raw = bytes(a ^ b for a, b in zip(value[4:], mask))
            ip = socket.inet_ntop(socket.AF_INET if family == 1 else socket.AF_INET6, raw)
            mapped = (ip, xport ^ (COOKIE >> 16))
        elif atype == 0x8028:
            want = (zlib.crc32(data[:off]) ^ 0x5354554E) & 0xFFFFFFFF
            check(struct.unpack(">I", value)[0] == want, "FINGERPRINT matches")
            fp = True
        off += 4 + ((alen + 3) & ~3)
    check(fp and mapped is not None, "XOR-MAPPED-ADDRESS and FINGERPRINT present")
    return mapped


def ask(port, host=LOOP, family=socket.AF_INET, msg=None, timeout=5):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(timeout)
    tid = os.urandom(12)
    s.sendto(msg(tid) if msg else request(tid), (host, port))
    try:
        data, _ = s.recvfrom(2048)
    except socket.timeout:
        data = None
    me = s.getsockname()
    s.close()
    return tid, data, me


def test_stun_coturn_client(env):
    """coturn's turnutils_stunclient asks np-server for its reflexive address and gets it."""
    srv = env.server("--token", "s3cret")
    out = subprocess.run(["turnutils_stunclient", "-p", str(srv.port), LOOP], capture_output=True,
                         text=True, timeout=30)
    check(out.returncode == 0 and f"UDP reflexive addr: {LOOP}:" in out.stdout + out.stderr,
          f"coturn's client: {out.returncode} {out.stdout!r} {out.stderr!r}")
    check(server_stats(srv)["stun_answered"] >= 1, "counted")


def test_stun_from_the_rfc(env):
    """A Binding request from a client written from the RFC, over IPv4 and IPv6: the answer names
    the very address and port the request came from, with a FINGERPRINT that matches; a request
    without FINGERPRINT is answered too."""
    srv = env.server("--token", "s3cret")
    tid, data, me = ask(srv.port)
    check(data is not None and parse_response(data, tid) == me, f"IPv4: {me}")
    tid, data, me = ask(srv.port, msg=lambda t: request(t, fingerprint=False))
    check(data is not None and parse_response(data, tid) == me, "without FINGERPRINT")
    six = env.server("--token", "s3cret", name="np-server-v6", bind="[::1]:0")
    tid, data, me = ask(six.port, host="::1", family=socket.AF_INET6)
    check(data is not None and parse_response(data, tid) == me[:2], f"IPv6: {me}")


def test_stun_malformed_and_bounded(env):
    """Malformed STUN gets no answer (counted in stun_dropped): a FINGERPRINT that does not match,
    a response instead of a request, an attribute that runs past the end. A burst of 2,000 requests
    to one worker is answered at most 500 times a second. The datagram path's sealed packets work
    after it all: a UDP client's path comes up."""
    srv = env.server("--token", "s3cret", "--workers", "1")
    bad = [
        lambda t: request(t)[:-1] + bytes([request(t)[-1] ^ 1]),
        lambda t: struct.pack(">HHI", 0x0101, 0, COOKIE) + t,
        lambda t: struct.pack(">HHI", 0x0001, 4, COOKIE) + t + struct.pack(">HH", 0x0020, 8),
    ]
    for make in bad:
        tid, data, _ = ask(srv.port, msg=make, timeout=1)
        check(data is None, f"no answer to {make(tid).hex()}")
    st = server_stats(srv)
    check(st["stun_dropped"] == 3 and st["stun_answered"] == 0, f"dropped: {st}")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOP, 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    for _ in range(2000):
        s.sendto(request(os.urandom(12)), (LOOP, srv.port))
    s.settimeout(1)
    got, first, last = 0, None, None
    try:
        while True:
            s.recv(2048)
            last = time.monotonic()
            first = first or last
            got += 1
    except socket.timeout:
        pass
    s.close()
    st = server_stats(srv)
    # The answers came over as many one-second windows of the server's as they spanned, plus one
    # (a window may start just before the first): 500 each at most.
    allowed = 500 * (math.ceil(last - first) + 2) if got else 0
    arrived = st["stun_answered"] + st["stun_dropped"] - 3  # the kernel may drop some first
    check(0 < got <= allowed and st["stun_answered"] == got and arrived <= 2000 and
          (arrived <= allowed or st["stun_dropped"] > 3),
          f"a burst of 2000: {got} answered over {last - first:.2f}s, "
          f"{st['stun_dropped'] - 3} dropped, {arrived} arrived")
    print(f"STUN burst: {got} answered over {last - first:.3f}s, {st['stun_dropped'] - 3} "
          f"dropped", file=sys.stderr)
    cl = env.client(srv, "--name", "udp", "-U", "0:127.0.0.1:9", wait=False)
    cl.wait_line(r"datagram path to .* up")


TESTS = {
    "stun_coturn_client": test_stun_coturn_client,
    "stun_from_the_rfc": test_stun_from_the_rfc,
    "stun_malformed_and_bounded": test_stun_malformed_and_bounded,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
