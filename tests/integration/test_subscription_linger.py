"""
The subscription linger over real sockets, as Pushpin's handler does it (C{addSub} /
C{removeSub}, C{subscription_linger}): a channel whose last subscriber was a long-poll stays
subscribed on the ZeroMQ SUB socket for the linger, so a client that long-polls again keeps
the same subscription, a publish meanwhile still reaches the proxy (and moves the channel's
last id), and the SUB socket's C{UNSUBSCRIBE} comes only when the linger ends. A stream or a
WebSocket leaving last unsubscribes at once. A real XPUB publisher sees the frames.
"""

from __future__ import annotations

import json
import re

import pytest
import pytest_twisted
import zmq

from pushpin_tx.core.refresh import REFRESH_INTERVAL

from .harness import ScriptedOrigin, poll_until, raw_connect, start_origin, start_proxy, xpub_publisher

LINGER = 2


def _sub_proxy(reactor, tmp_path, port: int, routes: list[str], linger: int = LINGER):
    return start_proxy(reactor, tmp_path, routes, push_in_sub_connect="true",
                       push_in_sub_specs=f"tcp://127.0.0.1:{port}", subscription_linger=str(linger))


def _publish(xpub, channel: str, **item) -> None:
    xpub.send_multipart([channel.encode(), b"J" + json.dumps(item).encode()])


async def _answered_long_poll(reactor, proxy, xpub, channel: str, target: str):
    """A long-poll to C{target}, subscribed to C{channel} (the proxy's log and the XPUB say so), answered by a publish of 'one'."""
    sock, _, poll = xpub
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % target.encode())
    await proxy.wait_for_log(rf"subscribe \S*{re.escape(target)} channel={channel}")
    await poll_until(reactor, lambda: b"\x01" + channel.encode() in poll(), what=f"SUB interest in {channel}")
    _publish(sock, channel, formats={"http-response": {"body": "one\n"}})
    await client.wait_for(reactor, b"one\n")
    return client


@pytest.fixture
def xpub():
    ctx = zmq.Context()
    sock, port, poll = xpub_publisher(ctx)
    yield sock, port, poll
    sock.close()
    ctx.term()


@pytest_twisted.ensureDeferred
async def test_a_long_poll_channel_stays_subscribed_through_the_linger(reactor, tmp_path, xpub):
    """
    A client answered and long-polling again at once keeps the one SUB subscription (the XPUB
    sees a single subscribe), gets the next publish, and the unsubscribe comes after the linger
    (at least C{linger} seconds after the publish that answered the last long-poll), not at
    once. (Only the lower bound is on real time: load can only make events later. That it is
    the first refresh tick at or past the deadline, not a later one, tests/core/test_linger.py
    checks on a Clock.)
    """
    sock, port, poll = xpub
    proxy = await _sub_proxy(reactor, tmp_path, port, ["* test"])
    try:
        first = await _answered_long_poll(reactor, proxy, xpub, "zl", "/response?channel=zl&n=1")
        # the client comes back at once: its channel is still subscribed
        second = await raw_connect(reactor, proxy.client_port)
        second.transport.write(b"GET /response?channel=zl&n=2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await proxy.wait_for_log(r"subscribe \S*n=2 channel=zl")
        published = reactor.seconds()  # the linger begins when the proxy answers: not before this
        _publish(sock, "zl", formats={"http-response": {"body": "two\n"}})
        await second.wait_for(reactor, b"two\n")
        assert poll() == [b"\x01zl"]  # no unsubscribe, no second subscribe in between
        await poll_until(reactor, lambda: b"\x00zl" in poll(), what="SUB unsubscribe from zl")  # (by the harness's deadline)
        waited = reactor.seconds() - published
        assert waited >= LINGER, waited
        assert poll() == [b"\x01zl", b"\x00zl"]
        first.transport.loseConnection()
        second.transport.loseConnection()
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_a_stream_leaving_last_unsubscribes_at_once_even_during_a_linger(reactor, tmp_path, xpub):
    """A stream that joins a lingering channel and leaves ends its subscription at once (Pushpin's stream unsubscribe), not after the linger."""
    sock, port, poll = xpub
    proxy = await _sub_proxy(reactor, tmp_path, port, ["* test"], linger=60)
    try:
        poll_client = await _answered_long_poll(reactor, proxy, xpub, "zm", "/response?channel=zm")
        stream = await raw_connect(reactor, proxy.client_port)
        stream.transport.write(b"GET /stream?channel=zm HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await stream.wait_for(reactor, b"[stream opened]\n")
        await proxy.wait_for_log(r"subscribe \S*/stream\S* channel=zm")
        left = reactor.seconds()
        stream.transport.loseConnection()
        await poll_until(reactor, lambda: b"\x00zm" in poll(), what="SUB unsubscribe from zm")
        assert reactor.seconds() - left < 5
        assert poll() == [b"\x01zm", b"\x00zm"]  # one subscription: the long-poll's linger held it
        poll_client.transport.loseConnection()
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_a_publish_during_the_linger_is_not_lost_to_the_client_that_comes_back(reactor, tmp_path, xpub):
    """
    A publish while nobody holds a lingering channel still reaches the proxy through the SUB
    socket and becomes the channel's last id: the client's next long-poll, answered with the
    older prev-id, is found behind and sent back to the origin at once (Grip-Last: the id it
    has), so the origin can give it what it missed (Pushpin's "last ID inconsistency").
    """
    sock, port, poll = xpub
    origin = ScriptedOrigin()

    def long_poll(request):
        request.setHeader(b"content-type", b"text/plain")
        if request.getHeader(b"grip-last") is not None:
            return b"caught up\n"
        request.setHeader(b"grip-hold", b"response")
        request.setHeader(b"grip-channel", b"zc; prev-id=" + request.args[b"prev"][0])
        return b"timed out\n"

    origin.handlers[b"/lp"] = long_poll
    origin_port = await start_origin(reactor, origin)
    proxy = await _sub_proxy(reactor, tmp_path, port, [f"* 127.0.0.1:{origin_port.getHost().port}"], linger=60)
    try:
        first = await raw_connect(reactor, proxy.client_port)
        first.transport.write(b"GET /lp?prev=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await proxy.wait_for_log(r"subscribe \S*prev=1 channel=zc")
        await poll_until(reactor, lambda: b"\x01zc" in poll(), what="SUB interest in zc")
        _publish(sock, "zc", id="2", **{"prev-id": "1"}, formats={"http-response": {"body": "two\n"}})
        await first.wait_for(reactor, b"two\n")
        # nobody holds zc now; the publisher goes on
        _publish(sock, "zc", id="3", **{"prev-id": "2"}, formats={"http-response": {"body": "three\n"}})
        await proxy.wait_for_log(r"publish channel=zc receivers=0")
        second = await raw_connect(reactor, proxy.client_port)
        second.transport.write(b"GET /lp?prev=2 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await second.wait_for(reactor, b"caught up\n")
        assert [dict(r["headers"]).get(b"Grip-Last") for r in origin.requests] == [None, None, b"zc; last-id=2"]
        assert poll() == [b"\x01zc"]
        first.transport.loseConnection()
        second.transport.loseConnection()
    finally:
        await proxy.stop()
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_long_polls_sub_unavailable_and_the_sub_unsubscribe_share_the_refresh_tick(reactor, tmp_path, xpub):
    """
    subscription_linger=0, as Pushpin 1.36 does it (checked side by side: the stats socket's
    'sub ... unavailable' and the SUB socket's unsubscribe come together, on the stats
    manager's next 1 s refresh tick after the long-poll was answered, not at once). Nothing
    else lingers, so the refresh timer starts with this linger and its first tick is
    C{REFRESH_INTERVAL} after the answer: each of the two is seen at least that long after
    the publish that answered (the one bound on real time, which load can only lengthen); the
    upper bound is the harness's deadline (the exact tick: tests/core/test_linger.py, on a
    Clock).
    """
    import zmq as _zmq

    sock, port, poll = xpub
    ctx = _zmq.Context()
    stats_spec = f"ipc://{tmp_path}/stats-socket"
    proxy = await start_proxy(reactor, tmp_path, ["* test"], push_in_sub_connect="true",
                              push_in_sub_specs=f"tcp://127.0.0.1:{port}", subscription_linger="0",
                              stats_spec=stats_spec, stats_format="json")
    stats = ctx.socket(_zmq.SUB)
    stats.setsockopt(_zmq.LINGER, 0)
    stats.connect(stats_spec)
    stats.setsockopt(_zmq.SUBSCRIBE, b"sub ")
    packets: list[tuple[float, dict]] = []

    def stats_poll() -> list[tuple[float, dict]]:
        while stats.poll(0):
            packets.append((reactor.seconds(), json.loads(stats.recv()[5:])))
        return packets

    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /response?channel=zs HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await poll_until(reactor, lambda: b"\x01zs" in poll(), what="SUB interest in zs")
        await poll_until(reactor, lambda: any(p.get("channel") == "zs" for _, p in stats_poll()), what="sub zs on the stats socket")
        published = reactor.seconds()  # the linger begins when the proxy answers: not before this
        _publish(sock, "zs", formats={"http-response": {"body": "one\n"}})
        await client.wait_for(reactor, b"one\n")
        unsubscribed: list[float] = []

        def both() -> bool:
            if not unsubscribed and b"\x00zs" in poll():
                unsubscribed.append(reactor.seconds())
            return bool(unsubscribed) and any(p.get("unavailable") for _, p in stats_poll())

        await poll_until(reactor, both, what="the unsubscribe and the unavailable")
        [gone_at] = [t for t, p in packets if p.get("unavailable")]
        assert packets[-1][1] == {"channel": "zs", "from": packets[-1][1]["from"], "mode": "response", "unavailable": True}
        # the next tick, not at once. The tick may have begun a little before the publish (the
        # refresh timer runs while anything is due, and the "sub zs" packet just read came from
        # it: seen 0.99997 s after the publish), so the bound is half a tick, not a whole one
        assert min(gone_at, unsubscribed[0]) - published >= REFRESH_INTERVAL / 2, (gone_at - published, unsubscribed[0] - published)
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        stats.close()
        ctx.term()
