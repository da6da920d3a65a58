#!/usr/bin/env python3
"""
Proxied GET (no GRIP) at a fixed concurrency: requests/s, p50/p99 latency and CPU per
request, straight to the origin vs through pushpin-tx vs through Pushpin (when installed).

Three processes besides the proxy: a minimal asyncio origin answering a fixed 200 with
Content-Length, and an asyncio load generator holding C{--concurrency} keep-alive
connections, each sending its next request as soon as the previous answer is complete.
The process under test (the origin for the "direct" row, the proxy otherwise) runs alone
on one core; the load generator (and, when proxying, the origin) on the other. The load
generator reports its own CPU so that a saturated generator is visible.

C{--workers N} runs pushpin-tx with C{[runner] workers=N} (default 1: one process, like the
single-core comparison); C{--unpinned} lets the proxy run on every core; C{--json FILE}
writes the figures for L{run_all}.

Usage: python bench/proxy_get.py [--concurrency 50] [--seconds 10] [--warmup 2]
                                 [--targets direct,pushpin-tx,pushpin] [--loglevel 2]
                                 [--workers 1] [--unpinned] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/proxy_get.py`)
import proxies  # noqa: E402

BODY = b"hello world!\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


# --- origin (its own process) ---------------------------------------------------------------


class OriginProtocol(asyncio.Protocol):
    """Answers every request head (plus Content-Length body, if any) with RESPONSE; keep-alive."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        answers = 0
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                eol = head.find(b"\r\n", at + 2)
                length = int(head[at + 17:eol if eol >= 0 else len(head)])
            if len(buf) < end + 4 + length:
                break
            buf = buf[end + 4 + length:]
            answers += 1
        self.buf = buf
        if answers:
            assert self.transport is not None
            self.transport.write(RESPONSE * answers)


async def run_origin() -> None:
    """Serve C{OriginProtocol} on a free loopback port (printed as JSON) until SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(OriginProtocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"event": "listening", "port": port}), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


# --- load generator (its own process) -----------------------------------------------------------


class LoadState:
    """Shared counters of all load connections."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.measuring = False
        self.latencies: list[float] = []
        self.done = 0
        self.errors = 0
        self.closed = 0
        self.stopping = False


class LoadClient(asyncio.Protocol):
    """One keep-alive connection: request, read the answer (Content-Length framed), repeat."""

    def __init__(self, state: LoadState, on_lost: Any) -> None:
        self.state = state
        self.on_lost = on_lost
        self.buf = b""
        self.need: int | None = None
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.state.request)

    def data_received(self, data: bytes) -> None:
        state = self.state
        buf = self.buf + data if self.buf else data
        while True:
            if self.need is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = buf[:end]
                if head[9:12] != b"200":
                    state.errors += 1
                lower = head.lower()
                at = lower.find(b"\r\ncontent-length:")
                if at < 0:
                    # every answer here has a length; anything else is a broken relay
                    state.errors += 1
                    assert self.transport is not None
                    self.transport.abort()
                    return
                eol = lower.find(b"\r\n", at + 2)
                self.need = int(lower[at + 17:eol if eol >= 0 else len(lower)])
                buf = buf[end + 4:]
            if len(buf) < self.need:
                break
            buf = buf[self.need:]
            self.need = None
            if state.measuring:
                state.latencies.append(time.perf_counter() - self.sent_at)
                state.done += 1
            if not state.stopping:
                self.send()
        self.buf = buf

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.state.stopping:
            self.state.closed += 1
            self.on_lost()


async def run_load(port: int, concurrency: int, seconds: float, warmup: float) -> None:
    """C{concurrency} keep-alive clients for C{warmup} + C{seconds}; JSON events and the result on stdout."""
    loop = asyncio.get_running_loop()
    state = LoadState(b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    clients: list[LoadClient] = []

    def connect() -> None:
        async def go() -> None:
            try:
                _, client = await loop.create_connection(lambda: LoadClient(state, connect), "127.0.0.1", port)
                clients.append(client)  # type: ignore[arg-type]
            except OSError:
                state.errors += 1
                if not state.stopping:
                    await asyncio.sleep(0.1)
                    connect()

        loop.create_task(go())

    for _ in range(concurrency):
        connect()
    await asyncio.sleep(warmup)
    state.measuring = True
    cpu0, t0 = common.own_cpu(), time.perf_counter()
    print(json.dumps({"event": "measure_start"}), flush=True)
    await asyncio.sleep(seconds)
    state.measuring = False
    cpu1, t1 = common.own_cpu(), time.perf_counter()
    print(json.dumps({"event": "measure_end"}), flush=True)
    state.stopping = True
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    lat = sorted(state.latencies)
    wall = t1 - t0
    print(json.dumps({
        "event": "result",
        "requests": state.done,
        "wall": wall,
        "rps": state.done / wall,
        "p50": common.percentile(lat, 50),
        "p99": common.percentile(lat, 99),
        "errors": state.errors,
        "closed": state.closed,
        "load_cpu": cpu1 - cpu0,
    }), flush=True)


# --- orchestration --------------------------------------------------------------------------------


def measure(target: str, port: int, server_cpu: Any, origin: common.Child, args: argparse.Namespace) -> dict[str, Any]:
    """Run the load against 127.0.0.1:C{port}; C{server_cpu()} reads the CPU of what is under test."""
    load = common.Child("load", common.spawn_python(
        [__file__, "_load", str(port), str(args.concurrency), str(args.seconds), str(args.warmup)],
        cpus=common.LOAD_CPUS, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE))
    try:
        timeout = args.warmup + args.seconds + 30
        ev = load.read(timeout)
        assert ev["event"] == "measure_start", ev
        s0, o0, w0 = server_cpu(), common.tree_cpu(origin.pid), time.perf_counter()
        ev = load.read(timeout)
        assert ev["event"] == "measure_end", ev
        s1, o1, w1 = server_cpu(), common.tree_cpu(origin.pid), time.perf_counter()
        result = load.read(timeout)
        load.proc.wait(10)
    finally:
        load.stop()
    wall = w1 - w0
    result.update(target=target, server_cpu=s1 - s0, origin_cpu=o1 - o0, sample_wall=wall)
    result["cpu_per_req"] = (s1 - s0) / result["requests"] if result["requests"] else None
    return result


def main() -> int:
    """Run every target, print the tables; the exit status (1 on errors)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--targets", default="direct,pushpin-tx,pushpin")
    parser.add_argument("--loglevel", type=int, default=2, help="log_level of both proxies (2: access lines)")
    common.add_proxy_options(parser)
    args = common.parse_proxy_args(parser)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if "pushpin" in targets and not proxies.pushpin_installed():
        print(f"note: {proxies.PUSHPIN_BIN} is not installed; skipping the Pushpin row")
        targets.remove("pushpin")

    common.pin_self(common.LOAD_CPUS)
    common.exit_on_sigterm()
    proxy_cpus = common.ALL_CPUS if args.unpinned else common.PROXY_CPUS
    print(f"# proxy_get: {args.concurrency} keep-alive clients, {args.seconds:g} s measured after "
          f"{args.warmup:g} s warm-up, per target")
    print(f"# {common.machine_note(proxy_cpus)}")
    print(f"# pushpin-tx: workers={args.workers}" + ("; Pushpin: one runner as always" if "pushpin" in targets else ""))
    print()
    origin = common.Child("origin", common.spawn_python([__file__, "_origin"], cpus=common.LOAD_CPUS,
                                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE))
    results: dict[str, dict[str, Any]] = {}
    try:
        origin_port = origin.read(20)["port"]
        for target in targets:
            if target == "direct":
                # the origin is what is under test: give it the proxy's core
                os.sched_setaffinity(origin.pid, common.PROXY_CPUS)
                results[target] = measure(target, origin_port, lambda: common.tree_cpu(origin.pid), origin, args)
                os.sched_setaffinity(origin.pid, common.LOAD_CPUS)
                continue
            proxy = proxies.start_proxy(target, [f"* 127.0.0.1:{origin_port}"], log_level=args.loglevel,
                                        workers=args.workers, cpus=proxy_cpus)
            try:
                answer = proxies.wait_http_ok(proxy.client_port, "/bench", time.monotonic() + 20)
                if not answer.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{target}: GET /bench through the proxy: {answer[:200]!r}\n"
                                       f"{proxy.log_tail()}")
                results[target] = measure(target, proxy.client_port, proxy.cpu, origin, args)
                results[target]["rss"] = proxy.rss()
                results[target]["processes"] = len(proxy.pids())
                results[target]["listening"] = proxy.listening
                if not proxy.alive():
                    print(f"FAIL: {target} exited during the run:\n{proxy.log_tail()}")
                    results[target]["exited"] = True
            finally:
                proxy.stop()
    finally:
        origin.stop()

    label = {"direct": "direct to origin", "pushpin-tx": "pushpin-tx", "pushpin": "Pushpin 1.36"}
    rows = []
    for target, r in results.items():
        wall = r["wall"]
        rows.append([
            label[target], f"{r['rps']:,.0f}", common.fmt_us(r["p50"]), common.fmt_us(r["p99"]),
            common.fmt_us(r["cpu_per_req"]), f"{100 * r['server_cpu'] / r['sample_wall']:.0f}%",
            f"{100 * r['load_cpu'] / wall:.0f}%",
            "-" if target == "direct" else f"{100 * r['origin_cpu'] / r['sample_wall']:.0f}%",
            common.fmt_mb(r.get("rss")), f"{r['errors']}/{r['closed']}",
        ])
    common.print_table("Results (CPU/request: CPU of the process under test divided by requests completed)",
                       ["target", "req/s", "p50", "p99", "CPU/request", "server core", "load gen CPU",
                        "origin CPU", "server RSS", "errors/closed"], rows)
    ratio_rows = []
    pairs = [("pushpin-tx", "direct"), ("pushpin-tx", "pushpin"), ("pushpin", "direct")]
    for a, b in pairs:
        if a in results and b in results:
            ra, rb = results[a], results[b]
            ratio_rows.append([f"{label[a]} / {label[b]}", common.fmt_ratio(ra["rps"], rb["rps"]),
                               common.fmt_ratio(ra["p50"], rb["p50"]), common.fmt_ratio(ra["p99"], rb["p99"]),
                               common.fmt_ratio(ra["cpu_per_req"], rb["cpu_per_req"])])
    if ratio_rows:
        common.print_table("Ratios", ["ratio", "req/s", "p50", "p99", "CPU/request"], ratio_rows)
    status = 0
    for target, r in results.items():
        r["problems"] = []
        if r["load_cpu"] / r["wall"] > 0.9:
            print(f"NOTE: the load generator used {100 * r['load_cpu'] / r['wall']:.0f}% of its core for "
                  f"{label[target]}: it may be the bottleneck of that row, not the server.")
        if r["errors"] or r["closed"]:
            r["problems"].append(f"{r['errors']} bad answers or connect errors, {r['closed']} connections closed "
                                 f"by the server")
        if r.get("exited"):
            r["problems"].append("the proxy exited during the run")
        for problem in r["problems"]:
            print(f"FAIL: {label[target]}: {problem}")
            status = 1
    if args.json:
        Path(args.json).write_text(json.dumps({
            "scenario": "proxy_get", "args": vars(args), "machine": common.machine_note(proxy_cpus),
            "status": status, "results": results}, indent=1))
    return status


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_origin":
        asyncio.run(run_origin())
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        port, conc, secs, warm = sys.argv[2:6]
        asyncio.run(run_load(int(port), int(conc), float(secs), float(warm)))
    else:
        sys.exit(main())
