#!/usr/bin/env python3
"""Seed-compatible mode (--codec line): np-server with the article's client, np-client with the
article's server. The peers are in seedpeer.py, written from the protocol description."""

import concurrent.futures
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (CLIENT, LOOP, SERVER, Greeter, Proc, check, connect, greet, recv_all,  # noqa: E402
                    run, wait_until)
from seedpeer import SeedClient, SeedServer  # noqa: E402



def line_server(env, *extra):
    """np-server in seed-compatible mode on three free ports: (proc, control, tunnel, visit)."""
    srv = Proc(env, "np-server", [SERVER, "--codec", "line", "--bind", f"{LOOP}:0",
                                  "--tunnel-bind", f"{LOOP}:0", "--visit-bind", f"{LOOP}:0",
                                  "--log-level", "debug", "--insecure", *extra])
    control = int(srv.wait_line(r"\(port (\d+)").group(1))
    m = srv.wait_line(r"line codec: tunnel port (\d+), visit port (\d+)")
    return srv, control, int(m.group(1)), int(m.group(2))


def test_np_server_with_seed_client(env):
    greeter = env.service(Greeter)
    srv, control, tunnel, visit = line_server(env, "--heartbeat-interval", "200ms")
    cl = SeedClient(LOOP, control, tunnel, (LOOP, greeter))
    try:
        srv.wait_line(r"client connected from .* \(line codec\)")
        # The article's client dials its tunnels concurrently and the protocol has no ids, so only
        # one visitor at a time can be matched for sure: visit one after another.
        for i in range(20):
            got = greet(visit, b"seed-%d" % i)
            check(got == b"you are seed-%d\n" % i, f"visitor {i} got {got!r}")
        wait_until(lambda: cl.keepalives >= 2, 5, "KEEP_ALIVE lines from np-server")
    finally:
        cl.stop()
    # The client is gone: a visitor now is refused at once rather than left waiting.
    srv.wait_line(r"client seed .* disconnected")
    s = connect(visit)
    try:
        check(recv_all(s) == b"", "visitor with no client")
    except ConnectionResetError:
        pass
    srv.wait_line(r"visitor refused: no client connected")


def test_np_client_with_seed_server(env):
    greeter = env.service(Greeter)
    seed = SeedServer(keepalive=0.2)
    control, tunnel, visit = seed.ports
    try:
        cl = Proc(env, "np-client", [CLIENT, "--codec", "line", "--insecure", "--server", f"{LOOP}:{control}",
                                     "--tunnel", f"{LOOP}:{tunnel}", "--local", f"{LOOP}:{greeter}",
                                     "--heartbeat-interval", "500ms", "--heartbeat-timeout", "2s",
                                     "--reconnect-max", "1s", "--log-level", "debug"])
        cl.wait_line(r"logged in to")
        wait_until(lambda: seed.client is not None, 5, "seed server sees the client")
        # np-client dials its tunnels one at a time in request order, so even concurrent visitors
        # each meet their own service connection.
        with concurrent.futures.ThreadPoolExecutor(20) as ex:
            got = list(ex.map(lambda i: greet(visit, b"v%d" % i), range(20)))
        bad = [i for i in range(20) if got[i] != b"you are v%d\n" % i]
        check(not bad, f"visitors {bad} got someone else's answer")
        # The seed server drops the client, which logs in again: the line protocol never says the
        # public port, so np-client prints none (it used to print "public port 0" at every login)
        # and says where visitors go once.
        mark = cl.mark()
        with seed.lock:
            old = seed.client
            old.shutdown(socket.SHUT_RDWR)
        cl.wait_line(r"logged in to", after=mark)
        # The seed server notices the drop only at its next keepalive and turns away a client that
        # comes back before that (one at a time); np-client then tries again. Visit once it has
        # taken the new connection, or the visitor's request goes to the dead one.
        wait_until(lambda: seed.client is not None and seed.client is not old, 10,
                   "seed server takes the client's new connection")
        check(greet(visit, b"again") == b"you are again\n", "served after the reconnect")
        check(cl.count(r"public port") == 0, "no public port printed or logged in line mode")
        check(cl.count(r"visitors arrive on the server's visit port") == 1, "said once")
    finally:
        seed.stop()


def test_np_pair_line_codec(env):
    """np-server and np-client both in line mode, and the local service down: the client closes the
    tunnel at once, so the visitor is not left hanging for the pending timeout."""
    dead = socket.socket()
    dead.bind((LOOP, 0))
    srv, control, tunnel, visit = line_server(env, "--pending-timeout", "20s")
    cl = Proc(env, "np-client", [CLIENT, "--codec", "line", "--insecure", "--server", f"{LOOP}:{control}",
                                 "--tunnel", f"{LOOP}:{tunnel}",
                                 "--local", f"{LOOP}:{dead.getsockname()[1]}"])
    cl.wait_line(r"logged in to")
    srv.wait_line(r"client connected")
    t0 = time.monotonic()
    s = connect(visit)
    try:
        got = recv_all(s)
    except ConnectionResetError:
        got = b""
    check(got == b"", "no data")
    check(time.monotonic() - t0 < 2, "visitor closed promptly")
    cl.wait_line(r"cannot reach local service")
    s.close()  # the join ends once both directions have ended (half-close semantics)
    srv.wait_line(r"join done")
    dead.close()


TESTS = {f.__name__[5:]: f for f in [
    test_np_server_with_seed_client, test_np_client_with_seed_server, test_np_pair_line_codec,
]}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
