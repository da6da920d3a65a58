"""The per-connection delivery queue: write-through, holding while paused, overflow policy."""

from __future__ import annotations

import pytest

from pushpin_tx.core.delivery import OVERFLOW_DISCONNECT, OVERFLOW_DROP, DeliveryQueue


class Sink:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.drops: list[tuple[str, str]] = []
        self.disconnected = 0
        self.queue: DeliveryQueue | None = None
        self.pause_after: int | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.pause_after is not None and len(self.written) >= self.pause_after:
            self.queue.pauseProducing()

    def make(self, limit: int = 3, policy: str = OVERFLOW_DROP) -> DeliveryQueue:
        self.queue = DeliveryQueue(
            self.write,
            limit=limit,
            policy=policy,
            on_drop=lambda channel, reason: self.drops.append((channel, reason)),
            on_overflow_disconnect=self._disconnect,
        )
        return self.queue

    def _disconnect(self) -> None:
        self.disconnected += 1


def test_writes_through_while_the_connection_keeps_up():
    """A writable connection gets each message at once, nothing is held."""
    sink = Sink()
    q = sink.make()
    assert q.offer(b"a", "c") and q.offer(b"b", "c")
    assert sink.written == [b"a", b"b"]
    assert len(q) == 0 and q.delivered == 2


def test_holds_while_paused_and_drains_in_order_on_resume():
    """A paused connection's messages wait, then go out in publish order."""
    sink = Sink()
    q = sink.make(limit=5)
    q.pauseProducing()
    for data in (b"1", b"2", b"3"):
        q.offer(data, "c")
    assert sink.written == []
    q.resumeProducing()
    assert sink.written == [b"1", b"2", b"3"]


def test_a_write_that_fills_the_transport_stops_the_drain():
    """When a write pauses the queue mid-drain, the rest stays queued and order is kept."""
    sink = Sink()
    q = sink.make(limit=10)
    q.pauseProducing()
    for data in (b"1", b"2", b"3", b"4"):
        q.offer(data, "c")
    sink.pause_after = 2
    q.resumeProducing()
    assert sink.written == [b"1", b"2"] and len(q) == 2
    sink.pause_after = None
    q.resumeProducing()
    assert sink.written == [b"1", b"2", b"3", b"4"]


def test_a_new_message_never_overtakes_queued_ones():
    """After a resume that leaves items queued, a new offer is queued behind them."""
    sink = Sink()
    q = sink.make(limit=10)
    q.pauseProducing()
    q.offer(b"1", "c")
    q.offer(b"2", "c")
    sink.pause_after = 1
    q.resumeProducing()
    q.offer(b"3", "c")
    assert sink.written == [b"1"]
    sink.pause_after = None
    q.resumeProducing()
    assert sink.written == [b"1", b"2", b"3"]


def test_overflow_drop_policy_reports_every_dropped_message():
    """A full queue drops the new message and reports it with its channel, keeping the connection."""
    sink = Sink()
    q = sink.make(limit=2)
    q.pauseProducing()
    assert q.offer(b"1", "news") and q.offer(b"2", "news")
    assert not q.offer(b"3", "news")
    assert not q.offer(b"4", "sport")
    assert sink.drops == [("news", "queue full"), ("sport", "queue full")]
    assert q.dropped == 2 and sink.disconnected == 0
    q.resumeProducing()
    assert sink.written == [b"1", b"2"]


def test_overflow_disconnect_policy_closes_the_connection():
    """With the disconnect policy a full queue closes the connection and reports what it lost."""
    sink = Sink()
    q = sink.make(limit=1, policy=OVERFLOW_DISCONNECT)
    q.pauseProducing()
    q.offer(b"1", "news")
    assert not q.offer(b"2", "news")
    assert sink.disconnected == 1
    assert ("news", "queue full, disconnecting") in sink.drops
    assert ("news", "connection closed") in sink.drops  # the queued one is lost too, and said so
    assert q.dropped == 2


def test_messages_held_when_the_connection_goes_are_reported():
    """Stopping the producer (client gone) reports each queued message as dropped."""
    sink = Sink()
    q = sink.make(limit=5)
    q.pauseProducing()
    q.offer(b"1", "a")
    q.offer(b"2", "b")
    q.stopProducing()
    assert sink.drops == [("a", "connection closed"), ("b", "connection closed")]
    assert not q.offer(b"3", "a")
    q.resumeProducing()
    assert sink.written == []


def test_unknown_policy_is_refused():
    """A typo in the overflow policy is an error, not a silent default."""
    with pytest.raises(ValueError):
        DeliveryQueue(lambda d: None, limit=1, policy="ignore", on_drop=lambda c, r: None)
