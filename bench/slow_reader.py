#!/usr/bin/env python3
"""
A large response relayed to a slow reader: the proxy's memory must stay flat.

An asyncio origin (its own process) answers C{GET /big} with a 200 MB body (Content-Length;
every 256 KB block starts with its index, so reordering shows) and honours TCP flow control.
A client process reads it through the proxy slowly: 1 MB every 50 ms, with two pauses of a
few seconds. Meanwhile the proxy's RSS is sampled every 50 ms. Printed: RSS at the start,
its maximum and at the end, bytes received, and whether they are the right bytes (SHA-256).

Exits non-zero if, for pushpin-tx, max - start RSS exceeds 16 MB, or the byte count or
content is wrong. C{--targets pushpin-tx,pushpin} runs the same scenario against Pushpin
(when installed) for reference; it is not in the default run because Pushpin relays to
this reader at about 2 MB/s, which takes about 90 s.

Usage: python bench/slow_reader.py [--size-mb 200] [--read-mb 1] [--interval 0.05] [--pause 3]
                                   [--targets pushpin-tx[,pushpin]] [--limit-mb 16]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/slow_reader.py`)
import proxies  # noqa: E402

BLOCK = 256 * 1024
_FILL = bytes(range(256)) * (BLOCK // 256)
MB = 1024 * 1024
LABEL = {"pushpin-tx": "pushpin-tx", "pushpin": "Pushpin 1.36"}


def block(i: int, size: int) -> bytes:
    """Block C{i} of a body of C{size} bytes (the last one may be short)."""
    data = i.to_bytes(8, "big") + _FILL[8:]
    return data[:max(0, min(BLOCK, size - i * BLOCK))]


def expected_digest(size: int) -> str:
    """SHA-256 of the whole body the origin sends."""
    h = hashlib.sha256()
    for i in range((size + BLOCK - 1) // BLOCK):
        h.update(block(i, size))
    return h.hexdigest()


# --- origin (its own process) ---------------------------------------------------------------


class BigOrigin(asyncio.Protocol):
    """C{GET /big}: C{size} bytes with Content-Length, written only while the socket drains."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.buf = b""
        self.next_block = 0
        self.paused = False
        self.sending = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            assert self.transport is not None
            if head.startswith(b"GET /big "):
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                                     b"Content-Length: %d\r\n\r\n" % self.size)
                self.next_block = 0
                self.sending = True
                self.pump()
            else:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n")

    def pump(self) -> None:
        assert self.transport is not None
        while self.sending and not self.paused:
            data = block(self.next_block, self.size)
            if not data:
                self.sending = False
                break
            self.next_block += 1
            self.transport.write(data)  # may call pause_writing() at once

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self.pump()


async def run_origin(size: int) -> None:
    """Serve C{BigOrigin} on a free loopback port (printed as JSON) until SIGTERM."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: BigOrigin(size), "127.0.0.1", 0)
    print(json.dumps({"event": "listening", "port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# --- slow client (its own process) --------------------------------------------------------------


def run_client(cfg: dict[str, Any]) -> None:
    """Read the body at C{read_mb} per C{interval}, pausing C{pause} s at 25 % and 75 %; print what arrived."""
    size, step = cfg["size"], int(cfg["read_mb"] * MB)
    pauses = [size // 4, 3 * size // 4]
    s = socket.create_connection(("127.0.0.1", cfg["port"]), timeout=60)
    s.sendall(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        data = s.recv(65536)
        if not data:
            break
        head += data
    head, _, rest = head.partition(b"\r\n\r\n")
    chunked = b"transfer-encoding: chunked" in head.lower()
    decoder = common.ChunkedDecoder() if chunked else None
    h = hashlib.sha256()
    got = 0

    def take(data: bytes) -> None:
        nonlocal got
        parts = decoder.feed(data) if decoder is not None else [data]
        for part in parts:
            h.update(part)
            got += len(part)

    take(rest)
    t0 = time.monotonic()
    buf = bytearray(step)
    view = memoryview(buf)
    end_reason = "complete"

    def finished() -> bool:
        return decoder.done if decoder is not None else got >= size

    while not finished():
        # one step: up to `step` bytes (less at the very end), then sleep
        n = 0
        want = step if decoder is not None else min(step, size - got)
        while n < want and not finished():
            try:
                k = s.recv_into(view[n:want])
            except OSError as e:
                end_reason = f"error: {e}"
                break
            if k == 0:
                end_reason = "closed by the server early"
                break
            take(bytes(view[n:n + k]))
            n += k
        if end_reason != "complete":
            break
        if pauses and got >= pauses[0]:
            pauses.pop(0)
            time.sleep(cfg["pause"])
        else:
            time.sleep(cfg["interval"])
    s.close()
    print(json.dumps({"event": "result", "head": head.decode("latin-1"), "bytes": got, "digest": h.hexdigest(),
                      "seconds": time.monotonic() - t0, "end": end_reason}), flush=True)


# --- orchestration -------------------------------------------------------------------------------


def run_target(kind: str, origin_port: int, args: argparse.Namespace) -> dict[str, Any]:
    """The slow read through one proxy, with its RSS sampled throughout."""
    proxy = proxies.start_proxy(kind, [f"* 127.0.0.1:{origin_port}"], log_level=args.loglevel)
    client = None
    try:
        answer = proxies.wait_http_ok(proxy.client_port, "/small", time.monotonic() + 20)  # also a warm-up
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{kind}: GET /small through the proxy: {answer[:200]!r}")
        time.sleep(0.5)
        rss_start = proxy.rss()
        samples = [rss_start]
        cfg = {"port": proxy.client_port, "size": args.size_mb * MB, "read_mb": args.read_mb,
               "interval": args.interval, "pause": args.pause}
        client = common.Child("client", common.spawn_python([__file__, "_client", json.dumps(cfg)], cpus=common.LOAD_CPUS,
                                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE))
        result = None
        limit = time.monotonic() + 600
        assert client.proc.stdout is not None
        while result is None and time.monotonic() < limit:
            samples.append(proxy.rss())
            try:
                result = client.read(timeout=args.sample)
            except RuntimeError as e:
                if "no answer" not in str(e):
                    raise
        time.sleep(0.5)
        rss_end = proxy.rss()
        alive = proxy.alive()
    finally:
        if client is not None:
            client.stop()
        proxy.stop()
    if result is None:
        raise RuntimeError(f"{kind}: the client did not finish in time")
    result.update(kind=kind, rss_start=rss_start, rss_max=max(samples), rss_end=rss_end, samples=len(samples),
                  alive=alive)
    return result


def main() -> int:
    """Run every target, print the table; the exit status (1 if pushpin-tx fails)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--read-mb", type=float, default=1.0, help="MB read per step")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between steps")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds of each of the two pauses")
    parser.add_argument("--sample", type=float, default=0.05, help="RSS sampling interval")
    parser.add_argument("--limit-mb", type=float, default=16.0, help="allowed RSS growth of pushpin-tx")
    parser.add_argument("--targets", default="pushpin-tx",
                        help="add ',pushpin' for Pushpin as a reference (its relay to a slow reader is slow: ~90 s)")
    parser.add_argument("--loglevel", type=int, default=2)
    args = parser.parse_args()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if "pushpin" in targets and not proxies.pushpin_installed():
        print(f"note: {proxies.PUSHPIN_BIN} is not installed; skipping the Pushpin row")
        targets.remove("pushpin")

    common.pin_self(common.LOAD_CPUS)
    common.exit_on_sigterm()
    size = args.size_mb * MB
    print(f"# slow_reader: {args.size_mb} MB body, client reads {args.read_mb:g} MB every {args.interval * 1000:g} ms "
          f"and pauses {args.pause:g} s at 25 % and 75 %; proxy RSS sampled every {args.sample * 1000:g} ms")
    print(f"# {common.machine_note()}")
    print()
    digest = expected_digest(size)
    origin = common.Child("origin", common.spawn_python([__file__, "_origin", str(size)], cpus=common.LOAD_CPUS,
                                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE))
    results = []
    try:
        origin_port = origin.read(20)["port"]
        for kind in targets:
            results.append(run_target(kind, origin_port, args))
    finally:
        origin.stop()

    status = 0
    rows = []
    for r in results:
        growth = r["rss_max"] - r["rss_start"]
        problems = []
        if r["bytes"] != size:
            problems.append(f"received {r['bytes']:,} bytes, expected {size:,} ({r['end']})")
        elif r["digest"] != digest:
            problems.append("the bytes differ from what the origin sent")
        if not r["head"].startswith("HTTP/1.1 200"):
            problems.append(f"response head {r['head'][:200]!r}")
        if growth > args.limit_mb * MB:
            problems.append(f"RSS grew by {growth / MB:.1f} MB (limit {args.limit_mb:g} MB)")
        if not r["alive"]:
            problems.append("the proxy exited")
        verdict = "ok" if not problems else "FAIL"
        if r["kind"] != "pushpin-tx" and problems:
            verdict = "over (reference only)"
        rows.append([LABEL[r["kind"]], f"{r['bytes']:,}", "yes" if r["digest"] == digest else "NO",
                     f"{r['seconds']:.1f} s", common.fmt_mb(r["rss_start"]), common.fmt_mb(r["rss_max"]),
                     common.fmt_mb(r["rss_end"]), common.fmt_mb(growth), verdict])
        for p in problems:
            if r["kind"] == "pushpin-tx":
                print(f"!!!!! FAIL pushpin-tx: {p}")
                status = 1
            else:
                print(f"note: {LABEL[r['kind']]} (reference, not a failure): {p}")
    common.print_table("Results (RSS of the whole proxy process tree)",
                       ["target", "bytes received", "bytes correct", "transfer", "RSS start", "RSS max", "RSS end",
                        "max - start", f"verdict (limit {args.limit_mb:g} MB)"], rows)
    return status


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_origin":
        asyncio.run(run_origin(int(sys.argv[2])))
    elif len(sys.argv) > 2 and sys.argv[1] == "_client":
        run_client(json.loads(sys.argv[2]))
    else:
        sys.exit(main())
