# -*- test-case-name: tests.test_proxy -*-
"""
The client-facing HTTP server: twisted.web's C{Site} with a request class that can be held.

L{ClientRequest} is a twisted.web C{Request} that also serves as the L{HttpSink} of a hold:
it writes a status line and headers once, then either body bytes (framed by twisted.web) or
bytes the router already framed for every subscriber (written straight to the transport,
so a published chunk is encoded once, not once per connection).
"""

from __future__ import annotations

from typing import Any

from twisted.web import http, server

from .delivery import DeliveryQueue
from .writethrough import TurnCounter, writer_for

__all__ = ["ClientRequest", "ClientChannel", "ClientSite"]


class ClientRequest(server.Request):
    """A client request that a hold can write to."""

    def setHeader(self, name: Any, value: Any) -> None:
        # Pushpin adds neither Server nor Date to what it sends (§14); twisted.web's
        # process() sets both through here before rendering. Origin headers never come
        # through setHeader (they are added raw), so an origin's own Date still passes.
        lower = name.lower() if isinstance(name, bytes) else name.lower().encode()
        if lower in (b"server", b"date"):
            return
        super().setHeader(name, value)

    # HttpSink ------------------------------------------------------------------------------

    def send_head(self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        self.setResponseCode(code, reason)
        raw = self.responseHeaders
        for name, value in headers:
            raw.addRawHeader(name, value)
        if length is not None:
            raw.setRawHeaders(b"content-length", [b"%d" % length])
        self.write(b"")

    _fast_write = None

    def write_framed(self, data: bytes) -> None:
        if self._disconnected or self.finished:
            return
        self.sentLength += len(data)
        write = self._fast_write
        if write is None:
            write = self._fast_write = writer_for(self.channel.transport, self.channel.site.turns)
        write(data)

    def write_body(self, data: bytes) -> None:
        if self._disconnected or self.finished:
            return
        self.write(data)

    def finish(self) -> None:
        if self._disconnected or self.finished:
            return
        super().finish()

    def abort(self) -> None:
        """Drop the connection at once, discarding anything not yet sent."""
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.abortConnection()

    def close(self) -> None:
        """Close the connection after what was written is sent: an unfinished body then shows
        the client that it is short (missing bytes or missing last chunk)."""
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.loseConnection()

    def register_producer(self, producer: Any) -> None:
        """
        Make C{producer} (a push producer) this connection's: paused while the client's
        buffer is full. twisted.web only tells a producer to pause when its channel I{becomes}
        paused, so one registered while the channel is already paused is paused here.
        """
        if self._disconnected:
            return
        self.registerProducer(producer, True)
        if getattr(self.channel, "_waitingForTransport", False):
            producer.pauseProducing()

    def unregister_producer(self) -> None:
        if self.producer is not None and not self._disconnected:
            self.unregisterProducer()


class ClientChannel(http.HTTPChannel):
    """HTTP/1.x channel with Pushpin's request-header limit (C{client_buffer_size})."""


class ClientSite(server.Site):
    """The client listener's site."""

    requestFactory = ClientRequest
    # A plain HTTP/1.x channel, not twisted.web's HTTP/2-negotiating wrapper: Pushpin
    # speaks HTTP/1.x only (§13), and the hold code writes HTTP/1.1 framing itself.
    protocol = ClientChannel

    def __init__(self, resource: Any, *, header_limit: int = 8192, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self._header_limit = header_limit
        self.noisy = False
        #: reactor turns, for coalescing several writes to one connection in one turn
        self.turns = TurnCounter(self.reactor)

    def buildProtocol(self, addr: Any) -> ClientChannel:
        channel = super().buildProtocol(addr)
        channel.totalHeadersSize = self._header_limit
        return channel

    def log(self, request: Any) -> None:
        """Access lines are written by the proxy resource in Pushpin's shape instead."""
