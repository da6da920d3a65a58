# -*- test-case-name: tests.test_hold -*-
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
from typing import TYPE_CHECKING, Callable, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .delivery import DeliveryQueue
from .filters import FilterError, apply_content_filters, content_filters_of, should_deliver
from .respond import RespondError, merge_response

if TYPE_CHECKING:
    from .grip import Channel, Instruct
    from .router import ChannelRouter, Publication
    from .stats import Counters
    from .zmq_stats import StatsPublisher

__all__ = ["HttpSink", "ResponseHold", "StreamHold", "HoldContext", "CHUNKED_THRESHOLD"]

#: Pushpin sends a held response with Content-Length up to this size, chunked above (§5.3).
CHUNKED_THRESHOLD = 8192


class HttpSink(Protocol):
    """The client side of a held request."""

    #: whether bytes written after the head are HTTP/1.1 chunks (else raw, HTTP/1.0)
    chunked: bool

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
        self.channels: dict[str, "Channel"] = {c.name: c for c in instruct.channels}
        self.meta = dict(instruct.meta)
        self.done = False
        self.started_at = ctx.clock.seconds()

    def _subscribe(self) -> None:
        router = self._ctx.router
        stats = self._ctx.stats
        for name in self.channels:
            router.subscribe(name, self)
            if stats is not None:
                stats.subscribed(name, self.kind)

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
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        pass

    def _passes(self, publication: "Publication", channel: str) -> bool:
        filters = self.channels[channel].filters
        if not filters:
            return True
        return should_deliver(
            filters, sub_meta=self.meta, publish_meta=publication.item.meta, subscribed_channels=self.channels
        )

    def _prev_ids(self, publication: "Publication | None" = None, channel: str = "") -> dict[str, str]:
        """Ids for build-id: the subscription's prev-ids, advanced to the item being delivered
        (Pushpin renders C{%I} from the publish's own id)."""
        ids = {name: c.prev_id for name, c in self.channels.items() if c.prev_id is not None}
        if publication is not None and publication.item.id is not None:
            ids[channel] = publication.item.id
        return ids

    def client_gone(self) -> None:
        """The client disconnected: release everything at once."""
        self._release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.conn_id} channels={list(self.channels)}>"


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

    def deliver(self, publication: "Publication", channel: str) -> None:
        """Answer with C{publication}'s C{http-response} format, if it has one for us."""
        fmt = publication.item.http_response
        if fmt is None or self.done or fmt.action == "close" or not self._passes(publication, channel):
            return  # "close" is accepted on http-response and does nothing (as in Pushpin)
        if fmt.action == "hint":
            # Re-asking the origin (retry with Grip-Last) belongs to reliable delivery; until
            # then a hint leaves the hold waiting, as an unanswerable publish would.
            self._log.info("hint for {conn} on {channel} ignored: recovery not implemented", conn=self.conn_id, channel=channel)
            return
        own_filters = content_filters_of(self.channels[channel].filters)
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
            on_drop=self._dropped,
            on_overflow_disconnect=sink.abort,
        )
        self._keep_alive: IDelayedCall | None = None
        self._last_write = 0.0
        self._closing = False
        self._content_filters = {
            name: content_filters_of(c.filters) for name, c in self.channels.items() if c.filters
        }

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
        self._last_write = self._ctx.clock.seconds()
        if self.instruct.keep_alive is not None:
            self._arm_keep_alive()

    def _dropped(self, channel: str, reason: str) -> None:
        self._ctx.on_drop(self.conn_id, channel, reason)

    def _write(self, data: bytes) -> None:
        self._sink.write_framed(data)
        if self._closing and not len(self.queue):
            self._ctx.clock.callLater(0, self._close)

    def deliver(self, publication: "Publication", channel: str) -> None:
        """Write C{publication}'s C{http-stream} content, or end the stream on C{close}."""
        fmt = publication.item.http_stream
        if fmt is None or self.done or self._closing or not self._passes(publication, channel):
            return
        if fmt.action == "close":
            if len(self.queue):
                self._closing = True  # end after what is already queued
            else:
                self._close()
            return
        if fmt.action == "hint":
            self._log.info("hint for {conn} on {channel} ignored: next links not implemented", conn=self.conn_id, channel=channel)
            return
        filters = self._content_filters.get(channel)
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
        self._last_write = self._ctx.clock.seconds()

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
        data = b"%x\r\n%b\r\n" % (len(ka.data), ka.data) if self._sink.chunked else ka.data
        self.queue.offer(data, "")
        self._last_write = self._ctx.clock.seconds()
        self._arm_keep_alive()

    def _cancel_timers(self) -> None:
        if self._keep_alive is not None and self._keep_alive.active():
            self._keep_alive.cancel()
        self._keep_alive = None

    def _close(self) -> None:
        if self.done:
            return
        self._release()
        self._sink.unregister_producer()
        self._sink.finish()

    def client_gone(self) -> None:
        self.queue.stopProducing()
        super().client_gone()
