#!/usr/bin/env python3
"""The CPU of each relay on the path, not only of the whole path: np is two relays in series
(np-server, np-client) where haproxy is one, and on one machine the two share its cores with the
load. Per path (np with its defaults, np --insecure, haproxy) and workload (iperf3 1 and 8 streams
up and down, wrk keep-alive and Connection: close against nginx), each relay's CPU seconds per GB
or microseconds per request, and their sum. Repeats go round the paths; medians.

Not part of the test suite: numbers depend on the machine. Run with ./bench/run --hops
[--seconds N --repeats N]; results are printed and appended to bench/out/hops.jsonl
(docs/performance.md, "Each relay against haproxy's one")."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench import PATHS, Procs, cpu_seconds, free_port, iperf, median, start_nginx, wait_port, wrk  # noqa: E402

KINDS = ("1 up", "1 down", "8 up", "8 down", "keep-alive", "new conn")


def relay_pids(name, pub, pids):
    """np's paths return [server, client]; haproxy's returns its master, and its worker relays."""
    if name != "haproxy":
        return pids
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        out = subprocess.run(["pgrep", "-f", f"haproxy-{pub}.cfg"], capture_output=True, text=True).stdout.split()
        if out:
            return [int(x) for x in out]
        time.sleep(0.05)
    raise RuntimeError("haproxy's process not found")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=4, help="per iperf3/wrk run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default="np,np plain,haproxy")
    args = ap.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    tmp = tempfile.mkdtemp(prefix="np-hops-")
    os.chmod(tmp, 0o755)
    procs, services = Procs(), Procs()
    res = {}
    try:
        ip = free_port()
        services.start(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(ip)])
        ng = start_nginx(services, tmp)
        wait_port(ip)
        for r in range(args.repeats):
            for name in paths:
                for kind in KINDS:
                    http = kind in ("keep-alive", "new conn")
                    pub, pids = PATHS[name](procs, ng if http else ip, tmp)
                    pids = relay_pids(name, pub, pids)
                    before = [cpu_seconds([p]) for p in pids]
                    if http:
                        rate = wrk(pub, args.seconds, close=(kind == "new conn"))[0]
                        units, scale = rate * args.seconds, 1e6
                    else:
                        rate, nbytes = iperf(pub, args.seconds, int(kind.split()[0]), kind.endswith("down"))
                        units, scale = nbytes / 1e9, 1
                    per = [(cpu_seconds([p]) - c) / units * scale for p, c in zip(pids, before)]
                    procs.stop()
                    res.setdefault((name, kind), []).append((rate, per))
            print(f"round {r + 1} of {args.repeats} done", file=sys.stderr, flush=True)
    finally:
        procs.stop()
        services.stop()
    print(f"{'path':10} {'workload':11} {'rate':>10}  CPU per GB (s) or per request (us), each relay, and the sum")
    os.makedirs(os.path.join(os.path.dirname(__file__), "out"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "out", "hops.jsonl"), "a") as out:
        for (name, kind), v in res.items():
            rate = median([x[0] for x in v])
            per = [median([x[1][i] for x in v]) for i in range(min(len(x[1]) for x in v))]
            print(f"{name:10} {kind:11} {rate:10.2f}  " + "  ".join(f"{p:7.2f}" for p in per) + f"  sum {sum(per):7.2f}")
            out.write(json.dumps({"time": time.time(), "path": name, "workload": kind, "rate": rate,
                                  "per_relay": per, "sum": sum(per)}) + "\n")


if __name__ == "__main__":
    main()
