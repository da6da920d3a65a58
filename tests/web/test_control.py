"""
The HTTP control API, byte for byte against Pushpin 1.36's answers (reference §6.2, §14.6),
on a real loopback listener in this process.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.endpoints import TCP4ServerEndpoint

from pushpin_tx.web.control import ControlResource, ControlSite, negotiate, parse_content_length, parse_head
from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.stats import Counters

from tests.integration.harness import raw_request


class Recorder:
    def __init__(self):
        self.got = []

    def deliver(self, publication, channel):
        self.got.append((channel, publication.stream_content))


@pytest.fixture
def control(reactor):
    router = ChannelRouter()
    counters = Counters()
    recovered = []
    resource = ControlResource(PublishIntake(router, counters), recover=lambda: recovered.append(1))
    site = ControlSite(resource, max_headers=10000, max_body=1000000, reactor=reactor)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    yield port.getHost().port, router, counters, recovered
    pytest_twisted.blockon(port.stopListening())


def post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Length: %d\r\n\r\n%s" % (path, extra, len(body), body)


def answer(code_line: bytes, body: bytes, extra: bytes = b"", ctype: bytes = b"text/plain") -> bytes:
    return code_line + b"\r\n" + extra + b"Content-Type: " + ctype + b"\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body


async def send(reactor, port, data):
    client = await raw_request(reactor, port, data)
    return client.received


@pytest_twisted.ensureDeferred
async def test_publish_delivers_and_answers_published(reactor, control):
    """A valid publish reaches subscribers and gets Pushpin's 200 'Published' with Connection: close."""
    port, router, counters, _ = control
    sub = Recorder()
    router.subscribe("news", sub)
    body = json.dumps({"items": [{"channel": "news", "formats": {"http-stream": {"content": "tick\n"}}}]}).encode()
    got = await send(reactor, port, post(b"/publish/", body))
    assert got == answer(b"HTTP/1.1 200 OK", b"Published\n")
    assert sub.got == [("news", b"tick\n")]
    assert counters.publishes["http"] == 1


@pytest_twisted.ensureDeferred
async def test_json_accept_gets_a_json_success_body(reactor, control):
    """Accept: application/json turns the success body into {"message":"Published"}."""
    port = control[0]
    got = await send(reactor, port, post(b"/publish", b'{"items":[]}', b"Accept: application/json\r\n"))
    assert got == answer(b"HTTP/1.1 200 OK", b'{"message":"Published"}\n', ctype=b"application/json")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", b"Body is not valid JSON.\n"),
        (b"", b"Body is not valid JSON.\n"),
        (b"[1]", b"Invalid format.\n"),
        (b"{}", b"Invalid format: object does not contain 'items'\n"),
        (b'{"items": 3}', b"Invalid format: object contains 'items' with wrong type\n"),
        (b'{"items": [{"channel": "a"}]}', b"Invalid format: no formats specified\n"),
        (b'{"items": [{"formats": {"http-stream": {"content": "x"}}}]}', b"Invalid format: publish item object does not contain 'channel'\n"),
        (b'{"items": [{"channel": "a", "formats": {"http-stream": {"content": 5}}}]}', b"Invalid format: 'http-stream' contains 'content' with wrong type\n"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_publish_errors_match_pushpin(reactor, control, body, message):
    """Each malformed publish body gets Pushpin's exact 400 text (text/plain even with JSON Accept)."""
    port = control[0]
    got = await send(reactor, port, post(b"/publish/", body, b"Accept: application/json\r\n"))
    assert got == answer(b"HTTP/1.1 400 Bad Request", message)


@pytest_twisted.ensureDeferred
async def test_publish_is_all_or_nothing(reactor, control):
    """An invalid second item rejects the request and the valid first item is not delivered."""
    port, router, _, _ = control
    sub = Recorder()
    router.subscribe("a", sub)
    body = json.dumps({"items": [{"channel": "a", "formats": {"http-stream": {"content": "x"}}}, {"channel": "b"}]}).encode()
    got = await send(reactor, port, post(b"/publish/", body))
    assert got.startswith(b"HTTP/1.1 400 Bad Request") and sub.got == []


@pytest.mark.parametrize(
    "request_bytes, expected",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", answer(b"HTTP/1.1 200 OK", b"Pushpin API\n")),
        (b"GET /publish/ HTTP/1.1\r\nHost: x\r\n\r\n", answer(b"HTTP/1.1 405 Method Not Allowed", b"Method not allowed: GET.\n", b"Allow: POST\r\n")),
        (b"PUT /publish/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", answer(b"HTTP/1.1 405 Method Not Allowed", b"Method not allowed: PUT.\n", b"Allow: POST\r\n")),
        (b"GET /nonexistent HTTP/1.1\r\nHost: x\r\n\r\n", answer(b"HTTP/1.1 404 Not Found", b"Not Found\n")),
        (post(b"/publish/", b'{"items":[]}', b"Accept: image/png\r\n"), answer(b"HTTP/1.1 406 Not Acceptable", b"Not Acceptable. Supported formats are text/plain and application/json.\n")),
    ],
)
@pytest_twisted.ensureDeferred
async def test_paths_and_methods(reactor, control, request_bytes, expected):
    """GET / says 'Pushpin API'; wrong methods get 405 with Allow; unknown paths 404; bad Accept 406."""
    got = await send(reactor, control[0], request_bytes)
    assert got == expected


@pytest_twisted.ensureDeferred
async def test_recover_answers_updated(reactor, control):
    """POST /recover/ triggers recovery and answers 'Updated'."""
    port, _, _, recovered = control
    got = await send(reactor, port, post(b"/recover/", b""))
    assert got == answer(b"HTTP/1.1 200 OK", b"Updated\n") and recovered == [1]


@pytest_twisted.ensureDeferred
async def test_body_over_the_limit_is_refused_when_the_headers_arrive(reactor, control):
    """Content-Length 1000001 gets 400 'Request body too large.' at once; exactly 1000000 is fine."""
    port = control[0]
    got = await send(reactor, port, b"POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000001\r\n\r\n")
    assert got == answer(b"HTTP/1.1 400 Bad Request", b"Request body too large.\n")
    items = json.dumps({"items": []}).encode()
    body = items[:-1] + b" " * (1000000 - len(items)) + b"}"
    got = await send(reactor, port, post(b"/publish/", body))
    assert got == answer(b"HTTP/1.1 200 OK", b"Published\n")


@pytest_twisted.ensureDeferred
async def test_chunked_body_is_refused_with_length_required(reactor, control):
    """A chunked publish (no Content-Length) gets Pushpin's 411 'Request requires Content-Length.' and nothing is published."""
    port, router, counters, _ = control
    chunk = b'{"items":[]}'
    data = b"POST /publish/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    got = await send(reactor, port, data)
    assert got == answer(b"HTTP/1.1 411 Length Required", b"Request requires Content-Length.\n")
    assert counters.publishes["http"] == 0


@pytest_twisted.ensureDeferred
async def test_header_block_over_the_limit_gets_a_clear_400(reactor, control):
    """A header block over 10,000 bytes gets 400 'Request header too large.', not a dropped connection."""
    port = control[0]
    got = await send(reactor, port, b"POST /publish/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
    assert got == answer(b"HTTP/1.1 400 Bad Request", b"Request header too large.\n")


@pytest_twisted.ensureDeferred
async def test_a_half_request_does_not_block_others(reactor, control):
    """A client that sends half a request and stalls does not stop others from publishing."""
    from tests.integration.harness import raw_connect

    port = control[0]
    stalled = await raw_connect(reactor, port)
    stalled.transport.write(b"POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Len")
    got = await send(reactor, port, post(b"/publish/", b'{"items":[]}'))
    assert got == answer(b"HTTP/1.1 200 OK", b"Published\n")
    stalled.transport.loseConnection()
    await stalled.wait_closed(reactor)


@pytest.mark.parametrize(
    "accept, kind",
    [
        ([], "text"),
        ([b"text/plain"], "text"),
        ([b"*/*"], "text"),
        ([b"application/json"], "json"),
        ([b"application/*"], "json"),
        ([b"image/png"], None),
        ([b"image/png, text/*"], "text"),
        ([b"application/json, text/plain"], "text"),  # the last one Pushpin knows wins
        ([b"text/plain;q=1, application/json;q=0.1"], "json"),  # parameters are ignored
        ([b"text/plain", b"application/json"], "json"),  # across Accept headers too
        ([b"Application/JSON"], None),  # case matters
        ([b""], None),  # present but empty: 406
    ],
)
def test_negotiate(accept, kind):
    """Accept negotiation as Pushpin 1.36 does it (observed side by side)."""
    assert negotiate(accept) == kind


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n", (b"GET", b"/", False, [(b"Host", b"x")])),
        (b"GET / HTTP/1.1\nHost: x\n", (b"GET", b"/", False, [(b"Host", b"x")])),  # bare LF
        (b"POST /p HTTP/1.0\r\n", (b"POST", b"/p", True, [])),
        (b"GET / HTTP/9.9\r\n", (b"GET", b"/", False, [])),  # not 1.0: 1.1
        (b"GET / \r\n", (b"GET", b"/", False, [])),  # empty version
        (b"GET  HTTP/1.1\r\n", (b"GET", b"", False, [])),  # empty URI
        (b"GET / HTTP/1.1\r\nno colon\r\nA:  b\r\nC:d\r\n", (b"GET", b"/", False, [(b"A", b" b"), (b"C", b"d")])),
        (b"garbage\r\n", None),  # one token
        (b"GET /\r\n", None),  # two tokens
        (b"\r\nGET / HTTP/1.1\r\n", None),  # a blank line first
        (b"\x00 / HTTP/1.1\r\n", None),  # the method stops at a NUL: empty
    ],
)
def test_parse_head(head, expected):
    """The request line and headers are split the way Pushpin's SimpleHttpServer splits them."""
    got = parse_head(head)
    assert (got if got is None else (got.method, got.uri, got.http10, got.headers)) == expected


@pytest.mark.parametrize(
    "value, length",
    [(b"12", 12), (b"  12  ", 12), (b"\t12", 12), (b"+5", 5), (b"-1", -1), (b"2147483647", 2147483647), (b"12\x00x", 12),
     (b"", None), (b"abc", None), (b"1 2", None), (b"0x10", None), (b"2147483648", None), (b"99999999999999999999", None), (b"+", None)],
)
def test_parse_content_length(value, length):
    """Content-Length is read as Qt's QByteArray::toInt reads it: a signed 32-bit decimal, blanks allowed around it."""
    assert parse_content_length(value) == length


@pytest_twisted.ensureDeferred
async def test_a_request_split_across_reads_is_parsed_whole(reactor, control):
    """A publish that arrives a few bytes at a time is answered once, when its body is complete."""
    from tests.integration.harness import raw_connect

    port, router, _, _ = control
    sub = Recorder()
    router.subscribe("news", sub)
    body = json.dumps({"items": [{"channel": "news", "formats": {"http-stream": {"content": "x\n"}}}]}).encode()
    data = post(b"/publish/", body)
    client = await raw_connect(reactor, port)
    for i in range(0, len(data), 7):
        client.transport.write(data[i : i + 7])
        await task.deferLater(reactor, 0, lambda: None)  # one write per reactor turn
    await client.wait_closed(reactor)
    assert client.received == answer(b"HTTP/1.1 200 OK", b"Published\n") and sub.got == [("news", b"x\n")]


@pytest_twisted.ensureDeferred
async def test_expect_100_continue_is_answered_before_the_body(reactor, control):
    """Expect: 100-continue gets 'HTTP/1.1 100 Continue' as soon as the headers are in, then the answer."""
    from tests.integration.harness import raw_connect

    port = control[0]
    client = await raw_connect(reactor, port)
    client.transport.write(b"POST /publish/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 12\r\n\r\n")
    await client.wait_for(reactor, b"\r\n\r\n")
    assert client.received == b"HTTP/1.1 100 Continue\r\n\r\n"
    client.transport.write(b'{"items":[]}')
    await client.wait_closed(reactor)
    assert client.received == b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"HTTP/1.1 200 OK", b"Published\n")


@pytest_twisted.ensureDeferred
async def test_a_client_leaving_mid_request_gets_nothing_and_nothing_is_published(reactor, control):
    """A client that half-closes before its body is complete is closed without an answer, and nothing is published."""
    from tests.integration.harness import raw_connect

    port, _, counters, _ = control
    client = await raw_connect(reactor, port)
    client.transport.write(b"POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"items\"")
    client.transport.loseWriteConnection()
    await client.wait_closed(reactor)
    assert client.received == b"" and counters.publishes["http"] == 0


@pytest_twisted.ensureDeferred
async def test_an_idle_connection_is_closed_after_the_timeout(reactor):
    """A connection that sends nothing is closed once the site's idle timeout passes (Pushpin has none; ours is 12 hours by default)."""
    from tests.integration.harness import raw_connect

    resource = ControlResource(PublishIntake(ChannelRouter(), Counters()))
    site = ControlSite(resource, max_headers=10000, max_body=1000000, reactor=reactor, timeout=0.2)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    try:
        client = await raw_connect(reactor, port.getHost().port)
        client.transport.write(b"GET / HTTP/1.1\r\n")
        await client.wait_closed(reactor, timeout=5)
        assert client.received == b""
    finally:
        await port.stopListening()


def _held_publish(clock):
    from twisted.internet.testing import StringTransport

    intake = PublishIntake(ChannelRouter(), Counters())
    intake.backpressure.limit = 100
    intake.backpressure.level(101)  # deliveries behind their bound
    site = ControlSite(ControlResource(intake), max_headers=10000, max_body=1000000, reactor=clock)
    proto = site.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    items = {"items": [{"channel": "a", "formats": {"http-stream": {"content": "x"}}}]}
    proto.dataReceived(post(b"/publish/", json.dumps(items).encode()))
    return intake, proto, transport


def test_a_publish_answer_is_held_while_deliveries_are_behind_their_bound():
    """Over the bound the publish is taken but its 200 is written only once deliveries are back to the low-water mark."""
    clock = task.Clock()
    intake, proto, transport = _held_publish(clock)
    assert transport.value() == b"" and intake.backpressure.waiting == 1
    intake.backpressure.level(60)
    assert transport.value() == b""
    intake.backpressure.level(50)
    assert transport.value() == answer(b"HTTP/1.1 200 OK", b"Published\n") and transport.disconnecting
    proto.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_a_publisher_that_leaves_while_its_answer_is_held_gets_nothing():
    """A held answer whose client has gone is not written when deliveries catch up."""
    clock = task.Clock()
    intake, proto, transport = _held_publish(clock)
    proto.connectionLost(None)
    intake.backpressure.level(0)
    assert transport.value() == b""
    assert clock.getDelayedCalls() == []


def test_the_answer_leaves_before_the_turns_fan_out_is_written():
    """On a real socket the 200 is sent at once, before the deliveries gathered this turn are handed out."""
    import socket

    from twisted.internet import tcp
    from twisted.internet.testing import MemoryReactorClock

    reactor = MemoryReactorClock()
    router = ChannelRouter()
    sub = Recorder()
    router.subscribe("a", sub)
    intake = PublishIntake(router, Counters(), clock=reactor)
    site = ControlSite(ControlResource(intake), max_headers=10000, max_body=1000000, reactor=reactor)
    server, client = socket.socketpair()
    try:
        proto = site.buildProtocol(None)
        transport = tcp.Connection(server, proto, reactor)
        transport.connected = True  # as tcp.Server sets it for an accepted connection
        proto.makeConnection(transport)
        items = {"items": [{"channel": "a", "formats": {"http-stream": {"content": "x"}}}]}
        proto.dataReceived(post(b"/publish/", json.dumps(items).encode()))
        client.setblocking(False)
        assert client.recv(65536) == answer(b"HTTP/1.1 200 OK", b"Published\n")  # already on the socket
        assert sub.got == [] and transport.disconnecting
        reactor.advance(0)  # the end of the turn: the fan-out
        assert sub.got == [("a", b"x")]
        proto.connectionLost(None)
    finally:
        server.close()
        client.close()
