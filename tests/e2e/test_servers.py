#!/usr/bin/env python3
"""A client of several servers (server = a, b): a session to each, every proxy registered on each,
each server's visitors served through its own session; a server that dies takes only its own
visitors with it, and when it comes back the client logs in to it again by itself."""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from nptest import (CLIENT, LOOP, TLS, Proc, check, port_closed, run, stdout_table,  # noqa: E402
                    wait_until)
from test_reload import Echo, echo, write  # noqa: E402

READY = re.compile(r"^proxy (\S+): public port (\d+) on (\S+)$")


def servers(env, n=2):
    """n servers with one TLS identity (a shared tls_dir), so one pin fits them all."""
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name) if TLS else None
    return [env.server("--token", "s3cret", name=f"np-server-{i + 1}", tls_dir=tls_dir)
            for i in range(n)], tls_dir


def client(env, srvs, *args):
    pin = ["--server-fingerprint", srvs[0].fingerprint] if TLS else ["--insecure"]
    mux = ["--mux", "false"] if os.environ.get("NP_E2E_MUX") == "0" else []
    return Proc(env, "np-client", [CLIENT, "--server", ", ".join(f"{LOOP}:{s.port}" for s in srvs),
                                   "--token", "s3cret", "--log-level", "debug", "--reconnect-max",
                                   "1s", *mux, *pin, *args])


def ports_by_server(cl, want, after=0, timeout=10):
    """{server: public port} from the lines "proxy NAME: public port N on SERVER"."""
    return stdout_table(cl, READY, 3, 2, want, timeout, after, "servers with a public port")


def admin_get(port, path):
    out = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://{LOOP}:{port}{path}"],
                         capture_output=True, text=True, timeout=20)
    return out.stdout


def served(port, size=64 << 10):
    """A visitor on port gets its bytes back from the echo service, byte for byte."""
    data = os.urandom(size)
    with socket.create_connection((LOOP, port), timeout=10) as s:
        s.settimeout(10)
        return echo(s, data) == data


def test_two_servers_both_serve(env):
    """One client, two servers: a session and the proxy on each, visitors on both served; the
    admin API shows each session and /metrics a series per server."""
    svc = env.service(Echo)
    srvs, _ = servers(env)
    cl = client(env, srvs, "-R", f"{LOOP}:0:{LOOP}:{svc}", "--admin-bind", f"{LOOP}:0")
    admin = int(cl.wait_line(r"admin API, .* on \S+ \(port (\d+)\)").group(1))
    ports = ports_by_server(cl, 2)
    check(set(ports) == {f"{LOOP}:{s.port}" for s in srvs}, f"a public port on each server: {ports}")
    for server, port in ports.items():
        check(served(port), f"a visitor through {server} is served byte for byte")
    st = json.loads(admin_get(admin, "/api/v1/status"))
    check(st["session"]["state"] == "logged-in", "the client as a whole is logged in")
    check([s["server"] for s in st["sessions"]] == [f"{LOOP}:{s.port}" for s in srvs],
          "a session per server, in the configuration's order")
    check(all(s["state"] == "logged-in" for s in st["sessions"]), "both sessions are logged in")
    for s in st["sessions"]:
        check(s["proxies"][0]["port"] == ports[s["server"]], "each session shows its own port")
    check(st["proxies"][0]["status"] == "ok", "the proxy is open")
    visitors = st["proxies"][0]["stats"]["visitors_joined"]
    check(visitors == 2, f"the proxy's counters add both servers' visitors up: {visitors}")
    metrics = admin_get(admin, "/metrics")
    for s in srvs:
        check(f'natproxy_client_session_logged_in{{server="{LOOP}:{s.port}",'
              f'address="{LOOP}:{s.port}"}} 1' in metrics,
              f"/metrics has the session with {LOOP}:{s.port}")


def test_server_dies_the_other_serves(env):
    """kill -9 one server: visitors through the other are still served, by the same client, which
    tries the dead one on its own; the server comes back (same port, same identity) and serves
    again without anything done to the client. SIGTERM then drains both sessions and exits 0."""
    svc = env.service(Echo)
    srvs, tls_dir = servers(env)
    a, b = srvs
    cl = client(env, srvs, "-R", f"{LOOP}:0:{LOOP}:{svc}")
    ports = ports_by_server(cl, 2)
    pa, pb = ports[f"{LOOP}:{a.port}"], ports[f"{LOOP}:{b.port}"]
    held = socket.create_connection((LOOP, pb), timeout=10)
    held.settimeout(10)
    check(echo(held, b"before") == b"before", "a visitor through b")
    mark = cl.mark()
    a.signal(signal.SIGKILL)
    a.wait_exit()
    cl.wait_line(rf"lost the connection to {LOOP}:{a.port}", after=mark)
    check(port_closed(pa), "a's public port is gone with it")
    check(echo(held, b"during") == b"during", "b's joined visitor goes on")
    check(served(pb), "a new visitor through b is served")
    cl.wait_line(rf"cannot connect to {LOOP}:{a.port}", after=mark)
    check(cl.p.poll() is None, "the client keeps running")

    mark = cl.mark()
    a2 = env.server("--token", "s3cret", name="np-server-1b", bind=f"{LOOP}:{a.port}",
                    tls_dir=tls_dir)
    again = ports_by_server(cl, 1, after=mark)
    check(list(again) == [f"{LOOP}:{a2.port}"], f"the client logged in to a again: {again}")
    check(served(again[f"{LOOP}:{a2.port}"]), "a serves again")
    check(served(pb), "b still serves")
    held.close()

    mark = cl.mark()
    cl.signal(signal.SIGTERM)
    check(cl.wait_exit(10) == 0, "SIGTERM: np-client drains both sessions and exits 0")
    for s in (a2, b):
        check(cl.count(rf"drain \({LOOP}:{s.port}\): .*; closing", after=mark) == 1,
              f"the drain of the session with {LOOP}:{s.port} says so, once")


def test_one_server_refuses_the_other_serves(env):
    """A server that refuses the client (a wrong token there) is given up with the reason, and the
    client serves through the other; the client stops only when every server has refused it."""
    svc = env.service(Echo)
    srvs, tls_dir = servers(env)
    other = env.server("--token", "another", name="np-server-other", tls_dir=tls_dir)
    cl = client(env, [srvs[0], other], "-R", f"{LOOP}:0:{LOOP}:{svc}")
    ports = ports_by_server(cl, 1)
    check(list(ports) == [f"{LOOP}:{srvs[0].port}"], f"the proxy is open on the good server: {ports}")
    cl.wait_line(rf"{LOOP}:{other.port}: stopped trying this server; the others still serve")
    check(served(ports[f"{LOOP}:{srvs[0].port}"]), "its visitors are served")
    check(cl.p.poll() is None, "the client goes on")

    cl2 = client(env, [other, srvs[1]], "-R", f"{LOOP}:0:{LOOP}:{svc}", "--token", "wrong")
    code = cl2.wait_exit(15)
    check(code == 3, f"every server refused the token: exit 3 (authentication), got {code}")


def test_reload_reaches_every_server(env):
    """SIGHUP with a proxy added to the file: registered on each server; a broken file changes
    nothing on any; a changed server list is kept until a restart, with a warning."""
    svc = env.service(Echo)
    srvs, _ = servers(env)
    listed = ", ".join(f"{LOOP}:{s.port}" for s in srvs)
    ini = "[proxy one]\nremote_port = 0\nlocal = {l}\n\n".format(l=f"{LOOP}:{svc}")
    cfg = write(env, "client.ini", f"[client]\nserver = {listed}\n\n" + ini)
    pin = ["--server-fingerprint", srvs[0].fingerprint] if TLS else ["--insecure"]
    cl = Proc(env, "np-client", [CLIENT, "--token", "s3cret", "--log-level", "debug", *pin,
                                 "-c", cfg])
    ports_by_server(cl, 2)
    mark = cl.mark()
    write(env, "client.ini", "[client]\nserver = 127.0.0.1:1\n\n" + ini +
          "[proxy two]\nremote_port = 0\nlocal = {l}\n".format(l=f"{LOOP}:{svc}"))
    cl.signal(signal.SIGHUP)
    two = stdout_table(cl, re.compile(r"^proxy two: public port (\d+) on (\S+)$"), 2, 1, 2,
                       after=mark, what="servers with proxy two")
    check(set(two) == {f"{LOOP}:{s.port}" for s in srvs}, f"proxy two on both servers: {two}")
    for port in two.values():
        check(served(port), "the added proxy serves")
    check(cl.count(r"reload: server changed, which takes effect only at a restart", after=mark) == 1,
          "one warning that the server list stays")
    check(cl.count(r"cannot connect to 127\.0\.0\.1:1\b", after=mark) == 0,
          f"the running list ({listed}) is kept")
    mark = cl.mark()
    write(env, "client.ini", "[proxy broken\n")
    cl.signal(signal.SIGHUP)
    cl.wait_line(r"reload: .*; nothing changed", after=mark)
    for port in two.values():
        check(served(port), "a broken file changed nothing")


def test_one_line_form_two_servers(env):
    """np-client HOST1,HOST2 LOCAL_PORT: one proxy on each server, each said as bore does."""
    svc = env.service(Echo)
    srvs, _ = servers(env)
    pin = ["--server-fingerprint", srvs[0].fingerprint] if TLS else ["--insecure"]
    cl = Proc(env, "np-client", [CLIENT, "--token", "s3cret", *pin,
                                 ",".join(f"{LOOP}:{s.port}" for s in srvs), str(svc)])
    ports = ports_by_server(cl, 2)
    for port in ports.values():
        cl.wait_line(rf"^listening at {LOOP}:{port}$", stream="stdout")
        check(served(port), "served")


def test_udp_through_both(env):
    """A UDP proxy on two servers: each member opens its own datagram path, and datagrams sent to
    either server's port come back whole."""
    from test_udp import DATAGRAM_PATH, Echo as UdpEcho, ask, check_carrier, udp_socket
    echo = UdpEcho()
    srvs, _ = servers(env)
    path = [] if DATAGRAM_PATH else ["--udp-datagram-path", "false"]
    cl = client(env, srvs, *path, "-U", f"0:{LOOP}:{echo.port}")
    ports = ports_by_server(cl, 2)
    for s in srvs if DATAGRAM_PATH else ():
        cl.wait_line(rf"datagram path to {LOOP}:{s.port}\S* up")
    sock = udp_socket()
    for server, port in ports.items():
        for n in (1, 1400, 9000):
            data = os.urandom(n)
            check(ask(sock, port, data)[1] == data, f"a {n}-byte datagram through {server}")
    for s in srvs:
        check_carrier(s)  # each server's own datagram path carried them
    echo.close()


def test_one_server_at_two_addresses(env):
    """server = 127.0.0.1:P, 127.0.0.2:P with one np-server on 0.0.0.0:P: the second session
    learns from HELLO that it reached the same server (its instance id), says so and steps back,
    rather than be refused as a name in use; the first serves."""
    svc = env.service(Echo)
    srv = env.server("--token", "s3cret", bind="0.0.0.0:0")
    pin = ["--server-fingerprint", srv.fingerprint] if TLS else ["--insecure"]
    cl = Proc(env, "np-client", [CLIENT, "--server", f"127.0.0.1:{srv.port},127.0.0.2:{srv.port}",
                                 "--token", "s3cret", "--log-level", "debug", *pin, "-R",
                                 f"{LOOP}:0:{LOOP}:{svc}"])
    ports = ports_by_server(cl, 1)
    cl.wait_line(r"the same np-server as 127\.0\.0\.[12]:\d+ \(one server at two addresses\): "
                 r"no second session")
    (port,) = ports.values()
    check(served(port), "the one session serves")
    check(cl.count(r"name .* in use|giving up") == 0, "no login refused, nothing given up")
    check(cl.p.poll() is None, "the client runs on")
    check(srv.count(r"logged in") == 1, "the server saw one login")


def test_server_list_errors(env):
    """A bad list is refused at start, with the reason and exit 2 (usage)."""
    cases = [
        (f"{LOOP}:7000,,{LOOP}:7001", "an empty item"),
        (f"{LOOP}:7000, {LOOP}:7000", "is listed twice"),
        (",".join(f"{LOOP}:{7000 + i}" for i in range(9)), "at most 8 servers"),
        (f"{LOOP}:7000, {LOOP}:x", "is not HOST:PORT"),
    ]
    for value, why in cases:
        out = subprocess.run([CLIENT, "--server", value, "--token", "t", "--insecure", "-R",
                              "1:127.0.0.1:2"], capture_output=True, text=True, timeout=20)
        check(out.returncode == 2 and why in out.stderr,
              f"--server {value!r}: exit {out.returncode}, {out.stderr.strip()!r} (want {why!r})")
    out = subprocess.run([CLIENT, "--server", f"{LOOP}:7000,{LOOP}:7001", "--codec", "line",
                          "--insecure", "--tunnel", f"{LOOP}:7002", "-R", "1:127.0.0.1:2"],
                         capture_output=True, text=True, timeout=20)
    check(out.returncode == 2 and "codec line talks to one server" in out.stderr,
          f"the line codec with two servers: {out.returncode} {out.stderr.strip()!r}")


def test_two_way_soak_through_both(env):
    """NP_SOAK_SECONDS (10 in the suite) of traffic both ways at once through both servers of one
    client: a visitor on each server echoes 8 MiB while it sends (socat's echo stops reading while
    its writes are blocked), one after another, while short echoes alternate between the servers;
    every byte comes back, nothing sticks, and np-client's descriptors are back to their count from
    before the traffic."""
    from test_twoway import echo_both_ways, echo_service, established_to, fds, pattern
    seconds = float(os.environ.get("NP_SOAK_SECONDS", "10"))
    echo = echo_service(env)
    srvs, _ = servers(env)
    cl = client(env, srvs, "-R", f"{LOOP}:0:{LOOP}:{echo.port}")
    ports = list(ports_by_server(cl, 2).values())
    for s in srvs:  # the pre-opened work connections are parked: the baseline is steady
        s.wait_line(r"pre-opened work connection \d+ parked \(4 idle\)")
    base = fds(cl)[0]
    stop = time.monotonic() + seconds
    counts, errors = {"bulk": 0, "short": 0}, []
    lock = threading.Lock()

    def bulk(i):
        data = pattern(8 << 20, seed=i)
        want = (len(data), hashlib.sha256(data).hexdigest())
        while time.monotonic() < stop and not errors:
            got = echo_both_ways(ports[i], data, 60)
            check(got == want, f"bulk through {ports[i]}: {got[0]} bytes back, not {len(data)}")
            with lock:
                counts["bulk"] += 1

    def short(i):
        n = 0
        while time.monotonic() < stop and not errors:
            msg = pattern(1024, seed=1000 * i + n)
            got = echo_both_ways(ports[n % 2], msg, 30, source=f"127.0.0.{20 + i}")
            check(got == (1024, hashlib.sha256(msg).hexdigest()), f"short echo {n}: {got[0]}")
            n += 1
            with lock:
                counts["short"] += 1
            time.sleep(0.02)  # paced: each echo leaves a TIME_WAIT behind

    def guarded(body, i):
        try:
            body(i)
        except Exception as e:  # noqa: BLE001 - a failure of the soak, reported below
            errors.append(f"{body.__name__} {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=guarded, args=(bulk, i)) for i in range(2)]
    threads += [threading.Thread(target=guarded, args=(short, i)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    check(not any(t.is_alive() for t in threads), "a visitor is stuck")
    check(not errors, f"soak: {errors[:3]}")
    check(counts["bulk"] >= 4 and counts["short"] >= 10, f"the soak did too little: {counts}")
    print(f"soak {seconds:.0f}s through two servers: {counts['bulk']} bulk echoes of 8 MiB, "
          f"{counts['short']} short ones")
    wait_until(lambda: established_to(echo.port) == 0, 15, "np-client's connections to the service "
               f"closed (still {established_to(echo.port)})")
    wait_until(lambda: fds(cl)[0] == base, 15, f"np-client's descriptors back to {base} "
               f"(now {fds(cl)[0]})")


TESTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("test_")}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
