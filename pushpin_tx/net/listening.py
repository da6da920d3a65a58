# -*- test-case-name: tests.ops.test_metrics -*-
"""
An endpoint wrapper that remembers and logs the address it bound, so that port-0 listeners
(tests, side-by-side runs) tell where they are: C{"<label> listening on HOST:PORT"};
L{ListenError}, the one-line reason a listener could not start (C{"<label>: cannot listen on
HOST:PORT: address already in use"}); and L{listen_reuseport} / L{claim_port}, how the
processes of one pushpin-tx (C{workers} > 1) listen on one client port, and only they.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["ListenError", "RecordingEndpoint", "listen_reuseport", "claim_port", "reason"]

#: the accept backlog of SO_REUSEPORT client sockets (each process has its own queue)
REUSEPORT_BACKLOG = 511

_log = Logger()


class ListenError(Exception):
    """
    A listener could not start. C{str()} is the whole story on one line, what and where:
    C{"client: cannot listen on 127.0.0.1:7999: address already in use"}.
    """

    def __init__(self, label: str, where: str, why: str, verb: str = "listen on") -> None:
        super().__init__(f"{label}: cannot {verb} {where}: {why}")
        self.label = label
        self.where = where
        self.why = why


def reason(e: BaseException) -> str:
    """
    Why a bind failed, in the words of the error and nothing else: C{"address already in
    use"}, not Twisted's C{"Couldn't listen on ...: [Errno 98] Address already in use."}.
    """
    if isinstance(e, CannotListenError) and e.socketError is not None:
        e = e.socketError
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _where(e: BaseException, fallback: str) -> str:
    """The address of a failed listen: host:port when Twisted said, else the description."""
    if isinstance(e, CannotListenError) and e.port is not None:
        return f"{e.interface or '0.0.0.0'}:{e.port}"
    return fallback


def listen_error(label: str, e: BaseException, description: str) -> ListenError:
    """The L{ListenError} for a failed listen on endpoint C{description}."""
    return e if isinstance(e, ListenError) else ListenError(label, _where(e, description), reason(e))


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    """Wraps a server endpoint to remember (and log) the port it bound."""

    def __init__(self, endpoint: Any, label: str, description: str = "") -> None:
        """@param description: the endpoint as configured, named in a L{ListenError} when Twisted names no address."""
        self._endpoint = endpoint
        self._label = label
        self._description = description or str(endpoint)
        self.port: Any = None

    def listen(self, factory: Any) -> "Deferred[Any]":
        """Listen; a failure becomes a L{ListenError} naming this listener and its address."""
        d = self._endpoint.listen(factory).addCallback(self._bound)

        def failed(failure: Any) -> Any:
            raise listen_error(self._label, failure.value, self._description)

        return d.addErrback(failed)

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
