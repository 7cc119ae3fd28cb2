#!/usr/bin/env python3
"""A visitor forwarded between servers of a cluster (route_store, cluster_token) against one that
reaches the server holding its HTTP service, and nginx directly: first-byte latency of a new
connection (curl's time_starttransfer, sequential, so nothing queues), wrk req/s with keep-alive
and with a new connection per request, and the time to fetch a large file. Two np-servers with one
identity and a redis-server on loopback; the service's client is on server a; "forwarded" asks
server b, which forwards to a over its link.

Not part of the test suite: numbers depend on the machine. Run with ./bench/run --forward
[--seconds N --repeats N --first N --mib N]; results are printed and appended to
bench/out/forward.jsonl."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench import (CLIENT, LOOP, ROOT, SERVER, Procs, free_port, median,  # noqa: E402
                   print_table, start_nginx, wait_port, wrk)

HOST = "web.example.com"


def np_cluster(procs, target, tmp):
    """redis, servers a and b sharing one identity, a client of a serving HOST: ports of a's and
    b's vhost."""
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
        procs.start([SERVER, "--bind", f"{LOOP}:{ctl}", "--proxy-bind-addr", LOOP, "--token",
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
                        f"local = {LOOP}:{target}\ncustom_domains = {HOST}\n")
            cl = procs.start([CLIENT, "-c", conf], stdout=subprocess.PIPE, text=True)
            cl.stdout.readline()  # "proxy web: public port N"
    # b has read the table once it forwards: wait for the first 200 through it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if first_byte(vports[1]) is not None:
            break
        time.sleep(0.1)  # noqa: the table is read every third of the lease; nothing to await
    return vports


def first_byte(port, host=HOST):
    """Seconds to the first byte of the answer on a new connection, or None when not a 200."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Host: {host}", "-w",
                          "%{http_code} %{time_starttransfer}", f"http://{LOOP}:{port}/"],
                         capture_output=True, text=True, timeout=20).stdout.split()
    return float(out[1]) if out and out[0] == "200" else None


def fetch_seconds(port, host=HOST):
    t0 = time.monotonic()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Host: {host}", "-w",
                          "%{http_code}", f"http://{LOOP}:{port}/big"], capture_output=True,
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
        own, fwd = np_cluster(procs, nginx, tmp)
        for name, port in (("direct", nginx), ("owner", own), ("forwarded", fwd)):
            fb = sorted(x for x in (first_byte(port) for _ in range(a.first)) if x is not None)
            if len(fb) < a.first:
                raise SystemExit(f"{name}: {a.first - len(fb)} of {a.first} requests failed")
            r = {"first byte p50 ms": median(fb) * 1e3,
                 "first byte p99 ms": fb[int(len(fb) * 0.99) - 1] * 1e3 if fb else float("nan")}
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
