# -*- test-case-name: tests.origin.test_http11 -*-
"""
A lean HTTP/1.1 client for plain-HTTP origins: persistent connections kept per origin, one
request in flight per connection, the response head handed over as soon as it is parsed and
the body streamed to a protocol that can pause the origin.

Why by hand rather than through twisted.web's C{Agent}: the Agent was most of pushpin-tx's
CPU per proxied request (bench/README.md): URI parsing, an endpoint and IDNA per request, a
Headers round trip each way, a stateful-dispatcher parser, three Deferred layers, and a
buffered write that costs two C{epoll_ctl} calls. This client keeps the
Agent's observable behaviour, which the rest of pushpin-tx (and its tests) were built on:

  - the request: C{METHOD path HTTP/1.1}, the headers grouped by name in first-appearance
    order with Twisted's canonical capitalisation (C{content-type} -> C{Content-Type}),
    line breaks inside values folded to spaces, C{Content-Length: 0} for a body-less PUT or
    POST, exactly one Host (added from the target when absent);
  - the response: the same parse as C{twisted.web._newclient.HTTPClientParser} (lines end in
    LF or CRLF, folded header lines, 1xx answers skipped, connection-control headers kept
    out of the response headers, C{Content-Length} only kept for HEAD, 204 and 304 without a
    body, chunked or Content-Length or read-until-close bodies), and the same exceptions
    (C{ResponseNeverReceived}, C{ResponseFailed}, C{ResponseDone}, C{PotentialDataLoss});
  - the connection pool: reused while the origin does not answer C{Connection: close}, at
    most C{max_idle} idle per origin, closed after C{idle_timeout} idle seconds, and an
    idempotent request that fails on a reused connection before any answer is retried once
    on a new one (the origin had closed it meanwhile).

Why the response parse is not a library's (measured for issue 18 on 2026-12-02): the head
parse here takes 9.1 us for a typical 253-byte origin answer (9 headers and a small body, the
parse alone, best of 7); C{httptools} 0.9.0 (llhttp, the parser behind uvicorn) 3.0 us with
its callbacks building the same grouped headers; C{h11} 0.16.0 39.7 us for its request and
response cycle, four times slower, so h11 is out. httptools cannot be told that an answer is
to a HEAD (it would wait for a HEAD answer's Content-Length of body), so it was tried as the
head parser only, in place of C{_parse_head}, fed the head alone, with its "dangerous
leniencies" on for LF-only lines and folded headers. It then fails 9 of the 211 tests of
tests/origin and tests/web/test_proxy.py: it refuses C{Content-Length: 2, 2} (equal
duplicates, which the Agent takes), and its errors are not the Agent's (C{ParseError} where
the Agent raises C{ValueError} for conflicting lengths or a header without a colon, or
C{BadResponseVersion}). On the bench (C{run_all.py --only proxy_get}, 5 interleaved A/B pairs,
load average 2.7-4.7) CPU/request was a median 165.4 us here against 162.5 us with httptools,
runs of both spreading over 155-172 us: under 2 %, inside the noise. No gain that shows is
worth a compiled dependency and an error mapping to keep up by hand.

Only requests without a body take this path (L{pushpin_tx.origin.client} decides); TLS origins and
requests with a body still go through the Agent.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers as TwistedHeaders
from zope.interface import implementer

from pushpin_tx._compat import (
    BadHeaders,
    BadResponseVersion,
    ChunkedTransferDecoder,
    DataLoss,
    ParseError,
    RequestGenerationFailed,
    decint,
    istoken,
)
from pushpin_tx.protocol.headers import Headers
from pushpin_tx.net.writethrough import writer_for

__all__ = ["OriginPool", "OriginAnswer", "canonical_name", "request_bytes", "origin_form_ok", "method_ok"]


#: Twisted's line limit (C{LineReceiver.MAX_LENGTH}): a longer response line fails the response.
MAX_LINE = 16384

#: Methods the Agent retries once on a fresh connection when a reused one fails unanswered.
_RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})

#: Headers about the connection, not the entity: kept out of the response headers (as
#: C{HTTPParser.CONNECTION_CONTROL_HEADERS}).
_CONNECTION_CONTROL = frozenset(
    {b"content-length", b"connection", b"keep-alive", b"te", b"trailers", b"transfer-encoding", b"upgrade", b"proxy-connection"}
)

_NO_BODY_CODES = frozenset({204, 304})
_KNOWN_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"})
_HEAD_END = re.compile(rb"\n\r?\n")
_VALID_TARGET = re.compile(rb"\A[\x21-\x7e]+\Z")

# canonical header names: lower-case or as-sent name -> Twisted's capitalisation
_canonical: dict[bytes, bytes] = {}
_CANONICAL_MAX = 10000


def canonical_name(name: bytes) -> bytes:
    """
    C{name} as twisted.web's C{Headers} writes it (C{x-foo-bar} -> C{X-Foo-Bar}, C{etag} ->
    C{ETag}); raises C{InvalidHeaderName} for a name that is not an HTTP token.
    """
    found = _canonical.get(name)
    if found is not None:
        return found
    # Ask twisted.web itself (public API), so the capitalisation rules stay exactly its own.
    probe = TwistedHeaders()
    probe.addRawHeader(name, b"")
    result = next(iter(probe.getAllRawHeaders()))[0]
    if len(_canonical) < _CANONICAL_MAX:
        _canonical[name] = result
    return result


def _fold(value: bytes) -> bytes:
    """A header value with its line breaks turned into spaces (Twisted's sanitising)."""
    if b"\r" in value or b"\n" in value:
        return b" ".join(value.splitlines())
    return value


def request_bytes(method: bytes, path: bytes, headers: Headers, default_host: bytes) -> bytes:
    """
    The bytes of a body-less request, as the Agent writes them (see the module docstring).

    @raise RequestGenerationFailed: more than one Host header.
    """
    groups: dict[bytes, list[bytes]] = {}
    canonical = _canonical
    for name, value in headers:
        key = canonical.get(name)
        if key is None:
            key = canonical_name(name)
        if b"\n" in value or b"\r" in value:
            value = _fold(value)
        values = groups.get(key)
        if values is None:
            groups[key] = [value]
        else:
            values.append(value)
    hosts = groups.get(b"Host")
    if hosts is None:
        groups[b"Host"] = [default_host]
    elif len(hosts) != 1:
        raise RequestGenerationFailed([Failure(BadHeaders("Exactly one Host header required"))])
    parts = [method, b" ", path, b" HTTP/1.1\r\n"]
    if method in (b"PUT", b"POST"):
        parts.append(b"Content-Length: 0\r\n")
    for name, values in groups.items():
        for value in values:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def origin_form_ok(path: bytes) -> bool:
    """
    Whether C{path} goes to the origin unchanged. The Agent sends a URI's "origin form": no
    fragment, no empty query or parameters, C{/} for nothing; paths with any of those (rare)
    take the Agent's own parse instead (L{pushpin_tx.origin.client}).
    """
    return (
        path[:1] == b"/"
        and b"#" not in path
        and b";" not in path
        and not path.endswith(b"?")
        and _VALID_TARGET.match(path) is not None
    )


def method_ok(method: bytes) -> bool:
    """Whether C{method} is an HTTP token (others are left to the Agent, which refuses them)."""
    return method in _KNOWN_METHODS or istoken(method)


def _content_length(values: list[bytes] | None) -> int | None:
    """Twisted's C{_contentLength}: equal duplicates allowed, anything else a ValueError."""
    if values is None:
        return None
    joined = b",".join(values)
    if b"," in joined:
        found = {decint(v) for v in joined.split(b",")}
        if len(found) != 1:
            raise ValueError(f"Invalid response: conflicting Content-Length headers: {joined!r}")
        return found.pop()
    return decint(joined)


def _parse_version(version: bytes) -> None:
    if version == b"HTTP/1.1":
        return
    try:
        _, number = version.split(b"/")
        major, minor = (int(x) for x in number.split(b"."))
    except ValueError as e:
        raise BadResponseVersion(str(e), version)
    if major < 0 or minor < 0:
        raise BadResponseVersion("version may not be negative", version)


@implementer(IPushProducer)
class OriginAnswer:
    """
    One request/response exchange. Once the head is in: C{code}, C{phrase}, C{headers}
    (canonical names, grouped), C{length} (None: unknown) and L{deliver_body}.

    It is also the "transport" the body protocol gets: pausing, resuming or stopping it acts
    on the origin connection only while this exchange owns it (as the Agent's
    C{TransportProxyProducer}).
    """

    disconnecting = False

    def __init__(self, method: bytes, data: bytes, deferred: Deferred["OriginAnswer"]) -> None:
        self.method = method
        self.data = data
        self.deferred = deferred
        self.code = 0
        self.phrase = b""
        self.headers: Headers = []
        self.length: int | None = None
        self._conn: _OriginConnection | None = None
        self._protocol: Any = None
        self._buffer: list[bytes] | None = []
        self._end: Failure | None = None  # how the body ended, while no protocol took it
        self._finished = False
        self.connecting: Deferred[Any] | None = None

    @property
    def complete(self) -> bool:
        """Whether the whole answer is in: the body no longer depends on the connection."""
        return self._finished

    # body delivery ----------------------------------------------------------------------

    def deliver_body(self, protocol: Any) -> None:
        """Give the body (what arrived so far, then the rest as it comes) to C{protocol}."""
        if self._buffer is None:
            raise RuntimeError("the response body was already delivered")
        protocol.makeConnection(self)
        buffered, self._buffer = self._buffer, None
        for data in buffered:
            protocol.dataReceived(data)
        if self._end is not None:
            end, self._end = self._end, None
            protocol.connectionLost(end)
            return
        self._protocol = protocol
        conn = self._conn
        if conn is not None and conn.waiting_for_body:
            conn.waiting_for_body = False
            conn.transport.resumeProducing()  # type: ignore[union-attr]

    def _body(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is not None:
            protocol.dataReceived(data)
        elif self._buffer is not None:
            self._buffer.append(data)

    def _body_end(self, reason: Failure) -> None:
        protocol = self._protocol
        if protocol is not None:
            self._protocol = None
            protocol.connectionLost(reason)
        elif self._buffer is not None:
            self._end = reason

    # IPushProducer, for the body protocol --------------------------------------------------

    def pauseProducing(self) -> None:
        if self._conn is not None and not self._finished:
            self._conn.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if self._conn is not None and not self._finished:
            self._conn.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        if self._conn is not None and not self._finished:
            self._conn.transport.stopProducing()  # type: ignore[union-attr]

    def loseConnection(self) -> None:
        if self._conn is not None and not self._finished:
            self._conn.transport.loseConnection()  # type: ignore[union-attr]


class _OriginConnection(Protocol):
    """One connection to an origin: sends a request, parses its answer, goes back to the pool."""

    _log = Logger()

    def __init__(self, pool: "OriginPool", key: tuple[bytes, int]) -> None:
        self._pool = pool
        self._key = key
        self.answer: OriginAnswer | None = None
        self.reused = False
        self.open = False
        self.idle_since = 0.0
        self.waiting_for_body = False
        self._buf = b""
        self._state = 0  # 0 idle, 1 head, 2 body, 3 until close
        self._received = False
        self._remaining = 0
        self._decoder: Any = None
        self._close_after = False
        self._write: Callable[[bytes], None] | None = None

    def connectionMade(self) -> None:
        self.open = True
        transport = self.transport
        try:
            transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        except Exception:  # not a TCP transport (tests)
            pass
        self._write = writer_for(transport)

    def send(self, answer: OriginAnswer) -> None:
        """Write C{answer}'s request; its Deferred fires with the head."""
        self.answer = answer
        answer._conn = self
        self._state = 1
        self._received = False
        self._buf = b""
        self._write(answer.data)  # type: ignore[misc]

    def abort(self) -> None:
        """Drop the connection now (the request was cancelled)."""
        self.answer = None
        self._state = 0
        self.transport.abortConnection()  # type: ignore[union-attr]

    # receiving --------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        state = self._state
        if state == 2:
            answer = self.answer
            remaining = self._remaining
            if len(data) < remaining:
                self._remaining = remaining - len(data)
                answer._body(data)  # type: ignore[union-attr]
                return
            self._remaining = 0
            answer._body(data[:remaining] if len(data) > remaining else data)  # type: ignore[union-attr]
            self._done()
            return
        if state == 1:
            try:
                self._head_received(data)
            except Exception:
                self._give_up(Failure())
            return
        if state == 3:
            self.answer._body(data)  # type: ignore[union-attr]
            return
        if state == 4:
            try:
                self._decoder.dataReceived(data)
            except Exception:
                self._give_up(Failure())
            return
        # bytes while idle, or after a response that was fully read: the Agent closes too
        self.transport.loseConnection()  # type: ignore[union-attr]

    def _head_received(self, data: bytes) -> None:
        self._received = True
        buf = self._buf + data if self._buf else data
        while True:
            end = _HEAD_END.search(buf)
            if end is None:
                if len(buf) - buf.rfind(b"\n") - 1 > MAX_LINE:
                    raise ParseError("response line too long", buf[:100])
                self._buf = buf
                return
            head, buf = buf[: end.start()], buf[end.end() :]
            if not self._parse_head(head):
                break  # (True: a 1xx answer was skipped, the real one follows)
        self._buf = b""
        answer = self.answer
        assert answer is not None
        method = answer.method
        code = answer.code
        conn_headers = self._conn_headers
        self._close_after = b"close" in conn_headers.get(b"connection", ())
        if code in _NO_BODY_CODES or method == b"HEAD":
            # as the Agent: the connection goes back to the pool, then the head is handed over
            answer.length = 0
            self._done()
            self._fire(answer)
            return
        encodings = conn_headers.get(b"transfer-encoding")
        if encodings:
            if encodings[0].lower() != b"chunked":
                raise KeyError(encodings[0].lower())
            self._decoder = ChunkedTransferDecoder(self._chunk, self._chunks_done)
            self._state = 4
            self._fire(answer)
            if buf and self._state == 4:
                self._decoder.dataReceived(buf)
            return
        length = _content_length(conn_headers.get(b"content-length"))
        answer.length = length
        if length == 0:
            self._done()
            self._fire(answer)
            return
        if length is None:
            self._state = 3
            self._fire(answer)
            if buf and self._state == 3:
                answer._body(buf)
            return
        self._state = 2
        self._remaining = length
        if len(buf) >= length:
            # the whole body came with the head (the common small answer): the exchange ends
            # first, as a body-less one does, so whoever takes the head gets a complete answer
            self.dataReceived(buf)
            self._fire(answer)
            return
        self._fire(answer)
        if buf and self._state == 2:
            self.dataReceived(buf)

    def _parse_head(self, head: bytes) -> bool:
        """Parse status line and headers into the answer; True when the answer was a 1xx."""
        lines = head.split(b"\n")
        status = lines[0]
        if status[-1:] == b"\r":
            status = status[:-1]
        parts = status.split(b" ", 2)
        if len(parts) == 2:
            version, code_bytes = parts
            phrase = b""
        elif len(parts) == 3:
            version, code_bytes, phrase = parts
        else:
            raise ParseError("wrong number of parts", status)
        try:
            code = int(code_bytes)
        except ValueError:
            raise ParseError("non-integer status code", status)
        _parse_version(version)
        answer = self.answer
        assert answer is not None
        head_request = answer.method == b"HEAD"
        groups: dict[bytes, list[bytes]] = {}
        conn: dict[bytes, list[bytes]] = {}
        partial: list[bytes] | None = None
        for line in lines[1:]:
            if len(line) > MAX_LINE:
                raise ParseError("response line too long", line[:100])
            if line[-1:] == b"\r":
                line = line[:-1]
            if line and line[0] in b" \t":
                partial.append(line)  # type: ignore[union-attr]  # no header to continue: fails, as Twisted does
                continue
            if partial is not None:
                self._header(b"".join(partial), groups, conn, head_request)
            partial = [line]
        if partial is not None:
            self._header(b"".join(partial), groups, conn, head_request)
        if 100 <= code < 200:
            self._log.info("Ignoring unexpected {code} response", code=code)
            return True
        answer.code = code
        answer.phrase = phrase
        answer.headers = [(name, value) for name, values in groups.items() for value in values]
        self._conn_headers = conn
        return False

    @staticmethod
    def _header(line: bytes, groups: dict[bytes, list[bytes]], conn: dict[bytes, list[bytes]], head_request: bool) -> None:
        name, value = line.split(b":", 1)
        value = _fold(value.strip())
        lower = name.lower()
        if lower in _CONNECTION_CONTROL and not (head_request and lower == b"content-length"):
            conn.setdefault(lower, []).append(value)
            return
        key = _canonical.get(lower)
        if key is None:
            key = canonical_name(lower)
        values = groups.get(key)
        if values is None:
            groups[key] = [value]
        else:
            values.append(value)

    def _fire(self, answer: OriginAnswer) -> None:
        d = answer.deferred
        if d.called:
            return
        d.callback(answer)
        if self.answer is answer and answer._buffer is not None and self._state in (2, 3, 4):
            # nobody took the body yet: stop reading until someone does (as the Agent does)
            self.waiting_for_body = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def _chunk(self, data: bytes) -> None:
        self.answer._body(data)  # type: ignore[union-attr]

    def _chunks_done(self, rest: bytes) -> None:
        self._done()

    def _done(self) -> None:
        """The whole answer is in: back to the pool (or closed), then end the body."""
        answer = self.answer
        assert answer is not None
        self.answer = None
        self._state = 0
        self._decoder = None
        answer._finished = True
        if self._close_after or not self.open:
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            if self.waiting_for_body:
                self.waiting_for_body = False
                self.transport.resumeProducing()  # type: ignore[union-attr]
            self._pool.put(self._key, self)
        answer._body_end(Failure(ResponseDone("Response body fully received")))

    def _give_up(self, reason: Failure) -> None:
        """A malformed answer: close, and fail the request or its body."""
        self.transport.loseConnection()  # type: ignore[union-attr]
        self._fail(reason)

    def _fail(self, reason: Failure) -> None:
        answer = self.answer
        if answer is None:
            return
        state = self._state
        self.answer = None
        self._state = 0
        answer._finished = True
        if state == 1:
            d = answer.deferred
            if not d.called:
                error = ResponseFailed([reason]) if self._received else ResponseNeverReceived([reason])
                if not self._received and self.reused and answer.method in _RETRYABLE:
                    self._pool.retry(self._key, answer)
                    return
                d.errback(Failure(error))
            return
        if state == 3:
            answer._body_end(Failure(PotentialDataLoss()))
            return
        answer._body_end(Failure(ResponseFailed([reason, Failure(DataLoss())])))

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        self.open = False
        self._pool.lost(self._key, self)
        if self._state == 3:
            # read until close: the close is the end of the body
            answer = self.answer
            self.answer = None
            self._state = 0
            if answer is not None:
                answer._finished = True
                answer._body_end(Failure(PotentialDataLoss()))
            return
        self._fail(reason)


class _ConnectionFactory(Factory):
    """Builds the one connection it was made for; quiet (origin connections come and go)."""

    noisy = False

    def __init__(self, conn: _OriginConnection) -> None:
        self._conn = conn

    def buildProtocol(self, addr: Any) -> _OriginConnection:
        return self._conn


class OriginPool:
    """Persistent connections to plain-HTTP origins, keyed by host and port."""

    def __init__(
        self,
        reactor: Any,
        *,
        connect_timeout: float = 10.0,
        max_idle: int = 64,
        idle_timeout: float = 240.0,
        warm: int = 4,
        surplus_timeout: float = 10.0,
        endpoint_for: Callable[[bytes, int], Any] | None = None,
    ) -> None:
        """
        @param connect_timeout: seconds a new connection may take (the Agent's C{connectTimeout}).
        @param max_idle: idle connections kept per origin (the oldest is closed past it).
        @param idle_timeout: seconds an idle connection is kept.
        @param warm: idle connections per origin that may stay for the whole C{idle_timeout};
            the others (what a burst of concurrent requests left behind) are closed once idle
            for C{surplus_timeout} seconds, so a burst does not hold C{max_idle} descriptors
            for minutes after it ended (requests reuse the most recently used first, so
            steady traffic keeps what it needs).
        @param surplus_timeout: seconds an idle connection beyond the C{warm} ones is kept.
        @param endpoint_for: C{endpoint_for(host, port)} makes the client endpoint new
            connections go through (default: a C{HostnameEndpoint}, as the Agent uses).
        """
        self._reactor = reactor
        self._endpoint_for = endpoint_for or self._hostname_endpoint
        self._connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.warm = warm
        self.surplus_timeout = surplus_timeout
        self._idle: dict[tuple[bytes, int], list[_OriginConnection]] = {}
        self._endpoints: dict[tuple[bytes, int], Any] = {}
        self._sweep: Any = None

    def request(self, host: bytes, port: int, method: bytes, data: bytes) -> Deferred[OriginAnswer]:
        """
        Send the request bytes C{data} (from L{request_bytes}) to C{host:port}.

        Fires with the L{OriginAnswer} once its head is in; fails with the endpoint's error
        when no connection can be made, C{ResponseNeverReceived} / C{ResponseFailed} when
        the answer does not come or is malformed, C{CancelledError} when cancelled.
        """
        answer: OriginAnswer

        def cancel(d: Deferred[OriginAnswer]) -> None:
            connecting = answer.connecting
            if connecting is not None:
                answer.connecting = None
                connecting.cancel()
            conn = answer._conn
            if conn is not None and conn.answer is answer:
                conn.abort()

        d: Deferred[OriginAnswer] = Deferred(cancel)
        answer = OriginAnswer(method, data, d)
        key = (host, port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.open:
                conn.reused = True
                conn.send(answer)
                return d
        self._connect(key, answer)
        return d

    def retry(self, key: tuple[bytes, int], answer: OriginAnswer) -> None:
        """A reused connection failed before any answer: once more, on a new connection."""
        answer._conn = None
        self._connect(key, answer)

    def _connect(self, key: tuple[bytes, int], answer: OriginAnswer) -> None:
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._endpoint_for(key[0], key[1])
        conn = _OriginConnection(self, key)
        connecting = endpoint.connect(_ConnectionFactory(conn))
        answer.connecting = connecting

        def connected(_: object) -> None:
            answer.connecting = None
            if answer.deferred.called:  # cancelled meanwhile
                conn.transport.loseConnection()  # type: ignore[union-attr]
                return
            conn.send(answer)

        def failed(f: Failure) -> None:
            answer.connecting = None
            if not answer.deferred.called:
                answer.deferred.errback(f)

        connecting.addCallbacks(connected, failed)

    def _hostname_endpoint(self, host: bytes, port: int) -> HostnameEndpoint:
        if host.startswith(b"["):
            host = host[1:-1]  # an IPv6 address, as the URI writes it
        return HostnameEndpoint(self._reactor, host, port, timeout=self._connect_timeout)

    def put(self, key: tuple[bytes, int], conn: _OriginConnection) -> None:
        """A connection finished its exchange and may carry the next request."""
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = []
        if len(idle) >= self.max_idle:
            oldest = idle.pop(0)
            oldest.transport.loseConnection()  # type: ignore[union-attr]
        conn.idle_since = self._reactor.seconds()
        idle.append(conn)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self._sweep_interval(), self._close_stale)

    def _sweep_interval(self) -> float:
        return min(self.idle_timeout / 4, self.surplus_timeout / 2)

    def lost(self, key: tuple[bytes, int], conn: _OriginConnection) -> None:
        """A connection closed: forget it if it was idle."""
        idle = self._idle.get(key)
        if idle and conn in idle:
            idle.remove(conn)

    def _close_stale(self) -> None:
        self._sweep = None
        now = self._reactor.seconds()
        stale, surplus = now - self.idle_timeout, now - self.surplus_timeout
        left = False
        for idle in self._idle.values():
            # oldest first: requests take the most recently used from the end
            beyond_warm = len(idle) - self.warm
            closing = [c for i, c in enumerate(idle) if c.idle_since <= stale or (i < beyond_warm and c.idle_since <= surplus)]
            for conn in closing:
                idle.remove(conn)
                conn.transport.loseConnection()  # type: ignore[union-attr]
            left = left or bool(idle)
        if left:
            self._sweep = self._reactor.callLater(self._sweep_interval(), self._close_stale)

    def close(self) -> None:
        """Close every idle connection (at shutdown)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        idle_lists, self._idle = list(self._idle.values()), {}
        for idle in idle_lists:
            for conn in idle:
                conn.transport.loseConnection()  # type: ignore[union-attr]
