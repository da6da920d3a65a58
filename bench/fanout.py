#!/usr/bin/env python3
"""
Fan-out: N held HTTP streams on one channel, M publishes sent in a burst, every subscriber
checked for every message exactly once and in order.

The proxy's route is C{* test}: its built-in test target answers C{/stream?channel=C} with
C{Grip-Hold: stream}, so no origin is involved. One load process (L{fanout_load}: raw sockets,
an epoll loop, minimal chunked parsing) opens the N streams, then publishes. C{--input http}
(default): C{POST /publish/} on the control port from C{--publish-concurrency} connections
at once, each sending its next item as soon as the previous one is acknowledged (Pushpin's
publish server takes no pipelined requests, and both servers close the connection after
each answer). C{--input zmq}: the whole burst at once as C{J}+JSON frames on a PUSH
socket connected to the proxy's C{push_in_spec} PULL socket. Each message carries its
sequence number and its send time (CLOCK_REALTIME ns; one machine, one clock).

C{--mode ws}: the same with N WebSocket clients on C{/ws?channel=C} of the same test target
(a WebSocket that receives the channel's publishes) and C{ws-message} publishes; the load
process speaks the WebSocket framing by hand on raw sockets. C{--mode woh}: the same clients,
proxied as WebSocket-over-HTTP (route C{over_http}) to L{woh_origin}, which subscribes each
connection when it opens: the origin sees only short POSTs of events.

Prints: connections established per second, delivered messages per second,
publish-to-receive latency p50/p99/max, proxy RSS per held connection (RSS after the N
connections are open minus before, divided by N), proxy CPU seconds per delivered message,
and a loud FAIL unless every subscriber got every message exactly once, all in the same
order, consistent with the order the publishes were acknowledged in. The same scenario
runs against Pushpin when it is installed, with ratios pushpin-tx / Pushpin.

C{--pace N}: the publishes are sent one at a time on a fixed schedule, N per second (default
100 messages); the key figure is then the latency of a publish that arrives alone.
C{--many-channels} (alias C{--channels-per-subscriber}): every subscriber on its own channel
C{c<i>}; C{--messages} rounds (default 30), each publishing one message to every channel in
C{POST /publish/} bodies of C{--batch} items (over C{--input zmq}: one item per message); the
stock message_rate/message_hwm are kept (unless C{--unlimited}), and every subscriber is
checked for every round exactly once, in order.

Below the results, where the latency goes: per publish the latency of its first and its last
subscriber (last minus first: how long its fan-out took). C{--rx-timestamps} has the load read
with C{recvmsg} and the kernel's receive time of each segment (C{SO_TIMESTAMPNS}; on loopback
taken inside the proxy's C{send}), which splits every latency into publish sent -> segment in
the client's socket (the proxy) and socket -> read (the load generator's own lag).

C{--workers N} runs pushpin-tx with C{[runner] workers=N} (default 1: one process);
C{--unpinned} lets the proxy run on every core; C{--json FILE} writes the figures and the
check's verdict for L{run_all}.

Usage: python bench/fanout.py [--mode stream|ws] [--connections 1000] [--messages 200] [--input http|zmq]
           [--publish-concurrency 20] [--pace N | --many-channels [--batch 100]]
           [--targets pushpin-tx,pushpin] [--workers 1] [--unpinned] [--json FILE] [--py-spy FILE]
           [--rx-timestamps]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/fanout.py`)
import proxies  # noqa: E402

OPENED = b"[stream opened]\n"
CHANNEL = "bench"
LOAD = str(Path(__file__).resolve().parent / "fanout_load.py")
WOH_ORIGIN = str(Path(__file__).resolve().parent / "woh_origin.py")
LABEL = {"pushpin-tx": "pushpin-tx", "pushpin": "Pushpin 1.36"}


def open_stream(port: int, channel: str, deadline: float) -> tuple[socket.socket, bytes]:
    """
    A held stream on C{channel}, retried until it opens: Pushpin answers 500 for a moment
    after start-up, until its processes have connected to each other.
    """
    while True:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 200"):
            while OPENED not in data:
                data += s.recv(65536)
            return s, data
        s.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream did not open: {data[:300]!r}")
        time.sleep(0.2)


def open_ws(port: int, channel: str, deadline: float) -> tuple[socket.socket, bytes]:
    """A WebSocket on the test target's C{/ws?channel=...}, retried until the upgrade succeeds."""
    while True:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /ws?channel=%s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  % channel.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"HTTP/1.1 101"):
            return s, data.partition(b"\r\n\r\n")[2]
        s.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"WebSocket did not open: {data[:300]!r}")
        time.sleep(0.2)


def warm_up(proxy: proxies.Proxy, mode: str = "stream") -> None:
    """
    One stream (or WebSocket) and one publish on another channel, so lazy imports and caches
    are not charged to N.
    """
    if mode == "ws":
        s, data = open_ws(proxy.client_port, "warmup", time.monotonic() + 20)
        fmt = {"ws-message": {"content": "warm"}}
    else:
        s, data = open_stream(proxy.client_port, "warmup", time.monotonic() + 20)
        fmt = {"http-stream": {"content": "warm\n"}}
    time.sleep(0.3)
    body = json.dumps({"items": [{"channel": "warmup", "formats": fmt}]}).encode()
    with socket.create_connection(("127.0.0.1", proxy.control_port), timeout=10) as p:
        p.sendall(b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        while p.recv(65536):
            pass
    while b"warm" not in data:
        data += s.recv(65536)
    s.close()
    time.sleep(0.5)


def start_py_spy(pid: int, out: str) -> subprocess.Popen | None:
    """C{py-spy record} of C{pid} into C{out} (raw collapsed stacks), on the load core."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("note: py-spy not found; no profile")
        return None
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "250", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: common.pin_self(common.LOAD_CPUS))
    time.sleep(1.0)  # py-spy attaches
    return proc


def stop_py_spy(proc: subprocess.Popen, out: str) -> None:
    """Stop py-spy; it writes its profile on SIGINT."""
    proc.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    print(f"py-spy profile of pushpin-tx during the burst (collapsed stacks): {out}")


def stock_limits(args: argparse.Namespace) -> bool:
    """
    Whether the stock message_rate/message_hwm stay (C{--stock-rate-limit}, and with
    C{--many-channels} unless C{--unlimited}).
    """
    return args.stock_rate_limit or (args.many_channels and not args.unlimited)


def run_target(kind: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """The whole scenario against one proxy; None when it cannot run (no ZMQ input)."""
    nofile = args.connections + 1000
    overrides = {} if stock_limits(args) else {"message_rate": "-1", "message_hwm": "-1"}
    routes, origin = ["* test"], None
    if args.mode == "woh":
        origin_port = proxies.free_port()
        origin = common.Child("woh origin", common.spawn_python([WOH_ORIGIN, str(origin_port)], cpus=common.LOAD_CPUS,
                                                                stdout=subprocess.PIPE))
        origin.read(timeout=30)
        routes = [f"* 127.0.0.1:{origin_port},over_http"]
    client_mode = "ws" if args.mode == "woh" else args.mode  # the same WebSocket clients either way
    try:
        proxy = proxies.start_proxy(kind, routes, log_level=args.loglevel, nofile=2 * nofile, overrides=overrides,
                                    workers=args.workers, cpus=common.ALL_CPUS if args.unpinned else None)
    except BaseException:
        if origin is not None:
            origin.stop()
        raise
    load = spy = None
    try:
        if args.input == "zmq" and proxy.push_in_spec is None:
            print(f"note: {kind} has no ZMQ PULL input (push_in_spec); skipped")
            return None
        try:
            warm_up(proxy, client_mode)
        except (OSError, RuntimeError) as e:
            raise RuntimeError(f"{kind}: warm-up {args.mode} or publish failed ({e}):\n{proxy.log_tail()}") from e
        rss0 = proxy.rss()
        cfg = {"port": proxy.client_port, "control_port": proxy.control_port, "push_spec": proxy.push_in_spec,
               "channel": "c" if args.many_channels else CHANNEL,
               "many_channels": args.many_channels, "batch": args.batch, "pace": args.pace, "connections": args.connections, "messages": args.messages, "input": args.input,
               "publish_concurrency": args.publish_concurrency, "connect_window": args.connect_window,
               "idle_timeout": args.idle_timeout, "mode": client_mode, "rx_timestamps": args.rx_timestamps}
        load = common.Child("load", common.spawn_python([LOAD, json.dumps(cfg)], cpus=common.LOAD_CPUS, nofile=nofile,
                                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE))
        ready = load.read(timeout=max(120.0, args.connections / 50))
        time.sleep(args.settle)
        rss1 = proxy.rss()
        if args.py_spy and kind == "pushpin-tx":
            spy = start_py_spy(proxy.main_pid(), args.py_spy)
        pids = proxy.pids()
        cpu0, wait0, wall0 = proxy.cpu(), common.tree_wait(proxy.pid, pids), time.monotonic()
        load.send("go")
        done = load.read(timeout=900)
        cpu1, wait1, wall1 = proxy.cpu(), common.tree_wait(proxy.pid, pids), time.monotonic()
        assert done["event"] == "burst_done", done
        result = load.read(timeout=300)
        rss2 = proxy.rss()
        load.proc.wait(30)
        if not proxy.alive():
            result["problems"].append(f"{kind} exited during the run:\n{proxy.log_tail()}")
    finally:
        if spy is not None:
            stop_py_spy(spy, args.py_spy)
        if load is not None:
            load.stop()
        proxy.stop()
        if origin is not None:
            origin.stop()
    noun = "WebSockets" if client_mode == "ws" else "streams"
    if ready["errors"] and client_mode == "ws":  # e.g. clients the sync publish never reached
        result["problems"].append(f"before the burst: {ready['errors']}")
    if result["opened"] != args.connections:
        result["problems"].insert(0, f"only {result['opened']} of {args.connections} {noun} opened: {ready['errors']}")
    if result["delivered"] != result["expected"]:
        result["problems"].insert(0, f"delivered {result['delivered']:,} messages, expected {result['expected']:,}")
    if result["closed_early"]:
        result["problems"].append(f"{result['closed_early']} connections closed by the server")
    if result["errors"]:
        result["problems"].append(f"client errors: {result['errors']}")
    result.update(kind=kind, workers=proxy.workers if kind == "pushpin-tx" else None, listening=proxy.listening,
                  rss_before=rss0, rss_held=rss1, rss_after=rss2, proxy_cpu=cpu1 - cpu0, proxy_wait=wait1 - wait0,
                  burst_wall=wall1 - wall0,
                  rss_per_conn=(rss1 - rss0) / max(1, ready["opened"]),
                  cpu_per_delivery=(cpu1 - cpu0) / result["delivered"] if result["delivered"] else None,
                  connect_rate=ready["opened"] / ready["connect_s"] if ready["connect_s"] else 0.0)
    return result


def latency_split(results: dict[str, dict[str, Any]]) -> None:
    """
    Where the latency goes, when the load measured it: per publish its first and last
    subscriber (medians and maxima over the publishes), and with C{--rx-timestamps} the
    kernel's receive time against the client's read.
    """
    rows = []
    for kind, r in results.items():
        pp = r.get("per_publish") or {}
        if not pp:
            continue
        k, lag = r.get("kernel"), r.get("read_lag")
        rows.append([LABEL[kind], common.fmt_us(pp["first_p50"]), common.fmt_us(pp["first_max"]),
                     common.fmt_us(pp["fanout_p50"]), common.fmt_us(pp["fanout_max"]),
                     common.fmt_us(pp["last_p50"]), common.fmt_us(pp["last_max"]),
                     *((common.fmt_us(k["p50"]), common.fmt_us(k["p99"]), common.fmt_us(lag["p50"]),
                        common.fmt_us(lag["p99"]), common.fmt_us(lag["max"])) if k and lag else ("-",) * 5),
                     common.fmt_us(r.get("proxy_wait")), common.fmt_us(r.get("load_wait"))])
    if rows:
        common.print_table(
            "Where the latency goes (per publish: its first subscriber, last minus first, its last subscriber, "
            "median / max over publishes; with --rx-timestamps: publish sent -> segment in the client's socket, and "
            "socket -> read by the client, over every delivery / read; waited: time the proxy tree and the load "
            "were ready to run but had no core, over the burst)",
            ["target", "first p50", "first max", "fan-out p50", "fan-out max", "last p50", "last max",
             "to socket p50", "to socket p99", "read lag p50", "read lag p99", "read lag max", "proxy waited",
             "load waited"], rows)


def report(results: dict[str, dict[str, Any]], lost_column: bool = False) -> int:
    """Print the tables and the verdicts; the exit status. C{lost_column}: add the messages not received."""
    rows = []
    for kind, r in results.items():
        lost = [f"{r['expected'] - r['delivered']:,}"] if lost_column else []
        rows.append([LABEL[kind], f"{r['delivered']:,}/{r['expected']:,}", *lost, f"{r['rate']:,.0f}",
                     common.fmt_us(r["p50"]), common.fmt_us(r["p99"]), common.fmt_us(r["max"]),
                     common.fmt_us(r["cpu_per_delivery"]), common.fmt_kb(r["rss_per_conn"]),
                     f"{r['connect_rate']:,.0f}", f"{r['publish_s']:.2f} s", f"{r.get('tail_s', 0.0):.2f} s",
                     f"{100 * r['proxy_cpu'] / r['burst_wall']:.0f}%" if r["burst_wall"] else "-",
                     f"{100 * r['load_cpu'] / r['load_wall']:.0f}%" if r["load_wall"] else "-",
                     "ok" if not r["problems"] else "FAIL"])
    common.print_table("Results (latency: publish sent -> subscriber read; CPU/delivery: proxy CPU during the burst "
                       "/ messages delivered)",
                       ["target", "delivered", *(["lost"] if lost_column else []), "deliveries/s", "p50", "p99", "max", "CPU/delivery",
                        "RSS/held conn", "conns/s", "publish time", "drain after", "proxy core", "load CPU", "exactly once, in order"],
                       rows)
    common.print_table("Proxy process tree",
                       ["target", "RSS before", "RSS with N held", "RSS after burst", "CPU during burst"],
                       [[LABEL[k], common.fmt_mb(r["rss_before"]), common.fmt_mb(r["rss_held"]),
                         common.fmt_mb(r["rss_after"]), f"{r['proxy_cpu']:.2f} s"] for k, r in results.items()])
    if "pushpin-tx" in results and "pushpin" in results:
        a, b = results["pushpin-tx"], results["pushpin"]
        common.print_table("Ratios pushpin-tx / Pushpin", ["ratio", "deliveries/s", "p50", "p99", "max",
                                                          "CPU/delivery", "RSS/held conn", "conns/s"],
                           [["pushpin-tx / Pushpin 1.36", common.fmt_ratio(a["rate"], b["rate"]),
                             common.fmt_ratio(a["p50"], b["p50"]), common.fmt_ratio(a["p99"], b["p99"]),
                             common.fmt_ratio(a["max"], b["max"]),
                             common.fmt_ratio(a["cpu_per_delivery"], b["cpu_per_delivery"]),
                             common.fmt_ratio(a["rss_per_conn"], b["rss_per_conn"]),
                             common.fmt_ratio(a["connect_rate"], b["connect_rate"])]])
    latency_split(results)
    status = 0
    for kind, r in results.items():
        proxy_busy = r["proxy_cpu"] / r["burst_wall"] if r["burst_wall"] else 1.0
        if r["load_wall"] > 0.5 and r["load_cpu"] / r["load_wall"] > 0.9 and proxy_busy < 0.8:
            print(f"NOTE: the load process used {100 * r['load_cpu'] / r['load_wall']:.0f}% of its core and the proxy "
                  f"only {100 * proxy_busy:.0f}% of its own for {LABEL[kind]}: deliveries/s and latency are limited "
                  f"by the client, not the proxy.")
        for problem in r["problems"]:
            print(f"!!!!! FAIL {LABEL[kind]}: {problem}")
            status = 1
    if status == 0:
        print("every subscriber got every message exactly once, in order, on every target" if lost_column else
              "every subscriber got every message exactly once, in the same order, on every target")
    return status


def main() -> int:
    """Run every target, print the tables; the exit status (1 on any FAIL)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["stream", "ws", "woh"], default="stream",
                        help="held HTTP streams (/stream) or WebSocket clients (/ws) on the test target, or "
                             "WebSocket clients proxied as WebSocket-over-HTTP to bench/woh_origin.py")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=None,
                        help="messages per subscriber (default 200; 100 with --pace; 30 rounds with --many-channels)")
    parser.add_argument("--pace", type=float, default=None, metavar="N",
                        help="publish one message at a time at N per second (each sent on its own schedule)")
    parser.add_argument("--many-channels", "--channels-per-subscriber", action="store_true",
                        help="every subscriber on its own channel c<i>; each round publishes one message to every "
                             "channel, --batch items per POST; stock message_rate/message_hwm")
    parser.add_argument("--batch", type=int, default=100, help="items per POST with --many-channels")
    parser.add_argument("--input", choices=["http", "zmq"], default="http",
                        help="publish over the HTTP control API or a ZMQ PUSH socket to push_in_spec")
    parser.add_argument("--publish-concurrency", type=int, default=20,
                        help="HTTP publish connections at once (1: strictly one after another)")
    parser.add_argument("--targets", default="pushpin-tx,pushpin")
    parser.add_argument("--loglevel", type=int, default=2, help="log_level of both proxies")
    parser.add_argument("--connect-window", type=int, default=50, help="connections being opened at once")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between the last open and the burst")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="give up after this long with no delivery")
    parser.add_argument("--stock-rate-limit", action="store_true",
                        help="keep the stock message_rate=2500/message_hwm=25000 (Pushpin then drops deliveries "
                             "past 25,000 queued per route); by default both are -1 (unlimited) in both configs")
    parser.add_argument("--unlimited", action="store_true",
                        help="message_rate/message_hwm -1 even with --many-channels (the publish-flood scenarios)")
    parser.add_argument("--py-spy", metavar="FILE", help="record a py-spy profile of pushpin-tx during the burst")
    parser.add_argument("--rx-timestamps", action="store_true",
                        help="the load reads with recvmsg and the kernel's receive time (SO_TIMESTAMPNS): splits each "
                             "latency into publish sent -> segment in the client's socket (the proxy's part) and "
                             "socket -> read (the client's part); costs the client ~1 us per read")
    common.add_proxy_options(parser)
    args = common.parse_proxy_args(parser)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.messages is None:
        args.messages = 30 if args.many_channels else 100 if args.pace else 200
    if args.pace and args.input != "http":
        parser.error("--pace publishes over HTTP only")
    if args.many_channels and args.input == "zmq":
        args.batch = 1  # one item per ZMQ message
    if args.many_channels and args.mode != "stream":
        parser.error("--many-channels is for held streams only (the WebSocket sync publish goes to one channel)")
    if args.pace and args.many_channels:
        parser.error("--pace and --many-channels are separate scenarios")
    if "pushpin" in targets and not proxies.pushpin_installed():
        print(f"note: {proxies.PUSHPIN_BIN} is not installed; skipping the Pushpin row")
        targets.remove("pushpin")

    common.pin_self(common.LOAD_CPUS)
    common.exit_on_sigterm()
    common.raise_nofile(2 * args.connections + 1000)
    how = (f"HTTP POST /publish/ ({args.publish_concurrency} at a time)" if args.input == "http"
           else "ZMQ PUSH (all at once)")
    if args.pace:
        how = f"HTTP POST /publish/, one at a time at {args.pace:g}/s"
    held = {"ws": "WebSocket clients", "woh": "WebSocket-over-HTTP clients"}.get(args.mode, "held streams")
    fmt = "http-stream" if args.mode == "stream" else "ws-message"
    if args.many_channels:
        per_round = -(-args.connections // args.batch)
        via = (f"{args.batch} items per HTTP POST /publish/ ({per_round} POSTs per round, {args.publish_concurrency} "
               f"at a time)" if args.input == "http" else "one item per ZMQ PUSH message, all at once")
        print(f"# fanout: {args.connections:,} {held}, each on its own channel; {args.messages} rounds of one {fmt} "
              f"message to every channel ({args.messages * args.connections:,} publishes), {via}")
    else:
        print(f"# fanout: {args.connections:,} {held} on one channel, {args.messages} {fmt} publishes over {how}")
    proxy_cpus = common.ALL_CPUS if args.unpinned else common.PROXY_CPUS
    print(f"# {common.machine_note(proxy_cpus)}")
    print("# message_rate/message_hwm: " + ("stock (2500/25000)" if stock_limits(args) else "-1/-1 (unlimited)")
          + f"; pushpin-tx workers={args.workers}")
    print()
    results = {}
    for kind in targets:
        r = run_target(kind, args)
        if r is not None:
            results[kind] = r
    status = report(results, lost_column=args.many_channels)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "scenario": "fanout", "args": vars(args), "machine": common.machine_note(proxy_cpus), "status": status,
            "results": results}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
