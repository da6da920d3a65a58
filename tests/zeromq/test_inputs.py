"""
ZmqInputService with real sockets on the real reactor: the PULL and SUB publish inputs,
the command socket (ZRPC) and the service's socket lifecycle.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import pytest
import pytest_twisted
import zmq
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from pushpin_tx.net.listening import ListenError
from pushpin_tx.protocol import tnetstring
from pushpin_tx.protocol.config import load_settings
from pushpin_tx.core.linger import Subscriptions
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.zeromq.command import CommandError
from pushpin_tx.zeromq.inputs import ZmqInputService
from pushpin_tx.zeromq.reader import ZmqReader
from tests.zeromq.test_reader import Collector, turns, zctx  # noqa: F401  (zctx is a fixture)
from tests.zeromq.test_reader import no_zmq_readers  # noqa: F401  (autouse fixture)

LOCAL = "tcp://127.0.0.1:0"


class RecordingIntake:
    """A PublishIntake stand-in: records (source, items) and fires waits."""

    def __init__(self, reactor: Any) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.items = Collector(reactor)

    def publish(self, items, source):
        self.calls.append((source, list(items)))
        for item in items:
            self.items([item])
        return 0


class Sink:
    """A router subscriber that ignores deliveries (only its presence matters here)."""

    def deliver(self, publication, channel):
        pass


class Callbacks:
    """The command callables, recording their calls."""

    def __init__(self) -> None:
        self.connected = {"c1", "c3"}
        self.calls: list[tuple] = []

    def is_connected(self, conn_id: str) -> bool:
        self.calls.append(("is_connected", conn_id))
        return conn_id in self.connected

    def recover(self) -> None:
        self.calls.append(("recover",))

    def refresh(self, cid=None, channel=None):
        self.calls.append(("refresh", cid, channel))
        if cid == "gone":
            return False
        if cid == "locked":
            raise CommandError("not-allowed")
        return None


@pytest.fixture
def logs():
    """Formatted log lines, with their level, emitted during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def lines(events, level=None):
    return [formatEvent(e) for e in events if level is None or e.get("log_level") == level]


def make_service(reactor, *, pull=LOCAL, subs=(LOCAL,), sub_connect=False, command=LOCAL, stats=None,
                 stats_spec="", context=None, subscriptions=False):
    settings = dataclasses.replace(
        load_settings(None),
        push_in_spec=pull,
        push_in_sub_specs=tuple(subs),
        push_in_sub_connect=sub_connect,
        command_spec=command,
        stats_spec=stats_spec,
    )
    intake = RecordingIntake(reactor)
    router = ChannelRouter()
    callbacks = Callbacks()
    # the process's subscriptions (prefixes included) as the interest source, or the bare router
    interest: Any = Subscriptions(reactor, router, linger=0, lingers=lambda sub: False) if subscriptions else router
    svc = ZmqInputService(
        settings, reactor, intake, interest,
        is_connected=callbacks.is_connected, recover=callbacks.recover, refresh=callbacks.refresh,
        stats=stats, context=context,
    )
    return svc, intake, router, callbacks


@pytest.fixture
def running(reactor):
    """Start services made by the test, and stop them at teardown."""
    started: list[ZmqInputService] = []

    def start(svc: ZmqInputService) -> ZmqInputService:
        svc.privilegedStartService()
        started.append(svc)
        svc.startService()
        return svc

    yield start
    for svc in started:
        if svc.running or svc._ctx is not None:
            svc.stopService()


STREAM = {"channel": "news", "formats": {"http-stream": {"content": "tick\n"}}}


@pytest.mark.parametrize("frame", [
    b"J" + json.dumps(STREAM).encode(),
    b"T" + tnetstring.dumps(STREAM),
    tnetstring.dumps(STREAM),
    b"T68:7:channel,4:news,7:formats,37:11:http-stream,18:7:content,5:tick\n,}}}",  # reference §6.3
], ids=["json", "T-tnetstring", "bare-tnetstring", "reference-example"])
@pytest_twisted.ensureDeferred
async def test_pull_items_reach_the_intake(reactor, zctx, running, logs, frame):
    """A single-part item on the PULL socket (J, T or bare tnetstring) is published as zmq-pull."""
    svc, intake, _, _ = make_service(reactor, subs=(), command="")
    running(svc)
    endpoint = svc.endpoints["publish-pull"]
    assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
    assert f"publish-pull bound to {endpoint}" in lines(logs)
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(endpoint)
    try:
        push.send(frame)
        [[item]] = await intake.items.wait(1)
    finally:
        push.close(linger=0)
    assert intake.calls[0][0] == "zmq-pull"
    assert (item.channel, item.http_stream.content) == ("news", b"tick\n")


@pytest_twisted.ensureDeferred
async def test_pull_garbage_is_logged_and_dropped_and_the_next_item_still_arrives(reactor, zctx, running, logs):
    """Bad PULL messages are warned about with Pushpin's texts and skipped; reading goes on."""
    svc, intake, _, _ = make_service(reactor, subs=(), command="")
    running(svc)
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(svc.endpoints["publish-pull"])
    try:
        push.send(b"garbage")
        push.send(b'J{"channel":')
        push.send(b"J[1]")
        push.send(b'J{"channel":"a"}')
        push.send_multipart([b"a", b"b"])
        push.send(b"J" + json.dumps({**STREAM, "channel": "after"}).encode())
        [[item]] = await intake.items.wait(1)
    finally:
        push.close(linger=0)
    assert item.channel == "after"
    assert len(intake.calls) == 1
    assert lines(logs, LogLevel.warn) == [
        "IN pull: received message with invalid format (tnetstring parse failed), skipping",
        "IN pull: received message with invalid format (json parse failed), skipping",
        "IN pull: received message with invalid format (not a valid json object), skipping",
        "IN pull: received message with invalid format: no formats specified, skipping",
        "IN pull: received message with parts != 1, skipping",
    ]


async def next_message(collector: Collector) -> list[bytes]:
    return (await collector.wait(len(collector.messages) + 1))[-1]


def _watching_xpub(reactor, zctx, svc):
    """A publisher's XPUB connected to C{svc}'s SUB socket, its subscription frames read into a Collector."""
    xpub = zctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.connect(svc.endpoints["publish-sub"][0])
    seen = Collector(reactor)
    reader = ZmqReader(reactor, xpub, seen, name="xpub")
    reader.start()
    return xpub, seen, reader


@pytest_twisted.ensureDeferred
async def test_sub_subscribes_only_while_a_channel_has_subscribers(reactor, zctx, running):
    """An XPUB publisher sees the SUB socket subscribe on the first subscriber and unsubscribe after the last."""
    svc, intake, router, _ = make_service(reactor, command="", pull="")
    running(svc)
    xpub, seen, reader = _watching_xpub(reactor, zctx, svc)
    a, b = Sink(), Sink()
    try:
        await turns(reactor, 20)
        assert seen.messages == []  # nothing is subscribed before anyone listens
        router.subscribe("news", a)
        assert await next_message(seen) == [b"\x01news"]
        router.subscribe("news", b)  # a second subscriber changes nothing on the wire
        router.unsubscribe("news", a)
        await turns(reactor, 20)
        assert len(seen.messages) == 1
        router.unsubscribe("news", b)
        assert await next_message(seen) == [b"\x00news"]
    finally:
        reader.stop()


@pytest_twisted.ensureDeferred
async def test_sub_delivers_exact_channel_matches_only(reactor, zctx, running, logs):
    """[channel, item] for a subscribed channel is published; a longer name sharing the prefix is not."""
    svc, intake, router, _ = make_service(reactor, command="", pull="")
    running(svc)
    xpub, seen, reader = _watching_xpub(reactor, zctx, svc)
    try:
        router.subscribe("news", Sink())
        await seen.wait(1)  # the subscription reached the publisher
        body = json.dumps({"channel": "ignored", "formats": {"http-stream": {"content": "x"}}}).encode()
        xpub.send_multipart([b"newsflash", b"J" + body])  # prefix match in ZeroMQ, not ours
        xpub.send_multipart([b"news"])  # wrong part count
        xpub.send_multipart([b"news", b"J{"])  # bad item
        xpub.send_multipart([b"news", b"J" + body])
        reader.poke()
        [[item]] = await intake.items.wait(1)
    finally:
        reader.stop()
    assert item.channel == "news"  # the frame names the channel; the item's own key is ignored
    assert intake.calls == [("zmq-sub", [item])]
    assert lines(logs, LogLevel.warn) == [
        "IN sub: received message with parts != 2, skipping",
        "IN sub: received message with invalid format (json parse failed), skipping",
    ]


def _news(text: str) -> bytes:
    return b"J" + json.dumps({"formats": {"http-stream": {"content": text}}}).encode()


@pytest_twisted.ensureDeferred
async def test_sub_subscribes_a_prefix_as_its_bare_bytes_and_takes_every_channel_under_it(reactor, zctx, running):
    """
    A prefix subscription subscribes the SUB socket to the prefix's bytes: the XPUB sees
    \\x01news., and news.sport and news.weather come in, newsletter does not; the prefix's
    last subscriber leaving unsubscribes it.
    """
    svc, intake, router, _ = make_service(reactor, command="", pull="", subscriptions=True)
    running(svc)
    xpub, seen, reader = _watching_xpub(reactor, zctx, svc)
    a = Sink()
    try:
        router.subscribe_prefix("news.", a)
        assert await next_message(seen) == [b"\x01news."]
        for channel in (b"news.sport", b"newsletter", b"news.weather"):
            xpub.send_multipart([channel, _news(channel.decode())])
        reader.poke()
        got = await intake.items.wait(2)
        assert [item.channel for [item] in got] == ["news.sport", "news.weather"]
        router.unsubscribe_prefix("news.", a)
        assert await next_message(seen) == [b"\x00news."]
    finally:
        reader.stop()


@pytest_twisted.ensureDeferred
async def test_an_exact_channel_and_a_prefix_overlapping_take_a_publish_in_once(reactor, zctx, running):
    """
    news.sport subscribed exactly and under the prefix news.: two topics on the SUB socket,
    both matching, and ZeroMQ hands the message in once; a prefix and a channel with the same
    bytes share one topic (one SUBSCRIBE, and the UNSUBSCRIBE only when both are gone).
    """
    svc, intake, router, _ = make_service(reactor, command="", pull="", subscriptions=True)
    running(svc)
    xpub, seen, reader = _watching_xpub(reactor, zctx, svc)
    a, b, c = Sink(), Sink(), Sink()
    try:
        router.subscribe_prefix("news.", a)
        router.subscribe("news.sport", b)
        await seen.wait(2)
        assert sorted(m for [m] in seen.messages) == [b"\x01news.", b"\x01news.sport"]
        xpub.send_multipart([b"news.sport", _news("goal")])
        xpub.send_multipart([b"news.weather", _news("rain")])  # after it: once this is in, all of goal is
        reader.poke()
        await intake.items.wait(2)
        await turns(reactor, 20)
        assert [item.channel for _, [item] in intake.calls] == ["news.sport", "news.weather"]

        router.subscribe("news", c)
        router.subscribe_prefix("news", a)  # the same bytes as the channel: one topic
        assert await next_message(seen) == [b"\x01news"]
        router.unsubscribe("news", c)
        await turns(reactor, 20)
        assert seen.messages[-1] == [b"\x01news"]
        router.unsubscribe_prefix("news", a)
        assert await next_message(seen) == [b"\x00news"]
    finally:
        reader.stop()


@pytest_twisted.ensureDeferred
async def test_sub_picks_up_channels_that_had_subscribers_before_start(reactor, zctx, running):
    """Channels already subscribed in the router when the service starts are subscribed at once."""
    svc, intake, router, _ = make_service(reactor, command="", pull="")
    router.subscribe("early", Sink())
    running(svc)
    xpub, seen, reader = _watching_xpub(reactor, zctx, svc)
    try:
        assert await next_message(seen) == [b"\x01early"]
    finally:
        reader.stop()


@pytest_twisted.ensureDeferred
async def test_sub_connect_mode_connects_to_a_bound_publisher(reactor, zctx, running):
    """With push_in_sub_connect the SUB socket connects to the publisher's bound XPUB."""
    xpub = zctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.bind(LOCAL)
    endpoint = xpub.getsockopt(zmq.LAST_ENDPOINT).decode()
    svc, intake, router, _ = make_service(reactor, command=LOCAL, pull="", subs=(endpoint,), sub_connect=True)
    running(svc)
    seen = Collector(reactor)
    reader = ZmqReader(reactor, xpub, seen, name="xpub")
    reader.start()
    try:
        router.subscribe("c", Sink())
        assert await next_message(seen) == [b"\x01c"]
        assert "publish-sub" not in svc.commands._uris()  # only bound sockets are advertised
    finally:
        reader.stop()


# --- the command socket ---------------------------------------------------------------------


class Client:
    """A REQ (or DEALER) peer of the command socket, read through the reactor."""

    def __init__(self, reactor, ctx, endpoint, kind=zmq.REQ) -> None:
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.replies = Collector(reactor)
        self.reader = ZmqReader(reactor, self.sock, self.replies, name="client")
        self.reader.start()

    async def call(self, *frames: bytes) -> list[bytes]:
        self.sock.send_multipart(list(frames))
        self.reader.poke()
        return await next_message(self.replies)

    async def request(self, packet: dict) -> dict:
        [reply] = await self.call(tnetstring.dumps(packet))
        return tnetstring.loads(reply)

    def close(self) -> None:
        self.reader.stop()


@pytest.fixture
def command(reactor, zctx, running):
    """A started service with only a command socket, and a connected REQ client."""
    svc, intake, router, callbacks = make_service(reactor, pull=LOCAL, subs=(LOCAL,), command=LOCAL)
    running(svc)
    client = Client(reactor, zctx, svc.endpoints["command"])
    yield svc, intake, callbacks, client
    client.close()


ITEM = {b"channel": b"news", b"formats": {b"http-stream": {b"content": b"hi"}}}


@pytest.mark.parametrize("request_, reply", [
    ({b"id": b"1", b"method": b"conncheck", b"args": {b"ids": [b"c1", b"c2", b"c3", b"c1"]}},
     {b"id": b"1", b"success": True, b"value": [b"c1", b"c3"]}),
    ({b"id": b"2", b"method": b"conncheck", b"args": {}},
     {b"id": b"2", b"success": False, b"condition": b"bad-request"}),
    ({b"id": b"3", b"method": b"conncheck", b"args": {b"ids": [1]}},
     {b"id": b"3", b"success": False, b"condition": b"bad-request"}),
    ({b"id": b"4", b"method": b"recover"},
     {b"id": b"4", b"success": True, b"value": None}),
    ({b"method": b"recover"},
     {b"success": True, b"value": None}),
    ({b"id": b"5", b"method": b"refresh", b"args": {b"cid": b"c1"}},
     {b"id": b"5", b"success": True, b"value": None}),
    ({b"id": b"6", b"method": b"refresh", b"args": {b"cid": b"gone"}},
     {b"id": b"6", b"success": False, b"condition": b"item-not-found"}),
    ({b"id": b"7", b"method": b"refresh", b"args": {b"cid": b"locked"}},
     {b"id": b"7", b"success": False, b"condition": b"not-allowed"}),
    ({b"id": b"8", b"method": b"refresh", b"args": {b"channel": b"news"}},
     {b"id": b"8", b"success": True, b"value": None}),
    ({b"id": b"9", b"method": b"refresh", b"args": {}},
     {b"id": b"9", b"success": False, b"condition": b"bad-request"}),
    ({b"id": b"10", b"method": b"refresh", b"args": {b"cid": 5}},
     {b"id": b"10", b"success": False, b"condition": b"bad-request"}),
    ({b"id": b"11", b"method": b"publish", b"args": {b"items": [ITEM]}},
     {b"id": b"11", b"success": True, b"value": None}),
    ({b"id": b"12", b"method": b"publish", b"args": {b"items": []}},
     {b"id": b"12", b"success": True, b"value": None}),
    ({b"id": b"13", b"method": b"publish", b"args": {}},
     {b"id": b"13", b"success": False, b"condition": b"bad-request",
      b"value": b"Invalid format: object does not contain 'items'"}),
    ({b"id": b"14", b"method": b"publish"},
     {b"id": b"14", b"success": False, b"condition": b"bad-request",
      b"value": b"Invalid format: object does not contain 'items'"}),
    ({b"id": b"15", b"method": b"publish", b"args": {b"items": 3}},
     {b"id": b"15", b"success": False, b"condition": b"bad-request",
      b"value": b"Invalid format: object contains 'items' with wrong type"}),
    ({b"id": b"16", b"method": b"publish", b"args": {b"items": [ITEM, {b"channel": b"x"}]}},
     {b"id": b"16", b"success": False, b"condition": b"bad-request",
      b"value": b"Invalid format: no formats specified"}),
    ({b"id": b"17", b"method": b"nope"},
     {b"id": b"17", b"success": False, b"condition": b"method-not-found"}),
    ({b"id": b"", b"method": b"nope", b"from": b"me"},
     {b"success": False, b"condition": b"method-not-found"}),
], ids=lambda v: f"{v[b'method'].decode()}-{v.get(b'id', b'').decode()}" if b"method" in v else "reply")
@pytest_twisted.ensureDeferred
async def test_command_methods_answer_like_pushpin(command, request_, reply):
    """Each command method, and each error condition, answers with Pushpin 1.36's reply packet."""
    svc, intake, callbacks, client = command
    assert await client.request(request_) == reply


@pytest_twisted.ensureDeferred
async def test_command_side_effects(command):
    """recover/refresh/conncheck call their callables; publish hands the items to the intake as 'command'."""
    svc, intake, callbacks, client = command
    await client.request({b"method": b"recover"})
    await client.request({b"method": b"refresh", b"args": {b"channel": b"news"}})
    await client.request({b"method": b"conncheck", b"args": {b"ids": [b"c9"]}})
    await client.request({b"method": b"publish", b"args": {b"items": [ITEM, {**ITEM, b"channel": b"two"}]}})
    await client.request({b"method": b"publish", b"args": {b"items": [ITEM, {b"channel": b"x"}]}})  # refused
    assert callbacks.calls == [("recover",), ("refresh", None, "news"), ("is_connected", "c9")]
    assert [(source, [i.channel for i in items]) for source, items in intake.calls] == [
        ("command", ["news", "two"]),
    ]


@pytest_twisted.ensureDeferred
async def test_get_zmq_uris_answers_the_bound_endpoints(command):
    """get-zmq-uris lists the real (bound) command, PULL and first SUB endpoints."""
    svc, intake, callbacks, client = command
    reply = await client.request({b"id": b"u", b"method": b"get-zmq-uris"})
    assert reply == {b"id": b"u", b"success": True, b"value": {
        b"command": svc.endpoints["command"].encode(),
        b"publish-pull": svc.endpoints["publish-pull"].encode(),
        b"publish-sub": svc.endpoints["publish-sub"][0].encode(),
    }}
    assert all(not uri.endswith(b":0") for uri in reply[b"value"].values())


@pytest.mark.parametrize("frames, expected", [
    ([b"garbage"], {b"success": False, b"condition": b"bad-format"}),
    ([tnetstring.dumps([1, 2])], {b"success": False, b"condition": b"bad-format"}),
    ([tnetstring.dumps({b"id": b"9", b"method": 5})], {b"id": b"9", b"success": False, b"condition": b"bad-format"}),
    ([tnetstring.dumps({b"id": 9, b"method": b"recover"})], {b"success": False, b"condition": b"bad-format"}),
    ([tnetstring.dumps({b"id": b"a", b"method": b"recover", b"args": []})],
     {b"id": b"a", b"success": False, b"condition": b"bad-format"}),
    ([tnetstring.dumps({b"id": b"b", b"method": b"recover"}), b"extra"], {b"success": False, b"condition": b"bad-format"}),
    ([tnetstring.dumps({b"id": b"c", b"method": b"recover"}) + b"trailing"], {b"id": b"c", b"success": True, b"value": None}),
], ids=["not-tnetstring", "not-a-dict", "method-not-bytes", "id-not-bytes", "args-not-dict", "two-parts", "trailing-bytes"])
@pytest_twisted.ensureDeferred
async def test_a_malformed_request_is_answered_and_the_next_one_works(command, logs, frames, expected):
    """A request Pushpin would silently drop gets a bad-format reply, so the REQ peer can go on."""
    svc, intake, callbacks, client = command
    [reply] = await client.call(*frames)
    assert tnetstring.loads(reply) == expected
    assert await client.request({b"id": b"next", b"method": b"recover"}) == {
        b"id": b"next", b"success": True, b"value": None}
    if expected.get(b"condition") == b"bad-format":
        assert any(line.startswith("zrpc server: received message with") for line in lines(logs, LogLevel.warn))


@pytest_twisted.ensureDeferred
async def test_a_dealer_peer_can_pipeline_requests(reactor, zctx, command):
    """The command socket is a ROUTER: a DEALER may send several requests before reading replies."""
    svc, intake, callbacks, _ = command
    dealer = Client(reactor, zctx, svc.endpoints["command"], kind=zmq.DEALER)
    try:
        for i in range(3):
            dealer.sock.send_multipart([b"", tnetstring.dumps({b"id": b"%d" % i, b"method": b"recover"})])
        dealer.reader.poke()
        replies = await dealer.replies.wait(3)
    finally:
        dealer.close()
    assert [tnetstring.loads(r[1])[b"id"] for r in replies] == [b"0", b"1", b"2"]
    assert all(r[0] == b"" for r in replies)


# --- lifecycle ------------------------------------------------------------------------------


def test_a_busy_endpoint_stops_start_up_and_leaks_nothing(reactor, zctx, logs):
    """Binding an endpoint already in use raises from privilegedStartService and closes what was opened."""
    squatter = zctx.socket(zmq.PULL)
    squatter.setsockopt(zmq.LINGER, 0)
    squatter.bind(LOCAL)
    busy = squatter.getsockopt(zmq.LAST_ENDPOINT).decode()
    svc, *_ = make_service(reactor, pull=LOCAL, subs=(), command=busy)
    try:
        with pytest.raises(ListenError) as raised:
            svc.privilegedStartService()
        assert svc._ctx is None and svc.endpoints == {}
        # the service that started it logs the one line (start-up failed: ...); this says what and where
        assert str(raised.value) == f"command: cannot bind {busy}: address already in use"
    finally:
        squatter.close(linger=0)


def test_stop_closes_every_socket_and_terminates_the_owned_context(reactor):
    """stopService closes all sockets with linger 0, removes the readers and terminates the context."""
    svc, _, router, _ = make_service(reactor)
    svc.privilegedStartService()
    svc.startService()
    ctx = svc._ctx
    readers = [svc.pull_reader, svc.sub_reader, svc._command]
    assert all(r in reactor.getReaders() for r in readers)
    svc.stopService()
    assert ctx.closed
    assert not any(r in reactor.getReaders() for r in readers)
    assert router._listeners == []
    svc.stopService()  # a second stop is harmless


def test_ipc_endpoints_get_their_directory_created(reactor, tmp_path, logs):
    """An ipc:// spec in a directory that does not exist yet binds after creating it."""
    run = tmp_path / "run" / "nested"
    spec = f"ipc://{run}/pull"
    svc, *_ = make_service(reactor, pull=spec, subs=(), command="")
    svc.privilegedStartService()
    try:
        assert os.path.isdir(run)
        assert svc.endpoints["publish-pull"] == spec
        assert f"publish-pull bound to {spec}" in lines(logs)
    finally:
        svc.stopService()


@pytest_twisted.ensureDeferred
async def test_inproc_specs_on_a_borrowed_context(reactor, zctx, running):
    """With a borrowed context, inproc:// inputs work and stopping leaves that context alive."""
    svc, intake, _, _ = make_service(reactor, pull="inproc://pull-in", subs=(), command="", context=zctx)
    running(svc)
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect("inproc://pull-in")
    try:
        push.send(b"J" + json.dumps(STREAM).encode())
        [[item]] = await intake.items.wait(1)
    finally:
        push.close(linger=0)
    svc.stopService()
    assert item.channel == "news"
    assert not zctx.closed


def test_nothing_configured_opens_nothing(reactor):
    """With every spec empty, the service starts and stops without sockets."""
    svc, *_ = make_service(reactor, pull="", subs=(), command="")
    svc.privilegedStartService()
    svc.startService()
    assert svc.endpoints == {}
    svc.stopService()
