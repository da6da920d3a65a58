"""
WebSocket sessions take a run of publishes of one channel (several handled in one reactor
turn) in one call: plain messages go out in one write, anything needing per-item handling
behaves exactly as when published one at a time. Driven on a Clock with a recording client.
"""

from __future__ import annotations

import json

import pytest

from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.protocol.items import parse_item
from pushpin_tx.core.router import Publication, ws_frame
from pushpin_tx.core.ws_session import OPCODE_TEXT, WsSession

from tests.fakes import hold_context
from tests.core.test_ws_session import FakeClient, FakeOrigin


def ws_item(channel, content=None, **extra):
    fmt = {"content": content} if content is not None else {}
    fmt.update(extra.pop("fmt", {}))
    return parse_item({"channel": channel, "formats": {"ws-message": fmt}, **extra})


def text(payload: bytes) -> bytes:
    return ws_frame(OPCODE_TEXT, payload)


def open_session(ctx, *subscribes, meta=None):
    """A GRIP session subscribed (by control messages) as C{subscribes} say: (channel, filters)."""
    s = WsSession(ctx, "w1", grip=True)
    client = FakeClient()
    s.open(client, FakeOrigin())
    for name, value in (meta or {}).items():
        s.origin_message(OPCODE_TEXT, b"c:" + json.dumps({"type": "set-meta", "name": name, "value": value}).encode())
    for channel, filters in subscribes:
        message = {"type": "subscribe", "channel": channel}
        if filters:
            message["filters"] = list(filters)
        s.origin_message(OPCODE_TEXT, b"c:" + json.dumps(message).encode())
    return s, client


def test_messages_of_one_turn_reach_a_websocket_in_one_write(clock):
    """Publishes arriving in one turn are written to the client together, in order, once the turn ends."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock)
    s, client = open_session(ctx, ("c", ()))
    intake.publish([ws_item("c", "a"), ws_item("c", "b")], "http")
    intake.publish([ws_item("c", "c")], "http")
    assert client.frames == []
    clock.advance(0)
    assert client.frames == [text(b"a") + text(b"b") + text(b"c")]
    assert ctx.counters.deliveries == 3 and s.queue.delivered == 3
    intake.publish([ws_item("c", "d")], "http")  # the next turn is a turn of its own
    clock.advance(0)
    assert client.frames[1:] == [text(b"d")]
    s.end()


def test_a_run_on_two_channels_keeps_publish_order(clock):
    """A session on two channels sees a1, b1, a2, a3 in publish order; the run a2, a3 in one write."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock)
    s, client = open_session(ctx, ("a", ()), ("b", ()))
    intake.publish([ws_item("a", "a1"), ws_item("b", "b1"), ws_item("a", "a2"), ws_item("a", "a3")], "http")
    clock.advance(0)
    assert b"".join(client.frames) == text(b"a1") + text(b"b1") + text(b"a2") + text(b"a3")
    assert client.frames[-1] == text(b"a2") + text(b"a3")
    s.end()


@pytest.mark.parametrize(
    "subscribes, meta, items, frames, closed",
    [
        # a close in a run: what precedes goes out in one write, then the client is closed
        ([("c", ())], None, [ws_item("c", "x"), ws_item("c", "y"), ws_item("c", fmt={"action": "close", "code": 4001})],
         [text(b"x") + text(b"y")], (4001, "")),
        # a subscription filter: every item is checked on its own (skip-self drops alice's)
        ([("c", ("skip-self",))], {"user": "alice"},
         [ws_item("c", "1", meta={"sender": "alice"}), ws_item("c", "2", meta={"sender": "bob"}), ws_item("c", "3")],
         [text(b"2"), text(b"3")], None),
        # a ping in a run is its own control frame, in order
        ([("c", ())], None, [ws_item("c", "m1"), ws_item("c", "p", fmt={"type": "ping"}), ws_item("c", "m2")],
         [text(b"m1"), ws_frame(0x9, b"p"), text(b"m2")], None),
        # an item without ws-message is skipped; a hint sends nothing
        ([("c", ())], None, [parse_item({"channel": "c", "formats": {"http-stream": {"content": "s"}}}),
                             ws_item("c", "x"), ws_item("c", "y"), ws_item("c", fmt={"action": "hint"})],
         [text(b"x") + text(b"y")], None),
        # a ping without content sends nothing (observed), what follows still arrives
        ([("c", ())], None, [ws_item("c", "x"), ws_item("c", fmt={"type": "ping"}), ws_item("c", "y")],
         [text(b"x"), text(b"y")], None),
        # a content-filter check that fails closes the client after what precedes
        ([("c", ())], None, [ws_item("c", "ok"), ws_item("c", "z", fmt={"content-filters": ["var-subst"]})],
         [text(b"ok")], (None, "")),
    ],
)
def test_runs_that_need_per_item_handling_match_one_publish_at_a_time(clock, subscribes, meta, items, frames, closed):
    """Closes, filters, pings, hints and content-filter checks in a run behave exactly as when published one by one."""
    ctx = hold_context(clock)
    s, client = open_session(ctx, *subscribes, meta=meta)
    ctx.router.publish_run(items)
    clock.advance(1)
    one_ctx = hold_context(clock)
    one, one_client = open_session(one_ctx, *subscribes, meta=meta)
    for it in items:
        one_ctx.router.publish(it)
    clock.advance(1)
    assert client.frames == frames
    assert b"".join(one_client.frames) == b"".join(frames)
    assert client.closed == one_client.closed == closed
    s.end()
    one.end()


def test_a_paused_websocket_queues_each_item_of_a_run_and_counts_drops_per_item(clock):
    """A client that is not reading gets a run queued item by item, so the queue limit and drops count messages."""
    drops = []
    ctx = hold_context(clock, queue_limit=2, drops=drops)
    s, client = open_session(ctx, ("c", ()))
    s.queue.pauseProducing()
    ctx.router.publish_run([ws_item("c", str(i)) for i in range(4)])
    assert len(s.queue) == 2 and [d[2] for d in drops] == ["queue full", "queue full"]
    s.queue.resumeProducing()
    assert b"".join(client.frames) == text(b"0") + text(b"1")
    assert client.frames == [text(b"0"), text(b"1")]
    s.end()


def test_a_run_after_the_session_ended_is_not_written(clock):
    """A session that has ended writes nothing from a run, as it would from single publishes."""
    ctx = hold_context(clock)
    s, client = open_session(ctx, ("c", ()))
    s.end()
    s.deliver_run([Publication(ws_item("c", "a")), Publication(ws_item("c", "b"))], "c")
    assert client.frames == []


def _one_turn(clock):
    for call in [c for c in clock.getDelayedCalls() if c.getTime() <= clock.seconds()]:
        if call.active():
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


def test_a_websocket_unsubscribed_while_its_messages_wait_still_gets_them(clock):
    """Messages fanned out to a session still waiting for its turn are written when its origin unsubscribes it, not lost."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock, slice_size=1)
    first, first_client = open_session(ctx, ("c", ()))
    s, client = open_session(ctx, ("c", ()))
    intake.publish([ws_item("c", "a")], "http")
    _one_turn(clock)  # one connection written; the other waits for the next turn
    waiting = client if not client.frames else first_client
    session = s if waiting is client else first
    assert waiting.frames == []
    session.origin_message(OPCODE_TEXT, b"c:" + json.dumps({"type": "unsubscribe", "channel": "c"}).encode())
    assert waiting.frames == [text(b"a")]
    clock.advance(0)
    assert waiting.frames == [text(b"a")] and intake.pending.idle


def test_a_websocket_that_ends_while_its_messages_wait_reports_them_as_drops(clock):
    """A session that ends before its turn counts and logs each message that waited for it as a drop."""
    drops = []
    ctx = hold_context(clock, drops=drops)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock, slice_size=1)
    first, first_client = open_session(ctx, ("c", ()))
    s, client = open_session(ctx, ("c", ()))
    intake.publish([ws_item("c", "a"), ws_item("c", "b")], "http")
    _one_turn(clock)
    session = s if not client.frames else first
    session.end()
    clock.advance(0)
    assert drops == [("w1", "c", "connection closed")] * 2 and intake.pending.idle
