"""
[runner] allow_compression end to end through the real C{twistd -n pushpin}, with a real
third-party client (the C{websockets} package, which offers permessage-deflate by default):
enabled, deflate is negotiated and messages arrive intact both ways, compressed on the wire,
published ones included; off (Pushpin's default), the offer is declined.
"""

from __future__ import annotations

import socket

import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from websockets.sync.client import connect

from .test_end_to_end import _publish
from .test_tls_listeners import start_configured
from .test_websockets import Echo



class CountingSocket(socket.socket):
    """A client socket that counts the bytes it receives (what went over the wire)."""

    received = 0

    def recv(self, *args, **kwargs):  # type: ignore[override]
        data = super().recv(*args, **kwargs)
        self.received += len(data)
        return data


def _client_session(port: int, published: int, echoed=lambda: None) -> dict:
    """The whole client side, in a thread: connect, echo a big message (then call C{echoed}), then take C{published} messages."""
    sock = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
    sock.connect(("127.0.0.1", port))
    seen: dict = {}
    with connect(f"ws://127.0.0.1:{port}/echo", sock=sock, open_timeout=10, ping_interval=None) as ws:
        seen["extensions"] = [e.name for e in ws.protocol.extensions]
        big = "pushpin " * 20000  # 160,000 bytes, very compressible
        ws.send(big)
        seen["echo_intact"] = ws.recv(10) == "echo " + big
        before = sock.received
        echoed()
        seen["published"] = [ws.recv(10) for _ in range(published)]
        seen["published_wire_bytes"] = sock.received - before
    return seen


async def _echo_origin(reactor):
    factory = WebSocketServerFactory(reactor=reactor)
    factory.protocol = Echo
    factory.grip = True
    factory.offered = []
    factory.noisy = False
    return await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)


@pytest_twisted.ensureDeferred
async def test_deflate_is_negotiated_and_messages_arrive_intact(reactor, tmp_path):
    """allow_compression=true: websockets negotiates permessage-deflate; echoes and publishes arrive whole, compressed."""
    origin_port = await _echo_origin(reactor)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"allow_compression": "true"})
    try:
        from twisted.internet import defer

        echoed: defer.Deferred = defer.Deferred()
        session = threads.deferToThread(_client_session, proxy.client_port, 2,
                                        lambda: reactor.callFromThread(echoed.callback, None))
        await proxy.wait_for_log(r"channel=plain")
        await echoed.addTimeout(20, reactor)  # the publishes come after the echo: the bytes counted are theirs
        await _publish(reactor, proxy.control_port, [{"channel": "plain", "formats": {"ws-message": {"content": "x" * 50000}}},
                                                     {"channel": "plain", "formats": {"ws-message": {"content-bin": "AAEC"}}}])
        seen = await session
        assert seen["extensions"] == ["permessage-deflate"]
        assert seen["echo_intact"]
        assert seen["published"] == ["x" * 50000, b"\x00\x01\x02"]
        assert seen["published_wire_bytes"] < 2000  # 50,003 payload bytes went compressed
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_without_allow_compression_the_offer_is_declined(reactor, tmp_path):
    """By default (Pushpin's allow_compression=false) the same client's deflate offer gets no extension; messages flow."""
    origin_port = await _echo_origin(reactor)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"])
    try:
        seen = await threads.deferToThread(_client_session, proxy.client_port, 0)
        assert seen["extensions"] == [] and seen["echo_intact"]
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()
