"""
Moving from polling to long-polling: an existing REST endpoint, C{GET /messages?after=N},
that clients poll. Four lines (marked C{# long-poll}) make the proxy hold the request
while there is nothing new, and one publish (in C{add}) answers every held request at
once. The client does not change: it asks again when it gets an answer.

C{--polling} (run.py) turns the four lines off: the endpoint as it was before.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import parse_qs

from gripcontrol import GripPubControl, HttpResponseFormat
from pubcontrol import Item

PAGE = (Path(__file__).parent / "index.html").read_bytes()
settings = {"control_uri": "http://127.0.0.1:5561", "long_poll": True}
_messages: list[dict] = []
_lock = threading.Lock()


def handler(request: dict) -> tuple[int, dict[str, str], bytes]:
    if request["method"] == "GET" and request["path"] == "/":
        return 200, {"Content-Type": "text/html; charset=utf-8"}, PAGE
    if request["path"] == "/messages" and request["method"] == "GET":
        return messages(int(parse_qs(request["query"]).get("after", ["0"])[0]))
    if request["path"] == "/messages" and request["method"] == "POST":
        return add(request["body"].decode("utf-8", "replace").strip())
    return 404, {"Content-Type": "text/plain"}, b"GET /, GET /messages?after=N, POST /messages\n"


def messages(after: int) -> tuple[int, dict[str, str], bytes]:
    """The REST endpoint: the messages after id C{after}, and the last id."""
    with _lock:
        new = _messages[after:]
        last = len(_messages)
    headers = {"Content-Type": "application/json"}
    if not new and settings["long_poll"]:
        headers["Grip-Hold"] = "response"  # long-poll: nothing new, so hold the request
        headers["Grip-Channel"] = f"messages; prev-id={last}"  # long-poll: until a publish on "messages"
        headers["Grip-Timeout"] = "20"  # long-poll: or 20 s, then this (empty) answer
    return 200, headers, json.dumps({"messages": new, "last_id": last}).encode()


def add(text: str) -> tuple[int, dict[str, str], bytes]:
    """Save a message; publish the answer that every held request is waiting for."""
    with _lock:
        message = {"id": len(_messages) + 1, "text": text or "(empty)"}
        _messages.append(message)
        if settings["long_poll"]:  # long-poll: answer the held requests
            body = json.dumps({"messages": [message], "last_id": message["id"]})
            item = Item(HttpResponseFormat(body=body, headers={"Content-Type": "application/json"}), id=str(message["id"]), prev_id=str(message["id"] - 1))
            GripPubControl({"control_uri": settings["control_uri"]}).publish("messages", item, blocking=True)
    return 200, {"Content-Type": "application/json"}, json.dumps(message).encode()
