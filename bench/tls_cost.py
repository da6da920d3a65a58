#!/usr/bin/env python3
"""
What TLS costs pushpin-tx: the same held streams and the same publishes, once on the plain
http port and once on an https port of the same proxy (one process, route C{* test}: the
built-in test target holds C{/stream?channel=C}), measuring the proxy's CPU seconds:

 - per connection established (TCP accept + HTTP request + the hold; over TLS, plus the
   handshake: ECDHE P-256 with an EC P-256 certificate, TLS 1.3 as the client offers);
 - per delivered message (one published chunk written to one stream; over TLS, encrypted
   per connection, where the plain port writes the same bytes straight to the socket).

The load is this process: Python's ssl module on non-blocking sockets with one selector.
Every stream is checked to get every message (exactly the expected bytes). The
certificate is made on the spot (cryptography) in the proxy's C{runner/certs}.

Usage: python bench/tls_cost.py [--connections 500] [--messages 100] [--size 100] [--batch 20]
"""

from __future__ import annotations

import argparse
import datetime
import json
import selectors
import socket
import ssl
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (a script directory, run as `python bench/tls_cost.py`)
from proxies import free_port, start_pushpin_tx  # noqa: E402

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

OPENED = b"[stream opened]\n\r\n"


def write_identity(certs: Path, name: str) -> None:
    """A self-signed EC P-256 certificate for localhost as identity C{name} (C{name.crt}, C{name.key})."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7)).sign(key, hashes.SHA256()))
    certs.mkdir(parents=True, exist_ok=True)
    (certs / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (certs / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))


class Stream:
    """One held stream: its socket (TLS or not), what it has received, and its state."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.after_open = 0  # bytes received after the stream's initial body
        self.opened = False
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.request_sent = False


def open_streams(port: int, count: int, tls: ssl.SSLContext | None, channel: str, deadline: float) -> list[Stream]:
    """Open C{count} streams on C{channel}; returns when each has its initial body."""
    sel = selectors.DefaultSelector()
    streams = []
    request = f"GET /stream?channel={channel} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port))
        raw.setblocking(False)
        sock = tls.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False) if tls else raw
        stream = Stream(sock)
        streams.append(stream)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, stream)
    waiting = count
    while waiting and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            stream = key.data
            try:
                if stream.handshaking:
                    stream.sock.do_handshake()  # type: ignore[attr-defined]
                    stream.handshaking = False
                if not stream.request_sent:
                    stream.sock.sendall(request)
                    stream.request_sent = True
                    sel.modify(stream.sock, selectors.EVENT_READ, stream)
                chunk = stream.sock.recv(65536)
                stream.data += chunk
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                continue
            if not stream.opened and OPENED in stream.data:
                stream.opened = True
                stream.after_open = len(stream.data) - stream.data.index(OPENED) - len(OPENED)
                waiting -= 1
    sel.close()
    if waiting:
        raise RuntimeError(f"{waiting} of {count} streams did not open in time")
    return streams


def receive(streams: list[Stream], want: int, deadline: float) -> None:
    """Read every stream until it has C{want} bytes after its initial body; raise if one is short."""
    sel = selectors.DefaultSelector()
    for stream in streams:
        if stream.after_open < want:
            sel.register(stream.sock, selectors.EVENT_READ, stream)
    left = len(sel.get_map())
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            stream = key.data
            while True:
                try:
                    chunk = stream.sock.recv(262144)
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not chunk:
                    raise RuntimeError("a stream was closed")
                stream.after_open += len(chunk)
                pending = stream.sock.pending() if isinstance(stream.sock, ssl.SSLSocket) else 0
                if not pending:
                    break
            if stream.after_open >= want:
                sel.unregister(stream.sock)
                left -= 1
    sel.close()
    short = [s.after_open for s in streams if s.after_open != want]
    if short:
        raise RuntimeError(f"FAIL: {len(short)} streams got the wrong byte count (want {want}, e.g. {short[:3]})")


def publish(control_port: int, channel: str, messages: int, size: int, batch: int) -> None:
    """C{messages} publishes of C{size} bytes to C{channel}, C{batch} items per POST /publish/."""
    for start in range(0, messages, batch):
        items = [{"channel": channel, "formats": {"http-stream": {"content": f"{i:08d}".ljust(size - 1, "x") + "\n"}}}
                 for i in range(start, min(messages, start + batch))]
        body = json.dumps({"items": items}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{control_port}/publish/", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:
            answer.read()


def run_phase(proxy, port: int, tls: ssl.SSLContext | None, args, channel: str) -> dict:
    cpu0 = proxy.cpu()
    t0 = time.monotonic()
    streams = open_streams(port, args.connections, tls, channel, time.monotonic() + 120)
    cpu1 = proxy.cpu()
    t1 = time.monotonic()
    chunk = len(b"%x\r\n" % args.size) + args.size + 2
    publish(proxy.control_port, channel, args.messages, args.size, args.batch)
    receive(streams, args.messages * chunk, time.monotonic() + 120)
    cpu2 = proxy.cpu()
    t2 = time.monotonic()
    for stream in streams:
        stream.sock.close()
    deliveries = args.connections * args.messages
    return {
        "connect_cpu_us": (cpu1 - cpu0) / args.connections * 1e6,
        "connect_wall_s": t1 - t0,
        "delivery_cpu_us": (cpu2 - cpu1) / deliveries * 1e6,
        "deliveries_per_s": deliveries / (t2 - t1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=100, help="bytes per published message")
    parser.add_argument("--batch", type=int, default=20, help="items per POST /publish/")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    https = free_port()
    proxy = start_pushpin_tx(["* test"], overrides={"https_ports": f"127.0.0.1:{https}"}, workers=1)
    try:
        write_identity(proxy.workdir / "runner" / "certs", f"default_{https}")
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        common.raise_nofile(4 * args.connections + 100)
        run_phase(proxy, https, client, argparse.Namespace(**{**vars(args), "connections": 20, "messages": 5}), "warm")
        plain = run_phase(proxy, proxy.client_port, None, args, "plain")
        tls = run_phase(proxy, https, client, args, "tls")
    finally:
        proxy.stop()
    rows = [[name, f"{r['connect_cpu_us']:.0f} us", f"{r['delivery_cpu_us']:.2f} us", f"{r['deliveries_per_s']:,.0f}"]
            for name, r in (("plain http", plain), ("https (TLS)", tls))]
    rows.append(["TLS / plain", f"{tls['connect_cpu_us'] / plain['connect_cpu_us']:.2f}x",
                 f"{tls['delivery_cpu_us'] / plain['delivery_cpu_us']:.2f}x",
                 f"{tls['deliveries_per_s'] / plain['deliveries_per_s']:.2f}x"])
    common.print_table(
        f"TLS cost: {args.connections} streams x {args.messages} publishes of {args.size} B ({common.machine_note()})",
        ["port", "proxy CPU / connection", "proxy CPU / delivery", "deliveries/s"], rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"plain": plain, "tls": tls, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
