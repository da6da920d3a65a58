"""
StatsPublisher: Pushpin's stats packets (both formats), their pacing on a Clock, and one
run through a real PUB socket to a SUB client.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import pytest_twisted
import zmq
from twisted.internet import task

from pushpin_tx.protocol import tnetstring
from pushpin_tx.protocol.config import load_settings
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.stats import Counters
from pushpin_tx.zeromq.inputs import ZmqInputService
from pushpin_tx.zeromq.reader import ZmqReader
from pushpin_tx.core.stats_feed import StatsPublisher, encode_packet
from tests.zeromq.test_reader import Collector, zctx  # noqa: F401  (zctx is a fixture)
from tests.zeromq.test_reader import no_zmq_readers  # noqa: F401  (autouse fixture)

ZERO_FIELDS = {
    f"{side}-{what}-{way}": 0
    for side in ("client", "server")
    for what in ("header-bytes", "content-bytes", "messages")
    for way in ("received", "sent")
}


def plain(value: Any) -> Any:
    """A decoded tnetstring with byte strings as text, to compare with JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def decode(frame: bytes) -> tuple[str, dict]:
    """Split a stats frame into its type and its fields, whichever the format."""
    packet_type, _, rest = frame.partition(b" ")
    if rest[:1] == b"J":
        return packet_type.decode(), json.loads(rest[1:])
    assert rest[:1] == b"T", frame
    return packet_type.decode(), plain(tnetstring.loads(rest[1:]))


class Fixture:
    """A publisher on a Clock whose packets land in a list."""

    def __init__(self, clock, **kw) -> None:
        self.clock = clock
        self.counters = Counters()
        kw.setdefault("instance_id", "pushpin-handler_7")
        self.stats = StatsPublisher(clock, self.counters, **kw)
        self.frames: list[bytes] = []
        self.stats.attach(self.frames.append)

    def take(self) -> list[tuple[str, dict]]:
        out = [decode(f) for f in self.frames]
        self.frames.clear()
        return out


@pytest.fixture
def fx(clock):
    f = Fixture(clock, connection_ttl=8, subscription_ttl=8, subscription_linger=4, report_interval=3)
    yield f
    f.stats.stop()


# --- encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, expected", [
    ("tnetstring", b"sub T" + tnetstring.dumps({"mode": "ws", "channel": "\u00e9", "ttl": 60})),
    ("json", b'sub J{"channel":"\xc3\xa9","mode":"ws","ttl":60}'),
])
def test_packets_are_type_space_format_letter_then_body(fmt, expected):
    """A packet is `<type> T<tnetstring>` or `<type> J<compact sorted JSON, UTF-8 unescaped>`, as Qt writes it."""
    assert encode_packet("sub", {"mode": "ws", "channel": "\u00e9", "ttl": 60}, fmt) == expected


def test_conn_packets_carry_pushpins_fields(fx):
    """conn: from, id, type, peer-address, ttl; ssl only when true; route only when set; then unavailable."""
    fx.stats.connected("condure:1", "http", "127.0.0.1", False)
    fx.stats.connected("condure:2", "ws", None, True, route="r1")
    fx.stats.disconnected("condure:2")
    fx.stats.disconnected("never-seen")
    assert fx.take() == [
        ("conn", {"from": "pushpin-handler_7", "id": "condure:1", "type": "http", "peer-address": "127.0.0.1",
                  "ttl": 8}),
        ("conn", {"from": "pushpin-handler_7", "route": "r1", "id": "condure:2", "type": "ws", "ssl": True,
                  "ttl": 8}),
        ("conn", {"from": "pushpin-handler_7", "route": "r1", "id": "condure:2", "unavailable": True}),
    ]


def test_is_connected_follows_connect_and_disconnect(fx):
    """is_connected (what conncheck asks) is true between connected() and disconnected()."""
    assert not fx.stats.is_connected("a")
    fx.stats.connected("a", "http", None, False)
    assert fx.stats.is_connected("a") and fx.stats.connection_count == 1
    fx.stats.disconnected("a")
    assert not fx.stats.is_connected("a") and fx.stats.connection_count == 0


def test_message_packets(fx):
    """message: channel, item-id (when there is one), count, blocks (when known), transport; never a route."""
    fx.stats.message("news", "i1", 3, "http-stream", route="r1")
    fx.stats.message("news", None, 0, "ws-message", blocks=2)
    assert fx.take() == [
        ("message", {"from": "pushpin-handler_7", "channel": "news", "item-id": "i1", "count": 3,
                     "transport": "http-stream"}),
        ("message", {"from": "pushpin-handler_7", "channel": "news", "count": 0, "blocks": 2,
                     "transport": "ws-message"}),
    ]


def test_the_from_field_is_left_out_without_an_instance_id(clock):
    """With no instance id there is no `from` key (Pushpin omits empty fields)."""
    f = Fixture(clock, instance_id="")
    f.stats.message("c", None, 1, "http-response")
    assert f.take() == [("message", {"channel": "c", "count": 1, "transport": "http-response"})]


@pytest.mark.parametrize("fmt", ["tnetstring", "json"])
@pytest.mark.parametrize("instance_id", ["", "pushpin-handler_7", "h\u00e9"])
@pytest.mark.parametrize("item_id", [None, "", "i1", "\u00e9\U0001f600\"q\\"])
@pytest.mark.parametrize("transport", ["http-response", "http-stream", "ws-message", "other"])
def test_message_packets_are_the_generic_encoding_byte_for_byte(clock, fmt, instance_id, item_id, transport):
    """message(), built without the generic walk, writes exactly what encode_packet writes for its fields."""
    f = Fixture(clock, fmt=fmt, instance_id=instance_id)
    cases = [(channel, count, blocks) for channel in ("news", "", "c\u00e9/\"x\"")
             for count, blocks in [(0, None), (3, None), (-2, 5), (1, 0), (7, -1), (12345678901, 99)]]
    for channel, count, blocks in cases:
        f.stats.message(channel, item_id, count, transport, blocks=blocks)
        fields: dict[str, Any] = {"from": instance_id} if instance_id else {}
        fields["channel"] = channel
        if item_id is not None:
            fields["item-id"] = item_id
        fields["count"] = max(count, 0)
        if blocks is not None and blocks >= 0:
            fields["blocks"] = blocks
        fields["transport"] = transport
        assert f.frames == [encode_packet("message", fields, fmt)]
        f.frames.clear()


def test_a_message_that_cannot_be_encoded_is_logged_and_the_next_goes_out(fx, no_logged_failures):
    """A channel with a lone surrogate (not encodable) fails that packet alone, logged, as before."""
    fx.stats.message("bad\ud800", None, 1, "http-stream")
    fx.stats.message("good", None, 1, "http-stream")
    assert [f["channel"] for _, f in fx.take()] == ["good"]
    assert [f.type for f in no_logged_failures] == [UnicodeEncodeError]
    no_logged_failures.clear()  # the one expected


# --- interest: what the stats socket's subscribers asked for ----------------------------------


@pytest.mark.parametrize("topics, sent", [
    (None, ["conn", "sub", "message", "activity", "report", "counts"]),
    ([], []),
    ([b""], ["conn", "sub", "message", "activity", "report", "counts"]),
    ([b"report"], ["report"]),
    ([b"mess", b"co"], ["conn", "message", "counts"]),
    ([b"message T"], ["message"]),
    ([b"message J"], []),
    ([b"message T4:from,"], ["message"]),  # longer than the prefix: built, the socket decides
    ([b"messages"], []),
    ([b"x", b"sub T"], ["sub"]),
])
def test_only_packet_types_some_subscription_can_match_are_built(fx, topics, sent):
    """With the subscriptions known, a packet type no subscribed prefix can match is not sent at all."""
    fx.stats.set_interest(topics)
    fx.stats.connected("a", "http", None, False)
    fx.stats.subscribed("news", "stream")
    fx.stats.message("news", None, 1, "http-stream")
    fx.stats.activity(None, 1)
    fx.counters.requests_received += 1
    fx.clock.advance(0.1)
    fx.stats.report()
    assert [t for t, _ in fx.take()] == sent
    assert fx.stats.wants_messages == ("message" in sent)


def test_state_is_kept_while_nobody_listens_so_refreshes_and_reports_are_whole(fx):
    """With no subscriber nothing is built, but connections, subscriptions and report counts are kept."""
    fx.stats.set_interest([])
    fx.stats.start()
    fx.stats.connected("a", "http", None, False)
    fx.stats.subscribed("news", "response")
    fx.stats.message("news", None, 2, "http-response")  # counted for the report all the same
    fx.clock.advance(1)
    assert fx.take() == []
    fx.stats.set_interest([b""])  # someone subscribes
    fx.clock.advance(2)
    assert fx.take() == [("report", {"from": "pushpin-handler_7", "connections": 1, "minutes": 1, "received": 0,
                                     "sent": 0, "http-response-sent": 2, "duration": 3000, **ZERO_FIELDS})]
    fx.clock.advance(3)  # 6 s = 3/4 of the ttl: the refreshes
    assert sorted(t for t, _ in fx.take()) == ["conn", "report", "sub"]
    fx.stats.set_interest([])
    fx.clock.advance(6)
    assert fx.take() == []


def test_an_instance_id_set_later_is_in_the_next_message_packet(clock):
    """The service sets the instance id after twistd's fork: message packets carry the new one from then on."""
    f = Fixture(clock, instance_id="")
    f.stats.message("c", None, 1, "http-stream")
    f.stats.instance_id = "pushpin-handler_9"
    f.stats.message("c", None, 1, "http-stream")
    assert [fields.get("from") for _, fields in f.take()] == [None, "pushpin-handler_9"]
    f.stats.stop()


def test_stop_forgets_the_interest(clock):
    """After stop the subscriptions are unknown again: a new sender gets every packet."""
    f = Fixture(clock)
    f.stats.set_interest([])
    f.stats.stop()
    f.stats.attach(f.frames.append)
    f.stats.message("c", None, 1, "http-stream")
    assert [t for t, _ in f.take()] == ["message"]
    f.stats.stop()


# --- pacing ---------------------------------------------------------------------------------


def test_activity_is_summed_per_route_over_100ms(fx):
    """activity counts in a burst go out once, 100 ms after the first, one packet per route."""
    fx.stats.activity(None, 2)
    fx.stats.activity("r1", 1)
    fx.clock.advance(0.05)
    fx.stats.activity(None, 3)
    assert fx.take() == []
    fx.clock.advance(0.05)
    assert fx.take() == [
        ("activity", {"from": "pushpin-handler_7", "count": 5}),
        ("activity", {"from": "pushpin-handler_7", "route": "r1", "count": 1}),
    ]
    fx.clock.advance(1)
    assert fx.take() == []


def test_conn_is_refreshed_before_its_ttl_lapses_on_one_timer(fx):
    """A held connection's conn packet is re-sent every 3/4 of its ttl; 500 connections share one timer."""
    for i in range(500):
        fx.stats.connected(f"c{i}", "http", "127.0.0.1", False)
    fx.take()
    assert len(fx.clock.getDelayedCalls()) == 1
    fx.clock.advance(5.9)
    assert fx.take() == []
    fx.clock.advance(0.1)  # 6 s = 3/4 of 8
    refreshed = fx.take()
    assert len(refreshed) == 500 and all(t == "conn" and f["ttl"] == 8 for t, f in refreshed)
    fx.stats.disconnected("c0")
    fx.take()
    fx.clock.advance(6)
    assert [f["id"] for _, f in fx.take()] == [f"c{i}" for i in range(1, 500)]
    assert len(fx.clock.getDelayedCalls()) == 1


def test_connections_refresh_on_their_own_schedule(fx):
    """A connection made later is refreshed 6 s after *its* connect, not with the earlier ones."""
    fx.stats.connected("a", "http", None, False)
    fx.clock.advance(2)
    fx.stats.connected("b", "http", None, False)
    fx.take()
    fx.clock.advance(4)
    assert [f["id"] for _, f in fx.take()] == ["a"]
    fx.clock.advance(2)
    assert [f["id"] for _, f in fx.take()] == ["b"]


def test_sub_packets_count_subscribers_and_are_refreshed(fx):
    """sub: sent on the first subscriber, updated within a second of a count change, refreshed at 3/4 ttl."""
    fx.stats.subscribed("news", "stream")
    assert fx.take() == [("sub", {"from": "pushpin-handler_7", "mode": "stream", "channel": "news", "ttl": 8,
                                  "subscribers": 1})]
    fx.stats.subscribed("news", "stream")
    fx.stats.subscribed("news", "stream")
    assert fx.take() == []
    fx.clock.advance(1)
    assert [f["subscribers"] for _, f in fx.take()] == [3]
    fx.clock.advance(5.9)
    assert fx.take() == []
    fx.clock.advance(0.1)
    assert [f["subscribers"] for _, f in fx.take()] == [3]


@pytest.mark.parametrize("mode, linger", [("stream", 0), ("ws", 0), ("response", 4)])
def test_the_last_unsubscribe_is_announced_after_the_linger_for_response_mode(fx, mode, linger):
    """The last subscriber leaving sends `unavailable`; response-mode waits subscription_linger seconds."""
    fx.stats.subscribed("c", mode)
    fx.stats.subscribed("c", mode)
    fx.take()
    fx.stats.unsubscribed("c", mode)
    fx.stats.unsubscribed("c", mode)
    gone = ("sub", {"from": "pushpin-handler_7", "mode": mode, "channel": "c", "unavailable": True})
    if linger:
        fx.clock.advance(linger - 0.1)
        assert fx.take() == []
        fx.clock.advance(0.1)
    assert fx.take() == [gone]
    fx.clock.advance(10)
    assert fx.take() == []


def test_a_new_subscriber_during_the_linger_cancels_the_unavailable(fx):
    """A response subscription that comes back while lingering is announced again and never goes unavailable."""
    fx.stats.subscribed("c", "response")
    fx.stats.unsubscribed("c", "response")
    fx.clock.advance(2)
    fx.take()
    fx.stats.subscribed("c", "response")
    assert [f.get("subscribers") for _, f in fx.take()] == [1]
    fx.clock.advance(3)
    assert all("unavailable" not in f for _, f in fx.take())


def test_a_response_subscription_with_linger_0_goes_unavailable_on_the_next_refresh_tick(clock):
    """
    subscription_linger=0: Pushpin still lingers a response-mode subscription until the stats
    manager's next refresh tick (removeSubscription(linger) puts it in the wheel at now), not at once.
    """
    f = Fixture(clock, subscription_ttl=8, subscription_linger=0)
    f.stats.subscribed("c", "response")
    clock.advance(0.3)
    f.take()
    f.stats.unsubscribed("c", "response")
    assert f.take() == []
    clock.advance(1)
    assert f.take() == [("sub", {"from": "pushpin-handler_7", "mode": "response", "channel": "c", "unavailable": True})]
    f.stats.stop()
    assert clock.getDelayedCalls() == []


def test_following_the_subscriptions_a_long_polls_unavailable_and_its_channels_end_share_a_tick(clock):
    """
    With follow(subscriptions), the stats feed lingers on the process's linger: a long-poll's
    unavailable goes out in the same refresh tick as the channel's subscription ends (the SUB
    socket's UNSUBSCRIBE), as both come from Pushpin's stats manager expiry; a stream joining
    and leaving during the linger ends the channel at once but not the response-mode linger.
    """
    from pushpin_tx.core.linger import Subscriptions

    class Sub:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def deliver(self, publication, channel) -> None:
            pass

    router = ChannelRouter()
    subs = Subscriptions(clock, router, linger=4, lingers=lambda s: s.kind == "response")
    f = Fixture(clock, subscription_ttl=60, subscription_linger=4)
    f.stats.follow(subs)
    seen: list[tuple[float, str]] = []

    class Events:
        def channel_added(self, channel: str) -> None:
            pass

        def channel_removed(self, channel: str) -> None:
            seen.append((clock.seconds(), "removed " + channel))

    subs.add_interest_listener(Events())
    real_send = f.frames.append
    f.stats.attach(lambda frame: (real_send(frame), seen.append((clock.seconds(), decode(frame)[1].get("channel", "") + (
        " unavailable" if decode(frame)[1].get("unavailable") else "")))))
    lp = Sub("response")
    router.subscribe("a", lp)
    f.stats.subscribed("a", "response")
    clock.advance(0.5)
    router.unsubscribe("a", lp)  # the hold's order: router, then stats
    f.stats.unsubscribed("a", "response")
    clock.advance(3.9)
    assert seen == [(0, "a")]
    clock.advance(0.1)  # deadline 4.5, the loop's 4th tick is at 4.5
    assert seen == [(0, "a"), (4.5, "removed a"), (4.5, "a unavailable")]

    # b: a long-poll leaves, a stream joins and leaves during the linger
    seen.clear()
    router.subscribe("b", lp)
    f.stats.subscribed("b", "response")
    clock.advance(0.2)
    router.unsubscribe("b", lp)
    f.stats.unsubscribed("b", "response")
    st = Sub("stream")
    router.subscribe("b", st)
    f.stats.subscribed("b", "stream")
    clock.advance(1)
    router.unsubscribe("b", st)
    f.stats.unsubscribed("b", "stream")
    assert [e for _, e in seen] == ["b", "b", "removed b", "b unavailable"] and not subs.has("b")
    clock.advance(3)  # the response-mode linger runs its course: 4 s after the long-poll left, on a tick
    assert [e for _, e in seen] == ["b", "b", "removed b", "b unavailable", "b unavailable"]
    f.stats.stop()
    subs.stop()
    assert clock.getDelayedCalls() == []


def test_reports_every_interval_with_honest_fields(fx):
    """report: connections (max in the interval), minutes, received/sent from Counters, duration in ms, zeros."""
    fx.stats.start()
    fx.stats.connected("a", "http", None, False)
    fx.stats.connected("b", "http", None, False)
    fx.stats.connected("c", "http", None, False)
    fx.stats.disconnected("c")
    fx.counters.items_published += 4
    fx.counters.deliveries += 7
    fx.stats.message("k", "1", 2, "http-response")
    fx.take()
    fx.clock.advance(2.9)
    assert fx.take() == []
    fx.clock.advance(0.1)
    assert fx.take() == [("report", {
        "from": "pushpin-handler_7", "connections": 3, "minutes": 3, "received": 4, "sent": 7,
        "http-response-sent": 2, "duration": 3000, **ZERO_FIELDS,
    })]
    fx.clock.advance(3)  # the conn refresh at 6 s and the second report
    reports = [f for t, f in fx.take() if t == "report"]
    assert reports == [{
        "from": "pushpin-handler_7", "connections": 2, "minutes": 0, "received": 0, "sent": 0,
        "http-response-sent": 0, "duration": 3000, **ZERO_FIELDS,
    }]


def test_connection_minutes_count_one_at_connect_then_whole_minutes(clock):
    """A connection counts a minute when it connects, then one per whole minute it stays (seen at refresh)."""
    f = Fixture(clock, connection_ttl=120, report_interval=10)
    f.stats.connected("a", "http", None, False)
    f.stats.connected("a", "http", None, False)  # re-announcing a known id counts nothing more
    clock.advance(90)  # the refresh at 3/4 ttl sees one whole minute
    f.stats.report()
    assert [fields["minutes"] for t, fields in f.take() if t == "report"] == [2]
    clock.advance(90)  # 180 s connected: minutes 2 and 3
    clock.advance(50)
    f.stats.disconnected("a")  # 230 s: no further whole minute
    f.stats.report()
    assert [fields["minutes"] for t, fields in f.take() if t == "report"] == [2]
    f.stats.stop()


def test_a_quiet_route_stops_reporting_after_a_zero_report(fx):
    """A route's report goes out once with connections 0 after its last connection, then no more."""
    fx.stats.connected("a", "http", None, False, route="r1")
    fx.stats.disconnected("a")
    fx.take()
    fx.stats.report()
    assert [(f.get("route"), f["connections"]) for t, f in fx.take() if t == "report"] == [("r1", 1)]
    fx.stats.report()
    assert [(f.get("route"), f["connections"]) for t, f in fx.take() if t == "report"] == [("r1", 0)]
    fx.stats.report()
    assert fx.take() == []


def test_counts_go_out_with_the_reports(fx):
    """Requests received since the last report are sent as a `counts` packet (requests-received)."""
    fx.counters.requests_received += 5
    fx.stats.report()
    assert fx.take() == [("counts", {"from": "pushpin-handler_7", "requests-received": 5})]
    fx.stats.report()
    assert fx.take() == []


def test_everything_is_a_no_op_until_attached_and_after_stop(clock):
    """Without a socket attached (no stats_spec) nothing is sent and no timer is left."""
    stats = StatsPublisher(clock, Counters(), connection_ttl=8)
    stats.connected("a", "http", None, False)
    stats.subscribed("c", "response")
    stats.unsubscribed("c", "response")
    stats.activity("r", 1)
    stats.message("c", None, 1, "http-stream")
    stats.report()
    assert clock.getDelayedCalls() == [] and not stats.active
    assert stats.is_connected("a")  # the table is kept for conncheck even without a socket
    frames: list[bytes] = []
    stats.attach(frames.append)
    stats.start()
    stats.connected("b", "http", None, False)
    stats.activity("r", 1)
    assert clock.getDelayedCalls() != []
    stats.stop()
    assert [c for c in clock.getDelayedCalls() if c.active()] == []
    assert not stats.is_connected("b")
    stats.connected("c", "http", None, False)
    assert len(frames) == 1


# --- through a real socket ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tnetstring", "json"])
@pytest_twisted.ensureDeferred
async def test_a_sub_client_receives_every_packet_type(reactor, zctx, fmt):
    """Through ZmqInputService's PUB socket, a SUB client decodes conn, sub, message, activity, report and counts."""
    counters = Counters()
    stats = StatsPublisher(reactor, counters, fmt=fmt, instance_id="pushpin-tx_1", connection_ttl=120,
                           subscription_ttl=60, subscription_linger=60, report_interval=10)
    settings = dataclasses.replace(load_settings(None), push_in_spec="", push_in_sub_specs=(), command_spec="",
                                   stats_spec="tcp://127.0.0.1:0", stats_format=fmt)
    svc = ZmqInputService(settings, reactor, None, ChannelRouter(), is_connected=lambda c: False,
                          recover=lambda: None, refresh=lambda **kw: None, stats=stats)  # type: ignore[arg-type]
    svc.privilegedStartService()
    svc.startService()
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(svc.endpoints["stats"])
    got = Collector(reactor)
    reader = ZmqReader(reactor, sub, got, name="stats-client")
    reader.start()
    probe = task.LoopingCall(lambda: stats.message("probe", None, 0, "http-stream"))
    probe.clock = reactor
    try:
        probe.start(0.01)  # a PUB drops until the SUB has joined: probe until one arrives
        await got.wait(1)
        probe.stop()
        await task.deferLater(reactor, 0, lambda: None)
        got.messages.clear()
        stats.connected("c1", "http", "10.0.0.1", True)
        stats.subscribed("news", "stream")
        stats.message("news", "i1", 1, "http-stream")
        stats.activity(None, 2)
        stats.unsubscribed("news", "stream")
        stats.disconnected("c1")
        counters.requests_received += 1
        stats.report()
        messages = await got.wait(8)
    finally:
        if probe.running:
            probe.stop()
        reader.stop()
        svc.stopService()
    letter = b" J" if fmt == "json" else b" T"
    assert all(letter in m[0] for m in messages)
    decoded = [decode(m[0]) for m in messages]
    by_type = [t for t, _ in decoded]
    assert sorted(by_type) == sorted(["conn", "sub", "message", "sub", "conn", "report", "counts", "activity"])
    assert decoded[0] == ("conn", {"from": "pushpin-tx_1", "id": "c1", "type": "http", "peer-address": "10.0.0.1",
                                   "ssl": True, "ttl": 120})
    report = next(f for t, f in decoded if t == "report")
    assert report["connections"] == 1 and report["minutes"] == 1 and isinstance(report["duration"], int)
    assert ("activity", {"from": "pushpin-tx_1", "count": 2}) in decoded
    assert ("counts", {"from": "pushpin-tx_1", "requests-received": 1}) in decoded
    assert not stats.active


class InterestLog:
    """A stand-in StatsPublisher for ZmqInputService that records the interest it is told."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.changes: list[frozenset[bytes]] = []
        self._waits: list[tuple[frozenset[bytes], Any]] = []
        self.send: Any = None

    def attach(self, send: Any) -> None:
        self.send = send

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.send = None

    def set_interest(self, topics: Any) -> None:
        now = frozenset(topics)
        self.changes.append(now)
        for want, d in list(self._waits):
            if want == now:
                self._waits.remove((want, d))
                d.callback(now)

    def until(self, *topics: bytes) -> Any:
        """A Deferred that fires once the interest is exactly C{topics} (or times out)."""
        from twisted.internet import defer

        want = frozenset(topics)
        if self.changes and self.changes[-1] == want:
            return defer.succeed(want)
        d: Any = defer.Deferred()
        self._waits.append((want, d))
        return d.addTimeout(10, self.reactor)


def stats_service(reactor, stats, fmt="tnetstring"):
    settings = dataclasses.replace(load_settings(None), push_in_spec="", push_in_sub_specs=(), command_spec="",
                                   stats_spec="tcp://127.0.0.1:0", stats_format=fmt)
    svc = ZmqInputService(settings, reactor, None, ChannelRouter(), is_connected=lambda c: False,  # type: ignore[arg-type]
                          recover=lambda: None, refresh=lambda **kw: None, stats=stats)
    svc.privilegedStartService()
    svc.startService()
    return svc


@pytest_twisted.ensureDeferred
async def test_the_stats_sockets_subscriptions_reach_the_publisher(reactor, zctx):
    """The XPUB side: nobody at first, each new prefix, a second subscriber, an unsubscribe, a subscriber leaving."""
    interest = InterestLog(reactor)
    svc = stats_service(reactor, interest)
    subs = []
    try:
        assert interest.changes == [frozenset()]  # nobody, before anyone connects
        first = zctx.socket(zmq.SUB)
        subs.append(first)
        first.setsockopt(zmq.LINGER, 0)
        first.connect(svc.endpoints["stats"])
        first.setsockopt(zmq.SUBSCRIBE, b"report")
        await interest.until(b"report")
        second = zctx.socket(zmq.SUB)
        subs.append(second)
        second.setsockopt(zmq.LINGER, 0)
        second.connect(svc.endpoints["stats"])
        second.setsockopt(zmq.SUBSCRIBE, b"")
        second.setsockopt(zmq.SUBSCRIBE, b"report")  # already asked for: no change
        await interest.until(b"report", b"")
        first.setsockopt(zmq.UNSUBSCRIBE, b"report")  # the second still wants it
        second.setsockopt(zmq.UNSUBSCRIBE, b"")
        await interest.until(b"report")
        assert svc.stats_topics == frozenset({b"report"})
        second.close(linger=0)  # leaving takes its subscriptions with it
        await interest.until()
    finally:
        for sock in subs:
            sock.close(linger=0)
        svc.stopService()


@pytest_twisted.ensureDeferred
async def test_a_subscriber_to_message_packets_gets_them_and_nothing_else_is_built(reactor, zctx):
    """A SUB on `message` receives the message packets; conn and sub packets, which it cannot receive, are not built."""
    stats = StatsPublisher(reactor, Counters(), instance_id="pushpin-tx_1")
    svc = stats_service(reactor, stats)
    sub = zctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"message")
    sub.connect(svc.endpoints["stats"])
    got = Collector(reactor)
    reader = ZmqReader(reactor, sub, got, name="stats-client")
    reader.start()
    sent: list[bytes] = []
    real_send = svc.send_stats

    def counting_send(frame: bytes) -> None:
        sent.append(frame)
        real_send(frame)

    stats.attach(counting_send)
    probe = task.LoopingCall(lambda: stats.message("probe", None, 0, "http-stream"))
    probe.clock = reactor
    try:
        assert not stats.wants_messages  # nobody yet: not even the probe is built
        probe.start(0.01)
        await got.wait(1)
        probe.stop()
        await task.deferLater(reactor, 0, lambda: None)
        got.messages.clear()
        sent.clear()
        stats.connected("c1", "http", "10.0.0.1", False)
        stats.subscribed("news", "stream")
        stats.message("news", "i1", 1, "http-stream")
        messages = await got.wait(1)
        assert not stats.wants("conn") and not stats.wants("sub") and stats.wants_messages
    finally:
        if probe.running:
            probe.stop()
        reader.stop()
        svc.stopService()
    assert [decode(m[0]) for m in messages] == [
        ("message", {"from": "pushpin-tx_1", "channel": "news", "item-id": "i1", "count": 1, "transport": "http-stream"})]
    assert [frame.split(b" ", 1)[0] for frame in sent] == [b"message"]
