"""
Keep the garbage collector's full collections off held connections.

CPython (3.11) runs a full collection whenever the objects promoted to its oldest generation
since the last one exceed a quarter of those it then held, and a full collection walks every
tracked object: with 15,000 idle streams held (~54 tracked objects each) one walk is ~0.4 s
of CPU, and it lands on whichever connections are being opened then. Set-up cost per held
stream grew 2.4-2.7x from 1,000 to 15,000 held (bench/setup_cost.py), all of it that walk.

L{SettledFreeze} moves what is alive into the permanent generation (C{gc.freeze()}) at most
once per C{interval} once the open connections have grown by C{min_new}, after a collection of
the unfrozen objects only (of the young generations only, when no connection opened since the
last freeze has closed: the oldest then holds only what open connections settled into): full
collections then walk only what is newer than the last freeze, so the cost of opening one does
not grow with the number held. Frozen objects are still freed
by reference counting; only reference cycles among frozen objects that die wait: after
enough closes of frozen connections (half the open ones, at least C{min_closed}) or
C{max_freezes} freezes, one full collection of everything runs (C{gc.unfreeze()},
C{gc.collect()}, C{gc.freeze()}), amortized over those closes as the collector's own full
collections are.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["SettledFreeze", "install", "opened", "closed", "current"]


class SettledFreeze:
    """Freezes the live objects as held connections grow; a full collection now and then as frozen ones close."""

    def __init__(self, reactor: Any, *, interval: float = 1.0, min_new: int = 64, min_closed: int = 1000,
                 closed_ratio: float = 0.5, max_freezes: int = 64, collector: Any = gc) -> None:
        """
        @param interval: seconds between two freezes at most (the first one after that long).
        @param min_new: growth of the open connections since the last freeze that makes the
            next one worth it (short connections that come and go between two never do).
        @param min_closed, closed_ratio: the closes of frozen connections (opened before the
            last freeze) since the last full collection that call for one:
            C{max(min_closed, closed_ratio * open connections)}.
        @param max_freezes: freezes since the last full collection that call for one too.
        @param collector: the C{gc} module (a fake in tests).
        """
        self.reactor = reactor
        self.interval = interval
        self.min_new = min_new
        self.min_closed = min_closed
        self.closed_ratio = closed_ratio
        self.max_freezes = max_freezes
        self.gc = collector
        #: freezes so far: a connection opened in epoch E is frozen once C{epoch > E}
        self.epoch = 0
        self.open = 0
        self.open_at_freeze = 0
        self.closes = 0  # frozen connections closed since the last full collection
        #: connections opened since the last freeze (not frozen) that closed before the next
        self.young_closes = 0
        self.freezes = 0  # since the last full collection
        self.full = 0  # full collections run
        self._call: Any = None

    def opened(self) -> int:
        """A connection opened; returns the epoch to hand back to L{closed}."""
        self.open += 1
        if self._call is None and self.open - self.open_at_freeze >= self.min_new:
            self._call = self.reactor.callLater(self.interval, self._run)
        return self.epoch

    def closed(self, epoch: int) -> None:
        """A connection opened in C{epoch} (what L{opened} returned) ended."""
        self.open -= 1
        if epoch == self.epoch:
            self.young_closes += 1
        elif epoch < self.epoch:
            self.closes += 1
            if self._call is None and self._full_due():
                self._call = self.reactor.callLater(self.interval, self._run)

    def _full_due(self) -> bool:
        return self.closes >= max(self.min_closed, self.closed_ratio * self.open) or (
            self.freezes >= self.max_freezes and self.open - self.open_at_freeze >= self.min_new)

    def _run(self) -> None:
        self._call = None
        if self._full_due():
            self.gc.unfreeze()
            self.gc.collect()
            self.gc.freeze()
            self.full += 1
            self.closes = self.freezes = 0
        elif self.open - self.open_at_freeze >= self.min_new:
            if self.young_closes:
                # the unfrozen objects only, what is newer than the last freeze: connections
                # that closed after reaching the oldest generation left garbage there
                self.gc.collect()
            else:
                # no connection opened since the last freeze has closed: the garbage not to
                # freeze is the young generations' (what died before surviving two
                # collections); the oldest holds what the open connections settled into,
                # alive. Walking it again, every connection just opened, was most of the
                # freeze's cost (~8 us per held stream opened, bench/setup_cost.py)
                self.gc.collect(1)
            self.gc.freeze()
            self.freezes += 1
        else:
            return
        self.epoch += 1
        self.open_at_freeze = self.open
        self.young_closes = 0

    def stop(self) -> None:
        """Cancel a pending freeze (the frozen objects stay frozen)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


_current: SettledFreeze | None = None


def install(reactor: Any, **kw: Any) -> SettledFreeze:
    """Freeze what is alive now and start the process's policy (service.py, once started)."""
    global _current
    if _current is not None:
        _current.stop()
    gc.freeze()
    _current = SettledFreeze(reactor, **kw)
    return _current


def current() -> SettledFreeze | None:
    """The process's policy, None until L{install}."""
    return _current


def opened() -> int:
    """A client connection opened (nothing until L{install}); the epoch to hand to L{closed}."""
    return _current.opened() if _current is not None else 0


def closed(epoch: int) -> None:
    """A client connection opened in C{epoch} ended (nothing until L{install})."""
    if _current is not None:
        _current.closed(epoch)
