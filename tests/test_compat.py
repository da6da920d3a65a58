"""
The assumptions L{pushpin_tx._compat} makes about Twisted's and autobahn's private names, each
checked against the installed versions: a release that breaks one fails its test here.
"""

from __future__ import annotations

import socket
import sys
from pprint import pformat
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket import protocol as autobahn_protocol
from twisted.internet import abstract, process, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import http, resource, server
from twisted.web._newclient import HTTP11ClientProtocol, Request as ClientRequestLine
from twisted.web.client import HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import directlyProvides, implementer

from pushpin_tx._compat import (
    adopt_shared_unix_port,
    BadHeaders,
    BadResponseVersion,
    ChunkedTransferDecoder,
    DataLoss,
    FastServerSetup,
    H2BurstConnection,
    H2Connection,
    H2Stream,
    LazyOptionsDump,
    LazyPformat,
    ParseError,
    QuietConnectionPool,
    RequestGenerationFailed,
    _QuietFactory,
    buffered_bytes,
    cap_accepts,
    compresses,
    debug_enabled,
    channel_paused,
    decint,
    h2_available,
    h2_wake_sender,
    is_disconnected,
    istoken,
    knows_write_buffer,
    lazy_hltype,
    lazy_hlval,
    quiet_autobahn_highlighting,
    accept_server_handshake,
    parsed_request_head,
    at_request_start,
    canonical_header_name,
    deliver_parsed_head,
    http_channel_made_on_tcp,
    parse_request_line,
    request_line,
    write_buffer_empty,
)


# twisted.internet listening ports ------------------------------------------------------------


class _NoLoop:
    """Just enough reactor for a real tcp.Port driven by hand: readers are noted, not polled."""

    def __init__(self) -> None:
        self.readers: set[Any] = set()

    def addReader(self, reader: Any) -> None:
        self.readers.add(reader)

    def removeReader(self, reader: Any) -> None:
        self.readers.discard(reader)

    def callLater(self, *a: Any, **kw: Any) -> None:
        pass


def test_a_port_accepts_at_most_the_capped_number_per_read() -> None:
    """tcp.Port.doRead accepts numberAccepts connections per call; cap_accepts bounds that by the room left."""
    built: list[Any] = []

    class Counting(Protocol):
        def connectionMade(self) -> None:
            built.append(self)

    from twisted.internet.protocol import Factory

    port = tcp.Port(0, Factory.forProtocol(Counting), interface="127.0.0.1", reactor=_NoLoop())  # type: ignore[arg-type]
    port.startListening()
    clients = [socket.create_connection(("127.0.0.1", port.getHost().port)) for _ in range(5)]
    try:
        assert port.numberAccepts > 2  # Twisted's own starting burst
        cap_accepts(port, lambda: 2)
        port.doRead()
        assert len(built) == 2
        port.doRead()
        assert len(built) == 4
    finally:
        for client in clients:
            client.close()
        for proto in built:
            proto.transport.socket.close()
        port.socket.close()


def _listening_unix_socket(path: str, mode: int) -> socket.socket:
    """A listening, non-blocking Unix socket at C{path} with C{mode}, as listen_local leaves one."""
    import os

    skt = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    skt.bind(path)
    os.chmod(path, mode)
    skt.listen(8)
    skt.setblocking(False)
    return skt


def test_twisteds_adopted_unix_port_takes_the_socket_file_as_its_own(tmp_path: Any) -> None:
    """Why adopt_shared_unix_port exists: an adopted unix.Port chmods the file to 0666 at start, and at stop shuts the shared socket down and unlinks the file."""
    import os
    import stat

    from twisted.internet import unix
    from twisted.internet.protocol import Factory

    path = str(tmp_path / "s.sock")
    bound = _listening_unix_socket(path, 0o640)
    try:
        os.link(path, path + ".link")  # a second name for the socket, to reach it once unlinked
        reactor = MemoryReactorClock()
        port = unix.Port._fromListeningDescriptor(reactor, bound.fileno(), Factory.forProtocol(Protocol))
        port.startListening()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        port.stopListening()
        reactor.advance(0)
        assert not os.path.exists(path)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with pytest.raises(ConnectionRefusedError):  # shut down for the descriptor that bound it too
            client.connect(path + ".link")
        client.close()
    finally:
        bound.close()


def test_a_shared_unix_port_accepts_and_leaves_the_socket_and_its_file_alone(tmp_path: Any) -> None:
    """adopt_shared_unix_port accepts on the inherited socket; the file keeps its mode; stopping it leaves the file and the other holder's socket accepting."""
    import os
    import stat

    from twisted.internet.address import UNIXAddress
    from twisted.internet.protocol import Factory

    built: list[Any] = []

    class Recording(Protocol):
        def connectionMade(self) -> None:
            built.append(self)

    path = str(tmp_path / "s.sock")
    bound = _listening_unix_socket(path, 0o640)
    clients: list[socket.socket] = []
    try:
        reactor = MemoryReactorClock()
        port = adopt_shared_unix_port(reactor, bound.fileno(), Factory.forProtocol(Recording))
        assert port in reactor.readers
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert port.getHost() == UNIXAddress(path.encode())
        for _ in range(2):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(path)
            clients.append(client)
        port.doRead()
        assert len(built) == 2 and isinstance(built[0].transport.getHost(), UNIXAddress)
        port.stopListening()
        reactor.advance(0)
        assert port not in reactor.readers and os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o640
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)  # the socket still listens for the process that bound it
        clients.append(client)
        accepted, _ = bound.accept()
        accepted.close()
    finally:
        for client in clients:
            client.close()
        for proto in built:
            proto.transport.socket.close()
        bound.close()


# twisted.web server side ---------------------------------------------------------------------


def test_request_disconnected_follows_connection_lost() -> None:
    """A twisted.web request reads as disconnected exactly once its connection is lost."""
    request = server.Request(DummyChannel(), False)
    assert is_disconnected(request) is False
    request.connectionLost(Exception("gone"))
    assert is_disconnected(request) is True


class _Recorder(resource.Resource):
    """Answers every request at once and keeps what it was given."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Any] = []

    def render(self, request: Any) -> bytes:
        self.requests.append(request)
        return b"ok"


def _site(root: resource.Resource, request_class: type = server.Request) -> server.Site:
    """A site on a memory clock, with plain HTTP/1.x channels (as ClientSite's)."""
    site = server.Site(root, reactor=MemoryReactorClock())
    site.protocol = http.HTTPChannel
    site.requestFactory = request_class
    return site


def _channel(site: server.Site) -> tuple[http.HTTPChannel, StringTransport]:
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def test_a_channel_is_at_a_request_start_only_with_nothing_read_of_one() -> None:
    """at_request_start: a new connection and one between requests are; a part-read head, a request being handled, IE's extra line and a closing connection are not."""
    recorder = _Recorder()
    site = _site(recorder)
    channel, _ = _channel(site)
    assert at_request_start(channel)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHo")
    assert not at_request_start(channel)
    channel.dataReceived(b"st: x\r\n\r\n")
    assert at_request_start(channel)  # answered at once: between requests again
    channel.dataReceived(b"\r\n")
    assert not at_request_start(channel)

    held = _site(_Held())
    channel, _ = _channel(held)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not at_request_start(channel)  # its request is being handled

    channel, _ = _channel(site)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert not at_request_start(channel)


@implementer(ITCPTransport)
class _NoDelayTransport(StringTransport):
    """A StringTransport that is a TCP transport (it records TCP_NODELAY) and its own push producer."""

    nodelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled


def test_an_http_channel_made_on_tcp_is_what_twisted_webs_connection_made_leaves() -> None:
    """http_channel_made_on_tcp: TCP_NODELAY on, the timeout set, the transport its network producer with the channel registered, as HTTPChannel.connectionMade leaves them."""
    made = []
    for ours in (False, True):
        site = _site(_Recorder())
        channel = site.buildProtocol(None)
        transport = _NoDelayTransport()
        channel.transport = transport
        if ours:
            http_channel_made_on_tcp(channel)
        else:
            http.HTTPChannel.connectionMade(channel)
        made.append((transport.nodelay, transport.producer is channel, transport.streaming,
                     channel._networkProducer is transport, channel.timeOut,
                     sorted(vars(channel))))
    assert made[0] == made[1]
    assert made[0][:4] == (True, True, True, True)


class _Held(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> object:
        return server.NOT_DONE_YET


def test_a_head_delivered_parsed_is_the_request_twisted_web_reads() -> None:
    """deliver_parsed_head with twisted.web's own parser pieces gives the resource what dataReceived would, and the same answer."""
    data = b"GET /a?b=c HTTP/1.1\r\nhost: x\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n"
    seen = []
    for deliver in (False, True):
        recorder = _Recorder()
        channel, transport = _channel(_site(recorder))
        if deliver:
            command, path, version = parse_request_line(b"GET /a?b=c HTTP/1.1")
            deliver_parsed_head(channel, command, path, version,
                                {canonical_header_name(b"host"): [b"x"], canonical_header_name(b"x-dup"): [b"1", b"2"]})
        else:
            channel.dataReceived(data)
        [request] = recorder.requests
        seen.append((request.method, request.uri, request.clientproto, list(request.requestHeaders.getAllRawHeaders()),
                     transport.value(), at_request_start(channel)))
    assert seen[0] == seen[1]
    with pytest.raises(ValueError):
        parse_request_line(b"GET / HTTP/2.0")
    with pytest.raises(ValueError):
        canonical_header_name(b"Bad Name")


class _StreamingProducer:
    """A push producer that records whether it was paused."""

    paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


def test_channel_paused_follows_the_transports_pause_and_twisted_does_not_pause_a_late_producer() -> None:
    """A channel reads as paused between its transport's pause and resume; a producer registered meanwhile is left running by twisted.web."""
    channel, _ = _channel(_site(_Recorder()))
    assert channel_paused(channel) is False
    channel.pauseProducing()  # what the transport does when its send buffer is full
    assert channel_paused(channel) is True
    request = server.Request(channel, False)
    producer = _StreamingProducer()
    request.registerProducer(producer, True)
    # the reason ClientRequest.register_producer pauses it by hand
    assert producer.paused is False
    channel.resumeProducing()
    assert channel_paused(channel) is False
    assert channel_paused(None) is False


def test_request_line_is_known_when_the_body_length_is() -> None:
    """When twisted.web announces a request's body length, the channel already holds its method, URI and version."""
    seen: list[tuple[bytes, bytes, bytes]] = []

    class Early(server.Request):
        def gotLength(self, length: int | None) -> None:
            seen.append(request_line(self.channel))
            super().gotLength(length)

    channel, _ = _channel(_site(_Recorder(), Early))
    channel.dataReceived(b"POST /up?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n")
    assert seen == [(b"POST", b"/up?x=1", b"HTTP/1.1")]


def _tcp_pair() -> tuple[tcp.Connection, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    connection = tcp.Connection(ours, Protocol(), MemoryReactorClock())
    connection.connected = True
    return connection, theirs


def test_the_write_buffer_of_a_tcp_connection_is_read_as_twisted_fills_and_drains_it() -> None:
    """Empty, then holding what write() queued, then partly sent (the rest counted), then empty once all is sent."""
    connection, peer = _tcp_pair()
    try:
        assert knows_write_buffer(connection) and not knows_write_buffer(StringTransport())
        assert write_buffer_empty(connection) and buffered_bytes(connection) == 0
        data = b"x" * (8 << 20)  # more than a socket buffer takes at once
        connection.write(data)
        assert not write_buffer_empty(connection) and buffered_bytes(connection) == len(data)
        connection.doWrite()
        left = buffered_bytes(connection)
        assert 0 < left < len(data) and not write_buffer_empty(connection)
        received = 0
        while not write_buffer_empty(connection):
            received += len(peer.recv(1 << 20))
            connection.doWrite()
        assert buffered_bytes(connection) == 0
    finally:
        connection.socket.close()
        peer.close()
    # the worker pool reads a process pipe's buffer the same way
    assert issubclass(process.ProcessWriter, abstract.FileDescriptor)
    assert issubclass(tcp.Connection, abstract.FileDescriptor)


# twisted.web client side ---------------------------------------------------------------------


def test_pool_builds_its_connections_with_the_quiet_factory() -> None:
    """HTTPConnectionPool still picks its connection factory from the C{_factory} attribute."""
    assert "_factory" in vars(HTTPConnectionPool)
    assert _QuietFactory.noisy is False
    pool = QuietConnectionPool(MemoryReactorClock())
    assert pool._factory is _QuietFactory


def _agent_protocol() -> tuple[HTTP11ClientProtocol, StringTransport]:
    protocol = HTTP11ClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def _failure_of(d: Deferred[Any]) -> Failure:
    results: list[Any] = []
    d.addBoth(results.append)
    assert len(results) == 1 and isinstance(results[0], Failure), results
    return results[0]


def test_the_agent_refuses_two_host_headers_with_request_generation_failed() -> None:
    """The Agent's HTTP/1.1 client fails a request with two Host headers as RequestGenerationFailed wrapping BadHeaders."""
    protocol, transport = _agent_protocol()
    line = ClientRequestLine(b"GET", b"/", Headers({b"Host": [b"a", b"b"]}), None)
    failure = _failure_of(protocol.request(line))
    assert failure.check(RequestGenerationFailed)
    assert [r.type for r in failure.value.reasons] == [BadHeaders]
    assert "Exactly one Host header required" in str(failure.value.reasons[0].value)


@pytest.mark.parametrize(("answer", "error"), [(b"NOT HTTP\r\n\r\n", ParseError), (b"HTTP/x 200 OK\r\n\r\n", BadResponseVersion)])
def test_the_agent_reports_a_malformed_status_line_with_these_errors(answer: bytes, error: type) -> None:
    """A status line that is not HTTP fails as ParseError, a bad version as BadResponseVersion, inside ResponseFailed."""
    protocol, transport = _agent_protocol()
    d = protocol.request(ClientRequestLine(b"GET", b"/", Headers({b"Host": [b"o"]}), None))
    protocol.dataReceived(answer)
    failure = _failure_of(d)
    assert failure.check(ResponseFailed)
    assert [r.type for r in failure.value.reasons] == [error]


class _Body(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


def test_the_agent_reports_a_short_body_as_data_loss() -> None:
    """A body closed before its Content-Length ends as ResponseFailed holding the connection's reason and DataLoss."""
    protocol, transport = _agent_protocol()
    responses: list[Any] = []
    protocol.request(ClientRequestLine(b"GET", b"/", Headers({b"Host": [b"o"]}), None)).addCallback(responses.append)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
    body = _Body()
    responses[0].deliverBody(body)
    protocol.connectionLost(Failure(ConnectionResetLike()))
    assert body.data == b"hello"
    assert body.reason is not None and body.reason.check(ResponseFailed)
    assert [r.type for r in body.reason.value.reasons] == [ConnectionResetLike, DataLoss]


class ConnectionResetLike(Exception):
    """The origin dropped the connection."""


def test_the_chunked_decoder_takes_a_data_and_a_finish_callback() -> None:
    """ChunkedTransferDecoder(data, finish) hands over chunk payloads, then what follows the last chunk."""
    data: list[bytes] = []
    rest: list[bytes] = []
    decoder = ChunkedTransferDecoder(data.append, rest.append)
    decoder.dataReceived(b"5\r\nhel")
    decoder.dataReceived(b"lo\r\n1;ext=1\r\n!\r\n0\r\n\r\nNEXT")
    assert b"".join(data) == b"hello!"
    assert rest == [b"NEXT"]


@pytest.mark.parametrize(("text", "value"), [(b"0", 0), (b"12", 12), (b" 12\t", 12), (b"007", 7)])
def test_decint_reads_decimal_digits(text: bytes, value: int) -> None:
    """Digits, with spaces or tabs around them, are a Content-Length."""
    assert decint(text) == value


@pytest.mark.parametrize("text", [b"", b"+1", b"-1", b"1_0", b"0x1", b"1 2", b"\xd9\xa1"])
def test_decint_refuses_what_int_would_take(text: bytes) -> None:
    """Signs, underscores, inner spaces, hex and non-ASCII digits are not a Content-Length."""
    with pytest.raises(ValueError):
        decint(text)


@pytest.mark.parametrize(("text", "token"), [(b"GET", True), (b"M-SEARCH", True), (b"x!#$%&'*+.^_`|~", True), (b"", False), (b"G T", False), (b"GET/", False), (b"G\xc3\xa9T", False)])
def test_istoken_is_rfc_9110s_token(text: bytes, token: bool) -> None:
    """A method is a token: letters, digits and the RFC's symbols, at least one."""
    assert istoken(text) is token


# autobahn ------------------------------------------------------------------------------------


def test_autobahn_formats_its_options_with_its_modules_pformat_on_every_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an autobahn server connection calls the protocol module's global pformat (the call LazyOptionsDump defers)."""
    calls: list[object] = []

    def recording(value: object, *args: Any, **kw: Any) -> str:
        calls.append(value)
        return pformat(value, *args, **kw)

    monkeypatch.setattr(autobahn_protocol, "pformat", recording)
    factory = WebSocketServerFactory(reactor=MemoryReactorClock())
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(openHandshakeTimeout=0)  # no timer left behind
    protocol = factory.buildProtocol(None)
    assert "_connectionMade" in vars(autobahn_protocol.WebSocketProtocol)
    protocol.makeConnection(StringTransport())
    assert calls, "autobahn no longer pretty-prints its options through its module's pformat"


def test_lazy_options_dump_swaps_pformat_only_for_the_connection() -> None:
    """During autobahn's connection set-up the module's pformat is LazyPformat; pprint's is back right after, even on error."""
    seen: list[object] = []

    class Base:
        fail = False

        def _connectionMade(self) -> None:
            seen.append(autobahn_protocol.pformat)
            if self.fail:
                raise RuntimeError("set-up failed")

    class Probe(LazyOptionsDump, Base):
        pass

    Probe()._connectionMade()
    failing = Probe()
    failing.fail = True
    with pytest.raises(RuntimeError):
        failing._connectionMade()
    assert seen == [LazyPformat, LazyPformat]
    assert autobahn_protocol.pformat is pformat
    assert issubclass(WebSocketServerProtocol, autobahn_protocol.WebSocketProtocol)


def _comparable(value: Any) -> Any:
    """A value autobahn's connection set-up leaves, as something two set-ups can be compared by."""
    if isinstance(value, Deferred):
        return ("Deferred", value.called)
    if isinstance(value, autobahn_protocol.TrafficStats):
        return ("TrafficStats", sorted(vars(value).items()))
    if isinstance(value, (autobahn_protocol.Utf8Validator, StringTransport, WebSocketServerFactory)):
        return type(value)  # (each its own, fresh)
    if type(value).__name__ == "deque":
        return ("deque", list(value))
    if callable(value) and hasattr(value, "__self__"):
        return ("bound", value.__func__)
    return value


class _TcpPeerTransport(StringTransport):
    """A StringTransport that records TCP_NODELAY settings."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "192.0.2.7", 40123))
        self.nodelay: list[bool] = []

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay.append(enabled)

    def unregisterProducer(self) -> None:
        self.producer = None  # (as a TCP transport: autobahn's dropConnection unregisters none)


def _connected(fast: bool, *, handshake_timeout: float = 0, nodelay_already: bool = False, address: bool = False) -> tuple[Any, Any]:
    from pushpin_tx.websocket.client_side import make_client_factory

    reactor = MemoryReactorClock()
    factory = make_client_factory(reactor)
    attributes: dict[str, Any] = {} if fast else {"_fast_setup": False}  # False: autobahn's own set-up
    if handshake_timeout:
        attributes["openHandshakeTimeout"] = handshake_timeout
    factory.protocol = type("ClientWebSocket", (factory.protocol,), attributes)
    protocol = factory.buildProtocol(None)
    transport = _TcpPeerTransport()
    protocol.nodelay_already = nodelay_already
    if address:
        protocol.peer_address = transport.getPeer()
    protocol.makeConnection(transport)
    return protocol, transport


@pytest.mark.parametrize("handshake_timeout", [0, 5])
@pytest.mark.parametrize("address", [False, True])
def test_fast_server_setup_leaves_what_autobahns_connection_set_up_does(handshake_timeout: float, address: bool) -> None:
    """FastServerSetup's connectionMade leaves every attribute autobahn's would, with the same values."""
    slow, slow_transport = _connected(False, handshake_timeout=handshake_timeout)
    quick, quick_transport = _connected(True, handshake_timeout=handshake_timeout, address=address)
    assert type(slow)._fast_setup is False and type(quick)._can_set_up_fast()
    # every attribute either leaves on the protocol, read as autobahn reads it (FastServerSetup
    # holds the constant part of autobahn's initial state as class attributes)
    names = (set(vars(slow)) | set(vars(quick))) - {"peer_address", "nodelay_already"}
    slow_state = {k: _comparable(getattr(slow, k, "<unset>")) for k in names}
    quick_state = {k: _comparable(getattr(quick, k, "<unset>")) for k in names}
    if handshake_timeout:  # a timer each (autobahn's batched timer: compared by presence)
        for protocol, state in [(slow, slow_state), (quick, quick_state)]:
            assert state.pop("openHandshakeTimeoutCall") is not None
            protocol.openHandshakeTimeoutCall.cancel()
    assert quick_state == slow_state
    assert quick.peer == "tcp4:192.0.2.7:40123"
    assert quick.factory.countConnections == slow.factory.countConnections == 1
    assert quick_transport.nodelay == slow_transport.nodelay == [True]


def test_fast_server_setup_makes_the_utf8_validator_when_first_used() -> None:
    """A connection has no UTF-8 validator until autobahn first asks for one; then it keeps that one, and a text message is validated."""
    quick, transport = _connected(True)
    assert "utf8validator" not in vars(quick)
    validator = quick.utf8validator
    assert isinstance(validator, autobahn_protocol.Utf8Validator) and quick.utf8validator is validator
    messages: list[bytes] = []
    quick.onMessage = lambda payload, binary: messages.append(payload)
    accept_server_handshake(quick, _HANDSHAKES[0][0].encode("latin-1"), quick.answer)
    other, _ = _connected(True)
    assert "utf8validator" not in vars(other)
    accept_server_handshake(other, _HANDSHAKES[0][0].encode("latin-1"), other.answer)
    other.onMessage = lambda payload, binary: messages.append(payload)
    mask = b"abcd"
    payload = "héllo".encode()
    other.dataReceived(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    assert messages == [payload] and "utf8validator" in vars(other)
    bad = b"\xff\xfe"
    other.dataReceived(bytes([0x81, 0x80 | len(bad)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(bad)))
    assert messages == [payload] and other.localCloseCode == 1007  # invalid UTF-8: closed as autobahn does
    if other.closeHandshakeTimeoutCall is not None:
        other.closeHandshakeTimeoutCall.cancel()


def test_fast_server_setup_leaves_tcp_nodelay_to_whoever_set_it() -> None:
    """With nodelay_already (twisted.web's HTTPChannel turned it on) the option is not set a second time."""
    quick, transport = _connected(True, nodelay_already=True)
    assert transport.nodelay == []
    assert quick.state == autobahn_protocol.WebSocketProtocol.STATE_CONNECTING


def test_fast_server_setup_logs_autobahns_option_list() -> None:
    """The options debug line, when written, reads as autobahn's: each option, its value, where it came from."""
    from pushpin_tx._compat import _LazyOptionsLog

    quick, _ = _connected(True)
    expected = pformat([(name, getattr(quick, name), type(quick).__name__) for name in quick.CONFIG_ATTRS])
    assert f"{_LazyOptionsLog(quick)}" == str(_LazyOptionsLog(quick)) == expected


def test_fast_server_setup_leaves_tls_and_per_instance_options_to_autobahn() -> None:
    """A class not holding every option as a class attribute takes autobahn's own set-up."""
    class Plain(FastServerSetup, WebSocketServerProtocol):
        pass

    factory = WebSocketServerFactory(reactor=MemoryReactorClock())
    factory.protocol = Plain
    factory.setProtocolOptions(openHandshakeTimeout=0)
    protocol = factory.buildProtocol(None)
    assert not Plain._can_set_up_fast()
    protocol.makeConnection(StringTransport())
    assert protocol.state == autobahn_protocol.WebSocketProtocol.STATE_CONNECTING
    assert "tcpNoDelay" in vars(protocol)  # copied by autobahn


class _TlsPeerTransport(_TcpPeerTransport):
    """As L{_TcpPeerTransport}, but a TLS one (C{ISSLTransport})."""

    def __init__(self) -> None:
        super().__init__()
        directlyProvides(self, ISSLTransport)


def test_fast_server_setup_leaves_a_tls_transport_to_autobahn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over TLS, autobahn's own connectionMade runs (TLS transport details, TCP_NODELAY set), and leaves what it leaves without FastServerSetup."""
    from autobahn.twisted import websocket as autobahn_twisted_websocket
    from autobahn.wamp.types import TransportDetails

    asked: list[Any] = []

    def details(transport: Any, is_server: bool) -> TransportDetails:  # (autobahn's own needs a real TLSMemoryBIOProtocol)
        asked.append(transport)
        return TransportDetails(channel_type=TransportDetails.CHANNEL_TYPE_TLS, peer="tcp4:192.0.2.7:40123", is_server=is_server,
                                own_pid=1, own_tid=1, own_fd=-1, is_secure=True, channel_id={})

    monkeypatch.setattr(autobahn_twisted_websocket, "create_transport_details", details)
    monkeypatch.setattr(sys.modules[__name__], "_TcpPeerTransport", _TlsPeerTransport)
    slow, slow_transport = _connected(False)
    quick, quick_transport = _connected(True, nodelay_already=True, address=True)
    names = (set(vars(slow)) | set(vars(quick))) - {"peer_address", "nodelay_already"}
    assert {k: _comparable(getattr(quick, k, "<unset>")) for k in names} == {k: _comparable(getattr(slow, k, "<unset>")) for k in names}
    assert len(asked) == 2 and quick._transport_details.is_secure
    assert quick_transport.nodelay == slow_transport.nodelay == [True]


def test_debug_enabled_follows_txaios_log_level() -> None:
    """A txaio logger below debug level has its debug method bound to txaio's no-op; at debug level it writes."""
    import txaio

    log = txaio.make_logger()
    log.set_log_level("info")
    assert not debug_enabled(log)
    assert not debug_enabled(WebSocketServerProtocol.log)  # autobahn's, at the default level
    log.set_log_level("debug")
    assert debug_enabled(log)


def _handshake(extensions: bytes | None) -> WebSocketServerProtocol:
    from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept

    factory = WebSocketServerFactory()
    factory.protocol = WebSocketServerProtocol
    factory.setProtocolOptions(perMessageCompressionAccept=lambda offers: next(
        (PerMessageDeflateOfferAccept(o) for o in offers if isinstance(o, PerMessageDeflateOffer)), None))
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        + (b"Sec-WebSocket-Extensions: " + extensions + b"\r\n" if extensions else b"") + b"\r\n")
    return protocol


def test_lazy_highlights_format_as_autobahns() -> None:
    """lazy_hltype / lazy_hlval give autobahn's hltype / hlval text (terminal colours included) once formatted."""
    from autobahn.util import hltype, hlval

    assert f"{lazy_hltype(WebSocketServerProtocol.sendData)}" == hltype(WebSocketServerProtocol.sendData)
    assert str(lazy_hltype(test_lazy_highlights_format_as_autobahns)) == hltype(test_lazy_highlights_format_as_autobahns)
    for args, kw in [((42,), {}), (("tcp4:127.0.0.1:5",), {}), (("x",), {"color": "red", "bold": False})]:
        assert f"{lazy_hlval(*args, **kw)}" == hlval(*args, **kw)
    assert f"{lazy_hlval(7):>5}" == f"{hlval(7):>5}"


@pytest.mark.parametrize("module_name", ["autobahn.websocket.protocol", "autobahn.twisted.websocket"])
def test_autobahn_passes_its_highlights_only_as_log_fields(module_name: str) -> None:
    """Every hltype(...) / hlval(...) call in autobahn's WebSocket modules is a keyword argument of a log call (so a lazy value is never used as a str)."""
    import ast
    import importlib
    import inspect

    module = importlib.import_module(module_name)
    tree = ast.parse(inspect.getsource(module))
    as_fields = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("debug", "info", "warn", "error", "trace", "failure", "critical"):
            as_fields.update(id(k.value) for k in node.keywords)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("hltype", "hlval")]
    assert calls, f"{module_name} no longer calls hltype/hlval"
    assert all(id(c) in as_fields for c in calls), f"{module_name} uses an hltype/hlval result outside a log field"
    assert getattr(module, "hltype") in (lazy_hltype, __import__("autobahn.util").util.hltype)


def test_quiet_highlighting_makes_autobahns_module_globals_lazy() -> None:
    """After quiet_autobahn_highlighting(), autobahn's WebSocket modules highlight with the lazy helpers."""
    from autobahn.twisted import websocket as twisted_websocket

    quiet_autobahn_highlighting()
    quiet_autobahn_highlighting()  # idempotent
    for module in (autobahn_protocol, twisted_websocket):
        assert module.hltype is lazy_hltype
        assert module.hlval is lazy_hlval


_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

#: opening requests: (request, whether the fast path takes it); the others must be left to autobahn
_HANDSHAKES = [
    (f"GET /ws?channel=a HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", True),
    (f"GET /a/b?x=1&x=2&y HTTP/1.1\r\nHost: Example.COM:8080\r\nUpgrade: foo, WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, super\r\nOrigin: https://app.example.com\r\nX-Extra: v\r\n\r\n", True),
    (f"GET / HTTP/1.1\r\nHost: [::1]\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\nOrigin: null\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n", True),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Origin: http://h\r\n\r\n", True),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, chat\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h:x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET /#frag HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET / HTTP/1.0\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: close\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    ("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short==\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    ("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ!=\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 12\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: x\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\nOrigin: not a url\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\nX-Bad: a\x01b\r\n\r\n", False),
    (f"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x80abcd", False),
    ("GET / HTTP/1.1\r\nHost: h\r\n\r\n", False),
]

#: what autobahn's handshake leaves on the protocol, compared between the two paths
_HANDSHAKE_STATE = ("state", "data", "http_request_data", "http_status_line", "http_headers", "http_request_uri", "http_request_path",
                    "http_request_params", "http_request_host", "websocket_version", "websocket_protocols", "websocket_origin",
                    "websocket_extensions", "_wskey", "websocket_protocol_in_use", "http_response_data", "wasNotCleanReason",
                    "inside_message", "current_frame")


def _handshake_protocol(compression: bool, subprotocol: str | None) -> Any:
    from pushpin_tx.websocket.client_side import make_client_factory

    factory = make_client_factory(MemoryReactorClock(), allow_compression=compression)
    protocol = factory.buildProtocol(None)
    protocol._accept = (subprotocol, {"X-Origin-Said": ["yes"]})
    transport = _TcpLikeTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class _TcpLikeTransport(StringTransport):
    """A StringTransport that, as a TCP transport, lets a producer be unregistered when none is (autobahn's dropConnection does)."""

    def unregisterProducer(self) -> None:
        self.producer = None


def _handshake_state(protocol: Any) -> dict[str, Any]:
    state = {name: getattr(protocol, name, "<unset>") for name in _HANDSHAKE_STATE}
    state["preopen_in"] = protocol.trafficStats.preopenIncomingOctetsWireLevel
    state["preopen_out"] = protocol.trafficStats.preopenOutgoingOctetsWireLevel
    state["compress"] = type(protocol._perMessageCompress).__name__
    state["extensions_in_use"] = [type(e).__name__ for e in getattr(protocol, "websocket_extensions_in_use", [])]
    state["is_open"] = protocol.is_open.called
    state["attributes"] = sorted(vars(protocol))
    return state


@pytest.mark.parametrize("compression", [False, True])
@pytest.mark.parametrize("subprotocol", [None, "super"])
@pytest.mark.parametrize("request_text,fast", _HANDSHAKES)
def test_fast_server_handshake_does_what_autobahns_does(request_text: str, fast: bool, compression: bool, subprotocol: str | None) -> None:
    """accept_server_handshake leaves the same state and sends the same bytes as autobahn's own handshake, or declines and changes nothing."""
    data = request_text.encode("latin-1")
    slow, slow_transport = _handshake_protocol(compression, subprotocol)
    slow.dataReceived(data)
    quick, quick_transport = _handshake_protocol(compression, subprotocol)
    before = _handshake_state(quick)
    took = accept_server_handshake(quick, data, quick.answer)
    assert took is fast
    if not took:
        assert _handshake_state(quick) == before and quick_transport.value() == b""
        quick.dataReceived(data)
    assert quick_transport.value() == slow_transport.value()
    assert _handshake_state(quick) == _handshake_state(slow)
    assert (slow.state == autobahn_protocol.WebSocketProtocol.STATE_OPEN) is (fast or slow.state == autobahn_protocol.WebSocketProtocol.STATE_OPEN)


_HEADER_VALUE = st.binary(max_size=6).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").strip(b" \t"))


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from([b"/ws", b"/ws?channel=a&b", b"/w\x7fs", b"/\xb0"]),
    st.lists(st.tuples(st.sampled_from([b"Host", b"Upgrade", b"Sec-Websocket-Key", b"X-A", b"Origin"]),
                       st.lists(_HEADER_VALUE, min_size=1, max_size=3)),
             max_size=5, unique_by=lambda h: h[0]),
)
def test_a_parsed_request_head_is_what_autobahns_parser_reads_from_its_bytes(uri: bytes, headers: list[Any]) -> None:
    """parsed_request_head gives what parseHttpHeader gives for the head upgrade() writes, or None where it raises."""
    lines = [(n, b",".join(v)) for n, v in headers]
    data = b"GET " + uri + b" HTTP/1.1\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in lines) + b"\r\n"
    try:
        expected = autobahn_protocol.parseHttpHeader(data)
    except ValueError:
        expected = None
    assert parsed_request_head(b"GET", uri, lines) == expected


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/ab?#;:=&%+[]\t .", max_size=24))
def test_the_handshakes_uri_split_is_urlparses_and_parse_qss(uri: str) -> None:
    """The request target's path, query, fragment and parameters, where the fast path splits them, are urlparse's and parse_qs's."""
    from urllib.parse import parse_qs, urlparse

    from pushpin_tx._compat import _parse_qs_plain, _split_origin_form

    split = _split_origin_form(uri)
    if split is not None:
        parts = urlparse(uri)
        assert split == (parts.path, parts.query, parts.fragment)
    params = _parse_qs_plain(uri)
    if params is not None:
        assert params == parse_qs(uri)
    assert _split_origin_form("/ws?channel=a") == ("/ws", "channel=a", "")
    assert _parse_qs_plain("channel=a&channel=b&x=&y") == {"channel": ["a", "b"]}


def test_fast_server_handshake_declines_options_it_does_not_cover() -> None:
    """A trusted X-Forwarded-For, a connection limit or an external port leave the handshake to autobahn."""
    data = _HANDSHAKES[0][0].encode("latin-1")
    for option, value in [("trustXForwardedFor", 1), ("maxConnections", 10)]:
        protocol, transport = _handshake_protocol(False, None)
        setattr(protocol, option, value)
        assert not accept_server_handshake(protocol, data, protocol.answer)
        assert transport.value() == b""
    protocol, transport = _handshake_protocol(False, None)
    protocol.factory.externalPort = 80
    assert not accept_server_handshake(protocol, data, protocol.answer)
    opened, _ = _handshake_protocol(False, None)
    assert accept_server_handshake(opened, data, opened.answer)
    assert not accept_server_handshake(opened, data, opened.answer)  # open already


def test_autobahn_keeps_the_accepted_compression_in_per_message_compress() -> None:
    """After the handshake, autobahn's _perMessageCompress is set when deflate was accepted, None otherwise."""
    assert compresses(_handshake(b"permessage-deflate; client_max_window_bits")) is True
    assert compresses(_handshake(None)) is False


# the rule itself -------------------------------------------------------------------------------


# twisted.web HTTP/2 server side -------------------------------------------------------------


def test_h2_names_are_twisted_webs_http2_server() -> None:
    """H2Connection and H2Stream are twisted.web's HTTP/2 connection and stream (what its ALPN-negotiating channel builds), available with h2 installed."""
    assert h2_available()
    assert H2Connection.__module__ == "twisted.web._http2" and H2Stream.__module__ == "twisted.web._http2"
    assert http._GenericHTTPChannelProtocol.dataReceived.__code__.co_names.count("H2Connection") == 1
    for name in ("remainingOutboundWindow", "pauseProducing", "resumeProducing", "timeoutConnection", "writeHeaders", "connectionLost"):
        assert callable(getattr(H2Connection, name)), name
    for name in ("flowControlBlocked", "windowUpdated", "abortConnection", "command", "path"):
        assert hasattr(H2Stream, name) or name in H2Stream.__init__.__code__.co_names, name


def test_h2_burst_loop_replaces_twisteds_with_the_same_state() -> None:
    """The burst loop takes over twisted.web's _sendPrioritisedData, whose state (queues, sentinel, blocked transport, waiting deferred) it reads as twisted.web's does."""
    import twisted.web._http2 as twisted_h2

    assert issubclass(H2BurstConnection, H2Connection)
    assert H2BurstConnection._sendPrioritisedData is not H2Connection._sendPrioritisedData
    names = set(H2Connection._sendPrioritisedData.__code__.co_names)
    assert {"_stillProducing", "_consumerBlocked", "_sendingDeferred", "_outboundStreamQueues", "_requestDone", "_reactor",
            "_END_STREAM_SENTINEL", "priority", "local_flow_control_window", "flowControlBlocked"} <= names
    assert twisted_h2._END_STREAM_SENTINEL is not None
    for caller in ("writeDataToStream", "endRequest"):  # they restart a waiting loop through _sendingDeferred
        assert "_sendingDeferred" in getattr(H2Connection, caller).__code__.co_names, caller


def test_h2_wake_sender_restarts_a_stopped_sending_loop() -> None:
    """With every stream blocked the sending loop waits on _sendingDeferred; h2_wake_sender fires it and the loop runs again (and waits again)."""
    clock = MemoryReactorClock()
    connection = H2Connection(clock)
    connection.makeConnection(StringTransport())
    clock.advance(0)  # the loop's first pass finds no stream and waits
    waiting = connection._sendingDeferred
    assert waiting is not None
    h2_wake_sender(connection)
    assert waiting.called and connection._sendingDeferred is not None and connection._sendingDeferred is not waiting
    h2_wake_sender(H2Connection(clock))  # not waiting: nothing to do
    connection.connectionLost(Failure(Exception("done")))


def _private_imports(path: Any) -> list[str]:
    """C{module:name} for each private Twisted or autobahn module or name imported in C{path}."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("twisted", "autobahn"):
            names = [alias.name for alias in node.names]
            if any(part.startswith("_") for part in node.module.split(".")) or any(n.startswith("_") for n in names):
                found.append(f"{node.module}:{','.join(names)}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in ("twisted", "autobahn") and any(p.startswith("_") for p in parts):
                    found.append(alias.name)
    return found


def test_only_compat_imports_private_twisted_or_autobahn_names() -> None:
    """No module but pushpin_tx/_compat.py imports a private module or name of Twisted or autobahn."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "pushpin_tx"
    offenders = {
        str(path.relative_to(package)): imports
        for path in sorted(package.rglob("*.py"))
        if path.name != "_compat.py" and (imports := _private_imports(path))
    }
    assert offenders == {}
