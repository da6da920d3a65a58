"""
Publishes handled in one reactor turn are fanned out together: the intake gathers them
until the turn's I/O is done, the router hands runs of one channel to each subscriber, and
a plain stream writes a run in one write. Driven on a Clock with recording clients.
"""

from __future__ import annotations

import pytest

from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.core.hold import ResponseHold, StreamHold
from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.protocol.items import parse_item

from tests.fakes import RecordingSink, hold_context


def instruct(*headers):
    hs = [(b"Content-Type", b"text/plain")] + [tuple(h.encode().split(b": ", 1)) for h in headers]
    return parse_instruct(200, b"OK", hs, b"", request_uri="http://example.com/x")


def item(channel, content=None, **extra):
    fmt = {"content": content} if content is not None else {}
    fmt.update(extra.pop("fmt", {}))
    return parse_item({"channel": channel, "formats": {"http-stream": fmt}, **extra})


def stream(ctx, *headers, chunked=True):
    sink = RecordingSink(chunked=chunked)
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", *headers), "c1")
    hold.start()
    return hold, sink


def test_items_of_one_turn_go_out_together_when_the_turn_ends(clock):
    """Nothing is written while the turn's publishes arrive; then each stream gets them in one write, in order."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock)
    hold, sink = stream(ctx, "Grip-Channel: s")
    intake.publish([item("s", "a\n"), item("s", "b\n")], "http")
    intake.publish([item("s", "c\n")], "http")
    assert sink.framed == []
    clock.advance(0)
    assert sink.framed == [b"2\r\na\n\r\n2\r\nb\n\r\n2\r\nc\n\r\n"]
    assert ctx.counters.deliveries == 3 and hold.queue.delivered == 3
    intake.publish([item("s", "d\n")], "http")  # the next turn is a turn of its own
    clock.advance(0)
    assert sink.framed[1:] == [b"2\r\nd\n\r\n"]


def test_without_a_clock_each_item_is_delivered_at_once(clock):
    """An intake made without a clock delivers synchronously, one item at a time."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters)
    hold, sink = stream(ctx, "Grip-Channel: s")
    intake.publish([item("s", "a\n"), item("s", "b\n")], "http")
    assert sink.framed == [b"2\r\na\n\r\n", b"2\r\nb\n\r\n"]


def test_runs_split_where_the_channel_changes_so_cross_channel_order_is_kept(clock):
    """A stream on two channels sees a1, b1, a2 in publish order, not grouped by channel."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock)
    hold, sink = stream(ctx, "Grip-Channel: a, b")
    intake.publish([item("a", "a1"), item("b", "b1"), item("a", "a2"), item("a", "a3")], "http")
    clock.advance(0)
    assert b"".join(sink.framed) == b"2\r\na1\r\n2\r\nb1\r\n2\r\na2\r\n2\r\na3\r\n"
    assert sink.framed[-1] == b"2\r\na2\r\n2\r\na3\r\n"  # the run of a2, a3 in one write


@pytest.mark.parametrize(
    "headers, items, expected",
    [
        # a close in a run: what precedes goes out, then the stream ends
        (("Grip-Channel: s",), [item("s", "x"), item("s", fmt={"action": "close"})], b"1\r\nx\r\n"),
        # a channel filter: every item is checked on its own (skip-self drops alice's)
        (("Grip-Channel: s; filter=skip-self", "Grip-Set-Meta: user=alice"),
         [item("s", "1", meta={"sender": "alice"}), item("s", "2", meta={"sender": "bob"})], b"1\r\n2\r\n"),
        # an item without http-stream, or with empty content, is skipped
        (("Grip-Channel: s",), [parse_item({"channel": "s", "formats": {"http-response": {"body": "r"}}}), item("s", ""), item("s", "y")],
         b"1\r\ny\r\n"),
    ],
)
def test_runs_that_need_per_item_handling_are_delivered_one_by_one(clock, headers, items, expected):
    """Closes, filters and empty items in a run behave exactly as when published one at a time."""
    ctx = hold_context(clock)
    hold, sink = stream(ctx, *headers)
    ctx.router.publish_run(items)
    assert b"".join(sink.framed) == expected


def test_a_paused_stream_queues_each_item_of_a_run_and_counts_drops_per_item(clock):
    """A stream whose client is not reading queues a run item by item, so the queue limit and drops count messages."""
    drops = []
    ctx = hold_context(clock, queue_limit=2, drops=drops)
    hold, sink = stream(ctx, "Grip-Channel: s")
    hold.queue.pauseProducing()
    ctx.router.publish_run([item("s", str(i)) for i in range(4)])
    assert len(hold.queue) == 2 and [d[2] for d in drops] == ["queue full", "queue full"]
    hold.queue.resumeProducing()
    clock.advance(0)
    assert b"".join(sink.framed) == b"1\r\n0\r\n1\r\n1\r\n"


def test_a_long_poll_in_a_run_is_answered_by_the_first_item_only(clock):
    """A response hold gets the first item of a run and ignores the rest, as with separate publishes."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: r"), "c1").start()
    first = parse_item({"channel": "r", "formats": {"http-response": {"body": "one"}}})
    second = parse_item({"channel": "r", "formats": {"http-response": {"body": "two"}}})
    assert ctx.router.publish_run([first, second]) == 1
    assert sink.body == b"one" and sink.finished


def test_the_plain_part_of_a_run_is_worked_out_once_for_every_subscriber():
    """plain_part on a router Run frames and joins the items once; a later subscriber reuses it."""
    from pushpin_tx.core.router import PER_ITEM, Publication, Run, plain_part

    calls = []

    def frame_of(publication):
        calls.append(publication)
        content = publication.item.http_stream.content
        return PER_ITEM if content == b"stop" else content

    run = Run(Publication(item("s", c)) for c in ("a", "b", "stop", "c"))
    assert plain_part(run, frame_of) == (b"ab", 2, 2)
    assert plain_part(run, frame_of) == (b"ab", 2, 2)
    assert len(calls) == 3  # a, b, stop: once, not once per subscriber
    assert plain_part(list(run), frame_of) == (b"ab", 2, 2)  # a plain list works too, uncached
