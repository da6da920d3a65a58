"""
Descriptors and memory after churn (issue 15, item 3): rounds of 500 held streams, each held
through a real origin (C{Grip-Hold: stream}), served a publish, then reset by their clients.
Once churn ends the proxy's open descriptors come back to where they started, within a
handful, and repeated rounds do not ratchet its RSS up.

What held the descriptors: the origin connection pool. A round opens its streams 50 at a
time, so 50 origin connections are made, each answers one hold request and goes idle; the
pool kept every one of them (up to C{max_idle}, 64) for its whole C{idle_timeout} (240 s),
so the count stayed 50-64 above its start for four minutes after every burst. The pool now
keeps C{warm} (4) idle connections per origin for that long and closes a burst's surplus once
idle C{surplus_timeout} (10 s) seconds.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted


from ..integration.harness import ScriptedOrigin, poll_until, raw_connect, start_origin, start_proxy
from .support import assert_alive, assert_clean_log, fd_count, gather, metrics_port, poll_scrape, publish, rss_kb, scaled, scrape

ROUNDS = 6
#: held streams per round
PER_ROUND = scaled(500)
#: descriptors the proxy may hold above its start once churn is over: the origin pool's 4
#: warm idle connections (kept for reuse by design), and slack for one more of anything
HANDFUL = 8
#: how long after churn ends the descriptors may take to come back, in seconds: the pool's
#: surplus timeout (10 s) plus its sweep interval (5 s) plus slack
SETTLE = 30.0
#: RSS after a round, against the round before, in KiB. Measured with tracemalloc, the
#: proxy's Python heap after each round is flat to within 0.3 MiB; RSS above that is the
#: allocator keeping freed memory (pymalloc arenas, and glibc arenas of the resolver's
#: threads), which in a 20-round run rose 4.4 MiB over rounds 2-9, in steps, and then stayed
#: flat. Round 1 is the warm-up (the high-water mark of 500 streams at once, +6 MiB) and is
#: not compared. A leak grows RSS every round by the same amount (2 KiB per stream: 1 MiB a
#: round); the allocator's keeping grows it in steps, with flat rounds between. So: at least
#: one of the last three rounds is flat (grew by at most ROUND_FLAT_KB), and the whole growth
#: from round 2 is bounded (RSS_TOLERANCE_KB). A single bound of 5 MiB on the growth alone
#: failed about one run in eight under load, from steps of the allocator's.
ROUND_FLAT_KB = 512
RSS_TOLERANCE_KB = 12 * 1024



class DescriptorsLeft(AssertionError):
    """The proxy still holds more descriptors than it started with, after churn ended."""


def _hold(request: Any) -> bytes:
    request.setHeader(b"content-type", b"text/plain")
    request.setHeader(b"grip-hold", b"stream")
    request.setHeader(b"grip-channel", b"churn")
    return b"[stream opened]\n"


@pytest.mark.stress
@pytest_twisted.ensureDeferred
async def test_descriptors_return_to_baseline_and_rss_does_not_ratchet_after_rounds_of_churn(reactor, tmp_path):
    """Rounds of 500 origin-held streams, each served a publish and then reset by its client: every stream gets
    its publish, the descriptors return to their start within a handful once churn ends, and RSS does not grow
    every round (one of the last three is flat) nor past a bound from round 2."""
    origin = ScriptedOrigin()
    origin.handlers[b"/stream"] = _hold
    origin_port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{origin_port.getHost().port}"
    proxy = await start_proxy(reactor, tmp_path, [f"* {target}"], prometheus_port="127.0.0.1:0")
    pid = proxy.transport.pid
    try:
        mport = await metrics_port(proxy)

        async def held(n: int) -> bool:
            return (await scrape(reactor, mport)).value("held_connections", kind="stream") == n

        async def open_one(i: int) -> Any:
            client = await raw_connect(reactor, proxy.client_port)
            client.transport.write(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await client.wait_for(reactor, b"[stream opened]\n")
            return client

        # warm-up: one stream through the whole path, so that lazily made descriptors exist
        (first,) = await gather([0], open_one)
        first.transport.abortConnection()
        await poll_scrape(reactor, lambda: held(0), "warm-up stream released")
        baseline = fd_count(pid)
        fds: list[int] = []
        rss: list[int] = []
        for round_ in range(1, ROUNDS + 1):
            clients = await gather(range(PER_ROUND), open_one)
            await poll_scrape(reactor, lambda: held(PER_ROUND), f"round {round_}: {PER_ROUND} streams held")
            message = f"round {round_}\n".encode()
            await publish(reactor, proxy, "churn", message.decode())
            await poll_until(reactor, lambda: all(message in c.received for c in clients), what=f"round {round_}: every stream served")
            for client in clients:
                client.transport.abortConnection()
            await poll_scrape(reactor, lambda: held(0), f"round {round_}: every stream released")
            fds.append(fd_count(pid))
            rss.append(rss_kb(pid))
            assert_alive(proxy)
        print(f"churn descriptors: {ROUNDS} rounds of {PER_ROUND}; fds at start {baseline}, after each round {fds}; RSS KiB after each round {rss}")
        growth = [after - before for before, after in zip(rss[1:], rss[2:])]
        assert min(growth[-3:]) <= ROUND_FLAT_KB, f"RSS grows every round (KiB after each round: {rss})"
        assert rss[-1] - rss[1] <= RSS_TOLERANCE_KB, f"RSS ratchets up over the rounds (KiB after each round: {rss})"
        assert_clean_log(proxy)
        try:
            await poll_until(reactor, lambda: fd_count(pid) <= baseline + HANDFUL, timeout=SETTLE, what="descriptors back to their start", interval=0.5)
        except AssertionError:
            raise DescriptorsLeft(
                f"{fd_count(pid)} descriptors open {SETTLE:.0f} s after churn ended, {baseline} at the start (after each round: {fds})"
            ) from None
        print(f"churn descriptors: back to {fd_count(pid)} once churn ended")
    finally:
        await proxy.stop()
        await origin_port.stopListening()
