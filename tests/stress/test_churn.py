"""
Connection churn: waves of clients open held streams, long-polls, WebSockets and requests
the origin never answers, then vanish abruptly (RST, a half-close they never finish,
mid-request, mid-handshake) while publishes are going out. Between waves the proxy must
have released every connection's hold, subscription, queue, descriptor and origin
request, its memory must come back, and the survivors must have missed nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.web.server import NOT_DONE_YET

from ..integration.harness import RawClient, ScriptedOrigin, poll_until, raw_connect, raw_request, start_origin, start_proxy
from ..integration.test_websockets import ws_connect
from .support import (
    WS_HANDSHAKE,
    Metrics,
    assert_alive,
    assert_clean_log,
    fd_count,
    gather,
    metrics_port,
    open_stream,
    publish,
    poll_scrape,
    rss_kb,
    sockets_to,
    scaled,
    scrape,
    still_serves,
)

WAVES = 3
#: clients per wave, split evenly over the kinds below
PER_WAVE = scaled(300)
#: what a wave client does before it vanishes
KINDS = ("stream", "long-poll", "websocket", "woh-websocket", "origin-pending", "mid-request", "ws-origin-pending")
#: how much the proxy's RSS may stay above its level after the warm-up wave, in KiB
RSS_SLACK_KB = 8 * 1024
#: the most the warm-up wave (every client at once) may raise RSS, per client, in KiB
RSS_PER_CLIENT_KB = 48
#: how long a vanished client's resources may take to be released, in seconds (well
#: under every timeout the proxy has: released because the client left, not by a timer)
PROMPT = 3.0


class HangingOrigin:
    """Takes requests and never answers; counts, per path, those the proxy gave up on (connection closed)."""

    def __init__(self, origin: ScriptedOrigin, paths: tuple[bytes, ...]) -> None:
        self.taken = {p: 0 for p in paths}
        self.released = {p: 0 for p in paths}
        self.waiter = origin.waiter
        for path in paths:
            origin.handlers[path] = lambda request, path=path: self.hang(request, path)

    def hang(self, request: Any, path: bytes) -> object:
        self.taken[path] += 1

        def released(_: object) -> None:
            self.released[path] += 1
            self.waiter.check()

        request.notifyFinish().addBoth(released)
        self.waiter.check()
        return NOT_DONE_YET

    def pending(self, path: bytes) -> int:
        """Requests on C{path} whose connection the proxy still holds open."""
        return self.taken[path] - self.released[path]


class WohSessions:
    """A WebSocket-over-HTTP origin that accepts every OPEN and counts the sessions that ended."""

    def __init__(self, origin: ScriptedOrigin) -> None:
        self.opened = 0
        self.ended = 0
        self.waiter = origin.waiter
        origin.handlers[b"/woh"] = self.render

    def render(self, request: Any) -> bytes:
        request.content.seek(0)
        body = request.content.read()
        if body.startswith(b"OPEN"):
            self.opened += 1
        if b"DISCONNECT\r\n" in body or b"CLOSE" in body:
            self.ended += 1
        self.waiter.check()
        request.setHeader(b"content-type", b"application/websocket-events")
        return b"OPEN\r\n" if body.startswith(b"OPEN") else b""


async def _open(reactor: Any, proxy: Any, kind: str) -> RawClient:
    """One wave client, connected and as far into its kind as it gets before vanishing."""
    client = await raw_connect(reactor, proxy.client_port)
    write = client.transport.write
    if kind == "stream":
        write(b"GET /stream?channel=churn HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await client.wait_for(reactor, b"[stream opened]\n")
    elif kind == "long-poll":
        write(b"GET /response?channel=churn-lp HTTP/1.1\r\nHost: localhost\r\n\r\n")
    elif kind in ("websocket", "woh-websocket"):
        write(WS_HANDSHAKE % (b"/ws?channel=churn" if kind == "websocket" else b"/woh", b"localhost"))
        await client.wait_for(reactor, b"\r\n\r\n")
        assert client.received.startswith(b"HTTP/1.1 101 "), client.received
    elif kind == "origin-pending":
        write(b"GET /hang HTTP/1.1\r\nHost: stall.example\r\n\r\n")
    elif kind == "mid-request":
        write(b"GET /stream?channel=churn HTTP/1.1\r\nHost: loc")
    elif kind == "ws-origin-pending":
        write(WS_HANDSHAKE % (b"/hang-ws", b"stall.example"))
    return client


def _holds(m: Metrics, stream: int, response: int, ws: int) -> bool:
    return (
        m.value("held_connections", kind="stream") == stream
        and m.value("held_connections", kind="response") == response
        and m.value("held_connections", kind="ws") == ws
    )


async def _held(reactor: Any, mport: int, stream: int, response: int, ws: int) -> bool:
    """Whether the proxy holds exactly this many connections of each kind (one scrape)."""
    return _holds(await scrape(reactor, mport), stream, response, ws)


async def _wave(reactor: Any, proxy: Any, mport: int, hanging: HangingOrigin, size: int, label: str) -> list[RawClient]:
    """Open C{size} clients of every kind, wait until each is held or at the origin, then make them vanish."""
    kinds = [KINDS[i % len(KINDS)] for i in range(size)]
    taken = dict(hanging.taken)
    clients = await gather(kinds, lambda kind: _open(reactor, proxy, kind))
    for path, kind in ((b"/hang", "origin-pending"), (b"/hang-ws", "ws-origin-pending")):
        n = taken[path] + kinds.count(kind)
        await hanging.waiter.wait(reactor, lambda: hanging.taken[path] == n, what=f"{label}: {n} requests for {path!r} at the origin")
    streams, polls = 1 + kinds.count("stream"), kinds.count("long-poll")
    sockets = 1 + kinds.count("websocket") + kinds.count("woh-websocket")  # the survivor, and this wave's
    await poll_scrape(reactor, lambda: _held(reactor, mport, streams, polls, sockets), f"{label}: every client held")
    # Vanish: even clients reset, odd ones half-close and never read again; a publish goes
    # out after each half, so the fan-out meets connections that are going away.
    half = len(clients) // 2
    for part, chunk in enumerate((clients[:half], clients[half:])):
        for i, client in enumerate(chunk):
            if i % 2 == 0:
                client.transport.abortConnection()
            else:
                client.transport.pauseProducing()
                client.transport.loseWriteConnection()
        await publish(reactor, proxy, "churn", f"{label} part {part}\n", ws=True)
    return clients


@pytest.mark.stress
@pytest_twisted.ensureDeferred
async def test_waves_of_vanishing_clients_release_everything_and_survivors_get_every_publish(reactor, tmp_path):
    """Waves of clients vanish by RST or half-close mid-hold, mid-request and mid-handshake: holds,
    subscriptions, queues, descriptors and origin requests return to the survivors' level at once,
    RSS comes back, and the surviving stream and WebSocket get every publish, with no 5xx."""
    origin = ScriptedOrigin()
    hanging = HangingOrigin(origin, (b"/hang", b"/hang-ws"))
    woh = WohSessions(origin)
    origin_port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{origin_port.getHost().port}"
    routes = [f"stall.example {target}", f"*,path_beg=/woh {target},over_http", "* test"]
    proxy = await start_proxy(reactor, tmp_path, routes, prometheus_port="127.0.0.1:0")
    pid = proxy.transport.pid
    survivors: list[Any] = []
    problems: list[str] = []  # judged at the end, so that one finding does not hide the others
    try:
        mport = await metrics_port(proxy)
        stream = await open_stream(reactor, proxy.client_port, b"/stream?channel=churn")
        ws = await ws_connect(reactor, proxy.client_port, "/ws?channel=churn")
        assert ws.opened
        survivors += [stream.transport, ws.transport]
        published: list[str] = []
        rss: list[int] = []
        fds: list[int] = []  # the proxy's descriptors, but for its idle origin connections
        pooled: list[int] = []  # its connections to the origin
        rss_start = rss_kb(pid)
        # Wave 0 is the warm-up: Python keeps the memory of its high-water mark (every
        # client of a wave at once), so the baseline is taken after it; later waves must
        # come back to it.
        for wave in range(WAVES + 1):
            label = f"wave {wave}"
            clients = await _wave(reactor, proxy, mport, hanging, PER_WAVE, label)
            published += [f"{label} part 0", f"{label} part 1"]

            async def released() -> bool:
                m = await scrape(reactor, mport)
                return (
                    _holds(m, 1, 0, 1)  # the survivors
                    and m.value("connection_connected") == 2
                    and m.value("subscriptions") == 2
                    and m.value("subscribed_channels") == 1
                    and m.value("queue_depth") == 0
                )

            await poll_scrape(reactor, released, f"{label}: holds, subscriptions and queues released", timeout=PROMPT)
            await hanging.waiter.wait(reactor, lambda: hanging.pending(b"/hang") == 0, timeout=PROMPT, what="origin requests released")
            # The half-closed clients must have been closed by the proxy, not left half-open.
            for client in clients:
                client.transport.resumeProducing()
            await poll_until(reactor, lambda: all(c.closed for c in clients), timeout=PROMPT, what="proxy closed every half-closed client")
            await woh.waiter.wait(reactor, lambda: woh.ended == woh.opened, timeout=PROMPT, what="DISCONNECT for every WebSocket-over-HTTP session")
            if hanging.pending(b"/hang-ws"):
                problems.append(
                    f"{label}: {hanging.pending(b'/hang-ws')} origin WebSocket connections still open after their"
                    " clients vanished mid-handshake"
                )

            await stream.wait(reactor, lambda: all(p.encode() in stream.lines for p in published), "survivor stream publishes")
            await ws.wait(reactor, lambda: all(any(p.encode() in m for m, _ in ws.messages) for p in published), "survivor ws publishes")
            assert not ws.closed and not stream.closed and stream.status == 200
            hello = await raw_request(reactor, proxy.client_port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert hello.received.startswith(b"HTTP/1.1 200 OK\r\n"), hello.received
            assert_alive(proxy)
            # the origin pool's idle connections apart: how many stay after a wave follows that
            # wave's peak of origin requests (surplus ones close after 10 s), and the pool's
            # bound on them is checked below and in test_churn_descriptors
            pooled.append(sockets_to(pid, origin_port.getHost().port))
            fds.append(fd_count(pid) - pooled[-1])
            rss.append(rss_kb(pid))

        # the survivors saw each publish exactly once, in order, and nothing else
        assert [line.decode() for line in stream.lines[1:]] == published
        assert [m.decode().rstrip("\n") for m, _ in ws.messages] == published
        print(f"churn: {WAVES} waves of {PER_WAVE}; RSS KiB at start {rss_start}, after each wave {rss}; fds {fds}; origin pool {pooled}")
        if rss[0] - rss_start > RSS_PER_CLIENT_KB * PER_WAVE:
            problems.append(f"the warm-up wave raised RSS by {rss[0] - rss_start} KiB for {PER_WAVE} clients")
        if rss[-1] - rss[0] >= RSS_SLACK_KB:
            problems.append(f"RSS did not come back after the waves (KiB after each wave: {rss})")
        if fds[-1] > fds[0]:
            # A reading can catch a descriptor on its way out (seen: one of 49, now and then, in
            # a wave and not in the next; a socket whose close the client has seen but the
            # proxy has not yet released): a leak stays, that one goes, so wait a moment.
            try:
                await poll_until(reactor, lambda: fd_count(pid) - sockets_to(pid, origin_port.getHost().port) <= fds[0],
                                 timeout=PROMPT, what="descriptors back to the first wave's")
            except AssertionError:
                problems.append(f"descriptors grew over the waves: {fds}, {fd_count(pid)} {PROMPT} s later")
        if max(pooled) > 64:  # the pool's max_idle per origin (origin/http11.py), plus none in use now
            problems.append(f"the origin pool kept more than 64 connections after a wave: {pooled}")
        assert_clean_log(proxy)
        assert not problems, "\n".join(problems)
    finally:
        for transport in survivors:
            transport.abortConnection()
        await proxy.stop()
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_client_gone_mid_websocket_handshake_closes_the_origin_connection_at_once(reactor, tmp_path):
    """A client that leaves while the proxy waits for the origin's WebSocket handshake answer makes
    the proxy close that origin connection at once and try no other target."""
    origin = ScriptedOrigin()
    hanging = HangingOrigin(origin, (b"/hang-ws",))
    origin_port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{origin_port.getHost().port}"
    proxy = await start_proxy(reactor, tmp_path, ["localhost test", f"* {target} {target}"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(WS_HANDSHAKE % (b"/hang-ws", b"stall.example"))
        await hanging.waiter.wait(reactor, lambda: hanging.taken[b"/hang-ws"] == 1, what="the handshake at the origin")
        client.transport.abortConnection()
        try:
            await hanging.waiter.wait(reactor, lambda: hanging.pending(b"/hang-ws") == 0, timeout=PROMPT, what="origin connection closed")
        except AssertionError:
            raise AssertionError(
                f"origin WebSocket connection still open {PROMPT} s after the client left"
                f" (origin requests: {hanging.taken[b'/hang-ws']}); the proxy's log about it:\n"
                + "\n".join(line for line in proxy.output.splitlines() if "hang-ws" in line)
            ) from None
        assert hanging.taken[b"/hang-ws"] == 1, "the proxy tried the next target for a client that had left"
        await still_serves(reactor, proxy, "ws-mid-handshake")
        assert_clean_log(proxy)
    finally:
        await proxy.stop()
        await origin_port.stopListening()
