# -*- test-case-name: tests.web.test_proxy -*-
"""
Talking to origins: one request, tried against a route's targets in order (§3.2 failover),
answered by an L{OriginResponse} whose body is read only when the caller decides how.

Built on twisted.web's C{Agent} with a persistent connection pool (HTTP/1.1, keep-alive,
TLS, flow control), never on C{twisted.web.proxy} (HTTP/1.0, a connection per request, no
backpressure). Plain-HTTP requests without a body, the bulk of proxied traffic, go through
L{pushpin_tx.origin.http11}'s leaner pool instead (same behaviour, about half the CPU). Both
are injected, so tests run this same code over in-memory connections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, cast

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IProtocol, IPushProducer, IReactorCore, IReactorTCP
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone, ResponseNeverReceived
from twisted.web.http_headers import Headers as TwistedHeaders
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer
from zope.interface import implementer

from pushpin_tx._compat import RequestGenerationFailed, channel_paused
from pushpin_tx.protocol.headers import Headers
from pushpin_tx.origin.http11 import OriginAnswer, OriginPool, method_ok, origin_form_ok, request_bytes

if TYPE_CHECKING:
    from pushpin_tx.protocol.routes import Target

__all__ = [
    "OriginResponse",
    "OriginClient",
    "AllTargetsFailed",
    "OriginError",
    "buffered_response",
    "read_body",
    "BodyTooLarge",
]

#: Seconds an origin may take to start answering before the client gets a 502: Pushpin's
#: (zurl's session timeout, observed on 1.36.0 at 600 s).
RESPONSE_TIMEOUT = 600.0


class AllTargetsFailed(Exception):
    """Every target refused or failed the connection (§3.2: 502, debug text names them)."""

    def __init__(self, tried: list[str]) -> None:
        super().__init__("Unable to connect to any targets. Tried: " + ", ".join(tried))
        self.tried = tried


class OriginError(Exception):
    """The origin failed after the connection was made (reset, timeout, bad response)."""

    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__(message)
        #: the target that failed, as access lines name it
        self.target = target


class BodyTooLarge(Exception):
    """
    An origin body exceeded the buffering limit.

    @ivar data: what was read so far.
    @ivar follow: C{follow(write, done)} streams the rest of the body to C{write} and calls
        C{done(clean)} at its end; the origin stays paused until it is called.
    @ivar discard: closes the origin connection instead.
    """

    def __init__(self, data: bytes, follow: Callable[..., None], discard: Callable[[], None]) -> None:
        super().__init__(len(data))
        self.data = data
        self.follow = follow
        self.discard = discard


@dataclass
class OriginResponse:
    """The head of an origin's answer; the body is read through L{deliver_body}."""

    code: int
    reason: bytes
    headers: Headers
    length: int | None
    target: "Target"
    deliver_body: Callable[[IProtocol], None] = field(repr=False)
    #: bytes already read from the body (set when the body was buffered whole)
    body: bytes | None = None


@implementer(IPushProducer)
class _NoProducer:
    """The transport of an already-buffered body: there is nothing to pause."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def buffered_response(code: int, reason: bytes, headers: Headers, body: bytes, target: "Target") -> OriginResponse:
    """An L{OriginResponse} for a body already in memory (the built-in test origin)."""

    def deliver(protocol: IProtocol) -> None:
        # (a body protocol's "transport" is a producer, as the Agent's TransportProxyProducer)
        protocol.makeConnection(cast(Any, _NoProducer()))
        if body:
            protocol.dataReceived(body)
        protocol.connectionLost(Failure(ResponseDone()))

    return OriginResponse(code, reason, headers, len(body), target, deliver, body)


class _Collector(Protocol):
    """Buffers a body up to a limit; past it, pauses the origin and lets the caller choose."""

    def __init__(self, limit: int, done: Deferred[bytes]) -> None:
        self._limit = limit
        self._done = done
        self._parts: list[bytes] = []
        self._size = 0
        self._write: Callable[[bytes], None] | None = None
        self._end: Callable[[bool], None] | None = None
        self._ended: bool | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._write is not None:
            self._write(data)
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._limit and not self._done.called:
            # Stop reading: the caller decides whether to relay the rest (stream holds) or fail.
            self.transport.pauseProducing()  # type: ignore[union-attr]
            self._done.errback(BodyTooLarge(b"".join(self._parts), self._follow, self._discard))

    def _follow(self, write: Callable[[bytes], None], end: Callable[[bool], None], consumer: Any = None) -> None:
        """Stream the rest to C{write}; with a C{consumer}, the origin is its producer meanwhile
        (a client that stops reading pauses the origin, as relayed bodies do)."""
        self._parts = []
        if self._ended is not None:
            end(self._ended)
            return
        if consumer is not None:
            consumer.register_producer(self.transport)

            def finished(clean: bool) -> None:
                if consumer.producer is not None:
                    consumer.unregisterProducer()
                end(clean)

            self._write, self._end = write, finished
        else:
            self._write, self._end = write, end
        if consumer is None or not channel_paused(consumer.channel):
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def _discard(self) -> None:
        self._parts = []
        if self._ended is None:
            self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        clean = bool(reason.check(ResponseDone, ierror.ConnectionDone))
        if self._end is not None:
            self._end(clean)
            return
        self._ended = clean
        if self._done.called:
            return
        if clean:
            self._done.callback(b"".join(self._parts))
        else:
            self._done.errback(OriginError(f"origin body failed: {reason.getErrorMessage()}"))


def read_body(response: OriginResponse, limit: int) -> Deferred[bytes]:
    """
    Read a whole body of at most C{limit} bytes.

    Fails with L{BodyTooLarge} (the upstream paused, the rest unread) past the limit.
    """
    if response.body is not None and len(response.body) <= limit:
        return succeed(response.body)
    done: Deferred[bytes] = Deferred()
    response.deliver_body(_Collector(limit, done))
    return done


def _is_connect_failure(failure: Failure) -> bool:
    """Whether C{failure} means "could not connect" (try the next target) rather than a bad answer."""
    if failure.check(ierror.ConnectError, ierror.DNSLookupError, ierror.ConnectingCancelledError):
        return True
    if failure.check(ResponseNeverReceived):
        # A TLS handshake failure surfaces as ResponseNeverReceived wrapping an SSL error.
        for reason in failure.value.reasons:  # type: ignore[union-attr]
            if "SSL" in type(reason.value).__module__ or "SSL" in type(reason.value).__name__:
                return True
    return False


class OriginClient:
    """Sends one client request to a route's targets, in failover order."""

    _log = Logger()

    def __init__(
        self,
        agent: IAgent,
        insecure_agent: IAgent | None,
        clock: Any,
        *,
        response_timeout: float = RESPONSE_TIMEOUT,
        pool: OriginPool | None = None,
    ) -> None:
        """
        @param agent: verifies TLS certificates (the normal case).
        @param insecure_agent: for targets with the C{insecure} option.
        @param pool: carries plain-HTTP requests without a body (made by default when
            C{agent} is a real C{twisted.web.client.Agent} and C{clock} a reactor).
        """
        self._agent = agent
        self._insecure_agent = insecure_agent or agent
        self._clock = clock
        self._response_timeout = response_timeout
        if pool is None and isinstance(agent, Agent) and IReactorTCP.providedBy(clock):
            # A real Agent on a real reactor: plain-HTTP requests without a body take the lean
            # pool (see http11). Tests pass their own pool, over in-memory connections.
            pool = OriginPool(clock)
            if IReactorCore.providedBy(clock):
                clock.addSystemEventTrigger("before", "shutdown", pool.close)
        self._pool = pool
        #: per target: the host and port the pool connects to, and the Agent-style URI prefix
        self._targets: dict[Target, tuple[bytes, int, bytes]] = {}

    def request(
        self,
        targets: "tuple[Target, ...]",
        method: bytes,
        path: bytes,
        headers: Callable[["Target"], Headers],
        body: Callable[[], IBodyProducer | None],
        handle_test: Callable[["Target"], OriginResponse] | None = None,
        *,
        tried: list[str] | None = None,
    ) -> Deferred[OriginResponse]:
        """
        Try each target until one answers.

        Built from callbacks, not a coroutine: this is every proxied request's path, and a
        coroutine, its Deferred and its resumption are a large share of a proxied GET's cost
        (bench/README.md). Cancelling the result cancels the attempt in progress.

        @param path: path and query, as they go to the origin.
        @param headers: the request headers for a given target (its C{host=} option
            changes the Host header).
        @param body: makes a fresh body producer for each attempt (or C{None} for no body).
        @param tried: targets already found unreachable (named by L{AllTargetsFailed}).
        @return: fires with the first answer; fails with L{AllTargetsFailed} when nobody
            could be connected to, L{OriginError} when a target connected, then failed
            before answering (or did not answer within the response timeout).
        """
        return self._attempt(_Attempt(targets, method, path, headers, body, handle_test, [] if tried is None else tried), 0)

    def _attempt(self, attempt: "_Attempt", index: int) -> Deferred[OriginResponse]:
        """Send C{attempt} to C{attempt.targets[index]}, or the first usable one after it."""
        targets = attempt.targets
        while index < len(targets):
            target = targets[index]
            kind = target.kind
            if kind == "test":
                assert attempt.handle_test is not None
                try:
                    return succeed(attempt.handle_test(target))
                except Exception:
                    return fail()
            if kind != "http":
                self._log.error("target {target} is not supported (zhttp targets are not implemented)", target=target.label())
                attempt.tried.append(target.label())
                index += 1
                continue
            try:
                d = self._send(target, attempt)
            except Exception:
                return fail()
            # Deferred.addTimeout's behaviour (cancel the request, report a timeout), with one
            # delayed call and no extra callbacks on the chain: addTimeout's callbacks run on
            # every proxied request
            timer = _Timer()
            if not d.called:
                timer.call = self._clock.callLater(self._response_timeout, timer.expire, d)
            d.addCallbacks(_answered, self._failed, callbackArgs=(target, timer), errbackArgs=(timer, attempt, index))
            return d
        return fail(AllTargetsFailed(attempt.tried))

    def _send(self, target: "Target", attempt: "_Attempt") -> Deferred[Any]:
        """
        One request to an http C{target}: through the lean pool when it can carry it (plain
        HTTP, no body, an origin-form path and a token method: the bulk of proxied traffic),
        else through the Agent. Raises what C{body} or C{headers} raise.
        """
        found = self._targets.get(target)
        if found is None:
            found = self._targets[target] = _target_address(target)
        host, port, prefix = found
        producer = attempt.body()
        method, path = attempt.method, attempt.path
        pool = self._pool
        if pool is not None and producer is None and not target.ssl and origin_form_ok(path) and method_ok(method):
            try:
                data = request_bytes(method, path, attempt.headers(target), host if port == 80 else b"%s:%d" % (host, port))
            except RequestGenerationFailed:
                return fail()  # as the Agent reports it: through the request's Deferred
            return pool.request(host, port, method, data)
        agent = self._insecure_agent if target.insecure else self._agent
        twisted_headers = TwistedHeaders()
        for name, value in attempt.headers(target):
            twisted_headers.addRawHeader(name, value)
        return agent.request(method, prefix + path, twisted_headers, producer)

    def _failed(self, failure: Failure, timer: "_Timer", attempt: "_Attempt", index: int) -> Any:
        """The attempt on C{attempt.targets[index]} failed: fail over, time out or report."""
        timer.stop()
        target = attempt.targets[index]
        if failure.check(CancelledError):
            if timer.expired:  # (as addTimeout: only a CancelledError becomes the timeout)
                raise OriginError(f"timed out waiting for {target.label()}", target.label())
            return failure
        if _is_connect_failure(failure):
            self._log.info("cannot connect to {target}: {why}", target=target.label(), why=failure.getErrorMessage())
            attempt.tried.append(target.label())
            return self._attempt(attempt, index + 1)
        raise OriginError(f"{target.label()}: {failure.getErrorMessage()}", target.label())


@dataclass(slots=True)
class _Attempt:
    """One L{OriginClient.request}: what each of its targets is sent, and who refused it."""

    targets: "tuple[Target, ...]"
    method: bytes
    path: bytes
    headers: Callable[["Target"], Headers]
    body: Callable[[], IBodyProducer | None]
    handle_test: Callable[["Target"], OriginResponse] | None
    tried: list[str]


class _Timer:
    """The response timeout of one attempt of L{OriginClient.request}."""

    __slots__ = ("call", "expired")

    def __init__(self) -> None:
        self.call: Any = None
        self.expired = False

    def expire(self, d: Deferred[Any]) -> None:
        self.call = None
        self.expired = True
        d.cancel()

    def stop(self) -> None:
        call = self.call
        if call is not None:
            self.call = None
            call.cancel()


def _answered(answer: Any, target: "Target", timer: _Timer) -> OriginResponse:
    """The head of an answer, from the pool (an L{OriginAnswer}) or the Agent (an C{IResponse})."""
    timer.stop()
    if type(answer) is OriginAnswer:
        return OriginResponse(answer.code, answer.phrase, answer.headers, answer.length, target, answer.deliver_body)
    raw: Headers = []
    for name, values in answer.headers.getAllRawHeaders():
        for value in values:
            raw.append((name, value))
    length = None if answer.length is UNKNOWN_LENGTH else int(answer.length)
    return OriginResponse(answer.code, answer.phrase, raw, length, target, answer.deliverBody)


def _target_address(target: "Target") -> tuple[bytes, int, bytes]:
    """C{(host, port, uri prefix)} for an http target: the host IDNA-encoded, IPv6 in brackets,
    as the Agent's URI parse gives it (worked out once per target, not per request)."""
    scheme = b"https" if target.ssl else b"http"
    host = target.host.encode("idna") if not target.host.startswith("[") else target.host.encode("ascii")
    if b":" in host and not host.startswith(b"["):
        host = b"[" + host + b"]"
    return host, target.port, b"%s://%s:%d" % (scheme, host, target.port)
