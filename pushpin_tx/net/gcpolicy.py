"""
Keep the garbage collector's full collections off held connections.

CPython (3.11) runs a full collection whenever the objects promoted to its oldest generation
since the last one exceed a quarter of those it then held, and a full collection walks every
tracked object: with 15,000 idle streams held (~54 tracked objects each) one walk is ~0.4 s
of CPU, and it lands on whichever connections are being opened then. Set-up cost per held
stream grew 2.4-2.7x from 1,000 to 15,000 held (bench/setup_cost.py), all of it that walk.

L{SettledFreeze} moves what is alive into the permanent generation (C{gc.freeze()}) at most
once per C{interval} once enough new connections have opened, after a collection of the
unfrozen objects only: full collections then walk only what is newer than the last freeze,
so the cost of opening one does not grow with the number held. Frozen objects are still freed
by reference counting; only reference cycles among frozen objects that die wait: after
enough closes (half the open connections, at least C{min_closed}) or C{max_freezes} freezes,
one full collection of everything runs (C{gc.unfreeze()}, C{gc.collect()}, C{gc.freeze()}),
amortized over those closes as the collector's own full collections are.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["SettledFreeze", "install", "opened", "closed", "current"]


class SettledFreeze:
    """Freezes the live objects as connections open; a full collection now and then as they close."""

    def __init__(self, reactor: Any, *, interval: float = 1.0, min_new: int = 64, min_closed: int = 1000,
                 closed_ratio: float = 0.5, max_freezes: int = 64, collector: Any = gc) -> None:
        """
        @param interval: seconds between two freezes at most (the first one after that long).
        @param min_new: connections opened since the last freeze that make the next one worth it.
        @param min_closed, closed_ratio: the closes since the last full collection that call for
            one: C{max(min_closed, closed_ratio * open connections)}.
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
        self.open = 0
        self.new = 0  # opened since the last freeze
        self.closes = 0  # closed since the last full collection
        self.freezes = 0  # since the last full collection
        self.full = 0  # full collections run
        self._call: Any = None

    def opened(self) -> None:
        """A connection opened."""
        self.open += 1
        self.new += 1
        if self._call is None and self.new >= self.min_new:
            self._call = self.reactor.callLater(self.interval, self._run)

    def closed(self) -> None:
        """A connection ended."""
        self.open -= 1
        self.closes += 1
        if self._call is None and self._full_due():
            self._call = self.reactor.callLater(self.interval, self._run)

    def _full_due(self) -> bool:
        return self.closes >= max(self.min_closed, self.closed_ratio * self.open) or (
            self.freezes >= self.max_freezes and self.new > 0)

    def _run(self) -> None:
        self._call = None
        if self._full_due():
            self.gc.unfreeze()
            self.gc.collect()
            self.gc.freeze()
            self.full += 1
            self.closes = self.freezes = self.new = 0
        elif self.new >= self.min_new:
            self.gc.collect()  # the unfrozen objects only: what is newer than the last freeze
            self.gc.freeze()
            self.freezes += 1
            self.new = 0

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


def opened() -> None:
    """A client connection opened (nothing until L{install})."""
    if _current is not None:
        _current.opened()


def closed() -> None:
    """A client connection ended (nothing until L{install})."""
    if _current is not None:
        _current.closed()
