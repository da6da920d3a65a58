"""
Shared tools for the stress tests: the scale knob, the proxy's RSS and open descriptors
read from C{/proc}, its Prometheus metrics, a stream reader that parses chunked bodies as
they arrive (a million-byte C{+=} would make the test, not the proxy, the bottleneck), raw
WebSocket handshakes, hypothesis payloads for the async tests, a proxy in front of a
scripted origin, and the health checks every stress test ends with.

Everything waits on events with deadlines (L{Waiter}, L{poll_until}); nothing sleeps.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Iterable

from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from ..integration.harness import DEADLINE, RunningProxy, ScriptedOrigin, Waiter, poll_until, raw_request, start_origin, start_proxy

__all__ = [
    "SCALE",
    "scaled",
    "rss_kb",
    "fd_count",
    "sockets_to",
    "metrics_port",
    "scrape",
    "poll_scrape",
    "StreamReader",
    "open_stream",
    "publish",
    "publish_items",
    "stream_item",
    "WS_HANDSHAKE",
    "ws_frame",
    "assert_alive",
    "assert_clean_log",
    "still_serves",
    "gather",
    "turn",
    "Metrics",
    "EXAMPLES",
    "examples",
    "json_values",
    "origin_env",
]

#: PUSHPIN_TX_STRESS_SCALE multiplies wave sizes and flood lengths (1: the CI size).
SCALE = max(1, int(os.environ.get("PUSHPIN_TX_STRESS_SCALE", "1") or "1"))


def scaled(n: int) -> int:
    """C{n} times the configured scale."""
    return n * SCALE


# --- the process, seen from /proc ----------------------------------------------------------


def rss_kb(pid: int) -> int:
    """Resident set size of C{pid} in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    """How many file descriptors C{pid} has open (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def sockets_to(pid: int, port: int) -> int:
    """
    How many of C{pid}'s descriptors are TCP connections to 127.0.0.1:C{port} (from
    /proc/PID/net/tcp, whose remote address column is hex "0100007F:PORT"): the origin
    pool's, apart from the clients' own.
    """
    peer = f"0100007F:{port:04X}"
    inodes = set()
    with open(f"/proc/{pid}/net/tcp") as f:
        next(f)  # the header
        for line in f:
            fields = line.split()
            if fields[2] == peer:
                inodes.add(f"socket:[{fields[9]}]")
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") in inodes:
                count += 1
        except FileNotFoundError:  # closed meanwhile
            pass
    return count


# --- metrics ---------------------------------------------------------------------------------


async def metrics_port(proxy: RunningProxy) -> int:
    """The port of C{prometheus_port="127.0.0.1:0"}, from the proxy's log."""
    match = await proxy.wait_for_log(r"prometheus metrics listening on [^:]+:(\d+)")
    return int(match.group(1))


class Metrics(dict):
    """Samples by name, then by sorted label pairs: C{m.get_value("held_connections", kind="ws")}."""

    def value(self, name: str, **labels: str) -> float:
        """The sample's value, 0 when the series does not exist (yet)."""
        return self.get(name, {}).get(tuple(sorted(labels.items())), 0)


async def scrape(reactor: Any, port: int) -> Metrics:
    """One Prometheus scrape of the proxy's metrics listener."""
    client = await raw_request(reactor, port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    out = Metrics()
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def poll_scrape(reactor: Any, check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    """L{poll_until} for a check that has to wait itself (a metrics scrape), one at a time."""
    state = {"ok": False, "busy": False}

    def done(ok: object) -> None:
        state["ok"], state["busy"] = bool(ok), False

    def predicate() -> bool:
        if not state["busy"] and not state["ok"]:
            state["busy"] = True
            defer.ensureDeferred(check()).addCallback(done)
        return state["ok"]

    await poll_until(reactor, predicate, timeout, what, interval=0.05)


# --- clients ---------------------------------------------------------------------------------


class StreamReader(protocol.Protocol):
    """
    One HTTP response, parsed as it arrives: the head, then the chunked body split into
    lines (every test message ends with a newline). Only unparsed bytes are kept.
    """

    def __init__(self) -> None:
        self.head: bytes | None = None
        self.status = 0
        self.lines: list[bytes] = []
        self.body_bytes = 0
        self.ended = False
        self.closed = False
        self.waiter = Waiter()
        self._buf = b""
        self._partial = b""
        self.transport: Any = None

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data
        if self.head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            self.head, buf = buf[:end], buf[end + 4 :]
            self.status = int(self.head.split(b" ", 2)[1])
        while not self.ended:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol].split(b";", 1)[0], 16)
            if len(buf) < eol + 2 + size + 2:
                break
            payload, buf = buf[eol + 2 : eol + 2 + size], buf[eol + 4 + size :]
            if size == 0:
                self.ended = True
                break
            self.body_bytes += size
            text = self._partial + payload
            *complete, self._partial = text.split(b"\n")
            self.lines.extend(complete)
        self._buf = buf
        self.waiter.check()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True
        self.waiter.check()

    def wait(self, reactor: Any, predicate: Callable[[], object], what: str, timeout: float = DEADLINE) -> defer.Deferred:
        """Fires once C{predicate()} is true (checked on every read and on close)."""
        return self.waiter.wait(reactor, predicate, timeout, what)


async def open_stream(reactor: Any, port: int, path: bytes, host: bytes = b"localhost", opened: bytes = b"[stream opened]") -> StreamReader:
    """A held stream through the proxy, returned once its first line has arrived."""
    reader = StreamReader()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(protocol.Factory.forProtocol(lambda: reader))
    reader.transport.write(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host))
    await reader.wait(reactor, lambda: reader.lines or reader.closed, f"stream {path!r} opened")
    assert reader.status == 200 and reader.lines[0] == opened, (reader.head, reader.lines[:1])
    return reader


def stream_item(channel: str, content: str) -> dict:
    """A publish item carrying one http-stream chunk."""
    return {"channel": channel, "formats": {"http-stream": {"content": content}}}


async def publish_items(reactor: Any, control_port: int, items: list[dict]) -> bytes:
    """POST C{items} to the control API; returns the whole answer."""
    body = json.dumps({"items": items}).encode()
    client = await raw_request(
        reactor,
        control_port,
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    return client.received


async def publish(reactor: Any, proxy: RunningProxy, channel: str, content: str, ws: bool = False) -> None:
    """Publish one message (http-stream, and ws-message too if C{ws}); asserts it was accepted."""
    item = stream_item(channel, content)
    if ws:
        item["formats"]["ws-message"] = {"content": content}
    answer = await publish_items(reactor, proxy.control_port, [item])
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"Published\n"), answer


#: A client WebSocket handshake; C{%} with (path, host).
WS_HANDSHAKE = (
    b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def ws_frame(payload: bytes, opcode: int = 1, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """One final, masked client frame (RFC 6455 §5.2), written by hand to send broken ones too."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


# --- hypothesis -----------------------------------------------------------------------------

#: payloads drawn per surface
EXAMPLES = 30


def examples(strategy: st.SearchStrategy, n: int = EXAMPLES) -> list[Any]:
    """
    Up to C{n} distinct values drawn by hypothesis from C{strategy} (generation only, no shrinking).

    Hypothesis is not async-aware and pytest-twisted runs every test inside the reactor, so
    the payloads are drawn first and sent afterwards; a failing assertion names its payload.
    """
    out: list[Any] = []

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


#: JSON values with the keys publish items and instructs use, nested a little
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(["items", "channel", "formats", "http-stream", "content", "id", "prev-id", "code", "ws-message", "action", "x"]),
        inner,
        max_size=4,
    ),
    max_leaves=12,
)


# --- origins ---------------------------------------------------------------------------------


async def origin_env(reactor: Any, tmp_path: Any, origin: ScriptedOrigin, **overrides: str) -> tuple[Any, Any]:
    """The test target for Host: localhost, a WebSocket-over-HTTP route under /woh, the origin for the rest."""
    port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{port.getHost().port}"
    routes = ["localhost test", f"*,path_beg=/woh {target},over_http", f"* {target}"]
    proxy = await start_proxy(reactor, tmp_path, routes, **overrides)
    return port, proxy


# --- health ----------------------------------------------------------------------------------


def assert_alive(proxy: RunningProxy) -> None:
    """The proxy process has not exited."""
    assert proxy.proc.exit_code is None and proxy.proc.exit_signal is None, (
        f"proxy died (exit {proxy.proc.exit_code}, signal {proxy.proc.exit_signal}):\n{proxy.output[-4000:]}"
    )


_TRACE = re.compile(r"Traceback \(most recent call last\)|Unhandled (error|Error)|\[CRITICAL\]")


def assert_clean_log(proxy: RunningProxy) -> None:
    """No traceback or unhandled error in the proxy's log: every bad input was handled on purpose."""
    match = _TRACE.search(proxy.output)
    if match:
        start = max(0, match.start() - 1500)
        raise AssertionError("proxy logged an unexpected failure:\n" + proxy.output[start : match.start() + 2500])


async def still_serves(reactor: Any, proxy: RunningProxy, tag: str) -> None:
    """A plain GET is answered 200 and a fresh stream gets a publish: the proxy keeps serving."""
    assert_alive(proxy)
    hello = await raw_request(reactor, proxy.client_port, b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert hello.received.startswith(b"HTTP/1.1 200 OK\r\n") and hello.received.endswith(b"Hello from the Pushpin test handler!\n"), hello.received
    channel = f"health-{tag}"
    stream = await open_stream(reactor, proxy.client_port, b"/stream?channel=" + channel.encode())
    await publish(reactor, proxy, channel, f"alive {tag}\n")
    await stream.wait(reactor, lambda: f"alive {tag}".encode() in stream.lines, "publish after the abuse")
    stream.transport.abortConnection()
    assert_alive(proxy)


async def gather(items: Iterable[Any], make: Callable[[Any], Any], batch: int = 50) -> list[Any]:
    """Run C{make(item)} coroutines concurrently, C{batch} at a time (the listen backlog is 50)."""
    items = list(items)
    out: list[Any] = []
    for start in range(0, len(items), batch):
        ds = [defer.ensureDeferred(make(x)) for x in items[start : start + batch]]
        out.extend(await defer.gatherResults(ds, consumeErrors=True))
    return out


def turn(reactor: Any) -> defer.Deferred:
    """Let the reactor run one round (read what has arrived) before going on."""
    return task.deferLater(reactor, 0, lambda: None)
