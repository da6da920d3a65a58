"""
Reliable WebSocket mode end to end, through the real C{twistd -n pushpin}: a
WebSocket-over-HTTP origin subscribes its client with a C{prev-id}, publishes go out
numbered, and whatever the client would miss (a lost or swapped publish, an origin down for
a moment during the recovery) is fetched from the origin with C{Grip-Last}, so the client
sees every message once, in order.
"""

from __future__ import annotations

import json
import re

import pytest_twisted
from gripcontrol import WebSocketEvent, decode_websocket_events, encode_websocket_events
from twisted.web.server import NOT_DONE_YET

from .harness import ScriptedOrigin, poll_until, start_origin, start_proxy
from .test_end_to_end import _publish
from .test_websockets import ws_connect


class FeedOrigin:
    """A WebSocket-over-HTTP origin with a numbered feed: OPEN subscribes at its latest id; a Grip-Last request gets what came after."""

    def __init__(self) -> None:
        self.items: list[int] = []
        self.grip_last_seen: list[bytes] = []
        self.down = 0  # how many requests with Grip-Last to fail (connection aborted)

    def _subscribe(self) -> WebSocketEvent:
        top = self.items[-1] if self.items else 0
        return WebSocketEvent("TEXT", "c:" + json.dumps({"type": "subscribe", "channel": "feed", "prev-id": str(top)}))

    def render(self, request):
        request.content.seek(0)
        events = decode_websocket_events(request.content.read())
        last = request.getHeader(b"grip-last")
        out = []
        if last:
            self.grip_last_seen.append(last)
            if self.down:
                self.down -= 1
                request.channel.transport.abortConnection()
                return NOT_DONE_YET
            after = int(re.search(rb"feed; last-id=(\d+)", last).group(1))
            out = [WebSocketEvent("TEXT", f"m:item {n}") for n in self.items if n > after] + [self._subscribe()]
        elif any(e.type == "OPEN" for e in events):
            out = [WebSocketEvent("OPEN"), self._subscribe()]
        request.setHeader(b"content-type", b"application/websocket-events")
        request.setHeader(b"sec-websocket-extensions", b"grip")
        return encode_websocket_events(out)


def item(n: int) -> dict:
    return {"channel": "feed", "id": str(n), "prev-id": str(n - 1), "formats": {"ws-message": {"content": f"item {n}"}}}


async def run_feed(reactor, tmp_path, feed: FeedOrigin, order: list[int], lost: set[int]):
    origin = ScriptedOrigin()
    origin.handlers[b"/feed"] = feed.render
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port},over_http"], message_wait="200")
    try:
        clients = [await ws_connect(reactor, proxy.client_port, "/feed") for _ in range(2)]
        await proxy.wait_for_log(r"(subscribe ws .* channel=feed[\s\S]*){2}")
        for n in order:
            if n not in feed.items:
                feed.items.append(n)
                feed.items.sort()
            if n in lost:
                continue
            await _publish(reactor, proxy.control_port, [item(n)])
        top = max(order)
        for client in clients:
            await client.wait(reactor, lambda c=client: any(m == b"item %d" % top for m, _ in c.messages), "the last item")
        got = [[int(m.split()[1]) for m, _ in client.messages] for client in clients]
        for client in clients:
            client.sendClose(1000)
            await client.wait(reactor, lambda c=client: c.closed, "closed")
        return got
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_lost_swapped_and_duplicated_publishes_reach_every_client_once_in_order(reactor, tmp_path):
    """Ids 1..40, #20 never published, #30/#31 swapped, #12 published twice: both clients get 1..40 once, in order."""
    feed = FeedOrigin()
    order = list(range(1, 41))
    order[29], order[30] = order[30], order[29]
    order.insert(12, 12)
    got = await run_feed(reactor, tmp_path, feed, order, lost={20})
    assert got == [list(range(1, 41))] * 2
    assert feed.grip_last_seen and all(re.fullmatch(rb"feed; last-id=\d+", v) for v in feed.grip_last_seen)


@pytest_twisted.ensureDeferred
async def test_an_origin_down_during_recovery_is_asked_again(reactor, tmp_path):
    """The first recovery request finds the origin down; the retry fills the gap and the clients still get 1..10 once, in order."""
    feed = FeedOrigin()
    feed.down = 1
    got = await run_feed(reactor, tmp_path, feed, list(range(1, 11)), lost={4})
    assert got == [list(range(1, 11))] * 2
    assert len(feed.grip_last_seen) >= 3  # each client's failed try, then its retry
