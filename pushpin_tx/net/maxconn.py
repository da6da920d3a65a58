# -*- test-case-name: tests.net.test_maxconn -*-
"""
C{[runner] client_maxconn}: at most this many client connections at once, as Pushpin's
connection manager keeps it (C{src/connmgr/server.rs}, C{listener.rs}): it does not refuse
or close a connection over the limit, it stops accepting. A client over the limit connects
(the kernel completes the handshake into the listen backlog) and waits, unanswered, until a
connection closes and it is accepted and served; once the backlog is full too, new
connection attempts go unanswered and the client's TCP retries.

Here: every client listener of a process is watched by one L{ConnectionLimit}; when the
count reaches the limit each listening port stops reading (Twisted's C{stopReading}), so
nothing more is accepted; when a connection closes they read again. Twisted accepts up to
C{numberAccepts} connections per readiness event, so that number is capped to the room left
before each accept burst (L{pushpin_tx._compat.cap_accepts}) and a burst cannot overshoot.

Across processes (C{workers} > 1) the limit is shared out as connmgr shares it among its
worker threads (C{stream_maxconn / worker_count}): each process takes
C{client_maxconn // workers} (at least 1). The kernel spreads new connections over the
processes' SO_REUSEPORT sockets, so a process that is full leaves its own queue waiting
while another may still have room; connmgr's single listener hands over to any worker
with room. Counted: every connection a client listener accepted, HTTP and WebSocket alike
(a WebSocket keeps the slot of the HTTP connection it was upgraded from).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from pushpin_tx._compat import cap_accepts

__all__ = ["ConnectionLimit", "per_process"]


def per_process(client_maxconn: int, processes: int) -> int:
    """One process's share of C{client_maxconn}, as connmgr divides it among its workers."""
    return max(1, client_maxconn // max(1, processes))


class ConnectionLimit:
    """Counts a process's client connections and stops its client ports accepting at the limit."""

    _log = Logger()

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._ports: list[Any] = []
        self._paused = False
        #: how many times accepting stopped at the limit (for tests and the console)
        self.times_full = 0

    def watch(self, port: Any) -> None:
        """Apply the limit to listening port C{port} (a Twisted TCP or UNIX port)."""
        self._ports.append(port)
        cap_accepts(port, self.room)
        if self._paused and hasattr(port, "stopReading"):
            port.stopReading()

    def room(self) -> int:
        """How many more connections may be accepted now."""
        return max(0, self.limit - self.count)

    def opened(self) -> None:
        """A client connection was accepted."""
        self.count += 1
        if self.count >= self.limit and not self._paused:
            self._paused = True
            self.times_full += 1
            if self.times_full == 1:  # once: under a sustained overload it is reached on every close
                self._log.info("client_maxconn reached ({n} connections in this process): new clients wait"
                               " until one closes", n=self.count)
            for port in self._ports:
                if getattr(port, "connected", False) and hasattr(port, "stopReading"):
                    port.stopReading()

    def closed(self) -> None:
        """A client connection ended."""
        self.count -= 1
        if self._paused and self.count < self.limit:
            self._paused = False
            for port in self._ports:
                if getattr(port, "connected", False) and not getattr(port, "disconnecting", False) and hasattr(port, "startReading"):
                    port.startReading()
