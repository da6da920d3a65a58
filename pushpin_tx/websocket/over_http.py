# -*- test-case-name: tests.integration.test_websockets -*-
"""
WebSocket-over-HTTP (reference §8.2): the origin never holds a socket. Everything the
client does becomes events in short C{POST}s of C{application/websocket-events}; the
origin's answers carry events back, plus GRIP control messages and meta.

One request is in flight per connection at a time; client events that arrive meanwhile
are batched into the next one by Pushpin's rules (L{EventBatcher}: about 200,000 bytes,
OPEN and DISCONNECT alone, one event per request with C{one_event}).
With C{Keep-Alive-Interval}, an idle connection still asks the origin every N seconds.
Connection failures are retried with backoff (1 s, 2 s, 4 s, ... plus jitter, 5 tries).

An origin may keep back part of what it was sent (Pushpin 1.41): its answer's
C{Content-Bytes-Accepted: N} takes only the first N message bytes; the rest (a message cut
where N ends, and those after it) is sent again at the front of the next request, which
says how much it replays in C{Content-Bytes-Replayed} (L{split_accepted}). As in Pushpin,
a replay alone does not start a request: new client data, a keep-alive or a close does.

Reliable mode (L{WohLink.recover}): when the session finds a gap in a sequenced channel it
asks the origin for what is missing in a request of its own, with no events and one
C{Grip-Last: <channel>; last-id=<id>} header per sequenced channel (as an HTTP stream's
recovery does). The answer is applied like any other: its messages go to the client, and a
C{subscribe} with a C{prev-id} moves the channel's position on. Failures are retried like
the other requests (5 tries with backoff).
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger

from pushpin_tx.protocol import headers as hdr
from pushpin_tx.origin.client import AllTargetsFailed, BodyTooLarge, OriginError, read_body
from pushpin_tx.web._common import BytesProducer
from pushpin_tx.core.ws_session import OPCODE_BINARY, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT
from pushpin_tx.protocol.wsevents import EventBatcher, WsEvent, WsEventsError, close_content, decode_events, encode_events, parse_close_content

if TYPE_CHECKING:
    from pushpin_tx.origin.client import OriginClient, OriginResponse
    from pushpin_tx.protocol.routes import Target
    from pushpin_tx.core.ws_session import WsSession

__all__ = ["WohLink", "EVENTS_TYPE", "open_headers", "split_accepted", "accepted_bytes"]

EVENTS_TYPE = b"application/websocket-events"
MAX_RESPONSE = 1000000
MIN_KEEP_ALIVE = 20
RETRIES = 5

_EVENT_FOR = {OPCODE_TEXT: "TEXT", OPCODE_BINARY: "BINARY", OPCODE_PING: "PING", OPCODE_PONG: "PONG"}
_OPCODE_FOR = {"TEXT": OPCODE_TEXT, "BINARY": OPCODE_BINARY, "PING": OPCODE_PING, "PONG": OPCODE_PONG}

# client handshake headers that never go to the origin in WebSocket-over-HTTP requests
_DROP = (b"upgrade", b"connection", b"accept", b"connection-id", b"content-length", b"sec-websocket-extensions", b"content-type")


def open_headers(base: hdr.Headers, *, conn_id: str, meta: dict[str, str], grip: bool) -> hdr.Headers:
    """
    The header list of a WebSocket-over-HTTP request: the rewritten client handshake
    headers, then Pushpin's own (§8.2 gives the observed order).
    """
    out = [(k, v) for k, v in base if k.lower() not in _DROP and not k.lower().startswith(b"meta-")]
    if grip:
        out.append((b"Sec-WebSocket-Extensions", b"grip"))
    out.append((b"Accept", EVENTS_TYPE))
    out.append((b"Connection-Id", conn_id.encode("ascii")))
    out.append((b"Content-Type", EVENTS_TYPE))
    for name, value in meta.items():
        out.append((b"Meta-" + name.encode("latin-1"), value.encode("utf-8")))
    return out


_MESSAGE_TYPES = frozenset(_OPCODE_FOR)


class NotAccepted(Exception):
    """An origin's C{Content-Bytes-Accepted} is more than it was offered, or refuses a close."""


def split_accepted(events: list[WsEvent], accepted: int) -> tuple[list[WsEvent], int]:
    """
    Pushpin's C{removeContentFromFrames} over a request's events: take C{accepted} message
    bytes off the front; return the events left to replay (the first one cut where the
    bytes end; an empty message at the cut counts as taken, as in Pushpin) and the bytes
    taken. C{OPEN}/C{CLOSE}/C{DISCONNECT} are not messages and are not returned.
    """
    left = accepted
    out: list[WsEvent] = []
    taken = 0
    messages = [e for e in events if e.type in _MESSAGE_TYPES]
    for index, event in enumerate(messages):
        size = min(left, len(event.content))
        left -= size
        taken += size
        if size < len(event.content):
            out.append(WsEvent(event.type, event.content[size:]))
            out.extend(messages[index + 1 :])
            break
    return out, taken


def accepted_bytes(value: bytes | None, offered: int) -> int:
    """C{Content-Bytes-Accepted} as Pushpin reads it: absent, not a number or negative is everything."""
    if value is None:
        return offered
    try:
        number = int(value.strip())
    except ValueError:
        return offered
    if number < 0:
        return offered
    if number > offered:
        raise NotAccepted(f"Content-Bytes-Accepted {number} is more than the {offered} bytes offered")
    return number


def new_connection_id() -> str:
    return str(uuid.uuid4())


class WohLink:
    """The origin side of one WebSocket-over-HTTP connection."""

    _log = Logger()

    def __init__(
        self,
        session: "WsSession",
        origin: "OriginClient",
        clock: Any,
        *,
        targets: "tuple[Target, ...]",
        path: bytes,
        headers_for: Callable[["Target"], hdr.Headers],
        conn_id: str,
        one_event: bool,
        grip: bool,
        random_: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._origin = origin
        self._clock = clock
        self._targets = targets
        self._path = path
        self._headers_for = headers_for
        self.conn_id = conn_id
        self._grip = grip
        self._random = random_
        self._pending = EventBatcher(one_event=one_event)
        self._in_flight: Deferred[None] | None = None
        self._keep_alive_interval: int | None = None
        self._keep_alive: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._closed = False  # no more events to send (CLOSE/DISCONNECT sent, or detached)
        #: messages the origin kept back (Content-Bytes-Accepted), sent again first
        self._replay: list[WsEvent] = []
        self._replay_bytes = 0
        #: a refresh asked for while a request was out: one more request once it is answered
        self._refresh_queued = False

    # requests ------------------------------------------------------------------------------

    def _request_headers(self, target: "Target") -> hdr.Headers:
        return open_headers(self._headers_for(target), conn_id=self.conn_id, meta=self._session.meta, grip=self._grip)

    async def post(self, body: bytes, replayed: int = 0) -> tuple["OriginResponse", bytes]:
        """One POST of events; returns the response and its body (at most 1,000,000 bytes)."""
        headers_for = self._request_headers
        if replayed > 0:
            extra = [(b"Content-Bytes-Replayed", b"%d" % replayed)]

            def headers_for(target: "Target") -> hdr.Headers:
                return self._request_headers(target) + extra

        response = await self._origin.request(
            self._targets, b"POST", self._path, headers_for, lambda: BytesProducer(body)
        )
        data = await read_body(response, MAX_RESPONSE)
        return response, data

    def apply_response_headers(self, response: "OriginResponse") -> None:
        """Set-Meta-* (empty value deletes) and Keep-Alive-Interval from an origin answer."""
        meta = self._session.meta
        for name, value in response.headers:
            lower = name.lower()
            if lower.startswith(b"set-meta-"):
                key = name[len(b"set-meta-") :].decode("latin-1")
                if value:
                    meta[key] = value.decode("utf-8", "replace")
                else:
                    meta.pop(key, None)
        interval = hdr.get_header(response.headers, b"keep-alive-interval")
        if interval is not None:
            try:
                seconds = int(interval.strip())
            except ValueError:
                seconds = 0
            self._keep_alive_interval = max(seconds, MIN_KEEP_ALIVE) if seconds > 0 else None

    def recover(self, last_ids: dict[str, str]) -> "Deferred[None]":
        """
        Reliable mode: ask the origin for what came after C{last_ids} ({channel: last id},
        the route prefix left off); fires once the answer's events are applied, fails when
        the origin could not be asked (after the retries) or answered with no events.
        """
        extra = [(b"Grip-Last", b"%s; last-id=%s" % (name.encode(), id.encode())) for name, id in sorted(last_ids.items())]
        return Deferred.fromCoroutine(self._recover(extra))

    async def _recover(self, extra: hdr.Headers) -> None:
        def headers_for(target: "Target") -> hdr.Headers:
            return self._request_headers(target) + extra

        attempt = 0
        while True:
            try:
                response = await self._origin.request(self._targets, b"POST", self._path, headers_for, lambda: BytesProducer(b""))
                data = await read_body(response, MAX_RESPONSE)
                break
            except (AllTargetsFailed, OriginError, BodyTooLarge) as e:
                attempt += 1
                if attempt >= RETRIES or self._closed:
                    raise
                delay = (2 ** (attempt - 1)) + self._random()
                self._log.info("ws {conn}: recovery request failed ({why}), retrying in {delay:.1f} s", conn=self.conn_id, why=e, delay=delay)
                await deferLater(self._clock, delay, lambda: None)
        content_type = (hdr.get_header(response.headers, b"content-type") or b"").split(b";")[0].strip().lower()
        if response.code != 200 or content_type != EVENTS_TYPE:
            raise OriginError(f"recovery answered {response.code} {content_type.decode('latin-1')}")
        events = decode_events(data)
        self.apply_response_headers(response)
        self._apply_events(events)

    def start(self, events: list[WsEvent]) -> None:
        """The client is connected: act on the events that came with the OPEN answer (after its OPEN)."""
        self._apply_events(events)
        self._arm_keep_alive()

    # events from the origin ----------------------------------------------------------------

    def _apply_events(self, events: list[WsEvent]) -> None:
        session = self._session
        for event in events:
            if event.type == "OPEN":
                # an OPEN once connected means the origin lost the connection: drop (as Pushpin)
                self._closed = True
                session.origin_disconnect()
                return
            if event.type in _OPCODE_FOR:
                session.origin_message(_OPCODE_FOR[event.type], event.content)
            elif event.type == "CLOSE":
                try:
                    code, reason = parse_close_content(event.content)
                except WsEventsError:
                    code, reason = None, b""
                self._closed = True
                session.origin_close(code, reason.decode("utf-8", "replace"))
                return  # Pushpin reads no further than the first CLOSE or DISCONNECT
            elif event.type == "DISCONNECT":
                self._closed = True
                session.origin_disconnect()
                return

    # events from the client ----------------------------------------------------------------

    def client_message(self, opcode: int, payload: bytes) -> None:
        self._queue(WsEvent(_EVENT_FOR[opcode], payload))

    def client_closed(self, code: int | None, reason: bytes) -> None:
        self._queue(WsEvent("CLOSE", close_content(code, reason) if code is not None else b""))
        self._closed = True

    def client_gone(self) -> None:
        self._queue(WsEvent("DISCONNECT"))
        self._closed = True

    def detach(self) -> None:
        """The origin asked to be detached: stop relaying to it, for good."""
        self._closed = True
        self._pending = EventBatcher()
        self._cancel_timers()

    def refresh(self) -> None:
        """
        Ask the origin now, even with nothing to send (Pushpin 1.38's refresh, for a publish
        of C{ws-message} with C{"action": "refresh"}): at once when no request is out, else
        once the one out is answered. Nothing once the connection is closing.
        """
        if self._closed:
            return
        if self._in_flight is not None or self._retry is not None:
            self._refresh_queued = True
            return
        self._pump(keep_alive=True)

    def _queue(self, event: WsEvent) -> None:
        if self._closed:
            return
        self._pending.push(event)
        self._pump()

    # the request loop ----------------------------------------------------------------------

    def _pump(self, keep_alive: bool = False) -> None:
        if self._in_flight is not None or self._retry is not None:
            return
        if not len(self._pending) and not keep_alive:
            if self._closed:
                self._cancel_timers()
            return
        batch = self._replay + self._pending.take_batch()  # empty for a keep-alive
        replayed = self._replay_bytes
        self._replay, self._replay_bytes = [], 0
        final = self._closed and not len(self._pending)
        d = Deferred.fromCoroutine(self._send(batch, final, attempt=0, replayed=replayed))
        self._in_flight = d
        d.addErrback(lambda f: None if f.check(CancelledError) else self._log.failure("ws-over-http request failed", f))

    async def _send(self, batch: list[WsEvent], final: bool, attempt: int, replayed: int = 0) -> None:
        try:
            response, data = await self.post(encode_events(batch), replayed)
        except (AllTargetsFailed, OriginError, BodyTooLarge) as e:
            self._in_flight = None
            if final:
                return  # the client is gone: a lost CLOSE/DISCONNECT needs no retry
            if attempt + 1 >= RETRIES:
                self._log.warn("ws {conn}: origin unreachable after {n} tries: {why}", conn=self.conn_id, n=RETRIES, why=e)
                self._closed = True
                self._session.origin_disconnect()
                return
            delay = (2**attempt) + self._random()
            self._log.info("ws {conn}: origin request failed ({why}), retrying in {delay:.1f} s", conn=self.conn_id, why=e, delay=delay)
            self._retry = self._clock.callLater(delay, self._retry_now, batch, final, attempt + 1, replayed)
            return
        self._in_flight = None
        if final:
            self._cancel_timers()
            return
        content_type = (hdr.get_header(response.headers, b"content-type") or b"").split(b";")[0].strip().lower()
        if response.code != 200 or content_type != EVENTS_TYPE:
            self._log.warn("ws {conn}: origin answered {code} {ctype}, closing", conn=self.conn_id, code=response.code, ctype=content_type)
            self._closed = True
            self._session.origin_close(1011, "")
            return
        offered = sum(len(e.content) for e in batch if e.type in _MESSAGE_TYPES)
        try:
            accepted = accepted_bytes(hdr.get_header(response.headers, b"content-bytes-accepted"), offered)
        except NotAccepted as e:
            self._log.warn("ws {conn}: {why}, closing", conn=self.conn_id, why=e)
            self._closed = True
            self._session.origin_close(1011, "")
            return
        if accepted < offered:
            self._replay, taken = split_accepted(batch, accepted)
            self._replay_bytes = offered - taken
        try:
            events = decode_events(data)
        except WsEventsError as e:
            self._log.warn("ws {conn}: bad events from origin: {why}, closing", conn=self.conn_id, why=e)
            self._closed = True
            self._session.origin_close(1011, "")
            return
        self.apply_response_headers(response)
        self._apply_events(events)
        self._arm_keep_alive()
        refresh, self._refresh_queued = self._refresh_queued, False
        self._pump(keep_alive=refresh and not self._closed)

    def _retry_now(self, batch: list[WsEvent], final: bool, attempt: int, replayed: int = 0) -> None:
        self._retry = None
        d = Deferred.fromCoroutine(self._send(batch, final, attempt, replayed))
        self._in_flight = d
        d.addErrback(lambda f: self._log.failure("ws-over-http retry failed", f))

    # keep-alive ----------------------------------------------------------------------------

    def _arm_keep_alive(self) -> None:
        if self._keep_alive is not None and self._keep_alive.active():
            self._keep_alive.cancel()
        self._keep_alive = None
        if self._keep_alive_interval and not self._closed:
            self._keep_alive = self._clock.callLater(self._keep_alive_interval, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self._keep_alive = None
        self._pump(keep_alive=True)

    def _cancel_timers(self) -> None:
        for call in (self._keep_alive, self._retry):
            if call is not None and call.active():
                call.cancel()
        self._keep_alive = self._retry = None
