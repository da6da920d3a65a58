"""
Helpers for the ecosystem tests: an origin in a child process that tells its port, and an
HTTP client that de-chunks the body and reads it as Server-Sent Events. Every wait has a
deadline (L{tests.integration.harness.Waiter}); nothing sleeps.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass

from twisted.internet import defer, protocol

from tests.integration.harness import DEADLINE, RawClient, Waiter, child_env, raw_connect

__all__ = ["OriginProcess", "SseEvent", "StreamClient", "node_binary", "open_stream",
           "parse_events", "start_origin_process"]


class OriginProcess(protocol.ProcessProtocol):
    """An origin server in a child process; its output is kept for the test's failure report."""

    def __init__(self) -> None:
        self.output = ""
        self.waiter = Waiter()
        self.ended: defer.Deferred = defer.Deferred()
        self.exited = False
        self.port = 0

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        self.waiter.check()

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.exited = True
        self.waiter.check()
        self.ended.callback(None)

    def wait_for_output(self, reactor, pattern: str, timeout: float = DEADLINE) -> defer.Deferred:
        """Fires with the first match of C{pattern} in the output; fails if the origin exits first."""
        rx = re.compile(pattern)

        def found():
            match = rx.search(self.output)
            if match is None and self.exited:
                raise AssertionError(f"origin exited before printing {pattern!r}:\n{self.output}")
            return match

        return self.waiter.wait(reactor, found, timeout, f"origin output {pattern!r}")

    def send_line(self, line: str) -> None:
        """Write one line to the origin's stdin."""
        self.transport.write(line.encode() + b"\n")

    async def stop(self, reactor) -> None:
        """SIGTERM and wait for the exit (with a deadline); print the output for failures."""
        if not self.exited:
            self.transport.signalProcess("TERM")
            self.ended.addTimeout(DEADLINE, reactor)
            await self.ended
        print(f"---- origin output ----\n{self.output}")


async def start_origin_process(reactor, argv: list[str], cwd: str,
                               env: dict[str, str] | None = None) -> OriginProcess:
    """Spawn an origin that prints C{origin port N}; wait for that line, note the port."""
    proc = OriginProcess()
    reactor.spawnProcess(proc, argv[0], argv, env={**child_env(), **(env or {})}, path=cwd)
    try:
        match = await proc.wait_for_output(reactor, r"origin port (\d+)")
    except Exception:
        await proc.stop(reactor)
        raise
    proc.port = int(match.group(1))
    return proc


def node_binary() -> str:
    """The node binary's path, or "" when Node.js is not installed (.ci/run installs it)."""
    return shutil.which("node") or ""


@dataclass(frozen=True)
class SseEvent:
    """One Server-Sent Event as an EventSource would dispatch it."""

    type: str
    id: str | None
    data: str


def parse_events(body: bytes) -> list[SseEvent]:
    """The complete events in an SSE body (comments and the partial last event are left out)."""
    events = []
    text = body.decode("utf-8", "replace").replace("\r\n", "\n")
    blocks = text.split("\n\n")
    for block in blocks[:-1]:  # the last piece is not terminated yet
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        if not fields:
            continue
        events.append(SseEvent(fields.get("event", ["message"])[-1],
                               fields["id"][-1] if "id" in fields else None,
                               "\n".join(fields.get("data", []))))
    return events


class StreamClient:
    """One HTTP/1.1 request on a raw connection; the response's head and de-chunked body."""

    def __init__(self, raw: RawClient) -> None:
        self.raw = raw

    def _split(self) -> tuple[bytes, bytes] | None:
        head, sep, rest = self.raw.received.partition(b"\r\n\r\n")
        return (head, rest) if sep else None

    @property
    def head(self) -> bytes:
        parts = self._split()
        return parts[0] if parts else b""

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1]) if self.head else 0

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None

    @property
    def body(self) -> bytes:
        parts = self._split()
        if parts is None:
            return b""
        if (self.header("transfer-encoding") or "").lower() != "chunked":
            return parts[1]
        out, rest = b"", parts[1]
        while True:
            size_line, sep, after = rest.partition(b"\r\n")
            if not sep:
                return out
            size = int(size_line.split(b";")[0], 16)
            if size == 0 or len(after) < size:
                return out + (after[:size] if size else b"")
            out += after[:size]
            rest = after[size + 2:]

    @property
    def events(self) -> list[SseEvent]:
        return parse_events(self.body)

    def wait(self, reactor, predicate, what: str, timeout: float = DEADLINE) -> defer.Deferred:
        """Fires once C{predicate(self)} is true (re-checked on every byte received)."""
        return self.raw.waiter.wait(reactor, lambda: predicate(self), timeout,
                                    f"{what}; got {self.raw.received[-600:]!r}")

    def wait_events(self, reactor, count: int, timeout: float = DEADLINE) -> defer.Deferred:
        """Fires with the events once at least C{count} complete ones arrived."""
        return self.wait(reactor, lambda c: len(c.events) >= count and c.events,
                         f"{count} SSE events", timeout)

    def close(self) -> None:
        self.raw.transport.loseConnection()


async def open_stream(reactor, port: int, target: str, headers: dict[str, str] | None = None,
                      method: str = "GET", body: bytes = b"") -> StreamClient:
    """Send one request to the proxy; return the client once the response head arrived."""
    raw = await raw_connect(reactor, port)
    lines = [f"{method} {target} HTTP/1.1", "Host: example.com"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    raw.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    client = StreamClient(raw)
    await client.wait(reactor, lambda c: c.head, "the response head")
    return client
