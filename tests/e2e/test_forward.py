#!/usr/bin/env python3
"""Servers that share the load, forwarding (docs/config.md, "Servers that share the load"): three
np-servers with one identity, one cluster_token and one route store (a real redis-server on
127.0.0.1), each client on one server only. A visitor of an HTTP or HTTPS service reaches it
through any of the three: the server that does not hold the name forwards the visitor over its
link to the one that does, with the visitor's own address (X-Forwarded-For, from curl's own
127.0.0.x source address), bodies byte for byte, keep-alive requests, and TLS that ends at the
service (curl verifies the service's certificate through two servers). A server with another
cluster_token is refused and answers 502; the owner killed, the others answer 502, then 404 once
its routes expired."""

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
from nptest import (LOOP, Digest, Greeter, check, half_close, low_free_ports, recv_all, run,  # noqa: E402
                    server_stats, wait_until)
from test_http_vhost import answers, echo_service, start_client, tls_service  # noqa: E402
from test_proxy_protocol import haproxy, nginx  # noqa: E402
from test_routes import LEASE_MS, free_port, redis, routes  # noqa: E402
from test_twoway import MIB, echo_both_ways  # noqa: E402
from test_twoway import echo_service as socat_echo  # noqa: E402
from test_udp import Echo  # noqa: E402


def cluster_server(env, store, name, tls_dir, token="cluster-s3cret", workers=1, extra=()):
    ctl = free_port()
    vport, sport = low_free_ports(2)
    srv = env.server("--token", "s3cret", "--route-store", f"redis://{LOOP}:{store}",
                     "--cluster-advertise", f"{LOOP}:{ctl}", "--route-lease", f"{LEASE_MS}ms",
                     "--cluster-token", token, "--workers", str(workers), "--vhost-http-port", str(vport),
                     "--vhost-https-port", str(sport), "--admin-bind", f"{LOOP}:0", *extra, name=name,
                     bind=f"{LOOP}:{ctl}", tls_dir=tls_dir)
    srv.admin = int(srv.wait_line(r"admin API, .* on \S+ \(port (\d+)\)").group(1))
    srv.me, srv.vport, srv.sport = f"{LOOP}:{ctl}", vport, sport
    return srv


def curl(port, url, *args, source=LOOP, ok=True):
    host = re.match(r"https?://([^/:]+)", url).group(1)
    out = subprocess.run(["curl", "-sS", "--max-time", "20", "--interface", source, "--resolve",
                          f"{host}:{port}:{LOOP}", url, *args], capture_output=True, timeout=60)
    check(not ok or out.returncode == 0, f"curl {url}: {out.stderr.decode(errors='replace')}")
    return out


def test_forward_http_and_https(env):
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    a, b, c = (cluster_server(env, store.port, f"np-server-{n}", tls_dir) for n in "abc")
    web = echo_service(env, "web")
    tls_port, cert = tls_service(env, "secure.example.com")
    start_client(env, a, "alpha", {"web": f"local = {LOOP}:{web}\ncustom_domains = web.example.com"})
    start_client(env, b, "beta", {"tls": f"local = {LOOP}:{tls_port}\n"
                                         f"custom_domains = secure.example.com"}, kind="https")
    wait_until(lambda: routes(c).get("http:web.example.com") == a.me and
               routes(c).get("https:secure.example.com") == b.me and
               routes(a).get("https:secure.example.com") == b.me and
               routes(b).get("http:web.example.com") == a.me, 5, "every server read the table")

    body = os.urandom(3 << 20)
    path = os.path.join(env.tmp.name, "body")
    with open(path, "wb") as f:
        f.write(body)
    for n, srv in enumerate((a, b, c)):
        src = f"127.0.0.{10 + n}"
        out = curl(srv.vport, f"http://web.example.com:{srv.vport}/p{n}", "--data-binary",
                   f"@{path}", "-H", "Content-Type: application/octet-stream", source=src)
        got, = answers(out.stdout)
        check(got["service"] == "web" and got["path"] == f"/p{n}" and got["length"] == len(body) and
              got["body"] == hashlib.sha256(body).hexdigest(),
              f"through {srv.name}: {got['service']} {got['path']} {got['length']} bytes")
        check(got["xff"] == [src], f"through {srv.name}: the visitor's address {got['xff']}")
        # two requests on one keep-alive connection
        out = curl(srv.vport, f"http://web.example.com:{srv.vport}/k1", "--next",
                   f"http://web.example.com:{srv.vport}/k2", source=src)
        check([g["path"] for g in answers(out.stdout)] == ["/k1", "/k2"],
              f"keep-alive through {srv.name}")
        out = curl(srv.sport, f"https://secure.example.com:{srv.sport}/", "--cacert", cert)
        check(b"s_server" in out.stdout or b"Ciphers" in out.stdout,
              f"HTTPS through {srv.name}: {out.stdout[:200]!r}")
        out = curl(srv.vport, f"http://nobody.example.com:{srv.vport}/", "-o", "/dev/null", "-w",
                   "%{http_code}")
        check(out.stdout == b"404", f"an unknown name through {srv.name}: {out.stdout}")
    sa, sb, sc = (server_stats(s) for s in (a, b, c))
    check(sc["peer_forwarded"] == 3 and sc["peer_forward_failed"] == 0,
          f"c forwarded two connections to a (the POST, the keep-alive one) and one to b: {sc}")
    check(sa["peer_visitors"] == 4 and sb["peer_visitors"] == 2,
          f"a took 2 from b and 2 from c, b 1 from a and 1 from c: {sa} {sb}")
    check(a.count(r"peer 127\.0\.0\.1:\d+ logged in from") == 2, "a: one link per other server")

    # The owner killed: the others answer 502 at once, then 404 once its routes expired.
    a.signal(signal.SIGKILL)
    a.wait_exit()
    out = curl(c.vport, f"http://web.example.com:{c.vport}/", "-o", "/dev/null", "-w",
               "%{http_code}")
    check(out.stdout in (b"502", b"404"), f"the owner gone: {out.stdout}")
    wait_until(lambda: curl(c.vport, f"http://web.example.com:{c.vport}/", "-o", "/dev/null",
                            "-w", "%{http_code}").stdout == b"404", 5 * LEASE_MS / 1000,
               "404 once the owner's routes expired")
    out = curl(b.sport, f"https://secure.example.com:{b.sport}/", "--cacert", cert)
    check(b"s_server" in out.stdout or b"Ciphers" in out.stdout, "b's own service still served")


def test_forward_wrong_cluster_token(env):
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    a = cluster_server(env, store.port, "np-server-a", tls_dir)
    d = cluster_server(env, store.port, "np-server-d", tls_dir, token="another-secret")
    web = echo_service(env, "web")
    start_client(env, a, "alpha", {"web": f"local = {LOOP}:{web}\ncustom_domains = web.example.com"})
    wait_until(lambda: routes(d).get("http:web.example.com") == a.me, 5, "d read the table")
    for _ in range(3):
        out = curl(d.vport, f"http://web.example.com:{d.vport}/", "-o", "/dev/null", "-w",
                   "%{http_code}")
        check(out.stdout == b"502", f"a refused d's login: {out.stdout}")
    d.wait_line(r"peer 127\.0\.0\.1:\d+: cannot link: it refused this server's login: wrong "
                r"cluster_token \(the servers need the same cluster_token\)")
    a.wait_line(r"peer login as 127\.0\.0\.1:\d+ refused: wrong cluster_token")
    check(d.count(r"cannot link") == 1, "said once, however many visitors")
    st = server_stats(d)
    check(st["peer_forward_failed"] == 3 and st["peer_forwarded"] == 0, f"d's counters: {st}")
    check(json.loads(subprocess.run(["curl", "-sS", f"http://{LOOP}:{a.admin}/api/v1/server"],
                                    capture_output=True, timeout=20).stdout)["stats"]["clients"] == 1,
          "a peer is no client")


def until_both_workers(srv, start, tries):
    """Call start(n) for n = 0, 1, ... until srv's two workers each hold a client (a client lands
    by a hash of its address): how many were started."""
    seen = set()
    for n in range(tries):
        start(n)
        clients = json.loads(subprocess.run(
            ["curl", "-sS", f"http://{LOOP}:{srv.admin}/api/v1/clients"], capture_output=True,
            timeout=20).stdout)["clients"]
        seen = {cl["worker"] for cl in clients}
        if len(seen) == 2:
            return n + 1
    check(False, f"clients on both of {srv.name}'s workers after {tries}: {seen}")


def test_forward_to_another_worker(env):
    """The owner runs two workers: a forwarded visitor whose service's client is on the other
    worker than the peer's link is bridged there (a stream cannot move between loops)."""
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    a = cluster_server(env, store.port, "np-server-a", tls_dir, workers=2)
    c = cluster_server(env, store.port, "np-server-c", tls_dir)
    web = echo_service(env, "web")
    n = until_both_workers(a, lambda n: start_client(
        env, a, f"w{n}", {"web": f"local = {LOOP}:{web}\ncustom_domains = w{n}.example.com"}), 20)
    hosts = [f"w{i}.example.com" for i in range(n)]
    wait_until(lambda: all(routes(c).get(f"http:{h}") == a.me for h in hosts), 5,
               "c read the table")
    before = server_stats(a)
    for h in hosts:
        for _ in range(2):
            out = curl(c.vport, f"http://{h}:{c.vport}/x", source="127.0.0.7")
            got, = answers(out.stdout)
            check(got["service"] == "web" and got["xff"] == ["127.0.0.7"],
                  f"{h} through c: {got['service']} {got['xff']}")
    after = server_stats(a)
    check(after["conns_moved"] > before["conns_moved"],
          f"some were bridged to the other worker: {before['conns_moved']} -> "
          f"{after['conns_moved']}")


def test_forward_store_away(env):
    """The store killed: forwarding goes on from the last table read; a service registered
    meanwhile is not known to the others (404 there) until the store is back, then forwarded."""
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    a = cluster_server(env, store.port, "np-server-a", tls_dir)
    c = cluster_server(env, store.port, "np-server-c", tls_dir)
    web = echo_service(env, "web")
    start_client(env, a, "alpha", {"web": f"local = {LOOP}:{web}\ncustom_domains = web.example.com"})
    wait_until(lambda: routes(c).get("http:web.example.com") == a.me, 5, "c read the table")

    def code(host):
        return curl(c.vport, f"http://{host}:{c.vport}/", "-o", "/dev/null", "-w",
                    "%{http_code}").stdout

    mark = c.mark()
    store.signal(signal.SIGKILL)
    store.wait_exit()
    c.wait_line(r"route store redis://\S+: .*; routing from the last table read \(1 routes? of "
                r"other servers\)", after=mark)
    for _ in range(3):
        check(code("web.example.com") == b"200", "forwarded from the last table")
    start_client(env, a, "beta", {"new": f"local = {LOOP}:{web}\ncustom_domains = new.example.com"})
    check(code("new.example.com") == b"404", "a service registered meanwhile: not known at c yet")
    store = redis(env, store.port)  # empty: nothing was saved
    wait_until(lambda: code("new.example.com") == b"200", 10,
               "forwarded once the store is back and c read it again")
    check(code("web.example.com") == b"200", "the first service still forwarded")


def two_servers_apart(env, workers_a=1):
    """Servers a and b of one cluster (a store of their own), their public ports on 127.0.0.2 and
    127.0.0.3: each may bind the other's TCP and UDP ports to forward their visitors."""
    store = redis(env)
    tls_dir = tempfile.mkdtemp(dir=env.tmp.name)
    a = cluster_server(env, store.port, "np-server-a", tls_dir, workers=workers_a,
                       extra=("--proxy-bind-addr", "127.0.0.2"))
    b = cluster_server(env, store.port, "np-server-b", tls_dir,
                       extra=("--proxy-bind-addr", "127.0.0.3"))
    return a, b


def exchange(addr, port, data, source):
    """Send data through addr:port to a Digest service, half-close, read its answer."""
    s = socket.create_connection((addr, port), timeout=20, source_address=(source, 0))
    s.sendall(data)
    half_close(s)
    got = recv_all(s)
    s.close()
    return got


def test_forward_tcp_and_takeover(env):
    """A TCP proxy of a client of server a (two workers, public ports on 127.0.0.2) reached through
    server b (public ports on 127.0.0.3): b listens on the port a's client holds (a shadow) and
    forwards each visitor; bytes arrive whole, and a's access log names the visitor's own address.
    Then a client of b registers the same port: it gets it (the shadow gives way), and b's visitors
    reach b's client from then on."""
    a, b = two_servers_apart(env, workers_a=2)
    digest, greeter = env.service(Digest), env.service(Greeter)
    # low_free_ports probes 127.0.0.1: the first four it finds again are a's and b's vhost ports,
    # bound on their own addresses
    port = [p for p in low_free_ports(8) if p not in (a.vport, a.sport, b.vport, b.sport)][0]
    env.client(a, "-R", f"127.0.0.2:{port}:{LOOP}:{digest}", name="client-a")
    wait_until(lambda: routes(b).get(f"tcp:{port}") == a.me, 5, "b read a's route")
    data = os.urandom(4 << 20)
    want = b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode())
    b.wait_line(rf"cluster: port {port} forwards to the server that holds it")
    for n in range(6):
        got = exchange("127.0.0.3", port, data, f"127.0.0.{20 + n}")
        check(got == want, f"visitor {n} through b: {got[:80]!r}")
    sb = server_stats(b)
    check(sb["peer_forwarded"] == 6, f"b forwarded 6: {sb}")
    a.wait_line(r"127\.0\.0\.25:\d+")  # the access log names the visitor, not b
    # b's own client takes the port: the shadow gives way
    cb = env.client(b, "-R", f"127.0.0.3:{port}:{LOOP}:{greeter}", name="client-b")
    check(list(cb.ports.values()) == [port], f"b's client got port {port}: {cb.ports}")

    b.wait_line(rf"cluster: port {port} is a proxy's of this server now")

    def greeted():
        try:
            s = socket.create_connection(("127.0.0.3", port), timeout=2)
            s.sendall(b"me\n")
            got = recv_all(s)
            s.close()
            return got == b"you are me\n"
        except OSError:
            return False
    check(all(greeted() for _ in range(8)), "b's visitors reach b's own client")
    got = exchange("127.0.0.2", port, data, "127.0.0.30")
    check(got == want, "a's own visitors still reach a's client")


def test_forward_real_peers_and_two_way(env):
    """Real programs behind a forwarded TCP port: nginx reads np-client's PROXY v2 header and
    haproxy its v1 header, and both see the visitor's own address, not a server's; then traffic
    both ways at once through two servers (socat's echo, which stops reading while its writes are
    blocked): four visitors at a time, 8 MiB each way, for NP_FORWARD_SOAK_SECONDS, byte for
    byte, and one 64 MiB echo."""
    a, b = two_servers_apart(env)
    taken = (a.vport, a.sport, b.vport, b.sport)
    ng, hp, ec = [p for p in low_free_ports(10) if p not in taken][:3]
    ports = [p for p in low_free_ports(16) if p not in taken + (ng, hp, ec)][:3]
    nginx(env, ng)
    haproxy(env, hp)
    echo = socat_echo(env)
    conf = os.path.join(env.tmp.name, "client-a.ini")
    with open(conf, "w") as f:
        f.write(f"""[proxy nginx]
local = {LOOP}:{ng}
remote_port = {ports[0]}
proxy_protocol_version = v2
[proxy haproxy]
local = {LOOP}:{hp}
remote_port = {ports[1]}
proxy_protocol_version = v1
[proxy echo]
local = {LOOP}:{echo.port}
remote_port = {ports[2]}
""")
    env.client(a, "-c", conf, name="client-a")
    for p in ports:
        b.wait_line(rf"cluster: port {p} forwards to the server that holds it")
    for port, who in ((ports[0], "nginx"), (ports[1], "haproxy")):
        for src in ("127.0.0.41", "127.0.0.42"):
            out = subprocess.run(["curl", "-sS", "--max-time", "10", "--interface", src,
                                  f"http://127.0.0.3:{port}/hello"], capture_output=True,
                                 text=True, timeout=20)
            check(out.stdout == f"you are {src}\n",
                  f"{who} through b, from {src}: {out.stdout!r} {out.stderr!r}")

    before = server_stats(b)["peer_forwarded"]
    stop = time.monotonic() + float(os.environ.get("NP_FORWARD_SOAK_SECONDS", "6"))
    errors, done = [], [0]
    data = os.urandom(8 * MIB)
    want = (len(data), hashlib.sha256(data).hexdigest())

    def visitor(n):
        try:
            while time.monotonic() < stop and not errors:
                got = echo_both_ways(ports[2], data, 60, source=f"127.0.0.{50 + n}",
                                     host="127.0.0.3")
                check(got == want, f"visitor {n}: {got[0]} bytes back of {len(data)}")
                done[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"visitor {n}: {type(e).__name__}: {e}")
    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0, stop - time.monotonic()) + 120)  # each echo has 60 s
    check(not any(t.is_alive() for t in threads), "every visitor finished")
    check(not errors, f"two-way through two servers: {errors}")
    check(done[0] >= 4, f"{done[0]} echoes of 8 MiB both ways")
    print(f"two-way through two servers: {done[0]} echoes of 8 MiB", file=sys.stderr)
    big = os.urandom(64 * MIB)
    got = echo_both_ways(ports[2], big, 120, source="127.0.0.60", host="127.0.0.3")
    check(got == (len(big), hashlib.sha256(big).hexdigest()), f"64 MiB: {got[0]} bytes back")
    st = server_stats(b)
    check(st["peer_forwarded"] - before == done[0] + 1 and st["peer_forward_failed"] == 0,
          f"every echo forwarded once: {done[0] + 1} and {st}")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    key, crt = os.path.join(d, f"{name}.key"), os.path.join(d, f"{name}.crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", crt, "-subj", f"/CN={name}", "-days", "2")
    return key, crt


def make_cert(d, ca, name, intermediate=False):
    """A certificate of its own, signed by ca (key, crt); an intermediate CA's when asked."""
    key, csr, crt = (os.path.join(d, f"{name}.{x}") for x in ("key", "csr", "crt"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            key, "-out", csr, "-subj", f"/CN={name}")
    ext = []
    if intermediate:
        ext = ["-extfile", os.path.join(d, "ca.ext")]
        with open(ext[1], "w") as f:
            f.write("basicConstraints = critical, CA:TRUE\nkeyUsage = keyCertSign, cRLSign\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial", "-out",
            crt, "-days", "2", *ext)
    return key, crt


def test_forward_cluster_ca(env):
    """cluster_ca: each server with a certificate of its own from the cluster's CA (not one shared
    identity): a visitor forwarded between two of them is served, both ways (b's certificate comes
    from an intermediate CA: its tls_cert holds the chain); a server whose certificate another CA
    signed is refused by the TLS check of the server that links to it (its visitors there get 502,
    said with what to do), and still serves its own."""
    store = redis(env)
    d = tempfile.mkdtemp(dir=env.tmp.name)
    ca, rogue = make_ca(d, "cluster-ca"), make_ca(d, "another-ca")
    srv = {}
    inter = make_cert(d, ca, "intermediate-ca", intermediate=True)
    for name, signer in (("a", ca), ("b", inter), ("c", rogue)):
        key, crt = make_cert(d, signer, f"server-{name}")
        if signer is inter:  # the chain: the leaf, then the intermediate
            with open(crt, "a") as out, open(inter[1]) as f:
                out.write(f.read())
        srv[name] = cluster_server(env, store.port, f"np-server-{name}", None,
                                   extra=("--tls-cert", crt, "--tls-key", key,
                                          "--cluster-ca", ca[1]))
    a, b, c = srv["a"], srv["b"], srv["c"]
    check(len({a.fingerprint, b.fingerprint, c.fingerprint}) == 3, "three identities")
    web = echo_service(env, "web")
    start_client(env, a, "alpha", {"web": f"local = {LOOP}:{web}\ncustom_domains = web.example.com"})
    start_client(env, b, "beta", {"web": f"local = {LOOP}:{web}\ncustom_domains = b.example.com"})
    start_client(env, c, "gamma", {"web": f"local = {LOOP}:{web}\ncustom_domains = c.example.com"})
    wait_until(lambda: routes(b).get("http:web.example.com") == a.me and
               routes(b).get("http:c.example.com") == c.me and
               routes(a).get("http:b.example.com") == b.me, 5, "a and b read the table")
    out = curl(a.vport, f"http://b.example.com:{a.vport}/chain", source="127.0.0.8")
    got, = answers(out.stdout)
    check(got["path"] == "/chain" and got["xff"] == ["127.0.0.8"], f"forwarded b -> a: {got}")
    out = curl(b.vport, f"http://web.example.com:{b.vport}/ca", source="127.0.0.9")
    got, = answers(out.stdout)
    check(got["path"] == "/ca" and got["xff"] == ["127.0.0.9"], f"forwarded a -> b: {got}")
    out = curl(b.vport, f"http://c.example.com:{b.vport}/", "-o", "/dev/null", "-w", "%{http_code}")
    check(out.stdout == b"502", f"c's certificate is not the cluster's: {out.stdout}")
    b.wait_line(r"the certificate of this server of the cluster is not one cluster_ca signed")
    b.wait_line(rf"peer {re.escape(c.me)}: cannot link")
    out = curl(c.vport, f"http://c.example.com:{c.vport}/", "-o", "/dev/null", "-w", "%{http_code}")
    check(out.stdout == b"200", f"c serves its own visitors: {out.stdout}")


class Closer:
    """What env closes with its servers: here, the UDP echo services."""

    def __init__(self, *closes):
        self.closes = closes

    def shutdown(self):
        for c in self.closes:
            c()

    def server_close(self):
        pass


def test_forward_udp_and_takeover(env):
    """A UDP proxy of a client of server a (two workers, public ports on 127.0.0.2) reached through
    server b (127.0.0.3), which binds that port (a UDP shadow) and forwards each visitor address as
    a flow: datagrams of every size come back whole, each visitor keeps one flow at the service,
    each is forwarded once. Then a client of b registers the same port: it gets it (the shadow
    gives way), and b's visitors reach b's own client."""
    a, b = two_servers_apart(env, workers_a=2)
    echo_a, echo_b = Echo(), Echo()
    env.servers.append(Closer(echo_a.close, echo_b.close))
    taken = (a.vport, a.sport, b.vport, b.sport)
    free = [p for p in low_free_ports(28) if p not in taken][:20]
    # a visitor of the worker without b's link is bridged there (NP_MOVE_UDP)
    n = until_both_workers(a, lambda n: env.client(
        a, "--name", f"ua{n}", "-U", f"{free[n]}:{LOOP}:{echo_a.port}", name=f"client-a{n}"), 20)
    ports = free[:n]
    for port in ports:
        b.wait_line(rf"cluster: UDP port {port} forwards to the server that holds it")

    def visitor(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.0.{20 + n}", 0))
        s.settimeout(5)
        return s

    flows = {}
    for n in range(4):
        s, port = visitor(n), ports[0] if n < 2 else ports[-1]  # on either worker
        for size in (0, 1, 1400, 9000, 60000):
            data = os.urandom(size)
            s.sendto(data, ("127.0.0.3", port))
            got, frm = s.recvfrom(65536)
            head, _, body = got.partition(b"|")
            check(body == data and frm == ("127.0.0.3", port),
                  f"visitor {n}, {size} bytes back through b: {len(body)} from {frm}")
            flows.setdefault(n, set()).add(int(head))
        s.close()
    check(all(len(f) == 1 for f in flows.values()) and len(set.union(*flows.values())) == 4,
          f"one flow at the service for each visitor: {flows}")
    sb = server_stats(b)
    check(sb["peer_forwarded"] == 4 and sb["peer_forward_failed"] == 0, f"b forwarded 4: {sb}")
    check(server_stats(a)["conns_moved"] > 0, "some bridged to the worker without the link")
    for n in range(4):  # a's flows are the visitors' own addresses, not b's
        a.wait_line(rf"UDP flow 127\.0\.0\.{20 + n}:\d+ has its work connection")
    port = ports[0]

    # b's own client takes the port: the shadow gives way
    cb = env.client(b, "--name", "ub", "-U", f"{port}:{LOOP}:{echo_b.port}", name="client-b")
    check(list(cb.ports.values()) == [port], f"b's client got UDP port {port}: {cb.ports}")
    b.wait_line(rf"cluster: UDP port {port} is a proxy's of this server now")
    s = visitor(9)
    before = len(echo_b.peers)
    for i in range(3):
        s.sendto(b"mine %d" % i, ("127.0.0.3", port))
        got, _ = s.recvfrom(65536)
        check(got.endswith(b"|mine %d" % i), f"b's visitor answered: {got!r}")
    check(len(echo_b.peers) > before, "by b's own client's service")
    s = visitor(10)
    s.sendto(b"still a", ("127.0.0.2", port))
    check(s.recvfrom(65536)[0].endswith(b"|still a"), "a's own visitors still reach a's client")


TESTS = {
    "forward_http_and_https": test_forward_http_and_https,
    "forward_wrong_cluster_token": test_forward_wrong_cluster_token,
    "forward_to_another_worker": test_forward_to_another_worker,
    "forward_tcp_and_takeover": test_forward_tcp_and_takeover,
    "forward_store_away": test_forward_store_away,
    "forward_real_peers_and_two_way": test_forward_real_peers_and_two_way,
    "forward_udp_and_takeover": test_forward_udp_and_takeover,
    "forward_cluster_ca": test_forward_cluster_ca,
}

if __name__ == "__main__":
    if sys.argv[1:] == ["--list"]:
        print("\n".join(TESTS))
        sys.exit(0)
    sys.exit(run(TESTS))
