"""
Real GRIP clients against the real C{twistd -n pushpin}: an origin written with the
C{gripcontrol} library's helpers, publishers using C{gripcontrol}/C{pubcontrol}, an
EventSource-style SSE client, and one publish fanned out to 1,000 held connections.
"""

from __future__ import annotations

import resource as rlimit

import pytest
import pytest_twisted
from gripcontrol import GripPubControl, HttpResponseFormat, HttpStreamFormat, create_hold_response, create_hold_stream, validate_sig
from gripcontrol.response import Response
from pubcontrol import Item
from twisted.internet import defer, threads

from .harness import ScriptedOrigin, raw_connect, start_origin, start_proxy


def _gripcontrol_origin(origin: ScriptedOrigin, signatures: list[bool]) -> None:
    """Handlers built with gripcontrol's helpers; each checks the proxy's Grip-Sig."""

    def checked(req) -> None:
        signatures.append(bool(validate_sig(req.getHeader(b"grip-sig").decode(), "changeme")))
        req.setHeader(b"content-type", b"application/grip-instruct")

    def stream(req):
        checked(req)
        return create_hold_stream("gc", Response(body="stream start\n")).encode()

    def longpoll(req):
        checked(req)
        return create_hold_response("lp", Response(headers={"Content-Type": "text/plain"}, body="timed out\n"), timeout=5).encode()

    def events(req):
        req.setHeader(b"content-type", b"text/event-stream")
        req.setHeader(b"grip-hold", b"stream")
        req.setHeader(b"grip-channel", b"sse")
        return b"event: open\ndata: welcome\n\n"

    origin.handlers[b"/stream"] = stream
    origin.handlers[b"/longpoll"] = longpoll
    origin.handlers[b"/events"] = events


@pytest.fixture
def grip_env(reactor, tmp_path):
    origin = ScriptedOrigin()
    signatures: list[bool] = []
    _gripcontrol_origin(origin, signatures)
    port = pytest_twisted.blockon(defer.ensureDeferred(start_origin(reactor, origin)))
    proxy = pytest_twisted.blockon(defer.ensureDeferred(start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])))
    publisher = GripPubControl({"control_uri": f"http://127.0.0.1:{proxy.control_port}"})
    yield proxy, publisher, signatures
    pytest_twisted.blockon(defer.ensureDeferred(proxy.stop()))
    pytest_twisted.blockon(port.stopListening())


def _publish(publisher: GripPubControl, channel: str, fmt) -> defer.Deferred:
    """pubcontrol publishes synchronously (requests): keep the reactor free by using a thread."""
    return threads.deferToThread(publisher.publish, channel, Item(fmt), blocking=True)


@pytest_twisted.ensureDeferred
async def test_gripcontrol_origin_and_publisher_stream(reactor, grip_env):
    """create_hold_stream + GripPubControl.publish_http_stream: the client sees the start, then the publish."""
    proxy, publisher, signatures = grip_env
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
    await client.wait_for(reactor, b"stream start\n")
    await proxy.wait_for_log(r"subscribe http://example.com/stream channel=gc")
    await _publish(publisher, "gc", HttpStreamFormat("hello from pubcontrol\n"))
    await client.wait_for(reactor, b"16\r\nhello from pubcontrol\n\r\n")
    await _publish(publisher, "gc", HttpStreamFormat(close=True))
    await client.wait_for(reactor, b"0\r\n\r\n")
    assert signatures == [True]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_gripcontrol_long_poll_answered_by_publish_and_by_timeout(reactor, grip_env):
    """create_hold_response: a publish_http_response answers it; with nothing published the timeout body comes."""
    proxy, publisher, signatures = grip_env
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /longpoll HTTP/1.1\r\nHost: example.com\r\n\r\n")
    await proxy.wait_for_log(r"subscribe http://example.com/longpoll channel=lp")
    await _publish(publisher, "lp", HttpResponseFormat(body="published\n"))
    await client.wait_for(reactor, b"published\n")
    assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")
    # Same connection, nothing published this time: the origin's timeout response after 5 s.
    client.received = b""
    client.transport.write(b"GET /longpoll HTTP/1.1\r\nHost: example.com\r\n\r\n")
    await client.wait_for(reactor, b"timed out\n", timeout=15)
    assert client.received == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\ntimed out\n"
    # the second long-poll was asked again a second after the channel's first subscription
    # (update_on_first_subscription; the first long-poll's channel still lingered), as Pushpin
    assert signatures == [True, True, True]
    client.transport.loseConnection()


def parse_sse(stream: bytes) -> list[tuple[str, str]]:
    """The EventSource algorithm, minimally: (event type, data) for each dispatched event."""
    events = []
    event, data = "message", []
    for line in stream.decode().split("\n"):
        if line == "":
            if data:
                events.append((event, "\n".join(data)))
            event, data = "message", []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
        elif line.startswith("event:"):
            event = line[6:].strip()
    return events


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


@pytest_twisted.ensureDeferred
async def test_server_sent_events_reach_an_eventsource_client(reactor, grip_env):
    """text/event-stream hold: published SSE frames parse into the events an EventSource would fire."""
    proxy, publisher, _ = grip_env
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /events HTTP/1.1\r\nHost: example.com\r\nAccept: text/event-stream\r\n\r\n")
    await proxy.wait_for_log(r"channel=sse")
    await _publish(publisher, "sse", HttpStreamFormat("event: update\ndata: line one\ndata: line two\n\n"))
    await _publish(publisher, "sse", HttpStreamFormat("data: plain\n\n"))
    await client.wait_for(reactor, b"data: plain\n\n")
    head, _, body = client.received.partition(b"\r\n\r\n")
    assert b"Content-Type: text/event-stream" in head
    assert parse_sse(dechunk(body)) == [("open", "welcome"), ("update", "line one\nline two"), ("message", "plain")]
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_one_publish_reaches_a_thousand_held_streams(reactor, tmp_path):
    """1,000 clients hold /stream on one channel; a single publish reaches every one of them."""
    soft, hard = rlimit.getrlimit(rlimit.RLIMIT_NOFILE)
    if soft < 4096 and hard >= 4096:
        rlimit.setrlimit(rlimit.RLIMIT_NOFILE, (4096, hard))
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    clients = []
    try:
        for _ in range(1000):
            client = await raw_connect(reactor, proxy.client_port)
            client.transport.write(b"GET /stream?channel=many HTTP/1.1\r\nHost: localhost\r\n\r\n")
            clients.append(client)
        for client in clients:
            await client.wait_for(reactor, b"[stream opened]\n")
        from .test_end_to_end import _publish as publish_raw

        answer = await publish_raw(reactor, proxy.control_port, [{"channel": "many", "formats": {"http-stream": {"content": "to all\n"}}}])
        assert answer.endswith(b"Published\n")
        for client in clients:
            await client.wait_for(reactor, b"7\r\nto all\n\r\n")
        assert all(c.received.count(b"to all") == 1 for c in clients)
    finally:
        for client in clients:
            client.transport.loseConnection()
        await proxy.stop()
