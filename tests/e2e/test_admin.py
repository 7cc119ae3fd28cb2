#!/usr/bin/env python3
"""np-server's admin endpoint (admin_bind): the JSON API checked against traffic curl made through
a tunnel, /metrics through Prometheus' own promtool, /healthz, credentials and their back-off, a
client disconnected through the API, and the limits of a server on the network (a slow sender, an
oversized head, a body, the non-loopback bind without credentials)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (LOOP, Fail, Greeter, Proc, check, low_free_ports, run,  # noqa: E402
                    wait_until)

TOKEN = "adm1n-t0ken"


def admin(env, *args):
    port, = low_free_ports(1)
    srv = env.server("--token", "s3cret", "--admin-bind", f"{LOOP}:{port}", *args)
    srv.wait_line(rf"admin API, /metrics, /healthz and the dashboard on {LOOP}:{port}")
    return srv, port


def get(port, path, token=TOKEN, method="GET", extra=()):
    """(status, body) of one request with curl."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-X", method, *auth, *extra,
                          "-w", "\n%{http_code}", f"http://{LOOP}:{port}{path}"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise Fail(f"curl {path}: {out.stderr.strip()}")
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_admin_api_and_metrics(env):
    """Two clients, traffic through one: the API's clients and proxies and their byte counts match
    what curl moved; /metrics passes promtool and says the same; /healthz needs no credentials."""
    srv, port = admin(env)
    svc = env.service(Greeter)
    a = env.client(srv, "--name", "alpha", "-R", f"0:{LOOP}:{svc}")
    env.client(srv, "--name", "beta", "-R", f"0:{LOOP}:{svc}", name="np-client-beta")
    public = list(a.ports.values())[0]
    s = socket.create_connection((LOOP, public), timeout=10)
    s.sendall(b"hello-admin\n")
    check(s.recv(100) == b"you are hello-admin\n", "the tunnel works")
    s.close()
    srv.wait_line(r"access proxy=\S+ visitor=\S+ in=12 out=20 ")
    code, body = get(port, "/healthz", token=None)
    check(code == 200 and body == "ok\n", f"/healthz: {code} {body!r}")
    code, body = get(port, "/api/v1/server")
    info = json.loads(body)
    check(code == 200 and info["stats"]["clients"] == 2 and info["tls"] is (
        os.environ.get("NP_E2E_TLS") != "0"), f"/api/v1/server: {body}")
    code, body = get(port, "/api/v1/clients")
    clients = {c["name"]: c for c in json.loads(body)["clients"]}
    check(set(clients) == {"alpha", "beta"}, f"clients: {list(clients)}")
    pa = clients["alpha"]["proxies"][0]
    check(pa["port"] == public and pa["type"] == "tcp" and pa["stats"]["bytes_in"] == 12 and
          pa["stats"]["bytes_out"] == 20 and pa["stats"]["visitors_joined"] == 1,
          f"alpha's proxy: {pa}")
    check(clients["beta"]["proxies"][0]["stats"]["bytes_in"] == 0, "beta moved nothing")
    a = clients["alpha"]
    muxed = os.environ.get("NP_E2E_MUX") != "0"
    # under a mux: its control stream and the pre-opened work streams (work_pool, 4 by default)
    check((a["mux_streams"] is not None and a["mux_streams"] >= 1) if muxed
          else a["mux_streams"] is None, f"alpha's mux_streams: {a['mux_streams']}")
    check(a["udp_path"] == "off", f"no UDP proxy, no datagram path: {a['udp_path']}")
    check(abs(a["login_unix_ms"] + a["uptime_ms"] - time.time() * 1000) < 10000,
          f"login_unix_ms {a['login_unix_ms']} + uptime_ms {a['uptime_ms']} is now")
    code, body = get(port, "/api/v1/proxies")
    check(len(json.loads(body)["proxies"]) == 2, f"/api/v1/proxies: {body}")
    code, text = get(port, "/metrics")
    check(code == 200, f"/metrics: {code}")
    promtool = shutil.which("promtool")
    if promtool is None:
        raise Fail("promtool is not installed (scripts/deps --test installs prometheus)")
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    check(lint.returncode == 0, f"promtool check metrics: {lint.stdout}{lint.stderr}")
    want = (f'natproxy_proxy_bytes_in_total{{client="alpha",proxy="{pa["name"]}",type="tcp"}} 12')
    check(want in text.splitlines(), f"{want} in /metrics")
    check("natproxy_server_clients 2" in text.splitlines(), "the clients gauge")


def test_admin_credentials(env):
    """Without or with wrong credentials: 401 naming the scheme; requests without credentials are
    no guesses; after four wrong ones from one address, 429 with Retry-After even for the right
    token; Basic works when configured."""
    srv, port = admin(env, "--admin-token", TOKEN)
    for _ in range(4):  # requests without credentials are not guesses: no back-off from them
        code, _ = get(port, "/api/v1/server", token=None)
        check(code == 401, f"no credentials: {code}")
    code, _ = get(port, "/api/v1/server")
    check(code == 200, f"the right token after four requests without one: {code}")
    for _ in range(4):  # three free, the fourth starts the wait
        code, body = get(port, "/api/v1/server", token="wrong")
        check(code == 401 and "credentials" in body, f"a wrong token: {code} {body}")
    code, body = get(port, "/api/v1/server", token="wrong", extra=("-i",))
    check(code == 429 and "Retry-After: 1" in body, f"after four failures: {code} {body[:200]}")
    code, _ = get(port, "/api/v1/server")
    check(code == 429, f"the right token during the back-off: {code}")
    time.sleep(1.1)  # the back-off's own clock: its 1 s must pass
    code, _ = get(port, "/api/v1/server")
    check(code == 200, f"the right token after the wait: {code}")
    srv2, port2 = admin(env, "--admin-user", "ops", "--admin-password", "pw")
    out = subprocess.run(["curl", "-sS", "-u", "ops:pw", "-w", "\n%{http_code}",
                          f"http://{LOOP}:{port2}/api/v1/server"], capture_output=True, text=True,
                         timeout=30)
    check(out.stdout.endswith("\n200"), f"Basic: {out.stdout[-40:]}")


def test_admin_disconnect(env):
    """POST /api/v1/clients/NAME/disconnect ends that client's session (it is told why and comes
    back by itself); an unknown name is 404; GET on it is 405 (it takes POST)."""
    srv, port = admin(env)
    svc = env.service(Greeter)
    cl = env.client(srv, "--name", "gamma", "-R", f"0:{LOOP}:{svc}")
    mark = cl.mark()
    code, body = get(port, "/api/v1/clients/gamma/disconnect", method="POST")
    check(code == 200 and json.loads(body) == {"disconnected": "gamma"}, f"{code} {body}")
    cl.wait_line(r"server closed the session: disconnected by the server's operator", after=mark)
    cl.wait_line(r"logged in to", after=mark)
    code, body = get(port, "/api/v1/clients/nobody/disconnect", method="POST")
    check(code == 404, f"an unknown client: {code} {body}")
    code, body = get(port, "/api/v1/clients/gamma/disconnect")
    check(code == 405 and "use POST" in body, f"GET: {code} {body}")
    code, _ = get(port, "/api/v1/nothing")
    check(code == 404, f"an unknown endpoint: {code}")


def test_admin_limits(env):
    """A head trickled slower than 5 s is cut; a request followed at once by the client's end is
    answered and closed at once; a 20 KB head gets 431; a body 413; a non-loopback admin_bind
    without credentials stops the server at start (exit 2)."""
    srv, port = admin(env)
    s = socket.create_connection((LOOP, port), timeout=10)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    try:
        while s.recv(100):
            pass
    except ConnectionResetError:
        pass
    waited = time.monotonic() - t0
    check(4 <= waited <= 8, f"a half-sent head was cut after {waited:.1f}s")
    # a request and the client's end at once (printf ... | nc -N): answered and closed at once,
    # not after the head deadline
    s = socket.create_connection((LOOP, port), timeout=10)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
    took = time.monotonic() - t0
    check(got.startswith(b"HTTP/1.1 200") and took < 2, f"half-closed: {got[:20]!r} in {took:.2f}s")
    code, _ = get(port, "/healthz", token=None, extra=("-H", "X-Big: " + "y" * 20000))
    check(code == 431, f"a 20 KB head: {code}")
    code, _ = get(port, "/api/v1/reload", method="POST", extra=("--data", "x=1"))
    check(code == 413, f"a body: {code}")
    # a chunked body is refused before it is read: a trickled one cannot hold the connection
    s = socket.create_connection((LOOP, port), timeout=10)
    s.sendall(b"POST /api/v1/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n")
    check(s.recv(100).startswith(b"HTTP/1.1 413"), "a chunked body: 413 before it ends")
    s.close()
    # a client name that is not printable UTF-8 is refused at login, and np-client gives up
    bad = Proc(env, "np-client-badname", [os.environ["NP_CLIENT"], "--server", f"{LOOP}:{srv.port}",
                                          "--token", "s3cret", "--name", "tab\there",
                                          *env.tls_client_args(srv), "-R", f"0:{LOOP}:9"])
    check(bad.wait_exit() == 2, "a name with a control character: exit 2")
    bad.wait_line(r"a client name is printable UTF-8")
    # the server remembers it for the operator, the name made printable
    code, body = get(port, "/api/v1/logins/failed")
    fails = json.loads(body)
    check(code == 200 and fails["failed"][0]["name"] == "tab?here" and
          fails["failed"][0]["reason"] == "the client name is not printable UTF-8" and
          fails["logins_failed"] >= 1, f"/api/v1/logins/failed: {code} {body}")
    p = Proc(env, "np-server-open", [os.environ["NP_SERVER"], "--bind", f"{LOOP}:0",
                                      "--admin-bind", "0.0.0.0:0", "--insecure"])
    check(p.wait_exit() == 2, "admin_bind on every address without credentials is exit 2")
    p.wait_line(r"admin_bind 0\.0\.0\.0:0 is not a loopback address: set admin_token")



def raw_get(port, source=LOOP, family=socket.AF_INET, host=LOOP):
    """One GET /healthz on a fresh connection from source: the status, or None when the server
    closed the connection without an answer."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.bind((source, 0))
        s.connect((host, port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = s.recv(100)
    except (ConnectionResetError, BrokenPipeError):
        got = b""
    finally:
        s.close()
    return int(got.split()[1]) if got.startswith(b"HTTP/1.1 ") else None


def test_admin_connection_limits(env):
    """16 connections at once from one address: a 17th from it is closed unanswered, one from
    another address is served, and once one of the 16 goes the address is served again; an IPv6
    admin_bind works the same."""
    srv, port = admin(env)
    held = [socket.create_connection((LOOP, port), timeout=10) for _ in range(16)]
    # each of them is known to the server once it answered on it (keep-alive)
    for s in held:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        check(s.recv(200).startswith(b"HTTP/1.1 200"), "a held connection is served")
    check(raw_get(port) is None, "a 17th connection from 127.0.0.1 is refused")
    check(raw_get(port, source="127.0.0.2") == 200, "another address is served meanwhile")
    held.pop().close()
    wait_until(lambda: raw_get(port) == 200, 5, "served again once one of the 16 went")
    for s in held:
        s.close()
    six = env.server("--token", "s3cret", "--admin-bind", "[::1]:0", name="np-server-v6")
    port6 = int(six.wait_line(r"admin API, .* on \[::1\]:0 \(port (\d+)\)").group(1))
    check(raw_get(port6, source="::1", family=socket.AF_INET6, host="::1") == 200,
          "admin_bind [::1]:0 serves /healthz over IPv6")

TESTS = {
    "admin_api_and_metrics": test_admin_api_and_metrics,
    "admin_credentials": test_admin_credentials,
    "admin_disconnect": test_admin_disconnect,
    "admin_limits": test_admin_limits,
    "admin_connection_limits": test_admin_connection_limits,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
