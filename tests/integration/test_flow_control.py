"""
Flow control end to end: a client that stops reading pauses the origin, so the proxy's
memory does not grow with the size of the response.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from .harness import ScriptedOrigin, Waiter, raw_connect, start_origin, start_proxy

TOTAL = 64 * 1024 * 1024
BLOCK = 64 * 1024


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@implementer(IPushProducer)
class BigBody:
    """Writes TOTAL bytes as fast as the proxy lets it, noting when it was paused."""

    def __init__(self, request, waiter: Waiter) -> None:
        self.request = request
        self.sent = 0
        self.paused = False
        self.pauses = 0
        self.waiter = waiter
        self.done = False

    def pauseProducing(self):
        self.paused = True
        self.pauses += 1
        self.waiter.check()

    def resumeProducing(self):
        self.paused = False
        while not self.paused and self.sent < TOTAL:
            self.request.write(b"x" * BLOCK)
            self.sent += BLOCK
        if self.sent >= TOTAL and not self.done:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self):
        self.paused = True


@pytest_twisted.ensureDeferred
async def test_a_slow_client_pauses_the_origin_and_memory_stays_flat(reactor, tmp_path):
    """64 MB to a client that stops reading: the origin is paused, proxy RSS barely moves, all bytes arrive."""
    origin = ScriptedOrigin()
    waiter = Waiter()
    bodies: list[BigBody] = []

    def big(request):
        request.setHeader(b"content-length", b"%d" % TOTAL)
        body = BigBody(request, waiter)
        bodies.append(body)
        request.registerProducer(body, True)
        body.resumeProducing()
        return NOT_DONE_YET

    origin.handlers[b"/big"] = big
    origin_port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"])
    pid = proxy.transport.pid
    try:
        before = rss_kb(pid)
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.pauseProducing()  # the client reads nothing
        client.transport.write(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await waiter.wait(reactor, lambda: bodies and bodies[0].paused and bodies[0].sent > 0, what="origin paused")
        # Give the proxy a moment's worth of turns: it must stay paused, not keep reading.
        for _ in range(20):
            d = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            await d
        body = bodies[0]
        assert body.paused and body.sent < TOTAL // 4, f"origin sent {body.sent} bytes to a stalled client"
        grown = rss_kb(pid) - before
        assert grown < 16 * 1024, f"proxy RSS grew by {grown} KB while the client was stalled"
        client.transport.resumeProducing()
        await client.waiter.wait(reactor, lambda: client.closed, timeout=60, what="whole body")
        head, _, rest = client.received.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % TOTAL in head
        assert len(rest) == TOTAL
        assert body.pauses >= 1
    finally:
        await proxy.stop()
        await origin_port.stopListening()
