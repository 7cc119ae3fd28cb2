#!/usr/bin/env python3
"""A visitor forwarded between servers of a cluster (route_store, cluster_token) against one that
reaches the server holding its HTTP service, and nginx directly: first-byte latency of a new
connection (curl's time_starttransfer, sequential, so nothing queues), wrk req/s with keep-alive
and with a new connection per request, the time to fetch a large file, and the round trip of a
small datagram to a UDP echo service (one visitor, one datagram at a time). Two np-servers with
one identity and a redis-server on loopback (public ports on 127.0.0.2 and 127.0.0.3); the
services' client is on server a; "forwarded" asks server b, which forwards to a over its link.

Not part of the test suite: numbers depend on the machine. Run with ./bench/run --forward
[--seconds N --repeats N --first N --mib N]; results are printed and appended to
bench/out/forward.jsonl."""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench import (CLIENT, LOOP, ROOT, SERVER, Procs, free_port, median,  # noqa: E402
                   print_table, start_nginx, wait_port, wrk)

HOST = "web.example.com"


ADDRS = {"a": "127.0.0.2", "b": "127.0.0.3"}  # each server's public ports


def udp_echo():
    """A UDP echo service on loopback, in a thread: its port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((LOOP, 0))

    def serve():
        while True:
            data, peer = s.recvfrom(65536)
            s.sendto(data, peer)
    threading.Thread(target=serve, daemon=True).start()
    return s.getsockname()[1]


def np_cluster(procs, target, echo, uport, tmp):
    """redis, servers a and b sharing one identity, a client of a serving HOST and the UDP echo on
    uport: ports of a's and b's vhost."""
    store = free_port()
    procs.start(["redis-server", "--port", str(store), "--bind", LOOP, "--save", "",
                 "--appendonly", "no", "--dir", tmp])
    wait_port(store)
    state = os.path.join(tmp, "np-state")
    fp = subprocess.run([SERVER, "--tls-dir", state, "--fingerprint"], capture_output=True,
                        text=True, check=True).stdout.strip()
    vports = []
    for name in "ab":
        ctl, vport = free_port(), free_port()
        procs.start([SERVER, "--bind", f"{LOOP}:{ctl}", "--proxy-bind-addr", ADDRS[name], "--token",
                     "bench", "--log-level", "warn", "--access-log", "false", "--tls-dir", state,
                     "--max-pending-per-proxy", "20000", "--max-pending", "20000",
                     "--vhost-http-port", str(vport), "--route-store", f"redis://{LOOP}:{store}",
                     "--cluster-advertise", f"{LOOP}:{ctl}", "--cluster-token", "bench-cluster",
                     "--route-lease", "2s", "--workers", "1"])
        wait_port(ctl)
        vports.append(vport)
        if name == "a":
            conf = os.path.join(tmp, "client.ini")
            with open(conf, "w") as f:
                f.write(f"[client]\nserver = {LOOP}:{ctl}\ntoken = bench\nlog_level = warn\n"
                        f"server_fingerprint = {fp}\n[proxy web]\ntype = http\n"
                        f"local = {LOOP}:{target}\ncustom_domains = {HOST}\n"
                        f"[proxy echo]\ntype = udp\nlocal = {LOOP}:{echo}\nremote_port = {uport}\n")
            cl = procs.start([CLIENT, "-c", conf], stdout=subprocess.PIPE, text=True)
            cl.stdout.readline()  # "proxy web: public port N"
    # b has read the table once it forwards: wait for the first 200 through it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if first_byte((ADDRS["b"], vports[1])) is not None and udp_round_trips(
                (ADDRS["b"], uport), 1, timeout=0.5):
            break
        time.sleep(0.1)  # noqa: the table is read every third of the lease; nothing to await
    return [(ADDRS["a"], vports[0]), (ADDRS["b"], vports[1])]


def udp_round_trips(to, n, timeout=2.0):
    """Seconds of n sequential 64-byte round trips to the echo at to (an address, port), sorted;
    [] when one is lost."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    out, data = [], os.urandom(64)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendto(data, to)
            if s.recvfrom(65536)[0] != data:
                return []
            out.append(time.perf_counter() - t0)
    except OSError:
        return []
    finally:
        s.close()
    return sorted(out)


def first_byte(to, host=HOST):
    """Seconds to the first byte of the answer on a new connection, or None when not a 200."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Host: {host}", "-w",
                          "%{http_code} %{time_starttransfer}", f"http://{to[0]}:{to[1]}/"],
                         capture_output=True, text=True, timeout=20).stdout.split()
    return float(out[1]) if out and out[0] == "200" else None


def fetch_seconds(to, host=HOST):
    t0 = time.monotonic()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Host: {host}", "-w",
                          "%{http_code}", f"http://{to[0]}:{to[1]}/big"], capture_output=True,
                         text=True, timeout=300).stdout
    if out != "200":
        raise SystemExit(f"fetch through {port}: {out}")
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first", type=int, default=200, help="new connections for first-byte times")
    ap.add_argument("--mib", type=int, default=256, help="size of the large file")
    ap.add_argument("--datagrams", type=int, default=2000, help="UDP round trips")
    a = ap.parse_args()
    services, procs = Procs(), Procs()
    tmp = tempfile.mkdtemp(prefix="np-bench-fwd-")
    os.chmod(tmp, 0o755)  # nginx's workers run as nobody and must read the files
    results = {}
    try:
        nginx = start_nginx(services, tmp)
        with open(os.path.join(tmp, "www", "big"), "wb") as f:
            f.truncate(a.mib << 20)
        os.chmod(os.path.join(tmp, "www", "big"), 0o644)
        echo, uport = udp_echo(), free_port()
        own, fwd = np_cluster(procs, nginx, echo, uport, tmp)
        paths = (("direct", (LOOP, nginx), (LOOP, echo)), ("owner", own, (ADDRS["a"], uport)),
                 ("forwarded", fwd, (ADDRS["b"], uport)))
        for name, port, udp in paths:  # port: where HTTP goes, udp: where datagrams go
            fb = sorted(x for x in (first_byte(port) for _ in range(a.first)) if x is not None)
            if len(fb) < a.first:
                raise SystemExit(f"{name}: {a.first - len(fb)} of {a.first} requests failed")
            r = {"first byte p50 ms": median(fb) * 1e3,
                 "first byte p99 ms": fb[int(len(fb) * 0.99) - 1] * 1e3 if fb else float("nan")}
            rt = udp_round_trips(udp, a.datagrams)
            if not rt:
                raise SystemExit(f"{name}: a datagram was lost")
            r["UDP round trip p50 us"] = median(rt) * 1e6
            r["UDP round trip p99 us"] = rt[int(len(rt) * 0.99) - 1] * 1e6
            ka = [wrk(port, a.seconds, False, HOST) for _ in range(a.repeats)]
            cl = [wrk(port, a.seconds, True, HOST) for _ in range(a.repeats)]
            r["keep-alive req/s"] = median([x[0] for x in ka])
            r["new conn req/s"] = median([x[0] for x in cl])
            r["errors"] = sum(x[3] for x in ka + cl)
            secs = median([fetch_seconds(port) for _ in range(a.repeats)])
            r[f"{a.mib} MiB MB/s"] = (a.mib << 20) / secs / 1e6
            results[name] = r
    finally:
        procs.stop()
        services.stop()
    print_table(results, lambda k: k != "errors")
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "forward.jsonl"), "a") as f:
        f.write(json.dumps({"time": time.time(), "args": vars(a), "results": results}) + "\n")


if __name__ == "__main__":
    main()
