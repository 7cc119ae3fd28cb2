#!/usr/bin/env python3
"""Time to first answer for new visitors when client and server are 40 ms apart (the NAT test bed with
20 ms of delay each way on the home uplink), with and without pre-opened work connections. Needs root.

    sudo python3 bench/nat_latency.py [--visitors 30] [--pool 8]"""

import argparse
import os
import socket
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "netns"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
os.environ.setdefault("NP_SERVER", os.path.join(ROOT, "build/tools/np-server"))
os.environ.setdefault("NP_CLIENT", os.path.join(ROOT, "build/tools/np-client"))
import netbed  # noqa: E402
import nptest  # noqa: E402
from netbed import PUBLIC_IP, NetBed, inside  # noqa: E402


def measure(pool, visitors):
    env = nptest.Env()
    bed = NetBed(wire=dict(delay=20))
    try:
        with inside(bed.ns["home"]):
            svc = env.service(nptest.Greeter)
        srv = bed.proc(env, "public", "np-server", [nptest.SERVER, "--bind", "0.0.0.0:7000",
                                                    "--log-level", "info"])
        srv.wait_line(r"listening on")
        cl = bed.proc(env, "home", "np-client", [nptest.CLIENT, "--server", f"{PUBLIC_IP}:7000",
                                                 "--work-pool", str(pool), "-R", f"6000:127.0.0.1:{svc}"])
        nptest.proxy_ports(cl)
        time.sleep(0.5)  # let the pool fill: the state being measured, not a synchronisation
        times = []
        for i in range(visitors):
            t0 = time.monotonic()
            with inside(bed.ns["visitor"]):
                s = socket.create_connection((PUBLIC_IP, 6000), timeout=10)
            s.sendall(b"v%d\n" % i)
            s.recv(100)
            times.append((time.monotonic() - t0) * 1000)
            s.close()
            time.sleep(0.05)  # visitors one at a time, the pool refilled between them
        return times
    finally:
        env.close(False)
        bed.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--visitors", type=int, default=30)
    ap.add_argument("--pool", type=int, default=8)
    args = ap.parse_args()
    rows = []
    for pool in (0, args.pool):
        t = measure(pool, args.visitors)
        rows.append((pool, statistics.median(t), max(t)))
    print("work_pool  first answer p50 (ms)  max (ms)   (RTT between client and server: 40 ms)")
    for pool, p50, mx in rows:
        print(f"{pool:9d}  {p50:21.1f}  {mx:8.1f}")


if __name__ == "__main__":
    main()
