"""
Reliable streaming: a stream of messages with ids that survives a lost publish.

The origin keeps every message (here in memory; in an application, its database) and
publishes each one with an C{id} and the C{prev-id} before it (reference §7). A stream
is answered with what exists so far and three instructions:

    Grip-Hold: stream
    Grip-Channel: messages; prev-id=<last id>
    Grip-Link: </stream?after=<last id>>; rel=next; timeout=<seconds>

When a publish is lost, the next one's C{prev-id} does not follow on, and the proxy asks
the next link again, with C{Grip-Last: messages; last-id=<what the client has>}; when the
publisher dies and nothing follows, the proxy asks after C{timeout} seconds without
publishes. Either way the origin answers with what the client missed, and the client sees
every message once, in order.
"""

from __future__ import annotations

import json
import re
import threading
from urllib.parse import parse_qs

from gripcontrol import GripPubControl, HttpStreamFormat
from pubcontrol import Item

CHANNEL = "messages"
settings = {"control_uri": "http://127.0.0.1:5561", "link_timeout": 10}
_messages: list[str] = []  # message id N is _messages[N - 1]
_lock = threading.Lock()


def _line(message_id: int) -> str:
    return f"{message_id} {_messages[message_id - 1]}\n"


def handler(request: dict) -> tuple[int, dict[str, str], bytes]:
    query = parse_qs(request["query"])
    if request["method"] == "GET" and request["path"] == "/stream":
        return _stream(request, query)
    if request["method"] == "POST" and request["path"] == "/messages":
        return _add(request["body"].decode("utf-8", "replace").strip(), query.get("publish") != ["no"])
    return 404, {"Content-Type": "text/plain"}, b"GET /stream, POST /messages\n"


def _stream(request: dict, query: dict) -> tuple[int, dict[str, str], bytes]:
    """The stream from a position: a client's first request, or the proxy's next-link fetch."""
    grip_last = request["headers"].get("grip-last")
    after = int(query.get("after", ["0"])[0])
    if grip_last:
        # The proxy says where this client's stream is; that wins over the link's URI.
        match = re.search(r"last-id=(\d+)", grip_last)
        after = int(match.group(1)) if match else after
    with _lock:
        last = len(_messages)
        body = "".join(_line(i) for i in range(after + 1, last + 1))
    if grip_last and body:
        print(f"[origin] next link with Grip-Last: {grip_last}: sending {last - after} missed", flush=True)
        body = f"# recovered after Grip-Last: {grip_last}\n" + body
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Grip-Hold": "stream",
        "Grip-Channel": f"{CHANNEL}; prev-id={last}",
        "Grip-Link": f"</stream?after={last}>; rel=next; timeout={settings['link_timeout']}",
    }
    return 200, headers, body.encode()


def _add(text: str, publish: bool) -> tuple[int, dict[str, str], bytes]:
    """Save a message, then publish it (unless told to lose the publish)."""
    with _lock:
        _messages.append(text or "(empty)")
        message_id = len(_messages)
        if publish:
            item = Item(HttpStreamFormat(_line(message_id)), id=str(message_id), prev_id=str(message_id - 1))
            GripPubControl({"control_uri": settings["control_uri"]}).publish(CHANNEL, item, blocking=True)
    return 200, {"Content-Type": "application/json"}, json.dumps({"id": message_id, "published": publish}).encode() + b"\n"
