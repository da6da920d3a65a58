# -*- test-case-name: tests.test_stats -*-
"""
Counters an operator asks about first: who is held, what was delivered, what was dropped
and why. One L{Counters} per process, shared by the proxy, the holds and the publish
inputs; the console and metrics read it, nothing in the hot path does more than add.

L{DropReporter} is the single place a dropped message is reported: it always counts, and
logs with the connection id and channel, at most once a second per connection so that a
flood of drops cannot flood the log (the count in the next line says how many there were).
It also keeps the last L{RECENT_DROPS} drops (time, connection, channel, reason) for the
status page's "most recent drops" (L{pushpin_tx.ops.status}).
"""

from __future__ import annotations

from collections import Counter, deque
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["Counters", "DropReporter", "RECENT_DROPS"]

#: how many of the latest drops L{DropReporter.recent} keeps
RECENT_DROPS = 50


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
    """
    Counts every dropped message and logs it, rate-limited per connection: the first drop
    is logged at once, later ones within C{interval} seconds are summed into one line that
    a single timer writes when the interval has passed, so every drop reaches the log.
    """

    _log = Logger()

    def __init__(self, counters: Counters, clock: IReactorTime, *, interval: float = 1.0) -> None:
        self._counters = counters
        self._clock = clock
        self._interval = interval
        # conn_id -> [time of its last line, drops since then, last channel, last reason]
        self._pending: dict[str, list] = {}
        self._flush_call: IDelayedCall | None = None
        #: the latest drops, oldest first: (clock time, conn_id, channel, reason)
        self.recent: deque[tuple[float, str, str, str]] = deque(maxlen=RECENT_DROPS)

    def __call__(self, conn_id: str, channel: str, reason: str) -> None:
        """Report one dropped message for C{conn_id} on C{channel}."""
        self._counters.drops[reason] += 1
        now = self._clock.seconds()
        self.recent.append((now, conn_id, channel, reason))
        entry = self._pending.get(conn_id)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            entry[2], entry[3] = channel, reason
            if self._flush_call is None:
                self._flush_call = self._clock.callLater(self._interval, self._flush)
            return
        if entry is not None and entry[1]:
            self._line(conn_id, entry[2], entry[3], entry[1])
        self._pending[conn_id] = [now, 0, channel, reason]
        self._line(conn_id, channel, reason, 1)
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(self._interval, self._flush)

    def _line(self, conn_id: str, channel: str, reason: str, count: int) -> None:
        self._log.warn(
            "dropped {count} message(s) for connection {conn_id} on channel {channel}: {reason}",
            count=count,
            conn_id=conn_id,
            channel=channel,
            reason=reason,
        )

    def _flush(self) -> None:
        """Write the summed lines that are due and forget quiet connections."""
        self._flush_call = None
        now = self._clock.seconds()
        for conn_id, entry in list(self._pending.items()):
            if now - entry[0] < self._interval:
                continue
            if entry[1]:
                self._line(conn_id, entry[2], entry[3], entry[1])
                self._pending[conn_id] = [now, 0, entry[2], entry[3]]
            else:
                del self._pending[conn_id]
        if self._pending:
            self._flush_call = self._clock.callLater(self._interval, self._flush)

    def stop(self) -> None:
        """Write what is still pending now (at shutdown) and cancel the timer."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        for conn_id, entry in self._pending.items():
            if entry[1]:
                self._line(conn_id, entry[2], entry[3], entry[1])
        self._pending.clear()
