"""
Prometheus metrics: Pushpin's five names with the configured prefix, our own operational
series, read at scrape time, served on a real loopback port and parsed with prometheus_client.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from pushpin_tx.net.listening import ListenError
from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.core.hold import ResponseHold, StreamHold
from pushpin_tx.ops.metrics import (
    MetricsConfigError,
    PushpinCollector,
    check_metrics_settings,
    make_metrics_service,
    metrics_endpoint,
    render,
)
from pushpin_tx.core.stats import Counters

from tests.fakes import RecordingSink, hold_context


class MoreCounters(Counters):
    """Counters with the two fields the metrics read when present (ended-connection minutes, recoveries)."""

    def __init__(self) -> None:
        super().__init__()
        self.connection_minutes_closed = 0
        self.recoveries = 0


class FakeService:
    """What the collector reads: counters, router, held connections (real holds on a Clock)."""

    def __init__(self, clock, counters: Counters | None = None) -> None:
        self.ctx = hold_context(clock)
        if counters is not None:
            self.ctx.counters = counters
        self.counters = self.ctx.counters
        self.router = self.ctx.router
        self.acceptor = SimpleNamespace(connections={})
        self.worker_index = 0
        self.workers = None
        self.backplane = None
        self.sequencer = None

    def connection_tables(self):
        """The OpsView's connections: HTTP holds, and WebSocket sessions when a test adds some."""
        websockets = getattr(self, "websockets", None)
        return [self.acceptor.connections] + ([websockets.connections] if websockets is not None else [])

    def hold(self, kind: str, conn_id: str, *channels: str):
        headers = [(b"Grip-Hold", kind.encode()), (b"Grip-Channel", ", ".join(channels).encode())]
        instruct = parse_instruct(200, b"OK", headers, b"", request_uri="http://example.com/x")
        hold = (StreamHold if kind == "stream" else ResponseHold)(self.ctx, RecordingSink(), instruct, conn_id)
        hold.start()
        self.acceptor.connections[conn_id] = hold
        self.counters.held[kind] += 1
        return hold

    def close_all(self) -> None:
        for hold in self.acceptor.connections.values():
            hold.client_gone()


@pytest.fixture
def fake(clock):
    service = FakeService(clock, MoreCounters())
    yield service
    service.close_all()


def families(text: str) -> dict[str, dict]:
    """Family name -> {"type", "help", "values": {sorted labels: value}}, as prometheus_client parses it.

    (The parser files counters under their name without C{_total} and renames their samples to
    C{..._total} internally; what is on the wire is checked on the raw text.)
    """
    out = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "values": {tuple(sorted(s.labels.items())): s.value for s in family.samples},
        }
    return out


def scrape_text(fake, clock, prefix="pushpin_") -> str:
    return render(PushpinCollector(fake, prefix, clock.seconds)).decode()


def test_pushpins_five_metrics_keep_pushpins_names_help_and_types(fake, clock):
    """The five Pushpin series are written exactly as Pushpin writes them: prefix, HELP, TYPE, no _total."""
    fake.counters.requests_received = 3
    fake.counters.items_published = 4
    fake.counters.deliveries = 5
    fake.hold("stream", "1", "a")
    text = scrape_text(fake, clock)
    assert text.startswith(
        "# HELP pushpin_request_received Number of requests received\n"
        "# TYPE pushpin_request_received counter\n"
        "pushpin_request_received 3\n"
        "# HELP pushpin_connection_connected Number of concurrent connections\n"
        "# TYPE pushpin_connection_connected gauge\n"
        "pushpin_connection_connected 1\n"
        "# HELP pushpin_connection_minute Number of minutes clients have been connected\n"
        "# TYPE pushpin_connection_minute counter\n"
        "pushpin_connection_minute 1\n"
        "# HELP pushpin_message_received Number of messages received by the publish API\n"
        "# TYPE pushpin_message_received counter\n"
        "pushpin_message_received 4\n"
        "# HELP pushpin_message_sent Number of messages sent to clients\n"
        "# TYPE pushpin_message_sent counter\n"
        "pushpin_message_sent 5\n"
    )


def test_our_metrics_report_holds_channels_publishes_drops_and_queues(fake, clock):
    """Held connections by kind, channel and subscription counts, publishes, drops and queue depth are all there."""
    s1 = fake.hold("stream", "1", "a", "b")
    fake.hold("stream", "2", "a")
    fake.hold("response", "3", "c")
    s1.queue.pauseProducing()
    s1.queue.offer(b"x", "a")
    s1.queue.offer(b"y", "a")
    fake.counters.publishes.update({"http": 2, "zmq-pull": 1})
    fake.counters.drops.update({"queue full": 4})
    fake.counters.recoveries = 1
    got = families(scrape_text(fake, clock))
    held = got["pushpin_held_connections"]
    assert held["type"] == "gauge"
    assert held["values"] == {(("kind", "response"),): 1, (("kind", "stream"),): 2, (("kind", "ws"),): 0}
    assert got["pushpin_subscribed_channels"]["values"] == {(): 3}
    assert got["pushpin_subscriptions"]["values"] == {(): 4}
    publishes = got["pushpin_publishes"]
    assert publishes["type"] == "counter"
    assert publishes["values"] == {(("input", "http"),): 2, (("input", "zmq-pull"),): 1}
    assert got["pushpin_drops"]["values"] == {(("reason", "queue full"),): 4}
    assert got["pushpin_queue_depth"]["values"] == {(): 2}
    assert got["pushpin_recoveries"]["values"] == {(): 1}
    assert got["pushpin_deliveries"]["values"] == {(): 0}
    text = scrape_text(fake, clock)
    assert 'pushpin_publishes_total{input="http"} 2\n' in text
    assert 'pushpin_drops_total{reason="queue full"} 4\n' in text


def test_prefix_subscriptions_are_counted_apart_from_the_channels(fake, clock):
    """Prefix subscriptions (Grip-Channel: news.; prefix) leave subscribed_channels and subscriptions exact; two gauges count them."""
    fake.hold("stream", "1", "news", "news.; prefix")
    fake.hold("stream", "2", "news.; prefix", "room.; prefix")
    fake.hold("response", "3", "room.; prefix")
    got = families(scrape_text(fake, clock))
    assert got["pushpin_subscribed_channels"]["values"] == {(): 1}
    assert got["pushpin_subscriptions"]["values"] == {(): 1}
    assert got["pushpin_subscribed_prefixes"]["values"] == {(): 2}
    assert got["pushpin_prefix_subscriptions"]["values"] == {(): 4}
    assert got["pushpin_subscribed_prefixes"]["type"] == got["pushpin_prefix_subscriptions"]["type"] == "gauge"
    fake.close_all()
    got = families(scrape_text(fake, clock))
    assert got["pushpin_subscribed_prefixes"]["values"] == got["pushpin_prefix_subscriptions"]["values"] == {(): 0}


@pytest.mark.parametrize(
    "elapsed, closed, minutes",
    [(0, 0, 1), (59.9, 0, 1), (60, 0, 2), (185, 0, 4), (10, 7, 8)],
)
def test_connection_minutes_count_one_at_connect_then_each_whole_minute(fake, clock, elapsed, closed, minutes):
    """Connection-minutes follow Pushpin: one at connect, one per whole minute, plus those of ended connections."""
    fake.hold("stream", "1", "a")
    fake.counters.connection_minutes_closed = closed
    clock.advance(elapsed)
    got = families(scrape_text(fake, clock, prefix=""))
    assert got["connection_minute"]["values"] == {(): minutes}


def test_without_a_prefix_the_names_are_pushpins_bare_names(clock):
    """The default empty prefix gives the bare names, and plain Counters (no extra fields) still scrape."""
    service = FakeService(clock)
    got = families(scrape_text(service, clock, prefix=""))
    assert {"request_received", "connection_connected", "connection_minute", "message_received", "message_sent"} <= set(got)
    assert got["recoveries"]["values"] == {(): 0}


def test_a_prefix_that_makes_invalid_names_is_refused(fake, clock):
    """A prefix Prometheus could not scrape is a configuration error, not a broken endpoint."""
    with pytest.raises(MetricsConfigError, match="prometheus_prefix"):
        PushpinCollector(fake, "bad-prefix ", clock.seconds)
    with pytest.raises(MetricsConfigError, match="prometheus_prefix"):
        check_metrics_settings("9100", "1st_")
    assert check_metrics_settings("127.0.0.1:9100", "pushpin_") is None


@pytest.mark.parametrize(
    "value, endpoint",
    [
        ("9100", "tcp:9100:interface=127.0.0.1"),
        ("127.0.0.1:9100", "tcp:9100:interface=127.0.0.1"),
        ("0.0.0.0:9100", "tcp:9100:interface=0.0.0.0"),
        ("[::1]:9100", r"tcp:9100:interface=\:\:1"),
        (":9100", "tcp:9100"),
        ("ipc:///run/pushpin/metrics.sock", "unix:/run/pushpin/metrics.sock"),
    ],
)
def test_prometheus_port_values_become_endpoints(value, endpoint):
    """addr:port, port (loopback), [v6]:port and ipc://path all map to a listener."""
    assert metrics_endpoint(value) == endpoint


@pytest.mark.parametrize("value", ["", "abc", "127.0.0.1:99999", "ipc://", "host:"])
def test_bad_prometheus_port_values_are_refused(value):
    """A prometheus_port that names no port is a configuration error."""
    with pytest.raises(MetricsConfigError, match="prometheus_port"):
        metrics_endpoint(value)


@pytest.fixture
def served(reactor, fake):
    metrics = make_metrics_service(fake, port="127.0.0.1:0", prefix="pushpin_", reactor=reactor)
    metrics.privilegedStartService()
    metrics.startService()
    yield metrics
    pytest_twisted.blockon(metrics.stopService())


@pytest.mark.parametrize("method, path", [("GET", "/metrics"), ("GET", "/"), ("GET", "/any/path?x=1"), ("POST", "/")])
@pytest_twisted.ensureDeferred
async def test_scrape_over_loopback_on_any_path(reactor, fake, served, method, path):
    """A scraper gets the metrics as Prometheus text on any path, read live from the service."""
    fake.hold("stream", "1", "news")
    fake.counters.requests_received = 9
    url = f"http://127.0.0.1:{served.port.getHost().port}{path}"
    response = await treq.request(method, url, persistent=False, reactor=reactor)
    body = await treq.text_content(response)
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"text/plain; version=0.0.4; charset=utf-8"]
    got = families(body)
    assert got["pushpin_request_received"]["values"] == {(): 9}
    assert got["pushpin_connection_connected"]["values"] == {(): 1}
    assert got["pushpin_subscribed_channels"]["values"] == {(): 1}
    assert "\npushpin_request_received 9\n" in body


def test_a_port_in_use_stops_start_up(reactor, fake, served):
    """Binding happens in privilegedStartService, so a busy port fails start-up, naming the listener and its address."""
    busy = served.port.getHost().port
    second = make_metrics_service(fake, port=f"127.0.0.1:{busy}", reactor=reactor)
    with pytest.raises(ListenError) as raised:
        second.privilegedStartService()
    assert str(raised.value) == f"prometheus metrics: cannot listen on 127.0.0.1:{busy}: address already in use"


def test_websocket_sessions_count_in_queue_depth_and_minutes(fake, clock):
    """Sessions in the WebSocket gateway's table add their queued messages and connection-minutes."""
    fake.hold("stream", "1", "a")
    session = SimpleNamespace(started_at=clock.seconds() - 120, queue=[b"m1", b"m2", b"m3"])
    idle = SimpleNamespace(started_at=clock.seconds(), queue=None)
    fake.websockets = SimpleNamespace(connections={"8": session, "9": idle})
    got = families(scrape_text(fake, clock))
    assert got["pushpin_queue_depth"]["values"] == {(): 3}
    assert got["pushpin_connection_minute"]["values"] == {(): 1 + 3 + 1}


def test_the_backplane_state_and_counters_are_exported(fake, clock):
    """With a backplane: its state as a 0/1 gauge per state, its item outcomes and connects as counters."""
    snap = {"state": "down", "published": 5, "received": 7, "received_remote": 3, "local_only": 2, "unconfirmed": 1,
            "rejected": 0, "connects": 4}
    fake.backplane = SimpleNamespace(snapshot=lambda: snap)
    fams = families(scrape_text(fake, clock))
    assert fams["pushpin_backplane_state"]["values"] == {
        (("state", "connecting"),): 0, (("state", "down"),): 1, (("state", "up"),): 0}
    items = fams["pushpin_backplane_items"]["values"]
    assert items[(("outcome", "local_only"),)] == 2 and items[(("outcome", "received_remote"),)] == 3
    assert fams["pushpin_backplane_connects"]["values"] == {(): 4}
    fake.backplane = None  # no backplane configured
    assert "pushpin_backplane_state" not in families(scrape_text(fake, clock))


def test_the_grafana_dashboard_queries_only_series_we_export(fake, clock):
    """etc/grafana-dashboard.json asks only for metric names the collector writes, each with the prefix variable."""
    import json
    import pathlib
    import re

    path = pathlib.Path(__file__).resolve().parents[2] / "etc" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text())
    fake.backplane = SimpleNamespace(snapshot=lambda: {"state": "up", "published": 0, "received": 0, "received_remote": 0,
                                                       "local_only": 0, "unconfirmed": 0, "rejected": 0, "connects": 1})
    fake.sequencer = SimpleNamespace(pending=0, parked=0, released_by_timeout=0, duplicates_dropped=0,
                                     duplicate_prev_id_dropped=0, parking_full_dropped=0)
    exported = set(re.findall(r"^# TYPE (\w+) ", scrape_text(fake, clock, prefix=""), re.M))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs and all(panel["targets"] for panel in dashboard["panels"])
    queried = {name for expr in exprs for name in re.findall(r"\$\{prefix\}(\w+)", expr)}
    assert queried and queried <= exported, queried - exported
    assert {"held_connections", "publishes_total", "deliveries_total", "drops_total", "connection_connected"} <= queried
    # every metric name in a query carries the prefix variable: what is left is PromQL and our label names
    words = {"sum", "max", "rate", "increase", "by", "kind", "input", "reason", "outcome", "state"}
    for expr in exprs:
        bare = re.sub(r"\$\{prefix\}\w+|\{[^}]*\}|\[[^\]]*\]", " ", expr)
        assert set(re.findall(r"[A-Za-z_]\w*", bare)) <= words, expr
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])
