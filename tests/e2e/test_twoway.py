#!/usr/bin/env python3
"""Traffic both ways at once through the tunnel, as an echo service makes it: socat TCP-LISTEN,fork
EXEC:cat stops reading while its own writes are blocked, so a relay that waits on the wrong thing
hangs (issue 13: the default path hung at 12 MB). Every case runs with and without multiplexing, in
TLS and in clear (tests/e2e/meson.build)."""

import hashlib
import os
import socket
import sys
import threading
import time

from nptest import LOOP, Fail, Proc, check, connect, pattern, run, wait_until

MIB = 1024 * 1024
# The soak's length: short in the suite, NP_SOAK_SECONDS=600 for the full run (docs/testing.md).
SOAK_SECONDS = float(os.environ.get("NP_SOAK_SECONDS", "20"))


def echo_service(env):
    """socat's echo on a free port of 127.0.0.1, one cat per connection. -t 30: once the visitor has
    half-closed, socat waits only -t seconds (0.5 by default) for cat's answer before it closes; a
    loaded machine (a CI run of the suite in parallel) took longer than 0.5 s to fork and run cat,
    and a short echo came back empty with the tunnel working as it should."""
    s = socket.socket()
    s.bind((LOOP, 0))
    port = s.getsockname()[1]
    s.close()
    p = Proc(env, "socat-echo", ["socat", "-t", "30", f"TCP-LISTEN:{port},bind={LOOP},fork,reuseaddr",
                                 "EXEC:cat"])
    wait_until(lambda: listening(port), 10, "socat listening")
    p.port = port
    return p


def listening(port):
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                return True
    return False


def established_to(port):
    """Established connections to 127.0.0.1:port, counted at the connecting side."""
    n = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":
                n += 1
    return n


# The spliced relay keeps up to 16 empty pipes for reuse (lib/splice.h, NP_PIPE_CACHE): bounded, and
# not counted as descriptors the traffic took.
PIPE_CACHE_FDS = 2 * 16


def fds(proc):
    """(descriptors other than pipes and /dev/null, pipes) open in proc. /dev/null is left out:
    libuv opens it once per loop, at the loop's first stream, as a spare for running out of
    descriptors, and a worker whose first connection came during the traffic opened it then (each
    listener's spare is one too, beside its socket, which counts)."""
    other = pipes = 0
    d = f"/proc/{proc.p.pid}/fd"
    for fd in os.listdir(d):
        try:
            link = os.readlink(f"{d}/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        pipes += link.startswith("pipe:")
        other += not link.startswith("pipe:") and link != "/dev/null"
    return other, pipes


def fd_links(proc):
    """{fd: what it is} in proc, a socket named by its TCP ends and state where it has them."""
    tcp = {}
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/net/{name}") as f:
                for line in f.readlines()[1:]:
                    x = line.split()
                    tcp[x[9]] = f"{name} {x[1]} -> {x[2]} state {x[3]}"
        except FileNotFoundError:
            pass
    out = {}
    d = f"/proc/{proc.p.pid}/fd"
    for fd in os.listdir(d):
        try:
            link = os.readlink(f"{d}/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            link += " " + tcp.get(link[8:-1], "(not TCP)")
        out[int(fd)] = link
    return out


def echo_both_ways(port, data, timeout, source=None, host=LOOP):
    """Send data to host:port while reading the echo back at the same time; return (bytes back,
    their SHA-256). source: the loopback address to connect from."""
    s = socket.create_connection((host, port), timeout=timeout,
                                 source_address=(source, 0) if source else None)
    s.settimeout(timeout)
    h = hashlib.sha256()
    got = 0
    err = []

    def reader():
        nonlocal got
        try:
            while got < len(data):
                b = s.recv(1 << 16)
                if not b:
                    break
                h.update(b)
                got += len(b)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        err.append(e)
    t.join(timeout)
    s.close()
    check(not t.is_alive(), f"echo of {len(data)} bytes: stuck after {got} bytes back")
    check(not err, f"echo of {len(data)} bytes: {err}")
    return got, h.hexdigest()


def tunnel_to_echo(env):
    echo = echo_service(env)
    srv = env.server("--token", "s3cret")
    cl = env.client(srv, "-R", f"{LOOP}:0:{LOOP}:{echo.port}")
    (port,) = cl.ports.values()
    # The baseline is taken once the server has accepted and parked the client's pre-opened work
    # connections (4 by default): np-client holds their sockets at once, the server only later.
    srv.wait_line(r"pre-opened work connection \d+ parked \(4 idle\)")
    return echo, srv, cl, port


def baseline(srv, cl):
    """What wait_for_baseline compares with: each process's descriptors (all, pipes, and where
    each points)."""
    return (fds(srv)[0], fds(cl)[0], fds(srv)[1], fds(cl)[1], fd_links(srv), fd_links(cl))


def wait_for_baseline(srv, cl, echo, base, what):
    """Every descriptor the traffic took is given back: the tools' own, and np-client's
    connections to the service (the bug left them open for good)."""
    wait_until(lambda: established_to(echo.port) == 0, 15,
               f"{what}: np-client's connections to the service closed "
               f"(still {established_to(echo.port)})")
    try:
        wait_until(lambda: (fds(srv)[0], fds(cl)[0]) == base[:2], 15,
                   f"{what}: descriptors back to {base[:2]} ({srv.name}, {cl.name}) "
                   f"(now {fds(srv)[0]}, {fds(cl)[0]})")
    except Fail:
        # Say which descriptors are left over, so that a rare failure can be read from its log.
        for p, before in ((srv, base[4]), (cl, base[5])):
            now = fd_links(p)
            for fd in sorted(set(now) - set(before)):
                print(f"{p.name}: new fd {fd}: {now[fd]}")
        raise
    for p, before in ((srv, base[2]), (cl, base[3])):
        check(fds(p)[1] <= before + PIPE_CACHE_FDS,
              f"{what}: {p.name} holds {fds(p)[1]} pipe descriptors ({before} before)")


def test_echo_8x16mib_and_64mib(env):
    """8 visitors x 16 MiB at once, then one of 64 MiB, each echoed back while it is sent."""
    echo, srv, cl, port = tunnel_to_echo(env)
    base = baseline(srv, cl)
    data16 = [pattern(16 * MIB, seed=i) for i in range(8)]
    results = [None] * 8

    def one(i):
        try:
            results[i] = echo_both_ways(port, data16[i], 90)
        except Exception as e:  # noqa: BLE001 - reported below with the others
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, r in enumerate(results):
        check(isinstance(r, tuple), f"visitor {i}: {r}")
        check(r == (16 * MIB, hashlib.sha256(data16[i]).hexdigest()),
              f"visitor {i}: {r[0]} bytes back, not the 16 MiB sent")
    print(f"8 x 16 MiB echoed in {time.monotonic() - t0:.2f}s")
    big = pattern(64 * MIB, seed=99)
    t0 = time.monotonic()
    got = echo_both_ways(port, big, 90)
    check(got == (64 * MIB, hashlib.sha256(big).hexdigest()), f"64 MiB: {got[0]} bytes back")
    print(f"64 MiB echoed in {time.monotonic() - t0:.2f}s")
    wait_for_baseline(srv, cl, echo, base, "after the echoes")


def mixed_load(port, seconds):
    """For seconds, two-way bulk (2 visitors, 8 MiB echoes one after another) mixed with short
    exchanges (4 visitors, 1 KiB echoes on fresh connections, 40 a second each, each from its own
    loopback address) to the echo behind port: every byte back, nothing fails or sticks. Returns
    {"bulk": echoes, "short": echoes}."""
    stop = time.monotonic() + seconds
    counts = {"bulk": 0, "short": 0}
    errors = []
    lock = threading.Lock()

    def bulk(seed):
        data = pattern(8 * MIB, seed=seed)
        want = (len(data), hashlib.sha256(data).hexdigest())
        while time.monotonic() < stop and not errors:
            try:
                got = echo_both_ways(port, data, 60)
                check(got == want, f"bulk echo: {got[0]} bytes back, not {len(data)}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"bulk: {e}")
                return
            with lock:
                counts["bulk"] += 1

    def short(seed):
        # Paced at 40 a second per visitor, each from its own loopback address: a fresh connection
        # per request leaves a TIME_WAIT behind, and unpaced runs of the suite's soaks one after
        # another could use up the ephemeral ports of one address.
        n = 0
        t_next = time.monotonic()
        while time.monotonic() < stop and not errors:
            t_next += 0.025
            delay = t_next - time.monotonic()  # read the clock once: it moves between two reads
            if delay > 0:
                time.sleep(delay)
            msg = pattern(1024, seed=seed * 100000 + n)
            try:
                got = echo_both_ways(port, msg, 30, source=f"127.0.0.{seed}")
                check(got == (1024, hashlib.sha256(msg).hexdigest()), f"short echo {n}: {got[0]}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"short: {e}")
                return
            n += 1
            with lock:
                counts["short"] += 1

    def guarded(body, seed):
        # A visitor that dies of anything unexpected is a failure of the soak, not a quiet thread
        # the end of the soak never hears of (the 600 s run lost one to a negative sleep).
        try:
            body(seed)
        except Exception as e:  # noqa: BLE001
            errors.append(f"{body.__name__} {seed}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=guarded, args=(bulk, i)) for i in range(2)]
    threads += [threading.Thread(target=guarded, args=(short, 10 + i)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    check(not any(t.is_alive() for t in threads), "soak: a visitor is stuck")
    check(not errors, f"soak: {errors[:3]}")
    check(counts["bulk"] >= 2 and counts["short"] >= 10, f"soak did too little: {counts}")
    print(f"soak {seconds:.0f}s: {counts['bulk']} bulk echoes of 8 MiB, "
          f"{counts['short']} short ones")
    return counts


def test_soak_two_way_and_short(env):
    """NP_SOAK_SECONDS of two-way bulk mixed with short exchanges (mixed_load); nothing fails or
    sticks, and every descriptor on both sides is back to its baseline afterwards."""
    echo, srv, cl, port = tunnel_to_echo(env)
    base = baseline(srv, cl)
    mixed_load(port, SOAK_SECONDS)
    wait_for_baseline(srv, cl, echo, base, "after the soak")


TESTS = {f.__name__[5:]: f for f in [test_echo_8x16mib_and_64mib, test_soak_two_way_and_short]}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
