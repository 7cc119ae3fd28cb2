#!/usr/bin/env python3
"""Two np-servers behind haproxy (docs/deploy.md), in the NAT test bed: np-client in the NAT'd home
keeps a session to each server (server = a, b); haproxy, in a namespace of its own, checks each
server's /healthz and sends visitors on with PROXY v2; wrk in the visitor namespace asks at a
bounded rate, a new connection per request. A server killed with SIGKILL fails only requests in
flight on it, and none once haproxy's check has seen it go; it comes back and serves again without
the client being touched; a rolling restart with SIGTERM (drain_delay, then the drain) fails none.
Needs root; skipped (exit 77) otherwise. Prints "figure:" lines."""

import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import netbed  # noqa: E402
from netbed import PUBLIC_IP, VISITOR_IP, NetBed  # noqa: E402
from nptest import CLIENT, SANITIZED, SERVER, check, wait_until  # noqa: E402
from test_nat import figure, tls_args  # noqa: E402

PUBLIC2_IP, LB_IP = "10.77.0.11", "10.77.0.30"
CTL, ADMIN, PUBLIC, SERVICE = 7000, 7400, 8080, 8081
# haproxy's check: every 300 ms, 2 failures to take a server out, 2 successes to take it back.
INTER_MS, FALL, RISE = 300, 2, 2
CONNS, PAUSE_MS = 4, 20  # wrk: 4 connections, each waiting 20 ms between requests

NGINX_CONF = """daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log stderr error;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  fastcgi_temp_path {tmp}/nginx-fastcgi;
  uwsgi_temp_path {tmp}/nginx-uwsgi;
  scgi_temp_path {tmp}/nginx-scgi;
{servers}
}}
"""
# One server block of NGINX_CONF's (test_cluster.py has several, each answering its name).
NGINX_SERVER = ('  server {{ listen 127.0.0.1:{port}; location / {{ return 200 '
                '"{name}\\n"; }} }}')

HAPROXY_CONF = """global
  stats socket {tmp}/haproxy.sock mode 600 level admin
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  # A server that refuses the connection (gone, or its port not yet registered again) is tried
  # once more on the other.
  retries 3
  option redispatch 1
frontend visitors
  bind {lb}:80
  default_backend np
backend np
  option httpchk GET /healthz
  default-server check port {admin} inter {inter} fall {fall} rise {rise} send-proxy-v2
  server a {a}:{public}
  server b {b}:{public}
"""

WRK_LUA = """wrk.headers["Connection"] = "close"
function delay() return {pause} end
"""


def start_server(env, bed, ns, name):
    p = bed.proc(env, ns, name, [SERVER, "--bind", f"0.0.0.0:{CTL}", "--token", "ha-test",
                                 "--log-level", "debug", "--admin-bind", f"0.0.0.0:{ADMIN}",
                                 "--admin-token", "ha-admin", "--proxy-protocol-from", f"{LB_IP}/32",
                                 "--drain-delay", f"{INTER_MS * (FALL + 1)}ms", *tls_args(env)[0]])
    p.wait_line(r"\d+ workers? on port")
    return p


def haproxy_status(sock):
    """{server name: "UP" / "DOWN" / ...} from haproxy's stats socket."""
    out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{sock}"], input="show stat\n",
                         capture_output=True, text=True, timeout=10).stdout
    lines = out.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    head = lines[0][2:].split(",")
    rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line]
    return {r["svname"]: r["status"] for r in rows if r.get("pxname") == "np" and r["svname"] in "ab"}


def wrk(bed, tmp, seconds):
    """wrk in the visitor namespace against haproxy; returns the Popen (output on stdout)."""
    return subprocess.Popen([*bed.enter("visitor"), "wrk", "-t1", f"-c{CONNS}", f"-d{seconds}s",
                             "-s", f"{tmp}/pause.lua", f"http://{LB_IP}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(p, timeout=60):
    """(requests, failures): socket errors of every kind and answers other than 2xx/3xx."""
    out, _ = p.communicate(timeout=timeout)
    m = re.search(r"(\d+) requests in", out)
    check(m is not None, f"wrk ran: {out!r}")
    failed = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed += int(m2.group(1)) if m2 else 0
    return int(m.group(1)), failed


def test_two_servers_behind_haproxy(env):
    bed = NetBed(hosts={"public2": PUBLIC2_IP, "lb": LB_IP})
    try:
        behind_haproxy(env, bed)
    finally:
        bed.down()


def behind_haproxy(env, bed):
    tmp = env.tmp.name
    os.chmod(tmp, 0o755)  # nginx's worker reads nothing there, but its temp paths live in it
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, servers=NGINX_SERVER.format(port=SERVICE,
                                                                  name="served from home")))
    with open(f"{tmp}/haproxy.cfg", "w") as f:
        f.write(HAPROXY_CONF.format(tmp=tmp, lb=LB_IP, admin=ADMIN, inter=INTER_MS, fall=FALL,
                                    rise=RISE, a=PUBLIC_IP, b=PUBLIC2_IP, public=PUBLIC))
    with open(f"{tmp}/pause.lua", "w") as f:
        f.write(WRK_LUA.format(pause=PAUSE_MS))
    bed.proc(env, "home", "nginx", ["nginx", "-c", f"{tmp}/nginx.conf"])
    srv = {"a": start_server(env, bed, "public", "np-server-a"),
           "b": start_server(env, bed, "public2", "np-server-b")}
    ip = {"a": PUBLIC_IP, "b": PUBLIC2_IP}
    cl = bed.proc(env, "home", "np-client", [
        CLIENT, "--server", f"{PUBLIC_IP}:{CTL},{PUBLIC2_IP}:{CTL}", "--token", "ha-test", "--name",
        "home", "--reconnect-max", "1s", "--dial-timeout", "1s", "--log-level", "debug",
        *tls_args(env)[1], "-R", f"{PUBLIC}:127.0.0.1:{SERVICE}"])
    for name in "ab":
        cl.wait_line(rf"^proxy \S+: public port {PUBLIC} on {ip[name]}:{CTL}$", stream="stdout")
    bed.proc(env, "lb", "haproxy", ["haproxy", "-db", "-f", f"{tmp}/haproxy.cfg"])
    sock = f"{tmp}/haproxy.sock"
    wait_until(lambda: haproxy_status(sock) == {"a": "UP", "b": "UP"}, 10, "haproxy sees a and b up")
    slow = 4 if SANITIZED else 1

    # Both serve, and the visitor's own address reaches each server through PROXY v2.
    requests, failed = wrk_result(wrk(bed, tmp, 2))
    check(requests > 20 and failed == 0, f"both up: {requests} requests, {failed} failed")
    for name in "ab":
        check(srv[name].count(rf"access proxy=\S+ visitor={re.escape(VISITOR_IP)}:") > 0,
              f"server {name} served visitors, and saw their own address ({VISITOR_IP})")

    # SIGKILL a while requests run: only those in flight on it fail.
    before = srv["b"].count(r"access proxy=")
    w = wrk(bed, tmp, 3)
    wait_until(lambda: srv["b"].count(r"access proxy=") > before + 5, 10, "wrk is under way")
    srv["a"].signal(signal.SIGKILL)
    srv["a"].wait_exit()
    t0 = time.monotonic()
    wait_until(lambda: haproxy_status(sock).get("a") == "DOWN", 10 * slow, "haproxy takes a out")
    figure("haproxy takes a killed server out", (time.monotonic() - t0) * 1000, "ms")
    requests, failed = wrk_result(w)
    figure("requests failed when a server was killed", failed, "of %d" % requests)
    check(failed <= CONNS, f"at most the {CONNS} requests in flight on it failed: {failed} of {requests}")

    # Once haproxy has seen it: none fail, b serves them all.
    before = srv["b"].count(r"access proxy=")
    requests, failed = wrk_result(wrk(bed, tmp, 2))
    check(requests > 20 and failed == 0, f"a down: {requests} requests, {failed} failed")
    check(srv["b"].count(r"access proxy=") - before >= requests, "b served every one of them")

    # a comes back, same address and identity: the client logs in to it by itself, and it serves.
    mark = cl.mark()
    srv["a"] = start_server(env, bed, "public", "np-server-a2")
    cl.wait_line(rf"^proxy \S+: public port {PUBLIC} on {PUBLIC_IP}:{CTL}$", stream="stdout",
                 after=mark, timeout=10 * slow)
    wait_until(lambda: haproxy_status(sock).get("a") == "UP", 10 * slow, "haproxy takes a back")
    requests, failed = wrk_result(wrk(bed, tmp, 2))
    check(requests > 20 and failed == 0, f"a back: {requests} requests, {failed} failed")
    check(srv["a"].count(r"access proxy=") > 0, "a serves again")

    # A rolling restart, one server after the other, with SIGTERM: none fail.
    w = wrk(bed, tmp, 30)
    t0 = time.monotonic()
    for name, ns in (("a", "public"), ("b", "public2")):
        mark = cl.mark()
        srv[name].signal(signal.SIGTERM)
        check(srv[name].wait_exit(15 * slow) == 0, f"{name} drains and exits 0")
        srv[name] = start_server(env, bed, ns, f"np-server-{name}3")
        cl.wait_line(rf"^proxy \S+: public port {PUBLIC} on {ip[name]}:{CTL}$", stream="stdout",
                     after=mark, timeout=10 * slow)
        wait_until(lambda: haproxy_status(sock).get(name) == "UP", 10 * slow,
                   f"haproxy takes {name} back")
        # Before the next server goes: this one takes visitors again.
        wait_until(lambda: srv[name].count(r"access proxy=") > 0, 10 * slow,
                   f"the restarted {name} serves")
    figure("rolling restart of both servers", time.monotonic() - t0, "s")
    w.send_signal(signal.SIGINT)  # wrk prints what it did so far
    requests, failed = wrk_result(w)
    check(requests > 50 and failed == 0, f"rolling restart: {requests} requests, {failed} failed")


def test_one_name_several_addresses(env):
    bed = NetBed(hosts={"public2": PUBLIC2_IP})
    try:
        one_name(env, bed)
    finally:
        bed.down()


def one_name(env, bed):
    """server = np.test:7000, a name the client's own /etc/hosts resolves (DNS round robin without
    a DNS server): one address, one session, as before; a second address appears and gets a session
    of its own; the first goes and its session is closed."""
    tmp = env.tmp.name
    os.chmod(tmp, 0o755)
    hosts, conf = f"{tmp}/hosts", f"{tmp}/host.conf"
    with open(conf, "w") as f:
        f.write("multi on\n")  # every address of a name in hosts, not the first line's only

    def names(*ips):
        # Read at each lookup: the client's /etc/hosts links to this file.
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join(f"{ip} np.test\n" for ip in ips))

    def get(ip):
        r = subprocess.run([*bed.enter("visitor"), "curl", "-sS", "--max-time", "5",
                            f"http://{ip}:{PUBLIC}/"], capture_output=True, text=True, timeout=10)
        return r.stdout

    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, servers=NGINX_SERVER.format(port=SERVICE,
                                                                  name="served from home")))
    bed.proc(env, "home", "nginx", ["nginx", "-c", f"{tmp}/nginx.conf"])
    srv = {"a": start_server(env, bed, "public", "np-server-a"),
           "b": start_server(env, bed, "public2", "np-server-b")}
    slow = 4 if SANITIZED else 1
    names(PUBLIC_IP)
    cl = bed.proc(env, "home", "np-client", [
        CLIENT, "--server", f"np.test:{CTL}", "--token", "ha-test", "--name", "home",
        "--reconnect-max", "1s", "--log-level", "debug", *tls_args(env)[1],
        "-R", f"{PUBLIC}:127.0.0.1:{SERVICE}"], etc={"hosts": hosts, "host.conf": conf})
    # One address: one session, and the line a client of one server prints.
    cl.wait_line(rf"^proxy \S+: public port {PUBLIC}$", stream="stdout", timeout=10 * slow)
    check(get(PUBLIC_IP) == "served from home\n", "a serves through the name's one address")

    # A second address: a session of its own, found within reconnect_max (1 s here).
    t0 = time.monotonic()
    names(PUBLIC_IP, PUBLIC2_IP)
    cl.wait_line(rf"^proxy \S+: public port {PUBLIC} on {PUBLIC2_IP}:{CTL}$", stream="stdout",
                 timeout=10 * slow)
    figure("a new address of the name serves after", (time.monotonic() - t0) * 1000, "ms")
    cl.wait_line(rf"np\.test:{CTL} \({PUBLIC2_IP}\): an address of np\.test:{CTL}; opening a "
                 "session")
    for ip in (PUBLIC_IP, PUBLIC2_IP):
        check(get(ip) == "served from home\n", f"{ip} serves")
    check(cl.count(r"cannot connect|lost the connection|same np-server") == 0,
          "the session that ran stayed on its address: no second session to it")

    # The first address goes: its session is closed; the other serves on.
    names(PUBLIC2_IP)
    cl.wait_line(rf"np\.test:{CTL} \({PUBLIC_IP}\): no longer an address of its name; closing "
                 "its session", timeout=10 * slow)
    wait_until(lambda: get(PUBLIC_IP) == "", 10 * slow, f"{PUBLIC_IP} no longer serves the proxy")
    check(get(PUBLIC2_IP) == "served from home\n", f"{PUBLIC2_IP} serves on")
    check(cl.p.poll() is None, "np-client runs on")

    # A name whose addresses are all loopback (localhost: 127.0.0.1 and ::1) is one machine: one
    # session, to whichever address answers, as a client alone makes.
    local = f"{tmp}/hosts-local"
    with open(local, "w") as f:
        f.write("127.0.0.1 localhost np-local.test\n::1 np-local.test\n")
    here = bed.proc(env, "home", "np-server-home", [
        SERVER, "--bind", f"127.0.0.1:{CTL}", "--token", "ha-test", *tls_args(env)[0]])
    here.wait_line(r"\d+ workers? on port")
    cl2 = bed.proc(env, "home", "np-client-local", [
        CLIENT, "--server", f"np-local.test:{CTL}", "--token", "ha-test", "--name", "local",
        "--reconnect-max", "1s", *tls_args(env)[1], "-R", f"0:127.0.0.1:{SERVICE}"],
        etc={"hosts": local, "host.conf": conf})
    cl2.wait_line(r"^proxy \S+: public port \d+$", stream="stdout", timeout=10 * slow)
    check(cl2.count(r"opening a session|cannot connect") == 0,
          f"one session, no other tried: {cl2.lines}")

    # A name that does not resolve (hosts alone answer: no DNS server is asked): said once, retried,
    # and the client still stops at once, cleanly (ASan: nothing left behind by the resolutions).
    nss = f"{tmp}/nsswitch.conf"
    with open(nss, "w") as f:
        f.write("hosts: files\n")
    cl3 = bed.proc(env, "home", "np-client-none", [
        CLIENT, "--server", f"np-none.test:{CTL}", "--token", "ha-test", "--reconnect-max", "1s",
        *tls_args(env)[1], "-R", f"0:127.0.0.1:{SERVICE}"],
        etc={"hosts": local, "host.conf": conf, "nsswitch.conf": nss})
    cl3.wait_line(rf"cannot resolve the server's name np-none\.test:{CTL}", timeout=10 * slow)
    cl3.signal(signal.SIGTERM)
    check(cl3.wait_exit(10 * slow) == 0, "a client whose server does not resolve stops with 0")


TESTS = {"two_servers_behind_haproxy": test_two_servers_behind_haproxy,
         "one_name_several_addresses": test_one_name_several_addresses}

if __name__ == "__main__":
    netbed.main(TESTS)
