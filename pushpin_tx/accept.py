# -*- test-case-name: tests.test_accept -*-
"""
Accepting a GRIP response: turn an origin's instructions into a held connection.

The proxy calls L{Acceptor.accept} when an origin answer carries GRIP. It reads the
instruct (at most 100,000 bytes, §4.3), parses it, and then answers once (no hold),
follows C{Grip-Link rel=next} pages into one response, or starts a response or stream
hold. Every failure has Pushpin's status and wording (§4.4, §14.7).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

from twisted.logger import Logger

from .grip import InstructError, is_grip_instruct, parse_instruct
from .headers import get_header
from .hold import HoldContext, ResponseHold, StreamHold
from .origin import AllTargetsFailed, BodyTooLarge, OriginError, read_body
from .proxy import GRIP_BODY_LIMIT, access_line, error_response

if TYPE_CHECKING:
    from .clientsite import ClientRequest
    from .config import Settings
    from .grip import Instruct
    from .origin import OriginClient, OriginResponse
    from .proxy import RequestInfo
    from .stats import Counters
    from .zmq_stats import StatsPublisher

__all__ = ["Acceptor"]

#: How many Grip-Link pages one response may chain before the proxy stops following.
MAX_PAGES = 1000


class Acceptor:
    """Holds connections according to GRIP instructions."""

    _log = Logger()

    def __init__(
        self,
        settings: "Settings",
        ctx: HoldContext,
        counters: "Counters",
        origin: "OriginClient",
        headers_for_link: Callable[["RequestInfo", str], Callable[..., Any]] | None = None,
        stats: "StatsPublisher | None" = None,
    ) -> None:
        self._settings = settings
        self._ctx = ctx
        self._counters = counters
        self._origin = origin
        #: held connections by connection id (the console and tests look here)
        self.connections: dict[str, ResponseHold | StreamHold] = {}
        self.link_headers = headers_for_link
        self._stats = stats

    async def accept(self, request: "ClientRequest", info: "RequestInfo", response: "OriginResponse") -> None:
        """Handle an origin response that carries GRIP instructions."""
        if info.body is None:
            # §4.1 step 9: a request body over 100,000 bytes was not kept, so GRIP cannot be accepted.
            response.deliver_body(_Discard())
            self._access(info, request, code=400)
            error_response(request, 400, "Request too large to accept GRIP instruct.")
            return
        try:
            body = await read_body(response, GRIP_BODY_LIMIT)
        except BodyTooLarge as too_large:
            await self._accept_oversized(request, info, response, too_large)
            return
        except OriginError as e:
            self._fail(request, info, str(e))
            return
        try:
            instruct = self._parse(response, body, info)
        except InstructError as e:
            self._fail(request, info, f"Failed to parse accept instructions: {e}")
            return
        if request._disconnected:
            return
        await self._dispatch(request, info, instruct)

    def _parse(self, response: "OriginResponse", body: bytes, info: "RequestInfo") -> "Instruct":
        instruct = parse_instruct(
            response.code,
            response.reason,
            response.headers,
            body,
            request_uri=info.uri,
            prefix=info.route.prefix if info.route is not None else "",
        )
        return self._limit_channels(instruct, info, response)

    def _limit_channels(self, instruct: "Instruct", info: "RequestInfo", response: "OriginResponse") -> "Instruct":
        channels = list(instruct.channels)
        names = {c.name for c in channels}
        prefix = info.route.prefix if info.route is not None else ""
        if instruct.hold is not None:
            from .grip import Channel

            for sub in response.target.subs:
                name = prefix + sub
                if name not in names:
                    channels.append(Channel(name=name, prev_id=None, filters=()))
                    names.add(name)
        limit = self._settings.connection_subscription_max
        if len(channels) > limit:
            self._log.warn(
                "{conn}: too many channels ({n}), keeping the first {limit}",
                conn=info.conn_id,
                n=len(channels),
                limit=limit,
            )
            channels = channels[:limit]
        if tuple(channels) != instruct.channels:
            instruct = dataclasses.replace(instruct, channels=tuple(channels))
        return instruct

    async def _dispatch(self, request: "ClientRequest", info: "RequestInfo", instruct: "Instruct", *, head_sent: bool = False, initial: bytes = b"") -> None:
        if instruct.hold is None:
            if instruct.next_link is None:
                self._access(info, request, code=instruct.response.code, size=len(instruct.response.body))
                if head_sent:
                    request.write_body(instruct.response.body)
                    request.finish()
                    return
                r = instruct.response
                request.send_head(r.code, r.reason, list(r.headers), len(r.body))
                request.write_body(r.body)
                request.finish()
                return
            self._access(info, request, accept="accept")
            await self._follow_links(request, info, instruct, head_sent=head_sent)
            return
        self._access(info, request, accept="accept")
        hold: ResponseHold | StreamHold
        if instruct.hold == "response":
            hold = ResponseHold(self._ctx, request, instruct, info.conn_id)
        else:
            hold = StreamHold(self._ctx, request, instruct, info.conn_id)
        self._track(request, hold, info)
        if isinstance(hold, StreamHold):
            hold.start(initial, head_sent=head_sent)
        else:
            hold.start()

    def _track(self, request: "ClientRequest", hold: ResponseHold | StreamHold, info: "RequestInfo") -> None:
        conn_id = hold.conn_id
        self.connections[conn_id] = hold
        counters = self._counters
        counters.held[hold.kind] += 1
        stats = self._stats
        route_id = info.route.id if info.route is not None and info.route.explicit_id else None
        if stats is not None:
            stats.connected(conn_id, "http", info.client_ip, info.secure, route=route_id)
        for channel in hold.channels:
            self._log.info("subscribe {uri} channel={channel}", uri=_uri_of(request), channel=channel)

        def ended(result: object) -> None:
            self.connections.pop(conn_id, None)
            counters.held[hold.kind] -= 1
            hold.client_gone()
            if stats is not None:
                stats.disconnected(conn_id, route=route_id)

        request.notifyFinish().addBoth(ended)

    async def _accept_oversized(self, request: "ClientRequest", info: "RequestInfo", response: "OriginResponse", too_large: BodyTooLarge) -> None:
        """§4.3: a stream hold's oversized body is relayed as it comes, then held."""
        hold = (get_header(response.headers, b"grip-hold") or b"").strip().lower()
        has_link = get_header(response.headers, b"grip-link") is not None
        streamable = hold == b"stream" or (not hold and has_link)
        try:
            instruct = self._parse(response, b"", info) if streamable else None
        except InstructError as e:
            too_large.discard()
            self._fail(request, info, f"Failed to parse accept instructions: {e}")
            return
        if instruct is None or any("build-id" in c.filters for c in instruct.channels):
            too_large.discard()
            label = info.target_label
            self._fail(request, info, f"GRIP instruct response too large from {label}")
            return
        r = instruct.response
        request.send_head(r.code, r.reason, list(r.headers), None)
        request.write_body(too_large.data)
        from twisted.internet.defer import Deferred

        ended: Deferred[bool] = Deferred()
        too_large.follow(request.write_body, ended.callback)
        clean = await ended
        if not clean:
            request.close()
            return
        await self._dispatch(request, info, instruct, head_sent=True)

    async def _follow_links(self, request: "ClientRequest", info: "RequestInfo", instruct: "Instruct", *, head_sent: bool) -> None:
        """No hold and a next link: one response made of every page (§5.3, "paged stream")."""
        r = instruct.response
        if not head_sent:
            request.send_head(r.code, r.reason, list(r.headers), None)
            request.write_body(r.body)
        link = instruct.next_link
        for _ in range(MAX_PAGES):
            if link is None or request._disconnected:
                break
            try:
                page = await self._fetch_link(info, link.uri)
            except (AllTargetsFailed, OriginError, InstructError, BodyTooLarge) as e:
                self._log.warn("{conn}: next link {uri} failed: {why}", conn=info.conn_id, uri=link.uri, why=e)
                break
            if page is None:
                break
            if page.hold == "stream":
                request.write_body(page.response.body)
                await self._dispatch(request, info, dataclasses.replace(page, response=dataclasses.replace(page.response, body=b"")), head_sent=True)
                return
            if page.hold is not None:
                self._log.warn("{conn}: Next link returned non-stream hold.", conn=info.conn_id)
                break
            request.write_body(page.response.body)
            link = page.next_link
        request.finish()

    async def _fetch_link(self, info: "RequestInfo", uri: str) -> "Instruct | None":
        route = info.route
        assert route is not None and self.link_headers is not None
        parts = urlsplit(uri)
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        headers_for = self.link_headers(info, parts.netloc)
        response = await self._origin.request(route.targets, b"GET", path.encode("latin-1"), headers_for, lambda: None)
        body = await read_body(response, GRIP_BODY_LIMIT)
        if not 200 <= response.code < 300:
            raise OriginError(f"next link answered {response.code}")
        if not is_grip_instruct(response.headers):
            from .grip import Instruct, Response

            return Instruct(
                hold=None, channels=(), timeout=55, keep_alive=None, meta={},
                response=Response(response.code, response.reason, [], body), next_link=None,
            )
        return self._parse(response, body, info)

    def _fail(self, request: "ClientRequest", info: "RequestInfo", detail: str) -> None:
        self._log.warn("{method} {uri}: {why}", method=info.method.decode("latin-1"), uri=info.uri, why=detail)
        self._access(info, request, code=502)
        if request._disconnected or request.startedWriting:
            if not request._disconnected:
                request.abort()
            return
        error_response(request, 502, detail if info.debug else "Error while proxying to origin.")

    def _access(self, info: "RequestInfo", request: Any, *, code: int | None = None, size: int | None = None, accept: str = "") -> None:
        access_line(self._log, self._settings, info, request, code=code, size=size, accept=accept)


class _Discard:
    """Reads and forgets a body (an instruct we must refuse)."""

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def _uri_of(request: Any) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    return f"{scheme}://{host}{request.uri.decode('latin-1')}"
