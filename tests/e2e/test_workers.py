#!/usr/bin/env python3
"""np-server with workers = 2 (np_server_group): clients spread over both event loops, tunnels work
byte for byte on each, work connections of --mux false clients reach their session's worker, a
client name is one client across workers (takeover, in use), max_clients counts over both, the
counters are the sum, and SIGTERM ends every thread."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nptest import (SERVER, Greeter, check, greet, proxy_ports, run,  # noqa: E402
                    server_stats, wait_until)

WORKERS = ["--workers", "2", "--token", "s3cret"]


def logged_in(srv, name, after=0, timeout=10):
    """The worker the client name logged in on."""
    return int(srv.wait_line(rf"client {name} logged in from .* on worker (\d+)", timeout,
                             after=after).group(1))


def spread(env, mux):
    """20 clients: both workers get some (all on one: 2^-19), each tunnel answers its own visitor."""
    svc = env.service(Greeter)
    srv = env.server(*WORKERS)
    extra = [] if mux else ["--mux", "false"]
    clients = [env.client(srv, "--name", f"c{i}", "-R", f"0:127.0.0.1:{svc}", *extra) for i in range(20)]
    where = [logged_in(srv, f"c{i}") for i in range(20)]
    check(set(where) == {0, 1}, f"clients on workers {sorted(set(where))}, not both")
    for rnd in range(3):
        for i, c in enumerate(clients):
            port = next(iter(c.ports.values()))
            who = f"visitor {rnd}-{i} of c{i}".encode()
            check(greet(port, who) == b"you are " + who + b"\n", f"c{i}'s tunnel answers")
    st = server_stats(srv)
    check(st["clients"] == 20, f"the counters are the sum of both workers' (clients={st['clients']})")
    check(st["joined"] == 60, f"60 visitors joined, counted {st['joined']}")
    if not mux:
        # Pre-opened and per-visitor work connections land on either worker; about half of them
        # are handed to the worker of their session.
        check(st["conns_moved"] > 0, "work connections moved to their session's worker")
        check(st["work_unknown"] == 0, "no work connection was lost on the wrong worker")
    mark = srv.mark()
    srv.signal(signal.SIGTERM)
    check(srv.wait_exit(15) == 0, "SIGTERM ends both workers and the process, status 0")
    check(srv.count(r"ended with handles open") == 0, "every worker's loop closed clean")
    del mark


def test_clients_spread_over_workers(env):
    spread(env, mux=True)


def test_nomux_work_reaches_its_worker(env):
    spread(env, mux=False)


def test_one_client_per_name_across_workers(env):
    """A login under a name another worker holds: with --takeover it replaces that session (after a
    retry, when the other worker had it), without it the client is told the name is in use."""
    svc = env.service(Greeter)
    srv = env.server(*WORKERS)
    old = env.client(srv, "--name", "x", "-R", f"0:127.0.0.1:{svc}")
    old_worker = logged_in(srv, "x")
    crossed = False
    for rnd in range(20):  # each login lands on the other worker with probability 1/2
        mark = srv.mark()
        new = env.client(srv, "--name", "x", "--takeover", "-R", f"0:127.0.0.1:{svc}", wait=False)
        w = logged_in(srv, "x", after=mark, timeout=15)
        check(old.wait_exit(10) != 0, f"round {rnd}: the replaced client ends")
        if w != old_worker:
            crossed = True
            check(srv.count(r"its old session is on worker") > 0, "the login waited for the other "
                  "worker to let the name go")
            break
        old, old_worker = new, w
    check(crossed, "a takeover crossed workers in 20 rounds")
    # No --takeover: refused as in use (fatal for np-client), whichever worker it lands on.
    for rnd in range(4):
        mark = srv.mark()
        dup = env.client(srv, "--name", "x", "-R", f"0:127.0.0.1:{svc}", wait=False)
        srv.wait_line(r"login as 'x' refused: a live client .* already uses that name", 15,
                      after=mark)
        check(dup.wait_exit(10) != 0, "the duplicate gives up")
    port = next(iter(proxy_ports(new).values()))
    check(greet(port, b"still") == b"you are still\n", "the client that took over still serves")


def test_max_clients_over_workers(env):
    """max_clients = 3 counts the clients of both workers."""
    svc = env.service(Greeter)
    srv = env.server(*WORKERS, "--max-clients", "3")
    clients = [env.client(srv, "--name", f"m{i}", "-R", f"0:127.0.0.1:{svc}", wait=False)
               for i in range(6)]
    wait_until(lambda: srv.count(r"logged in from") >= 3 and
               sum(c.count(r"the server takes at most 3") > 0 for c in clients) >= 3, 15,
               "3 in, 3 refused")
    check(srv.count(r"logged in from") == 3, "no more than 3 logged in")
    check(server_stats(srv)["clients"] == 3, "3 clients counted")


def test_bad_config_refused(env):
    """workers > 1 with what runs on one loop only is a configuration error (exit 2)."""
    import subprocess
    for args, words in ((["--workers", "300"], "workers: at most 256"),
                        (["--workers", "2", "--codec", "line", "--insecure"],
                         "codec line runs on one loop")):
        p = subprocess.run([SERVER, "--bind", "127.0.0.1:0", *args], capture_output=True,
                           text=True, timeout=10)
        check(p.returncode == 2 and words in p.stderr, f"{args}: exit {p.returncode}, {p.stderr!r}")


TESTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("test_")}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
    else:
        run(TESTS)
