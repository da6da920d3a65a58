"""
Soak: many held connections (streams, long-polls and WebSockets mixed) against the real
C{twistd -n pushpin} for minutes, under a steady publish rate and a trickle of churn, with
the figures a reader needs to judge it: the proxy's RSS and open descriptors over time,
messages published, delivered and lost, duplicates, and errors logged.

The long run (issue 15, item 9; about 11 minutes of one core for the proxy and most of one
for the clients)::

    python -m tests.stress.soak                    # 10,000 connections, 10 minutes
    python -m tests.stress.soak --connections 2000 --seconds 60 --warmup 20   # the CI size

It exits 0 when every check holds: RSS and descriptors flat after the warm-up (the first
minute), every message delivered exactly once and in order to every connection that was
held when it was published, no connection dropped by the proxy, nothing logged at error
level. C{tests/stress/test_soak.py} runs the short version in the stress suite.

How "every message delivered" is judged, per connection (the clients and the publisher share
one process and one clock, so "before" and "after" are causal):

  - a stream or a WebSocket is held from the moment its C{[stream opened]} line or its
    C{101} arrives (the proxy has subscribed it by then); it must receive every publish
    whose control request was sent after that, until it is closed (a churned connection is
    excused a message whose fan-out to its channel was still going on less than
    C{CLOSE_GRACE} seconds before it closed: it may not have been written to it yet, and the
    proxy logs what it had queued for it as dropped, "connection closed");
  - a long-poll is held from C{poll_grace} seconds after each poll request is sent until its
    response arrives; it must receive the publish sent within that window (one per poll; the
    publish interval per channel is many times the re-poll time);
  - received items must not repeat and must come in order.

The clients are lean protocols written for this (chunked stream lines, a minimal WebSocket
frame reader that answers pings, keep-alive long-polls), so that 10,000 connections fit in
one client process; the proxy inherits the raised descriptor limit.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from ..integration.harness import RunningProxy, Waiter, _ProxyProcess, child_env, poll_until, proxy_argv, raw_request, write_config
from .support import fd_count, rss_kb

#: seconds a churned connection is excused for publishes that went out just before it closed
CLOSE_GRACE = 1.0
#: the drain after the steady state ends: it stops when nothing arrived for QUIET seconds
QUIET = 10.0
DRAIN_MAX = 180.0
#: the kinds of connection, in the order of the mix
KINDS = ("stream", "ws", "poll")
_ERRORS = re.compile(r"\[ERR\]|\[CRITICAL\]|Traceback \(most recent call last\)|Unhandled (error|Error)")
_WARNINGS = re.compile(r"\[WARN\]")


@dataclass
class SoakConfig:
    """What to run: how many connections, how long, how fast."""

    connections: int = 10000
    #: seconds of steady state (publishing and churn), after every connection is open
    seconds: float = 600.0
    #: seconds at the start of the steady state not judged for flatness
    warmup: float = 60.0
    #: publishes per second, round robin over the channels
    rate: float = 30.0
    #: connections closed and replaced per second
    churn: float = 5.0
    #: seconds between samples of RSS and descriptors
    sample_every: float = 10.0
    #: share of each kind (stream, ws, poll)
    mix: tuple[float, float, float] = (0.4, 0.3, 0.3)
    #: connections per channel (so channels = connections / this)
    per_channel: int = 100
    #: how much RSS may move after the warm-up, in KiB
    rss_tolerance_kb: int = 8 * 1024
    #: how much the descriptors' floor may rise after the warm-up (see L{SoakResult.problems})
    fd_tolerance: int = 32
    #: connections opened at once while setting up (the listen backlog is 50)
    open_batch: int = 50
    #: seconds after a poll request is sent before the poll counts as held (the proxy parses
    #: it, asks the test origin and subscribes it; on an idle machine in milliseconds)
    poll_grace: float = 1.0
    #: "zmq" (one PUSH socket into the proxy's PULL: publishes arrive in order) or "http"
    #: (one control API request per publish, several in flight: on a loaded machine their
    #: connections are accepted out of order, so a channel's publishes can be reordered)
    publish_via: str = "zmq"


@dataclass
class Sample:
    at: float
    rss_kb: int
    fds: int
    live: int
    published: int
    delivered: int
    #: publishes sent and not yet answered
    in_flight: int = 0


@dataclass
class SoakResult:
    """The figures of one run, and what did not hold."""

    config: SoakConfig
    samples: list[Sample] = field(default_factory=list)
    setup_seconds: float = 0.0
    published: int = 0
    publish_failures: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    opened: dict[str, int] = field(default_factory=dict)
    churned: int = 0
    held_back: int = 0
    dropped_by_proxy: int = 0
    failed_opens: int = 0
    errors_logged: int = 0
    warnings_logged: int = 0
    #: seconds the deliveries took to end after the last publish
    drain_seconds: float = 0.0
    #: lines the proxy logged in all
    log_lines: int = 0
    error_lines: list[str] = field(default_factory=list)
    warning_lines: list[str] = field(default_factory=list)
    #: per kind: [expected, delivered, lost]
    by_kind: dict[str, list[int]] = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)

    def steady(self) -> list[Sample]:
        """Samples after the warm-up."""
        return [s for s in self.samples if s.at >= self.config.warmup]

    def problems(self) -> list[str]:
        """Every check that did not hold, in words; empty when the soak passed."""
        out = []
        steady = self.steady()
        if len(steady) >= 2:
            rss = [s.rss_kb for s in steady]
            if max(rss) - min(rss) > self.config.rss_tolerance_kb:
                out.append(f"RSS not flat after the warm-up: {min(rss)}..{max(rss)} KiB (tolerance {self.config.rss_tolerance_kb})")
            # Descriptors move with what is in flight (publishes waiting for their answer, churned
            # connections being replaced), so a leak is judged on the floor: the lowest count in
            # the last third of the samples against the lowest in the first third.
            fds = [s.fds for s in steady]
            k = max(1, len(fds) // 3)
            drift = min(fds[-k:]) - min(fds[:k])
            if drift > self.config.fd_tolerance:
                out.append(f"descriptors grew after the warm-up: their floor rose by {drift} ({fds}; tolerance {self.config.fd_tolerance})")
        else:
            out.append(f"only {len(steady)} samples after the warm-up")
        for what, n in (
            ("messages lost", self.lost),
            ("duplicates", self.duplicates),
            ("out of order", self.out_of_order),
            ("publishes refused", self.publish_failures),
            ("connections dropped by the proxy", self.dropped_by_proxy),
            ("connections that failed to open", self.failed_opens),
            ("errors logged", self.errors_logged),
        ):
            if n:
                out.append(f"{what}: {n}")
        if not self.published:
            out.append("nothing was published")
        return out

    def report(self) -> str:
        """The figures, as printed at the end of a run."""
        c = self.config
        lines = [
            f"soak: {c.connections} connections ({', '.join(f'{n} {k}' for k, n in self.opened.items())} opened,"
            f" churn included), {c.seconds:.0f} s steady after {self.setup_seconds:.1f} s to open them;"
            f" {c.rate:g} publishes/s, {c.churn:g} connections churned/s",
            "     t(s)   RSS(KiB)    fds    live  published  delivered  publishing",
        ]
        for s in self.samples:
            lines.append(f"  {s.at:7.0f} {s.rss_kb:10d} {s.fds:6d} {s.live:7d} {s.published:10d} {s.delivered:10d} {s.in_flight:11d}")
        steady = self.steady()
        if steady:
            rss, fds = [s.rss_kb for s in steady], [s.fds for s in steady]
            lines.append(f"  after the warm-up ({c.warmup:.0f} s): RSS {min(rss)}..{max(rss)} KiB, fds {min(fds)}..{max(fds)}")
        lines += [
            f"  published {self.published} ({self.published / max(c.seconds, 1):.1f}/s achieved; refused {self.publish_failures}); deliveries expected {self.expected},"
            f" delivered {self.delivered}, lost {self.lost}, duplicates {self.duplicates}, out of order {self.out_of_order}",
            "  by kind: " + ", ".join(f"{k} expected {e} delivered {d} lost {n}" for k, (e, d, n) in self.by_kind.items()),
            f"  deliveries ended {self.drain_seconds:.1f} s after the last publish;"
            f" publisher held back by the PUSH queue {self.held_back} times; churned {self.churned}; dropped by the proxy {self.dropped_by_proxy}; failed to open {self.failed_opens}",
            f"  log: {self.log_lines} lines, {self.errors_logged} errors, {self.warnings_logged} warnings",
        ]
        lines += [f"    lost: {x}" for x in self.lost_examples[:10]]
        lines += [f"    error: {x}" for x in self.error_lines[:10]]
        lines += [f"    warning: {x}" for x in self.warning_lines[:3]]
        problems = self.problems()
        lines.append("  PASS" if not problems else "  FAIL: " + "; ".join(problems))
        return "\n".join(lines)


# --- clients ---------------------------------------------------------------------------------


class _Client(protocol.Protocol):
    """What every soak connection records: its channel, when it was held, what it received."""

    kind = ""

    def __init__(self, soak: "_Soak", channel: str) -> None:
        self.soak = soak
        self.channel = channel
        self.held_since: float | None = None
        self.closed_at: float | None = None
        self.churned = False
        self.failed = False
        self.seqs: list[int] = []
        self.transport: Any = None
        self.ready: defer.Deferred = defer.Deferred()
        self._buf = b""

    def got(self, payload: bytes) -> None:
        channel, _, seq = payload.partition(b" ")
        if channel.decode() == self.channel and seq.strip().isdigit():
            n = int(seq)
            self.seqs.append(n)
            self.soak.delivered += 1
            self.soak.first_seen.setdefault((self.channel, n), self.soak.now())
            self.soak.last_seen[(self.channel, n)] = self.soak.now()
        else:
            self.soak.strays += 1

    def _opened(self) -> None:
        self.held_since = self.soak.now()
        if not self.ready.called:
            self.ready.callback(self)

    def _fail(self, why: str) -> None:
        self.failed = True
        self.soak.note_failure(f"{self.kind} {self.channel}: {why}")
        if not self.ready.called:
            self.ready.callback(self)
        self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.closed_at = self.soak.now()
        if not self.ready.called:
            self.failed = True
            self.ready.callback(self)
        self.soak.lost_connection(self)


class _Stream(_Client):
    """A held stream: the head, then chunked lines (the first is C{[stream opened]})."""

    kind = "stream"

    def connectionMade(self) -> None:
        self.transport.write(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % self.channel.encode())
        self._head = True
        self._partial = b""

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data
        if self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 200 ") or b"chunked" not in buf[:end].lower():
                self._fail(f"answer {buf[:end][:200]!r}")
                return
            self._head, buf = False, buf[end + 4 :]
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol].split(b";", 1)[0], 16)
            if len(buf) < eol + 4 + size:
                break
            payload, buf = buf[eol + 2 : eol + 2 + size], buf[eol + 4 + size :]
            if size == 0:
                break
            *complete, self._partial = (self._partial + payload).split(b"\n")
            for line in complete:
                if line == b"[stream opened]":
                    self._opened()
                else:
                    self.got(line)
        self._buf = buf


class _WebSocket(_Client):
    """A WebSocket: the handshake, then unmasked server frames; answers pings."""

    kind = "ws"

    def connectionMade(self) -> None:
        self.transport.write(
            b"GET /ws?channel=%s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % self.channel.encode()
        )
        self._head = True

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data
        if self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101 "):
                self._fail(f"answer {buf[:end][:200]!r}")
                return
            self._head, buf = False, buf[end + 4 :]
            self._opened()
        while len(buf) >= 2:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                break
            payload, buf = buf[at : at + n], buf[at + n :]
            if opcode == 1:
                self.got(payload)
            elif opcode == 9:  # ping: pong with the same payload, masked with a zero key
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.soak.note_failure(f"ws {self.channel}: close frame {payload[:2].hex()} from the proxy")
                self.transport.abortConnection()
                return
        self._buf = buf


class _Poll(_Client):
    """A long-poll, re-polled on the same keep-alive connection after each answer."""

    kind = "poll"

    def connectionMade(self) -> None:
        self.windows: list[tuple[float, float]] = []  # (poll sent, answer received)
        self.poll_sent = 0.0
        self._poll()
        self._opened()

    def _poll(self) -> None:
        self.poll_sent = self.soak.now()
        self.transport.write(b"GET /response?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % self.channel.encode())

    def dataReceived(self, data: bytes) -> None:
        buf = self._buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if not head.startswith(b"HTTP/1.1 200 ") or match is None:
                self._fail(f"answer {head[:200]!r}")
                return
            size = int(match.group(1))
            if len(buf) < end + 4 + size:
                break
            body, buf = buf[end + 4 : end + 4 + size], buf[end + 4 + size :]
            self.windows.append((self.poll_sent, self.soak.now()))
            if body != b"nothing for now\n":  # the hold's timeout answer
                self.got(body.rstrip(b"\n"))
            if re.search(rb"(?im)^connection:\s*close", head):
                self.soak.note_failure(f"poll {self.channel}: the proxy closed a keep-alive long-poll")
                return
            self._poll()
        self._buf = buf


_FACTORIES: dict[str, type[_Client]] = {"stream": _Stream, "ws": _WebSocket, "poll": _Poll}


# --- the run ---------------------------------------------------------------------------------


class _Soak:
    """Opens the connections, publishes, churns, samples; then judges what was received."""

    def __init__(self, reactor: Any, proxy: RunningProxy, config: SoakConfig, log: Callable[[str], None]) -> None:
        self.reactor = reactor
        self.proxy = proxy
        self.config = config
        self.log = log
        self.result = SoakResult(config)
        self.live: set[_Client] = set()
        self.all: list[_Client] = []
        self.delivered = 0
        self.strays = 0
        self.failures: list[str] = []
        self.channels: dict[str, list[str]] = {}
        #: per channel: (seq, sent at, answered at: for ZeroMQ, when it was sent)
        self.sent: dict[str, list[tuple[int, float, float]]] = {}
        #: (channel, seq) -> when a client first received it (when the proxy delivered it)
        self.first_seen: dict[tuple[str, int], float] = {}
        #: when the last client of a channel got a message: its fan-out was still going on until then
        self.last_seen: dict[tuple[str, int], float] = {}
        self.push: Any = None
        self.backlog: list[tuple[str, int, bytes]] = []
        self.held_back = 0
        self.in_flight = 0
        self.rng = random.Random(15)
        self.start = 0.0

    def now(self) -> float:
        return self.reactor.seconds()

    def note_failure(self, what: str) -> None:
        self.failures.append(what)

    def lost_connection(self, client: _Client) -> None:
        self.live.discard(client)
        if not client.churned and not client.failed and not self.stopping:
            self.result.dropped_by_proxy += 1
            self.note_failure(f"{client.kind} {client.channel}: closed by the proxy")

    stopping = False

    async def open(self, kind: str, channel: str) -> _Client:
        client = _FACTORIES[kind](self, channel)
        self.all.append(client)
        self.result.opened[kind] = self.result.opened.get(kind, 0) + 1
        try:
            await TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.proxy.client_port, timeout=30).connect(
                protocol.Factory.forProtocol(lambda: client)
            )
        except Exception as e:
            client.failed = True
            self.result.failed_opens += 1
            self.note_failure(f"{kind} {channel}: connect failed: {e}")
            return client
        self.live.add(client)
        ready = client.ready
        ready.addTimeout(30, self.reactor)
        try:
            await ready
        except defer.TimeoutError:
            client.failed = True
            self.note_failure(f"{kind} {channel}: not held after 30 s")
        if client.failed:
            self.result.failed_opens += 1
        return client

    def plan(self) -> list[tuple[str, str]]:
        """(kind, channel) for every initial connection."""
        c = self.config
        out = []
        counts = [int(c.connections * share) for share in c.mix]
        counts[0] += c.connections - sum(counts)
        for kind, n in zip(KINDS, counts):
            channels = [f"{kind}{i}" for i in range(max(1, n // c.per_channel))]
            self.channels[kind] = channels
            for ch in channels:
                self.sent[ch] = []
            out += [(kind, channels[i % len(channels)]) for i in range(n)]
        self.rng.shuffle(out)
        return out

    @staticmethod
    def item(channel: str, seq: int) -> dict[str, Any]:
        kind = channel.rstrip("0123456789")
        text = f"{channel} {seq}"
        formats: dict[str, Any] = {
            "stream": {"http-stream": {"content": text + "\n"}},
            "ws": {"ws-message": {"content": text}},
            "poll": {"http-response": {"body": text + "\n"}},
        }[kind]
        return {"channel": channel, "formats": formats}

    def push_one(self, channel: str, seq: int) -> None:
        """Publish over ZeroMQ, in order: what the PUSH queue has no room for yet waits here."""
        self.backlog.append((channel, seq, b"J" + json.dumps(self.item(channel, seq)).encode()))
        if len(self.backlog) > 1:
            self.held_back += 1
        self.flush_push()

    def flush_push(self) -> bool:
        """Send what waits, in order, until the PUSH queue is full; whether nothing waits any more."""
        import zmq

        while self.backlog:
            ch, n, frame = self.backlog[0]
            try:
                self.push.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return False
            self.backlog.pop(0)
            at = self.now()
            self.sent[ch].append((n, at, at))
            self.result.published += 1
        return True

    async def publish_one(self, channel: str, seq: int) -> None:
        body = json.dumps({"items": [self.item(channel, seq)]}).encode()
        request = b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        sent = self.now()
        self.in_flight += 1
        try:
            client = await raw_request(self.reactor, self.proxy.control_port, request, timeout=30)
            ok = client.received.startswith(b"HTTP/1.1 200 OK\r\n")
        except Exception:
            ok = False
        finally:
            self.in_flight -= 1
        if ok:
            self.sent[channel].append((seq, sent, self.now()))
            self.result.published += 1
        else:
            self.result.publish_failures += 1

    async def run(self) -> SoakResult:
        c = self.config
        t0 = self.now()
        plan = self.plan()
        for i in range(0, len(plan), c.open_batch):
            await defer.gatherResults([defer.ensureDeferred(self.open(k, ch)) for k, ch in plan[i : i + c.open_batch]])
        self.result.setup_seconds = self.now() - t0
        self.log(f"soak: {len(self.live)} connections open in {self.result.setup_seconds:.1f} s")
        self.start = self.now()
        order = [ch for kind in KINDS for ch in self.channels[kind]]
        self.rng.shuffle(order)
        seqs = {ch: 0 for ch in order}
        tick = {"n": 0}
        pending: list[defer.Deferred] = []

        def publish_tick() -> None:
            ch = order[tick["n"] % len(order)]
            tick["n"] += 1
            seqs[ch] += 1
            if self.push is not None:
                self.push_one(ch, seqs[ch])
            else:
                pending.append(defer.ensureDeferred(self.publish_one(ch, seqs[ch])))

        def churn_tick() -> None:
            candidates = [x for x in self.live if x.held_since is not None]
            if not candidates:
                return
            victim = self.rng.choice(candidates)
            victim.churned = True
            self.result.churned += 1
            if self.rng.random() < 0.5:
                victim.transport.abortConnection()
            else:
                victim.transport.loseConnection()
            pending.append(defer.ensureDeferred(self.open(victim.kind, victim.channel)))

        def sample() -> None:
            pid = self.proxy.transport.pid
            s = Sample(self.now() - self.start, rss_kb(pid), fd_count(pid), len(self.live), self.result.published, self.delivered, self.in_flight)
            self.result.samples.append(s)
            self.log(f"  t={s.at:5.0f}s RSS {s.rss_kb} KiB, fds {s.fds}, live {s.live}, published {s.published}, delivered {s.delivered}, publishing {s.in_flight}")

        loops = [task.LoopingCall(publish_tick), task.LoopingCall(sample)]
        loops[0].clock = loops[1].clock = self.reactor
        loops[0].start(1.0 / c.rate, now=False)
        loops[1].start(c.sample_every, now=True)
        if c.churn > 0:
            churn = task.LoopingCall(churn_tick)
            churn.clock = self.reactor
            churn.start(1.0 / c.churn, now=False)
            loops.append(churn)
        await task.deferLater(self.reactor, c.seconds, lambda: None)
        for loop in loops:
            loop.stop()
        sample()
        # drain: every publish sent and answered, every expected delivery in (or a deadline)
        if self.backlog:
            await poll_until(self.reactor, self.flush_push, timeout=30, what="the PUSH backlog sent")
        await defer.DeferredList(pending)
        # A proxy that fell behind (a loaded machine) is still delivering: wait while
        # deliveries keep coming, so that late is not counted as lost; stop once everything
        # expected is in, or nothing arrived for QUIET seconds, or after DRAIN_MAX.
        drain_start = self.now()
        progress = {"n": self.delivered, "at": self.now()}

        def drained() -> bool:
            if self.delivered != progress["n"]:
                progress["n"], progress["at"] = self.delivered, self.now()
            return self.now() - progress["at"] > QUIET or not self.missing()

        try:
            await poll_until(self.reactor, drained, timeout=DRAIN_MAX, what="the deliveries to end", interval=1.0)
        except AssertionError:
            pass
        self.result.drain_seconds = self.now() - drain_start
        self.stopping = True
        self.judge()
        return self.result

    def expected_for(self, client: _Client) -> list[int]:
        sent = self.sent[client.channel]
        if client.held_since is None or client.failed:
            return []
        end = client.closed_at - CLOSE_GRACE if client.closed_at is not None else float("inf")
        seen = self.first_seen
        channel = client.channel
        if isinstance(client, _Poll):
            # held when the proxy delivered it: after the poll was in (plus a grace), before the
            # poll's answer came; one per poll, the first delivered
            windows = list(client.windows)
            if client.closed_at is None:
                windows.append((client.poll_sent, float("inf")))
            out = []
            for start, stop in windows:
                hits = sorted(
                    (seen.get((channel, seq), answered), seq) for seq, at, answered in sent
                    if start + self.config.poll_grace < seen.get((channel, seq), answered) < stop and answered < end
                )
                out += [seq for _, seq in hits[:1]]
            return out
        # sent after the client was held (the proxy had subscribed it), delivered before it closed;
        # a churned client is excused a message whose fan-out to its channel was still going on
        # (the last delivery on the channel came less than CLOSE_GRACE before it closed): under
        # load the proxy writes a channel's connections over several reactor turns, and what it
        # had not yet written to a connection that closed is reported as dropped ("connection
        # closed") in its log, as it must be
        last = self.last_seen if client.closed_at is not None else seen
        return [seq for seq, at, answered in sent
                if at > client.held_since and max(answered, last.get((channel, seq), answered)) < end]

    def missing(self) -> list[tuple[_Client, set[int]]]:
        out = []
        for client in self.all:
            want = set(self.expected_for(client)) - set(client.seqs)
            if want:
                out.append((client, want))
        return out

    def judge(self) -> None:
        r = self.result
        r.delivered = self.delivered
        r.held_back = self.held_back
        for client in self.all:
            expected = self.expected_for(client)
            r.expected += len(expected)
            got = client.seqs
            tally = r.by_kind.setdefault(client.kind, [0, 0, 0])
            tally[0] += len(expected)
            tally[1] += len(got)
            r.duplicates += len(got) - len(set(got))
            r.out_of_order += sum(1 for a, b in zip(got, got[1:]) if b < a)
        for client, want in self.missing():
            r.lost += len(want)
            r.by_kind[client.kind][2] += len(want)
            if len(r.lost_examples) < 10:
                r.lost_examples.append(
                    f"{client.kind} {client.channel} held {client.held_since and client.held_since - self.start:.1f}s"
                    f" closed {client.closed_at and client.closed_at - self.start}: missing {sorted(want)[:5]}, got {client.seqs[-5:]}"
                )
        output = self.proxy.output
        r.error_lines = [line for line in output.splitlines() if _ERRORS.search(line)]
        r.errors_logged = len(r.error_lines)
        r.warning_lines = [line for line in output.splitlines() if _WARNINGS.search(line)]
        r.warnings_logged = len(r.warning_lines)
        r.error_lines += self.failures[:10]


class _LeanLog(_ProxyProcess):
    """
    The proxy's output, kept lean: a long soak logs a line per long-poll (hundreds of
    thousands), and the harness's one growing string would cost the client process more than
    the clients. Keeps the first lines (start-up, ports), every warning and error with the
    lines after it (a traceback), and a short tail; counts the rest.
    """

    HEAD = 300
    CONTEXT = 30

    def __init__(self, waiter: Waiter) -> None:
        super().__init__(waiter)
        self._partial = ""
        self._context = 0
        self.lines = 0
        self.tail: list[str] = []

    def outReceived(self, data: bytes) -> None:
        text = self._partial + data.decode("utf-8", "replace")
        *complete, self._partial = text.split("\n")
        kept = []
        for line in complete:
            self.lines += 1
            if _ERRORS.search(line) or _WARNINGS.search(line):
                self._context = self.CONTEXT
                kept.append(line)
            elif self.lines <= self.HEAD or self._context > 0:
                self._context -= 1
                kept.append(line)
        self.tail = (self.tail + complete)[-200:]
        if kept:
            self.output += "\n".join(kept) + "\n"
        self.waiter.check()

    errReceived = outReceived


async def _start_lean_proxy(reactor: Any, tmp_path: Path, routes: list[str]) -> RunningProxy:
    """L{harness.start_proxy}, with the proxy's output kept by L{_LeanLog}."""
    conf = write_config(tmp_path, routes)
    waiter = Waiter()
    proc = _LeanLog(waiter)
    transport = reactor.spawnProcess(proc, sys.executable, proxy_argv("--config", str(conf)), env=child_env(), path=str(tmp_path))
    running = RunningProxy(reactor, proc, transport, waiter, tmp_path)
    try:
        running.client_port = int((await running.wait_for_log(r"client listening on [^:]+:(\d+)")).group(1))
        running.control_port = int((await running.wait_for_log(r"control API listening on [^:]+:(\d+)")).group(1))
    except Exception:
        await running.stop()
        raise AssertionError("proxy did not start:\n" + running.output)
    return running


async def run_soak(reactor: Any, tmp_path: Path, config: SoakConfig, log: Callable[[str], None] = print) -> SoakResult:
    """Start the proxy (test routes), run the soak against it, stop it; the figures."""
    raise_fd_limit(config.connections * 2 + 1000)
    proxy = await _start_lean_proxy(reactor, tmp_path, ["* test"])
    soak = _Soak(reactor, proxy, config, log)
    context = None
    try:
        if config.publish_via == "zmq":
            import zmq

            pull = (await proxy.wait_for_log(r"publish-pull bound to (tcp://[\d.]+:\d+)")).group(1)
            context = zmq.Context()
            soak.push = context.socket(zmq.PUSH)
            soak.push.setsockopt(zmq.LINGER, 0)
            soak.push.connect(pull)
        return await soak.run()
    finally:
        if context is not None:
            soak.push.close()
            context.term()
        soak.stopping = True
        for client in list(soak.live):
            client.transport.abortConnection()
        soak.result.log_lines = proxy.proc.lines
        await proxy.stop()


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft descriptor limit towards C{wanted} (the proxy, a child, inherits it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def main(argv: list[str] | None = None) -> int:
    """The soak as a command; prints the figures, exits 0 when every check holds."""
    d = SoakConfig()
    p = argparse.ArgumentParser(prog="python -m tests.stress.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=d.connections)
    p.add_argument("--seconds", type=float, default=d.seconds, help="steady state, after the connections are open")
    p.add_argument("--warmup", type=float, default=d.warmup, help="seconds not judged for flatness")
    p.add_argument("--rate", type=float, default=d.rate, help="publishes per second")
    p.add_argument("--churn", type=float, default=d.churn, help="connections replaced per second")
    p.add_argument("--sample-every", type=float, default=d.sample_every)
    p.add_argument("--per-channel", type=int, default=d.per_channel)
    p.add_argument("--publish-via", choices=("zmq", "http"), default=d.publish_via)
    p.add_argument("--poll-grace", type=float, default=d.poll_grace, help="seconds before a sent poll counts as held")
    args = p.parse_args(argv)
    config = SoakConfig(
        connections=args.connections, seconds=args.seconds, warmup=args.warmup, rate=args.rate,
        churn=args.churn, sample_every=args.sample_every, per_channel=args.per_channel, publish_via=args.publish_via,
        poll_grace=args.poll_grace,
    )
    soft = raise_fd_limit(config.connections * 2 + 1000)
    if soft < config.connections + 500:
        print(f"soak: the descriptor limit is {soft}; {config.connections} connections need more (raise the hard limit)")
        return 2
    from twisted.internet import reactor

    outcome = {"rc": 1}

    async def go() -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
                result = await run_soak(reactor, Path(tmp), config)
            print(result.report(), flush=True)
            outcome["rc"] = 1 if result.problems() else 0
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(go()).addErrback(lambda f: f.printTraceback()))
    reactor.run()
    return outcome["rc"]


if __name__ == "__main__":
    sys.exit(main())
