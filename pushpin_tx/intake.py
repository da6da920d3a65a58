# -*- test-case-name: tests.test_control -*-
"""
Where every publish input ends up: the HTTP control API, the ZeroMQ sockets and the
command socket all hand parsed items to one L{PublishIntake}, which counts them, puts them
through the id cache and the prev-id sequencer (when one is given, L{pushpin_tx.sequencing}),
logs them in Pushpin's shape (C{publish channel=c1 receivers=1}) and fans them out through
the router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from twisted.logger import Logger

if TYPE_CHECKING:
    from .items import Item
    from .router import ChannelRouter
    from .sequencing import Sequencer
    from .stats import Counters
    from .zmq_stats import StatsPublisher

__all__ = ["PublishIntake"]

# item format attribute (as its wire name) -> the hold kind that receives it
_TRANSPORTS = (("http-response", "response"), ("http-stream", "stream"), ("ws-message", "ws"))


def _kinds(router: "ChannelRouter", channel: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for sub in router.subscribers(channel):
        kind = getattr(sub, "kind", "")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


class PublishIntake:
    """Publishes already-validated items."""

    _log = Logger()

    def __init__(self, router: "ChannelRouter", counters: "Counters", stats: "StatsPublisher | None" = None) -> None:
        self._router = router
        self._counters = counters
        self._stats = stats
        #: the id cache + sequencer in front of the router (None: items go straight out)
        self.sequencer: "Sequencer | None" = None

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

    def deliver(self, item: "Item") -> int:
        """Fan one item out now; returns its receivers."""
        stats = self._stats if self._stats is not None and self._stats.active else None
        router = self._router
        # Per-transport receiver counts for the stats socket, taken before delivery (a
        # long-poll leaves its channel as it is answered). Only when someone listens.
        kinds = _kinds(router, item.channel) if stats is not None else None
        receivers = router.publish(item)
        if kinds:
            for transport, kind in _TRANSPORTS:
                if getattr(item, transport.replace("-", "_")) is not None and kinds.get(kind):
                    stats.message(item.channel, item.id, kinds[kind], transport)  # type: ignore[union-attr]
        self._log.info("publish channel={channel} receivers={receivers}", channel=item.channel, receivers=receivers)
        return receivers
