#!/usr/bin/env python3
"""Private proxies (type = stcp, sudp) and their visitors (-L, [visitor NAME]): the real np-server
and np-clients on 127.0.0.1, socat's echo and a UDP echo as the private services. The owner's
proxy has no public port; a visitor client that holds the secret reaches it through the server,
both ways at once and byte for byte; a wrong key, a client allow_users does not name, a proxy that
is not there, get nothing and a reason (docs/config.md, "Private services")."""
import hashlib
import math
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import LOOP, check, low_free_ports, run, server_stats, wait_until  # noqa: E402
from test_twoway import MIB, echo_both_ways, echo_service  # noqa: E402
from test_forward import Closer  # noqa: E402
from test_udp import Echo  # noqa: E402


def write(env, name, text):
    path = os.path.join(env.tmp.name, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def owner(env, srv, service_port, kind="stcp", extra="", name="alice", proxy="svc"):
    """A client whose one proxy is private: it logs that visitors reach it as NAME.PROXY."""
    ini = write(env, f"{name}.ini", f"[proxy {proxy}]\ntype = {kind}\nlocal = {LOOP}:{service_port}\n"
                                    f"secret_key = correct horse\n{extra}")
    cl = env.client(srv, "-c", ini, "--name", name, name=f"owner-{name}", wait=False)
    cl.wait_line(rf"proxy {proxy}: private \({kind}\): visitors reach it as {name}\.{proxy}")
    return cl


def visitor(env, srv, target, key="correct horse", name="bob", port=None):
    """A client with one stcp visitor (-L) of target on a free local port: (client, port)."""
    port = port or low_free_ports(1)[0]
    keyfile = write(env, f"{name}.key", key + "\n")
    cl = env.client(srv, "--name", name, "--secret-key-file", keyfile, "-L", f"{port}:{target}",
                    name=f"visitor-{name}", wait=False)
    cl.wait_line(rf"visitor stcp-{port}: TCP 127\.0\.0\.1:{port} reaches {target}")
    cl.wait_line(r"logged in to")
    return cl, port


def counting_service(env):
    """A TCP service that says b"private\\n" to each connection: (the list it counts them in, its
    port)."""
    seen = []

    class Service(socketserver.BaseRequestHandler):
        def handle(self):
            seen.append(1)
            self.request.sendall(b"private\n")

    return seen, env.service(Service)


def nothing_back(port, data=b"hello?"):
    """Connect to a visitor's local port, send and half-close, and return what comes back before
    the end."""
    s = socket.create_connection((LOOP, port), timeout=10)
    s.settimeout(10)
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    got = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except OSError:
        pass
    s.close()
    return got


def four_both_ways(port):
    """Four connections to port at once, each 8 MiB each way at the same time to an echo: every
    byte back, in order (SHA-256)."""
    results, errors = {}, []

    def one(n):
        data = os.urandom(8 * MIB)
        try:
            results[n] = (echo_both_ways(port, data, 120), (len(data), hashlib.sha256(data).hexdigest()))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{n}: {e}")

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    check(not errors, f"no errors: {errors}")
    for n, (got, want) in results.items():
        check(got == want, f"connection {n}: {got[0]} bytes back of {want[0]}, the same bytes")
    check(len(results) == 4, "four connections")


def test_private_stcp_two_way(env):
    """Four local connections to bob's -L port at once, 8 MiB each way at the same time through
    the server to alice's private echo: every byte back, in order; counted as visits."""
    srv = env.server("--token", "s3cret")
    echo = echo_service(env)
    owner(env, srv, echo.port)
    _, port = visitor(env, srv, "alice.svc")
    four_both_ways(port)
    st = server_stats(srv)
    check(st["private_visits"] == 4 and st["private_refused"] == 0, f"four visits: {st}")


def test_private_wrong_key_gets_nothing(env):
    """A visitor with a wrong key: its local connection closes without a byte, the service sees
    no connection, the visitor's log says why, the server counts it as a refused visit and a failed
    login, and after a few the address is backed off (refused unheard). The right key, once the
    back-off is over, gets through."""
    srv = env.server("--token", "s3cret")
    seen, port = counting_service(env)
    owner(env, srv, port)
    mallory, mport = visitor(env, srv, "alice.svc", key="not the key", name="mallory")
    check(nothing_back(mport) == b"", "a wrong key gets no byte")
    mallory.wait_line(r"the server refused the visit of alice\.svc: wrong secret_key")
    st = server_stats(srv)
    check(st["private_refused"] == 1 and st["logins_failed"] >= 1 and st["private_visits"] == 0,
          f"refused and counted as a failed login: {st}")
    for _ in range(6):  # guesses: the address is backed off
        check(nothing_back(mport) == b"", "still nothing")
    mallory.wait_line(r"too many failed logins or visits from your address")
    srv.wait_line(r"wrong secret_key for private proxy alice\.svc; \d+ failed logins")
    check(not seen, f"the service never saw a connection: {len(seen)}")
    _, bport = visitor(env, srv, "alice.svc", name="bob")
    got = []
    wait_until(lambda: got.append(nothing_back(bport, b"")) or got[-1] == b"private\n", 20,
               "the right key gets through once the back-off is over")


def test_private_allow_users(env):
    """allow_users = bob: bob is served, carol (the right key) is refused with that reason every
    time, and is not backed off for it."""
    srv = env.server("--token", "s3cret")
    echo = echo_service(env)
    owner(env, srv, echo.port, extra="allow_users = bob, dave\n")
    _, bport = visitor(env, srv, "alice.svc", name="bob")
    carol, cport = visitor(env, srv, "alice.svc", name="carol")
    data = os.urandom(100000)
    check(echo_both_ways(bport, data, 30)[0] == len(data), "bob is served")
    for i in range(6):
        mark = carol.mark()
        check(nothing_back(cport) == b"", "carol gets nothing")
        carol.wait_line(r"refused the visit of alice\.svc: client 'carol' is not in the proxy's "
                        r"allow_users", after=mark)
    check(carol.count(r"too many failed") == 0, "not backed off")
    check(echo_both_ways(bport, data, 30)[0] == len(data), "bob still served")
    st = server_stats(srv)
    check(st["private_refused"] == 6 and st["private_visits"] == 2, f"counted: {st}")


def test_private_sudp(env):
    """A private UDP service (sudp) through a [visitor NAME] of type sudp: datagrams of every size
    come back whole; each local sender is a flow of its own at the service; a stcp visitor of the
    same name is refused (the type is part of the address)."""
    srv = env.server("--token", "s3cret")
    echo = Echo()
    env.servers.append(Closer(echo.close))
    owner(env, srv, echo.port, kind="sudp", proxy="dns")
    port, tport = low_free_ports(2)
    ini = write(env, "erin.ini", f"[visitor dns]\ntype = sudp\nserver_name = alice.dns\n"
                                 f"secret_key = correct horse\nbind = {port}\n\n"
                                 f"[visitor wrong]\nserver_name = alice.dns\n"
                                 f"secret_key = correct horse\nbind = {tport}\n")
    erin = env.client(srv, "-c", ini, "--name", "erin", name="visitor-erin", wait=False)
    erin.wait_line(rf"visitor dns: UDP 127\.0\.0\.1:{port} reaches alice\.dns \(sudp\)")
    erin.wait_line(r"logged in to")
    flows = set()
    for n in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOP, 0))
        s.settimeout(10)
        for size in (0, 1, 1400, 9000, 60000):
            data = os.urandom(size)
            s.sendto(data, (LOOP, port))
            got, frm = s.recvfrom(65536)
            head, _, body = got.partition(b"|")
            check(body == data and frm == (LOOP, port), f"sender {n}: {size} bytes back whole")
            flows.add((n, int(head)))
        s.close()
    check(len({f for _, f in flows}) == 3 and len(flows) == 3, f"a flow per sender: {flows}")
    check(nothing_back(tport) == b"", "a stcp visitor of an sudp proxy gets nothing")
    erin.wait_line(r"visitor wrong: the server refused the visit of alice\.dns: no private proxy "
                   r"of type stcp named alice\.dns")


def test_private_owner_comes_and_goes(env):
    """A visit before the owner is there is refused (no such proxy); once it is, served; the owner
    killed (SIGKILL): refused again; back: served, without touching the visitor."""
    srv = env.server("--token", "s3cret")
    echo = echo_service(env)
    bob, port = visitor(env, srv, "alice.svc")
    check(nothing_back(port) == b"", "no owner yet: nothing")
    bob.wait_line(r"refused the visit of alice\.svc: no private proxy of type stcp named alice\.svc")
    alice = owner(env, srv, echo.port)
    check(nothing_back(port, b"x" * 1000) == b"x" * 1000, "served once the owner is there")
    alice.signal(9)
    alice.wait_exit()
    srv.wait_line(r"client alice .* disconnected")
    mark = bob.mark()
    check(nothing_back(port) == b"", "the owner gone: nothing")
    # (a visit checked on another worker in the instant the owner's session was going is refused
    # there, as "gone")
    bob.wait_line(r"refused the visit of alice\.svc: (no private proxy of type stcp named "
                  r"alice\.svc|the private proxy is gone)", after=mark)
    owner(env, srv, echo.port)
    check(nothing_back(port, b"y" * 1000) == b"y" * 1000, "served again")


def np_client(*args):
    return subprocess.run([os.environ["NP_CLIENT"], *args], capture_output=True, text=True,
                          timeout=30)


def test_private_config_errors(env):
    """What np-client refuses before it dials (exit 2, with what to do), and a visitor's port in
    use (exit 2, the port named)."""
    stcp = write(env, "nokey.ini", "[proxy ssh]\ntype = stcp\nlocal = 127.0.0.1:22\n")
    cases = [
        (["-c", stcp], "a private proxy (type = stcp, sudp) needs secret_key"),
        (["-L", "6000"], "expected [BIND_ADDR:]PORT:OWNER.PROXY"),
        (["-L", "6000:alice"], "is not OWNER.PROXY"),
        (["-L", "6000:alice.ssh"], "secret_key is missing"),
        (["--secret-key", "k", "-L", "6000:a.b", "-L", "6000:c.d"],
         "the same local address and port"),
        (["-c", write(env, "dot.ini", "[proxy s.sh]\ntype = stcp\nlocal = 127.0.0.1:22\n"
                                      "secret_key = k\n")], "a private proxy's name has no dot"),
        (["-c", write(env, "users.ini", "[proxy ssh]\ntype = stcp\nlocal = 127.0.0.1:22\n"
                                        "allow_users = bob\n")], "needs secret_key"),
    ]
    for args, want in cases:
        r = np_client("--server", f"{LOOP}:1", "--insecure", *args)
        check(r.returncode == 2 and want in r.stderr, f"{args}: {r.returncode} {r.stderr!r}")
    held = socket.socket()
    held.bind((LOOP, 0))
    held.listen()
    port = held.getsockname()[1]
    r = np_client("--server", f"{LOOP}:1", "--insecure", "--secret-key", "k", "-L",
                  f"{port}:alice.ssh")
    held.close()
    check(r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}: address already in use" in r.stderr,
          f"a port in use: {r.returncode} {r.stderr!r}")


def test_private_not_logged_in(env):
    """A visitor whose server is not there turns local connections away at once (and says so once
    a second, not per connection)."""
    port = low_free_ports(2)
    keyfile = write(env, "k.key", "k\n")
    p = env.client(type("S", (), {"port": port[1], "fingerprint": None})(), "--name", "bob",
                   "--secret-key-file", keyfile, "-L", f"{port[0]}:alice.ssh", wait=False)
    p.wait_line(rf"visitor stcp-{port[0]}: TCP 127\.0\.0\.1:{port[0]} reaches alice\.ssh")
    t0 = time.monotonic()
    for _ in range(5):
        check(nothing_back(port[0]) == b"", "turned away")
    p.wait_line(r"not logged in to a server yet")
    spent = time.monotonic() - t0
    check(p.count(r"not logged in to a server yet") <= math.ceil(spent) + 1,
          f"said once a second at most ({spent:.2f}s)")


def answer_and_rest(w):
    """The server's VISIT answer on w, and what follows it until the end."""
    t, m = npwire.recv_msg(w)
    check(t == npwire.VISIT, f"answered with VISIT: {t} {m}")
    rest = b""
    try:
        while True:
            b = w.recv(65536)
            if not b:
                break
            rest += b
    except OSError:
        pass
    w.close()
    return m, rest


def test_private_hostile_visits(env):
    """VISIT written from docs/protocol.md by a raw client: the honest one is served; a replayed
    serial, a wrong secret, a session that is not there, the wrong kind, a name past its limit and
    VISIT on the control stream are each refused with their status (or closed), the service sees
    none of them, and an honest np-client visitor is served after."""
    srv = env.server("--token", "s3cret")
    seen, port = counting_service(env)
    owner(env, srv, port)
    raw = npwire.Client(srv, name="raw")
    m, rest = answer_and_rest(raw.visit(1, "alice.svc", "correct horse"))
    check(m["status"] == 0 and rest == b"private\n", f"the proof as documented: {m} {rest!r}")
    cases = [
        (raw.visit(1, "alice.svc", "correct horse"), npwire.NP_EAUTH, "a replayed serial"),
        (raw.visit(2, "alice.svc", "wrong horse"), npwire.NP_ESECRET, "a wrong secret"),
        (raw.visit(3, "alice.svc", "correct horse", session=raw.session ^ (1 << 40)),
         npwire.NP_EAUTH, "a session that is not there"),
        (raw.visit(8, "alice.svc", "correct horse", key=bytes(32)), npwire.NP_EAUTH,
         "a session named without its key"),
        (raw.visit(4, "alice.svc", "correct horse", kind=npwire.SUDP), npwire.NP_ENOPROXY,
         "the wrong kind"),
        (raw.visit(5, "alice.nothing", "correct horse"), npwire.NP_ENOPROXY, "no such proxy"),
    ]
    for w, status, what in cases:
        m, rest = answer_and_rest(w)
        check(m["status"] == status and rest == b"", f"{what}: {m['status']} {m['text']!r} {rest!r}")
    # a name longer than a name may be (200 bytes): not a message at all, the connection ends
    body = (bytes([npwire.VISIT]) + struct.pack(">QQB", raw.session, 6, npwire.STCP) + bytes([200])
            + b"n" * 200 + bytes(64) + struct.pack(">i", 0) + b"\x00")
    w = npwire.dial(srv)
    w.sendall(struct.pack(">I", len(body)) + body)
    w.settimeout(10)
    got = b""
    while True:
        b = w.recv(65536)
        if not b:
            break
        got += b
    w.close()
    while len(got) >= 4:
        (n,) = struct.unpack(">I", got[:4])
        t, m = npwire.decode_body(got[4:4 + n])
        check(t != npwire.VISIT, f"an oversized name gets no VISIT answer: {t} {m}")
        got = got[4 + n:]
    check(len(seen) == 1, f"the service saw the honest visit only: {len(seen)}")
    # VISIT on the control stream is out of place: the session ends
    raw.s.sendall(raw.visit_msg(7, "alice.svc", "correct horse"))
    srv.wait_line(r"unexpected VISIT message, closing")
    _, bport = visitor(env, srv, "alice.svc")
    check(nothing_back(bport, b"") == b"private\n", "an honest visitor is served after")
    st = server_stats(srv)
    check(st["private_refused"] == 6 and st["private_visits"] == 2, f"counted: {st}")


def test_private_reload_rotates(env):
    """SIGHUP with a new secret_key and allow_users: the proxy is registered again with them, so the
    old key and the user taken off the list are refused from then on, and the new ones served."""
    srv = env.server("--token", "s3cret")
    echo = echo_service(env)
    alice = owner(env, srv, echo.port, extra="allow_users = bob\n")
    bob, bport = visitor(env, srv, "alice.svc", name="bob")
    check(nothing_back(bport, b"a" * 100) == b"a" * 100, "bob served")
    write(env, "alice.ini", f"[proxy svc]\ntype = stcp\nlocal = {LOOP}:{echo.port}\n"
                            f"secret_key = battery staple\nallow_users = carol\n")
    mark = alice.mark()
    alice.signal(signal.SIGHUP)
    alice.wait_line(r"proxy svc: private \(stcp\): visitors reach it as alice\.svc", after=mark)
    mark = bob.mark()
    check(nothing_back(bport) == b"", "bob and the old key: nothing")
    bob.wait_line(r"refused the visit of alice\.svc: wrong secret_key", after=mark)
    _, cport = visitor(env, srv, "alice.svc", key="battery staple", name="carol")
    check(nothing_back(cport, b"c" * 100) == b"c" * 100, "carol with the new key served")


TESTS = {
    "private_stcp_two_way": test_private_stcp_two_way,
    "private_wrong_key_gets_nothing": test_private_wrong_key_gets_nothing,
    "private_allow_users": test_private_allow_users,
    "private_sudp": test_private_sudp,
    "private_owner_comes_and_goes": test_private_owner_comes_and_goes,
    "private_config_errors": test_private_config_errors,
    "private_not_logged_in": test_private_not_logged_in,
    "private_hostile_visits": test_private_hostile_visits,
    "private_reload_rotates": test_private_reload_rotates,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
