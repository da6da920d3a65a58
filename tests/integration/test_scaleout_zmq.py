"""
Three pushpin-tx instances with C{push_in_sub_connect=true} serve as one over ZeroMQ, as
Pushpin users deploy it: connected to one XPUB publisher, each subscribes upstream only to
the channels it holds and unsubscribes when their last holder leaves, and every instance's
streams, long-polls and WebSockets get every publish once and in order; through
C{pushpin-tx-broker} (a source broker, and an edge broker as a second tier) the same holds
for publishers that only PUSH.
"""

from __future__ import annotations

import json
import re
import sys

import pytest_twisted
import zmq
from twisted.internet import defer, protocol

from tests.backplane.cluster import start_instances, stop_instances, until

from .harness import DEADLINE, Waiter, child_env, poll_until
from .test_scaleout_redis import item, open_poll, open_stream, stream_chunks
from .test_websockets import ws_connect


class _BrokerProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = ""
        self.waiter = Waiter()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        self.waiter.check()

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(None)
        self.waiter.check()


async def start_broker(reactor, mode: str, *args: str):
    """A real C{pushpin-tx-broker} child; returns it and its (in, out) endpoints once bound."""
    proc = _BrokerProcess()
    transport = reactor.spawnProcess(proc, sys.executable, [sys.executable, "-m", "pushpin_tx.scripts.broker", mode, *args],
                                     env=child_env())
    outbound = re.compile(r"out bound to (tcp://[\d.:]+)")
    inbound = re.compile(r"in (?:bound|connected) to (tcp://[\d.:]+)")

    def ready():
        return proc.ended.called or (outbound.search(proc.output) and inbound.search(proc.output))

    await proc.waiter.wait(reactor, ready, DEADLINE, "broker bound")
    assert not proc.ended.called, proc.output
    return proc, transport, inbound.search(proc.output).group(1), outbound.search(proc.output).group(1)


async def stop_broker(reactor, proc, transport) -> None:
    if not proc.ended.called:
        transport.signalProcess("TERM")
        proc.ended.addTimeout(DEADLINE, reactor)
        await proc.ended
    print(f"---- broker log ----\n{proc.output}")


def verbose_xpub(ctx):
    """A bound XPUB that reports every (un)subscription of every instance, not only the first and last."""
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    xpub.setsockopt(zmq.XPUB_VERBOSER, 1)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    events: list[bytes] = []

    def poll() -> list[bytes]:
        while xpub.poll(0):
            events.append(xpub.recv())
        return events

    return xpub, port, poll


def sub_frames(channel: str, text: str) -> list[bytes]:
    body = dict(item(channel, text))
    del body["channel"]
    return [channel.encode(), b"J" + json.dumps(body).encode()]


@pytest_twisted.ensureDeferred
async def test_three_instances_on_one_xpub_subscribe_to_what_they_hold_and_all_get_every_publish(reactor, tmp_path):
    """Instances 0 and 1 hold x, 2 holds y: x is subscribed twice, y once; publishes reach streams, long-polls and WebSockets once, in order."""
    ctx = zmq.Context()
    xpub, port, poll = verbose_xpub(ctx)
    instances = []
    try:
        instances = await start_instances(reactor, tmp_path, 3, ["* test"], push_in_sub_connect="true",
                                          push_in_sub_specs=f"tcp://127.0.0.1:{port}")
        streams = [await open_stream(reactor, instances[i], "x") for i in (0, 1)]
        y_stream = await open_stream(reactor, instances[2], "y")
        polls = [await open_poll(reactor, instances[i], "x") for i in (0, 1)]
        sockets = [await ws_connect(reactor, instances[i].client_port, "/ws?channel=x") for i in (0, 1)]
        await poll_until(reactor, lambda: poll().count(b"\x01x") == 2 and poll().count(b"\x01y") == 1,
                         what="x subscribed by two instances, y by one")
        assert sorted(set(poll())) == [b"\x01x", b"\x01y"]  # nothing else: no instance asks for all
        for n in range(5):
            xpub.send_multipart(sub_frames("x", f"msg {n}"))
        xpub.send_multipart(sub_frames("y", "msg why"))
        expected = [b"msg %d" % n for n in range(5)]
        for stream in streams:
            await until(reactor, lambda s=stream: len(stream_chunks(s.received)) >= 5, "five chunks")
            assert stream_chunks(stream.received) == expected
        await y_stream.wait_for(reactor, b"msg why\n")
        assert stream_chunks(y_stream.received) == [b"msg why"]
        for ws in sockets:
            await ws.wait(reactor, lambda w=ws: len(w.messages) >= 5, "five messages")
            assert [m for m, _ in ws.messages] == expected
        for p in polls:
            await p.wait_for(reactor, b"msg 0\n")
            assert b"msg 1" not in p.received
        # the last holder of y leaves: that instance unsubscribes; x keeps its two
        y_stream.transport.loseConnection()
        await poll_until(reactor, lambda: b"\x00y" in poll(), what="y unsubscribed")
        assert b"\x00x" not in poll()
    finally:
        codes = await stop_instances(instances)
        xpub.close()
        ctx.term()
    assert codes == [0, 0, 0]


@pytest_twisted.ensureDeferred
async def test_through_a_source_and_an_edge_broker_pushed_items_reach_every_instance_in_order(reactor, tmp_path):
    """PUSH -> pushpin-tx-broker source -> (instance 2, and an edge broker -> instances 0, 1): 1..50 reach every stream once, in order."""
    source = edge = None
    instances = []
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        source = await start_broker(reactor, "source", "--in", "tcp://127.0.0.1:0", "--out", "tcp://127.0.0.1:0")
        edge = await start_broker(reactor, "edge", "--in", source[3], "--out", "tcp://127.0.0.1:0")
        for name, count, upstream in (("edge", 2, edge[3]), ("direct", 1, source[3])):
            (tmp_path / name).mkdir()
            instances += await start_instances(reactor, tmp_path / name, count, ["* test"], push_in_sub_connect="true",
                                               push_in_sub_specs=upstream)
        streams = [await open_stream(reactor, instance, "news") for instance in instances for _ in range(2)]
        # interest reached the top: the source broker logs its first subscriber of news
        await source[0].waiter.wait(reactor, lambda: "subscribing [news]" in source[0].output, DEADLINE, "source interest")
        await edge[0].waiter.wait(reactor, lambda: "subscribing [news]" in edge[0].output, DEADLINE, "edge interest")
        push.connect(source[2])
        # a non-verbose XPUB tells only of a channel's first subscriber: probe until every
        # instance's subscription is through both tiers (ZeroMQ drops what comes before it)
        probe = b"J" + json.dumps({"channel": "news", "formats": {"http-stream": {"content": "probe\n"}}}).encode()

        def probed() -> bool:
            push.send(probe)
            return all(b"probe\n" in stream.received for stream in streams)

        await poll_until(reactor, probed, what="a probe at every stream", interval=0.05)
        for n in range(1, 51):
            push.send(b"J" + json.dumps({"channel": "news", "formats": {"http-stream": {"content": f"msg {n}\n"}}}).encode())
        expected = [b"msg %d" % n for n in range(1, 51)]
        for stream in streams:
            await until(reactor, lambda s=stream: len(stream_chunks(s.received)) >= 50, "fifty chunks")
            assert stream_chunks(stream.received) == expected
        for stream in streams:
            stream.transport.loseConnection()
        await edge[0].waiter.wait(reactor, lambda: "unsubscribing [news]" in edge[0].output, DEADLINE, "edge unsubscribes")
        await source[0].waiter.wait(reactor, lambda: "unsubscribing [news]" in source[0].output, DEADLINE, "source unsubscribes")
    finally:
        codes = await stop_instances(instances)
        push.close()
        ctx.term()
        for broker in (edge, source):
            if broker is not None:
                await stop_broker(reactor, broker[0], broker[1])
    assert codes == [0, 0, 0]
