# -*- test-case-name: tests.web.test_control -*-
"""
Where every publish input ends up: the HTTP control API, the ZeroMQ sockets and the
command socket all hand parsed items to one L{PublishIntake}, which counts them, puts them
through the id cache and the prev-id sequencer (when one is given, L{pushpin_tx.core.sequencing}),
logs them in Pushpin's shape (C{publish channel=c1 receivers=1}) and fans them out through
the router.

With a clock, fan-out goes through a L{PendingWriter}: each subscriber's deliveries wait in
its channel's backlog and are written a slice of connections per reactor turn, everything
waiting for one connection in one write (L{pushpin_tx.core.pending}); L{backpressure} tells
the inputs when that backlog is over its bound, so they hold publishers back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from twisted.logger import Logger

from pushpin_tx.core.loginfo import InfoLines
from pushpin_tx.core.pending import DEFAULT_AHEAD, DEFAULT_LIMIT, DEFAULT_SLICE, Backpressure, PendingWriter

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from pushpin_tx.protocol.items import Item
    from pushpin_tx.core.router import ChannelRouter
    from pushpin_tx.core.sequencing import Sequencer
    from pushpin_tx.core.stats import Counters
    from pushpin_tx.core.stats_feed import StatsPublisher

__all__ = ["PublishIntake"]

# item format: its wire name, the Item attribute, the hold kind that receives it
_TRANSPORTS = (("http-response", "http_response", "response"), ("http-stream", "http_stream", "stream"),
               ("ws-message", "ws_message", "ws"))


def _kinds(router: "ChannelRouter", channel: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sub in tuple(router.targets(channel) or ()):
        kind = getattr(sub, "kind", "")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


class PublishIntake:
    """Publishes already-validated items."""

    _log = Logger()

    def __init__(self, router: "ChannelRouter", counters: "Counters", stats: "StatsPublisher | None" = None,
                 clock: "IReactorTime | None" = None, *, pending_limit: int = DEFAULT_LIMIT,
                 slice_size: int = DEFAULT_SLICE, ahead: int = DEFAULT_AHEAD) -> None:
        """
        @param clock: when given, items delivered in one reactor turn after the first are
            gathered and fanned out together at the end of the turn (L{deliver}), and
            written through a L{PendingWriter}.
        @param pending_limit: bytes of waiting deliveries past which publishers are held back
            (0: no bound).
        @param slice_size: connections written per reactor turn while deliveries wait.
        @param ahead: runs waiting for one connection past which publish answers are held
            (L{when_relieved}; 0: never).
        """
        self._router = router
        self._counters = counters
        self._stats = stats
        self._clock = clock
        #: items gathered this reactor turn (None: none yet)
        self._gathered: "list[Item] | None" = None
        #: the id cache + sequencer in front of the router (None: items go straight out)
        self.sequencer: "Sequencer | None" = None
        #: the bound on waiting deliveries: inputs register producers / wait for relief here
        self.backpressure = Backpressure(pending_limit)
        #: per-connection coalescing of deliveries while busy (None without a clock)
        self.pending: PendingWriter | None = (
            PendingWriter(router, clock, slice_size=slice_size, backpressure=self.backpressure, ahead=ahead) if clock is not None else None
        )
        # the publish line, once per item: its event's constant part built once
        self._publish_lines = InfoLines(self._log)

    def publish(self, items: Sequence["Item"], source: str) -> None:
        """
        Take C{items} in order: each is delivered now, or parked by the sequencer until its
        predecessor comes (or C{message_wait} passes), or dropped as a duplicate.

        @param source: the input they came from ("http", "zmq-pull", ...), for counters.
        """
        counters = self._counters
        counters.publishes[source] += 1
        sequencer = self.sequencer
        for item in items:
            counters.items_published += 1
            if sequencer is not None:
                sequencer.submit(item)
            else:
                self.deliver(item)

    def deliver(self, item: "Item") -> None:
        """
        Fan one item out. Without a clock, now. With one, the items of a reactor turn are
        gathered and fanned out together as soon as the turn's I/O is handled (the next
        C{callLater(0)}): consecutive items of one channel then reach each stream in one
        write (L{ChannelRouter.publish_run}) instead of one write each, which is most of the
        cost of a delivery (measured: bench/README.md). Order is kept, and the publish
        answers written in that turn leave after the deliveries (the reactor sends them in
        its next poll).
        """
        clock = self._clock
        if clock is None:
            self._fan_out([item])
            return
        gathered = self._gathered
        if gathered is not None:
            gathered.append(item)
            return
        self._gathered = [item]
        clock.callLater(0, self._end_of_turn)

    def flush(self) -> None:
        """Fan out what this turn has gathered, and write everything waiting, now (before a recover or a shutdown)."""
        self._end_of_turn()
        if self.pending is not None:
            self.pending.flush()

    def when_relieved(self, callback: "Callable[[], object]") -> None:
        """
        Call C{callback} now, or once waiting deliveries are back under their bound, and no
        connection has more than C{ahead} runs waiting for it (a held publish answer:
        L{PendingWriter.when_caught_up}).
        """
        pending = self.pending
        if pending is None:
            self.backpressure.when_relieved(callback)
        else:
            self.backpressure.when_relieved(lambda: pending.when_caught_up(callback))

    def _end_of_turn(self) -> None:
        gathered, self._gathered = self._gathered, None
        if not gathered:
            return
        if self.pending is not None:
            self.pending.begin_turn()
        start = 0
        for i in range(1, len(gathered) + 1):  # runs of consecutive items on one channel
            if i == len(gathered) or gathered[i].channel != gathered[start].channel:
                self._fan_out(gathered[start:i])
                start = i

    def _fan_out(self, items: "list[Item]") -> int:
        """Hand items of one channel to its subscribers now, count and log them; returns the receivers."""
        stats = self._stats
        if stats is not None and not stats.wants_messages:
            # nobody takes message packets (or no socket): only http-response counts are
            # still needed, for the reports
            for item in items:
                if item.http_response is not None and stats.active:
                    break
            else:
                stats = None
        router = self._router
        channel = items[0].channel
        # Per-transport receiver counts for the stats socket, taken before delivery (a
        # long-poll leaves its channel as it is answered). Only when someone listens.
        kinds = _kinds(router, channel) if stats is not None else None
        pending = self.pending
        if pending is not None:
            receivers = pending.publish_run(items)
        else:
            receivers = router.publish(items[0]) if len(items) == 1 else router.publish_run(items)
        # Pushpin's line, once per item; preformatted once per run, its event built from a
        # template (no formatter, no level scan: the profile figures are in bench/README.md)
        line = f"publish channel={channel} receivers={receivers}"
        emit = self._publish_lines.emit
        for item in items:
            if kinds:
                for transport, attribute, kind in _TRANSPORTS:
                    if getattr(item, attribute) is not None and kinds.get(kind):
                        stats.message(channel, item.id, kinds[kind], transport)  # type: ignore[union-attr]
            emit(line)
        return receivers
