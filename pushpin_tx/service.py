# -*- test-case-name: tests.test_service -*-
"""
The service tree of one pushpin-tx process: L{PushpinService} builds every component, passes
each its collaborators, and starts and stops them in order.

Building only makes objects: sockets are bound in C{privilegedStartService} (so a port in use
stops start-up with an error and a non-zero exit) and nothing else touches the outside world
before C{startService}, because twistd may fork in between.
"""

from __future__ import annotations

import gc
import itertools
import os
import signal
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from twisted.web.client import Agent

from pushpin_tx._compat import QuietConnectionPool
from pushpin_tx.web.accept import Acceptor
from pushpin_tx.web.clientsite import ClientSite
from pushpin_tx.protocol.config import Settings, parse_signing_key
from pushpin_tx.ops.console import make_console_service
from pushpin_tx.ops.console_helpers import ConsoleHelpers
from pushpin_tx.ops.metrics import make_metrics_service
from pushpin_tx.web.control import ControlResource, ControlSite
from pushpin_tx.core.hold import HoldContext
from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.ops import logs
from pushpin_tx.origin.client import OriginClient
from pushpin_tx.web.proxy import ProxyResource
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.sequencing import ChannelLinger, IdCache, LastIds, Sequencer
from pushpin_tx.ops.routes_watch import RoutesFileService
from pushpin_tx.protocol.signing import GripSigner
from pushpin_tx.core.stats import Counters, DropReporter
from pushpin_tx.origin.tlspolicy import InsecurePolicy
from pushpin_tx.net.listening import claim_port, listen_reuseport
from pushpin_tx.workers.pool import SharedInterest, SharedLastIds, WorkerPool
from pushpin_tx.websocket.gateway import WebSocketGateway
from pushpin_tx.zeromq.inputs import ZmqInputService
from pushpin_tx.core.stats_feed import StatsPublisher

__all__ = ["PushpinService", "DRAIN_SECONDS"]

#: the longest a SIGTERM waits for held connections to take their last bytes
DRAIN_SECONDS = 5.0


class _Listener(service.Service):
    """Binds one endpoint in privilegedStartService, so a failed bind stops start-up."""

    _log = Logger()

    def __init__(self, reactor: Any, description: str, factory: Any, label: str) -> None:
        self._reactor = reactor
        self._description = description
        self._factory = factory
        self._label = label
        self.port: Any = None
        #: (host, port) to bind with SO_REUSEPORT instead of the endpoint (workers > 1)
        self.reuse_port: tuple[str, int] | None = None
        #: whether to claim the port against other pushpin-tx instances (the main process)
        self.claim = False
        self._claim: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.reuse_port is not None:  # workers > 1: every process binds the port
            host, port = self.reuse_port
            try:
                self.port = listen_reuseport(self._reactor, host, port, self._factory)
                bound = self.port.getHost()
                if self.claim:
                    self._claim = claim_port(host, bound.port)
            except OSError as e:
                if self.port is not None:
                    self.port.stopListening()
                    self.port = None
                self._log.error("{label}: cannot listen on {host}:{port}: {why}", label=self._label, host=host, port=port, why=e.strerror or e)
                raise
            self._log.info("{label} listening on {host}:{port}", label=self._label, host=bound.host, port=bound.port)
            return
        endpoint = endpoints.serverFromString(self._reactor, self._description)
        d = endpoint.listen(self._factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            raise RuntimeError(f"{self._label}: listening on {self._description} did not complete at once")
        outcome = result[0]
        if hasattr(outcome, "raiseException"):
            self._log.error("{label}: cannot listen on {endpoint}: {why}", label=self._label, endpoint=self._description, why=outcome.getErrorMessage())
            outcome.raiseException()
        self.port = outcome
        host = outcome.getHost()
        self._log.info("{label} listening on {host}:{port}", label=self._label, host=host.host, port=host.port)

    def stopService(self) -> Any:
        super().stopService()
        if self._claim is not None:
            self._claim.close()
            self._claim = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class PushpinService(service.MultiService):
    """The whole proxy: its children are the listeners and inputs, its attributes the live state."""

    _log = Logger()

    def __init__(self, settings: Settings, reactor: Any, *, worker_index: int = 0, worker_count: int | None = None,
                 listen_on: list[tuple[str, int]] | None = None, stats_forwarded: bool = False,
                 generation: int = 0) -> None:
        """
        @param worker_index: 0 for the main process (the one twistd runs); a spawned worker
            process (L{pushpin_tx.scripts.worker}) passes its index and has no publish inputs,
            control API, metrics or console: the main process serves those for all.
        @param worker_count: the number of processes (default: C{settings.workers}).
        @param listen_on: a worker's client addresses, as the main process bound them
            (port 0 resolved): (host, port) per C{http_ports} entry.
        @param stats_forwarded: a worker whose stats packets go up to the main process's
            stats socket.
        @param generation: how many times this worker index was started before.
        """
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        count = settings.workers if worker_count is None else worker_count
        self.worker_index = worker_index
        self.worker_count = count
        self.stats_forwarded = stats_forwarded
        is_worker = worker_index > 0
        self.counters = Counters()
        self.router = ChannelRouter()
        self.drops = DropReporter(self.counters, reactor)
        self.stats = StatsPublisher(
            reactor,
            self.counters,
            fmt=settings.stats_format,
            connection_ttl=settings.stats_connection_ttl,
            subscription_ttl=settings.stats_subscription_ttl,
            subscription_linger=settings.subscription_linger,
            report_interval=settings.stats_report_interval,
        )
        self.hold_context = HoldContext(
            self.router,
            reactor,
            self.counters,
            queue_limit=settings.delivery_queue_max,
            overflow=settings.delivery_overflow,
            on_drop=self.drops,
            stats=self.stats,
            subscription_max=settings.connection_subscription_max,
        )
        self._pool = QuietConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 64
        self._insecure_pool = QuietConnectionPool(reactor, persistent=True)
        self.origin = OriginClient(
            Agent(reactor, pool=self._pool, connectTimeout=10),
            Agent(reactor, contextFactory=InsecurePolicy(), pool=self._insecure_pool, connectTimeout=10),
            reactor,
        )
        self._signers: dict[tuple[str, str], GripSigner] = {}
        self.acceptor = Acceptor(settings, self.hold_context, self.counters, self.origin, stats=self.stats)
        self.proxy = ProxyResource(settings, self.origin, self.signer_for, self.acceptor, self.counters, reactor)
        self.acceptor.link_headers = self.proxy.link_headers_for
        self.acceptor.relay = self.proxy.relay
        self.websockets = WebSocketGateway(settings, reactor, self.hold_context, self.counters, self.origin, stats=self.stats)
        self.proxy.ws_gateway = self.websockets
        # Connection ids unique over the processes and over HTTP and WebSocket connections:
        # worker i of n numbers i+1, i+1+n, ...; a restarted worker starts a billion per
        # restart higher, so the ids of the one it replaces are not handed out again.
        ids = itertools.count(worker_index + 1 + generation * count * 1_000_000_000, count)
        self.proxy._ids = self.websockets._ids = ids
        self.intake = PublishIntake(self.router, self.counters, stats=self.stats, clock=reactor)
        self.routes: RoutesFileService | None = None
        if not is_worker:  # a worker takes the main process's table (see WorkerLink), never its own reading
            self.routes = RoutesFileService(
                settings.routesfile if settings.routes_override is None else None,
                override=settings.routes_override,
                clock=reactor,
                on_load=self._routes_loaded,
            )
            self.routes.setServiceParent(self)
        self.workers: WorkerPool | None = None
        self.sequencer: Sequencer | None = None
        self.control_listener: _Listener | None = None
        self.zmq: ZmqInputService | None = None
        self.metrics = None
        self.console = None
        self.client_listeners = []
        for i, address in enumerate(settings.http_ports):
            site = ClientSite(self.proxy, header_limit=settings.client_buffer_size, reactor=reactor)
            listener = _Listener(reactor, address.endpoint(), site, "client")
            if is_worker:
                listener.reuse_port = (listen_on or [])[i]
            elif count > 1:
                listener.reuse_port = (address.host, address.port)
                listener.claim = True
            listener.setServiceParent(self)
            self.client_listeners.append(listener)
        if is_worker:
            # sequenced in the main process: a worker applies its last ids and items as sent
            self.last_ids = LastIds()
            self.acceptor.last_ids = self.last_ids
            return
        interest: Any = self.router
        deliver = self.intake.deliver
        if count > 1:
            interest = SharedInterest(self.router)
            self.workers = WorkerPool(
                self, count, reactor,
                listen=lambda: [(lst.reuse_port[0], lst.port.getHost().port) for lst in self.client_listeners],
                interest=interest,
                init=lambda index: {
                    "settings": settings,
                    "index": index,
                    "count": count,
                    "log": tuple(logs._configured),  # what the plugin gave logs.configure
                    "stats": bool(settings.stats_spec),
                    "routes": self.routes.table if self.routes is not None else None,
                    "last_ids": self.last_ids.items(),
                },
            )
            self.workers.setServiceParent(self)
            self.last_ids: LastIds = SharedLastIds(self.workers.forward)
            pool = self.workers
            local_deliver = deliver

            def deliver(item: Any) -> int:
                pool.forward(("item", item))
                return local_deliver(item)
        else:
            self.last_ids = LastIds()
        # reliable delivery (§7): id cache and prev-id sequencing in front of the router
        self.sequencer = Sequencer(
            reactor,
            self.last_ids,
            deliver,
            wait=settings.message_wait / 1000.0,
            on_drop=lambda item, reason: self.drops(f"channel {item.channel}", item.channel, f"{reason} (id {item.id})"),
            has_listeners=(lambda channel: self.router.subscriber_count(channel) > 0) if count == 1 else interest.has,
            id_cache=IdCache(settings.id_cache_ttl) if settings.id_cache_ttl > 0 else None,
        )
        self.intake.sequencer = self.sequencer
        self.acceptor.last_ids = self.last_ids
        self.channel_linger = ChannelLinger(reactor, self.sequencer, settings.subscription_linger)
        interest.add_interest_listener(self.channel_linger)
        self.control = ControlResource(self.intake, recover=self.recover)
        if settings.push_in_http_port >= 0:  # -1: no control API (Pushpin's code default)
            self.control_listener = _Listener(
                reactor,
                _tcp(settings.push_in_http_addr, settings.push_in_http_port),
                ControlSite(
                    self.control,
                    max_headers=settings.push_in_max_headers_size,
                    max_body=settings.push_in_max_body_size,
                    reactor=reactor,
                ),
                "control API",
            )
            self.control_listener.setServiceParent(self)
        self.zmq = ZmqInputService(
            settings,
            reactor,
            self.intake,
            interest,
            is_connected=self.is_connected,
            recover=self.recover,
            # HTTP holds have nothing to refresh; an unknown connection id is "item-not-found".
            refresh=lambda cid=None, channel=None: False if cid is not None else None,
            stats=self.stats,
        )
        self.zmq.setServiceParent(self)
        if self.workers is not None:
            self.workers.stats_send = self.zmq._send_stats
        if settings.prometheus_port:
            self.metrics = make_metrics_service(self, port=settings.prometheus_port, prefix=settings.prometheus_prefix, reactor=reactor)
            self.metrics.setServiceParent(self)
        if settings.console_ssh_endpoint:
            self.console = make_console_service(
                ConsoleHelpers(self).namespace(),
                endpoint=settings.console_ssh_endpoint,
                authorized_keys=settings.console_authorized_keys,
                passwd=settings.console_passwd,
                telnet_endpoint=settings.console_telnet_endpoint,
                host_key_path=settings.console_host_key,
                allow_remote=settings.console_allow_remote,
                reactor=reactor,
            )
            self.console.setServiceParent(self)

    def _routes_loaded(self, table: Any) -> None:
        self.proxy.set_routes(table)
        if self.workers is not None:
            self.workers.forward(("routes", table))

    def signer_for(self, route: Any) -> GripSigner:
        """The Grip-Sig signer for a route: its own sig_iss/sig_key when both are set."""
        settings = self.settings
        if route.sig_iss and route.sig_key:
            cache_key = (route.sig_iss, route.sig_key)
            signer = self._signers.get(cache_key)
            if signer is None:
                key = parse_signing_key(route.sig_key, settings.config_dir)
                signer = self._signers[cache_key] = GripSigner(route.sig_iss, key, self.reactor.seconds)
            return signer
        signer = self._signers.get(("", ""))
        if signer is None:
            signer = self._signers[("", "")] = GripSigner(settings.sig_iss, settings.sig_key, self.reactor.seconds)
        return signer

    def recover(self) -> None:
        """
        C{POST /recover/} and the command socket's C{recover}: forget every last id and make
        every held HTTP session re-sync (long-polls re-asked with Grip-Last, streams fetch
        their next link).
        """
        held = len(self.acceptor.connections)
        self._log.info("recover: forgetting last ids, re-syncing {n} held connections", n=held)
        self.intake.flush()  # what was published before the recover goes out before it
        if self.sequencer is not None:
            self.sequencer.clear()
        if self.workers is not None:
            self.workers.forward(("recover",))
        self.resync_held()

    def resync_held(self) -> None:
        """Make every held HTTP session of this process re-sync from the origin."""
        self.intake.flush()  # publishes before the recover reach the holds before it, as they came
        for hold in list(self.acceptor.connections.values()):
            hold.resync()

    def is_connected(self, conn_id: str) -> bool:
        """C{conncheck}: whether a client connection id is live in any process."""
        if self.stats.is_connected(conn_id):
            return True
        return self.workers is not None and self.workers.is_connected(conn_id)

    def snapshot(self) -> dict[str, Any]:
        """This process's figures, for the main process's console and metrics (workers > 1)."""
        counters = self.counters.snapshot()
        counters["connection_minutes_closed"] = self.counters.connection_minutes_closed
        snap: dict[str, Any] = {
            "pid": os.getpid(),
            "counters": counters,
            "held": len(self.acceptor.connections) + len(self.websockets.connections),
            "connections": self.stats.connection_ids(),
            "router_published": self.router.published,
            "router_published_idle": self.router.published_idle,
        }
        if self.settings.prometheus_port:
            from pushpin_tx.ops.metrics import samples_of

            snap["metrics"] = samples_of(self)
        return snap

    def privilegedStartService(self) -> None:
        self._log.info("starting...")
        settings = self.settings
        if self.worker_index > 0:
            super().privilegedStartService()
            return
        if self.worker_count > 1:
            self._log.info("workers: {n} processes serving clients", n=self.worker_count)
        if settings.not_applicable:
            self._log.info("config keys not applicable to pushpin-tx (one process): {keys}", keys=", ".join(settings.not_applicable))
        if settings.not_implemented:
            self._log.warn("config keys not implemented yet, ignored: {keys}", keys=", ".join(settings.not_implemented))
        if settings.unknown:
            self._log.warn("unknown config keys, ignored: {keys}", keys=", ".join(settings.unknown))
        if settings.message_rate > 0 or settings.message_hwm > 0:
            self._log.warn(
                "[handler] message_rate={rate} / message_hwm={hwm} are not applied: every publish is delivered"
                " at once, each connection's delivery queue bounds memory (README: Differences from Pushpin)",
                rate=settings.message_rate,
                hwm=settings.message_hwm,
            )
        super().privilegedStartService()

    def startService(self) -> None:
        self.stats.instance_id = f"pushpin-handler_{os.getpid()}"  # the pid after twistd's fork
        super().startService()
        # Everything built so far (modules, config, routes, the service tree) lives as long as
        # the process: move it out of the collector's sight. Profiled on proxied GETs, full
        # collections walked ~66,000 start-up objects for ~37 ms each, ~30 us per request and
        # the whole p99; frozen, they cost nothing.
        gc.freeze()
        if self.worker_index > 0:  # signals are the main process's to handle
            self._log.info("started")  # tagged "[worker N]" by the worker's log observer
            return
        if hasattr(signal, "SIGHUP") and self.reactor is _global_reactor():
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        self._log.info("started")

    def reload(self) -> None:
        """
        SIGHUP: reopen the log file and re-read the routes (connections stay open;
        pushpin.conf is not re-read, as in Pushpin).
        """
        logs.reopen()
        self._log.info("reloading")
        if self.routes is not None:
            self.routes.reload()
        if self.workers is not None:
            self.workers.forward(("reload",))

    def drain(self) -> Any:
        """
        SIGTERM: stop taking clients, then end every held connection cleanly (streams get
        their last chunk, long-polls their timeout response, WebSockets a 1001 close) and
        give their bytes up to C{DRAIN_SECONDS} to leave.
        """
        from twisted.internet.defer import DeferredList
        from twisted.internet.task import deferLater

        stops = [listener.stopService() for listener in self.client_listeners]
        held = list(self.acceptor.connections.values())
        sockets = list(self.websockets.connections.values())
        if held or sockets:
            self._log.info("draining {n} held connections", n=len(held) + len(sockets))
        for hold in held:
            hold.shut_down()
        for session in sockets:
            if session.client is not None:
                session.client.close(1001, "server shutting down")
        d = DeferredList([x for x in stops if x is not None])

        def wait(_: object) -> Any:
            if not held and not sockets:
                return None
            deadline = self.reactor.seconds() + DRAIN_SECONDS

            def check() -> Any:
                if not self.acceptor.connections and not self.websockets.connections:
                    return None
                if self.reactor.seconds() >= deadline:
                    self._log.warn("drain: {n} connections still open, closing them", n=len(self.acceptor.connections) + len(self.websockets.connections))
                    return None
                return deferLater(self.reactor, 0.05, check)

            return check()

        return d.addCallback(wait)

    def stopService(self) -> Any:
        self._log.info("stopping...")
        self.intake.flush()  # this turn's publishes reach the holds before they are shut down
        d = self.drain()
        if self.workers is not None:  # the workers drain their own connections meanwhile
            workers_stopped = self.workers.stopService()
            if workers_stopped is not None:
                d = defer.gatherResults([d, workers_stopped])
        d.addCallback(lambda _: self._stop_rest())
        return d

    def _stop_rest(self) -> Any:
        if self.sequencer is not None:
            self.channel_linger.stop()
            self.sequencer.stop()
        self.drops.stop()
        d = super().stopService()

        def close_pools(result: object) -> Any:
            from twisted.internet.defer import gatherResults

            return gatherResults([self._pool.closeCachedConnections(), self._insecure_pool.closeCachedConnections()])

        d.addBoth(close_pools)
        d.addBoth(lambda _: self._log.info("stopped"))
        return d


def _tcp(host: str, port: int) -> str:
    host_part = f":interface={endpoints.quoteStringArgument(host)}" if host else ""
    return f"tcp:{port}{host_part}"


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor
