"""
A client cannot pass itself off as the proxy's WebSocket-over-HTTP session (§8.2): a plain
HTTP request carrying C{application/websocket-events} to an C{over_http} route is answered
403 by the real C{twistd -n pushpin} and nothing reaches the origin, byte for byte as
Pushpin 1.36 answers it. A trusted client (valid C{Grip-Sig} from upstream_key) may.
"""

from __future__ import annotations

import time

import jwt
import pytest
import pytest_twisted

from .harness import ScriptedOrigin, raw_connect, start_origin, start_proxy

UPSTREAM_KEY = "forgery-test-upstream-key-of-32-bytes!"

#: Pushpin 1.36's answer, observed on the wire
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 54\r\n\r\n"
    b"Client not allowed to send WebSocket events directly.\n"
)


def _post(host: bytes, content_type: bytes, *extra: bytes) -> bytes:
    head = [b"POST /events HTTP/1.1", b"Host: " + host, b"Content-Type: " + content_type, *extra, b"Content-Length: 6"]
    return b"\r\n".join(head) + b"\r\n\r\nOPEN\r\n"


def _plain(request):
    request.setHeader(b"content-type", b"text/plain")
    return b"plain\n"


def _events(request):
    request.setHeader(b"content-type", b"application/websocket-events")
    return b"OPEN\r\n"


@pytest.fixture
def origin():
    o = ScriptedOrigin()
    o.handlers[b"/plain"] = _plain
    o.handlers[b"/events"] = _events
    return o


def _answers(reactor, client, n: int):
    """Fires once C{n} answers with the origin's C{OPEN} body have arrived."""
    return client.waiter.wait(reactor, lambda: client.received.count(b"\r\n\r\nOPEN\r\n") >= n, what=f"{n} answers")


async def _proxy(reactor, tmp_path, origin):
    port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{port.getHost().port}"
    routes = [f"woh.test {target},over_http", f"plain.test {target}", f"second.test {target} {target},over_http"]
    proxy = await start_proxy(reactor, tmp_path, routes, upstream_key=UPSTREAM_KEY)
    return port, target, proxy


@pytest_twisted.ensureDeferred
async def test_posted_websocket_events_are_refused_and_never_reach_the_origin(reactor, tmp_path, origin):
    """A forged events POST (with parameters or spaces too) gets Pushpin's 403, the origin sees none, the connection stays usable."""
    port, target, proxy = await _proxy(reactor, tmp_path, origin)
    try:
        client = await raw_connect(reactor, proxy.client_port)
        forged = [b"application/websocket-events", b"application/websocket-events; charset=utf-8", b" application/websocket-events "]
        for content_type in forged:
            client.transport.write(_post(b"woh.test", content_type))
        client.transport.write(b"GET /plain HTTP/1.1\r\nHost: woh.test\r\n\r\n")
        await client.wait_for(reactor, b"plain\n")
        assert client.received == FORBIDDEN * 3 + (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nplain\n"
        )
        # the GET came after the three POSTs on the same connection: they would be here first
        assert [(r["method"], r["uri"]) for r in origin.requests] == [(b"GET", b"/plain")]
        await proxy.wait_for_log(rf"POST http://woh.test/events -> {target} code=403 54")
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_only_untrusted_events_to_an_over_http_first_target_are_refused(reactor, tmp_path, origin):
    """Another media type, another case, a plain route, a non-first over_http target or a trusted client: forwarded as usual."""
    port, target, proxy = await _proxy(reactor, tmp_path, origin)
    token = jwt.encode({"iss": "upstream", "exp": int(time.time()) + 3600}, UPSTREAM_KEY, algorithm="HS256").encode()
    allowed = [
        (b"woh.test", b"text/plain"),
        (b"woh.test", b"Application/WebSocket-Events"),
        (b"woh.test", b"application/websocket-events2"),
        (b"plain.test", b"application/websocket-events"),
        (b"woh.test", b"application/websocket-events", b"Grip-Sig: " + token),
    ]
    try:
        client = await raw_connect(reactor, proxy.client_port)
        for host, content_type, *extra in allowed:
            client.transport.write(_post(host, content_type, *extra))
        await _answers(reactor, client, len(allowed))
        assert b"403" not in client.received
        assert [r["body"] for r in origin.requests] == [b"OPEN\r\n"] * len(allowed)
        # second.test's first target is a plain one: only the first target counts (observed
        # on 1.36.0), its over_http second changes nothing
        client.transport.write(_post(b"second.test", b"application/websocket-events"))
        await _answers(reactor, client, len(allowed) + 1)
        assert len(origin.requests) == len(allowed) + 1
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()
