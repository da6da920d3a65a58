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
        or not knows_write_buffer(transport)
    ):
        return transport.write
    normal_write = transport.write
    send = sock.send
    last_direct = [-1]

    def write(data: bytes) -> None:
        if not write_buffer_empty(transport) or not transport.connected or transport.disconnecting:
            normal_write(data)
            return
        if turns is not None:
            turn = turns.current()
            if last_direct[0] == turn:
                normal_write(data)  # a second write this turn: coalesce in the transport
                return
            last_direct[0] = turn
        try:
            sent = send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            normal_write(data)  # Twisted's own write path notices and reports the error
            return
        if sent < len(data):
            normal_write(data[sent:])

    return write
