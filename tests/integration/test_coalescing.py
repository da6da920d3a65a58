"""
Coalescing and backpressure end to end (issue 14, items 2 and 3), on the real C{twistd -n pushpin}:
a burst to many streams reaches every stream once and in order; with a small bound on
waiting deliveries, a ZeroMQ flood holds the PULL input back (logged) and is then released,
nothing lost; an HTTP publish answered while deliveries are behind is still answered.
"""

from __future__ import annotations

import json

import pytest_twisted
import zmq


from tests.stress.support import open_stream

from .harness import poll_until, raw_request, start_proxy

STREAMS = 40

def _body(items: list) -> bytes:
    return json.dumps({"items": items}).encode()


async def _publish(reactor, port: int, items: list) -> bytes:
    body = _body(items)
    client = await raw_request(
        reactor, port,
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        until=b"Published",
    )
    return client.received


def _expected(reader, texts):
    return reader.lines[1:] == [t.rstrip("\n").encode() for t in texts]


@pytest_twisted.ensureDeferred
async def test_a_burst_of_publishes_reaches_every_stream_once_and_in_order(reactor, tmp_path):
    """Publishes sent back to back, one answer at a time, reach each of many streams exactly once, in order."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    readers = []
    try:
        for _ in range(STREAMS):
            readers.append(await open_stream(reactor, proxy.client_port, b"/stream?channel=burst"))
        texts = [f"m{i}\n" for i in range(60)]
        for text in texts:
            answer = await _publish(reactor, proxy.control_port, [{"channel": "burst", "formats": {"http-stream": {"content": text}}}])
            assert b" 200 OK" in answer
        await poll_until(reactor, lambda: all(len(r.lines) >= len(texts) + 1 for r in readers), what="every message on every stream")
        assert all(_expected(r, texts) for r in readers), [r.lines[:5] for r in readers if not _expected(r, texts)][:2]
    finally:
        for r in readers:
            r.transport.loseConnection()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_over_the_bound_a_zeromq_flood_is_held_back_and_then_released_with_nothing_lost(reactor, tmp_path):
    """With a small delivery_pending_max, a PUSH flood pauses the PULL input (logged), resumes it, and every stream gets every message in order."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], delivery_pending_max="4096")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    readers = []
    try:
        match = await proxy.wait_for_log(r"publish-pull bound to (tcp://[\d.]+:\d+)")
        push.connect(match.group(1))
        for _ in range(STREAMS):
            readers.append(await open_stream(reactor, proxy.client_port, b"/stream?channel=flood"))
        texts = [f"{i:05d} " + "x" * 1000 + "\n" for i in range(1500)]
        for text in texts:
            push.send(b"J" + json.dumps({"channel": "flood", "formats": {"http-stream": {"content": text}}}).encode())
        await poll_until(reactor, lambda: all(len(r.lines) >= len(texts) + 1 for r in readers), what="the whole flood on every stream")
        assert all(_expected(r, texts) for r in readers)
        await proxy.wait_for_log(r"publishers held back")
        await proxy.wait_for_log(r"publishers released")
        # and a publish afterwards goes out as before
        answer = await _publish(reactor, proxy.control_port, [{"channel": "flood", "formats": {"http-stream": {"content": "after\n"}}}])
        assert b" 200 OK" in answer
        await poll_until(reactor, lambda: all(r.lines[-1:] == [b"after"] for r in readers), what="the publish after the flood")
    finally:
        push.close()
        ctx.term()
        for r in readers:
            r.transport.loseConnection()
        await proxy.stop()
