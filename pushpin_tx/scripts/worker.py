# -*- test-case-name: tests.workers.test_pool -*-
"""
A worker process of C{workers = N} (run as C{python -m pushpin_tx.scripts.worker} by
L{pushpin_tx.workers.pool.WorkerPool}, never by hand).

It reads its start-up message from the main process's pipe (the settings the main process
parsed, its index, the bound client ports, the log configuration), then runs the same
L{pushpin_tx.service.PushpinService} as the main process minus every publish input and
operator endpoint: it binds the TCP client ports beside the main process (SO_REUSEPORT),
accepts on the Unix-socket client listeners it inherited from the main process (their
descriptors, from L{pushpin_tx.workers.pool.FIRST_SHARED_FD} on), proxies and holds its
share of the clients, and applies what the main process sends (L{WorkerLink}).

It exits when the main process's pipe closes (the main process died) or on SIGTERM,
draining its held connections as the main process does.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from typing import TYPE_CHECKING, Any, Callable, Protocol, cast

from twisted.application import service
from twisted.internet import stdio, task
from twisted.logger import Logger

from pushpin_tx.workers.pool import FROM_WORKER_FD, TO_WORKER_FD, MessageReader, encode

if TYPE_CHECKING:
    from pushpin_tx.core.intake import PublishIntake
    from pushpin_tx.core.linger import Subscriptions
    from pushpin_tx.core.sequencing import LastIds
    from pushpin_tx.core.stats_feed import StatsPublisher
    from pushpin_tx.web.proxy import ProxyResource

__all__ = ["WorkerLink", "WorkerSide", "main"]

#: how often a worker sends its snapshot unasked
SNAPSHOT_INTERVAL = 1.0


class WorkerSide(Protocol):
    """
    What L{WorkerLink} reads and drives of the worker's service
    (L{pushpin_tx.service.PushpinService} provides it): the subscriptions' interest, the stats
    to forward, the snapshot to send, and where the main process's batches are applied.
    """

    @property
    def subscriptions(self) -> Subscriptions:
        """The worker's subscribed channels, lingers included (they go up to the main process)."""

    @property
    def stats(self) -> StatsPublisher:
        """The worker's stats packets (sent up when C{stats_forwarded})."""

    @property
    def stats_forwarded(self) -> bool:
        """The main process has a stats socket: this worker's packets go there."""

    @property
    def last_ids(self) -> LastIds:
        """The channels' last ids, as the main process sends them."""

    @property
    def intake(self) -> PublishIntake:
        """Where the main process's items are delivered."""

    @property
    def proxy(self) -> ProxyResource:
        """The proxy resource, given the main process's routes table."""

    def snapshot(self) -> dict[str, Any]:
        """This process's figures for the main process."""

    def resync_held(self) -> None:
        """Make every held HTTP session re-sync (the main process's recover)."""

    def reload(self) -> None:
        """SIGHUP, forwarded by the main process."""

    def stop_reactor(self) -> bool:
        """End the process, once; whether this call began the stop."""


class WorkerLink(service.Service):
    """
    The worker's end of the pipes: applies the main process's batches to this process's
    service, reports its channel interest, stats packets and snapshots.

    @param pushpin: this worker's service, as a L{WorkerSide}.
    @param transport_factory: makes the pipe transport for a protocol (C{StandardIO} on the
        pipe fds; tests pass a fake).
    """

    _log = Logger()

    def __init__(self, pushpin: WorkerSide, reactor: Any, transport_factory: Any = None) -> None:
        self._service = pushpin
        self._reactor = reactor
        self._transport_factory = transport_factory
        self._protocol = MessageReader(self._received, self._lost)
        self._snapshots: task.LoopingCall | None = None
        self.applied = 0

    def startService(self) -> None:
        super().startService()
        if self._transport_factory is None:
            # (mypy reads stdio.StandardIO as the Windows one, which has no stdin/stdout fds)
            stdio.StandardIO(self._protocol, stdin=TO_WORKER_FD, stdout=FROM_WORKER_FD,  # type: ignore[call-arg]
                             reactor=self._reactor)
        else:
            self._transport_factory(self._protocol)
        pushpin = self._service
        # while this worker's deliveries are behind their bound, the pipe from the main process
        # is not read: the main process sees its backlog grow and holds its publishers back
        transport = self._protocol.transport
        backpressure = getattr(pushpin.intake, "backpressure", None)
        if backpressure is not None and hasattr(transport, "pauseProducing"):
            backpressure.add_producer(transport)
        pushpin.subscriptions.add_interest_listener(self)
        for channel in list(pushpin.subscriptions.channels()):
            self.channel_added(channel)
        for prefix in list(pushpin.subscriptions.prefixes()):
            self.prefix_added(prefix)
        if pushpin.stats_forwarded:  # the main process has a stats socket: our packets go there
            pushpin.stats.attach(lambda packet: self.send(("stats", packet)))
            pushpin.stats.start()
        self._snapshots = task.LoopingCall(self.send_snapshot, 0)
        self._snapshots.clock = self._reactor
        self._snapshots.start(SNAPSHOT_INTERVAL, now=True)
        self.send(("ready",))

    def stopService(self) -> Any:
        super().stopService()
        if self._snapshots is not None and self._snapshots.running:
            self._snapshots.stop()
        self._service.subscriptions.remove_interest_listener(self)
        if self._service.stats_forwarded:
            self._service.stats.stop()
        return None

    def send(self, message: Any) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.write(encode(message))

    def send_snapshot(self, token: int) -> None:
        self.send(("snapshot", token, self._service.snapshot()))

    # the subscriptions' interest listener (lingers included): the main process needs the union
    # (SUB input, backplane, sequencing)
    def channel_added(self, channel: str) -> None:
        self.send(("interest", channel, True))

    def channel_removed(self, channel: str) -> None:
        self.send(("interest", channel, False))

    # and its prefixes (the SUB input and the backplane subscribe them upstream)
    def prefix_added(self, prefix: str) -> None:
        self.send(("interest-prefix", prefix, True))

    def prefix_removed(self, prefix: str) -> None:
        self.send(("interest-prefix", prefix, False))

    def _received(self, message: Any) -> None:
        kind = message[0]
        pushpin = self._service
        if kind == "batch":
            last_ids = pushpin.last_ids
            deliver = pushpin.intake.deliver
            for op in message[1]:
                name = op[0]
                if name == "item":
                    deliver(op[1])
                elif name == "set":
                    last_ids.set(op[1], op[2])
                elif name == "forget":
                    last_ids.forget(op[1])
                elif name == "clear":
                    last_ids.clear()
                elif name == "recover":
                    pushpin.resync_held()
                elif name == "routes":
                    pushpin.proxy.set_routes(op[1])
                elif name == "reload":
                    pushpin.reload()
                self.applied += 1
        elif kind == "stop":  # the main process is stopping: everything before this is applied
            self._stop_reactor(None)
        elif kind == "snapshot?":
            self.send_snapshot(message[1])
        else:
            self._log.warn("worker: unknown message {kind!r} from the main process", kind=kind)

    def _lost(self) -> None:
        if self.running:
            self._stop_reactor("worker: the main process is gone, stopping")

    def _stop_reactor(self, why: str | None) -> None:
        """
        Stop the reactor, once, whichever of the three comes first: the main process's
        "stop", the end of its pipe (which follows the "stop" when the main process exits),
        or this process's own SIGTERM (systemd signals every process of the unit, a terminal
        the whole process group); see L{pushpin_tx.service.PushpinService.stop_reactor}.
        C{why} is logged only when this began the stop.
        """
        if self._service.stop_reactor() and why is not None:
            self._log.info(why)


def tagged(observer: Callable[[dict], None], tag: str) -> Callable[[dict], None]:
    """
    C{observer} with C{tag} before every message, so that a worker's lines in the shared
    log say which process wrote them (the main process's lines have no tag).
    """

    def observe(event: dict) -> None:
        text = event.get("log_format")
        if text is not None:
            event = dict(event, log_format=tag + text)  # the tag has no braces to escape
        observer(event)

    return observe


def _die_with_parent() -> None:
    """
    Ask Linux for SIGTERM when the main process dies, for the case where this worker is
    too busy to notice its pipe closing (prctl PR_SET_PDEATHSIG; a no-op elsewhere).
    Through ctypes because the standard library has no prctl.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _read_init(fd: int) -> dict[str, Any]:
    """The first message on the pipe, read before the reactor runs (blocking is fine here)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = os.read(fd, n - len(data))
            if not chunk:
                raise SystemExit("pushpin-tx worker: the main process closed the pipe before start-up")
            data += chunk
        return data

    (length,) = struct.unpack("!I", exactly(4))
    kind, init = pickle.loads(exactly(length))
    if kind != "init":
        raise SystemExit(f"pushpin-tx worker: expected the start-up message, got {kind!r}")
    return init


def main() -> None:
    """Entry point of a worker process."""
    init = _read_init(TO_WORKER_FD)
    # SIGHUP is the main process's: it re-reads the routes and tells us (a hang-up of the
    # whole process group, or systemd's "kill -HUP" of the cgroup, must not kill a worker).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    from twisted.internet import reactor
    from twisted.logger import ILogObserver, globalLogBeginner

    from pushpin_tx.ops import logs
    from pushpin_tx.service import PushpinService

    loglevel, logfile, json_lines = init["log"]
    logs.configure(loglevel, logfile, json_lines)
    observer = cast(ILogObserver, tagged(logs.twistd_observer(), f"[worker {init['index']}] "))  # a callable is one
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    pushpin = PushpinService(
        init["settings"],
        reactor,
        worker_index=init["index"],
        worker_count=init["count"],
        listen_on=[tuple(a) for a in init["listen"]],
        stats_forwarded=init["stats"],
        generation=init.get("generation", 0),
        owns_process=True,
        shared_local=[(path, fd) for path, fd in init.get("shared", ())],
    )
    if init.get("routes") is not None:
        pushpin.proxy.set_routes(init["routes"])
    for channel, last_id in init.get("last_ids", ()):  # the main process's table now; batches follow
        pushpin.last_ids.set(channel, last_id)
    link = WorkerLink(pushpin, reactor)
    link.setServiceParent(pushpin)
    application = service.Application("pushpin-tx worker")
    pushpin.setServiceParent(application)
    service.IService(application).privilegedStartService()
    reactor.callWhenRunning(service.IService(application).startService)
    reactor.addSystemEventTrigger("before", "shutdown", service.IService(application).stopService)
    reactor.run()


if __name__ == "__main__":
    main()
    sys.exit(0)
