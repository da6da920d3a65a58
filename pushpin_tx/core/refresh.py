# -*- test-case-name: tests.core.test_linger -*-
"""
The linger's timer: Pushpin's stats manager expires lingering subscriptions on its refresh
timer (C{src/corelib/statsmanager.cpp}, 1.41 C{src/core/statsmanager.cpp}:
C{removeSubscription(linger)} puts the subscription in the timer wheel at
C{now + subscription_linger}, C{refresh_timeout} runs every C{REFRESH_INTERVAL}, 1000 ms,
and C{handleExpirations} ends what is due), so a linger ends between C{linger} and
C{linger + 1} seconds after it began, and C{subscription_linger=0} on the next tick. The
handler's subscription (L{pushpin_tx.core.linger.Subscriptions}) and the stats socket's
C{sub} packets (L{pushpin_tx.core.stats_feed}) both linger here.

Its own module so that the stats feed, which the holds import, can use it without
importing the holds back.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Hashable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.python.failure import Failure

__all__ = ["Linger", "REFRESH_INTERVAL"]

#: seconds between the linger's expiry checks (statsmanager.cpp C{REFRESH_INTERVAL} 1000 ms)
REFRESH_INTERVAL = 1.0

class Linger:
    """
    Keys that end C{linger} seconds after they began lingering, on the refresh timer: the
    first tick at or past the deadline (Pushpin's
    C{removeSubscription(linger)} puts the subscription in the stats manager's timer wheel at
    C{now + subscription_linger}, which C{refresh_timeout} expires every C{REFRESH_INTERVAL}).
    One C{LoopingCall}, running only while something lingers, for every key of every owner:
    the process's channel subscriptions and the stats feed's per-mode ones share one.

    Keys are any hashable; each owner uses keys of its own shape (a channel name, a tuple).
    """

    _log = Logger()

    def __init__(self, clock: "IReactorTime", linger: float) -> None:
        self._clock = clock
        self.seconds = max(linger, 0.0)
        #: lingering keys -> (deadline, what ends them), in the order they began lingering
        #: (every linger being as long, deadline order)
        self._due: OrderedDict[Hashable, tuple[float, Callable[[Hashable], None]]] = OrderedDict()
        self._loop: LoopingCall | None = None

    def __contains__(self, key: Hashable) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def start(self, key: Hashable, on_end: Callable[[Hashable], None]) -> None:
        """
        C{key} lingers: C{on_end(key)} is called on the first tick at or past now + linger.
        A key already lingering keeps its deadline (Pushpin: C{if(!s->linger)}).
        """
        if key in self._due:
            return
        self._due[key] = (self._clock.seconds() + self.seconds, on_end)
        if self._loop is None:
            loop = self._loop = LoopingCall(self._tick)
            loop.clock = self._clock
            loop.start(REFRESH_INTERVAL, now=False).addErrback(self._tick_failed, loop)

    def cancel(self, key: Hashable) -> bool:
        """C{key} stops lingering without its C{on_end}; whether it was lingering."""
        # (the timer runs on to its next tick, which stops it when nothing lingers: its phase stays)
        return self._due.pop(key, None) is not None

    def _tick(self) -> None:
        """The refresh timer: every linger due by now ends (Pushpin's C{handleExpirations})."""
        # a hair of slack: a deadline of now + 60 and the loop's 60th tick are one instant
        now = self._clock.seconds() + 1e-9
        due = self._due
        while due:
            key, (deadline, on_end) = next(iter(due.items()))
            if deadline > now:
                break
            del due[key]
            try:  # one failing owner must not stop the others
                on_end(key)
            except Exception:
                self._log.failure("linger end failed for {key!r}", key=key)
        if not due:
            self._stop_loop()

    def _tick_failed(self, failure: "Failure", loop: LoopingCall) -> None:
        # (every on_end call is guarded: only a bug in this class gets here)
        self._log.failure("subscription linger timer failed", failure)
        if self._loop is loop:
            self._loop = None

    def _stop_loop(self) -> None:
        loop = self._loop
        self._loop = None
        if loop is not None and loop.running:
            loop.stop()

    def stop(self) -> None:
        """Cancel the timer; what lingers stays, and ends only if the timer starts again."""
        self._stop_loop()
