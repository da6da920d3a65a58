"""
A Node.js origin using @fanoutio/serve-grip and @fanoutio/grip (tests/ecosystem/node_origin,
installed by .ci/run with C{npm ci}) behind the real C{twistd -n pushpin}: an HTTP stream, a
long-poll, and the WebSocket-over-HTTP chat, each published with the library's Publisher.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, threads
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.integration.harness import Waiter, raw_request, start_proxy

from .support import node_binary, open_stream, start_origin_process

NODE_ORIGIN = Path(__file__).resolve().parent / "node_origin"
MODULES = NODE_ORIGIN / "node_modules" / "@fanoutio"

pytestmark = [
    pytest.mark.skipif(not node_binary(), reason="node is not installed (.ci/run installs nodejs)"),
    pytest.mark.skipif(not ((MODULES / "serve-grip").is_dir() and (MODULES / "grip").is_dir()),
                       reason="the Node modules are not installed: "
                              "npm ci --prefix tests/ecosystem/node_origin (.ci/run does this)"),
]


@pytest.fixture
def node_env(reactor, tmp_path):
    """The Node origin and the proxy routing to it (WebSocket-over-HTTP for /chat)."""
    origin = pytest_twisted.blockon(defer.ensureDeferred(
        start_origin_process(reactor, [node_binary(), "server.js"], str(NODE_ORIGIN))))
    routes = [f"*,path_beg=/chat 127.0.0.1:{origin.port},over_http", f"* 127.0.0.1:{origin.port}"]
    try:
        proxy = pytest_twisted.blockon(defer.ensureDeferred(start_proxy(reactor, tmp_path, routes)))
    except BaseException:
        pytest_twisted.blockon(defer.ensureDeferred(origin.stop(reactor)))
        raise
    origin.send_line(f"http://127.0.0.1:{proxy.control_port}")
    pytest_twisted.blockon(origin.wait_for_output(reactor, r"origin ready"))
    yield proxy, origin
    pytest_twisted.blockon(defer.ensureDeferred(proxy.stop()))
    pytest_twisted.blockon(defer.ensureDeferred(origin.stop(reactor)))


def publish(origin, channel: str, fmt: str, text: str) -> defer.Deferred:
    """Have the origin publish with @fanoutio/grip's Publisher (it answers once published)."""
    query = urllib.parse.urlencode({"channel": channel, "format": fmt, "text": text})

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{origin.port}/publish?{query}",
                                    timeout=20) as r:
            return r.read().decode()

    return threads.deferToThread(get)


@pytest_twisted.ensureDeferred
async def test_stream(reactor, node_env):
    """setHoldStream: the client gets the origin's first body, then each publishHttpStream."""
    proxy, origin = node_env
    client = await open_stream(reactor, proxy.client_port, "/stream")
    await client.wait(reactor, lambda c: c.body == b"[stream open]\n", "the stream's start")
    assert client.status == 200 and client.header("grip-hold") is None
    await proxy.wait_for_log(r"subscribe http://example.com/stream channel=news")
    assert await publish(origin, "news", "stream", "first\n") == "ok\n"
    await publish(origin, "news", "stream", "second\n")
    await client.wait(reactor, lambda c: c.body == b"[stream open]\nfirst\nsecond\n", "both publishes")
    client.close()


@pytest_twisted.ensureDeferred
async def test_long_poll(reactor, node_env):
    """setHoldLongPoll: the request is held until a publish answers it with that body."""
    proxy, origin = node_env
    client = await raw_request(reactor, proxy.client_port,
                               b"GET /longpoll HTTP/1.1\r\nHost: example.com\r\n\r\n", until=b"")
    await proxy.wait_for_log(r"subscribe http://example.com/longpoll channel=poll")
    assert client.received == b""  # held: nothing sent yet
    await publish(origin, "poll", "response", "news at last\n")
    await client.wait_for(reactor, b"news at last\n")
    head = client.received.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ncontent-length: 13" in head.lower()
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_long_poll_unproxied_request_is_refused(reactor, node_env):
    """Straight to the origin (no Grip-Sig), serve-grip's gripProxyRequired answers 501."""
    proxy, origin = node_env
    client = await raw_request(reactor, origin.port,
                               b"GET /longpoll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 501 ")


class ChatClient(WebSocketClientProtocol):
    """A WebSocket client that keeps the text messages it receives."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []
        self.opened = self.closed = False
        self.waiter = Waiter()

    def onOpen(self):
        self.opened = True
        self.waiter.check()

    def onMessage(self, payload, isBinary):
        self.messages.append(payload.decode())
        self.waiter.check()

    def onClose(self, wasClean, code, reason):
        self.closed = True
        self.waiter.check()

    def wait(self, reactor, predicate, what: str) -> defer.Deferred:
        return self.waiter.wait(reactor, predicate, what=f"{what}; got {self.messages}")


async def chat_connect(reactor, port: int) -> ChatClient:
    """Open a WebSocket to the proxy's /chat and wait for the handshake."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/chat", reactor=reactor)
    factory.protocol = ChatClient
    factory.noisy = False
    client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    await client.wait(reactor, lambda: client.opened or client.closed, "handshake")
    assert client.opened
    return client


@pytest_twisted.ensureDeferred
async def test_websocket_over_http_chat(reactor, node_env):
    """Two chat clients: a nick kept in connection meta, messages fanned out via the Publisher."""
    proxy, origin = node_env
    ann = await chat_connect(reactor, proxy.client_port)
    bob = await chat_connect(reactor, proxy.client_port)
    await proxy.wait_for_log(r"(?s)(subscribe ws\S* .*channel=chat.*){2}")
    ann.sendMessage(b"/nick ann")
    await ann.wait(reactor, lambda: ann.messages == ["you are ann"], "the nick reply")
    ann.sendMessage(b"hello bob")
    await bob.wait(reactor, lambda: bob.messages == ["ann: hello bob"], "ann's message at bob")
    await ann.wait(reactor, lambda: ann.messages[-1:] == ["ann: hello bob"], "ann's own echo")
    await publish(origin, "chat", "ws", "server: bye")
    await bob.wait(reactor, lambda: bob.messages[-1:] == ["server: bye"], "the server's publish")
    for client in (ann, bob):
        client.sendClose(1000)
        await client.wait(reactor, lambda c=client: c.closed, "the close")
