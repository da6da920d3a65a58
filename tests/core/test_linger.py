"""The process's subscriptions (Pushpin's cs.subs) and their linger, on a Clock."""

from __future__ import annotations

from pushpin_tx.core.linger import Subscriptions
from pushpin_tx.core.router import ChannelRouter


class Sub:
    """A subscriber of one kind: C{response} (a long-poll) lingers its channel when it leaves last."""

    def __init__(self, kind: str = "response") -> None:
        self.kind = kind

    def deliver(self, publication, channel) -> None:
        pass


def long_poll_leaves_linger(sub) -> bool:
    return sub.kind == "response"


class Events:
    """An interest listener that records what it hears, with the time."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.seen: list[tuple[float, str, str]] = []

    def channel_added(self, channel: str) -> None:
        self.seen.append((round(self.clock.seconds(), 3), "added", channel))

    def channel_removed(self, channel: str) -> None:
        self.seen.append((round(self.clock.seconds(), 3), "removed", channel))


def setup(clock, linger=60.0):
    router = ChannelRouter()
    subs = Subscriptions(clock, router, linger=linger, lingers=long_poll_leaves_linger)
    events = Events(clock)
    subs.add_interest_listener(events)
    return router, subs, events


def test_a_channel_is_subscribed_by_its_first_subscriber_only(clock):
    """addSub: the first subscriber of any kind subscribes the channel; later ones change nothing."""
    router, subs, events = setup(clock)
    a, b = Sub("stream"), Sub("response")
    router.subscribe("c", a)
    router.subscribe("c", b)
    assert events.seen == [(0, "added", "c")] and subs.has("c") and list(subs.channels()) == ["c"]
    router.unsubscribe("c", a)
    assert events.seen == [(0, "added", "c")]
    router.unsubscribe("c", b)
    subs.stop()


def test_a_stream_leaving_last_ends_the_subscription_at_once(clock):
    """The last subscriber was a stream or a WebSocket: removeSub in the same call, no timer."""
    router, subs, events = setup(clock)
    s = Sub("stream")
    router.subscribe("c", s)
    clock.advance(3)
    router.unsubscribe("c", s)
    assert events.seen == [(0, "added", "c"), (3, "removed", "c")]
    assert not subs.has("c") and clock.getDelayedCalls() == []


def test_a_long_poll_leaving_last_lingers_until_the_refresh_tick_past_the_linger(clock):
    """
    The subscription of a channel whose last subscriber was a long-poll ends on the first 1 s
    refresh tick at or after C{linger} seconds: between C{linger} and C{linger + 1} seconds.
    """
    router, subs, events = setup(clock, linger=60)
    a, b = Sub(), Sub()
    router.subscribe("a", a)
    router.subscribe("b", b)
    clock.advance(0.5)
    router.unsubscribe("a", a)  # due 60.5; the refresh ticks run at 1.5, 2.5, ...
    clock.advance(0.2)
    router.unsubscribe("b", b)  # due 60.7: ends on the 61.5 tick
    assert subs.has("a") and subs.lingering("a") and subs.has("b") and router.subscriber_count("a") == 0
    clock.pump([1.0] * 59 + [0.8])
    assert clock.seconds() == 60.5 and events.seen[2:] == [(60.5, "removed", "a")]
    clock.advance(1.0)
    assert events.seen[2:] == [(60.5, "removed", "a"), (61.5, "removed", "b")]
    assert not subs.has("b") and subs.ended_by_linger == 2
    assert clock.getDelayedCalls() == []  # the timer runs only while something lingers


def test_a_long_poll_that_comes_back_keeps_the_subscription_and_a_fresh_linger_follows(clock):
    """A client that long-polls again within the linger finds its channel subscribed (not first again); its leaving lingers anew."""
    router, subs, events = setup(clock, linger=10)
    first, again = Sub(), Sub()
    router.subscribe("c", first)
    router.unsubscribe("c", first)
    clock.advance(5)
    router.subscribe("c", again)
    assert events.seen == [(0, "added", "c")] and not subs.lingering("c")
    clock.advance(20)
    assert subs.has("c")  # held: no linger runs out
    router.unsubscribe("c", again)
    clock.pump([1.0] * 9)
    assert subs.has("c")
    clock.pump([1.0] * 2)
    assert events.seen == [(0, "added", "c"), (35, "removed", "c")]
    assert clock.getDelayedCalls() == []


def test_a_stream_that_comes_and_goes_during_the_linger_ends_it_at_once(clock):
    """Pushpin's stream unsubscribe ends the channel's subscription when nobody is left, long-poll linger or not."""
    router, subs, events = setup(clock)
    poll, stream = Sub(), Sub("stream")
    router.subscribe("c", poll)
    router.unsubscribe("c", poll)
    clock.advance(2)
    router.subscribe("c", stream)
    router.unsubscribe("c", stream)
    assert events.seen == [(0, "added", "c"), (2, "removed", "c")] and not subs.has("c")
    router.subscribe("c", poll)  # first again
    assert events.seen[-1] == (2, "added", "c")
    router.unsubscribe("c", poll)
    subs.stop()


def test_the_last_to_leave_decides_whoever_came_first(clock):
    """A stream leaving while a long-poll stays leaves the channel held; the long-poll leaving last then lingers it."""
    router, subs, events = setup(clock, linger=5)
    poll, stream = Sub(), Sub("stream")
    router.subscribe("c", poll)
    router.subscribe("c", stream)
    router.unsubscribe("c", stream)
    router.unsubscribe("c", poll)
    assert subs.lingering("c")
    clock.pump([1.0] * 5)
    assert events.seen == [(0, "added", "c"), (5, "removed", "c")]


def test_a_zero_linger_ends_on_the_next_refresh_tick(clock):
    """subscription_linger=0: Pushpin's linger expires at its next refresh (within a second), not in the same call."""
    router, subs, events = setup(clock, linger=0)
    poll = Sub()
    router.subscribe("c", poll)
    router.unsubscribe("c", poll)
    assert subs.has("c")
    clock.advance(1)
    assert events.seen == [(0, "added", "c"), (1, "removed", "c")] and clock.getDelayedCalls() == []


def test_stop_cancels_the_timer_and_later_leaves_end_at_once(clock):
    """Stopping the service cancels the linger's timer; lingering channels stay subscribed, a leave from then on ends at once."""
    router, subs, events = setup(clock)
    poll, later = Sub(), Sub()
    router.subscribe("c", poll)
    router.subscribe("d", later)
    router.unsubscribe("c", poll)
    subs.stop()
    assert clock.getDelayedCalls() == [] and subs.has("c")
    router.unsubscribe("d", later)
    assert events.seen[-1] == (0, "removed", "d")


def test_a_failing_listener_is_logged_and_the_others_still_hear(clock, no_logged_failures):
    """One listener raising does not keep the subscription from the others (the router's rule)."""
    router, subs, events = setup(clock)

    class Broken:
        def channel_added(self, channel):
            raise RuntimeError("boom")

        channel_removed = channel_added

    subs.remove_interest_listener(events)
    subs.add_interest_listener(Broken())
    subs.add_interest_listener(events)
    s = Sub("stream")
    router.subscribe("c", s)
    router.unsubscribe("c", s)
    assert [kind for _, kind, _ in events.seen] == ["added", "removed"]
    assert [f.value.args for f in no_logged_failures] == [("boom",), ("boom",)]
    no_logged_failures.clear()


def test_channels_held_when_built_are_subscribed(clock):
    """Built on a router with subscribers, their channels are subscriptions (listeners read channels())."""
    router = ChannelRouter()
    poll = Sub()
    router.subscribe("c", poll)
    subs = Subscriptions(clock, router, linger=1, lingers=long_poll_leaves_linger)
    assert subs.has("c") and list(subs.channels()) == ["c"]
    router.unsubscribe("c", poll)
    assert subs.lingering("c")
    clock.advance(1)
    assert not subs.has("c")


def test_prefix_subscriptions_subscribe_nothing(clock):
    """A prefix subscriber is not a channel subscription (nothing upstream is asked for it)."""
    router, subs, events = setup(clock)
    s = Sub("stream")
    router.subscribe_prefix("news.", s)
    assert events.seen == [] and not subs.has("news.")
    router.unsubscribe_prefix("news.", s)
    assert events.seen == []


class PrefixEvents(Events):
    """An interest listener that follows prefixes too."""

    def prefix_added(self, prefix: str) -> None:
        self.seen.append((round(self.clock.seconds(), 3), "prefix added", prefix))

    def prefix_removed(self, prefix: str) -> None:
        self.seen.append((round(self.clock.seconds(), 3), "prefix removed", prefix))


def test_prefix_subscriptions_follow_the_same_linger_and_reach_prefix_listeners_only(clock):
    """
    A prefix's first prefix subscriber subscribes it; a stream leaving last ends it at once, a
    long-poll after the linger (on the tick); a long-poll back in time keeps it. Listeners
    without prefix_added (the sequencer, first-subscription updates) hear nothing of prefixes.
    """
    router, subs, channel_only = setup(clock, linger=3)
    events = PrefixEvents(clock)
    subs.add_interest_listener(events)
    s, lp, lp2 = Sub("stream"), Sub("response"), Sub("response")
    router.subscribe_prefix("news.", s)
    router.subscribe_prefix("news.", lp)
    assert list(subs.prefixes()) == ["news."] and subs.reaches("news.sport") and not subs.reaches("news")
    router.unsubscribe_prefix("news.", s)
    clock.advance(0.5)
    router.unsubscribe_prefix("news.", lp)  # a long-poll last: lingers until the tick at 3.5
    clock.advance(2)
    router.subscribe_prefix("news.", lp2)  # back during the linger: goes on
    router.unsubscribe_prefix("news.", lp2)  # leaves again at 2.5: a full linger, to the tick at 5.5
    clock.advance(2.9)
    assert subs.reaches("news.x") and events.seen == [(0, "prefix added", "news.")]
    clock.advance(0.1)
    assert events.seen == [(0, "prefix added", "news."), (5.5, "prefix removed", "news.")]
    router.subscribe_prefix("room.", s)
    clock.advance(1)
    router.unsubscribe_prefix("room.", s)  # a stream last: at once
    assert events.seen[-2:] == [(5.5, "prefix added", "room."), (6.5, "prefix removed", "room.")]
    assert channel_only.seen == [] and list(subs.prefixes()) == [] and not subs.reaches("news.x")
    assert clock.getDelayedCalls() == []


def test_a_prefix_and_a_channel_of_one_name_are_two_subscriptions(clock):
    """Channel 'news' and prefix 'news' begin and end apart; subscriptions held before start are taken."""
    router = ChannelRouter()
    early = Sub("stream")
    router.subscribe_prefix("early.", early)
    subs = Subscriptions(clock, router, linger=3, lingers=long_poll_leaves_linger)
    events = PrefixEvents(clock)
    subs.add_interest_listener(events)
    assert list(subs.prefixes()) == ["early."]
    a, b = Sub("stream"), Sub("stream")
    router.subscribe("news", a)
    router.subscribe_prefix("news", b)
    router.unsubscribe("news", a)
    assert events.seen == [(0, "added", "news"), (0, "prefix added", "news"), (0, "removed", "news")]
    assert subs.reaches("news") and subs.reaches("newsletter") and not subs.has("news")
    router.unsubscribe_prefix("early.", early)
    subs.remove_interest_listener(events)
    router.unsubscribe_prefix("news", b)
    assert events.seen[-1] == (0, "prefix removed", "early.")
