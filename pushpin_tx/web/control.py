# -*- test-case-name: tests.web.test_control -*-
"""
The HTTP control API (reference §6.2): C{GET /}, C{POST /publish/}, C{POST /recover/}.

Publishers such as the C{pubcontrol} and C{gripcontrol} libraries talk to this, so status
codes, bodies and headers are Pushpin 1.36's to the byte: every answer is C{text/plain}
(success bodies may be JSON when asked for), carries C{Connection: close}, and the
connection is closed after it. Size limits are enforced as soon as they are known, with a
clear 400 rather than a dropped connection.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from pushpin_tx.protocol.items import PublishBodyError, parse_publish_body

if TYPE_CHECKING:
    from pushpin_tx.core.intake import PublishIntake

__all__ = ["ControlResource", "ControlSite", "negotiate"]


def negotiate(accept: bytes | None) -> str | None:
    """
    Pick "text" or "json" from an Accept header (§6.2), or C{None} if neither is acceptable.
    """
    if not accept:
        return "text"
    for part in accept.split(b","):
        media = part.split(b";", 1)[0].strip().lower()
        if media in (b"text/plain", b"text/*", b"*/*", b"*"):
            return "text"
        if media in (b"application/json", b"application/*"):
            return "json"
    return None


def _raw_response(code: int, body: bytes, extra: list[tuple[bytes, bytes]] = []) -> bytes:
    head = [b"HTTP/1.1 %d %s" % (code, http.RESPONSES.get(code, b"Unknown"))]
    for name, value in extra:
        head.append(name + b": " + value)
    head.append(b"Content-Type: text/plain")
    head.append(b"Connection: close")
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class ControlRequest(server.Request):
    """Refuses a too-large body as soon as its size is known (§6.2, §14.6)."""

    _rejected = False

    def setHeader(self, name: Any, value: Any) -> None:
        lower = name.lower() if isinstance(name, bytes) else name.lower().encode()
        if lower in (b"server", b"date"):
            return  # Pushpin sends neither
        super().setHeader(name, value)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.site.max_body:
            self._reject()
            return
        super().gotLength(length)
        self._received = 0

    def handleContentChunk(self, data: bytes) -> None:
        if self._rejected:
            return
        self._received += len(data)
        if self._received > self.channel.site.max_body:
            self._reject()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._rejected:
            return
        super().requestReceived(command, path, version)

    def _reject(self) -> None:
        self._rejected = True
        transport = self.channel.transport
        transport.write(_raw_response(400, b"Request body too large.\n"))
        transport.loseConnection()
        self.channel.site.log_line(b"?", b"?", 400, 24, "")


class ControlChannel(http.HTTPChannel):
    """Answers an oversized header block with Pushpin's 400 instead of a bare close."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self._header_bytes = 0
        self._refused = False

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        self._header_bytes += len(line) + 2
        if self._header_bytes > self.site.max_headers:
            self._refused = True
            self.transport.write(_raw_response(400, b"Request header too large.\n"))
            self.transport.loseConnection()
            return
        if not line:
            self._header_bytes = 0
        super().lineReceived(line)


class ControlSite(server.Site):
    """The control API's listener."""

    requestFactory = ControlRequest
    protocol = ControlChannel

    def __init__(self, resource: "ControlResource", *, max_headers: int, max_body: int, **kw: Any) -> None:
        super().__init__(resource, **kw)
        self.max_headers = max_headers
        self.max_body = max_body
        self.noisy = False
        self.log_line = resource.log_line

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.totalHeadersSize = self.max_headers * 2  # ours is checked first, with Pushpin's text
        return channel

    def log(self, request: Any) -> None:
        """The resource logs Pushpin-shaped control lines itself."""


class ControlResource(Resource):
    """Routes control API paths; every response closes the connection."""

    isLeaf = True
    _log = Logger()

    def __init__(self, intake: "PublishIntake", recover: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._intake = intake
        self._recover = recover

    def log_line(self, method: bytes, path: bytes, code: int, size: int, extra: str) -> None:
        self._log.info(
            "control: {method} {path} code={code} {size}{extra}",
            method=method.decode("latin-1"),
            path=path.decode("latin-1"),
            code=code,
            size=size,
            extra=extra,
        )

    def render(self, request: server.Request) -> bytes:
        path = request.path
        if len(path) > 1 and path.endswith(b"/"):
            path = path[:-1]
        extra = ""
        if path in (b"", b"/"):
            code, body = self._success(request, "Pushpin API")
        elif path == b"/publish":
            if request.method != b"POST":
                code, body = self._not_allowed(request)
            else:
                code, body, extra = self._publish(request)
        elif path == b"/recover":
            if request.method != b"POST":
                code, body = self._not_allowed(request)
            else:
                if self._recover is not None:
                    self._recover()
                code, body = self._success(request, "Updated")
        else:
            code, body = self._text(request, 404, "Not Found")
        self.log_line(request.method, request.path, code, len(body), extra)
        # Every answer closes the connection (observed on 1.36.0), headers in Pushpin's order.
        request.channel.persistent = False  # type: ignore[union-attr]
        request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        return body

    def _publish(self, request: server.Request) -> tuple[int, bytes, str]:
        kind = negotiate(request.getHeader(b"accept"))
        if kind is None:
            code, body = self._not_acceptable(request)
            return code, body, ""
        try:
            items = parse_publish_body(request.content.read())  # type: ignore[union-attr]
        except PublishBodyError as e:
            code, body = self._text(request, 400, str(e))
            return code, body, ""
        self._intake.publish(items, "http")
        code, body = self._success(request, "Published")
        return code, body, f" items={len(items)}"

    def _success(self, request: server.Request, message: str) -> tuple[int, bytes]:
        kind = negotiate(request.getHeader(b"accept"))
        if kind is None:
            return self._not_acceptable(request)
        if kind == "json":
            request.setResponseCode(200)
            request.responseHeaders.setRawHeaders(b"content-type", [b"application/json"])
            return 200, json.dumps({"message": message}, separators=(",", ":")).encode() + b"\n"
        return self._text(request, 200, message)

    def _not_acceptable(self, request: server.Request) -> tuple[int, bytes]:
        return self._text(request, 406, "Not Acceptable. Supported formats are text/plain and application/json.")

    def _not_allowed(self, request: server.Request) -> tuple[int, bytes]:
        request.responseHeaders.setRawHeaders(b"allow", [b"POST"])
        return self._text(request, 405, f"Method not allowed: {request.method.decode('latin-1')}.")

    def _text(self, request: server.Request, code: int, message: str) -> tuple[int, bytes]:
        request.setResponseCode(code)
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain"])
        return code, message.encode("utf-8") + b"\n"
