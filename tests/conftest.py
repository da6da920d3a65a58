"""
Shared fixtures: the reactor pytest-twisted runs, a Clock that must end with no pending
calls, and guards that fail a test which leaves the reactor dirty (new delayed calls,
open listeners) or logs an unhandled failure (pytest-twisted checks neither itself).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher


@pytest.fixture(scope="session")
def reactor():
    """The global reactor, as installed by pytest-twisted."""
    from twisted.internet import reactor as installed

    return installed


@pytest.fixture
def clock():
    """A fake clock; the test must leave no timer behind on it."""
    c = Clock()
    yield c
    assert [call for call in c.getDelayedCalls() if call.active()] == [], "test left timers on its Clock"


@pytest.fixture(autouse=True)
def reactor_hygiene():
    """Fail a test that leaves new delayed calls or listening ports on the real reactor."""
    from twisted.internet import reactor

    from twisted.internet.tcp import Port

    calls_before = set(reactor.getDelayedCalls())
    readers_before = set(reactor.getReaders())
    yield

    def leftovers():
        calls = [c for c in reactor.getDelayedCalls() if c not in calls_before and c.active()]
        ports = [r for r in reactor.getReaders() if r not in readers_before and isinstance(r, Port)]
        return calls, ports

    # A peer's close reaches the server a reactor turn or two later: wait for that with a
    # deadline (an event, not a fixed sleep), then judge.
    deadline = reactor.seconds() + 2.0
    while any(leftovers()) and reactor.seconds() < deadline:
        d = Deferred()
        reactor.callLater(0.01, d.callback, None)
        pytest_twisted.blockon(d)
    calls, ports = leftovers()
    assert calls == [], f"test left delayed calls on the reactor: {calls}"
    assert ports == [], f"test left listening ports: {ports}"


@pytest.fixture(autouse=True)
def no_logged_failures():
    """Fail a test during which something logged an unhandled exception."""
    failures = []

    def observe(event):
        if event.get("log_failure") is not None and not event.get("expected_failure"):
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)
    assert failures == [], "unhandled failures were logged:\n" + "\n".join(f.getTraceback() for f in failures)
