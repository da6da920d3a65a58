# -*- test-case-name: tests.test_stats -*-
"""
Counters an operator asks about first: who is held, what was delivered, what was dropped
and why. One L{Counters} per process, shared by the proxy, the holds and the publish
inputs; the console and metrics read it, nothing in the hot path does more than add.

L{DropReporter} is the single place a dropped message is reported: it always counts, and
logs with the connection id and channel, at most once a second per connection so that a
flood of drops cannot flood the log (the count in the next line says how many there were).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

from twisted.logger import Logger

__all__ = ["Counters", "DropReporter"]


class Counters:
    """Process-wide tallies."""

    __slots__ = (
        "requests_received",
        "requests_proxied",
        "requests_failed",
        "held",
        "publishes",
        "items_published",
        "deliveries",
        "drops",
        "recoveries",
        "connection_minutes_closed",
    )

    def __init__(self) -> None:
        self.requests_received = 0
        self.requests_proxied = 0
        self.requests_failed = 0
        #: currently held connections by kind ("response", "stream", "ws")
        self.held: Counter[str] = Counter()
        #: publish requests by input ("http", "zmq-pull", "zmq-sub", "command")
        self.publishes: Counter[str] = Counter()
        self.items_published = 0
        self.deliveries = 0
        #: dropped messages by reason
        self.drops: Counter[str] = Counter()
        #: times a held connection re-synced from the origin (Grip-Last retry or next link)
        self.recoveries = 0
        #: connection-minutes of connections that have ended (for connection_minute metrics)
        self.connection_minutes_closed = 0

    def delivered(self, n: int) -> None:
        self.deliveries += n

    def snapshot(self) -> dict[str, object]:
        """A plain dict of everything, for the console and tests."""
        return {
            "requests_received": self.requests_received,
            "requests_proxied": self.requests_proxied,
            "requests_failed": self.requests_failed,
            "held": dict(self.held),
            "publishes": dict(self.publishes),
            "items_published": self.items_published,
            "deliveries": self.deliveries,
            "drops": dict(self.drops),
            "recoveries": self.recoveries,
        }


class DropReporter:
    """Counts every dropped message and logs it, rate-limited per connection."""

    _log = Logger()

    def __init__(self, counters: Counters, now: Callable[[], float], *, interval: float = 1.0) -> None:
        self._counters = counters
        self._now = now
        self._interval = interval
        # conn_id -> (time of the last line, drops not yet logged)
        self._pending: dict[str, tuple[float, int]] = {}

    def __call__(self, conn_id: str, channel: str, reason: str) -> None:
        """Report one dropped message for C{conn_id} on C{channel}."""
        self._counters.drops[reason] += 1
        now = self._now()
        last, unlogged = self._pending.get(conn_id, (None, 0))
        if last is not None and now - last < self._interval:
            self._pending[conn_id] = (last, unlogged + 1)
            return
        self._pending[conn_id] = (now, 0)
        if len(self._pending) > 10000:
            self._pending.clear()
        self._log.warn(
            "dropped message for connection {conn_id} on channel {channel}: {reason}"
            " ({earlier} more dropped for this connection since the last report)",
            conn_id=conn_id,
            channel=channel,
            reason=reason,
            earlier=unlogged,
        )
