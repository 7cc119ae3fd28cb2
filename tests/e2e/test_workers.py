#!/usr/bin/env python3
"""np-server with workers = 2 (np_server_group): clients spread over both event loops, tunnels work
byte for byte on each, work connections of --mux false clients reach their session's worker, a
client name is one client across workers (takeover, in use), max_clients counts over both, the
counters are the sum, and SIGTERM ends every thread."""
import json
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


def test_admin_sees_every_worker(env):
    """Worker 0's admin endpoint: /api/v1/clients lists the clients of both workers with their
    worker, /metrics (promtool-clean) counts 2 workers, their clients and each one's CPU, and a
    disconnect reaches a client on worker 1."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_metrics import admin_port, scrape, one  # noqa: E402
    from test_admin import get  # noqa: E402
    svc = env.service(Greeter)
    srv = env.server(*WORKERS, "--admin-bind", "127.0.0.1:0")
    port = admin_port(srv)
    clients = [env.client(srv, "--name", f"a{i}", "-R", f"0:127.0.0.1:{svc}") for i in range(16)]
    where = {f"a{i}": logged_in(srv, f"a{i}") for i in range(16)}
    for c in clients:  # every worker's loop does some work
        p = next(iter(c.ports.values()))
        check(greet(p, b"x") == b"you are x\n", "tunnel answers")
    code, body = get(port, "/api/v1/clients", token=None)
    listed = {c["name"]: c["worker"] for c in json.loads(body)["clients"]}
    check(code == 200 and listed == where, f"the list has every client and its worker: {listed}")
    text, m = scrape(port)
    check(one(m, "natproxy_server_workers") == 2, "2 workers")
    for k in (0, 1):
        n = sum(1 for w in where.values() if w == k)
        check(one(m, "natproxy_server_worker_clients", worker=str(k)) == n, f"worker {k}: {n} clients")
        check(one(m, "natproxy_server_worker_cpu_seconds_total", worker=str(k)) > 0,
              f"worker {k} used CPU")
    name = next(n for n, w in where.items() if w == 1)
    mark = srv.mark()
    code, _ = get(port, f"/api/v1/clients/{name}/disconnect", token=None, method="POST")
    check(code == 200, f"disconnect {name} on worker 1: {code}")
    srv.wait_line(rf"client {name}: disconnected through the admin API", after=mark)


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


def test_udp_path_on_both_workers(env):
    """12 clients with a UDP proxy each: both workers get some (all on one: 2^-11), the datagram
    path of every client comes up whichever worker holds it, and each proxy answers its visitor
    over it. The kernel steers each packet to the socket of its session's worker (cBPF on the
    shared port), so none has to be handed over; where the kernel refused the program, the worker
    that got a packet hands it over (udp_path_forwarded) and the rest is the same."""
    from test_udp import Echo, ask, udp_socket
    srv = env.server(*WORKERS)
    echo = Echo()
    clients = [env.client(srv, "--name", f"u{i}", "-U", f"0:127.0.0.1:{echo.port}")
               for i in range(12)]
    where = [logged_in(srv, f"u{i}") for i in range(12)]
    check(set(where) == {0, 1}, f"clients on workers {sorted(set(where))}, not both")
    for c in clients:
        c.wait_line(r"datagram path to .* up")
    s = udp_socket()
    for rnd in range(3):
        for i, c in enumerate(clients):
            data = b"visitor %d of u%d" % (rnd, i)
            got = ask(s, next(iter(c.ports.values())), data)[1]
            check(got == data, f"u{i}'s UDP proxy answers")
    st = server_stats(srv)
    check(st["udp_path_in"] > 0 and st["udp_path_out"] > 0,
          f"the datagram path carried nothing: {st}")
    if srv.count(r"the kernel does not steer packets") == 0:
        check(st["udp_path_forwarded"] == 0,
              f"steered, yet {st['udp_path_forwarded']} packets reached the wrong worker")
    check(st["udp_path_rejected"] == 0, f"{st['udp_path_rejected']} packets rejected")


def test_bad_config_refused(env):
    """workers > 1 with what runs on one loop only is a configuration error (exit 2)."""
    import subprocess
    for args, words in ((["--workers", "300"], "workers: at most 256"),
                        (["--workers", "2", "--codec", "line", "--insecure"],
                         "codec line runs on one loop")):
        p = subprocess.run([SERVER, "--bind", "127.0.0.1:0", *args], capture_output=True,
                           text=True, timeout=10)
        check(p.returncode == 2 and words in p.stderr, f"{args}: exit {p.returncode}, {p.stderr!r}")


def test_default_is_one_per_core(env):
    """With no workers key, np-server runs one event loop per core it may use (its CPU affinity),
    and one with the line codec, whose fixed ports are bound once."""
    cores = len(os.sched_getaffinity(0))
    srv = env.server("--token", "s3cret")
    check(srv.workers == cores, f"{srv.workers} workers on {cores} cores")
    line = env.server("--codec", "line", "--insecure", "--tunnel-bind", "127.0.0.1:0",
                      "--visit-bind", "127.0.0.1:0")
    check(line.workers == 1, f"the line codec runs {line.workers} workers")


TESTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("test_")}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
    else:
        run(TESTS)
