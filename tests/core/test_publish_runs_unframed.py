"""
A run of publishes to a stream whose body is unframed (an HTTP/2 stream, an HTTP/1.0
client: the sink's C{chunked} is 0) goes out joined in one write too, the contents without
chunk framing (patch helper-J-2). Driven on a Clock with recording clients.
"""

from __future__ import annotations

from pushpin_tx.core.intake import PublishIntake

from tests.core.test_publish_runs import item, stream
from tests.fakes import hold_context


def test_an_unframed_stream_gets_a_turns_items_in_one_write(clock):
    """Three items of one turn reach an unframed stream as one write of their contents, in order; a close in the run still ends it after them."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock)
    hold, sink = stream(ctx, "Grip-Channel: s", chunked=False)
    intake.publish([item("s", "a\n"), item("s", "b\n")], "http")
    intake.publish([item("s", "c\n")], "http")
    clock.advance(0)
    assert sink.framed == [b"a\nb\nc\n"]
    assert ctx.counters.deliveries == 3 and hold.queue.delivered == 3
    intake.publish([item("s", "d\n"), item("s", fmt={"action": "close"})], "http")
    clock.advance(0)
    assert sink.framed[1:] == [b"d\n"] and hold.done
