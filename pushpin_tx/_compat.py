# -*- test-case-name: tests.test_compat -*-
"""
Every private name of Twisted or autobahn that pushpin-tx relies on, in one place.

Each function or name here is an assumption about a library's internals; C{tests/test_compat.py}
checks each one against the installed version, and C{setup.cfg} caps the versions those tests
have passed on, so that an upgrade fails a test instead of misbehaving.
"""

from __future__ import annotations

from typing import Any

from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory

__all__ = ["QuietConnectionPool", "is_disconnected"]


def is_disconnected(request: Any) -> bool:
    """
    Whether C{request}'s client connection is gone: twisted.web's C{Request._disconnected},
    set by C{Request.connectionLost}. No public attribute says it (C{notifyFinish} fires, but
    too late for a check before a write), and C{request.finish()} after it raises.
    """
    return request._disconnected  # type: ignore[no-any-return]


class _QuietFactory(_HTTP11ClientFactory):  # type: ignore[misc]
    """Origin connections come and go all the time: no "Starting factory" line for each."""

    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    twisted.web's connection pool, building its connections with L{_QuietFactory}: the pool's
    private C{_factory} attribute is the only way to choose the factory it uses.
    """

    _factory = _QuietFactory
