# -*- test-case-name: tests.test_control -*-
"""
Where every publish input ends up: the HTTP control API, the ZeroMQ sockets and the
command socket all hand parsed items to one L{PublishIntake}, which counts them, logs them
in Pushpin's shape (C{publish channel=c1 receivers=1}) and fans them out through the router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from twisted.logger import Logger

if TYPE_CHECKING:
    from .items import Item
    from .router import ChannelRouter
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

    def publish(self, items: Sequence["Item"], source: str) -> int:
        """
        Deliver C{items} in order.

        @param source: the input they came from ("http", "zmq-pull", ...), for counters.
        @return: total receivers.
        """
        counters = self._counters
        counters.publishes[source] += 1
        total = 0
        stats = self._stats if self._stats is not None and self._stats.active else None
        router = self._router
        for item in items:
            counters.items_published += 1
            # Per-transport receiver counts for the stats socket, taken before delivery (a
            # long-poll leaves its channel as it is answered). Only when someone listens.
            kinds = _kinds(router, item.channel) if stats is not None else None
            receivers = router.publish(item)
            total += receivers
            if kinds:
                for transport, kind in _TRANSPORTS:
                    if getattr(item, transport.replace("-", "_")) is not None and kinds.get(kind):
                        stats.message(item.channel, item.id, kinds[kind], transport)
            self._log.info("publish channel={channel} receivers={receivers}", channel=item.channel, receivers=receivers)
        return total
