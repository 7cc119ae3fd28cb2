#!/usr/bin/env python3
"""Reload without dropping anything: np-server rereads its whole file on SIGHUP and on POST
/api/v1/reload; new limits and allow_ports apply to new work, what they revoke is closed with a
reason, established visitors of what stays are untouched, and a file with any error changes
nothing."""

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (LOOP, Fail, check, low_free_ports, port_closed, run,  # noqa: E402
                    wait_until)

EXIT_AUTH = 3


class Echo(socketserver.BaseRequestHandler):
    """Echoes every byte until the peer closes: a visitor that stays."""

    def handle(self):
        try:
            while True:
                b = self.request.recv(65536)
                if not b:
                    return
                self.request.sendall(b)
        except ConnectionResetError:
            return  # its visitor was cut: what some cases are about


def write(env, name, text):
    path = os.path.join(env.tmp.name, name)
    with open(path + ".new", "w") as f:
        f.write(text)
    os.chmod(path + ".new", 0o600)
    os.replace(path + ".new", path)  # atomically, as an editor or a config manager would
    return path


def echo(s, data):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        b = s.recv(65536)
        if not b:
            break
        got += b
    return got


def closed_by_peer(s, timeout=10):
    """True once the server closed s (EOF or reset) within timeout."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def curl(port, path, method="GET"):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-X", method, "-w", "\n%{http_code}",
                          f"http://{LOOP}:{port}{path}"], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        raise Fail(f"curl {path}: {out.stderr.strip()}")
    body, _, code = out.stdout.rpartition("\n")
    return int(code), body


def test_reload_server_file(env):
    """SIGHUP: a port left out of allow_ports closes that proxy alone (its open visitor too) and
    the client is told why; the other proxy's open visitor goes on; a broken file changes nothing;
    a key only a restart can change is kept with a warning; a new shared token closes the session
    that used the old one."""
    svc = env.service(Echo)
    keep, drop = low_free_ports(2)
    cfg = write(env, "server.ini", f"[server]\ntoken = s3cret\nallow_ports = {keep},{drop}\n")
    srv = env.server("-c", cfg)
    cl = env.client(srv, "--name", "alpha", "-R", f"{LOOP}:{keep}:{LOOP}:{svc}",
                    "-R", f"{LOOP}:{drop}:{LOOP}:{svc}")
    a = socket.create_connection((LOOP, keep), timeout=10)
    b = socket.create_connection((LOOP, drop), timeout=10)
    check(echo(a, b"before-a") == b"before-a", "the kept proxy carries data")
    check(echo(b, b"before-b") == b"before-b", "the dropped proxy carries data")

    mark, cmark = srv.mark(), cl.mark()
    write(env, "server.ini", f"[server]\ntoken = s3cret\nallow_ports = {keep}\nmax_clients = 5\n")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"reload: allow_ports, max_clients changed; in effect for new work", after=mark)
    srv.wait_line(rf"client alpha: proxy tcp-{drop} closed: port {drop} is no longer allowed",
                  after=mark)
    cl.wait_line(rf"proxy tcp-{drop} refused by the server: port {drop} is no longer allowed",
                 after=cmark)
    check(closed_by_peer(b), "the revoked proxy's open visitor is closed")
    wait_until(lambda: port_closed(drop), 5, "the revoked port closed")
    check(echo(a, b"after-a" * 1000) == b"after-a" * 1000, "the kept proxy's visitor goes on")
    c = socket.create_connection((LOOP, keep), timeout=10)
    check(echo(c, b"new") == b"new", "a new visitor of the kept proxy")
    c.close()

    # any error: nothing changes, and the log says where
    mark = srv.mark()
    write(env, "server.ini", "[server]\ntoken = s3cret\nallow_ports = 1\nmax_clients = lots\n")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"reload: .*server\.ini:4: max_clients: .*; nothing changed", after=mark)
    check(echo(a, b"still") == b"still", "a broken file closes nothing")

    # a key of the server's own listeners waits for a restart
    mark = srv.mark()
    write(env, "server.ini", f"[server]\ntoken = s3cret\nallow_ports = {keep}\nmax_frame = 8192\n")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"reload: max_frame changed, which takes effect only at a restart", after=mark)
    srv.wait_line(r"reload: max_clients changed; in effect for new work", after=mark)
    check(echo(a, b"still") == b"still", "a restart key closes nothing")

    # the shared token changes: the session that logged in with the old one goes
    mark = srv.mark()
    write(env, "server.ini", f"[server]\ntoken = n3w\nallow_ports = {keep}\n")
    srv.signal(signal.SIGHUP)
    srv.wait_line(r"client alpha: the shared token changed, closing its session", after=mark)
    check(cl.wait_exit() == EXIT_AUTH, "the client of the old token exits 3 at its next login")
    check(closed_by_peer(a), "its visitors go with it")


def test_reload_api(env):
    """POST /api/v1/reload: 200 and the change applied; a broken file is 422 with FILE:LINE and
    nothing changes; GET is 405."""
    port, = low_free_ports(1)
    cfg = write(env, "server.ini", f"[server]\ntoken = s3cret\nallow_ports = {port}\n")
    srv = env.server("-c", cfg, "--admin-bind", f"{LOOP}:0")
    admin = int(srv.wait_line(rf"admin API, /metrics, /healthz and the dashboard on {LOOP}:0 \(port (\d+)\)")
                .group(1))
    write(env, "server.ini", f"[server]\ntoken = s3cret\nallow_ports = {port}\nmax_clients = 7\n")
    code, body = curl(admin, "/api/v1/reload", "POST")
    check(code == 200 and json.loads(body) == {"reloaded": True}, f"reload: {code} {body}")
    srv.wait_line(r"reload: max_clients changed")
    write(env, "server.ini", "[server]\ntoken = s3cret\nnonsense\n")
    code, body = curl(admin, "/api/v1/reload", "POST")
    err = json.loads(body).get("error", "")
    check(code == 422 and "server.ini:3" in err, f"a broken file: {code} {body}")
    code, _ = curl(admin, "/api/v1/reload")
    check(code == 405, f"GET /api/v1/reload: {code}")
    code, body = curl(admin, "/api/v1/server")
    check(code == 200, "the server still answers")


TESTS = {
    "reload_server_file": test_reload_server_file,
    "reload_api": test_reload_api,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
