#!/usr/bin/env python3
"""np-server's /metrics (docs/api-admin.md, "Metrics"): a server with two clients (one named with
characters label values escape), TCP and UDP traffic, a wrong token, guesses up to the back-off;
the scrape passes Prometheus' promtool and says what happened: logins by result, visitors by
outcome, the first-byte histogram (only visitors whose service answered; buckets cumulative),
proxies by type, mux streams, build info."""

import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
import npwire  # noqa: E402
from nptest import LOOP, Fail, Greeter, check, run, wait_until  # noqa: E402
from test_admin import get  # noqa: E402
from test_http_vhost import curl, echo_service, start_client, vhost_server  # noqa: E402
from test_udp import Echo, ask, udp_client, udp_socket  # noqa: E402

SERIES = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def unescape(v):
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse(text):
    """{(name, ((label, value), ...)): float} of every sample; label values unescaped."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SERIES.match(line)
        check(m is not None, f"not a sample line: {line!r}")
        labels = tuple(sorted((k, unescape(v)) for k, v in LABEL.findall(m.group(2) or "")))
        key = (m.group(1), labels)
        check(key not in out, f"a series twice: {line!r}")
        out[key] = float(m.group(3))
    return out


def one(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    if key not in samples:
        raise Fail(f"no series {name}{labels}")
    return samples[key]


def scrape(port):
    code, text = get(port, "/metrics", token=None)
    check(code == 200, f"/metrics: {code}")
    promtool = shutil.which("promtool")
    if promtool is None:
        raise Fail("promtool is not installed (scripts/deps --test installs prometheus)")
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    check(lint.returncode == 0, f"promtool check metrics: {lint.stdout}{lint.stderr}")
    return text, parse(text)


def admin_port(srv):
    """The port the admin endpoint took (admin_bind's port 0: any free one)."""
    return int(srv.wait_line(r"admin API, /metrics, /healthz and the dashboard on \S+ \(port (\d+)\)").group(1))


class Silent(Greeter):
    """Reads until the visitor's end and closes without a byte back."""

    def handle(self):
        while self.request.recv(4096):
            pass


def test_metrics_families(env):
    # a long back-off: the guesses below are throttled however slowly this runs
    srv = env.server("--token", "s3cret", "--admin-bind", f"{LOOP}:0", "--login-backoff", "30s")
    port = admin_port(srv)
    greeter, silent, echo = env.service(Greeter), env.service(Silent), Echo()
    odd = 'we"ird\\name'  # a quote and a backslash: both escaped in label values
    a = env.client(srv, "--name", odd, "-R", f"0:{LOOP}:{greeter}", "-R", f"0:{LOOP}:{silent}")
    b = udp_client(env, srv, "--name", "beta", "-U", f"0:{LOOP}:{echo.port}",
                   name="np-client-beta")
    name = next(n for n in a.ports if n.endswith(f"-{greeter}"))  # "tcp-127.0.0.1-PORT"
    talk, mute = a.ports[name], next(p for n, p in a.ports.items() if n != name)
    udp_port = next(iter(b.ports.values()))

    for i in range(3):  # three visitors whose service answers
        s = socket.create_connection((LOOP, talk), timeout=10)
        s.sendall(b"v%d\n" % i)
        check(s.recv(100) == b"you are v%d\n" % i, "the tunnel works")
        s.close()
    s = socket.create_connection((LOOP, mute), timeout=10)  # one whose service never answers
    s.sendall(b"anybody?\n")
    s.shutdown(socket.SHUT_WR)
    check(s.recv(100) == b"", "the silent service said nothing")
    s.close()
    u = udp_socket()
    for i in range(3):  # the first came through the tunnel (the flow's work connection), the
        # others over the datagram path
        check(ask(u, udp_port, b"ping%d" % i)[1] == b"ping%d" % i, "the UDP proxy works")
    u.close()

    # a wrong token (np-client gives up: exit 3), then guesses from another address up to the
    # back-off, and the right token from there: refused unheard
    bad = env.client(srv, "--name", "mallory", "-R", f"0:{LOOP}:{greeter}", token="guess",
                     wait=False, name="np-client-bad")
    check(bad.wait_exit() == 3, "a wrong token: exit 3")
    for _ in range(4):
        check(npwire.Client(srv, token="guess", name="raw", source="127.0.0.9").login["status"]
              != 0, "a guess logged in")
    check(npwire.Client(srv, name="raw", source="127.0.0.9").login["status"] != 0,
          "the right token during the back-off logged in")

    # the refused sessions' multiplexed connections close soon after their answer
    mux = 2 if os.environ.get("NP_E2E_MUX") != "0" else 0
    wait_until(lambda: one(scrape(port)[1], "natproxy_server_mux_conns") == mux, 10,
               f"{mux} multiplexed connections, the logged-in clients'")
    text, m = scrape(port)

    # build info, with the version the API reports
    code, body = get(port, "/api/v1/server", token=None)
    version = re.search(r'"version":\s*"([^"]*)"', body).group(1)
    build = [k for k in m if k[0] == "natproxy_build_info"]
    check(len(build) == 1 and ("version", version) in build[0][1] and m[build[0]] == 1,
          f"build info: {build}")
    check({k for k, _ in build[0][1]} == {"version", "libuv", "openssl"}, f"its labels: {build}")

    # logins by result: each the flat counter it views, and what happened
    logins = {"ok": 2, "bad_token": 5, "throttled": 1, "timeout": 0, "error": 0, "refused": 0}
    for result, want in logins.items():
        got = one(m, "natproxy_server_logins_total", result=result)
        check(got == want, f"logins {result}: {got}, want {want}")
    check(one(m, "natproxy_server_logins_ok_total") == 2, "logins_ok")
    check(one(m, "natproxy_server_logins_failed_total") == 5, "logins_failed")
    check(one(m, "natproxy_server_logins_throttled_total") == 1, "logins_throttled")

    # visitors by outcome: 3 + 1 TCP visitors and one UDP flow, all joined
    outcomes = {"joined": 5, "expired": 0, "refused": 0, "failed": 0, "denied": 0, "aborted": 0}
    for outcome, want in outcomes.items():
        got = one(m, "natproxy_server_visitor_outcomes_total", outcome=outcome)
        check(got == want, f"visitors {outcome}: {got}, want {want}")
    check(one(m, "natproxy_server_visitors_joined_total") == 5, "the flat joined counter")

    # the first-byte histogram: the three answered TCP visitors and the UDP flow, not the one
    # whose service stayed silent
    for typ, want in (("tcp", 3), ("udp", 1), ("http", 0), ("https", 0)):
        n = one(m, "natproxy_server_first_byte_seconds_count", type=typ)
        check(n == want, f"first byte {typ}: count {n}, want {want}")
        buckets = sorted(((float(dict(lb)["le"]), v) for (name, lb), v in m.items()
                          if name == "natproxy_server_first_byte_seconds_bucket" and
                          dict(lb)["type"] == typ))
        check(len(buckets) == 14 and buckets[0][0] == 0.001 and buckets[-2][0] == 10,
              f"{typ}: bounds {[le for le, _ in buckets]}")
        check(all(x[1] <= y[1] for x, y in zip(buckets, buckets[1:])), f"{typ}: not cumulative")
        check(buckets[-1] == (float("inf"), n), f"{typ}: +Inf {buckets[-1]}, count {n}")
        total = one(m, "natproxy_server_first_byte_seconds_sum", type=typ)
        check((total > 0) == (n > 0) and total < 10 * max(n, 1), f"{typ}: sum {total}")

    # proxies by type; the per-proxy series name the odd client as it is
    for typ, want in (("tcp", 2), ("udp", 1), ("http", 0), ("https", 0)):
        check(one(m, "natproxy_server_proxies_by_type", type=typ) == want, f"{typ} proxies")
    check(one(m, "natproxy_proxy_visitors_joined_total", client=odd, proxy=name, type="tcp") == 3,
          "the odd client's proxy")
    check('client="we\\"ird\\\\name"' in text, "the quote and the backslash escaped")

    # mux: the two clients' control streams at least; the datagram path and the UDP flows
    check(one(m, "natproxy_server_mux_streams") >= mux, "mux streams")
    check(one(m, "natproxy_server_udp_flows") == 1, "one UDP flow")
    path = os.environ.get("NP_E2E_UDP_PATH") != "0"
    check((one(m, "natproxy_server_udp_path_in_total") > 0) == path and
          (one(m, "natproxy_server_udp_path_out_total") > 0) == path, "datagram-path packets")
    # the API's view of the same: the client with the UDP proxy has its datagram path up
    code, body = get(port, "/api/v1/clients", token=None)
    paths = {c["name"]: c["udp_path"] for c in json.loads(body)["clients"]}
    check(sorted(paths.values()) == (["off", "up"] if path else ["down", "off"]),
          f"udp_path by client: {paths}")
    for family, kind in (("natproxy_server_logins_total", "counter"),
                         ("natproxy_server_visitor_outcomes_total", "counter"),
                         ("natproxy_server_first_byte_seconds", "histogram"),
                         ("natproxy_server_proxies_by_type", "gauge"),
                         ("natproxy_server_mux_streams", "gauge"),
                         ("natproxy_server_udp_path_rejected_total", "counter"),
                         ("natproxy_build_info", "gauge")):
        check(f"# TYPE {family} {kind}" in text.splitlines(), f"{family} is a {kind}")


def test_metrics_http_first_byte(env):
    """HTTP requests through the vhost port: each is a visitor whose wait for the first byte of its
    answer is in the histogram under type http."""
    srv, vport = vhost_server(env, "--admin-bind", f"{LOOP}:0")
    port = admin_port(srv)
    web = echo_service(env, "web")
    start_client(env, srv, "alpha", {"web": f"local = {LOOP}:{web}\ncustom_domains = a.example"})
    for path in ("/one", "/two"):
        out, _ = curl(vport, f"http://a.example:{vport}{path}")
        check(b'"service": "web"' in out or b'"service":"web"' in out, f"{path}: {out[:200]!r}")
    _, m = scrape(port)
    check(one(m, "natproxy_server_proxies_by_type", type="http") == 1, "one http proxy")
    check(one(m, "natproxy_server_visitor_outcomes_total", outcome="joined") == 2, "two joined")
    n = one(m, "natproxy_server_first_byte_seconds_count", type="http")
    check(n == 2, f"first byte http: count {n}, want 2")
    check(one(m, "natproxy_server_first_byte_seconds_bucket", type="http", le="+Inf") == 2, "+Inf")
    check(one(m, "natproxy_server_first_byte_seconds_count", type="tcp") == 0, "no tcp visitor")
    code, body = get(port, "/api/v1/proxies", token=None)
    (px,) = json.loads(body)["proxies"]
    check(px["type"] == "http" and px["port"] == vport and px["hosts"] == "a.example",
          f"the API names the hosts an HTTP proxy serves: {px}")


class Flood(socketserver.BaseRequestHandler):
    """Sends without end until the visitor goes; counts what the socket took (sent, all
    connections)."""

    sent = 0
    lock = threading.Lock()

    def handle(self):
        chunk = b"x" * 65536
        try:
            while True:
                n = self.request.send(chunk)
                with Flood.lock:
                    Flood.sent += n
        except OSError:
            pass


def test_mux_stalled_visitors_bounded(env):
    """Visitors that download fast (their stream's window grows), then stop reading: what
    np-server holds for them is at most 256 KiB per stream plus mux_session_window, and the
    windows' growth stays within it (docs/performance.md, "What a peer can make us hold")."""
    window, budget, initial, n = 1 << 20, 1 << 20, 256 << 10, 6
    flood = env.service(Flood)
    srv = env.server("--token", "s3cret", "--admin-bind", f"{LOOP}:0", "--mux-max-window",
                     str(window), "--mux-session-window", str(budget))
    port = admin_port(srv)
    cl = env.client(srv, "--mux", "true", "--mux-max-window", str(window), "-R",
                    f"0:{LOOP}:{flood}")
    (vport,) = cl.ports.values()
    peak = {"buffered": 0, "grown": 0}

    def sample():
        code, text = get(port, "/metrics", token=None)
        check(code == 200, f"/metrics: {code}")
        m = parse(text)
        streams = one(m, "natproxy_server_mux_streams")
        buffered = one(m, "natproxy_server_mux_buffered")
        grown = one(m, "natproxy_server_mux_window_grown")
        check(grown <= budget, f"windows grew by {grown:.0f} bytes, beyond the budget {budget}")
        check(buffered <= streams * initial + budget,
              f"{buffered:.0f} bytes held for {streams:.0f} streams: more than "
              f"{streams:.0f} x 256 KiB + {budget}")
        peak["buffered"] = max(peak["buffered"], buffered)
        peak["grown"] = max(peak["grown"], grown)
        return buffered

    visitors = []
    for _ in range(n):
        # One at a time, each alone on the connection while it reads: 8 MiB fast, then nothing.
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the kernel holds little
        s.settimeout(10)
        s.connect((LOOP, vport))
        got = 0
        while got < 8 << 20:
            b = s.recv(1 << 20)
            check(b, "the flood ended early")
            got += len(b)
        visitors.append(s)
        sample()

    # Wait until the flood is stuck behind the visitors (the service's sends stop moving), checking
    # the bound on every scrape meanwhile.
    last = {"sent": -1, "since": 0}

    def settled():
        sample()
        with Flood.lock:
            sent = Flood.sent
        if sent != last["sent"]:
            last["sent"], last["since"] = sent, 0
        else:
            last["since"] += 1
        return last["since"] >= 20

    wait_until(settled, 60, "the flood stopping behind the stalled visitors")
    check(peak["buffered"] > n * initial / 2,
          f"the server held only {peak['buffered']:.0f} bytes: the visitors did not stall the "
          f"streams")
    print(f"held at most {peak['buffered']:.0f} bytes, windows grown by at most "
          f"{peak['grown']:.0f} (bound {n} streams and more x 256 KiB + {budget})")
    for s in visitors:
        s.close()


TESTS = {
    "metrics_families": test_metrics_families,
    "metrics_http_first_byte": test_metrics_http_first_byte,
    "mux_stalled_visitors_bounded": test_mux_stalled_visitors_bounded,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
