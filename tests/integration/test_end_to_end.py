"""
End to end: the real C{twistd -n pushpin} on loopback ports, a real origin, raw clients.
Each test asserts what a client (or the origin) sees on the wire.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.web.server import NOT_DONE_YET

from .harness import ScriptedOrigin, raw_connect, raw_request, start_origin, start_proxy


@pytest.fixture
def origin():
    return ScriptedOrigin()


async def _publish(reactor, control_port: int, items: list) -> bytes:
    body = json.dumps({"items": items}).encode()
    client = await raw_request(
        reactor,
        control_port,
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    return client.received


class Env:
    """A running proxy in front of a scripted origin, torn down cleanly."""

    def __init__(self, reactor, tmp_path, origin):
        self.reactor = reactor
        self.tmp_path = tmp_path
        self.origin = origin
        self.origin_port = None
        self.proxy = None

    async def start(self, routes=None, *args, **overrides):
        self.origin_port = await start_origin(self.reactor, self.origin)
        port = self.origin_port.getHost().port
        routes = routes or [f"* 127.0.0.1:{port}"]
        routes = [r.replace("ORIGIN", f"127.0.0.1:{port}") for r in routes]
        self.proxy = await start_proxy(self.reactor, self.tmp_path, routes, *args, **overrides)
        return self

    async def stop(self):
        code = None
        if self.proxy is not None:
            code = await self.proxy.stop()
        if self.origin_port is not None:
            await self.origin_port.stopListening()
        return code


@pytest_twisted.ensureDeferred
async def test_plain_get_is_proxied_with_pushpins_request_rewriting(reactor, tmp_path, origin):
    """The origin sees the client's Host, Grip-Sig and Grip-Feature, no hop or forged Grip headers."""
    origin.handlers[b"/plain"] = lambda req: (req.setHeader(b"content-type", b"text/plain"), b"hello\n")[1]
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_request(
            reactor,
            env.proxy.client_port,
            b"GET /plain?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\nGrip-Hold: response\r\n"
            b"Grip-Sig: forged\r\nAccept-Encoding: gzip\r\nX-Custom: 1\r\n\r\n",
        )
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert client.received.endswith(b"\r\n\r\nhello\n")
        assert b"Server:" not in client.received and b"Date:" not in client.received
        seen = origin.requests[-1]
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert seen["uri"] == b"/plain?x=1"
        assert headers[b"host"] == b"example.com:8080"
        assert headers[b"x-custom"] == b"1"
        assert headers[b"grip-sig"] != b"forged" and headers[b"grip-sig"].count(b".") == 2
        assert headers[b"grip-feature"].startswith(b"status, session, link:next")
        assert b"grip-hold" not in headers and b"accept-encoding" not in headers
        await env.proxy.wait_for_log(r"GET http://example.com:8080/plain\?x=1 -> 127\.0\.0\.1:\d+ code=200 6")
    finally:
        assert await env.stop() == 0


@pytest_twisted.ensureDeferred
async def test_no_route_and_dead_origin_get_pushpins_502s(reactor, tmp_path, origin):
    """No matching route: 502 'No route for host'; an origin that refuses: 502 'Error while proxying'."""
    env = await Env(reactor, tmp_path, origin).start(["example.com 127.0.0.1:1", "dead.example 127.0.0.1:1"])
    try:
        client = await raw_request(reactor, env.proxy.client_port, b"GET / HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
        assert client.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert client.received.endswith(b"\r\n\r\nNo route for host: other.example\n")
        client = await raw_request(reactor, env.proxy.client_port, b"GET / HTTP/1.1\r\nHost: dead.example\r\nConnection: close\r\n\r\n")
        assert client.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert client.received.endswith(b"\r\n\r\nError while proxying to origin.\n")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_failover_to_the_next_target(reactor, tmp_path, origin):
    """A target that refuses the connection is skipped for the next one."""
    origin.handlers[b"/"] = lambda req: b"second\n"
    env = await Env(reactor, tmp_path, origin).start(["* 127.0.0.1:1 ORIGIN"])
    try:
        client = await raw_request(reactor, env.proxy.client_port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert client.received.endswith(b"second\n")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_stream_hold_and_publish_through_the_control_api(reactor, tmp_path, origin):
    """Origin says Grip-Hold: stream; a publish reaches the client as a chunk; close ends it."""

    def stream(req):
        req.setHeader(b"content-type", b"text/plain")
        req.setHeader(b"grip-hold", b"stream")
        req.setHeader(b"grip-channel", b"s4")
        req.setHeader(b"x-orig", b"1")
        return b"stream open\n"

    origin.handlers[b"/stream/s4"] = stream
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_connect(reactor, env.proxy.client_port)
        client.transport.write(b"GET /stream/s4 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"c\r\nstream open\n\r\n")
        head = client.received.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"X-Orig: 1" in head and b"Transfer-Encoding: chunked" in head
        assert b"Grip-" not in head and b"Content-Length" not in head
        await env.proxy.wait_for_log(r"subscribe http://example.com/stream/s4 channel=s4")
        answer = await _publish(reactor, env.proxy.control_port, [{"channel": "s4", "formats": {"http-stream": {"content": "data\n"}}}])
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nPublished\n")
        await client.wait_for(reactor, b"5\r\ndata\n\r\n")
        await _publish(reactor, env.proxy.control_port, [{"channel": "s4", "formats": {"http-stream": {"action": "close"}}}])
        await client.wait_for(reactor, b"0\r\n\r\n")
        await env.proxy.wait_for_log(r"publish channel=s4 receivers=1")
        client.transport.loseConnection()
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_response_hold_gets_published_response_and_keeps_the_connection(reactor, tmp_path, origin):
    """A long-poll is answered by an http-response publish, headers merged, connection reusable."""

    def hold(req):
        req.setHeader(b"content-type", b"text/plain")
        req.setHeader(b"grip-hold", b"response")
        req.setHeader(b"grip-channel", b"k1")
        req.setHeader(b"x-orig", b"1")
        return b"timeout body\n"

    origin.handlers[b"/resp"] = hold
    origin.handlers[b"/plain"] = lambda req: b"again\n"
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_connect(reactor, env.proxy.client_port)
        client.transport.write(b"GET /resp HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await env.proxy.wait_for_log(r"subscribe http://example.com/resp channel=k1")
        await _publish(
            reactor,
            env.proxy.control_port,
            [{"channel": "k1", "formats": {"http-response": {"code": 202, "headers": {"Content-Type": "application/json", "X-Pub": "p"}, "body": '{"x":1}\n'}}}],
        )
        await client.wait_for(reactor, b'{"x":1}\n')
        assert client.received == (
            b"HTTP/1.1 202 Accepted\r\nX-Orig: 1\r\nContent-Type: application/json\r\nX-Pub: p\r\n"
            b"Content-Length: 8\r\n\r\n{\"x\":1}\n"
        )
        client.transport.write(b"GET /plain HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        await client.wait_for(reactor, b"again\n")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_builtin_test_origin_streams_with_the_embedded_default(reactor, tmp_path):
    """With routes '* test', /stream holds on channel 'test' and a publish arrives."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await client.wait_for(reactor, b"[stream opened]\n")
        await proxy.wait_for_log(r"subscribe .* channel=test")
        await _publish(reactor, proxy.control_port, [{"channel": "test", "formats": {"http-stream": {"content": "hello\n"}}}])
        await client.wait_for(reactor, b"6\r\nhello\n\r\n")
        hello = await raw_request(reactor, proxy.client_port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert hello.received.endswith(b"Hello from the Pushpin test handler!\n")
        client.transport.loseConnection()
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_malformed_and_oversized_requests_leave_others_served(reactor, tmp_path, origin):
    """A garbage request line and a header block over client_buffer_size get Pushpin 1.40's 400 text; others still work."""
    origin.handlers[b"/"] = lambda req: b"fine\n"
    env = await Env(reactor, tmp_path, origin).start()
    try:
        bad = await raw_request(reactor, env.proxy.client_port, b"GARBAGE\r\n\r\n")
        assert bad.received == (
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 39\r\n\r\n"
            b"Failed to parse request: invalid token\n"
        )
        big = await raw_request(reactor, env.proxy.client_port, b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n")
        assert big.received == (
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\n"
            b"Request header size exceeded limit of 8192 bytes.\n"
        )
        ok = await raw_request(reactor, env.proxy.client_port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert ok.received.endswith(b"fine\n")
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_origin_closing_mid_body_closes_the_client(reactor, tmp_path, origin):
    """An origin that dies mid-response makes the proxy close the client connection, not hang."""

    def truncated(req):
        req.setHeader(b"content-length", b"100")
        req.write(b"x" * 50)
        req.channel.transport.loseConnection()  # after the 50 bytes are flushed
        return NOT_DONE_YET

    origin.handlers[b"/cut"] = truncated
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_request(reactor, env.proxy.client_port, b"GET /cut HTTP/1.1\r\nHost: a\r\n\r\n")
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert client.closed
    finally:
        await env.stop()


@pytest_twisted.ensureDeferred
async def test_bad_config_stops_startup_naming_the_key(reactor, tmp_path):
    """A bad value in pushpin.conf exits non-zero with a message naming file, key and value."""
    from .harness import _ProxyProcess, Waiter, child_env, proxy_argv, write_config
    import sys

    conf = write_config(tmp_path, ["* test"], http_port="notaport")
    waiter = Waiter()
    proc = _ProxyProcess(waiter)
    reactor.spawnProcess(proc, sys.executable, proxy_argv("--config", str(conf)), env=child_env(), path=str(tmp_path))
    d = proc.ended
    d.addTimeout(20, reactor)
    code = await d
    assert code != 0
    assert "http_port" in proc.output and "notaport" in proc.output and str(conf) in proc.output
