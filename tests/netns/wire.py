#!/usr/bin/env python3
"""A network link in user space: two TAP devices, frames copied between them with delay, jitter, loss
and reordering. It stands in for `tc netem`, which this project's kernels lack (CONFIG_NET_SCH_NETEM is
not set on the CI machines). The harness creates the link, then moves each TAP into its namespace; the
open descriptors stay attached across the move.

    wire.py TAP_A TAP_B [--delay MS] [--jitter MS] [--loss P] [--reorder P] [--seed N]

Each direction is delayed by delay +- jitter (uniform), a frame is lost with probability P, and with
probability --reorder a frame skips the delay (so it overtakes earlier ones), as netem's reorder does.
Prints "ready" once both devices exist; runs until killed. Counters go to stderr on SIGTERM."""

import argparse
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--delay", type=float, default=0.0, help="ms, each direction")
    ap.add_argument("--jitter", type=float, default=0.0, help="ms")
    ap.add_argument("--loss", type=float, default=0.0, help="probability per frame")
    ap.add_argument("--reorder", type=float, default=0.0, help="probability per frame")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rnd = random.Random(args.seed)
    fa, fb = open_tap(args.a), open_tap(args.b)
    peer = {fa: fb, fb: fa}
    queue = []  # (due, seq, out_fd, frame)
    seq = 0
    stats = {"frames": 0, "lost": 0, "reordered": 0}

    def report(*_):
        print(f"wire {args.a}<->{args.b}: {stats}", file=sys.stderr, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, report)
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                os.write(out, frame)
            except OSError:
                pass  # device down or full: the frame is lost, as on a real link
        timeout = max(0.0, queue[0][0] - now) if queue else None
        ready, _, _ = select.select([fa, fb], [], [], timeout)
        for fd in ready:
            for _ in range(64):  # drain a burst per wakeup
                try:
                    frame = os.read(fd, 65536)
                except BlockingIOError:
                    break
                stats["frames"] += 1
                if args.loss and rnd.random() < args.loss:
                    stats["lost"] += 1
                    continue
                delay = args.delay + (rnd.uniform(-args.jitter, args.jitter) if args.jitter else 0)
                if args.reorder and rnd.random() < args.reorder:
                    delay = 0
                    stats["reordered"] += 1
                seq += 1
                heapq.heappush(queue, (time.monotonic() + max(delay, 0) / 1000, seq, peer[fd], frame))


if __name__ == "__main__":
    main()
