"""
WebSocket-over-HTTP flow control from the origin (Pushpin 1.41) through the real C{twistd -n
pushpin}: an origin that takes only part of a message with C{Content-Bytes-Accepted} gets the
rest again, first in the next request, announced by C{Content-Bytes-Replayed}.
"""

from __future__ import annotations

import pytest_twisted
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events

from .harness import ScriptedOrigin, Waiter, start_origin, start_proxy
from .test_websockets import ws_connect


class PartialOrigin:
    """Accepts 3 bytes of the first message it is sent, everything after; records each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, list]] = []
        self.waiter = Waiter()

    def render(self, request):
        headers = {k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()}
        request.content.seek(0)
        events = decode_websocket_events(request.content.read())
        self.requests.append((headers, events))
        self.waiter.check()
        request.setHeader(b"content-type", b"application/websocket-events")
        if any(e.type == "OPEN" for e in events):
            return encode_websocket_events([WebSocketEvent("OPEN")])
        if len(self.requests) == 2:
            request.setHeader(b"content-bytes-accepted", b"3")
        return b""


def _text(event) -> bytes:
    content = event.content
    return content if isinstance(content, bytes) else content.encode()


@pytest_twisted.ensureDeferred
async def test_kept_back_bytes_are_replayed(reactor, tmp_path):
    """The origin takes 3 of 'hello''s bytes: the next request (on new data) starts with 'lo', Content-Bytes-Replayed: 2."""
    woh = PartialOrigin()
    origin = ScriptedOrigin()
    origin.handlers[b"/ws"] = woh.render
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port},over_http"])
    try:
        client = await ws_connect(reactor, proxy.client_port, "/ws")
        assert client.opened
        client.sendMessage(b"hello")
        await woh.waiter.wait(reactor, lambda: len(woh.requests) >= 2, what="the message request")
        headers, events = woh.requests[1]
        assert [(e.type, _text(e)) for e in events] == [("TEXT", b"hello")]
        assert b"content-bytes-replayed" not in headers
        client.sendMessage(b"next")
        await woh.waiter.wait(reactor, lambda: len(woh.requests) >= 3, what="the replaying request")
        headers, events = woh.requests[2]
        assert [(e.type, _text(e)) for e in events] == [("TEXT", b"lo"), ("TEXT", b"next")]
        assert headers[b"content-bytes-replayed"] == b"2"
        client.sendMessage(b"again")
        await woh.waiter.wait(reactor, lambda: len(woh.requests) >= 4, what="a request after full acceptance")
        headers, events = woh.requests[3]
        assert [(e.type, _text(e)) for e in events] == [("TEXT", b"again")]
        assert b"content-bytes-replayed" not in headers
        client.sendClose()
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()
