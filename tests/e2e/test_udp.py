#!/usr/bin/env python3
"""UDP proxies (np-client -U): datagrams through the tunnel keep their boundaries and find their way
back to the visitor that sent them. The server's side alone is driven by a client written from
docs/protocol.md (npwire.py); the rest runs the real tools with real UDP services (dnsmasq + dig, an
echo service that says which of its sockets answered)."""

import ctypes
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from npwire import recv_exact  # noqa: E402
from nptest import LOOP, Fail, check, pattern, rss_kib, run, server_stats  # noqa: E402


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


def test_malformed_frames(env):
    """A client that frames a datagram longer than UDP allows (or cuts one and leaves) loses that
    flow only: its work connection is closed, the reason logged, nothing reaches the visitor, and
    the visitor's next datagram starts a new flow that works."""
    srv = env.server("--token", "s3cret")
    raw = npwire.Client(srv, name="u")
    port = raw.proxy("dns", kind=1)["port"]
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.settimeout(1)
    a.sendto(b"q1", (LOOP, port))
    _, m = raw.expect(npwire.REQ_WORK)
    wa = raw.work(m["id"])
    check(recv_dgram(wa) == b"q1", "the first datagram")
    wa.sendall(struct.pack(">H", 65508) + b"x" * 100)  # one byte over the largest UDP payload
    srv.wait_line(r"UDP flow 127\.0\.0\.1:\d+ closed: malformed datagram frame from the client")
    wa.settimeout(5)
    check(wa.recv(100) == b"", "the flow's work connection is closed")
    try:
        a.recvfrom(65536)
        raise Fail("the visitor got something from a malformed frame")
    except socket.timeout:
        pass
    # Cut mid-datagram, then gone: nothing half-sent reaches the visitor either.
    a.sendto(b"q2", (LOOP, port))
    _, m = raw.expect(npwire.REQ_WORK)
    wb = raw.work(m["id"])
    check(recv_dgram(wb) == b"q2", "a new flow for the same visitor")
    wb.sendall(struct.pack(">H", 50) + b"half")
    wb.close()
    srv.wait_line(r"UDP flow 127\.0\.0\.1:\d+ closed: (the client ended it|connection reset)")
    a.sendto(b"q3", (LOOP, port))
    _, m = raw.expect(npwire.REQ_WORK)
    wc = raw.work(m["id"])
    check(recv_dgram(wc) == b"q3", "and another")
    send_dgram(wc, b"answer")
    got, _ = a.recvfrom(65536)
    check(got == b"answer", f"the visitor got {got!r}, not the answer alone")


def test_client_vanishes(env):
    """np-client killed outright: the server closes the UDP proxy (its port is free at once, flows
    gone), and a new client takes the same port and serves."""
    srv = env.server("--token", "s3cret")
    echo = Echo()
    cl = udp_client(env, srv, "-U", f"0:{LOOP}:{echo.port}")
    port = next(iter(cl.ports.values()))
    s = udp_socket()
    check(ask(s, port, b"before")[1] == b"before", "served before")
    mark = srv.mark()
    cl.signal(signal.SIGKILL)
    srv.wait_line(r"client \S+ .*disconnected", after=mark)
    st = server_stats(srv)
    check(st["udp_flows"] == 0 and st["proxies"] == 0, f"left behind: {st}")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((LOOP, port))  # free: nothing of the old proxy holds it
    probe.close()
    cl2 = udp_client(env, srv, "-U", f"{port}:{LOOP}:{echo.port}", name="np-client 2")
    check(next(iter(cl2.ports.values())) == port, "the same port again")
    check(ask(s, port, b"after")[1] == b"after", "served by the new client")


class Echo:
    """A UDP service on 127.0.0.1: answers each datagram with b"PORT|" + the datagram, where PORT is
    the sender's source port, so a test sees which of np-client's sockets (flows) it came from."""

    def __init__(self, port=0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOP, port))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.port = self.sock.getsockname()[1]
        self.peers = set()
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return  # closed
            self.peers.add(peer)
            try:
                self.sock.sendto(b"%d|" % peer[1] + data, peer)
            except OSError:
                pass  # too long with the prefix: dropped, as UDP would

    def close(self):
        self.sock.close()


def udp_socket(source=LOOP, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(timeout)
    return s


def ask(s, port, data):
    """Send one datagram to the public port, return (client-side source port, payload) of the
    answer."""
    s.sendto(data, (LOOP, port))
    got, _ = s.recvfrom(65536)
    head, _, body = got.partition(b"|")
    return int(head), body


# NP_E2E_UDP_PATH=0 runs a case with the datagram path off (meson's stream-* cases): every flow
# travels inside the tunnel. Otherwise the case waits until the datagram path is up.
DATAGRAM_PATH = os.environ.get("NP_E2E_UDP_PATH") != "0"


def udp_client(env, srv, *args, name="np-client", wait=True):
    path = [] if DATAGRAM_PATH else ["--udp-datagram-path", "false"]
    cl = env.client(srv, *path, *args, name=name, wait=wait)
    if DATAGRAM_PATH:
        cl.wait_line(r"datagram path to .* up")
    return cl


def check_carrier(srv):
    """The datagrams took the carrier the case runs with."""
    st = server_stats(srv)
    if DATAGRAM_PATH:
        check(st["udp_path_in"] > 0 and st["udp_path_out"] > 0,
              f"the datagram path carried nothing: {st}")
    else:
        check(st["udp_path_in"] == 0 and st["udp_path_out"] == 0,
              f"the datagram path was used though off: {st}")
    return st


def udp_proxy(env, srv_args=(), cli_args=(), service_port=None):
    srv = env.server("--token", "s3cret", *srv_args)
    echo = Echo(service_port or 0)
    cl = udp_client(env, srv, "-U", f"0:{LOOP}:{echo.port}", *cli_args)
    return srv, cl, echo, next(iter(cl.ports.values()))


def test_boundaries(env):
    """Datagrams of 0 to 65,507 bytes arrive whole, one by one, with the bytes they left with; a
    visitor keeps one flow (one socket at the service) for all of them. (The largest do not fit one
    sealed packet of the datagram path and take the tunnel.)"""
    srv, _, echo, port = udp_proxy(env)
    s = udp_socket()
    flows = set()
    for n in (1, 0, 2, 100, 1472, 1473, 9000, 32768, 65507 - 6):
        data = pattern(n, seed=n)
        src, got = ask(s, port, data)
        check(got == data, f"{n}-byte datagram: {len(got)} bytes came back, or other bytes")
        flows.add(src)
    check(len(flows) == 1, f"one visitor used {len(flows)} flows")
    # The largest UDP payload there is, both ways: the echo's prefix makes the answer too long for
    # UDP, so the service's own send fails there; send it one way and check the service got it.
    s.sendto(pattern(65507, seed=9), (LOOP, port))
    got = ask(s, port, b"after")[1]
    check(got == b"after", "the flow carries on after a 65,507-byte datagram")
    check_carrier(srv)


def test_hundred_visitors(env):
    """100 visitor addresses at once (50 source IPs, two ports each), 20 datagrams each, all in
    flight together: every visitor gets exactly its own answers, each from a flow of its own."""
    srv, _, echo, port = udp_proxy(env)
    socks = [udp_socket(f"127.0.0.{10 + i % 50}") for i in range(100)]
    for round_ in range(20):
        for i, s in enumerate(socks):
            s.sendto(b"visitor %d datagram %d" % (i, round_), (LOOP, port))
    seen = {i: set() for i in range(100)}
    srcs = {i: set() for i in range(100)}
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    # Until every answer came, or nothing came for 2 s (UDP may drop under a burst of 2,000
    # datagrams when a kernel buffer overflows); bounded at 30 s in all.
    deadline = time.monotonic() + 30
    while sum(map(len, seen.values())) < 2000 and time.monotonic() < deadline:
        events = sel.select(2)
        if not events:
            break
        for key, _ in events:
            i = key.data
            got, _ = key.fileobj.recvfrom(65536)
            head, _, body = got.partition(b"|")
            check(body.startswith(b"visitor %d datagram " % i), f"visitor {i} got {body!r}")
            seen[i].add(int(body.rsplit(b" ", 1)[1]))
            srcs[i].add(int(head))
    total = sum(map(len, seen.values()))
    print(f"figure: answers to 2000 datagrams in one burst = {total}", flush=True)
    for i in range(100):
        # A datagram at the wrong visitor is a failure, and so is a visitor left with none.
        check(len(seen[i]) >= 1, f"visitor {i}: no answers")
        check(len(srcs[i]) == 1, f"visitor {i} was served by {len(srcs[i])} flows")
    all_srcs = [next(iter(v)) for v in srcs.values()]
    check(len(set(all_srcs)) == 100, f"100 visitors shared {len(set(all_srcs))} flows")
    # Ask again, one at a time: now nothing is lost.
    for i, s in enumerate(socks):
        src, got = ask(s, port, b"again %d" % i)
        check(got == b"again %d" % i and src == all_srcs[i], f"visitor {i}: {got!r} from {src}")
    check_carrier(srv)


def test_many_flows_in_order(env):
    """300 visitor addresses (100 source IPs, three ports each) each get their own answers byte for
    byte, from a flow of their own, however the flow tables hash them; then the same 300 at once;
    then bursts of 150 datagrams, several receive and send batches long, arrive whole and in order
    at the visitor that sent them."""
    srv, _, echo, port = udp_proxy(env, ["--udp-max-flows", "400"])
    socks = [udp_socket(f"127.0.0.{20 + i % 100}") for i in range(300)]
    src = []
    for i, s in enumerate(socks):
        data = pattern(1 + i * 7 % 1400, seed=i)
        flow, got = ask(s, port, data)
        check(got == data, f"visitor {i}: {len(got)} bytes, or other bytes")
        src.append(flow)
    check(len(set(src)) == 300, f"300 visitors shared {len(set(src))} flows")
    for i, s in enumerate(socks):
        s.sendto(b"all %d" % i, (LOOP, port))
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    answered = set()
    deadline = time.monotonic() + 30
    while len(answered) < 300 and time.monotonic() < deadline and (events := sel.select(5)):
        for key, _ in events:
            i = key.data
            got, _ = key.fileobj.recvfrom(65536)
            check(got == b"%d|all %d" % (src[i], i), f"visitor {i} got {got!r}")
            answered.add(i)
    check(len(answered) == 300, f"{300 - len(answered)} visitors got no answer")
    for v in (0, 150, 299):  # one at a time: the echo and the sockets have room for a whole burst
        s = socks[v]
        for n in range(150):
            s.sendto(b"%d burst %d " % (v, n) + pattern(n * 5, seed=n), (LOOP, port))
        for n in range(150):
            got, _ = s.recvfrom(65536)
            check(got == b"%d|%d burst %d " % (src[v], v, n) + pattern(n * 5, seed=n),
                  f"visitor {v}: answer {n} was {got[:40]!r}...")
    check_carrier(srv)


def test_idle_flows_end(env):
    """A flow silent for udp_idle_timeout ends on both sides; the same visitor then starts a new
    one (a new socket at the service)."""
    srv, cl, echo, port = udp_proxy(env, ["--udp-idle-timeout", "1s"], ["--udp-idle-timeout", "1s"])
    s = udp_socket()
    first, got = ask(s, port, b"one")
    check(got == b"one", "first answer")
    # Either side may notice the silence first; the other follows.
    srv.wait_line(r"UDP flow 127\.0\.0\.1:\d+ closed: (idle|the client ended it)", timeout=10)
    cl.wait_line(r"work connection done", timeout=10)
    second, got = ask(s, port, b"two")
    check(got == b"two", "answer after the flow ended")
    check(second != first, "the new flow has a socket of its own")


def test_max_flows(env):
    """udp_max_flows bounds the flows of a proxy: a third address gets nothing and is counted as
    refused, and is served once a flow has ended."""
    srv, cl, echo, port = udp_proxy(env, ["--udp-max-flows", "2", "--udp-idle-timeout", "1s"])
    a, b, c = udp_socket(), udp_socket(), udp_socket(timeout=1)
    answers = [ask(a, port, b"a"), ask(b, port, b"b")]
    check([body for _, body in answers] == [b"a", b"b"], "two flows served")
    out = sum(len(f"{head}|x") for head, _ in answers)  # what the echo sent back: "PORT|" + body
    mark = srv.mark()
    c.sendto(b"c", (LOOP, port))
    srv.wait_line(r"2 UDP flows \(udp_max_flows\), dropped", after=mark)
    try:
        c.recvfrom(100)
        raise Fail("a third flow was served")
    except socket.timeout:
        pass
    srv.signal(signal.SIGUSR1)
    srv.wait_line(r"stats: .* refused=1 ")
    # the proxy's own counters: two flows joined, one dropped; their bytes each way (how many are
    # still active depends on the machine's speed: the flows idle out after 1 s)
    srv.wait_line(rf"stats proxy=\S+ client=\S+ type=udp port={port} visitors=3 denied=0 "
                  rf"joined=2 dropped=1 active=[0-2] bytes_in=2 bytes_out={out}$")
    srv.wait_line(r"UDP flow .* closed: (idle|the client ended it)", timeout=10)
    c.settimeout(5)
    check(ask(c, port, b"c")[1] == b"c", "served once a flow ended")


def test_service_not_yet_up(env):
    """Datagrams to a local port nobody listens on vanish (the ICMP refusal does not end the flow);
    once the service starts, the same visitor's flow reaches it."""
    srv = env.server("--token", "s3cret")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((LOOP, 0))
    svc_port = probe.getsockname()[1]
    probe.close()
    cl = udp_client(env, srv, "-U", f"0:{LOOP}:{svc_port}")
    port = next(iter(cl.ports.values()))
    s = udp_socket(timeout=0.5)
    s.sendto(b"nobody", (LOOP, port))
    s.sendto(b"nobody", (LOOP, port))
    srv.wait_line(r"UDP flow 127\.0\.0\.1:\d+ has its work connection", timeout=5)
    echo = Echo(svc_port)
    s.settimeout(0.5)
    # The service is up; the first datagrams may still be on their way to nowhere, so ask until an
    # answer comes (bounded).
    # The first datagrams may still be on their way (to nowhere, or to the service if the client's
    # socket came after it): ask until the answer comes, bounded.
    deadline = time.monotonic() + 10
    s.sendto(b"now", (LOOP, port))
    while True:
        try:
            got = s.recvfrom(65536)[0].partition(b"|")[2]
            if got == b"now":
                break
            check(got == b"nobody", f"got {got!r}")
        except socket.timeout:
            check(time.monotonic() < deadline, "no answer after the service started")
            s.sendto(b"now", (LOOP, port))
    check(len(echo.peers) == 1, f"{len(echo.peers)} flows reached the service")


class Capture:
    """Packets to a UDP port on lo, as root can see them (AF_PACKET): the genuine article for a
    replay. Without CAP_NET_RAW, nothing is captured."""

    def __init__(self, port):
        self.port = port
        self.packets = []
        self.sock = None
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
        except OSError as e:  # not root, or no CAP_NET_RAW: the replay part is left out
            print(f"no capture ({e}): replays are not tried", flush=True)
            return
        self.sock.bind(("lo", 0))
        self._filter(port)
        self.sock.settimeout(0.2)
        self.stop = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _filter(self, port):
        """Let the kernel keep only UDP to port (classic BPF, as tcpdump's "udp dst port P"
        compiles): with every parallel test's traffic on lo, the socket's buffer would otherwise
        overflow before the few packets wanted here are read."""
        prog = [(0x28, 0, 0, 12), (0x15, 0, 8, 0x0800),  # IPv4
                (0x30, 0, 0, 23), (0x15, 0, 6, 17),      # UDP
                (0x28, 0, 0, 20), (0x45, 4, 0, 0x1FFF),  # not a fragment
                (0xB1, 0, 0, 14), (0x48, 0, 0, 16),      # destination port
                (0x15, 0, 1, port), (0x06, 0, 0, 262144), (0x06, 0, 0, 0)]
        code = b"".join(struct.pack("HBBI", *ins) for ins in prog)
        self._code = ctypes.create_string_buffer(code, len(code))
        fprog = struct.pack("HL", len(prog), ctypes.addressof(self._code))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER

    def _run(self):
        while not self.stop:
            try:
                frame = self.sock.recv(70000)
            except socket.timeout:
                continue
            ip = frame[14:]
            if len(ip) < 28 or ip[9] != 17:
                continue
            ihl = (ip[0] & 15) * 4
            dport = struct.unpack(">H", ip[ihl + 2:ihl + 4])[0]
            if dport == self.port:
                self.packets.append(bytes(ip[ihl + 8:]))

    def data(self, want, timeout=5):
        """The DATA packets seen, once there are want of them (bounded in time)."""
        deadline = time.monotonic() + timeout
        while self.sock is not None and time.monotonic() < deadline:
            got = [p for p in self.packets if p[:1] == b"\x01"]
            if len(got) >= want:
                return got
            time.sleep(0.02)
        return [p for p in self.packets if p[:1] == b"\x01"]

    def close(self):
        if self.sock is not None:
            self.stop = True
            self.t.join(5)
            self.sock.close()


def test_hostile_packets(env):
    """At the server's datagram port (UDP, the control port's number): garbage, packets cut short,
    unknown types, forged ones (a live session's id, a wrong tag; the largest UDP payload), genuine
    ones cut by a byte, and (as root, captured off lo) genuine ones replayed are all dropped and
    counted one by one; a flood of forgeries costs no memory; the real flow carries on."""
    if not DATAGRAM_PATH:
        return
    srv = env.server("--token", "s3cret")
    cap = Capture(srv.port)
    echo = Echo()
    udp_client(env, srv, "-U", f"0:{LOOP}:{echo.port}")
    cl = env.procs[-1]
    port = next(iter(cl.ports.values()))
    s = udp_socket()
    for i in range(5):
        check(ask(s, port, b"real %d" % i)[1] == b"real %d" % i, "the real flow")
    data = cap.data(3)
    cap.close()
    check(cap.sock is None or data, f"nothing captured of {len(cap.packets)} packets")
    sid = data[0][1:9] if data else struct.pack(">Q", 1)
    h = udp_socket()
    dest = (LOOP, srv.port)
    bad = [b"\x01", b"\x01" + b"x" * 39, b"\x09" + sid + b"\0" * 40,
           b"\x01" + sid + b"\0" * 8 + os.urandom(100),
           b"\x01" + sid + b"\0" * 8 + os.urandom(65507 - 17),
           b"\x02" + struct.pack(">Q", 999) + b"\0" * 60]
    bad += [p[:-1] for p in data[:2]] + data[:3]  # cut by a byte; replayed as they were
    before = server_stats(srv)
    for b in bad:
        h.sendto(b, dest)
    # The counter moves as the server reads them: wait for it (bounded), then check it is exact.
    deadline = time.monotonic() + 10
    while True:
        st = server_stats(srv)
        got = st["udp_path_rejected"] - before["udp_path_rejected"]
        if got >= len(bad) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check(got == len(bad), f"{got} of {len(bad)} hostile packets counted")
    check(st["udp_path_in"] == before["udp_path_in"], "a hostile packet was delivered")
    rss0 = rss_kib(srv.p.pid)
    forged = b"\x01" + sid + b"\0" * 8 + b"f" * 1400
    for _ in range(20000):
        h.sendto(forged, dest)
    check(ask(s, port, b"after")[1] == b"after", "the real flow after the flood")
    rss1 = rss_kib(srv.p.pid)
    print(f"figure: server RSS around 20,000 forged packets = {rss0} -> {rss1} KiB", flush=True)
    check(rss1 - rss0 < 1024, f"RSS grew {rss1 - rss0} KiB")


DNSMASQ_RECORDS = [
    "--host-record=www.home.test,192.168.77.80",
    "--host-record=v6.home.test,2001:db8::80",
    "--txt-record=txt.home.test,hello through the tunnel",
    # An answer above 512 bytes: dig asks with EDNS (1232), so it comes in one large datagram.
    "--txt-record=big.home.test," + ",".join("x" * 200 + str(i) for i in range(4)),
    "--local=/home.test/",
]


def dnsmasq(env):
    """dnsmasq on a free 127.0.0.1 port, serving DNSMASQ_RECORDS only. It listens on TCP too, on the
    same number: a port free in UDP may be taken in TCP by a test running beside this one, so it
    is picked again (at most 5 times) when dnsmasq says the address is in use."""
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    from nptest import Proc
    for attempt in range(5):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((LOOP, 0))
        port = probe.getsockname()[1]
        probe.close()
        p = Proc(env, "dnsmasq", [exe, "--keep-in-foreground", "--conf-file=/dev/null",
                                  "--no-resolv", "--no-hosts", "--bind-interfaces",
                                  f"--listen-address={LOOP}", f"--port={port}", "--pid-file=",
                                  "--user=root", "--group=root", "--log-facility=-",
                                  *DNSMASQ_RECORDS])
        m = p.wait_line(r"started, version|Address already in use")
        if "started" in m.group(0):
            return port
        p.wait_exit()
        env.procs.remove(p)
    raise Fail("dnsmasq: no free port in 5 tries")


def dig(port, *query):
    r = subprocess.run(["dig", f"@{LOOP}", "-p", str(port), "+tries=1", "+time=5", *query],
                       capture_output=True, text=True, timeout=20)
    check(r.returncode == 0, f"dig {' '.join(query)}: exit {r.returncode}: {r.stdout}{r.stderr}")
    return r.stdout


def test_dns(env):
    """dig through the tunnel to dnsmasq: A, AAAA, TXT (one above 512 bytes), NXDOMAIN and TCP-less
    retries all answered exactly as dnsmasq answers them directly."""
    dns = dnsmasq(env)
    srv = env.server("--token", "s3cret")
    cl = udp_client(env, srv, "-U", f"0:{LOOP}:{dns}")
    port = next(iter(cl.ports.values()))
    check(dig(port, "+short", "www.home.test").strip() == "192.168.77.80", "A record")
    check(dig(port, "+short", "AAAA", "v6.home.test").strip() == "2001:db8::80", "AAAA record")
    check(dig(port, "+short", "TXT", "txt.home.test").strip() == '"hello through the tunnel"',
          "TXT record")
    big = dig(port, "+short", "+ignore", "TXT", "big.home.test").strip()
    check(big == dig(dns, "+short", "+ignore", "TXT", "big.home.test").strip() and len(big) > 800,
          f"large TXT answer differs from the direct one: {big[:80]}...")
    check("status: NXDOMAIN" in dig(port, "nothere.home.test"), "NXDOMAIN")
    # Many queries from one socket (dig's +qr... keeps one per query): 50 names in one dig run.
    names = ["www.home.test"] * 50
    out = dig(port, "+short", *names)
    check(out.split() == ["192.168.77.80"] * 50, f"50 queries in one run: {out.split()[:5]}...")


TESTS = {"server_stream_carrier": test_server_stream_carrier,
         "udp_boundaries": test_boundaries,
         "udp_hundred_visitors": test_hundred_visitors,
         "udp_many_flows_in_order": test_many_flows_in_order,
         "udp_idle_flows_end": test_idle_flows_end,
         "udp_max_flows": test_max_flows,
         "udp_service_not_yet_up": test_service_not_yet_up,
         "udp_dns": test_dns,
         "udp_hostile_packets": test_hostile_packets,
         "udp_malformed_frames": test_malformed_frames,
         "udp_client_vanishes": test_client_vanishes}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
