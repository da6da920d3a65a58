"""The acceptor on a Clock: next-link fetches retried with backoff; a stream hold that could never recover answered unheld."""

from __future__ import annotations

import json

import pytest
from twisted.logger import globalLogPublisher

from pushpin_tx.web.accept import LINK_TRIES, Acceptor
from pushpin_tx.origin.client import AllTargetsFailed
from pushpin_tx.web._common import RequestInfo
from pushpin_tx.protocol.routes import Route, Target
from pushpin_tx.core.stats import Counters

from tests.fakes import hold_context
from tests.proxyfakes import Origin, answer, build_rig


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


# a stream hold that could never recover (issue 15 item 6) -------------------------------------

def _prev_id_without_link_origin() -> Origin:
    origin = Origin()
    headers = ((b"Content-Type", b"text/plain"), (b"Grip-Hold", b"stream"), (b"Grip-Channel", b"pn; prev-id=1"))
    origin.handlers[b"/headers"] = answer(b"initial\n", *headers)
    instruct = {"hold": {"mode": "stream", "channels": [{"name": "pn", "prev-id": "1"}]}, "response": {"body": "initial\n"}}
    origin.handlers[b"/json"] = answer(json.dumps(instruct).encode(), (b"Content-Type", b"application/grip-instruct"))
    return origin


@pytest.mark.parametrize("path", [b"/headers", b"/json"])
def test_stream_hold_with_prev_id_and_no_next_link_is_answered_unheld(tmp_path, path):
    """Header or JSON form: the client gets the initial body as a complete 200 (Content-Length, as Pushpin 1.36 sends it), nothing is held."""
    rig = build_rig(tmp_path, ["* 127.0.0.1:8001"], {"127.0.0.1:8001": _prev_id_without_link_origin()})
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        client = rig.request(b"GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n" % path)
        rig.settle()
    finally:
        globalLogPublisher.removeObserver(events.append)
    head, _, body = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 8" in head and b"chunked" not in head
    assert body == b"initial\n"
    assert not client.closed
    assert rig.router.subscriber_count("pn") == 0 and rig.acceptor.connections == {}
    assert [e["why"] for e in events if "answering without holding" in e.get("log_format", "")] == [
        "channel 'pn' specifies prev-id, but no next link found"
    ]


def test_unheld_answer_carries_the_reason_in_debug_mode(tmp_path):
    """With debug on, the reason follows the body, as Pushpin writes it (two newlines, the message, a newline)."""
    rig = build_rig(tmp_path, ["*,debug 127.0.0.1:8001"], {"127.0.0.1:8001": _prev_id_without_link_origin()})
    client = rig.request(b"GET /headers HTTP/1.1\r\nHost: example.com\r\n\r\n")
    rig.settle()
    body = client.received.partition(b"\r\n\r\n")[2]
    assert body == b"initial\n\n\nchannel 'pn' specifies prev-id, but no next link found\n"


@pytest.mark.parametrize("option, level", [("", "debug"), (",log_level=1", "warn"), (",log_level=2", "info"), (",log_level=0", "error")])
def test_too_many_channels_logged_at_the_routes_log_level(tmp_path, option, level):
    """Route option log_level (Pushpin 1.41) sets the level of the too-many-subscriptions message; debug by default."""
    origin = Origin()
    channels = b", ".join(b"c%d" % n for n in range(25))
    origin.handlers[b"/many"] = answer(b"x\n", (b"Content-Type", b"text/plain"), (b"Grip-Hold", b"stream"), (b"Grip-Channel", channels))
    rig = build_rig(tmp_path, [f"*{option} 127.0.0.1:8001"], {"127.0.0.1:8001": origin})
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        rig.request(b"GET /many HTTP/1.1\r\nHost: example.com\r\n\r\n")
        rig.settle()
    finally:
        globalLogPublisher.removeObserver(events.append)
    found = [e for e in events if "too many channels" in e.get("log_format", "")]
    assert len(found) == 1 and found[0]["log_level"].name == level
