# -*- test-case-name: tests.integration.test_websockets -*-
"""
WebSocket upgrade requests: ask the origin first (a WebSocket handshake, or a
WebSocket-over-HTTP C{OPEN}), pass a refusal to the client as the origin gave it, and on
acceptance complete the client's handshake and bridge the two through a L{WsSession}.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Callable, Iterator

from twisted.internet import ssl as tls
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.web import http

from pushpin_tx._compat import is_disconnected
from pushpin_tx.protocol import headers as hdr
from pushpin_tx.origin.client import AllTargetsFailed, BodyTooLarge, OriginError
from pushpin_tx.web._common import access_line, error_response
from pushpin_tx.protocol.testorigin import query_pairs, split_target
from pushpin_tx.websocket.over_http import EVENTS_TYPE, WohLink, new_connection_id
from pushpin_tx.websocket.client_side import make_client_factory, upgrade
from pushpin_tx.websocket.origin_side import HandshakeRefused, connect_origin
from pushpin_tx.core.ws_session import WsSession
from pushpin_tx.protocol.wscontrol import parse_grip_extension
from pushpin_tx.protocol.wsevents import WsEventsError, decode_events

if TYPE_CHECKING:
    from pushpin_tx.protocol.config import Settings
    from pushpin_tx.core.hold import HoldContext
    from pushpin_tx.web._common import RequestInfo
    from pushpin_tx.protocol.routes import Route, Target
    from pushpin_tx.core.stats import Counters
    from pushpin_tx.core.stats_feed import StatsPublisher

__all__ = ["WebSocketGateway"]

#: a refused WebSocket-over-HTTP OPEN passes at most this much of the origin's body on
REFUSAL_BODY_LIMIT = 100000

# headers of the origin's accepting answer that are not passed to the client's 101
_NOT_IN_101 = (
    b"content-length",
    b"content-type",
    b"keep-alive-interval",
    b"sec-websocket-extensions",
    b"sec-websocket-accept",
    b"sec-websocket-protocol",
    b"upgrade",
    b"connection",
    b"transfer-encoding",
    b"keep-alive",
)


class WebSocketGateway:
    """Turns accepted upgrade requests into bridged WebSocket sessions."""

    _log = Logger()

    def __init__(
        self,
        settings: "Settings",
        reactor: Any,
        ctx: "HoldContext",
        counters: "Counters",
        origin: Any,
        stats: "StatsPublisher | None" = None,
        *,
        ids: "Iterator[int] | None" = None,
    ) -> None:
        """@param ids: the connection id sequence (shared with the HTTP side; default 1, 2, ...)."""
        self._settings = settings
        self._reactor = reactor
        self._ctx = ctx
        self._counters = counters
        self._origin = origin
        self._stats = stats
        self._factory = make_client_factory(reactor, allow_compression=settings.allow_compression)
        #: live sessions by connection id
        self.connections: dict[str, WsSession] = {}
        self._ids = itertools.count(1) if ids is None else ids
        #: every session's on_end: one bound method for all (a closure per session was six
        #: cells and a function more per held WebSocket for the collector to walk)
        self._on_session_end = self._session_ended
        #: this gateway's logger, made once: twisted's Logger makes a new one on every
        #: self._log (the same namespace and source as this one)
        self._instance_log = self._log

    def handle(self, request: Any, info: "RequestInfo", route: "Route", path: bytes, headers_for: Callable[["Target"], hdr.Headers]) -> "Deferred[None] | None":
        """
        Answer the upgrade request: None when that is done already (the test target answers
        at once, without a coroutine and its Deferred: a tenth of its WebSocket's opening);
        else a Deferred that fires once the origin has answered and the client's handshake
        is complete or refused (cancelled if the client goes first).
        """
        targets = route.targets
        if targets and targets[0].kind == "test":
            self._test_target(request, info, route, path)
            return None
        if targets and targets[0].over_http:
            return Deferred.fromCoroutine(self._over_http(request, info, route, path, headers_for))
        return Deferred.fromCoroutine(self._plain(request, info, route, path, headers_for))

    # WebSocket-over-HTTP -------------------------------------------------------------------

    async def _over_http(self, request: Any, info: "RequestInfo", route: "Route", path: bytes, headers_for: Callable[["Target"], hdr.Headers]) -> None:
        content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if content_type == EVENTS_TYPE and not info.trusted:
            self._access(info, request, 403)
            error_response(request, 403, "Forbidden")
            return
        conn_id = new_connection_id()
        session = WsSession(self._ctx, conn_id, prefix=route.prefix, implicit_channels=route.targets[0].subs)
        link = WohLink(
            session,
            self._origin,
            self._reactor,
            targets=tuple(t for t in route.targets if t.over_http),
            path=path,
            headers_for=headers_for,
            conn_id=conn_id,
            one_event=route.targets[0].one_event,
            grip=info.grip_enabled,
        )
        try:
            response, body = await link.post(b"OPEN\r\n")
        except (AllTargetsFailed, OriginError, BodyTooLarge) as e:
            self._log.warn("ws {uri}: {why}", uri=info.uri, why=e)
            self._refuse_502(request, info, str(e))
            return
        info.target_label = response.target.label() + "[http]"
        ctype = (hdr.get_header(response.headers, b"content-type") or b"").split(b";")[0].strip().lower()
        if response.code != 200 or ctype != EVENTS_TYPE:
            self._pass_refusal(request, info, response.code, response.reason, response.headers, body[:REFUSAL_BODY_LIMIT])
            return
        try:
            events = decode_events(body)
        except WsEventsError as e:
            self._refuse_502(request, info, f"bad OPEN answer: {e}")
            return
        if not events or events[0].type != "OPEN":
            # An empty OPEN answer: Pushpin answers 502 (or, with Keep-Alive-Interval, keeps
            # re-asking); we always answer 502 (see README, differences).
            self._refuse_502(request, info, "origin did not accept the connection (no OPEN event)")
            return
        session.grip, session.message_prefix = self._grip_mode(info, response.headers)
        link.apply_response_headers(response)
        headers = [(k, v) for k, v in response.headers if k.lower() not in _NOT_IN_101 and not k.lower().startswith(b"set-meta-")]
        subprotocol = hdr.get_header(response.headers, b"sec-websocket-protocol")
        if not self._complete(request, info, session, link, headers, subprotocol):
            link.client_gone()
            return
        link.start(events[1:])

    # plain WebSocket -----------------------------------------------------------------------

    async def _plain(self, request: Any, info: "RequestInfo", route: "Route", path: bytes, headers_for: Callable[["Target"], hdr.Headers]) -> None:
        tried: list[str] = []
        protocols = [p.strip() for p in (request.getHeader(b"sec-websocket-protocol") or b"").decode("latin-1").split(",") if p.strip()]
        for target in route.targets:
            if target.kind != "http":
                tried.append(target.label())
                continue
            headers = [
                (k, v)
                for k, v in headers_for(target)
                if k.lower() not in (b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol", b"content-length")
            ]
            if info.grip_enabled:
                headers.append((b"Sec-WebSocket-Extensions", b"grip"))
            try:
                origin = await connect_origin(
                    self._reactor,
                    host=target.host,
                    port=target.port,
                    ssl=target.ssl,
                    path=path.decode("latin-1"),
                    headers=headers,
                    protocols=protocols,
                    context_factory=lambda h, p: tls.optionsForClientTLS(h) if not target.insecure else tls.CertificateOptions(verify=False),
                )
            except CancelledError:
                raise  # the client is gone: no next target, no 502
            except HandshakeRefused as refusal:
                info.target_label = target.label()
                self._pass_refusal(request, info, refusal.code, refusal.reason, refusal.headers, refusal.body)
                return
            except Exception as e:
                self._log.info("ws {uri}: cannot connect to {target}: {why}", uri=info.uri, target=target.label(), why=e)
                tried.append(target.label())
                continue
            info.target_label = target.label()
            session = WsSession(self._ctx, str(next(self._ids)), prefix=route.prefix, implicit_channels=target.subs)
            if info.grip_enabled and origin.grip:
                session.grip, session.message_prefix = True, origin.message_prefix
            origin.session = session
            accept = [(k, v) for k, v in origin.accept_headers if k.lower() not in _NOT_IN_101]
            subprotocol = origin.websocket_protocol_in_use
            if not self._complete(request, info, session, origin, accept, subprotocol.encode() if subprotocol else None):
                origin.client_gone()
            return
        self._refuse_502(request, info, "Unable to connect to any targets. Tried: " + ", ".join(tried))

    # the built-in test target ----------------------------------------------------------------

    def _test_target(self, request: Any, info: "RequestInfo", route: "Route", path: bytes) -> None:
        """C{/ws} on the C{test} target: echoes, and listens on the test channels (§11)."""
        info.target_label = "test"
        local, query = split_target(path.decode("latin-1"))
        if route.path_beg and local.startswith(route.path_beg):
            local = "/" + local[len(route.path_beg) :].lstrip("/")
        if local.rstrip("/") != "/ws":
            self._pass_refusal(request, info, 404, b"Not Found", [(b"Content-Type", b"text/plain")], b"no such test resource\n")
            return
        channels = [v for k, v in query_pairs(query) if k == "channel"] or ["test"]
        session = WsSession(self._ctx, str(next(self._ids)), prefix=route.prefix, implicit_channels=tuple(channels))
        self._complete(request, info, session, _EchoLink(session), [], None)

    # common --------------------------------------------------------------------------------

    def _grip_mode(self, info: "RequestInfo", headers: hdr.Headers) -> tuple[bool, bytes]:
        if not info.grip_enabled:
            return False, b"m:"
        values = [v for k, v in headers if k.lower() == b"sec-websocket-extensions"]
        return parse_grip_extension(values)

    def _complete(self, request: Any, info: "RequestInfo", session: WsSession, link: Any, headers: hdr.Headers, subprotocol: bytes | None) -> bool:
        """Finish the client's handshake and start the session; False if the client is gone."""
        extra: dict[str, Any] = {}
        for name, value in headers:
            key = name.decode("latin-1")
            extra.setdefault(key, []).append(value.decode("latin-1"))
        protocol = upgrade(
            request,
            self._factory,
            session,
            subprotocol=subprotocol.decode("latin-1") if subprotocol else None,
            headers=extra,
        )
        if protocol is None:
            session.end()
            return False
        session.open(protocol, link)
        conn_id = session.conn_id
        self.connections[conn_id] = session
        self._counters.held["ws"] += 1
        stats = self._stats
        if stats is not None:
            stats.connected(conn_id, "ws", info.client_ip, info.secure)
        session.on_end = self._on_session_end
        self._access(info, request, 101)
        return True

    def _session_ended(self, session: WsSession) -> None:
        """A session opened by L{_complete} ended: its bookkeeping goes."""
        conn_id = session.conn_id
        if self.connections.pop(conn_id, None) is not None:
            counters = self._counters
            counters.held["ws"] -= 1
            counters.connection_minutes_closed += 1 + int((self._ctx.clock.seconds() - session.started_at) // 60)
            if self._stats is not None:
                self._stats.disconnected(conn_id)

    def _pass_refusal(self, request: Any, info: "RequestInfo", code: int, reason: bytes, headers: hdr.Headers, body: bytes) -> None:
        """The origin said no: the client gets its status, headers and body (§8.1, §8.2)."""
        self._access(info, request, code, len(body))
        if is_disconnected(request):
            return
        request.setResponseCode(code, reason or http.RESPONSES.get(code, b"Unknown"))
        for name, value in hdr.response_headers_to_client(headers):
            request.responseHeaders.addRawHeader(name, value)
        request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
        request.write(body)
        request.finish()

    def _refuse_502(self, request: Any, info: "RequestInfo", detail: str) -> None:
        self._log.warn("{method} {uri}: {why}", method=info.method.decode("latin-1"), uri=info.uri, why=detail)
        message = detail if info.debug else "Error while proxying to origin."
        self._access(info, request, 502, len(message) + 1)
        if is_disconnected(request):
            return
        # observed on 1.36.0: a refused WebSocket handshake's 502 has no Content-Type
        error_response(request, 502, message, content_type=False)

    def _access(self, info: "RequestInfo", request: Any, code: int, size: int = 0) -> None:
        access_line(self._instance_log, self._settings, info, request, code=code, size=size)


class _EchoLink:
    """The test target's origin side: every client message comes straight back."""

    def __init__(self, session: WsSession) -> None:
        self._session = session

    def client_message(self, opcode: int, payload: bytes) -> None:
        self._session.origin_message(opcode, payload)

    def client_closed(self, code: int | None, reason: bytes) -> None:
        pass

    def client_gone(self) -> None:
        pass

    def detach(self) -> None:
        pass
