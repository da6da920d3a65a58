"""
Deliveries coalesce while the proxy is busy and go out at once when it is idle; the bound on
waiting deliveries pushes back on publishers (pushpin_tx.core.pending). Driven on a Clock
with recording clients; L{turn} runs one reactor turn.
"""

from __future__ import annotations

from pushpin_tx.core.hold import StreamHold
from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.core.pending import DEFAULT_AHEAD, Backpressure
from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.protocol.items import parse_item

from tests.fakes import RecordingSink, hold_context


def turn(clock):
    """One reactor turn: the calls due that were scheduled before it began (a Clock's advance would run the new ones too)."""
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        if call.active():
            clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


def drain(clock):
    """Turns until nothing is scheduled."""
    while clock.getDelayedCalls():
        turn(clock)


def instruct(*headers):
    hs = [(b"Content-Type", b"text/plain")] + [tuple(h.encode().split(b": ", 1)) for h in headers]
    return parse_instruct(200, b"OK", hs, b"", request_uri="http://example.com/x")


def item(channel, content, **extra):
    return parse_item({"channel": channel, "formats": {"http-stream": {"content": content}}, **extra})


def streams(ctx, n, *headers, channel="s"):
    out = []
    for i in range(n):
        sink = RecordingSink()
        hold = StreamHold(ctx, sink, instruct("Grip-Hold: stream", f"Grip-Channel: {channel}", *headers), f"c{i}")
        hold.start()
        out.append((hold, sink))
    return out


def chunk(text):
    return b"%x\r\n%s\r\n" % (len(text), text.encode())


def setup(clock, n, *, slice_size=2, limit=1 << 30, ahead=DEFAULT_AHEAD, **kw):
    ctx = hold_context(clock, **kw)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock, slice_size=slice_size, pending_limit=limit, ahead=ahead)
    return ctx, intake, streams(ctx, n)


def test_an_idle_publish_is_written_at_the_end_of_its_turn(clock):
    """With nothing waiting, a publish reaches the first slice of connections in its own turn, with no timer."""
    ctx, intake, subs = setup(clock, 2)
    intake.publish([item("s", "a")], "http")
    turn(clock)
    assert [sink.framed for _, sink in subs] == [[chunk("a")], [chunk("a")]]
    assert clock.getDelayedCalls() == []
    assert intake.pending.idle


def test_the_rest_of_a_fan_out_follows_a_slice_per_turn(clock):
    """Past the slice, the remaining connections are written on the following turns, each once."""
    ctx, intake, subs = setup(clock, 5)
    intake.publish([item("s", "a")], "http")
    turn(clock)
    assert [len(sink.framed) for _, sink in subs] == [1, 1, 0, 0, 0]
    turn(clock)
    assert [len(sink.framed) for _, sink in subs] == [1, 1, 1, 1, 0]
    turn(clock)
    assert [sink.framed for _, sink in subs] == [[chunk("a")]] * 5
    assert intake.pending.idle and ctx.counters.deliveries == 5


def test_messages_waiting_for_one_connection_are_joined_in_one_write(clock):
    """Publishes that arrive while a fan-out is behind reach each not-yet-written connection in one write, in order."""
    ctx, intake, subs = setup(clock, 6)
    intake.publish([item("s", "a")], "http")
    turn(clock)  # c0, c1 written a; c2..c5 wait
    intake.publish([item("s", "b")], "http")
    turn(clock)  # c2, c3 written a; then b is fanned out: everyone waits for it
    intake.publish([item("s", "c")], "http")
    turn(clock)  # c4, c5 written a and b in one write; then c is fanned out
    assert [s.framed for _, s in subs][4:] == [[chunk("a") + chunk("b")]] * 2
    drain(clock)  # c0..c3: b and c in one write, then c4, c5: c
    assert [s.framed for _, s in subs] == [[chunk("a"), chunk("b") + chunk("c")]] * 4 + [[chunk("a") + chunk("b"), chunk("c")]] * 2
    assert intake.pending.joined > 0
    assert ctx.counters.deliveries == 18
    assert [hold.queue.delivered for hold, _ in subs] == [3] * 6


def test_order_is_kept_per_channel_under_sustained_load(clock):
    """Many publishes arriving turn after turn while behind: every connection gets all of them once, in order."""
    ctx, intake, subs = setup(clock, 7, slice_size=3)
    sent = [f"m{i}." for i in range(40)]
    for text in sent:
        intake.publish([item("s", text)], "http")
        turn(clock)
    drain(clock)
    expected = b"".join(chunk(t) for t in sent)
    assert [b"".join(sink.framed) for _, sink in subs] == [expected] * 7
    assert all(len(sink.framed) < 40 for _, sink in subs)  # joined while behind
    assert intake.pending.pending_bytes == 0


def test_a_later_subscriber_gets_only_what_is_published_after_it_joined(clock):
    """A connection that subscribes while older publishes still wait is not written those."""
    ctx, intake, subs = setup(clock, 4)
    intake.publish([item("s", "a")], "http")
    turn(clock)
    (late, late_sink), = streams(ctx, 1)
    intake.publish([item("s", "b")], "http")
    drain(clock)
    assert b"".join(late_sink.framed) == chunk("b")
    assert [b"".join(sink.framed) for _, sink in subs] == [chunk("a") + chunk("b")] * 4


def test_a_connection_that_leaves_with_messages_waiting_reports_them_as_drops(clock):
    """A client gone before its turn: each message that waited for it is counted and logged as a drop, with its id and channel."""
    drops = []
    ctx, intake, subs = setup(clock, 4, drops=drops)
    intake.publish([item("s", "a"), item("s", "b")], "http")
    turn(clock)
    subs[3][0].client_gone()
    drain(clock)
    assert subs[3][1].framed == []
    assert drops == [("c3", "s", "connection closed")] * 2


def test_a_paused_connection_does_not_hold_back_the_others(clock):
    """A connection whose transport is paused takes its share into its own bounded queue; the backlog empties."""
    ctx, intake, subs = setup(clock, 3)
    subs[0][0].queue.pauseProducing()
    for text in "abc":
        intake.publish([item("s", text)], "http")
        turn(clock)
    drain(clock)
    assert intake.pending.pending_bytes == 0
    assert len(subs[0][0].queue) == 3 and subs[0][1].framed == []
    subs[0][0].queue.resumeProducing()
    assert b"".join(subs[0][1].framed) == chunk("a") + chunk("b") + chunk("c")


def test_channels_take_turns(clock):
    """A channel that stays busy does not starve another: each backlog keeps its place in the rotation."""
    ctx = hold_context(clock)
    intake = PublishIntake(ctx.router, ctx.counters, clock=clock, slice_size=2)
    busy = streams(ctx, 6, channel="busy")
    (quiet, quiet_sink), = streams(ctx, 1, channel="quiet")
    intake.publish([item("busy", "x")], "http")
    turn(clock)
    intake.publish([item("quiet", "q")], "http")
    intake.publish([item("busy", "y")], "http")
    turn(clock)  # gathers q and y (c2, c3 written x)
    turn(clock)  # busy's turn: c4, c5
    turn(clock)  # quiet's turn, while busy still has y for everyone
    assert quiet_sink.framed == [chunk("q")]
    assert not intake.pending.idle and not all(b"y" in b"".join(sink.framed) for _, sink in busy)
    drain(clock)
    assert [b"".join(sink.framed) for _, sink in busy] == [chunk("x") + chunk("y")] * 6


def test_flush_writes_everything_waiting_now(clock):
    """The intake's flush (before a recover or a shutdown) leaves nothing waiting and no timer."""
    ctx, intake, subs = setup(clock, 5)
    intake.publish([item("s", "a")], "http")
    turn(clock)
    intake.flush()
    assert [sink.framed for _, sink in subs] == [[chunk("a")]] * 5
    assert intake.pending.idle and clock.getDelayedCalls() == []


def publish_and_answer(clock, intake, answers, text):
    """A publisher that waits for each answer: its publish, the answer asked for in the same turn, then the turn."""
    intake.publish([item("s", text)], "http")
    intake.when_relieved(lambda: answers.append(text))
    turn(clock)


def test_a_publish_answer_waits_while_a_connection_has_more_than_ahead_publishes_waiting(clock):
    """
    A publisher waiting for each answer is held while the fan-out is more than C{ahead}
    publishes behind for some connection, and answered once it is back to that depth: it
    goes at the fan-out's pace instead of piling its publishes up behind it.
    """
    ctx, intake, subs = setup(clock, 8, slice_size=1, ahead=2)
    answers = []
    for text in "abc":
        publish_and_answer(clock, intake, answers, text)
    # c0 was written a at once, c1 a, c2 a+b: c1 waits from b, c3..c7 from a (3 publishes)
    assert answers == ["a", "b", "c"]
    publish_and_answer(clock, intake, answers, "d")
    assert answers == ["a", "b", "c"] and intake.pending.held == 1  # d's answer waits
    for _ in range(5):
        turn(clock)  # c4..c7 written a..d in one write each, c0 b..d: c1 still waits from b
    assert answers == ["a", "b", "c"]
    turn(clock)  # c1 written b..d: no one waits for more than c, d
    assert answers == ["a", "b", "c", "d"]
    assert not intake.pending.idle  # what waits is still written, turn after turn
    drain(clock)
    assert [b"".join(sink.framed) for _, sink in subs] == [b"".join(chunk(t) for t in "abcd")] * 8
    assert intake.pending.idle and intake.pending.pending_bytes == 0


def test_one_answer_is_held_at_a_time_and_flush_lets_it_go(clock):
    """
    With publishers in parallel only one answer waits (the others are as many publishes in
    flight whatever is held); the intake's flush (a recover, a shutdown) lets it go at once.
    """
    ctx, intake, subs = setup(clock, 6, slice_size=1, ahead=1)
    answers = []
    for text in "abc":
        intake.publish([item("s", text)], "http")
        turn(clock)
    intake.when_relieved(lambda: answers.append("first"))
    intake.when_relieved(lambda: answers.append("second"))
    assert answers == ["second"] and intake.pending.held == 1
    intake.flush()
    assert answers == ["second", "first"]
    assert intake.pending.idle and clock.getDelayedCalls() == []


def test_no_answer_is_held_at_low_load_or_with_no_bound(clock):
    """An idle proxy answers at once; with C{ahead=0} no answer waits however far behind the fan-out is."""
    ctx, intake, subs = setup(clock, 3, slice_size=1, ahead=2)
    answers = []
    publish_and_answer(clock, intake, answers, "a")
    drain(clock)
    publish_and_answer(clock, intake, answers, "b")
    assert answers == ["a", "b"]
    ctx, intake, subs = setup(clock, 50, slice_size=1, ahead=0)
    answers = []
    for text in "abcdefgh":
        publish_and_answer(clock, intake, answers, text)
    assert answers == list("abcdefgh") and not intake.pending.idle
    assert intake.pending.held == 0
    drain(clock)


class RecordingProducer:
    """A publisher's input that records being paused and resumed."""

    def __init__(self):
        self.events = []

    def pauseProducing(self):
        self.events.append("pause")

    def resumeProducing(self):
        self.events.append("resume")


def test_the_bound_on_waiting_deliveries_pushes_back_until_the_low_water_mark(clock):
    """Past the limit, producers pause and held answers wait; they are released once the backlog falls to half the limit."""
    ctx, intake, subs = setup(clock, 8, slice_size=1, limit=600)
    producer = RecordingProducer()
    intake.backpressure.add_producer(producer)
    answers = []
    for text in ("a" * 100, "b" * 100, "c" * 100):
        intake.publish([item("s", text)], "http")
        intake.when_relieved(lambda text=text: answers.append(text[0]))
    assert answers == ["a", "b", "c"] and producer.events == []  # nothing waits yet: answered at once
    turn(clock)  # one run of 3 items (~900 bytes) waits: over the limit
    assert intake.backpressure.congested and producer.events == ["pause"]
    intake.when_relieved(lambda: answers.append("held"))
    assert answers == ["a", "b", "c"]
    drain(clock)
    assert producer.events == ["pause", "resume"] and answers[-1] == "held"
    assert not intake.backpressure.congested and intake.backpressure.episodes == 1
    assert [len(b"".join(sink.framed)) for _, sink in subs] == [len(chunk("a" * 100)) * 3] * 8  # nothing dropped


def test_a_producer_registered_while_congested_is_paused_at_once():
    """An input added while the backlog is over its bound starts paused."""
    pressure = Backpressure(100)
    pressure.level(101)
    producer = RecordingProducer()
    pressure.add_producer(producer)
    assert producer.events == ["pause"]
    pressure.level(51)
    assert producer.events == ["pause"] and pressure.congested
    pressure.level(50)
    assert producer.events == ["pause", "resume"]


def test_no_limit_means_no_backpressure():
    """A limit of 0 never congests."""
    pressure = Backpressure(0)
    pressure.level(10**12)
    assert not pressure.congested


def test_every_source_must_be_back_under_the_low_water_mark():
    """With a second source (workers' pipes), publishers stay held until both are down to half the limit."""
    pressure = Backpressure(100)
    producer = RecordingProducer()
    pressure.add_producer(producer)
    pressure.level(150, "workers")
    pressure.level(10)
    assert pressure.congested and producer.events == ["pause"]
    pressure.level(40, "workers")
    assert not pressure.congested and producer.events == ["pause", "resume"]
