"""The acceptor on a Clock: next-link fetches retried with backoff; a stream hold that could never recover answered unheld."""

from __future__ import annotations

import json
from typing import Any

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
    """A next link that cannot be reached is tried 6 times (Pushpin: once and RETRY_MAX = 5 retries), 1, 2, 4, 8 and 16 s apart (plus jitter), then given up: an answer ending the stream."""
    from twisted.internet.defer import Deferred

    ctx = hold_context(clock)
    origin = FailingOrigin(clock)
    acceptor = Acceptor(settings=None, ctx=ctx, counters=Counters(), origin=origin)
    acceptor._random = lambda: 0.0
    acceptor.link_headers = lambda info, netloc: (lambda target: [(b"Host", netloc.encode())])
    route = Route(id="r", targets=(Target(kind="http", host="127.0.0.1", port=9),))
    info = RequestInfo(conn_id="c1", route=route, debug=False)
    results = []
    Deferred.fromCoroutine(acceptor.fetch_next(info, "http://example.com/next", {"fruit": "3"})).addCallback(results.append)
    clock.pump([0.5] * 80)
    assert origin.asked == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0] and len(origin.asked) == LINK_TRIES
    [ended] = results
    assert ended.hold is None and ended.next_link is None and ended.response.body == b""


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


# proxied bodies through their own channels' filters (Pushpin 1.41, fbc0d7b9) ------------------

PLAIN = (b"Content-Type", b"text/plain")
STREAM = (b"Grip-Hold", b"stream")
HEX = (b"Grip-Set-Meta", b"id_format=x, id_encoding=hex")
HINT = {"channel": "c", "formats": {"http-stream": {"action": "hint"}}}


def _stream_rig(tmp_path, page, *, first=(STREAM, (b"Grip-Channel", b"c"), (b"Grip-Link", b"</next>; rel=next")),
                first_body=b"first %(a)I\n", debug=False):
    """A stream held on channel c with a next link; /next answers C{page} (a handler)."""
    origin = Origin()
    origin.handlers[b"/stream"] = answer(first_body, PLAIN, *first)
    origin.handlers[b"/next"] = page
    rig = build_rig(tmp_path, [f"*{',debug' if debug else ''} 127.0.0.1:8001"], {"127.0.0.1:8001": origin})
    client = rig.request(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
    rig.settle()
    return rig, origin, client


def _body(client) -> tuple[bytes, bool]:
    from tests.proxyfakes import dechunk

    return dechunk(client.received.partition(b"\r\n\r\n")[2])


def test_next_link_page_is_filtered_by_its_own_channels_filters(tmp_path):
    """The first answer's channel has no filter, the next link's has build-id: the page goes out through build-id, the first body as it was."""
    page = answer(b"page %(b)I\n", PLAIN, STREAM, HEX, (b"Grip-Channel", b"c; filter=build-id"), (b"Grip-Link", b"</next>; rel=next"))
    rig, origin, client = _stream_rig(tmp_path, page)
    rig.publish(HINT)
    assert _body(client) == (b"first %(a)I\npage 62\n", False)
    [hold] = rig.acceptor.connections.values()
    assert hold.channels["c"].filters == ("build-id",)


def test_next_link_page_is_not_filtered_by_the_previous_answers_filters(tmp_path):
    """The other way round: the first answer's build-id rewrites the first body only; a page whose channel has no filter goes out as it came (1.36 applied the old filters)."""
    first = (STREAM, HEX, (b"Grip-Channel", b"c; filter=build-id"), (b"Grip-Link", b"</next>; rel=next"))
    page = answer(b"page %(b)I\n", PLAIN, STREAM, (b"Grip-Channel", b"c"), (b"Grip-Link", b"</next>; rel=next"))
    rig, origin, client = _stream_rig(tmp_path, page, first=first)
    assert _body(client) == (b"first 61\n", False)
    rig.publish(HINT)
    assert _body(client) == (b"first 61\npage %(b)I\n", False)


def test_next_link_page_is_filtered_under_its_own_meta(tmp_path):
    """build-id on a page reads the page's Grip-Set-Meta (its own instruct's), not the first answer's."""
    first = (STREAM, HEX, (b"Grip-Channel", b"c; filter=build-id"), (b"Grip-Link", b"</next>; rel=next"))
    page = answer(b"page %(b)I\n", PLAIN, STREAM, (b"Grip-Set-Meta", b"id_format=x"), (b"Grip-Channel", b"c; filter=build-id"),
                  (b"Grip-Link", b"</next>; rel=next"))
    rig, origin, client = _stream_rig(tmp_path, page, first=first)
    rig.publish(HINT)
    assert _body(client) == (b"first 61\npage b\n", False)


@pytest.mark.parametrize("debug", [False, True])
def test_next_link_page_whose_filter_fails_ends_the_stream_unrelayed(tmp_path, debug):
    """build-id without sub meta id_format on the page: nothing of the page goes out, the stream ends (the reason after it in debug mode), not retried."""
    page = answer(b"page\n", PLAIN, STREAM, (b"Grip-Channel", b"c; filter=build-id"), (b"Grip-Link", b"</next>; rel=next"))
    rig, origin, client = _stream_rig(tmp_path, page, debug=debug)
    rig.publish(HINT)
    tail = b"\n\nfilter error: build-id: no sub meta 'id_format'\n" if debug else b""
    assert _body(client) == (b"first %(a)I\n" + tail, True)
    assert rig.acceptor.connections == {} and rig.router.subscriber_count("c") == 0
    assert [r.uri for r in origin.requests] == [b"/stream", b"/next"]


@pytest.mark.parametrize(
    "headers, why",
    [
        ((b"Grip-Hold", b"response"), "Next link returned non-stream hold."),
        ((b"Grip-Hold", b"forever"), "Grip-Hold must be set to either 'response' or 'stream'"),
        ((b"Content-Type", b"application/grip-instruct"), "failed to parse application/grip-instruct content as JSON"),
    ],
)
def test_next_link_that_cannot_be_gone_on_with_ends_the_stream_unrelayed(tmp_path, headers, why):
    """A response hold, an invalid instruct, a JSON instruct (read from the headers alone, as Pushpin does): the page is not relayed, the stream ends with Pushpin's reason in debug mode, once (no retry)."""
    body = json.dumps({"hold": {"mode": "stream", "channels": [{"name": "c"}]}, "response": {"body": "json\n"}}).encode()
    page = answer(body, headers, (b"Grip-Channel", b"c"))
    rig, origin, client = _stream_rig(tmp_path, page, debug=True)
    rig.publish(HINT)
    assert _body(client) == (b"first %(a)I\n\n\n" + why.encode() + b"\n", True)
    assert rig.acceptor.connections == {}
    assert [r.uri for r in origin.requests] == [b"/stream", b"/next"]


def test_next_link_error_status_is_retried_even_with_a_stream_instruct(tmp_path):
    """A 503 with valid GRIP headers is a failed fetch (retried), its instruct not adopted; the retry's answer is."""
    answers = [(503, b"busy %(x)I\n", (b"Grip-Channel", b"busy; filter=build-id")), (200, b"page\n", (b"Grip-Channel", b"c"))]

    def page(request):
        code, body, channel = answers.pop(0)
        request.setResponseCode(code)
        for name, value in (PLAIN, STREAM, channel, (b"Grip-Link", b"</next>; rel=next")):
            request.responseHeaders.addRawHeader(name, value)
        return body

    rig, origin, client = _stream_rig(tmp_path, page)
    rig.publish(HINT)
    rig.advance(2.0)
    assert _body(client) == (b"first %(a)I\npage\n", False)
    assert rig.router.subscriber_count("busy") == 0 and rig.router.subscriber_count("c") == 1


def test_next_link_is_resolved_against_the_link_it_came_from(tmp_path):
    """A page's relative Grip-Link resolves against that page's URI (Pushpin's currentUri), not the client's request."""
    first = (STREAM, (b"Grip-Channel", b"c"), (b"Grip-Link", b"</pages/one>; rel=next"))
    rig, origin, client = _stream_rig(tmp_path, answer(b"", PLAIN), first=first)
    origin.handlers[b"/pages/one"] = answer(b"one\n", PLAIN, STREAM, (b"Grip-Channel", b"c"), (b"Grip-Link", b"<two>; rel=next"))
    origin.handlers[b"/pages/two"] = answer(b"two\n", PLAIN, STREAM, (b"Grip-Channel", b"c"), (b"Grip-Link", b"<two>; rel=next"))
    rig.publish(HINT)
    rig.publish(HINT)
    assert [r.uri for r in origin.requests] == [b"/stream", b"/pages/one", b"/pages/two"]
    assert _body(client) == (b"first %(a)I\none\ntwo\n", False)


def test_initial_stream_body_goes_through_its_channels_response_filters(tmp_path):
    """The initial body of a stream hold is rewritten by build-id of its channels, once though two channels name it; var-subst is for published content only."""
    first = (STREAM, HEX, (b"Grip-Set-Meta", b"user=u"), (b"Grip-Channel", b"c; filter=var-subst; filter=build-id"),
             (b"Grip-Channel", b"d; filter=build-id"))
    rig, origin, client = _stream_rig(tmp_path, answer(b""), first=first, first_body=b"%(a)I 100%%\n")
    assert _body(client) == (b"61 100%\n", False)
    assert rig.router.subscriber_count("c") == 1


@pytest.mark.parametrize("debug", [False, True])
def test_initial_stream_body_whose_filter_fails_ends_after_the_head(tmp_path, debug):
    """build-id without id_format on the initial body: the head has gone out, the response ends there (the reason in debug mode), nothing is held."""
    first = (STREAM, (b"Grip-Channel", b"c; filter=build-id"))
    rig, origin, client = _stream_rig(tmp_path, answer(b""), first=first, debug=debug)
    head = client.received.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    tail = b"\n\nfilter error: build-id: no sub meta 'id_format'\n" if debug else b""
    assert _body(client) == (tail, True)
    assert rig.acceptor.connections == {} and rig.router.subscriber_count("c") == 0


def test_empty_initial_stream_body_is_not_filtered(tmp_path):
    """An empty initial body is not run through build-id (HttpSession filters only a non-empty one), so a missing id_format does no harm."""
    first = (STREAM, (b"Grip-Channel", b"c; filter=build-id"))
    rig, origin, client = _stream_rig(tmp_path, answer(b""), first=first, first_body=b"")
    assert _body(client) == (b"", False)
    assert rig.router.subscriber_count("c") == 1


def test_answer_without_hold_is_filtered_and_a_filter_error_is_a_bad_instruct(tmp_path):
    """No hold and no link: the body goes through build-id; a failing filter (even on an empty body) is a 502, with Pushpin's text in debug mode."""
    origin = Origin()
    origin.handlers[b"/ok"] = answer(b"id %(a)I\n", PLAIN, HEX, (b"Grip-Channel", b"c; filter=build-id"))
    origin.handlers[b"/bad"] = answer(b"", PLAIN, (b"Grip-Channel", b"c; filter=build-id"))
    rig = build_rig(tmp_path, ["*,debug 127.0.0.1:8001"], {"127.0.0.1:8001": origin})
    ok = rig.request(b"GET /ok HTTP/1.1\r\nHost: example.com\r\n\r\n")
    rig.settle()
    assert ok.received.endswith(b"Content-Length: 6\r\n\r\nid 61\n")
    bad = rig.request(b"GET /bad HTTP/1.1\r\nHost: example.com\r\n\r\n")
    rig.settle()
    head, _, body = bad.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert body == b"Failed to parse accept instructions: filter error: build-id: no sub meta 'id_format'\n"


def test_paged_answer_filters_each_page_by_its_own_channels(tmp_path):
    """No hold with a next link: the first page under its channels' filters, the second under its own."""
    origin = Origin()
    origin.handlers[b"/first"] = answer(b"one %(a)I\n", PLAIN, HEX, (b"Grip-Channel", b"c; filter=build-id"), (b"Grip-Link", b"</second>; rel=next"))
    origin.handlers[b"/second"] = answer(b"two %(b)I\n", PLAIN, (b"Grip-Channel", b"c"), (b"Grip-Link", b"</third>; rel=next"))
    origin.handlers[b"/third"] = answer(b"three %(c)I\n", PLAIN, (b"Grip-Set-Meta", b"id_format=x"), (b"Grip-Channel", b"c; filter=build-id"))
    rig = build_rig(tmp_path, ["* 127.0.0.1:8001"], {"127.0.0.1:8001": origin})
    client = rig.request(b"GET /first HTTP/1.1\r\nHost: example.com\r\n\r\n")
    rig.settle()
    assert _body(client) == (b"one 61\ntwo %(b)I\nthree c\n", True)


def test_paged_answer_ends_with_the_reason_when_a_page_is_a_response_hold(tmp_path):
    """A page with a response hold ends the paged answer; in debug mode the reason follows what was sent."""
    origin = Origin()
    origin.handlers[b"/first"] = answer(b"one\n", PLAIN, (b"Grip-Link", b"</second>; rel=next"))
    origin.handlers[b"/second"] = answer(b"two\n", PLAIN, (b"Grip-Hold", b"response"), (b"Grip-Channel", b"c"))
    rig = build_rig(tmp_path, ["*,debug 127.0.0.1:8001"], {"127.0.0.1:8001": origin})
    client = rig.request(b"GET /first HTTP/1.1\r\nHost: example.com\r\n\r\n")
    rig.settle()
    assert _body(client) == (b"one\n\n\nNext link returned non-stream hold.\n", True)
    assert rig.router.subscriber_count("c") == 0


# the test origin's stream, accepted without a coroutine (accept_now) ---------------------------

def test_buffered_stream_instruct_is_held_at_once(tmp_path):
    """An instruct whose body is in already (the test origin) is held within the request's own turn, the stream's head and initial body sent, its channel subscribed."""
    rig = build_rig(tmp_path, ["* test"])
    client = rig.request(b"GET /stream?channel=fast HTTP/1.1\r\nHost: example.com\r\n\r\n")
    head, _, body = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in head
    assert body == b"10\r\n[stream opened]\n\r\n"
    assert rig.router.subscriber_count("fast") == 1
    [hold] = rig.acceptor.connections.values()
    # without a next link a stream never fetches one: no closure kept per held stream
    assert hold.kind == "stream" and hold.fetch_next is None


def test_accept_now_leaves_what_waits_to_a_deferred(tmp_path):
    """accept_now answers None when the instruct was acted on at once, else a Deferred: a body still to read goes through accept."""
    from twisted.internet.defer import Deferred

    from pushpin_tx.origin.client import OriginResponse

    rig = build_rig(tmp_path, ["* test"])
    info = RequestInfo(conn_id="c1", route=Route(id="r", targets=(Target(kind="test"),)), debug=False, body=b"", uri="http://example.com/")
    request: Any = object()  # (never reached: the body never arrives)
    unread = OriginResponse(200, b"OK", [(b"Grip-Hold", b"stream")], None, Target(kind="test"), lambda protocol: None)
    d = rig.acceptor.accept_now(request, info, unread)
    assert isinstance(d, Deferred) and not d.called
