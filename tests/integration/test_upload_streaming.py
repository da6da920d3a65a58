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
