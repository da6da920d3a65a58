# -*- test-case-name: tests.web.test_proxy -*-
"""
The reverse-proxy resource: route a client request, forward it to the origin, and either
relay the answer (flow-controlled, in both directions) or, when the origin answers with
GRIP instructions, hand the connection to L{pushpin_tx.web.accept} to be held.

The order of steps and every error text follow Pushpin 1.36 (reference §4). Policy lives
in pure modules (L{headers}, L{routes}, L{grip}); this module is the glue between them and
twisted.web.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Any, Callable, Iterator
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, PotentialDataLoss, ResponseDone
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.iweb import IBodyProducer

from pushpin_tx._compat import is_disconnected
from pushpin_tx.protocol import headers as hdr
from pushpin_tx.protocol.grip import gone_link_of, is_grip_instruct
from pushpin_tx.core.loginfo import emit_info
from pushpin_tx.web import cors
from pushpin_tx.origin.client import AllTargetsFailed, OriginError, OriginResponse, buffered_response
from pushpin_tx.protocol.testorigin import test_response
from pushpin_tx.web._common import GRIP_BODY_LIMIT, BytesProducer, RequestInfo, access_line, error_response


def is_upgrade(request: Any) -> bool:
    """Whether a request asks for a WebSocket (C{Upgrade: websocket})."""
    value = request.getHeader(b"upgrade")
    return value is not None and value.strip().lower() == b"websocket"

if TYPE_CHECKING:
    from pushpin_tx.web.accept import Acceptor
    from pushpin_tx.web.clientsite import ClientRequest
    from pushpin_tx.protocol.config import Settings
    from pushpin_tx.origin.client import OriginClient
    from pushpin_tx.protocol.routes import Route, RouteTable, Target
    from pushpin_tx.protocol.signing import GripSigner
    from pushpin_tx.core.stats import Counters

__all__ = ["ProxyResource", "PUSHPIN_CHECK_BODY", "FORGED_EVENTS_MESSAGE"]

#: Pushpin's answer (403) to a client posting WebSocket-over-HTTP events itself (§8.2),
#: observed on 1.36.0
FORGED_EVENTS_MESSAGE = "Client not allowed to send WebSocket events directly."


#: Pushpin answers a request carrying C{Pushpin-Check} itself with its licence text (the
#: licence interface, §4.1 step 3); observed byte for byte on 1.36.0.
PUSHPIN_CHECK_BODY = (
    b"Copyright (C) 2012-2017 Fanout, Inc.\n\n"
    b"Pushpin is free software: you can redistribute it and/or modify it under\n"
    b"the terms of the GNU Affero General Public License as published by the Free\n"
    b"Software Foundation, either version 3 of the License, or (at your option)\n"
    b"any later version.\n\n"
    b"Pushpin is distributed in the hope that it will be useful, but WITHOUT ANY\n"
    b"WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS\n"
    b"FOR A PARTICULAR PURPOSE. See the GNU Affero General Public License for\n"
    b"more details.\n\n"
    b"You should have received a copy of the GNU Affero General Public License\n"
    b"along with this program. If not, see <http://www.gnu.org/licenses/>.\n\n"
)


class _Relay(Protocol):
    """Streams an origin body to the client, pausing the origin while the client is slow."""

    def __init__(self, request: "ClientRequest", on_done: Callable[[bool], None]) -> None:
        self._request = request
        self._on_done = on_done

    def connectionMade(self) -> None:
        request = self._request
        if is_disconnected(request):
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        if getattr(self.transport, "complete", False):
            # the whole body is already here (a small answer): there is nothing to pause or
            # stop, and the response head leaves with the body in one write
            return
        request.register_producer(self.transport)
        request.notifyFinish().addErrback(self._client_gone)

    def _client_gone(self, _: Failure) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._request.write_body(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        request = self._request
        if request.producer is not None and not is_disconnected(request):
            request.unregisterProducer()
        clean = bool(reason.check(ResponseDone, PotentialDataLoss))
        if clean:
            request.finish()
        else:
            # The origin broke off mid-body: the client must not take a truncated body for a
            # whole one, so close the connection after what was relayed (§4.4).
            request.close()
        self._on_done(clean)


class _JsonpRelay(Protocol):
    """
    Relays an origin answer wrapped for JSON-P. A body of announced length is collected and
    sent whole, with C{Content-Length} (as Pushpin does when the body is in by the time the
    answer starts); one of unknown length is streamed, chunked, as it comes, a trailing
    newline held back in basic mode so the last one can be trimmed.
    """

    def __init__(self, request: "ClientRequest", co: "cors.CrossOrigin", response: OriginResponse, on_done: Callable[[bool], None]) -> None:
        self._request = request
        self._co = co
        self._response = response
        self._on_done = on_done
        self._whole = response.length is not None
        self._parts: list[bytes] = []
        self._pending = b""

    def connectionMade(self) -> None:
        request = self._request
        if is_disconnected(request):
            self.transport.stopProducing()  # type: ignore[union-attr]
            return
        if not self._whole:
            r = self._response
            request.send_head(200, b"OK", [(b"Content-Type", b"application/javascript")], None)
            request.write_body(cors.relay_start(self._co, r.code, r.reason, r.headers))
        if not getattr(self.transport, "complete", False):
            request.register_producer(self.transport)
            request.notifyFinish().addErrback(self._client_gone)

    def _client_gone(self, _: Failure) -> None:
        self.transport.stopProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._whole:
            self._parts.append(data)
            return
        data = self._pending + data
        self._pending = b""
        if not self._co.extended:
            for tail in (b"\r\n", b"\n"):
                if data.endswith(tail):
                    data, self._pending = data[: -len(tail)], tail
                    break
        if data:
            self._request.write_body(cors.relay_chunk(self._co, data))

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        request = self._request
        if request.producer is not None and not is_disconnected(request):
            request.unregisterProducer()
        clean = bool(reason.check(ResponseDone, PotentialDataLoss))
        if is_disconnected(request):
            self._on_done(False)
            return
        if not clean:
            request.close()
        elif self._whole:
            r = self._response
            headers, body = cors.wrap_relay_whole(self._co, r.code, r.reason, r.headers, b"".join(self._parts))
            request.send_head(200, b"OK", headers, len(body))
            request.write_body(body)
            request.finish()
        else:
            request.write_body(cors.relay_end(self._co))
            request.finish()
        self._on_done(clean)


class ProxyResource(Resource):
    """Every client request enters here."""

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        settings: "Settings",
        origin: "OriginClient",
        signer_for: Callable[["Route"], "GripSigner"],
        acceptor: "Acceptor",
        counters: "Counters",
        clock: Any,
        *,
        ids: "Iterator[int] | None" = None,
        ws_gateway: Any = None,
    ) -> None:
        """
        @param ids: the connection id sequence (shared with the WebSocket gateway, and
            apart per worker process; default 1, 2, ...).
        @param ws_gateway: handles WebSocket upgrade requests (None: refused with 502).
        """
        super().__init__()
        # the class's Logger bound to this resource once (twisted.logger's descriptor builds
        # a new bound Logger on every self._log: one per access line)
        self._log = self._log
        self._settings = settings
        self._origin = origin
        self._signer_for = signer_for
        self._acceptor = acceptor
        self._counters = counters
        self._clock = clock
        self.routes: "RouteTable | None" = None
        self._ids = itertools.count(1) if ids is None else ids
        self.ws_gateway = ws_gateway
        # streams large request bodies from their temporary file, on our clock (not the
        # global reactor), so in-memory tests drive it too
        self._cooperator = Cooperator(scheduler=lambda work: clock.callLater(0, work))
        #: [proxy] orig_headers_need_mark, as header names
        self._need_mark = tuple(n.encode("latin-1") for n in getattr(settings, "orig_headers_need_mark", ()) or ())

    def set_routes(self, table: "RouteTable") -> None:
        """Swap in a reloaded routes table; requests in flight keep the route they had."""
        self.routes = table
        # Route features not implemented yet are named, never ignored silently.
        for route in table.routes:
            missing = []
            if route.sockjs:
                missing.append("sockjs (requests pass to the origin as plain HTTP)")
            if any(t.kind in ("zhttp", "zhttpreq") for t in route.targets):
                missing.append("zhttp targets (answered 502)")
            if missing:
                self._log.warn(
                    "route {route} (line {line}) uses options pushpin-tx does not implement (README: Not implemented): {missing}",
                    route=route.id,
                    line=route.line,
                    missing=", ".join(missing),
                )

    # request handling ------------------------------------------------------------------

    def render(self, request: "ClientRequest") -> object:
        self._counters.requests_received += 1
        try:
            info = self._request_info(request)
            d = self._handle(request, info)
        except Exception:
            d = fail()
        if d is None:  # answered already
            return NOT_DONE_YET
        d.addErrback(self._failed, request)
        if not d.called:
            request.notifyFinish().addErrback(lambda _: d.cancel())
        return NOT_DONE_YET

    def _failed(self, f: Failure, request: "ClientRequest") -> None:
        if f.check(CancelledError):
            return
        self._log.failure("proxying failed", f)
        if not request.startedWriting and not is_disconnected(request):
            error_response(request, 500, "Internal Server Error")
        else:
            request.abort()

    def _answered(self, response: OriginResponse, request: "ClientRequest", info: RequestInfo) -> "Deferred[None] | None":
        info.target_label = response.target.label()
        if info.grip_enabled and is_grip_instruct(response.headers):
            if info.cross_origin is None:
                now = self._acceptor.accept_now(request, info, response)
                if now is None:  # held or answered already, without waiting
                    gone = gone_link_of(response.headers, info.uri)
                    if gone is not None:
                        self._watch_gone(None, request, info, gone)
                    return None
                d = now
            else:
                held = cors.CrossOriginRequest(request, info.cross_origin)
                d = Deferred.fromCoroutine(self._acceptor.accept(held, info, response))  # type: ignore[arg-type]
                d.addBoth(_passing(held.accepted))
            gone = gone_link_of(response.headers, info.uri)
            if gone is not None:
                d.addCallback(self._watch_gone, request, info, gone)
            return d
        self.relay(request, info, response)
        return None

    def _watch_gone(self, result: None, request: "ClientRequest", info: RequestInfo, uri: str) -> None:
        """
        C{Grip-Link: <uri>; rel=gone} (Pushpin 1.41): once the session the instruct started
        ends (answered, closed, or the client gone), POST to the link, through the route, as
        a next link is fetched; its answer is read and dropped. Only a session that was held
        counts: an instruct answered at once, or refused, leaves no session behind.
        """
        if request.finished or is_disconnected(request):
            return  # answered at once (or refused, or the client left first): no session
        request.notifyFinish().addBoth(lambda _: self._post_gone(info, uri))

    def _post_gone(self, info: RequestInfo, uri: str) -> None:
        route = info.route
        assert route is not None
        parts = urlsplit(uri)
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        headers_for = self.link_headers_for(info, parts.netloc)
        d = self._origin.request(route.targets, b"POST", path.encode("latin-1"), headers_for, lambda: BytesProducer(b""))

        def answered(response: OriginResponse) -> None:
            response.deliver_body(Protocol())
            emit_info(self._log, "{line}", line=f"POST {uri} -> {response.target.label()} code={response.code} (gone link)")

        def failed(f: Failure) -> None:
            self._log.info("gone link {uri} failed: {why}", uri=uri, why=f.getErrorMessage())

        d.addCallbacks(answered, failed)

    def _origin_failed(self, f: Failure, request: "ClientRequest", info: RequestInfo) -> Failure | None:
        e = f.value
        if not isinstance(e, (AllTargetsFailed, OriginError)):
            return f
        self._origin_error(request, info, e)
        return None

    def _origin_error(self, request: "ClientRequest", info: RequestInfo, e: AllTargetsFailed | OriginError) -> None:
        # Pushpin's access line names the last target it tried
        tried = e.tried if isinstance(e, AllTargetsFailed) else [e.target] if e.target else []
        if tried:
            info.target_label = tried[-1]
        self._log.warn("{method} {uri}: {why}", method=info.method.decode(), uri=info.uri, why=e)
        self._fail(request, info, str(e))

    def _request_info(self, request: "ClientRequest") -> RequestInfo:
        settings = self._settings
        uri = request.uri
        host_header = request.getHeader(b"host") or b""
        path = uri
        if uri.startswith((b"http://", b"https://")):
            parts = urlsplit(uri.decode("latin-1"))
            host_header = parts.netloc.encode("latin-1")
            path = (parts.path or "/").encode("latin-1") + (b"?" + parts.query.encode("latin-1") if parts.query else b"")
        # Pushpin normalises the host to lower case, for routing, the origin's Host and logs
        host_header = host_header.lower()
        host_text = host_header.decode("latin-1")
        host = _hostnames.get(host_text)
        if host is None:
            host = _hostname(host_text)
            if len(_hostnames) < _HOSTNAMES_MAX:
                _hostnames[host_text] = host
        secure = request.isSecure()
        if not secure and settings.accept_x_forwarded_protocol:
            forwarded = request.getHeader(b"x-forwarded-proto") or request.getHeader(b"x-forwarded-protocol") or b""
            secure = forwarded.strip().lower() in (b"https", b"wss")
        websocket = is_upgrade(request)
        proto = "ws" if websocket else "http"
        if websocket:
            scheme = "wss" if secure else "ws"
        else:
            scheme = "https" if secure else "http"
        routes = self.routes
        route = None
        if routes is not None:
            by_id = request.getHeader(b"pushpin-route") if settings.accept_pushpin_route else None
            if by_id:
                route_id = by_id.decode("latin-1")
                route = routes.lookup_by_id(route_id)
                # Pushpin falls back to the host only when the id is shared by several lines;
                # an unknown id means no route (observed on 1.36.0).
                if route is None and routes.is_id_shared(route_id):
                    route = routes.lookup(host, path.split(b"?", 1)[0].decode("latin-1"), proto=proto, ssl=secure)
            else:
                route = routes.lookup(host, path.split(b"?", 1)[0].decode("latin-1"), proto=proto, ssl=secure)
        if request.upload is not None:
            # streamed as it arrives (clientsite); a chunked one is past GRIP's limit already
            length = request.upload.length
            body_size = length if isinstance(length, int) else GRIP_BODY_LIMIT + 1
        else:
            content = request.content
            assert content is not None  # (twisted.web sets it before rendering)
            content.seek(0, 2)
            body_size = content.tell()
            content.seek(0)
        # every field set here, without RequestInfo.__init__'s keyword loop (per request)
        info = _new_info(RequestInfo)
        info.conn_id = str(next(self._ids))
        info.method = request.method
        info.uri = f"{scheme}://{host_text}{path.decode('latin-1')}"
        info.path = path
        info.host = host_header
        info.client_ip = _client_ip(request)
        info.secure = secure
        info.route = route
        info.trusted = False
        info.grip_enabled = False
        info.debug = settings.debug or bool(route and route.debug)
        info.body = None
        info.body_size = body_size
        info.target_label = None
        info.resend = None
        info.cross_origin = None
        return info

    def _handle(self, request: "ClientRequest", info: RequestInfo) -> "Deferred[Any] | None":
        """
        The steps of §4.1 for one request, in Pushpin's order: its own answers first
        (C{Pushpin-Check}, no route, a bad rewritten path), then the WebSocket gateway or
        the origin. Built from callbacks rather than as a coroutine: every proxied request
        takes this path, and a coroutine's machinery is a large share of a proxied GET's CPU
        (bench/README.md). C{None} when the request is answered already; else a Deferred that fires once
        the answer is under way (cancelled if the client goes first).
        """
        route = info.route
        if (self._settings.auto_cross_origin or (route is not None and route.aco)) and not self._cross_origin(request, info):
            return None
        if request.getHeader(b"pushpin-check") is not None:
            # Answered before routing, for any host (observed on 1.36.0).
            info.target_label = None
            request.setResponseCode(200)
            request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain"])
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(PUSHPIN_CHECK_BODY)])
            request.write(PUSHPIN_CHECK_BODY)
            request.finish()
            self._access(info, request, code=200, size=len(PUSHPIN_CHECK_BODY))
            return None
        if route is None:
            info.target_label = None
            message = f"No route for host: {_hostname(info.host.decode('latin-1'))}"
            self._access(info, request, code=502, size=len(message) + 1)
            error_response(request, 502, message, extra=_cors_extra(info))
            return None
        path = route.rewrite_path(info.path.decode("latin-1")).encode("latin-1")
        headers_for, body, handle_test, resend = self._forwarding(request, info, route, path)
        if _forged_websocket_events(request, info, route):
            # §8.2: only the proxy speaks WebSocket-over-HTTP to such an origin; a client's own
            # events would pass for a session it never opened. Observed on 1.36.0: before the
            # path check, the access line naming the first target; the connection stays open.
            info.target_label = route.targets[0].label()
            self._access(info, request, code=403, size=len(FORGED_EVENTS_MESSAGE) + 1)
            error_response(request, 403, FORGED_EVENTS_MESSAGE)
            return None
        if not path.startswith(b"/"):
            # path_rem cut into the path itself: Pushpin answers 502 (observed on 1.36.0).
            self._fail(request, info, f"Invalid path after rewriting: {path.decode('latin-1')}")
            return None
        if is_upgrade(request):
            if self.ws_gateway is None:
                self._fail(request, info, "WebSocket target not supported")
                return None
            return self.ws_gateway.handle(request, info, route, path, headers_for)
        # info -> resend -> headers_for -> info is a reference cycle: it holds the request
        # (headers, body) until the garbage collector runs, so it is dropped (relay, _fail)
        # as soon as the answer no longer needs a re-send.
        info.resend = resend
        d = self._origin.request(route.targets, info.method, path, headers_for, body, handle_test=handle_test)
        d.addCallbacks(self._answered, self._origin_failed, callbackArgs=(request, info), errbackArgs=(request, info))
        return d

    def _cross_origin(self, request: "ClientRequest", info: RequestInfo) -> bool:
        """
        Auto cross-origin (L{cors}): note the client's headers for the CORS answer and, for a
        JSON-P request, rewrite what goes to the origin. As Pushpin, before anything else is
        answered; a bad JSON-P parameter is a C{400} (False: answered).
        """
        client_headers = list(_raw_headers(request))
        co = cors.CrossOrigin(client_headers)
        try:
            jsonp = cors.jsonp_request(info.route, info.method, info.path, client_headers, info.host)
        except cors.JsonpError as e:
            info.target_label = None
            message = str(e)
            self._access(info, request, code=400, size=len(message) + 1)
            error_response(request, 400, message, extra=hdr.cors_headers(co.request_headers, [(b"Content-Type", b"text/plain")])[1:])
            return False
        if jsonp is not None:
            co.callback = jsonp.callback
            co.extended = info.route is None or info.route.jsonp_mode == "extended"
            co.forward = jsonp
            info.uri = info.uri[: len(info.uri) - len(info.path.decode("latin-1"))] + jsonp.path.decode("latin-1")
            info.method = jsonp.method
            info.path = jsonp.path
            info.body_size = len(jsonp.body)
        info.cross_origin = co
        return True

    def _forwarding(self, request: "ClientRequest", info: RequestInfo, route: "Route", path: bytes) -> tuple[Any, Any, Any, Any]:
        """
        Settle trust, GRIP and the kept body for a routed request going to C{path}; return
        C{(headers_for, body, handle_test, resend)}, what every origin attempt needs.
        """
        settings = self._settings
        info.trusted = self._is_trusted(request)
        info.grip_enabled = not route.no_grip and not info.trusted
        content = request.content
        assert content is not None
        co = info.cross_origin
        jsonp = co.forward if co is not None else None
        if jsonp is not None:
            info.body = jsonp.body
        elif info.body_size <= GRIP_BODY_LIMIT:
            info.body = content.read()
            content.seek(0)
        signer = None if (info.trusted or route.no_grip) else self._signer_for(route)
        client_headers = list(jsonp.headers if jsonp is not None else _raw_headers(request))
        xff = settings.x_forwarded_for_trusted if info.trusted else settings.x_forwarded_for

        def headers_for(target: "Target") -> hdr.Headers:
            host = info.host
            if target.host_override:
                host = target.host_override.encode("latin-1")
            elif route.as_host:
                host = route.as_host.encode("latin-1")
            return self._origin_headers(info, client_headers, host, signer, xff.truncate, xff.append)

        def body() -> IBodyProducer | None:
            if jsonp is not None:
                if jsonp.body or jsonp.method not in (b"GET", b"HEAD", b"DELETE", b"OPTIONS"):
                    return BytesProducer(jsonp.body)
                return None
            if request.upload is not None:
                if request.upload.started:
                    raise OriginError("the upload already went to another target")
                return request.upload
            if info.body_size == 0 and not _client_sent_body(request):
                return None
            if info.body is not None:
                return BytesProducer(info.body)
            content.seek(0)
            return FileBodyProducer(content, cooperator=self._cooperator)

        def handle_test(target: "Target") -> OriginResponse:
            # The test origin sees paths with the route's path_beg cut off (§11), exactly as
            # Pushpin cuts it: len(path_beg) bytes, one fewer when path_beg ends in "/",
            # nothing added back (observed on 1.36.0: "/t" with path_beg=/t is a 404).
            test_path = path
            beg = route.path_beg.encode("latin-1")
            if beg and test_path.startswith(beg):
                test_path = test_path[len(beg) - 1 if beg.endswith(b"/") else len(beg) :]
            code, reason, test_headers, test_body = test_response(test_path, info.body_size)
            return buffered_response(code, reason, test_headers, test_body, target)

        def resend(extra: hdr.Headers) -> "Deferred[OriginResponse]":
            return self._origin.request(
                route.targets, info.method, path, lambda target: headers_for(target) + extra, body, handle_test=handle_test
            )

        return headers_for, body, handle_test, resend

    def link_headers_for(self, info: RequestInfo, netloc: str) -> Callable[["Target"], hdr.Headers]:
        """Headers for a next-link GET (§5.4): signed like any request, Host from the link."""
        route = info.route
        assert route is not None
        signer = None if (info.trusted or route.no_grip) else self._signer_for(route)

        def headers_for(target: "Target") -> hdr.Headers:
            host = target.host_override or route.as_host or netloc
            return self._origin_headers(info, [], host.encode("latin-1"), signer, None, False)

        return headers_for

    def _origin_headers(
        self,
        info: RequestInfo,
        client_headers: hdr.Headers,
        host: bytes,
        signer: "GripSigner | None",
        xff_truncate: int | None,
        xff_append: bool,
    ) -> hdr.Headers:
        """The headers one origin request carries (§4.1), for a client request or a next link."""
        settings = self._settings
        route = info.route
        assert route is not None
        return hdr.request_headers_to_origin(
            client_headers,
            host=host,
            trusted=info.trusted,
            grip_enabled=info.grip_enabled,
            grip_sig=signer.token() if signer is not None else None,
            client_ip=info.client_ip,
            client_scheme_secure=info.secure,
            xff_truncate=xff_truncate,
            xff_append=xff_append,
            accept_x_forwarded_protocol=settings.accept_x_forwarded_protocol,
            set_x_forwarded_protocol=settings.set_x_forwarded_protocol,
            route_headers=route.headers,
            orig_headers=route.orig_headers and bool(client_headers),
            extra_remove=(b"pushpin-route",) if settings.accept_pushpin_route else (),
            orig_need_mark=self._need_mark,
        )

    def _fail(self, request: "ClientRequest", info: RequestInfo, detail: str) -> None:
        info.resend = None  # the request is answered: see _handle
        self._counters.requests_failed += 1
        message = detail if info.debug else "Error while proxying to origin."
        self._access(info, request, code=502, size=len(message) + 1)
        if is_disconnected(request):
            return
        co = info.cross_origin
        if co is not None and co.callback is not None:
            # Pushpin's own error passes through the JSON-P wrapping like an origin's answer
            body = message.encode("utf-8") + b"\n"
            head = [(b"Content-Type", b"text/plain"), (b"Content-Length", b"%d" % len(body))]
            headers, wrapped = cors.wrap_relay_whole(co, 502, b"Bad Gateway", head, body)
            request.send_head(200, b"OK", headers, len(wrapped))
            request.write_body(wrapped)
            request.finish()
            return
        error_response(request, 502, message, extra=_cors_extra(info))

    def relay(self, request: "ClientRequest", info: RequestInfo, response: OriginResponse) -> None:
        """Send a non-GRIP origin response to the client as it comes."""
        info.resend = None  # the request is answered: see _handle
        self._counters.requests_proxied += 1
        request.setResponseCode(response.code, response.reason)
        co = info.cross_origin
        if co is not None and co.callback is not None:
            self._relay_jsonp(request, info, response, co)
            return
        raw = request.responseHeaders
        relayed = hdr.response_headers_to_client(response.headers)
        if co is not None:
            relayed = hdr.cors_headers(co.request_headers, relayed)
        for name, value in relayed:
            raw.addRawHeader(name, value)
        if response.code in _NO_BODY_CODES:
            pass  # no Content-Length on a 204 or 304 (RFC 9110 §8.6; Pushpin 1.36 sends none either)
        elif info.method == b"HEAD":
            # a HEAD answer's Content-Length describes the GET body: keep the origin's (0 if none)
            raw.setRawHeaders(b"content-length", [hdr.get_header(response.headers, b"content-length") or b"0"])
        elif response.length is not None:
            raw.setRawHeaders(b"content-length", [b"%d" % response.length])

        def done(clean: bool) -> None:
            if clean:
                self._access(info, request, code=response.code, size=request.sentLength)
            else:
                self._access(info, request, code=None, size=None, accept="error")

        response.deliver_body(_Relay(request, done))

    def _relay_jsonp(self, request: "ClientRequest", info: RequestInfo, response: OriginResponse, co: "cors.CrossOrigin") -> None:
        """A JSON-P request's plain answer, wrapped (L{cors}): always C{200 OK}."""

        def done(clean: bool) -> None:
            if clean:
                self._access(info, request, code=200, size=request.sentLength)
            else:
                self._access(info, request, code=None, size=None, accept="error")

        headers = response.headers
        if response.length is not None and hdr.get_header(headers, b"content-length") is None:
            # the origin's own Content-Length shows in an extended answer (observed on 1.36)
            headers = [*headers, (b"Content-Length", b"%d" % response.length)]
        response.deliver_body(_JsonpRelay(request, co, dataclasses.replace(response, headers=headers), done))

    def _is_trusted(self, request: "ClientRequest") -> bool:
        key = self._settings.upstream_key
        if key is None:
            return False
        token = request.getHeader(b"grip-sig")
        if not token:
            return False
        from pushpin_tx.protocol.signing import verify_grip_sig

        return verify_grip_sig(token, key, self._clock.seconds())

    def _access(self, info: RequestInfo, request: Any, *, code: int | None, size: int | None, accept: str = "") -> None:
        """One access line per request, in Pushpin's shape (§11 Logging)."""
        access_line(self._log, self._settings, info, request, code=code, size=size, accept=accept)


_new_info = object.__new__

#: answers that never have a body, nor a Content-Length toward the client
_NO_BODY_CODES = frozenset({204, 304})

#: hostnames worked out from Host values (few distinct ones in practice; bounded)
_hostnames: dict[str, str] = {}
_HOSTNAMES_MAX = 1000


def _hostname(host: str) -> str:
    """C{example.com:8080} -> C{example.com}; C{[::1]:80} -> C{::1}; lower-cased."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end].lower() if end != -1 else host.lower()
    return host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower()


def _passing(call: Callable[[], None]) -> Callable[[Any], Any]:
    """A callback that calls C{call} and passes the result (or failure) on."""

    def through(result: Any) -> Any:
        call()
        return result

    return through


def _cors_extra(info: RequestInfo) -> hdr.Headers | None:
    """The CORS headers one of the proxy's own plain-text errors gets (observed on 1.36), if any."""
    co = info.cross_origin
    if co is None or co.callback is not None:
        return None
    return hdr.cors_headers(co.request_headers, [(b"Content-Type", b"text/plain")])[1:]


def _client_ip(request: Any) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", "127.0.0.1") or "127.0.0.1"


def _raw_headers(request: Any) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        for value in values:
            out.append((name, value))
    return out


def _forged_websocket_events(request: Any, info: RequestInfo, route: "Route") -> bool:
    """
    Whether a plain HTTP request carries WebSocket-over-HTTP events to a route whose first
    target speaks them (C{over_http}), from a client that is not trusted. As Pushpin 1.36
    compares it: the media type before any C{;}, trimmed, exactly C{application/websocket-events}
    (another case or a suffix passes); WebSocket upgrades are not concerned.
    """
    targets = route.targets
    if not targets or not targets[0].over_http or info.trusted or is_upgrade(request):
        return False
    values = request.requestHeaders.getRawHeaders(b"content-type")
    return bool(values) and values[0].split(b";", 1)[0].strip() == b"application/websocket-events"


def _client_sent_body(request: Any) -> bool:
    headers = request.requestHeaders
    return headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding")
