"""
Auto cross-origin through the real C{twistd -n pushpin}: a browser's preflight and a CORS GET
get Pushpin's headers, JSON-P wraps relayed answers and long-polls (published to, timed out),
and a held session's C{Grip-Link rel=gone} is POSTed to when the client leaves. Each test
asserts the bytes a client (or the origin) sees.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from .harness import ScriptedOrigin, raw_connect, raw_request, start_origin, start_proxy


def _handler(body: bytes, *headers: tuple[bytes, bytes]):
    def handler(request):
        for name, value in headers:
            request.setHeader(name, value)
        return body

    return handler


async def _publish(reactor, control_port: int, channel: str, formats: dict) -> None:
    body = json.dumps({"items": [{"channel": channel, "formats": formats}]}).encode()
    client = await raw_request(
        reactor,
        control_port,
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    assert client.received.endswith(b"\r\n\r\nPublished\n"), client.received


def _split(received: bytes) -> tuple[bytes, list[bytes], bytes]:
    """The status line, the header lines (sorted: their order is not the point) and the body."""
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, sorted(lines), body


@pytest.fixture
def origin():
    o = ScriptedOrigin()
    o.handlers[b"/api"] = _handler(b"ok\n", (b"Content-Type", b"text/plain"), (b"X-Thing", b"1"))
    o.handlers[b"/poll"] = _handler(
        b"timeout\n", (b"Content-Type", b"text/plain"), (b"Grip-Hold", b"response"), (b"Grip-Channel", b"lp"), (b"Grip-Timeout", b"5")
    )
    o.handlers[b"/stream"] = _handler(
        b"open\n", (b"Content-Type", b"text/plain"), (b"Grip-Hold", b"stream"), (b"Grip-Channel", b"st"), (b"Grip-Link", b"</bye?s=1>; rel=gone")
    )
    o.handlers[b"/bye"] = _handler(b"")
    return o


@pytest_twisted.ensureDeferred
async def test_preflight_and_cors_get(reactor, tmp_path, origin):
    """A browser's OPTIONS preflight reaches the origin and its answer gets Pushpin's CORS headers; so does a GET."""
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"*,aco 127.0.0.1:{port.getHost().port}"])
    try:
        client = await raw_request(
            reactor,
            proxy.client_port,
            b"OPTIONS /api HTTP/1.1\r\nHost: example.com\r\nOrigin: http://app.example\r\n"
            b"Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: X-Token, content-type\r\n\r\n",
            until=b"ok\n",
        )
        assert origin.requests[-1]["method"] == b"OPTIONS"
        assert _split(client.received) == _split(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Thing: 1\r\n"
            b"Access-Control-Allow-Methods: PUT\r\nAccess-Control-Allow-Headers: X-Token, content-type\r\n"
            b"Access-Control-Expose-Headers: X-Thing\r\nAccess-Control-Allow-Credentials: true\r\n"
            b"Access-Control-Allow-Origin: http://app.example\r\nAccess-Control-Max-Age: 3600\r\n"
            b"Content-Length: 3\r\n\r\nok\n"
        )
        client.transport.loseConnection()
        client = await raw_request(reactor, proxy.client_port, b"GET /api HTTP/1.1\r\nHost: example.com\r\n\r\n", until=b"ok\n")
        head = client.received.split(b"\r\n\r\n", 1)[0]
        assert b"\r\nAccess-Control-Allow-Methods: OPTIONS, HEAD, GET, POST, PUT, DELETE\r\n" in head
        assert b"\r\nAccess-Control-Allow-Origin: *\r\n" in head
        assert b"Access-Control-Allow-Headers" not in head
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_jsonp_relayed_extended_and_basic(reactor, tmp_path, origin):
    """A GET with callback= gets the origin's answer wrapped (extended: code, reason, headers, body; basic: the body), _method applied."""
    port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{port.getHost().port}"
    proxy = await start_proxy(reactor, tmp_path, [f"*,aco {target}", f"basic.example,aco,jsonp_mode=basic {target}"])
    try:
        client = await raw_request(
            reactor, proxy.client_port, b"GET /api?callback=cb&x=1&_method=PUT HTTP/1.1\r\nHost: example.com\r\n\r\n", until=b");\n"
        )
        assert origin.requests[-1]["method"] == b"PUT"
        assert origin.requests[-1]["uri"] == b"/api?x=1"
        body = b'/**/cb({"code": 200, "reason": "OK", "headers": {"Content-Length":"3","Content-Type":"text/plain","X-Thing":"1"}, "body": "ok\\n"});\n'
        assert client.received == (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        client.transport.loseConnection()
        client = await raw_request(
            reactor, proxy.client_port, b"GET /api?callback=f&_method=GET HTTP/1.1\r\nHost: basic.example\r\n\r\n", until=b");\n"
        )
        assert client.received.endswith(b"\r\nContent-Length: 11\r\n\r\n/**/f(ok);\n")
        client.transport.loseConnection()
        client = await raw_request(reactor, proxy.client_port, b"GET /api?callback= HTTP/1.1\r\nHost: example.com\r\n\r\n", until=b"parameter.\n")
        assert client.received == (
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
            b"Access-Control-Allow-Methods: OPTIONS, HEAD, GET, POST, PUT, DELETE\r\nAccess-Control-Allow-Credentials: true\r\n"
            b"Access-Control-Allow-Origin: *\r\nAccess-Control-Max-Age: 3600\r\n"
            b"Content-Length: 28\r\n\r\nInvalid callback parameter.\n"
        )
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_jsonp_long_poll_published_and_timed_out(reactor, tmp_path, origin):
    """A JSON-P long-poll (auto_cross_origin=true) gets the publish, then another its timeout, wrapped as Pushpin's handler does."""
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"], auto_cross_origin="true")
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /poll?callback=got HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await proxy.wait_for_log(r"subscribe http://example.com/poll\?callback=got channel=lp")
        await _publish(reactor, proxy.control_port, "lp", {"http-response": {"body": "news\n", "headers": {"X-Seq": "1"}}})
        await client.wait_for(reactor, b");\n")
        body = b'/**/got({"body":"news\\n","code":200,"headers":{"Content-Type":"text/plain","X-Seq":"1"},"reason":"OK"});\n'
        assert _split(client.received) == _split(
            b"HTTP/1.1 200 OK\r\nX-Seq: 1\r\nContent-Type: application/javascript\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        # the same connection, again: nothing is published, the 5 s timeout answers
        client.received = b""
        client.transport.write(b"GET /poll?callback=got HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b");\n", timeout=15)
        body = b'/**/got({"body":"timeout\\n","code":200,"headers":{"Content-Type":"text/plain"},"reason":"OK"});\n'
        assert _split(client.received) == _split(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/javascript\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_cors_stream_and_gone_link(reactor, tmp_path, origin):
    """A held stream gets CORS headers; when its client leaves, the proxy POSTs to the Grip-Link rel=gone, signed, through the route."""
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"*,aco 127.0.0.1:{port.getHost().port}"])
    try:
        client = await raw_request(
            reactor, proxy.client_port, b"GET /stream HTTP/1.1\r\nHost: example.com\r\nOrigin: http://app.example\r\n\r\n", until=b"open\n"
        )
        assert b"\r\nAccess-Control-Allow-Origin: http://app.example\r\n" in client.received
        assert b"Grip-Link" not in client.received
        assert not [r for r in origin.requests if r["uri"].startswith(b"/bye")]
        client.transport.loseConnection()
        await origin.waiter.wait(reactor, lambda: [r for r in origin.requests if r["uri"] == b"/bye?s=1"], what="the gone POST")
        gone = [r for r in origin.requests if r["uri"] == b"/bye?s=1"][0]
        assert gone["method"] == b"POST"
        assert gone["body"] == b""
        names = {k.lower(): v for k, v in gone["headers"]}
        assert names[b"host"] == b"example.com"
        assert b"grip-sig" in names
        assert names[b"content-length"] == b"0"
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()
