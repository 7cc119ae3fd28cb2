#!/usr/bin/env python3
"""np-server's dashboard (docs/api-admin.md, "The dashboard") in a real browser: Debian's headless
Chromium against a live np-server with two clients, three proxies and traffic running through two
of them. The page's cells carry what they show as data-* attributes; the test reads them and the
JSON API around them and checks they agree (names, ports, connections now, byte counts between two
reads of the API), and keeps a screenshot under the build directory. Also: how the page's files are
served (types, CSP, caching) and behind which credentials, and --dump-dom with Basic credentials.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): the page then
runs in real time, polling the server as it would for an operator (--virtual-time-budget runs its
timers faster than the traffic moves), and nothing beyond the standard library is needed."""

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, Fail, check, low_free_ports, run  # noqa: E402

TOKEN = "dash-t0ken"
OUT = os.environ.get("NP_E2E_OUT", "build/tests")  # where the screenshot is kept
CHUNK = 4096


# ---- the service and the traffic -------------------------------------------------------------


class Echo(socketserver.BaseRequestHandler):
    """Echoes every byte back until the peer's end."""

    def handle(self):
        while True:
            b = self.request.recv(1 << 16)
            if not b:
                break
            self.request.sendall(b)


class Traffic:
    """Connections through public ports, each sending CHUNK bytes and reading the echo back, over
    and over, until stop(): steady traffic, and a steady count of connections now."""

    def __init__(self):
        self.stopping = threading.Event()
        self.threads = []
        self.errors = []
        self.rounds = 0

    def start(self, port, delay):
        s = socket.create_connection((LOOP, port), timeout=10)
        t = threading.Thread(target=self._run, args=(s, delay), daemon=True)
        t.start()
        self.threads.append(t)

    def _run(self, s, delay):
        data = os.urandom(CHUNK)
        try:
            while not self.stopping.is_set():
                s.sendall(data)
                got = 0
                while got < CHUNK:
                    b = s.recv(CHUNK - got)
                    if not b:
                        raise Fail("the tunnel closed a connection under traffic")
                    got += len(b)
                self.rounds += 1
                self.stopping.wait(delay)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)
        finally:
            s.close()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(10)
        if self.errors:
            raise Fail(f"traffic: {self.errors[0]}")


# ---- Chromium ----------------------------------------------------------------------------------


def chromium_path():
    path = shutil.which("chromium")
    if path is None:
        # not a skip: the suite installs it (scripts/deps --test)
        raise Fail("chromium is not installed (scripts/deps --test installs Debian's chromium)")
    return path


def chromium_args(home):
    """Headless in a throwaway profile. --no-sandbox: the sandbox refuses to run as root (CI)."""
    return ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-extensions", "--disable-sync",
            "--hide-scrollbars", "--mute-audio", f"--user-data-dir={home}/profile",
            "--window-size=1280,900"]


def chromium_env(home):
    env = dict(os.environ, HOME=home)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    return env


def kill(p):
    """The browser process; its helpers (zygote, renderers) end when it does. It stays in the
    test's process group, so a runner that kills the test's group on a timeout takes it too."""
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        pass


def high_fd(fd):
    """fd moved to a number above 9."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """Chromium over the DevTools protocol on a pipe: JSON messages, each ended by a NUL, read on
    fd 3 of the browser and written on its fd 4. Every call is bounded in time; close() kills it
    whatever happened."""

    def __init__(self, home):
        # Above 9, so that putting them at 3 and 4 cannot close one another.
        to_browser = [high_fd(fd) for fd in os.pipe()]
        from_browser = [high_fd(fd) for fd in os.pipe()]
        # bash puts the pipes at fds 3 and 4, where the browser wants them (dash's redirections
        # take one digit only).
        cmd = (f'exec "$0" "$@" --remote-debugging-pipe '
               f"3<&{to_browser[0]} 4>&{from_browser[1]} {to_browser[0]}<&- {from_browser[1]}>&-")
        self.err = open(os.path.join(home, "chromium.log"), "w")
        self.p = subprocess.Popen(["bash", "-c", cmd, chromium_path(), *chromium_args(home)],
                                  pass_fds=(to_browser[0], from_browser[1]),
                                  stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                  env=chromium_env(home))
        os.close(to_browser[0])
        os.close(from_browser[1])
        self.w, self.r = to_browser[1], from_browser[0]
        self.buf = b""
        self.events = []  # methods of the events seen so far
        self.next_id = 0
        self.session = None
        self.log = os.path.join(home, "chromium.log")

    def call(self, method, params=None, timeout=20, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.w, data):]
        m = self._read(lambda m: m.get("id") == self.next_id, timeout, f"an answer to {method}")
        if "error" in m:
            raise Fail(f"chromium: {method}: {m['error']}")
        return m["result"]

    def wait_event(self, method, timeout=20):
        if method not in self.events:
            self._read(lambda m: m.get("method") == method, timeout, method)

    def _read(self, want, timeout, what):
        """The first message want() takes; events on the way are noted."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                m = json.loads(raw)
                if "method" in m:
                    self.events.append(m["method"])
                if want(m):
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise Fail(f"chromium: no {what} within {timeout}s")
            b = os.read(self.r, 1 << 16)
            if not b:
                raise Fail(f"chromium ended (exit {self.p.poll()}); its log: {self.tail()}")
            self.buf += b

    def open(self, url):
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
        self.events.clear()
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def eval(self, expr, timeout=20):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, timeout)
        if "exceptionDetails" in r:
            raise Fail(f"chromium: {expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, timeout, what):
        """Until expr is true in the page, bounded; the page's own polls are what it waits for."""
        deadline = time.monotonic() + timeout
        while not self.eval(expr):
            if time.monotonic() > deadline:
                status = self.eval("document.getElementById('status').textContent")
                raise Fail(f"the page: {what} not within {timeout}s (status: {status!r})")
            time.sleep(0.1)

    def screenshot(self):
        return base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])

    def tail(self):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-5:])
        except OSError:
            return ""

    def close(self):
        kill(self.p)
        for fd in (self.w, self.r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.err.close()


def dump_dom(url, home, budget_ms=3000):
    """The DOM after the page ran for budget_ms of virtual time (chromium --dump-dom)."""
    p = subprocess.Popen([chromium_path(), *chromium_args(home), f"--virtual-time-budget={budget_ms}",
                          "--dump-dom", url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=chromium_env(home))
    try:
        out, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise Fail("chromium --dump-dom: not done within 60s")
    finally:
        kill(p)
    check(p.returncode == 0, f"chromium --dump-dom: exit {p.returncode}")
    return out.decode()


# ---- reading the page --------------------------------------------------------------------------


class Page(HTMLParser):
    """The page's rows by table (id) and tiles: data-* attributes of <tr> and of their cells."""

    def __init__(self, html):
        super().__init__()
        self.table = None
        self.rows = {}  # table id -> [{"attrs": {...}, "cells": {key: value}, "rates": {...}}]
        self.tiles = {}  # data-key -> data-value
        self.hidden = set()  # ids of hidden elements
        self.samples = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "hidden" in a and "id" in a:
            self.hidden.add(a["id"])
        if tag == "table":
            self.table = a.get("id")
            self.rows.setdefault(self.table, [])
        elif tag == "tr" and self.table and any(k.startswith("data-") for k in a):
            self.rows[self.table].append({"attrs": a, "cells": {}, "rates": {}})
        elif tag == "td" and self.table and "data-key" in a and self.rows[self.table]:
            self.rows[self.table][-1]["cells"][a["data-key"]] = a.get("data-value")
        elif tag == "span" and "data-rate-in" in a and self.table and self.rows[self.table]:
            self.rows[self.table][-1]["rates"] = {"in": int(a["data-rate-in"]),
                                                  "out": int(a["data-rate-out"])}
        elif tag == "span" and "data-key" in a and "data-value" in a:
            self.tiles[a["data-key"]] = a["data-value"]

    def handle_endtag(self, tag):
        if tag == "table":
            self.table = None


def api(port, path, token=TOKEN, auth=None, method="GET", extra=()):
    """(status, headers, body) of one request with curl."""
    creds = ["-u", auth] if auth else ["-H", f"Authorization: Bearer {token}"] if token else []
    how = ["-I"] if method == "HEAD" else ["-X", method]
    out = subprocess.run(["curl", "-sS", "--max-time", "10", *how, "-D", "-", *creds, *extra,
                          f"http://{LOOP}:{port}{path}"], capture_output=True, timeout=30)
    if out.returncode != 0:
        raise Fail(f"curl {path}: {out.stderr.decode().strip()}")
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def api_json(port, path):
    code, _, body = api(port, path)
    check(code == 200, f"{path}: {code} {body[:200]!r}")
    return json.loads(body)


def png_size(data):
    """(width, height) of a PNG, from its IHDR; fails on anything else."""
    check(len(data) > 8 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR",
          f"a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


# ---- the tests -------------------------------------------------------------------------------


def start_server(env, *args, name="np-server"):
    port, = low_free_ports(1)
    srv = env.server("--token", "s3cret", "--admin-bind", f"{LOOP}:{port}", *args, name=name)
    srv.wait_line(rf"admin API, /metrics, /healthz and the dashboard on {LOOP}:{port}")
    return srv, port


def test_dashboard_live(env):
    """Two clients (alpha with two proxies, one idle; beta with one), traffic through two proxies,
    a refused login: the page shows what the API says, its graphs have real rates, and the
    screenshot is a 1280x900 PNG under the build directory."""
    srv, port = start_server(env, "--admin-token", TOKEN)
    svc = env.service(Echo)
    p1, p2, p3 = low_free_ports(3)
    alpha = env.client(srv, "--name", "alpha", "-R", f"{p1}:{LOOP}:{svc}", "-R", f"{p2}:{LOOP}:{svc}")
    beta = env.client(srv, "--name", "beta", "-R", f"{p3}:{LOOP}:{svc}", name="np-client-beta")
    busy_a, idle_a = sorted(alpha.ports.items())
    busy_b, = beta.ports.items()
    bad = env.client(srv, "--name", "mallory", "-R", f"0:{LOOP}:{svc}", token="wrong", wait=False,
                     name="np-client-mallory")
    srv.wait_line(r"login as 'mallory' refused: wrong token")
    bad.wait_exit()
    traffic = Traffic()
    home = tempfile.mkdtemp(dir=env.tmp.name)
    browser = None
    try:
        traffic.start(busy_a[1], 0.01)
        traffic.start(busy_a[1], 0.02)
        traffic.start(busy_b[1], 0.01)
        want_active = {("alpha", busy_a[0]): 2, ("alpha", idle_a[0]): 0, ("beta", busy_b[0]): 1}
        # the connections are joined (counted now) before the page first looks
        for _ in range(100):
            if traffic.rounds >= 6:
                break
            time.sleep(0.05)
        check(traffic.rounds >= 6, "traffic flows through the tunnels")
        browser = Browser(home)
        browser.open(f"http://{LOOP}:{port}/#token={TOKEN}")
        browser.wait("document.body.dataset.polls >= 1", 20, "a first answer from the API")
        check(browser.eval("location.hash") == "", "the token left the address bar")
        # a few real seconds of polls, so the graphs have rates in them
        browser.wait("[...document.querySelectorAll('canvas.graph')].length == 3 && "
                     "[...document.querySelectorAll('canvas.graph')].every("
                     "c => Number(c.dataset.samples) >= 8)", 30, "eight samples in every graph")
        before = api_json(port, "/api/v1/clients")["clients"]
        polls = browser.eval("Number(document.body.dataset.polls)")
        # two more polls: the one shown then started after `before` was read
        browser.wait(f"Number(document.body.dataset.polls) >= {polls + 2}", 20, "two more polls")
        html = browser.eval("document.documentElement.outerHTML")
        after = api_json(port, "/api/v1/clients")["clients"]
        fails = api_json(port, "/api/v1/logins/failed")
        shot = browser.screenshot()
    finally:
        if browser is not None:
            browser.close()
        traffic.stop()

    page = Page(html)
    check("main" not in page.hidden and "login" in page.hidden, "the data shows, not the login")
    b = {c["name"]: c for c in before}
    a = {c["name"]: c for c in after}
    rows = {r["attrs"]["data-client"]: r["cells"] for r in page.rows["clients"]}
    check(set(rows) == set(a) == {"alpha", "beta"}, f"clients on the page: {sorted(rows)}")
    for name, cells in rows.items():
        check(cells["addr"] == a[name]["addr"], f"{name}'s address: {cells['addr']}")
        check(int(cells["proxies"]) == len(a[name]["proxies"]), f"{name}'s proxies")
        for key in ("bytes_in", "bytes_out"):
            lo, hi, got = b[name]["stats"][key], a[name]["stats"][key], int(cells[key])
            check(lo <= got <= hi, f"{name}'s {key}: page {got}, API {lo} before, {hi} after")
        check(int(cells["visitors_active"]) == a[name]["stats"]["visitors_active"] ==
              b[name]["stats"]["visitors_active"], f"{name}'s connections now: {cells}")
        check(b[name]["uptime_ms"] <= int(cells["uptime_ms"]) <= a[name]["uptime_ms"],
              f"{name}'s uptime")
    check(a["alpha"]["stats"]["bytes_in"] > b["alpha"]["stats"]["bytes_in"],
          "traffic moved between the two reads")

    api_proxies = {(c["name"], p["name"]): (c, p) for c in after for p in c["proxies"]}
    api_before = {(c["name"], p["name"]): p for c in before for p in c["proxies"]}
    prow = {(r["attrs"]["data-client"], r["attrs"]["data-proxy"]): r for r in page.rows["proxies"]}
    check(set(prow) == set(api_proxies) == set(want_active), f"proxies on the page: {sorted(prow)}")
    for key, r in prow.items():
        cells, p = r["cells"], api_proxies[key][1]
        check(int(cells["port"]) == p["port"] and cells["type"] == p["type"] == "tcp",
              f"{key}: port/type {cells}")
        check(int(cells["visitors_active"]) == p["stats"]["visitors_active"] == want_active[key],
              f"{key}: connections now {cells['visitors_active']}, want {want_active[key]}")
        for k in ("bytes_in", "bytes_out"):
            lo, hi, got = api_before[key]["stats"][k], p["stats"][k], int(cells[k])
            check(lo <= got <= hi, f"{key}'s {k}: page {got}, API {lo} before, {hi} after")
        # a busy proxy's last rate is traffic's (some KiB/s at least); an idle one's is nothing
        if want_active[key]:
            check(r["rates"]["in"] > 1000 and r["rates"]["out"] > 1000, f"{key}: rates {r['rates']}")
        else:
            check(r["rates"] == {"in": 0, "out": 0}, f"{key}: rates {r['rates']}")
    check(int(page.tiles["clients"]) == 2 and int(page.tiles["proxies"]) == 3 and
          int(page.tiles["visitors_active"]) == 3, f"tiles: {page.tiles}")

    mallory = [e for e in fails["failed"] if e["name"] == "mallory"]
    check(len(mallory) == 1 and mallory[0]["reason"] == "wrong token" and
          mallory[0]["addr"].startswith(f"{LOOP}:") and fails["logins_failed"] >= 1,
          f"the API's failed logins: {fails}")
    frows = [r["attrs"] for r in page.rows["fails"]]
    check(any(r.get("data-name") == "mallory" and r.get("data-addr") == mallory[0]["addr"]
              for r in frows), f"the page's failed logins: {frows}")

    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "dashboard.png")
    with open(path, "wb") as f:
        f.write(shot)
    check(png_size(shot) == (1280, 900) and len(shot) > 10000,
          f"the screenshot: {png_size(shot)}, {len(shot)} bytes")
    print(f"screenshot: {os.path.abspath(path)}")


def test_dashboard_files_and_credentials(env):
    """The page's files: types, CSP, caching, HEAD, 405; open with a Bearer token alone (the page
    asks for the token: without one, --dump-dom shows the form and no data), behind Basic when
    admin_user is set (401 with WWW-Authenticate for the browser; with the credentials in the
    URL, Chromium shows the clients)."""
    files = {"/": "text/html", "/dashboard.js": "text/javascript", "/dashboard.css": "text/css",
             "/favicon.svg": "image/svg+xml"}
    srv, port = start_server(env, "--admin-token", TOKEN)
    for path, kind in files.items():
        code, h, body = api(port, path, token=None)
        check(code == 200 and h["content-type"].startswith(kind) and len(body) > 100,
              f"{path} without credentials: {code} {h.get('content-type')}")
        check(h.get("content-security-policy", "").startswith("default-src 'self'") and
              "frame-ancestors 'none'" in h["content-security-policy"] and
              h.get("cache-control") == "no-cache" and h.get("x-content-type-options") == "nosniff",
              f"{path}: headers {h}")
    page = open_source("index.html")
    _, _, body = api(port, "/", token=None)
    check(body == page, "/ is lib/dashboard/index.html as built in")
    check(b"<script>" not in body and b"style=" not in body and b"://" not in body,
          "no inline script or style, nothing from elsewhere")
    code, h, body = api(port, "/", token=None, method="HEAD")
    check(code == 200 and body.strip() == b"" and h.get("content-length") == str(len(page)),
          f"HEAD /: {code} {h} {body[:40]!r}")
    code, _, body = api(port, "/", token=None, method="POST")
    check(code == 405 and b"method not allowed" in body, f"POST /: {code}")
    code, _, _ = api(port, "/api/v1/server", token=None)
    check(code == 401, f"the API still needs the token: {code}")
    home = tempfile.mkdtemp(dir=env.tmp.name)
    dom = Page(dump_dom(f"http://{LOOP}:{port}/", home))
    check("login" not in dom.hidden and "main" in dom.hidden, "no token: the page asks for one")

    srv2, port2 = start_server(env, "--admin-user", "ops", "--admin-password", "pw",
                               name="np-server-basic")
    env.client(srv2, "--name", "delta", "-R", f"0:{LOOP}:9", name="np-client-delta")
    for path in files:
        code, h, _ = api(port2, path, token=None)
        check(code == 401 and h.get("www-authenticate", "").startswith("Basic realm="),
              f"{path} with admin_user, no credentials: {code} {h}")
    code, h, _ = api(port2, "/", auth="ops:pw")
    check(code == 200 and h["content-type"].startswith("text/html"), f"/ with Basic: {code}")
    # a form or fetch from another site's page, sent with the browser's Basic credentials, is
    # refused: the dashboard must not make a browser a tool against its own server
    for header in ("Origin: http://evil.example", "Sec-Fetch-Site: cross-site",
                   f"Origin: http://{LOOP}:{port2}.evil.example"):
        code, _, body = api(port2, "/api/v1/clients/delta/disconnect", auth="ops:pw",
                            method="POST", extra=("-H", header))
        check(code == 403 and b"another site" in body, f"POST with {header}: {code} {body!r}")
    for header in (f"Origin: http://{LOOP}:{port2}", "Sec-Fetch-Site: same-origin"):
        code, _, _ = api(port2, "/api/v1/clients/nobody/disconnect", auth="ops:pw", method="POST",
                         extra=("-H", header))
        check(code == 404, f"POST with {header}: {code} (past the check: no such client)")
    dom = Page(dump_dom(f"http://ops:pw@{LOOP}:{port2}/", home))
    names = [r["attrs"]["data-client"] for r in dom.rows.get("clients", [])]
    check(names == ["delta"] and "main" not in dom.hidden, f"Basic: the page shows {names}")


def open_source(name):
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "lib", "dashboard", name), "rb") as f:
        return f.read()


TESTS = {
    "dashboard_live": test_dashboard_live,
    "dashboard_files_and_credentials": test_dashboard_files_and_credentials,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
