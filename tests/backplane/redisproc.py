"""
A real C{redis-server} (the distribution's package) for tests: started on a free loopback
port with no persistence, waited for until it accepts connections, stopped (and restartable
on the same port) by the test. Nothing sleeps: waits are on its output, with a deadline.
"""

from __future__ import annotations

import shutil
import socket
from typing import Any

from twisted.internet import defer, protocol

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RedisProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.ready.called and b"Ready to accept connections" in self.output:
            self.ready.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.ready.called:
            self.ready.errback(AssertionError(f"redis-server ended before it was ready:\n{self.output.decode(errors='replace')}"))
        self.ended.callback(None)


class RedisServer:
    """One redis-server on 127.0.0.1:C{port}; L{start}/L{stop} may be called again (same port)."""

    def __init__(self, reactor: Any, port: int | None = None, *extra: str) -> None:
        self.reactor = reactor
        self.port = port or free_port()
        self.extra = extra
        self._proc: _RedisProcess | None = None
        self._transport: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> "RedisServer":
        proc = self._proc = _RedisProcess()
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--protected-mode", "yes", *self.extra]
        self._transport = self.reactor.spawnProcess(proc, REDIS_SERVER, argv, env=None)
        proc.ready.addTimeout(DEADLINE, self.reactor)
        await proc.ready
        return self

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.ended.called:
            return
        try:
            self._transport.signalProcess("KILL")  # as a crash would: no goodbye to the clients
        except Exception:
            pass
        proc.ended.addTimeout(DEADLINE, self.reactor)
        await proc.ended
