"""The channel router: subscriptions, fan-out with shared bytes, interest events."""

from __future__ import annotations

from pushpin_tx.protocol.items import parse_item
from pushpin_tx.core.router import ChannelRouter


class Recorder:
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def deliver(self, publication, channel):
        self.log.append((self.name, channel, publication.stream_chunk))


class Interest:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def channel_added(self, channel):
        self.events.append(("added", channel))

    def channel_removed(self, channel):
        self.events.append(("removed", channel))


def stream_item(channel: str, content: str):
    return parse_item({"channel": channel, "formats": {"http-stream": {"content": content}}})


def test_publish_reaches_only_that_channels_subscribers():
    """A publish on 'news' is delivered to news subscribers and nobody else."""
    log: list = []
    router = ChannelRouter()
    router.subscribe("news", Recorder("a", log))
    router.subscribe("sport", Recorder("b", log))
    assert router.publish(stream_item("news", "tick\n")) == 1
    assert log == [("a", "news", b"5\r\ntick\n\r\n")]


def test_fan_out_hands_every_subscriber_the_same_bytes_object():
    """The chunk is framed once per publish: every subscriber gets the identical object."""
    log: list = []
    router = ChannelRouter()
    for n in range(50):
        router.subscribe("c", Recorder(str(n), log))
    router.publish(stream_item("c", "x" * 100))
    chunks = {id(entry[2]) for entry in log}
    assert len(log) == 50 and len(chunks) == 1


def test_publishing_to_an_empty_channel_is_a_counted_no_op():
    """Nobody listening: nothing happens, and the idle publish is counted."""
    router = ChannelRouter()
    assert router.publish(stream_item("nobody", "x")) == 0
    assert router.published_idle == 1 and router.published == 0


def test_a_subscriber_that_unsubscribes_during_delivery_does_not_disturb_the_others():
    """A long-poll answered mid-fan-out leaves the channel; the rest still get the item."""
    log: list = []
    router = ChannelRouter()

    class OneShot(Recorder):
        def deliver(self, publication, channel):
            super().deliver(publication, channel)
            router.unsubscribe(channel, self)

    subs = [OneShot("a", log), Recorder("b", log), OneShot("c", log)]
    for sub in subs:
        router.subscribe("c", sub)
    router.publish(stream_item("c", "1"))
    assert [name for name, _, _ in log] == ["a", "b", "c"]
    assert router.subscribers("c") == (subs[1],)


def test_a_failing_subscriber_is_logged_and_skipped(no_logged_failures):
    """One subscriber raising does not stop delivery to the others."""
    log: list = []
    router = ChannelRouter()

    class Broken:
        def deliver(self, publication, channel):
            raise RuntimeError("boom")

    router.subscribe("c", Broken())
    router.subscribe("c", Recorder("ok", log))
    router.publish(stream_item("c", "1"))
    assert log and log[0][0] == "ok"
    assert len(no_logged_failures) == 1
    no_logged_failures.clear()


def test_interest_listeners_hear_first_subscriber_and_last_unsubscribe():
    """The SUB input learns when a channel gains its first and loses its last listener."""
    router = ChannelRouter()
    interest = Interest()
    router.add_interest_listener(interest)
    a, b = Recorder("a", []), Recorder("b", [])
    router.subscribe("c", a)
    router.subscribe("c", b)
    router.unsubscribe("c", a)
    router.unsubscribe("c", b)
    router.unsubscribe("c", b)  # unknown pair: ignored
    assert interest.events == [("added", "c"), ("removed", "c")]
    assert list(router.channels()) == []


def test_emptied_listeners_hear_who_left_last_before_the_interest_listeners():
    """Only the unsubscribe that empties a channel is reported, with its subscriber, before channel_removed."""
    router = ChannelRouter()
    interest = Interest()
    router.add_interest_listener(interest)
    router.add_emptied_listener(lambda channel, sub: interest.events.append(("emptied", channel, sub.name)))
    a, b = Recorder("a", []), Recorder("b", [])
    router.subscribe("news", a)
    router.subscribe("news", b)
    router.unsubscribe("news", a)
    router.unsubscribe("news", a)  # not subscribed any more: nothing
    router.unsubscribe("news", b)
    assert interest.events == [("added", "news"), ("emptied", "news", "b"), ("removed", "news")]


def test_a_failing_emptied_listener_is_logged_and_the_others_still_hear(no_logged_failures):
    """An emptied listener that raises does not keep the interest listeners from hearing the channel go."""
    router = ChannelRouter()
    interest = Interest()
    router.add_interest_listener(interest)

    def broken(channel, sub):
        raise RuntimeError("boom")

    router.add_emptied_listener(broken)
    router.subscribe("news", Recorder("a", []))
    router.unsubscribe("news", router.subscribers("news")[0])
    assert interest.events == [("added", "news"), ("removed", "news")]
    assert [f.value.args for f in no_logged_failures] == [("boom",)]
    no_logged_failures.clear()
