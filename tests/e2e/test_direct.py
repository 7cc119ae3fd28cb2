#!/usr/bin/env python3
"""Direct paths (type = xtcp visitors; docs/config.md, "Direct paths"): the real np-server and
np-clients on 127.0.0.1. The server introduces the visitor's client to the owner's; they punch a
hole (trivial on loopback: tests/netns/test_direct_nat.py has the NATs) and carry each local
connection as a QUIC stream between them, the server seeing none of its bytes. A wrong key gets
nothing, directly or through the server."""
import os
import signal
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import LOOP, check, low_free_ports, rss_kib, run, server_stats, wait_until  # noqa: E402
from test_private import counting_service, four_both_ways, nothing_back, owner, write  # noqa: E402
from test_twoway import (baseline, echo_service, established_to, mixed_load,  # noqa: E402
                         wait_for_baseline)

# The direct soak's length: short in the suite, NP_SOAK_SECONDS=600 for the full run
# (docs/testing.md).
SOAK_SECONDS = float(os.environ.get("NP_SOAK_SECONDS", "10"))


def xvisitor(env, srv, target, key="correct horse", name="bob", extra=""):
    """A client with one [visitor] of type xtcp on a free local port: (client, port)."""
    port = low_free_ports(1)[0]
    ini = write(env, f"{name}.ini", f"[visitor v]\ntype = xtcp\nserver_name = {target}\n"
                                    f"secret_key = {key}\nbind = {LOOP}:{port}\n{extra}")
    cl = env.client(srv, "-c", ini, "--name", name, name=f"visitor-{name}", wait=False)
    cl.wait_line(rf"visitor v: TCP 127\.0\.0\.1:{port} reaches {target} \(xtcp")
    cl.wait_line(r"logged in to")
    return cl, port


def path_up(env, bind=f"{LOOP}:0", at=r"\S+"):
    """A server, alice's private echo and bob's xtcp visitor of it, and a first connection that
    brings the direct path up (it waits for the try): (server, echo, alice, bob, bob's port)."""
    srv = env.server("--token", "s3cret", bind=bind)
    echo = echo_service(env)
    alice = owner(env, srv, echo.port)
    bob, port = xvisitor(env, srv, "alice.svc")
    check(nothing_back(port, b"x" * 1000) == b"x" * 1000, "the first connection is served")
    bob.wait_line(rf"visitor v: direct path to alice\.svc at {at} is up in \d+ ms \(candidate \d+")
    return srv, echo, alice, bob, port


def test_direct_two_way(env):
    """Four local connections at once, 8 MiB each way at the same time, to alice's private echo
    over the direct path: every byte back in order; the server introduced the two once and
    relayed no visit (private_visits 0); the visitor's log says the path is up and how."""
    srv, _, _, _, port = path_up(env)  # the first connection waits for the path
    four_both_ways(port)  # these find it up
    st = server_stats(srv)
    check(st["direct_introduced"] == 1 and st["direct_refused"] == 0, f"introduced once: {st}")
    check(st["private_visits"] == 0, f"nothing went through the server: {st}")


def test_direct_service_speaks_first(env):
    """A service that speaks first (as sshd and SMTP servers do) to a visitor that sends nothing:
    its greeting arrives over the direct path, on the connection that brought the path up and on
    the next ones (a QUIC stream nothing was written on is not announced: each opens with a byte of
    ours)."""
    srv = env.server("--token", "s3cret")
    seen, port = counting_service(env)
    owner(env, srv, port)
    bob, vport = xvisitor(env, srv, "alice.svc")
    for n in range(3):
        s = socket.create_connection((LOOP, vport), timeout=10)
        s.settimeout(10)
        got = b""
        while len(got) < 8:
            b = s.recv(100)
            if not b:
                break
            got += b
        s.close()
        check(got == b"private\n", f"connection {n}: the service's greeting: {got!r}")
    bob.wait_line(r"direct path to alice\.svc at \S+ is up")
    check(len(seen) == 3, f"three connections at the service: {len(seen)}")
    st = server_stats(srv)
    check(st["private_visits"] == 0, f"all of them direct: {st}")


def test_direct_wrong_key(env):
    """A wrong key: the server refuses the introduction (counted, a failed login), the connection
    then tries the relay, which refuses it too: nothing back, and the service sees no connection."""
    srv = env.server("--token", "s3cret")
    seen, port = counting_service(env)
    owner(env, srv, port)
    mallory, mport = xvisitor(env, srv, "alice.svc", key="not the key", name="mallory")
    check(nothing_back(mport) == b"", "a wrong key gets no byte")
    mallory.wait_line(r"no direct path to alice\.svc \(the server says: wrong secret_key")
    mallory.wait_line(r"the server refused the visit of alice\.svc: wrong secret_key")
    st = server_stats(srv)
    check(st["direct_refused"] == 1 and st["direct_introduced"] == 0, f"refused: {st}")
    check(st["logins_failed"] >= 2 and st["private_visits"] == 0, f"failed logins: {st}")
    check(seen == [], "the service saw nothing")


def test_direct_no_such_proxy(env):
    """An xtcp visitor of a proxy that is not there: refused with the reason, nothing back."""
    srv = env.server("--token", "s3cret")
    bob, port = xvisitor(env, srv, "alice.nothing")
    check(nothing_back(port) == b"", "nothing back")
    bob.wait_line(r"no direct path to alice\.nothing \(the server says: no private proxy")


def direct_msg(raw, serial, target, secret, path_id, cands):
    """DIRECT as docs/protocol.md writes it, from a raw client's control stream."""
    verifier = npwire.mac(secret.encode(), b"np-stcp-1", target.encode())
    ids = struct.pack(">QQB", raw.session, serial, npwire.STCP)
    return npwire.encode(npwire.DIRECT, id=path_id, id2=serial, kind=npwire.STCP, name=target,
                         mac=npwire.mac(verifier, b"np-direct1", raw.key, ids, target.encode()),
                         text=cands)


def alive(raw):
    """The raw client's session still answers: a PING gets its PONG. Returns how many DIRECT
    answers came before it (or False)."""
    raw.s.sendall(npwire.encode(npwire.PING, id=77))
    raw.s.settimeout(10)
    directs = 0
    while True:
        t, m = npwire.recv_msg(raw.s)
        if t == npwire.DIRECT:
            directs += 1
        elif t == npwire.PONG:
            return m["id"] == 77 and (directs or True)
        elif t == npwire.PING:
            raw.s.sendall(npwire.encode(npwire.PONG, id=m["id"]))
        else:
            return False


def test_direct_hostile(env):
    """A raw client (npwire.py) asks as docs/protocol.md says: the owner answers through the server
    with its candidates and a 32-byte key, the same key twice never; a replayed serial, a wrong
    secret and an unknown proxy are refused with their status on a session that stays up; a
    DIRECT_INTRO answer with a forged token, and a burst of 40 DIRECTs in a second, are dropped
    (counted, logged once) and the server and both sessions live on."""
    srv = env.server("--token", "s3cret")
    echo = echo_service(env)
    alice = owner(env, srv, echo.port)
    raw = npwire.Client(srv, name="raw")
    raw.s.sendall(direct_msg(raw, 1, "alice.svc", "correct horse", 0x1111, "127.0.0.1:9"))
    t, a = raw.expect(npwire.DIRECT)
    check(a["status"] == 0 and a["id"] == 0x1111 and a["nonce"] != bytes(32), f"answered: {a}")
    check(a["text"].startswith("127.0.0.1:"), f"the owner's candidates: {a['text']!r}")
    raw.s.sendall(direct_msg(raw, 2, "alice.svc", "correct horse", 0x2222, "127.0.0.1:9"))
    t, b = raw.expect(npwire.DIRECT)
    check(b["status"] == 0 and b["nonce"] != a["nonce"], "a fresh key per introduction")
    for serial, secret, target, status, what in (
            (2, "correct horse", "alice.svc", npwire.NP_EAUTH, "a replayed serial"),
            (3, "wrong horse", "alice.svc", npwire.NP_ESECRET, "a wrong secret"),
            (4, "correct horse", "alice.nothing", npwire.NP_ENOPROXY, "no such proxy")):
        raw.s.sendall(direct_msg(raw, serial, target, secret, 0x3333, "127.0.0.1:9"))
        t, m = raw.expect(npwire.DIRECT)
        check(m["status"] == status and m["nonce"] == bytes(32), f"{what}: {m}")
    # An answer to an introduction this session was never given: dropped, nothing said to anyone.
    raw.s.sendall(npwire.encode(npwire.DIRECT_INTRO, id=0x1111, id2=raw.session, name="svc",
                                addr="raw", nonce=a["nonce"], mac=bytes(32), text="1.2.3.4:5"))
    check(alive(raw), "a forged answer leaves the session up")
    srv.wait_line(r"client raw: an answer to a direct path it was not asked for \(dropped\)")
    st0 = server_stats(srv)
    for i in range(40):
        raw.s.sendall(direct_msg(raw, 100 + i, "alice.nothing", "x", 0x4444, "127.0.0.1:9"))
    answered = alive(raw)
    check(answered is not False, "a burst leaves the session up")
    # 8 a second: the burst may straddle two seconds' windows
    check(answered is True or answered <= 16, f"at most 8 answered a second: {answered}")
    time.sleep(1.1)  # the burst is summed up once its second is over, at the next message
    raw.s.sendall(direct_msg(raw, 200, "alice.nothing", "x", 0x4444, "127.0.0.1:9"))
    srv.wait_line(r"client raw: \d+ direct-path messages in a second, \d+ of them dropped")
    st = server_stats(srv)
    check(st["direct_refused"] - st0["direct_refused"] >= 40, f"all refused or dropped: {st}")
    check(alice.count(r"disconnected|unexpected message") == 0, f"the owner stays: {alice.dump(5)}")


def test_direct_old_owner(env):
    """An owner whose client is older than direct paths (its LOGIN lacks the DIRECT flag; a raw
    client here) is never sent DIRECT_INTRO, which would cost it its session: the xtcp visitor is
    told so and goes through the server, and the owner's session lives on."""
    srv = env.server("--token", "s3cret")
    old = npwire.Client(srv, name="old")  # no LOGIN_DIRECT in its LOGIN's status
    verifier = npwire.mac(b"correct horse", b"np-stcp-1", b"old.svc")
    old.s.sendall(npwire.encode(npwire.PROXY_OPT, name="svc", addr="secret", text=verifier.hex()))
    m = old.proxy("svc", kind=npwire.STCP)
    check(m["status"] == 0, f"registered: {m}")
    bob, port = xvisitor(env, srv, "old.svc")
    s = socket.create_connection((LOOP, port), timeout=10)
    bob.wait_line(r"no direct path to old\.svc \(the server says: the owner's client is older than "
                  r"direct paths")
    # The relay's visitor reaches the old owner as ever: a REQ_WORK or START for it.
    old.s.settimeout(10)
    while True:
        t, m = npwire.recv_msg(old.s)
        if t in (npwire.REQ_WORK, npwire.START):
            break
        check(t in (npwire.PING, npwire.PROXY_RESP), f"only what an old client knows: {t} {m}")
        if t == npwire.PING:
            old.s.sendall(npwire.encode(npwire.PONG, id=m["id"]))
    s.close()
    check(alive(old), "the old owner's session lives on")


def test_direct_reload_revokes(env):
    """A path up, then the owner's SIGHUP rotates secret_key: the owner ends the path at once (it
    outlives no key), the visitor hears it closed, and its next connection, through the server
    with the old key, is refused: nothing back."""
    _, echo, alice, bob, port = path_up(env)
    write(env, "alice.ini", f"[proxy svc]\ntype = stcp\nlocal = {LOOP}:{echo.port}\n"
                            "secret_key = battery staple\n")
    mark = alice.mark()
    alice.signal(signal.SIGHUP)
    alice.wait_line(r"proxy svc: private \(stcp\): visitors reach it as alice\.svc", after=mark)
    bob.wait_line(r"the direct path to alice\.svc at \S+ is down \(the other end closed it\)")
    check(nothing_back(port) == b"", "the old key gets nothing, directly or through the server")


def test_direct_close_with_live_stream(env):
    """The visitor's client is stopped (SIGTERM) while a connection is open on the direct path,
    and the owner's client too, each with its end of it live: both exit 0 (under ASan, with
    nothing touched after it was freed)."""
    srv = env.server("--token", "s3cret")
    echo = echo_service(env)
    alice = owner(env, srv, echo.port)
    bob, port = xvisitor(env, srv, "alice.svc")
    s = socket.create_connection((LOOP, port), timeout=10)
    s.sendall(b"hold\n")
    s.settimeout(10)
    check(s.recv(5) == b"hold\n", "the connection carries")
    bob.wait_line(r"direct path to alice\.svc at \S+ is up")
    bob.signal(signal.SIGTERM)
    check(bob.wait_exit(30) == 0, "the visitor's client exits 0")
    s.close()
    alice.signal(signal.SIGTERM)
    check(alice.wait_exit(30) == 0, "the owner's client exits 0")


def test_direct_ipv6(env):
    """The server on [::1]: both clients learn their mappings from its UDP port over IPv6, and the
    path is made between IPv6 candidates (the family of the server's address, docs/config.md);
    four connections at once echo 8 MiB both ways over it, none through the server."""
    srv, _, alice, _, port = path_up(env, bind="[::1]:0", at=r"\[::1\]:\d+")
    alice.wait_line(r"proxy svc: direct path to client bob at \[::1\]:\d+ is up")
    four_both_ways(port)
    st = server_stats(srv)
    check(st["direct_introduced"] == 1 and st["private_visits"] == 0,
          f"one introduction, nothing through the server: {st}")


def test_direct_soak(env):
    """NP_SOAK_SECONDS of traffic both ways over a direct path (test_twoway's mixed_load: 2 visitors
    echo 8 MiB both ways one after another while 4 make 1 KiB echoes on fresh connections, 40 a
    second each, so QUIC streams open and close all the time): every byte back, nothing stuck, all
    of it direct (the server carries no visit), and afterwards both clients hold the descriptors
    they held before and the owner's connections to the service are closed."""
    srv, echo, alice, bob, port = path_up(env)
    wait_until(lambda: established_to(echo.port) == 0, 15, "the first connection closed")
    base = baseline(alice, bob)
    rss0 = [rss_kib(p.p.pid) for p in (alice, bob)]
    mixed_load(port, SOAK_SECONDS)
    st = server_stats(srv)
    check(st["private_visits"] == 0 and st["direct_introduced"] == 1,
          f"all of it over the one direct path: {st}")
    wait_for_baseline(alice, bob, echo, base, "after the soak")
    print("RSS KiB before and after (owner, visitor): "
          f"{rss0} -> {[rss_kib(p.p.pid) for p in (alice, bob)]}")


TESTS = {
    "direct_two_way": test_direct_two_way,
    "direct_service_speaks_first": test_direct_service_speaks_first,
    "direct_wrong_key": test_direct_wrong_key,
    "direct_no_such_proxy": test_direct_no_such_proxy,
    "direct_hostile": test_direct_hostile,
    "direct_old_owner": test_direct_old_owner,
    "direct_reload_revokes": test_direct_reload_revokes,
    "direct_close_with_live_stream": test_direct_close_with_live_stream,
    "direct_ipv6": test_direct_ipv6,
    "direct_soak": test_direct_soak,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
