"""
Huge origin bodies: a plain body streams through whole with flow control, an oversized GRIP
answer that cannot be held is refused with a 502, and a stream hold's oversized initial
body is relayed and then held; the proxy's memory stays within a few MB, also for a client
that reads nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from ..integration.harness import ScriptedOrigin, Waiter, poll_until, raw_connect
from .support import assert_alive, assert_clean_log, origin_env, publish, rss_kb, scaled, still_serves

#: every wait on one exchange ends within this, in seconds
ENDS = 5.0


@implementer(IPushProducer)
class Huge:
    """Writes C{total} bytes as fast as the proxy lets it (a push producer, so it is paused when full)."""

    BLOCK = 64 * 1024

    def __init__(self, request: Any, total: int, first: bytes = b"", on_pause: Any = None) -> None:
        self.request = request
        self.on_pause = on_pause
        self.total = total
        self.sent = 0
        self.paused = False
        self.done = False
        if first:
            request.write(first)
        request.registerProducer(self, True)
        request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        if self.on_pause is not None:
            self.on_pause()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.done and self.sent < self.total:
            n = min(self.BLOCK, self.total - self.sent)
            self.sent += n
            self.request.write(b"z" * n)
        if self.sent >= self.total and not self.done:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()
            if self.on_pause is not None:
                self.on_pause()

    def stopProducing(self) -> None:
        self.done = True


class Counting(protocol.Protocol):
    """Counts the body bytes of one response; keeps only the head."""

    def __init__(self) -> None:
        self.head = b""
        self.body = 0
        self.tail = b""
        self.closed = False
        self.waiter = Waiter()

    def dataReceived(self, data: bytes) -> None:
        if not self.head:
            self.tail += data
            if b"\r\n\r\n" in self.tail:
                self.head, _, rest = self.tail.partition(b"\r\n\r\n")
                self.tail = rest[-64:]
                self.body += len(rest)
        else:
            self.body += len(data)
            self.tail = (self.tail + data)[-64:]
        self.waiter.check()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        self.waiter.check()


HUGE = scaled(32) * 1024 * 1024
#: how far the proxy's RSS may rise while it relays them, in KiB
RSS_BOUND_KB = 16 * 1024


@pytest.mark.stress
@pytest_twisted.ensureDeferred
async def test_huge_origin_bodies_stream_through_or_are_refused_with_memory_flat(reactor, tmp_path):
    """A huge plain body streams through whole, a huge body with Grip-Hold: response is refused with a
    502, a huge initial body of a stream hold is relayed and the stream then gets publishes; the
    proxy's RSS stays within a few MB all along."""
    origin = ScriptedOrigin()
    producers: list[Huge] = []

    def plain(request: Any) -> object:
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % HUGE)
        producers.append(Huge(request, HUGE))
        return NOT_DONE_YET

    def grip(request: Any) -> object:
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream" if b"stream" in request.uri else b"response")
        request.setHeader(b"grip-channel", b"huge")
        producers.append(Huge(request, HUGE // 4, first=b"begin\n"))
        return NOT_DONE_YET

    origin.handlers[b"/huge"] = plain
    origin.handlers[b"/huge-grip"] = grip
    port, proxy = await origin_env(reactor, tmp_path, origin)
    pid = proxy.transport.pid
    try:
        await still_serves(reactor, proxy, "warm-up")
        before = rss_kb(pid)
        growth: dict[bytes, int] = {}  # the highest RSS rise seen during each fetch, in KiB

        async def fetch(path: bytes, until: Any) -> Counting:
            reader = Counting()
            growth[path] = 0

            def done() -> bool:
                growth[path] = max(growth[path], rss_kb(pid) - before)
                return until(reader)

            await TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.client_port).connect(protocol.Factory.forProtocol(lambda: reader))
            reader.transport.write(b"GET %s HTTP/1.1\r\nHost: o.example\r\n\r\n" % path)
            await reader.waiter.wait(reactor, done, timeout=60, what=f"{path!r} done")
            return reader

        whole = await fetch(b"/huge", lambda r: r.body >= HUGE or r.closed)
        assert whole.head.startswith(b"HTTP/1.1 200 OK") and whole.body == HUGE
        whole.transport.loseConnection()

        refused = await fetch(b"/huge-grip", lambda r: r.closed or r.tail.endswith(b"proxying to origin.\n"))
        assert refused.head.startswith(b"HTTP/1.1 502 Bad Gateway"), refused.head
        refused.transport.loseConnection()

        held = await fetch(b"/huge-grip?stream", lambda r: r.body >= HUGE // 4 + len(b"begin\n") or r.closed)
        assert held.head.startswith(b"HTTP/1.1 200 OK") and not held.closed
        await proxy.wait_for_log(r"subscribe http://o\.example/huge-grip\?stream channel=huge", ENDS)
        await publish(reactor, proxy, "huge", "after the huge body\n")
        await held.waiter.wait(reactor, lambda: b"after the huge body\n" in held.tail, ENDS, "publish after the huge body")
        held.transport.loseConnection()

        print(f"huge bodies: {HUGE // 2**20} MB plain, RSS rise at peak (KiB) by request: {growth}")
        assert max(growth.values()) < RSS_BOUND_KB, f"proxy RSS rose while relaying huge bodies (KiB, by request): {growth}"
        await still_serves(reactor, proxy, "huge")
        assert_clean_log(proxy)
    finally:
        for p in producers:
            p.stopProducing()
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stalled_client_pauses_an_origin_sending_a_huge_stream_hold_body(reactor, tmp_path):
    """An origin answers Grip-Hold: stream with a body too big to buffer, to a client that reads
    nothing: the proxy relays it with flow control (the origin is paused, RSS stays flat), as it does
    for a plain body."""
    total = 48 * 1024 * 1024
    origin = ScriptedOrigin()
    producers: list[Huge] = []
    paused = Waiter()

    def grip(request: Any) -> object:
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"huge")
        producer = Huge(request, total, first=b"begin\n", on_pause=paused.check)
        producers.append(producer)
        return NOT_DONE_YET

    origin.handlers[b"/huge-grip"] = grip
    port, proxy = await origin_env(reactor, tmp_path, origin)
    pid = proxy.transport.pid
    client = None
    try:
        await still_serves(reactor, proxy, "warm-up")
        before = rss_kb(pid)
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.pauseProducing()  # reads nothing
        client.transport.write(b"GET /huge-grip HTTP/1.1\r\nHost: o.example\r\n\r\n")
        await paused.wait(reactor, lambda: producers and (producers[0].paused or producers[0].done), ENDS, "origin paused or done")
        producer = producers[0]
        # The proxy pauses the origin first at the 100,000-byte instruct limit, resumes it to relay
        # the body, and must pause it again once the stalled client's buffers are full: wait until
        # the origin has been paused and sent nothing more for a second (bounded by ENDS).
        settled = {"sent": -1, "since": reactor.seconds()}

        def stopped_sending() -> bool:
            if producer.done:
                return True
            if producer.sent != settled["sent"] or not producer.paused:
                settled.update(sent=producer.sent, since=reactor.seconds())
                return False
            return reactor.seconds() - settled["since"] >= 1.0

        await poll_until(reactor, stopped_sending, timeout=ENDS, what="the origin held back")
        resumed = producer.done
        grown = rss_kb(pid) - before
        assert not resumed and producer.sent < total // 4, (
            f"the origin was not held back: it sent {producer.sent} of {total} bytes to a client that reads"
            f" nothing (proxy RSS +{grown} KiB)"
        )
        assert grown < RSS_BOUND_KB, f"proxy RSS grew {grown} KiB"
        assert_alive(proxy)
    finally:
        if client is not None:
            client.transport.abortConnection()
        for p in producers:
            p.stopProducing()
        await proxy.stop()
        await port.stopListening()
