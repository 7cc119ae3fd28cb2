#!/usr/bin/env python3
"""HTTP services on one shared port (type = http, the server's vhost_http_port), routed by Host and
path: curl as the visitor (--resolve for each name), small HTTP services that answer with what
they were sent (their name, the path, the headers, the body's SHA-256), nginx reading PROXY v2,
a WebSocket echo on Debian's python3-websockets, haproxy in front."""

import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, Fail, Proc, check, low_free_ports, run, server_stats, wait_until  # noqa: E402
from test_proxy_protocol import haproxy_in_front, need, nginx  # noqa: E402

WSECHO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wsecho.py")


def echo_service(env, name):
    """An HTTP/1.1 keep-alive service answering JSON: who it is and what it got."""

    class Echo(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            body = b""
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    n = int(self.rfile.readline().split(b";")[0], 16)
                    if n == 0:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(n)
                    self.rfile.readline()
            else:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            out = json.dumps({"service": name, "path": self.path, "method": self.command,
                              "headers": {k.lower(): v for k, v in self.headers.items()},
                              "xff": self.headers.get_all("X-Forwarded-For") or [],
                              "body": hashlib.sha256(body).hexdigest(),
                              "length": len(body)}).encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_HEAD = answer

        def log_message(self, *args):
            pass

    return env.service(Echo)


def curl(vport, url, *args, names=(), check_ok=True):
    """curl through the vhost port: every name resolves to it. Returns (stdout, stderr)."""
    resolve = []
    for n in names or (re.match(r"https?://([^/:]+)", url).group(1),):
        resolve += ["--resolve", f"{n}:{vport}:{LOOP}"]
    out = subprocess.run(["curl", "-sS", "--max-time", "20", *resolve, url, *args],
                         capture_output=True, timeout=60)
    if check_ok and out.returncode != 0:
        raise Fail(f"curl {url}: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout, out.stderr.decode(errors="replace")


def answers(data):
    return [json.loads(line) for line in data.decode().splitlines() if line.startswith("{")]


def write_client(env, name, proxies, extra="", kind="http"):
    conf = os.path.join(env.tmp.name, f"{name}.ini")
    with open(conf, "w") as f:
        f.write(f"[client]\nname = {name}\n{extra}\n")
        for pname, body in proxies.items():
            f.write(f"[proxy {pname}]\ntype = {kind}\n{body}\n")
    return conf


def start_client(env, srv, name, proxies, extra="", wait=True, kind="http"):
    conf = write_client(env, name, proxies, extra, kind)
    cl = env.client(srv, "-c", conf, "--name", name, wait=False, name=f"np-client-{name}")
    if wait:
        for pname in proxies:
            cl.wait_line(rf"proxy {re.escape(pname)}: https?://")
    return cl


def vhost_server(env, *args):
    vport, = low_free_ports(1)
    srv = env.server("--token", "s3cret", "--vhost-http-port", str(vport), *args)
    srv.wait_line(rf"HTTP services on port {vport} \(vhost_http_port\)")
    return srv, vport


def test_http_routing(env):
    """Three HTTP services and an HTTPS one behind one client and two behind another, on one port
    each: each name (exact, wildcard, subdomain) and path (locations) reaches its service; X-Forwarded-* are added; an
    unknown host is 404; one keep-alive connection crosses hosts and services request by request."""
    vport, sport = low_free_ports(2)
    srv = env.server("--token", "s3cret", "--vhost-http-port", str(vport), "--subdomain-host",
                     "np.test", "--vhost-https-port", str(sport))
    web, api, static, blog, shop = (echo_service(env, n) for n in
                                    ("web", "api", "static", "blog", "shop"))
    tls_port, cert = tls_service(env, "secure.example.com")
    start_client(env, srv, "alpha", {
        "web": f"local = {LOOP}:{web}\ncustom_domains = a.example.com, *.w.example.com",
        "api": f"local = {LOOP}:{api}\ncustom_domains = a.example.com\nlocations = /api, /v2/",
        "static": f"local = {LOOP}:{static}\ncustom_domains = static.example.com\n"
                  f"host_header_rewrite = static.internal",
        "tls": f"type = https\nlocal = {LOOP}:{tls_port}\ncustom_domains = secure.example.com"})
    # the HTTPS service beside the three HTTP ones, on the server's HTTPS port
    out, _ = curl(sport, f"https://secure.example.com:{sport}/", "--cacert", cert)
    check(b"s_server" in out or b"Ciphers" in out, f"the HTTPS service: {out[:200]!r}")
    start_client(env, srv, "beta", {
        "blog": f"local = {LOOP}:{blog}\nsubdomain = blog",
        "shop": f"local = {LOOP}:{shop}\ncustom_domains = shop.example.com, *.x.w.example.com"})
    cases = [("a.example.com", "/", "web"), ("a.example.com", "/api", "api"),
             ("a.example.com", "/api/users?id=1", "api"), ("a.example.com", "/apix", "web"),
             ("a.example.com", "/v2/x", "api"), ("A.Example.COM", "/", "web"),
             ("q.w.example.com", "/", "web"), ("deep.q.w.example.com", "/", "web"),
             ("y.x.w.example.com", "/", "shop"), ("static.example.com", "/s", "static"),
             ("blog.np.test", "/post/1", "blog"), ("shop.example.com", "/cart", "shop")]
    for host, path, want in cases:
        out, _ = curl(vport, f"http://{host}:{vport}{path}", names=(host.lower(),))
        got, = answers(out)
        check(got["service"] == want and got["path"] == path,
              f"{host}{path} reached {got['service']} {got['path']}, not {want}")
        h = got["headers"]
        check(got["xff"] == ["127.0.0.1"] and h.get("x-forwarded-proto") == "http" and
              h.get("x-forwarded-host") == f"{host}:{vport}",
              f"X-Forwarded-* for {host}: {h}")
        check(h["host"] == ("static.internal" if want == "static" else f"{host}:{vport}"),
              f"Host as the service saw it: {h['host']}")
    # unknown host, no Host at all, a host nobody claimed under a wildcard's parent
    for host in ("nope.example.com", "w.example.com"):
        out, _ = curl(vport, f"http://{host}:{vport}/", "-o", "/dev/null", "-w", "%{http_code}")
        check(out == b"404", f"{host}: {out!r}, not 404")
    # one connection: web, api, web, then another client's service, then back; pipelined too
    urls = [f"http://a.example.com:{vport}/1", f"http://a.example.com:{vport}/api/2",
            f"http://a.example.com:{vport}/3"]
    out, err = curl(vport, urls[0], *urls[1:], "-v", names=("a.example.com",))
    check([a["service"] for a in answers(out)] == ["web", "api", "web"], f"keep-alive: {out!r}")
    check(err.count("Re-using existing connection") == 2, "curl kept its one connection")
    s = socket.create_connection((LOOP, vport), timeout=10)
    reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, h) for i, h in
                    enumerate([b"a.example.com", b"shop.example.com", b"blog.np.test",
                               b"a.example.com"]))
    s.sendall(reqs + b"GET /last HTTP/1.1\r\nHost: a.example.com\r\nConnection: close\r\n\r\n")
    got = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += b
    s.close()
    services = [json.loads(m)["service"] for m in re.findall(rb"\{.*\}", got)]
    check(services == ["web", "shop", "blog", "web", "web"],
          f"pipelined across hosts and clients: {services}")


def test_http_bodies(env):
    """Bodies arrive whole: Content-Length, chunked, 100-continue, HEAD's empty answer, 3 MB both
    ways on one connection, byte for byte (the service's SHA-256 of what it got)."""
    srv, vport = vhost_server(env)
    svc = echo_service(env, "svc")
    start_client(env, srv, "alpha", {"svc": f"local = {LOOP}:{svc}\ncustom_domains = b.example.com"})
    body = os.urandom(3 << 20)
    path = os.path.join(env.tmp.name, "body")
    with open(path, "wb") as f:
        f.write(body)
    want = hashlib.sha256(body).hexdigest()
    u = f"http://b.example.com:{vport}/up"
    for extra in ([], ["-H", "Transfer-Encoding: chunked"], ["-H", "Expect: 100-continue"]):
        out, _ = curl(vport, u, "--data-binary", f"@{path}", *extra)
        got, = answers(out)
        check(got["body"] == want and got["length"] == len(body), f"{extra}: {got['length']} bytes")
    out, _ = curl(vport, u, "-I")
    check(out.startswith(b"HTTP/1.1 200") and b"Content-Length:" in out, f"HEAD: {out!r}")
    # after HEAD on the same connection: the next answer is read whole
    out, err = curl(vport, u, "-I", "--next", "--resolve", f"b.example.com:{vport}:{LOOP}", u,
                    "-v")
    check(b'"service": "svc"' in out and "Re-using existing connection" in err,
          f"a request after HEAD on its connection: {out!r}")


def test_http_conflict_and_gone(env):
    """Two clients may not claim the same host: the second is told who has it. A client that is gone
    leaves 502 behind for its hosts, until it (or anybody) claims them again."""
    srv, vport = vhost_server(env)
    a, b = echo_service(env, "a"), echo_service(env, "b")
    first = start_client(env, srv, "first", {"web": f"local = {LOOP}:{a}\ncustom_domains = c.example.com"})
    second = start_client(env, srv, "second", {"web2": f"local = {LOOP}:{b}\n"
                                                       "custom_domains = c.example.com"},
                          wait=False)
    second.wait_line(r"proxy web2 refused by the server: http://c\.example\.com is served by "
                     r"client first's proxy web")
    out, _ = curl(vport, f"http://c.example.com:{vport}/")
    check(answers(out)[0]["service"] == "a", "the first claim serves")
    first.signal(signal.SIGKILL)
    srv.wait_line(r"client first .*disconnected|client first: .*closed|first.*(reset|EOF)")
    out, _ = curl(vport, f"http://c.example.com:{vport}/", "-w", "\n%{http_code}")
    check(out.endswith(b"502") and b"not connected" in out, f"a gone client's host: {out!r}")
    # a server without vhost_https_port says so to a client that asks for an HTTPS proxy
    nossl = start_client(env, srv, "fourth", {"tls": f"local = {LOOP}:{a}\ncustom_domains = t.example.com"},
                         kind="https", wait=False)
    nossl.wait_line(r"proxy tls refused by the server: this server has no vhost_https_port for "
                    r"type = https")
    again = start_client(env, srv, "third", {"web": f"local = {LOOP}:{b}\n"
                                                    "custom_domains = c.example.com"})
    out, _ = curl(vport, f"http://c.example.com:{vport}/")
    check(answers(out)[0]["service"] == "b", "a new claim takes the host over")
    again.signal(signal.SIGTERM)


def test_http_basic_auth(env):
    """http_user / http_password: 401 with a realm without credentials or with wrong ones, the
    service with the right ones."""
    srv, vport = vhost_server(env)
    svc = echo_service(env, "svc")
    start_client(env, srv, "alpha", {"svc": f"local = {LOOP}:{svc}\ncustom_domains = d.example.com\n"
                                            "http_user = alice\nhttp_password = s3cret, too"})
    u = f"http://d.example.com:{vport}/"
    out, err = curl(vport, u, "-v", "-o", "/dev/null", "-w", "%{http_code}")
    check(out == b"401" and 'WWW-Authenticate: Basic realm="Restricted"' in err, f"no credentials: {out!r}")
    out, _ = curl(vport, u, "-u", "alice:wrong", "-o", "/dev/null", "-w", "%{http_code}")
    check(out == b"401", f"a wrong password: {out!r}")
    out, _ = curl(vport, u, "-u", "alice:s3cret, too")
    check(answers(out)[0]["service"] == "svc", f"the right credentials: {out!r}")


def test_http_bad_requests(env):
    """What is not an HTTP/1.x request with a valid Host is answered by the server and closed."""
    srv, vport = vhost_server(env)
    svc = echo_service(env, "svc")
    start_client(env, srv, "alpha", {"svc": f"local = {LOOP}:{svc}\ncustom_domains = e.example.com"})
    for req, want in ((b"GET / HTTP/1.1\r\n\r\n", b"400"),
                      (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", b"400"),
                      (b"GET / HTTP/1.0\r\n\r\n", b"400"),
                      (b"\x16\x03\x01\x00\x10hello TLS?\r\n\r\n", b"400"),
                      (b"GET / HTTP/1.1\r\nHost: e.example.com\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
                       b"431"),
                      (b"GET / HTTP/1.1\r\nHost: e.example.com\r\n\r\n", b"200")):
        s = socket.create_connection((LOOP, vport), timeout=10)
        s.sendall(req)
        got = s.recv(100)
        s.close()
        check(got.startswith(b"HTTP/1.1 " + want), f"{req[:40]!r}: {got!r}")


def test_http_websocket(env):
    """A WebSocket through the vhost: the upgrade reaches the service and the frames then pass both
    ways as bytes (python3-websockets on both ends)."""
    srv, vport = vhost_server(env)
    ws_port, = low_free_ports(1)  # after the server has its port
    svc = Proc(env, "wsecho", ["/usr/bin/python3", WSECHO, "serve", str(ws_port)])
    svc.wait_line("listening")
    start_client(env, srv, "alpha", {"ws": f"local = {LOOP}:{ws_port}\ncustom_domains = ws.example.com"})
    # websockets connects to the name's address itself: the vhost is on 127.0.0.1, and the Host
    # header carries the name
    talk = Proc(env, "wstalk", ["/usr/bin/python3", WSECHO, "talk",
                                f"ws://ws.example.com:{vport}/chat", "30", LOOP])
    check(talk.wait_exit(60) == 0, "the WebSocket client's echoes came back intact")
    talk.wait_line(r"ok 30")


def test_http_proxy_protocol_to_nginx(env):
    """nginx behind an HTTP proxy with proxy_protocol_version = v2 logs the visitor's address
    (127.0.0.5, curl --interface), and the request also carries it in X-Forwarded-For."""
    srv, vport = vhost_server(env)
    ng_port, = low_free_ports(1)  # after the server has its port
    _, access = nginx(env, ng_port)
    start_client(env, srv, "alpha", {"ng": f"local = {LOOP}:{ng_port}\ncustom_domains = n.example.com\n"
                                           "proxy_protocol_version = v2"})
    out, _ = curl(vport, f"http://n.example.com:{vport}/hello", "--interface", "127.0.0.5")
    check(out == b"you are 127.0.0.5\n", f"nginx answered {out!r}")
    with open(access) as f:
        log = f.read()
    check(re.search(r'visitor=127\.0\.0\.5:\d+ peer=127\.0\.0\.1 "GET /hello HTTP/1\.1"', log),
          f"nginx's access log: {log!r}")


def test_http_behind_load_balancer(env):
    """haproxy in front of the vhost port (send-proxy-v2, proxy_protocol_from): X-Forwarded-For
    names the visitor, not haproxy; a visitor's own X-Forwarded-For is dropped when it comes
    directly, kept (and appended to) when it comes through the trusted balancer."""
    srv, vport = vhost_server(env, "--proxy-protocol-from", "127.0.0.9")
    lb_port, = low_free_ports(1)  # after the server has its port: the two picks would be equal
    svc = echo_service(env, "svc")
    start_client(env, srv, "alpha", {"svc": f"local = {LOOP}:{svc}\ncustom_domains = f.example.com"})
    haproxy_in_front(env, lb_port, vport)
    out, _ = curl(lb_port, f"http://f.example.com:{lb_port}/", "--interface", "127.0.0.5",
                  "-H", "X-Forwarded-For: 192.0.2.7")
    got, = answers(out)
    check(got["xff"] == ["192.0.2.7, 127.0.0.5"], f"through the balancer: {got['xff']}")
    out, _ = curl(vport, f"http://f.example.com:{vport}/", "--interface", "127.0.0.6",
                  "-H", "X-Forwarded-For: 192.0.2.7")
    got, = answers(out)
    check(got["xff"] == ["127.0.0.6"], f"directly, a forged X-Forwarded-For: {got['xff']}")


def test_http_thousand_hosts(env):
    """1,000 names over two clients (five proxies each, a hundred names per proxy, the lists on
    several lines): one request each, in one curl run, each answered by the service that claimed
    its name."""
    srv, vport = vhost_server(env)
    expect = {}
    for cname in ("one", "two"):
        proxies = {}
        for p in range(5):
            pname = f"{cname}{p}"
            svc = echo_service(env, pname)
            names = [f"h{len(expect) + i}.{pname}.example.com" for i in range(100)]
            for n in names:
                expect[n] = pname
            lines = "\n".join("custom_domains = " + ", ".join(names[i:i + 6])
                              for i in range(0, 100, 6))
            proxies[pname] = f"local = {LOOP}:{svc}\n{lines}"
        start_client(env, srv, cname, proxies)
    hosts = sorted(expect)
    check(len(hosts) == 1000, "a thousand names")
    urls = [f"http://{h}:{vport}/" for h in hosts]
    out, _ = curl(vport, urls[0], *urls[1:], names=hosts)
    got = answers(out)
    check(len(got) == 1000, f"{len(got)} answers of 1000")
    wrong = [(h, a["service"]) for h, a in zip(hosts, got) if a["service"] != expect[h] or
             a["headers"]["host"] != f"{h}:{vport}"]
    check(not wrong, f"answered by the wrong service: {wrong[:5]}")


def tls_service(env, name):
    """openssl s_server with a certificate for name (self-signed, made here): the TLS ends at the
    service, so curl can verify the name only if np-server passed the bytes untouched."""
    d = os.path.join(env.tmp.name, name)
    os.makedirs(d)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"], check=True, capture_output=True,
                   timeout=30)
    port, = low_free_ports(1)
    Proc(env, f"s_server-{name}", ["openssl", "s_server", "-accept", f"{LOOP}:{port}", "-cert", cert,
                                   "-key", key, "-www", "-quiet"])
    wait_until(lambda: socket_open(port), 10, f"s_server for {name}")
    return port, cert


def socket_open(port):
    try:
        socket.create_connection((LOOP, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_https_by_sni(env):
    """Two HTTPS services on two clients behind one vhost_https_port, routed by the ClientHello's
    server name without terminating TLS: curl verifies each service's own certificate through it.
    An unknown name hears a TLS alert, no name (an IP address) and bytes that are not TLS are
    closed; all three are counted as refused."""
    vport, = low_free_ports(1)
    srv = env.server("--token", "s3cret", "--vhost-https-port", str(vport))
    srv.wait_line(rf"HTTPS services on port {vport}")
    p1, c1 = tls_service(env, "secure.example.com")
    p2, c2 = tls_service(env, "other.example.net")
    start_client(env, srv, "alpha", {"s1": f"local = {LOOP}:{p1}\ncustom_domains = secure.example.com"},
                 kind="https")
    start_client(env, srv, "beta", {"s2": f"local = {LOOP}:{p2}\ncustom_domains = *.example.net"},
                 kind="https")
    for name, cert in (("secure.example.com", c1), ("other.example.net", c2)):
        out, _ = curl(vport, f"https://{name}:{vport}/", "--cacert", cert)
        check(b"s_server" in out or b"Ciphers" in out, f"{name}: {out[:200]!r}")
    before = server_stats(srv)
    _, err = curl(vport, f"https://nobody.example.org:{vport}/", "--cacert", c1, check_ok=False)
    check("alert" in err.lower() or "unrecognized" in err.lower(), f"an unknown name: {err}")
    out = subprocess.run(["curl", "-sS", "-k", "--max-time", "10", f"https://{LOOP}:{vport}/"],
                         capture_output=True, timeout=30)
    check(out.returncode != 0, "no server name: closed")
    s = socket.create_connection((LOOP, vport), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: secure.example.com\r\n\r\n")
    check(s.recv(100) == b"", "plain HTTP on the HTTPS port: closed without an answer")
    s.close()
    after = server_stats(srv)
    check(after["refused"] - before["refused"] == 3,
          f"refused: {before['refused']} -> {after['refused']}")


TESTS = {
    "http_routing": test_http_routing,
    "http_bodies": test_http_bodies,
    "http_conflict_and_gone": test_http_conflict_and_gone,
    "http_basic_auth": test_http_basic_auth,
    "http_bad_requests": test_http_bad_requests,
    "http_websocket": test_http_websocket,
    "http_proxy_protocol_to_nginx": test_http_proxy_protocol_to_nginx,
    "http_behind_load_balancer": test_http_behind_load_balancer,
    "http_thousand_hosts": test_http_thousand_hosts,
    "https_by_sni": test_https_by_sni,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run({k: TESTS[k] for k in (sys.argv[1:] or TESTS)}))
