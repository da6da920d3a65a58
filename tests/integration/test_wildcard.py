"""
Wildcard (prefix) subscriptions end to end, through the real C{twistd -n pushpin}: an HTTP
stream held with C{Grip-Channel: news.; prefix} and a WebSocket-over-HTTP client subscribed
with C{c:{"type":"subscribe","channel":"news.","prefix":true}} both get every C{news.*} publish.
"""

from __future__ import annotations

import re

import pytest_twisted
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events

from .harness import ScriptedOrigin, raw_connect, start_origin, start_proxy
from .test_end_to_end import _publish
from .test_websockets import ws_connect


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
    origin = ScriptedOrigin()
    origin.handlers[b"/news"] = news_stream
    origin.handlers[b"/ws"] = news_socket
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port},over_http"])
    try:
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
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_numbered_items_reach_a_prefix_stream_in_id_order(reactor, tmp_path):
    """Ids 1..6 on news.sport published with 3 and 4 swapped reach the prefix stream (beside an exact one) as 1..6."""
    origin = ScriptedOrigin()
    origin.handlers[b"/news"] = news_stream
    origin.handlers[b"/sport"] = exact_stream
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"], message_wait="2000")
    try:
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
    finally:
        await proxy.stop()
        await port.stopListening()
