#!/usr/bin/env python3
"""The NAT bed's NAT behaviours (netbed.py's set_nat), its second NAT and its server delay, proven
with plain sockets: no np code. Reflectors (a UDP and a TCP socket on port 3478 that answer with the
address and port they saw, as STUN's Binding does) run on the public host and on a second public
host; a third party (the visitor) tries to get in. Per mode, from one socket in home:

    mode    mapping toward two destinations   reply from the contacted address:port
    eim     the same port (the inside's)      in; also from another port, and from a third party
    apdf    the same port (the inside's)      in; nothing else
    random  a new random port per destination in; nothing else

and a port home never sent from stays closed in every mode. Two NATs: a naive simultaneous UDP punch
between home and vhome works with both routers in apdf and fails with both in random (the mapping
toward the peer is not the one the reflector saw: punching there needs prediction); a router that
lets an early punch reach its own stack (wan_input "accept") moves its inside's mapping toward that
peer to another port, and the naive punch fails too. Every case is bounded in time. Needs root;
skipped (exit 77) otherwise. Prints "figure:" lines."""

import os
import re
import select
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import netbed  # noqa: E402
from netbed import (HOME_IP, PUBLIC_IP, ROUTER_WAN, VHOME_IP, VISITOR_IP, VROUTER_WAN,  # noqa: E402
                    NetBed, inside)
from nptest import check  # noqa: E402

PUBLIC2_IP = "10.77.0.11"
REFLECT = 3478
ANSWER_S = 2.0  # how long an answer that must come may take (the bed's round trips are microseconds)
QUIET_S = 0.3  # how long a datagram that must not come is waited for, after a round trip behind it
SERVER_DELAY_MS = 30


def figure(name, value, unit):
    print(f"figure: {name} = {value:.2f} {unit}", flush=True)


class Reflector:
    """On ip:REFLECT in namespace ns: a UDP socket that answers b"who N" with b"you N ip:port" (the
    address the datagram came from), and a TCP listener that sends b"ip:port" to every connection
    and closes it. Registered in env.servers, which stops it."""

    def __init__(self, env, bed, ns, ip):
        with inside(bed.ns[ns]):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind((ip, REFLECT))
            self.tcp = socket.socket()
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((ip, REFLECT))
            self.tcp.listen(16)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        env.servers.append(self)

    def _serve(self):
        while not self.stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.1)
            if self.udp in ready:
                data, (ip, port) = self.udp.recvfrom(2048)
                if data.startswith(b"who "):
                    self.udp.sendto(b"you %s %s:%d" % (data[4:], ip.encode(), port), (ip, port))
            if self.tcp in ready:
                c, (ip, port) = self.tcp.accept()
                with c:
                    c.sendall(b"%s:%d" % (ip.encode(), port))

    def shutdown(self):
        self.stop.set()
        self.thread.join(5)

    def server_close(self):
        self.udp.close()
        self.tcp.close()


def addr(text):
    ip, port = text.decode().rsplit(":", 1)
    return ip, int(port)


class Udp:
    """A UDP socket in namespace ns (on every address, port 0: a free one); keeps every datagram it
    has received in seen, (data, (ip, port)), whatever it was waiting for."""

    def __init__(self, bed, ns, port=0):
        with inside(bed.ns[ns]):
            self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.s.bind(("0.0.0.0", port))
        self.port = self.s.getsockname()[1]
        self.seen = []
        self.nonce = 0

    def wait(self, pred, timeout):
        """The first datagram (data, sender) from now on that pred accepts, or None after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                data, sender = self.s.recvfrom(2048)
            except socket.timeout:
                return None
            except ConnectionRefusedError:  # an ICMP error on a connected socket
                continue
            self.seen.append((data, sender))
            if pred(data, sender):
                return data, sender

    def mapping(self, host):
        """The address and port host's reflector saw this socket's datagram come from; the answer
        must come from host:REFLECT itself (the reply from the contacted address and port)."""
        self.nonce += 1
        tag = b"%d" % self.nonce
        self.s.sendto(b"who " + tag, (host, REFLECT))
        got = self.wait(lambda d, a: a == (host, REFLECT) and d.startswith(b"you %s " % tag), ANSWER_S)
        check(got is not None, f"no answer from the reflector on {host}: the reply did not get in")
        return addr(got[0].split()[2])

    def got(self, payload):
        return any(d == payload for d, _ in self.seen)

    def close(self):
        self.s.close()


def send_from(bed, ns, payload, to, port=0):
    """One datagram from a fresh socket in namespace ns (on port, or a free one)."""
    with inside(bed.ns[ns]):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.sendto(payload, to)
    s.close()


def gets_in(bed, sock, ns, payload, to, expect):
    """Whether a datagram sent from namespace ns to `to` (a mapped address) reaches sock. Where it
    is expected, its arrival is awaited (ANSWER_S at most); where not, a round trip to the
    reflector is sent behind it, then QUIET_S more is given."""
    send_from(bed, ns, payload, to)
    if expect:
        return sock.wait(lambda d, a: d == payload, ANSWER_S) is not None
    sock.mapping(PUBLIC_IP)
    return sock.got(payload) or sock.wait(lambda d, a: d == payload, QUIET_S) is not None


def tcp_mapping(bed, port, host):
    """From home port `port` (SO_REUSEPORT: a listener shares it), what host's reflector saw."""
    with inside(bed.ns["home"]):
        c = socket.socket()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    c.bind(("0.0.0.0", port))
    c.settimeout(ANSWER_S)
    c.connect((host, REFLECT))
    got = b""
    while True:
        b = c.recv(64)
        if not b:
            break
        got += b
    c.close()
    return addr(got)


def tcp_gets_in(bed, listener, to):
    """Whether a connection from the visitor to `to` reaches listener (in home)."""
    with inside(bed.ns["visitor"]):
        v = socket.socket()
    v.settimeout(1)
    listener.settimeout(ANSWER_S)  # once connected, the connection waits in its queue
    try:
        v.connect(to)
    except (ConnectionRefusedError, socket.timeout, OSError):
        v.close()
        return False
    try:
        c, peer = listener.accept()
    except socket.timeout:
        v.close()
        return False
    c.close()
    v.close()
    check(peer[0] == VISITOR_IP, f"home accepted {peer}, not the visitor")
    return True


def refused(sock, payload):
    """Send payload on a connected UDP socket: whether an ICMP port unreachable comes back (the
    datagram reached a stack with no socket for it), within ANSWER_S."""
    sock.send(payload)
    sock.settimeout(ANSWER_S)
    try:
        sock.recv(2048)
    except ConnectionRefusedError:
        return True
    except socket.timeout:
        pass
    return False


def moved_mapping_admits(bed):
    """eim: a mapping that had to take another port than the inside's still leads strangers to the
    inside's port. A stranger's datagram to router:P arrives first (the router answers with an ICMP
    error and keeps its conntrack entry); home then sends from port P to that stranger: its
    mapping would look like that entry's reply, so the router picks another port P2."""
    w = Udp(bed, "home")
    with inside(bed.ns["visitor"]):
        early = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    early.bind(("0.0.0.0", 0))
    vport = early.getsockname()[1]
    early.connect((ROUTER_WAN, w.port))
    check(refused(early, b"early"), "no ICMP port unreachable from the router for the early datagram")
    early.close()
    stranger = Udp(bed, "visitor", vport)
    w.s.sendto(b"to the early one", (VISITOR_IP, vport))
    got = stranger.wait(lambda d, a: d == b"to the early one", ANSWER_S)
    check(got is not None, "home's datagram to the visitor did not arrive")
    moved = got[1]
    print(f"eim: home port {w.port} toward the early sender maps to {moved}", flush=True)
    check(moved[0] == ROUTER_WAN and moved[1] != w.port, f"the mapping kept port {w.port}: {moved}")
    check(gets_in(bed, w, "public", b"to the moved mapping", moved, True),
          f"a stranger to the moved mapping {moved} did not reach home port {w.port}")
    stranger.close()
    w.close()


def mode_case(env, mode):
    bed = NetBed(hosts={"public2": PUBLIC2_IP})
    try:
        bed.set_nat("router", mode)
        Reflector(env, bed, "public", PUBLIC_IP)
        Reflector(env, bed, "public2", PUBLIC2_IP)
        open_ = mode == "eim"
        # UDP: one socket, two destinations.
        s = Udp(bed, "home")
        m1, m2 = s.mapping(PUBLIC_IP), s.mapping(PUBLIC2_IP)
        print(f"{mode}: UDP from home port {s.port} maps to {m1} toward public, {m2} toward public2",
              flush=True)
        check(m1[0] == ROUTER_WAN and m2[0] == ROUTER_WAN, f"mapped to the router's address: {m1} {m2}")
        if mode == "random":
            check(m1[1] != m2[1], f"random: one port toward both destinations: {m1[1]}")
        else:
            check(m1[1] == m2[1] == s.port, f"{mode}: mapping not endpoint-independent or not the "
                                            f"inside port {s.port}: {m1[1]} and {m2[1]}")
        check(s.mapping(PUBLIC_IP) == m1, "the mapping toward public holds")
        # Who else gets in through the mapping toward public.
        other_port = gets_in(bed, s, "public", b"from public, another port", m1, open_)
        third = gets_in(bed, s, "visitor", b"from the visitor", m1, open_)
        check(other_port == open_, f"{mode}: the contacted address from another port "
                                   f"{'did not get' if open_ else 'got'} in")
        check(third == open_, f"{mode}: a third party {'did not get' if open_ else 'got'} in")
        # A port home has bound but never sent from is no mapping, in any mode.
        q = Udp(bed, "home")
        check(not gets_in(bed, q, "visitor", b"to a port never mapped", (ROUTER_WAN, q.port), False),
              f"{mode}: a port never mapped let a stranger in")
        if mode == "eim":
            moved_mapping_admits(bed)
        # The same for TCP: one local port, two connections; then a stranger to the mapped port.
        with inside(bed.ns["home"]):
            listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("0.0.0.0", 0))
        listener.listen(4)
        lport = listener.getsockname()[1]
        t1, t2 = tcp_mapping(bed, lport, PUBLIC_IP), tcp_mapping(bed, lport, PUBLIC2_IP)
        print(f"{mode}: TCP from home port {lport} maps to {t1} toward public, {t2} toward public2",
              flush=True)
        if mode == "random":
            check(t1[1] != t2[1], f"random: one TCP port toward both destinations: {t1[1]}")
        else:
            check(t1[1] == t2[1] == lport, f"{mode}: TCP mapping {t1[1]}, {t2[1]}, not {lport}")
        check(tcp_gets_in(bed, listener, (ROUTER_WAN, t1[1])) == open_,
              f"{mode}: a third party's TCP connection {'did not get' if open_ else 'got'} in")
        listener.close()
        s.close()
        q.close()
    finally:
        bed.down()


def test_eim(env):
    """Full cone: the inside port toward every destination; anyone may send to a mapped port
    (UDP and TCP), a port never mapped stays closed."""
    mode_case(env, "eim")


def test_apdf(env):
    """The bed's default: the inside port toward every destination; only the contacted address
    and port get in (not the same address from another port, not a third party)."""
    mode_case(env, "apdf")


def test_random(env):
    """masquerade random,fully-random: a new port per destination; only replies get in."""
    mode_case(env, "random")


def test_second_nat_is_a_nat(env):
    """vhome reaches the internet as vrouter's address; nobody outside reaches vhome directly,
    although public and the visitor have a route to it; the first router's bed is as before."""
    bed = NetBed(second_nat=True)
    try:
        Reflector(env, bed, "public", PUBLIC_IP)
        v, h = Udp(bed, "vhome"), Udp(bed, "home")
        vm, hm = v.mapping(PUBLIC_IP), h.mapping(PUBLIC_IP)
        check(vm == (VROUTER_WAN, v.port), f"vhome maps to {vm}")
        check(hm == (ROUTER_WAN, h.port), f"home maps to {hm}")
        for ns in ("visitor", "public"):
            check(not gets_in(bed, v, ns, b"direct from " + ns.encode(), (VHOME_IP, v.port), False),
                  f"{ns} reached vhome directly")
        check(not gets_in(bed, v, "home", b"from home's private side", (VHOME_IP, v.port), False),
              "home reached vhome's private address")
        check(bed.nat == {"router": "apdf", "vrouter": "apdf"}, f"modes {bed.nat}")
        v.close()
        h.close()
    finally:
        bed.down()


def punch(a, a_to, b, b_to, tries, gap=0.1):
    """A naive simultaneous punch: a sends to a_to, b to b_to, every gap seconds, at most tries
    times each, until each has received the other's datagram; a's first datagram leaves before b
    sends anything (it reaches b's router first: the order that hurts). Returns {"a": (data,
    sender) or None, "b": ...} and the seconds until both had one (or None)."""
    got = {"a": None, "b": None}
    done = {"a": threading.Event(), "b": threading.Event()}
    a_sent = threading.Event()
    finished = []
    t0 = time.monotonic()

    def side(me, other, sock, to):
        if me == "b":
            a_sent.wait(ANSWER_S)
        for i in range(tries):
            if done["a"].is_set() and done["b"].is_set():
                return
            sock.s.sendto(b"punch %s %d" % (me.encode(), i), to)
            a_sent.set()
            r = sock.wait(lambda d, _: d.startswith(b"punch %s " % other.encode()), gap)
            if r and got[me] is None:
                got[me] = r
                done[me].set()
                if done[other].is_set():
                    finished.append(time.monotonic())
    threads = [threading.Thread(target=side, args=args, daemon=True)
               for args in (("a", "b", a, a_to), ("b", "a", b, b_to))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(tries * gap + 2 * ANSWER_S)
    return got, (min(finished) - t0 if finished else None)


CT_LINE = re.compile(r"src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) .*?src=(\S+) dst=(\S+) sport=(\d+) "
                     r"dport=(\d+)")


def mapped_port(bed, router, inside_ip, inside_port, dst_ip):
    """The port router maps inside_ip:inside_port to toward dst_ip, from its conntrack table (the
    reply direction's destination port), or None."""
    out = bed.run(router, "conntrack", "-L", "-p", "udp", check=False).stdout
    for line in out.splitlines():
        m = CT_LINE.search(line)
        if m and m.group(1) == inside_ip and m.group(3) == str(inside_port) and m.group(2) == dst_ip:
            return int(m.group(8))
    return None


def two_homes(env, bed):
    """A socket in home and one in vhome, each with the mapping the reflector on public saw."""
    Reflector(env, bed, "public", PUBLIC_IP)
    h, v = Udp(bed, "home"), Udp(bed, "vhome")
    hm, vm = h.mapping(PUBLIC_IP), v.mapping(PUBLIC_IP)
    print(f"home {HOME_IP}:{h.port} maps to {hm}; vhome {VHOME_IP}:{v.port} maps to {vm}", flush=True)
    return h, hm, v, vm


def test_punch_apdf(env):
    """Both routers in apdf (and, as home routers, dropping unsolicited packets to themselves): each
    side learns its mapping from the reflector, both send to each other's: each receives the
    other's datagrams, from the very mapping the reflector reported."""
    bed = NetBed(second_nat=True, wan_input="drop")
    try:
        h, hm, v, vm = two_homes(env, bed)
        got, took = punch(h, vm, v, hm, tries=20)
        check(got["a"] is not None and got["b"] is not None, f"the punch failed: {got}")
        check(got["a"][1] == vm and got["b"][1] == hm,
              f"datagrams came from {got['a'][1]} and {got['b'][1]}, not the mappings {vm} {hm}")
        figure("apdf punch: both sides through", took * 1000, "ms")
        # The mappings toward the peer are the ones toward the reflector.
        for router, ip, port, peer, want in (("router", HOME_IP, h.port, VROUTER_WAN, hm[1]),
                                             ("vrouter", VHOME_IP, v.port, ROUTER_WAN, vm[1])):
            toward = mapped_port(bed, router, ip, port, peer)
            check(toward == want, f"{router}'s mapping toward the peer {toward}, toward public {want}")
        print(f"home's first punch {'reached' if v.got(b'punch a 0') else 'did not reach'} vhome "
              "(vrouter drops what comes before vhome's own punch)", flush=True)
        h.close()
        v.close()
    finally:
        bed.down()


def test_punch_random(env):
    """Both routers in random: the same naive punch fails, since each router maps its inside's
    socket toward the peer to a new port, not the one the reflector saw, so each sends to a port
    the other router never opened. Punching such NATs needs prediction (or a relay)."""
    bed = NetBed(second_nat=True, wan_input="drop")
    try:
        for r in bed.routers:
            bed.set_nat(r, "random")
        h, hm, v, vm = two_homes(env, bed)
        got, _ = punch(h, vm, v, hm, tries=10)
        check(got["a"] is None and got["b"] is None, f"a naive punch through random NATs worked: {got}")
        toward_h = mapped_port(bed, "router", HOME_IP, h.port, VROUTER_WAN)
        toward_v = mapped_port(bed, "vrouter", VHOME_IP, v.port, ROUTER_WAN)
        print(f"home's mapping toward vhome: {toward_h} (toward public {hm[1]}); "
              f"vhome's toward home: {toward_v} (toward public {vm[1]})", flush=True)
        check(toward_h not in (None, hm[1]) and toward_v not in (None, vm[1]),
              f"mappings toward the peer {toward_h} {toward_v} vs toward public {hm[1]} {vm[1]}")
        h.close()
        v.close()
    finally:
        bed.down()


def test_punch_early_arrival(env):
    """Both routers in apdf, but accepting unsolicited packets to themselves (wan_input "accept",
    the bed's default): home's first punch reaches vrouter's own stack (no socket: an ICMP port
    unreachable comes back) and leaves a conntrack entry there; vhome's punch toward home would
    then look like that entry's reply, so vrouter maps it to another port, and home's router drops
    what comes from it. The naive punch fails both ways, as long as home keeps sending (each
    datagram refreshes the entry)."""
    bed = NetBed(second_nat=True)
    try:
        h, hm, v, vm = two_homes(env, bed)
        h.s.connect(vm)  # to see vrouter's ICMP error: proof that the punch arrived first
        check(refused(h.s, b"early"), "no ICMP port unreachable from vrouter for the early punch")
        got, _ = punch(h, vm, v, hm, tries=10)
        moved = mapped_port(bed, "vrouter", VHOME_IP, v.port, ROUTER_WAN)
        print(f"vhome's mapping toward home: {moved} (toward public {vm[1]})", flush=True)
        check(moved not in (None, vm[1]), f"vrouter kept port {moved} for vhome")
        check(got["a"] is None and got["b"] is None, f"the punch worked: {got}")
        h.close()
        v.close()
    finally:
        bed.down()


def test_server_delay(env):
    """server_delay: the public host's link delays each direction by SERVER_DELAY_MS, so a round
    trip to it takes at least twice that; a second public host on a plain link is as near as
    before."""
    bed = NetBed(server_delay=SERVER_DELAY_MS, hosts={"public2": PUBLIC2_IP})
    try:
        Reflector(env, bed, "public", PUBLIC_IP)
        Reflector(env, bed, "public2", PUBLIC2_IP)
        s = Udp(bed, "home")
        rtt = {}
        for host in (PUBLIC_IP, PUBLIC2_IP):
            s.mapping(host)  # the first round trip also resolves addresses (ARP)
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                s.mapping(host)
                times.append(time.monotonic() - t0)
            rtt[host] = sorted(times)
        figure("round trip to public (min)", rtt[PUBLIC_IP][0] * 1000,
               f"ms (delay {SERVER_DELAY_MS} ms each way)")
        figure("round trip to public2 (median)", rtt[PUBLIC2_IP][2] * 1000, "ms")
        check(rtt[PUBLIC_IP][0] >= 2 * SERVER_DELAY_MS / 1000,
              f"a round trip to public took {rtt[PUBLIC_IP][0] * 1000:.1f} ms")
        check(rtt[PUBLIC2_IP][2] < SERVER_DELAY_MS / 1000,
              f"a round trip to public2 took {rtt[PUBLIC2_IP][2] * 1000:.1f} ms")
        s.close()
    finally:
        bed.down()


TESTS = {f.__name__[5:]: f for f in [
    test_eim, test_apdf, test_random, test_second_nat_is_a_nat, test_punch_apdf,
    test_punch_random, test_punch_early_arrival, test_server_delay,
]}

if __name__ == "__main__":
    netbed.main(TESTS)
