"""
A publish of C{ws-message} with C{"action": "refresh"} (Pushpin 1.38) through the real C{twistd
-n pushpin}: the WebSocket-over-HTTP origin of every subscribed connection gets a request at
once, with nothing from the client in it.
"""

from __future__ import annotations

import pytest_twisted
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events, websocket_control_message


from .harness import ScriptedOrigin, Waiter, start_origin, start_proxy
from .test_end_to_end import _publish
from .test_websockets import ws_connect


class RefreshOrigin:
    """Subscribes each connection to 'room' at OPEN; records every request."""

    def __init__(self) -> None:
        self.requests: list[list] = []
        self.waiter = Waiter()

    def render(self, request):
        request.content.seek(0)
        events = decode_websocket_events(request.content.read())
        self.requests.append(events)
        self.waiter.check()
        request.setHeader(b"content-type", b"application/websocket-events")
        request.setHeader(b"sec-websocket-extensions", b"grip")
        if any(e.type == "OPEN" for e in events):
            subscribe = "c:" + websocket_control_message("subscribe", {"channel": "room"})
            return encode_websocket_events([WebSocketEvent("OPEN"), WebSocketEvent("TEXT", subscribe)])
        return b""


@pytest_twisted.ensureDeferred
async def test_a_refresh_publish_makes_the_origin_asked(reactor, tmp_path):
    """After the refresh publish, the origin gets one more request, empty, without the client sending anything."""
    woh = RefreshOrigin()
    origin = ScriptedOrigin()
    origin.handlers[b"/ws"] = woh.render
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port},over_http"])
    try:
        client = await ws_connect(reactor, proxy.client_port, "/ws")
        assert client.opened
        await proxy.wait_for_log(r"subscribe ws .* channel=room")
        assert len(woh.requests) == 1
        answer = await _publish(reactor, proxy.control_port, [{"channel": "room", "formats": {"ws-message": {"action": "refresh"}}}])
        assert answer.endswith(b"Published\n"), answer
        await woh.waiter.wait(reactor, lambda: len(woh.requests) >= 2, what="the refresh request")
        assert woh.requests[1] == []
        assert client.messages == []
        client.sendClose()
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()
