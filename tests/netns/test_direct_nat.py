#!/usr/bin/env python3
"""Direct paths through two NATs (docs/testing.md, "Direct paths through two NATs"): the owner's
np-client in "home" behind "router", an xtcp visitor's np-client in "vhome" behind "vrouter",
np-server on the public side introducing them. Each router is set in turn to each NAT behaviour
(netbed.set_nat: eim, apdf, random), in every combination; in each, a local connection to the
visitor's port must be served byte for byte, directly when the NATs allow it, else through the
server after the punching deadline. Prints a "matrix:" line per pair and "figure:" lines.

The suite runs NP_DIRECT_ATTEMPTS (default 1) attempts per pair; bench/direct_nat.py runs 100 and
writes the table of docs/testing.md. Needs root; skipped (exit 77) otherwise."""

import hashlib
import os
import re
import signal
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import netbed  # noqa: E402
from netbed import PUBLIC_IP, NetBed, inside  # noqa: E402
from nptest import CLIENT, SERVER, check, recv_all  # noqa: E402
from test_nat import tls_args  # noqa: E402
from test_twoway import echo_service  # noqa: E402

CTL = 7000
VPORT = 2222
MODES = ("eim", "apdf", "random")
# Where the NATs leave a way: one side maps and filters by endpoint alone, or both keep their port
# and only filter (each side's first probe opens its own NAT towards the other's public port).
# A port-randomising NAT facing a filtering one gives the other side no port to aim at.
EXPECT_DIRECT = {(o, v): not ((o == "random" and v != "eim") or (v == "random" and o != "eim"))
                 for o in MODES for v in MODES}
SECRET = "correct horse"


def figure(name, value, unit):
    print(f"figure: {name} = {value:.2f} {unit}", flush=True)


def write(env, name, text):
    path = os.path.join(env.tmp.name, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def common(env):
    return ["--server", f"{PUBLIC_IP}:{CTL}", "--token", "nat-test", "--log-level", "debug",
            *tls_args(env)[1]]


def start(env, bed, echo_port):
    srv = bed.proc(env, "public", "np-server", [SERVER, "--bind", f"0.0.0.0:{CTL}", "--token",
                                                "nat-test", "--log-level", "debug", *tls_args(env)[0]])
    srv.wait_line(r"listening on")
    ini = write(env, "alice.ini", f"[proxy svc]\ntype = stcp\nlocal = 127.0.0.1:{echo_port}\n"
                                  f"secret_key = {SECRET}\n")
    owner = bed.proc(env, "home", "owner", [CLIENT, *common(env), "--name", "alice", "-c", ini])
    owner.wait_line(r"visitors reach it as alice\.svc")
    return srv, owner


def visitor(env, bed, n):
    ini = write(env, f"bob{n}.ini", f"[visitor v]\ntype = xtcp\nserver_name = alice.svc\n"
                                    f"secret_key = {SECRET}\nbind = 127.0.0.1:{VPORT}\n")
    p = bed.proc(env, "vhome", f"visitor-{n}", [CLIENT, *common(env), "--name", f"bob{n}", "-c", ini])
    p.wait_line(r"logged in to")
    return p


def one_attempt(env, bed, n, size=256 * 1024):
    """A fresh visitor client, one local connection carrying size bytes each way: (direct?,
    ms to direct or None, ms until served, the bytes came back)."""
    p = visitor(env, bed, n)
    data = os.urandom(size)
    t0 = time.monotonic()
    with inside(bed.ns["vhome"]):
        s = socket.create_connection(("127.0.0.1", VPORT), timeout=30)
    s.settimeout(30)
    back = []
    reader = threading.Thread(target=lambda: back.append(recv_all(s)))
    reader.start()  # the echo comes back while we send
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    reader.join(60)
    got = back[0] if back else b""
    served_ms = (time.monotonic() - t0) * 1000
    s.close()
    line = p.wait_line(r"direct path to alice\.svc at \S+ is up in (\d+) ms|no direct path to "
                       r"alice\.svc \(([^)]*)\)", timeout=10).group(0)
    m = re.search(r"is up in (\d+) ms", line)
    p.signal(signal.SIGTERM)
    check(p.wait_exit(10) == 0, "the visitor client exits cleanly")
    same = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    return m is not None, int(m.group(1)) if m else None, served_ms, same


def run_matrix(env, attempts, pairs=None):
    """Every pair of NAT modes (owner's router, visitor's router): a dict of results."""
    bed = NetBed(second_nat=True, wan_input="drop")
    results = {}
    try:
        with inside(bed.ns["home"]):
            echo = echo_service(env)
        start(env, bed, echo.port)
        n = 0
        for omode in MODES:
            for vmode in MODES:
                if pairs is not None and (omode, vmode) not in pairs:
                    continue
                # No conntrack flush: it would cut the clients' control connections (each
                # attempt's UDP sockets are new, so their mappings follow the new rules).
                bed.set_nat("router", omode)
                bed.set_nat("vrouter", vmode)
                rows = []
                for _ in range(attempts):
                    n += 1
                    rows.append(one_attempt(env, bed, n))
                results[(omode, vmode)] = rows
                direct = [r for r in rows if r[0]]
                relayed = [r for r in rows if not r[0]]
                print(f"matrix: owner {omode} visitor {vmode}: direct {len(direct)}/{len(rows)}"
                      f"; to direct {statistics.median([r[1] for r in direct]) if direct else '-'} ms"
                      f"; served via relay {statistics.median([r[2] for r in relayed]) if relayed else '-'} ms"
                      f"; all served {all(r[3] for r in rows)}", flush=True)
        return results
    finally:
        bed.down()


def test_direct_nat_matrix(env):
    """Every pair of NAT behaviours: every visitor served byte for byte; directly where the NATs
    leave a way (EXPECT_DIRECT), through the server after the deadline where they do not."""
    attempts = int(os.environ.get("NP_DIRECT_ATTEMPTS", "1"))
    results = run_matrix(env, attempts)
    for pair, rows in results.items():
        check(all(r[3] for r in rows), f"{pair}: every visitor served, byte for byte")
        direct = sum(1 for r in rows if r[0])
        if EXPECT_DIRECT[pair]:
            check(direct == len(rows), f"{pair}: direct every time ({direct}/{len(rows)})")
        else:
            check(direct == 0, f"{pair}: no direct path expected ({direct}/{len(rows)})")
            for r in rows:
                check(r[2] < 15000, f"{pair}: served through the server in {r[2]:.0f} ms")
    for pair, rows in results.items():
        d = [r[1] for r in rows if r[0]]
        if d:
            figure(f"time to direct, owner {pair[0]} visitor {pair[1]}", statistics.median(d), "ms")


def test_direct_path_dies(env):
    """A direct path up, then its UDP cut at the visitor's router: the path dies (no packet for
    30 s), the visitor says so, the next connection goes through the server at once, and after the
    UDP comes back the next try (30 s later) is direct again."""
    bed = NetBed(second_nat=True, wan_input="drop")
    try:
        with inside(bed.ns["home"]):
            echo = echo_service(env)
        start(env, bed, echo.port)
        p = visitor(env, bed, 1)

        def served(data):
            with inside(bed.ns["vhome"]):
                s = socket.create_connection(("127.0.0.1", VPORT), timeout=30)
            s.settimeout(60)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = recv_all(s)
            s.close()
            return got == data

        check(served(b"a" * 5000), "served")
        p.wait_line(r"direct path to alice\.svc at \S+ is up")
        bed.run("vrouter", "nft", "add", "rule", "inet", "fw", "impair", "meta", "l4proto", "udp",
                "drop")
        t0 = time.monotonic()
        p.wait_line(r"the direct path to alice\.svc at \S+ is down", timeout=60)
        figure("a dead direct path noticed after", time.monotonic() - t0, "s")
        t1 = time.monotonic()
        check(served(b"b" * 5000), "served through the server while the path is down")
        figure("first connection after the path died, served in", (time.monotonic() - t1) * 1000, "ms")
        bed.run("vrouter", "nft", "flush", "chain", "inet", "fw", "impair")
        mark = p.mark()
        # The retry comes 30 s after the failure; a connection then tries the direct path again.
        deadline = time.monotonic() + 70
        while time.monotonic() < deadline:
            check(served(b"c" * 1000), "served while waiting for the retry")
            if p.count(r"direct path to alice\.svc at \S+ is up", after=mark):
                break
            time.sleep(2)  # a connection every 2 s: what is measured is when one finds the path again
        check(p.count(r"direct path to alice\.svc at \S+ is up", after=mark) > 0,
              "direct again after the retry")
    finally:
        bed.down()


TESTS = {
    "nat_matrix": test_direct_nat_matrix,
    "path_dies": test_direct_path_dies,
}

if __name__ == "__main__":
    netbed.main(TESTS)
