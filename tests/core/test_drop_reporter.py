"""DropReporter: every drop counted, and the latest ones kept for the status page."""

from __future__ import annotations

from pushpin_tx.core.stats import RECENT_DROPS, Counters, DropReporter


def test_the_latest_drops_are_kept_with_time_connection_channel_and_reason(clock):
    """recent holds the last RECENT_DROPS drops, oldest first, whatever the log's rate limit wrote."""
    counters = Counters()
    reporter = DropReporter(counters, clock)
    for i in range(RECENT_DROPS + 3):
        clock.advance(0.1)
        reporter(str(i % 2), f"ch{i}", "queue full")
    assert len(reporter.recent) == RECENT_DROPS
    assert reporter.recent[-1] == (clock.seconds(), str((RECENT_DROPS + 2) % 2), f"ch{RECENT_DROPS + 2}", "queue full")
    assert reporter.recent[0][2] == "ch3"
    assert counters.drops["queue full"] == RECENT_DROPS + 3
    reporter.stop()
