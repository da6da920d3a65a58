#!/usr/bin/env python3
"""
Connection set-up cost as the number already held grows: the proxy's CPU per new held stream
(or WebSocket) with 1,000, 5,000, 10,000 and 15,000 idle ones already held, each on its own
channel, side by side with Pushpin when it is installed.

At each level a probe load process (L{fanout_load}, which opens connections with one epoll on
raw sockets) opens C{--probe} more connections; the figure is the proxy tree's CPU over that
opening divided by the number opened, and the opening rate. Background load processes hold
the idle connections between levels (one per level, so that the level grows by adding, not
by reopening). Nothing is published: this measures accepting, routing, holding and
subscribing, and whether that grows with what is held (garbage collection over tracked
objects, per-connection tables). The CPU window runs C{--tail} seconds past the probe's last
opening, so that work the opening leaves for shortly after counts too; the "idle CPU" column
is the proxy's CPU share over the C{--settle} second before the probe.

Each level runs C{--probes} probes one after another (3 by default, each closing its
connections again) and reports their medians, each probe's figures beside them: on a 2-core
VM one probe's CPU per connection varies by a fifth from the next, so a growth or a ratio
from single probes reads that noise as a trend (bench/README.md, 2026-12-02).

Each load process connects from a loopback source address of its own (fanout_load's
C{source}): from 127.0.0.1 alone, connect() ran short of ephemeral ports past ~14,000 held and
its search for one set the pace (10x the load's CPU at 15,000; Pushpin's rate fell as much).

The default top level is 15,000, not the 20,000 of issue 14: this machine's hard limit on open
files (C{ulimit -Hn}) is 20,000 per process, and the proxy holds every level's connections
plus the probe's plus its own. A level that would not fit under the hard limit stops the run
with a message instead of failing half-way.

Usage: python bench/setup_cost.py [--mode stream|ws] [--levels 1000,5000,10000,15000] [--probe 1000] [--probes 3]
           [--targets pushpin-tx,pushpin] [--workers 1] [--unpinned] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/setup_cost.py`)
import proxies  # noqa: E402
from fanout import LOAD, warm_up  # noqa: E402

LABEL = {"pushpin-tx": "pushpin-tx", "pushpin": "Pushpin 1.36"}


def _load(proxy: proxies.Proxy, prefix: str, count: int, mode: str, source: str | None = None) -> common.Child:
    """
    A load process holding C{count} idle connections on channels C{<prefix><i>}, once it says
    ready; from the loopback address C{source} when given (fanout_load's C{source}: each load
    process its own, so that no one runs short of ephemeral ports).
    """
    cfg = {"source": source, "port": proxy.client_port, "control_port": proxy.control_port, "push_spec": proxy.push_in_spec,
           "channel": prefix, "many_channels": True, "sync": False, "batch": 100, "pace": None, "connections": count,
           "messages": 0, "input": "http", "publish_concurrency": 1, "connect_window": 50, "idle_timeout": 5.0,
           "mode": mode}
    return common.Child(f"load {prefix}", common.spawn_python([LOAD, json.dumps(cfg)], cpus=common.LOAD_CPUS,
                                                              nofile=count + 1000, stdin=subprocess.PIPE,
                                                              stdout=subprocess.PIPE))


def _probe(proxy: proxies.Proxy, args: argparse.Namespace, level: int, prefix: str, source: str,
           problems: list[str]) -> dict[str, Any]:
    """
    One probe at C{level} held: after C{--settle} seconds of nothing new, C{--probe} more
    connections opened (channels C{<prefix><i>}, from the loopback address C{source}); the
    proxy's CPU over that opening and C{--tail} seconds after it, per connection opened, and
    the opening rate. The probe's connections are closed again after: the level stays.
    """
    idle0 = proxy.cpu()
    time.sleep(args.settle)  # (also lets the close of the probe before this one finish)
    cpu0 = proxy.cpu()
    idle = (cpu0 - idle0) / args.settle  # its CPU with this many held and nothing new (the settle)
    probe = _load(proxy, prefix, args.probe, args.mode, source)
    ready = probe.read(timeout=300)
    # and what the opening leaves to do shortly after (pushpin-tx's freeze of the new
    # connections a second later, net/gcpolicy.py): part of their set-up cost too
    time.sleep(args.tail)
    cpu1 = proxy.cpu()
    load_cpu = common.tree_cpu(probe.pid)  # its whole life: start-up included, so an upper bound
    probe.stop()
    if ready["opened"] != args.probe:
        problems.append(f"level {level}: probe opened {ready['opened']} of {args.probe}: {ready['errors']}")
    opened = max(1, ready["opened"])
    return {"cpu_per_conn": (cpu1 - cpu0) / opened,
            "rate": ready["opened"] / ready["connect_s"] if ready["connect_s"] else 0.0,
            "proxy_cpu": cpu1 - cpu0, "wall": ready["connect_s"], "load_cpu": load_cpu, "idle_cpu": idle}


def _median_probe(level: int, probes: list[dict[str, Any]]) -> dict[str, Any]:
    """
    A level's figures from its probes: the median CPU per connection and the median rate (on
    this 2-core VM one probe varies by a fifth from the next, so a single probe's growth or
    ratio reads noise as a trend: bench/README.md), each probe's own figures kept beside them.
    The windows (proxy CPU, wall, load CPU) are the median-rate probe's: run_all's load share
    reads them for the rate it compares.
    """
    by_rate = sorted(probes, key=lambda p: p["rate"])
    middle = by_rate[(len(by_rate) - 1) // 2]
    return {"held": level, "cpu_per_conn": statistics.median(p["cpu_per_conn"] for p in probes),
            "rate": statistics.median(p["rate"] for p in probes),
            "proxy_cpu": middle["proxy_cpu"], "wall": middle["wall"], "load_cpu": middle["load_cpu"],
            "idle_cpu": statistics.median(p["idle_cpu"] for p in probes), "probes": probes}


def run_target(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every level against one proxy: per level, CPU per opened connection and the opening rate."""
    total = max(args.levels) + args.probe + 1000
    proxy = proxies.start_proxy(kind, ["* test"], log_level=args.loglevel, nofile=2 * total,
                                workers=args.workers, cpus=common.ALL_CPUS if args.unpinned else None)
    held: list[common.Child] = []
    levels = []
    problems: list[str] = []
    try:
        warm_up(proxy, args.mode)
        have = 0
        for n, level in enumerate(sorted(args.levels)):
            if level > have:
                bg = _load(proxy, f"h{n}_", level - have, args.mode, f"127.0.{n + 1}.1")
                held.append(bg)
                ready = bg.read(timeout=max(120.0, (level - have) / 100))
                if ready["opened"] != level - have:
                    problems.append(f"level {level}: only {ready['opened']} of {level - have} held: {ready['errors']}")
                have = level
            probes = [_probe(proxy, args, level, f"p{n}_{k}_", f"127.1.{n + 1}.{k + 1}", problems)
                      for k in range(args.probes)]
            levels.append(_median_probe(level, probes))
        if not proxy.alive():
            problems.append(f"{kind} exited during the run:\n{proxy.log_tail()}")
    finally:
        for child in held:
            child.stop()
        proxy.stop()
    first, last = levels[0]["cpu_per_conn"], levels[-1]["cpu_per_conn"]
    # run_all's load_share reads the first level's windows (the rate it compares is that level's)
    return {"kind": kind, "levels": levels, "problems": problems,
            "cpu_per_conn": first, "rate": levels[0]["rate"],
            "load_cpu": levels[0]["load_cpu"], "load_wall": levels[0]["wall"],
            "proxy_cpu": levels[0]["proxy_cpu"], "burst_wall": levels[0]["wall"],
            "growth": last / first if first else None}


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> int:
    """Print one row per target and level, and the ratios; the exit status."""
    rows = []
    for kind, r in results.items():
        for lv in r["levels"]:
            each = ", ".join(f"{1e6 * p['cpu_per_conn']:.0f} µs {p['rate']:,.0f}/s" for p in lv["probes"])
            rows.append([LABEL[kind], f"{lv['held']:,}", common.fmt_us(lv["cpu_per_conn"]), f"{lv['rate']:,.0f}",
                         f"{100 * lv['idle_cpu']:.1f}%", each])
    noun = "WebSocket" if args.mode == "ws" else "stream"
    common.print_table(f"Set-up cost of a held {noun} (proxy CPU over opening {args.probe:,} more / opened; "
                       f"medians of {args.probes} probes at each level)",
                       ["target", "already held", f"CPU per {noun}", "opened/s", "idle CPU", "each probe"], rows)
    growth = [[LABEL[k], f"{r['growth']:.2f}x" if r["growth"] else "-"] for k, r in results.items()]
    common.print_table(f"Growth: CPU per {noun} at {max(args.levels):,} held / at {min(args.levels):,} held",
                       ["target", "growth"], growth)
    status = 0
    for kind, r in results.items():
        for p in r["problems"]:
            print(f"FAIL {LABEL[kind]}: {p}")
            status = 1 if kind == "pushpin-tx" else status
    return status


def main() -> int:
    """Run every target, print the tables; the exit status (1 on a pushpin-tx failure)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["stream", "ws"], default="stream")
    parser.add_argument("--levels", default="1000,5000,10000,15000",
                        type=lambda s: [int(x) for x in s.split(",") if x.strip()])
    parser.add_argument("--probe", type=int, default=1000, help="connections opened by each probe")
    parser.add_argument("--probes", type=int, default=3,
                        help="probes at each level, one after another; a level's figures are their medians")
    # 5 s, not 1: what a level's opening leaves for the seconds after it (each new channel's
    # first-subscription update, a second later and rate limited to 1,000 holds a second, as in
    # Pushpin; the freeze of the new connections) must be over before the probe, or it lands
    # in the probe's window and reads as growth with the number held (h2's measurement: 1.00-1.17x
    # with 1 s, 0.97x with 4 s)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds between a level and its probe")
    parser.add_argument("--tail", type=float, default=1.5,
                        help="seconds after the probe opened that still count in its CPU")
    parser.add_argument("--targets", default="pushpin-tx,pushpin")
    parser.add_argument("--loglevel", type=int, default=2)
    common.add_proxy_options(parser)
    args = common.parse_proxy_args(parser)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and max(args.levels) + args.probe + 1000 > hard:
        parser.error(f"--levels up to {max(args.levels):,} plus --probe {args.probe:,} need more open files than "
                     f"this machine's hard limit ({hard:,}, ulimit -Hn)")
    if "pushpin" in targets and not proxies.pushpin_installed():
        print(f"note: {proxies.PUSHPIN_BIN} is not installed; skipping the Pushpin row")
        targets.remove("pushpin")
    common.pin_self(common.LOAD_CPUS)
    common.exit_on_sigterm()
    common.raise_nofile(2 * (max(args.levels) + args.probe) + 1000)
    print(f"# set-up cost: idle {args.mode}s held on their own channels at levels {args.levels}, "
          f"{args.probes} probes of {args.probe:,} more opened at each")
    proxy_cpus = common.ALL_CPUS if args.unpinned else common.PROXY_CPUS
    print(f"# {common.machine_note(proxy_cpus)}")
    print()
    results = {kind: run_target(kind, args) for kind in targets}
    status = report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps({"scenario": "setup_cost", "args": vars(args), "status": status,
                                               "machine": common.machine_note(proxy_cpus), "results": results},
                                              indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
