#!/usr/bin/env python3
"""UDP benchmark: iperf3 -u at given rates through the direct path, np's UDP proxies (each carrier
and mode) and socat as a one-hop UDP relay, on loopback, in one run. Prints received Mbit/s,
packets per second, loss and jitter (medians) with ratios to direct, and appends JSON lines to
bench/out/udp.jsonl. ssh -R forwards TCP only, so it has no UDP row.

iperf3 -u keeps a TCP control connection beside its datagrams on the same port number, so np
forwards both: -R and -U with one remote port.

Not part of the test suite. Run with ./bench/run --udp [options]."""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (CLIENT, LOOP, ROOT, SERVER, Procs, cpu_seconds, free_port,  # noqa: E402
                   print_table, wait_port)


def path_direct(procs, target, tmp, flags):
    return target, []


def path_np(procs, target, tmp, flags):
    ctl, pub = free_port(), free_port()
    if "--insecure" in flags:
        server_flags, client_flags = ["--insecure"], list(flags)
    else:
        state = os.path.join(tmp, "np-state")
        fp = subprocess.run([SERVER, "--tls-dir", state, "--fingerprint"], capture_output=True,
                            text=True, check=True).stdout.strip()
        server_flags, client_flags = ["--tls-dir", state], [*flags, "--server-fingerprint", fp]
    srv = procs.start([SERVER, "--bind", f"{LOOP}:{ctl}", "--proxy-bind-addr", LOOP, "--token",
                       "bench", "--log-level", "warn", *server_flags])
    wait_port(ctl)
    cl = procs.start([CLIENT, "--server", f"{LOOP}:{ctl}", "--token", "bench", "--log-level",
                      "warn", *client_flags, "-R", f"{LOOP}:{pub}:{LOOP}:{target}", "-U",
                      f"{LOOP}:{pub}:{LOOP}:{target}"], stdout=subprocess.PIPE, text=True)
    cl.stdout.readline()
    cl.stdout.readline()  # both proxies are up
    time.sleep(0.5)  # and the datagram path has answered its first probe (it takes milliseconds)
    return pub, [srv.pid, cl.pid]


def path_socat(procs, target, tmp, flags):
    pub = free_port()
    procs.start(["socat", f"TCP-LISTEN:{pub},bind={LOOP},fork,reuseaddr", f"TCP:{LOOP}:{target}"])
    procs.start(["socat", "-T", "10", "-b", "65536", f"UDP4-LISTEN:{pub},bind={LOOP},fork,reuseaddr",
                 f"UDP4:{LOOP}:{target}"])
    wait_port(pub)
    return pub, []


PATHS = {
    "direct": (path_direct, []),
    # np as installed: TLS, multiplexed, the datagram path for UDP
    "np datagram": (path_np, []),
    "np datagram plain": (path_np, ["--insecure"]),
    # the stream carrier (datagrams inside the tunnel): multiplexed, and a TLS connection per flow
    "np stream": (path_np, ["--udp-datagram-path", "false"]),
    "np stream nomux": (path_np, ["--udp-datagram-path", "false", "--mux", "false"]),
    "socat": (path_socat, []),
}


def iperf_udp(port, seconds, rate, length, reverse):
    args = ["iperf3", "-u", "-c", LOOP, "-p", str(port), "-t", str(seconds), "-b", rate, "-l",
            str(length), "-J"]
    if reverse:
        args.append("-R")
    for attempt in range(5):
        r = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
        try:
            j = json.loads(r.stdout)
        except json.JSONDecodeError:
            j = {"error": r.stderr.strip() or "no output"}
        if "error" not in j:
            s = j["end"]["sum"]
            return {"Mbit/s": s["bits_per_second"] * (1 - s["lost_percent"] / 100) / 1e6,
                    "pps": (s["packets"] - s["lost_packets"]) / s["seconds"],
                    "loss %": s["lost_percent"], "jitter ms": s["jitter_ms"]}
        print(f"iperf3 -u on port {port}: {j['error']}; retrying", file=sys.stderr)
        time.sleep(1)  # iperf3 -s turns a client away while it still tears the last test down
    raise RuntimeError(f"iperf3 -u failed on port {port}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rates", default="100M,500M,1G", help="iperf3 -b values, comma-separated")
    ap.add_argument("--length", type=int, default=1400, help="datagram payload bytes")
    ap.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ",".join(PATHS))
    args = ap.parse_args()
    paths = args.paths.split(",")
    rates = args.rates.split(",")

    import tempfile
    tmp = tempfile.mkdtemp(prefix="np-bench-udp-")
    procs, services = Procs(), Procs()
    figs = {p: {} for p in paths}
    try:
        iport = free_port()
        services.start(["iperf3", "-s", "-B", LOOP, "-p", str(iport)])
        wait_port(iport)
        for rep in range(args.repeats):
            for name in paths:
                fn, flags = PATHS[name]
                pub, pids = fn(procs, iport, tmp, flags)
                for rate in rates:
                    for rev in (False, True):
                        label = f"{rate} {'down' if rev else 'up'}"
                        cpu0 = cpu_seconds(pids) if pids else 0
                        r = iperf_udp(pub, args.seconds, rate, args.length, rev)
                        for k, v in r.items():
                            figs[name].setdefault(f"{label} {k}", []).append(v)
                        if pids:
                            figs[name].setdefault(f"{label} cpu s", []).append(
                                cpu_seconds(pids) - cpu0)
                procs.stop()
            print(f"round {rep + 1} of {args.repeats} done", file=sys.stderr)
    finally:
        procs.stop()
        services.stop()

    results = {n: {k: statistics.median(v) for k, v in figs[n].items()} for n in paths}
    print_table(results, lambda k: k.endswith(("Mbit/s", "pps")), col=22)
    os.makedirs(os.path.join(ROOT, "bench/out"), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with open(os.path.join(ROOT, "bench/out/udp.jsonl"), "a") as f:
        for n, r in results.items():
            f.write(json.dumps({"time": stamp, "path": n, "length": args.length, **r}) + "\n")


if __name__ == "__main__":
    main()
