"""
The chat's whole back end: one stateless function, as a serverless platform would run it.

The proxy holds the WebSockets and turns what happens on them into short HTTP requests
(WebSocket-over-HTTP, reference §8.2): a POST whose body is a list of events (OPEN, TEXT,
CLOSE, ...). The function answers each with events of its own. It keeps nothing between
calls: on OPEN it tells the proxy to subscribe the connection to the channel "room"; a
TEXT from a client is published to "room", and the proxy sends it to every connection
subscribed there.
"""

from __future__ import annotations

import json
from pathlib import Path

from gripcontrol import (
    GripPubControl,
    WebSocketEvent,
    WebSocketMessageFormat,
    decode_websocket_events,
    encode_websocket_events,
    websocket_control_message,
)
from pubcontrol import Item

PAGE = (Path(__file__).parent / "index.html").read_bytes()
CHANNEL = "room"

# Where to publish; run.py sets it once the proxy's control API is up (GRIP_URL in a
# serverless deployment).
settings = {"control_uri": "http://127.0.0.1:5561"}


def handler(request: dict) -> tuple[int, dict[str, str], bytes]:
    """One request in, one response out; no state kept between calls."""
    if request["method"] == "GET" and request["path"] in ("/", "/index.html"):
        return 200, {"Content-Type": "text/html; charset=utf-8"}, PAGE
    if request["headers"].get("content-type") != "application/websocket-events":
        return 400, {"Content-Type": "text/plain"}, b"Not a WebSocket-over-HTTP request\n"

    out = []
    for event in decode_websocket_events(request["body"]):
        if event.type == "OPEN":
            # Accept the connection and subscribe it to the room.
            out.append(WebSocketEvent("OPEN"))
            out.append(WebSocketEvent("TEXT", "c:" + websocket_control_message("subscribe", {"channel": CHANNEL})))
        elif event.type == "TEXT":
            message = json.loads(event.content)
            text = json.dumps({"from": str(message.get("from", "?"))[:40], "text": str(message.get("text", ""))[:500]})
            GripPubControl({"control_uri": settings["control_uri"]}).publish(
                CHANNEL, Item(WebSocketMessageFormat(text)), blocking=True
            )
        elif event.type == "CLOSE":
            out.append(WebSocketEvent("CLOSE", event.content))
    headers = {"Content-Type": "application/websocket-events", "Sec-WebSocket-Extensions": "grip"}
    return 200, headers, encode_websocket_events(out)
