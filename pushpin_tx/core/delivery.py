# -*- test-case-name: tests.core.test_delivery -*-
"""
A bounded delivery queue between the channel router and one client connection.

Publishing must never wait for a slow reader, and one slow reader must never cost the
others anything: each connection gets its own queue, registered as the push producer of
its transport. While the transport drains, a delivery goes straight through (no copy, no
allocation); while the transport is paused the queue holds at most C{limit} messages, and
past that the overflow policy decides:

  - L{OVERFLOW_DISCONNECT} (C{delivery_overflow}'s default): the queue is I{overflowed}.
    Its owner is told once (C{on_overflow}) and says what it will do; from then on every new
    message is dropped (even once there is room again, so that no gap hides between
    delivered messages) while what is queued is still written; when the last of it is out,
    C{on_drained} lets the owner recover from the origin (and L{reset_overflow}) or close
    the connection. The client is never left connected with a gap it cannot see.
  - L{OVERFLOW_DROP} (only when configured): a full queue drops the new message and the
    connection carries on with a gap.

Nothing is ever dropped silently: every drop calls C{on_drop} (which counts and logs it with
the connection id and channel).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

from zope.interface import implementer
from twisted.internet.interfaces import IPushProducer

__all__ = ["DeliveryQueue", "QueueListener", "OVERFLOW_DROP", "OVERFLOW_DISCONNECT", "OVERFLOW_DRAIN_TIMEOUT"]

#: A full queue drops the new message (counted and logged) and keeps the connection.
OVERFLOW_DROP = "drop"
#: A full queue ends delivery on the connection: its owner recovers from the origin once
#: the queue is drained, or closes the connection so that the client reconnects.
OVERFLOW_DISCONNECT = "disconnect"
#: How long a slow reader whose queue overflowed may take to read what is queued before its
#: owner drops the connection (the client then reconnects, as it would after a close).
OVERFLOW_DRAIN_TIMEOUT = 60.0


class QueueListener(Protocol):
    """What a L{DeliveryQueue} tells its owner (C{on_drop}, C{on_overflow}, C{on_drained})."""

    def queue_dropped(self, channel: str, reason: str) -> None: ...

    def queue_overflowed(self, channel: str) -> str: ...

    def queue_drained(self) -> None: ...


class _Callbacks:
    """A L{QueueListener} made of the callables given to L{DeliveryQueue} one by one."""

    __slots__ = ("queue_dropped", "queue_overflowed", "queue_drained")

    def __init__(
        self,
        on_drop: Callable[[str, str], None],
        on_overflow: Callable[[str], str] | None,
        on_drained: Callable[[], None] | None,
    ) -> None:
        self.queue_dropped = on_drop
        # without one, the reason stays "queue full" (what it always is before an overflow)
        self.queue_overflowed = on_overflow if on_overflow is not None else _queue_full
        self.queue_drained = on_drained if on_drained is not None else _nothing


def _queue_full(channel: str) -> str:
    return "queue full"


def _nothing() -> None:
    pass


@implementer(IPushProducer)
class DeliveryQueue:
    """
    FIFO of already-framed bytes for one connection.

    @ivar dropped: how many messages this queue has dropped.
    @ivar delivered: how many messages it has written.
    """

    __slots__ = (
        "_write",
        "_limit",
        "_policy",
        "_listener",
        "_overflow_reason",
        "_items",
        "_paused",
        "_stopped",
        "overflowed",
        "dropped",
        "delivered",
    )

    def __init__(
        self,
        write: Callable[[bytes], object],
        *,
        limit: int,
        policy: str = OVERFLOW_DROP,
        on_drop: Callable[[str, str], None] | None = None,
        on_overflow: Callable[[str], str] | None = None,
        on_drained: Callable[[], None] | None = None,
        listener: QueueListener | None = None,
    ) -> None:
        """
        @param write: writes framed bytes to the connection; it may call L{pauseProducing}
            synchronously (a full transport does).
        @param listener: the owner, told through its L{QueueListener} methods, instead of
            C{on_drop}, C{on_overflow} and C{on_drained} (one reference instead of three
            bound methods per connection, each an object the garbage collector tracks).
        @param limit: the most messages held while the connection is paused.
        @param policy: L{OVERFLOW_DROP} or L{OVERFLOW_DISCONNECT}.
        @param on_drop: called as C{on_drop(channel, reason)} for every dropped message.
        @param on_overflow: policy "disconnect": called once, as C{on_overflow(channel)}, when
            the queue overflows; returns the reason its drops are reported under.
        @param on_drained: policy "disconnect": called when the last queued message of an
            overflowed queue has been written.
        """
        if policy not in (OVERFLOW_DROP, OVERFLOW_DISCONNECT):
            raise ValueError(f"unknown overflow policy {policy!r}")
        self._write = write
        self._limit = limit
        self._policy = policy
        if listener is None:
            if on_drop is None:
                raise TypeError("DeliveryQueue needs on_drop or a listener")
            listener = _Callbacks(on_drop, on_overflow, on_drained)
        self._listener = listener
        self._overflow_reason = "queue full"
        # made by the first message held (most connections never hold one)
        self._items: deque[tuple[bytes, str]] | None = None
        self._paused = False
        self._stopped = False
        #: policy "disconnect": the queue overflowed and takes no new message until reset
        self.overflowed = False
        self.dropped = 0
        self.delivered = 0

    def __len__(self) -> int:
        items = self._items
        return 0 if items is None else len(items)

    @property
    def paused(self) -> bool:
        """Whether the connection has asked us to stop writing."""
        return self._paused

    def offer(self, data: bytes, channel: str = "", *, force: bool = False) -> bool:
        """
        Deliver C{data} now if the connection is writable, else queue it.

        @param force: queue it whatever the limit and overflow (a recovery's page, which is
            what fills the gap; at most one at a time).
        @return: C{False} when the message was dropped.
        """
        if self._stopped:
            self._drop(channel, "connection closed")
            return False
        if self.overflowed and not force:
            self._drop(channel, self._overflow_reason)
            return False
        if not self._paused and not self._items:
            self.delivered += 1
            self._write(data)
            return True
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) >= self._limit and not force:
            if self._policy == OVERFLOW_DISCONNECT:
                self.overflowed = True
                self._overflow_reason = self._listener.queue_overflowed(channel)
            self._drop(channel, self._overflow_reason)
            return False
        items.append((data, channel))
        return True

    def refuse(self, channel: str) -> None:
        """Count and report a message the owner did not offer because the queue is overflowed."""
        self._drop(channel, self._overflow_reason)

    def refuse_closed(self, channel: str) -> None:
        """Count and report a message that was still on its way when the connection closed."""
        self._drop(channel, "connection closed")

    def reset_overflow(self) -> None:
        """The owner recovered what was dropped: take new messages again."""
        self.overflowed = False
        self._overflow_reason = "queue full"

    def offer_run(self, data: bytes, count: int, channel: str = "") -> bool:
        """
        C{count} messages joined in C{data}, offered as one write and counted as C{count}
        deliveries (for an idle connection: nothing queued, not paused; the caller checks).

        @return: C{False} when they were dropped (the connection closed).
        """
        if not self.offer(data, channel):
            return False
        self.delivered += count - 1  # offer counted the write as one
        return True

    def _drop(self, channel: str, reason: str) -> None:
        self.dropped += 1
        self._listener.queue_dropped(channel, reason)

    def _drain(self) -> None:
        items = self._items
        while items and not self._paused:
            data, _ = items.popleft()
            self.delivered += 1
            self._write(data)
        if not items and self.overflowed and not self._stopped:
            self._listener.queue_drained()

    def pauseProducing(self) -> None:
        """The transport's buffer is full: hold messages from now on."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The transport drained: write what is held, in order."""
        if self._stopped:
            return
        self._paused = False
        self._drain()

    def stopProducing(self) -> None:
        """The connection is gone: whatever is still held is dropped and reported."""
        self._stopped = True
        self._paused = True
        while self._items:
            _, channel = self._items.popleft()
            self._drop(channel, "connection closed")
