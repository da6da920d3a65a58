"""Prefix (wildcard) subscriptions in the channel router: matching, de-duplication, cost."""

from __future__ import annotations

import pytest

from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.protocol.items import parse_item


class Recorder:
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def deliver(self, publication, channel):
        self.log.append((self.name, channel, publication.item.http_stream.content))


class RunRecorder(Recorder):
    def deliver_run(self, publications, channel):
        self.log.append((self.name, channel, [p.item.http_stream.content for p in publications]))


class Interest:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def channel_added(self, channel):
        self.events.append(("added", channel))

    def channel_removed(self, channel):
        self.events.append(("removed", channel))


class CountingDict(dict):
    """A dict that counts its lookups (the router's prefix table, to measure publish cost)."""

    lookups = 0

    def get(self, key, default=None):
        CountingDict.lookups += 1
        return super().get(key, default)

    def __contains__(self, key):
        CountingDict.lookups += 1
        return super().__contains__(key)


def counting_prefix_table(router: ChannelRouter) -> None:
    """Make C{router}'s prefix table (its index's entries) a L{CountingDict}."""
    router._prefix_index.entries = router._prefixes = CountingDict()


def item(channel: str, content: str = "x"):
    return parse_item({"channel": channel, "formats": {"http-stream": {"content": content}}})


def test_a_prefix_subscriber_gets_every_channel_starting_with_the_prefix():
    """A subscription to prefix 'news.' receives news.sport and news.weather, each with its channel name, and not 'sport'."""
    log: list = []
    router = ChannelRouter()
    router.subscribe_prefix("news.", Recorder("w", log))
    assert router.publish(item("news.sport", "a")) == 1
    assert router.publish(item("news.weather", "b")) == 1
    assert router.publish(item("sport", "c")) == 0
    assert router.publish(item("news", "d")) == 0
    assert log == [("w", "news.sport", b"a"), ("w", "news.weather", b"b")]
    assert router.published_idle == 2


def test_exact_and_prefix_subscribers_both_get_the_item():
    """A publish reaches the exact subscribers and the prefix subscribers of the name."""
    log: list = []
    router = ChannelRouter()
    router.subscribe("news.sport", Recorder("exact", log))
    router.subscribe_prefix("news.", Recorder("wild", log))
    router.subscribe_prefix("news.s", Recorder("wilder", log))
    assert router.publish(item("news.sport")) == 3
    assert sorted(name for name, _, _ in log) == ["exact", "wild", "wilder"]


def test_a_subscriber_matching_several_ways_gets_the_item_once():
    """A connection subscribed to a channel and to two prefixes of it is handed each item once."""
    log: list = []
    router = ChannelRouter()
    sub = Recorder("one", log)
    router.subscribe("news.sport", sub)
    router.subscribe_prefix("news.", sub)
    router.subscribe_prefix("n", sub)
    assert router.publish(item("news.sport", "a")) == 1
    assert log == [("one", "news.sport", b"a")]


def test_a_run_reaches_prefix_subscribers_in_order_in_one_call():
    """publish_run hands a prefix subscriber with deliver_run the whole run, in order."""
    log: list = []
    router = ChannelRouter()
    router.subscribe_prefix("a.", RunRecorder("r", log))
    assert router.publish_run([item("a.b", "1"), item("a.b", "2"), item("a.b", "3")]) == 1
    assert log == [("r", "a.b", [b"1", b"2", b"3"])]


def test_unsubscribing_a_prefix_stops_delivery_and_keeps_the_others():
    """After unsubscribe_prefix, that prefix delivers nothing; another prefix of the same length still does."""
    log: list = []
    router = ChannelRouter()
    a, b = Recorder("a", log), Recorder("b", log)
    router.subscribe_prefix("ab", a)
    router.subscribe_prefix("cd", b)
    router.unsubscribe_prefix("ab", a)
    router.unsubscribe_prefix("ab", a)  # unknown pairs are ignored
    router.publish(item("abc"))
    router.publish(item("cde"))
    assert log == [("b", "cde", b"x")]
    router.unsubscribe_prefix("cd", b)
    assert list(router.prefixes()) == [] and not router._prefix_index.lengths()
    assert router.publish(item("cde")) == 0


def test_the_prefix_is_not_a_channel_and_interest_listeners_are_not_told():
    """A prefix subscription adds no channel: channels(), subscriber_count and interest events stay exact-only."""
    router = ChannelRouter()
    interest = Interest()
    router.add_interest_listener(interest)
    router.subscribe_prefix("news.", Recorder("w", []))
    assert list(router.channels()) == [] and router.subscriber_count("news.") == 0
    assert interest.events == []
    assert router.has_subscribers("news.x") and not router.has_subscribers("new")


def test_an_empty_prefix_is_refused():
    """An empty prefix would match every channel: it is an error."""
    with pytest.raises(ValueError):
        ChannelRouter().subscribe_prefix("", Recorder("w", []))


def test_prefix_matching_costs_at_most_the_name_length_in_lookups():
    """With 5000 prefix subscriptions, a publish to a 6-character name makes at most 6 prefix-table lookups."""
    router = ChannelRouter()
    counting_prefix_table(router)
    log: list = []
    for n in range(5000):
        router.subscribe_prefix(f"p{n}", Recorder(str(n), log))  # lengths 2..5
    for n in range(50):
        router.subscribe_prefix(f"long-prefix-{n}-", Recorder("l", log))
    CountingDict.lookups = 0
    assert router.publish(item("p123xy")) == 3  # p1, p12, p123
    assert CountingDict.lookups <= len("p123xy")


def test_exact_publishes_never_touch_the_prefix_table_when_it_is_empty():
    """No prefix subscription: a publish makes no prefix lookup at all."""
    router = ChannelRouter()
    counting_prefix_table(router)
    router.subscribe("news", Recorder("a", []))
    CountingDict.lookups = 0
    router.publish(item("news"))
    router.publish_run([item("news"), item("news")])
    assert CountingDict.lookups == 0


def test_prefix_listeners_hear_a_prefixs_first_subscriber_and_who_left_last(no_logged_failures):
    """prefix_added on a prefix's first subscriber, prefix_emptied(prefix, last) when its last leaves; a failing listener does not stop the next."""
    router = ChannelRouter()
    heard: list = []

    class Broken:
        def prefix_added(self, prefix):
            raise RuntimeError("boom")

        def prefix_emptied(self, prefix, last):
            raise RuntimeError("boom")

    class Listener:
        def prefix_added(self, prefix):
            heard.append(("added", prefix))

        def prefix_emptied(self, prefix, last):
            heard.append(("emptied", prefix, last.name))

    router.add_prefix_listener(Broken())
    router.add_prefix_listener(Listener())
    a, b = Recorder("a", []), Recorder("b", [])
    router.subscribe_prefix("news.", a)
    router.subscribe_prefix("news.", b)
    router.unsubscribe_prefix("news.", a)
    router.unsubscribe_prefix("news.", a)  # unknown pair: nothing
    router.unsubscribe_prefix("news.", b)
    assert heard == [("added", "news."), ("emptied", "news.", "b")]
    assert len(no_logged_failures) == 2  # the broken listener's two failures, logged
    no_logged_failures.clear()
