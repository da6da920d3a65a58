# -*- test-case-name: tests.ops.test_metrics -*-
"""
An endpoint wrapper that remembers and logs the address it bound, so that port-0 listeners
(tests, side-by-side runs) tell where they are: C{"<label> listening on HOST:PORT"}; and
L{listen_reuseport} / L{claim_port}, how the processes of one pushpin-tx (C{workers} > 1)
listen on one client port, and only they.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["RecordingEndpoint", "listen_reuseport", "claim_port"]

#: the accept backlog of SO_REUSEPORT client sockets (each process has its own queue)
REUSEPORT_BACKLOG = 511

_log = Logger()


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """Wraps a server endpoint to remember (and log) the port it bound."""

    def __init__(self, endpoint: Any, label: str) -> None:
        self._endpoint = endpoint
        self._label = label
        self.port: Any = None

    def listen(self, factory: Any) -> "Deferred[Any]":
        return self._endpoint.listen(factory).addCallback(self._bound)

    def _bound(self, port: Any) -> Any:
        self.port = port
        host = port.getHost()
        where = f"{host.host}:{host.port}" if hasattr(host, "port") else getattr(host, "name", host)
        _log.info("{label} listening on {where}", label=self._label, where=where)
        return port


def listen_reuseport(reactor: Any, host: str, port: int, factory: Any, backlog: int = REUSEPORT_BACKLOG) -> Any:
    """
    Listen on C{host:port} (C{""}: every IPv4 interface) with C{SO_REUSEPORT}, so that the
    other processes of this pushpin-tx can bind the same port and the kernel spreads new
    connections over them by address hash (an inherited shared socket would let the first
    process awake take a whole burst of connections). Twisted's endpoints have no option
    for this socket option, so the socket is made here and handed to C{adoptStreamPort},
    which then owns a duplicate of it.

    @return: the listening port (C{getHost()} gives the port bound when C{port} is 0).
    @raise OSError: the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
        return reactor.adoptStreamPort(sock.fileno(), family, factory)
    finally:
        sock.close()


def claim_port(host: str, port: int) -> socket.socket:
    """
    Make C{host:port} ours alone among pushpin-tx instances: a second instance started on
    the same client port would otherwise join the SO_REUSEPORT group without an error and
    silently take a share of the clients (which the first instance's publishes never
    reach). The claim is an abstract Unix socket named after the address (Linux); it is
    released when the returned socket is closed or the process ends, however it ends.

    @raise OSError: another pushpin-tx holds the claim (C{EADDRINUSE}).
    """
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0pushpin-tx client port {host or '*'}:{port}")
    except OSError as e:
        claim.close()
        if e.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, "address already in use by another pushpin-tx") from None
        raise
    return claim
