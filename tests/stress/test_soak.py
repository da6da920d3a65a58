"""
The short soak (issue 15, item 9) in the stress suite: 2,000 held connections (streams,
long-polls and WebSockets) for a minute under a steady publish rate and a trickle of churn.
The long one (10,000 connections, 10 minutes) is the command C{python -m tests.stress.soak}.

C{PUSHPIN_TX_SOAK_SECONDS} changes the steady-state length (default 60; 0 skips the test, for
a quick local run of the stress suite).
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted

from .soak import SoakConfig, run_soak
from .support import scaled

SECONDS = float(os.environ.get("PUSHPIN_TX_SOAK_SECONDS", "60") or "60")


@pytest.mark.stress
@pytest.mark.skipif(SECONDS <= 0, reason="PUSHPIN_TX_SOAK_SECONDS=0")
@pytest_twisted.ensureDeferred
async def test_short_soak_keeps_rss_and_descriptors_flat_and_delivers_every_message(reactor, tmp_path):
    """2,000 held streams, long-polls and WebSockets for a minute, 20 publishes/s, 5 connections churned/s: RSS and
    descriptors flat after the first 20 s, every message delivered once and in order, nothing dropped, no error logged."""
    config = SoakConfig(
        connections=scaled(2000),
        seconds=SECONDS,
        warmup=min(20.0, SECONDS / 3),
        rate=20.0,
        churn=5.0,
        sample_every=5.0,
        per_channel=50,
    )
    result = await run_soak(reactor, tmp_path, config)
    print(result.report())
    assert not result.problems(), result.report()


def test_the_soak_judge_counts_lost_duplicated_and_reordered_messages():
    """The soak's judge finds a message a held stream missed, one a long-poll missed in its window, a duplicate, a
    reordering and a logged error, and excuses what a churned connection could not have read."""
    from types import SimpleNamespace

    from twisted.internet.task import Clock

    from .soak import SoakResult, _Poll, _Soak, _Stream

    output = "[INFO] fine\n[ERR] 2026-12-02 something broke\n"
    soak = _Soak(Clock(), SimpleNamespace(output=output), SoakConfig(), lambda line: None)
    soak.sent = {
        "stream0": [(1, 2.0, 2.1), (2, 3.0, 3.1), (3, 4.0, 4.1), (4, 9.5, 9.6)],
        "poll0": [(1, 2.0, 2.1), (2, 5.0, 5.1), (3, 8.0, 8.1)],
    }

    def stream(held: float, seqs: list[int], closed: float | None = None) -> _Stream:
        client = _Stream(soak, "stream0")
        client.held_since, client.seqs, client.closed_at, client.churned = held, seqs, closed, closed is not None
        soak.all.append(client)
        return client

    stream(1.0, [1, 3, 4])  # missed 2
    stream(1.0, [1, 2, 2, 3, 4])  # a duplicate
    stream(1.0, [1, 3, 2, 4])  # out of order
    stream(2.5, [2, 3, 4])  # held after 1 was sent: 1 is not expected
    stream(1.0, [1, 2, 3], closed=10.0)  # 4 went out 0.4 s before it closed: excused
    poll = _Poll(soak, "poll0")
    poll.held_since, poll.windows, poll.poll_sent, poll.closed_at = 1.0, [(1.0, 2.2), (2.2, 8.2)], 8.2, None
    poll.seqs = [1]  # its second window (2.2-8.2) held 2 (the first publish in it): missed
    soak.all.append(poll)
    soak.judge()
    r: SoakResult = soak.result
    assert (r.lost, r.duplicates, r.out_of_order, r.errors_logged) == (2, 1, 1, 1)
    assert r.by_kind["stream"] == [4 * 3 + 3 + 3, 3 + 5 + 4 + 3 + 3, 1] and r.by_kind["poll"] == [2, 1, 1]
    assert any("something broke" in line for line in r.error_lines)


def test_the_soak_judges_descriptors_on_their_floor_and_rss_on_its_range():
    """A descriptor spike (publishes in flight) passes, a rising floor (a leak) does not; RSS must stay within its
    tolerance after the warm-up, the warm-up itself is not judged."""
    from .soak import Sample, SoakResult

    def result(fds: list[int], rss: list[int]) -> SoakResult:
        r = SoakResult(SoakConfig(warmup=10, fd_tolerance=32, rss_tolerance_kb=8192), published=1)
        r.samples = [Sample(float(t * 10), kb, n, 100, 1, 1) for t, (n, kb) in enumerate(zip(fds, rss))]
        return r

    flat = [100000] * 7
    assert result([900, 1000, 1000, 1150, 1000, 1010, 1000], flat).problems() == []  # spike, floor flat
    assert any("floor rose by 60" in p for p in result([900, 1000, 1000, 1030, 1040, 1060, 1070], flat).problems())
    assert result([1000] * 7, [50000, 100000, 101000, 102000, 103000, 104000, 108000]).problems() == []
    assert any("RSS not flat" in p for p in result([1000] * 7, [50000, 100000, 101000, 102000, 104000, 106000, 109000]).problems())


def test_the_soak_keeps_the_proxys_start_up_lines_and_every_warning_and_error_but_not_the_bulk():
    """The lean log keeps the first lines, each warning and error with the traceback after it, and counts the rest."""
    from .soak import _LeanLog
    from ..integration.harness import Waiter

    log = _LeanLog(Waiter())
    log.HEAD, log.CONTEXT = 2, 2
    lines = ["[INFO] client listening on 127.0.0.1:1", "[INFO] start 2"] + [f"[INFO] subscribe {i}" for i in range(1000)]
    lines[500] = "[ERR] 2026-12-02 it broke"
    lines[501] = "Traceback (most recent call last):"
    lines[502] = '  File "x.py", line 1'
    lines[800] = "[WARN] 2026-12-02 careful"
    data = ("\n".join(lines) + "\n").encode()
    for i in range(0, len(data), 777):  # lines split across reads
        log.outReceived(data[i : i + 777])
    assert log.lines == 1002
    # the traceback's first line is an error line too: CONTEXT lines are kept after it
    assert log.output.splitlines() == [lines[i] for i in (0, 1, 500, 501, 502, 503, 800, 801, 802)]
