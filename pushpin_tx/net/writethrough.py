# -*- test-case-name: tests.net.test_writethrough -*-
"""
Writing a published message to many connections: send on the socket at once when nothing is
waiting in the transport, else let the transport queue it.

C{transport.write} only buffers: it registers the socket for writability (an C{epoll_ctl}),
the reactor's next turn sends, and unregisters (another C{epoll_ctl}): three syscalls and two
reactor passes per delivery where one C{send} would do. With a thousand subscribers that
dominates fan-out (bench/README.md has the figures).
So, when the transport holds nothing, we call C{send} ourselves; what it does not take
(a partial send, EAGAIN) goes to C{transport.write}, which keeps the order, the flow control
(pausing our producer) and the error handling Twisted's. TLS transports, and anything that
is not a plain TCP connection, always take the normal path.

Within one reactor turn only the first write to a connection goes straight out: when several
publishes are handled in the same turn (a ZMQ batch, a multi-item publish), later writes to
that connection join the transport's buffer and leave together in one C{send} at the end of
the turn, which is what Twisted's own buffering gives a burst: a burst's writes to one
connection cost one C{send}, not one each (bench/README.md has the figures).

Hand-written because no library offers it: it reads the write buffer of Twisted's
C{FileDescriptor} to know it is empty (L{pushpin_tx._compat.write_buffer_empty}, tested
there). If a Twisted release renames its fields, L{writer_for} falls back to
C{transport.write}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp
from twisted.internet.interfaces import IReactorTime

from pushpin_tx._compat import knows_write_buffer, write_buffer_empty

__all__ = ["writer_for", "TurnCounter"]


class TurnCounter:
    """Numbers reactor turns, cheaply: advanced by one C{callLater(0)} per turn that needs it."""

    __slots__ = ("_clock", "turn", "_scheduled")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.turn = 0
        self._scheduled = False

    def current(self) -> int:
        """This turn's number; the next turn will have another."""
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._advance)
        return self.turn

    def _advance(self) -> None:
        self.turn += 1
        self._scheduled = False


def writer_for(transport: Any, turns: TurnCounter | None = None) -> Callable[[bytes], None]:
    """The fastest correct C{write(data)} for C{transport} (see the module docstring)."""
    sock = getattr(transport, "socket", None)
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "TLS", False)
        or sock is None
        or not _knows_write_buffer(transport)
    ):
        return transport.write
    return _DirectWriter(transport, sock, turns).write


#: transport classes already checked by L{knows_write_buffer} (every connection of a class
#: has the same fields: looking them up once per class, not once per connection)
_KNOWN: dict[type, bool] = {}


def _knows_write_buffer(transport: Any) -> bool:
    kind = type(transport)
    known = _KNOWN.get(kind)
    if known is None:
        known = _KNOWN[kind] = knows_write_buffer(transport)
    return known


class _DirectWriter:
    """
    One connection's write-through (L{writer_for}): an object with slots rather than a
    closure, because every held connection keeps one, and a closure's cells, captured bound
    method and turn box were six more objects per connection for the garbage collector to
    walk.
    """

    __slots__ = ("_transport", "_write", "_sock", "_turns", "_last_direct")

    def __init__(self, transport: Any, sock: Any, turns: TurnCounter | None) -> None:
        self._transport = transport
        # the transport's own write, captured now: net/tls.py puts this writer in its place
        self._write = transport.write
        self._sock = sock
        self._turns = turns
        self._last_direct = -1

    def write(self, data: bytes) -> None:
        transport = self._transport
        if not write_buffer_empty(transport) or not transport.connected or transport.disconnecting:
            self._write(data)
            return
        turns = self._turns
        if turns is not None:
            turn = turns.current()
            if self._last_direct == turn:
                self._write(data)  # a second write this turn: coalesce in the transport
                return
            self._last_direct = turn
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._write(data)  # Twisted's own write path notices and reports the error
            return
        if sent < len(data):
            self._write(data[sent:])
