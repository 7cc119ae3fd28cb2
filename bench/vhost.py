#!/usr/bin/env python3
"""HTTP through the vhost port (type = http, routed by Host) against np's plain TCP proxy to the same
nginx, haproxy doing the same Host routing in one hop, and nginx directly: wrk req/s with keep-alive
and with a new connection per request, as ratios in one run.

Not part of the test suite: numbers depend on the machine. Run with ./bench/run --vhost [--seconds
N --repeats N]; results are printed and appended to bench/out/vhost.jsonl."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from bench import (CLIENT, LOOP, ROOT, SERVER, Procs, free_port, median,  # noqa: E402
                   print_table, start_nginx, wait_port, wrk)

HOST = "web.example.com"


def np_paths(procs, target, tmp, vhost, *flags):
    """np-server and np-client with their defaults (TLS, mux) or flags; a TCP proxy (-R) or an HTTP
    proxy for HOST on the server's vhost_http_port."""
    ctl, pub = free_port(), free_port()
    state = os.path.join(tmp, "np-state")
    fp = subprocess.run([SERVER, "--tls-dir", state, "--fingerprint"], capture_output=True,
                        text=True, check=True).stdout.strip()
    srv = procs.start([SERVER, "--bind", f"{LOOP}:{ctl}", "--proxy-bind-addr", LOOP, "--token",
                       "bench", "--log-level", "warn", "--access-log", "false",
                       "--max-pending-per-proxy", "20000", "--max-pending", "20000", "--tls-dir",
                       state, *(["--vhost-http-port", str(pub)] if vhost else [])])
    wait_port(ctl)
    conf = os.path.join(tmp, f"client-{pub}.ini")
    with open(conf, "w") as f:
        f.write(f"[client]\nserver = {LOOP}:{ctl}\ntoken = bench\nlog_level = warn\n"
                f"server_fingerprint = {fp}\n")
        if vhost:
            f.write(f"[proxy web]\ntype = http\nlocal = {LOOP}:{target}\ncustom_domains = {HOST}\n")
        else:
            f.write(f"[proxy web]\nlocal = {LOOP}:{target}\nremote_port = {pub}\n")
    cl = procs.start([CLIENT, "-c", conf, *flags], stdout=subprocess.PIPE, text=True)
    cl.stdout.readline()  # "proxy web: public port N"
    return pub, [srv.pid, cl.pid]


def path_haproxy_host(procs, target, tmp):
    """haproxy in HTTP mode routing HOST to nginx (and anything else to a 404): the same job as the
    vhost, in one hop."""
    pub = free_port()
    cfg = os.path.join(tmp, f"haproxy-{pub}.cfg")
    with open(cfg, "w") as f:
        f.write(f"global\n  maxconn 9000\ndefaults\n  mode http\n  timeout connect 5s\n"
                f"  timeout client 1h\n  timeout server 1h\n  option http-keep-alive\n"
                f"frontend f\n  bind {LOOP}:{pub}\n"
                f"  use_backend web if {{ hdr(host) -i {HOST} }}\n"
                f"  http-request return status 404 if !{{ hdr(host) -i {HOST} }}\n"
                f"backend web\n  server s {LOOP}:{target}\n")
    p = procs.start(["haproxy", "-f", cfg])
    wait_port(pub)
    return pub, [p.pid]


PATHS = {
    "direct": lambda procs, t, tmp: (t, []),
    "haproxy Host": path_haproxy_host,
    "np tcp": lambda procs, t, tmp: np_paths(procs, t, tmp, False),
    "np vhost": lambda procs, t, tmp: np_paths(procs, t, tmp, True),
    "np tcp nomux": lambda procs, t, tmp: np_paths(procs, t, tmp, False, "--mux", "false"),
    "np vhost nomux": lambda procs, t, tmp: np_paths(procs, t, tmp, True, "--mux", "false"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=5, help="per wrk run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ",".join(PATHS))
    args = ap.parse_args()
    paths = args.paths.split(",")
    tmp = tempfile.mkdtemp(prefix="np-bench-vhost-")
    os.chmod(tmp, 0o755)
    procs, services = Procs(), Procs()
    figs = {name: {} for name in paths}
    try:
        nginx_port = start_nginx(services, tmp)
        for rep in range(args.repeats):
            for name in paths:
                fig = figs[name]
                port, pids = PATHS[name](procs, nginx_port, tmp)
                for label, close in (("keepalive", False), ("new-conn", True)):
                    rps, p50, p99, errs = wrk(port, args.seconds, close, host=HOST)
                    fig.setdefault(f"{label} req/s", []).append(rps)
                    fig.setdefault(f"{label} p99 ms", []).append(p99)
                    fig.setdefault("errors", []).append(errs)
                procs.stop()
            print(f"round {rep + 1} of {args.repeats} done", file=sys.stderr)
    finally:
        procs.stop()
        services.stop()
    results = {n: {k: median(v) for k, v in f.items()} for n, f in figs.items()}
    print_table(results, lambda k: not k.startswith("errors"))
    for a, b in (("np vhost", "np tcp"), ("np vhost nomux", "np tcp nomux"),
                 ("np vhost", "haproxy Host")):
        if a in results and b in results:
            print(f"{a} / {b}: keep-alive {results[a]['keepalive req/s'] / results[b]['keepalive req/s']:.2f}x, "
                  f"new-conn {results[a]['new-conn req/s'] / results[b]['new-conn req/s']:.2f}x")
    os.makedirs(os.path.join(ROOT, "bench/out"), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(os.path.join(ROOT, "bench/out/vhost.jsonl"), "a") as f:
        for n, r in results.items():
            f.write(json.dumps({"time": stamp, "path": n, **r}) + "\n")


if __name__ == "__main__":
    main()
