"""
A service that loads the routes file, watches it, and hands each new table to the proxy.

Pushpin reloads its routes file when it changes (a file watcher, then a one-second pause because
editors and inotify produce bursts of events) and on SIGHUP; a reload only swaps the table, so open
connections keep the route they were given. This module does the same with a polled
C{(mtime_ns, size, inode)} signature on an injected clock, so tests drive it with
L{twisted.internet.task.Clock}. Parsing is L{pushpin_tx.protocol.routes}; this is the only I/O around it.
The file is small and read synchronously, as Twisted services usually do for their config.

Where we differ from Pushpin on purpose: Pushpin skips an invalid line with a warning, at start
and on every reload, so a file with one typo can leave a running proxy with no routes at all
(C{routes loaded with 0 entries}, then a 502 for every request). Here an invalid line (one that
Pushpin's parser refuses: Pushpin's texts, C{routes:3: target invalid port}) stops start-up, with
the file, line and reason (L{RoutesError}, raised in C{privilegedStartService}, before any port
is bound); on a reload, the table in force stays and the error is logged. A duplicate condition
is still only skipped with Pushpin's warning (the line is valid, an earlier one wins), and an
unreadable file is Pushpin's warning as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pushpin_tx.protocol.routes import RouteTable, parse_override_routes, parse_routes

__all__ = ["RELOAD_DELAY", "RoutesError", "RoutesFileService", "invalid_lines"]

RELOAD_DELAY = 1.0  # seconds between noticing a change and re-reading (Pushpin's 1000 ms timer)

_Signature = tuple[int, int, int]


class RoutesError(Exception):
    """
    The routes have invalid lines; C{str()} names each with its file, line and Pushpin's
    reason, on one line: C{"/etc/pushpin/routes:1: target invalid port"}.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


#: the one warning of L{parse_routes} that is no error: a valid line whose condition an
#: earlier line already has (skipped, as Pushpin does)
_DUPLICATE = " skipping duplicate condition"


def invalid_lines(warnings: Sequence[str]) -> list[str]:
    """The warnings of L{parse_routes} that are invalid lines (every one but a duplicate condition)."""
    return [warning for warning in warnings if not warning.endswith(_DUPLICATE)]


class RoutesFileService(Service):
    """Load the routes (file or C{--route} lines) at start, reload on change or on demand."""

    _log = Logger(namespace="pushpin_tx.protocol.routes")

    def __init__(
        self,
        path: str | None,
        *,
        override: Sequence[str] | None,
        clock: IReactorTime,
        on_load: Callable[[RouteTable], None],
        poll_interval: float = 1.0,
        log: Logger | None = None,
    ) -> None:
        """
        @param path: the routes file (ignored when C{override} is given).
        @param override: C{--route} lines that replace the file; nothing is watched then.
        @param clock: time source for polling and the delayed reload.
        @param on_load: receives every newly loaded table (the proxy swaps it in).
        @param poll_interval: seconds between checks of the file's signature.
        @param log: logger to use instead of the class one (tests pass a recording one).
        """
        self._path = path
        self._override = tuple(override) if override is not None else None
        self._clock = clock
        self._on_load = on_load
        self._poll_interval = poll_interval
        if log is not None:
            self._log = log
        self._table: RouteTable | None = None
        self._signature: _Signature | None = None
        self._loop: LoopingCall | None = None
        self._pending: IDelayedCall | None = None

    @property
    def table(self) -> RouteTable | None:
        """The table most recently handed to C{on_load} (None before the first load)."""
        return self._table

    def privilegedStartService(self) -> None:
        """
        Load the routes before anything is bound, so that invalid lines stop start-up.

        @raise RoutesError: a line is invalid (nothing is handed to C{on_load} then).
        """
        super().privilegedStartService()
        self._first_load()

    def startService(self) -> None:
        """Load now unless C{privilegedStartService} did, then start polling unless the routes are overridden.

        @raise RoutesError: the first load found invalid lines.
        """
        if self._table is None:
            self._first_load()
        super().startService()
        if self._override is None and self._path:
            loop = LoopingCall(self._poll)
            loop.clock = self._clock
            self._loop = loop
            loop.start(self._poll_interval, now=False).addErrback(
                lambda f: self._log.failure("routes file polling stopped", f)
            )

    def _first_load(self) -> None:
        if self._override is None and self._path:
            self._signature = self._stat()
        self.load(first=True)

    def stopService(self) -> None:
        """Stop polling and drop any reload still waiting, leaving no delayed calls behind."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._cancel_pending()

    def load(self, *, first: bool = False) -> RouteTable:
        """Parse now, log the warnings, hand the table to C{on_load} and return it.

        Invalid lines (module docstring): on the first load (C{first}) L{RoutesError} is
        raised; on a later one each is logged at error, the table in force stays and is
        returned. An unreadable file is logged (Pushpin's C{unable to open routes file: PATH},
        at warn as Pushpin does) and the current table stays in force; before any table exists
        that is an empty one.
        """
        if self._override is not None:
            routes, warnings = parse_override_routes(self._override)
        else:
            path = self._path or ""
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                self._log.warn("unable to open routes file: {path}", path=path)
                if self._table is None:
                    self._publish(RouteTable([]))
                assert self._table is not None
                return self._table
            routes, warnings = parse_routes(data.decode("utf-8", errors="replace"), path)
        invalid = invalid_lines(warnings)
        if invalid and (first or self._table is None):
            raise RoutesError(invalid)
        if invalid:
            assert self._table is not None
            for problem in invalid:
                self._log.error("{problem}", problem=problem)
            self._log.error("routes not reloaded: the {count} entries loaded before stay in force",
                            count=len(self._table))
            return self._table
        for warning in warnings:
            self._log.warn("{warning}", warning=warning)
        table = RouteTable(routes)
        if self._override is None:
            # Pushpin says this only after reading a file (not for --route lines).
            self._log.info("routes loaded with {count} entries", count=len(table))
        self._publish(table)
        return table

    def reload(self) -> None:
        """Re-read at once (SIGHUP); a reload already waiting for its delay is folded into this one."""
        self._cancel_pending()
        if self._override is None and self._path:
            self._signature = self._stat()
        self.load()

    def _publish(self, table: RouteTable) -> None:
        self._table = table
        self._on_load(table)

    def _stat(self) -> _Signature | None:
        try:
            st = os.stat(self._path or "")
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _poll(self) -> None:
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        if self._pending is None:
            self._log.info("routes file changed, reloading")
            self._pending = self._clock.callLater(RELOAD_DELAY, self._delayed_reload)

    def _delayed_reload(self) -> None:
        self._pending = None
        self._signature = self._stat()
        self.load()

    def _cancel_pending(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
