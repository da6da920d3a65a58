"""
Wildcard (prefix) subscriptions end to end, through the real C{twistd -n pushpin}: an HTTP
stream held with C{Grip-Channel: news.; prefix} and a WebSocket-over-HTTP client subscribed
with C{c:{"type":"subscribe","channel":"news.","prefix":true}} both get every C{news.*} publish.
"""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

import pytest_twisted
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events

from .harness import ScriptedOrigin, raw_connect, raw_request, start_origin, start_proxy
from .test_end_to_end import _publish
from .test_websockets import ws_connect


@asynccontextmanager
async def _proxying(reactor, tmp_path, handlers: dict, options: str = "", **overrides: str):
    """The real service routing everything to a scripted origin with these C{handlers} (route C{options} after its address); yields the proxy."""
    origin = ScriptedOrigin()
    origin.handlers.update(handlers)
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}{options}"], **overrides)
    try:
        yield proxy
    finally:
        await proxy.stop()
        await port.stopListening()


def news_stream(request):
    request.setHeader(b"content-type", b"text/plain")
    request.setHeader(b"grip-hold", b"stream")
    request.setHeader(b"grip-channel", b"news.; prefix")
    return b"open\n"


def exact_stream(request):
    request.setHeader(b"content-type", b"text/plain")
    request.setHeader(b"grip-hold", b"stream")
    request.setHeader(b"grip-channel", b"news.sport")
    return b"open\n"


def news_socket(request):
    request.content.seek(0)
    events = decode_websocket_events(request.content.read())
    out = []
    if any(e.type == "OPEN" for e in events):
        out = [
            WebSocketEvent("OPEN"),
            WebSocketEvent("TEXT", 'c:{"type": "subscribe", "channel": "news.", "prefix": true}'),
        ]
    request.setHeader(b"content-type", b"application/websocket-events")
    request.setHeader(b"sec-websocket-extensions", b"grip")
    return encode_websocket_events(out)


def item(channel: str, text: str, **extra):
    return {"channel": channel, **extra, "formats": {"http-stream": {"content": text + "\n"}, "ws-message": {"content": text}}}


@pytest_twisted.ensureDeferred
async def test_a_prefix_stream_and_a_prefix_websocket_get_every_matching_channel(reactor, tmp_path):
    """A stream and a WebSocket on prefix 'news.' get news.sport and news.weather, not 'newsletter', each in publish order."""
    async with _proxying(reactor, tmp_path, {b"/news": news_stream, b"/ws": news_socket}, ",over_http") as proxy:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /news HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"open\n")
        ws = await ws_connect(reactor, proxy.client_port, "/ws")
        await proxy.wait_for_log(r"subscribe .*channel-prefix=news\.[\s\S]*subscribe ws .*channel-prefix=news\.")
        await _publish(reactor, proxy.control_port, [item("news.sport", "goal"), item("newsletter", "spam"), item("news.weather", "rain")])
        await _publish(reactor, proxy.control_port, [item("news.sport", "final")])
        await client.wait_for(reactor, b"final\n")
        assert re.findall(rb"(goal|spam|rain|final)\n", client.received) == [b"goal", b"rain", b"final"]
        await ws.wait(reactor, lambda: len(ws.messages) >= 3, "three messages")
        assert [m for m, _ in ws.messages] == [b"goal", b"rain", b"final"]
        ws.sendClose(1000)
        await ws.wait(reactor, lambda: ws.closed, "closed")
        client.transport.loseConnection()


def json_news_stream(request):
    """The JSON instruct form of news_stream: a stream on the prefix news. (and the refusal of a non-boolean prefix)."""
    import json

    prefix = True if request.path == b"/json-news" else "yes"
    request.setHeader(b"content-type", b"application/grip-instruct")
    return json.dumps({
        "hold": {"mode": "stream", "channels": [{"name": "news.", "prefix": prefix}]},
        "response": {"headers": {"Content-Type": "text/plain"}, "body": "open\n"},
    }).encode()


@pytest_twisted.ensureDeferred
async def test_a_json_instruct_prefix_stream_gets_every_matching_channel(reactor, tmp_path):
    """
    A stream held by an application/grip-instruct body with {"name": "news.", "prefix": true}
    gets news.sport and news.weather, not newsletter; "prefix": "yes" is an invalid instruction.
    """
    async with _proxying(reactor, tmp_path, {b"/json-news": json_news_stream, b"/json-bad": json_news_stream}) as proxy:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /json-news HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"open\n")
        await proxy.wait_for_log(r"subscribe .*channel-prefix=news\.")
        await _publish(reactor, proxy.control_port, [item("news.sport", "goal"), item("newsletter", "spam"), item("news.weather", "rain")])
        await client.wait_for(reactor, b"rain\n")
        assert re.findall(rb"(goal|spam|rain)\n", client.received) == [b"goal", b"rain"]
        client.transport.loseConnection()

        bad = await raw_request(reactor, proxy.client_port, b"GET /json-bad HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        assert bad.received.startswith(b"HTTP/1.1 502 "), bad.received[:200]
        await proxy.wait_for_log(r"channel contains 'prefix' with wrong type")


@pytest_twisted.ensureDeferred
async def test_numbered_items_reach_a_prefix_stream_in_id_order(reactor, tmp_path):
    """Ids 1..6 on news.sport published with 3 and 4 swapped reach the prefix stream (beside an exact one) as 1..6."""
    async with _proxying(reactor, tmp_path, {b"/news": news_stream, b"/sport": exact_stream}, message_wait="2000") as proxy:
        wild = await raw_connect(reactor, proxy.client_port)
        wild.transport.write(b"GET /news HTTP/1.1\r\nHost: example.com\r\n\r\n")
        exact = await raw_connect(reactor, proxy.client_port)
        exact.transport.write(b"GET /sport HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await wild.wait_for(reactor, b"open\n")
        await exact.wait_for(reactor, b"open\n")
        await proxy.wait_for_log(r"subscribe .*channel=news\.sport")
        for n in (1, 2, 4, 3, 5, 6):
            await _publish(reactor, proxy.control_port, [item("news.sport", f"item {n}", id=str(n), **{"prev-id": str(n - 1)})])
        for client in (wild, exact):
            await client.wait_for(reactor, b"item 6\n")
            assert re.findall(rb"item (\d)\n", client.received) == [b"1", b"2", b"3", b"4", b"5", b"6"]
            client.transport.loseConnection()


async def prefix_streams(reactor, proxy, path: bytes = b"/news") -> list:
    """
    Prefix streams on C{path}: one, or with PUSHPIN_TX_TEST_WORKERS > 1 as many as it takes
    (up to 16) for one to be held in a worker, so the worker's prefix interest goes up the link.
    """
    import os

    workers = int(os.environ.get("PUSHPIN_TX_TEST_WORKERS", "1"))
    if workers > 1:
        await proxy.wait_for_log(r"\[worker 1\] client listening")
    clients = []
    for _ in range(16):
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"open\n")
        clients.append(client)
        if workers < 2 or re.search(r"\[worker [1-9]\][^\n]*channel-prefix=news\.", proxy.output):
            return clients
    raise AssertionError("no prefix stream landed in a worker")


def both_stream(request):
    """A stream on news.sport exactly and on the prefix news. (one connection, two matching subscriptions)."""
    request.setHeader(b"content-type", b"text/plain")
    request.setHeader(b"grip-hold", b"stream")
    request.setHeader(b"grip-channel", b"news.sport, news.; prefix")
    return b"open\n"


def _sub_publish(xpub, channel: str, text: str) -> None:
    import json

    xpub.send_multipart([channel.encode(), b"J" + json.dumps({"formats": {"http-stream": {"content": text + "\n"}}}).encode()])


@pytest_twisted.ensureDeferred
async def test_a_prefix_stream_is_fed_by_the_zeromq_sub_input(reactor, tmp_path):
    """
    The SUB input subscribes the prefix's bytes on a real XPUB publisher (\\x01news.), and what
    is published there under the prefix reaches prefix streams; a stream holding news.sport
    exactly and under the prefix gets it once; the prefix's last stream leaving unsubscribes.
    """
    import zmq

    from .harness import poll_until, xpub_publisher

    ctx = zmq.Context()
    xpub, xport, poll = xpub_publisher(ctx)
    origin = ScriptedOrigin()
    origin.handlers[b"/news"] = news_stream
    origin.handlers[b"/both"] = both_stream
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"],
                              push_in_sub_connect="true", push_in_sub_specs=f"tcp://127.0.0.1:{xport}")
    try:
        prefixes = await prefix_streams(reactor, proxy)
        both = await raw_connect(reactor, proxy.client_port)
        both.transport.write(b"GET /both HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await both.wait_for(reactor, b"open\n")
        await poll_until(reactor, lambda: {b"\x01news.", b"\x01news.sport"} <= set(poll()), what="SUB interest")
        for channel, text in (("news.sport", "goal"), ("newsletter", "spam"), ("news.weather", "rain")):
            _sub_publish(xpub, channel, text)
        for client in prefixes + [both]:
            await client.wait_for(reactor, b"rain\n")
            assert re.findall(rb"(goal|spam|rain)\n", client.received) == [b"goal", b"rain"]
        assert poll().count(b"\x01news.") == 1
        for client in prefixes + [both]:
            client.transport.loseConnection()
        await poll_until(reactor, lambda: b"\x00news." in poll(), what="SUB unsubscribe from the prefix")
    finally:
        await proxy.stop()
        await port.stopListening()
        xpub.close()
        ctx.term()


@pytest_twisted.ensureDeferred
async def test_a_prefix_stream_is_fed_by_the_redis_backplane(reactor, tmp_path):
    """
    Two instances on a real redis-server: a prefix stream on instance 0 (a PSUBSCRIBE of
    pushpin-tx/0/news.*) gets what is published to instance 1 under the prefix, once, also
    when instance 0 holds the exact channel too; the PUNSUBSCRIBE follows the last stream.
    """
    from tests.backplane.cluster import publish, redis_command, start_instances, stop_instances, until
    from tests.backplane.redisproc import RedisServer

    redis = await RedisServer(reactor).start()
    origin = ScriptedOrigin()
    origin.handlers[b"/news"] = news_stream
    origin.handlers[b"/both"] = both_stream
    port = await start_origin(reactor, origin)
    instances = []
    try:
        instances = await start_instances(reactor, tmp_path, 2, [f"* 127.0.0.1:{port.getHost().port}"], backplane=redis.url)
        for instance in instances:
            await instance.wait_for_log(r"backplane: redis at redis://127\.0\.0\.1:\d+/0 up")
        prefixes = await prefix_streams(reactor, instances[0])
        both = await raw_connect(reactor, instances[0].client_port)
        both.transport.write(b"GET /both HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await both.wait_for(reactor, b"open\n")

        async def patterns() -> bool:
            return await redis_command(reactor, redis.port, "PUBSUB", "NUMPAT") == 1

        await until(reactor, patterns, "one pattern subscription")
        await publish(reactor, instances[1], [item("news.sport", "goal"), item("newsletter", "spam")])
        await publish(reactor, instances[1], [item("news.weather", "rain")])
        for client in prefixes + [both]:
            await client.wait_for(reactor, b"rain\n")
            assert re.findall(rb"(goal|spam|rain)\n", client.received) == [b"goal", b"rain"]
        for client in prefixes + [both]:
            client.transport.loseConnection()

        async def no_patterns() -> bool:
            return await redis_command(reactor, redis.port, "PUBSUB", "NUMPAT") == 0

        await until(reactor, no_patterns, "the pattern unsubscribed")
    finally:
        codes = await stop_instances(instances)
        await redis.stop()
        await port.stopListening()
    assert codes == [0, 0]
