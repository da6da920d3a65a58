# -*- test-case-name: tests.core.test_ws_session -*-
"""
One proxied WebSocket connection as the router sees it: its channels, meta, filters, the
GRIP control messages its origin sends (reference §8.3) and the messages published to it.

The session sits between a client link (frames to and from the client) and an origin link
(plain WebSocket or WebSocket-over-HTTP). It only decides; the links move bytes. Messages
to the client, whether from the origin, a publish or a keep-alive, go through one bounded
L{DeliveryQueue}, so their order is kept and a slow client only fills its own queue.

A client that falls so far behind that its queue overflows (policy C{disconnect}, the
default) gets no further message: once it has read what is queued it gets a close frame,
code L{CLOSE_SLOW_READER} (1013, "Try Again Later") with a reason, so that it reconnects
knowing it missed messages. Every message dropped meanwhile is counted and logged.

Reliable mode (WebSocket-over-HTTP only): a C{subscribe} control message with a C{prev-id}
makes the channel sequenced for this connection. Each published C{ws-message} with an id
must follow the channel's position (its C{prev-id} the last id delivered); a duplicate id
is dropped; a gap, or a client too slow to take the next item (its queue at the limit),
makes the session ask the origin for what is missing (L{OriginLink} C{recover}, a request
with C{Grip-Last}) and hold what is published meanwhile. The origin's answer carries the
missing messages and a C{subscribe} with the new C{prev-id}; then what was held and follows
on goes out, and the rest (which the answer covered) is dropped. If the origin cannot be
reached the client is closed (1011): it never sees a gap or a message twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from pushpin_tx.core.delivery import OVERFLOW_DRAIN_TIMEOUT, DeliveryQueue
from pushpin_tx.protocol.filters import FilterError, apply_content_filters, content_filters_of, should_deliver
from pushpin_tx.core.loginfo import InfoLines
from pushpin_tx.core.router import PER_ITEM, Publication, plain_part, ws_frame
from pushpin_tx.protocol.wscontrol import (
    Detach,
    FlushDelayed,
    KeepAlive,
    SendDelayed,
    Session,
    SetMeta,
    Subscribe,
    Unsubscribe,
    WsControlError,
    parse_control_message,
    split_grip_text,
)

if TYPE_CHECKING:
    from pushpin_tx.core.hold import HoldContext

__all__ = [
    "WsSession", "ClientLink", "OriginLink", "OPCODE_TEXT", "OPCODE_BINARY", "OPCODE_PING", "OPCODE_PONG",
    "CLOSE_SLOW_READER", "SLOW_READER_REASON",
]

OPCODE_TEXT, OPCODE_BINARY, OPCODE_PING, OPCODE_PONG = 0x1, 0x2, 0x9, 0xA
_MESSAGE_TYPES = {"text": OPCODE_TEXT, "binary": OPCODE_BINARY, "ping": OPCODE_PING, "pong": OPCODE_PONG}

#: The close code a slow reader gets after its queue overflowed: RFC 6455's registered 1013
#: "Try Again Later" (reconnect; what was missed must be fetched again), not 1008 (policy
#: violation), which clients tend to treat as final.
CLOSE_SLOW_READER = 1013
SLOW_READER_REASON = "slow reader: delivery queue overflowed, messages dropped"


class ClientLink(Protocol):
    """The client's WebSocket: raw frame writes, flow control and closing."""

    def write_frame(self, frame: bytes) -> None: ...

    def close(self, code: int | None, reason: str) -> None: ...

    def drop(self) -> None: ...

    def register_producer(self, producer: DeliveryQueue) -> None: ...


class OriginLink(Protocol):
    """The origin side: plain WebSocket or WebSocket-over-HTTP."""

    def client_message(self, opcode: int, payload: bytes) -> None: ...

    def client_closed(self, code: int | None, reason: bytes) -> None: ...

    def client_gone(self) -> None: ...

    def detach(self) -> None: ...


#: reliable mode: items held while a recovery is out, past which one more recovery follows
HELD_MAX = 1000
#: reliable mode: ids remembered per channel to drop duplicates
SEEN_MAX = 64
#: the close code a reliable client gets when its origin cannot fill a gap (1011, internal error)
CLOSE_RECOVERY_FAILED = 1011


@dataclass
class _Sub:
    filters: tuple[str, ...]
    content_filters: tuple[str, ...]
    implicit: bool


class WsSession:
    """A WebSocket connection subscribed to channels."""

    kind = "ws"
    _log = Logger()

    # The rest of a new session's state, as class attributes: read until a session sets its
    # own (every one is assigned, never changed in place), so opening one stores only what
    # differs per session.
    session_id: str | None = None
    client: ClientLink | None = None
    origin: OriginLink | None = None
    queue: DeliveryQueue | None = None
    detached = False
    done = False
    _keep_alive: KeepAlive | None = None
    _keep_alive_call: IDelayedCall | None = None
    _last_write = 0.0
    _delayed: tuple[int, bytes] | None = None
    _delayed_call: IDelayedCall | None = None
    _drain_timer: IDelayedCall | None = None
    _drain_call: IDelayedCall | None = None
    #: called once, with the session, when it ends (the gateway's bookkeeping)
    on_end: Callable[["WsSession"], None] | None = None
    _recovering = False
    _again = False  # something was missed while recovering: recover once more
    _behind = False  # a slow reader: items were left for a recovery once it reads
    _catch_up_call: IDelayedCall | None = None
    recoveries = 0

    def __init__(
        self,
        ctx: "HoldContext",
        conn_id: str,
        *,
        prefix: str = "",
        grip: bool = False,
        message_prefix: bytes = b"m:",
        implicit_channels: tuple[str, ...] = (),
        meta: dict[str, str] | None = None,
    ) -> None:
        self._ctx = ctx
        self.conn_id = conn_id
        self.prefix = prefix
        self.grip = grip
        self.message_prefix = message_prefix
        self.meta: dict[str, str] = dict(meta or {})
        self.channels: dict[str, _Sub] = {}
        #: prefix (wildcard) subscriptions, by prefix
        self.prefixes: dict[str, _Sub] = {}
        self.started_at = ctx.clock.seconds()
        self._implicit = implicit_channels
        #: reliable mode: each sequenced channel's position (the last id delivered) and recent ids
        self._expect: dict[str, str] = {}
        self._seen: dict[str, deque[str]] = {}
        self._held: list[tuple[Publication, str]] = []

    # wiring -------------------------------------------------------------------------------

    def open(self, client: ClientLink, origin: OriginLink) -> None:
        """The client handshake completed: start delivering, subscribe implicit channels."""
        self.client = client
        self.origin = origin
        self.queue = DeliveryQueue(
            self._write,
            limit=self._ctx.queue_limit,
            policy=self._ctx.overflow,
            listener=self,
        )
        client.register_producer(self.queue)
        self._last_write = self._ctx.clock.seconds()
        for channel in self._implicit:
            self._subscribe(self.prefix + channel, (), implicit=True)

    def _queue_dropped(self, channel: str, reason: str) -> None:
        self._ctx.on_drop(self.conn_id, channel, reason)

    def _write(self, frame: bytes) -> None:
        if self.client is not None:
            self.client.write_frame(frame)
        if self._behind and self._catch_up_call is None:
            self._catch_up_call = self._ctx.clock.callLater(0, self._catch_up)

    def _send(self, opcode: int, payload: bytes, channel: str = "") -> None:
        if self.queue is None or self.done:
            return
        if opcode in (OPCODE_PING, OPCODE_PONG) and len(payload) > 125:
            self._log.warn("{conn}: control frame payload over 125 bytes dropped", conn=self.conn_id)
            self._ctx.on_drop(self.conn_id, channel, "control frame too large")
            return
        self.queue.offer(ws_frame(opcode, payload), channel)
        self._last_write = self._ctx.clock.seconds()

    # a slow reader (policy "disconnect") ---------------------------------------------------

    def _overflowed(self, channel: str) -> str:
        """The queue is full: drop every new message; close the client once it has read the rest."""
        self._log.warn(
            "ws {conn}: slow reader, {queued} messages queued on {channel}: new ones dropped, closing ({code}) once they are read",
            conn=self.conn_id, queued=len(self.queue or ()), channel=channel or "(origin)", code=CLOSE_SLOW_READER,
        )
        self._drain_timer = self._ctx.clock.callLater(OVERFLOW_DRAIN_TIMEOUT, self._drain_timed_out)
        return "queue full, closing"

    def _drained(self) -> None:
        if self._drain_call is None and not self.done:
            self._drain_call = self._ctx.clock.callLater(0, self._after_drain)

    # the queue's listener (core.delivery.QueueListener)
    queue_dropped = _queue_dropped
    queue_overflowed = _overflowed
    queue_drained = _drained

    def _after_drain(self) -> None:
        self._drain_call = None
        self._cancel(self._drain_timer)
        self._drain_timer = None
        if not self.done and self.client is not None:
            self.client.close(CLOSE_SLOW_READER, SLOW_READER_REASON)

    def _drain_timed_out(self) -> None:
        self._drain_timer = None
        if self.done or self.client is None:
            return
        self._log.warn("ws {conn}: slow reader did not read its queued messages in time, dropping the connection", conn=self.conn_id)
        self.client.drop()

    # from the origin ---------------------------------------------------------------------

    def origin_message(self, opcode: int, payload: bytes) -> None:
        """A message from the origin, to be passed on (GRIP mode: filtered by prefix)."""
        if opcode == OPCODE_TEXT and self.grip:
            kind, data = split_grip_text(payload, self.message_prefix)
            if kind == "control":
                self._control(data)
                return
            if kind == "drop":
                return
            payload = data
        elif opcode == OPCODE_BINARY and self.grip and self.message_prefix:
            if not payload.startswith(self.message_prefix):
                return
            payload = payload[len(self.message_prefix) :]
        self._send(opcode, payload)

    def _control(self, data: bytes) -> None:
        try:
            message = parse_control_message(data)
        except WsControlError as e:
            self._log.info("{conn}: ignoring control message: {why}", conn=self.conn_id, why=e)
            return
        if isinstance(message, Subscribe):
            if message.prev_id is not None and not message.prefix:
                self._sequence(self.prefix + message.channel, message.prev_id)
            if message.prefix:
                self._subscribe_prefix(self.prefix + message.channel, message.filters)
            else:
                self._subscribe(self.prefix + message.channel, message.filters)
        elif isinstance(message, Unsubscribe):
            if message.prefix:
                self._unsubscribe_prefix(self.prefix + message.channel)
            else:
                self._unsubscribe(self.prefix + message.channel)
        elif isinstance(message, Detach):
            self.detached = True
            if self.origin is not None:
                self.origin.detach()
        elif isinstance(message, Session):
            self.session_id = message.id
        elif isinstance(message, SetMeta):
            if message.value is None:
                self.meta.pop(message.name, None)
            else:
                self.meta[message.name] = message.value
        elif isinstance(message, KeepAlive):
            self._set_keep_alive(message)
        elif isinstance(message, SendDelayed):
            self._send_delayed(message)
        elif isinstance(message, FlushDelayed):
            self._flush_delayed()

    def _subscribe(self, channel: str, filters: tuple[str, ...], implicit: bool = False) -> None:
        if channel in self.channels:
            return
        if len(self.channels) + len(self.prefixes) >= self._ctx.subscription_max:
            self._log.warn("{conn}: subscription limit reached, not subscribing to {channel}", conn=self.conn_id, channel=channel)
            return
        self.channels[channel] = _Sub(tuple(filters), content_filters_of(filters), implicit)
        self._ctx.router.subscribe(channel, self)
        if self._ctx.stats is not None:
            self._ctx.stats.subscribed(channel, self.kind)
        # preformatted, as the access lines are: the log observer writes it without formatting
        _LINES.emit(f"subscribe ws {self.conn_id} channel={channel}")

    def _subscribe_prefix(self, prefix: str, filters: tuple[str, ...]) -> None:
        """A C{subscribe} with C{"prefix": true}: every channel starting with C{prefix}; counts toward the limit."""
        if prefix in self.prefixes:
            return
        if len(self.channels) + len(self.prefixes) >= self._ctx.subscription_max:
            self._log.warn("{conn}: subscription limit reached, not subscribing to prefix {prefix}", conn=self.conn_id, prefix=prefix)
            return
        self.prefixes[prefix] = _Sub(tuple(filters), content_filters_of(filters), False)
        self._ctx.router.subscribe_prefix(prefix, self)
        _LINES.emit(f"subscribe ws {self.conn_id} channel-prefix={prefix}")

    def _unsubscribe_prefix(self, prefix: str) -> None:
        if self.prefixes.pop(prefix, None) is not None:
            self._ctx.router.unsubscribe_prefix(prefix, self)

    def _subscription(self, channel: str) -> "_Sub | None":
        """The subscription a publish to C{channel} came through: exact, else the longest matching prefix."""
        exact = self.channels.get(channel)
        if exact is not None or not self.prefixes:
            return exact
        best: _Sub | None = None
        size = -1
        for name, sub in self.prefixes.items():
            if len(name) > size and channel.startswith(name):
                best, size = sub, len(name)
        return best

    def _unsubscribe(self, channel: str) -> None:
        sub = self.channels.get(channel)
        if sub is None or sub.implicit:
            return  # implicit sub= channels cannot be removed (§8.3)
        self._ctx.router.unsubscribe(channel, self)  # first: what was published before it is still written
        del self.channels[channel]
        self._expect.pop(channel, None)
        self._seen.pop(channel, None)
        if self._ctx.stats is not None:
            self._ctx.stats.unsubscribed(channel, self.kind)

    def origin_close(self, code: int | None, reason: str) -> None:
        """The origin closed (WebSocket close, or a WebSocket-over-HTTP CLOSE event)."""
        self._flush_then(lambda: self.client.close(code, reason) if self.client is not None else None)

    def origin_disconnect(self) -> None:
        """DISCONNECT from the origin, or its connection lost: drop the client."""
        if self.client is not None:
            self.client.drop()

    def _flush_then(self, action: Callable[[], object]) -> None:
        queue = self.queue
        if queue is None or not len(queue):
            action()
        else:
            # close after what is queued: poll on the next turns until the queue is drained
            def again() -> None:
                if self.done:
                    return
                if len(queue) and not queue.paused:
                    self._ctx.clock.callLater(0, again)
                elif len(queue):
                    self._ctx.clock.callLater(0.05, again)
                else:
                    action()

            self._ctx.clock.callLater(0, again)

    # from the client ---------------------------------------------------------------------

    def client_message(self, opcode: int, payload: bytes) -> None:
        if self.detached or self.origin is None:
            return
        self.origin.client_message(opcode, payload)

    def client_closed(self, code: int | None, reason: bytes, clean: bool) -> None:
        """The client closed the connection (a close frame) or vanished (no close frame)."""
        origin = self.origin
        self.end()
        if origin is None or self.detached:
            return
        if code is None and not clean:
            origin.client_gone()
        else:
            origin.client_closed(code, reason)

    # published --------------------------------------------------------------------------

    def deliver(self, publication: Publication, channel: str) -> None:
        fmt = publication.item.ws_message
        if fmt is None or self.done or self.queue is None:
            return
        sub = self.channels.get(channel)
        if sub is None:
            sub = self._subscription(channel)
            if sub is None:
                return
        if self._expect and channel in self._expect and not self._admit(publication, channel):
            return
        if sub.filters and not should_deliver(
            sub.filters, sub_meta=self.meta, publish_meta=publication.item.meta, subscribed_channels=self.channels
        ):
            return
        if fmt.action == "refresh":
            # Pushpin 1.38: a WebSocket-over-HTTP origin is asked now (a plain WebSocket: nothing)
            refresh = getattr(self.origin, "refresh", None)
            if refresh is not None:
                refresh()
            return
        if fmt.action == "close":
            code = fmt.close_code if fmt.close_code is not None and 1000 <= fmt.close_code <= 4999 else None
            self._flush_then(lambda: self.client.close(code, fmt.close_reason or "") if self.client is not None else None)
            return
        if fmt.action != "send" or fmt.content is None:
            return  # hint: nothing to do for WebSockets; ping/pong without content: nothing sent (observed)
        if fmt.content_filters is not None and tuple(fmt.content_filters) != sub.content_filters:
            self._log.warn("ws {conn} on {channel}: content filter mismatch, closing", conn=self.conn_id, channel=channel)
            if self.client is not None:
                self.client.close(None, "")
            return
        if sub.content_filters:
            try:
                content = apply_content_filters(sub.content_filters, fmt.content, sub_meta=self.meta, prev_ids={})
            except FilterError as e:
                self._log.warn("ws {conn} on {channel}: {why}", conn=self.conn_id, channel=channel, why=e)
                return
            self._send(_MESSAGE_TYPES[fmt.type], content, channel)
        elif fmt.type in ("ping", "pong"):
            self._send(_MESSAGE_TYPES[fmt.type], fmt.content, channel)
        else:
            if self.queue.offer(publication.ws_frame, channel):
                self._ctx.counters.delivered(1)
            self._last_write = self._ctx.clock.seconds()

    def deliver_run(self, publications: "list[Publication]", channel: str) -> None:
        """
        Several publishes of C{channel} handled in one reactor turn: consecutive plain
        C{ws-message} sends (text or binary, no content filter) go out joined, in one write;
        anything that makes an item differ (a subscription filter, a queue that is holding
        messages, a close, a ping or pong, a content-filter check) is handled by L{deliver}
        item by item, from that item on, so the outcome is the same as one publish at a time.
        """
        queue = self.queue
        sub = self.channels.get(channel) or self._subscription(channel)
        if self.done or queue is None or sub is None or channel in self._expect or sub.filters or sub.content_filters or len(queue) or queue.paused or queue.overflowed:
            for publication in publications:
                self.deliver(publication, channel)
            return
        data, count, rest = plain_part(publications, _plain_frame)
        if count:
            if queue.offer_run(data, count, channel):
                self._ctx.counters.delivered(count)
            self._last_write = self._ctx.clock.seconds()
        for publication in publications[rest:]:
            self.deliver(publication, channel)

    # keep-alive and delayed messages ------------------------------------------------------

    def _set_keep_alive(self, message: KeepAlive) -> None:
        self._cancel(self._keep_alive_call)
        self._keep_alive_call = None
        if not message.content:
            self._keep_alive = None  # no content: keep-alive off
            return
        self._keep_alive = message
        self._keep_alive_call = self._ctx.clock.callLater(max(message.timeout, 1), self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        ka = self._keep_alive
        self._keep_alive_call = None
        if ka is None or self.done:
            return
        timeout = max(ka.timeout, 1)
        if self.queue is not None and self.queue.overflowed:
            self._keep_alive_call = self._ctx.clock.callLater(timeout, self._keep_alive_due)
            return  # the client is behind already: no keep-alive to drop
        if ka.mode == "idle":
            idle = self._ctx.clock.seconds() - self._last_write
            if idle < timeout:
                self._keep_alive_call = self._ctx.clock.callLater(timeout - idle, self._keep_alive_due)
                return
        self._send(_MESSAGE_TYPES.get(ka.message_type, OPCODE_TEXT), ka.content or b"")
        self._keep_alive_call = self._ctx.clock.callLater(timeout, self._keep_alive_due)

    def _send_delayed(self, message: SendDelayed) -> None:
        self._cancel(self._delayed_call)
        self._delayed = (_MESSAGE_TYPES.get(message.message_type, OPCODE_TEXT), message.content)
        self._delayed_call = self._ctx.clock.callLater(max(message.timeout, 0), self._flush_delayed)

    def _flush_delayed(self) -> None:
        self._cancel(self._delayed_call)
        self._delayed_call = None
        delayed, self._delayed = self._delayed, None
        if delayed is not None:
            self._send(*delayed)

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    # reliable mode ------------------------------------------------------------------------

    def _sequence(self, channel: str, prev_id: str) -> None:
        """
        A C{subscribe} with C{prev-id}: the channel is sequenced from C{prev_id} on (a
        recovery's answer moves the position this way too). Only an origin that can be asked
        again (WebSocket-over-HTTP) gets reliable mode; for another the C{prev-id} is ignored.
        """
        if getattr(self.origin, "recover", None) is None:
            self._log.info("ws {conn}: prev-id on {channel} ignored: reliable mode needs a WebSocket-over-HTTP origin", conn=self.conn_id, channel=channel)
            return
        self._expect[channel] = prev_id
        self._seen.setdefault(channel, deque(maxlen=SEEN_MAX))

    def _admit(self, publication: Publication, channel: str) -> bool:
        """Reliable mode: whether C{publication} goes out now (the position moves on to its id) or waits, is dropped or is recovered."""
        item = publication.item
        if self._recovering:
            if len(self._held) < HELD_MAX:
                self._held.append((publication, channel))
            else:
                self._again = True
            return False
        seen = self._seen[channel]
        if item.id is not None and (item.id == self._expect[channel] or item.id in seen):
            self._ctx.on_drop(self.conn_id, channel, f"duplicate id {item.id}")
            return False
        queue = self.queue
        if self._behind or (queue is not None and len(queue) >= self._ctx.queue_limit):
            # the client is too slow: what it cannot take now (gaps included) is asked for once it has read
            self._behind = True
            return False
        if item.prev_id is not None and item.prev_id != self._expect[channel]:
            self._log.info("ws {conn}: gap on {channel} (expected prev-id {expected}, got {got}), recovering",
                           conn=self.conn_id, channel=channel, expected=self._expect[channel], got=item.prev_id)
            self._recover((publication, channel))
            return False
        if item.id is not None:
            self._expect[channel] = item.id
            seen.append(item.id)
        return True

    def _catch_up(self) -> None:
        """A slow reader has read something: once its queue is empty, recover what it was not given."""
        self._catch_up_call = None
        if self.done or not self._behind or (self.queue is not None and len(self.queue)):
            return
        self._behind = False
        if not self._recovering:
            self._recover(None)
        else:
            self._again = True

    def _recover(self, first: "tuple[Publication, str] | None") -> None:
        """Ask the origin for everything after each sequenced channel's position; hold what is published meanwhile."""
        self._recovering = True
        self._held = [first] if first is not None else []
        self._again = False
        self.recoveries += 1
        self._ctx.counters.recoveries += 1
        prefix = self.prefix
        last = {name[len(prefix):] if prefix and name.startswith(prefix) else name: id for name, id in self._expect.items()}
        recover = getattr(self.origin, "recover")
        d = recover(last)
        d.addCallbacks(self._recovered, self._recovery_failed)

    def _recovered(self, _: object) -> None:
        """The origin's answer has been applied (its messages queued, positions moved on): deliver what was held and follows on."""
        if self.done:
            return
        self._recovering = False
        held, self._held = self._held, []
        for publication, channel in held:
            item = publication.item
            expected = self._expect.get(channel)
            if self._recovering or expected is None or item.prev_id is None or item.prev_id == expected:
                self.deliver(publication, channel)  # while a new recovery is out, this holds it again
            elif item.id is not None and item.id not in self._seen.get(channel, ()):
                self._ctx.on_drop(self.conn_id, channel, f"superseded by recovery (id {item.id})")
        if self._again and not self._recovering and not self.done:
            self._recover(None)

    def _recovery_failed(self, failure: Any) -> None:
        """The origin could not be asked: close the client rather than leave it with a gap."""
        self._recovering = False
        self._held = []
        if self.done:
            return
        self._log.warn("ws {conn}: recovery from the origin failed ({why}), closing", conn=self.conn_id, why=failure.getErrorMessage())
        if self.client is not None:
            self.client.close(CLOSE_RECOVERY_FAILED, "reliable delivery: could not recover missed messages")

    # ending ------------------------------------------------------------------------------

    def end(self) -> None:
        """Release every subscription and timer; idempotent."""
        if self.done:
            return
        self.done = True
        router = self._ctx.router
        stats = self._ctx.stats
        for channel in self.channels:
            router.unsubscribe(channel, self)
            if stats is not None:
                stats.unsubscribed(channel, self.kind)
        for prefix in self.prefixes:
            router.unsubscribe_prefix(prefix, self)
        for call in (self._keep_alive_call, self._delayed_call, self._drain_timer, self._drain_call, self._catch_up_call):
            self._cancel(call)
        self._keep_alive_call = self._delayed_call = self._drain_timer = self._drain_call = self._catch_up_call = None
        self._held = []
        if self.queue is not None:
            self.queue.stopProducing()
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end(self)

    def pending_dropped(self, channel: str, count: int) -> None:
        """It ended with C{count} messages on C{channel} still waiting to be written to it (L{pushpin_tx.core.pending}): each is a drop."""
        for _ in range(count):
            self._ctx.on_drop(self.conn_id, channel, "connection closed")

    def __repr__(self) -> str:
        return f"<WsSession {self.conn_id} channels={list(self.channels)}>"


#: the sessions' preformatted info lines (the subscribe line, written for every WebSocket
#: opened): one event shape, built once, in the class's log namespace (as self._log would
#: give, without a Logger made per line: twisted's Logger.__get__ makes one per access)
_LINES = InfoLines(WsSession._log)


def _plain_frame(publication: "Publication") -> Any:
    """A publication's frame for a run (L{plain_part}): None to skip, PER_ITEM for a close, ping, pong or content-filter check."""
    fmt = publication.item.ws_message
    if fmt is None:
        return None
    if fmt.action != "send" or fmt.content_filters is not None or fmt.type in ("ping", "pong"):
        return PER_ITEM
    return publication.ws_frame if fmt.content is not None else None
