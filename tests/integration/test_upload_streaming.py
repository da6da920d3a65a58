"""
Large uploads stream through the proxy: the origin sees the body while the client is still
sending it, and a slow origin holds the client back instead of the proxy buffering.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ServerEndpoint

from .harness import Waiter, raw_connect, start_proxy


class RawOrigin(protocol.Protocol):
    """Reads one request and answers 200 once its whole body (by Content-Length) is in."""

    def __init__(self, shared):
        self.shared = shared
        self.head = b""
        self.parts: list[bytes] = []
        self.length: int | None = None

    def connectionMade(self):
        self.shared["conns"].append(self)

    def dataReceived(self, data):
        if self.length is None:
            self.head += data
            head, sep, body = self.head.partition(b"\r\n\r\n")
            if not sep:
                return
            self.shared["head"] = head
            self.length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            data = body
        self.parts.append(data)
        self.shared["body"] += len(data)
        self.shared["waiter"].check()
        if self.shared["body"] >= self.length and not self.shared.get("answered"):
            self.shared["answered"] = True
            self.shared["digest"] = b"".join(self.parts)[: self.length]
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nuploaded\n")


@pytest_twisted.ensureDeferred
async def test_a_large_upload_reaches_the_origin_while_it_is_still_being_sent(reactor, tmp_path):
    """The origin receives body bytes before the client has sent them all; the whole body arrives intact."""
    shared = {"conns": [], "waiter": Waiter(), "body": 0}
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(lambda: RawOrigin(shared)))
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        total = 3 * 1024 * 1024
        payload = bytes(range(256)) * (total // 256)
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
        half = total // 2
        client.transport.write(payload[:half])
        # Store-and-forward would show the origin nothing until the client sends the rest.
        await shared["waiter"].wait(reactor, lambda: shared["body"] >= 1024 * 1024, what="body bytes at the origin mid-upload")
        client.transport.write(payload[half:])
        await client.wait_for(reactor, b"uploaded\n")
        assert shared["digest"] == payload
        assert b"content-length: %d" % total in shared["head"].lower()
        client.transport.loseConnection()
        for conn in shared["conns"]:
            conn.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stalled_origin_holds_the_upload_back_without_proxy_memory_growth(reactor, tmp_path):
    """An origin that stops reading pauses the client's upload; the proxy does not buffer it."""
    from .harness import poll_until
    from .test_flow_control import rss_kb

    total = 64 * 1024 * 1024

    shared = {"conns": [], "waiter": Waiter(), "body": 0}
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(lambda: RawOrigin(shared)))
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        before = rss_kb(proxy.transport.pid)
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
        await shared["waiter"].wait(reactor, lambda: shared["conns"], what="origin connection")
        shared["conns"][0].transport.pauseProducing()  # the origin stops reading
        block = b"u" * 65536
        for _ in range(total // len(block)):
            client.transport.write(block)
        # let the proxy run until the upload stops moving: the client must be left holding most of it
        transport = client.transport

        def backlog() -> int:
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

        seen = {"backlog": -1, "since": reactor.seconds()}

        def settled() -> bool:
            now, current = reactor.seconds(), backlog()
            if current != seen["backlog"]:
                seen.update(backlog=current, since=now)
                return False
            return now - seen["since"] >= 0.5

        await poll_until(reactor, settled, what="the upload held back")
        assert backlog() > total // 2, f"the client still holds only {backlog()} bytes: the proxy read the upload"
        assert shared["body"] < total // 2
        grown = rss_kb(proxy.transport.pid) - before
        assert grown < 16 * 1024, f"proxy RSS grew {grown} KB with a stalled origin"
        shared["conns"][0].transport.resumeProducing()
        await client.wait_for(reactor, b"uploaded\n", timeout=60)
        assert len(shared["digest"]) == total
        client.transport.loseConnection()
        for conn in shared["conns"]:
            conn.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()


class ChunkedOrigin(protocol.Protocol):
    """Reads one chunked request, counting de-chunked body bytes as they come; answers at its last chunk."""

    def __init__(self, shared):
        self.shared = shared
        self.buffer = b""
        self.in_head = True

    def dataReceived(self, data):
        self.buffer += data
        if self.in_head:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            self.shared["head"] = head
            self.in_head = False
            self.buffer = rest
        while True:
            size_line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                break
            self.shared["parts"].append(rest[:size])
            self.shared["body"] += size
            self.buffer = rest[size + 2 :]
            if size == 0:
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nuploaded\n")
                break
        self.shared["waiter"].check()


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest_twisted.ensureDeferred
async def test_a_chunked_upload_streams_once_past_100000_bytes(reactor, tmp_path):
    """A chunked upload of unknown length reaches the origin, chunked, as soon as it passes 100,000 bytes, while the client still sends."""
    shared = {"waiter": Waiter(), "body": 0, "parts": []}
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(lambda: ChunkedOrigin(shared)))
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        payload = bytes(range(256)) * 1024  # 262,144 bytes
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, 110000, 10000):
            client.transport.write(_chunk(payload[start : start + 10000]))
        # kept in memory up to 100,000 bytes, then streamed: the origin sees them before the end
        await shared["waiter"].wait(reactor, lambda: shared["body"] >= 100000, what="body bytes at the origin mid-upload")
        assert b"transfer-encoding: chunked" in shared["head"].lower()
        client.transport.write(_chunk(payload[110000:]) + b"0\r\n\r\n")
        await client.wait_for(reactor, b"uploaded\n")
        assert b"".join(shared["parts"]) == payload
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_small_chunked_upload_is_kept_whole(reactor, tmp_path):
    """A chunked upload that ends under 100,000 bytes is kept, so the origin gets it with a Content-Length."""
    shared = {"conns": [], "waiter": Waiter(), "body": 0}
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(lambda: RawOrigin(shared)))
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"x" * 5000) + b"0\r\n\r\n")
        await client.wait_for(reactor, b"uploaded\n")
        assert shared["digest"] == b"x" * 5000
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()
