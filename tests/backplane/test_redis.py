"""The Redis backplane engine on a scripted connection (Clock, StringTransport): what goes to Redis, what is delivered, and when."""

from __future__ import annotations

import pickle

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pushpin_tx.backplane.redis import (
    RedisBackplane, decode_envelope, encode_envelope, parse_backplane_url,
)
from pushpin_tx.backplane.resp import RespParser
from pushpin_tx.protocol.items import parse_item


def item(channel: str, n: int, prev: bool = False):
    obj = {"channel": channel, "id": str(n), "formats": {"http-stream": {"content": f"{n}\n"}}}
    if prev:
        obj["prev-id"] = str(n - 1)
    return parse_item(obj)


class Interest:
    """The router's interest side as the backplane sees it."""

    def __init__(self, *channels: str) -> None:
        self.held = set(channels)
        self.listeners: list = []

    def add_interest_listener(self, listener) -> None:
        self.listeners.append(listener)

    def remove_interest_listener(self, listener) -> None:
        self.listeners.remove(listener)

    def channels(self):
        return iter(self.held)

    def add(self, channel: str) -> None:
        self.held.add(channel)
        for listener in self.listeners:
            listener.channel_added(channel)

    def remove(self, channel: str) -> None:
        self.held.discard(channel)
        for listener in self.listeners:
            listener.channel_removed(channel)


class ScriptedRedis:
    """A client endpoint whose every connection is a StringTransport the test answers for Redis."""

    def __init__(self) -> None:
        self.protocols: list = []
        self.fail_next = 0

    def connect(self, factory):
        if self.fail_next:
            self.fail_next -= 1
            return defer.fail(ConnectionRefusedError("refused"))
        proto = factory.buildProtocol(None)
        proto.makeConnection(StringTransport())
        self.protocols.append(proto)
        return defer.succeed(proto)

    @property
    def current(self):
        return self.protocols[-1]

    def sent(self) -> list:
        """Every command the current connection sent so far (and forget them)."""
        transport = self.current.transport
        data = transport.value()
        transport.clear()
        return RespParser().feed(data)

    def reply(self, data: bytes) -> None:
        self.current.dataReceived(data)


def push(*parts: bytes | int) -> bytes:
    out = [b">%d\r\n" % len(parts)]
    for part in parts:
        out.append(b":%d\r\n" % part if isinstance(part, int) else b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


@pytest.fixture
def wired(clock):
    redis = ScriptedRedis()
    interest = Interest("c")
    delivered: list = []
    remote: list = []
    backplane = RedisBackplane(parse_backplane_url("redis://:s3cret@127.0.0.1:7000/2"), clock, interest, delivered.append,
                               deliver_remote=remote.append, endpoint=redis)
    backplane.startService()
    yield backplane, redis, interest, delivered, remote, clock
    backplane.stopService()


def up(backplane, redis) -> list:
    """Answer the handshake; returns what was sent."""
    sent = redis.sent()
    redis.reply(b"%1\r\n+proto\r\n:3\r\n")
    return sent + redis.sent()


def test_url_forms_and_the_password_never_shown():
    """redis:// and rediss:// with user, password, db and ca=; describe() hides the password; bad URLs are refused."""
    a = parse_backplane_url("rediss://user:p%40ss@redis.example:6380/3")
    assert (a.host, a.port, a.db, a.tls, a.username, a.password) == ("redis.example", 6380, 3, True, "user", "p@ss")
    assert a.describe() == "rediss://user:***@redis.example:6380/3"
    b = parse_backplane_url("redis://10.0.0.1")
    assert (b.port, b.db, b.tls, b.password) == (6379, 0, False, None)
    assert parse_backplane_url("rediss://h/0?ca=/etc/redis/ca.pem").ca_file == "/etc/redis/ca.pem"
    for bad in ("http://x", "redis://x/abc", "redis://x:99999", "redis://x/0?ca=/a.pem", "rediss://x/0?verify=no"):
        with pytest.raises(ValueError) as e:
            parse_backplane_url(bad)
        assert "s3cret" not in str(e.value)


def test_handshake_authenticates_and_subscribes_only_held_channels(wired):
    """HELLO 3 with AUTH, then SUBSCRIBE to the held channels only, under the db's prefix."""
    backplane, redis, interest, *_ = wired
    sent = up(backplane, redis)
    assert sent[0][:5] == [b"HELLO", b"3", b"AUTH", b"default", b"s3cret"]
    assert sent[1] == [b"SUBSCRIBE", b"pushpin-tx/2/c"]
    assert backplane.state == "up"
    interest.add("d")
    interest.remove("c")
    assert redis.sent() == [[b"SUBSCRIBE", b"pushpin-tx/2/d"], [b"UNSUBSCRIBE", b"pushpin-tx/2/c"]]


def test_own_publish_is_delivered_on_its_echo_once(wired):
    """A turn's first item goes out at once, the rest of the turn as one PUBLISH at its end; delivered on the echo, not again on the reply."""
    backplane, redis, interest, delivered, remote, clock = wired
    up(backplane, redis)
    backplane.publish(item("c", 1))
    (first,) = redis.sent()
    assert first[:2] == [b"PUBLISH", b"pushpin-tx/2/c"]
    backplane.publish(item("c", 2))
    backplane.publish(item("c", 3))
    assert redis.sent() == [] and delivered == []
    clock.advance(0)
    (rest,) = redis.sent()
    assert [i.id for i in decode_envelope(first[2])[2]] == ["1"]
    assert [i.id for i in decode_envelope(rest[2])[2]] == ["2", "3"]
    redis.reply(push(b"message", b"pushpin-tx/2/c", first[2]) + b":3\r\n")
    redis.reply(push(b"message", b"pushpin-tx/2/c", rest[2]) + b":3\r\n")
    assert [i.id for i in delivered] == ["1", "2", "3"] and remote == []
    assert backplane.snapshot()["in_flight"] == 0


def test_others_publishes_go_through_deliver_remote(wired):
    """An envelope from another instance is delivered through deliver_remote (which records its ids)."""
    backplane, redis, interest, delivered, remote, clock = wired
    up(backplane, redis)
    redis.reply(push(b"message", b"pushpin-tx/2/c", encode_envelope(b"other", 1, [item("c", 5)])))
    assert [i.id for i in remote] == ["5"] and delivered == []
    assert backplane.received_remote == 1


def test_a_publish_lost_before_its_echo_is_delivered_here_once(wired):
    """Connection lost with two PUBLISHes unanswered: the echoed one is not repeated, the other is delivered locally."""
    backplane, redis, interest, delivered, remote, clock = wired
    up(backplane, redis)
    backplane.publish(item("c", 1))
    backplane.publish(item("x", 2))  # a channel we do not hold: no echo will come
    clock.advance(0)
    first, second = redis.sent()
    redis.reply(push(b"message", b"pushpin-tx/2/c", first[2]))
    redis.current.connectionLost(Failure(ConnectionLost("gone")))
    assert [i.id for i in delivered] == ["1", "2"]
    assert backplane.unconfirmed == 1 and backplane.state == "down"
    assert clock.getDelayedCalls()  # the reconnect


def test_while_down_publishes_are_local_then_redis_again_after_backoff(wired):
    """Down: delivered here and counted; reconnects at 0.5 s, 1 s, 2 s ... and re-subscribes."""
    backplane, redis, interest, delivered, remote, clock = wired
    up(backplane, redis)
    redis.current.connectionLost(Failure(ConnectionLost("gone")))
    redis.fail_next = 2
    backplane.publish(item("c", 1))
    assert [i.id for i in delivered] == ["1"] and backplane.local_only == 1
    clock.advance(0.5)  # refused
    clock.advance(1.0)  # refused
    assert len(redis.protocols) == 1
    clock.advance(2.0)
    assert len(redis.protocols) == 2
    assert up(backplane, redis)[1] == [b"SUBSCRIBE", b"pushpin-tx/2/c"]
    assert backplane.state == "up" and backplane.connects == 2
    backplane.publish(item("c", 2))
    clock.advance(0)
    assert redis.sent()[0][0] == b"PUBLISH"


def test_a_wrong_password_is_logged_without_the_password(wired, capsys):
    """WRONGPASS is logged as Redis says it, the password never; the instance retries."""
    from twisted.logger import LogLevel, formatEvent, globalLogPublisher

    backplane, redis, *_ , clock = wired
    events: list = []
    globalLogPublisher.addObserver(events.append)
    try:
        redis.reply(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
        redis.current.connectionLost(Failure(ConnectionLost("closed")))
    finally:
        globalLogPublisher.removeObserver(events.append)
    texts = [formatEvent(e) for e in events]
    assert any("WRONGPASS" in t for t in texts)
    assert not any("s3cret" in t for t in texts)
    assert any(e["log_level"] is LogLevel.error for e in events)
    assert backplane.state == "down"


def test_envelopes_with_other_globals_are_refused(wired):
    """A payload that would import anything but the item classes is dropped and counted, nothing runs."""
    backplane, redis, interest, delivered, remote, clock = wired
    up(backplane, redis)
    evil = pickle.dumps((1, b"x", 1, (print,)))
    redis.reply(push(b"message", b"pushpin-tx/2/c", evil) + push(b"message", b"pushpin-tx/2/c", b"garbage"))
    assert backplane.rejected == 2 and delivered == remote == []


def test_unsubscribe_waits_for_the_linger_of_a_long_poll_channel(clock):
    """
    On the process's subscriptions (core.linger), as the service wires it: a channel whose
    last subscriber was a long-poll is unsubscribed from Redis when its linger ends, not when
    the long-poll left; a client that comes back meanwhile keeps the subscription; a stream
    leaving last unsubscribes at once.
    """
    from pushpin_tx.core.linger import Subscriptions
    from pushpin_tx.core.router import ChannelRouter

    class Sub:
        def __init__(self, kind):
            self.kind = kind

        def deliver(self, publication, channel):
            pass

    router = ChannelRouter()
    subs = Subscriptions(clock, router, linger=10, lingers=lambda sub: sub.kind == "response")
    redis = ScriptedRedis()
    backplane = RedisBackplane(parse_backplane_url("redis://127.0.0.1:7000/0"), clock, subs, [].append,
                               deliver_remote=[].append, endpoint=redis)
    backplane.startService()
    try:
        up(backplane, redis)
        poll, again, stream = Sub("response"), Sub("response"), Sub("stream")
        router.subscribe("lp", poll)
        router.unsubscribe("lp", poll)
        clock.advance(5)
        router.subscribe("lp", again)
        router.unsubscribe("lp", again)  # a fresh linger: 10 s from now
        router.subscribe("st", stream)
        router.unsubscribe("st", stream)
        assert redis.sent() == [[b"SUBSCRIBE", b"pushpin-tx/0/lp"], [b"SUBSCRIBE", b"pushpin-tx/0/st"],
                                [b"UNSUBSCRIBE", b"pushpin-tx/0/st"]]
        clock.pump([1.0] * 9)
        assert redis.sent() == []
        clock.advance(1.0)
        assert redis.sent() == [[b"UNSUBSCRIBE", b"pushpin-tx/0/lp"]]
    finally:
        backplane.stopService()
        subs.stop()


class PrefixInterest(Interest):
    """Interest with prefixes, as the process's subscriptions give it."""

    def __init__(self, *channels: str, prefixes=()) -> None:
        super().__init__(*channels)
        self.held_prefixes = set(prefixes)

    def prefixes(self):
        return iter(self.held_prefixes)

    def add_prefix(self, prefix: str) -> None:
        self.held_prefixes.add(prefix)
        for listener in self.listeners:
            listener.prefix_added(prefix)

    def remove_prefix(self, prefix: str) -> None:
        self.held_prefixes.discard(prefix)
        for listener in self.listeners:
            listener.prefix_removed(prefix)


def test_glob_escape_makes_every_glob_character_literal():
    """* ? [ ] and backslash are escaped with a backslash, nothing else is touched; unescape gives it back."""
    from pushpin_tx.backplane.redis import glob_escape, glob_unescape

    assert glob_escape(b"news.") == b"news."
    assert glob_escape(b"a*b?c[d]e\\f") == b"a\\*b\\?c\\[d\\]e\\\\f"
    assert glob_unescape(glob_escape(b"a*b?c[d]e\\f")) == b"a*b?c[d]e\\f"


def test_a_prefix_is_psubscribed_escaped_and_each_publish_is_delivered_once(clock):
    """
    A prefix is a PSUBSCRIBE of its escaped name plus '*' (at the handshake and when it comes),
    PUNSUBSCRIBE when it goes. Redis sends a publish once per matching subscription: the
    message when it had the channel, else the longest matching pattern's pmessage, is the one
    delivered, by what Redis confirmed it had when it sent them.
    """
    redis = ScriptedRedis()
    interest = PrefixInterest("news.sport", prefixes=("news.",))
    delivered: list = []
    remote: list = []
    backplane = RedisBackplane(parse_backplane_url("redis://127.0.0.1:7000/0"), clock, interest, delivered.append,
                               deliver_remote=remote.append, endpoint=redis)
    backplane.startService()
    try:
        sent = up(backplane, redis)
        assert sent[1:] == [[b"SUBSCRIBE", b"pushpin-tx/0/news.sport"], [b"PSUBSCRIBE", b"pushpin-tx/0/news.*"]]
        interest.add_prefix("a*[b]?")
        interest.add_prefix("news.w")
        assert redis.sent() == [[b"PSUBSCRIBE", b"pushpin-tx/0/a\\*\\[b\\]\\?*"], [b"PSUBSCRIBE", b"pushpin-tx/0/news.w*"]]
        redis.reply(push(b"subscribe", b"pushpin-tx/0/news.sport", 1) + push(b"psubscribe", b"pushpin-tx/0/news.*", 2)
                    + push(b"psubscribe", b"pushpin-tx/0/a\\*\\[b\\]\\?*", 3) + push(b"psubscribe", b"pushpin-tx/0/news.w*", 4))

        def publish(channel: str, n: int, patterns: list[bytes], exact: bool) -> None:
            name = b"pushpin-tx/0/" + channel.encode()
            payload = encode_envelope(b"other", n, [item(channel, n)])
            data = push(b"message", name, payload) if exact else b""
            for pattern in patterns:
                data += b">4\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in (b"pmessage", pattern, name, payload))
            redis.reply(data)

        publish("news.sport", 1, [b"pushpin-tx/0/news.*"], exact=True)  # channel and prefix: once
        publish("news.weather", 2, [b"pushpin-tx/0/news.*", b"pushpin-tx/0/news.w*"], exact=False)  # two prefixes: once
        publish("a*[b]?x", 3, [b"pushpin-tx/0/a\\*\\[b\\]\\?*"], exact=False)
        assert [(i.channel, i.id) for i in remote] == [("news.sport", "1"), ("news.weather", "2"), ("a*[b]?x", "3")]

        # news.w goes: unsubscribed, and until Redis confirms it, its pmessage is still the one of the two
        interest.remove_prefix("news.w")
        assert redis.sent() == [[b"PUNSUBSCRIBE", b"pushpin-tx/0/news.w*"]]
        publish("news.wind", 4, [b"pushpin-tx/0/news.*", b"pushpin-tx/0/news.w*"], exact=False)
        redis.reply(push(b"punsubscribe", b"pushpin-tx/0/news.w*", 3))
        publish("news.wind", 5, [b"pushpin-tx/0/news.*"], exact=False)
        # the exact channel goes while Redis still had it: its message is the one (news. still wants it)
        interest.remove("news.sport")
        publish("news.sport", 6, [b"pushpin-tx/0/news.*"], exact=True)
        redis.reply(push(b"unsubscribe", b"pushpin-tx/0/news.sport", 2))
        publish("news.sport", 7, [b"pushpin-tx/0/news.*"], exact=False)
        assert [i.id for i in remote] == ["1", "2", "3", "4", "5", "6", "7"]
        # the prefix goes: nothing of it is delivered any more, even in flight
        interest.remove_prefix("news.")
        publish("news.sport", 8, [b"pushpin-tx/0/news.*"], exact=False)
        assert [i.id for i in remote] == ["1", "2", "3", "4", "5", "6", "7"] and delivered == []
        assert backplane.snapshot()["prefixes"] == 1
    finally:
        backplane.stopService()


def test_a_restart_subscribes_the_prefixes_held_then_only(clock):
    """Stopped and started again, the backplane PSUBSCRIBEs the prefixes held now: not one that ended while it was stopped."""
    redis = ScriptedRedis()
    interest = PrefixInterest(prefixes=("news.",))
    backplane = RedisBackplane(parse_backplane_url("redis://127.0.0.1:7000/0"), clock, interest, [].append, endpoint=redis)
    backplane.startService()
    up(backplane, redis)
    backplane.stopService()
    interest.remove_prefix("news.")  # (not heard: the backplane is stopped)
    interest.add_prefix("sport.")
    backplane.startService()
    try:
        assert up(backplane, redis)[1:] == [[b"PSUBSCRIBE", b"pushpin-tx/0/sport.*"]]
        assert backplane.snapshot()["prefixes"] == 1
    finally:
        backplane.stopService()
