#!/usr/bin/env python3
"""Benchmark: the direct path vs np (multiplexed, the default; a connection per visitor with splice;
the same copying) vs haproxy and socat as one-hop relays and ssh -R, on loopback, in one run. Prints a table of medians with ratios to direct and appends JSON lines to bench/out/.

Not part of the test suite: numbers depend on the machine. Run with ./bench/run (installs iperf3, wrk,
nginx, socat and openssh from Debian first)."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("NP_SERVER", os.path.join(ROOT, "build/tools/np-server"))
CLIENT = os.environ.get("NP_CLIENT", os.path.join(ROOT, "build/tools/np-client"))
LOOP = "127.0.0.1"


def free_port():
    s = socket.socket()
    s.bind((LOOP, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOP, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not up")


def cpu_seconds(pids):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tck
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return total


def private_kib(pids):
    """USS (memory only these processes hold) and PSS (shared pages split among their users): RSS also
    counts every shared library page, most of which is libcrypto mapped from the page cache."""
    uss = pss = 0
    for pid in pids:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            text = f.read()
        uss += sum(int(v) for v in re.findall(r"Private_(?:Clean|Dirty):\s+(\d+)", text))
        pss += int(re.search(r"^Pss:\s+(\d+)", text, re.M).group(1))
    return uss, pss


class Procs:
    def __init__(self):
        self.ps = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", subprocess.DEVNULL),
                             stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.ps.append(p)
        return p

    def stop(self):
        for p in reversed(self.ps):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # np's tools drain on SIGTERM
        for p in self.ps:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.ps = []


# ---- the paths under test: each maps a target port to the port a visitor uses -------------------------

def path_direct(procs, target, tmp):
    return target, []


def path_np(procs, target, tmp, *flags, server=None, client=None):
    """np with its defaults (TLS, multiplexed), or with the client flags given (pairs of flag and
    value; --relay-splice and --insecure go to the server too)."""
    SERVER_, CLIENT_ = server or SERVER, client or CLIENT
    pairs = list(zip(flags[::2], flags[1::2]))
    server_flags = [x for k, v in pairs if k == "--relay-splice" for x in (k, v)]
    ctl, pub = free_port(), free_port()
    if ("--insecure", "true") in pairs:
        server_flags += ["--insecure"]  # a switch on the command line
        client_flags = [x for k, v in pairs if k != "--insecure" for x in (k, v)] + ["--insecure"]
    else:
        state = os.path.join(tmp, "np-state")
        fp = subprocess.run([SERVER_, "--tls-dir", state, "--fingerprint"], capture_output=True,
                            text=True, check=True).stdout.strip()
        server_flags += ["--tls-dir", state]
        client_flags = [*flags, "--server-fingerprint", fp]
    srv = procs.start([SERVER_, "--bind", f"{LOOP}:{ctl}", "--proxy-bind-addr", LOOP, "--token", "bench",
                       "--log-level", "warn", "--max-pending-per-proxy", "20000",
                       "--max-pending", "20000", *server_flags])
    wait_port(ctl)
    cl = procs.start([CLIENT_, "--server", f"{LOOP}:{ctl}", "--token", "bench", "--log-level", "warn",
                      *client_flags, "-R", f"{LOOP}:{pub}:{LOOP}:{target}"],
                     stdout=subprocess.PIPE, text=True)
    cl.stdout.readline()  # "proxy ...: public port N"
    return pub, [srv.pid, cl.pid]


def path_np_stcp(procs, target, tmp, direct=False):
    """A private proxy (type = stcp): the visitor's bytes enter a second np-client's -L port and
    cross the server to the owner's client, both sessions TLS and multiplexed (as ssh -L through a
    jump host would). direct: an xtcp visitor instead, whose connections go over QUIC straight to
    the owner's client (the path comes up with the first connection, which the warm-up makes)."""
    ctl, local = free_port(), free_port()
    state = os.path.join(tmp, "np-state")
    fp = subprocess.run([SERVER, "--tls-dir", state, "--fingerprint"], capture_output=True,
                        text=True, check=True).stdout.strip()
    srv = procs.start([SERVER, "--bind", f"{LOOP}:{ctl}", "--token", "bench", "--log-level", "warn",
                       "--max-pending-per-proxy", "20000", "--max-pending", "20000", "--tls-dir",
                       state])
    wait_port(ctl)
    conf, key = os.path.join(tmp, "owner.ini"), os.path.join(tmp, "secret")
    with open(conf, "w") as f:
        f.write(f"[proxy p]\ntype = stcp\nlocal = {LOOP}:{target}\nsecret_key = bench\n")
    with open(key, "w") as f:
        f.write("bench\n")
    common = ["--server", f"{LOOP}:{ctl}", "--token", "bench", "--server-fingerprint", fp]
    owner = procs.start([CLIENT, "-c", conf, *common, "--name", "owner", "--log-level", "info"],
                        stderr=subprocess.PIPE, text=True)
    while "visitors reach it as owner.p" not in owner.stderr.readline():
        pass
    threading.Thread(target=owner.stderr.read, daemon=True).start()  # drained: never blocks it
    if direct:
        vconf = os.path.join(tmp, "visitor.ini")
        with open(vconf, "w") as f:
            f.write(f"[visitor x]\ntype = xtcp\nserver_name = owner.p\nsecret_key = bench\n"
                    f"bind = {LOOP}:{local}\n")
        vis = procs.start([CLIENT, *common, "--name", "visitor", "--log-level", "info", "-c", vconf],
                          stderr=subprocess.PIPE, text=True)
    else:
        vis = procs.start([CLIENT, *common, "--name", "visitor", "--log-level", "warn",
                           "--secret-key-file", key, "-L", f"{local}:owner.p"])
    wait_port(local)
    if direct:  # a first connection brings the path up before anything is measured
        with socket.create_connection((LOOP, local), timeout=10):
            while "direct path to owner.p" not in vis.stderr.readline():
                pass
        threading.Thread(target=vis.stderr.read, daemon=True).start()
    return local, [srv.pid, owner.pid, vis.pid]


def path_socat(procs, target, tmp):
    # socat forks a process per connection; only the listener is measured for RSS and CPU, so its
    # figures are not comparable (left blank in the table).
    pub = free_port()
    p = procs.start(["socat", f"TCP-LISTEN:{pub},bind={LOOP},fork,reuseaddr,backlog=4096",
                     f"TCP:{LOOP}:{target}"])
    wait_port(pub)
    return pub, []


def path_ssh(procs, target, tmp):
    """ssh -R through a throwaway sshd on loopback, AES-GCM as a typical modern cipher."""
    d = os.path.join(tmp, "ssh")
    if not os.path.isdir(d):
        os.makedirs(d)
        os.makedirs("/run/sshd", exist_ok=True)
        for name in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{name}"], check=True)
        shutil.copy(f"{d}/user.pub", f"{d}/authorized_keys")
        os.chmod(f"{d}/authorized_keys", 0o600)
    sport, pub = free_port(), free_port()
    with open(f"{d}/sshd_config", "w") as f:
        f.write(f"ListenAddress {LOOP}:{sport}\nHostKey {d}/host\nAuthorizedKeysFile {d}/authorized_keys\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n"
                "AllowTcpForwarding yes\nStrictModes no\nMaxStartups 10000\nLogLevel ERROR\n")
    sshd = procs.start(["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"])
    wait_port(sport)
    ssh = procs.start(["ssh", "-N", "-T", "-p", str(sport), "-i", f"{d}/user", "-c", "aes128-gcm@openssh.com",
                       "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={d}/known_hosts",
                       "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
                       "-R", f"{LOOP}:{pub}:{LOOP}:{target}", f"root@{LOOP}"])
    wait_port(pub)
    return pub, [sshd.pid, ssh.pid]


def path_haproxy(procs, target, tmp):
    """haproxy as a one-hop TCP relay: the bar a relay in C sets."""
    pub = free_port()
    cfg = os.path.join(tmp, f"haproxy-{pub}.cfg")
    with open(cfg, "w") as f:
        f.write(f"global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                f"  timeout client 1h\n  timeout server 1h\nfrontend f\n  bind {LOOP}:{pub}\n"
                f"  default_backend b\nbackend b\n  server s {LOOP}:{target}\n")
    p = procs.start(["haproxy", "-f", cfg])
    wait_port(pub)
    return pub, [p.pid]


def path_np_base(procs, target, tmp):
    """np with its defaults, from another build (NP_BASE_SERVER, NP_BASE_CLIENT): before and after a
    change measured in one run, so the shared machine's slow spells hit both."""
    return path_np(procs, target, tmp, server=os.environ["NP_BASE_SERVER"],
                   client=os.environ["NP_BASE_CLIENT"])


def path_np_plain(procs, target, tmp):
    return path_np(procs, target, tmp, "--insecure", "true")


def path_np_nomux(procs, target, tmp):
    return path_np(procs, target, tmp, "--mux", "false")


def path_np_nomux_plain(procs, target, tmp):
    return path_np(procs, target, tmp, "--mux", "false", "--insecure", "true")


def path_np_copy(procs, target, tmp):
    return path_np(procs, target, tmp, "--mux", "false", "--relay-splice", "false", "--insecure",
                   "true")


# "np" is what a user gets: TLS and one multiplexed connection; "plain" is --insecure on both sides.
PATHS = {"direct": path_direct, "np": path_np, "np plain": path_np_plain, "np nomux": path_np_nomux,
         "np nomux plain": path_np_nomux_plain, "np copy": path_np_copy, "np base": path_np_base,
         "haproxy": path_haproxy, "socat": path_socat, "ssh -R": path_ssh, "np stcp": path_np_stcp,
         "np xtcp": lambda procs, target, tmp: path_np_stcp(procs, target, tmp, direct=True)}


# ---- measurements -------------------------------------------------------------------------------------

def iperf(port, seconds, streams, reverse):
    args = ["iperf3", "-c", LOOP, "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J"]
    if reverse:
        args.append("-R")
    # iperf3 -s serves one test at a time and turns a client away while it still tears the last
    # one down; try again rather than lose the whole run to that.
    for attempt in range(3):
        out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
        j = json.loads(out.stdout)
        if "error" not in j:
            break
        print(f"iperf3 on port {port}: {j['error']}; retrying", file=sys.stderr)
        time.sleep(1)
    else:
        raise RuntimeError(j["error"])
    end = j["end"]
    return end["sum_received"]["bits_per_second"] / 1e9, end["sum_received"]["bytes"]


def start_nginx(services, tmp, size=612):
    """One nginx worker serving a page of size bytes (by default 612, nginx's default page's) from
    tmp; its port."""
    port = free_port()
    os.makedirs(f"{tmp}/www")
    with open(f"{tmp}/www/index.html", "w") as f:
        f.write("x" * size)
    os.chmod(f"{tmp}/www", 0o755)
    os.chmod(f"{tmp}/www/index.html", 0o644)
    with open(f"{tmp}/nginx.conf", "w") as f:
        f.write(f"daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log stderr error;\n"
                f"events {{ worker_connections 20000; }}\n"
                f"http {{ access_log off; keepalive_requests 1000000;\n"
                f"  server {{ listen {LOOP}:{port} backlog=4096; root {tmp}/www; }} }}\n")
    services.start(["nginx", "-c", f"{tmp}/nginx.conf", "-p", tmp])
    wait_port(port)
    return port


def wrk(port, seconds, close, host=None):
    """port: on 127.0.0.1, or (address, port)."""
    addr, port = port if isinstance(port, tuple) else (LOOP, port)
    args = ["wrk", "-t", "2", "-c", "64", "-d", f"{seconds}s", "--latency", f"http://{addr}:{port}/"]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    if host:
        args[1:1] = ["-H", f"Host: {host}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30).stdout
    return parse_wrk(out, close)


def parse_wrk(out, close):
    """req/s, p50 and p99 in ms, and errors from wrk --latency's output (close: it sent
    "Connection: close")."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(pct):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    connect, read, write, timeout = map(int, errors.groups()) if errors else (0, 0, 0, 0)
    # With "Connection: close" wrk counts every server-side close as a read error: not a failure.
    errs = connect + write + timeout + (0 if close else read)
    errs += int(non2xx.group(1)) if non2xx else 0
    return rps, lat(50), lat(99), errs


HOLDER = r"""
import socket, sys, threading
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], 0))
l.listen(4096)
held = []
def serve():
    while True:
        try:
            held.append(l.accept()[0])
        except OSError:
            return
threading.Thread(target=serve, daemon=True).start()
print(l.getsockname()[1], flush=True)
for line in sys.stdin:
    print(len(held), flush=True)
"""


class Holder:
    """Accepts connections and holds them open without reading: the idle service end. A process of
    its own, so that its descriptors do not count against the visitors' (10,000 of each)."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-c", HOLDER, LOOP], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.port = int(self.p.stdout.readline())

    def count(self):
        self.p.stdin.write("?\n")
        self.p.stdin.flush()
        return int(self.p.stdout.readline())

    def close(self):
        self.p.stdin.close()
        self.p.wait(10)


def hold_rss(port, pids, holder, count):
    """RSS added per idle tunnelled connection, server and client together."""
    before = rss_kib(pids)
    conns = []
    for _ in range(count):
        try:
            conns.append(socket.create_connection((LOOP, port), timeout=10))
        except OSError as e:
            print(f"hold: connection {len(conns)} failed: {e}", file=sys.stderr)
            break
    deadline = time.monotonic() + 60
    while holder.count() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    held = holder.count()
    after = rss_kib(pids)
    for c in conns:
        c.close()
    return (after - before) / max(held, 1), held


def print_table(results, with_ratio, col=20):
    """One row per figure, one column per path; figures with_ratio(name) also get their ratio to
    the direct path."""
    keys = []
    for r in results.values():
        keys += [k for k in r if k not in keys]
    direct = results.get("direct", {})
    width = max(len(k) for k in keys) + 2
    print(f"{'':{width}}" + "".join(f"{n:>{col}}" for n in results))
    for k in keys:
        row = f"{k:{width}}"
        for n in results:
            v = results[n].get(k)
            if v is None:
                row += f"{'-':>{col}}"
                continue
            ratio = ""
            if direct.get(k) and n != "direct" and with_ratio(k):
                ratio = f" ({v / direct[k]:.2f}x)"
            row += f"{v:>{col - 8}.2f}{ratio:>8}"
        print(row)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=5, help="per iperf3/wrk run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hold", type=int, default=1000, help="idle connections to hold for the RSS figure")
    ap.add_argument("--paths", default=",".join(p for p in PATHS if p != "np base"),
                    help="comma-separated: " + ",".join(PATHS) + " (np base: the build named by "
                    "NP_BASE_SERVER and NP_BASE_CLIENT)")
    args = ap.parse_args()
    paths = args.paths.split(",")

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = tempfile.mkdtemp(prefix="np-bench-")
    os.chmod(tmp, 0o755)  # nginx's workers run as nobody and must read the page
    procs = Procs()
    services = Procs()
    results = {}
    try:
        iperf_port = free_port()
        services.start(["iperf3", "-s", "-B", LOOP, "-p", str(iperf_port)])
        nginx_port = start_nginx(services, tmp)
        wait_port(iperf_port)

        # Repeats go round the paths (A B C A B C ...) rather than path by path, so a slow spell of
        # a shared machine spreads over all of them instead of skewing one.
        figs = {name: {} for name in paths}
        for rep in range(args.repeats):
            for name in paths:
                fig = figs[name]
                pi, pids = PATHS[name](procs, iperf_port, tmp)
                if pids:
                    time.sleep(0.3)
                    fig.setdefault("idle RSS KiB", []).append(rss_kib(pids))
                    uss, pss = private_kib(pids)
                    fig.setdefault("idle USS KiB", []).append(uss)
                    fig.setdefault("idle PSS KiB", []).append(pss)
                for label, streams, rev in (("bulk 1 up", 1, False), ("bulk 1 down", 1, True),
                                            ("bulk 8 up", 8, False), ("bulk 8 down", 8, True)):
                    cpu0 = cpu_seconds(pids) if pids else 0
                    gbps, nbytes = iperf(pi, args.seconds, streams, rev)
                    fig.setdefault(label + " Gbit/s", []).append(gbps)
                    if pids and label == "bulk 1 up":
                        fig.setdefault("cpu s/GB", []).append((cpu_seconds(pids) - cpu0) / (nbytes / 1e9))
                procs.stop()
                pw, pids = PATHS[name](procs, nginx_port, tmp)
                rps, p50, p99, errs = wrk(pw, args.seconds, close=False)
                fig.setdefault("keepalive req/s", []).append(rps)
                fig.setdefault("keepalive p50 ms", []).append(p50)
                fig.setdefault("keepalive p99 ms", []).append(p99)
                rps, p50, p99, errs2 = wrk(pw, args.seconds, close=True)
                fig.setdefault("new-conn req/s", []).append(rps)
                fig.setdefault("errors", []).append(errs + errs2)
                procs.stop()
                if rep == 0 and pids:
                    holder = Holder()
                    ph, pids = PATHS[name](procs, holder.port, tmp)
                    per, held = hold_rss(ph, pids, holder, args.hold)
                    fig.setdefault("KiB per idle conn", []).append(per)
                    fig.setdefault("idle conns held", []).append(held)
                    procs.stop()
                    holder.close()
            print(f"round {rep + 1} of {args.repeats} done", file=sys.stderr)
        for name in paths:
            results[name] = {k: median(v) for k, v in figs[name].items()}
    finally:
        procs.stop()
        services.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(results, lambda k: not k.startswith(("errors", "idle conns")))
    os.makedirs(os.path.join(ROOT, "bench/out"), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    direct = results.get("direct", {})
    with open(os.path.join(ROOT, "bench/out/results.jsonl"), "a") as f:
        for n, r in results.items():
            f.write(json.dumps({"time": stamp, "path": n, **r,
                                **({"ratio_to_direct": {k: r[k] / direct[k] for k in r
                                                         if direct.get(k)}} if n != "direct" else {})})
                    + "\n")


if __name__ == "__main__":
    main()
