"""WebSocket prefix subscriptions (C{c:{"type":"subscribe","channel":"news.","prefix":true}})."""

from __future__ import annotations

import json

from pushpin_tx.core.router import ws_frame
from pushpin_tx.core.ws_session import OPCODE_TEXT, WsSession
from pushpin_tx.protocol.items import parse_item

from tests.core.test_ws_session import FakeClient, FakeOrigin
from tests.fakes import hold_context


def session(clock, **kw):
    ctx = hold_context(clock)
    s = WsSession(ctx, "w1", grip=True, **kw)
    client = FakeClient()
    s.open(client, FakeOrigin())
    return ctx, s, client


def control(s, **message):
    s.origin_message(OPCODE_TEXT, b"c:" + json.dumps(message).encode())


def ws(ctx, channel, content, **extra):
    return ctx.router.publish(parse_item({"channel": channel, **extra, "formats": {"ws-message": {"content": content}}}))


def test_prefix_subscribe_receives_every_matching_channel_until_unsubscribed(clock):
    """A prefix subscribe (route prefix applied) gets p-news.a and p-news.b in order; the prefix unsubscribe ends it."""
    ctx, s, client = session(clock, prefix="p-")
    control(s, type="subscribe", channel="news.", prefix=True)
    assert list(ctx.router.prefixes()) == ["p-news."] and ctx.router.subscriber_count("p-news.") == 0
    ws(ctx, "p-news.a", "1")
    ws(ctx, "p-other", "x")
    ws(ctx, "p-news.b", "2")
    assert client.frames == [ws_frame(OPCODE_TEXT, b"1"), ws_frame(OPCODE_TEXT, b"2")]
    control(s, type="unsubscribe", channel="news.")  # the exact channel "news.": not the prefix
    assert list(ctx.router.prefixes()) == ["p-news."]
    control(s, type="unsubscribe", channel="news.", prefix=True)
    assert ws(ctx, "p-news.a", "3") == 0
    s.end()


def test_an_exact_and_a_prefix_subscription_of_one_channel_deliver_once(clock):
    """Subscribed to news.a and to prefix news., a session gets each news.a message once; end releases both."""
    ctx, s, client = session(clock)
    control(s, type="subscribe", channel="news.a")
    control(s, type="subscribe", channel="news.", prefix=True)
    ws(ctx, "news.a", "once")
    assert client.frames == [ws_frame(OPCODE_TEXT, b"once")]
    s.end()
    assert list(ctx.router.prefixes()) == [] and list(ctx.router.channels()) == []


def test_prefix_filters_apply_and_prefixes_count_toward_the_limit(clock):
    """skip-self on a prefix withholds own messages; prefix subscriptions count toward connection_subscription_max."""
    ctx, s, client = session(clock)
    ctx.subscription_max = 2
    control(s, type="set-meta", name="user", value="alice")
    control(s, type="subscribe", channel="room.", prefix=True, filters=["skip-self"])
    ws(ctx, "room.1", "mine", meta={"sender": "alice"})
    ws(ctx, "room.1", "bob's", meta={"sender": "bob"})
    assert client.frames == [ws_frame(OPCODE_TEXT, b"bob's")]
    control(s, type="subscribe", channel="a")
    control(s, type="subscribe", channel="b.", prefix=True)
    assert list(ctx.router.prefixes()) == ["room."]
    s.end()
