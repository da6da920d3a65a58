"""
Streaming historical data: one request gets the whole history, then live records.

C{GET /stream} answers with the first page of history and a next link, and no hold:

    Grip-Link: </stream?after=2000>; rel=next

The proxy sends that page to the client at once, fetches the link and appends its body, and
so on page by page (reference §5.3, "paged stream"): the client sees one big response body
while the origin only ever serves pages. The last page carries the hold instead:

    Grip-Hold: stream
    Grip-Channel: records; prev-id=<last id>
    Grip-Link: </stream?after=<last id>>; rel=next; timeout=120

and from then on each published record is appended live (with C{id}/C{prev-id}, so one
that is missed is fetched from that last link, as in examples/reliable).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from urllib.parse import parse_qs

from gripcontrol import GripPubControl, HttpStreamFormat
from pubcontrol import Item

PAGE = (Path(__file__).parent / "index.html").read_bytes()
CHANNEL = "records"
settings = {"control_uri": "http://127.0.0.1:5561", "page_size": 2000}
_records: list[str] = []  # record id N is _records[N - 1]
_lock = threading.Lock()


def make_history(count: int) -> None:
    """The historical data: C{count} readings of a made-up sensor."""
    with _lock:
        _records[:] = [f"reading {20 + (i * 7) % 13}.{i % 10}" for i in range(1, count + 1)]


def _line(record_id: int) -> str:
    return f"{record_id} {_records[record_id - 1]}\n"


def handler(request: dict) -> tuple[int, dict[str, str], bytes]:
    query = parse_qs(request["query"])
    if request["method"] == "GET" and request["path"] == "/":
        return 200, {"Content-Type": "text/html; charset=utf-8"}, PAGE
    if request["method"] == "GET" and request["path"] == "/stream":
        after = int(query.get("after", ["0"])[0])
        grip_last = request["headers"].get("grip-last")
        if grip_last and (match := re.search(r"last-id=(\d+)", grip_last)):
            after = int(match.group(1))  # a recovery: the proxy says where the client is
        return page(after)
    if request["method"] == "POST" and request["path"] == "/records":
        return add(request["body"].decode("utf-8", "replace").strip())
    return 404, {"Content-Type": "text/plain"}, b"GET /, GET /stream, POST /records\n"


def page(after: int) -> tuple[int, dict[str, str], bytes]:
    """One page of history after C{after}: with a next link while more remains, else the hold."""
    with _lock:
        last = min(len(_records), after + settings["page_size"])
        body = "".join(_line(i) for i in range(after + 1, last + 1))
        more = last < len(_records)
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if more:
        headers["Grip-Link"] = f"</stream?after={last}>; rel=next"
    else:
        headers["Grip-Hold"] = "stream"
        headers["Grip-Channel"] = f"{CHANNEL}; prev-id={last}"
        headers["Grip-Link"] = f"</stream?after={last}>; rel=next; timeout=120"
    return 200, headers, body.encode()


def add(text: str) -> tuple[int, dict[str, str], bytes]:
    """A new record: saved, then published live to every stream."""
    with _lock:
        _records.append(text or "(empty)")
        record_id = len(_records)
        item = Item(HttpStreamFormat(_line(record_id)), id=str(record_id), prev_id=str(record_id - 1))
        GripPubControl({"control_uri": settings["control_uri"]}).publish(CHANNEL, item, blocking=True)
    return 200, {"Content-Type": "application/json"}, json.dumps({"id": record_id}).encode() + b"\n"
