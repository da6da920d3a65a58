"""Tests for pushpin_tx.net.gcpolicy: freezes as connections open, full collections as they close."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from pushpin_tx.net import gcpolicy
from pushpin_tx.net.gcpolicy import SettledFreeze


class FakeGC:
    """Records the gc calls made."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def freeze(self) -> None:
        self.calls.append("freeze")

    def unfreeze(self) -> None:
        self.calls.append("unfreeze")

    def collect(self, generation: int = 2) -> int:
        self.calls.append("collect" if generation == 2 else f"collect({generation})")
        return 0


class SettledFreezeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gc = FakeGC()
        self.policy = SettledFreeze(self.clock, interval=1.0, min_new=3, min_closed=4, closed_ratio=0.5,
                                    max_freezes=2, collector=self.gc)

    def open(self, n: int) -> list[int]:
        """Open C{n} connections; their epochs."""
        return [self.policy.opened() for _ in range(n)]

    def test_fewer_than_min_new_opened_never_freezes(self) -> None:
        """Two connections opened (min_new 3): nothing is scheduled, nothing frozen."""
        self.open(2)
        self.clock.advance(5)
        self.assertEqual(self.gc.calls, [])

    def test_freeze_once_an_interval_after_enough_opened(self) -> None:
        """min_new connections opened, none closed: a collection of the young generations and a freeze, an interval later, not before."""
        self.assertEqual(self.open(5), [0] * 5)
        self.clock.advance(0.9)
        self.assertEqual(self.gc.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.gc.calls, ["collect(1)", "freeze"])
        self.assertEqual((self.policy.epoch, self.policy.open_at_freeze), (1, 5))
        self.clock.advance(5)
        self.assertEqual(self.gc.calls, ["collect(1)", "freeze"])
        self.assertEqual(self.policy.opened(), 1)

    def test_connections_that_come_and_go_never_freeze(self) -> None:
        """Short connections closed before the interval: the open count did not grow, no freeze."""
        for epoch in self.open(5):
            self.policy.closed(epoch)
        self.clock.advance(5)
        self.assertEqual(self.gc.calls, [])
        self.assertEqual(self.policy.closes, 0)

    def test_enough_frozen_closes_run_a_full_collection(self) -> None:
        """Closes of frozen connections past max(min_closed, half the open ones): unfreeze, collect, freeze."""
        epochs = self.open(4)
        self.clock.advance(1)
        self.gc.calls.clear()
        for epoch in epochs:
            self.policy.closed(epoch)
        self.clock.advance(1)
        self.assertEqual(self.gc.calls, ["unfreeze", "collect", "freeze"])
        self.assertEqual((self.policy.closes, self.policy.full, self.policy.open), (0, 1, 0))

    def test_closes_of_unfrozen_connections_do_not_count(self) -> None:
        """A connection opened since the last freeze closing is no frozen garbage: not counted."""
        self.open(4)
        self.clock.advance(1)
        late = self.policy.opened()
        self.policy.closed(late)
        self.assertEqual(self.policy.closes, 0)

    def test_max_freezes_run_a_full_collection(self) -> None:
        """After max_freezes freezes, the next due one is a full collection."""
        for _ in range(3):
            self.open(3)
            self.clock.advance(1)
        self.assertEqual(self.gc.calls, ["collect(1)", "freeze"] * 2 + ["unfreeze", "collect", "freeze"])

    def test_a_close_since_the_last_freeze_makes_it_collect_the_unfrozen_objects(self) -> None:
        """A connection opened since the last freeze that closed may have left garbage in the oldest generation: that freeze collects every unfrozen object first; the next one, without such a close, the young generations only."""
        self.policy.max_freezes = 10
        self.open(3)
        self.clock.advance(1)
        self.policy.closed(self.policy.opened())
        self.open(3)
        self.clock.advance(1)
        self.open(3)
        self.clock.advance(1)
        self.assertEqual(self.gc.calls, ["collect(1)", "freeze", "collect", "freeze", "collect(1)", "freeze"])
        self.assertEqual(self.policy.young_closes, 0)

    def test_stop_cancels_the_pending_run(self) -> None:
        """stop() cancels a scheduled freeze."""
        self.open(3)
        self.policy.stop()
        self.clock.advance(5)
        self.assertEqual(self.gc.calls, [])


class ModuleTests(unittest.TestCase):
    def tearDown(self) -> None:
        if gcpolicy._current is not None:
            gcpolicy._current.stop()
        gcpolicy._current = None

    def test_hooks_do_nothing_before_install(self) -> None:
        """opened()/closed() before install() are no-ops."""
        gcpolicy._current = None
        self.assertEqual(gcpolicy.opened(), 0)
        gcpolicy.closed(0)
        self.assertIsNone(gcpolicy.current())

    def test_install_counts_connections(self) -> None:
        """After install(), the module hooks reach the installed policy."""
        policy = gcpolicy.install(Clock(), min_new=10)
        gcpolicy.opened()
        epoch = gcpolicy.opened()
        gcpolicy.closed(epoch - 1)  # as if opened before a freeze
        self.assertIs(gcpolicy.current(), policy)
        self.assertEqual((policy.open, policy.closes), (1, 1))
