#!/usr/bin/env python3
"""
HTTP/2 against HTTP/1.1 for many streams (issue 19): the same held streams (route C{* test}:
the built-in test target holds C{/stream?channel=C}) and the same publishes, once as 1,000
HTTP/1.1 connections over TLS and once as 1,000 streams over 10 HTTP/2 connections (100 each,
h2's default concurrent-stream limit), each on a fresh proxy (one process) on its https port:

 - proxy memory per stream: the proxy's RSS with every stream open, less its RSS before;
 - proxy CPU per delivery (one published message written to one stream) and deliveries/s
   (wall clock from the first publish to the last byte received);
 - each message is an SSE event (C{data: <n>xxx...\\n\\n}, C{--size} bytes).

Every stream is checked to get exactly the expected bytes (HTTP/1.1: chunked framing; HTTP/2:
DATA frames, the bytes unframed). The HTTP/2 client is the h2 package on blocking ssl
sockets, acknowledging every DATA frame as a reading client does; the HTTP/1.1 one is
bench/tls_cost.py's. The load runs in this process, on the other CPU from the proxy's.

Usage: python bench/h2_streams.py [--streams 1000] [--connections 10] [--messages 200] [--size 100] [--batch 25]
"""

from __future__ import annotations

import argparse
import selectors
import socket
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/h2_streams.py`)
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
from proxies import free_port, start_pushpin_tx  # noqa: E402
from tls_cost import OPENED, open_streams, receive, write_identity  # noqa: E402

OPENED_BODY = OPENED.split(b"\r\n")[0]  # "[stream opened]\n", unframed over HTTP/2


class H2Client:
    """One HTTP/2 connection with C{count} held streams on C{channel}."""

    def __init__(self, port: int, tls: ssl.SSLContext, count: int, channel: str) -> None:
        raw = socket.create_connection(("127.0.0.1", port))
        self.sock = tls.wrap_socket(raw, server_hostname="localhost")
        if self.sock.selected_alpn_protocol() != "h2":
            raise RuntimeError(f"ALPN gave {self.sock.selected_alpn_protocol()!r}, not h2")
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window((1 << 30) - 65535)
        self.received: dict[int, int] = {}
        self.opened: set[int] = set()
        path = f"/stream?channel={channel}".encode()
        for _ in range(count):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, [(b":method", b"GET"), (b":path", path), (b":scheme", b"https"),
                                         (b":authority", b"localhost")], end_stream=True)
            self.received[sid] = -len(OPENED_BODY)
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def readable(self) -> None:
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise RuntimeError("an HTTP/2 connection was closed")
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    self.received[event.stream_id] += len(event.data)
                    if event.stream_id not in self.opened and self.received[event.stream_id] >= 0:
                        self.opened.add(event.stream_id)
                    if event.flow_controlled_length:
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    raise RuntimeError(f"stream {event.stream_id} ended")
            self.flush()
            if not self.sock.pending():
                return


def publish(control_port: int, channel: str, messages: int, size: int, batch: int) -> None:
    """C{messages} SSE events of C{size} bytes to C{channel}, C{batch} items per POST /publish/."""
    import json
    import urllib.request

    for start in range(0, messages, batch):
        items = [{"channel": channel, "formats": {"http-stream": {"content": f"data: {i:08d}".ljust(size - 2, "x") + "\n\n"}}}
                 for i in range(start, min(messages, start + batch))]
        body = json.dumps({"items": items}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{control_port}/publish/", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:
            answer.read()


def pump(clients: list[H2Client], done, deadline: float) -> None:
    sel = selectors.DefaultSelector()
    for client in clients:
        sel.register(client.sock, selectors.EVENT_READ, client)
    while not done() and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            key.data.readable()
    sel.close()
    if not done():
        raise RuntimeError("timed out")


def tls_client(alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    return ctx


def run(kind: str, args) -> dict:
    https = free_port()
    proxy = start_pushpin_tx(["* test"], overrides={"https_ports": f"127.0.0.1:{https}"}, workers=1)
    try:
        write_identity(proxy.workdir / "runner" / "certs", f"default_{https}")
        rss0 = proxy.rss()
        t0 = time.monotonic()
        if kind == "h2":
            per = args.streams // args.connections
            clients = [H2Client(https, tls_client(["h2"]), per, "bench") for _ in range(args.connections)]
            pump(clients, lambda: all(len(c.opened) == len(c.received) for c in clients), time.monotonic() + 120)
        else:
            streams = open_streams(https, args.streams, tls_client(["http/1.1"]), "bench", time.monotonic() + 120)
        t1 = time.monotonic()
        rss1 = proxy.rss()
        cpu1 = proxy.cpu()
        publish(proxy.control_port, "bench", args.messages, args.size, args.batch)
        if kind == "h2":
            want = args.messages * args.size
            pump(clients, lambda: all(all(n >= want for n in c.received.values()) for c in clients), time.monotonic() + 300)
            wrong = [n for c in clients for n in c.received.values() if n != want]
            if wrong:
                raise RuntimeError(f"FAIL: {len(wrong)} streams got the wrong byte count (want {want}, e.g. {wrong[:3]})")
        else:
            receive(streams, args.messages * (len(b"%x\r\n" % args.size) + args.size + 2), time.monotonic() + 300)
        t2 = time.monotonic()
        cpu2 = proxy.cpu()
        deliveries = args.streams * args.messages
        for sock in ([c.sock for c in clients] if kind == "h2" else [s.sock for s in streams]):
            sock.close()
        return {"open_s": t1 - t0, "rss_per_stream": (rss1 - rss0) / args.streams,
                "cpu_per_delivery_us": (cpu2 - cpu1) / deliveries * 1e6, "deliveries_per_s": deliveries / (t2 - t1)}
    finally:
        proxy.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10, help="HTTP/2 connections the streams share")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=100, help="bytes per published message")
    parser.add_argument("--batch", type=int, default=25, help="items per POST /publish/")
    args = parser.parse_args()
    common.raise_nofile(4 * args.streams + 100)
    h1 = run("h1", args)
    h2_ = run("h2", args)
    rows = [[name, f"{r['open_s']:.2f} s", f"{r['rss_per_stream'] / 1024:.1f} KiB", f"{r['cpu_per_delivery_us']:.2f} us",
             f"{r['deliveries_per_s']:,.0f}"]
            for name, r in ((f"HTTP/1.1: {args.streams} TLS connections", h1),
                            (f"HTTP/2: {args.streams} streams on {args.connections} connections", h2_))]
    def ratio(key: str) -> str:
        return f"{h2_[key] / h1[key]:.2f}x" if h1[key] else "n/a"

    rows.append(["HTTP/2 / HTTP/1.1", *(ratio(key) for key in ("open_s", "rss_per_stream", "cpu_per_delivery_us", "deliveries_per_s"))])
    common.print_table(
        f"SSE streams over HTTP/2 vs HTTP/1.1: {args.streams} streams x {args.messages} publishes of {args.size} B ({common.machine_note()})",
        ["clients", "open all", "proxy memory / stream", "proxy CPU / delivery", "deliveries/s"], rows)


if __name__ == "__main__":
    main()
