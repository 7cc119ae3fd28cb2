#!/usr/bin/env python3
"""np-server against clients that misbehave (npwire.py speaks the native protocol from its document):
pending visitors expire and are bounded, names clash, work connections must prove their session, and
malformed or oversized input closes only the offending connection while an honest client keeps
working."""

import os
import socket
import ssl
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import (LOOP, SANITIZED, WRAP, Fail, Greeter, check, connect, dial,  # noqa: E402
                    half_close, recv_all, rss_kib, run, server_stats, wait_until)


def closed(s, timeout=5):
    """True when the peer closes s within timeout (EOF or reset), False if it stays open."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True  # SSLError: a TLS connection cut without close_notify, or with an alert
    except socket.timeout:
        return False


def honest_tunnel(env, srv):
    svc = env.service(Greeter)
    cl = env.client(srv, "--name", "honest", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="honest")
    (port,) = cl.ports.values()
    return port


def assert_serving(port, tag):
    s = connect(port)
    s.sendall(tag + b"\n")
    check(recv_all(s) == b"you are " + tag + b"\n", f"honest client served ({tag!r})")


def test_pending_expiry_and_bounds(env):
    srv = env.server("--token", "s3cret", "--pending-timeout", "600ms",
                     "--max-pending-per-proxy", "2")
    raw = npwire.Client(srv, name="lazy")
    resp = raw.proxy("lazy-web")
    check(resp["status"] == 0, f"proxy refused: {resp}")
    port = resp["port"]
    t0 = time.monotonic()
    v1, v2 = connect(port), connect(port)
    for _ in range(2):
        raw.expect(npwire.REQ_WORK)  # announced, and never answered
    v3 = connect(port)
    check(closed(v3, 2), "third visitor refused at once (max_pending_per_proxy 2)")
    check(time.monotonic() - t0 < 0.5, "refusal was immediate")
    srv.wait_line(r"visitor refused: too many visitors waiting")
    srv.wait_line(rf"access proxy=lazy-web visitor=127\.0\.0\.1:{v3.getsockname()[1]} in=0 out=0 "
                  r"duration=0\.\d{3}s end=refused$")
    check(closed(v1, 3) and closed(v2, 3), "waiting visitors closed at the pending timeout")
    took = time.monotonic() - t0
    check(0.55 <= took < 2.0, f"expired after {took:.2f}s, pending_timeout 600ms")
    srv.wait_line(r"got no work connection within 600ms")
    for v in (v1, v2):  # the access log says how long each waited
        m = srv.wait_line(rf"access proxy=lazy-web visitor=127\.0\.0\.1:{v.getsockname()[1]} "
                          r"in=0 out=0 duration=(\d+\.\d{3})s end=timeout$")
        check(0.55 <= float(m.group(1)) < 2.0, f"waited {m.group(1)}s")


def test_name_taken_and_limits(env):
    srv = env.server("--token", "s3cret", "--allow-ports", "1024-65535")
    raw = npwire.Client(srv)
    check(raw.proxy("dup")["status"] == 0, "first proxy")
    second = raw.proxy("dup")
    check(second["status"] == npwire.NP_ENAMETAKEN, f"same name twice: {second}")
    low = raw.proxy("low", port=80)
    check(low["status"] == npwire.NP_EPORTDENIED and "allow_ports" in low["text"], f"{low}")


def test_work_must_prove_its_session(env):
    """Nobody steals a visitor by guessing its id: an unproven WORK is closed and the visitor waits for
    the real one, which then carries the data."""
    srv = env.server("--token", "s3cret")
    honest = honest_tunnel(env, srv)
    owner = npwire.Client(srv, name="owner")
    port = owner.proxy("svc")["port"]
    visitor = connect(port)
    _, req = owner.expect(npwire.REQ_WORK)
    # REQ_WORK names who came and where (for the client's PROXY protocol header)
    me = "%s:%d" % visitor.getsockname()[:2]
    check(req["addr"] == me and req["text"] == f"{LOOP}:{port}", f"REQ_WORK's addresses: {req}")
    thief = owner.work(req["id"], good=False)
    check(closed(thief), "unproven work connection closed")
    srv.wait_line(r"work connection for unknown or unproven visitor")
    unknown = owner.work(req["id"] + 1000)
    check(closed(unknown), "work connection for an unknown id closed")
    # A session id whose low byte names a worker that does not exist (ids are (n << 8) | worker).
    mark = srv.mark()
    forged = npwire.dial(srv)
    forged.sendall(npwire.encode(npwire.WORK, id=(5 << 8) | 200, id2=req["id"], mac=bytes(32)))
    check(closed(forged), "a work connection naming no worker is closed")
    if srv.workers > 1:
        srv.wait_line(r"work connection not proven \(its session id names worker 200, which does "
                      r"not exist\): closed", after=mark)
    check(srv.count(r"cannot hand a work connection", after=mark) == 0, "no warning for it")
    real = owner.work(req["id"])
    visitor.sendall(b"ping through\n")
    real.settimeout(5)
    check(npwire.recv_exact(real, 13) == b"ping through\n", "visitor -> work connection")
    real.sendall(b"pong back")
    half_close(real)
    check(recv_all(visitor) == b"pong back", "work connection -> visitor")
    assert_serving(honest, b"still fine")


def test_malformed_input(env):
    srv = env.server("--token", "s3cret", "--heartbeat-timeout", "2s", "--heartbeat-interval", "500ms")
    honest = honest_tunnel(env, srv)
    cases = [
        (b"\xff\xff\xff\xff\x01", r"message larger than the configured limit"),  # 2^32-1
        (struct.pack(">I", 5000) + b"\x01", r"message larger than the configured limit"),
        (b"\x00\x00\x00\x00", r"malformed protocol message"),  # zero length
        (b"\x00\x00\x00\x01\x63", r"malformed protocol message"),  # unknown type
        (b"\x00\x00\x00\x02\x01\x00", r"malformed protocol message"),  # truncated HELLO
        (npwire.encode(npwire.PING, id=1), r"unexpected PING message"),  # not before login
        (os.urandom(64), r"closing"),
    ]
    for data, log in cases:
        mark = srv.mark()
        s = dial(srv, timeout=5)
        s.sendall(data)
        check(closed(s), f"{data[:8]!r}... closed")
        srv.wait_line(log, after=mark)
        assert_serving(honest, b"after %d" % len(data))
    if WRAP or SANITIZED:
        return  # their allocators keep what is freed: nothing to measure
    # the same again, 100 times over: the server's memory stays where it was
    before = rss_kib(srv.p.pid)
    for _ in range(100):
        for data, _ in cases:
            s = dial(srv, timeout=5)
            s.sendall(data)
            check(closed(s), f"{data[:8]!r}... closed")
    assert_serving(honest, b"after 700 more")
    after = rss_kib(srv.p.pid)
    print(f"server RSS before 700 malformed connections {before} KiB, after {after} KiB")
    check(after - before < 1024, f"700 malformed connections grew the server by {after - before} KiB")


def test_bad_version_and_silence(env):
    srv = env.server("--token", "s3cret", "--heartbeat-timeout", "1s", "--heartbeat-interval", "250ms",
                     "--login-timeout", "1s")
    s = dial(srv, timeout=5)
    s.sendall(npwire.encode(npwire.HELLO, version=9))
    t, m = npwire.recv_msg(s)
    check(t == npwire.CLOSE and m["status"] == npwire.NP_EVERSION and "9" in m["text"],
          f"version 9 answered with {t} {m}")
    check(closed(s), "closed after the version refusal")
    # a connection that never says anything is closed at the login deadline
    t0 = time.monotonic()
    quiet = dial(srv, timeout=5)
    check(closed(quiet, 4), "silent connection closed")
    took = time.monotonic() - t0
    check(0.9 <= took < 2.5, f"closed after {took:.2f}s, deadline 1s")
    srv.wait_line(r"no login within 1000ms")
    # a logged-in client that stops answering pings is dropped, and its port freed
    raw = npwire.Client(srv, name="mute")
    port = raw.proxy("m")["port"]
    srv.wait_line(r"client mute .* disconnected: no heartbeat", timeout=5)
    check(closed(raw.s), "mute client's control connection closed")
    try:
        socket.create_connection((LOOP, port), timeout=2).close()
        check(False, "mute client's port still open")
    except ConnectionRefusedError:
        pass


def test_idle_connections_must_prove_their_session(env):
    """A pre-opened work connection must prove its session with a fresh serial: a wrong proof and a
    replayed one are closed, so nobody can park a connection to receive someone else's visitors."""
    srv = env.server("--token", "s3cret")
    owner = npwire.Client(srv, name="owner")
    port = owner.proxy("svc")["port"]
    bad = owner.idle(1, good=False)
    check(closed(bad), "wrong proof closed")
    recorded = owner.idle_msg(2)
    good = owner.idle(2, raw=recorded)
    # parked before the replay is even dialled: which of two connections the server reads first is
    # otherwise up to the scheduler
    srv.wait_line(r"client owner: pre-opened work connection 2 parked")
    replay = owner.idle(2, raw=recorded)
    check(closed(replay), "replayed WORK_IDLE closed")
    srv.wait_line(r"pre-opened work connection not proven")
    # The genuine one gets the next visitor, announced with START on it.
    visitor = connect(port)
    visitor.sendall(b"hello pooled")
    good.settimeout(5)
    t, m = npwire.recv_msg(good)
    check(t == npwire.START and m["name"] == "svc", f"got {t} {m}")
    check(npwire.recv_exact(good, 12) == b"hello pooled", "visitor bytes follow START")
    good.sendall(b"answer")
    half_close(good)
    check(recv_all(visitor) == b"answer", "answer reaches the visitor")


def test_peer_reset_is_quiet(env):
    """A logged-in client whose connection is reset: one line says it went away, and no warning that
    the server "cannot send CLOSE" to a peer that is gone."""
    srv = env.server("--token", "s3cret")
    raw = npwire.Client(srv, name="gone")
    check(raw.proxy("g")["status"] == 0, "proxy opened")
    raw.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.s.close()  # linger 0: RST
    srv.wait_line(r"client gone \(127\.0\.0\.1:\d+\) disconnected: connection reset by peer")
    server_stats(srv)  # a later loop turn: whatever the reset made it log is in by now
    check(srv.count(r"cannot send") == 0, "no 'cannot send CLOSE' warning after a reset")
    check(srv.count(r"connection reset by peer") == 1, "the reset is logged once")


def test_replayed_login(env):
    """A recorded LOGIN is worthless on a new connection: the server's nonce is fresh every time."""
    srv = env.server("--token", "s3cret")
    s = dial(srv, timeout=5)
    s.sendall(npwire.encode(npwire.HELLO, version=1))
    _, hello = npwire.recv_msg(s)
    cn = os.urandom(32)
    login = npwire.encode(npwire.LOGIN, version=1, name="victim", nonce=cn,
                          mac=npwire.mac(b"s3cret", b"np-login-1", hello["nonce"], cn, b"victim"))
    s.sendall(login)
    check(npwire.recv_msg(s)[1]["status"] == 0, "the original login works")
    r = dial(srv, timeout=5)
    r.sendall(npwire.encode(npwire.HELLO, version=1))
    npwire.recv_msg(r)
    r.sendall(login)
    t, m = npwire.recv_msg(r)
    check(t == npwire.LOGIN_RESP and m["status"] == npwire.NP_EAUTH, f"replay answered {t} {m}")
    check(closed(r), "replaying connection closed")


def yamux(ftype, flags, stream, length, data=b""):
    """One yamux frame (hashicorp/yamux spec.md: version 0, big-endian 12-byte header)."""
    return struct.pack(">BBHII", 0, ftype, flags, stream, length) + data


SYN, ACK, FIN, RST = 1, 2, 4, 8


def test_hostile_mux(env):
    """Multiplexed connections that misbehave are closed with a logged reason, within the login
    deadline when they say nothing; the stream limit holds; an honest client is served throughout."""
    srv = env.server("--token", "s3cret", "--login-timeout", "1s", "--mux-max-streams", "20")
    honest = honest_tunnel(env, srv)
    mux = npwire.encode(npwire.MUX, version=1)
    cases = [
        (os.urandom(64), r"multiplexed connection from .* closed: malformed protocol message"),
        (yamux(0, SYN, 1, 0xFFFFFFF0), r"closed: message larger than the configured limit"),
        (yamux(1, SYN, 1, 0) + yamux(0, 0, 1, 300000, b"x" * 300000),
         r"closed: malformed protocol message"),  # more than the 256 KiB window
        (yamux(1, SYN, 2, 0), r"closed: malformed protocol message"),  # an id of the server's
        (bytes([1]) + os.urandom(11), r"closed: malformed protocol message"),  # version 1
    ]
    for data, log in cases:
        mark = srv.mark()
        s = dial(srv, timeout=5)
        try:
            s.sendall(mux + data)
        except OSError:
            pass  # closed while the rest was still on its way: what the case is about
        check(closed(s), f"mux + {data[:12]!r}... closed")
        srv.wait_line(log, after=mark)
        assert_serving(honest, b"after mux %d" % len(data))
    # silent: closed at the login deadline, with or without a stream
    for data in (b"", yamux(1, SYN, 1, 0)):
        t0 = time.monotonic()
        s = dial(srv, timeout=5)
        s.sendall(mux + data)
        check(closed(s, 4), "silent multiplexed connection closed")
        took = time.monotonic() - t0
        check(0.9 <= took < 2.5, f"closed after {took:.2f}s, deadline 1s")
    # more streams than allowed: the extra ones are reset, the connection lives on until its deadline
    s = dial(srv, timeout=5)
    s.sendall(mux + b"".join(yamux(1, SYN, 2 * i + 1, 0) for i in range(30)))
    got, resets = b"", set()
    s.settimeout(3)
    try:
        while len(resets) < 10:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            while len(got) >= 12:
                _, ftype, flags, sid, length = struct.unpack(">BBHII", got[:12])
                body = length if ftype == 0 else 0
                if len(got) < 12 + body:
                    break
                if flags & RST:
                    resets.add(sid)
                got = got[12 + body:]
    except socket.timeout:
        pass
    check(resets == {2 * i + 1 for i in range(20, 30)}, f"reset streams: {sorted(resets)}")
    assert_serving(honest, b"after the stream flood")


def client_hello():
    """The first flight of a TLS client, as bytes to dribble by hand."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def test_slowloris_login(env):
    """A peer that sends its handshake a byte at a time is closed at the login deadline, counted
    from the accept: trickling bytes does not buy time."""
    srv = env.server("--token", "s3cret", "--login-timeout", "1500ms")
    honest = honest_tunnel(env, srv)
    hello = (client_hello() if srv.fingerprint else
             npwire.encode(npwire.HELLO, version=1) + b"\x00\x00\x01\x00\x02\x00\x01")
    s = socket.create_connection((LOOP, srv.port), timeout=5, source_address=("127.0.0.5", 0))
    t0 = time.monotonic()
    sent = 0
    try:
        for b in hello:  # 10 bytes a second: at most 15 before the deadline
            s.sendall(bytes([b]))
            sent += 1
            time.sleep(0.1)  # the attack's own pace, not a wait for the server
    except (BrokenPipeError, ConnectionResetError):
        pass
    check(closed(s, 3), "the slow peer is closed")
    took = time.monotonic() - t0
    check(1.4 <= took < 3, f"closed after {took:.2f}s with {sent} bytes, deadline 1.5s")
    srv.wait_line(r"127\.0\.0\.5:\d+: no login within 1500ms \(login_timeout\), closing")
    assert_serving(honest, b"after the slow peer")


def test_silent_crowd(env):
    """1,000 connections that never speak: the honest client is served while they are open, each
    is closed at the login deadline with a logged reason, and the server's memory goes back to
    where it was (a second crowd costs nothing more than the first)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    srv = env.server("--token", "s3cret", "--login-timeout", "2s")
    honest = honest_tunnel(env, srv)
    assert_serving(honest, b"before")
    measure = not WRAP and not SANITIZED
    rss = [rss_kib(srv.p.pid)]
    for crowd in range(2):
        mark = srv.mark()
        t0 = time.monotonic()
        socks = [socket.create_connection((LOOP, srv.port), timeout=10,
                                          source_address=("127.0.0.6", 0)) for _ in range(1000)]
        assert_serving(honest, b"during crowd %d" % crowd)
        peak = rss_kib(srv.p.pid)
        check(time.monotonic() - t0 < 2, "the crowd was in before its deadline")
        for s in socks:
            check(closed(s, 5), "a silent connection is closed")
            s.close()
        took = time.monotonic() - t0
        check(took < 5, f"1,000 silent connections closed after {took:.2f}s (deadline 2s)")
        wait_until(lambda: srv.count(r"127\.0\.0\.6:\d+: no login within 2000ms") >= 1000 * (crowd + 1),
                   5, "every silent connection logged")
        assert_serving(honest, b"after crowd %d" % crowd)
        # each worker gives back what its share of the crowd freed
        wait_until(lambda: srv.count(r"connections and visitors came and went: freed memory "
                                     r"given back", after=mark) >= srv.workers, 5,
                   "every worker gave freed memory back")
        rss.append(rss_kib(srv.p.pid))
    print(f"server RSS: before {rss[0]} KiB, with 1,000 silent connections {peak} KiB, after one "
          f"crowd {rss[1]} KiB, after two {rss[2]} KiB")
    if measure:
        check(rss[2] - rss[1] < 512, f"a second crowd grew the server by {rss[2] - rss[1]} KiB")
        # A worker's thread allocates from a glibc arena of its own, whose top malloc_trim leaves
        # in place (it trims only the main arena's): up to about a MiB per worker that the next
        # crowd reuses, which the check above shows.
        kept = 1024 * srv.workers
        check(rss[2] - rss[0] < kept,
              f"the server kept {rss[2] - rss[0]} KiB after the crowds ({srv.workers} workers)")


TESTS = {f.__name__[5:]: f for f in [
    test_pending_expiry_and_bounds, test_name_taken_and_limits, test_work_must_prove_its_session,
    test_malformed_input, test_bad_version_and_silence, test_idle_connections_must_prove_their_session,
    test_peer_reset_is_quiet, test_replayed_login, test_hostile_mux, test_slowloris_login, test_silent_crowd,
]}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
