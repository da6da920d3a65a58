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

__all__ = ["PublishIntake"]


class PublishIntake:
    """Publishes already-validated items."""

    _log = Logger()

    def __init__(self, router: "ChannelRouter", counters: "Counters") -> None:
        self._router = router
        self._counters = counters

    def publish(self, items: Sequence["Item"], source: str) -> int:
        """
        Deliver C{items} in order.

        @param source: the input they came from ("http", "zmq-pull", ...), for counters.
        @return: total receivers.
        """
        counters = self._counters
        counters.publishes[source] += 1
        total = 0
        for item in items:
            counters.items_published += 1
            receivers = self._router.publish(item)
            total += receivers
            self._log.info("publish channel={channel} receivers={receivers}", channel=item.channel, receivers=receivers)
        return total
