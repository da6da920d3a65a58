"""
Publish floods: several publishers at once, over the control API or ZeroMQ PUSH, while a
fast reader and a stalled one hold the channel. The fast reader gets every message in
each publisher's order; the stalled one's overflow is dropped or disconnected as
configured, and every dropped message is counted in the metrics and logged with its
connection id and channel, so that what the stalled reader got plus what was reported
dropped is exactly what was published. Memory stays bounded, and once the flood is over a
new publish arrives at once.
"""

from __future__ import annotations

import json
import re
import socket
from typing import Any

import pytest
import pytest_twisted
import zmq
from twisted.internet import protocol

from ..integration.harness import poll_until, start_proxy
from .support import (
    StreamReader,
    assert_clean_log,
    gather,
    metrics_port,
    open_stream,
    poll_scrape,
    publish,
    publish_items,
    rss_kb,
    scaled,
    scrape,
    still_serves,
    stream_item,
    turn,
)

PUBLISHERS = 4
BATCHES = scaled(25)
BATCH = 20
#: bytes per message, newline included: big enough that a stalled reader's socket fills quickly
SIZE = 2048
TOTAL = PUBLISHERS * BATCHES * BATCH
QUEUE_MAX = 200
#: the most messages the publishers may be ahead of the fast reader (see L{Flood})
WINDOW = 100
#: how far the proxy's RSS may rise during the flood, in KiB
RSS_BOUND_KB = 32 * 1024
#: "at once": the first publish after the flood reaches the fast reader within this, in seconds
AT_ONCE = 1.0


def _content(publisher: int, seq: int) -> str:
    head = f"p{publisher}:{seq:06d}:"
    return head + "x" * (SIZE - len(head) - 1) + "\n"


def _parse(line: bytes) -> tuple[int, int] | None:
    if not line.startswith(b"p"):
        return None
    who, seq, _ = line.split(b":", 2)
    return int(who[1:]), int(seq)


def _by_publisher(lines: list[bytes]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {p: [] for p in range(PUBLISHERS)}
    for line in lines:
        parsed = _parse(line)
        if parsed is not None:
            out[parsed[0]].append(parsed[1])
    return out


async def _stalled_stream(reactor: Any, port: int, channel: str) -> StreamReader:
    """A held stream whose client reads its first line, then nothing: a small receive buffer, paused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect, so the window stays small
    sock.connect(("127.0.0.1", port))  # loopback: completes at once
    sock.setblocking(False)
    reader = StreamReader()
    reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, protocol.Factory.forProtocol(lambda: reader))
    sock.close()  # the reactor has its own duplicate of the descriptor
    reader.transport.write(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
    await reader.wait(reactor, lambda: reader.lines, "stalled stream opened")
    reader.transport.pauseProducing()
    return reader


class Flood:
    """
    Sends the flood over one input, PUBLISHERS at once, sampling the proxy's RSS as it goes.

    The fast reader lives in this process too, and reads only between our own turns: so
    that it stays fast (its queue never fills), the publishers never run more than
    L{WINDOW} messages ahead of it. The stalled reader gets no such favour.
    """

    def __init__(self, reactor: Any, proxy: Any, via: str, pull_endpoint: str | None, fast: StreamReader) -> None:
        self.reactor = reactor
        self.proxy = proxy
        self.via = via
        self.fast = fast
        self.sent = 0
        self.peak_rss = 0
        self._ctx = zmq.Context() if via == "zmq-pull" else None
        self._pushes: list[zmq.Socket] = []
        if self._ctx is not None:
            for _ in range(PUBLISHERS):
                push = self._ctx.socket(zmq.PUSH)
                push.setsockopt(zmq.LINGER, 0)
                push.connect(pull_endpoint)
                self._pushes.append(push)

    async def run(self) -> None:
        await gather(range(PUBLISHERS), self._publisher, batch=PUBLISHERS)

    async def _publisher(self, p: int) -> None:
        seq = 0
        fast = self.fast
        for _ in range(BATCHES):
            await fast.wait(self.reactor, lambda: len(fast.lines) - 1 >= self.sent - WINDOW, "the fast reader to keep up")
            self.sent += BATCH
            items = []
            for _ in range(BATCH):
                items.append(stream_item("flood", _content(p, seq)))
                seq += 1
            if self.via == "http":
                answer = await publish_items(self.reactor, self.proxy.control_port, items)
                assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
            else:
                push = self._pushes[p]
                for item in items:
                    frame = b"J" + json.dumps(item).encode()
                    # PUSH blocks at its high-water mark: wait for room, never drop here
                    await poll_until(self.reactor, lambda: _try_send(push, frame), what="room in the PUSH queue")
                await turn(self.reactor)  # let the readers read between batches, as a network would
            self.peak_rss = max(self.peak_rss, rss_kb(self.proxy.transport.pid))

    def close(self) -> None:
        for push in self._pushes:
            push.close()
        if self._ctx is not None:
            self._ctx.term()


_DROP_LINE = re.compile(r"dropped (\d+) message\(s\) for connection (\S+) on channel flood: ")


def _logged_drops(output: str, conn: str) -> int:
    """How many drops the log lines for C{conn} account for: each line says how many it reports."""
    return sum(int(count) for count, who in _DROP_LINE.findall(output) if who == conn)


def _try_send(push: zmq.Socket, frame: bytes) -> bool:
    try:
        push.send(frame, zmq.NOBLOCK)
    except zmq.Again:
        return False
    return True


@pytest.mark.stress
@pytest.mark.parametrize(
    "via, overflow",
    [("http", "drop"), ("zmq-pull", "drop"), ("http", "disconnect")],
)
@pytest_twisted.ensureDeferred
async def test_flood_reaches_the_fast_reader_and_every_drop_of_the_stalled_one_is_reported(reactor, tmp_path, via, overflow):
    """A flood from four publishers: the fast reader gets every message in order, the stalled reader's
    overflow is dropped (or disconnected) and counted and logged with its connection id and channel,
    memory stays bounded, and a publish after the flood arrives at once."""
    proxy = await start_proxy(
        reactor,
        tmp_path,
        ["* test"],
        prometheus_port="127.0.0.1:0",
        delivery_queue_max=str(QUEUE_MAX),
        delivery_overflow=overflow,
    )
    pid = proxy.transport.pid
    flood = None
    readers: list[StreamReader] = []
    try:
        mport = await metrics_port(proxy)
        pull = (await proxy.wait_for_log(r"publish-pull bound to (tcp://[\d.]+:\d+)")).group(1)
        fast = await open_stream(reactor, proxy.client_port, b"/stream?channel=flood")
        stalled = await _stalled_stream(reactor, proxy.client_port, "flood")
        readers += [fast, stalled]
        await poll_until(reactor, lambda: len(re.findall(r"subscribe \S+ channel=flood\n", proxy.output)) == 2, what="both readers subscribed")
        rss_before = rss_kb(pid)
        flood = Flood(reactor, proxy, via, pull, fast)
        started = reactor.seconds()
        await flood.run()
        await fast.wait(reactor, lambda: len(fast.lines) >= 1 + TOTAL, f"all {TOTAL} messages at the fast reader", timeout=60)
        elapsed = reactor.seconds() - started

        # the fast reader: every message, in each publisher's order, nothing else
        assert len(fast.lines) == 1 + TOTAL
        expected = list(range(BATCHES * BATCH))
        assert _by_publisher(fast.lines) == {p: expected for p in range(PUBLISHERS)}

        # a publish after the flood arrives at once
        sent = reactor.seconds()
        await publish(reactor, proxy, "flood", "after the flood\n")
        await fast.wait(reactor, lambda: fast.lines[-1] == b"after the flood", "the first publish after the flood")
        latency = reactor.seconds() - sent
        assert latency < AT_ONCE, f"the first publish after the flood took {latency:.2f} s"

        m = await scrape(reactor, mport)
        reason = "queue full" if overflow == "drop" else "queue full, closing"
        dropped = int(m.value("drops_total", reason=reason))
        assert dropped >= 1, f"the stalled reader never overflowed: {dict(m.get('drops_total', {}))}"
        logged = re.findall(r"dropped \d+ message\(s\) for connection (\S+) on channel flood: " + re.escape(reason), proxy.output)
        assert logged and len(set(logged)) == 1, f"drops should be logged for the stalled connection only: {set(logged)}"
        assert m.value("publishes_total", input=via) >= (TOTAL if via != "http" else PUBLISHERS * BATCHES)

        stalled.transport.resumeProducing()
        if overflow == "drop":
            # Once it reads again it catches up; then what it got plus what was reported
            # dropped is exactly what was published while it held the channel.
            async def drained() -> bool:
                return (await scrape(reactor, mport)).value("queue_depth") == 0

            await poll_scrape(reactor, drained, "the stalled reader's queue drained")
            await publish(reactor, proxy, "flood", "caught up\n")
            await stalled.wait(reactor, lambda: stalled.lines and stalled.lines[-1] == b"caught up", "the stalled reader caught up", timeout=30)
            m = await scrape(reactor, mport)
            dropped = int(m.value("drops_total", reason=reason))
            got = len(stalled.lines) - 2  # without the opening line and "caught up"
            assert got + dropped == TOTAL + 1, f"stalled reader got {got}, {dropped} reported dropped, {TOTAL + 1} published"
            for p, seqs in _by_publisher(stalled.lines).items():
                assert seqs == sorted(seqs), f"publisher {p}'s messages out of order at the stalled reader"
            assert m.value("drops_total", reason="connection closed") == 0
            assert not stalled.closed
        else:
            # Overflowed: nothing new reaches it (the publish after the flood included). Once
            # it reads again it gets what was queued, then the connection is closed without a
            # last chunk (this stream has no next link to recover through), so it knows to
            # reconnect: what it got plus what was reported dropped is everything published.
            await stalled.wait(reactor, lambda: stalled.closed, "the stalled reader cut off", timeout=30)
            m = await scrape(reactor, mport)
            dropped = int(m.value("drops_total", reason=reason))
            got = len(stalled.lines) - 1  # without the opening line
            assert got + dropped == TOTAL + 1, f"stalled reader got {got}, {dropped} reported dropped, {TOTAL + 1} published"
            assert m.value("drops_total", reason="connection closed") == 0
            assert m.value("held_connections", kind="stream") == 1  # the fast one

        growth = flood.peak_rss - rss_before
        print(f"flood via {via} ({overflow}): {TOTAL} x {SIZE} B in {elapsed:.2f} s, {dropped} dropped, "
              f"RSS +{growth} KiB at peak, first publish after it {latency * 1000:.0f} ms")
        assert growth < RSS_BOUND_KB, f"RSS rose {growth} KiB during the flood"
        await still_serves(reactor, proxy, "flood")
        assert_clean_log(proxy)

        # Every drop is in the log too: the rate-limited lines name the connection and the
        # channel, and each counts the drops since the previous line, so that the lines add
        # up to the metric once the flood is over (at most a second's worth may wait).
        conn = logged[0]
        m = await scrape(reactor, mport)
        all_drops = int(sum(m.get("drops_total", {}).values()))
        try:
            await poll_until(reactor, lambda: _logged_drops(proxy.output, conn) == all_drops, timeout=3, what="the log to account for every drop")
        except AssertionError:
            raise AssertionError(
                f"{all_drops} drops counted for connection {conn} on channel flood, but the log reports only"
                f" {_logged_drops(proxy.output, conn)}:\n"
                + "\n".join(line for line in proxy.output.splitlines() if "dropped message" in line)
            ) from None
    finally:
        if flood is not None:
            flood.close()
        for reader in readers:
            reader.transport.abortConnection()
        await proxy.stop()
