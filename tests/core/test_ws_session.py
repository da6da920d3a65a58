"""The WebSocket session on a Clock: GRIP control messages, keep-alives, delayed sends, publishes."""

from __future__ import annotations

import json

from pushpin_tx.protocol.items import parse_item
from pushpin_tx.core.router import ws_frame
from pushpin_tx.core.ws_session import OPCODE_BINARY, OPCODE_TEXT, WsSession

from tests.fakes import hold_context


class FakeClient:
    def __init__(self):
        self.frames: list[bytes] = []
        self.closed: tuple | None = None
        self.dropped = False
        self.producer = None

    def write_frame(self, frame):
        self.frames.append(frame)

    def close(self, code, reason):
        self.closed = (code, reason)

    def drop(self):
        self.dropped = True

    def register_producer(self, producer):
        self.producer = producer


class FakeOrigin:
    def __init__(self):
        self.got: list = []

    def client_message(self, opcode, payload):
        self.got.append(("message", opcode, payload))

    def client_closed(self, code, reason):
        self.got.append(("closed", code, reason))

    def client_gone(self):
        self.got.append(("gone",))

    def detach(self):
        self.got.append(("detach",))


def text(payload: bytes) -> bytes:
    return ws_frame(OPCODE_TEXT, payload)


def session(clock, **kw):
    ctx = hold_context(clock)
    s = WsSession(ctx, "w1", grip=True, **kw)
    client, origin = FakeClient(), FakeOrigin()
    s.open(client, origin)
    return ctx, s, client, origin


def control(s, **message):
    s.origin_message(OPCODE_TEXT, b"c:" + json.dumps(message).encode())


def test_prefixed_messages_pass_stripped_and_others_are_dropped(clock):
    """In GRIP mode, m: messages reach the client without the prefix; unprefixed ones are dropped."""
    _, s, client, _ = session(clock)
    s.origin_message(OPCODE_TEXT, b"m:hello")
    s.origin_message(OPCODE_TEXT, b"no prefix")
    s.origin_message(OPCODE_BINARY, b"m:\x00\x01")
    assert client.frames == [text(b"hello"), ws_frame(OPCODE_BINARY, b"\x00\x01")]
    s.end()


def test_subscribe_then_publish_then_unsubscribe(clock):
    """c: subscribe makes publishes arrive (framed once); unsubscribe stops them."""
    ctx, s, client, _ = session(clock, prefix="p-")
    control(s, type="subscribe", channel="room")
    assert ctx.router.subscriber_count("p-room") == 1
    ctx.router.publish(parse_item({"channel": "p-room", "formats": {"ws-message": {"content": "hi"}}}))
    assert client.frames == [text(b"hi")]
    control(s, type="unsubscribe", channel="room")
    assert ctx.router.subscriber_count("p-room") == 0
    s.end()


def test_implicit_channels_cannot_be_unsubscribed(clock):
    """Route sub= channels stay subscribed whatever the origin says."""
    ctx, s, _, _ = session(clock, implicit_channels=("fixed",))
    control(s, type="unsubscribe", channel="fixed")
    assert ctx.router.subscriber_count("fixed") == 1
    s.end()
    assert ctx.router.subscriber_count("fixed") == 0


def test_subscription_limit_is_enforced(clock):
    """More than connection_subscription_max channels: the extra subscribe is ignored."""
    ctx, s, _, _ = session(clock)
    ctx.subscription_max = 2
    for name in ("a", "b", "c"):
        control(s, type="subscribe", channel=name)
    assert sorted(s.channels) == ["a", "b"]
    s.end()


def test_malformed_control_messages_are_ignored(clock):
    """Bad JSON or an unknown type is logged and ignored; the session carries on."""
    ctx, s, client, _ = session(clock)
    s.origin_message(OPCODE_TEXT, b"c:{not json")
    control(s, type="no-such-type")
    s.origin_message(OPCODE_TEXT, b"m:still here")
    assert client.frames == [text(b"still here")]
    s.end()


def test_set_meta_feeds_skip_self(clock):
    """set-meta user=alice plus filter skip-self: alice's own publish is not delivered to her."""
    ctx, s, client, _ = session(clock)
    control(s, type="set-meta", name="user", value="alice")
    control(s, type="subscribe", channel="room", filters=["skip-self"])
    ctx.router.publish(parse_item({"channel": "room", "meta": {"sender": "alice"}, "formats": {"ws-message": {"content": "mine"}}}))
    ctx.router.publish(parse_item({"channel": "room", "meta": {"sender": "bob"}, "formats": {"ws-message": {"content": "bob"}}}))
    assert client.frames == [text(b"bob")]
    s.end()


def test_keep_alive_idle_mode(clock):
    """keep-alive (idle): sent after timeout seconds of silence; traffic postpones it."""
    _, s, client, _ = session(clock)
    control(s, type="keep-alive", content="ka", timeout=10)
    clock.advance(6)
    s.origin_message(OPCODE_TEXT, b"m:data")
    clock.advance(6)
    assert client.frames == [text(b"data")]
    clock.advance(4)
    assert client.frames == [text(b"data"), text(b"ka")]
    control(s, type="keep-alive")  # no content: off
    clock.advance(60)
    assert len(client.frames) == 2
    s.end()


def test_keep_alive_interval_mode(clock):
    """keep-alive (interval): a fixed rhythm regardless of traffic."""
    _, s, client, _ = session(clock)
    control(s, type="keep-alive", content="ka", timeout=10, mode="interval")
    clock.advance(9)
    s.origin_message(OPCODE_TEXT, b"m:data")
    clock.advance(1)
    assert client.frames == [text(b"data"), text(b"ka")]
    clock.advance(10)
    assert client.frames[-1] == text(b"ka") and len(client.frames) == 3
    s.end()
    assert clock.getDelayedCalls() == []


def test_send_delayed_and_flush(clock):
    """send-delayed fires after its timeout unless flushed first; a new one replaces the old."""
    _, s, client, _ = session(clock)
    control(s, type="send-delayed", content="later", timeout=5)
    control(s, type="send-delayed", content="replaced", timeout=5)
    clock.advance(5)
    assert client.frames == [text(b"replaced")]
    control(s, type="send-delayed", content="now", timeout=5)
    control(s, type="flush-delayed")
    assert client.frames == [text(b"replaced"), text(b"now")]
    clock.advance(10)
    assert len(client.frames) == 2
    s.end()


def test_detach_stops_relaying_to_the_origin(clock):
    """After detach, client messages no longer reach the origin; publishes still reach the client."""
    ctx, s, client, origin = session(clock)
    control(s, type="subscribe", channel="c")
    control(s, type="detach")
    s.client_message(OPCODE_TEXT, b"hello?")
    assert origin.got == [("detach",)]
    ctx.router.publish(parse_item({"channel": "c", "formats": {"ws-message": {"content": "still"}}}))
    assert client.frames == [text(b"still")]
    s.end()


def test_client_close_and_vanish_reach_the_origin(clock):
    """A close frame becomes client_closed(code); a vanished client becomes client_gone; both release."""
    ctx, s, _, origin = session(clock)
    control(s, type="subscribe", channel="c")
    s.client_closed(1000, b"", True)
    assert origin.got[-1] == ("closed", 1000, b"")
    assert ctx.router.subscriber_count("c") == 0
    _, s2, _, origin2 = session(clock)
    s2.client_closed(None, b"", False)
    assert origin2.got == [("gone",)]


def test_publish_close_with_code(clock):
    """A ws-message close publish closes the client with its code and reason."""
    ctx, s, client, _ = session(clock)
    control(s, type="subscribe", channel="c")
    ctx.router.publish(parse_item({"channel": "c", "formats": {"ws-message": {"action": "close", "code": 4001, "reason": "bye"}}}))
    assert client.closed == (4001, "bye")
    s.end()


def test_ping_publish_without_content_sends_nothing(clock):
    """type ping without content is accepted but sends nothing (observed); with content, a ping frame."""
    ctx, s, client, _ = session(clock)
    control(s, type="subscribe", channel="c")
    ctx.router.publish(parse_item({"channel": "c", "formats": {"ws-message": {"type": "ping"}}}))
    assert client.frames == []
    ctx.router.publish(parse_item({"channel": "c", "formats": {"ws-message": {"type": "ping", "content": "p"}}}))
    assert client.frames == [ws_frame(0x9, b"p")]
    s.end()


def test_slow_reader_gets_a_close_frame_after_what_was_queued(clock):
    """Queue overflowed: later messages are dropped and reported; once the queue is read the client gets 1013 with a reason."""
    from pushpin_tx.core.ws_session import CLOSE_SLOW_READER, SLOW_READER_REASON

    drops: list = []
    ctx = hold_context(clock, queue_limit=2, overflow="disconnect", drops=drops)
    s = WsSession(ctx, "w1", implicit_channels=("room",))
    client, origin = FakeClient(), FakeOrigin()
    s.open(client, origin)
    s.queue.pauseProducing()
    for n in range(5):
        ctx.router.publish(parse_item({"channel": "room", "formats": {"ws-message": {"content": f"m{n}"}}}))
    s.origin_message(OPCODE_TEXT, b"from origin")
    assert drops == [("w1", "room", "queue full, closing")] * 3 + [("w1", "", "queue full, closing")]
    assert client.closed is None
    s.queue.resumeProducing()
    clock.advance(0)
    assert client.frames == [text(b"m0"), text(b"m1")]
    assert client.closed == (CLOSE_SLOW_READER, SLOW_READER_REASON) and CLOSE_SLOW_READER == 1013
    s.client_closed(CLOSE_SLOW_READER, b"", True)
    assert origin.got == [("closed", CLOSE_SLOW_READER, b"")]


def test_slow_reader_that_never_reads_is_dropped_after_the_drain_timeout(clock):
    """An overflowed WebSocket whose client never reads is dropped after OVERFLOW_DRAIN_TIMEOUT."""
    from pushpin_tx.core.delivery import OVERFLOW_DRAIN_TIMEOUT

    ctx = hold_context(clock, queue_limit=1, overflow="disconnect")
    s = WsSession(ctx, "w1", implicit_channels=("room",))
    client, origin = FakeClient(), FakeOrigin()
    s.open(client, origin)
    s.queue.pauseProducing()
    for n in range(3):
        ctx.router.publish(parse_item({"channel": "room", "formats": {"ws-message": {"content": f"m{n}"}}}))
    clock.advance(OVERFLOW_DRAIN_TIMEOUT)
    assert client.dropped and client.closed is None
    s.client_closed(None, b"", False)


def test_a_refresh_publish_asks_a_websocket_over_http_origin(clock):
    """ws-message "action": "refresh" (Pushpin 1.38) calls the origin link's refresh; a link without one is left alone."""
    ctx, s, client, origin = session(clock)
    refreshed: list = []
    origin.refresh = lambda: refreshed.append(True)
    control(s, type="subscribe", channel="room")
    ctx.router.publish(parse_item({"channel": "room", "formats": {"ws-message": {"action": "refresh"}}}))
    assert refreshed == [True] and client.frames == []
    del origin.refresh
    ctx.router.publish(parse_item({"channel": "room", "formats": {"ws-message": {"action": "refresh"}}}))
    assert refreshed == [True] and client.frames == []
    s.end()
