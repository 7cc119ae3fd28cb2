#!/usr/bin/env python3
"""Multiplexing on a long path: the NAT test bed with 20 ms of delay each way between client and
server (40 ms RTT). Measures (1) one download through a multiplexed stream against one through a
dedicated work connection, and against a multiplexed stream whose window may not grow past yamux's
256 KiB (what frp does); (2) the time to answer short requests on the same multiplexed connection
while a bulk download runs on it (fairness). Needs root.

    sudo python3 bench/nat_mux.py [--mib 32] [--repeats 2]"""

import argparse
import os
import subprocess
import socket
import socketserver
import statistics
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "netns"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
os.environ.setdefault("NP_SERVER", os.path.join(ROOT, "build/tools/np-server"))
os.environ.setdefault("NP_CLIENT", os.path.join(ROOT, "build/tools/np-client"))
import nptest  # noqa: E402
from netbed import PUBLIC_IP, NetBed, inside  # noqa: E402

CHUNK = b"\xa5" * 65536


class Source(socketserver.BaseRequestHandler):
    """Sends Source.size bytes, then closes."""
    size = 0

    def handle(self):
        left = Source.size
        while left > 0:
            n = min(left, len(CHUNK))
            self.request.sendall(CHUNK[:n])
            left -= n


def download(port, size):
    with inside(NS["visitor"]):
        s = socket.create_connection((PUBLIC_IP, port), timeout=30)
    t0 = time.monotonic()
    got = 0
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        got += len(b)
    s.close()
    if got != size:
        raise RuntimeError(f"downloaded {got} of {size} bytes")
    return size / (time.monotonic() - t0) / 1e6


def ask(port, i):
    t0 = time.monotonic()
    with inside(NS["visitor"]):
        s = socket.create_connection((PUBLIC_IP, port), timeout=30)
    s.sendall(b"q%d\n" % i)
    want = b"you are q%d\n" % i
    got = b""
    while len(got) < len(want):
        b = s.recv(100)
        if not b:
            break
        got += b
    s.close()
    if got != want:
        raise RuntimeError(f"short request {i}: {got!r}")
    return (time.monotonic() - t0) * 1000


NS = {}


def run(client_args, size, fairness, server_args=()):
    env = nptest.Env()
    bed = NetBed(wire=dict(delay=20))
    NS.update(bed.ns)
    try:
        with inside(bed.ns["home"]):
            src = env.service(Source)
            greeter = env.service(nptest.Greeter)
        # The defaults, TLS included: the client pins the server's certificate.
        state = os.path.join(env.tmp.name, "np-state")
        fp = subprocess.run([nptest.SERVER, "--tls-dir", state, "--fingerprint"],
                            capture_output=True, text=True, check=True).stdout.strip()
        srv = bed.proc(env, "public", "np-server", [nptest.SERVER, "--bind", "0.0.0.0:7000",
                                                    "--token", "bench", "--tls-dir", state,
                                                    *server_args])
        srv.wait_line(r"listening on")
        cl = bed.proc(env, "home", "np-client", [nptest.CLIENT, "--server", f"{PUBLIC_IP}:7000",
                                                 "--token", "bench", "--server-fingerprint", fp,
                                                 "--log-level", "warn", *client_args,
                                                 "-R", f"6000:127.0.0.1:{src}",
                                                 "-R", f"6001:127.0.0.1:{greeter}"])
        nptest.proxy_ports(cl, count=2)
        time.sleep(0.5)  # let the pre-opened connections come up: the state measured
        if not fairness:
            return download(6000, size)
        idle = [ask(6001, i) for i in range(10)]
        done = threading.Event()
        rate = []
        t = threading.Thread(target=lambda: (rate.append(download(6000, size)), done.set()))
        t.start()
        time.sleep(1.0)  # the bulk transfer is under way
        busy = []
        i = 100
        while not done.is_set() and len(busy) < 20:
            busy.append(ask(6001, i))
            i += 1
        t.join()
        return idle, busy
    finally:
        env.close(False)
        bed.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    size = args.mib << 20
    Source.size = size
    # The download's receiver is the server: its mux_max_window is the one that matters.
    fixed = ["--mux-max-window", "262144"]
    configs = [("dedicated connection", ["--mux", "false"], []),
               ("mux stream", ["--mux", "true"], []),
               ("mux, window fixed at 256 KiB", ["--mux", "true", *fixed], fixed)]
    rates = {}
    for name, cargs, sargs in configs:
        rates[name] = statistics.median(run(cargs, size, False, sargs) for _ in range(args.repeats))
    base = rates["dedicated connection"]
    print(f"one {args.mib} MiB download, client and server 40 ms apart (median of {args.repeats})")
    for name, r in rates.items():
        print(f"  {name:30s} {r:7.2f} MB/s  {r / base:5.2f}x")
    Source.size = 256 << 20  # long enough to outlast the short requests
    idle, busy = run(["--mux", "true"], Source.size, True)
    print("short requests on the same multiplexed connection (new visitor each, ms)")
    print(f"  idle:                     p50 {statistics.median(idle):6.1f}  max {max(idle):6.1f}")
    print(f"  during a bulk download:   p50 {statistics.median(busy):6.1f}  max {max(busy):6.1f}"
          f"  ({len(busy)} requests)")


if __name__ == "__main__":
    main()
