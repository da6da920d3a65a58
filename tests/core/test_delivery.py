"""The per-connection delivery queue: write-through, holding while paused, overflow policy."""

from __future__ import annotations

import pytest

from pushpin_tx.core.delivery import OVERFLOW_DISCONNECT, OVERFLOW_DROP, DeliveryQueue


class Sink:
    #: build the queue with the sink as its listener, not with three callables (both ways, below)
    listener = False

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.drops: list[tuple[str, str]] = []
        self.overflows: list[str] = []
        self.drained = 0
        self.queue: DeliveryQueue | None = None
        self.pause_after: int | None = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        if self.pause_after is not None and len(self.written) >= self.pause_after:
            self.queue.pauseProducing()

    def make(self, limit: int = 3, policy: str = OVERFLOW_DROP) -> DeliveryQueue:
        if self.listener:
            self.queue = DeliveryQueue(self.write, limit=limit, policy=policy, listener=self)
            return self.queue
        self.queue = DeliveryQueue(
            self.write,
            limit=limit,
            policy=policy,
            on_drop=lambda channel, reason: self.drops.append((channel, reason)),
            on_overflow=self._overflow,
            on_drained=self._drained,
        )
        return self.queue

    def _overflow(self, channel: str) -> str:
        self.overflows.append(channel)
        return "queue full, closing"

    def _drained(self) -> None:
        self.drained += 1

    # the QueueListener protocol
    def queue_dropped(self, channel: str, reason: str) -> None:
        self.drops.append((channel, reason))

    def queue_overflowed(self, channel: str) -> str:
        return self._overflow(channel)

    def queue_drained(self) -> None:
        self._drained()


@pytest.fixture(autouse=True, params=["callables", "listener"])
def _both_ways(request, monkeypatch):
    """Every test twice: the owner's three callables, and the owner as the queue's listener."""
    monkeypatch.setattr(Sink, "listener", request.param == "listener")


def test_without_on_drop_or_listener_refused():
    with pytest.raises(TypeError):
        DeliveryQueue(lambda data: None, limit=1)


def test_no_deque_until_a_message_is_held():
    """Most connections never hold a message: the queue makes its deque only for the first one."""
    sink = Sink()
    q = sink.make()
    q.offer(b"a", "c")
    q.stopProducing()
    assert q._items is None and len(q) == 0 and sink.drops == []
    q2 = Sink().make()
    q2.pauseProducing()
    q2.offer(b"a", "c")
    assert q2._items is not None and len(q2) == 1


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
    assert q.dropped == 2 and sink.overflows == [] and not q.overflowed
    q.resumeProducing()
    assert sink.written == [b"1", b"2"]


def test_overflow_disconnect_policy_drops_everything_new_until_the_owner_resets_it():
    """Overflowed: the owner hears once, every later message is dropped under its reason even with room, queued ones still go out."""
    sink = Sink()
    q = sink.make(limit=2, policy=OVERFLOW_DISCONNECT)
    q.pauseProducing()
    q.offer(b"1", "news")
    q.offer(b"2", "news")
    assert not q.offer(b"3", "news")
    assert sink.overflows == ["news"] and q.overflowed
    q.resumeProducing()
    assert sink.written == [b"1", b"2"] and sink.drained == 1
    assert not q.offer(b"4", "sport")  # room again, but a gap must not hide behind later messages
    assert sink.drops == [("news", "queue full, closing"), ("sport", "queue full, closing")]
    assert sink.overflows == ["news"] and q.dropped == 2
    assert q.offer(b"page", "", force=True)  # the owner's recovery page goes through
    q.reset_overflow()
    assert q.offer(b"5", "news") and sink.written == [b"1", b"2", b"page", b"5"]


def test_forced_messages_pass_a_full_queue():
    """A forced message (a recovery page) is queued past the limit, in order, without overflowing the queue."""
    sink = Sink()
    q = sink.make(limit=1, policy=OVERFLOW_DISCONNECT)
    q.pauseProducing()
    q.offer(b"1", "a")
    assert q.offer(b"page", "", force=True)
    assert not q.overflowed and sink.overflows == []
    q.resumeProducing()
    assert sink.written == [b"1", b"page"] and sink.drained == 0


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
