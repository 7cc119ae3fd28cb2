#!/usr/bin/env python3
"""End-to-end tests of np-server and np-client with real clients (curl, socat) over loopback."""

import concurrent.futures
import hashlib
import http.server
import os
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import (CLIENT, LOOP, SERVER, Digest, Greeter, Proc, check, connect,  # noqa: E402
                    greet, low_free_ports, pattern, port_closed, proxy_ports, recv_all, run,
                    server_stats, wait_until)
from npwire import NP_ENAMEINUSE  # noqa: E402

BIG = 64 * 1024 * 1024


class Files(http.server.BaseHTTPRequestHandler):
    """/hello -> a greeting; /big -> 64 MiB of a known pattern; /id/X -> X."""

    big = None

    def do_GET(self):
        if self.path == "/big":
            body = Files.big
        elif self.path.startswith("/id/"):
            body = self.path[4:].encode()
        else:
            body = b"hello from behind the NAT\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def http_service(env):
    return env.service(Files)


def curl(port, *paths):
    """GET each path in turn; curl reuses one connection for them (HTTP keep-alive)."""
    urls = [f"http://{LOOP}:{port}{p}" for p in paths]
    out = subprocess.run(["curl", "-sS", "--max-time", "30", *urls], capture_output=True, check=False)
    check(out.returncode == 0, f"curl {paths}: exit {out.returncode}: {out.stderr.decode()}")
    return out.stdout


def test_curl(env):
    web = http_service(env)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{web}")
    (port,) = cl.ports.values()
    # the log names the public port with the server's host, not with the control port
    cl.wait_line(rf"info +proxy \S+: public port {port} at {LOOP}:{port}$", stream="stderr")
    check(curl(port, "/hello") == b"hello from behind the NAT\n", "curl body")
    # keep-alive: two requests over one visitor connection
    out = curl(port, "/id/one", "/id/two", "/id/three")
    check(out == b"onetwothree", f"keep-alive bodies: {out!r}")


def test_concurrent_visitors(env):
    """100 visitors at once each get their own answer: a visitor is never joined with another's tunnel."""
    greeter = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{greeter}")
    (port,) = cl.ports.values()

    barrier = threading.Barrier(100)

    def one(i):
        s = connect(port)
        barrier.wait()
        s.sendall(b"visitor-%d\n" % i)
        got = recv_all(s)
        s.close()
        return got == b"you are visitor-%d\n" % i

    with concurrent.futures.ThreadPoolExecutor(100) as ex:
        results = list(ex.map(one, range(100)))
    check(all(results), f"{results.count(False)} of 100 visitors got someone else's answer")
    m = srv.wait_line(r"join done")  # joins are logged at debug
    check(m is not None, "joins logged")


def test_64mib_both_ways(env):
    Files.big = pattern(BIG, seed=1)
    web = http_service(env)
    digest = env.service(Digest)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{web}", "-R", f"{LOOP}:0:{LOOP}:{digest}")
    web_port = cl.ports[f"tcp-{LOOP}-{web}"]
    digest_port = cl.ports[f"tcp-{LOOP}-{digest}"]
    got = curl(web_port, "/big")
    check(len(got) == BIG, f"download: {len(got)} bytes")
    check(hashlib.sha256(got).digest() == hashlib.sha256(Files.big).digest(), "download differs")
    # upload: the service answers only after our half-close, so this also proves half-close
    s = connect(digest_port, timeout=60)
    s.sendall(Files.big)
    s.shutdown(socket.SHUT_WR)
    answer = recv_all(s).decode().split()
    check(answer == [str(BIG), hashlib.sha256(Files.big).hexdigest()], f"upload: {answer}")


def test_half_close_socat(env):
    """socat sends a request, half-closes, and must still receive the whole reply."""
    digest = env.service(Digest)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{digest}")
    (port,) = cl.ports.values()
    data = pattern(3 * 1024 * 1024, seed=2)
    out = subprocess.run(["socat", "-t", "10", "-", f"TCP:{LOOP}:{port}"], input=data,
                         capture_output=True, timeout=30, check=False)
    want = b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())
    check(out.stdout == want, f"socat got {out.stdout!r}, stderr {out.stderr!r}")


def test_wrong_token(env):
    web = http_service(env)
    srv = env.server("--token", "s3cret")
    free = socket.socket()
    free.bind((LOOP, 0))
    port = free.getsockname()[1]
    free.close()
    cl = env.client(srv, "-R", f"{LOOP}:{port}:{LOOP}:{web}", token="guess", wait=False)
    rc = cl.wait_exit(10)
    check(rc == 3, f"exit code {rc}, want 3 (authentication refused)")
    cl.wait_line(r"wrong token", stream="stderr")
    srv.wait_line(r"refused: wrong token")
    check(port_closed(port), "a public port was opened for a wrong token")


def test_two_clients(env):
    a_svc = env.service(Greeter)
    b_web = http_service(env)
    srv = env.server("--token", "s3cret")
    a = env.client(srv, "--name", "alpha", "-R", f"{LOOP}:0:{LOOP}:{a_svc}", name="alpha")
    b = env.client(srv, "--name", "beta", "-R", f"{LOOP}:0:{LOOP}:{b_web}", name="beta")
    (pa,) = a.ports.values()
    (pb,) = b.ports.values()
    s = connect(pa)
    s.sendall(b"x\n")
    check(recv_all(s) == b"you are x\n", "alpha's service")
    check(curl(pb, "/id/beta") == b"beta", "beta's service")


def kill_and_check_other(env, sig):
    """Kill (or freeze) one of two clients: its port is freed, the other keeps working."""
    a_svc = env.service(Greeter)
    b_web = http_service(env)
    srv = env.server("--token", "s3cret", "--heartbeat-interval", "200ms",
                     "--heartbeat-timeout", "1s")
    a = env.client(srv, "--name", "alpha", "--heartbeat-interval", "200ms", "--heartbeat-timeout",
                   "1s", "-R", f"{LOOP}:0:{LOOP}:{a_svc}", name="alpha")
    b = env.client(srv, "--name", "beta", "-R", f"{LOOP}:0:{LOOP}:{b_web}", name="beta")
    (pa,) = a.ports.values()
    (pb,) = b.ports.values()
    t0 = time.monotonic()
    a.signal(sig)
    freed = wait_until(lambda: port_closed(pa), 5, "dead client's port freed")
    check(curl(pb, "/id/still-here") == b"still-here", "the other client's service")
    return a, srv, pa, freed - t0, a_svc


def test_sigkill_frees_port(env):
    _, srv, _, took, _ = kill_and_check_other(env, signal.SIGKILL)
    srv.wait_line(r"client alpha .* disconnected")
    check(took < 2.0, f"port freed after {took:.2f}s")


def test_silent_client_times_out_and_comes_back(env):
    """A frozen client (no FIN, no RST) is declared dead by the heartbeat timeout; a restarted client
    with the same name gets its port back."""
    a, srv, pa, took, a_svc = kill_and_check_other(env, signal.SIGSTOP)
    srv.wait_line(r"client alpha .* disconnected: no heartbeat")
    check(took <= 1.0 + 0.5, f"port freed after {took:.2f}s with a 1s heartbeat timeout")
    a2 = env.client(srv, "--name", "alpha", "-R", f"{LOOP}:{pa}:{LOOP}:{a_svc}", name="alpha-2")
    check(list(a2.ports.values()) == [pa], f"restarted client got {a2.ports}, want port {pa}")
    s = connect(pa)
    s.sendall(b"again\n")
    check(recv_all(s) == b"you are again\n", "restarted client's service")


def test_takeover_by_name(env):
    """A second live client under a name in use is refused with a reason and exit 5, and the first
    keeps its port; --takeover replaces it (here the first is frozen: the server cannot tell)."""
    svc = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    a = env.client(srv, "--name", "laptop", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="old")
    (port,) = a.ports.values()
    b = env.client(srv, "--name", "laptop", "-R", f"{LOOP}:{port}:{LOOP}:{svc}", name="second",
                   wait=False)
    check(b.wait_exit(10) == 5, f"a second client under the same name exits {b.p.returncode}, not 5")
    b.wait_line(r"client name 'laptop' is in use by a live client from 127\.0\.0\.1:\d+: give each "
                r"client its own name with --name \(or --takeover to replace that one\)")
    srv.wait_line(r"login as 'laptop' refused: a live client from .* already uses that name")
    check(greet(port, b"first") == b"you are first\n", "the first client still serves its port")
    a.signal(signal.SIGSTOP)
    c = env.client(srv, "--name", "laptop", "--takeover", "-R", f"{LOOP}:{port}:{LOOP}:{svc}",
                   name="new")
    check(list(c.ports.values()) == [port], f"--takeover login got {c.ports}")
    srv.wait_line(r"client laptop logged in again from .*; closing its old session \(--takeover\)")
    s = connect(port)
    s.sendall(b"new\n")
    check(recv_all(s) == b"you are new\n", "service after takeover")



def test_restart_after_sigkill_same_name(env):
    """A client killed with SIGKILL and started again at once under its name gets its port back:
    the kernel closed the old connection, so nothing is in use."""
    svc = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    a = env.client(srv, "--name", "box", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="old")
    (port,) = a.ports.values()
    a.signal(signal.SIGKILL)
    b = env.client(srv, "--name", "box", "-R", f"{LOOP}:{port}:{LOOP}:{svc}", name="restarted")
    check(list(b.ports.values()) == [port], f"restarted client got {b.ports}")
    check(greet(port, b"back") == b"you are back\n", "service after the restart")


def test_same_client_comes_back(env):
    """A client sends an instance id, random and fixed for its life, at every login: a login under
    a live name with that session's id replaces it at once (the same process reconnecting after
    its connection died unnoticed, or after it never got the answer); another id is refused; once
    the old session leaves a ping unanswered for half a heartbeat interval (1 s at least), anyone
    may."""
    srv = env.server("--token", "s3cret", "--heartbeat-interval", "1s", "--heartbeat-timeout", "30s")
    first = npwire.Client(srv, name="edge", login_fields={"id": 1234})
    check(first.login["status"] == 0, f"first login: {first.login}")
    other = npwire.Client(srv, name="edge", login_fields={"id": 4321})
    check(other.login["status"] == NP_ENAMEINUSE and "--name" in other.login["text"],
          f"another instance is refused: {other.login}")
    again = npwire.Client(srv, name="edge", login_fields={"id": 1234})
    check(again.login["status"] == 0, f"the same instance is let in: {again.login}")
    srv.wait_line(r"client edge logged in again .*\(the same client coming back\)")
    # again's session now goes silent (npwire answers no ping unless asked to read): once a ping
    # of the server's has waited 1 s, a new login under the name is let in
    t0 = time.monotonic()
    wait_until(lambda: npwire.Client(srv, name="edge").login["status"] == 0, 5,
               "a login after the old session missed its heartbeats")
    check(time.monotonic() - t0 >= 1.0, "let in before the old session missed a heartbeat")
    srv.wait_line(r"client edge logged in again .*\(it missed its heartbeats\)")


def test_takeover_is_final_for_the_replaced(env):
    """A live client replaced by --takeover is told so and exits 5 instead of coming back (two
    clients with --takeover would otherwise replace each other for ever)."""
    svc = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    a = env.client(srv, "--name", "desk", "-R", f"{LOOP}:0:{LOOP}:{svc}", name="old")
    (port,) = a.ports.values()
    b = env.client(srv, "--name", "desk", "--takeover", "-R", f"{LOOP}:{port}:{LOOP}:{svc}",
                   name="new")
    check(list(b.ports.values()) == [port], f"--takeover login got {b.ports}")
    check(a.wait_exit(10) == 5, f"the replaced client exits {a.p.returncode}, not 5")
    a.wait_line(r"replaced by a client logged in as 'desk' with --takeover from 127\.0\.0\.1")
    check(greet(port, b"new") == b"you are new\n", "the new client serves the port")


def test_client_signals(env):
    """SIGUSR1 makes np-client log its counters and SIGHUP reload (nothing changed: its flags are
    read again); both used to kill it. It keeps serving after each, on the same session."""
    greeter = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{greeter}")
    (port,) = cl.ports.values()
    check(greet(port, b"one") == b"you are one\n", "served before the signals")
    cl.wait_line(r"work connection done")  # the counters count finished joins
    st = server_stats(cl)
    check(st["connects"] == 1 and st["work_opened"] == 1 and st["local_failed"] == 0, f"{st}")
    check(st["bytes_in"] == len(b"one\n") and st["bytes_out"] == len(b"you are one\n"), f"{st}")
    mark = cl.mark()
    cl.signal(signal.SIGHUP)
    cl.wait_line(r"reload: done, 1 proxy configured", after=mark)
    check(greet(port, b"two") == b"you are two\n", "served after SIGHUP")
    check(cl.p.poll() is None, "np-client still running")
    check(server_stats(cl)["connects"] == 1, "the session survived the signals")


def test_port_refusals(env):
    web = http_service(env)
    taken, allowed, denied = low_free_ports(3)
    srv = env.server("--token", "s3cret", "--allow-ports", "1024-65535")
    busy = socket.socket()
    busy.bind((LOOP, taken))
    busy.listen()
    strict = env.server("--token", "s3cret", "--allow-ports", f"{allowed}", name="strict")
    a = env.client(srv, "--name", "a", "-R", f"{LOOP}:{taken}:{LOOP}:{web}", wait=False, name="a")
    a.wait_line(rf"proxy tcp-{taken} refused by the server: port {taken} is already in use")
    b = env.client(strict, "--name", "b", "-R", f"{LOOP}:{denied}:{LOOP}:{web}", wait=False, name="b")
    b.wait_line(rf"refused by the server: port {denied} is outside the server's allow_ports")
    check(port_closed(denied), "denied port must stay closed")
    # port 0 is given a port inside allow_ports
    c = env.client(strict, "--name", "c", "-R", f"{LOOP}:0:{LOOP}:{web}", name="c")
    check(list(c.ports.values()) == [allowed], f"port 0 inside allow_ports: {c.ports}")
    busy.close()


def test_local_service_down(env):
    """The client says so at once when its local service is unreachable; the visitor is not left
    waiting for the pending timeout."""
    dead = socket.socket()
    dead.bind((LOOP, 0))
    dead_port = dead.getsockname()[1]  # bound, not listening: refused
    srv = env.server("--token", "s3cret", "--pending-timeout", "20s")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{dead_port}")
    (port,) = cl.ports.values()
    t0 = time.monotonic()
    try:
        s = connect(port)  # even the connect may already meet the reset: that fast
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        got = recv_all(s)
    except (ConnectionResetError, BrokenPipeError):
        got = b""  # closed with our request unread: the kernel answers with RST, just as promptly
    check(got == b"", "no data from a dead service")
    took = time.monotonic() - t0
    check(took < 2, f"visitor closed after {took:.2f}s")
    srv.wait_line(r"client could not reach its local service: cannot reach")
    cl.wait_line(r"cannot reach local service")
    dead.close()


def test_server_restart(env):
    """The server goes away and comes back on the same port: the client reconnects (backoff capped at
    1s here) and re-registers; the service is back within a few seconds of the server."""
    web = http_service(env)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{web}")
    (port,) = cl.ports.values()
    check(curl(port, "/id/before") == b"before", "before restart")
    mark = cl.mark()
    srv.signal(signal.SIGTERM)
    check(srv.wait_exit() == 0, "server exit code on SIGTERM")
    cl.wait_line(r"server closed the session: server shutting down", after=mark)
    srv2 = env.server("--token", "s3cret", bind=f"{LOOP}:{srv.port}", name="np-server-2",
                      tls_dir=srv.tls_dir)
    check(srv2.fingerprint == srv.fingerprint, "the TLS identity survives a restart")
    t0 = time.monotonic()
    (port2,) = proxy_ports(cl, after=mark, timeout=10).values()
    took = time.monotonic() - t0
    check(curl(port2, "/id/after") == b"after", "after restart")
    check(took < 3, f"service back {took:.2f}s after the server")
    srv2.wait_line(r"client .* logged in")


def test_work_pool(env):
    """Pre-opened work connections: visitors are joined at once with one of them, the pool refills,
    and everything still arrives byte-exact (also the visitor's first bytes, sent with START)."""
    greeter = env.service(Greeter)
    digest = env.service(Digest)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "--work-pool", "4", "-R", f"{LOOP}:0:{LOOP}:{greeter}",
                    "-R", f"{LOOP}:0:{LOOP}:{digest}")
    gport = cl.ports[f"tcp-{LOOP}-{greeter}"]
    dport = cl.ports[f"tcp-{LOOP}-{digest}"]
    srv.wait_line(r"client .* logged in")
    for i in range(12):  # more visitors than the pool holds: it must refill
        s = connect(gport)
        s.sendall(b"pooled-%d\n" % i)
        check(recv_all(s) == b"you are pooled-%d\n" % i, f"visitor {i}")
    data = pattern(2 << 20, seed=9)
    s = connect(dport)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    want = b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())
    check(recv_all(s) == want, "2 MiB through a pooled connection")
    joined = sum("joined with a pre-opened work connection" in t for _, t in srv.lines)
    check(joined >= 10, f"only {joined} of 13 visitors used the pool")


def established_to(port):
    """Established TCP connections to 127.0.0.1:port (from /proc/net/tcp, counted at the remote)."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            rport = int(fields[2].split(":")[1], 16)
            if rport == port and fields[3] == "01":
                n += 1
    return n


def test_mux_one_connection(env):
    """--mux true: control and 50 concurrent visitors (and the pre-opened ones) share one TCP
    connection to the server, and every visitor still gets its own answer."""
    greeter = env.service(Greeter)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "--mux", "true", "-R", f"{LOOP}:0:{LOOP}:{greeter}")
    (port,) = cl.ports.values()
    srv.wait_line(r"multiplexed connection")
    barrier = threading.Barrier(50)
    peak = []

    def one(i):
        s = connect(port)
        barrier.wait()
        s.sendall(b"m-%d\n" % i)
        got = recv_all(s)
        peak.append(established_to(srv.port))
        s.close()
        return got == b"you are m-%d\n" % i

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        results = list(ex.map(one, range(50)))
    check(all(results), f"{results.count(False)} of 50 visitors got a wrong answer")
    check(max(peak) == 1, f"client-server connections while serving: up to {max(peak)}")
    check(srv.count(r"connection from .*#\d+") >= 50, "visitors came over streams")


ACCESS = (r"info +access proxy=(?P<proxy>\S+) visitor=(?P<visitor>\S+) in=(?P<inb>\d+) "
          r"out=(?P<outb>\d+) duration=(?P<secs>\d+\.\d{3})s end=(?P<end>\S+)$")


def access_line(srv, visitor, after=0):
    """The access log line np-server wrote for the visitor from 127.0.0.1:visitor."""
    return srv.wait_line(ACCESS.replace(r"(?P<visitor>\S+)", rf"(?P<visitor>{LOOP}:{visitor})"),
                         after=after)


class Hold(socketserver.BaseRequestHandler):
    """Reads until the peer goes, telling the test (got) when bytes arrived; never answers."""

    got = None

    def handle(self):
        while True:
            try:
                b = self.request.recv(1 << 16)
            except OSError:
                return
            if not b:
                return
            Hold.got.set()


def reset_visit(port):
    """A visitor the tunnel resets: its port is known before the connect, since the reset may come
    so early that the connect or a getsockname after it fails (seen under CI's load)."""
    s = socket.socket()
    s.bind((LOOP, 0))
    local = s.getsockname()[1]
    s.settimeout(10)
    try:
        s.connect((LOOP, port))
        recv_all(s)
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return local


def test_access_log(env):
    """One info line per TCP visitor once it is gone: its proxy, its address, the bytes each way as
    the visitor saw them, the duration, and how it ended; none with --access-log false."""
    web = http_service(env)
    Hold.got = threading.Event()
    hold = env.service(Hold)
    dead = socket.socket()
    dead.bind((LOOP, 0))  # bound, not listening: refused
    srv = env.server("--token", "s3cret", "--pending-timeout", "20s")
    # --work-pool 0: a visitor whose local service is down is failed by the client before any join
    cl = env.client(srv, "--work-pool", "0", "-R", f"{LOOP}:0:{LOOP}:{web}",
                    "-R", f"{LOOP}:0:{LOOP}:{hold}", "-R", f"{LOOP}:0:{LOOP}:{dead.getsockname()[1]}")
    name = f"tcp-{LOOP}-{web}"
    # curl says how many bytes it sent and received, and from which port
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "-o", "/dev/null", "-w",
                          "%{local_port} %{size_request} %{size_header} %{size_download}",
                          f"http://{LOOP}:{cl.ports[name]}/id/logged"], capture_output=True,
                         text=True, check=False, timeout=40)
    check(out.returncode == 0, f"curl: {out.stderr}")
    local, sent, header, body = (int(x) for x in out.stdout.split())
    m = access_line(srv, local)
    check(m["proxy"] == name and m["end"] == "closed", f"access line: {m.group(0)}")
    check(int(m["inb"]) == sent and int(m["outb"]) == header + body,
          f"{m.group(0)}: curl sent {sent} bytes and received {header + body}")
    check(float(m["secs"]) < 5, f"duration {m['secs']}s")
    # a visitor that resets once its bytes reached the service: end=reset, with what it sent
    s = connect(cl.ports[f"tcp-{LOOP}-{hold}"])
    local = s.getsockname()[1]
    s.sendall(b"22 bytes, then a reset")
    check(Hold.got.wait(10), "the bytes reached the service")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    m = access_line(srv, local)
    check(m["end"] == "reset" and m["inb"] == "22" and m["outb"] == "0", f"{m.group(0)}")
    # a visitor whose local service is down: end=local_failed
    local = reset_visit(cl.ports[f"tcp-{LOOP}-{dead.getsockname()[1]}"])
    m = access_line(srv, local)
    check(m["end"] == "local_failed" and m["inb"] == "0" and m["outb"] == "0", f"{m.group(0)}")
    # the same through a pre-opened work connection, joined before the client dials its service:
    # the client's WORK_FAIL names the ending, not the reset that follows it (which, without mux,
    # travels on another connection and may come first)
    pooled = env.client(srv, "--name", "pooled", "--work-pool", "1",
                        "-R", f"{LOOP}:0:{LOOP}:{dead.getsockname()[1]}", name="pooled")
    srv.wait_line(r"client pooled: pre-opened work connection \d+ parked")
    local = reset_visit(list(pooled.ports.values())[0])
    m = access_line(srv, local)
    ends = ("local_failed",) if os.environ.get("NP_E2E_MUX") != "0" else ("local_failed", "reset")
    check(m["end"] in ends and m["outb"] == "0", f"pooled: {m.group(0)}")
    check(srv.count(r"access proxy=") == 4, "one line per visitor")
    dead.close()

    # --access-log false: the same visitor leaves no line
    quiet = env.server("--token", "s3cret", "--access-log", "false", name="quiet")
    qc = env.client(quiet, "-R", f"{LOOP}:0:{LOOP}:{web}", name="quiet-client")
    (qport,) = qc.ports.values()
    check(curl(qport, "/id/quiet") == b"quiet", "served with the access log off")
    quiet.wait_line(r"join done")
    server_stats(quiet)  # a later loop turn: an access line would be in by now
    check(quiet.count(r"access proxy=") == 0, "no access line with --access-log false")


def test_cli(env):
    for tool in (SERVER, CLIENT):
        h = subprocess.run([tool, "--help"], capture_output=True, text=True)
        check(h.returncode == 0 and "Usage:" in h.stdout, f"{tool} --help")
        v = subprocess.run([tool, "--version"], capture_output=True, text=True)
        check(v.returncode == 0 and "0.1.0" in v.stdout, f"{tool} --version: {v.stdout}")
        b = subprocess.run([tool, "--no-such-flag"], capture_output=True, text=True)
        check(b.returncode == 2 and "--help" in b.stderr, f"{tool} bad flag: {b.returncode}")
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as f:
        f.write("[server]\nbind = 127.0.0.1:1\ncolour = blue\n")
        f.flush()
        r = subprocess.run([SERVER, "-c", f.name], capture_output=True, text=True)
        check(r.returncode == 2 and f"{f.name}:3: unknown key 'colour'" in r.stderr,
              f"config error: {r.returncode} {r.stderr}")
    r = subprocess.run([CLIENT, "--server", "127.0.0.1:1"], capture_output=True, text=True)
    check(r.returncode == 2 and "no proxies" in r.stderr, f"client without -R: {r.stderr}")
    # port in use: exit 1 with a clear message
    busy = socket.socket()
    busy.bind((LOOP, 0))
    busy.listen()
    r = subprocess.run([SERVER, "--bind", f"{LOOP}:{busy.getsockname()[1]}",
                        *env.tls_server_args()], capture_output=True, text=True, timeout=10)
    check(r.returncode == 1 and "address already in use" in r.stderr, f"bind busy: {r.stderr}")
    busy.close()


def test_config_file(env):
    """The same tunnel from INI files, with a flag overriding the file."""
    web = http_service(env)
    with tempfile.TemporaryDirectory() as d:
        s_ini = os.path.join(d, "server.ini")
        c_ini = os.path.join(d, "client.ini")
        with open(s_ini, "w") as f:
            f.write(f"[server]\nbind = {LOOP}:1\ntoken = from-file\nproxy_bind_addr = {LOOP}\n"
                    f"tls_dir = {d}/state\n")
        # The fingerprint a user would copy from the server's start-up log, printed on its own.
        fp = subprocess.run([SERVER, "-c", s_ini, "--fingerprint"], capture_output=True, text=True,
                            timeout=10).stdout.strip()
        srv = Proc(env, "np-server", [SERVER, "-c", s_ini, "--bind", f"{LOOP}:0"])
        srv.port = int(srv.wait_line(r"\(port (\d+)").group(1))
        srv.wait_line(r"TLS certificate " + re.escape(fp))
        with open(c_ini, "w") as f:
            f.write(f"[client]\nserver = {LOOP}:{srv.port}\ntoken = from-file\nname = filed\n"
                    f"server_fingerprint = {fp}\n"
                    f"[proxy web]\nlocal = {LOOP}:{web}\nremote_port = 0\n")
        cl = Proc(env, "np-client", [CLIENT, "-c", c_ini])  # flags: none, all from the file
        ports = proxy_ports(cl, count=1)
        check(curl(ports["web"], "/id/ini") == b"ini", "service configured from files")


TESTS = {f.__name__[5:]: f for f in [
    test_curl, test_concurrent_visitors, test_64mib_both_ways, test_half_close_socat,
    test_wrong_token, test_two_clients, test_sigkill_frees_port,
    test_silent_client_times_out_and_comes_back, test_takeover_by_name,
    test_restart_after_sigkill_same_name, test_same_client_comes_back,
    test_takeover_is_final_for_the_replaced, test_client_signals,
    test_port_refusals, test_local_service_down, test_server_restart, test_work_pool,
    test_mux_one_connection, test_access_log, test_cli, test_config_file,
]}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
