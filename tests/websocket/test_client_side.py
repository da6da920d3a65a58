"""The client WebSocket's start-up: the take-over from twisted.web, autobahn's option dump formatted only when written, no handshake timer."""

from __future__ import annotations

from pprint import pformat
from typing import Any

from autobahn.websocket import protocol as autobahn_protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pushpin_tx._compat import LazyPformat
from pushpin_tx.web.clientsite import ClientSite
from pushpin_tx.websocket.client_side import make_client_factory, upgrade


def test_the_option_dump_reads_the_same_when_formatted():
    """A log line holding the deferred pretty-print renders exactly as with pformat itself."""
    value = [("openHandshakeTimeout", 0, "WebSocketServerFactory"), ("failByDrop", False, "WebSocketServerFactory")]
    event = {"log_format": "\n{attrs}", "attrs": LazyPformat(value)}
    assert formatEvent(event) == "\n" + pformat(value)
    assert str(LazyPformat(value)) == pformat(value)


def test_a_new_client_websocket_sets_no_handshake_timer_and_leaves_autobahn_as_it_was():
    """Opening a client WebSocket schedules no opening-handshake timeout and restores autobahn's pformat."""
    reactor = MemoryReactorClock()
    factory = make_client_factory(reactor)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    assert protocol.openHandshakeTimeoutCall is None
    assert reactor.getDelayedCalls() == []
    assert autobahn_protocol.pformat is pformat


def test_every_client_websocket_has_its_factory_options_and_factories_do_not_share_them():
    """Each connection sees its own factory's options (autobahn's copy), two factories with different limits stay apart."""
    small = make_client_factory(MemoryReactorClock(), max_message_size=1234)
    large = make_client_factory(MemoryReactorClock(), max_message_size=99999)
    for factory, size in ((small, 1234), (large, 99999)):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        for name in protocol.CONFIG_ATTRS:
            assert getattr(protocol, name) == getattr(factory, name), name
        assert protocol.maxMessagePayloadSize == protocol.maxFramePayloadSize == size
        assert protocol.openHandshakeTimeout == 0 and protocol.failByDrop is False


def test_a_client_offering_compression_is_answered_without_it():
    """A handshake offering permessage-deflate completes with no extension accepted (frames are framed once for all)."""
    factory = make_client_factory(MemoryReactorClock())
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    head = transport.value().split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101") and b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    assert b"sec-websocket-extensions" not in head.lower()


class _Held(Resource):
    """Keeps each request open, as the gateway does while the origin decides."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[object] = []

    def render(self, request: object) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


def _handshake_held(target: bytes) -> tuple[MemoryReactorClock, _Held, Any, StringTransport]:
    """A client site's channel that has read a WebSocket handshake for C{target}, its request held (not answered)."""
    reactor = MemoryReactorClock()
    held = _Held()
    channel = ClientSite(held, reactor=reactor).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(
        b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    return reactor, held, channel, transport


def test_upgrade_hands_the_connection_to_autobahn_and_reads_it_again():
    """Once the origin accepts, the client gets its 101 from autobahn and a connection twisted.web had paused is read again."""
    reactor, held, channel, transport = _handshake_held(b"/ws")
    transport.pauseProducing()  # as twisted.web does when a client sends ahead of its answer
    protocol = upgrade(held.requests[0], make_client_factory(reactor), None, subprotocol=None, headers={"X-Origin": "yes"})  # type: ignore[arg-type]
    assert protocol is not None and protocol.transport is transport
    assert transport.producerState == "producing"
    head = transport.value().split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101") and b"X-Origin: yes" in head
    assert channel.transport is None


def _deflate_handshake(extensions: bytes, **options: object) -> tuple[object, StringTransport]:
    factory = make_client_factory(MemoryReactorClock(), **options)  # type: ignore[arg-type]
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Extensions: " + extensions + b"\r\n\r\n"
    )
    return protocol, transport


def test_allow_compression_negotiates_deflate_and_compresses_published_frames():
    """With allow_compression, deflate is accepted and a frame framed once for all leaves compressed (RSV1), pings as they are."""
    import zlib

    from pushpin_tx.core.router import ws_frame

    protocol, transport = _deflate_handshake(b"permessage-deflate; client_max_window_bits", allow_compression=True)
    head, _ = transport.value().split(b"\r\n\r\n", 1)
    assert b"sec-websocket-extensions: permessage-deflate" in head.lower()
    transport.clear()
    message = b"hello hello hello hello hello"
    protocol.write_frame(ws_frame(0x1, message) + ws_frame(0x9, b"p"))  # type: ignore[attr-defined]
    wire = transport.value()
    assert wire[0] == 0xC1  # FIN + RSV1 (compressed) + text
    size = wire[1]
    assert size < len(message)
    inflated = zlib.decompressobj(-15).decompress(wire[2:2 + size] + b"\x00\x00\xff\xff")
    assert inflated == message
    assert wire[2 + size:] == ws_frame(0x9, b"p")


def test_a_smaller_server_window_is_declined_as_connmgr_does():
    """An offer asking for server_max_window_bits below 15 gets no extension (connmgr supports only 15)."""
    _, transport = _deflate_handshake(b"permessage-deflate; server_max_window_bits=10", allow_compression=True)
    head = transport.value().split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-extensions" not in head.lower()


def test_split_frames_reads_every_length_form():
    """Frames written together are split back into (opcode, payload), for 7-bit, 16-bit and 64-bit lengths."""
    from pushpin_tx.core.router import ws_frame
    from pushpin_tx.websocket.client_side import split_frames

    data = ws_frame(0x1, b"a") + ws_frame(0x2, b"b" * 300) + ws_frame(0x1, b"c" * 70000)
    assert [(op, len(p)) for op, p, _ in split_frames(data)] == [(1, 1), (2, 300), (1, 70000)]
    assert b"".join(raw for _, _, raw in split_frames(data)) == data


class _Count:
    def __init__(self) -> None:
        self.count = 0

    def opened(self) -> None:
        self.count += 1

    def closed(self) -> None:
        self.count -= 1


def test_an_upgraded_connection_keeps_its_place_in_the_connection_count():
    """client_maxconn counts a WebSocket as the HTTP connection it came from, released once when it closes."""
    from twisted.python.failure import Failure
    from twisted.internet.error import ConnectionDone

    reactor = MemoryReactorClock()
    held = _Held()
    count = _Count()
    site = ClientSite(held, reactor=reactor, limit=count)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    assert count.count == 1
    channel.dataReceived(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    protocol = upgrade(held.requests[0], make_client_factory(reactor), None, subprotocol=None, headers={})  # type: ignore[arg-type]
    assert protocol is not None and count.count == 1
    protocol.connectionLost(Failure(ConnectionDone()))
    assert count.count == 0


def test_an_upgraded_connections_http_channel_and_request_are_freed_without_the_collector():
    """Once the WebSocket has the connection, twisted.web's channel and request go by reference counting alone, leaving no cyclic garbage."""
    import gc
    import weakref

    reactor, held, channel, transport = _handshake_held(b"/ws?channel=a")
    request = held.requests.pop()
    protocol = upgrade(request, make_client_factory(reactor), None, subprotocol=None, headers={})  # type: ignore[arg-type]
    assert protocol is not None and transport.value().startswith(b"HTTP/1.1 101 ")
    reactor.advance(2)  # (whatever the site does a second or so after a connection opened)
    gone = [weakref.ref(channel), weakref.ref(request)]
    gc.disable()
    try:
        del channel, request
        assert [ref() for ref in gone] == [None, None]
    finally:
        gc.enable()
    assert protocol.transport is transport
