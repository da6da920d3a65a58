# -*- test-case-name: tests.ops.test_status -*-
"""
The live status page on the metrics listener: C{/status} is one self-contained HTML page
(C{status.html}, inline script and style, no CDN), C{/status/events} the Server-Sent
Events feed it reads. Every other path still answers the Prometheus metrics.

What the page shows is what an operator asks first: held connections by kind, the
busiest channels with their subscriber counts (the busiest prefix subscriptions,
C{Grip-Channel: news.; prefix}, apart: a prefix is not a channel), publish / delivery /
drop rates as small live charts, per-process load, and the most recent drops with their
connection and channel. One event a second, built from the same collector the metrics are (so, with
workers, summed over every process, fresh from each worker: the feed asks the workers
for their figures before each event, as a scrape does).

The busiest channels and prefixes are summed from each process's own top L{BUSIEST} (a
channel just outside one worker's top is undercounted there: the list is for spotting, the
metrics are the exact figures).

The feed is one timer for all its clients, running only while someone watches; a client
that stops reading (more than L{MAX_BUFFERED} bytes unsent) is dropped.

Access: the metrics listener binds loopback unless configured otherwise. When it is not
on loopback (or a Unix socket), the page and the feed need HTTP Basic credentials from
the console's passwd file (C{[console] passwd}); without them, or without that file, the
answer is 401. The metrics themselves stay open, as in Pushpin.
"""

from __future__ import annotations

import base64
import heapq
import json
from pathlib import Path
from typing import Any, Callable

from prometheus_client.registry import Collector
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from pushpin_tx._compat import buffered_bytes, is_disconnected, knows_write_buffer
from pushpin_tx.ops.console import _passwd_checker, is_local_endpoint
from pushpin_tx.ops.console_helpers import process_rows
from pushpin_tx.ops.view import OpsView

__all__ = [
    "BUSIEST",
    "MAX_BUFFERED",
    "OperatorResource",
    "RECENT",
    "StatusFeed",
    "build_status",
    "process_status",
]

#: channels listed as the busiest (each process sends its own top ones, the main process sums)
BUSIEST = 10
#: drops listed as the most recent
RECENT = 20
#: an event-stream client holding more unsent bytes than this is not reading: it is dropped
MAX_BUFFERED = 1024 * 1024

PAGE_PATH = Path(__file__).with_name("status.html")
_REALM = b'Basic realm="pushpin-tx status", charset="UTF-8"'
_log = Logger()


# --- what one process contributes ------------------------------------------------------------


def process_status(view: OpsView) -> dict[str, Any]:
    """
    This process's part of the page that the metrics do not carry: its busiest channels and
    prefixes and its latest drops (sent up in a worker's snapshot, read directly in the main
    process).
    """
    router = view.router
    counts = ((-router.subscriber_count(c), c) for c in router.channels())
    busiest = [[c, -n] for n, c in heapq.nsmallest(BUSIEST, counts)]  # most subscribers, then by name
    prefix_counts = ((-router.prefix_subscriber_count(p), p) for p in router.prefixes())
    prefixes = [[p, -n] for n, p in heapq.nsmallest(BUSIEST, prefix_counts)]
    recent = list(view.drops.recent)[-RECENT:]
    worker = view.worker_index
    return {
        "channels": busiest,
        "prefixes": prefixes,
        "drops": [{"t": t, "worker": worker, "conn": conn, "channel": channel, "reason": reason}
                  for t, conn, channel, reason in recent],
    }


def build_status(view: OpsView, collector: Collector, now: Callable[[], float]) -> dict[str, Any]:
    """
    The page's figures: the metrics (every process, as a scrape sums them) plus the busiest
    channels and prefixes, each process's load and the latest drops. C{channels},
    C{subscribed_channels} and C{subscriptions} are exact channels; C{prefixes},
    C{subscribed_prefixes} and C{prefix_subscriptions} the prefix subscriptions.

    @param collector: the metrics' L{pushpin_tx.ops.metrics.PushpinCollector} with an empty prefix.
    """
    values: dict[str, dict[str, float]] = {}
    for metric in collector.collect():
        values[metric.name] = {"|".join(str(v) for v in s.labels.values()): s.value for s in metric.samples}

    def one(name: str) -> float:
        return sum(values.get(name, {}).values())

    parts = [process_status(view)]
    pool = view.workers
    if pool is not None:
        parts += [snap.get("status", {}) for snap in pool.snapshots()]
    busiest = _summed_top(parts, "channels")
    busiest_prefixes = _summed_top(parts, "prefixes")
    drops = sorted((d for part in parts for d in part.get("drops", ())), key=lambda d: d["t"])[-RECENT:]
    drops.reverse()
    return {
        "t": now(),
        "held": values.get("held_connections", {}),
        "connections": one("connection_connected"),
        "totals": {
            "requests": one("request_received"),
            "publishes": one("publishes_total"),
            "deliveries": one("deliveries_total"),
            "drops": one("drops_total"),
        },
        "drops_by_reason": values.get("drops_total", {}),
        "subscribed_channels": one("subscribed_channels"),
        "subscriptions": one("subscriptions"),
        "queue_depth": one("queue_depth"),
        "channels": busiest,
        "subscribed_prefixes": one("subscribed_prefixes"),
        "prefix_subscriptions": one("prefix_subscriptions"),
        "prefixes": busiest_prefixes,
        "workers": process_rows(view),
        "recent_drops": drops,
    }


def _summed_top(parts: list[dict[str, Any]], key: str) -> list[list[Any]]:
    """The processes' C{key} lists ([name, subscribers] each) summed by name: the top L{BUSIEST}, most first, then by name."""
    totals: dict[str, int] = {}
    for part in parts:
        for name, n in part.get(key, ()):
            totals[name] = totals.get(name, 0) + n
    return [[name, n] for name, n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:BUSIEST]]


# --- the event stream ------------------------------------------------------------------------


class StatusFeed:
    """
    Sends the status to every connected event-stream client once a second.

    @param build: returns the status (L{build_status} bound to a service).
    @param refresh: called before each event; a Deferred it returns is waited for (the
        worker pool's C{refresh}), or None.
    """

    def __init__(self, build: Callable[[], dict[str, Any]], refresh: Callable[[], Any] | None, clock: Any,
                 interval: float = 1.0) -> None:
        self._build = build
        self._refresh = refresh
        self._clock = clock
        self._interval = interval
        self._clients: list[server.Request] = []
        self._loop: LoopingCall | None = None
        self._busy = False
        self.sequence = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    def add(self, request: server.Request) -> None:
        """Start an event stream on C{request}: its first event at once, then one per interval."""
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(b"retry: 2000\n\n")
        self._clients.append(request)
        request.notifyFinish().addBoth(lambda _: self._remove(request))
        self._write(request, self._event())
        if self._loop is None:
            self._loop = LoopingCall(self._tick)
            self._loop.clock = self._clock
            self._loop.start(self._interval, now=False)

    def _remove(self, request: server.Request) -> None:
        if request in self._clients:
            self._clients.remove(request)
        if not self._clients and self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None

    def _event(self) -> bytes:
        self.sequence += 1
        status = self._build()
        status["seq"] = self.sequence
        return b"event: status\nid: %d\ndata: %s\n\n" % (self.sequence, json.dumps(status, separators=(",", ":")).encode())

    def _tick(self) -> None:
        if self._busy:  # the workers have not answered the last refresh yet
            return
        self._busy = True
        d = defer.maybeDeferred(self._refresh) if self._refresh is not None else defer.succeed(None)
        d.addErrback(lambda f: _log.failure("status: refreshing worker figures failed", f))
        d.addCallback(lambda _: self._send())
        d.addBoth(self._done)

    def _done(self, result: object) -> None:
        self._busy = False

    def _send(self) -> None:
        if not self._clients:
            return
        frame = self._event()
        for request in list(self._clients):
            self._write(request, frame)

    def _write(self, request: server.Request, frame: bytes) -> None:
        if request.finished or is_disconnected(request):
            self._remove(request)
            return
        transport = getattr(getattr(request, "channel", None), "transport", None)
        if transport is not None and knows_write_buffer(transport) and buffered_bytes(transport) > MAX_BUFFERED:
            _log.info("status: dropping an event-stream client that stopped reading")
            self._remove(request)
            transport.abortConnection()
            return
        request.write(frame)

    def stop(self) -> None:
        """End every stream (the listener is stopping)."""
        for request in list(self._clients):
            self._remove(request)
            if not request.finished and not is_disconnected(request):
                request.finish()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None


# --- the listener's root ---------------------------------------------------------------------


class OperatorResource(Resource):
    """
    The metrics listener's one resource: C{/status} the page, C{/status/events} the feed
    (both behind credentials when the listener is not local), anything else the metrics.

    @param passwd: the console's passwd file, or None.
    @param local: whether the listener only accepts local connections (no credentials asked).
    """

    isLeaf = True

    def __init__(self, metrics: Resource, feed: StatusFeed, *, local: bool, passwd: str | None) -> None:
        super().__init__()
        self._metrics = metrics
        self._feed = feed
        self._local = local
        self._checker = _passwd_checker(passwd) if passwd else None
        self._page: bytes | None = None
        try:
            self._page = PAGE_PATH.read_bytes()
        except OSError as e:  # an installation without the package data: the metrics still serve
            _log.error("status page: cannot read {path}: {why}", path=str(PAGE_PATH), why=e)

    def render(self, request: server.Request) -> Any:
        path = request.path.rstrip(b"/")
        if path not in (b"/status", b"/status/events"):
            return self._metrics.render(request)
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b""
        if self._local:
            return self._serve(request, path)
        d = self._authorized(request)

        def answer(ok: bool) -> None:
            if is_disconnected(request) or request.finished:
                return
            if not ok:
                request.setResponseCode(401)
                request.setHeader(b"www-authenticate", _REALM)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                request.write(b"credentials needed: the console's user name and password\n")
                request.finish()
                return
            body = self._serve(request, path)
            if body is not server.NOT_DONE_YET:
                request.write(body)
                request.finish()

        d.addCallback(answer)
        d.addErrback(lambda f: _log.failure("status: answering a request failed", f))
        return server.NOT_DONE_YET

    def _authorized(self, request: server.Request) -> defer.Deferred[bool]:
        header = request.getHeader(b"authorization") or b""
        scheme, _, encoded = header.partition(b" ")
        if self._checker is None or scheme.lower() != b"basic":
            return defer.succeed(False)
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except ValueError:
            return defer.succeed(False)
        if not sep:
            return defer.succeed(False)
        checked: defer.Deferred[Any] = defer.maybeDeferred(self._checker.requestAvatarId, UsernamePassword(user, password))

        def refused(failure: Any) -> Any:
            return False if failure.check(UnauthorizedLogin) else failure

        return checked.addCallbacks(lambda _: True, refused)

    def _serve(self, request: server.Request, path: bytes) -> Any:
        request.setHeader(b"x-content-type-options", b"nosniff")
        if path == b"/status/events":
            if request.method == b"HEAD":
                request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
                return b""
            self._feed.add(request)
            return server.NOT_DONE_YET
        if self._page is None:
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"the status page is not installed (pushpin_tx/ops/status.html)\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"content-security-policy",
                          b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                          b"connect-src 'self'; img-src 'self' data:")
        return self._page


def listener_is_local(description: str) -> bool:
    """Whether a metrics endpoint description only accepts local connections (loopback or Unix socket)."""
    return is_local_endpoint(description)
