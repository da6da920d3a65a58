# -*- test-case-name: tests.test_writethrough -*-
"""
Writing a published message to many connections: send on the socket at once when nothing is
waiting in the transport, else let the transport queue it.

C{transport.write} only buffers: it registers the socket for writability (an C{epoll_ctl}),
the reactor's next turn sends, and unregisters (another C{epoll_ctl}): three syscalls and two
reactor passes per delivery where one C{send} would do. With a thousand subscribers that
dominates fan-out (measured in shared/PERFORMANCE.md: ~18 us vs ~4 us CPU per delivery).
So, when the transport holds nothing, we call C{send} ourselves; what it does not take
(a partial send, EAGAIN) goes to C{transport.write}, which keeps the order, the flow control
(pausing our producer) and the error handling Twisted's. TLS transports, and anything that
is not a plain TCP connection, always take the normal path.

Hand-written because no library offers it: it reads two fields of Twisted's
C{FileDescriptor} (C{dataBuffer}/C{offset} and C{_tempDataBuffer}) to know the buffer is
empty. If a Twisted release renames them, L{writer_for} falls back to C{transport.write}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import tcp

__all__ = ["writer_for"]


def writer_for(transport: Any) -> Callable[[bytes], None]:
    """The fastest correct C{write(data)} for C{transport}."""
    sock = getattr(transport, "socket", None)
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "TLS", False)
        or sock is None
        or not hasattr(transport, "_tempDataBuffer")
        or not hasattr(transport, "dataBuffer")
    ):
        return transport.write
    normal_write = transport.write
    send = sock.send

    def write(data: bytes) -> None:
        if (
            transport._tempDataBuffer
            or len(transport.dataBuffer) != transport.offset
            or not transport.connected
            or transport.disconnecting
        ):
            normal_write(data)
            return
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
