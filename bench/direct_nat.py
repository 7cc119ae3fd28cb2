#!/usr/bin/env python3
"""Direct paths through two NATs (the full form of tests/netns/test_direct_nat.py). Needs root.

    sudo python3 bench/direct_nat.py matrix [--attempts 100]
        every pair of NAT behaviours (owner's router x visitor's router: eim, apdf, random),
        ATTEMPTS fresh visitor clients each: how often the direct path came up, the time to it,
        and the time until a visitor was served through the server where it did not; prints the
        table of docs/testing.md ("Direct paths through two NATs").

    sudo python3 bench/direct_nat.py figures [--delay 20] [--mib 64] [--samples 30]
        both routers apdf, DELAY ms each way on the server's link: a new connection's first answer
        and a bulk upload, through an xtcp visitor (direct) and an stcp visitor (through the
        server), side by side, and the ratios."""

import argparse
import os
import socket
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
import test_direct_nat as tdn  # noqa: E402
from netbed import NetBed, inside  # noqa: E402
from nptest import CLIENT, recv_all  # noqa: E402
from test_twoway import echo_service  # noqa: E402


def matrix(attempts):
    env = nptest.Env()
    try:
        results = tdn.run_matrix(env, attempts)
    finally:
        env.close(False)
    print(f"\n| owner's NAT | visitor's NAT | direct ({attempts} attempts) | time to direct, median "
          "(max) | served through the server, median (max) | every visitor served |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for (o, v), rows in results.items():
        d = [r[1] for r in rows if r[0]]
        f = [r[2] for r in rows if not r[0]]
        print(f"| {o} | {v} | {100 * len(d) / len(rows):.0f} % | "
              f"{f'{statistics.median(d):.0f} ms ({max(d):.0f})' if d else '-'} | "
              f"{f'{statistics.median(f):.0f} ms ({max(f):.0f})' if f else '-'} | "
              f"{'yes' if all(r[3] for r in rows) else 'NO'} |")


def figures(delay, mib, samples):
    env = nptest.Env()
    bed = NetBed(second_nat=True, wan_input="drop", server_delay=delay)
    try:
        with inside(bed.ns["home"]):
            echo = echo_service(env)
        tdn.start(env, bed, echo.port)
        ini = tdn.write(env, "bob.ini", "[visitor d]\ntype = xtcp\nserver_name = alice.svc\n"
                                        f"secret_key = {tdn.SECRET}\nbind = 127.0.0.1:2222\n"
                                        "[visitor r]\ntype = stcp\nserver_name = alice.svc\n"
                                        f"secret_key = {tdn.SECRET}\nbind = 127.0.0.1:2223\n")
        p = bed.proc(env, "vhome", "visitor", [CLIENT, *tdn.common(env), "--name", "bob", "-c", ini])
        p.wait_line(r"logged in to")

        def conn(port):
            with inside(bed.ns["vhome"]):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.settimeout(60)
            return s

        s = conn(2222)  # the first connection brings the path up
        s.sendall(b"x")
        s.recv(1)
        s.close()
        p.wait_line(r"direct path to alice\.svc at \S+ is up")
        rows = {}
        for name, port in (("direct (xtcp)", 2222), ("through the server (stcp)", 2223)):
            first = []
            for _ in range(samples):
                t0 = time.monotonic()
                s = conn(port)
                s.sendall(b"ping")
                s.recv(4)
                first.append((time.monotonic() - t0) * 1000)
                s.close()
            data = os.urandom(1 << 20)
            s = conn(port)
            back = []
            reader = threading.Thread(target=lambda: back.append(len(recv_all(s))))
            t0 = time.monotonic()
            reader.start()  # the echo comes back while we send: both ways at once
            for _ in range(mib):
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            reader.join(300)
            got = back[0] if back else 0
            secs = time.monotonic() - t0
            s.close()
            assert got == mib << 20, f"{name}: {got} bytes back of {mib << 20}"
            rows[name] = (statistics.median(first), max(first), 2 * mib * 8 / secs)
        print(f"\nboth routers apdf; {delay} ms each way on the server's link (a round trip through "
              f"the server: {4 * delay} ms more than direct)")
        print("| path | first answer, median (max) | echo of {mib} MiB, Mbit/s (both ways) |".replace(
            "{mib}", str(mib)))
        print("| --- | ---: | ---: |")
        for name, (p50, mx, mbit) in rows.items():
            print(f"| {name} | {p50:.1f} ms ({mx:.1f}) | {mbit:.0f} |")
        d, r = rows["direct (xtcp)"], rows["through the server (stcp)"]
        print(f"ratios direct/relayed: first answer {d[0] / r[0]:.2f}, throughput {d[2] / r[2]:.2f}")
    finally:
        env.close(False)
        bed.down()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("matrix", "figures"))
    ap.add_argument("--attempts", type=int, default=100)
    ap.add_argument("--delay", type=int, default=20)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args()
    if args.what == "matrix":
        matrix(args.attempts)
    else:
        figures(args.delay, args.mib, args.samples)


if __name__ == "__main__":
    main()
