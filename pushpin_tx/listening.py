# -*- test-case-name: tests.test_metrics -*-
"""
An endpoint wrapper that remembers and logs the address it bound, so that port-0 listeners
(tests, side-by-side runs) tell where they are: C{"<label> listening on HOST:PORT"}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["RecordingEndpoint"]

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

