# -*- test-case-name: tests.web.test_accept -*-
"""
Accepting a GRIP response: turn an origin's instructions into a held connection.

The proxy calls L{Acceptor.accept} when an origin answer carries GRIP. It reads the
instruct (at most 100,000 bytes, §4.3), parses it, and then answers once (no hold),
follows C{Grip-Link rel=next} pages into one response, or starts a response or stream
hold. Every failure has Pushpin's status and wording (§4.4, §14.7).

Proxied bodies go through their channels' response-content filters (C{build-id}), each
under its own instruct, as Pushpin 1.41 does (C{httpsession.cpp}, "apply next link
response's own filters to its content"): the initial body under the first answer's
channels and meta, a next-link page under that page's own. A next-link answer's instruct
is read from its headers before its body (an invalid one, or a response hold, ends the
stream without relaying the page), and is resolved against the link it came from.
"""

from __future__ import annotations

import dataclasses
import json
import random
from typing import TYPE_CHECKING, Any, Callable, Coroutine
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel

from pushpin_tx._compat import is_disconnected
from pushpin_tx.protocol.filters import FilterError, filter_response_body, response_filters_of
from pushpin_tx.protocol.grip import Instruct, InstructError, Response, is_grip_instruct, parse_instruct
from pushpin_tx.protocol.headers import get_header
from pushpin_tx.core.hold import HoldContext, ResponseHold, StreamHold
from pushpin_tx.origin.client import AllTargetsFailed, BodyTooLarge, OriginError, read_body
from pushpin_tx.core.loginfo import emit_info
from pushpin_tx.web._common import GRIP_BODY_LIMIT, access_line, error_response

if TYPE_CHECKING:
    from pushpin_tx.web.clientsite import ClientRequest
    from pushpin_tx.protocol.config import Settings
    from pushpin_tx.origin.client import OriginClient, OriginResponse
    from pushpin_tx.web._common import RequestInfo
    from pushpin_tx.core.stats import Counters
    from pushpin_tx.core.stats_feed import StatsPublisher

__all__ = ["Acceptor"]

#: How many Grip-Link pages one response may chain before the proxy stops following.
MAX_PAGES = 1000
#: How many times one client request may be re-sent to the origin with Grip-Last.
MAX_RETRIES = 5
#: Next-link fetches: tries (Pushpin: the first and RETRY_MAX = 5 retries), and the first
#: backoff delay (doubling, plus up to 1 s of jitter).
LINK_TRIES = 6
LINK_BACKOFF = 1.0
#: Pushpin's words when a next link cannot be had after every try
LINK_FAILED = "Failed to retrieve next link."
#: ... and when a next link answers with a response hold
NON_STREAM_HOLD = "Next link returned non-stream hold."


#: Pushpin's log levels 0-3 (error, warning, info, debug) as twisted.logger's
_LOG_LEVELS = (LogLevel.error, LogLevel.warn, LogLevel.info, LogLevel.debug)


def grip_last_headers(last_ids: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """One C{Grip-Last: <channel>; last-id=<id>} per channel (§5.4)."""
    return [(b"Grip-Last", f"{channel}; last-id={last}".encode("utf-8")) for channel, last in last_ids.items()]


class LinkRefused(Exception):
    """
    A next link answered, but with nothing the session can go on with: an invalid
    instruct, a response hold, or a body its filters refuse. Not retried (Pushpin's
    C{doError}); C{str(e)} is Pushpin's error message.
    """


def filtered_body(instruct: Instruct, body: bytes) -> bytes:
    """C{body} through the response-content filters of C{instruct}'s channels, under its meta. Raises L{FilterError}."""
    channels = instruct.channels
    for c in channels:  # (a loop, not any() over a generator: one object fewer per held stream)
        if c.filters:
            break
    else:
        return body  # (the usual case: no channel has filters)
    filters = response_filters_of(c.filters for c in channels)
    if not filters:
        return body
    return filter_response_body(filters, body, sub_meta=instruct.meta)


def ending(why: str, debug: bool) -> Instruct:
    """
    What a stream's recovery gets when its next link failed (C{why}): an answer that ends
    the stream, carrying in debug mode the reason as Pushpin writes it after what was sent
    (C{doError} for a stream: two newlines, the message, a newline).
    """
    tail = b"\n\n" + why.encode("utf-8") + b"\n" if debug else b""
    return Instruct(hold=None, channels=(), timeout=55, keep_alive=None, meta={},
                    response=Response(200, b"OK", [], tail), next_link=None)


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
        *,
        last_ids: Any = None,
        relay: Callable[..., None] | None = None,
    ) -> None:
        """
        @param last_ids: the channels' last delivered ids, checked against prev-ids.
        @param relay: relays a non-GRIP origin answer (the proxy resource's C{relay}).
        """
        self._settings = settings
        self._ctx = ctx
        self._counters = counters
        self._origin = origin
        # the class's Logger bound to this acceptor once: twisted.logger's descriptor builds a
        # new bound Logger on every self._log (several per held stream opened)
        self._log = self._log
        #: held connections by connection id (the console and tests look here)
        self.connections: dict[str, ResponseHold | StreamHold] = {}
        #: each held request's current hold (a retried request's replaces the one before)
        self._holds: dict["ClientRequest", ResponseHold | StreamHold] = {}
        self.link_headers = headers_for_link
        self._stats = stats
        self.last_ids = last_ids
        #: relays a non-GRIP origin answer
        self.relay = relay
        self._random = random.random

    async def accept(self, request: "ClientRequest", info: "RequestInfo", response: "OriginResponse", retries: int = 0) -> None:
        """Handle an origin response that carries GRIP instructions."""
        if info.body is None:
            # §4.1 step 9: a request body over 100,000 bytes was not kept, so GRIP cannot be accepted.
            response.deliver_body(Protocol())
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
            unheld = self._without_hold(e, response, body, info)
            if unheld is None:
                self._fail(request, info, f"Failed to parse accept instructions: {e}")
            elif not is_disconnected(request):
                self._answer_unheld(request, info, unheld, str(e))
            return
        if is_disconnected(request):
            return
        rest = self._dispatch(request, info, instruct, retries=retries)
        if rest is not None:
            await rest

    def accept_now(self, request: "ClientRequest", info: "RequestInfo", response: "OriginResponse") -> "Deferred[None] | None":
        """
        L{accept}, without its coroutine when nothing in it has to wait: the origin's body is
        in already (a small answer read whole, the built-in test origin) and the instruct
        holds, or answers at once. The same steps in the same order, with the same outcome;
        C{None} when it is all done, else a Deferred for the rest (a next-link page, a retry,
        an oversized or refused body: L{accept} itself). A coroutine and its Deferred are a
        visible share of opening a held stream (bench/setup_cost.py).
        """
        body = response.body
        if info.body is None or body is None or len(body) > GRIP_BODY_LIMIT:
            return Deferred.fromCoroutine(self.accept(request, info, response))
        try:
            instruct = self._parse(response, body, info)
        except InstructError:
            # (rare: the general path parses it again, and answers the error)
            return Deferred.fromCoroutine(self.accept(request, info, response))
        if is_disconnected(request):
            return None
        rest = self._dispatch(request, info, instruct)
        return None if rest is None else Deferred.fromCoroutine(rest)

    def _without_hold(self, error: InstructError, response: "OriginResponse", body: bytes, info: "RequestInfo") -> "Instruct | None":
        """
        While protocol/grip.py still refuses a stream hold with prev-id but no next link as a
        parse error (until patch helper-D1-1 is applied there), read the same answer without
        its hold, to answer it unheld as Pushpin does. None for any other error.
        """
        if not str(error).endswith("specifies prev-id, but no next link found"):
            return None
        headers = [(k, v) for k, v in response.headers if k.lower() != b"grip-hold"]
        content_type = get_header(response.headers, b"content-type") or b""
        if content_type.split(b";", 1)[0].strip() == b"application/grip-instruct":
            try:
                document = json.loads(body)
                document.pop("hold")
                body = json.dumps(document).encode("utf-8")
            except (ValueError, AttributeError, KeyError, TypeError):
                return None
        try:
            return self._parse(dataclasses.replace(response, headers=headers), body, info)
        except InstructError:
            return None

    def _answer_unheld(self, request: "ClientRequest", info: "RequestInfo", instruct: "Instruct", why: str, *, head_sent: bool = False) -> None:
        """
        A stream hold whose channels carry prev-id but that has no next link cannot recover, so
        it is not held (§5.4): as Pushpin 1.36 (httpsession.cpp, prepareToSendQueueOrHold), the
        client gets the origin's response, complete (observed: with Content-Length), followed
        by the reason in debug mode, and the connection stays usable.
        """
        self._log.warn("{conn}: {why}: answering without holding", conn=info.conn_id, why=why)
        r = instruct.response
        tail = b"\n\n" + why.encode("utf-8") + b"\n" if info.debug else b""
        self._access(info, request, accept="accept")
        if head_sent:
            request.write_body(tail)
        else:
            request.send_head(r.code, r.reason, list(r.headers), len(r.body) + len(tail))
            request.write_body(r.body + tail)
        request.finish()

    def _parse(self, response: "OriginResponse", body: bytes, info: "RequestInfo", *, request_uri: str | None = None) -> "Instruct":
        """Parse and limit an instruct; C{request_uri} resolves its links (default: the client's request)."""
        instruct = parse_instruct(
            response.code,
            response.reason,
            response.headers,
            body,
            request_uri=info.uri if request_uri is None else request_uri,
            prefix=info.route.prefix if info.route is not None else "",
        )
        return self._limit_channels(instruct, info, response)

    def _limit_channels(self, instruct: "Instruct", info: "RequestInfo", response: "OriginResponse") -> "Instruct":
        if len(instruct.channels) <= self._settings.connection_subscription_max and (
            instruct.hold is None or not response.target.subs
        ):
            return instruct  # nothing to add, nothing to cut (the usual case)
        channels = list(instruct.channels)
        names = {c.name for c in channels if not c.prefix}
        prefix = info.route.prefix if info.route is not None else ""
        if instruct.hold is not None:
            from pushpin_tx.protocol.grip import Channel

            for sub in response.target.subs:
                name = prefix + sub
                if name not in names:
                    channels.append(Channel(name=name, prev_id=None, filters=()))
                    names.add(name)
        limit = self._settings.connection_subscription_max
        if len(channels) > limit:
            # Pushpin 1.41 logs this at the route's log_level (default 3, debug; 1.36 warned)
            level = _LOG_LEVELS[min(max(info.route.log_level, 0), 3)] if info.route is not None else LogLevel.debug
            self._log.emit(
                level,
                "{conn}: too many channels ({n}), keeping the first {limit}{route}",
                conn=info.conn_id,
                n=len(channels),
                limit=limit,
                route=f" route={info.route.id}" if info.route is not None and info.route.explicit_id else "",
            )
            channels = channels[:limit]
        if tuple(channels) != instruct.channels:
            instruct = dataclasses.replace(instruct, channels=tuple(channels))
        return instruct

    def _dispatch(self, request: "ClientRequest", info: "RequestInfo", instruct: "Instruct", *, head_sent: bool = False, initial: bytes = b"", retries: int = 0) -> "Coroutine[Any, Any, None] | None":
        """
        Act on a parsed instruct: answer, hold, or follow links. What has to wait (following
        next links, a retry with Grip-Last) is returned as a coroutine for the caller to
        await; C{None} when everything is done (a hold started, an answer sent).
        """
        if not head_sent and instruct.hold != "response":
            # the initial body through its channels' response-content filters (an answer
            # relayed while it arrived, head_sent, was not buffered: Pushpin's responseSent)
            answered_at_once = instruct.hold is None and instruct.next_link is None
            body = instruct.response.body
            if body or answered_at_once:  # HttpSession filters a non-empty body; AcceptWorker any
                try:
                    filtered = filtered_body(instruct, body)
                except FilterError as e:
                    self._initial_filter_failed(request, info, instruct, f"filter error: {e}", answered_at_once)
                    return None
                if filtered is not body:
                    instruct = dataclasses.replace(instruct, response=dataclasses.replace(instruct.response, body=filtered))
        if instruct.hold == "stream" and instruct.next_link is None:
            unrecoverable = next((c.name for c in instruct.channels if c.prev_id is not None), None)
            if unrecoverable is not None:
                why = f"channel '{unrecoverable}' specifies prev-id, but no next link found"
                self._answer_unheld(request, info, instruct, why, head_sent=head_sent)
                return None
        if instruct.hold is None:
            if instruct.next_link is None:
                self._access(info, request, code=instruct.response.code, size=len(instruct.response.body))
                if head_sent:
                    request.write_body(instruct.response.body)
                    request.finish()
                    return None
                r = instruct.response
                request.send_head(r.code, r.reason, list(r.headers), len(r.body))
                request.write_body(r.body)
                request.finish()
                return None
            self._access(info, request, accept="accept")
            return self._follow_links(request, info, instruct, head_sent=head_sent)
        if instruct.hold == "response" and retries < MAX_RETRIES:
            # §5.3: a prev-id that is not the channel's known last id means the client missed
            # something: ask the origin again at once, with Grip-Last.
            stale = self._stale(instruct)
            if stale:
                self._log.info("{conn}: prev-id behind on {channels}, retrying", conn=info.conn_id, channels=", ".join(stale))
                self._counters.recoveries += 1
                prefix = info.route.prefix if info.route is not None else ""
                last = {c.name[len(prefix):] if c.name.startswith(prefix) else c.name: c.prev_id for c in instruct.channels if c.prev_id is not None}
                return self.retry(request, info, last, retries + 1)
        self._access(info, request, accept="accept retry" if retries else "accept")
        hold: ResponseHold | StreamHold
        if instruct.hold == "response":
            hold = ResponseHold(self._ctx, request, instruct, info.conn_id)
            hold.retry = lambda last: Deferred.fromCoroutine(self.retry(request, info, last, retries + 1)).addErrback(
                lambda f: self._log.failure("retry failed", f)
            )
        else:
            hold = StreamHold(self._ctx, request, instruct, info.conn_id)
            if instruct.next_link is not None:
                # (a stream without a next link never fetches one: its instruct changes only
                # through a fetched page; no closure, and no RequestInfo, kept per held stream)
                hold.fetch_next = lambda uri, last: Deferred.fromCoroutine(self.fetch_next(info, uri, last))
            # streams recover through next links, never by re-sending the request: let the
            # request's headers and body go (a few KB per held stream)
            info.resend = None
            info.body = None
        if info.route is not None and info.route.prefix:
            hold.channel_prefix = info.route.prefix
        self._track(request, hold, info)
        if isinstance(hold, StreamHold):
            hold.start(initial, head_sent=head_sent)
        else:
            hold.start()
        return None

    def _initial_filter_failed(self, request: "ClientRequest", info: "RequestInfo", instruct: "Instruct", why: str, answered_at_once: bool) -> None:
        """
        The initial body's filters failed. An answer without hold or link is refused as a
        bad instruct (Pushpin's AcceptWorker: 502); a stream or paged answer has begun (its
        head is out): it ends there, with the reason in debug mode (HttpSession's C{doError}).
        """
        if answered_at_once:
            self._fail(request, info, f"Failed to parse accept instructions: {why}")
            return
        self._log.warn("{conn}: {why}", conn=info.conn_id, why=why)
        self._access(info, request, accept="accept")
        r = instruct.response
        request.send_head(r.code, r.reason, list(r.headers), None)
        self._end_with(request, info, why)

    def _end_with(self, request: "ClientRequest", info: "RequestInfo", why: str) -> None:
        """End a response already begun, with C{why} after it in debug mode."""
        tail = ending(why, info.debug).response.body
        if tail:
            request.write_body(tail)
        request.finish()

    def _track(self, request: "ClientRequest", hold: ResponseHold | StreamHold, info: "RequestInfo") -> None:
        """Count and register the request's hold; a retried request replaces its old hold."""
        conn_id = hold.conn_id
        counters = self._counters
        stats = self._stats
        route_id = info.route.id if info.route is not None and info.route.explicit_id else None
        hold.route_id = route_id
        holds = self._holds
        previous = holds.get(request)
        holds[request] = hold
        self.connections[conn_id] = hold
        counters.held[hold.kind] += 1
        if hold.channels:
            log = self._log
            # one preformatted field, formatted once where three would be formatted three times ("{line}", which the log
            # observer writes unformatted, is what in-process tests pick access lines out by)
            uri, retry = _uri_of(request), " retry" if previous else ""
            for channel in hold.channels:
                emit_info(log, "{text}", text=f"subscribe {uri} channel={channel}{retry}")
        if hold.prefix_channels:
            uri, retry = _uri_of(request), " retry" if previous else ""
            for channel in hold.prefix_channels:
                emit_info(self._log, "{text}", text=f"subscribe {uri} channel-prefix={channel}{retry}")
        if previous is not None:
            counters.held[previous.kind] -= 1
            return
        if stats is not None:
            stats.connected(conn_id, "http", info.client_ip, info.secure, route=route_id)
        # a bound method and its arguments, not a closure: a closure keeps a cell per captured
        # name, objects the garbage collector walks for as long as the connection is held
        request.notifyFinish().addBoth(self._ended, request, conn_id, route_id)

    def _ended(self, result: object, request: "ClientRequest", conn_id: str, route_id: str | None) -> None:
        """A held request is over (answered, or the client went away): release its hold."""
        current = self._holds.pop(request)
        counters = self._counters
        self.connections.pop(conn_id, None)
        counters.held[current.kind] -= 1
        counters.connection_minutes_closed += 1 + int((self._ctx.clock.seconds() - current.started_at) // 60)
        current.client_gone()
        stats = self._stats
        if stats is not None:
            stats.disconnected(conn_id, route=route_id)

    def _stale(self, instruct: "Instruct") -> list[str]:
        last_ids = self.last_ids
        if last_ids is None:
            return []
        stale = []
        for channel in instruct.channels:
            if channel.prev_id is not None:
                last = last_ids.get(channel.name)
                if last is not None and last != channel.prev_id:
                    stale.append(channel.name)
        return stale

    async def retry(self, request: "ClientRequest", info: "RequestInfo", last_ids: dict[str, str], retries: int) -> None:
        """Re-send the client's request to the origin with Grip-Last and act on the answer."""
        if is_disconnected(request):
            return
        try:
            response = await info.resend(grip_last_headers(last_ids))
        except (AllTargetsFailed, OriginError) as e:
            self._fail(request, info, str(e))
            return
        if is_disconnected(request):
            response.deliver_body(Protocol())
            return
        if info.grip_enabled and is_grip_instruct(response.headers):
            await self.accept(request, info, response, retries=retries)
        elif self.relay is not None:
            self.relay(request, info, response)

    async def fetch_next(self, info: "RequestInfo", uri: str, last_ids: dict[str, str]) -> "Instruct":
        """
        A stream's next link, with Grip-Last: its instruct, its body filtered by its own
        channels' filters. When it cannot be had, an answer that ends the stream (L{ending}).
        """
        try:
            return await self._next_page(info, uri, grip_last_headers(last_ids))
        except LinkRefused as e:
            return ending(str(e), info.debug)

    async def _next_page(self, info: "RequestInfo", uri: str, extra: list[tuple[bytes, bytes]] = []) -> "Instruct":
        """
        Fetch a next link; failures retried with backoff (1 s, 2 s, 4 s... plus jitter, 6
        tries, as Pushpin's C{outReq_error}), an answer it cannot go on with not.

        @raise LinkRefused: with Pushpin's message (L{LINK_FAILED} after the last try).
        """
        for attempt in range(LINK_TRIES):
            try:
                return await self._fetch_link(info, uri, extra)
            except LinkRefused as e:
                self._log.warn("{conn}: next link {uri}: {why}", conn=info.conn_id, uri=uri, why=e)
                raise
            except (AllTargetsFailed, OriginError, BodyTooLarge) as e:
                if attempt + 1 == LINK_TRIES:
                    self._log.warn("{conn}: next link {uri} failed {n} times: {why}", conn=info.conn_id, uri=uri, n=LINK_TRIES, why=e)
                    break
                delay = LINK_BACKOFF * (2**attempt) + self._random()
                self._log.info("{conn}: next link {uri} failed ({why}), retrying in {delay:.1f} s", conn=info.conn_id, uri=uri, why=e, delay=delay)
                await deferLater(self._ctx.clock, delay, lambda: None)
        raise LinkRefused(LINK_FAILED)

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
        ended: Deferred[bool] = Deferred()
        too_large.follow(request.write_body, ended.callback, None if is_disconnected(request) else request)
        clean = await ended
        if not clean:
            request.close()
            return
        rest = self._dispatch(request, info, instruct, head_sent=True)
        if rest is not None:
            await rest

    async def _follow_links(self, request: "ClientRequest", info: "RequestInfo", instruct: "Instruct", *, head_sent: bool) -> None:
        """No hold and a next link: one response made of every page (§5.3, "paged stream")."""
        r = instruct.response
        if not head_sent:
            request.send_head(r.code, r.reason, list(r.headers), None)
            request.write_body(r.body)
        link = instruct.next_link
        for _ in range(MAX_PAGES):
            if link is None or is_disconnected(request):
                break
            try:
                page = await self._next_page(info, link.uri)
            except LinkRefused as e:
                if not is_disconnected(request):
                    self._end_with(request, info, str(e))
                return
            if is_disconnected(request):
                return
            if page.hold == "stream":
                request.write_body(page.response.body)
                rest = self._dispatch(request, info, dataclasses.replace(page, response=dataclasses.replace(page.response, body=b"")), head_sent=True)
                if rest is not None:
                    await rest
                return
            request.write_body(page.response.body)
            link = page.next_link
        request.finish()

    async def _fetch_link(self, info: "RequestInfo", uri: str, extra: list[tuple[bytes, bytes]] = []) -> "Instruct":
        """
        One next-link request, in Pushpin 1.41's order: the instruct from the answer's
        headers (resolved against C{uri}, the link fetched), refused if invalid or a response
        hold; then the status (not 2xx: an L{OriginError}, retried); then the body, through
        the answer's own channels' filters.

        @raise LinkRefused: the answer cannot be gone on with (not retried).
        """
        route = info.route
        assert route is not None and self.link_headers is not None
        parts = urlsplit(uri)
        path = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        base = self.link_headers(info, parts.netloc)
        response = await self._origin.request(
            route.targets, b"GET", path.encode("latin-1"), lambda target: base(target) + extra, lambda: None
        )
        try:
            if is_grip_instruct(response.headers):
                # the headers alone, as Pushpin reads a next link's instruct before its body
                # (so an application/grip-instruct body is never one: it fails as "failed to
                # parse application/grip-instruct content as JSON", as in Pushpin 1.36-1.41)
                instruct = self._parse(response, b"", info, request_uri=uri)
            else:
                instruct = Instruct(hold=None, channels=(), timeout=55, keep_alive=None, meta={},
                                    response=Response(response.code, response.reason, [], b""), next_link=None)
        except InstructError as e:
            _drop_body(response)
            raise LinkRefused(str(e)) from None
        if instruct.hold not in (None, "stream"):
            _drop_body(response)
            raise LinkRefused(NON_STREAM_HOLD)
        if not 200 <= response.code < 300:
            _drop_body(response)
            raise OriginError(f"next link answered {response.code}")
        try:
            body = await read_body(response, GRIP_BODY_LIMIT)
        except BodyTooLarge as too_large:
            too_large.discard()
            raise
        try:
            body = filtered_body(instruct, body)
        except FilterError as e:
            raise LinkRefused(f"filter error: {e}") from None
        return dataclasses.replace(instruct, response=dataclasses.replace(instruct.response, body=body))

    def _fail(self, request: "ClientRequest", info: "RequestInfo", detail: str) -> None:
        self._log.warn("{method} {uri}: {why}", method=info.method.decode("latin-1"), uri=info.uri, why=detail)
        self._access(info, request, code=502)
        if is_disconnected(request) or request.startedWriting:
            if not is_disconnected(request):
                request.abort()
            return
        error_response(request, 502, detail if info.debug else "Error while proxying to origin.")

    def _access(self, info: "RequestInfo", request: Any, *, code: int | None = None, size: int | None = None, accept: str = "") -> None:
        access_line(self._log, self._settings, info, request, code=code, size=size, accept=accept)


def _drop_body(response: "OriginResponse") -> None:
    """Read and throw away a body that is not used (the origin connection stays reusable)."""
    response.deliver_body(Protocol())


def _uri_of(request: Any) -> str:
    scheme = "https" if request.isSecure() else "http"
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    return f"{scheme}://{host}{request.uri.decode('latin-1')}"
