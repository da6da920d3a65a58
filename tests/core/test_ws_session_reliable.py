"""Reliable WebSocket mode in the session: sequencing per channel, recovery from the origin, slow readers."""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred

from pushpin_tx.core.router import ws_frame
from pushpin_tx.core.ws_session import OPCODE_TEXT, WsSession
from pushpin_tx.protocol.items import parse_item

from tests.core.test_ws_session import FakeClient, FakeOrigin
from tests.fakes import hold_context


class RecoveringOrigin(FakeOrigin):
    """A WebSocket-over-HTTP origin link: records each recover() call and lets the test answer it."""

    def __init__(self):
        super().__init__()
        self.recoveries: list[tuple[dict, Deferred]] = []

    def recover(self, last_ids):
        d: Deferred = Deferred()
        self.recoveries.append((dict(last_ids), d))
        return d


def session(clock, origin=None, **kw):
    ctx = hold_context(clock)
    s = WsSession(ctx, "w1", grip=True, **kw)
    client = FakeClient()
    s.open(client, origin if origin is not None else RecoveringOrigin())
    return ctx, s, client


def control(s, **message):
    s.origin_message(OPCODE_TEXT, b"c:" + json.dumps(message).encode())


def ws(ctx, n, prev=None, channel="feed"):
    doc = {"channel": channel, "id": str(n), "formats": {"ws-message": {"content": f"m{n}"}}}
    if prev is not None:
        doc["prev-id"] = str(prev)
    return ctx.router.publish(parse_item(doc))


def texts(client):
    return [frame[2:].decode() for frame in client.frames]


def answer(s, d, *messages, position=None):
    """The origin's recovery answer: the missing messages, then the new position."""
    for text in messages:
        s.origin_message(OPCODE_TEXT, b"m:" + text.encode())
    if position is not None:
        control(s, type="subscribe", channel="feed", **{"prev-id": position})
    d.callback(None)


def test_items_that_follow_on_go_out_and_duplicates_are_dropped(clock):
    """With prev-id 0, items 1..3 go out in order; a repeated id 2 is dropped without asking the origin."""
    ctx, s, client = session(clock)
    control(s, type="subscribe", channel="feed", **{"prev-id": "0"})
    ws(ctx, 1, 0)
    ws(ctx, 2, 1)
    ws(ctx, 2, 1)
    ws(ctx, 3, 2)
    ws(ctx, 1, 0)
    assert texts(client) == ["m1", "m2", "m3"]
    assert s.origin.recoveries == []
    s.end()


def test_a_lost_item_is_fetched_from_the_origin_before_delivery_goes_on(clock):
    """Item 2 never published: 3 makes the session ask the origin (Grip-Last 1, no route prefix); 4 waits; all go out in order."""
    ctx, s, client = session(clock, prefix="p-")
    control(s, type="subscribe", channel="feed", **{"prev-id": "0"})
    ws(ctx, 1, 0, channel="p-feed")
    ws(ctx, 3, 2, channel="p-feed")
    ws(ctx, 4, 3, channel="p-feed")
    assert texts(client) == ["m1"]
    [(last, d)] = s.origin.recoveries
    assert last == {"feed": "1"}
    answer(s, d, "m2", "m3", position="3")
    assert texts(client) == ["m1", "m2", "m3", "m4"]
    assert ctx.counters.recoveries == 1
    s.end()


def test_swapped_items_are_delivered_once_in_order(clock):
    """3 published before 2: the recovery delivers 2 and 3; the late 2 (and the held 3) are not sent again."""
    ctx, s, client = session(clock)
    control(s, type="subscribe", channel="feed", **{"prev-id": "1"})
    ws(ctx, 3, 2)
    ws(ctx, 2, 1)  # arrives while recovering: held, then superseded
    [(last, d)] = s.origin.recoveries
    assert last == {"feed": "1"}
    answer(s, d, "m2", "m3", position="3")
    ws(ctx, 4, 3)
    assert texts(client) == ["m2", "m3", "m4"]
    s.end()


def test_a_slow_reader_is_caught_up_from_the_origin_instead_of_dropped(clock):
    """At the queue limit, a reliable channel's next items are not queued; once the client has read, the origin fills them in."""
    ctx, s, client = session(clock)
    ctx.queue_limit = 2
    control(s, type="subscribe", channel="feed", **{"prev-id": "0"})
    s.queue.pauseProducing()
    for n in range(1, 6):
        ws(ctx, n, n - 1)
    assert client.frames == [] and len(s.queue) == 2
    s.queue.resumeProducing()
    assert texts(client) == ["m1", "m2"]
    clock.advance(0)
    [(last, d)] = s.origin.recoveries
    assert last == {"feed": "2"}
    answer(s, d, "m3", "m4", "m5", position="5")
    ws(ctx, 6, 5)
    assert texts(client) == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert client.closed is None
    s.end()


def test_an_origin_that_cannot_be_asked_closes_the_client_rather_than_leave_a_gap(clock):
    """The recovery fails (origin down after its retries): the client is closed with 1011 and nothing after the gap is sent."""
    ctx, s, client = session(clock)
    control(s, type="subscribe", channel="feed", **{"prev-id": "0"})
    ws(ctx, 1, 0)
    ws(ctx, 3, 2)
    [(_, d)] = s.origin.recoveries
    d.errback(ConnectionRefusedError("origin down"))
    ws(ctx, 4, 3)
    assert texts(client) == ["m1"]
    assert client.closed == (1011, "reliable delivery: could not recover missed messages")
    s.end()


def test_what_overflows_the_held_items_is_recovered_next(clock):
    """More items than HELD_MAX published during a recovery: after its answer, one more recovery fetches the rest."""
    ctx, s, client = session(clock)
    control(s, type="subscribe", channel="feed", **{"prev-id": "0"})
    for n in range(2, 1004):
        ws(ctx, n, n - 1)  # 2 starts the recovery; 2..1001 are held, 1002 and 1003 are not kept
    (last, d) = s.origin.recoveries[0]
    answer(s, d, "m1", position="1")
    assert texts(client)[-1] == "m1001" and len(client.frames) == 1001
    (last, d) = s.origin.recoveries[1]
    assert last == {"feed": "1001"}
    answer(s, d, "m1002", "m1003", position="1003")
    assert texts(client) == [f"m{n}" for n in range(1, 1004)]
    s.end()


def test_prev_id_without_a_recovering_origin_is_ignored(clock):
    """A plain WebSocket origin cannot be asked again: prev-id is ignored and delivery is as without it."""
    ctx, s, client = session(clock, origin=FakeOrigin())
    control(s, type="subscribe", channel="feed", **{"prev-id": "0"})
    ws(ctx, 1, 0)
    ws(ctx, 3, 2)
    assert texts(client) == ["m1", "m3"]
    s.end()
