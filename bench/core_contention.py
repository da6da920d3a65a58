#!/usr/bin/env python3
"""
How much a busy load core slows the proxy core: the same fixed piece of Python timed on the
proxy's CPU (L{common.PROXY_CPUS}) with the load's CPU (L{common.LOAD_CPUS}) idle, then with
it spinning, then with it sending and receiving on a socket pair (what a load generator does).

Why: every comparison in this directory runs the proxy on one core and the load generator on
the other, and reads the proxy's CPU per connection or per delivery. On a VM whose two vCPUs
share a physical core (SMT siblings the guest is not told about: C{lscpu} says one thread per
core), the load generator's own work slows the proxy's, so a figure moves with how busy the
load was, for both proxies; on 2026-12-02's VM a spinning load core made the proxy's Python
1.73x slower, and an hour later the idle reading was already that slow, from work outside
the guest (bench/README.md). Run it before reading a noisy table: an idle row far above the
machine's usual says the proxy core is shared with someone else just now.

The workload is pure Python (dict and string work, no system calls), repeated until each
sample takes about 0.2 s; the table gives the median of C{--samples} samples per condition.

Usage: python bench/core_contention.py [--samples 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/core_contention.py`)

#: what runs on the load core: nothing, a spin, a loopback socket pair's send and receive
LOADS = {
    "idle": None,
    "spinning": "while True:\n    pass\n",
    "socket ping-pong": ("import socket\na, b = socket.socketpair()\nwhile True:\n"
                         "    a.send(b'x' * 100)\n    b.recv(1000)\n"),
}


def workload() -> None:
    """A fixed piece of Python of the proxy's kind: small dicts, strings, attribute calls."""
    table: dict[str, list[str]] = {}
    for i in range(2000):
        key = "c%d" % i
        table.setdefault(key, []).append(key.upper())
        "".join((key, ": ", str(len(table[key])), "\r\n")).encode("latin-1")
    table.clear()


def sample(rounds: int) -> float:
    """Seconds of CPU for C{rounds} workloads."""
    start = time.process_time()
    for _ in range(rounds):
        workload()
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=7)
    args = parser.parse_args()
    common.pin_self(common.PROXY_CPUS)
    if common.PROXY_CPUS == common.LOAD_CPUS:
        print("only one core: the proxy and the load share it; nothing to compare")
        return 1
    rounds = 1
    while sample(rounds) < 0.2:
        rounds *= 2
    print(f"# {common.machine_note(common.PROXY_CPUS)}")
    print(f"# workload on CPU {sorted(common.PROXY_CPUS)}, {rounds} rounds a sample, "
          f"median of {args.samples} samples; the load core CPU {sorted(common.LOAD_CPUS)} as said")
    rows = []
    base = None
    for name, code in LOADS.items():
        other = None
        if code is not None:
            other = common.spawn_python(["-c", code], cpus=common.LOAD_CPUS, stdout=subprocess.DEVNULL)
            time.sleep(0.3)  # (it is running: a spin needs no readiness to wait for)
        try:
            median = statistics.median(sample(rounds) for _ in range(args.samples))
        finally:
            if other is not None:
                other.kill()
                other.wait()
        base = median if base is None else base
        rows.append([name, f"{1000 * median:.1f} ms", f"{median / base:.2f}x"])
    common.print_table("The same Python on the proxy core, by what the load core does",
                       ["load core", "workload", "vs idle"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
