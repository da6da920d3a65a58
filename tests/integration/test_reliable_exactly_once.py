"""
Reliable streams end to end, issue 15: a client sees every item exactly once and in order
whatever the origin answers to the recovery fetches; an item a filter withholds still moves
the connection's position on; ids built from several channels carry every channel's position.
"""

from __future__ import annotations

import re
import pytest_twisted
from twisted.web.server import NOT_DONE_YET

from .harness import ScriptedOrigin, poll_until, raw_connect, start_origin, start_proxy
from .test_end_to_end import _publish


class FlakyFruitOrigin:
    """/fruit/?after=N answers the items after N (Grip-Last wins); recovery fetches get 503 until C{busy_until}."""

    def __init__(self, reactor, link_timeout: int) -> None:
        self.reactor = reactor
        self.items: list[int] = []
        self.link_timeout = link_timeout
        self.busy_until = 0.0
        self.answered_503 = 0
        self.grip_last_seen: list[bytes] = []

    def render(self, request):
        last = request.getHeader(b"grip-last")
        if last and self.reactor.seconds() < self.busy_until:
            self.answered_503 += 1
            request.setResponseCode(503)
            return b"busy\n"
        after = int((request.args.get(b"after") or [b"0"])[0])
        if last:
            self.grip_last_seen.append(last)
            after = int(re.search(rb"last-id=(\d+)", last).group(1))
        top = self.items[-1] if self.items else 0
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"fruit; prev-id=%d" % top)
        request.setHeader(b"grip-link", b"</fruit/?after=%d>; rel=next; timeout=%d" % (top, self.link_timeout))
        return b"".join(b"item %d\n" % n for n in self.items if n > after)


def received_items(raw: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"item (\d+)\n", raw)]


async def _fruit(reactor, proxy, n):
    await _publish(reactor, proxy.control_port, [{"channel": "fruit", "id": str(n), "prev-id": str(n - 1), "formats": {"http-stream": {"content": f"item {n}\n"}}}])


@pytest_twisted.ensureDeferred
async def test_recovery_answered_503_for_a_while_delivers_each_item_exactly_once(reactor, tmp_path):
    """A gap whose next-link fetches meet 503s for longer than the link timeout: every client still gets 1..41 once, in order."""
    fruit = FlakyFruitOrigin(reactor, link_timeout=2)
    origin = ScriptedOrigin()
    origin.handlers[b"/fruit/"] = fruit.render
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"], message_wait="300")
    clients = []
    try:
        for _ in range(3):
            client = await raw_connect(reactor, proxy.client_port)
            client.transport.write(b"GET /fruit/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
            clients.append(client)
        await proxy.wait_for_log(r"(subscribe .*channel=fruit[\s\S]*){3}")
        # the origin answers recovery fetches 503 for 4.5 s: retried after 1, 2, 4 s (+ jitter),
        # while the 2 s link timeout comes and goes
        fruit.busy_until = reactor.seconds() + 4.5
        for n in range(1, 41):
            fruit.items.append(n)
            if n != 17:  # lost on the way
                await _fruit(reactor, proxy, n)
        for client in clients:
            await poll_until(reactor, lambda c=client: 40 in received_items(c.received), timeout=30, what="item 40")
        assert fruit.answered_503 >= 3
        await proxy.wait_for_log(r"gap on fruit[\s\S]*retrying in")
        # a few more link timeouts: idle re-fetches bring nothing new and nothing again
        fruit.items.append(41)
        await _fruit(reactor, proxy, 41)
        for client in clients:
            await poll_until(reactor, lambda c=client: 41 in received_items(c.received), timeout=10, what="item 41")
        await proxy.wait_for_log(r"(no publish for 2 s, fetching[\s\S]*){3}")
        for client in clients:
            assert received_items(client.received) == list(range(1, 42))
    finally:
        for client in clients:
            client.transport.loseConnection()
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_item_skipped_for_this_user_moves_the_position_on(reactor, tmp_path):
    """skip-users withholds 2 from alice: she gets 1 and 3, no recovery happens and the origin is never asked to replay 2."""
    origin = ScriptedOrigin()
    asked: list[bytes | None] = []

    def events(request):
        asked.append(request.getHeader(b"grip-last"))
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-set-meta", b"user=alice")
        request.setHeader(b"grip-channel", b"ev; prev-id=0; filter=skip-users")
        request.setHeader(b"grip-link", b"</events/>; rel=next; timeout=120")
        return b"event: stream-open\ndata:\n\n" if not request.getHeader(b"grip-last") else b"data: replay 2\n\n"

    origin.handlers[b"/events/"] = events
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /events/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await proxy.wait_for_log(r"subscribe .*channel=ev")
        for n, meta in ((1, {}), (2, {"skip_users": "bob,alice"}), (3, {})):
            item = {"channel": "ev", "id": str(n), "prev-id": str(n - 1), "meta": meta, "formats": {"http-stream": {"content": f"data: {n}\n\n"}}}
            await _publish(reactor, proxy.control_port, [item])
        await client.wait_for(reactor, b"data: 3\n\n")
        body = client.received.split(b"\r\n\r\n", 1)[1]
        assert re.findall(rb"data: (\w+)", body) == [b"1", b"3"]
        assert asked == [None]
        assert "fetching next link" not in proxy.output
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_event_ids_built_from_two_channels_carry_both_positions(reactor, tmp_path):
    """A stream on channels a and b with build-id ids (django-eventstream's ?channel=a&channel=b): each id has both channels' last ids; a route prefix stays out of them."""
    origin = ScriptedOrigin()

    def events(request):
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-set-meta", b"id_format=a%(a)s.b%(b)s")
        request.setHeader(b"grip-channel", b"a; prev-id=0; filter=build-id, b; prev-id=0; filter=build-id")
        request.setHeader(b"grip-link", b"</events/>; rel=next; timeout=120")
        return b"event: stream-open\ndata:\n\n"

    origin.handlers[b"/events/"] = events
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"*,prefix=ev- 127.0.0.1:{port.getHost().port}"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /events/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await proxy.wait_for_log(r"subscribe .*channel=ev-a[\s\S]*subscribe .*channel=ev-b")
        for channel, n in (("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)):
            item = {"channel": "ev-" + channel, "id": str(n), "prev-id": str(n - 1), "formats": {"http-stream": {"content": f"id: %I\ndata: {channel}{n}\n\n"}}}
            await _publish(reactor, proxy.control_port, [item])
        await client.wait_for(reactor, b"data: b2\n\n")
        ids = re.findall(rb"id: (.*)\n", client.received)
        assert ids == [
            b"a1.b0",
            b"a1.b1",
            b"a2.b1",
            b"a3.b1",
            b"a3.b2",
        ]
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stream_hold_with_prev_id_but_no_next_link_is_a_complete_200(reactor, tmp_path):
    """Pushpin does not hold such a stream: the client gets the origin's body as a complete 200, and can ask again."""
    origin = ScriptedOrigin()

    def events(request):
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"pn; prev-id=1")
        return b"initial\n"

    origin.handlers[b"/events/"] = events
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        request = b"GET /events/ HTTP/1.1\r\nHost: example.com\r\n\r\n"
        client.transport.write(request)
        await client.wait_for(reactor, b"initial\n")
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert client.received.endswith(b"Content-Length: 8\r\n\r\ninitial\n")  # as Pushpin 1.36 answers it
        client.transport.write(request)  # the connection is still usable
        await poll_until(reactor, lambda: client.received.count(b"HTTP/1.1 200 OK") == 2, what="second answer")
        assert "subscribe" not in proxy.output
        await proxy.wait_for_log(r"channel 'pn' specifies prev-id, but no next link found: answering without holding")
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await port.stopListening()
