"""
The client-facing site's cheaper paths: a held response's head leaves with what follows it
(one send, not two), whatever follows it; TLS and the local address are worked out once,
with the same answers twisted.web gives.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from pushpin_tx.web.clientsite import ClientSite, _listening_address


class CountingTransport(StringTransport):
    """A StringTransport that records each write separately."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


class Held(Resource):
    """Runs C{script(request)} and leaves the request open."""

    isLeaf = True

    def __init__(self, script: Any) -> None:
        super().__init__()
        self.script = script

    def render(self, request: Any) -> object:
        self.script(request)
        return NOT_DONE_YET


class Producer:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def serve(script: Any) -> CountingTransport:
    """One GET through a ClientSite whose resource runs C{script}; the client transport."""
    site = ClientSite(Held(script), reactor=MemoryReactorClock())
    channel = site.buildProtocol(None)
    transport = CountingTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
    return transport


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
PLAIN = [(b"Content-Type", b"text/plain")]


@pytest.mark.parametrize(
    "script, writes",
    [
        # a held stream: the head and its initial body in one send
        (lambda r: (r.send_head(200, b"OK", PLAIN, None), r.write_body(b"hi\n")), [HEAD + b"3\r\nhi\n\r\n"]),
        # bytes already framed by the router ride with the head too
        (lambda r: (r.send_head(200, b"OK", PLAIN, None), r.write_framed(b"2\r\nab\r\n")), [HEAD + b"2\r\nab\r\n"]),
        # no body follows, but the hold registers its producer: the head goes at once
        (lambda r: (r.send_head(200, b"OK", PLAIN, None), r.register_producer(Producer())), [HEAD]),
        # an empty answer with Content-Length: the head goes when the response ends
        (lambda r: (r.send_head(204, b"No Content", [], 0), r.finish()), [b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"]),
        # a chunked answer ended at once: head and last chunk together
        (lambda r: (r.send_head(200, b"OK", PLAIN, None), r.finish()), [HEAD + b"0\r\n\r\n"]),
    ],
)
def test_a_held_response_head_leaves_with_what_follows(script: Any, writes: list[bytes]) -> None:
    """The head of a held response is written together with whatever is written next, never lost."""
    transport = serve(script)
    assert transport.writes == writes


@pytest.mark.parametrize("end", ["close", "abort"])
def test_a_head_alone_is_sent_before_the_connection_is_closed(end: str) -> None:
    """Closing or dropping right after the head still sends the head first, as before."""
    transport = serve(lambda r: (r.send_head(200, b"OK", PLAIN, None), getattr(r, end)()))
    assert transport.writes == [HEAD]


def test_a_plain_connection_is_not_secure_and_the_answer_follows_the_transport() -> None:
    """isSecure is False on plain TCP and is asked again when the transport changes (a TLS one: True)."""
    site = ClientSite(Held(lambda r: None), reactor=MemoryReactorClock())
    channel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    assert channel.isSecure() is False and channel.isSecure() is False
    from tests.proxyfakes import _TLSStringTransport

    channel.transport = _TLSStringTransport()
    assert channel.isSecure() is True


@pytest.mark.parametrize("interface, known", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_the_local_address_of_an_accepted_connection_matches_getsockname(interface: str, known: bool) -> None:
    """On a port bound to one address, that address is the connection's local address; a wildcard port is asked per connection."""
    reactor = MemoryReactorClock()
    factory = ServerFactory()
    factory.protocol = Protocol
    port = tcp.Port(0, factory, interface=interface, reactor=reactor)
    port.startListening()
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    try:
        accepted, address = port.socket.accept()
        server = tcp.Server(accepted, Protocol(), address, port, 1, reactor)
        try:
            found = _listening_address(server)
            if known:
                assert found == server.getHost()
            else:
                assert found is None
        finally:
            accepted.close()
    finally:
        client.close()
        port.socket.close()
    assert _listening_address(StringTransport()) is None


class _Count:
    def __init__(self) -> None:
        self.count = 0

    def opened(self) -> None:
        self.count += 1

    def closed(self) -> None:
        self.count -= 1


def test_each_connection_holds_a_place_in_the_connection_count_until_it_ends() -> None:
    """client_maxconn: a client connection counts from accept to close, once, whatever it sent."""
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    count = _Count()
    site = ClientSite(Held(lambda r: None), reactor=MemoryReactorClock(), limit=count)
    channels = [site.buildProtocol(None) for _ in range(2)]
    for channel in channels:
        channel.makeConnection(StringTransport())
    channels[0].dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert count.count == 2
    for channel in channels:
        channel.connectionLost(Failure(ConnectionDone()))
    assert count.count == 0


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"GARBAGE\r\n\r\n", "Failed to parse request: invalid token"),
        (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", "Failed to parse request: invalid HTTP version"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n", "Failed to parse request: invalid header name"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", "Failed to parse request: invalid content length"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: " + b"1" * 100 + b"\r\n" * 1 + (b"X-B: " + b"2" * 100 + b"\r\n") * 90 + b"\r\n", "Request header size exceeded limit of 8192 bytes."),
    ],
)
def test_a_malformed_request_gets_pushpin_140s_text_answer(data: bytes, reason: str) -> None:
    """A request that cannot be parsed is answered as Pushpin 1.40's connmgr does: an HTTP/1.0 400 with the reason as text, then the close."""
    site = ClientSite(Held(lambda r: None), reactor=MemoryReactorClock())
    channel = site.buildProtocol(None)
    transport = CountingTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    body = reason.encode() + b"\n"
    assert transport.value() == b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    assert transport.disconnecting


@pytest.mark.parametrize("uri", [b"/s", b"/s?", b"/s?a=1&b=&a=%20x&c", b"/s?channel=x+y&=z"])
def test_request_args_and_paths_are_what_twisted_web_gives(uri: bytes) -> None:
    """A request's args (parsed when asked for, not per request), path and empty pre/post paths are twisted.web's own."""
    from twisted.web import http

    seen: list[Any] = []
    site = ClientSite(Held(seen.append), reactor=MemoryReactorClock())
    channel = site.buildProtocol(None)
    channel.makeConnection(StringTransport())
    channel.dataReceived(b"GET " + uri + b" HTTP/1.1\r\nHost: example.com\r\n\r\n")
    [request] = seen
    query = uri.split(b"?", 1)
    assert request.args == (http.parse_qs(query[1], 1) if len(query) == 2 else {})
    assert (request.method, request.uri, request.path, request.clientproto) == (b"GET", uri, query[0], b"HTTP/1.1")
    assert list(request.prepath) == list(request.postpath) == list(request.sitepath) == []
    assert request.prePathURL() == b"http://example.com:12345/"  # (StringTransport's own port)
    request.args = {b"k": [b"v"]}
    assert request.args == {b"k": [b"v"]}


def _idle_site(timeout: float, script: Any = None) -> tuple[MemoryReactorClock, ClientSite]:
    reactor = MemoryReactorClock()
    return reactor, ClientSite(Held(script or (lambda request: None)), reactor=reactor, timeout=timeout)


def _connect(site: ClientSite) -> tuple[Any, StringTransport]:
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


@pytest.mark.parametrize("timeout", [0.5, 1.0, 10.0, 43200.0])
def test_an_idle_connection_times_out_after_exactly_its_timeout(timeout: float) -> None:
    """With nothing received, a connection is timed out (closed) once its whole idle timeout has passed, not before (the timer is armed lazily, for the rest of its period)."""
    reactor, site = _idle_site(timeout)
    _, transport = _connect(site)
    reactor.advance(timeout - 0.01)
    assert transport.connected and not transport.disconnecting
    reactor.advance(0.01)
    assert transport.disconnecting


def test_bytes_received_restart_the_idle_period_before_and_after_the_timer_is_armed() -> None:
    """Part of a request restarts the idle period whether its timer was armed yet or not."""
    reactor, site = _idle_site(10.0)
    channel, transport = _connect(site)
    reactor.advance(0.5)
    channel.dataReceived(b"GET / HTTP/1.1\r\n")  # not armed yet: due at 10.5
    reactor.advance(5.0)
    channel.dataReceived(b"Host: example.com\r\n")  # armed by now: due at 15.5
    reactor.advance(9.99)
    assert not transport.disconnecting
    reactor.advance(0.01)
    assert transport.disconnecting


def test_a_connection_whose_request_came_at_once_never_arms_an_idle_timer() -> None:
    """A held request has no idle timeout: a connection whose request arrived in its first second leaves no timer in the reactor, only the site's one arming turn."""
    reactor, site = _idle_site(60.0)
    for _ in range(3):
        channel, _ = _connect(site)
        channel.dataReceived(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert len(reactor.getDelayedCalls()) == 1  # the site's arming
    reactor.advance(1.0)
    assert reactor.getDelayedCalls() == []


def test_the_idle_timeout_starts_again_once_a_request_is_answered() -> None:
    """Between two requests of a persistent connection the idle timeout counts from the end of the answer, as twisted.web's does."""
    held: list[Any] = []
    reactor, site = _idle_site(10.0, held.append)
    channel, transport = _connect(site)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n")
    reactor.advance(5.0)
    [request] = held
    request.send_head(200, b"OK", [], 0)
    request.finish()
    reactor.advance(9.99)
    assert not transport.disconnecting
    reactor.advance(0.01)
    assert transport.disconnecting


class _Recording(Resource):
    """Records what each request looked like to a resource, and answers it at once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[Any, ...]] = []

    def render(self, request: Any) -> bytes:
        self.seen.append((request.method, request.uri, request.path, request.clientproto,
                          [(k, list(v)) for k, v in request.requestHeaders.getAllRawHeaders()],
                          request.content.read(), request.channel.persistent))
        return b"ok"


_TWO_READS = "two reads"


@pytest.mark.parametrize(
    "data",
    [
        b"GET /ws?channel=a HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: x\r\nX-Dup: 1\r\nx-dup:  2 \t\r\nX-DUP:3\r\nEmpty:\r\nDnt: 1\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET http://example.com/a?b=c HTTP/1.1\r\nHost: y\r\nCookie: a=b; c=d\r\n\r\n",
        # left to twisted.web: a body, its length or a 100, folded, odd or bad lines, pipelining
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"PUT /p HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Lf: a\nb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 600 + b"\r\n",
        b"GET / HTTP/1.1\r\n" + (b"X-B: " + b"2" * 100 + b"\r\n") * 90 + b"\r\n",
        # a head in two reads: the second is not the start of a request
        (b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r\n"),
        # keep-alive: the second request on the connection starts afresh
        (b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
        # after a request with Connection: close, what follows is dropped
        (b"GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
    ],
)
def test_a_head_read_whole_is_what_twisted_web_makes_of_it(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Every request head, whether parsed in one pass (ClientChannel._whole_head) or left to
    twisted.web, reaches the resource as twisted.web's own parser makes it (method, target,
    version, headers by canonical name in order, body, persistence) and gets the same bytes
    back, 400s included.
    """
    from pushpin_tx.web.clientsite import ClientChannel

    reads = data if isinstance(data, tuple) else (data,)

    def run() -> tuple[Any, ...]:
        resource = _Recording()
        channel = ClientSite(resource, reactor=MemoryReactorClock()).buildProtocol(None)
        transport = StringTransport()
        channel.makeConnection(transport)
        for chunk in reads:
            channel.dataReceived(chunk)
        return resource.seen, transport.value(), transport.disconnecting

    whole = ClientChannel._whole_head
    taken: list[bool] = []
    monkeypatch.setattr(ClientChannel, "_whole_head", lambda self, d: taken.append(whole(self, d)) or taken[-1])
    fast = run()
    monkeypatch.setattr(ClientChannel, "_whole_head", lambda self, d: False)
    assert fast == run()
    assert fast[0] or fast[1].startswith(b"HTTP/1.0 400") or fast[1] == b""  # (something happened)


def test_a_plain_head_is_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The common heads (an upgrade, a GET with repeated headers, HTTP/1.0) take the one-pass parse, and twisted.web's line parser is not called."""
    from pushpin_tx.web.clientsite import ClientChannel

    lines: list[bytes] = []
    monkeypatch.setattr(ClientChannel, "lineReceived", lambda self, line: lines.append(line))
    resource = _Recording()
    channel = ClientSite(resource, reactor=MemoryReactorClock()).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /1 HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nX-Dup: 2\r\nUpgrade: websocket\r\n\r\n")
    channel.dataReceived(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert lines == []
    assert [(s[1], s[4]) for s in resource.seen] == [
        (b"/1", [(b"Host", [b"x"]), (b"X-Dup", [b"1", b"2"]), (b"Upgrade", [b"websocket"])]),
        (b"/2", [(b"Host", [b"x"])]),
    ]
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2


def test_a_channel_is_built_as_twisted_webs_site_builds_it() -> None:
    """ClientSite.buildProtocol sets what twisted.web's Site, HTTPFactory and Factory set (and its own additions), nothing less."""
    from twisted.web import server

    site = ClientSite(Held(lambda r: None), reactor=MemoryReactorClock(), timeout=42)
    ours = site.buildProtocol(None)
    theirs = server.Site.buildProtocol(site, None)
    assert type(ours) is type(theirs)
    theirs_state = dict(vars(theirs))
    ours_state = dict(vars(ours))
    for name in ("totalHeadersSize", "gc_epoch"):  # ClientSite's own
        ours_state.pop(name)
    assert theirs_state.keys() == ours_state.keys()
    assert {k: v for k, v in ours_state.items() if k not in ("requests", "_dataBuffer")} == {
        k: v for k, v in theirs_state.items() if k not in ("requests", "_dataBuffer")}
    assert (ours.factory, ours.site, ours.timeOut, ours.requestFactory) == (site, site, 42, site.requestFactory)
