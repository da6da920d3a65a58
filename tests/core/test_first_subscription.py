"""update_on_first_subscription: the timer after a channel's first subscription, "not first again" while it lingers, the update limiter, on a Clock."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from pushpin_tx.core.first_subscription import (
    FirstSubscriptionUpdates, UpdateLimiter, first_subscription_updates, update_hold,
)
from pushpin_tx.core.hold import ResponseHold, StreamHold
from pushpin_tx.core.linger import Subscriptions
from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.protocol.items import parse_item

from tests.fakes import RecordingSink, hold_context


def instruct(*headers, body=b"timeout\n"):
    hs = [(b"Content-Type", b"text/plain")] + [tuple(h.encode().split(b": ", 1)) for h in headers]
    return parse_instruct(200, b"OK", hs, body, request_uri="http://example.com/x")


class Asks:
    """What the origin is asked by the holds a test makes: re-sent requests and next-link fetches."""

    def __init__(self, clock) -> None:
        self.clock = clock
        #: (time, conn id, Grip-Last) for each re-sent long-poll request
        self.retries: list[tuple[float, str, dict]] = []
        #: (time, conn id, uri, Grip-Last, Deferred) for each next-link fetch
        self.fetches: list[tuple[float, str, str, dict, Deferred]] = []

    def long_poll(self, ctx, conn: str, *headers: str) -> ResponseHold:
        hold = ResponseHold(ctx, RecordingSink(), instruct("Grip-Hold: response", "Grip-Timeout: 55", *headers), conn)
        hold.retry = lambda last: self.retries.append((self.clock.seconds(), conn, dict(last)))
        hold.start()
        return hold

    def stream(self, ctx, conn: str, *headers: str) -> StreamHold:
        hold = StreamHold(ctx, RecordingSink(), instruct("Grip-Hold: stream", *headers, body=b""), conn)

        def fetch(uri, last):
            d: Deferred = Deferred()
            self.fetches.append((self.clock.seconds(), conn, uri, dict(last), d))
            return d

        hold.fetch_next = fetch
        hold.start()
        return hold


def at(clock, when: float) -> None:
    """Run the clock to C{when} (absolute), one due timer at a time, as a reactor would."""
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.active() and c.getTime() <= when + 1e-9]
        if not due:
            break
        clock.advance(max(min(due) - clock.seconds(), 0))
    clock.advance(max(when - clock.seconds(), 0))


def setup(clock, linger=60.0):
    """A router, the process's subscriptions on it, and the updates on those."""
    ctx = hold_context(clock)
    subs = Subscriptions(clock, ctx.router, linger=linger)
    updates = first_subscription_updates(clock, ctx.router, subs, enabled=True)
    assert updates is not None
    return ctx, subs, updates, Asks(clock)


def test_a_long_poll_is_re_asked_a_second_after_its_channel_was_first_subscribed(clock):
    """The timer fires at 1 s; the update limiter runs the re-ask 100 ms later, with the original request."""
    ctx, subs, updates, asks = setup(clock)
    hold = asks.long_poll(ctx, "c1", "Grip-Channel: news")
    at(clock, 0.999)
    assert updates.fired == 0
    at(clock, 1.0)
    assert updates.fired == 1 and asks.retries == []  # queued, waiting for the limiter's batch
    at(clock, 1.099)
    assert asks.retries == []
    at(clock, 1.1)
    assert asks.retries == [(1.1, "c1", {})]
    assert hold.done and ctx.router.subscriber_count("news") == 0  # the re-ask replaces it
    assert ctx.counters.recoveries == 1
    updates.stop()
    subs.stop()


def test_the_re_ask_carries_grip_last_for_a_channel_with_a_prev_id(clock):
    """A long-poll subscribed with prev-id is re-asked with Grip-Last at that id, as Pushpin's retry."""
    ctx, subs, updates, asks = setup(clock)
    asks.long_poll(ctx, "c1", "Grip-Channel: news; prev-id=7")
    at(clock, 1.1)
    assert asks.retries == [(1.1, "c1", {"news": "7"})]
    updates.stop()
    subs.stop()


def test_a_stream_with_a_next_link_fetches_it(clock):
    """A stream with Grip-Link rel=next is recovered through its next link, with Grip-Last; its answer is written."""
    ctx, subs, updates, asks = setup(clock)
    hold = asks.stream(ctx, "s1", "Grip-Channel: feed; prev-id=3", "Grip-Link: </next?from=3>; rel=next")
    at(clock, 1.1)
    assert [(t, c, u, last) for t, c, u, last, _ in asks.fetches] == [(1.1, "s1", "http://example.com/next?from=3", {"feed": "3"})]
    page = instruct("Grip-Hold: stream", "Grip-Channel: feed; prev-id=4", "Grip-Link: </next?from=4>; rel=next", body=b"page\n")
    asks.fetches[0][4].callback(page)
    assert hold._sink.framed[-1] == b"5\r\npage\n\r\n" and not hold.done
    hold.client_gone()
    updates.stop()
    subs.stop()


def test_a_stream_without_a_next_link_and_websockets_are_left_alone(clock):
    """Nothing to update: a stream with no next link, and any other subscriber (a WebSocket session)."""
    ctx, subs, updates, asks = setup(clock)
    plain = asks.stream(ctx, "s1", "Grip-Channel: feed")
    delivered = []

    class Socket:
        def deliver(self, publication, channel):
            delivered.append(channel)

    socket = Socket()
    ctx.router.subscribe("feed", socket)
    at(clock, 5)
    assert updates.fired == 1 and updates.queued == 0 and asks.fetches == [] and not plain.done
    assert ctx.router.subscriber_count("feed") == 2
    plain.client_gone()
    ctx.router.unsubscribe("feed", socket)
    updates.stop()
    subs.stop()


def test_the_timer_is_cancelled_when_the_channel_empties(clock):
    """A stream that leaves before the second is up takes the subscription and its timer with it."""
    ctx, subs, updates, asks = setup(clock)
    hold = asks.stream(ctx, "s1", "Grip-Channel: feed; prev-id=3", "Grip-Link: </next>; rel=next")
    at(clock, 0.5)
    hold.client_gone()
    assert not updates.subscribed("feed") and clock.getDelayedCalls() == []
    at(clock, 5)
    assert updates.fired == 0 and asks.fetches == []
    updates.stop()
    subs.stop()


def test_a_channel_subscribed_again_starts_a_new_timer(clock):
    """After the subscription ended, the next subscriber is a first subscriber again (Pushpin: removeSub, addSub)."""
    ctx, subs, updates, asks = setup(clock)
    asks.stream(ctx, "s1", "Grip-Channel: feed; prev-id=3", "Grip-Link: </next>; rel=next").client_gone()
    at(clock, 0.1)
    second = asks.stream(ctx, "s2", "Grip-Channel: feed; prev-id=3", "Grip-Link: </next>; rel=next")
    at(clock, 1.15)
    assert asks.fetches == []
    at(clock, 1.2)
    assert [(round(t, 3), c) for t, c, *_ in asks.fetches] == [(1.2, "s2")]
    asks.fetches[0][4].callback(None)  # the origin refused: the stream ends
    assert second.done
    updates.stop()
    subs.stop()


def test_a_later_subscriber_starts_nothing_but_is_updated_with_the_first(clock):
    """A second hold on a subscribed channel is updated when the first subscription's timer fires, not a second later."""
    ctx, subs, updates, asks = setup(clock)
    asks.long_poll(ctx, "c1", "Grip-Channel: news")
    at(clock, 0.6)
    asks.long_poll(ctx, "c2", "Grip-Channel: news")
    at(clock, 1.1)
    assert asks.retries == [(1.1, "c1", {}), (1.1, "c2", {})]
    at(clock, 5)
    assert updates.fired == 1 and len(asks.retries) == 2
    updates.stop()
    subs.stop()


def test_a_long_poll_that_ends_first_leaves_the_channel_lingering(clock):
    """
    A long-poll answered before the timer leaves its channel subscribed: the client's next
    long-poll is re-asked when the first timer fires, and no later long-poll within the linger
    is (what Pushpin 1.36 does on the wire).
    """
    ctx, subs, updates, asks = setup(clock, linger=60)
    asks.long_poll(ctx, "c1", "Grip-Channel: news")
    at(clock, 0.3)
    ctx.router.publish(parse_item({"channel": "news", "formats": {"http-response": {"body": "hi"}}}))
    assert ctx.router.subscriber_count("news") == 0 and updates.subscribed("news")
    at(clock, 0.4)
    again = asks.long_poll(ctx, "c1b", "Grip-Channel: news")
    at(clock, 1.1)
    assert asks.retries == [(1.1, "c1b", {})]
    # the re-ask's answer is a hold again: the channel was still subscribed, so no new timer
    third = asks.long_poll(ctx, "c1c", "Grip-Channel: news")
    at(clock, 11)
    assert updates.fired == 1 and len(asks.retries) == 1 and again.done
    third.client_gone()
    at(clock, 70.9)
    assert updates.subscribed("news")
    at(clock, 71.1)
    assert not updates.subscribed("news")
    fourth = asks.long_poll(ctx, "c1d", "Grip-Channel: news")  # past the linger: first again
    at(clock, 72.2)
    assert updates.fired == 2 and asks.retries[-1][1] == "c1d"
    assert fourth.done
    updates.stop()
    subs.stop()


def test_no_linger_when_the_last_to_leave_was_a_stream(clock):
    """A stream leaving after the long-poll ends the subscription at once, as Pushpin's stream unsubscribe."""
    ctx, subs, updates, asks = setup(clock)
    poll = asks.long_poll(ctx, "c1", "Grip-Channel: news")
    stream = asks.stream(ctx, "s1", "Grip-Channel: news")
    poll.client_gone()
    assert updates.subscribed("news")
    stream.client_gone()
    assert not updates.subscribed("news") and clock.getDelayedCalls() == []
    updates.stop()
    subs.stop()


def test_off_nothing_is_re_asked(clock):
    """update_on_first_subscription=false: no timer, no re-ask, no recovery."""
    ctx = hold_context(clock)
    assert first_subscription_updates(clock, ctx.router, Subscriptions(clock, ctx.router), enabled=False) is None
    asks = Asks(clock)
    poll = asks.long_poll(ctx, "c1", "Grip-Channel: news")
    stream = asks.stream(ctx, "s1", "Grip-Channel: news; prev-id=1", "Grip-Link: </next>; rel=next; timeout=300")
    assert sorted(call.getTime() for call in clock.getDelayedCalls()) == [55.0, 300.0]  # the hold's own timers only
    at(clock, 10)
    assert asks.retries == [] and asks.fetches == []
    poll.client_gone()
    stream.client_gone()


def test_many_long_polls_are_re_asked_a_hundred_every_100_ms(clock):
    """The rate limit: 250 long-polls on one channel share one key, 100 per action, one action each 100 ms."""
    ctx, subs, updates, asks = setup(clock)
    for n in range(250):
        asks.long_poll(ctx, f"c{n}", "Grip-Channel: news")
    at(clock, 1.0)
    assert updates.queued == 250
    when = []
    for tick in (1.1, 1.2, 1.3, 1.4):
        at(clock, tick)
        when.append(len(asks.retries))
    assert when == [100, 200, 250, 250]
    # the limiter stopped after a tick with nothing to do; the channel lingers (all re-asked)
    assert len(clock.getDelayedCalls()) == 1 and subs.lingering("news")  # the linger's timer only
    updates.stop()
    subs.stop()


def test_streams_with_different_next_links_take_one_turn_each(clock):
    """Each next link is its own key: three streams are recovered 100 ms apart (Pushpin's per-link actions)."""
    ctx, subs, updates, asks = setup(clock)
    for n in range(3):
        asks.stream(ctx, f"s{n}", "Grip-Channel: feed; prev-id=1", f"Grip-Link: </next/{n}>; rel=next")
    at(clock, 1.3)
    assert [(round(t, 3), c) for t, c, *_ in asks.fetches] == [(1.1, "s0"), (1.2, "s1"), (1.3, "s2")]
    for fetch in asks.fetches:
        fetch[4].callback(None)
    at(clock, 1.4)
    updates.stop()
    subs.stop()


def test_a_hold_that_ends_while_waiting_is_skipped_and_takes_no_turn(clock):
    """A stream gone before its action runs is not fetched for, and its empty action does not delay the next one."""
    ctx, subs, updates, asks = setup(clock)
    first = asks.stream(ctx, "s0", "Grip-Channel: feed; prev-id=1", "Grip-Link: </next/0>; rel=next")
    asks.stream(ctx, "s1", "Grip-Channel: feed; prev-id=1", "Grip-Link: </next/1>; rel=next")
    at(clock, 1.05)
    first.client_gone()
    at(clock, 1.1)
    assert [(round(t, 3), c) for t, c, *_ in asks.fetches] == [(1.1, "s1")]
    asks.fetches[0][4].callback(None)
    at(clock, 1.2)
    updates.stop()
    subs.stop()


def test_limiter_queues_a_hold_once_and_round_robins_between_keys(clock):
    """A hold already waiting is not queued again; keys take turns, each action up to per_action holds."""
    ctx = hold_context(clock)
    ran = []
    limiter = UpdateLimiter(clock, ran.append, per_action=2)
    asks = Asks(clock)
    polls = [asks.long_poll(ctx, f"c{n}", "Grip-Channel: news") for n in range(3)]
    streams = [asks.stream(ctx, f"s{n}", "Grip-Channel: feed") for n in range(2)]
    for hold in polls:
        limiter.add("", hold)
    limiter.add("", polls[0])
    limiter.add("/a", streams[0])
    limiter.add("/b", streams[1])
    assert len(limiter) == 5
    rounds = []
    for tick in (0.1, 0.2, 0.3, 0.4, 0.5):
        at(clock, tick)
        rounds.append([h.conn_id for h in ran])
        ran.clear()
    assert rounds == [["c0", "c1"], ["s0"], ["s1"], ["c2"], []]
    assert limiter.actions == 4 and limiter.updated == 5
    at(clock, 0.6)
    for hold in polls + streams:
        hold.client_gone()
    assert clock.getDelayedCalls() == []


def test_an_update_that_raises_is_logged_and_the_others_still_run(clock, no_logged_failures):
    """One hold failing its update does not stop the rest of its action."""
    ctx = hold_context(clock)
    asks = Asks(clock)
    polls = [asks.long_poll(ctx, f"c{n}", "Grip-Channel: news") for n in range(2)]

    def execute(hold):
        if hold.conn_id == "c0":
            raise RuntimeError("boom")
        update_hold(hold)

    limiter = UpdateLimiter(clock, execute)
    for hold in polls:
        limiter.add("", hold)
    at(clock, 0.2)
    assert [c for _, c, _ in asks.retries] == ["c1"]
    assert [f.value.args for f in no_logged_failures] == [("boom",)]  # logged, with its traceback
    no_logged_failures.clear()
    polls[0].client_gone()


def test_stop_cancels_every_timer(clock):
    """Stopping the service cancels the subscription timers, the linger and queued updates; later subscribers start nothing."""
    ctx, subs, updates, asks = setup(clock)
    poll = asks.long_poll(ctx, "c1", "Grip-Channel: news")
    lingering = asks.long_poll(ctx, "c2", "Grip-Channel: old")
    lingering.client_gone()
    at(clock, 1.05)  # news's update is queued in the limiter
    updates.stop()
    subs.stop()
    assert [call.getTime() for call in clock.getDelayedCalls()] == [55.0]  # the hold's own timeout
    asks.long_poll(ctx, "c3", "Grip-Channel: fresh").client_gone()
    at(clock, 5)
    assert asks.retries == []
    poll.client_gone()


def test_channels_already_held_when_built_are_subscriptions(clock):
    """Built on a router that already has subscribers, their channels count as subscribed (a timer each)."""
    ctx = hold_context(clock)
    asks = Asks(clock)
    asks.long_poll(ctx, "c1", "Grip-Channel: news")
    subs = Subscriptions(clock, ctx.router)
    updates = FirstSubscriptionUpdates(clock, ctx.router, subs, UpdateLimiter(clock, update_hold))
    at(clock, 1.1)
    assert [c for _, c, _ in asks.retries] == ["c1"]
    updates.stop()
    subs.stop()
