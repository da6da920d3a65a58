#!/usr/bin/env python3
"""
The origin of L{fanout}'s C{--mode woh}: a WebSocket-over-HTTP origin (reference §8.2) that
accepts every connection and subscribes it to the channel named in its C{?channel=} query,
as a stateless function-style origin does. Both proxies, pushpin-tx and Pushpin, are routed
to it with C{over_http}; the clients are the same raw WebSocket clients as C{--mode ws}.

Answers: C{OPEN} -> C{OPEN} plus a C{c:} subscribe control message; C{CLOSE} -> C{CLOSE};
anything else (C{TEXT}, C{PING}, keep-alive requests, C{DISCONNECT}) -> no events. The
events codec is written out here (a few lines) so that the bench origin does not share the
proxy's own code.

Usage: python bench/woh_origin.py PORT   (prints {"event": "ready"} once listening)
"""

from __future__ import annotations

import json
import sys
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor
from twisted.web import resource, server

CONTENT_TYPE = b"application/websocket-events"


def decode_events(body: bytes) -> list[tuple[bytes, bytes]]:
    """C{TYPE[ HEXLEN]\\r\\n[CONTENT\\r\\n]}... -> [(type, content)]."""
    events, pos = [], 0
    while pos < len(body):
        end = body.index(b"\r\n", pos)
        head = body[pos:end].split(b" ", 1)
        pos = end + 2
        content = b""
        if len(head) == 2:
            size = int(head[1], 16)
            content = body[pos:pos + size]
            pos += size + 2
        events.append((head[0], content))
    return events


def encode_event(kind: bytes, content: bytes | None = None) -> bytes:
    """One event in the wire form."""
    if content is None:
        return kind + b"\r\n"
    return b"%s %x\r\n%s\r\n" % (kind, len(content), content)


class WohOrigin(resource.Resource):
    """Every POST is a batch of events from one proxied WebSocket."""

    isLeaf = True

    def render_POST(self, request: server.Request) -> bytes:
        channel = parse_qs(urlsplit(request.uri.decode("latin-1")).query).get("channel", ["bench"])[0]
        out = []
        for kind, _ in decode_events(request.content.read()):
            if kind == b"OPEN":
                control = json.dumps({"type": "subscribe", "channel": channel}).encode()
                out += [encode_event(b"OPEN"), encode_event(b"TEXT", b"c:" + control)]
                request.setHeader(b"sec-websocket-extensions", b"grip")
            elif kind == b"CLOSE":
                out.append(encode_event(b"CLOSE", b"\x03\xe8"))
        request.setHeader(b"content-type", CONTENT_TYPE)
        return b"".join(out)


def main() -> None:
    site = server.Site(WohOrigin())
    site.noisy = False
    site.log = lambda request: None  # no access log: the origin is not what is measured
    reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1", backlog=4096)
    print(json.dumps({"event": "ready"}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
