#!/usr/bin/env python3
"""Three np-servers that share the load (docs/config.md, "Servers that share the load"), each in a
namespace of its own on the bed's internet, with a redis-server in a fourth; three np-clients in the
NAT'd home, each connected to one server only. Visitors in the visitor namespace ask every server
for every service: each is answered, forwarded between the servers when needed, with the visitor's
own address. The store killed: the servers route from their last table; a service registered
meanwhile is known to the others once the store is back. A server killed: its routes are gone from
the others within the lease. Needs root; skipped (exit 77) otherwise. Prints "figure:" lines."""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import netbed  # noqa: E402
from netbed import PUBLIC_IP, VISITOR_IP, NetBed  # noqa: E402
from nptest import CLIENT, SANITIZED, SERVER, check, wait_until  # noqa: E402
from test_ha import NGINX_CONF, NGINX_SERVER  # noqa: E402
from test_nat import figure, tls_args  # noqa: E402
from test_udp import DNSMASQ_RECORDS  # noqa: E402

PUBLIC2_IP, PUBLIC3_IP, STORE_IP = "10.77.0.11", "10.77.0.12", "10.77.0.40"
CTL, ADMIN, HTTP, TCP, DNS, STORE = 7000, 7400, 8080, 9000, 5300, 6379
LEASE_MS = 1000
WORKERS = 2  # each worker links on its own when one of its visitors first needs it
SERVICES = {"alpha": 8101, "beta": 8102, "gamma": 8103, "delta": 8104}

def start_server(env, bed, ns, ip, name):
    p = bed.proc(env, ns, name, [
        SERVER, "--bind", f"0.0.0.0:{CTL}", "--token", "cluster-test", "--log-level", "debug",
        "--admin-bind", f"127.0.0.1:{ADMIN}", "--vhost-http-port", str(HTTP),
        "--route-store", f"redis://{STORE_IP}:{STORE}", "--cluster-advertise", f"{ip}:{CTL}",
        "--route-lease", f"{LEASE_MS}ms", "--cluster-token", "cluster-s3cret", "--workers",
        str(WORKERS), *tls_args(env)[0]])
    p.wait_line(r"\d+ workers? on port")
    p.ns, p.ip = ns, ip
    return p


def start_store(env, bed):
    p = bed.proc(env, "store", "redis-server", [
        # on a private network of its own; protected mode would refuse all but loopback
        "redis-server", "--port", str(STORE), "--bind", STORE_IP, "--protected-mode", "no",
        "--save", "", "--appendonly",
        "no", "--dir", env.tmp.name, "--loglevel", "warning"])
    wait_until(lambda: bed.run("store", "redis-cli", "-h", STORE_IP, "PING",
                               check=False).stdout.strip() == "PONG", 10, "redis-server answers")
    return p


def start_client(env, bed, srv, name, domains, tcp=None, dns=None):
    conf = os.path.join(env.tmp.name, f"{name}.ini")
    with open(conf, "w") as f:
        for d in domains:
            f.write(f"[proxy {d}]\ntype = http\nlocal = 127.0.0.1:{SERVICES[d]}\n"
                    f"custom_domains = {d}.example.com\n")
        if tcp is not None:
            f.write(f"[proxy {tcp}-tcp]\nlocal = 127.0.0.1:{SERVICES[tcp]}\nremote_port = {TCP}\n")
        if dns is not None:
            f.write(f"[proxy dns]\ntype = udp\nlocal = 127.0.0.1:{dns}\nremote_port = {DNS}\n")
    p = bed.proc(env, "home", f"np-client-{name}", [
        CLIENT, "--server", f"{srv.ip}:{CTL}", "--token", "cluster-test", "--name", name,
        "--reconnect-max", "1s", "--log-level", "debug", *tls_args(env)[1], "-c", conf])
    for d in domains:
        p.wait_line(rf"proxy {d}: http://{d}\.example\.com")
    return p


def routes(bed, srv):
    out = bed.run(srv.ns, "curl", "-sS", "--max-time", "5",
                  f"http://127.0.0.1:{ADMIN}/api/v1/routes", check=False).stdout
    try:
        return {r["route"]: r["server"] for r in json.loads(out)["routes"]}
    except (ValueError, KeyError):
        return None  # no answer: not an empty table


def ask(bed, srv, host):
    """(HTTP status, body, seconds to the first byte) of a visitor's GET to srv for host."""
    r = subprocess.run([*bed.enter("visitor"), "curl", "-sS", "--max-time", "10", "-w",
                        "\n%{http_code} %{time_starttransfer}", "-H", f"Host: {host}.example.com",
                        f"http://{srv.ip}:{HTTP}/"], capture_output=True, text=True, timeout=20)
    body, _, tail = r.stdout.rpartition("\n")
    code, _, first = tail.partition(" ")
    return code, body, float(first or 0)


def dig(bed, ip, *query):
    r = subprocess.run([*bed.enter("visitor"), "dig", f"@{ip}", "-p", str(DNS), "+tries=1",
                        "+time=5", "+short", *query], capture_output=True, text=True, timeout=20)
    return r.stdout.strip()


def tcp_ask(bed, srv):
    r = subprocess.run([*bed.enter("visitor"), "curl", "-sS", "--max-time", "10",
                        f"http://{srv.ip}:{TCP}/"], capture_output=True, text=True, timeout=20)
    return r.stdout


def test_three_servers_share_the_load(env):
    bed = NetBed(hosts={"public2": PUBLIC2_IP, "public3": PUBLIC3_IP, "store": STORE_IP})
    try:
        share(env, bed)
    finally:
        bed.down()


def share(env, bed):
    tmp = env.tmp.name
    os.chmod(tmp, 0o755)
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, servers="\n".join(
            NGINX_SERVER.format(port=port, name=f"{name} for $http_x_forwarded_for")
            for name, port in SERVICES.items())))
    bed.proc(env, "home", "nginx", ["nginx", "-c", f"{tmp}/nginx.conf"])
    dnsmasq = bed.proc(env, "home", "dnsmasq", [
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--bind-interfaces", "--listen-address=127.0.0.1", "--port=5353", "--pid-file=",
        "--user=root", "--group=root", "--log-facility=-", *DNSMASQ_RECORDS])
    dnsmasq.wait_line(r"started, version")
    slow = 4 if SANITIZED else 1
    store = start_store(env, bed)
    srv = {"a": start_server(env, bed, "public", PUBLIC_IP, "np-server-a"),
           "b": start_server(env, bed, "public2", PUBLIC2_IP, "np-server-b"),
           "c": start_server(env, bed, "public3", PUBLIC3_IP, "np-server-c")}
    owner = {"alpha": "a", "beta": "b", "gamma": "c"}
    start_client(env, bed, srv["a"], "home-a", ["alpha"], tcp="alpha", dns=5353)
    start_client(env, bed, srv["b"], "home-b", ["beta"])
    start_client(env, bed, srv["c"], "home-c", ["gamma"])
    want = {f"http:{d}.example.com": f"{srv[o].ip}:{CTL}" for d, o in owner.items()}
    def read_all(what):
        for n, s in srv.items():
            wait_until(lambda: all((routes(bed, s) or {}).get(k) == v for k, v in want.items()
                                   if v != f"{s.ip}:{CTL}"), 10 * slow,
                       f"{n} read the others' routes ({what})")
    read_all("at start")

    # Every service through every server, with the visitor's own address.
    firsts = {"owner": [], "forwarded": []}
    for _ in range(10):
        for d, o in owner.items():
            for n, s in srv.items():
                code, body, first = ask(bed, s, d)
                check(code == "200" and body == f"{d} for {VISITOR_IP}\n",
                      f"{d} through {n}: {code} {body!r}")
                firsts["owner" if n == o else "forwarded"].append(first * 1000)
    for n in "bc":
        check(tcp_ask(bed, srv[n]) == f"alpha for \n", f"TCP port {TCP} of a's client through {n}")
    # UDP: dig through every server to dnsmasq behind a's client, a large answer too
    big = None
    for n, s in srv.items():
        check(dig(bed, s.ip, "www.home.test") == "192.168.77.80", f"dig A through {n}")
        got = dig(bed, s.ip, "+ignore", "TXT", "big.home.test")
        check(len(got) > 800 and (big is None or got == big), f"a large TXT answer through {n}")
        big = got
    for kind, ms in firsts.items():
        figure(f"first byte, {kind} (p50 of {len(ms)})", statistics.median(ms), "ms")
    for n, s in srv.items():
        for o in srv.values():
            links = s.count(rf"peer {o.ip}:{CTL} logged in from")
            check(o is s or 1 <= links <= WORKERS, f"{n}: {links} links from {o.name}, at most one "
                  "per worker")

    # The store killed: routing goes on from the last table; a service registered meanwhile is
    # known to the others once the store is back.
    store.signal(signal.SIGKILL)
    store.wait_exit()
    for n, s in srv.items():
        s.wait_line(r"route store redis://\S+: .*; routing from the last table read", 10 * slow)
    for d, o in owner.items():
        for n, s in srv.items():
            check(ask(bed, s, d)[0] == "200", f"store away: {d} through {n}")
    start_client(env, bed, srv["c"], "home-d", ["delta"])
    check(ask(bed, srv["a"], "delta")[0] == "404", "delta not known at a while the store is away")
    t0 = time.monotonic()
    store = start_store(env, bed)
    wait_until(lambda: ask(bed, srv["a"], "delta")[:2] == ("200", f"delta for {VISITOR_IP}\n"),
               10 * slow, "delta forwarded from a once the store is back")
    figure("a service registered while the store was away, forwarded after its return",
           (time.monotonic() - t0) * 1000, "ms")

    # A server killed: its routes are gone from the others within the lease (502 meanwhile). The
    # store came back empty: first every server has written its routes again and read the others'.
    read_all("after the store came back")
    srv["a"].signal(signal.SIGKILL)
    srv["a"].wait_exit()
    t0 = time.monotonic()
    def lacks_alpha(n):
        table = routes(bed, srv[n])
        return table is not None and "http:alpha.example.com" not in table
    wait_until(lambda: lacks_alpha("b") and lacks_alpha("c"), 5 * slow,
               "a's routes gone from b and c")
    gone = time.monotonic() - t0
    figure("a killed server's routes gone from the others", gone * 1000, "ms")
    # expired in the store within the lease, then read by each server within a third of it
    check(gone < 2 * LEASE_MS / 1000 * slow, f"within the lease and a read: {gone:.2f} s")
    for n in "bc":
        code = ask(bed, srv[n], "alpha")[0]
        check(code == "404", f"alpha through {n} once a is gone: {code}")
        check(ask(bed, srv[n], "beta")[0] == "200" and ask(bed, srv[n], "gamma")[0] == "200",
              f"the others' services through {n}")


TESTS = {"three_servers_share_the_load": test_three_servers_share_the_load}

if __name__ == "__main__":
    netbed.main(TESTS)
