# -*- test-case-name: tests.web.test_proxy -*-
"""
What the proxy resource, the GRIP acceptor and the WebSocket gateway share: Pushpin's plain-text
error answers, the per-request L{RequestInfo}, its access line, an in-memory body producer and
the size limit on a GRIP body. Kept here so that none of them imports another for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from pushpin_tx.core.loginfo import emit_info

if TYPE_CHECKING:
    from pushpin_tx.protocol.config import Settings
    from pushpin_tx.protocol.routes import Route

__all__ = ["GRIP_BODY_LIMIT", "BytesProducer", "RequestInfo", "access_line", "error_response"]

#: Request bodies up to this size are kept in memory and may still be answered with GRIP
#: (§4.1 step 9); the same limit bounds a buffered instruct body (§4.3).
GRIP_BODY_LIMIT = 100000


def error_response(request: Any, code: int, message: str, *, content_type: bool = True, extra: "list[tuple[bytes, bytes]] | None" = None) -> None:
    """
    Answer with one of Pushpin's plain-text errors (§4.5): the message plus a newline.
    C{extra} headers follow C{Content-Type} (auto cross-origin's CORS headers).
    """
    body = message.encode("utf-8") + b"\n"
    request.setResponseCode(code, http.RESPONSES.get(code, b"Unknown"))
    if content_type:
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain"])
    else:
        request.defaultContentType = None  # (a plain twisted.web request would add text/html)
    for name, value in extra or ():
        request.responseHeaders.addRawHeader(name, value)
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    request.write(body)
    request.finish()


class RequestInfo:
    """What the proxy worked out about one client request, kept for holds and logs."""

    __slots__ = (
        "conn_id",
        "method",
        "uri",
        "path",
        "host",
        "client_ip",
        "secure",
        "route",
        "trusted",
        "grip_enabled",
        "debug",
        "body",
        "body_size",
        "target_label",
        "resend",
        "cross_origin",
    )

    conn_id: str
    method: bytes
    #: the client's URI as Pushpin logs it (scheme, host, path and query)
    uri: str
    #: path and query, as the client sent them
    path: bytes
    #: the Host header, lower-cased
    host: bytes
    client_ip: str
    secure: bool
    route: "Route | None"
    #: signed by upstream_key (its GRIP instructions pass through to the client)
    trusted: bool
    grip_enabled: bool
    debug: bool
    #: the request body when it was kept (small enough for GRIP, §4.1 step 9)
    body: bytes | None
    body_size: int
    target_label: str | None
    resend: Any
    #: auto cross-origin (CORS, JSON-P) for this request (L{pushpin_tx.web.cors}), or None
    cross_origin: Any

    def __init__(self, **kw: Any) -> None:
        for key, value in kw.items():
            setattr(self, key, value)
        #: the target that answered, as access lines name it (None: none was asked)
        self.target_label = None
        #: re-sends the original request with extra headers (Grip-Last), for retries
        self.resend = None
        if not hasattr(self, "cross_origin"):
            self.cross_origin = None


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory, written in one go (no cooperator turn needed)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self._data)
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def access_line(log: Logger, settings: "Settings", info: RequestInfo, request: Any, *, code: int | None, size: int | None, accept: str = "") -> None:
    """Log C{GET http://host/path -> target [from=IP] [ref=R] [route=ID] code=N BYTES|accept [ua=UA]}."""
    parts = [f"{info.method.decode('latin-1')} {info.uri}"]
    if info.target_label is not None:
        parts.append(f"-> {info.target_label}")
    if settings.log_from:
        parts.append(f"from={info.client_ip}")
    referer = request.getHeader(b"referer")
    if referer:
        parts.append(f"ref={referer.decode('latin-1')}")
    if info.route is not None and info.route.explicit_id:
        parts.append(f"route={info.route.id}")
    if accept:
        parts.append(accept)
    else:
        parts.append(f"code={code} {size if size is not None else 0}")
    if settings.log_user_agent:
        ua = request.getHeader(b"user-agent")
        if ua:
            parts.append(f"ua={ua.decode('latin-1')}")
    emit_info(log, "{line}", line=" ".join(parts))
