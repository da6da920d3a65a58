"""The WebSocket-over-HTTP origin link on a Clock, with a scripted origin client."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from pushpin_tx.origin.client import AllTargetsFailed, buffered_response
from pushpin_tx.protocol.routes import Target
from pushpin_tx.websocket.over_http import WohLink
from pushpin_tx.core.ws_session import OPCODE_TEXT, WsSession
from pushpin_tx.protocol.wsevents import decode_events

from tests.fakes import hold_context


class ScriptedOrigin:
    """OriginClient stand-in: records each POST; the test answers them one by one."""

    def __init__(self):
        self.posts: list[tuple[list, bytes, Deferred]] = []
        self.target = Target(kind="http", host="127.0.0.1", port=9)

    def request(self, targets, method, path, headers_for, body):
        """As OriginClient.request: a Deferred of the answer (here, the one the test gives)."""
        producer = body()
        data = producer._data if producer is not None else b""
        d: Deferred = Deferred()
        self.posts.append((headers_for(self.target), data, d))
        return d

    def answer(self, body: bytes = b"", headers=None, code=200):
        _, _, d = self.posts[-1]
        hs = [(b"Content-Type", b"application/websocket-events")] + (headers or [])
        d.callback(buffered_response(code, b"OK", hs, body, self.target))

    def fail(self):
        _, _, d = self.posts[-1]
        d.errback(AllTargetsFailed(["127.0.0.1:9"]))


class FakeClient:
    def __init__(self):
        self.frames = []
        self.closed = None
        self.dropped = False

    def write_frame(self, frame):
        self.frames.append(frame)

    def close(self, code, reason):
        self.closed = (code, reason)

    def drop(self):
        self.dropped = True

    def register_producer(self, producer):
        pass


def link(clock, **kw):
    ctx = hold_context(clock)
    session = WsSession(ctx, "cid-1")
    origin = ScriptedOrigin()
    woh = WohLink(session, origin, clock, targets=(origin.target,), path=b"/chat", headers_for=lambda t: [(b"Host", b"example.com")],
                  conn_id="cid-1", one_event=False, grip=True, random_=lambda: 0.0, **kw)
    client = FakeClient()
    session.open(client, woh)
    return session, woh, origin, client


def test_one_request_in_flight_and_the_rest_batched(clock):
    """Client messages sent while a request is out go together in the next one."""
    session, woh, origin, _ = link(clock)
    session.client_message(OPCODE_TEXT, b"a")
    session.client_message(OPCODE_TEXT, b"b")
    session.client_message(OPCODE_TEXT, b"c")
    assert len(origin.posts) == 1 and decode_events(origin.posts[0][1])[0].content == b"a"
    headers = dict(origin.posts[0][0])
    assert headers[b"Connection-Id"] == b"cid-1" and headers[b"Content-Type"] == b"application/websocket-events"
    origin.answer()
    assert [e.content for e in decode_events(origin.posts[1][1])] == [b"b", b"c"]
    origin.answer()
    session.end()


def test_meta_set_by_the_origin_comes_back_on_later_requests(clock):
    """Set-Meta-User in an answer becomes Meta-User on every later request; an empty value deletes it."""
    session, woh, origin, _ = link(clock)
    session.client_message(OPCODE_TEXT, b"x")
    origin.answer(headers=[(b"Set-Meta-User", b"alice")])
    session.client_message(OPCODE_TEXT, b"y")
    assert dict(origin.posts[1][0])[b"Meta-User"] == b"alice"
    origin.answer(headers=[(b"Set-Meta-User", b"")])
    session.client_message(OPCODE_TEXT, b"z")
    assert b"Meta-User" not in dict(origin.posts[2][0])
    origin.answer()
    session.end()


def test_keep_alive_interval_posts_when_idle_with_a_floor_of_20_seconds(clock):
    """Keep-Alive-Interval: 5 means an empty POST every 20 s of idleness (Pushpin's minimum)."""
    session, woh, origin, _ = link(clock)
    woh.apply_response_headers(buffered_response(200, b"OK", [(b"Keep-Alive-Interval", b"5")], b"", origin.target))
    woh.start([])
    clock.advance(19.9)
    assert origin.posts == []
    clock.advance(0.1)
    assert len(origin.posts) == 1 and origin.posts[0][1] == b""
    origin.answer()
    clock.advance(20)
    assert len(origin.posts) == 2
    origin.answer()
    session.end()
    woh.detach()
    assert clock.getDelayedCalls() == []


def test_connection_failures_are_retried_with_backoff_then_the_client_is_dropped(clock):
    """A failed POST is retried after 1, 2, 4, 8 s; after 5 tries the client is dropped."""
    session, woh, origin, client = link(clock)
    session.client_message(OPCODE_TEXT, b"hello")
    delays = []
    for attempt in range(4):
        origin.fail()
        before = len(origin.posts)
        delay = 2**attempt
        clock.advance(delay - 0.01)
        assert len(origin.posts) == before
        clock.advance(0.01)
        assert len(origin.posts) == before + 1
        delays.append(delay)
        assert origin.posts[-1][1] == origin.posts[0][1]  # the same events again
    origin.fail()
    assert client.dropped and delays == [1, 2, 4, 8]
    assert clock.getDelayedCalls() == []


def test_origin_events_reach_the_client_and_close_ends_it(clock):
    """TEXT events in GRIP mode arrive without their prefix; CLOSE closes the client with its code."""
    session, woh, origin, client = link(clock)
    session.grip = True
    session.client_message(OPCODE_TEXT, b"hi")
    origin.answer(b"TEXT 5\r\nm:yes\r\nCLOSE 2\r\n\x0f\xa1\r\nTEXT 5\r\nm:no!\r\n")
    clock.advance(0)
    assert client.frames == [b"\x81\x03yes"] and client.closed == (4001, "")
    session.end()


def test_split_accepted_cuts_a_message_and_keeps_the_rest() -> None:
    """Content-Bytes-Accepted: the first N message bytes are taken, a message is cut where they end, later ones wait."""
    from pushpin_tx.protocol.wsevents import WsEvent
    from pushpin_tx.websocket.over_http import split_accepted

    events = [WsEvent("TEXT", b"abc"), WsEvent("BINARY", b"defg"), WsEvent("TEXT", b"h")]
    assert split_accepted(events, 5) == ([WsEvent("BINARY", b"fg"), WsEvent("TEXT", b"h")], 5)
    assert split_accepted(events, 3) == ([WsEvent("BINARY", b"defg"), WsEvent("TEXT", b"h")], 3)
    assert split_accepted(events, 0) == (events, 0)
    # an empty message where the accepted bytes end counts as taken (Pushpin's removeContentFromFrames)
    assert split_accepted([WsEvent("TEXT", b""), WsEvent("TEXT", b"x")], 0) == ([WsEvent("TEXT", b"x")], 0)


def test_accepted_bytes_reads_the_header_as_pushpin() -> None:
    """Absent, not a number or negative means everything; more than offered is an error."""
    import pytest

    from pushpin_tx.websocket.over_http import NotAccepted, accepted_bytes

    assert accepted_bytes(None, 7) == 7
    assert accepted_bytes(b"x", 7) == 7
    assert accepted_bytes(b"-1", 7) == 7
    assert accepted_bytes(b" 2 ", 7) == 2
    with pytest.raises(NotAccepted):
        accepted_bytes(b"8", 7)


def test_kept_back_bytes_replayed_with_the_next_request(clock):
    """Bytes the origin kept back go first in the next request (only once there is new data), with Content-Bytes-Replayed."""
    session, woh, origin, _ = link(clock)
    session.client_message(OPCODE_TEXT, b"hello")
    origin.answer(headers=[(b"Content-Bytes-Accepted", b"1")])
    assert len(origin.posts) == 1  # a replay alone starts no request
    session.client_message(OPCODE_TEXT, b"!")
    headers = dict(origin.posts[1][0])
    assert headers[b"Content-Bytes-Replayed"] == b"4"
    assert [e.content for e in decode_events(origin.posts[1][1])] == [b"ello", b"!"]
    origin.answer()
    session.client_message(OPCODE_TEXT, b"z")
    assert b"Content-Bytes-Replayed" not in dict(origin.posts[2][0])
    origin.answer()
    session.end()


def test_accepting_more_than_offered_closes(clock):
    """An origin accepting more bytes than it was sent is broken: the client is closed with 1011."""
    session, woh, origin, client = link(clock)
    session.client_message(OPCODE_TEXT, b"ab")
    origin.answer(headers=[(b"Content-Bytes-Accepted", b"3")])
    assert client.closed is not None and client.closed[0] == 1011


def test_refresh_asks_the_origin_now_or_after_the_request_out(clock):
    """refresh(): an empty request at once when idle; one more after the answer when a request is out; none once closed."""
    session, woh, origin, _ = link(clock)
    woh.refresh()
    assert len(origin.posts) == 1 and origin.posts[0][1] == b""
    woh.refresh()  # a request is out: queued
    assert len(origin.posts) == 1
    origin.answer()
    assert len(origin.posts) == 2 and origin.posts[1][1] == b""
    origin.answer()
    assert len(origin.posts) == 2
    session.end()
    woh.detach()
    woh.refresh()
    assert len(origin.posts) == 2


def test_a_recovery_posts_no_events_with_grip_last_and_applies_the_answer(clock):
    """recover() sends an empty POST with one Grip-Last per channel; the answer's messages reach the client and the Deferred fires."""
    from pushpin_tx.protocol.wsevents import WsEvent, encode_events

    session, woh, origin, client = link(clock)
    done = []
    woh.recover({"b": "7", "a": "3"}).addCallback(done.append)
    headers, body, _ = origin.posts[-1]
    assert body == b""
    assert [v for k, v in headers if k == b"Grip-Last"] == [b"a; last-id=3", b"b; last-id=7"]
    origin.answer(encode_events([WsEvent("TEXT", b"item 4")]))
    assert done == [None] and client.frames == [b"\x81\x06item 4"]


def test_a_recovery_is_retried_then_fails(clock):
    """A recovery the origin cannot take is retried after 1, 2, 4, 8 s; after 5 tries its Deferred fails; a non-events answer fails at once."""
    session, woh, origin, client = link(clock)
    failed = []
    woh.recover({"a": "3"}).addErrback(failed.append)
    for attempt in range(4):
        origin.fail()
        assert not failed
        clock.advance(2**attempt)
        assert len(origin.posts) == attempt + 2
    origin.fail()
    assert len(failed) == 1 and failed[0].check(AllTargetsFailed)
    woh.recover({"a": "3"}).addErrback(failed.append)
    _, _, d = origin.posts[-1]
    d.callback(buffered_response(200, b"OK", [(b"Content-Type", b"text/plain")], b"no", origin.target))
    assert len(failed) == 2 and clock.getDelayedCalls() == []
