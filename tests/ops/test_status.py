"""
The status page and its event feed: the figures (the metrics' own, summed over processes,
plus busiest channels and the latest drops), the feed's timing and clients, and who may see
the page; served on real loopback sockets, the feed's ticks on a fake clock.
"""

from __future__ import annotations

import base64
import json
from collections import deque
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.web import server

from pushpin_tx.ops import status
from pushpin_tx.ops.metrics import MetricsResource, PushpinCollector, make_metrics_service
from pushpin_tx.ops.status import OperatorResource, StatusFeed, build_status, process_status
from prometheus_client.registry import CollectorRegistry

from tests.ops.test_metrics import FakeService, MoreCounters

DEADLINE = 10.0


@pytest.fixture
def fake(clock):
    service = FakeService(clock, MoreCounters())
    service.drops = SimpleNamespace(recent=deque())
    yield service
    service.close_all()


class FakePool:
    """A worker pool as the page reads it: snapshots, the interest union, the per-worker table."""

    def __init__(self, snapshots, rows) -> None:
        self._snapshots = snapshots
        self._rows = rows
        self.retired_metrics: dict = {}
        self.interest = SimpleNamespace(channels=lambda: ["news", "sport", "w-only"], prefixes=lambda: ["news.", "w."])
        self.refreshes = 0
        self.pending: list[defer.Deferred] = []

    def snapshots(self):
        return self._snapshots

    def table(self):
        return self._rows

    def refresh(self):
        self.refreshes += 1
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


def status_of(fake, clock):
    return build_status(fake, PushpinCollector(fake, "", clock.seconds), clock.seconds)


def test_one_process_figures_are_the_metrics(fake, clock):
    """Held connections by kind, totals, channel counts and queue depth are the collector's values."""
    fake.hold("stream", "1", "news", "sport")
    fake.hold("stream", "2", "news")
    fake.hold("response", "3", "news")
    fake.counters.requests_received = 7
    fake.counters.publishes.update({"http": 5, "zmq-pull": 2})
    fake.counters.deliveries = 11
    fake.counters.drops.update({"queue full": 3, "expired": 1})
    s = status_of(fake, clock)
    assert s["held"] == {"response": 1, "stream": 2, "ws": 0}
    assert s["connections"] == 3
    assert s["totals"] == {"requests": 7, "publishes": 7, "deliveries": 11, "drops": 4}
    assert s["drops_by_reason"] == {"expired": 1, "queue full": 3}
    assert (s["subscribed_channels"], s["subscriptions"]) == (2, 4)
    assert s["channels"] == [["news", 3], ["sport", 1]]
    assert [(w["worker"], w["held"], w["channels"], w["deliveries"], w["drops"]) for w in s["workers"]] == [(0, 3, 2, 11, 4)]
    json.dumps(s)  # what the feed sends


def test_busiest_channels_are_the_top_ones_by_subscribers(fake, clock):
    """Only the BUSIEST channels with the most subscribers are listed, most first."""
    for i in range(status.BUSIEST + 5):
        for j in range(i + 1):
            fake.hold("stream", f"{i}-{j}", f"ch{i:02d}")
    top = process_status(fake)["channels"]
    assert len(top) == status.BUSIEST
    assert top[0] == [f"ch{status.BUSIEST + 4:02d}", status.BUSIEST + 5]
    assert [n for _, n in top] == sorted((n for _, n in top), reverse=True)


def test_recent_drops_are_newest_first_with_connection_channel_and_process(fake, clock):
    """The latest drops of every process, merged by time, newest first, each naming its worker."""
    fake.drops.recent.extend([(10.0, "1", "news", "queue full"), (30.0, "5", "sport", "expired")])
    worker = {"counters": {}, "held": 0, "metrics": {},
              "status": {"channels": [], "drops": [{"t": 20.0, "worker": 1, "conn": "2", "channel": "w", "reason": "queue full"}]}}
    fake.workers = FakePool([worker], [])
    drops = status_of(fake, clock)["recent_drops"]
    assert [(d["t"], d["worker"], d["conn"], d["channel"], d["reason"]) for d in drops] == [
        (30.0, 0, "5", "sport", "expired"), (20.0, 1, "2", "w", "queue full"), (10.0, 0, "1", "news", "queue full")]


def test_only_the_last_drops_are_listed(fake, clock):
    """At most RECENT drops, the newest."""
    fake.drops.recent.extend((float(i), str(i), "c", "queue full") for i in range(status.RECENT + 10))
    drops = status_of(fake, clock)["recent_drops"]
    assert len(drops) == status.RECENT and drops[0]["conn"] == str(status.RECENT + 9)


def test_with_workers_the_figures_are_summed_over_processes(fake, clock):
    """Workers' held connections, totals and channel subscribers add to this process's; one row per process."""
    fake.hold("stream", "1", "news")
    fake.counters.deliveries = 4
    metrics = {
        "held_connections": ("gauge", {(("kind", "stream"),): 2, (("kind", "ws"),): 1}),
        "connection_connected": ("gauge", {(): 3}),
        "deliveries_total": ("counter", {(): 6}),
        "publishes_total": ("counter", {}),
        "drops_total": ("counter", {(("reason", "queue full"),): 2}),
    }
    worker = {"counters": {"deliveries": 6}, "held": 3, "metrics": metrics,
              "status": {"channels": [["news", 2], ["w-only", 1]], "drops": []}}
    rows = [{"worker": 1, "pid": 4242, "alive": True, "held": 3, "channels": 2, "deliveries": 6,
             "requests_received": 0, "drops": 2}]
    fake.workers = FakePool([worker], rows)
    s = status_of(fake, clock)
    assert s["held"] == {"response": 0, "stream": 3, "ws": 1}
    assert s["connections"] == 4
    assert s["totals"]["deliveries"] == 10 and s["totals"]["drops"] == 2
    assert s["subscribed_channels"] == 3  # the union the pool reports
    assert s["channels"] == [["news", 3], ["w-only", 1]]
    assert [w["worker"] for w in s["workers"]] == [0, 1] and s["workers"][1]["pid"] == 4242


def test_prefix_subscriptions_show_apart_from_the_channels(fake, clock):
    """Channels and subscriptions stay exact; prefixes have their own counts, busiest list and column per process."""
    fake.hold("stream", "1", "news", "news.; prefix")
    fake.hold("stream", "2", "news.; prefix", "room.; prefix")
    fake.hold("response", "3", "news.; prefix")
    s = status_of(fake, clock)
    assert (s["subscribed_channels"], s["subscriptions"], s["channels"]) == (1, 1, [["news", 1]])
    assert (s["subscribed_prefixes"], s["prefix_subscriptions"]) == (2, 4)
    assert s["prefixes"] == [["news.", 3], ["room.", 1]]
    assert [(w["channels"], w["prefixes"]) for w in s["workers"]] == [(1, 2)]
    json.dumps(s)


def test_with_workers_prefixes_are_the_union_and_their_subscribers_summed(fake, clock):
    """With workers, subscribed_prefixes is the pool's union, each prefix's subscribers add up, each row has its prefixes."""
    fake.hold("stream", "1", "news.; prefix")
    metrics = {"subscribed_prefixes": ("gauge", {(): 2}), "prefix_subscriptions": ("gauge", {(): 3})}
    worker = {"counters": {}, "held": 3, "metrics": metrics,
              "status": {"channels": [], "prefixes": [["news.", 2], ["w.", 1]], "drops": []}}
    rows = [{"worker": 1, "pid": 4242, "alive": True, "held": 3, "channels": 0, "prefixes": 2, "deliveries": 0,
             "requests_received": 0, "drops": 0}]
    fake.workers = FakePool([worker], rows)
    s = status_of(fake, clock)
    assert s["subscribed_prefixes"] == 2  # news. and w.: the union the pool reports, not 1 + 2
    assert s["prefix_subscriptions"] == 4
    assert s["prefixes"] == [["news.", 3], ["w.", 1]]
    assert [w["prefixes"] for w in s["workers"]] == [1, 2]


# --- served -----------------------------------------------------------------------------------


class RawClient(protocol.Protocol):
    """Bytes as the server writes them, with waits that have a deadline."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = defer.Deferred()
        self._waits: list[tuple[bytes, int, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for wait in list(self._waits):
            needle, count, d = wait
            if self.received.count(needle) >= count:
                self._waits.remove(wait)
                d.callback(self.received)

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)

    def wait_for(self, reactor, needle: bytes, count: int = 1) -> defer.Deferred:
        if self.received.count(needle) >= count:
            return defer.succeed(self.received)
        d: defer.Deferred = defer.Deferred()
        self._waits.append((needle, count, d))
        return d.addTimeout(DEADLINE, reactor)


async def get(reactor, port: int, path: str, headers: dict[str, str] | None = None, until: bytes | None = None) -> RawClient:
    """One request on a fresh connection; waits for C{until}, or for the server to close."""
    client = RawClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(protocol.Factory.forProtocol(lambda: client))
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    connection = "" if until else "Connection: close\r\n"
    client.transport.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{connection}{extra}\r\n".encode())
    if until:
        await client.wait_for(reactor, until)
    else:
        await client.closed.addTimeout(DEADLINE, reactor)
    return client


def events(raw: bytes) -> list[dict]:
    """The status events in an event-stream body (chunked framing removed)."""
    body = raw.partition(b"\r\n\r\n")[2]
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: "):
            out.append(json.loads(line[len(b"data: "):]))
    return out


@pytest.fixture
def site_for(reactor, clock):
    """Serve an OperatorResource on loopback: site_for(fake, local=..., passwd=...) -> (port number, feed)."""
    ports = []
    feeds = []

    def serve(fake, *, local=True, passwd=None, refresh=None):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PushpinCollector(fake, "pushpin_", clock.seconds))
        collector = PushpinCollector(fake, "", clock.seconds)
        feed = StatusFeed(lambda: build_status(fake, collector, clock.seconds), refresh, clock)
        root = OperatorResource(MetricsResource(registry), feed, local=local, passwd=passwd)
        site = server.Site(root, reactor=reactor)
        site.log = lambda request: None
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        feeds.append(feed)
        return port.getHost().port, feed

    yield serve
    for feed in feeds:
        feed.stop()
    for port in ports:
        pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_the_page_is_one_self_contained_html_file(reactor, fake, site_for):
    """GET /status is the HTML page with its script and style inline, nothing fetched from elsewhere."""
    port, _ = site_for(fake)
    raw = (await get(reactor, port, "/status")).received
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    lowered = head.lower()
    assert b"content-type: text/html; charset=utf-8" in lowered
    assert b"content-security-policy: default-src 'none';" in lowered and b"x-frame-options: deny" in lowered
    assert b'new EventSource("/status/events")' in body
    assert b"<script src" not in body and b"<link" not in body and b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")


@pytest_twisted.ensureDeferred
async def test_the_metrics_stay_on_every_other_path(reactor, fake, site_for):
    """/metrics and / still answer the Prometheus text beside the page."""
    fake.counters.requests_received = 5
    port, _ = site_for(fake)
    for path in ("/metrics", "/", "/statusx"):
        raw = (await get(reactor, port, path)).received
        assert b"text/plain; version=0.0.4" in raw and b"\npushpin_request_received 5\n" in raw, path


@pytest_twisted.ensureDeferred
async def test_the_feed_sends_an_event_at_once_then_one_per_second(reactor, fake, clock, site_for):
    """An event-stream client gets the status at once, then a fresh one every second of the clock."""
    fake.hold("stream", "1", "news")
    port, feed = site_for(fake)
    client = await get(reactor, port, "/status/events", until=b"\n\n")
    await client.wait_for(reactor, b"event: status\n")
    head = client.received.partition(b"\r\n\r\n")[0].lower()
    assert b"content-type: text/event-stream; charset=utf-8" in head and b"cache-control: no-store" in head
    first = events(client.received)
    assert first[0]["seq"] == 1 and first[0]["held"]["stream"] == 1
    fake.hold("stream", "2", "news")
    clock.advance(1.0)
    await client.wait_for(reactor, b"event: status\n", 2)
    second = events(client.received)[-1]
    assert second["seq"] == 2 and second["held"] == {"response": 0, "stream": 2, "ws": 0}
    assert second["channels"] == [["news", 2]]
    assert feed.clients == 1
    client.transport.loseConnection()
    await client.closed
    await_until = reactor.seconds() + DEADLINE
    while feed.clients and reactor.seconds() < await_until:  # the server sees the close a turn later
        await _turn(reactor)
    assert feed.clients == 0 and clock.getDelayedCalls() == []  # no timer runs without a watcher


@pytest_twisted.ensureDeferred
async def test_the_feed_and_the_page_carry_the_prefix_subscriptions(reactor, fake, site_for):
    """Over a real socket: an event has the prefix counts and the busiest prefixes; the page shows them."""
    fake.hold("stream", "1", "news", "news.; prefix")
    fake.hold("stream", "2", "news.; prefix")
    port, _ = site_for(fake)
    client = await get(reactor, port, "/status/events", until=b"\n\n")
    await client.wait_for(reactor, b"event: status\n")
    event = events(client.received)[0]
    assert (event["subscribed_channels"], event["subscriptions"], event["channels"]) == (1, 1, [["news", 1]])
    assert (event["subscribed_prefixes"], event["prefix_subscriptions"], event["prefixes"]) == (1, 2, [["news.", 2]])
    client.transport.loseConnection()
    await client.closed
    page = (await get(reactor, port, "/status")).received
    for needle in (b'id="subscribed-prefixes"', b'id="prefix-subscriptions"', b'<tbody id="prefixes">',
                   b"s.subscribed_prefixes", b'$("prefixes")', b"w.prefixes"):
        assert needle in page, needle


def _turn(reactor) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(0.01, d.callback, None)
    return d


@pytest_twisted.ensureDeferred
async def test_each_event_waits_for_fresh_worker_figures(reactor, fake, clock, site_for):
    """With workers the feed asks for fresh figures before each event and skips a tick while they are awaited."""
    pool = FakePool([], [])
    fake.workers = pool
    port, feed = site_for(fake, refresh=pool.refresh)
    client = await get(reactor, port, "/status/events", until=b"event: status\n")
    clock.advance(1.0)
    clock.advance(1.0)  # the first refresh has not answered: no second one
    assert pool.refreshes == 1 and client.received.count(b"event: status\n") == 1
    pool.pending.pop().callback(None)
    await client.wait_for(reactor, b"event: status\n", 2)
    clock.advance(1.0)
    assert pool.refreshes == 2
    pool.pending.pop().callback(None)
    await client.wait_for(reactor, b"event: status\n", 3)
    feed.stop()
    await client.wait_for(reactor, b"\r\n0\r\n\r\n")  # the stream's last chunk: ended cleanly by the stop
    assert feed.clients == 0
    client.transport.loseConnection()
    await client.closed


@pytest.fixture
def passwd_file(tmp_path):
    path = tmp_path / "passwd"
    path.write_text("ops:correct horse\n")
    return str(path)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("path", ["/status", "/status/events"])
@pytest.mark.parametrize("headers", [None, basic("ops", "wrong"), basic("nobody", "correct horse"),
                                     {"Authorization": "Bearer correct horse"}, {"Authorization": "Basic !!!"}])
@pytest_twisted.ensureDeferred
async def test_not_on_loopback_the_page_needs_the_consoles_credentials(reactor, fake, site_for, passwd_file, path, headers):
    """Off loopback, no or wrong credentials get 401 with a Basic challenge, and nothing of the status."""
    port, feed = site_for(fake, local=False, passwd=passwd_file)
    raw = (await get(reactor, port, path, headers)).received
    assert raw.startswith(b"HTTP/1.1 401 ")
    assert b'www-authenticate: basic realm="pushpin-tx status"' in raw.lower()
    assert b"<html" not in raw and b"event: status" not in raw and feed.clients == 0


@pytest_twisted.ensureDeferred
async def test_not_on_loopback_the_consoles_credentials_open_page_and_feed(reactor, fake, site_for, passwd_file):
    """Off loopback, the console's user and password open the page and the feed; the metrics need none."""
    port, _ = site_for(fake, local=False, passwd=passwd_file)
    page = (await get(reactor, port, "/status", basic("ops", "correct horse"))).received
    assert page.startswith(b"HTTP/1.1 200 ") and b"<title>pushpin-tx status</title>" in page
    feed = await get(reactor, port, "/status/events", basic("ops", "correct horse"), until=b"event: status\n")
    assert events(feed.received)[0]["seq"] == 1
    feed.transport.loseConnection()
    metrics = (await get(reactor, port, "/metrics")).received
    assert metrics.startswith(b"HTTP/1.1 200 ") and b"pushpin_request_received" in metrics


@pytest_twisted.ensureDeferred
async def test_not_on_loopback_without_a_passwd_file_everyone_gets_401(reactor, fake, site_for):
    """Off loopback with no console passwd file, the page is closed to everyone."""
    port, _ = site_for(fake, local=False, passwd=None)
    raw = (await get(reactor, port, "/status", basic("ops", "correct horse"))).received
    assert raw.startswith(b"HTTP/1.1 401 ")


@pytest.mark.parametrize("port, local", [("9100", True), ("127.0.0.1:9100", True), ("[::1]:9100", True),
                                         ("ipc:///tmp/m.sock", True), ("0.0.0.0:9100", False), ("10.1.2.3:9100", False),
                                         (":9100", False)])
def test_which_metrics_listeners_count_as_local(port, local):
    """Loopback addresses and Unix sockets are local; all interfaces and other addresses are not."""
    from pushpin_tx.ops.metrics import metrics_endpoint

    assert status.listener_is_local(metrics_endpoint(port)) is local


def test_a_metrics_service_off_loopback_says_the_page_needs_credentials(reactor, fake, passwd_file):
    """Building the listener off loopback logs that /status needs the console's credentials, never the file's content."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observer(event):
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    try:
        make_metrics_service(fake, port="0.0.0.0:0", reactor=reactor)
        make_metrics_service(fake, port="0.0.0.0:0", reactor=reactor, passwd=passwd_file)
        make_metrics_service(fake, port="127.0.0.1:0", reactor=reactor)
    finally:
        globalLogPublisher.removeObserver(observer)
    said = [line for line in lines if "status page" in line]
    assert len(said) == 2 and all("/status needs the console's credentials" in line for line in said)
    assert "answers 401 to everyone" in said[0] and "answers 401" not in said[1]
    assert not any("correct horse" in line for line in lines)


def test_busiest_channels_with_equal_counts_go_by_name(fake, clock):
    """Channels with as many subscribers as each other are listed by name."""
    for name in ("zeta", "alpha", "mid"):
        fake.hold("stream", name, name)
    assert process_status(fake)["channels"] == [["alpha", 1], ["mid", 1], ["zeta", 1]]
    assert status_of(fake, clock)["channels"] == [["alpha", 1], ["mid", 1], ["zeta", 1]]


@pytest_twisted.ensureDeferred
async def test_the_page_only_answers_get_and_head(reactor, fake, site_for):
    """A POST to /status is refused with 405 and an Allow header; it is not taken for a metrics scrape."""
    port, _ = site_for(fake)
    client = RawClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(protocol.Factory.forProtocol(lambda: client))
    client.transport.write(b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await client.closed.addTimeout(DEADLINE, reactor)
    assert client.received.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: GET, HEAD\r\n" in client.received
