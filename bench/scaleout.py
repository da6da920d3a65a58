#!/usr/bin/env python3
"""
Scale-out: one publisher, 3 instances x N held streams on one channel, reached through the
Redis backplane and through ZeroMQ (a C{pushpin-tx-broker source} the instances SUBscribe
to), against one instance holding 3 x N streams. Every stream is checked for every message
exactly once and in order (L{fanout_load.check_orders}).

The publisher PUSHes the whole burst of M messages at once as C{J}+JSON frames: to the one
instance's PULL input (C{one}), to instance 0's PULL input (C{redis}: instance 0 publishes
to Redis, every instance delivers what Redis sends), or to the broker's PULL input
(C{zmq}: the broker sends to the three instances' SUB sockets). Before the burst, probe
messages are pushed until every stream has seen one (a ZeroMQ subscription or a Redis
SUBSCRIBE takes effect a moment after the stream is held); probes are not counted.

Printed per scenario: deliveries per second (all streams' messages over the time from the
first send to the last receipt), publish-to-receive latency p50/p99, CPU seconds per
delivery of the instances, of the backplane process (redis-server or the broker) and in
total, and the check's verdict. The instances (and Redis / the broker) run pinned to the
proxy core, the streams and the publisher (this process) on the load core: on a two-core
machine three instances share the one core the single instance has, so deliveries/s
compares what the same CPU delivers, not what three machines would; CPU per delivery is the
figure that carries over.

C{--pace R} sends the messages one at a time, R per second, instead of all at once: a burst
lets every instance write the whole burst to each stream in one write (the intake gathers a
reactor turn's items), so its CPU per delivery is the batched cost; paced, each message is
fanned out on its own, which is the per-delivery cost of a steady publisher.

Usage: python bench/scaleout.py [--connections 1000] [--messages 200] [--pace R] [--only one,redis,zmq]
                                [--unpinned] [--json FILE]
"""

from __future__ import annotations

import argparse
import array
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import fanout_load  # noqa: E402
import proxies  # noqa: E402

CHANNEL = "bench"
INSTANCES = 3
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class Side:
    """A helper process of a scenario (redis-server or the broker) whose CPU counts."""

    def __init__(self, name: str, proc: subprocess.Popen, workdir: Path | None = None) -> None:
        self.name = name
        self.proc = proc
        self.workdir = workdir

    def cpu(self) -> float:
        return common.tree_cpu(self.proc.pid)

    def stop(self) -> None:
        common.stop_process(self.proc)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis(cpus: set[int]) -> tuple[Side, int]:
    port = proxies.free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=common.preexec(cpus, 1 << 16))
    if not proxies.wait_port(port, time.monotonic() + 20):
        common.stop_process(proc)
        raise RuntimeError("redis-server did not start")
    return Side("redis-server", proc), port


def start_broker(cpus: set[int]) -> tuple[Side, str, str]:
    pull, xpub = proxies.free_port(), proxies.free_port()
    workdir = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(common.ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(workdir / "broker.log", "wb") as log:
        proc = common.spawn_python(["-m", "pushpin_tx.scripts.broker", "source", "--in", f"tcp://127.0.0.1:{pull}",
                                    "--out", f"tcp://127.0.0.1:{xpub}"], cpus=cpus, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while b"out bound to" not in (workdir / "broker.log").read_bytes() or b"in bound to" not in (workdir / "broker.log").read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            common.stop_process(proc)
            raise RuntimeError("broker did not start:\n" + (workdir / "broker.log").read_text(errors="replace"))
        time.sleep(0.05)  # a start-up poll of a log file, not a wait in a test
    return Side("pushpin-tx-broker", proc, workdir), f"tcp://127.0.0.1:{pull}", f"tcp://127.0.0.1:{xpub}"


def open_streams(port: int, count: int, errors: list[str]) -> list[fanout_load.Stream]:
    cfg = {"port": port, "connections": count, "channel": CHANNEL, "connect_window": 200}
    return fanout_load.open_streams(cfg, errors)


def read_into(ep: Any, by_fd: dict[int, fanout_load.Stream], lat: array.array, timeout: float) -> int:
    got = 0
    for fd, _ in ep.poll(timeout):
        st = by_fd[fd]
        try:
            data = st.sock.recv(fanout_load.RECV)
        except BlockingIOError:
            continue
        if not data:
            st.closed = True
            ep.unregister(fd)
            continue
        n = fanout_load.parse(st, data, time.time_ns(), lat)
        if n < 0:
            st.closed = True
            ep.unregister(fd)
        else:
            got += n
    return got


def probe(push: Any, streams: list[fanout_load.Stream], ep: Any, by_fd: dict[int, fanout_load.Stream],
          deadline_s: float = 60.0) -> float:
    """Push probe items (seq -1) until every stream got one; forget what they recorded. Seconds it took."""
    t0 = time.monotonic()
    lat = array.array("q")
    frame = b"J" + fanout_load.item_json(CHANNEL, -1, 0)
    while not all(-1 in st.seqs for st in streams):
        if time.monotonic() - t0 > deadline_s:
            raise RuntimeError(f"{sum(-1 not in st.seqs for st in streams)} stream(s) never got a probe")
        push.send(frame)
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            read_into(ep, by_fd, lat, 0.01)
    end = time.monotonic() + 0.3  # the probes still on their way
    while time.monotonic() < end:
        read_into(ep, by_fd, lat, 0.01)
    for st in streams:
        st.seqs = array.array("i", [s for s in st.seqs if s >= 0])
        assert not st.seqs, "a stream got a message before the burst"
    return time.monotonic() - t0


def run(scenario: str, connections: int, messages: int, cpus: set[int], pace: float = 0.0,
        log_level: int = 2) -> dict[str, Any]:
    """One scenario end to end; its figures."""
    import zmq

    instances: list[proxies.Proxy] = []
    side: Side | None = None
    streams: list[fanout_load.Stream] = []
    errors: list[str] = []
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.setsockopt(zmq.LINGER, 0)
    try:
        if scenario == "one":
            instances.append(proxies.start_pushpin_tx(["* test"], cpus=cpus, log_level=log_level))
            push.connect(instances[0].push_in_spec)
            per_instance = connections * INSTANCES
        elif scenario == "redis":
            side, port = start_redis(cpus)
            for _ in range(INSTANCES):
                instances.append(proxies.start_pushpin_tx(["* test"], cpus=cpus, log_level=log_level,
                                                          overrides={"backplane": f"redis://127.0.0.1:{port}/0"}))
            push.connect(instances[0].push_in_spec)
            per_instance = connections
        elif scenario == "zmq":
            side, pull, xpub = start_broker(cpus)
            for _ in range(INSTANCES):
                instances.append(proxies.start_pushpin_tx(["* test"], cpus=cpus, log_level=log_level, overrides={
                    "push_in_sub_specs": xpub, "push_in_sub_connect": "true"}))
            push.connect(pull)
            per_instance = connections
        else:
            raise ValueError(scenario)
        for instance in instances:
            streams += open_streams(instance.client_port, per_instance, errors)
        ep = select.epoll()
        by_fd = {st.sock.fileno(): st for st in streams}
        for fd, st in by_fd.items():
            st.sock.setblocking(False)
            ep.register(fd, select.EPOLLIN)
        sync_s = probe(push, streams, ep, by_fd)

        target = len(streams) * messages
        lat = array.array("q")
        sent, acked = [0] * messages, [0] * messages
        cpu0 = [i.cpu() for i in instances]
        side0 = side.cpu() if side is not None else 0.0
        own0 = common.own_cpu()
        t0 = time.monotonic()
        next_seq = 0

        def send_due() -> float:
            """Send what is due; the seconds until the next send (0.5 when all are sent)."""
            nonlocal next_seq
            while next_seq < messages and (not pace or t0 + next_seq / pace <= time.monotonic()):
                sent[next_seq] = acked[next_seq] = time.time_ns()
                push.send(b"J" + fanout_load.item_json(CHANNEL, next_seq, sent[next_seq]))
                next_seq += 1
            return 0.5 if next_seq >= messages else max(0.0, t0 + next_seq / pace - time.monotonic())

        delivered, last = 0, time.monotonic()
        while delivered < target:
            got = read_into(ep, by_fd, lat, send_due())
            if got:
                delivered += got
                last = time.monotonic()
            elif next_seq >= messages and time.monotonic() - last > 10:
                break
        elapsed = last - t0
        cpu_instances = sum(i.cpu() for i in instances) - sum(cpu0)
        cpu_side = (side.cpu() - side0) if side is not None else 0.0
        own = common.own_cpu() - own0
        orders: dict[bytes, int] = {}
        for st in streams:
            raw = st.seqs.tobytes()
            orders[raw] = orders.get(raw, 0) + 1
        problems = fanout_load.check_orders(orders, messages, sent, acked)
        if len(streams) != connections * INSTANCES:
            problems.insert(0, f"{len(streams)} of {connections * INSTANCES} streams opened: {errors[:3]}")
        lat_s = sorted(x / 1e9 for x in lat)
        return {
            "scenario": scenario, "pace": pace, "streams": len(streams), "instances": len(instances), "messages": messages,
            "delivered": delivered, "seconds": elapsed, "sync_s": sync_s,
            "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
            "expected": len(streams) * messages,
            "p50": common.percentile(lat_s, 50) if lat_s else None,
            "p99": common.percentile(lat_s, 99) if lat_s else None,
            "cpu_instances_per_delivery": cpu_instances / delivered if delivered else None,
            "cpu_side_per_delivery": cpu_side / delivered if delivered else None,
            "cpu_total_per_delivery": (cpu_instances + cpu_side) / delivered if delivered else None,
            "load_cpu": own, "problems": problems,
        }
    finally:
        for st in streams:
            try:
                st.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            st.sock.close()
        push.close()
        ctx.term()
        for instance in instances:
            instance.stop()
        if side is not None:
            side.stop()


LABELS = {"one": "1 instance x 3N streams", "redis": "3 instances x N, Redis", "zmq": "3 instances x N, ZMQ broker"}


def fmt_cpu(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e6:.2f} us"


def main() -> int:
    parser = argparse.ArgumentParser(description="one publisher, 3 instances x N streams via Redis and via ZeroMQ, "
                                                 "against one instance with 3N")
    parser.add_argument("--connections", type=int, default=1000, help="streams per instance (N)")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--only", default="one,redis,zmq")
    parser.add_argument("--pace", type=float, default=0.0,
                        help="publish N messages per second, one at a time (default 0: the whole burst at once)")
    parser.add_argument("--unpinned", action="store_true", help="let the instances use every core")
    parser.add_argument("--loglevel", type=int, default=2, help="the instances' log level")
    parser.add_argument("--targets", default="pushpin-tx",
                        help="accepted for run_all.py (only pushpin-tx runs here; the scenarios are --only)")
    parser.add_argument("--json", metavar="FILE", help="also write {'results': {scenario: figures}} (run_all.py's shape)")
    args = parser.parse_args()
    common.exit_on_sigterm()
    common.raise_nofile(1 << 20)
    cpus = common.ALL_CPUS if args.unpinned else common.PROXY_CPUS
    common.pin_self(common.LOAD_CPUS)
    print(common.machine_note(cpus))
    print()
    results = []
    for scenario in args.only.split(","):
        results.append(run(scenario, args.connections, args.messages, cpus, args.pace, args.loglevel))
    rows = []
    for r in results:
        rows.append([LABELS[r["scenario"]], r["streams"], f"{r['deliveries_per_s']:,.0f}", common.fmt_us(r["p50"]),
                     common.fmt_us(r["p99"]), fmt_cpu(r["cpu_instances_per_delivery"]),
                     fmt_cpu(r["cpu_side_per_delivery"]), fmt_cpu(r["cpu_total_per_delivery"]),
                     "ok" if not r["problems"] else "FAIL: " + "; ".join(r["problems"][:2])])
    how = f"{args.pace:g} messages/s" if args.pace else "burst"
    common.print_table(f"Scale-out: one publisher (ZMQ PUSH, {how}), {args.messages} messages, N={args.connections}",
                       ["scenario", "streams", "deliveries/s", "p50", "p99", "CPU/deliv instances",
                        "CPU/deliv redis|broker", "CPU/deliv total", "check"], rows)
    if args.json:  # run_all.py's figure names: rate, cpu_per_delivery, p99, expected/delivered (lost)
        out = {r["scenario"]: dict(r, rate=r["deliveries_per_s"], cpu_per_delivery=r["cpu_total_per_delivery"])
               for r in results}
        Path(args.json).write_text(json.dumps({"results": out}, indent=1))
    return 1 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
