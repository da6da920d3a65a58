"""The source and edge brokers (pushpin-tx-broker) on real pyzmq sockets inside the reactor."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import pytest_twisted
import zmq

from pushpin_tx.backplane.broker import BrokerService, split_item
from pushpin_tx.protocol import tnetstring
from tests.integration.harness import poll_until


def test_split_item_takes_the_channel_out_and_keeps_the_encoding():
    """J+JSON stays J+JSON, T+tnetstring and bare tnetstrings stay so, without their channel."""
    channel, item = split_item(b'J{"channel":"c","formats":{"http-stream":{"content":"x"}}}')
    assert channel == b"c" and json.loads(item[1:]) == {"formats": {"http-stream": {"content": "x"}}}
    bare = tnetstring.dumps({b"channel": b"d", b"id": b"1"})
    assert split_item(bare) == (b"d", tnetstring.dumps({b"id": b"1"}))
    assert split_item(b"T" + bare) == (b"d", b"T" + tnetstring.dumps({b"id": b"1"}))
    for bad in (b"J{", b'J{"formats":{}}', b"garbage", tnetstring.dumps([b"x"])):
        with pytest.raises(ValueError):
            split_item(bad)


def _sub(ctx, endpoint: str, *channels: bytes):
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    for channel in channels:
        sock.setsockopt(zmq.SUBSCRIBE, channel)
    return sock


def _drain(sock, into: list) -> list:
    while sock.poll(0):
        into.append(sock.recv_multipart())
    return into


def _two_tiers(reactor, ctx):
    """A source broker, an edge broker fed by it, and a PUSH socket into the source."""
    source = BrokerService(reactor, "source", ["tcp://127.0.0.1:*"], ["tcp://127.0.0.1:*"], context=ctx)
    source.startService()
    edge = BrokerService(reactor, "edge", [source.endpoints["out"][0]], ["tcp://127.0.0.1:*"], context=ctx)
    edge.startService()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(source.endpoints["in"][0])
    return source, edge, push


@pytest_twisted.ensureDeferred
async def test_source_then_edge_forwards_only_held_channels_and_passes_interest_up(reactor):
    """PUSH -> source -> edge -> SUBs: items reach subscribers of their channel once; interest comes and goes upstream."""
    ctx = zmq.Context()
    source, edge, push = _two_tiers(reactor, ctx)
    subs = []
    try:
        push.send(b'J{"channel":"a","formats":{"http-stream":{"content":"nobody\\n"}}}')
        await poll_until(reactor, lambda: source.unheld == 1, what="an item nobody holds, counted")
        subs = [_sub(ctx, edge.endpoints["out"][0], b"a"), _sub(ctx, edge.endpoints["out"][0], b"a", b"b")]
        await poll_until(reactor, lambda: edge.interest == {b"a", b"b"} and source.interest == {b"a", b"b"},
                         what="interest at both tiers")
        for n in range(3):
            push.send(b'J{"channel":"a","formats":{"http-stream":{"content":"%d\\n"}}}' % n)
        push.send(tnetstring.dumps({b"channel": b"b", b"formats": {b"http-stream": {b"content": b"bee\n"}}}))
        got: list[list] = [[], []]
        await poll_until(reactor, lambda: len(_drain(subs[0], got[0])) == 3 and len(_drain(subs[1], got[1])) == 4,
                         what="every item at its subscribers")
        assert [f[0] for f in got[0]] == [b"a"] * 3
        assert [json.loads(f[1][1:])["formats"]["http-stream"]["content"] for f in got[0]] == ["0\n", "1\n", "2\n"]
        assert got[1][3] == [b"b", tnetstring.dumps({b"formats": {b"http-stream": {b"content": b"bee\n"}}})]
        subs[1].setsockopt(zmq.UNSUBSCRIBE, b"b")
        await poll_until(reactor, lambda: source.interest == {b"a"}, what="b unsubscribed upstream")
        subs[0].close()  # a still held by the second subscriber
        subs[1].close()
        await poll_until(reactor, lambda: source.interest == set() and edge.interest == set(), what="no interest left")
        push.send(b"J{")  # unreadable: counted and logged
        await poll_until(reactor, lambda: source.rejected == 1, what="rejected")
        assert source.forwarded == 4 and edge.forwarded == 4
    finally:
        for sock in [push, *subs]:
            sock.close(linger=0)
        edge.stopService()
        source.stopService()
        ctx.term()


@pytest_twisted.ensureDeferred
async def test_a_prefix_topic_takes_every_channel_under_it_through_both_tiers(reactor):
    """A SUB subscribed to the bare prefix news. (an instance's prefix subscription) gets news.sport and news.weather, not newsletter."""
    ctx = zmq.Context()
    source, edge, push = _two_tiers(reactor, ctx)
    sub = _sub(ctx, edge.endpoints["out"][0], b"news.")
    try:
        await poll_until(reactor, lambda: source.interest == {b"news."}, what="the prefix's interest upstream")
        for channel in (b"news.sport", b"newsletter", b"news.weather"):
            push.send(b'J{"channel":"%s","formats":{"http-stream":{"content":"x\\n"}}}' % channel)
        got: list = []
        await poll_until(reactor, lambda: len(_drain(sub, got)) == 2 and source.unheld == 1, what="two items, one unheld")
        assert [f[0] for f in got] == [b"news.sport", b"news.weather"]
    finally:
        for sock in (push, sub):
            sock.close(linger=0)
        edge.stopService()
        source.stopService()
        ctx.term()


def test_command_refuses_a_busy_address():
    """pushpin-tx-broker exits 1 with a message when its output address is taken."""
    ctx = zmq.Context()
    taken = ctx.socket(zmq.PULL)
    taken.setsockopt(zmq.LINGER, 0)
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        done = subprocess.run([sys.executable, "-m", "pushpin_tx.scripts.broker", "source", "--in", "tcp://127.0.0.1:0",
                               "--out", f"tcp://127.0.0.1:{port}"], capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
        ctx.term()
    assert done.returncode == 1
    assert "cannot start" in done.stderr and "Address already in use" in done.stderr
