# -*- test-case-name: tests.ops.test_metrics -*-
"""
Prometheus metrics on C{prometheus_port} (reference §10), for dashboards written against
Pushpin and for our own operational questions.

Nothing is counted here: a custom C{prometheus_client} collector reads the process
L{pushpin_tx.core.stats.Counters}, the router and the held connections when Prometheus scrapes,
so the publish and delivery paths pay nothing for metrics. Sums over connections (queue
depth, connection-minutes of open connections) cost one pass per scrape.

Names: Pushpin 1.36's five, with C{prometheus_prefix} and Pushpin's HELP texts and types,
exactly as Pushpin writes them (C{<prefix>request_received}, a counter with no C{_total}):

  - C{request_received} (counter): client requests received;
  - C{connection_connected} (gauge): connections held now (Pushpin reports the most
    concurrent in its current report interval; we report the current count);
  - C{connection_minute} (counter): connection-minutes, counted as Pushpin does (one at
    connect, then one per whole minute);
  - C{message_received} (counter): items received by the publish inputs;
  - C{message_sent} (counter): messages sent to clients.

Ours, with the same prefix and Prometheus' naming conventions (counters end in C{_total}):
C{held_connections{kind}}, C{subscribed_channels}, C{subscriptions} (exact channels),
C{subscribed_prefixes}, C{prefix_subscriptions} (prefix subscriptions),
C{publishes_total{input}}, C{deliveries_total}, C{drops_total{reason}}, C{queue_depth},
C{recoveries_total}.

The text is written by L{render} rather than C{prometheus_client.generate_latest}, which
renames every counter to C{<name>_total} (the OpenMetrics rule): Pushpin's counters carry
no suffix, and existing dashboards and alerts query those names.

The same listener serves the live status page (C{/status}, C{/status/events}: see
L{pushpin_tx.ops.status}); every other path answers the metrics.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Iterator

from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString
from twisted.application import service, strports
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from pushpin_tx._compat import is_disconnected
from pushpin_tx.net.listening import RecordingEndpoint
from pushpin_tx.ops.status import OperatorResource, StatusFeed, build_status, listener_is_local
from pushpin_tx.ops.view import OpsView

__all__ = [
    "CONTENT_TYPE",
    "MetricsConfigError",
    "MetricsResource",
    "MetricsService",
    "PushpinCollector",
    "check_metrics_settings",
    "make_metrics_service",
    "metrics_endpoint",
    "render",
]

#: The Prometheus text exposition format.
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: Hold kinds always reported, so their series exist from the first scrape.
HELD_KINDS = ("response", "stream", "ws")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_log = Logger()


class MetricsConfigError(ValueError):
    """C{prometheus_port} or C{prometheus_prefix} cannot be used; C{str()} says why."""


def metrics_endpoint(port: str) -> str:
    """
    The server endpoint for a C{prometheus_port} value: C{addr:port}, C{[v6addr]:port},
    C{port} (loopback: Pushpin listens on all interfaces, but metrics are for a local
    scraper or one given explicitly) or C{ipc://path} (a Unix socket).
    """
    value = port.strip()
    if value.startswith("ipc://"):
        path = value[len("ipc://"):]
        if not path:
            raise MetricsConfigError(f"prometheus_port {port!r}: no path")
        return "unix:" + _quote(path)
    host, sep, number = value.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]")
    if not number.isdigit() or not 0 <= int(number) <= 65535:
        raise MetricsConfigError(f"prometheus_port {port!r}: expected addr:port, port or ipc://path")
    return f"tcp:{int(number)}:interface={_quote(host)}" if host else f"tcp:{int(number)}"


def _check_prefix(prefix: str) -> None:
    if not _NAME.match(prefix + "request_received"):
        raise MetricsConfigError(f"prometheus_prefix {prefix!r} does not make valid metric names")


def check_metrics_settings(port: str, prefix: str) -> None:
    """Refuse an unusable C{prometheus_port} or C{prometheus_prefix} before anything is built
    (for C{Options.postOptions}, which turns the error into a usage error)."""
    metrics_endpoint(port)
    _check_prefix(prefix)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


# --- collection -----------------------------------------------------------------------------


class PushpinCollector(Collector):
    """
    Reads a process's L{OpsView} at scrape time.

    @param view: the process's counters, router, connections, workers, backplane and sequencer.
    @param prefix: C{prometheus_prefix}, put before every name.
    @param now: the clock holds' C{started_at} is measured on (the reactor's C{seconds}).
    """

    def __init__(self, view: OpsView, prefix: str, now: Callable[[], float]) -> None:
        _check_prefix(prefix)
        self._view = view
        self._prefix = prefix
        self._now = now

    def _metric(self, name: str, help_text: str, kind: str) -> Metric:
        return Metric(self._prefix + name, help_text, kind)

    def collect(self) -> Iterator[Metric]:
        """
        This process's metrics, plus (workers > 1) every worker's latest samples added in,
        except C{subscribed_channels} and C{subscribed_prefixes}, which count the channels and
        the prefixes subscribed in any process.
        """
        pool = self._view.workers
        if pool is None:
            yield from self._collect_own()
            return
        others = [snap.get("metrics", {}) for snap in pool.snapshots()]
        # counters of workers that ended stay in the totals (a counter never goes back)
        others.append({name: ("counter", samples) for name, samples in pool.retired_metrics.items()})
        unions = {"subscribed_channels": len(list(pool.interest.channels())),
                  "subscribed_prefixes": len(list(pool.interest.prefixes()))}
        for metric in self._collect_own():
            base = metric.name[len(self._prefix):]
            union = unions.get(base)
            if union is not None:
                metric.samples = [sample._replace(value=union) for sample in metric.samples]
            else:
                metric.samples = _add_samples(metric, base, others)
            yield metric

    def _collect_own(self) -> Iterator[Metric]:
        view = self._view
        counters = view.counters
        router = view.router
        tables = view.connection_tables()
        now = self._now()

        open_minutes = 0
        depth = 0
        for hold in [h for table in tables for h in table.values()]:
            open_minutes += 1 + int(max(now - hold.started_at, 0.0) // 60)
            queue = getattr(hold, "queue", None)
            if queue is not None:
                depth += len(queue)
        held = counters.held
        channels = list(router.channels())
        prefixes = list(router.prefixes())

        def single(name: str, help_text: str, kind: str, value: float) -> Metric:
            m = self._metric(name, help_text, kind)
            m.add_sample(m.name, {}, value)
            return m

        def labelled(name: str, help_text: str, kind: str, label: str, values: Iterable[tuple[str, float]]) -> Metric:
            m = self._metric(name, help_text, kind)
            for key, value in sorted(values):
                m.add_sample(m.name, {label: key}, value)
            return m

        # Pushpin's five, in its order, with its HELP texts (src/core/statsmanager.cpp).
        yield single("request_received", "Number of requests received", "counter", counters.requests_received)
        yield single("connection_connected", "Number of concurrent connections", "gauge", sum(held.values()))
        # Minutes of ended connections are added up when they end (Counters), open ones here.
        closed_minutes = counters.connection_minutes_closed
        yield single(
            "connection_minute", "Number of minutes clients have been connected", "counter", closed_minutes + open_minutes
        )
        yield single(
            "message_received", "Number of messages received by the publish API", "counter", counters.items_published
        )
        yield single("message_sent", "Number of messages sent to clients", "counter", counters.deliveries)

        # Ours.
        kinds = {kind: 0 for kind in HELD_KINDS}
        kinds.update((kind, n) for kind, n in held.items() if kind)
        yield labelled(
            "held_connections", "Connections held after GRIP instructions, by kind", "gauge", "kind", kinds.items()
        )
        yield single("subscribed_channels", "Channels with at least one subscriber", "gauge", len(channels))
        yield single(
            "subscriptions",
            "Channel subscriptions (one per connection and channel)",
            "gauge",
            sum(router.subscriber_count(c) for c in channels),
        )
        # Prefix subscriptions (Grip-Channel: news.; prefix) apart: the two above stay exact channels.
        yield single("subscribed_prefixes", "Channel prefixes with at least one prefix subscriber", "gauge", len(prefixes))
        yield single(
            "prefix_subscriptions",
            "Prefix subscriptions (one per connection and prefix)",
            "gauge",
            sum(router.prefix_subscriber_count(p) for p in prefixes),
        )
        yield labelled(
            "publishes_total", "Publish requests received, by input", "counter", "input", counters.publishes.items()
        )
        yield single(
            "deliveries_total", "Messages written or queued to clients (the same count as message_sent)", "counter",
            counters.deliveries,
        )
        yield labelled("drops_total", "Messages dropped instead of delivered, by reason", "counter", "reason",
                       counters.drops.items())
        yield single("queue_depth", "Messages waiting in stream delivery queues, summed over connections", "gauge", depth)
        yield single("recoveries_total", "Re-syncs from the origin: Grip-Last retries, next-link recoveries, /recover/",
                     "counter", counters.recoveries)
        backplane = view.backplane
        if backplane is not None:
            snap = backplane.snapshot()
            yield labelled("backplane_state", "The Redis backplane's state: 1 for the current one (connecting, up, down)",
                           "gauge", "state", [(state, 1 if snap["state"] == state else 0)
                                              for state in ("connecting", "up", "down")])
            yield labelled("backplane_items_total", "Items through the Redis backplane, by outcome", "counter",
                           "outcome", [(key, snap[key]) for key in
                                       ("published", "received", "received_remote", "local_only", "unconfirmed", "rejected")])
            yield single("backplane_connects_total", "Times the Redis backplane connection came up", "counter",
                         snap["connects"])
        sequencer = view.sequencer
        if sequencer is not None:
            yield single("sequencer_parked", "Published items waiting for their predecessor now", "gauge", sequencer.pending)
            yield labelled(
                "sequencer_items_total",
                "Published items through the sequencer, by outcome",
                "counter",
                "outcome",
                [
                    ("parked", sequencer.parked),
                    ("released_by_timeout", sequencer.released_by_timeout),
                    ("duplicate_dropped", sequencer.duplicates_dropped),
                    ("duplicate_prev_id_dropped", sequencer.duplicate_prev_id_dropped),
                    ("parking_full_dropped", sequencer.parking_full_dropped),
                ],
            )


def samples_of(view: OpsView) -> dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]]:
    """
    A worker's metrics as plain data for the main process: unprefixed name -> (type,
    labels -> value) (see L{PushpinCollector.collect}).
    """
    out: dict[str, tuple[str, dict[tuple[tuple[str, str], ...], float]]] = {}
    for metric in PushpinCollector(view, "", view.reactor.seconds)._collect_own():
        out[metric.name] = (metric.type, {tuple(sorted(sample.labels.items())): sample.value for sample in metric.samples})
    return out


def _add_samples(metric: Metric, base: str, others: list[dict[str, Any]]) -> list[Any]:
    """C{metric}'s samples with the same series of every worker added; series only a worker has are appended."""
    totals: dict[tuple[tuple[str, str], ...], float] = {}
    for other in others:
        _kind, samples = other.get(base, ("", {}))
        for labels, value in samples.items():
            totals[labels] = totals.get(labels, 0) + value
    if not totals:
        return metric.samples
    samples = []
    for sample in metric.samples:
        key = tuple(sorted(sample.labels.items()))
        extra = totals.pop(key, 0)
        samples.append(sample._replace(value=sample.value + extra) if extra else sample)
    for labels, value in sorted(totals.items()):
        samples.append(metric.samples[0]._replace(labels=dict(labels), value=value) if metric.samples
                       else _sample(metric.name, dict(labels), value))
    return samples


def _sample(name: str, labels: dict[str, str], value: float) -> Any:
    from prometheus_client.samples import Sample

    return Sample(name, labels, value)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    # Integers as Pushpin writes them ("5", not "5.0"); floats the Prometheus way.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return floatToGoString(value)


def render(registry: CollectorRegistry | Collector) -> bytes:
    """The Prometheus text format (0.0.4) of every metric, names exactly as collected."""
    out: list[str] = []
    for metric in registry.collect():
        help_text = metric.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {metric.name} {help_text}\n")
        out.append(f"# TYPE {metric.name} {metric.type}\n")
        for sample in metric.samples:
            labels = ""
            if sample.labels:
                labels = "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in sample.labels.items()) + "}"
            out.append(f"{sample.name}{labels} {_number(sample.value)}\n")
    return "".join(out).encode("utf-8")


# --- serving ---------------------------------------------------------------------------------


class MetricsResource(Resource):
    """Answers every request, on any path and with any method (as Pushpin does), with the metrics."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, refresh: Callable[[], Any] | None = None) -> None:
        """
        @param refresh: called before each scrape; a Deferred it returns is waited for (with
            workers, the main process asks each worker for fresh figures first).
        """
        super().__init__()
        self._registry = registry
        self._refresh = refresh

    def render(self, request: server.Request) -> Any:
        request.setHeader(b"content-type", CONTENT_TYPE)
        if self._refresh is None:
            return render(self._registry)
        d = self._refresh()

        def write(_: object) -> None:
            if not request.finished and not is_disconnected(request):
                body = render(self._registry)
                request.setHeader(b"content-length", b"%d" % len(body))  # as a synchronous render sends it
                request.write(body)
                request.finish()

        d.addErrback(lambda f: _log.failure("metrics: refreshing worker figures failed", f))
        d.addCallback(write)
        return server.NOT_DONE_YET


class _MetricsSite(server.Site):
    def log(self, request: Any) -> None:
        """Scrapes are not logged (one every few seconds would drown the log)."""


class MetricsService(service.MultiService):
    """The metrics listener; C{port} is the bound port once started, C{feed} the status page's event feed."""

    def __init__(self, registry: CollectorRegistry, feed: StatusFeed | None = None, *,
                 endpoint: RecordingEndpoint | None = None) -> None:
        """@param endpoint: the listener's endpoint, which records the port it binds."""
        super().__init__()
        self.registry = registry
        self.feed = feed
        self._endpoint = endpoint

    def stopService(self) -> Any:
        if self.feed is not None:
            self.feed.stop()  # open event streams end, so the listener's connections can close
        return super().stopService()

    @property
    def port(self) -> Any:
        return self._endpoint.port if self._endpoint is not None else None


def make_metrics_service(pushpin: OpsView, *, port: str, prefix: str = "", reactor: Any = None,
                         passwd: str | None = None) -> MetricsService:
    """
    Serve C{pushpin}'s metrics on C{port} (a C{prometheus_port} value, see L{metrics_endpoint}),
    and the status page beside them (L{pushpin_tx.ops.status}).

    @param passwd: the console's passwd file: the status page's credentials when C{port}
        is not on loopback (without it, the page answers 401 there).

    The port is bound in C{privilegedStartService}; a bind failure stops start-up.
    @raise MetricsConfigError: an unusable port value or prefix.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    description = metrics_endpoint(port)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PushpinCollector(pushpin, prefix, reactor.seconds))
    pool = pushpin.workers
    refresh = pool.refresh if pool is not None else None
    status_collector = PushpinCollector(pushpin, "", reactor.seconds)
    feed = StatusFeed(lambda: build_status(pushpin, status_collector, reactor.seconds), refresh, reactor)
    local = listener_is_local(description)
    if not local:
        _log.info("status page: the metrics listener is not on loopback: /status needs the console's credentials"
                  " ([console] passwd){missing}",
                  missing="" if passwd else "; no passwd file is set, so it answers 401 to everyone")
    root = OperatorResource(MetricsResource(registry, refresh), feed, local=local, passwd=passwd)
    site = _MetricsSite(root, reactor=reactor)
    site.noisy = False
    # strports.service binds in privilegedStartService and raises there on failure; the
    # wrapper records the port.
    listener = strports.service(description, site, reactor=reactor)
    recorder = listener.endpoint = RecordingEndpoint(listener.endpoint, "prometheus metrics", description)
    metrics = MetricsService(registry, feed, endpoint=recorder)
    listener.setServiceParent(metrics)
    return metrics
