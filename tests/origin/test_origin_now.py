"""OriginClient.request_now (callbacks, no coroutine) gives the same outcomes as OriginClient.request in every case."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pushpin_tx.origin.client import OriginClient, OriginResponse, buffered_response
from pushpin_tx.origin.http11 import OriginPool
from pushpin_tx.protocol.routes import Target

from tests.origin.test_http11 import Collect, ConnectionDoneLike, RecordingAgent

GOOD = Target(kind="http", host="good", port=80)
GOOD2 = Target(kind="http", host="good2", port=8080)
DOWN = Target(kind="http", host="down", port=80)
TLS = Target(kind="http", host="good", port=443, ssl=True)
TEST = Target(kind="test")
ZHTTP = Target(kind="zhttp", host="z", port=1)


class Endpoints:
    """Connects to StringTransports at once; hosts named "down" refuse."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def endpoint_for(self, host: bytes, port: int) -> Any:
        outer = self

        class Endpoint:
            def connect(self, factory: Any) -> Deferred[Any]:
                if host == b"down":
                    return fail(ConnectionRefusedError())
                protocol = factory.buildProtocol(None)
                transport = StringTransport()
                protocol.makeConnection(transport)
                outer.connections.append((protocol, transport))
                return succeed(protocol)

        return Endpoint()


def client() -> tuple[OriginClient, Endpoints, Clock, RecordingAgent]:
    endpoints = Endpoints()
    clock = Clock()
    pool = OriginPool(clock, endpoint_for=endpoints.endpoint_for)
    agent = RecordingAgent()
    return OriginClient(agent, None, clock, pool=pool), endpoints, clock, agent  # type: ignore[arg-type]


def describe(result: Any) -> Any:
    """A comparable summary of a result: the response with its body, or the failure."""
    if isinstance(result, Failure):
        return ("failed", type(result.value).__name__, str(result.value), getattr(result.value, "target", None))
    if isinstance(result, OriginResponse):
        body = Collect()
        result.deliver_body(body)
        end = None if body.reason is None else type(body.reason.value).__name__
        return ("answer", result.code, result.reason, result.headers, result.length, result.target, body.data, end)
    return ("other", result)


def outcome(use_now: bool, targets: tuple[Target, ...], scenario: Callable[[Any, Endpoints, Clock, Deferred[Any]], None], headers: Any = None, body: Any = None) -> tuple[Any, ...]:
    c, endpoints, clock, agent = client()
    headers = headers or (lambda target: [(b"Host", b"h"), (b"Accept", b"*/*")])
    body = body or (lambda: None)

    def handle_test(target: Target) -> OriginResponse:
        return buffered_response(200, b"OK", [(b"X-Test", b"1")], b"test body", target)

    if use_now:
        d = c.request_now(targets, b"GET", b"/p?q=1", headers, body, handle_test=handle_test)
    else:
        d = Deferred.fromCoroutine(c.request(targets, b"GET", b"/p?q=1", headers, body, handle_test=handle_test))
    results: list[Any] = []
    d.addBoth(results.append)
    scenario(c, endpoints, clock, d)
    sent = [t.value() for _, t in endpoints.connections]
    aborted = [t.disconnecting or getattr(t, "disconnected", False) for _, t in endpoints.connections]
    return (describe(results[0]) if results else "pending", sent, aborted, len(agent.calls), clock.getDelayedCalls() != [])


def answer_with(data: bytes) -> Callable[..., None]:
    def scenario(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
        endpoints.connections[-1][0].dataReceived(data)

    return scenario


def nothing(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
    pass


def time_out(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
    clock.advance(599)
    clock.advance(1)


def almost_time_out(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
    clock.advance(599.9)


def cancel(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
    d.cancel()


def close_unanswered(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
    endpoints.connections[-1][0].connectionLost(Failure(ConnectionDoneLike()))


def garbage(c: Any, endpoints: Endpoints, clock: Clock, d: Any) -> None:
    endpoints.connections[-1][0].dataReceived(b"NOT HTTP\r\n\r\n")


@pytest.mark.parametrize(
    "targets, scenario",
    [
        ((GOOD,), answer_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")),
        ((GOOD,), answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")),
        ((GOOD,), answer_with(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ((GOOD,), answer_with(b"HTTP/1.1 200 OK\r\nGrip-Hold: response\r\nContent-Length: 0\r\n\r\n")),
        ((GOOD2,), answer_with(b"HTTP/1.1 204 No Content\r\n\r\n")),
        ((GOOD,), nothing),
        ((GOOD,), time_out),
        ((GOOD,), almost_time_out),
        ((GOOD,), cancel),
        ((GOOD,), close_unanswered),
        ((GOOD,), garbage),
        ((DOWN,), nothing),
        ((DOWN, GOOD), answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
        ((DOWN, GOOD), time_out),
        ((DOWN, DOWN), nothing),
        ((DOWN, TEST), nothing),
        ((DOWN, ZHTTP), nothing),
        ((TEST, GOOD), nothing),
        ((ZHTTP, GOOD), answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
        ((TLS,), nothing),
        ((), nothing),
    ],
)
def test_request_now_has_the_outcomes_of_request(targets: tuple[Target, ...], scenario: Any) -> None:
    """Answers, timeouts, cancellation, failover and refusals come out of request_now exactly as out of request."""
    assert outcome(True, targets, scenario) == outcome(False, targets, scenario)


@pytest.mark.parametrize(
    "headers, body",
    [
        (lambda target: [(b"Host", b"a"), (b"Host", b"b")], None),  # the Agent could not send it
        (lambda target: [(b"Host", b"h")], lambda: _Producer()),  # a body: the Agent's path
    ],
)
def test_request_now_handles_unusual_requests_as_request(headers: Any, body: Any) -> None:
    """Requests the pool cannot carry fail or go to the Agent, as with request."""
    assert outcome(True, (GOOD,), nothing, headers, body) == outcome(False, (GOOD,), nothing, headers, body)


def test_a_timed_out_request_drops_its_connection() -> None:
    """After the response timeout the origin connection is aborted and the failure names the target."""
    c, endpoints, clock, _ = client()
    results: list[Any] = []
    c.request_now((GOOD,), b"GET", b"/", lambda t: [(b"Host", b"h")], lambda: None).addBoth(results.append)
    clock.advance(600)
    assert describe(results[0]) == ("failed", "OriginError", "timed out waiting for good:80", "good:80")
    assert endpoints.connections[0][1].disconnecting or endpoints.connections[0][1].disconnected


def test_an_answer_cancels_the_timeout() -> None:
    """Once the head is in, no timer is left behind."""
    c, endpoints, clock, _ = client()
    c.request_now((GOOD,), b"GET", b"/", lambda t: [(b"Host", b"h")], lambda: None)
    endpoints.connections[0][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [call for call in clock.getDelayedCalls() if call.getTime() >= 600] == []


class _Producer:
    length = 4

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(b"data")
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def test_a_whole_answer_in_one_read_is_complete_when_handed_over() -> None:
    """An answer whose body arrived with its head is handed over complete, its connection already free for the next request."""
    c, endpoints, clock, _ = client()
    seen: list[Any] = []

    def head(response: OriginResponse) -> None:
        # the head's taker can send the next request on the same connection at once
        seen.append(response)
        c.request_now((GOOD,), b"GET", b"/next", lambda t: [(b"Host", b"h")], lambda: None)

    c.request_now((GOOD,), b"GET", b"/", lambda t: [(b"Host", b"h")], lambda: None).addCallback(head)
    endpoints.connections[0][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert len(endpoints.connections) == 1
    assert endpoints.connections[0][1].value().endswith(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert describe(seen[0])[6:] == (b"ok", "ResponseDone")
