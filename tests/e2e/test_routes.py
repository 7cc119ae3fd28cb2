#!/usr/bin/env python3
"""Servers that share the load: the route store (route_store = redis://..., docs/config.md,
"Servers that share the load"). np-servers write which proxies they hold to a real redis-server
(Debian's, started here on 127.0.0.1 with nothing saved), each route a key with the server's lease
as its expiry, and read the others' back. Checked against Redis itself (redis-cli) and each
server's /api/v1/routes: the routes appear; a server killed with SIGKILL loses its routes within
the lease; the store killed leaves every server routing from the last table it read, and routes
made meanwhile are written once it is back; a server that drains deletes its routes at once."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from nptest import LOOP, SERVER, Proc, check, run, wait_until  # noqa: E402

LEASE_MS = 1000
PREFIX = "natproxy:route:"


def free_port():
    with socket.socket() as s:
        s.bind((LOOP, 0))
        return s.getsockname()[1]


def redis(env, port=None):
    """A redis-server of the test's own: 127.0.0.1 only, nothing written to disk."""
    port = port or free_port()
    p = Proc(env, "redis-server", ["redis-server", "--port", str(port), "--bind", LOOP, "--save", "",
                                   "--appendonly", "no", "--dir", env.tmp.name, "--loglevel",
                                   "warning"])
    wait_until(lambda: redis_cli(port, "PING") == "PONG", 10, "redis-server answers")
    p.port = port
    return p


def redis_cli(port, *args):
    r = subprocess.run(["redis-cli", "-h", LOOP, "-p", str(port), *args], capture_output=True,
                       text=True, timeout=10)
    return r.stdout.strip()


def keys(port):
    """The routes in the store: {"tcp:6000@127.0.0.1:7000", ...}."""
    out = redis_cli(port, "--scan", "--pattern", PREFIX + "*")
    return {k[len(PREFIX):] for k in out.split("\n") if k}


def server(env, store, name, *extra):
    """An np-server on a port of its own, which it advertises, with its admin endpoint."""
    ctl = free_port()
    srv = env.server("--token", "s3cret", "--route-store", f"redis://{LOOP}:{store}",
                     "--cluster-advertise", f"{LOOP}:{ctl}", "--route-lease", f"{LEASE_MS}ms",
                     "--admin-bind", f"{LOOP}:0", *extra, name=name, bind=f"{LOOP}:{ctl}")
    srv.admin = int(srv.wait_line(r"admin API, .* on \S+ \(port (\d+)\)").group(1))
    srv.me = f"{LOOP}:{ctl}"
    return srv


def admin_get(srv, path):
    out = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://{LOOP}:{srv.admin}{path}"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


def routes(srv):
    """{route: server} of the other servers, as srv last read them."""
    return {r["route"]: r["server"] for r in json.loads(admin_get(srv, "/api/v1/routes"))["routes"]}


def port_of(cl):
    return int(cl.wait_line(r"^proxy \S+: public port (\d+)$", stream="stdout").group(1))


def test_routes_shared_through_redis(env):
    store = redis(env)
    a, b, c = (server(env, store.port, f"np-server-{n}") for n in "abc")
    ca = env.client(a, "-R", f"{LOOP}:0:{LOOP}:9", name="client-a")
    cb = env.client(b, "-R", f"{LOOP}:0:{LOOP}:9", "-U", f"{LOOP}:0:{LOOP}:9", name="client-b")
    pa = port_of(ca)
    pb_tcp = int(cb.wait_line(r"^proxy tcp-\S+: public port (\d+)$", stream="stdout").group(1))
    pb_udp = int(cb.wait_line(r"^proxy udp-\S+: public port (\d+)$", stream="stdout").group(1))
    want = {f"tcp:{pa}@{a.me}", f"tcp:{pb_tcp}@{b.me}", f"udp:{pb_udp}@{b.me}"}
    wait_until(lambda: keys(store.port) == want, 5, f"the store holds {want} ({keys(store.port)})")
    check(redis_cli(store.port, "PTTL", f"{PREFIX}tcp:{pa}@{a.me}").isdigit() and
          0 < int(redis_cli(store.port, "PTTL", f"{PREFIX}tcp:{pa}@{a.me}")) <= LEASE_MS,
          "a route expires within the lease unless renewed")
    theirs = {f"tcp:{pb_tcp}": b.me, f"udp:{pb_udp}": b.me}
    wait_until(lambda: routes(c) == {f"tcp:{pa}": a.me, **theirs}, 5, "c reads a's and b's routes")
    wait_until(lambda: routes(a) == theirs, 5, "a reads b's routes, and not its own")
    st = json.loads(admin_get(a, "/api/v1/routes"))
    check(st["up"] is True and st["claimed"] == 1 and st["known"] == 2, f"a's view: {st}")
    metrics = admin_get(a, "/metrics")
    for line in ("natproxy_server_route_store_up 1", 'natproxy_server_routes{owner="self"} 1',
                 'natproxy_server_routes{owner="others"} 2'):
        check(line in metrics, f"/metrics has {line}")

    # Renewed while the server lives: still there after several leases.
    time.sleep(3 * LEASE_MS / 1000)  # noqa: the lease is time itself: nothing to wait on
    check(keys(store.port) == want, f"renewed across 3 leases: {keys(store.port)}")

    # b killed: nothing deletes its routes, the lease does.
    b.signal(signal.SIGKILL)
    b.wait_exit()
    t0 = time.monotonic()
    wait_until(lambda: keys(store.port) == {f"tcp:{pa}@{a.me}"}, 3 * LEASE_MS / 1000,
               "b's routes expire within the lease")
    print(f"figure: routes of a killed server gone after {(time.monotonic() - t0) * 1000:.0f} ms "
          f"(lease {LEASE_MS} ms)")
    wait_until(lambda: routes(a) == {}, 3 * LEASE_MS / 1000, "a forgets b's routes")

    # The store killed: the last table stays; a route made meanwhile waits for it.
    wait_until(lambda: routes(a) == {} and routes(c) == {f"tcp:{pa}": a.me}, 5, "tables settled")
    mark = a.mark()
    store.signal(signal.SIGKILL)
    store.wait_exit()
    a.wait_line(r"route store redis://\S+: .*; routing from the last table read \(0 routes of "
                r"other servers\)", after=mark)
    wait_until(lambda: json.loads(admin_get(c, "/api/v1/routes"))["up"] is False, 5,
               "c sees the store away")
    check(routes(c) == {f"tcp:{pa}": a.me}, "c routes from its last table while the store is away")
    cc = env.client(c, "-R", f"{LOOP}:0:{LOOP}:9", name="client-c")
    pc = port_of(cc)
    time.sleep(LEASE_MS / 1000)  # noqa: nothing happens, which is what is checked
    check(routes(c) == {f"tcp:{pa}": a.me}, "still the last table")
    mark = a.mark()
    store = redis(env, store.port)  # empty: nothing was saved
    a.wait_line(r"route store redis://\S+: connected; writing 1 routes of this server",
                after=mark, timeout=10)
    wait_until(lambda: keys(store.port) == {f"tcp:{pa}@{a.me}", f"tcp:{pc}@{c.me}"}, 5,
               f"every route written again once the store is back ({keys(store.port)})")
    wait_until(lambda: routes(a) == {f"tcp:{pc}": c.me}, 5, "a reads the route made meanwhile")

    # a drains: its routes go at once, not at the end of the lease.
    a.signal(signal.SIGTERM)
    check(a.wait_exit(10) == 0, "a drains and exits")
    check(keys(store.port) == {f"tcp:{pc}@{c.me}"}, f"a deleted its routes: {keys(store.port)}")


def test_route_store_away_at_start(env):
    """A store that is not there yet: the server starts and serves all the same, says so once,
    and writes its routes once the store comes."""
    port = free_port()
    a = server(env, port, "np-server-a")
    a.wait_line(r"route store redis://\S+: .*refused.*; routing from the last table read")
    cl = env.client(a, "-R", f"{LOOP}:0:{LOOP}:9")
    pa = port_of(cl)
    time.sleep(2 * LEASE_MS / 1000)  # noqa: retries meanwhile are logged at debug level only
    check(a.count(r"warn .*route store") == 1, "the store's absence is said once")
    mark = a.mark()
    store = redis(env, port)
    a.wait_line(r"route store redis://\S+: connected; writing 1 routes", after=mark, timeout=10)
    wait_until(lambda: keys(store.port) == {f"tcp:{pa}@{a.me}"}, 5, "its route is written")


def test_route_store_refuses(env):
    """A store that refuses: a database it does not have (redis://HOST/99 with 16) counts as a store
    away, said once, and nothing lands in database 0; a store that refuses every write (made a
    replica of nothing) is said once too, however many routes and ticks, and the routes are written
    as soon as it takes them again."""
    store = redis(env)
    ctl = free_port()
    a = env.server("--token", "s3cret", "--route-store", f"redis://{LOOP}:{store.port}/99",
                   "--cluster-advertise", f"{LOOP}:{ctl}", "--route-lease", f"{LEASE_MS}ms",
                   name="np-server-a", bind=f"{LOOP}:{ctl}")
    a.wait_line(r"warn .*route store redis://\S+/99: SELECT 99: ERR")
    cl = env.client(a, "-R", f"{LOOP}:0:{LOOP}:9")
    port_of(cl)
    time.sleep(2 * LEASE_MS / 1000)  # noqa: nothing must happen meanwhile
    check(keys(store.port) == set(), f"nothing written to database 0: {keys(store.port)}")
    check(a.count(r"warn .*route store") == 1, "said once")

    b = server(env, store.port, "np-server-b")
    env.client(b, "-R", f"{LOOP}:0:{LOOP}:9", "-R", f"{LOOP}:0:{LOOP}:13")
    wait_until(lambda: len(keys(store.port)) == 2, 5, f"b's two routes written ({keys(store.port)})")
    redis_cli(store.port, "FLUSHALL")
    redis_cli(store.port, "REPLICAOF", LOOP, "1")  # read-only from now on: writes are refused
    mark = b.mark()
    b.wait_line(r"warn .*route store redis://\S+: READONLY", after=mark)
    time.sleep(2 * LEASE_MS / 1000)  # noqa: a few ticks of refused writes
    check(b.count(r"warn .*route store", after=mark) == 1,
          f"a refusing store is said once: {b.count(r'route store', after=mark)} lines")
    redis_cli(store.port, "REPLICAOF", "NO", "ONE")
    b.wait_line(r"route store redis://\S+: takes writes again", after=mark, timeout=10)
    wait_until(lambda: len(keys(store.port)) == 2, 5, "b's routes written again")


def test_route_store_password(env):
    """A store with a password (requirepass) and an ACL user: a server with a wrong password is
    refused with what to check, said once, and writes nothing; one with the right password (from a
    file) writes its routes; one that logs in as an ACL user (AUTH USER PASSWORD) too."""
    store = redis(env)
    redis_cli(store.port, "ACL", "SETUSER", "np", "on", ">np-s3cret", "~natproxy:*", "+@all")
    redis_cli(store.port, "CONFIG", "SET", "requirepass", "store-s3cret")
    os.environ["REDISCLI_AUTH"] = "store-s3cret"  # redis-cli's, for keys()
    try:
        files = {}
        for name, secret in (("bad", "wrong-one"), ("good", "store-s3cret")):
            files[name] = os.path.join(env.tmp.name, f"redis-{name}")
            with open(files[name], "w") as f:
                f.write(secret + "\n")
        a = server(env, store.port, "np-server-a", "--route-store-password-file", files["bad"])
        a.wait_line(r"warn .*route store redis://\S+: AUTH: WRONGPASS.* \(check route_store_user "
                    r"and route_store_password\)")
        env.client(a, "-R", f"{LOOP}:0:{LOOP}:9", name="client-a")
        b = server(env, store.port, "np-server-b", "--route-store-password-file", files["good"])
        pb = port_of(env.client(b, "-R", f"{LOOP}:0:{LOOP}:9", name="client-b"))
        c = server(env, store.port, "np-server-c", "--route-store-user", "np",
                   "--route-store-password", "np-s3cret")
        pc = port_of(env.client(c, "-R", f"{LOOP}:0:{LOOP}:9", name="client-c"))
        want = {f"tcp:{pb}@{b.me}", f"tcp:{pc}@{c.me}"}
        wait_until(lambda: keys(store.port) == want, 5, f"b's and c's routes ({keys(store.port)})")
        wait_until(lambda: routes(b).get(f"tcp:{pc}") == c.me, 5, "b reads c's route")
        check(a.count(r"warn .*route store") == 1, "a's refusal said once")
        check(routes(a) == {}, "a reads nothing")
    finally:
        del os.environ["REDISCLI_AUTH"]


def test_route_store_config_errors(env):
    """Bad values are refused at start with what to write instead (exit 2)."""
    cases = [
        (["--route-store", "http://127.0.0.1:6379", "--cluster-advertise", "127.0.0.1:7000"],
         r"route_store: 'http://127\.0\.0\.1:6379' is not redis://HOST\[:PORT\]\[/DB\]"),
        (["--route-store", "redis://127.0.0.1:99999", "--cluster-advertise", "127.0.0.1:7000"],
         r"is not redis://"),
        (["--route-store", "redis://127.0.0.1/x", "--cluster-advertise", "127.0.0.1:7000"],
         r"is not redis://"),
        (["--route-store", "redis://127.0.0.1"], r"route_store needs cluster_advertise"),
        (["--route-lease", "10ms"], r"route_lease must be at least 1s"),
        (["--route-store", "redis://127.0.0.1", "--cluster-advertise", "127.0.0.1:7000",
          "--cluster-ca", "/nonexistent"], r"cluster_ca needs cluster_token"),
        (["--route-store", "redis://127.0.0.1", "--cluster-advertise", "127.0.0.1:7000",
          "--cluster-token", "t", "--cluster-ca", "/nonexistent"], r"cluster_ca needs TLS"),
        (["--route-store", "redis://:pw@127.0.0.1", "--cluster-advertise", "127.0.0.1:7000"],
         r"route_store: a password does not go in the URL: give route_store_password_file"),
        (["--route-store-password", "x"], r"route_store_password and route_store_user need "
         r"route_store"),
        (["--route-store", "redis://127.0.0.1", "--cluster-advertise", "127.0.0.1:7000",
          "--route-store-user", "np"], r"route_store_user needs route_store_password"),
    ]
    for args, want in cases:
        p = subprocess.run([SERVER, "--bind", f"{LOOP}:0", "--insecure", *args],
                           capture_output=True, text=True, timeout=20)
        check(p.returncode == 2 and re.search(want, p.stderr),
              f"{args}: exit {p.returncode}, {p.stderr.strip()!r}")


TESTS = {f.__name__[5:]: f for f in [test_routes_shared_through_redis, test_route_store_away_at_start,
                                      test_route_store_refuses, test_route_store_password,
                                      test_route_store_config_errors]}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
