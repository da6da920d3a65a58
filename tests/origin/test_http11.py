"""The lean origin client behaves as twisted.web's Agent did: same request bytes, same parse of every kind of answer, same connection reuse."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web._newclient import HTTP11ClientProtocol, Request as TwistedRequest, RequestGenerationFailed
from twisted.web.client import URI, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders

from pushpin_tx.origin.http11 import OriginPool, method_ok, origin_form_ok, request_bytes


class Collect(Protocol):
    """Records a response body and how it ended."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason


class FakeEndpoint:
    """Connects each new origin connection to a StringTransport, at once."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> Any:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


def make_pool(**kw: Any) -> tuple[OriginPool, FakeEndpoint, Clock]:
    endpoint = FakeEndpoint()
    clock = Clock()
    return OriginPool(clock, endpoint_for=lambda host, port: endpoint, **kw), endpoint, clock


def outcome(d: Any, feed: Any, lose: bool) -> dict[str, Any]:
    """What a caller sees: the head (or the error), the body and how the body ended."""
    results: list[Any] = []
    d.addBoth(results.append)
    feed()
    if not results or isinstance(results[0], Failure):
        if lose:
            lose()
        if not results:
            return {"pending": True}
        f = results[0]
        inner = [type(r.value).__name__ for r in getattr(f.value, "reasons", [])]
        return {"error": type(f.value).__name__, "inner": inner}
    response = results[0]
    body = Collect()
    if hasattr(response, "deliverBody"):
        headers = [(k, v) for k, vs in response.headers.getAllRawHeaders() for v in vs]
        length = None if not isinstance(response.length, int) else response.length
        code = response.code
        response.deliverBody(body)
    else:
        headers, length, code = response.headers, response.length, response.code
        response.deliver_body(body)
    if lose:
        lose()
    reason = None
    if body.reason is not None:
        reason = type(body.reason.value).__name__
        inner = [type(r.value).__name__ for r in getattr(body.reason.value, "reasons", [])]
        if inner:
            reason += str(inner)
    return {"code": code, "phrase": response.phrase, "headers": headers, "length": length, "body": body.data, "end": reason}


def twisted_side(method: bytes, answer: bytes, *, split: bool, close: bool) -> dict[str, Any]:
    protocol = HTTP11ClientProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    d = protocol.request(TwistedRequest(method, b"/", TwistedHeaders({b"Host": [b"o"]}), None, persistent=True))

    def feed() -> None:
        for part in ([answer[i : i + 1] for i in range(len(answer))] if split else [answer]):
            protocol.dataReceived(part)

    lose = (lambda: protocol.connectionLost(Failure(ConnectionDoneLike()))) if close else None
    return outcome(d, feed, lose)  # type: ignore[arg-type]


class ConnectionDoneLike(Exception):
    """The origin closed the connection."""


def our_side(method: bytes, answer: bytes, *, split: bool, close: bool) -> dict[str, Any]:
    pool, endpoint, _ = make_pool()
    d = pool.request(b"o", 80, method, request_bytes(method, b"/", [(b"Host", b"o")], b"o"))
    conn, _transport = endpoint.connections[0]

    def feed() -> None:
        for part in ([answer[i : i + 1] for i in range(len(answer))] if split else [answer]):
            conn.dataReceived(part)

    lose = (lambda: conn.connectionLost(Failure(ConnectionDoneLike()))) if close else None
    return outcome(d, feed, lose)  # type: ignore[arg-type]


ANSWERS = [
    ("plain", b"GET", b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello", False),
    ("grouped names", b"GET", b"HTTP/1.1 200 OK\r\nx-a: 1\r\nX-B: 2\r\nX-A: 3\r\netag: e\r\nwww-authenticate: w\r\nContent-Length: 0\r\n\r\n", False),
    ("LF endings", b"GET", b"HTTP/1.1 201 Created\nA: b\nContent-Length: 2\n\nok", False),
    ("folded header", b"GET", b"HTTP/1.1 200 OK\r\nX-Long: one\r\n two\r\n\tthree\r\nContent-Length: 1\r\n\r\nx", False),
    ("1xx skipped", b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
    ("no phrase", b"GET", b"HTTP/1.1 204\r\n\r\n", False),
    ("204 ignores length", b"GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX: y\r\n\r\n", False),
    ("HEAD keeps length", b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: keep-alive\r\n\r\n", False),
    ("304", b"GET", b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", False),
    ("chunked", b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n!\r\n0\r\n\r\n", False),
    ("until close", b"GET", b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nsome body", True),
    ("connection close", b"GET", b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
    ("duplicate equal lengths", b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", False),
    ("conflicting lengths", b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", True),
    ("bad status line", b"GET", b"garbage\r\n\r\n", True),
    ("bad status code", b"GET", b"HTTP/1.1 abc OK\r\n\r\n", True),
    ("bad version", b"GET", b"HTTP/x 200 OK\r\n\r\n", True),
    ("header without colon", b"GET", b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", True),
    ("unknown transfer coding", b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", True),
    ("body cut short", b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True),
    ("chunked cut short", b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", True),
    ("malformed chunk", b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", True),
    ("closed before answering", b"GET", b"", True),
    ("closed mid-head", b"GET", b"HTTP/1.1 200 OK\r\nX:", True),
    ("extra bytes after body ignored", b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", False),
]


@pytest.mark.parametrize("name, method, answer, close", ANSWERS, ids=[a[0] for a in ANSWERS])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_answers_parse_as_the_agent_parses_them(name: str, method: bytes, answer: bytes, close: bool, split: bool) -> None:
    """Every kind of origin answer gives the same status, headers, length, body and ending as through twisted.web's client."""
    assert our_side(method, answer, split=split, close=close) == twisted_side(method, answer, split=split, close=close)


def twisted_request_bytes(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], default_host: bytes) -> bytes:
    twisted_headers = TwistedHeaders()
    for name, value in headers:
        twisted_headers.addRawHeader(name, value)
    if not twisted_headers.hasHeader(b"host"):  # what Agent._requestWithEndpoint adds
        twisted_headers.addRawHeader(b"host", default_host)
    transport = StringTransport()
    d = TwistedRequest(method, path, twisted_headers, None, persistent=True).writeTo(transport)
    assert d.called
    return transport.value()


REQUESTS = [
    (b"GET", b"/a?b=1", [(b"Host", b"h:8"), (b"accept", b"*/*"), (b"X-Forwarded-For", b"1.2.3.4")]),
    (b"GET", b"/", [(b"host", b"h"), (b"x-a", b"1"), (b"X-B", b"2"), (b"X-A", b"3"), (b"etag", b"e"), (b"te", b"trailers")]),
    (b"POST", b"/p", [(b"Host", b"h")]),
    (b"PUT", b"/p", [(b"Host", b"h")]),
    (b"DELETE", b"/p", [(b"Host", b"h")]),
    (b"GET", b"/", [(b"X-Only", b"1")]),
    (b"GET", b"/", [(b"Host", b"h"), (b"X-Folded", b"a\r\nb"), (b"X-Cr", b"a\rb")]),
]


@pytest.mark.parametrize("method, path, headers", REQUESTS)
def test_request_bytes_match_the_agent(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """The origin receives byte for byte what the Agent sent: grouped, canonical names, Host added when missing, Content-Length: 0 for a body-less POST/PUT."""
    assert request_bytes(method, path, headers, b"o:8080") == twisted_request_bytes(method, path, headers, b"o:8080")


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ-0123456789", min_size=1, max_size=12).map(str.encode)
_value = st.binary(max_size=20).map(lambda v: bytes(b for b in v if b >= 0x20 and b != 0x7F))


@settings(max_examples=150, deadline=None)
@given(headers=st.lists(st.tuples(_token, _value), max_size=8))
def test_request_bytes_match_the_agent_for_any_headers(headers: list[tuple[bytes, bytes]]) -> None:
    """Any header list (names in any case, repeated, interleaved) is written exactly as the Agent writes it."""
    hosts = [n for n, _ in headers if n.lower() == b"host"]
    if len(hosts) > 1:
        with pytest.raises(RequestGenerationFailed):
            request_bytes(b"GET", b"/", headers, b"o")
        return
    assert request_bytes(b"GET", b"/", headers, b"o") == twisted_request_bytes(b"GET", b"/", headers, b"o")


def test_two_host_headers_fail_the_request() -> None:
    """Two Host headers fail the request before it is sent, as with the Agent."""
    with pytest.raises(RequestGenerationFailed):
        request_bytes(b"GET", b"/", [(b"Host", b"a"), (b"host", b"b")], b"o")


_path_char = st.sampled_from(list("abc/?=&;#%-._~!$'()*+,:@") + ["/"])


@settings(max_examples=300, deadline=None)
@given(path=st.text(alphabet=_path_char, max_size=20).map(lambda p: ("/" + p).encode()))
def test_paths_it_sends_unchanged_are_those_the_agent_sends_unchanged(path: bytes) -> None:
    """A path the fast path sends as it is equals the Agent's origin form of the same URI."""
    if origin_form_ok(path):
        assert URI.fromBytes(b"http://o:80" + path).originForm == path


@pytest.mark.parametrize("path", [b"/x#frag", b"/a;p", b"/q?", b"", b"/\xc3\xa9", b"/a b"])
def test_unusual_paths_are_left_to_the_agent(path: bytes) -> None:
    """Fragments, parameters, an empty query, non-ASCII or spaces go the Agent's way (its parse or its refusal)."""
    assert not origin_form_ok(path)


@pytest.mark.parametrize("method, ok", [(b"GET", True), (b"PROPFIND", True), (b"GE T", False), (b"G\r\n", False)])
def test_methods_must_be_tokens(method: bytes, ok: bool) -> None:
    """Only token methods take the fast path; the Agent refuses the others as before."""
    assert method_ok(method) is ok


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def answer(pool: OriginPool, endpoint: FakeEndpoint, method: bytes = b"GET", index: int = -1) -> tuple[list[Any], Any]:
    results: list[Any] = []
    pool.request(b"o", 80, method, request_bytes(method, b"/", [(b"Host", b"o")], b"o")).addBoth(results.append)
    return results, endpoint.connections[index][0]


def test_a_finished_connection_carries_the_next_request() -> None:
    """After a complete answer the connection is reused: one connection, both requests on it."""
    pool, endpoint, _ = make_pool()
    first, conn = answer(pool, endpoint)
    conn.dataReceived(OK)
    first[0].deliver_body(Collect())
    second, _ = answer(pool, endpoint)
    conn.dataReceived(OK)
    assert len(endpoint.connections) == 1
    assert second[0].code == 200
    assert endpoint.connections[0][1].value().count(b"GET / HTTP/1.1") == 2


def test_connection_close_is_not_reused() -> None:
    """An answer with Connection: close ends its connection; the next request opens a new one."""
    pool, endpoint, _ = make_pool()
    _, conn = answer(pool, endpoint)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    assert endpoint.connections[0][1].disconnecting
    answer(pool, endpoint)
    assert len(endpoint.connections) == 2


@pytest.mark.parametrize("method, retried", [(b"GET", True), (b"HEAD", True), (b"DELETE", True), (b"POST", False), (b"PATCH", False)])
def test_a_reused_connection_closed_unanswered_is_retried_once(method: bytes, retried: bool) -> None:
    """When the origin had closed an idle connection, idempotent requests go again on a new one; others fail."""
    pool, endpoint, _ = make_pool()
    first, conn = answer(pool, endpoint)
    conn.dataReceived(OK)
    results, _ = answer(pool, endpoint, method)
    conn.connectionLost(Failure(ConnectionDoneLike()))
    if retried:
        assert len(endpoint.connections) == 2 and not results
        endpoint.connections[1][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert results[0].code == 200
    else:
        assert len(endpoint.connections) == 1
        assert isinstance(results[0].value, ResponseNeverReceived)


def test_a_new_connection_closed_unanswered_is_not_retried() -> None:
    """A fresh connection that closes before answering fails the request (the target is broken)."""
    pool, endpoint, _ = make_pool()
    results, conn = answer(pool, endpoint)
    conn.connectionLost(Failure(ConnectionDoneLike()))
    assert isinstance(results[0].value, ResponseNeverReceived) and len(endpoint.connections) == 1


def test_cancel_drops_the_connection() -> None:
    """Cancelling a request waiting for its answer aborts that connection and fails with CancelledError."""
    pool, endpoint, _ = make_pool()
    results: list[Any] = []
    d = pool.request(b"o", 80, b"GET", request_bytes(b"GET", b"/", [(b"Host", b"o")], b"o"))
    d.addBoth(results.append)
    d.cancel()
    conn, transport = endpoint.connections[0]
    assert isinstance(results[0].value, CancelledError)
    assert transport.disconnecting
    conn.connectionLost(Failure(ConnectionDoneLike()))  # nothing more happens
    assert len(results) == 1


def test_idle_connections_are_capped_and_expire() -> None:
    """At most max_idle idle connections per origin (the oldest closes first); idle ones close after idle_timeout."""
    pool, endpoint, clock = make_pool(max_idle=2, idle_timeout=100)
    pending = [answer(pool, endpoint) for _ in range(3)]
    for results, conn in pending:
        conn.dataReceived(OK)
    transports = [t for _, t in endpoint.connections]
    assert [t.disconnecting for t in transports] == [True, False, False]
    clock.advance(50)
    assert not transports[1].disconnecting
    clock.advance(100)
    assert transports[1].disconnecting and transports[2].disconnecting


def test_a_bursts_surplus_idle_connections_close_soon_and_the_warm_ones_stay() -> None:
    """After a burst, idle connections beyond the warm few close once idle surplus_timeout; the warm ones (the most
    recently used) stay until idle_timeout, so descriptors come back soon after churn and steady traffic stays warm."""
    pool, endpoint, clock = make_pool(max_idle=64, idle_timeout=240, warm=2, surplus_timeout=10)
    pending = [answer(pool, endpoint) for _ in range(6)]
    for results, conn in pending:
        conn.dataReceived(OK)
    transports = [t for _, t in endpoint.connections]
    clock.advance(5)
    assert not any(t.disconnecting for t in transports)
    clock.advance(10)
    assert [t.disconnecting for t in transports] == [True, True, True, True, False, False]
    results, _ = answer(pool, endpoint)  # reuses the most recently used warm one
    assert len(endpoint.connections) == 6
    clock.advance(240)
    assert transports[4].disconnecting


def test_an_undelivered_body_pauses_the_origin_until_taken() -> None:
    """A body nobody asked for yet is held and the origin paused; deliver_body resumes and hands it over."""
    pool, endpoint, _ = make_pool()
    results, conn = answer(pool, endpoint)
    transport = endpoint.connections[0][1]
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
    assert transport.producerState == "paused"
    body = Collect()
    results[0].deliver_body(body)
    assert transport.producerState == "producing"
    conn.dataReceived(b"def")
    assert body.data == b"abcdef" and body.reason is not None and body.reason.check(ResponseDone)


def test_stopping_the_body_closes_the_connection() -> None:
    """A body protocol that stops producing (the client went away) closes the origin connection, which is not reused."""
    pool, endpoint, _ = make_pool()
    results, conn = answer(pool, endpoint)
    transport = endpoint.connections[0][1]
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
    body = Collect()
    results[0].deliver_body(body)
    body.transport.stopProducing()
    assert transport.producerState == "stopped"  # a TCP transport then closes
    conn.connectionLost(Failure(ConnectionDoneLike()))
    assert body.reason is not None and body.reason.check(ResponseFailed)
    answer(pool, endpoint)
    assert len(endpoint.connections) == 2


def test_until_close_body_ends_with_potential_data_loss() -> None:
    """A body without length ends at the close, reported as PotentialDataLoss (a clean end for the relay)."""
    pool, endpoint, _ = make_pool()
    results, conn = answer(pool, endpoint)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nabc")
    body = Collect()
    results[0].deliver_body(body)
    conn.connectionLost(Failure(ConnectionDoneLike()))
    assert body.data == b"abc" and body.reason is not None and body.reason.check(PotentialDataLoss)


class RecordingAgent:
    """Stands in for the Agent: records what it was asked, never answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        from twisted.internet.defer import Deferred

        self.calls.append((method, uri))
        return Deferred()


def origin_client() -> tuple[Any, FakeEndpoint, RecordingAgent]:
    from pushpin_tx.origin.client import OriginClient

    pool, endpoint, clock = make_pool()
    agent = RecordingAgent()
    return OriginClient(agent, None, clock, pool=pool), endpoint, agent  # type: ignore[arg-type]


def run(d: Any) -> list[Any]:
    """What C{d} (an L{OriginClient.request}) has fired with so far."""
    results: list[Any] = []
    d.addBoth(results.append)
    return results


@pytest.mark.parametrize(
    "target, method, path, body, through_pool",
    [
        ("o:80", b"GET", b"/x?y=1", None, True),
        ("o:80", b"POST", b"/x", b"data", False),
        ("o:80", b"GET", b"/x#frag", None, False),
        ("o:443 ssl", b"GET", b"/x", None, False),
    ],
)
def test_only_plain_http_without_body_takes_the_lean_client(target: str, method: bytes, path: bytes, body: Any, through_pool: bool) -> None:
    """Plain-HTTP requests without a body go through the pool; bodies, TLS and unusual paths through the Agent."""
    from pushpin_tx.protocol.routes import Target

    client, endpoint, agent = origin_client()
    host, port = target.split()[0].split(":")
    t = Target(kind="http", host=host, port=int(port), ssl="ssl" in target)
    run(client.request((t,), method, path, lambda _: [(b"Host", b"h")], lambda: body))
    assert bool(endpoint.connections) is through_pool
    assert bool(agent.calls) is not through_pool


def test_lean_client_answer_becomes_an_origin_response() -> None:
    """The pool's answer reaches the proxy as an OriginResponse with code, reason, headers, length and body."""
    from pushpin_tx.protocol.routes import Target

    client, endpoint, _ = origin_client()
    t = Target(kind="http", host="o", port=8080)
    results = run(client.request((t,), b"GET", b"/", lambda _: [(b"Host", b"h")], lambda: None))
    conn, transport = endpoint.connections[0]
    assert transport.value() == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    conn.dataReceived(b"HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    response = results[0]
    body = Collect()
    response.deliver_body(body)
    assert (response.code, response.reason, response.headers, response.length, response.target) == (200, b"Fine", [(b"Content-Type", b"text/plain")], 2, t)
    assert body.data == b"ok"


def test_two_host_headers_become_an_origin_error() -> None:
    """A request the Agent could not have generated (two Host headers) fails as an OriginError naming the target."""
    from pushpin_tx.origin.client import OriginError
    from pushpin_tx.protocol.routes import Target

    client, endpoint, _ = origin_client()
    t = Target(kind="http", host="o", port=80)
    results = run(client.request((t,), b"GET", b"/", lambda _: [(b"Host", b"a"), (b"Host", b"b")], lambda: None))
    assert isinstance(results[0].value, OriginError) and results[0].value.target == "o:80"
    assert not endpoint.connections
