"""
Helpers for tests that run several pushpin-tx instances as one: start N of them (each in its
own directory, on its own port-0 listeners), ask Redis what it knows, and wait on either.
Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from pushpin_tx.backplane.resp import RespProtocol
from tests.integration.harness import DEADLINE, raw_request, start_proxy


async def start_instances(reactor, tmp_path: Path, count: int, routes: list[str], **overrides: str) -> list[Any]:
    """C{count} instances with the same configuration, in C{tmp_path}/i0, i1, ... (stopped again if one fails)."""
    instances: list[Any] = []
    try:
        for i in range(count):
            directory = tmp_path / f"i{i}"
            directory.mkdir()
            instances.append(await start_proxy(reactor, directory, routes, **overrides))
    except BaseException:
        await stop_instances(instances)
        raise
    return instances


async def stop_instances(instances: list[Any]) -> list[int | None]:
    """Stop every instance (all of them, even if one fails to); their exit codes."""
    codes = []
    for instance in instances:
        codes.append(await instance.stop())
    return codes


async def publish(reactor, instance: Any, items: list[dict]) -> bytes:
    """POST /publish/ to one instance's control API; its whole answer."""
    body = json.dumps({"items": items}).encode()
    client = await raw_request(
        reactor,
        instance.control_port,
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (len(body), body),
    )
    assert client.received.startswith(b"HTTP/1.1 200"), client.received
    return client.received


async def redis_command(reactor, port: int, *args: bytes | str | int) -> Any:
    """One command on a fresh RESP2 connection to 127.0.0.1:C{port}; its reply."""
    proto = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                  RespProtocol(lambda push: None, lambda reason: None))
    try:
        return await proto.command(*args)
    finally:
        proto.transport.loseConnection()


async def until(reactor, check: Callable[[], Any], what: str, timeout: float = DEADLINE, interval: float = 0.02) -> Any:
    """Await C{check()} (which may return a Deferred or coroutine) until it is true, or fail at the deadline."""
    deadline = reactor.seconds() + timeout
    while True:
        value = check()
        if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
            value = await value
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await task.deferLater(reactor, interval, lambda: None)


async def wait_subscribed(reactor, redis_port: int, channel: str, count: int, db: int = 0) -> None:
    """Until Redis counts C{count} subscribers (instances) to the backplane channel of C{channel}."""
    name = f"pushpin-tx/{db}/{channel}"

    async def numsub() -> bool:
        reply = await redis_command(reactor, redis_port, "PUBSUB", "NUMSUB", name)
        return reply[1] == count

    await until(reactor, numsub, f"{count} subscriber(s) to {name}")
