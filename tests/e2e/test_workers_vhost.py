#!/usr/bin/env python3
"""The vhost ports with workers = 2: both workers listen on vhost_http_port and vhost_https_port,
route against one table, and hand a request whose route another worker owns over to it (its head
or ClientHello read again there). Clients land on a random worker, so each case starts clients until
it has one on each worker."""
import hashlib
import http.client
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nptest import LOOP, check, low_free_ports, run, server_stats  # noqa: E402
from test_http_vhost import curl, echo_service, start_client, tls_service  # noqa: E402
from test_workers import logged_in  # noqa: E402

WORKERS = ["--workers", "2", "--token", "s3cret"]


def clients_on_both(env, srv, want, make):
    """Start clients (make(i) starts the i-th, named f"c{i}") until at least want of them are up
    and both workers have one; 30 at most (all on one worker: 2^-29). Returns {name: worker}."""
    where = {}
    for i in range(30):
        mark = srv.mark()
        make(i)
        where[f"c{i}"] = logged_in(srv, f"c{i}", after=mark, timeout=15)
        if len(where) >= want and set(where.values()) == {0, 1}:
            return where
    check(False, f"clients on workers {sorted(set(where.values()))} only")


def get(vport, host, path="/", close=True):
    conn = http.client.HTTPConnection(LOOP, vport, timeout=20)
    conn.request("GET", path, headers={"Host": host, **({"Connection": "close"} if close else {})})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def http_setup(env, want):
    vport, = low_free_ports(1)
    srv = env.server(*WORKERS, "--vhost-http-port", str(vport))
    srv.wait_line(rf"HTTP services on port {vport} \(vhost_http_port\)")

    def make(i):
        svc = echo_service(env, f"s{i}")
        start_client(env, srv, f"c{i}", {f"p{i}": f"local = {LOOP}:{svc}\n"
                                         f"custom_domains = c{i}.test"})
    return srv, vport, clients_on_both(env, srv, want, make)


def test_vhost_close_requests_over_workers(env):
    """8 clients or more on both workers; 400 Connection: close requests over their hosts: each is
    200 with its own service's answer, and some were handed between workers."""
    srv, vport, where = http_setup(env, 8)
    names = sorted(where)
    for k in range(400):
        name = names[k % len(names)]
        status, body = get(vport, f"{name}.test", f"/r{k}")
        check(status == 200, f"request {k} for {name}: {status} {body[:200]!r}")
        a = json.loads(body)
        check(a["service"] == "s" + name[1:] and a["path"] == f"/r{k}",
              f"request {k} for {name} reached {a['service']} {a['path']}")
    st = server_stats(srv)
    check(st["conns_moved"] > 0, "requests were handed to their route's worker")
    check(st["joined"] >= 400, f"400 visitors joined, counted {st['joined']}")


def test_vhost_keep_alive_alternates_workers(env):
    """One keep-alive connection alternating between hosts served on worker 0 and worker 1: it is
    handed over after each completed response, and every answer is the right service's."""
    srv, vport, where = http_setup(env, 2)
    a = next(n for n, w in where.items() if w == 0)
    b = next(n for n, w in where.items() if w == 1)
    before = server_stats(srv)["conns_moved"]
    conn = http.client.HTTPConnection(LOOP, vport, timeout=20)
    conn.connect()
    local = conn.sock.getsockname()
    for k in range(20):
        name = (a, b)[k % 2]
        conn.request("GET", f"/k{k}", headers={"Host": f"{name}.test"})
        r = conn.getresponse()
        body = r.read()
        check(r.status == 200, f"request {k} for {name}: {r.status}")
        ans = json.loads(body)
        check(ans["service"] == "s" + name[1:] and ans["path"] == f"/k{k}",
              f"request {k} for {name} reached {ans['service']}")
        check(conn.sock is not None and conn.sock.getsockname() == local,
              "the same connection all along")
    conn.close()
    moved = server_stats(srv)["conns_moved"] - before
    check(moved >= 19, f"handed over at each switch of worker: {moved} moves for 20 requests")


def test_vhost_head_split_before_handover(env):
    """A POST whose head comes in pieces, its body's start with the head's end and the rest after:
    read whole on the worker that routes it and on the one it is handed to (both hosts are tried,
    so one of them moves whichever worker takes the connection)."""
    srv, vport, where = http_setup(env, 2)
    body = bytes(range(256)) * 64
    for name in (next(n for n, w in where.items() if w == 0),
                 next(n for n, w in where.items() if w == 1)):
        s = socket.create_connection((LOOP, vport), timeout=20)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (f"POST /split HTTP/1.1\r\nHost: {name}.test\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        # Separate segments, each read apart: nothing to await but the time they take to arrive.
        for piece in (head[:7], head[7:30], head[30:] + body[:1000], body[1000:]):
            s.sendall(piece)
            time.sleep(0.05)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        check(data.startswith(b"HTTP/1.1 200"), f"{name}: {data[:200]!r}")
        ans = json.loads(data.split(b"\r\n\r\n", 1)[1])
        check(ans["service"] == "s" + name[1:] and ans["length"] == len(body) and
              ans["body"] == hashlib.sha256(body).hexdigest(), f"{name}: the whole body: {ans}")


def test_vhost_https_by_sni_over_workers(env):
    """HTTPS services on clients of both workers behind one vhost_https_port: each name reaches its
    own service (curl verifies its certificate) whichever worker took the connection."""
    vport, = low_free_ports(1)
    srv = env.server(*WORKERS, "--vhost-https-port", str(vport))
    srv.wait_line(rf"HTTPS services on port {vport}")
    certs = {}

    def make(i):
        port, cert = tls_service(env, f"c{i}.test")
        certs[f"c{i}"] = cert
        start_client(env, srv, f"c{i}", {f"s{i}": f"local = {LOOP}:{port}\n"
                                         f"custom_domains = c{i}.test"}, kind="https")
    where = clients_on_both(env, srv, 2, make)
    before = server_stats(srv)["conns_moved"]
    for k in range(6):
        for name in where:
            out, _ = curl(vport, f"https://{name}.test:{vport}/", "--cacert", certs[name])
            check(b"s_server" in out or b"Ciphers" in out, f"{name}: {out[:200]!r}")
    check(server_stats(srv)["conns_moved"] > before, "connections were handed over by SNI")


TESTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("test_")}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
