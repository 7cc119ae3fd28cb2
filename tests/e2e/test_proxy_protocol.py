#!/usr/bin/env python3
"""The visitor's real address, told to the local service in a PROXY protocol header
(proxy_protocol_version = v1 | v2), checked with real services that read it: nginx
(`listen ... proxy_protocol`, its $proxy_protocol_addr in a reply and its access log) and haproxy
(`bind ... accept-proxy`). Visitors come from 127.0.0.5 and 127.0.0.6 (curl --interface), so an
answer naming np-client's 127.0.0.1 instead fails."""

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, Fail, Proc, check, low_free_ports, run, server_stats, wait_until  # noqa: E402
from test_udp import check_carrier, udp_client  # noqa: E402


def listening(port):
    try:
        socket.create_connection((LOOP, port), timeout=1).close()
        return True
    except OSError:
        return False


def need(tool):
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if path is None:
        raise Fail(f"{tool} is not installed (scripts/deps --test installs it)")
    return path


def nginx(env, port):
    """nginx on port, reading a PROXY header on every connection; answers with the address in it."""
    d = os.path.join(env.tmp.name, "nginx")
    os.makedirs(d)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    log_format pp 'visitor=$proxy_protocol_addr:$proxy_protocol_port peer=$remote_addr "$request"';
    server {{
        listen {LOOP}:{port} proxy_protocol;
        access_log {d}/access.log pp;
        location / {{ return 200 "you are $proxy_protocol_addr\\n"; }}
    }}
}}
""")
    p = Proc(env, "nginx", [need("nginx"), "-p", d, "-c", conf, "-e", "stderr"])
    wait_until(lambda: listening(port), 10, "nginx listening")
    return p, os.path.join(d, "access.log")


def haproxy(env, port):
    """haproxy on port with accept-proxy; answers with the source address it took from the header."""
    conf = os.path.join(env.tmp.name, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend pp
    bind {LOOP}:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "you are %[src]\\n"
""")
    p = Proc(env, "haproxy", [need("haproxy"), "-db", "-f", conf])
    wait_until(lambda: listening(port), 10, "haproxy listening")
    return p


def curl(port, source):
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "--interface", source,
                          f"http://{LOOP}:{port}/hello"], capture_output=True, text=True,
                         timeout=20)
    if out.returncode != 0:
        raise Fail(f"curl from {source} to port {port}: {out.stderr.strip()}")
    return out.stdout


def client_with(env, srv, service_port, version, extra=""):
    conf = os.path.join(env.tmp.name, f"client-{version}.ini")
    with open(conf, "w") as f:
        f.write(f"""[client]
{extra}
[proxy web]
local = {LOOP}:{service_port}
remote_port = 0
proxy_protocol_version = {version}
""")
    cl = env.client(srv, "-c", conf, wait=False, name=f"np-client-{version}")
    return cl, int(cl.wait_line(r"^proxy web: public port (\d+)$").group(1))


def test_nginx_v1_and_v2(env):
    """nginx sees the visitor's address through v1 (a work connection per REQ_WORK) and v2 (a
    pre-opened one, START), in its reply and in its access log."""
    ng_port, = low_free_ports(1)
    _, access = nginx(env, ng_port)
    srv = env.server("--token", "s3cret")
    for version, source, extra in (("v1", "127.0.0.5", "work_pool = 0"), ("v2", "127.0.0.6", "")):
        cl, port = client_with(env, srv, ng_port, version, extra)
        got = curl(port, source)
        check(got == f"you are {source}\n", f"{version}: nginx answered {got!r}")
        cl.signal(15)
        cl.wait_exit()
    with open(access) as f:
        log = f.read()
    for source in ("127.0.0.5", "127.0.0.6"):
        check(re.search(rf'visitor={re.escape(source)}:\d+ peer=127\.0\.0\.1 "GET /hello HTTP/1\.1"',
                        log), f"nginx's access log names {source}: {log!r}")


def test_haproxy_accept_proxy(env):
    """haproxy's accept-proxy takes the visitor's address from np-client's v2 header."""
    hp_port, = low_free_ports(1)
    haproxy(env, hp_port)
    srv = env.server("--token", "s3cret")
    _, port = client_with(env, srv, hp_port, "v2")
    for source in ("127.0.0.5", "127.0.0.6"):
        got = curl(port, source)
        check(got == f"you are {source}\n", f"haproxy answered {got!r}")


def test_bad_version_is_a_config_error(env):
    """A value other than v1/v2, and a UDP proxy with v1 (text, for streams), are refused before
    dialling."""
    for body, want in (("type = tcp\nproxy_protocol_version = v3",
                        r"proxy_protocol_version: 'v3' is not v1 or v2"),
                       ("type = udp\nproxy_protocol_version = v1",
                        r"proxy_protocol_version = v1 has no form for datagrams; a UDP proxy "
                        r"takes v2")):
        conf = os.path.join(env.tmp.name, "bad.ini")
        with open(conf, "w") as f:
            f.write(f"[client]\nserver = {LOOP}:1\ntoken = t\n[proxy p]\nlocal = {LOOP}:1\n"
                    f"remote_port = 0\n{body}\n")
        cl = Proc(env, "np-client-bad", [os.environ["NP_CLIENT"], "-c", conf])
        check(cl.wait_exit() == 2, "a bad proxy_protocol_version is a usage error (exit 2)")
        cl.wait_line(want)


def udp_pp_service(env):
    """A UDP service that expects a PROXY v2 header (DGRAM) before every datagram and answers
    "you are IP:PORT (N)" from it, N counting the datagrams that carried one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOP, 0))
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    seen = [0]

    def serve():
        while True:
            try:
                data, peer = sock.recvfrom(70000)
            except OSError:
                return
            if not data.startswith(sig) or data[12] != 0x21 or data[13] != 0x12:
                sock.sendto(b"no header: " + data[:20], peer)
                continue
            n = struct.unpack(">H", data[14:16])[0]
            src = socket.inet_ntoa(data[16:20])
            sport = struct.unpack(">H", data[24:26])[0]
            seen[0] += 1
            sock.sendto(b"you are %s:%d (%d) %s" % (src.encode(), sport, seen[0],
                                                    data[16 + n:]), peer)
    threading.Thread(target=serve, daemon=True).start()
    return sock


def test_udp_v2(env):
    """A UDP proxy with proxy_protocol_version = v2: every datagram reaches the service after a v2
    DGRAM header naming the visitor (127.0.0.5 and its port), on the datagram path or in the tunnel
    (meson runs this case both ways)."""
    svc = udp_pp_service(env)
    srv = env.server("--token", "s3cret")
    conf = os.path.join(env.tmp.name, "client.ini")
    with open(conf, "w") as f:
        f.write(f"[proxy dns]\ntype = udp\nlocal = {LOOP}:{svc.getsockname()[1]}\n"
                f"remote_port = 0\nproxy_protocol_version = v2\n")
    cl = udp_client(env, srv, "-c", conf, wait=False)
    port = int(cl.wait_line(r"^proxy dns: public port (\d+)$").group(1))
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    v.bind(("127.0.0.5", 0))
    v.settimeout(5)
    me = v.getsockname()[1]
    for i in range(1, 6):
        v.sendto(b"query %d" % i, (LOOP, port))
        got = v.recv(1000)
        check(got == b"you are 127.0.0.5:%d (%d) query %d" % (me, i, i), f"answer {i}: {got!r}")
    check_carrier(srv)
    svc.close()


def haproxy_in_front(env, listen_port, target_port):
    """haproxy as a TCP load balancer in front of np-server's public port: it connects from
    127.0.0.9 and starts each connection with a PROXY v2 header naming the visitor."""
    conf = os.path.join(env.tmp.name, "lb.cfg")
    with open(conf, "w") as f:
        f.write(f"""defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
listen lb
    bind {LOOP}:{listen_port}
    server np {LOOP}:{target_port} send-proxy-v2 source 127.0.0.9
""")
    p = Proc(env, "haproxy-lb", [need("haproxy"), "-db", "-f", conf])
    wait_until(lambda: listening(listen_port), 10, "haproxy listening")
    return p


def test_load_balancer_in_front(env):
    """proxy_protocol_from: behind haproxy (send-proxy-v2) the server takes the visitor's address
    from the header: the access log, allow_ips and the service (through the client's own header)
    see 127.0.0.5, not haproxy's 127.0.0.9. The balancer's address without a header is closed and
    counted; everybody else connects as before."""
    ng_port, lb_port, public = low_free_ports(3)
    nginx(env, ng_port)
    srv = env.server("--token", "s3cret", "--proxy-protocol-from", "127.0.0.9/32",
                     "--allow-ports", str(public))
    conf = os.path.join(env.tmp.name, "client.ini")
    with open(conf, "w") as f:
        f.write(f"""[proxy web]
local = {LOOP}:{ng_port}
remote_port = {public}
proxy_protocol_version = v1
allow_ips = 127.0.0.5, 127.0.0.1
""")
    cl = env.client(srv, "-c", conf, wait=False)
    cl.wait_line(rf"^proxy web: public port {public}$")
    haproxy_in_front(env, lb_port, public)
    got = curl(lb_port, "127.0.0.5")
    check(got == "you are 127.0.0.5\n", f"through the balancer nginx answered {got!r}")
    srv.wait_line(r"access proxy=web visitor=127\.0\.0\.5:\d+ in=\d+ out=\d+ .* end=closed")
    # the balancer's address itself, without a header: closed, logged, counted
    s = socket.create_connection((LOOP, public), timeout=5, source_address=("127.0.0.9", 0))
    s.sendall(b"GET / HTTP/1.1\r\n\r\n")
    s.settimeout(5)
    try:
        check(s.recv(100) == b"", "a header-less connection from the balancer is closed")
    except ConnectionResetError:
        pass
    s.close()
    srv.wait_line(r"127\.0\.0\.9:\d+ is in proxy_protocol_from but sent no valid PROXY protocol "
                  r"header: ")
    # anybody else: as before, no header expected
    got = curl(public, "127.0.0.1")
    check(got == "you are 127.0.0.1\n", f"directly nginx answered {got!r}")
    # at least our header-less connection (haproxy may also have given up on one of its own
    # connections before its header under a slow, sanitized run: counted too)
    refused = server_stats(srv)["pp_refused"]
    check(refused >= 1, f"pp_refused={refused}")
    # allow_ips judges the header's address: 127.0.0.6 is turned away although haproxy's
    # 127.0.0.9 is not in the list either way
    try:
        curl(lb_port, "127.0.0.6")
        raise Fail("a visitor outside allow_ips was served through the balancer")
    except Fail as e:
        if "was served" in str(e):
            raise
    srv.wait_line(r"proxy web: visitor 127\.0\.0\.6:\d+ is outside allow_ips, closed")
    # (haproxy may retry towards the server after that reset and give up before its header:
    # counted as refused too, which is why the count is read above)


def test_header_in_pieces_and_silence(env):
    """A balancer's header cut across writes, its end in the same write as the visitor's first
    bytes, is read exactly (the request behind it arrives whole); one that says nothing is closed
    after 5 s."""
    ng_port, public = low_free_ports(2)
    nginx(env, ng_port)
    srv = env.server("--token", "s3cret", "--proxy-protocol-from", "127.0.0.9",
                     "--allow-ports", str(public))
    conf = os.path.join(env.tmp.name, "client.ini")
    with open(conf, "w") as f:
        f.write(f"[proxy web]\nlocal = {LOOP}:{ng_port}\nremote_port = {public}\n"
                f"proxy_protocol_version = v2\n")
    cl = env.client(srv, "-c", conf, wait=False)
    cl.wait_line(rf"^proxy web: public port {public}$")
    s = socket.create_connection((LOOP, public), timeout=5, source_address=("127.0.0.9", 0))
    # two segments (the server may still read them at once; np__pp_parse's unit test covers every
    # prefix)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"PROXY TCP4 127.0.0.5 127.0.0.1 4321 ")
    s.sendall(b"80\r\nGET /x HTTP/1.0\r\n\r\n")
    s.settimeout(10)
    got = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        got += b
    s.close()
    check(got.startswith(b"HTTP/1.1 200") and got.endswith(b"you are 127.0.0.5\n"),
          f"nginx's answer to the request behind a header in two pieces: {got!r}")
    quiet = socket.create_connection((LOOP, public), timeout=10, source_address=("127.0.0.9", 0))
    mark = srv.mark()
    srv.wait_line(r"127\.0\.0\.9:\d+ is in proxy_protocol_from but sent no valid PROXY protocol "
                  r"header within 5s: closed", after=mark, timeout=15)
    quiet.settimeout(5)
    try:
        check(quiet.recv(10) == b"", "the silent connection is closed")
    except ConnectionResetError:
        pass
    quiet.close()


TESTS = {
    "pp_nginx_v1_and_v2": test_nginx_v1_and_v2,
    "pp_haproxy_accept_proxy": test_haproxy_accept_proxy,
    "pp_bad_version": test_bad_version_is_a_config_error,
    "pp_load_balancer_in_front": test_load_balancer_in_front,
    "pp_header_in_pieces_and_silence": test_header_in_pieces_and_silence,
    "pp_udp_v2": test_udp_v2,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
