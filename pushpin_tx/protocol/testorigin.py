# -*- test-case-name: tests.protocol.test_testorigin -*-
"""
The built-in C{test} route target (reference §11): a tiny origin inside the proxy, so that a
newcomer sees a long-poll or a stream with nothing but curl. Same paths and bodies as
Pushpin's test handler: C{/}, C{/response}, C{/stream} (C{?channel=NAME}, repeatable,
default C{test}); C{/ws} (a WebSocket that echoes and receives the channels' publishes)
is served by L{pushpin_tx.websocket.gateway}.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from pushpin_tx.protocol.headers import Headers

__all__ = ["test_response", "query_pairs", "split_target", "MAX_REQUEST_BODY"]

#: Pushpin's test handler refuses request bodies larger than this.
MAX_REQUEST_BODY = 100000


def query_pairs(query: str, keep_blank_values: bool = False) -> list[tuple[str, str]]:
    """
    C{urllib.parse.parse_qsl(query, keep_blank_values)}, the same pairs. A query with nothing
    to decode (no C{%} escape, no C{+}) is split here, as parse_qsl splits it, without its
    per-pair unquoting (a few per cent of opening a test stream or WebSocket); any other
    query goes to parse_qsl itself.
    """
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=keep_blank_values)
    pairs = []
    for name_value in query.split("&"):
        if not name_value:
            continue
        name, eq, value = name_value.partition("=")
        if not eq and not keep_blank_values:
            continue
        if value or keep_blank_values:
            pairs.append((name, value))
    return pairs


def split_target(target: str) -> tuple[str, str]:
    """
    C{urlsplit(target)}'s C{path} and C{query}, the same strings. An origin-form target (one
    C{/} first, no tab, CR or LF, which urlsplit would remove) is split here without
    urlsplit's general parse (a few per cent of opening a test WebSocket, each with its own
    channel, so urlsplit's cache never hits); anything else goes to urlsplit.
    """
    if target[:1] == "/" and target[1:2] != "/" and "\t" not in target and "\r" not in target and "\n" not in target:
        path, _, query = target.partition("#")[0].partition("?")
        return path, query
    parts = urlsplit(target)
    return parts.path, parts.query


def test_response(path_and_query: bytes, body_size: int = 0) -> tuple[int, bytes, Headers, bytes]:
    """The test origin's answer to a request for C{path_and_query} (after path rewriting)."""
    if body_size > MAX_REQUEST_BODY:
        return 400, b"Bad Request", [(b"Content-Type", b"text/plain")], b"request too large\n"
    # (a plain absolute path, what the proxy sends, without urlsplit's scans: a few per cent
    # of opening a test stream)
    path, query = split_target(path_and_query.decode("latin-1"))
    if len(path) >= 2 and path.endswith("/"):
        path = path[:-1]
    channels: list[str] = []
    for key, value in query_pairs(query, keep_blank_values=True):
        if key == "channel" and value not in channels:
            channels.append(value)
    if not channels:
        channels = ["test"]
    grip_channel = ", ".join(channels).encode("utf-8")
    plain: Headers = [(b"Content-Type", b"text/plain")]
    if path == "/":
        return 200, b"OK", plain, b"Hello from the Pushpin test handler!\n"
    if path == "/response":
        return 200, b"OK", plain + [(b"Grip-Hold", b"response"), (b"Grip-Channel", grip_channel)], b"nothing for now\n"
    if path == "/stream":
        return 200, b"OK", plain + [(b"Grip-Hold", b"stream"), (b"Grip-Channel", grip_channel)], b"[stream opened]\n"
    return 404, b"Not Found", plain, b"no such test resource\n"
