"""
The assumptions L{pushpin_tx._compat} makes about Twisted's and autobahn's private names, each
checked against the installed versions.
"""

from __future__ import annotations

from twisted.web.test.requesthelper import DummyChannel
from twisted.web.server import Request

from twisted.web.client import HTTPConnectionPool

from pushpin_tx._compat import QuietConnectionPool, _QuietFactory, is_disconnected


def test_request_disconnected_follows_connection_lost() -> None:
    """A twisted.web request reads as disconnected exactly once its connection is lost."""
    request = Request(DummyChannel(), False)
    assert is_disconnected(request) is False
    request.connectionLost(Exception("gone"))
    assert is_disconnected(request) is True


def test_pool_builds_its_connections_with_the_quiet_factory() -> None:
    """HTTPConnectionPool still picks its connection factory from the C{_factory} attribute."""
    from twisted.internet.testing import MemoryReactorClock

    assert "_factory" in vars(HTTPConnectionPool)
    assert _QuietFactory.noisy is False
    reactor = MemoryReactorClock()
    pool = QuietConnectionPool(reactor)
    assert pool._factory is _QuietFactory
