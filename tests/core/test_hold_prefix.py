"""HTTP holds on a channel prefix (C{Grip-Channel: news.; prefix}): matching, filters, per-channel order."""

from __future__ import annotations

from pushpin_tx.core.hold import ResponseHold, StreamHold
from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.protocol.items import parse_item

from tests.fakes import RecordingSink, hold_context


def instruct(*headers, body=b"timeout body\n"):
    hs = [(b"Content-Type", b"text/plain")] + [tuple(h.encode().split(b": ", 1)) for h in headers]
    return parse_instruct(200, b"OK", hs, body, request_uri="http://example.com/x")


def stream(ctx, channel, content, **extra):
    return ctx.router.publish(parse_item({"channel": channel, **extra, "formats": {"http-stream": {"content": content}}}))


def test_a_prefix_stream_gets_every_matching_channel_in_publish_order(clock):
    """A stream on prefix 'news.' writes news.sport and news.weather items in the order published, and not 'sports'."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: news.; prefix", body=b""), "c1")
    hold.start()
    stream(ctx, "news.sport", "1\n")
    stream(ctx, "sports", "no\n")
    stream(ctx, "news.weather", "2\n")
    stream(ctx, "news.sport", "3\n")
    assert sink.framed == [b"2\r\n1\n\r\n", b"2\r\n2\n\r\n", b"2\r\n3\n\r\n"]
    hold.client_gone()
    assert stream(ctx, "news.sport", "4\n") == 0


def test_a_stream_with_the_channel_and_its_prefix_writes_each_item_once(clock):
    """Subscribed to news.sport exactly and to prefix 'news.', the stream writes one copy of each item."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: news.sport", "Grip-Channel: news.; prefix", body=b""), "c1").start()
    stream(ctx, "news.sport", "x\n")
    assert sink.framed == [b"2\r\nx\n\r\n"]


def test_the_prefix_subscriptions_filters_apply_to_its_channels(clock):
    """skip-self on the prefix subscription withholds the subscriber's own publish on any matching channel."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", "Grip-Channel: room.; prefix; filter=skip-self", "Grip-Set-Meta: user=alice", body=b""), "c1")
    hold.start()
    stream(ctx, "room.1", "mine\n", meta={"sender": "alice"})
    stream(ctx, "room.2", "bob\n", meta={"sender": "bob"})
    assert sink.framed == [b"4\r\nbob\n\r\n"]


def test_a_prefix_long_poll_is_answered_by_a_matching_channel(clock):
    """A response hold on prefix 'job.' is answered by a publish to job.42 and then leaves the prefix."""
    ctx = hold_context(clock)
    sink = RecordingSink()
    hold = ResponseHold(ctx, sink, instruct("Grip-Hold: response", "Grip-Channel: job.; prefix"), "c1")
    hold.start()
    ctx.router.publish(parse_item({"channel": "other", "formats": {"http-response": {"body": "no"}}}))
    assert sink.head is None
    ctx.router.publish(parse_item({"channel": "job.42", "formats": {"http-response": {"body": "done"}}}))
    assert sink.body == b"done" and sink.finished
    assert list(ctx.router.prefixes()) == [] and "prefixes=['job.']" in repr(hold)
