# -*- test-case-name: tests.core.test_hold -*-
"""
Held HTTP requests: what a connection does after the origin said C{Grip-Hold}.

A L{ResponseHold} (long-poll) waits for one C{http-response} publish, or for its timeout,
and answers once. A L{StreamHold} sends the origin's initial response at once, then writes
each C{http-stream} publish as it arrives, keep-alive data when idle, and ends on
C{action: close}. Both subscribe to the router on start and release every subscription
and timer the moment they end, whichever way they end (answered, timed out, client gone).

They talk to the client through a small L{HttpSink} (a twisted.web request in production,
a recorder in tests), so all the GRIP behaviour here is testable on a C{Clock}.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pushpin_tx.core.delivery import OVERFLOW_DRAIN_TIMEOUT, DeliveryQueue
from pushpin_tx.protocol.filters import FilterError, apply_content_filters, content_filters_of, should_deliver
from pushpin_tx.protocol.respond import RespondError, merge_response
from pushpin_tx.core.router import PER_ITEM, plain_part

if TYPE_CHECKING:
    from pushpin_tx.protocol.grip import Channel, Instruct
    from pushpin_tx.core.router import ChannelRouter, Publication
    from pushpin_tx.core.stats import Counters
    from pushpin_tx.core.stats_feed import StatsPublisher

__all__ = ["HttpSink", "ResponseHold", "StreamHold", "HoldContext", "CHUNKED_THRESHOLD"]

#: Pushpin sends a held response with Content-Length up to this size, chunked above (§5.3).
CHUNKED_THRESHOLD = 8192


class HttpSink(Protocol):
    """The client side of a held request."""

    @property
    def chunked(self) -> int:
        """Whether bytes written after the head are HTTP/1.1 chunks (else raw, HTTP/1.0): twisted.web's 0 or 1."""

    def send_head(self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        """Write the status line and headers; C{length} None means chunked/close-delimited."""

    def write_framed(self, data: bytes) -> None:
        """Write bytes already framed for this connection (a chunk, or raw for HTTP/1.0)."""

    def write_body(self, data: bytes) -> None:
        """Write body bytes, framing them as needed."""

    def finish(self) -> None:
        """End the response (the terminating chunk for HTTP/1.1)."""

    def abort(self) -> None:
        """Drop the connection."""

    def close(self) -> None:
        """Close the connection once what was written is sent, without ending the response:
        the client sees the stream cut short (no last chunk), not a complete one."""

    def register_producer(self, producer: DeliveryQueue) -> None:
        """Let the connection pause C{producer} while its buffer is full."""

    def unregister_producer(self) -> None: ...


class HoldContext:
    """What every hold needs from the server: shared, made once."""

    __slots__ = ("router", "clock", "counters", "queue_limit", "overflow", "on_drop", "random", "stats", "subscription_max")

    def __init__(
        self,
        router: "ChannelRouter",
        clock: IReactorTime,
        counters: "Counters",
        *,
        queue_limit: int,
        overflow: str,
        on_drop: Callable[[str, str, str], None],
        random_: Callable[[], float] = random.random,
        stats: "StatsPublisher | None" = None,
        subscription_max: int = 20,
    ) -> None:
        """
        @param on_drop: C{on_drop(conn_id, channel, reason)} counts and logs a dropped message.
        @param random_: jitter source for keep-alive timing (Pushpin waits C{timeout - rand(0..1)}).
        """
        self.router = router
        self.clock = clock
        self.counters = counters
        self.queue_limit = queue_limit
        self.overflow = overflow
        self.on_drop = on_drop
        self.random = random_
        self.stats = stats
        #: connection_subscription_max: the most channels one connection may hold
        self.subscription_max = subscription_max


class _Hold:
    """Subscription bookkeeping shared by both hold kinds."""

    _log = Logger()
    kind = ""

    def __init__(self, ctx: HoldContext, sink: HttpSink, instruct: "Instruct", conn_id: str) -> None:
        self._ctx = ctx
        self._sink = sink
        self.instruct = instruct
        self.conn_id = conn_id
        # (one pass over the channels, not three comprehensions: every held connection's set-up)
        channels: dict[str, "Channel"] = {}
        prefixes: dict[str, "Channel"] = {}
        expect: dict[str, str] = {}
        for c in instruct.channels:
            if c.prefix:
                prefixes[c.name] = c
            else:
                channels[c.name] = c
            if c.prev_id is not None:
                expect[c.name] = c.prev_id
        self.channels = channels
        #: prefix (wildcard) subscriptions, by prefix: items of every channel starting with it
        self.prefix_channels = prefixes
        #: reliable delivery (§7): each channel's position, the prev-id its next item must carry;
        #: it moves on with every item that follows on, delivered or withheld by a filter
        self._expect = expect
        self.meta = dict(instruct.meta) if instruct.meta else {}
        self.done = False
        self.started_at = ctx.clock.seconds()
        #: re-asks the origin with Grip-Last headers {channel: last id} (set by the acceptor)
        self.retry: Callable[[dict[str, str]], object] | None = None
        #: fetches a next link with Grip-Last headers; fires with an Instruct or None (acceptor)
        self.fetch_next: Callable[[str, dict[str, str]], Deferred] | None = None
        #: the route id, for the console and stats
        self.route_id: str | None = None
        #: the route's channel prefix (set by the acceptor): build-id's C{%(channel)s} and
        #: Grip-Last name channels as the origin does, without it (as Pushpin's C{c.name})
        self.channel_prefix = ""

    def _subscribe(self) -> None:
        router = self._ctx.router
        stats = self._ctx.stats
        for name in self.channels:
            router.subscribe(name, self)
            if stats is not None:
                stats.subscribed(name, self.kind)
        for name in self.prefix_channels:
            router.subscribe_prefix(name, self)

    def _release(self) -> None:
        """Unsubscribe from everything; idempotent."""
        if self.done:
            return
        self.done = True
        router = self._ctx.router
        stats = self._ctx.stats
        for name in self.channels:
            router.unsubscribe(name, self)
            if stats is not None:
                stats.unsubscribed(name, self.kind)
        for name in self.prefix_channels:
            router.unsubscribe_prefix(name, self)
        self._cancel_timers()

    def _subscription(self, channel: str) -> "Channel | None":
        """
        The subscription a publish to C{channel} came through: the exact one, else the longest
        prefix subscription the name starts with (C{None} once it is gone).
        """
        exact = self.channels.get(channel)
        if exact is not None or not self.prefix_channels:
            return exact
        best = None
        for name, sub in self.prefix_channels.items():
            if channel.startswith(name) and (best is None or len(name) > len(best.name)):
                best = sub
        return best

    def _cancel_timers(self) -> None:
        pass

    def deliver(self, publication: "Publication", channel: str) -> None:
        """Take one published item for C{channel} (the router's C{Subscriber}); each kind of hold its own way."""
        raise NotImplementedError

    def _passes(self, publication: "Publication", channel: str) -> bool:
        sub = self.channels.get(channel)
        if sub is None:
            sub = self._subscription(channel)
            if sub is None:
                return False
        filters = sub.filters
        if not filters:
            return True
        return should_deliver(
            filters, sub_meta=self.meta, publish_meta=publication.item.meta, subscribed_channels=self.channels
        )

    def _prev_ids(self, publication: "Publication | None" = None, channel: str = "") -> dict[str, str]:
        """
        Every channel's current position (build-id's C{%(channel)s}, Grip-Last): the last id
        each channel moved on to, not the prev-id the subscription started at, and for the
        item being delivered its own id (as Pushpin, which updates the position first).
        """
        ids = dict(self._expect)
        if publication is not None and publication.item.id is not None:
            ids[channel] = publication.item.id
        prefix = self.channel_prefix
        if prefix:
            return {name[len(prefix):] if name.startswith(prefix) else name: id for name, id in ids.items()}
        return ids

    def _follows_on(self, publication: "Publication", channel: str) -> bool:
        """
        Pushpin's per-connection check (§7): whether the item follows the channel's position;
        if so the position moves on to its id, before any filter decides on delivery (an item a
        filter withholds still counts, so its successor is no gap).
        """
        expected = self._expect.get(channel)
        if expected is None:
            return True
        item = publication.item
        if item.prev_id is not None and item.prev_id != expected:
            return False
        if item.id is not None:
            self._expect[channel] = item.id
        return True

    def client_gone(self) -> None:
        """The client disconnected: release everything at once."""
        self._release()

    def shut_down(self) -> None:
        """The server is stopping: end this hold cleanly (see subclasses)."""
        self._release()

    def __repr__(self) -> str:
        prefixes = f" prefixes={list(self.prefix_channels)}" if self.prefix_channels else ""
        return f"<{type(self).__name__} {self.conn_id} channels={list(self.channels)}{prefixes}>"


class ResponseHold(_Hold):
    """A long-poll: answered by the first matching C{http-response} publish or by its timeout."""

    kind = "response"

    def __init__(self, ctx: HoldContext, sink: HttpSink, instruct: "Instruct", conn_id: str) -> None:
        super().__init__(ctx, sink, instruct, conn_id)
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        """Subscribe and arm the timeout."""
        self._subscribe()
        self._timer = self._ctx.clock.callLater(self.instruct.timeout, self._timed_out)

    def _cancel_timers(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        response = self.instruct.response
        self._answer(response.code, response.reason, list(response.headers), response.body)

    def shut_down(self) -> None:
        """Server stopping: answer now with the origin's timeout response."""
        self._timed_out()

    def update_key(self) -> str | None:
        """
        What Pushpin groups this hold's low-priority update under (its next link, none for a
        long-poll; L{pushpin_tx.core.first_subscription.UpdateLimiter}), or C{None} when
        there is nothing to update: a long-poll always re-asks, while it can.
        """
        if self.done or self.retry is None:
            return None
        link = self.instruct.next_link
        return link.uri if link is not None else ""

    def resync(self, why: str = "recover requested") -> None:
        """
        C{/recover/}, and the update after a first subscription: ask the origin again with the
        original request, with Grip-Last for every channel with a prev-id.
        """
        if self.done or self.retry is None:
            return
        self._log.debug("{conn}: {why}, retrying to origin", conn=self.conn_id, why=why)
        self._release()
        self._ctx.counters.recoveries += 1
        self.retry(self._prev_ids())

    def deliver(self, publication: "Publication", channel: str) -> None:
        """Answer with C{publication}'s C{http-response} format, if it has one for us."""
        fmt = publication.item.http_response
        if fmt is None or self.done:
            return
        expected = self._expect.get(channel)
        gap = not self._follows_on(publication, channel)
        if not gap and (fmt.action == "close" or not self._passes(publication, channel)):
            return  # "close" is accepted on http-response and does nothing (as in Pushpin)
        if fmt.action == "hint" or gap:
            # §5.3/§7: ask the origin instead, with Grip-Last for every channel with a prev-id
            if self.retry is not None:
                self._log.info(
                    "{conn}: {why} on {channel}, retrying to origin",
                    conn=self.conn_id,
                    why="hint" if fmt.action == "hint" else f"gap (expected prev-id {expected})",
                    channel=channel,
                )
                self._release()
                self._ctx.counters.recoveries += 1
                self.retry(self._prev_ids())
            return
        own = self._subscription(channel)
        own_filters = content_filters_of(own.filters) if own is not None else ()
        if fmt.content_filters is not None and tuple(fmt.content_filters) != own_filters:
            self._fail("content filter mismatch", channel)
            return
        response = self.instruct.response
        try:
            code, reason, headers, body = merge_response(
                response.code, response.reason, response.headers, response.body, fmt
            )
            if own_filters:
                body = apply_content_filters(own_filters, body, sub_meta=self.meta, prev_ids=self._prev_ids(publication, channel))
        except (RespondError, FilterError) as e:
            self._fail(str(e), channel)
            return
        self._ctx.counters.delivered(1)
        self._answer(code, reason, headers, body)

    def _fail(self, why: str, channel: str) -> None:
        self._log.warn("response hold {conn} on {channel} failed: {why}", conn=self.conn_id, channel=channel, why=why)
        self._answer(502, b"Bad Gateway", [(b"Content-Type", b"text/plain")], b"Error while proxying to origin.\n")

    def _answer(self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.done:
            return
        self._release()
        sink = self._sink
        if len(body) <= CHUNKED_THRESHOLD:
            sink.send_head(code, reason, headers, len(body))
        else:
            sink.send_head(code, reason, headers, None)
        if body:
            sink.write_body(body)
        sink.finish()


class StreamHold(_Hold):
    """An HTTP stream (plain or C{text/event-stream}) fed by C{http-stream} publishes."""

    kind = "stream"

    def __init__(self, ctx: HoldContext, sink: HttpSink, instruct: "Instruct", conn_id: str) -> None:
        super().__init__(ctx, sink, instruct, conn_id)
        self.queue = DeliveryQueue(
            self._write,
            limit=ctx.queue_limit,
            policy=ctx.overflow,
            listener=self,
        )
        # a slow reader's overflowed queue (policy "disconnect"): None, "recover" or "close"
        self._overflow: str | None = None
        self._drain_timer: IDelayedCall | None = None
        self._drain_call: IDelayedCall | None = None
        self._keep_alive: IDelayedCall | None = None
        self._last_write = 0.0
        self._closing = False
        self._ended_by_close = False  # a published close ended it: what follows is not for it
        # reliable streaming (§7): recovery state. One recovery at a time; each has a number,
        # and only the answer to the current one is written (never a page twice).
        self._recovering = False
        self._recovery = 0
        self._waiting: list[tuple["Publication", str]] = []
        self._last_publish = 0.0
        self._link_timer: IDelayedCall | None = None
        self._content_filters = {
            name: content_filters_of(c.filters) for name, c in self.channels.items() if c.filters
        } if any(c.filters for c in instruct.channels) else {}

    def start(self, initial_body: bytes = b"", *, head_sent: bool = False) -> None:
        """
        Send the initial response (unless the proxy already relayed it), then subscribe.

        @param initial_body: more of the origin's body to write first.
        """
        sink = self._sink
        response = self.instruct.response
        if not head_sent:
            sink.send_head(response.code, response.reason, list(response.headers), None)
            initial_body = response.body + initial_body
        if initial_body:
            sink.write_body(initial_body)
        sink.register_producer(self.queue)
        self._subscribe()
        self._last_write = self._last_publish = self._ctx.clock.seconds()
        if self.instruct.keep_alive is not None:
            self._arm_keep_alive()
        self._arm_link_timer()

    def _dropped(self, channel: str, reason: str) -> None:
        self._ctx.on_drop(self.conn_id, channel, reason)

    def _write(self, data: bytes) -> None:
        self._sink.write_framed(data)
        if self._closing and not len(self.queue):
            self._ctx.clock.callLater(0, self._close)

    def deliver(self, publication: "Publication", channel: str) -> None:
        """Write C{publication}'s C{http-stream} content, or end the stream on C{close}."""
        fmt = publication.item.http_stream
        if fmt is None or self.done or self._closing:
            return
        if self._overflow is not None:
            self._refuse(publication, channel)
            return
        if self._recovering:
            if len(self._waiting) < 100:  # replayed after the fetch if they follow on
                self._waiting.append((publication, channel))
            else:
                self._ctx.on_drop(self.conn_id, channel, "recovery queue full")
            return
        self._last_publish = self._ctx.clock.seconds()
        item = publication.item
        expected = self._expect.get(channel)
        if not self._follows_on(publication, channel):
            self._recover(f"gap on {channel} (expected prev-id {expected}, got {item.prev_id})", (publication, channel))
            return
        if not self._passes(publication, channel):
            return  # withheld by a filter; its id still moved the position on
        if fmt.action == "hint":
            self._recover(f"hint on {channel}")
            return
        if fmt.action == "close":
            self._ended_by_close = True
            if len(self.queue):
                self._closing = True  # end after what is already queued
            else:
                self._close()
            return
        filters = self._content_filters.get(channel)
        if self.prefix_channels and channel not in self.channels:
            own = self._subscription(channel)
            filters = content_filters_of(own.filters) if own is not None and own.filters else None
        if fmt.content_filters is not None and tuple(fmt.content_filters) != (filters or ()):
            self._log.warn("stream {conn} on {channel}: content filter mismatch, closing", conn=self.conn_id, channel=channel)
            self._close()
            return
        if filters:
            try:
                content = apply_content_filters(filters, fmt.content, sub_meta=self.meta, prev_ids=self._prev_ids(publication, channel))
            except FilterError as e:
                self._log.warn("stream {conn} on {channel}: {why}, closing", conn=self.conn_id, channel=channel, why=e)
                self._close()
                return
            if not content:
                return
            data = b"%x\r\n%b\r\n" % (len(content), content) if self._sink.chunked else content
        elif not fmt.content:
            return  # an empty chunk would end the response
        else:
            data = publication.stream_chunk if self._sink.chunked else publication.stream_content
        if self.queue.offer(data, channel):
            self._ctx.counters.delivered(1)
        elif expected is not None and self._overflow == "recover":
            self._expect[channel] = expected  # it overflowed the queue: the recovery asks for it again
        self._last_write = self._ctx.clock.seconds()

    def deliver_run(self, publications: "list[Publication]", channel: str) -> None:
        """
        Several publishes of C{channel} handled in one reactor turn: when nothing makes
        them differ per item (no filters, no prev-id to check, plain content, nothing
        queued) their chunks go out joined, in one write; otherwise one by one.
        """
        queue = self.queue
        if (
            self.done
            or self._closing
            or self._recovering
            or self._overflow is not None
            or len(queue)
            or queue.paused
            or channel in self._expect
            or (own := self.channels.get(channel)) is None
            or own.filters
        ):
            for publication in publications:
                self.deliver(publication, channel)
            return
        # chunks joined for HTTP/1.1; the contents joined for an unframed body (HTTP/1.0, HTTP/2)
        data, count, rest = plain_part(publications, _plain_chunk if self._sink.chunked else _plain_content)
        if count:
            if self.queue.offer_run(data, count, channel):
                self._ctx.counters.delivered(count)
            self._last_publish = self._last_write = self._ctx.clock.seconds()
        for publication in publications[rest:]:  # a close, hint or content-filter check on
            self.deliver(publication, channel)

    # keep-alive -------------------------------------------------------------------------

    def _delay(self) -> float:
        timeout = max(self.instruct.keep_alive.timeout, 1)  # type: ignore[union-attr]
        return max(timeout - self._ctx.random(), 0.0)

    def _arm_keep_alive(self, delay: float | None = None) -> None:
        self._keep_alive = self._ctx.clock.callLater(self._delay() if delay is None else delay, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self._keep_alive = None
        ka = self.instruct.keep_alive
        assert ka is not None
        if ka.mode == "idle":
            idle_for = self._ctx.clock.seconds() - self._last_write
            wait = self._delay()
            if idle_for < wait:
                # Data went out meanwhile: wait for the rest of the idle period.
                self._arm_keep_alive(wait - idle_for)
                return
        if self._overflow is not None:
            self._arm_keep_alive()  # the client is behind already: no keep-alive to drop
            return
        data = b"%x\r\n%b\r\n" % (len(ka.data), ka.data) if self._sink.chunked else ka.data
        self.queue.offer(data, "")
        self._last_write = self._ctx.clock.seconds()
        self._arm_keep_alive()

    def _cancel_timers(self) -> None:
        for call in (self._keep_alive, self._link_timer, self._drain_timer, self._drain_call):
            if call is not None and call.active():
                call.cancel()
        self._keep_alive = self._link_timer = self._drain_timer = self._drain_call = None

    # a slow reader (policy "disconnect") ------------------------------------------------------

    def _overflowed(self, channel: str) -> str:
        """
        The queue is full: stop delivering. A stream that can recover (a next link, and a
        position on the channel) fetches what it missed once the client has read what is
        queued; any other stream is closed then, so that the client reconnects (an
        EventSource does so by itself, with C{Last-Event-ID}). Never a gap the client cannot see.
        """
        queued = len(self.queue)
        if self.instruct.next_link is not None and self.fetch_next is not None and channel in self._expect:
            self._overflow = "recover"
            then = "recovering from the origin"
        else:
            self._overflow = "close"
            then = "closing the connection"
        self._log.warn(
            "{conn}: slow reader, {queued} messages queued on {channel}: new ones dropped, {then} once they are read",
            conn=self.conn_id, queued=queued, channel=channel, then=then,
        )
        self._drain_timer = self._ctx.clock.callLater(OVERFLOW_DRAIN_TIMEOUT, self._drain_timed_out)
        return "queue full, recovering" if self._overflow == "recover" else "queue full, closing"

    def _refuse(self, publication: "Publication", channel: str) -> None:
        """An item published while the queue is overflowed: dropped, counted and logged."""
        if not self._passes(publication, channel):
            return
        if self._overflow == "recover" and channel not in self._expect:
            # nothing to recover this channel's items from: close instead
            self._log.warn("{conn}: slow reader, items on {channel} cannot be recovered: closing the connection once drained", conn=self.conn_id, channel=channel)
            self._overflow = "close"
        self.queue.refuse(channel)

    def _drained(self) -> None:
        """The overflowed queue is written out (called inside the transport's resumeProducing)."""
        if self._drain_call is None and not self.done:
            self._drain_call = self._ctx.clock.callLater(0, self._after_drain)

    def _after_drain(self) -> None:
        self._drain_call = None
        if self.done or self._overflow is None:
            return
        if self._drain_timer is not None and self._drain_timer.active():
            self._drain_timer.cancel()
        self._drain_timer = None
        mode, self._overflow = self._overflow, None
        if mode == "close":
            # Cut off, not ended: no last chunk, so that no client takes the stream for
            # complete; an EventSource reconnects with Last-Event-ID.
            self._log.info("{conn}: slow reader has read its queue, closing the connection", conn=self.conn_id)
            self._release()
            self._sink.unregister_producer()
            self._sink.close()
            return
        if self.instruct.next_link is None or self.fetch_next is None:
            self._close()  # the link went away meanwhile: nothing to recover from
            return
        self.queue.reset_overflow()
        self._recover("slow reader caught up")

    # the queue's listener (core.delivery.QueueListener)
    queue_dropped = _dropped
    queue_overflowed = _overflowed
    queue_drained = _drained

    def _drain_timed_out(self) -> None:
        self._drain_timer = None
        if self.done:
            return
        self._log.warn(
            "{conn}: slow reader did not read its {n} queued messages within {s:.0f} s, dropping the connection",
            conn=self.conn_id, n=len(self.queue), s=OVERFLOW_DRAIN_TIMEOUT,
        )
        self.queue.stopProducing()
        self._release()
        self._sink.abort()

    # recovery through the next link (§5.4, §7) -----------------------------------------------

    def _arm_link_timer(self, delay: float | None = None) -> None:
        if self._link_timer is not None and self._link_timer.active():
            self._link_timer.cancel()
        self._link_timer = None
        link = self.instruct.next_link
        if link is not None and not self.done:
            self._link_timer = self._ctx.clock.callLater(link.timeout if delay is None else delay, self._link_due)

    def _link_due(self) -> None:
        self._link_timer = None
        link = self.instruct.next_link
        if link is None or self.done or self._recovering or self._overflow is not None:
            return  # the recovery in progress (or due once a slow reader drains) re-arms it
        idle = self._ctx.clock.seconds() - self._last_publish
        if idle < link.timeout:
            self._arm_link_timer(link.timeout - idle)
            return
        self._recover(f"no publish for {link.timeout} s")

    def _recover(self, why: str, first: "tuple[Publication, str] | None" = None, waiting: "list[tuple[Publication, str]] | None" = None) -> None:
        """Fetch the next link with Grip-Last, write its body, adopt its instructions."""
        link = self.instruct.next_link
        if link is None or self.fetch_next is None:
            if first is not None:  # no way to recover: deliver what came, as Pushpin does
                self._expect[first[1]] = first[0].item.id or self._expect[first[1]]
                self.deliver(*first)
            return
        if self._recovering:
            # One fetch at a time: a second one from the same position would write the same
            # page again (issue 15: a link timeout during a recovery's 503 retries did that).
            self._log.info("{conn}: {why}, recovery already in progress", conn=self.conn_id, why=why)
            if first is not None:
                self._waiting.append(first)
            return
        self._log.info("{conn}: {why}, fetching next link {uri}", conn=self.conn_id, why=why, uri=link.uri)
        self._recovering = True
        self._recovery += 1
        self._waiting = ([first] if first is not None else []) + (waiting or [])
        self._ctx.counters.recoveries += 1
        if self._link_timer is not None and self._link_timer.active():
            self._link_timer.cancel()
        self._link_timer = None
        d = self.fetch_next(link.uri, self._prev_ids())
        d.addCallbacks(self._recovered, self._recovery_failed, callbackArgs=(self._recovery,), errbackArgs=(self._recovery,))

    def _recovery_failed(self, failure: Any, number: int) -> None:
        """The fetch raised (not a refusal, which answers None): end the stream rather than stall it."""
        self._log.failure("{conn}: recovery failed", failure, conn=self.conn_id)
        if number == self._recovery and not self.done:
            self._recovering = False
            self._waiting = []
            self._close()

    def _recovered(self, instruct: "Instruct | None", number: int = 0) -> None:
        if number and number != self._recovery:
            self._log.warn("{conn}: answer to superseded recovery {n} ignored", conn=self.conn_id, n=number)
            return
        self._recovering = False
        waiting, self._waiting = self._waiting, []
        if self.done:
            return
        if instruct is None or instruct.hold not in (None, "stream"):
            if instruct is not None:
                self._log.warn("{conn}: Next link returned non-stream hold.", conn=self.conn_id)
            self._close()
            return
        body = instruct.response.body
        if body:
            # forced: the page is what fills the gap, it must not overflow a full queue itself
            self.queue.offer(b"%x\r\n%b\r\n" % (len(body), body) if self._sink.chunked else body, "", force=True)
            self._last_write = self._ctx.clock.seconds()
        self._adopt(instruct)
        if instruct.hold is None:
            if instruct.next_link is None:
                self._close()
                return
            # a page without a hold: Pushpin goes on proxying, the following link at once
            # (httpsession.cpp, tryProcessOutReq); what was published meanwhile waits for it
            self._recover("next link answered without a hold", waiting=waiting)
            return
        if instruct.next_link is None and any(c.prev_id is not None for c in instruct.channels):
            # §5.4: prev-ids without a next link could never recover; Pushpin ends the stream
            self._log.warn("{conn}: next link answer has prev-id but no next link, ending the stream", conn=self.conn_id)
            self._close()
            return
        for publication, channel in waiting:
            item = publication.item
            expected = self._expect.get(channel)
            if expected is None or item.prev_id is None or item.prev_id == expected:
                self.deliver(publication, channel)
            else:
                self._ctx.on_drop(self.conn_id, channel, f"superseded by recovery (id {item.id})")

    def _adopt(self, instruct: "Instruct") -> None:
        """Take on a next link's instructions: channels, prev-ids, the next link, keep-alive, sub meta."""
        # Pushpin replaces the whole instruct: its meta is the filters' sub meta from now on
        self.meta = dict(instruct.meta)
        router = self._ctx.router
        stats = self._ctx.stats
        if instruct.hold == "stream":
            new = {c.name: c for c in instruct.channels if not c.prefix}
            new_prefixes = {c.name: c for c in instruct.channels if c.prefix}
            for name in list(self.prefix_channels):
                if name not in new_prefixes:
                    router.unsubscribe_prefix(name, self)
            for name in new_prefixes:
                if name not in self.prefix_channels:
                    router.subscribe_prefix(name, self)
            self.prefix_channels = new_prefixes
            for name in list(self.channels):
                if name not in new:
                    router.unsubscribe(name, self)
                    if stats is not None:
                        stats.unsubscribed(name, self.kind)
                    self._expect.pop(name, None)
            for name, channel in new.items():
                if name not in self.channels:
                    router.subscribe(name, self)
                    if stats is not None:
                        stats.subscribed(name, self.kind)
                if channel.prev_id is not None:
                    self._expect[name] = channel.prev_id
            self.channels = new
            self._content_filters = {name: content_filters_of(c.filters) for name, c in new.items() if c.filters}
        self.instruct = instruct
        self._last_publish = self._ctx.clock.seconds()
        self._arm_link_timer()

    def _close(self) -> None:
        if self.done:
            return
        self._release()
        self._sink.unregister_producer()
        self._sink.finish()

    def client_gone(self) -> None:
        self.queue.stopProducing()
        super().client_gone()

    def pending_dropped(self, channel: str, count: int) -> None:
        """
        It left C{channel} with C{count} messages still waiting to be written to it
        (L{pushpin_tx.core.pending}): each is a drop, as what its queue held, unless a
        published close ended the stream (what follows a close is not for it).
        """
        if self._ended_by_close:
            return
        for _ in range(count):
            self.queue.refuse_closed(channel)

    def update_key(self) -> str | None:
        """
        What Pushpin groups this stream's low-priority update under: its next link; C{None}
        without one (Pushpin: "can't update without valid link").
        """
        link = self.instruct.next_link
        if self.done or link is None or self.fetch_next is None:
            return None
        return link.uri

    def resync(self, why: str = "recover requested") -> None:
        """
        C{/recover/}, and the update after a first subscription: fetch the next link now
        (streams without one have nothing to re-sync). A recovery in progress already fetches
        from the current position, and a slow reader recovers once it has drained.
        """
        if not self.done and not self._recovering and self._overflow is None and self.instruct.next_link is not None:
            self._recover(why)

    def shut_down(self) -> None:
        """Server stopping: end the stream cleanly after what is queued (the last chunk)."""
        if len(self.queue):
            self._closing = True
        else:
            self._close()


def _plain_chunk(publication: "Publication") -> Any:
    """A publication's chunk for a run (L{plain_part}): None to skip, PER_ITEM for a close, hint or content-filter check."""
    fmt = publication.item.http_stream
    if fmt is None:
        return None
    if fmt.action != "send" or fmt.content_filters is not None:
        return PER_ITEM
    return publication.stream_chunk if fmt.content else None


def _plain_content(publication: "Publication") -> Any:
    """As L{_plain_chunk}, for an unframed body (HTTP/1.0, an HTTP/2 stream): the content itself."""
    fmt = publication.item.http_stream
    if fmt is None:
        return None
    if fmt.action != "send" or fmt.content_filters is not None:
        return PER_ITEM
    return publication.stream_content if fmt.content else None
