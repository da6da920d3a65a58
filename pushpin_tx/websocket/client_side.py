# -*- test-case-name: tests.integration.test_websockets -*-
"""
The client's side of a proxied WebSocket, on autobahn.

Pushpin completes a client's handshake only after the origin has accepted (§8.1, §8.2), so
the proxy first talks to the origin with the client's request still an ordinary
twisted.web request; once the origin says yes, L{upgrade} takes the connection over from
twisted.web (as autobahn's C{WebSocketResource} does) and replays the request into an
autobahn server protocol, whose handshake answer carries the origin's extra headers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import FunctionType, MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, cast

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.http import HTTPChannel

from pushpin_tx._compat import FastServerSetup, accept_server_handshake, compresses, parsed_request_head, debug_enabled, is_disconnected, lazy_hltype, lazy_hlval, quiet_autobahn_highlighting
from pushpin_tx.core.delivery import OVERFLOW_DRAIN_TIMEOUT
from pushpin_tx.net.writethrough import TurnCounter, writer_for
from pushpin_tx.core.ws_session import OPCODE_BINARY, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT

if TYPE_CHECKING:
    from pushpin_tx.core.delivery import DeliveryQueue
    from pushpin_tx.core.ws_session import WsSession

__all__ = ["ClientWebSocket", "make_client_factory", "upgrade", "split_frames", "accept_deflate"]


class ClientWebSocket(FastServerSetup, WebSocketServerProtocol):  # type: ignore[misc]  # (autobahn's bases disagree on peer's type)
    """
    A client WebSocket bridged to a L{WsSession}; also its L{ClientLink}. autobahn's
    connection set-up is done without its per-connection option copying (L{FastServerSetup}).

    Named attributes avoid autobahn's own (C{log}, C{factory}, C{session} is free but
    explicit is better): C{_bridge}, C{_accept}.
    """

    _log = Logger()
    #: set by autobahn from the factory's options (see make_client_factory)
    logOctets: bool
    factory: "ClientFactory"

    # (class attributes until set: a connection assigns what it changes)
    _bridge: "WsSession | None" = None
    #: the subprotocol and headers of the 101 (set by upgrade; only read, by autobahn's
    #: succeedHandshake and _compat's _succeed_plain: the shared default is read-only)
    _accept: tuple[str | None, Mapping[str, Any]] = (None, MappingProxyType({}))
    _fast_write: Callable[[bytes], None] | None = None
    #: the client connection count this connection holds a place in (from its HTTP channel)
    _counted: Any = None
    #: permessage-deflate was negotiated (set when the handshake completes)
    _deflate = False

    # autobahn callbacks --------------------------------------------------------------------

    # (autobahn types the headers a dict; it only reads their items(): a read-only mapping does)
    def onConnect(self, request: Any) -> tuple[str | None, Mapping[str, Any]]:  # type: ignore[override]
        return self.answer(request.protocols)

    def answer(self, protocols: list[str]) -> tuple[str | None, Mapping[str, Any]]:
        """The subprotocol (one of the client's C{protocols}, or None) and headers of the 101."""
        protocol, headers = self._accept
        if protocol is not None and protocol not in protocols:
            protocol = None
        return protocol, headers

    def onOpen(self) -> None:
        # the handshake is complete: whether deflate was negotiated is known (and fixed) now
        self._deflate = compresses(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._bridge is not None:
            self._bridge.client_message(OPCODE_BINARY if isBinary else OPCODE_TEXT, payload)

    def onPing(self, payload: bytes) -> None:
        # Forwarded to the origin (WebSocket-over-HTTP sends a PING event); like Pushpin, the
        # proxy does not answer it itself.
        if self._bridge is not None:
            self._bridge.client_message(OPCODE_PING, payload)

    def onPong(self, payload: bytes) -> None:
        if self._bridge is not None:
            self._bridge.client_message(OPCODE_PONG, payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            # autobahn reports 1006 (abnormal) with wasClean False when no close frame came
            if code == 1006 and not wasClean:
                bridge.client_closed(None, b"", False)
            else:
                remote_code = self.remoteCloseCode
                remote_reason = (self.remoteCloseReason or "").encode("utf-8")
                bridge.client_closed(remote_code, remote_reason, True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        counted, self._counted = self._counted, None
        if counted is not None:
            counted.closed()
        super().connectionLost(reason)

    # ClientLink ------------------------------------------------------------------------------

    def write_frame(self, frame: bytes) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            if self._deflate:
                self._write_compressed(frame)
                return
            write = self._fast_write
            if write is None:
                write = self._fast_write = writer_for(self.transport, self.factory.turns)
            write(frame)

    def _write_compressed(self, frames: bytes) -> None:
        """
        Published frames are framed once for every connection, uncompressed; a connection
        that negotiated permessage-deflate has its own compression context, so their
        messages are sent again through autobahn, which compresses them. Control frames
        (ping, pong) are never compressed and go as they are.
        """
        for opcode, payload, raw in split_frames(frames):
            if opcode in (OPCODE_TEXT, OPCODE_BINARY):
                self.sendMessage(payload, isBinary=opcode == OPCODE_BINARY)
            else:
                super().sendData(raw)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        """
        autobahn's own writes (the handshake answer, close frames) through the same
        write-through path as published frames (L{writer_for}): the 101 leaves at once instead
        of on the reactor's next turn (two C{epoll_ctl} calls and a pass saved per WebSocket
        opened). What autobahn does around its C{transport.write} is kept; chopped or
        synchronous sends, and anything queued behind them, take autobahn's own path.
        """
        if chopsize or sync or self.send_queue or self.transport is None:
            super().sendData(data, sync, chopsize)
            return
        write = self._fast_write
        if write is None:
            write = self._fast_write = writer_for(self.transport, self.factory.turns)
        write(data)
        if debug_enabled(self.log):  # (its fields are not built for a line that goes nowhere)
            self.log.debug(
                "{func} sent {data_len} bytes for peer {peer}",
                func=lazy_hltype(self.sendData),
                peer=lazy_hlval(self.peer),
                data_len=lazy_hlval(len(data)),
            )
        state = self.state
        if state == WebSocketServerProtocol.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif state == WebSocketServerProtocol.STATE_CONNECTING or state == WebSocketServerProtocol.STATE_PROXY_CONNECTING:
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)

    def close(self, code: int | None, reason: str) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        # autobahn's sendClose accepts only 1000 and 3000-4999, but the proxy must also send
        # 1001 (going away) and 1011 (origin error), and pass on what an origin chose: any
        # code a peer may send (RFC 6455 §7.4) goes out, the reserved ones as a bare close.
        if code is None or not _sendable(code):
            self.sendCloseFrame(isReply=False)
        else:
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123] or None, isReply=False)

    def drop(self) -> None:
        if self.transport is not None:
            self.dropConnection(abort=True)

    def register_producer(self, producer: "DeliveryQueue") -> None:
        if self.transport is not None:
            self.registerProducer(producer, True)


def split_frames(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """
    (opcode, payload, frame bytes) of each frame in C{data}: final, unmasked server frames
    as L{pushpin_tx.core.router.ws_frame} makes them, one or several written together.
    """
    frames = []
    at = 0
    end = len(data)
    while at < end:
        opcode = data[at] & 0x0F
        size = data[at + 1] & 0x7F
        head = 2
        if size == 126:
            size = int.from_bytes(data[at + 2:at + 4], "big")
            head = 4
        elif size == 127:
            size = int.from_bytes(data[at + 2:at + 10], "big")
            head = 10
        stop = at + head + size
        frames.append((opcode, data[at + head:stop], data[at:stop]))
        at = stop
    return frames


def accept_deflate(offers: list[Any], max_message_size: int | None = None) -> Any:
    """
    autobahn's C{perMessageCompressionAccept} with C{allow_compression}: the first
    permessage-deflate offer, on the client's terms, as connmgr answers
    (C{PerMessageDeflateConfig::create_response}); an offer asking the server for a window
    smaller than 15 bits is declined, which connmgr does not support either.
    """
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer) and offer.request_max_window_bits in (0, 15):
            # (the size cap bounds what a client's compressed message may inflate to)
            return PerMessageDeflateOfferAccept(offer, max_message_size=max_message_size)
    return None


def _sendable(code: int) -> bool:
    """Close codes an endpoint may put in a close frame (not 1004-1006, 1015 or unassigned 1xxx)."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999


class ClientFactory(WebSocketServerFactory):
    """autobahn's server factory, with the reactor-turn counter its protocols' writes share."""

    turns: TurnCounter


def make_client_factory(reactor: Any, *, max_message_size: int = 1000000, allow_compression: bool = False) -> ClientFactory:
    """
    The factory every client WebSocket comes from (one per process).

    @param allow_compression: C{[runner] allow_compression}: negotiate permessage-deflate
        when a client offers it (off: never, as Pushpin's default).
    """
    # autobahn's debug lines style their fields for a terminal even when not written: only
    # when written from now on (the same text then)
    quiet_autobahn_highlighting()
    factory = ClientFactory(reactor=reactor)
    factory.protocol = ClientWebSocket
    factory.noisy = False
    factory.setProtocolOptions(
        maxMessagePayloadSize=max_message_size,
        maxFramePayloadSize=max_message_size,
        # without allow_compression no extension is accepted, and a frame framed once is
        # written to every connection as it is
        perMessageCompressionAccept=(functools.partial(accept_deflate, max_message_size=max_message_size)
                                     if allow_compression else lambda offers: None),
        # on a protocol error or an oversized message, tell the client why (a close frame
        # with 1002 / 1009) instead of autobahn's default of dropping the TCP connection
        failByDrop=False,
        # the client's handshake is replayed into the protocol at once (L{upgrade}), so
        # autobahn's opening-handshake timer (5 s) would only ever be set and cancelled
        openHandshakeTimeout=0,
        # a close the proxy sends (origin close, publish close, a slow reader's 1013) follows
        # what was queued, which may still sit in the socket buffers: autobahn's 1 s wait for
        # the client's reply would abort the connection (a reset, which discards what the
        # client has not read yet, close frame included) before a slow client reads it all
        closeHandshakeTimeout=OVERFLOW_DRAIN_TIMEOUT,
    )
    # autobahn sends "Server: AutobahnPython/..." in the handshake; Pushpin sends none
    factory.server = None
    # autobahn copies every option (about thirty) from the factory onto each new protocol,
    # unless the protocol already has it: a subclass holding them as class attributes gives
    # every connection the same values without the copying, and smaller instances. The
    # options are all set above; this factory's are not changed afterwards.
    options = {name: getattr(factory, name) for name in ClientWebSocket.CONFIG_ATTRS}
    for name, value in options.items():
        if isinstance(value, FunctionType):  # a function would become a method as a class attribute
            options[name] = staticmethod(value)
    factory.protocol = cast("type[ClientWebSocket]", type("ClientWebSocket", (ClientWebSocket,), options))
    factory.turns = TurnCounter(reactor)
    return factory


def upgrade(
    request: Any,
    factory: WebSocketServerFactory,
    session: "WsSession",
    *,
    subprotocol: str | None,
    headers: dict[str, Any],
) -> ClientWebSocket | None:
    """
    Take the connection over from twisted.web and complete the client's handshake.

    @return: the client protocol, or C{None} if the client had already gone.
    """
    channel = request.channel
    if channel is None or channel.transport is None or is_disconnected(request):
        return None
    address = channel.transport.getPeer()
    protocol = cast(ClientWebSocket, factory.buildProtocol(address))
    protocol.peer_address = address
    # twisted.web's HTTPChannel turned TCP_NODELAY on when the connection was made
    protocol.nodelay_already = isinstance(channel, HTTPChannel)
    protocol._bridge = session
    protocol._accept = (subprotocol, headers)
    hand_over = getattr(channel, "hand_over_count", None)
    protocol._counted = hand_over() if hand_over is not None else None
    transport, channel.transport = channel.transport, None
    # twisted.web's channel and its request refer to each other (its requests list, the
    # request's channel) and, the connection now the WebSocket's, nothing else refers to the
    # channel: out of that list, the two (and the request's headers and body, ~22 objects)
    # are freed as soon as the request is done with, instead of staying as cyclic garbage
    # for the collector to find (a request taken over is never finished)
    requests = getattr(channel, "requests", None)
    if requests and request in requests:
        requests.remove(request)
    # twisted.web's channel registered itself as the transport's producer; the WebSocket's
    # delivery queue takes that place.
    if getattr(transport, "producer", None) is not None:
        transport.unregisterProducer()
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    # twisted.web stopped reading the connection while it served the request; nothing else
    # will resume it. (autobahn's WebSocketResource also looks for an HTTP/2-negotiating
    # channel's private _networkProducer: ClientSite's channels are plain HTTP/1.x ones.)
    transport.resumeProducing()
    # The request as autobahn would read it (what WebSocketResource replays into it): its
    # handshake, done without the parts of autobahn's that a valid request does not need
    # (_compat.accept_server_handshake), or by autobahn itself from these bytes.
    lines = [(name, b",".join(values)) for name, values in request.requestHeaders.getAllRawHeaders()]
    parts = [request.method, b" ", request.uri, b" HTTP/1.1\r\n"]
    for name, value in lines:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    data = b"".join(parts)
    # (the head as autobahn's parser reads those bytes, from the same lines)
    parsed = parsed_request_head(request.method, request.uri, lines)
    if not accept_server_handshake(protocol, data, protocol.answer, parsed):
        protocol.dataReceived(data)
    return protocol
