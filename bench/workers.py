#!/usr/bin/env python3
"""np-server with 1 and 2 workers (event loops on threads of their own) under many clients and
short requests: K np-clients (TLS, mux, each logged in under its own name with -R of its own public
port to one nginx serving 128 bytes), and wrk processes of one thread each, spread over the K
public ports, asking with "Connection: close" (a new visitor per request: the most server work per
request). Per run: req/s, p99, the CPU of each np-server thread (/proc/PID/task/TID), the server's
CPU per request, and the CPU of the clients, nginx and wrk. Repeats go round the worker counts
(1 2 1 2 ...); medians.

np-server gets --workers N only if its --help lists the flag; without it only 1 worker runs and the
others are reported as skipped. Not part of the test suite: numbers depend on the machine. Run with
./bench/run --workers [--seconds N --repeats N --clients K ...]; results are printed and appended
to bench/out/workers.jsonl (docs/performance.md, "workers = N bench")."""

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from bench import (CLIENT, LOOP, ROOT, SERVER, Procs, cpu_seconds, free_port, median,  # noqa: E402
                   parse_wrk, start_nginx, wait_port)

TCK = os.sysconf("SC_CLK_TCK")
BODY = 128  # bytes nginx answers: small, so the per-connection work dominates


def supports_workers():
    return "--workers" in subprocess.run([SERVER, "--help"], capture_output=True, text=True).stdout


def version():
    return subprocess.run([SERVER, "--version"], capture_output=True, text=True).stdout.strip()


# ---- CPU ----------------------------------------------------------------------------------------

def threads_cpu(pid):
    """{tid: (comm, CPU seconds)} of every thread of pid now: utime + stime, fields 14 and 15 of
    /proc/PID/task/TID/stat, counted after the last ')' (comm may hold spaces and parentheses)."""
    res = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        res[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / TCK)
    return res


def thread_label(pid, tid, comm):
    """w0 for the main thread (its comm stays np-server), wN for the thread named np-wN, other for
    the rest (libuv's thread pool, threads of OpenSSL)."""
    if tid == pid:
        return "w0"
    m = re.fullmatch(r"np-w(\d+)", comm)
    return f"w{m.group(1)}" if m else "other"


def children(pid):
    """nginx's worker: the master's CPU does not include a child it has not reaped."""
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except OSError:
                continue
    return kids


def live_cpu(pids):
    """CPU seconds of those of pids that still run (a client that died is reported, not fatal)."""
    return sum(cpu_seconds([p]) for p in pids if os.path.exists(f"/proc/{p}/stat"))


def sample(srv, clients, nginx):
    return {"threads": threads_cpu(srv), "server": cpu_seconds([srv]),
            "clients": live_cpu(clients), "nginx": live_cpu(nginx)}


def per_thread(srv, before, after):
    """CPU seconds per label over the window. "other" is the process's total less the workers', so
    threads that ended within the window count too."""
    out = {}
    for tid, (comm, s) in after["threads"].items():
        label = thread_label(srv, tid, comm)
        if label != "other":
            out[label] = out.get(label, 0.0) + s - before["threads"].get(tid, (comm, 0.0))[1]
    out["other"] = max(0.0, after["server"] - before["server"] - sum(out.values()))
    return out


# ---- /metrics -----------------------------------------------------------------------------------

def metrics(port):
    """Samples of np-server's /metrics by series ({} if it does not answer: nothing depends on it
    but the cross-checks)."""
    try:
        with urllib.request.urlopen(f"http://{LOOP}:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError as e:
        print(f"/metrics: {e}", file=sys.stderr)
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def by_label(m, family, label):
    """{label value: sample} of one family."""
    out = {}
    for k, v in m.items():
        if k.startswith(family + "{"):
            lm = re.search(rf'{label}="([^"]*)"', k)
            if lm:
                out[lm.group(1)] = v
    return out


def worker_name(w):
    return f"w{w}" if w.isdigit() else w


# ---- one run --------------------------------------------------------------------------------------

def start_np(procs, tmp, nginx_port, args, workers, flag, tag):
    """np-server with its defaults (TLS, mux) and K np-clients, each with its own name and public
    port; the server's pid, the clients' pids, their ports and the admin port."""
    ctl, admin = free_port(), free_port()
    state = os.path.join(tmp, "np-state")
    fp = subprocess.run([SERVER, "--tls-dir", state, "--fingerprint"], capture_output=True,
                        text=True, check=True).stdout.strip()
    argv = [SERVER, "--bind", f"{LOOP}:{ctl}", "--proxy-bind-addr", LOOP, "--token", "bench",
            "--log-level", "warn", "--access-log", "false", "--max-pending", "20000",
            "--max-pending-per-proxy", "20000", "--tls-dir", state, "--admin-bind", f"{LOOP}:{admin}"]
    if flag:
        argv += ["--workers", str(workers)]
    pin = {}
    if args.server_cpus:
        cpus = cpu_list(args.server_cpus)
        pin = {"preexec_fn": lambda: os.sched_setaffinity(0, cpus)}
    with open(os.path.join(tmp, f"server-{tag}.log"), "w") as log:
        srv = procs.start(argv, stderr=log, **pin)
    wait_port(ctl)
    wait_port(admin)
    cls, ports = [], []
    for k in range(args.clients):
        pub = free_port()
        with open(os.path.join(tmp, f"client-{tag}-c{k}.log"), "w") as log:
            cls.append(procs.start([CLIENT, "--server", f"{LOOP}:{ctl}", "--token", "bench",
                                    "--log-level", "warn", "--name", f"c{k}", "--server-fingerprint",
                                    fp, "-R", f"{LOOP}:{pub}:{LOOP}:{nginx_port}"],
                                   stdout=subprocess.PIPE, stderr=log, text=True))
        ports.append(pub)
    for k, cl in enumerate(cls):
        line = cl.stdout.readline()  # "proxy ...: public port N" once the port is open
        if "public port" not in line:
            raise RuntimeError(f"client c{k} did not open its port (see {tmp}/client-{tag}-c{k}.log)")
    return srv.pid, [c.pid for c in cls], ports, admin


def run_wrk(ports, args, seconds, during=lambda start: None):
    """args.wrk processes of one thread each, process i on ports[i % K], all at once, while
    during(start) runs (start: when the first was started); for each wrk its output and CPU seconds
    (its rusage, since it is our child), and what during returned."""
    ps = []
    start = time.monotonic()
    for i in range(args.wrk):
        ps.append(subprocess.Popen(
            ["wrk", "-t", "1", "-c", str(args.connections), "-d", f"{seconds}s", "--latency",
             "-H", "Connection: close", f"http://{LOOP}:{ports[i % len(ports)]}/"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    mid = during(start)
    res = []
    for p in ps:
        out = p.stdout.read()  # wrk writes only at its end: the other pipes cannot fill meanwhile
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise RuntimeError(f"wrk exited with {p.returncode}: {out}")
        res.append((out, ru.ru_utime + ru.ru_stime))
    return res, mid


def wrk_duration(out):
    """The seconds wrk ran ("12380 requests in 3.00s")."""
    m = re.search(r"requests in ([\d.]+)(ms|s|m)\b", out)
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60}[m.group(2)]


def one_run(procs, tmp, nginx_port, nginx, args, workers, flag, tag):
    """One np-server and its clients: warm-up, then the window; the run's figures."""
    srv, clients, ports, admin = start_np(procs, tmp, nginx_port, args, workers, flag, tag)

    def window(start):
        """CPU and counters sampled while every wrk of the window runs: from once the last has
        started to just before the first one ends, so that their start and end (16 processes
        started one by one on a busy machine) stay out of the CPU figures."""
        m0 = metrics(admin)
        t0 = time.monotonic()
        s0 = sample(srv, clients, nginx)
        time.sleep(max(0.0, start + args.seconds - 0.1 - t0))
        t1 = time.monotonic()
        s1 = sample(srv, clients, nginx)
        return m0, t0, s0, t1, s1, metrics(admin)

    try:
        if args.warmup:
            run_wrk(ports, args, args.warmup)
        outs, (m0, t0, s0, t1, s1, m1) = run_wrk(ports, args, args.seconds, window)
        dead = [f"c{k}" for k, pid in enumerate(clients) if not os.path.exists(f"/proc/{pid}/stat")]
    finally:
        procs.stop()
    wall = t1 - t0
    if wall < args.seconds / 2:
        print(f"warning: only {wall:.2f} s of the {args.seconds} s had every wrk running",
              file=sys.stderr)
    rps = p99 = 0.0
    requests = errors = 0
    for out, _ in outs:
        r, _, p, e = parse_wrk(out, close=True)
        rps += r
        p99 = max(p99, p)
        errors += e
        requests += int(re.search(r"(\d+) requests in", out).group(1))
    key = 'natproxy_server_visitor_outcomes_total{outcome="joined"}'
    # Requests within the sampled window: the server's count if /metrics answered, else wrk's rate.
    served = m1[key] - m0[key] if key in m0 and key in m1 else rps * wall
    threads = per_thread(srv, s0, s1)
    server = s1["server"] - s0["server"]
    run = {"req_s": rps, "p99_ms": p99, "errors": errors, "requests": requests, "window_s": wall,
           "cpu_pct": {k: 100 * v / wall for k, v in threads.items()},
           "server_cpu_pct": 100 * server / wall,
           "server_us_per_req": 1e6 * server / max(served, 1),
           "clients_cpu_pct": 100 * (s1["clients"] - s0["clients"]) / wall,
           "nginx_cpu_pct": 100 * (s1["nginx"] - s0["nginx"]) / wall,
           "wrk_cpu_pct": 100 * sum(c / wrk_duration(out) for out, c in outs)}
    if dead:
        run["clients_gone"] = dead
    # Cross-checks from the server's own counters: visitors joined (wrk's requests, seen from the
    # server), how they spread over the clients, and, once np-server has workers, its CPU per
    # worker and clients per worker.
    if m0 and m1:
        run["joined"] = served
        per_client = by_label(m1, "natproxy_proxy_visitors_joined_total", "client")
        before = by_label(m0, "natproxy_proxy_visitors_joined_total", "client")
        per_client = [v - before.get(c, 0) for c, v in per_client.items()]
        if per_client:
            run["joined_per_client_min_max"] = [min(per_client), max(per_client)]
        c0 = by_label(m0, "natproxy_server_worker_cpu_seconds_total", "worker")
        c1 = by_label(m1, "natproxy_server_worker_cpu_seconds_total", "worker")
        if c1:
            run["metrics_cpu_pct"] = {worker_name(w): 100 * (v - c0.get(w, 0)) / wall
                                      for w, v in c1.items()}
        wc = by_label(m1, "natproxy_server_worker_clients", "worker")
        if wc:
            run["clients_per_worker"] = {worker_name(w): v for w, v in wc.items()}
    return run


# ---- summary --------------------------------------------------------------------------------------

def summarize(runs):
    """Medians over the repeats of one worker count; the errors summed."""
    labels = sorted({k for r in runs for k in r["cpu_pct"]}, key=label_order)
    s = {k: median([r[k] for r in runs]) for k in
         ("req_s", "p99_ms", "server_cpu_pct", "server_us_per_req", "clients_cpu_pct",
          "nginx_cpu_pct", "wrk_cpu_pct")}
    s["cpu_pct"] = {k: median([r["cpu_pct"].get(k, 0.0) for r in runs]) for k in labels}
    s["errors"] = sum(r["errors"] for r in runs)
    if all("joined" in r for r in runs):
        s["joined"] = median([r["joined"] for r in runs])
    return s


def label_order(k):
    return (1, 0) if k == "other" else (0, int(k[1:]))


def cpu_list(text):
    """0-3,6 as a set of CPUs."""
    cpus = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return cpus


def print_table(summary):
    labels = sorted({k for s in summary.values() for k in s["cpu_pct"]}, key=label_order)
    base = summary.get(1, {}).get("req_s")
    head = (f"{'workers':>7} {'req/s':>9} {'p99 ms':>7} "
            + " ".join(f"{l + ' %':>7}" for l in labels)
            + f" {'server %':>8} {'us/req':>7} {'clients %':>9} {'nginx %':>7} {'wrk %':>6}"
            f" {'errors':>6} {'x 1 wkr':>7}")
    print(head)
    for w, s in summary.items():
        cells = " ".join(f"{s['cpu_pct'][l]:>7.1f}" if l in s["cpu_pct"] else f"{'-':>7}"
                         for l in labels)
        ratio = f"{s['req_s'] / base:.2f}x" if base else "-"
        print(f"{w:>7} {s['req_s']:>9.0f} {s['p99_ms']:>7.2f} {cells} {s['server_cpu_pct']:>8.1f}"
              f" {s['server_us_per_req']:>7.1f} {s['clients_cpu_pct']:>9.1f} {s['nginx_cpu_pct']:>7.1f}"
              f" {s['wrk_cpu_pct']:>6.1f} {s['errors']:>6} {ratio:>7}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10, help="measured window per run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of load before each window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16, help="np-client processes, a port each")
    ap.add_argument("--wrk", type=int, default=16,
                    help="wrk processes of one thread, process i on client i %% K's port (fewer "
                    "than --clients leaves clients without load)")
    ap.add_argument("--connections", type=int, default=8, help="per wrk process")
    ap.add_argument("--worker-counts", default="1,2", help="comma-separated np-server --workers")
    ap.add_argument("--server-cpus", help="CPUs for np-server (e.g. 0-1), on a machine with more")
    ap.add_argument("--others-cpus", help="CPUs for the clients, nginx and wrk (e.g. 2-7)")
    args = ap.parse_args()

    counts = [int(w) for w in args.worker_counts.split(",")]
    flag = supports_workers()
    skipped = [] if flag else [w for w in counts if w > 1]
    counts = [w for w in counts if w not in skipped]
    for w in skipped:
        print(f"workers = {w} skipped: this np-server has no --workers ({SERVER} --help does not "
              "list it)", file=sys.stderr)
    if args.others_cpus:
        os.sched_setaffinity(0, cpu_list(args.others_cpus))  # inherited by all we start

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="np-bench-workers-")
    os.chmod(tmp, 0o755)  # nginx's workers run as nobody and must read the page
    procs, services = Procs(), Procs()
    runs = {w: [] for w in counts}
    done = False
    try:
        nginx_port = start_nginx(services, tmp, size=BODY)
        master = services.ps[-1].pid
        deadline = time.monotonic() + 10
        while not children(master) and time.monotonic() < deadline:  # its port is open before
            time.sleep(0.05)
        nginx = [master, *children(master)]
        for rep in range(args.repeats):
            for w in counts:
                runs[w].append(one_run(procs, tmp, nginx_port, nginx, args, w, flag, f"{rep}-{w}"))
            print(f"round {rep + 1} of {args.repeats} done", file=sys.stderr)
        done = True
    finally:
        procs.stop()
        services.stop()
        if done:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs of np-server and np-client kept in {tmp}", file=sys.stderr)
    summary = {w: summarize(r) for w, r in runs.items()}

    print(f"{args.clients} clients, {args.wrk} wrk x 1 thread x {args.connections} connections, "
          f"Connection: close, {BODY} B; {args.seconds} s after {args.warmup} s, median of "
          f"{args.repeats}; CPU % of one core (this machine: {os.cpu_count()} cores)")
    print_table(summary)
    for w in skipped:
        print(f"workers = {w} skipped: this np-server build has no --workers")
    if 1 in summary:
        w0 = summary[1]["cpu_pct"].get("w0", 0.0)
        print(f"server-bound (1 worker, w0 >= 95 % of a core): {'yes' if w0 >= 95 else 'no'} "
              f"(w0 {w0:.1f} %)")
    for w, s in summary.items():
        if w > 1:
            workers_cpu = {k: v for k, v in s["cpu_pct"].items() if k != "other"}
            total = sum(workers_cpu.values()) or 1
            print(f"{w} workers: share of the workers' CPU "
                  + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in workers_cpu.items()))
        for r in runs[w]:
            if "clients_gone" in r:
                print(f"{w} workers: clients gone during a run: {', '.join(r['clients_gone'])}")

    os.makedirs(os.path.join(ROOT, "bench/out"), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    base = summary.get(1, {}).get("req_s")
    with open(os.path.join(ROOT, "bench/out/workers.jsonl"), "a") as f:
        for w, s in summary.items():
            rec = {"time": stamp, "version": version(), "workers": w, "workers_flag": flag,
                   "clients": args.clients, "wrk": args.wrk, "connections": args.connections,
                   "body_bytes": BODY, "seconds": args.seconds, "warmup": args.warmup,
                   "repeats": args.repeats, "cpus": os.cpu_count(),
                   "server_cpus": args.server_cpus, "others_cpus": args.others_cpus, **s,
                   "ratio_to_1_worker": s["req_s"] / base if base else None, "runs": runs[w]}
            if w == 1:
                rec["server_bound"] = s["cpu_pct"].get("w0", 0.0) >= 95
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
