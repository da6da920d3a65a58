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

    def collect(self) -> int:
        self.calls.append("collect")
        return 0


class SettledFreezeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gc = FakeGC()
        self.policy = SettledFreeze(self.clock, interval=1.0, min_new=3, min_closed=4, closed_ratio=0.5,
                                    max_freezes=2, collector=self.gc)

    def test_fewer_than_min_new_opened_never_freezes(self) -> None:
        """Two connections opened (min_new 3): nothing is scheduled, nothing frozen."""
        self.policy.opened()
        self.policy.opened()
        self.clock.advance(5)
        self.assertEqual(self.gc.calls, [])

    def test_freeze_once_an_interval_after_enough_opened(self) -> None:
        """min_new connections opened: one young collection and freeze, an interval later, not before."""
        for _ in range(5):
            self.policy.opened()
        self.clock.advance(0.9)
        self.assertEqual(self.gc.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.gc.calls, ["collect", "freeze"])
        self.assertEqual(self.policy.new, 0)
        self.clock.advance(5)
        self.assertEqual(self.gc.calls, ["collect", "freeze"])

    def test_enough_closes_run_a_full_collection(self) -> None:
        """Closes past max(min_closed, half the open ones): unfreeze, collect, freeze."""
        for _ in range(4):
            self.policy.opened()
        self.clock.advance(1)
        self.gc.calls.clear()
        for _ in range(4):
            self.policy.closed()
        self.clock.advance(1)
        self.assertEqual(self.gc.calls, ["unfreeze", "collect", "freeze"])
        self.assertEqual((self.policy.closes, self.policy.full, self.policy.open), (0, 1, 0))

    def test_max_freezes_run_a_full_collection(self) -> None:
        """After max_freezes freezes, the next due one is a full collection."""
        for _ in range(3):
            for _ in range(3):
                self.policy.opened()
            self.clock.advance(1)
        self.assertEqual(self.gc.calls, ["collect", "freeze"] * 2 + ["unfreeze", "collect", "freeze"])

    def test_stop_cancels_the_pending_run(self) -> None:
        """stop() cancels a scheduled freeze."""
        for _ in range(3):
            self.policy.opened()
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
        gcpolicy.opened()
        gcpolicy.closed()
        self.assertIsNone(gcpolicy.current())

    def test_install_counts_connections(self) -> None:
        """After install(), the module hooks reach the installed policy."""
        policy = gcpolicy.install(Clock(), min_new=10)
        gcpolicy.opened()
        gcpolicy.opened()
        gcpolicy.closed()
        self.assertIs(gcpolicy.current(), policy)
        self.assertEqual((policy.open, policy.new, policy.closes), (1, 2, 1))
