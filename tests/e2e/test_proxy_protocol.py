#!/usr/bin/env python3
"""The visitor's real address, told to the local service in a PROXY protocol header
(proxy_protocol_version = v1 | v2), checked with real services that read it: nginx
(`listen ... proxy_protocol`, its $proxy_protocol_addr in a reply and its access log) and haproxy
(`bind ... accept-proxy`). Visitors come from 127.0.0.5 and 127.0.0.6 (curl --interface), so an
answer naming np-client's 127.0.0.1 instead fails."""

import os
import re
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, Fail, Proc, check, low_free_ports, run, wait_until  # noqa: E402


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
    """A value other than v1/v2, and a UDP proxy with a header, are refused before dialling."""
    for body, want in (("type = tcp\nproxy_protocol_version = v3",
                        r"proxy_protocol_version: 'v3' is not v1 or v2"),
                       ("type = udp\nproxy_protocol_version = v2",
                        r"proxy_protocol_version is for TCP proxies")):
        conf = os.path.join(env.tmp.name, "bad.ini")
        with open(conf, "w") as f:
            f.write(f"[client]\nserver = {LOOP}:1\ntoken = t\n[proxy p]\nlocal = {LOOP}:1\n"
                    f"remote_port = 0\n{body}\n")
        cl = Proc(env, "np-client-bad", [os.environ["NP_CLIENT"], "-c", conf])
        check(cl.wait_exit() == 2, "a bad proxy_protocol_version is a usage error (exit 2)")
        cl.wait_line(want)


TESTS = {
    "pp_nginx_v1_and_v2": test_nginx_v1_and_v2,
    "pp_haproxy_accept_proxy": test_haproxy_accept_proxy,
    "pp_bad_version": test_bad_version_is_a_config_error,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
