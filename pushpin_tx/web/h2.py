# -*- test-case-name: tests.web.test_h2 -*-
"""
HTTP/2 on the https ports: a TLS connection whose ALPN picked C{h2} is handed from the
HTTP/1.x L{ClientChannel} it started with to L{ClientH2Connection}, twisted.web's HTTP/2
server (the C{h2} package), with a few changes for a proxy that holds requests:

 - each request is an C{H2Stream} whose request object is the site's L{ClientRequest}: holds,
   streams, SSE and proxied answers go through the same L{HttpSink} as over HTTP/1.1, the
   body unframed (HTTP/2 frames it);
 - a stream whose flow-control window is used up pauses its own producer (the hold's
   delivery queue) and no other: twisted.web does that per stream. Its sending loop, though,
   keeps picking a stream that has data queued and no window, and finds it again on the
   next reactor turn, for as long as the client does not open the window (one CPU busy for
   one slow reader); such a stream is taken out of the loop here until a WINDOW_UPDATE,
   and the loop, if it stopped with every stream out of it, is started again by what the
   client sends (twisted.web restarts it only on a write);
 - when the connection's socket is full (the client reads nothing at all), every stream's
   producer is paused, as an HTTP/1.1 connection's is, and resumed when it drains: without
   this each stream could queue a whole window (Chromium's is 6 MB) in the proxy;
 - the idle timeout closes a connection only while it has no request open (an HTTP/1.1
   channel's is off while a request is handled): a long-poll held longer than it stays;
 - connection-specific response headers (RFC 9113 §8.2.2: Connection, Keep-Alive,
   Proxy-Connection, Transfer-Encoding, Upgrade, TE other than "trailers") are left out:
   h2 refuses to send them, and they mean nothing on a multiplexed connection;
 - the connection counts in C{client_maxconn} as one connection, whatever its streams.

WebSockets over HTTP/2 (RFC 8441) are not offered: a client that wants a WebSocket connects
with HTTP/1.1 (ALPN offers both).
"""

from __future__ import annotations

from typing import Any

from priority import PriorityError  # type: ignore[import-untyped]
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from pushpin_tx._compat import H2Connection, h2_available, h2_wake_sender

__all__ = ["ClientH2Connection", "take_over", "h2_available", "CONNECTION_SPECIFIC"]

#: response headers HTTP/2 forbids (RFC 9113 §8.2.2); C{te} is allowed with the value "trailers" only
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))


class ClientH2Connection(H2Connection):  # type: ignore[misc]  # (twisted.web's, untyped)
    """twisted.web's HTTP/2 connection, as the module describes."""

    #: the process's client connection count this connection holds a place in (None: not counted)
    _counted: Any = None

    def remainingOutboundWindow(self, streamID: int) -> int:
        remaining: int = super().remainingOutboundWindow(streamID)
        if remaining <= 0 and self.conn.local_flow_control_window(streamID) <= 0:
            # Nothing can be sent on this stream until the client opens its window (or the
            # connection's): out of the sending loop until then. A WINDOW_UPDATE puts a stream
            # with data queued back (twisted.web's _handleWindowUpdate), as a write does once
            # there is room.
            try:
                self.priority.block(streamID)
            except PriorityError:
                pass
        return remaining

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # a WINDOW_UPDATE may have put streams with queued data back in the priority tree
        if self.transport is not None:
            h2_wake_sender(self)

    def pauseProducing(self) -> None:
        """The socket is full: every stream's producer waits, besides the sending loop."""
        super().pauseProducing()
        for stream in list(self.streams.values()):
            stream.flowControlBlocked()  # pauses its producer, if it has one producing

    def resumeProducing(self) -> None:
        super().resumeProducing()
        for stream in list(self.streams.values()):
            stream.windowUpdated()  # resumes its producer, if its window has room

    def timeoutConnection(self) -> None:
        if self.streams:
            self.setTimeout(self.timeOut)  # requests are open (held): not idle; the timer starts again
            return
        super().timeoutConnection()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: list[tuple[bytes, bytes]], streamID: int) -> None:
        kept = []
        for name, value in headers:
            lower = name.lower()
            if lower in CONNECTION_SPECIFIC or (lower == b"te" and value.strip().lower() != b"trailers"):
                continue
            kept.append((lower, value))
        super().writeHeaders(version, code, reason, kept, streamID)

    def connectionLost(self, reason: Failure, _cancelTimeouts: bool = True) -> None:
        limit, self._counted = self._counted, None
        if limit is not None:
            limit.closed()
        super().connectionLost(reason, _cancelTimeouts)


def take_over(channel: Any, data: bytes) -> ClientH2Connection:
    """
    Hand a TLS connection whose ALPN picked C{h2} from the HTTP/1.x C{channel} it was built
    with (which has read nothing yet) to a new L{ClientH2Connection}, which reads C{data},
    the first bytes (the client's preface). As twisted.web's C{_GenericHTTPChannelProtocol}
    switches, with the channel's connection count passed on.
    """
    transport = channel.transport
    site = channel.site
    connection = ClientH2Connection(site.reactor)
    connection.site = site
    connection.factory = channel.factory
    connection.requestFactory = channel.requestFactory
    connection.timeOut = channel.timeOut
    connection.callLater = channel.callLater
    connection._counted = channel.hand_over_count()
    # the HTTP/1.x channel leaves: its idle timeout, its place as the transport's producer
    channel.setTimeout(None)
    transport.unregisterProducer()
    channel.transport = None
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = connection
    else:  # pragma: no cover - ALPN comes with Twisted's TLS wrapper only
        transport.protocol = connection
    connection.makeConnection(transport)
    transport.registerProducer(connection, True)
    connection.dataReceived(data)
    return connection
