# -*- test-case-name: tests.web.test_control -*-
"""
The HTTP control API (reference §6.2): C{GET /}, C{POST /publish/}, C{POST /recover/}.

Publishers such as the C{pubcontrol} and C{gripcontrol} libraries talk to this, so status
codes, bodies and headers are Pushpin 1.36's to the byte, malformed requests included.
Pushpin serves this port with its own small HTTP server (C{SimpleHttpServer}), not a
general one, and that server's rules are what a client sees:

  - The header block ends at the first blank line (C{\\n\\n} or C{\\n\\r\\n}; a bare LF is a
    line end). It must end within C{max_headers} bytes, else 400 C{Request header too
    large.}. A request line without two spaces, or with an empty method, is 400 C{Failed to
    parse request header.}; the version is C{HTTP/1.0} exactly or taken as 1.1; header lines
    without a colon are skipped.
  - Every method but C{GET}, C{HEAD}, C{DELETE} and C{OPTIONS}, and any request with
    C{Transfer-Encoding}, needs a C{Content-Length}: else 411 C{Request requires
    Content-Length.}. A C{Content-Length} that is not a 32-bit decimal integer is 400
    C{Bad Content-Length.}; over C{max_body} is 400 C{Request body too large.}, sent as soon
    as the headers are in; more body bytes than it announced is 400 C{Request body exceeded
    Content-Length.} (so is a pipelined second request).
  - Every answer is C{text/plain} unless a success body is JSON, carries C{Connection: close}
    and C{Content-Length}, answers in the request's HTTP version, and the connection is
    closed after it. A client that leaves mid-request gets nothing.

The parser is a small state machine on a plain L{Protocol}: twisted.web's channel has its
own, different answers (a bare C{400 Bad Request} with no headers, a silent close for a long
header line) and accepts what Pushpin refuses (chunked bodies).

Authentication (issue 18, pushpin-tx's; Pushpin has none): with a L{PublishAuth}, C{/publish/}
and C{/recover/} need valid credentials (checked after the 406 and 404 rules, before 405),
else C{401 Unauthorized} with a C{WWW-Authenticate} per accepted scheme, and nothing is
published or recovered. C{GET /} stays open: it answers C{Pushpin API} and nothing else, a
liveness probe. The log line of a refusal says why in fixed words, never with the
credentials. A Basic check's bcrypt runs in a thread, so the answer may come a turn later.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from twisted.internet import defer, protocol, threads
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from pushpin_tx.net.writethrough import writer_for
from pushpin_tx.protocol.items import PublishBodyError, parse_publish_body
from pushpin_tx.protocol.publish_auth import BasicAttempt, PublishAuth, Verdict
from pushpin_tx.protocol.qt.numbers import bytearray_to_int

if TYPE_CHECKING:
    from pushpin_tx.core.intake import PublishIntake

__all__ = ["ControlRequest", "ControlResource", "ControlSite", "ControlProtocol", "negotiate", "parse_head", "parse_content_length",
           "reachable_from_elsewhere"]

#: how long an idle control connection may stay open, in seconds (twisted.web's default;
#: Pushpin has none)
IDLE_TIMEOUT = 60 * 60 * 12

_END_OF_HEADERS = re.compile(rb"\n\r?\n")
_NO_BODY_METHODS = (b"HEAD", b"GET", b"DELETE", b"OPTIONS")


class ControlRequest(NamedTuple):
    """One parsed control API request (the request line's fields as sent)."""

    method: bytes
    uri: bytes
    http10: bool
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header C{name} (matched case-insensitively), in order."""
        lower = name.lower()
        return [v for k, v in self.headers if k.lower() == lower]

    def header(self, name: bytes) -> bytes | None:
        """The first value of header C{name}, or C{None}."""
        found = self.values(name)
        return found[0] if found else None


class Answer(NamedTuple):
    """A response: status, reason, headers before C{Connection}/C{Content-Length}, body."""

    code: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def _text(code: int, reason: bytes, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Answer:
    return Answer(code, reason, [*(headers or []), (b"Content-Type", b"text/plain")], message.encode("utf-8"))


def _bad_request(message: str) -> Answer:
    return _text(400, b"Bad Request", message + "\n")


def encode(answer: Answer, http10: bool) -> bytes:
    """The answer's bytes, as Pushpin's server writes them."""
    head = [b"HTTP/%s %d %s" % (b"1.0" if http10 else b"1.1", answer.code, answer.reason)]
    head += [name + b": " + value for name, value in answer.headers]
    head += [b"Connection: close", b"Content-Length: %d" % len(answer.body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + answer.body


def parse_head(data: bytes) -> ControlRequest | None:
    """
    The request line and headers of a header block (up to and including the newline before
    the blank line), as Pushpin parses them; C{None} if the request line is unusable.
    """
    lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")[:-1]]
    if not lines:
        return None
    method, space, rest = lines[0].partition(b" ")
    method = method.split(b"\0", 1)[0]  # Qt's fromLatin1 stops at a NUL
    if not space or not method:
        return None
    uri, space, version = rest.partition(b" ")
    if not space:
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        headers.append((name, value[1:] if value.startswith(b" ") else value))
    return ControlRequest(method, uri, version == b"HTTP/1.0", headers)


def parse_content_length(value: bytes) -> int | None:
    """A C{Content-Length} value as Qt's C{toInt} reads it (a signed 32-bit decimal), or C{None}."""
    return bytearray_to_int(value)


class ControlProtocol(protocol.Protocol, TimeoutMixin):
    """One control API connection: read one request the way Pushpin does, answer, close."""

    _log = Logger()
    transport: Any

    def __init__(self, site: "ControlSite") -> None:
        self._site = site
        self._buf = b""
        self._request: ControlRequest | None = None  # set once the headers are in
        self._length = 0
        self._done = False
        self._lost = False

    def connectionMade(self) -> None:
        self.setTimeout(self._site.timeout)

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self.resetTimeout()
        self._buf += data
        if self._request is None:
            self._read_head()
        if self._request is not None and not self._done:
            self._read_body(self._request)

    def _read_head(self) -> None:
        limit = self._site.max_headers
        end = _END_OF_HEADERS.search(self._buf, 0, limit)
        if end is None:
            if len(self._buf) >= limit:
                self._refuse(_bad_request("Request header too large."), False, "header block too large")
            return
        request = parse_head(self._buf[: end.start() + 1])
        self._buf = self._buf[end.end() :]
        if request is None:
            self._refuse(_bad_request("Failed to parse request header."), False, "unparsable request line")
            return
        length = request.header(b"content-length")
        if length is None:
            if request.header(b"transfer-encoding") is not None or request.method not in _NO_BODY_METHODS:
                self._refuse(_text(411, b"Length Required", "Request requires Content-Length.\n"), request.http10, "no Content-Length")
                return
            self._answer(request)
            return
        n = parse_content_length(length)
        if n is None:
            self._refuse(_bad_request("Bad Content-Length."), request.http10, "bad Content-Length")
            return
        if n > self._site.max_body:
            self._refuse(_bad_request("Request body too large."), request.http10, "body too large")
            return
        if request.header(b"expect") == b"100-continue":
            self.transport.write(b"HTTP/%s 100 Continue\r\n\r\n" % (b"1.0" if request.http10 else b"1.1"))
        self._request, self._length = request, n

    def _read_body(self, request: ControlRequest) -> None:
        if len(self._buf) > self._length:
            self._refuse(_bad_request("Request body exceeded Content-Length."), request.http10, "body longer than Content-Length")
        elif len(self._buf) == self._length:
            self._answer(request._replace(body=self._buf))

    def _answer(self, request: ControlRequest) -> None:
        answer = self._site.resource.handle(request)
        self._done = True  # no more bytes are read while the credentials are checked or the answer is held
        if isinstance(answer, Answer):
            self._finish_held(answer, request.http10)
            return
        self.setTimeout(None)
        answer.addCallback(self._finish_held, request.http10)
        answer.addErrback(lambda f: self._log.failure("control: answering failed", f))

    def _finish_held(self, answer: Answer, http10: bool) -> None:
        # Backpressure: while the proxy's waiting deliveries are over their bound, the answer
        # (a publish's included) is held until they are back under the low-water mark.
        self._site.resource.when_relieved(lambda: self._finish_later(answer, http10))

    def _finish_later(self, answer: Answer, http10: bool) -> None:
        if self._lost:
            return  # the client left while its credentials were checked or its answer was held
        self._finish(answer, http10)

    def _refuse(self, answer: Answer, http10: bool, why: str) -> None:
        peer = self.transport.getPeer()
        self._log.debug("control: refused a request from {peer}: {why}", peer=getattr(peer, "host", peer), why=why)
        self._finish(answer, http10)

    def _finish(self, answer: Answer, http10: bool) -> None:
        self._done = True
        self._buf = b""
        self.setTimeout(None)
        # Straight to the socket when nothing is buffered (net/writethrough.py), rather than
        # in the reactor's next poll: a publisher waiting for its answer then has it before
        # this turn's fan-out is written, and sends its next publish meanwhile (a flood of
        # POSTs from one publisher, bench/README.md).
        writer_for(self.transport)(encode(answer, http10))
        self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self._done = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        self._done = True
        self._lost = True


class ControlSite(protocol.ServerFactory):
    """The control API's listener."""

    noisy = False

    def __init__(self, resource: "ControlResource", *, max_headers: int, max_body: int, reactor: Any = None, timeout: float | None = IDLE_TIMEOUT) -> None:
        self.resource = resource
        self.max_headers = max_headers
        self.max_body = max_body
        self.timeout = timeout
        self._reactor = reactor

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        proto = ControlProtocol(self)
        proto.factory = self
        if self._reactor is not None:
            proto.callLater = self._reactor.callLater  # type: ignore[method-assign]
        return proto


def negotiate(accept: list[bytes]) -> str | None:
    """
    "text" or "json" from the request's C{Accept} values (§6.2), or C{None} for a 406.

    As Pushpin: no C{Accept} header means text; otherwise each media range's type is matched
    exactly (case matters, parameters are ignored) and the last one it knows wins.
    """
    if not accept:
        return "text"
    kind = None
    for value in accept:
        for part in value.split(b","):
            media = part.split(b";", 1)[0].strip()
            if media in (b"text/plain", b"text/*", b"*/*", b"*"):
                kind = "text"
            elif media in (b"application/json", b"application/*"):
                kind = "json"
    return kind


class ControlResource:
    """Routes a parsed control request (§6.2) to its answer, in Pushpin's order."""

    _log = Logger()

    def __init__(self, intake: "PublishIntake", recover: Callable[[], None] | None = None, *,
                 auth: PublishAuth | None = None,
                 in_thread: Callable[[Callable[[], bool]], "defer.Deferred[bool]"] | None = None) -> None:
        """
        @param auth: the credentials C{/publish/} and C{/recover/} need (C{None}: none, as Pushpin).
        @param in_thread: runs a blocking check (bcrypt) off the reactor thread; default
            L{threads.deferToThread}.
        """
        self._intake = intake
        self._recover = recover
        self._auth = auth
        self._in_thread = in_thread if in_thread is not None else threads.deferToThread

    def when_relieved(self, callback: Callable[[], object]) -> None:
        """Call C{callback} now, or once the intake's waiting deliveries are back under their bound."""
        when = getattr(self._intake, "when_relieved", None)
        if when is None:
            callback()
        else:
            when(callback)

    def log_line(self, method: bytes, path: bytes, code: int, size: int, extra: str) -> None:
        # preformatted: the log observer writes a "{line}" event as it is (ops/logs.py)
        line = f"control: {method.decode('latin-1')} {path.decode('latin-1')} code={code} {size}{extra}"
        self._log.info("{line}", line=line)

    @property
    def auth(self) -> PublishAuth | None:
        """The credentials publishes need, or C{None}."""
        return self._auth

    def handle(self, request: ControlRequest) -> "Answer | defer.Deferred[Answer]":
        """
        The answer to C{request}; publishes and recovers as a side effect; logs one line.
        A Deferred when Basic credentials must first be checked in a thread.
        """
        routed = self._route(request)
        if isinstance(routed, BasicAttempt):
            return self._after_check(request, routed)
        answer, extra = routed
        self.log_line(request.method, request.uri, answer.code, len(answer.body), extra)
        return answer

    def _after_check(self, request: ControlRequest, attempt: BasicAttempt) -> "defer.Deferred[Answer]":
        auth = self._auth
        assert auth is not None

        def checked(ok: bool) -> Answer:
            answer, extra = self._authorized(request, auth.settle(attempt, ok))
            self.log_line(request.method, request.uri, answer.code, len(answer.body), extra)
            return answer

        d = self._in_thread(attempt.verify)
        return d.addCallback(checked)

    def _route(self, request: ControlRequest) -> tuple[Answer, str] | BasicAttempt:
        # The raw URI (a query string included) with one trailing slash dropped, as Pushpin.
        path = request.uri
        if len(path) > 1 and path.endswith(b"/"):
            path = path[:-1]
        kind = negotiate(request.values(b"accept"))
        if kind is None:
            return _text(406, b"Not Acceptable", "Not Acceptable. Supported formats are text/plain and application/json.\n"), ""
        if path == b"/":
            return _text(200, b"OK", "Pushpin API\n"), ""
        if path not in (b"/publish", b"/recover"):
            return _text(404, b"Not Found", "Not Found\n"), ""
        if self._auth is None:
            return self._authorized(request, None)
        verdict = self._auth.check(request.values(b"authorization"))
        if isinstance(verdict, BasicAttempt):
            return verdict
        return self._authorized(request, verdict)

    def _authorized(self, request: ControlRequest, verdict: Verdict | None) -> tuple[Answer, str]:
        """The answer once the credentials are judged (C{verdict} C{None}: none needed)."""
        auth = f" auth={verdict.why}" if verdict is not None else ""
        if verdict is not None and not verdict.ok:
            assert self._auth is not None
            challenges = [(b"WWW-Authenticate", value) for value in self._auth.challenges()]
            return _text(401, b"Unauthorized", "Unauthorized.\n", challenges), auth
        answer, extra = self._act(request)
        return answer, extra + auth

    def _act(self, request: ControlRequest) -> tuple[Answer, str]:
        path = request.uri
        if len(path) > 1 and path.endswith(b"/"):
            path = path[:-1]
        kind = negotiate(request.values(b"accept")) or "text"
        if request.method != b"POST":
            message = f"Method not allowed: {request.method.decode('latin-1')}.\n"
            return _text(405, b"Method Not Allowed", message, [(b"Allow", b"POST")]), ""
        if path == b"/recover":
            answer = self._success(kind, "Updated")
            if self._recover is not None:
                self._recover()
            return answer, ""
        try:
            items = parse_publish_body(request.body)
        except PublishBodyError as e:
            return _bad_request(str(e).rstrip("\n")), ""
        answer = self._success(kind, "Published")
        self._intake.publish(items, "http")
        return answer, f" items={len(items)}"

    def _success(self, kind: str, message: str) -> Answer:
        if kind == "json":
            body = json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n"
            return Answer(200, b"OK", [(b"Content-Type", b"application/json")], body)
        return _text(200, b"OK", message + "\n")


def reachable_from_elsewhere(host: str) -> bool:
    """
    Whether a control API bound to C{host} (C{push_in_http_addr}; C{""}: every interface)
    can be reached from other hosts: anything but a loopback address or C{localhost}.
    """
    host = host.strip().strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # "", "0.0.0.0"-like names, host names: assume reachable
