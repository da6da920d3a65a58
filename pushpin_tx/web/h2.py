# -*- test-case-name: tests.web.test_h2 -*-
"""
HTTP/2 on the https ports: a TLS connection whose ALPN picked C{h2} is handed from the
HTTP/1.x L{ClientChannel} it started with to L{ClientH2Connection}, twisted.web's HTTP/2
server (the C{h2} package), with a few changes for a proxy that holds requests:

 - each request is an C{H2Stream} whose request object is the site's L{ClientRequest}: holds,
   streams, SSE and proxied answers go through the same L{HttpSink} as over HTTP/1.1, the
   body unframed (HTTP/2 frames it);
 - the sending loop sends up to 64 DATA frames per pass, in one write (twisted.web's sends
   one per reactor turn: see C{_compat.H2BurstConnection}), taking the streams that have
   something to send in turn (L{RoundRobin}) instead of by the client's priorities: the
   priority tree walked every blocked stream to find the next one (with 100 streams held
   and one written to, most of a delivery's time), and RFC 9113 deprecated that scheme;
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
 - the connection counts in C{client_maxconn} as one connection, whatever its streams, and
   C{client_buffer_size} is its SETTINGS_MAX_HEADER_LIST_SIZE (h2 enforces it).

WebSockets over HTTP/2 (RFC 8441) are not offered: a client that wants a WebSocket connects
with HTTP/1.1 (ALPN offers both).
"""

from __future__ import annotations

from typing import Any

from collections import deque

import priority
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from pushpin_tx._compat import H2BurstConnection, h2_available, h2_wake_sender

__all__ = ["ClientH2Connection", "RoundRobin", "take_over", "h2_available", "CONNECTION_SPECIFIC"]

#: response headers HTTP/2 forbids (RFC 9113 §8.2.2); C{te} is allowed with the value "trailers" only
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))


class RoundRobin:
    """
    In place of twisted.web's C{priority.PriorityTree}, with the calls it makes of it: the
    streams that are not blocked, in turn, each found in constant time. Priorities sent by
    the client are accepted and ignored. At most C{maximum_streams} are known (the tree's
    limit, as PRIORITY frames can name streams never opened).
    """

    __slots__ = ("_known", "_active", "_ring", "_in_ring", "maximum_streams")

    def __init__(self, maximum_streams: int = 1000) -> None:
        self._known: set[int] = set()
        self._active: set[int] = set()
        self._ring: deque[int] = deque()
        self._in_ring: set[int] = set()
        self.maximum_streams = maximum_streams

    def insert_stream(self, stream_id: int, depends_on: Any = None, weight: int = 16, exclusive: bool = False) -> None:
        if stream_id in self._known:
            raise priority.DuplicateStreamError(stream_id)
        if len(self._known) >= self.maximum_streams:
            raise priority.TooManyStreamsError(f"more than {self.maximum_streams} streams")
        self._known.add(stream_id)
        self.unblock(stream_id)  # a new stream is active, as in the tree

    def reprioritize(self, stream_id: int, depends_on: Any = None, weight: int = 16, exclusive: bool = False) -> None:
        if stream_id not in self._known:
            raise priority.MissingStreamError(stream_id)

    def remove_stream(self, stream_id: int) -> None:
        self._known.discard(stream_id)
        self._active.discard(stream_id)

    def block(self, stream_id: int) -> None:
        self._active.discard(stream_id)  # its place in the ring goes when the ring reaches it

    def unblock(self, stream_id: int) -> None:
        if stream_id in self._known and stream_id not in self._active:
            self._active.add(stream_id)
            if stream_id not in self._in_ring:
                self._in_ring.add(stream_id)
                self._ring.append(stream_id)

    def __iter__(self) -> "RoundRobin":
        return self

    def __next__(self) -> int:
        ring = self._ring
        while ring:
            stream_id = ring.popleft()
            if stream_id in self._active:
                ring.append(stream_id)
                return stream_id
            self._in_ring.discard(stream_id)
        raise priority.DeadlockError("no stream can send")


class ClientH2Connection(H2BurstConnection):  # (twisted.web's, untyped)
    """twisted.web's HTTP/2 connection, as the module describes."""

    #: the process's client connection count this connection holds a place in (None: not counted)
    _counted: Any = None

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self.priority = RoundRobin()

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
    # the request-header limit (client_buffer_size), announced in the server's SETTINGS and
    # enforced by h2's HPACK decoder (a larger header list ends the connection, as twisted.web
    # ends an HTTP/1.1 connection whose headers pass it)
    limit = getattr(channel, "totalHeadersSize", None)
    if limit:
        connection.conn.local_settings.max_header_list_size = limit
        connection.conn.decoder.max_header_list_size = limit
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
