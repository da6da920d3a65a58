"""
End to end over ZeroMQ: a publisher's PUSH and XPUB sockets feed the real C{twistd -n pushpin},
and a held HTTP stream receives exactly what was published.
"""

from __future__ import annotations

import json

import pytest_twisted
import zmq

from pushpin_tx.protocol import tnetstring

from .harness import poll_until, raw_connect, start_proxy, xpub_publisher


async def _held_stream(reactor, proxy, channel: str):
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
    await client.wait_for(reactor, b"[stream opened]\n")
    await proxy.wait_for_log(rf"subscribe .* channel={channel}")
    return client


@pytest_twisted.ensureDeferred
async def test_push_to_pull_reaches_a_held_stream(reactor, tmp_path):
    """A J-prefixed JSON item and a bare tnetstring item over PUSH both arrive as chunks."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        match = await proxy.wait_for_log(r"publish-pull bound to (tcp://[\d.]+:\d+)")
        push.connect(match.group(1))
        client = await _held_stream(reactor, proxy, "zp")
        push.send(b"J" + json.dumps({"channel": "zp", "formats": {"http-stream": {"content": "one\n"}}}).encode())
        await client.wait_for(reactor, b"4\r\none\n\r\n")
        push.send(b"not a tnetstring")  # logged and dropped; the reader keeps going
        push.send(tnetstring.dumps({b"channel": b"zp", b"formats": {b"http-stream": {b"content": b"two\n"}}}))
        await client.wait_for(reactor, b"4\r\ntwo\n\r\n")
        await proxy.wait_for_log(r"IN pull: received message with invalid format")
        # the publisher restarts: a new PUSH socket on the same address is served as the old one
        push.close()
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(match.group(1))
        push.send(b"J" + json.dumps({"channel": "zp", "formats": {"http-stream": {"content": "again\n"}}}).encode())
        await client.wait_for(reactor, b"6\r\nagain\n\r\n")
        client.transport.loseConnection()
    finally:
        push.close()
        ctx.term()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_sub_socket_subscribes_only_while_a_channel_is_held(reactor, tmp_path):
    """An XPUB publisher sees the proxy's interest once a client holds the channel, and loses it after."""
    ctx = zmq.Context()
    xpub, port, poll = xpub_publisher(ctx)
    proxy = await start_proxy(reactor, tmp_path, ["* test"], push_in_sub_connect="true", push_in_sub_specs=f"tcp://127.0.0.1:{port}")
    try:
        client = await _held_stream(reactor, proxy, "zs")
        await poll_until(reactor, lambda: b"\x01zs" in poll(), what="SUB interest in zs")
        xpub.send_multipart([b"zs", b"J" + json.dumps({"formats": {"http-stream": {"content": "via sub\n"}}}).encode()])
        await client.wait_for(reactor, b"8\r\nvia sub\n\r\n")
        client.transport.loseConnection()
        await poll_until(reactor, lambda: b"\x00zs" in poll(), what="SUB unsubscribe from zs")
    finally:
        xpub.close()
        ctx.term()
        await proxy.stop()
