"""The acceptor's recovery machinery on a Clock: next-link fetches retried with backoff."""

from __future__ import annotations

from pushpin_tx.web.accept import LINK_TRIES, Acceptor
from pushpin_tx.origin.client import AllTargetsFailed
from pushpin_tx.web._common import RequestInfo
from pushpin_tx.protocol.routes import Route, Target
from pushpin_tx.core.stats import Counters

from tests.fakes import hold_context


class FailingOrigin:
    """Every request fails to connect; records when it was asked."""

    def __init__(self, clock):
        self.clock = clock
        self.asked: list[float] = []

    async def request(self, targets, method, path, headers_for, body):
        headers_for(targets[0])
        self.asked.append(self.clock.seconds())
        raise AllTargetsFailed(["127.0.0.1:9"])


def test_next_link_fetch_backoff_schedule(clock):
    """A next link that cannot be reached is tried 5 times, 1, 2, 4 and 8 s apart (plus jitter), then given up."""
    from twisted.internet.defer import Deferred

    ctx = hold_context(clock)
    origin = FailingOrigin(clock)
    acceptor = Acceptor(settings=None, ctx=ctx, counters=Counters(), origin=origin)
    acceptor._random = lambda: 0.0
    acceptor.link_headers = lambda info, netloc: (lambda target: [(b"Host", netloc.encode())])
    route = Route(id="r", targets=(Target(kind="http", host="127.0.0.1", port=9),))
    info = RequestInfo(conn_id="c1", route=route)
    results = []
    Deferred.fromCoroutine(acceptor.fetch_next(info, "http://example.com/next", {"fruit": "3"})).addCallback(results.append)
    clock.pump([0.5] * 40)
    assert origin.asked == [0.0, 1.0, 3.0, 7.0, 15.0] and len(origin.asked) == LINK_TRIES
    assert results == [None]
