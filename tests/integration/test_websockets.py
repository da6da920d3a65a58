"""
WebSockets end to end through the real C{twistd -n pushpin}: real autobahn WebSocket
clients; a WebSocket-over-HTTP origin written with gripcontrol's helpers (Fanout's
"serverless chat": the origin only ever sees short POSTs); and a plain WebSocket echo origin.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events, websocket_control_message
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from .harness import ScriptedOrigin, Waiter, raw_request, start_origin, start_proxy
from .test_end_to_end import _publish


class Client(WebSocketClientProtocol):
    """A test WebSocket client that records what it gets."""

    def __init__(self):
        super().__init__()
        self.messages: list[tuple[bytes, bool]] = []
        self.close_code = None
        self.closed = False
        self.opened = False
        self.waiter = Waiter()

    def onOpen(self):
        self.opened = True
        self.waiter.check()

    def onMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))
        self.waiter.check()

    def onClose(self, wasClean, code, reason):
        self.closed = True
        self.close_code = self.remoteCloseCode
        self.waiter.check()

    def wait(self, reactor, predicate, what):
        return self.waiter.wait(reactor, predicate, what=what)


async def ws_connect(reactor, port: int, path: str) -> Client:
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", reactor=reactor)
    factory.protocol = Client
    factory.noisy = False
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await client.wait(reactor, lambda: client.opened or client.closed, "handshake")
    return client


class ChatOrigin:
    """A WebSocket-over-HTTP origin made with gripcontrol's helpers; records every request."""

    def __init__(self, reactor, publish_port_holder: list[int]):
        self.reactor = reactor
        self.requests: list[tuple[dict, list]] = []
        self.waiter = Waiter()
        self.publish_port = publish_port_holder

    def render(self, request):
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        request.content.seek(0)
        events = decode_websocket_events(request.content.read())
        self.requests.append((headers, events))
        self.waiter.check()
        out = []
        for event in events:
            if event.type == "OPEN":
                out.append(WebSocketEvent("OPEN"))
                out.append(WebSocketEvent("TEXT", "c:" + websocket_control_message("subscribe", {"channel": "room"})))
                out.append(WebSocketEvent("TEXT", "m:welcome"))
                out.append(WebSocketEvent("TEXT", "unprefixed is dropped"))
            elif event.type == "TEXT":
                text = event.content.decode() if isinstance(event.content, bytes) else event.content
                if text == "bye please":
                    out.append(WebSocketEvent("CLOSE", b"\x0f\xa1"))  # 4001
                else:
                    user = request.getHeader(b"meta-user") or b"anon"
                    item = {"channel": "room", "formats": {"ws-message": {"content": f"{user.decode()}: {text}"}}}
                    d = defer.ensureDeferred(_publish(self.reactor, self.publish_port[0], [item]))
                    d.addErrback(lambda f: None)
        request.setHeader(b"content-type", b"application/websocket-events")
        request.setHeader(b"sec-websocket-extensions", b"grip")
        if any(e.type == "OPEN" for e in events):
            request.setHeader(b"set-meta-user", b"u%d" % len(self.requests))
        return encode_websocket_events(out)

    def events_of_type(self, kind):
        return [e for _, events in self.requests for e in events if e.type == kind]


@pytest.fixture
def chat(reactor, tmp_path):
    holder: list[int] = []
    origin = ScriptedOrigin()
    chat_origin = ChatOrigin(reactor, holder)
    origin.handlers[b"/chat"] = chat_origin.render

    def refuse(request):
        request.setResponseCode(500)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"x-err", b"1")
        return b"nope\n"

    origin.handlers[b"/refuse"] = refuse
    port = pytest_twisted.blockon(defer.ensureDeferred(start_origin(reactor, origin)))
    proxy = pytest_twisted.blockon(
        defer.ensureDeferred(start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port},over_http"]))
    )
    holder.append(proxy.control_port)
    yield proxy, chat_origin
    pytest_twisted.blockon(defer.ensureDeferred(proxy.stop()))
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_serverless_chat_two_clients_see_each_other(reactor, chat):
    """Two clients subscribed by the origin's c: message see each other's published messages; unprefixed is dropped."""
    proxy, origin = chat
    a = await ws_connect(reactor, proxy.client_port, "/chat")
    b = await ws_connect(reactor, proxy.client_port, "/chat")
    assert a.opened and b.opened
    await a.wait(reactor, lambda: a.messages, "welcome")
    assert a.messages[0] == (b"welcome", False)
    await proxy.wait_for_log(r"subscribe ws .* channel=room")
    a.sendMessage(b"hello")
    await b.wait(reactor, lambda: any(b"hello" in m for m, _ in b.messages), "b sees a's message")
    await a.wait(reactor, lambda: any(b"hello" in m for m, _ in a.messages), "a sees its own message")
    b.sendMessage(b"hi back")
    await a.wait(reactor, lambda: any(b"hi back" in m for m, _ in a.messages), "a sees b's message")
    assert all(b"unprefixed" not in m for m, _ in a.messages + b.messages)
    # meta set by the origin on OPEN comes back on later requests
    opens = [h for h, events in origin.requests if any(e.type == "TEXT" for e in events)]
    assert opens and all(h.get(b"meta-user") for h in opens)
    open_headers, _ = origin.requests[0]
    assert open_headers[b"content-type"] == [b"application/websocket-events"]
    assert open_headers[b"connection-id"] and open_headers[b"grip-sig"]
    a.sendClose(1000)
    b.sendClose(1000)
    await a.wait(reactor, lambda: a.closed, "a closed")
    await b.wait(reactor, lambda: b.closed, "b closed")
    await origin.waiter.wait(reactor, lambda: len(origin.events_of_type("CLOSE")) == 2, what="two CLOSE events")
    assert origin.events_of_type("CLOSE")[0].content == b"\x03\xe8"


@pytest_twisted.ensureDeferred
async def test_close_from_origin_and_from_a_publish(reactor, chat):
    """A CLOSE event from the origin closes the client with its code; so does a ws-message close publish."""
    proxy, origin = chat
    a = await ws_connect(reactor, proxy.client_port, "/chat")
    a.sendMessage(b"bye please")
    await a.wait(reactor, lambda: a.closed, "closed by origin")
    assert a.close_code == 4001
    b = await ws_connect(reactor, proxy.client_port, "/chat")
    await proxy.wait_for_log(r"subscribe ws .* channel=room")
    await _publish(reactor, proxy.control_port, [{"channel": "room", "formats": {"ws-message": {"content-bin": "AAEC"}}}])
    await b.wait(reactor, lambda: b.messages[1:], "binary publish")
    assert b.messages[1] == (b"\x00\x01\x02", True)
    await _publish(reactor, proxy.control_port, [{"channel": "room", "formats": {"ws-message": {"action": "close", "code": 4002, "reason": "done"}}}])
    await b.wait(reactor, lambda: b.closed, "closed by publish")
    assert b.close_code == 4002


@pytest_twisted.ensureDeferred
async def test_vanished_client_sends_disconnect_to_the_origin(reactor, chat):
    """A client that drops its TCP connection without a close frame makes the proxy send DISCONNECT."""
    proxy, origin = chat
    a = await ws_connect(reactor, proxy.client_port, "/chat")
    await a.wait(reactor, lambda: a.messages, "welcome")
    a.transport.abortConnection()
    await origin.waiter.wait(reactor, lambda: origin.events_of_type("DISCONNECT"), what="DISCONNECT event")


@pytest_twisted.ensureDeferred
async def test_origin_refusing_open_passes_its_answer_to_the_client(reactor, chat):
    """OPEN answered 500 with headers and body: the client's handshake gets exactly that."""
    proxy, _ = chat
    client = await raw_request(
        reactor,
        proxy.client_port,
        b"GET /refuse HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        until=b"nope\n",
    )
    assert client.received.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"X-Err: 1" in client.received


class Echo(WebSocketServerProtocol):
    """A plain WebSocket origin: echoes, and accepts the grip extension when offered."""

    def onConnect(self, request):
        self.factory.offered.append(request.headers.get("sec-websocket-extensions"))
        if self.factory.grip and "grip" in (request.headers.get("sec-websocket-extensions") or ""):
            return None, {"Sec-WebSocket-Extensions": "grip"}
        return None

    def onOpen(self):
        if self.factory.grip:
            self.sendMessage(b"c:" + json.dumps({"type": "subscribe", "channel": "plain"}).encode())

    def onMessage(self, payload, isBinary):
        self.sendMessage((b"m:" if self.factory.grip else b"") + b"echo " + payload, isBinary)


@pytest.mark.parametrize("grip", [False, True])
@pytest_twisted.ensureDeferred
async def test_plain_websocket_passthrough_with_and_without_grip(reactor, tmp_path, grip):
    """Frames pass both ways; with the grip extension accepted, m: is stripped and c: subscribes."""
    factory = WebSocketServerFactory(reactor=reactor)
    factory.protocol = Echo
    factory.grip = grip
    factory.offered = []
    factory.noisy = False
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        client = await ws_connect(reactor, proxy.client_port, "/echo")
        assert client.opened
        client.sendMessage(b"ping me")
        await client.wait(reactor, lambda: client.messages, "echo")
        assert client.messages[0] == (b"echo ping me", False)
        assert factory.offered == ["grip"]
        if grip:
            await proxy.wait_for_log(r"channel=plain")
            await _publish(reactor, proxy.control_port, [{"channel": "plain", "formats": {"ws-message": {"content": "pub"}}}])
            await client.wait(reactor, lambda: len(client.messages) > 1, "publish")
            assert client.messages[1] == (b"pub", False)
        client.sendClose(1000)
        await client.wait(reactor, lambda: client.closed, "closed")
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_bad_websocket_input_is_answered_and_others_keep_working(reactor, tmp_path):
    """Origin down -> 502; OPEN answered text/plain -> that 200 as-is; an oversized or broken frame closes
    only that client (1009 / 1002); the built-in /ws echo still works afterwards."""
    origin = ScriptedOrigin()

    def wrong_type(request):
        request.setHeader(b"content-type", b"text/plain")
        return b"OPEN\r\n"

    origin.handlers[b"/wrong"] = wrong_type
    port = await start_origin(reactor, origin)
    routes = [
        "down.example 127.0.0.1:1,over_http",
        f"woh.example 127.0.0.1:{port.getHost().port},over_http",
        "* test",
    ]
    proxy = await start_proxy(reactor, tmp_path, routes)
    handshake = (
        b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    try:
        down = await raw_request(reactor, proxy.client_port, handshake % (b"/x", b"down.example"), until=b"proxying to origin.\n")
        assert down.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
        assert b"Content-Type" not in down.received.split(b"\r\n\r\n")[0]
        wrong = await raw_request(reactor, proxy.client_port, handshake % (b"/wrong", b"woh.example"), until=b"OPEN\r\n")
        assert wrong.received.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: text/plain" in wrong.received

        big = await ws_connect(reactor, proxy.client_port, "/ws")
        big.sendMessage(b"x" * 1000001)
        await big.wait(reactor, lambda: big.closed, "oversized message closes")
        assert big.close_code == 1009

        broken = await ws_connect(reactor, proxy.client_port, "/ws")
        broken.transport.write(b"\x8f\x80\x00\x00\x00\x00")  # reserved opcode 0xF, masked, empty
        await broken.wait(reactor, lambda: broken.closed, "protocol error closes")
        assert broken.close_code == 1002

        echo = await ws_connect(reactor, proxy.client_port, "/ws?channel=t1")
        echo.sendMessage(b"marco")
        await echo.wait(reactor, lambda: echo.messages, "echo")
        assert echo.messages[0] == (b"marco", False)
        await _publish(reactor, proxy.control_port, [{"channel": "t1", "formats": {"ws-message": {"content": "polo"}}}])
        await echo.wait(reactor, lambda: len(echo.messages) > 1, "published to /ws")
        assert echo.messages[1] == (b"polo", False)
        echo.sendClose(1000)
        await echo.wait(reactor, lambda: echo.closed, "closed")
    finally:
        await proxy.stop()
        await port.stopListening()
