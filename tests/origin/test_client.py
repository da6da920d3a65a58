"""
OriginClient.request, the one way every origin request goes: answers through the pool or the
Agent, the response timeout, cancellation, failover over a route's targets, and refusals.
"""

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

#: what every scenario's GET looks like on the origin connection
SENT = b"GET /p?q=1 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"


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
    assert isinstance(result, OriginResponse)
    body = Collect()
    result.deliver_body(body)
    end = None if body.reason is None else type(body.reason.value).__name__
    return ("answer", result.code, result.reason, result.headers, result.length, result.target.label(), body.data, end)


def outcome(
    targets: tuple[Target, ...],
    scenario: Callable[[Endpoints, Clock, Deferred[Any]], None],
    headers: Any = None,
    body: Any = None,
) -> dict[str, Any]:
    """Run one request through C{scenario}: what it gave, what went on the wire, what is left."""
    c, endpoints, clock, agent = client()
    headers = headers or (lambda target: [(b"Host", b"h"), (b"Accept", b"*/*")])
    body = body or (lambda: None)

    def handle_test(target: Target) -> OriginResponse:
        return buffered_response(200, b"OK", [(b"X-Test", b"1")], b"test body", target)

    d = c.request(targets, b"GET", b"/p?q=1", headers, body, handle_test=handle_test)
    results: list[Any] = []
    d.addBoth(results.append)
    scenario(endpoints, clock, d)
    return {
        "result": describe(results[0]) if results else "pending",
        "sent": [t.value() for _, t in endpoints.connections],
        "dropped": [bool(t.disconnecting) for _, t in endpoints.connections],
        "agent": agent.calls,
        "timer": any(call.getTime() >= 600 for call in clock.getDelayedCalls()),
    }


def answer_with(data: bytes) -> Callable[..., None]:
    def scenario(endpoints: Endpoints, clock: Clock, d: Any) -> None:
        endpoints.connections[-1][0].dataReceived(data)

    return scenario


def nothing(endpoints: Endpoints, clock: Clock, d: Any) -> None:
    pass


def time_out(endpoints: Endpoints, clock: Clock, d: Any) -> None:
    clock.advance(599)
    clock.advance(1)


def almost_time_out(endpoints: Endpoints, clock: Clock, d: Any) -> None:
    clock.advance(599.9)


def cancel(endpoints: Endpoints, clock: Clock, d: Any) -> None:
    d.cancel()


def close_unanswered(endpoints: Endpoints, clock: Clock, d: Any) -> None:
    endpoints.connections[-1][0].connectionLost(Failure(ConnectionDoneLike()))


def garbage(endpoints: Endpoints, clock: Clock, d: Any) -> None:
    endpoints.connections[-1][0].dataReceived(b"NOT HTTP\r\n\r\n")


OK2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TIMED_OUT = ("failed", "OriginError", "timed out waiting for good:80", "good:80")
TEST_ANSWER = ("answer", 200, b"OK", [(b"X-Test", b"1")], 9, "test", b"test body", "ResponseDone")


@pytest.mark.parametrize(
    "targets, scenario, result, sent, dropped, timer",
    [
        pytest.param(
            (GOOD,), answer_with(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"),
            ("answer", 200, b"OK", [(b"Content-Type", b"text/plain")], 5, "good:80", b"hello", "ResponseDone"),
            [SENT], [False], False, id="whole answer",
        ),
        pytest.param(
            (GOOD,), answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"),
            ("answer", 200, b"OK", [], 10, "good:80", b"hello", None), [SENT], [False], False, id="body still coming",
        ),
        pytest.param(
            (GOOD,), answer_with(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("answer", 404, b"Not Found", [], None, "good:80", b"hello", "ResponseDone"), [SENT], [False], False, id="chunked",
        ),
        pytest.param(
            (GOOD2,), answer_with(b"HTTP/1.1 204 No Content\r\n\r\n"),
            ("answer", 204, b"No Content", [], 0, "good2:8080", b"", "ResponseDone"), [SENT], [False], False, id="204",
        ),
        pytest.param((GOOD,), nothing, "pending", [SENT], [False], True, id="waiting"),
        pytest.param((GOOD,), time_out, TIMED_OUT, [SENT], [True], False, id="timed out"),
        pytest.param((GOOD,), almost_time_out, "pending", [SENT], [False], True, id="not yet timed out"),
        pytest.param((GOOD,), cancel, ("failed", "CancelledError", "", None), [SENT], [True], False, id="cancelled"),
        pytest.param(
            (GOOD,), close_unanswered,
            ("failed", "OriginError", "good:80: [<twisted.python.failure.Failure tests.origin.test_http11.ConnectionDoneLike: >]", "good:80"),
            [SENT], [False], False, id="closed unanswered",
        ),
        pytest.param(
            (GOOD,), garbage,
            ("failed", "OriginError", "good:80: [<twisted.python.failure.Failure twisted.web._newclient.ParseError: ('non-integer status code', b'NOT HTTP')>]", "good:80"),
            [SENT], [True], False, id="not HTTP",
        ),
        pytest.param(
            (DOWN,), nothing, ("failed", "AllTargetsFailed", "Unable to connect to any targets. Tried: down:80", None),
            [], [], False, id="refused",
        ),
        pytest.param(
            (DOWN, GOOD), answer_with(OK2), ("answer", 200, b"OK", [], 2, "good:80", b"ok", "ResponseDone"),
            [SENT], [False], False, id="failover",
        ),
        pytest.param((DOWN, GOOD), time_out, TIMED_OUT, [SENT], [True], False, id="failover then time out"),
        pytest.param(
            (DOWN, DOWN), nothing,
            ("failed", "AllTargetsFailed", "Unable to connect to any targets. Tried: down:80, down:80", None),
            [], [], False, id="every target refused",
        ),
        pytest.param((DOWN, TEST), nothing, TEST_ANSWER, [], [], False, id="failover to the test target"),
        pytest.param(
            (DOWN, ZHTTP), nothing,
            ("failed", "AllTargetsFailed", "Unable to connect to any targets. Tried: down:80, zhttp/", None),
            [], [], False, id="zhttp counts as tried",
        ),
        pytest.param((TEST, GOOD), nothing, TEST_ANSWER, [], [], False, id="test target first"),
        pytest.param(
            (ZHTTP, GOOD), answer_with(OK2), ("answer", 200, b"OK", [], 2, "good:80", b"ok", "ResponseDone"),
            [SENT], [False], False, id="zhttp skipped",
        ),
        pytest.param(
            (), nothing, ("failed", "AllTargetsFailed", "Unable to connect to any targets. Tried: ", None),
            [], [], False, id="no targets",
        ),
    ],
)
def test_request_outcomes(targets: Any, scenario: Any, result: Any, sent: Any, dropped: Any, timer: bool) -> None:
    """Answers, timeouts, cancellation, failover and refusals: what the caller gets and what the origin saw."""
    assert outcome(targets, scenario) == {"result": result, "sent": sent, "dropped": dropped, "agent": [], "timer": timer}


def test_tls_targets_go_through_the_agent() -> None:
    """An https target is not the pool's: the Agent gets the request, with the response timer running."""
    seen = outcome((TLS,), nothing)
    assert (seen["result"], seen["sent"], seen["agent"], seen["timer"]) == ("pending", [], [(b"GET", b"https://good:443/p?q=1")], True)


def test_a_request_with_a_body_goes_through_the_agent() -> None:
    """A request body is streamed by the Agent, not the pool."""
    seen = outcome((GOOD,), nothing, lambda target: [(b"Host", b"h")], lambda: _Producer())
    assert (seen["sent"], seen["agent"]) == ([], [(b"GET", b"http://good:80/p?q=1")])


def test_a_request_the_agent_could_not_send_fails_as_the_agent_fails_it() -> None:
    """Two Host headers: the request fails with the Agent's own error, named after the target, nothing sent."""
    seen = outcome((GOOD,), nothing, lambda target: [(b"Host", b"a"), (b"Host", b"b")])
    assert seen["result"][:2] == ("failed", "OriginError")
    assert "Exactly one Host header required" in seen["result"][2]
    assert (seen["sent"], seen["agent"]) == ([], [])


def test_a_failing_body_fails_the_request() -> None:
    """An error making the body (an upload that already went elsewhere) is the request's failure."""

    def body() -> Any:
        raise RuntimeError("no body today")

    seen = outcome((GOOD,), nothing, None, body)
    assert seen["result"] == ("failed", "RuntimeError", "no body today", None)


def test_a_timed_out_request_drops_its_connection() -> None:
    """After the response timeout the origin connection is aborted and the failure names the target."""
    c, endpoints, clock, _ = client()
    results: list[Any] = []
    c.request((GOOD,), b"GET", b"/", lambda t: [(b"Host", b"h")], lambda: None).addBoth(results.append)
    clock.advance(600)
    assert describe(results[0]) == TIMED_OUT
    assert endpoints.connections[0][1].disconnecting


def test_an_answer_cancels_the_timeout() -> None:
    """Once the head is in, no timer is left behind."""
    c, endpoints, clock, _ = client()
    c.request((GOOD,), b"GET", b"/", lambda t: [(b"Host", b"h")], lambda: None)
    endpoints.connections[0][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [call for call in clock.getDelayedCalls() if call.getTime() >= 600] == []


def test_a_whole_answer_in_one_read_is_complete_when_handed_over() -> None:
    """An answer whose body arrived with its head is handed over complete, its connection already free for the next request."""
    c, endpoints, clock, _ = client()
    seen: list[Any] = []

    def head(response: OriginResponse) -> None:
        # the head's taker can send the next request on the same connection at once
        seen.append(response)
        c.request((GOOD,), b"GET", b"/next", lambda t: [(b"Host", b"h")], lambda: None)

    c.request((GOOD,), b"GET", b"/", lambda t: [(b"Host", b"h")], lambda: None).addCallback(head)
    endpoints.connections[0][0].dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert len(endpoints.connections) == 1
    assert endpoints.connections[0][1].value().endswith(b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert describe(seen[0])[6:] == (b"ok", "ResponseDone")


def test_the_targets_tried_before_are_named_with_the_new_ones() -> None:
    """C{tried} (a retry's earlier refusals) starts the list AllTargetsFailed names."""
    c, _, _, _ = client()
    results: list[Any] = []
    c.request((DOWN,), b"GET", b"/", lambda t: [], lambda: None, tried=["first:1"]).addBoth(results.append)
    assert str(results[0].value) == "Unable to connect to any targets. Tried: first:1, down:80"


class _Producer:
    """A four-byte request body."""

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
