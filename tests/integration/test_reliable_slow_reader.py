"""
A slow reader end to end (issue 15 item 2): a client that stops reading while far more is
published than its delivery queue holds is never left connected with a gap it cannot see. A
reliable stream (next link, ids) recovers what it missed from the origin once it reads again;
any other stream is closed, so that the client reconnects; a WebSocket gets close 1013.
Every message dropped meanwhile is counted and logged with the connection id and channel.
"""

from __future__ import annotations

import re
import socket

import pytest_twisted
from twisted.internet import protocol

from .harness import RawClient, ScriptedOrigin, poll_until, start_origin, start_proxy
from .test_end_to_end import _publish
from .test_websockets import Client

PAD = "x" * 16000  # each message's padding: a few hundred of them fill any socket buffer
SLOW = {"delivery_queue_max": "5", "delivery_overflow": "disconnect"}


async def stalled_client(reactor, port: int, request: bytes, opened: bytes) -> RawClient:
    """A client with a tiny receive buffer that reads the head of its answer, then nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    client = RawClient()
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, protocol.Factory.forProtocol(lambda: client))
    sock.close()  # the reactor holds its own duplicate
    client.transport.write(request)
    await client.wait_for(reactor, opened)
    client.transport.pauseProducing()
    return client


async def stalled_ws_client(reactor, port: int, path: str) -> Client:
    """An autobahn WebSocket client with a tiny receive buffer (set before connecting), open."""
    from autobahn.twisted.websocket import WebSocketClientFactory

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", reactor=reactor)
    factory.protocol = Client
    factory.noisy = False
    client = reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory).protocol
    sock.close()
    await client.wait(reactor, lambda: client.opened or client.closed, "handshake")
    assert client.opened
    return client


def logged_drops(output: str, reason: str) -> dict[str, int]:
    """Drops per connection, summed over the rate-limited 'dropped N message(s)' lines with C{reason}."""
    counts: dict[str, int] = {}
    for n, conn in re.findall(r"dropped (\d+) message\(s\) for connection (\S+) on channel \S+: " + re.escape(reason) + r"\n", output):
        counts[conn] = counts.get(conn, 0) + int(n)
    return counts


class FruitOrigin:
    """/fruit/?after=N: the items after N, compact (Grip-Last wins); a stream hold on 'fruit' with a next link."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.grip_last_seen: list[bytes] = []

    def render(self, request):
        after = int((request.args.get(b"after") or [b"0"])[0])
        last = request.getHeader(b"grip-last")
        if last:
            self.grip_last_seen.append(last)
            after = int(re.search(rb"last-id=(\d+)", last).group(1))
        top = self.items[-1] if self.items else 0
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"fruit; prev-id=%d" % top)
        request.setHeader(b"grip-link", b"</fruit/?after=%d>; rel=next; timeout=120" % top)
        return b"[open]\n" + b"".join(b"item %d\n" % n for n in self.items if n > after)


def received_items(raw: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"item (\d+)\n", raw)]


@pytest_twisted.ensureDeferred
async def test_slow_reader_of_a_reliable_stream_gets_everything_exactly_once(reactor, tmp_path):
    """It stops reading while 300 items (4.8 MB) are published: once it reads again, it has 1..300, each once, in order."""
    fruit = FruitOrigin()
    origin = ScriptedOrigin()
    origin.handlers[b"/fruit/"] = fruit.render
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"], **SLOW)
    try:
        client = await stalled_client(reactor, proxy.client_port, b"GET /fruit/ HTTP/1.1\r\nHost: example.com\r\n\r\n", b"[open]\n")
        await proxy.wait_for_log(r"subscribe .*channel=fruit")
        for batch in range(15):
            items = []
            for n in range(batch * 20 + 1, batch * 20 + 21):
                fruit.items.append(n)
                items.append({"channel": "fruit", "id": str(n), "prev-id": str(n - 1), "formats": {"http-stream": {"content": f"item {n}\n{PAD}\n"}}})
            await _publish(reactor, proxy.control_port, items)
        await proxy.wait_for_log(r"slow reader, 5 messages queued on fruit: new ones dropped, recovering from the origin once they are read")
        assert not client.closed
        client.transport.resumeProducing()
        await poll_until(reactor, lambda: 300 in received_items(client.received), timeout=30, what="item 300")
        assert received_items(client.received) == list(range(1, 301))
        # each overflow (the socket buffers may take a few rounds) recovered from the last id
        # the client was sent, and every item dropped on the way was logged for this connection
        assert fruit.grip_last_seen and all(re.fullmatch(rb"fruit; last-id=\d+", g) for g in fruit.grip_last_seen)
        dropped = await poll_until(reactor, lambda: logged_drops(proxy.output, "queue full, recovering"), timeout=5, what="drops logged")
        assert list(dropped) == ["1"] and sum(dropped.values()) > 0
        fruit.items.append(301)
        await _publish(reactor, proxy.control_port, [{"channel": "fruit", "id": "301", "prev-id": "300", "formats": {"http-stream": {"content": "item 301\n"}}}])
        await poll_until(reactor, lambda: received_items(client.received)[-1:] == [301], what="item 301 live")
        assert not client.closed
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_slow_reader_of_a_plain_stream_is_cut_off_and_every_drop_reported(reactor, tmp_path):
    """No next link: once it reads again it gets what was queued, then the connection closes without a last chunk."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], **SLOW)
    try:
        client = await stalled_client(reactor, proxy.client_port, b"GET /stream?channel=s HTTP/1.1\r\nHost: localhost\r\n\r\n", b"[stream opened]\n")
        await proxy.wait_for_log(r"subscribe .*channel=s")
        total = 300
        for batch in range(total // 20):
            items = [{"channel": "s", "formats": {"http-stream": {"content": f"item {n}\n{PAD}\n"}}} for n in range(batch * 20, batch * 20 + 20)]
            await _publish(reactor, proxy.control_port, items)
        await proxy.wait_for_log(r"slow reader, 5 messages queued on s: new ones dropped, closing the connection once they are read")
        client.transport.resumeProducing()
        await client.wait_closed(reactor)
        got = received_items(client.received)
        assert got == list(range(len(got))) and 0 < len(got) < total
        assert not client.received.endswith(b"\r\n0\r\n\r\n")  # cut off, not a complete response
        dropped = await poll_until(reactor, lambda: sum(logged_drops(proxy.output, "queue full, closing").values()) == total - len(got) and logged_drops(proxy.output, "queue full, closing"), timeout=5, what="every drop logged")
        assert len(dropped) == 1  # one connection, named in the log
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_slow_websocket_reader_gets_close_1013_after_what_was_queued(reactor, tmp_path):
    """A WebSocket client that stops reading: after the queued messages it gets close 1013 with a reason; the rest are reported."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], **SLOW)
    try:
        client = await stalled_ws_client(reactor, proxy.client_port, "/ws?channel=w")
        await proxy.wait_for_log(r"subscribe ws \S+ channel=w")
        client.transport.pauseProducing()
        total = 300
        for batch in range(total // 20):
            items = [{"channel": "w", "formats": {"ws-message": {"content": f"item {n}\n{PAD}"}}} for n in range(batch * 20, batch * 20 + 20)]
            await _publish(reactor, proxy.control_port, items)
        await proxy.wait_for_log(r"slow reader, 5 messages queued on w: new ones dropped, closing \(1013\) once they are read")
        client.transport.resumeProducing()
        await client.wait(reactor, lambda: client.closed, "the close")
        assert client.close_code == 1013
        assert client.remoteCloseReason == "slow reader: delivery queue overflowed, messages dropped"
        got = [int(m.split(b"\n", 1)[0].split()[1]) for m, _ in client.messages]
        assert got == list(range(len(got))) and 0 < len(got) < total
        await poll_until(reactor, lambda: sum(logged_drops(proxy.output, "queue full, closing").values()) == total - len(got), timeout=5, what="every drop logged")
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_slow_websocket_reader_still_gets_the_close_after_a_long_pause(reactor, tmp_path):
    """A reader that stays paused for seconds after its close frame was sent still reads everything queued, then close 1013."""
    from twisted.internet.task import deferLater

    proxy = await start_proxy(reactor, tmp_path, ["* test"], **SLOW)
    try:
        client = await stalled_ws_client(reactor, proxy.client_port, "/ws?channel=w")
        await proxy.wait_for_log(r"subscribe ws \S+ channel=w")
        client.transport.pauseProducing()
        for batch in range(10):
            items = [{"channel": "w", "formats": {"ws-message": {"content": f"item {n}\n{PAD}"}}} for n in range(batch * 20, batch * 20 + 20)]
            await _publish(reactor, proxy.control_port, items)
        await proxy.wait_for_log(r"slow reader, 5 messages queued on w")
        await deferLater(reactor, 2.5, lambda: None)  # the slow reader's pause: longer than autobahn's 1 s close wait
        client.transport.resumeProducing()
        await client.wait(reactor, lambda: client.closed, "the close")
        assert client.close_code == 1013
    finally:
        await proxy.stop()
