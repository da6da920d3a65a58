# -*- test-case-name: tests.ops.test_metrics -*-
"""
What operations code may read of a process, and the levers it may pull: L{OpsView}.

The metrics collector, the status page, the console helpers and a worker's snapshot take
an L{OpsView}, never the service itself. L{pushpin_tx.service.PushpinService} implements it
(mypy checks that where the service hands itself over), and a test passes any object of the
same shape. Every member is read-only here: ops code reads the live state at the moment it
is asked (a scrape, a console command, a snapshot), and changes it only through
L{OpsView.publish} and L{OpsView.reload}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from pushpin_tx.backplane.redis import RedisBackplane
    from pushpin_tx.core.router import ChannelRouter
    from pushpin_tx.core.sequencing import Sequencer
    from pushpin_tx.core.stats import Counters, DropReporter
    from pushpin_tx.protocol.items import Item
    from pushpin_tx.workers.pool import WorkerPool

__all__ = ["OpsView"]


class OpsView(Protocol):
    """The read-only face of one process that metrics, status, console and snapshots see."""

    @property
    def counters(self) -> Counters:
        """This process's counters."""

    @property
    def router(self) -> ChannelRouter:
        """The channel router: its channels, subscriber counts and publish tallies."""

    @property
    def drops(self) -> DropReporter:
        """The drop reporter, for its latest drops."""

    @property
    def reactor(self) -> IReactorTime:
        """The clock the holds' C{started_at} is measured on."""

    @property
    def worker_index(self) -> int:
        """0 for the main process, a worker's index otherwise."""

    @property
    def workers(self) -> WorkerPool | None:
        """The worker pool (main process, workers > 1): the workers' snapshots and rows."""

    @property
    def backplane(self) -> RedisBackplane | None:
        """The Redis backplane, when one is configured."""

    @property
    def sequencer(self) -> Sequencer | None:
        """The sequencer in front of the router (main process)."""

    def connection_tables(self) -> Sequence[Mapping[str, Any]]:
        """Every table of live connections, id -> hold: HTTP holds, then WebSocket sessions."""

    def publish(self, items: Sequence[Item], source: str) -> None:
        """Publish C{items} through the intake the control API uses, counted under C{source}."""

    def reload(self) -> None:
        """Re-read the routes file and reopen the log, as SIGHUP does."""
