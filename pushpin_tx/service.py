# -*- test-case-name: tests.test_service -*-
"""
The service tree of one pushpin-tx process. L{PushpinService} builds every component in
dependency order and hands each its collaborators, registers the long-lived parts as child
services in start order, and starts and stops them as a whole.

Building only makes objects: sockets are bound in C{privilegedStartService} (twistd may fork
after building, and drop privileges after binding), timers and processes begin in
C{startService}.

Start is all or nothing: when a part cannot start (a port in use, a ZeroMQ address taken),
what had started is stopped again, the error is logged once and L{StartupError} is raised;
under twistd (C{owns_process}) the process then exits with status 1, without a traceback.

Stop runs in phases, each waiting for the one before, and a part that fails to stop is
logged and never keeps the others running:

 1. this turn's publishes reach the holds; the client listeners close and every held
    connection is ended cleanly (L{PushpinService.drain}), while the workers drain theirs;
 2. every other child stops, in the reverse of the start order (console, metrics, control
    API, ZeroMQ inputs, routes watcher);
 3. the timers no child owns (sequencer, channel linger, first-subscription updates, drop
    reports) stop and the origin connection pools close, so nothing is left on the reactor.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent
from twisted.web.iweb import IAgent

from pushpin_tx._compat import QuietConnectionPool, adopt_shared_unix_port
from pushpin_tx.core.first_subscription import FirstSubscriptionUpdates, first_subscription_updates
from pushpin_tx.core.linger import Subscriptions
from pushpin_tx.core.hold import HoldContext
from pushpin_tx.backplane.redis import RedisBackplane, parse_backplane_url
from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.sequencing import IdCache, LastIds, Sequencer
from pushpin_tx.core.stats import Counters, DropReporter
from pushpin_tx.core.stats_feed import StatsPublisher
from pushpin_tx.net import gcpolicy
from pushpin_tx.net.listening import ListenError, claim_port, listen_error, listen_reuseport, reason
from pushpin_tx.net.local import listen_local, listen_shared
from pushpin_tx.net.maxconn import ConnectionLimit, per_process
from pushpin_tx.net.tls import IdentityStore, tls_factory
from pushpin_tx.ops import logs
from pushpin_tx.ops.console import ConsoleService, make_console_service
from pushpin_tx.ops.console_helpers import ConsoleHelpers
from pushpin_tx.ops.metrics import MetricsService, make_metrics_service
from pushpin_tx.ops.routes_watch import RoutesFileService
from pushpin_tx.origin.client import OriginClient
from pushpin_tx.origin.http11 import OriginPool
from pushpin_tx.origin.tlspolicy import InsecurePolicy
from pushpin_tx.protocol.config import Settings, parse_signing_key
from pushpin_tx.protocol.items import Item
from pushpin_tx.protocol.publish_auth import publish_auth_from_settings
from pushpin_tx.protocol.signing import GripSigner
from pushpin_tx.web.accept import Acceptor
from pushpin_tx.web.clientsite import ClientSite
from pushpin_tx.web.control import ControlResource, ControlSite, reachable_from_elsewhere
from pushpin_tx.web.proxy import ProxyResource
from pushpin_tx.websocket.gateway import WebSocketGateway
from pushpin_tx.workers.pool import SharedInterest, SharedLastIds, WorkerPool
from pushpin_tx.zeromq.curve import curve_from_settings, exposed_specs
from pushpin_tx.zeromq.inputs import ZmqInputService

__all__ = ["PushpinService", "Listener", "StartupError", "connection_ids", "DRAIN_SECONDS"]

#: the longest a SIGTERM waits for held connections to take their last bytes
DRAIN_SECONDS = 5.0

#: how often the drain looks whether the held connections are gone
DRAIN_CHECK = 0.05


class StartupError(Exception):
    """A part of the service could not start; what had started was stopped again."""


class Listener(service.Service):
    """Binds one endpoint in privilegedStartService, so a failed bind stops start-up."""

    _log = Logger()

    def __init__(self, reactor: Any, description: str, factory: Any, label: str, *,
                 reuse_port: tuple[str, int] | None = None, claim: bool = False,
                 bind: Callable[[], Any] | None = None) -> None:
        """
        @param reuse_port: (host, port) to bind with SO_REUSEPORT instead of C{description}
            (workers > 1: every process binds the client ports).
        @param claim: claim the port against other pushpin-tx instances (the main process).
        @param bind: binds and returns the port itself, or raises L{ListenError} (a Unix
            socket: C{description} is its path).
        """
        self._reactor = reactor
        self._description = description
        self._factory = factory
        self._label = label
        self.port: Any = None
        self.reuse_port = reuse_port
        self.claim = claim
        self._claim: Any = None
        self._bind = bind

    def privilegedStartService(self) -> None:
        """Bind, or raise a L{ListenError} naming this listener and its address."""
        super().privilegedStartService()
        if self._bind is not None:
            self.port = self._bind()
            self._log.info("{label} listening on {path}", label=self._label, path=self._description)
            return
        if self.reuse_port is not None:
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
                raise ListenError(self._label, f"{host or '0.0.0.0'}:{port}", reason(e)) from None
            self._log.info("{label} listening on {host}:{port}", label=self._label, host=bound.host, port=bound.port)
            return
        endpoint = endpoints.serverFromString(self._reactor, self._description)
        d = endpoint.listen(self._factory)
        result: list[Any] = []
        d.addBoth(result.append)
        if not result:
            raise RuntimeError(f"{self._label}: listening on {self._description} did not complete at once")
        outcome = result[0]
        if isinstance(outcome, Failure):
            assert outcome.value is not None
            raise listen_error(self._label, outcome.value, self._description) from None
        self.port = outcome
        host = outcome.getHost()
        self._log.info("{label} listening on {host}:{port}", label=self._label, host=host.host, port=host.port)

    def stopService(self) -> Any:
        """Close the port (safe to call again, or without a start: there is nothing to close)."""
        super().stopService()
        if self._claim is not None:
            self._claim.close()
            self._claim = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


def connection_ids(worker_index: int, worker_count: int, generation: int) -> itertools.count[int]:
    """
    Connection ids unique over the processes and over HTTP and WebSocket connections:
    worker i of n numbers i+1, i+1+n, ...; a restarted worker starts a billion per restart
    higher, so the ids of the one it replaces are not handed out again.
    """
    return itertools.count(worker_index + 1 + generation * worker_count * 1_000_000_000, worker_count)


class PushpinService(service.MultiService):
    """
    The whole proxy of one process: its children are the listeners, inputs and watchers
    (in start order), its attributes the live state the console, metrics and worker link read.
    """

    _log = Logger()

    def __init__(self, settings: Settings, reactor: Any, *, worker_index: int = 0, worker_count: int | None = None,
                 listen_on: list[tuple[str, int]] | None = None, stats_forwarded: bool = False,
                 generation: int = 0, owns_process: bool = False,
                 shared_local: list[tuple[str, int]] | None = None) -> None:
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
        @param owns_process: this service is what the process runs (C{twistd pushpin}): the
            main process handles SIGHUP while running, and a failed start exits with status 1.
            Off for services built in tests or beside others.
        @param shared_local: a worker's Unix-socket client listeners, the main process's
            listening sockets it inherited: (path, descriptor) per C{local_ports} entry.
        """
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        count = settings.workers if worker_count is None else worker_count
        self.worker_index = worker_index
        self.worker_count = count
        self.stats_forwarded = stats_forwarded
        self.owns_process = owns_process
        is_worker = worker_index > 0
        #: the stop in progress (a second stopService waits for it rather than stopping twice)
        self._stopped: defer.Deferred[None] | None = None
        self._previous_sighup: Any = None
        #: privilegedStartService bound the children's ports (a stop must close them, started or not)
        self._bound = False
        #: the reactor was told to stop (L{stop_reactor}, or a signal): the process is ending
        self._reactor_stopping = False

        # What every process holds: counters, the channel router, the holds and their stats.
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
        #: the channels this process is subscribed to (Pushpin's cs.subs): held, or lingering
        #: subscription_linger seconds after a long-poll was the last to leave. The SUB input, the
        #: backplane, the sequencer's forgetting and the first-subscription timers follow it.
        self.subscriptions = Subscriptions(reactor, self.router, linger=settings.subscription_linger)
        # the stats feed's response-mode linger on the same refresh timer (Pushpin's stats manager)
        self.stats.follow(self.subscriptions)
        #: [handler] update_on_first_subscription (Pushpin 1.41, default true): a second after a
        #: channel's first subscriber, its long-polls re-ask the origin and its streams fetch
        #: their next link, rate limited as Pushpin's updates. Every process, on its own subscriptions.
        self.first_subscription: FirstSubscriptionUpdates | None = first_subscription_updates(
            reactor, self.router, self.subscriptions, enabled=settings.update_on_first_subscription)

        # The origin side: Agents (TLS, request bodies) over quiet persistent pools, and the
        # lean pool for body-less plain-HTTP requests. All three are this service's to close
        # when it stops (phase 3), so none is left to a reactor shutdown trigger.
        self._pool = QuietConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 64
        self._insecure_pool = QuietConnectionPool(reactor, persistent=True)
        self._origin_pool = OriginPool(reactor, connect_timeout=10)
        self.origin = OriginClient(
            IAgent(Agent(reactor, pool=self._pool, connectTimeout=10)),
            IAgent(Agent(reactor, contextFactory=InsecurePolicy(), pool=self._insecure_pool, connectTimeout=10)),
            reactor,
            pool=self._origin_pool,
        )
        self._signers: dict[tuple[str, str], GripSigner] = {}

        self.routes: RoutesFileService | None = None
        self.workers: WorkerPool | None = None
        self.sequencer: Sequencer | None = None
        self.control_listener: Listener | None = None
        self.zmq: ZmqInputService | None = None
        #: the Redis backplane (main process, when C{[handler] backplane} is set)
        self.backplane: RedisBackplane | None = None
        self.metrics: MetricsService | None = None
        self.console: ConsoleService | None = None
        self.intake = PublishIntake(self.router, self.counters, stats=self.stats, clock=reactor,
                                    pending_limit=settings.delivery_pending_max)
        # The channels' last ids. A worker applies the main process's as sent (it sequences
        # nothing itself); with workers, the main process's table tells them every change.
        self._interest: Any = self.subscriptions
        if is_worker or count == 1:
            self.last_ids: LastIds = LastIds()
        else:
            self._interest = SharedInterest(self.subscriptions)
            self.zmq = self._zmq_inputs()
            self.workers = self._worker_pool(self.zmq)
            self.last_ids = SharedLastIds(self.workers.forward)

        # The client side, in every process.
        ids = connection_ids(worker_index, count, generation)
        # The one loop between the client-side parts: the proxy hands GRIP answers to the
        # acceptor, and the acceptor calls back into the proxy (signing next-link requests,
        # relaying a non-GRIP answer), so the acceptor's two reach the proxy when called.
        self.acceptor = Acceptor(settings, self.hold_context, self.counters, self.origin,
                                 lambda info, netloc: self.proxy.link_headers_for(info, netloc),
                                 stats=self.stats, last_ids=self.last_ids,
                                 relay=lambda request, info, response: self.proxy.relay(request, info, response))
        self.websockets = WebSocketGateway(settings, reactor, self.hold_context, self.counters, self.origin, stats=self.stats, ids=ids)
        self.proxy = ProxyResource(settings, self.origin, self.signer_for, self.acceptor, self.counters, reactor,
                                   ids=ids, ws_gateway=self.websockets)
        #: client_maxconn, this process's share (connmgr shares it among its threads alike)
        self.connection_limit = ConnectionLimit(per_process(settings.client_maxconn, count))
        self._identities = IdentityStore(settings.certs_dir) if settings.https_ports else None
        tcp_ports = [(address, False) for address in settings.http_ports] + [(address, True) for address in settings.https_ports]
        self.client_listeners = [
            self._client_listener(i, address, tls, listen_on) for i, (address, tls) in enumerate(tcp_ports)
        ]
        # A Unix socket has no SO_REUSEPORT: the main process binds it, and a worker accepts on
        # the listening socket itself, inherited from the main process (workers/pool.py)
        if is_worker:
            self.local_listeners = [self._shared_local_listener(path, fd) for path, fd in shared_local or ()]
        else:
            self.local_listeners = [self._local_listener(local) for local in settings.local_ports]
        self.client_listeners += self.local_listeners
        if not is_worker:  # the routes table of a worker is the main process's (see WorkerLink)
            self._build_publish_side()
        for child in self._start_order():
            child.setServiceParent(self)

    # --- building ----------------------------------------------------------------------------

    def _client_site(self) -> ClientSite:
        return ClientSite(self.proxy, header_limit=self.settings.client_buffer_size, reactor=self.reactor,
                          limit=self.connection_limit, http2=self.settings.http2)

    def _client_listener(self, index: int, address: Any, tls: bool, listen_on: list[tuple[str, int]] | None) -> Listener:
        """
        The listener of one C{http_ports} or (C{tls}) C{https_ports} entry: SO_REUSEPORT when
        several processes serve it. An https port's default certificate is named after the
        port as configured (C{default_<port>}), in every process.
        """
        site: Any = self._client_site()
        label = "client"
        if tls:
            assert self._identities is not None
            site, label = tls_factory(site, self._identities, address.port), "client (https)"
        if self.worker_index > 0:  # the address the main process bound (port 0 resolved)
            return Listener(self.reactor, address.endpoint(), site, label, reuse_port=(listen_on or [])[index])
        if self.worker_count > 1:
            return Listener(self.reactor, address.endpoint(), site, label, reuse_port=(address.host, address.port), claim=True)
        return Listener(self.reactor, address.endpoint(), site, label)

    def _local_listener(self, local: Any) -> Listener:
        """The listener of one C{local_ports} entry (a Unix socket, its mode and owner applied)."""
        site = self._client_site()
        label = "client (local)"
        return Listener(self.reactor, local.path, site, label, bind=lambda: listen_local(
            self.reactor, local.path, site, mode=local.mode, user=local.user, group=local.group, label=label))

    def _shared_local_listener(self, path: str, fd: int) -> Listener:
        """A worker's listener on the main process's Unix socket C{path}, inherited as descriptor C{fd}."""
        site = self._client_site()
        label = "client (local)"
        return Listener(self.reactor, path, site, label, bind=lambda: listen_shared(
            self.reactor, path, fd, site, adopt=adopt_shared_unix_port, label=label))

    def _build_publish_side(self) -> None:
        """
        The main process's parts: the routes watcher, the sequencer in front of the router
        (§7), the control API, the ZeroMQ inputs (made earlier with workers: the pool sends
        the workers' stats packets through them), metrics and console.
        """
        settings = self.settings
        reactor = self.reactor
        count = self.worker_count
        interest = self._interest
        self.routes = RoutesFileService(
            settings.routesfile if settings.routes_override is None else None,
            override=settings.routes_override,
            clock=reactor,
            on_load=self._routes_loaded,
        )
        deliver: Callable[[Any], None] = self.intake.deliver
        pool = self.workers
        if pool is not None:
            local_deliver = deliver

            def deliver(item: Any) -> None:
                pool.forward(("item", item))
                local_deliver(item)

        # With a backplane, what the sequencer lets out goes to Redis, and what Redis sends
        # (our own included) is delivered here: one order for every instance
        # (pushpin_tx.backplane.redis). An item sequenced by another instance also sets
        # the channel's last id here, and releases what was parked waiting for it.
        sequenced: Callable[[Any], None] = deliver
        if settings.backplane:
            self.backplane = RedisBackplane(
                parse_backplane_url(settings.backplane), reactor, interest, deliver,
                deliver_remote=lambda item: self.sequencer.sequenced_elsewhere(item, deliver),  # type: ignore[union-attr]
            )
            sequenced = self.backplane.publish

        self.sequencer = Sequencer(
            reactor,
            self.last_ids,
            sequenced,
            wait=settings.message_wait / 1000.0,
            on_drop=lambda item, reason: self.drops(f"channel {item.channel}", item.channel, f"{reason} (id {item.id})"),
            # subscribed (lingering included), or under a subscribed prefix, in any process
            has_listeners=interest.reaches,
            id_cache=IdCache(settings.id_cache_ttl) if settings.id_cache_ttl > 0 else None,
        )
        self.intake.sequencer = self.sequencer
        interest.add_interest_listener(self.sequencer)  # a subscription's end forgets its channel
        # tap.Options.postOptions has loaded these once already: errors are usage errors there
        self.control = ControlResource(self.intake, recover=self.recover,
                                       auth=publish_auth_from_settings(settings, reactor.seconds))
        if settings.push_in_http_port >= 0:  # -1: no control API (Pushpin's code default)
            self.control_listener = Listener(
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
        if self.zmq is None:
            self.zmq = self._zmq_inputs()
        if settings.prometheus_port:
            self.metrics = make_metrics_service(self, port=settings.prometheus_port, prefix=settings.prometheus_prefix,
                                                reactor=reactor, passwd=settings.console_passwd)
        if settings.console_ssh_endpoint:
            self.console = make_console_service(
                ConsoleHelpers(self, objects={"service": self, "acceptor": self.acceptor, "intake": self.intake}).namespace(),
                endpoint=settings.console_ssh_endpoint,
                authorized_keys=settings.console_authorized_keys,
                passwd=settings.console_passwd,
                telnet_endpoint=settings.console_telnet_endpoint,
                host_key_path=settings.console_host_key,
                allow_remote=settings.console_allow_remote,
                reactor=reactor,
            )

    def _zmq_inputs(self) -> ZmqInputService:
        """The ZeroMQ publish inputs, command socket and stats socket (main process)."""
        return ZmqInputService(
            self.settings,
            self.reactor,
            self.intake,
            self._interest,
            is_connected=self.is_connected,
            recover=self.recover,
            # HTTP holds have nothing to refresh; an unknown connection id is "item-not-found".
            refresh=lambda cid=None, channel=None: False if cid is not None else None,
            stats=self.stats,
            curve=curve_from_settings(self.settings),
        )

    def _worker_pool(self, zmq_inputs: ZmqInputService) -> WorkerPool:
        """The pool of worker processes (main process, workers > 1); workers' stats packets go out on our stats socket."""
        settings = self.settings
        count = self.worker_count
        return WorkerPool(
            count, self.reactor,
            listen=self._bound_client_addresses,
            interest=self._interest,
            init=lambda index: {
                "settings": settings,
                "index": index,
                "count": count,
                "log": logs.configuration(),  # what the plugin gave logs.configure
                "stats": bool(settings.stats_spec),
                "routes": self.routes.table if self.routes is not None else None,
                "last_ids": self.last_ids.items(),
            },
            stats_send=zmq_inputs.send_stats,
            backpressure=self.intake.backpressure,
            shared=self._shared_client_sockets,
        )

    def _start_order(self) -> list[Any]:
        """
        The children in the order they start: the routes table first (a client is never
        routed without one), then the backplane (it connects in the background), the
        publish inputs and the control API, then the client
        listeners, then the workers (they bind the client ports the main process bound),
        then the operator endpoints. Stop goes the other way round, clients first.
        """
        parts: list[Any] = [self.routes, self.backplane, self.zmq, self.control_listener, *self.client_listeners,
                            self.workers, self.metrics, self.console]
        return [part for part in parts if part is not None]

    # --- what the inputs, console and workers call ---------------------------------------------

    def _bound_client_addresses(self) -> list[tuple[str, int]]:
        """The client ports as this process bound them (port 0 resolved), for the workers to bind too."""
        addresses = []
        for listener in self.client_listeners:
            if listener.reuse_port is None:  # a Unix socket: the main process's alone
                continue
            assert listener.port is not None
            addresses.append((listener.reuse_port[0], listener.port.getHost().port))
        return addresses

    def _shared_client_sockets(self) -> list[tuple[str, int]]:
        """The Unix-socket client listeners as this process bound them, (path, descriptor), for the workers to accept on too."""
        shared = []
        for local, listener in zip(self.settings.local_ports, self.local_listeners):
            assert listener.port is not None
            shared.append((local.path, listener.port.fileno()))
        return shared

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

    def connection_tables(self) -> list[dict[str, Any]]:
        """This process's live connections, id -> hold: HTTP holds, then WebSocket sessions."""
        return [self.acceptor.connections, self.websockets.connections]

    def publish(self, items: Sequence[Item], source: str) -> None:
        """The console's publish: through the intake, as the control API's."""
        self.intake.publish(items, source)

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
            from pushpin_tx.ops.status import process_status

            snap["metrics"] = samples_of(self)
            snap["status"] = process_status(self)  # the status page's busiest channels and latest drops
        return snap

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

    # --- start --------------------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind every listener and socket, in start order; on a failure, close what was bound."""
        self._log.info("starting...")
        if self.worker_index == 0:
            self._log_settings_notes()
        service.Service.privilegedStartService(self)
        self._start_children(lambda child: child.privilegedStartService(), bound_all=False)
        self._bound = True

    def startService(self) -> None:
        """Start every child in order; then handle SIGHUP (main process, under twistd)."""
        self.stats.instance_id = f"pushpin-handler_{os.getpid()}"  # the pid after twistd's fork
        self._stopped = None
        service.Service.startService(self)
        for listener in self.client_listeners:  # bound by now (privilegedStartService)
            if listener.port is not None:
                self.connection_limit.watch(listener.port)
        self._start_children(lambda child: child.startService(), bound_all=True)
        # Everything built so far (modules, config, routes, the service tree) lives as long as
        # the process: move it out of the collector's sight. Otherwise every full collection
        # walks all of them again, a pause that lands on whichever request triggered it and
        # makes the tail latency (bench/README.md); frozen, they cost nothing. Then connections
        # held are frozen too once they have opened (net/gcpolicy.py): full collections would
        # otherwise walk every held connection, and the cost of opening one would grow with them.
        gcpolicy.install(self.reactor)
        if self.owns_process:
            # right after the reactor installs its signal handlers: in its own "during startup"
            # trigger, the first one added (twistd starts the services before it runs the
            # reactor). Not callWhenRunning: that waits for "after startup", and a SIGTERM in
            # between would reach the reactor's handler unwrapped (L{_stop_signals_once}).
            if self.reactor.running:  # a worker starts its services from callWhenRunning
                self._stop_signals_once()
            else:
                self.reactor.addSystemEventTrigger("during", "startup", self._stop_signals_once)
        if self.owns_process and self.worker_index == 0 and hasattr(signal, "SIGHUP"):
            # signals are the main process's to handle; workers ignore SIGHUP (scripts.worker)
            self._previous_sighup = signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
        self._log.info("started")  # a worker's is tagged "[worker N]" by its log observer

    def stop_reactor(self) -> bool:
        """
        End the process: stop the reactor, once, whoever asks first (a signal, or in a worker
        the main process's "stop" or the end of its pipe). A second C{reactor.stop} raises
        C{ReactorNotRunning}; here it only means that the stop is already under way.

        @return: whether this call began the stop.
        """
        if self._reactor_stopping:
            return False
        self._reactor_stopping = True
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            return False
        return True

    def _stop_signals_once(self) -> None:
        """
        Let a SIGTERM or SIGINT reach the reactor's handler (installed when it began to run;
        it logs "Received SIGTERM" and stops the reactor) only while no stop is under way
        (L{stop_reactor}): that handler stops the reactor on every signal, and a second stop
        logs a C{ReactorNotRunning} traceback. A later signal is only noted.
        """

        def wrap(previous: Any) -> Any:
            def handle(number: int, frame: Any) -> None:
                if self._reactor_stopping:
                    self.reactor.callFromThread(
                        self._log.info, "received {signal} while stopping: the stop under way goes on",
                        signal=signal.Signals(number).name)
                    return
                self._reactor_stopping = True
                previous(number, frame)

            return handle

        for number in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(number)
            # the reactor's handler; not Python's own KeyboardInterrupt (the reactor leaves
            # that one in place only when it installs no handlers), nor SIG_DFL / SIG_IGN
            if callable(previous) and previous is not signal.default_int_handler:
                signal.signal(number, wrap(previous))
        # A signal may still have reached the reactor's own handler in the few instructions
        # between its install and ours: that handler queues its stop with callFromThread
        # (there is no public way to ask a reactor whether a stop is pending).
        if any(call[0] == self.reactor.stop for call in getattr(self.reactor, "threadCallQueue", ())):
            self._reactor_stopping = True

    def _start_children(self, start: Callable[[Any], None], *, bound_all: bool) -> None:
        """
        Run C{start} on each child in order. When one raises, every child that may hold
        something is stopped again: the failed one and those before it, and with
        C{bound_all} those after it too (they were bound in C{privilegedStartService}). Our
        children's C{stopService} is safe on a part that never or only half started. Then
        the failure is logged and L{StartupError} raised; under twistd, the process exits
        with status 1 instead (the cause is in the log: a traceback would add nothing).
        """
        children: list[Any] = list(self)
        for position, child in enumerate(children):
            try:
                start(child)
            except Exception as e:
                why = _describe(e)
                self._log.error("start-up failed: {why}", why=why)
                service.Service.stopService(self)
                self._bound = False
                bound = children if bound_all else children[: position + 1]
                self._log_stop_failures([defer.maybeDeferred(c.stopService) for c in reversed(bound)], "undoing the start")
                if self.owns_process:
                    raise SystemExit(1) from None
                raise StartupError(why) from e

    def _log_settings_notes(self) -> None:
        settings = self.settings
        if self.worker_count > 1:
            self._log.info("workers: {n} processes serving clients", n=self.worker_count)
        if settings.not_applicable:
            # true whatever the worker count: these keys set up Pushpin's own processes
            # (condure, zurl, pushpin-proxy/-handler and their ZeroMQ wiring) or its update check
            self._log.info("config keys for Pushpin's own processes, not used by pushpin-tx: {keys}",
                           keys=", ".join(settings.not_applicable))
        if settings.not_implemented:
            self._log.warn("config keys not implemented yet, ignored: {keys}", keys=", ".join(settings.not_implemented))
        if settings.unknown:
            self._log.warn("unknown config keys, ignored: {keys}", keys=", ".join(settings.unknown))
        if (settings.push_in_http_port >= 0 and reachable_from_elsewhere(settings.push_in_http_addr)
                and settings.push_in_http_auth_key is None and settings.push_in_http_auth_basic is None):
            self._log.warn(
                "SECURITY: the control API listens on {addr}, reachable from other hosts, with no credentials:"
                " anyone who can connect can publish. Bind push_in_http_addr to 127.0.0.1 or set"
                " [handler] push_in_http_auth_key / push_in_http_auth_basic",
                addr=settings.push_in_http_addr or "every interface",
            )
        if settings.push_in_curve_secret_key is None:
            bound = [settings.push_in_spec, settings.command_spec, settings.stats_spec]
            if not settings.push_in_sub_connect:
                bound += list(settings.push_in_sub_specs)
            exposed = exposed_specs([spec for spec in bound if spec])
            if exposed:
                self._log.warn(
                    "SECURITY: ZeroMQ inputs bound off loopback without CURVE ({specs}): anyone who can connect"
                    " can publish. Bind them to 127.0.0.1 or set [handler] push_in_curve_secret_key and"
                    " push_in_curve_clients",
                    specs=", ".join(exposed),
                )
        if settings.message_rate > 0 or settings.message_hwm > 0:
            self._log.warn(
                "[handler] message_rate={rate} / message_hwm={hwm} are not applied: every publish is delivered"
                " at once, each connection's delivery queue bounds memory (README: Differences from Pushpin)",
                rate=settings.message_rate,
                hwm=settings.message_hwm,
            )

    # --- stop ---------------------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None] | None:
        """
        Stop in the three phases of the module docstring. Fires (never fails) when all is
        stopped; a second call while stopping waits for the same stop. A service that never
        bound anything has nothing to stop; one that bound its ports but never started
        (stopped between twistd's two start steps) closes them.
        """
        if self._stopped is not None:
            return _follow(self._stopped)
        if not self.running and not self._bound:
            return None
        self._bound = False
        service.Service.stopService(self)  # not running any more: nothing is started again
        self._log.info("stopping...")
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        self.intake.flush()  # this turn's publishes reach the holds before they are shut down
        first = [self.drain()]
        if self.workers is not None:  # the workers drain their own connections meanwhile
            first.append(defer.maybeDeferred(self.workers.stopService))
        d = self._log_stop_failures(first, "draining")
        # every other child, bound or started (our children's stopService is safe either way)
        drained = {*self.client_listeners, self.workers}
        d.addCallback(lambda _: self._log_stop_failures(
            [defer.maybeDeferred(child.stopService) for child in reversed(list(self)) if child not in drained], "stopping"))
        d.addCallback(lambda _: self._stop_timers_and_pools())
        d.addCallback(lambda _: self._log.info("stopped"))
        self._stopped = d
        return _follow(d)

    def drain(self) -> defer.Deferred[None]:
        """
        SIGTERM: stop taking clients, then end every held connection cleanly (streams get
        their last chunk, long-polls their timeout response, WebSockets a 1001 close) and
        give their bytes up to C{DRAIN_SECONDS} to leave.
        """
        stops = [defer.maybeDeferred(listener.stopService) for listener in self.client_listeners]
        held = list(self.acceptor.connections.values())
        sockets = list(self.websockets.connections.values())
        if held or sockets:
            self._log.info("draining {n} held connections", n=len(held) + len(sockets))
        for hold in held:
            hold.shut_down()
        for session in sockets:
            if session.client is not None:
                session.client.close(1001, "server shutting down")
        d = self._log_stop_failures(stops, "closing the client listeners")
        if not held and not sockets:
            return d
        deadline = self.reactor.seconds() + DRAIN_SECONDS

        def check(_: object = None) -> Any:
            left = len(self.acceptor.connections) + len(self.websockets.connections)
            if not left:
                return None
            if self.reactor.seconds() >= deadline:
                self._log.warn("drain: {n} connections still open, closing them", n=left)
                return None
            from twisted.internet.task import deferLater

            return deferLater(self.reactor, DRAIN_CHECK, check)

        return d.addCallback(check)

    def _stop_timers_and_pools(self) -> defer.Deferred[None]:
        """Phase 3: the timers no child owns, then the origin connection pools."""
        steps: list[Callable[[], Any]] = [self.drops.stop, self._origin_pool.close,
                                          self._pool.closeCachedConnections, self._insecure_pool.closeCachedConnections]
        if self.sequencer is not None:
            steps[:0] = [self.sequencer.stop]
        if self.first_subscription is not None:
            steps[:0] = [self.first_subscription.stop]
        steps[:0] = [self.subscriptions.stop]
        return self._log_stop_failures([defer.maybeDeferred(step) for step in steps], "stopping timers and pools")

    def _log_stop_failures(self, waits: list[defer.Deferred[Any]], what: str) -> defer.Deferred[None]:
        """Wait for all of C{waits}; log each failure (the others carry on), never fail."""

        def report(results: list[tuple[bool, Any]]) -> None:
            for ok, result in results:
                if not ok:
                    self._log.failure("{what} failed", result, what=what)

        return defer.DeferredList(waits, consumeErrors=True).addCallback(report)


def _follow(d: defer.Deferred[None]) -> defer.Deferred[None]:
    """A new Deferred that fires with None when C{d} has fired, leaving C{d}'s result alone."""
    follower: defer.Deferred[None] = defer.Deferred()

    def fire(result: object) -> object:
        follower.callback(None)
        return result

    d.addBoth(fire)
    return follower


def _describe(e: BaseException) -> str:
    """An exception as one line for the log: its own message, or its type when it has none."""
    return str(e) or type(e).__name__


def _tcp(host: str, port: int) -> str:
    host_part = f":interface={endpoints.quoteStringArgument(host)}" if host else ""
    return f"tcp:{port}{host_part}"
