# -*- test-case-name: tests.workers.test_pool -*-
"""
The main process's side of C{workers = N}: it spawns N-1 worker processes that serve
clients on the same ports (SO_REUSEPORT, the port claimed against a second pushpin-tx:
L{pushpin_tx.net.listening}), and keeps them in step. A Unix-socket client listener
(C{local_ports}) has no SO_REUSEPORT: the main process binds it (its mode and owner, its
refusal to take over a live socket) and every worker inherits the listening socket itself,
as descriptor L{FIRST_SHARED_FD} onwards, so all the processes accept from its one queue.

Why processes: one CPython reactor uses one core. Clients are spread over the processes
by the kernel; publishes still arrive at one place (the control API and the ZeroMQ
sockets stay single addresses in the main process), are sequenced there once, and every
step of the sequencer's outcome (I{deliver this item}, I{this channel's last id is now X},
I{forget}, I{recover}) is sent down a pipe to every worker, which delivers to its own
connections. What flows back up is small: which channels a worker has subscribers on
(so SUB subscriptions and sequencing see the whole), stats-socket packets, and a snapshot
of its counters and metrics once a second or when asked.

Messages are pickled tuples behind a 4-byte length (L{encode}; Twisted's
C{Int32StringReceiver} splits them on the other side). Both ends are our own code from
the same installation, so pickle's trust model fits; the pipes are inherited, never
reachable from outside.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from collections import Counter
from typing import Any, Callable, Iterable

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

import pushpin_tx
from pushpin_tx._compat import buffered_bytes, knows_write_buffer
from pushpin_tx.core.prefix_index import PrefixIndex
from pushpin_tx.core.sequencing import LastIds

__all__ = [
    "encode",
    "MessageReader",
    "SharedInterest",
    "SharedLastIds",
    "WorkerPool",
    "merge_counters",
    "TO_WORKER_FD",
    "FROM_WORKER_FD",
    "FIRST_SHARED_FD",
]

#: the worker's end of the main -> worker pipe, and of the worker -> main pipe
TO_WORKER_FD = 3
FROM_WORKER_FD = 4
#: the first of the worker's descriptors for the listening sockets it shares with the main
#: process (the Unix-socket client listeners), one each, in order
FIRST_SHARED_FD = 5

#: largest message either side accepts (a snapshot of 100,000 connection ids fits easily)
MAX_MESSAGE = 256 * 1024 * 1024

#: a worker this far behind on its pipe (bytes the main process holds for it) is stuck:
#: it is killed, logged and started again rather than letting the main process grow
MAX_BACKLOG = 64 * 1024 * 1024

#: a worker that exits on its own is started again after this long; doubled (up to
#: RESTART_DELAY_MAX) while restarted workers keep dying within RESTART_STABLE seconds
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
RESTART_STABLE = 10.0

#: a worker silent this long (no snapshot, which it sends every second) is stuck: killed
#: and started again; checked every HEARTBEAT_CHECK seconds
SILENCE_LIMIT = 30.0
HEARTBEAT_CHECK = 5.0

#: how long L{WorkerPool.refresh} waits for snapshots, and stop for workers to exit
REFRESH_TIMEOUT = 2.0
STOP_TIMEOUT = 10.0

_LENGTH = struct.Struct("!I")


def encode(message: Any) -> bytes:
    """One message as bytes for the pipe: a 4-byte big-endian length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


class MessageReader(Int32StringReceiver):
    """
    Turns pipe bytes back into messages for C{on_message}. Used both as a protocol (the
    worker's C{StandardIO} on its pipe fds) and fed by hand (the main process gets a
    worker's bytes through C{ProcessProtocol.childDataReceived}).
    """

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, on_message: Callable[[Any], None], on_lost: Callable[[], None] | None = None) -> None:
        self._on_message = on_message
        self._on_lost = on_lost

    def stringReceived(self, data: bytes) -> None:
        self._on_message(pickle.loads(data))

    def lengthLimitExceeded(self, length: int) -> None:
        raise ValueError(f"worker pipe: message of {length} bytes is over the {MAX_MESSAGE} limit")

    def connectionLost(self, reason: Any = None) -> None:
        if self._on_lost is not None:
            self._on_lost()


class SharedLastIds(LastIds):
    """The main process's last-id table: every change is also sent to the workers."""

    __slots__ = ("on_change",)

    def __init__(self, on_change: Callable[[tuple], None], max_channels: int | None = None) -> None:
        if max_channels is None:
            super().__init__()
        else:
            super().__init__(max_channels)
        self.on_change = on_change

    def set(self, channel: str, id: str | None) -> None:
        super().set(channel, id)
        self.on_change(("set", channel, id))

    def forget(self, channel: str) -> None:
        super().forget(channel)
        self.on_change(("forget", channel))

    def clear(self) -> None:
        super().clear()
        self.on_change(("clear",))


class SharedInterest:
    """
    Which channels and prefixes are subscribed in any process (lingers included): the main
    process's subscriptions (L{pushpin_tx.core.linger.Subscriptions}) plus what the workers
    report of theirs. Looks like the subscriptions to its interest listeners (the ZeroMQ SUB
    input, the backplane, the sequencer), which then act on the whole, not on one process;
    prefixes go to the listeners that have C{prefix_added}/C{prefix_removed}, as the
    subscriptions tell them.
    """

    _log = Logger()

    def __init__(self, router: Any) -> None:
        self._router = router
        #: channel -> number of processes with subscribers on it
        self._holders: Counter[str] = Counter()
        #: prefix -> number of processes with prefix subscribers on it
        self._prefix_holders: PrefixIndex[str, int] = PrefixIndex()
        self._listeners: list[Any] = []
        self._prefix_listeners: list[Any] = []
        router.add_interest_listener(self)

    # the subscriptions' listener interface, for the main process's own subscribers
    def channel_added(self, channel: str) -> None:
        self.add(channel)

    def channel_removed(self, channel: str) -> None:
        self.remove(channel)

    def prefix_added(self, prefix: str) -> None:
        self.add_prefix(prefix)

    def prefix_removed(self, prefix: str) -> None:
        self.remove_prefix(prefix)

    def add(self, channel: str) -> None:
        """One more process has subscribers on C{channel}."""
        holders = self._holders
        holders[channel] += 1
        if holders[channel] == 1:
            self._tell(self._listeners, "channel_added", channel)

    def remove(self, channel: str) -> None:
        """One process no longer has subscribers on C{channel}."""
        holders = self._holders
        if holders.get(channel, 0) <= 0:
            return
        holders[channel] -= 1
        if holders[channel] == 0:
            del holders[channel]
            self._tell(self._listeners, "channel_removed", channel)

    def add_prefix(self, prefix: str) -> None:
        """One more process has prefix subscribers on C{prefix}."""
        holders = self._prefix_holders
        if holders.add(prefix, (holders.get(prefix) or 0) + 1):
            self._tell(self._prefix_listeners, "prefix_added", prefix)

    def remove_prefix(self, prefix: str) -> None:
        """One process no longer has prefix subscribers on C{prefix}."""
        holders = self._prefix_holders
        count = holders.get(prefix)
        if count is None:
            return
        if count > 1:
            holders.add(prefix, count - 1)
        else:
            holders.remove(prefix)
            self._tell(self._prefix_listeners, "prefix_removed", prefix)

    def _tell(self, listeners: list[Any], event: str, name: str) -> None:
        for listener in list(listeners):
            try:  # as the router does: one failing listener must not stop the others
                getattr(listener, event)(name)
            except Exception:
                self._log.failure("interest listener failed for channel {channel}", channel=name)

    def has(self, channel: str) -> bool:
        return channel in self._holders

    def reaches(self, channel: str) -> bool:
        """Whether some process holds C{channel}, exactly or under a prefix (lingers included)."""
        return channel in self._holders or self._prefix_holders.matches(channel)

    # the router's interest-source interface
    def add_interest_listener(self, listener: Any) -> None:
        self._listeners.append(listener)
        if hasattr(listener, "prefix_added"):
            self._prefix_listeners.append(listener)

    def remove_interest_listener(self, listener: Any) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        if listener in self._prefix_listeners:
            self._prefix_listeners.remove(listener)

    def channels(self) -> Iterable[str]:
        return list(self._holders)

    def prefixes(self) -> Iterable[str]:
        return list(self._prefix_holders)


def merge_counters(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum L{pushpin_tx.core.stats.Counters.snapshot} dicts: numbers add, dicts add per key."""
    total: dict[str, Any] = {}
    for snapshot in snapshots:
        for key, value in snapshot.items():
            if isinstance(value, dict):
                merged = total.setdefault(key, {})
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


class _Worker(protocol.ProcessProtocol):
    """One worker process as the main process sees it."""

    def __init__(self, pool: "WorkerPool", index: int) -> None:
        self.pool = pool
        self.index = index
        self.pid: int | None = None
        #: the worker's last snapshot (None until the first arrives)
        self.snapshot: dict[str, Any] | None = None
        #: channels it reported subscribers on, and prefixes
        self.channels: set[str] = set()
        self.prefixes: set[str] = set()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.alive = False
        #: whether its pipe still takes writes (it closes before the process is reaped)
        self.writable = False
        self.started_at = 0.0
        #: when a message last came from it
        self.last_heard = 0.0
        self._reader = MessageReader(lambda message: pool._received(self, message))

    def _process(self) -> Any:
        """The process transport (set from connectionMade on, which is before any other use)."""
        transport = self.transport
        assert transport is not None
        return transport

    def connectionMade(self) -> None:
        self.pid = self._process().pid
        self.alive = self.writable = True
        self.started_at = self.last_heard = self.pool._reactor.seconds()

    def childConnectionLost(self, childFD: int) -> None:
        if childFD == TO_WORKER_FD:
            self.writable = False

    def send(self, frame: bytes) -> None:
        """Write C{frame} to the worker's pipe; never raises (a dying worker just misses it)."""
        if not (self.alive and self.writable):
            return
        try:
            self._process().writeToChild(TO_WORKER_FD, frame)
        except Exception:  # the pipe went away between checks: the exit handling follows
            self.writable = False

    def backlog(self) -> int:
        """Bytes written to this worker's pipe that it has not read yet (0 if unknown)."""
        pipe = getattr(self.transport, "pipes", {}).get(TO_WORKER_FD)
        if pipe is None or not knows_write_buffer(pipe):
            return 0
        return buffered_bytes(pipe)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == FROM_WORKER_FD:
            try:
                self._reader.dataReceived(data)
            except Exception:  # a broken pipe message: this worker can't be trusted any more
                self.pool._log.failure("worker {index}: bad message, stopping it", index=self.index)
                self.kill()

    def kill(self) -> None:
        try:
            self._process().signalProcess("KILL")
        except Exception:
            pass

    def processEnded(self, reason: Any) -> None:
        self.alive = self.writable = False
        try:
            self.pool._ended(self, reason)
        finally:
            self.ended.callback(None)


class WorkerPool(service.Service):
    """
    Spawns and watches the worker processes; forwards what they must see.

    @param count: the C{workers} setting; this process is worker 0, so C{count - 1} are spawned.
    @param listen: the client addresses the workers bind too, after this process bound them
        (so port 0 became a real port).
    @param shared: the listening sockets the workers accept on too, bound by this process:
        (path, descriptor) of each Unix-socket client listener. A worker gets each one as its
        descriptor C{FIRST_SHARED_FD + i}, and (path, that number) in its start-up message.
    """

    _log = Logger()

    def __init__(self, count: int, reactor: Any, *,
                 listen: Callable[[], list[tuple[str, int]]],
                 interest: SharedInterest,
                 init: Callable[[int], dict[str, Any]],
                 argv: list[str] | None = None,
                 stats_send: Callable[[bytes], None] | None = None,
                 backpressure: Any = None,
                 shared: Callable[[], list[tuple[str, int]]] | None = None) -> None:
        self.count = count
        self._reactor = reactor
        self._listen = listen
        self._shared = shared
        self.interest = interest
        self._init = init
        self._argv = argv or [sys.executable, "-m", "pushpin_tx.scripts.worker"]
        self.workers: dict[int, _Worker] = {}
        self._pending: list[tuple] = []
        self._flush_call: Any = None
        self._stopping = False
        self._refreshes: dict[int, tuple[defer.Deferred[None], set[int], Any]] = {}
        self._refresh_ids = 0
        #: stats-socket packets from workers go here (when the main process has a stats socket)
        self.stats_send = stats_send
        self.restarts = 0
        self._failures: dict[int, int] = {}
        self._timers: list[Any] = []
        self._generations: dict[int, int] = {}
        self._heartbeat: Any = None
        #: counter-type metric samples of workers that ended, so summed counters never go back
        self.retired_metrics: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        #: the same for the console's counters
        self.retired_counters: dict[str, Any] = {}
        #: the intake's backpressure (L{pushpin_tx.core.pending.Backpressure}): the slowest
        #: worker's pipe backlog is one of its sources, so publishers are held back before a
        #: worker that cannot keep up reaches MAX_BACKLOG
        self.backpressure: Any = backpressure
        self._backlog_check: Any = None

    # --- lifecycle -----------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        for index in range(1, self.count):
            self._spawn(index)
        self._heartbeat = LoopingCall(self._check_heartbeats)
        self._heartbeat.clock = self._reactor
        self._heartbeat.start(HEARTBEAT_CHECK, now=False)

    def _check_heartbeats(self) -> None:
        now = self._reactor.seconds()
        for worker in list(self.workers.values()):
            if worker.alive and now - worker.last_heard > SILENCE_LIMIT:
                self._log.error("worker {index} (pid {pid}) silent for {t:.0f} s: stopping it",
                                index=worker.index, pid=worker.pid, t=now - worker.last_heard)
                worker.alive = worker.writable = False
                worker.kill()

    def _spawn(self, index: int) -> None:
        worker = _Worker(self, index)
        self.workers[index] = worker
        env = dict(os.environ)
        # the worker imports pushpin_tx from where this process did, whatever PYTHONPATH says
        here = os.path.dirname(os.path.dirname(os.path.abspath(pushpin_tx.__file__)))
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        child_fds: dict[int, Any] = {1: 1, 2: 2, TO_WORKER_FD: "w", FROM_WORKER_FD: "r"}
        shared = []
        for n, (path, fd) in enumerate(self._shared() if self._shared is not None else ()):
            child_fds[FIRST_SHARED_FD + n] = fd  # the child's descriptor, a duplicate of our fd
            shared.append((path, FIRST_SHARED_FD + n))
        self._reactor.spawnProcess(worker, self._argv[0], self._argv, env=env, path=os.getcwd(), childFDs=child_fds)
        init = self._init(index)
        init["generation"] = self._generations.get(index, 0)
        self._generations[index] = init["generation"] + 1
        init["listen"] = self._listen()
        if shared:
            init["shared"] = shared
        worker.send(encode(("init", init)))
        self._log.info("worker {index} started (pid {pid})", index=index, pid=worker.pid)

    def stopService(self) -> Any:
        super().stopService()
        self._stopping = True
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._flush()
        if self._backlog_check is not None and self._backlog_check.active():
            self._backlog_check.cancel()
        self._backlog_check = None
        if self.backpressure is not None:
            self.backpressure.level(0, "workers")  # nothing held back for workers that are stopping
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        waits = []
        stop = encode(("stop",))
        for worker in list(self.workers.values()):
            if not worker.alive:
                continue
            if worker.writable:
                # in the pipe, after everything already sent: the worker applies the last
                # publishes, then drains its connections as the main process does
                worker.send(stop)
            else:
                try:
                    worker._process().signalProcess("TERM")
                except Exception:
                    continue
            waits.append(worker.ended)
        if not waits:
            return None
        d = defer.DeferredList(waits)
        timer = self._reactor.callLater(STOP_TIMEOUT, self._kill_stragglers)

        def done(result: object) -> None:
            if timer.active():
                timer.cancel()

        return d.addCallback(done)

    def _kill_stragglers(self) -> None:
        for worker in self.workers.values():
            if worker.alive:
                self._log.warn("worker {index} (pid {pid}) did not stop in {t:.0f} s, killing it",
                               index=worker.index, pid=worker.pid, t=STOP_TIMEOUT)
                worker.kill()

    def _ended(self, worker: _Worker, reason: Any) -> None:
        self._retire(worker)
        for channel in worker.channels:
            self.interest.remove(channel)
        worker.channels = set()
        for prefix in worker.prefixes:
            self.interest.remove_prefix(prefix)
        worker.prefixes = set()
        for token, (d, waiting, _timer) in list(self._refreshes.items()):
            waiting.discard(worker.index)
            if not waiting:
                self._finish_refresh(token)
        if self._stopping:
            self._log.info("worker {index} (pid {pid}) stopped", index=worker.index, pid=worker.pid)
            return
        self.restarts += 1
        lived = self._reactor.seconds() - worker.started_at
        failures = self._failures[worker.index] = 0 if lived >= RESTART_STABLE else self._failures.get(worker.index, 0) + 1
        delay = min(RESTART_DELAY * 2 ** max(failures - 1, 0), RESTART_DELAY_MAX)
        self._log.error("worker {index} (pid {pid}) exited: {why}; starting it again in {delay:.0f} s",
                        index=worker.index, pid=worker.pid, why=reason.getErrorMessage(), delay=delay)
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self._reactor.callLater(delay, self._respawn, worker.index))

    def _retire(self, worker: _Worker) -> None:
        """Keep an ended worker's counters (not its gauges) in the totals."""
        snapshot, worker.snapshot = worker.snapshot, None
        if not snapshot:
            return
        for name, (kind, samples) in snapshot.get("metrics", {}).items():
            if kind == "counter":
                kept = self.retired_metrics.setdefault(name, {})
                for labels, value in samples.items():
                    kept[labels] = kept.get(labels, 0) + value
        self.retired_counters = merge_counters([self.retired_counters, {
            k: v for k, v in snapshot.get("counters", {}).items() if k != "held"}])

    def _respawn(self, index: int) -> None:
        if not self._stopping and self.running:
            self._spawn(index)

    # --- main -> workers ----------------------------------------------------------------------

    def forward(self, op: tuple) -> None:
        """
        Queue C{op} for every worker. Everything queued in one reactor turn goes down each
        pipe as one message, pickled once, in the order it was queued.
        """
        self._pending.append(op)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if not self._pending:
            return
        ops, self._pending = self._pending, []
        frame = encode(("batch", ops))
        for worker in self.workers.values():
            worker.send(frame)
            if worker.alive and worker.backlog() > MAX_BACKLOG:
                self._log.error(
                    "worker {index} (pid {pid}) is {mb} MB behind on publishes: stopping it (its clients"
                    " reconnect to the others)", index=worker.index, pid=worker.pid, mb=worker.backlog() // 2**20)
                worker.alive = False  # nothing more is sent to it; processEnded restarts it
                worker.kill()
        self._check_backlog()

    def _check_backlog(self) -> None:
        """Report the slowest worker's pipe backlog to the backpressure; while it holds publishers back, look again every 10 ms."""
        self._backlog_check = None
        pressure = self.backpressure
        if pressure is None:
            return
        behind = max((w.backlog() for w in self.workers.values() if w.alive), default=0)
        pressure.level(behind, "workers")
        if pressure.congested and behind > 0 and not self._stopping:
            self._backlog_check = self._reactor.callLater(0.01, self._check_backlog)

    def refresh(self) -> defer.Deferred[None]:
        """Ask every worker for a fresh snapshot; fires when all answered (or after a timeout)."""
        self._flush()
        alive = {w.index for w in self.workers.values() if w.alive}
        d: defer.Deferred[None] = defer.Deferred()
        if not alive:
            d.callback(None)
            return d
        self._refresh_ids += 1
        token = self._refresh_ids
        self._refreshes[token] = (d, alive, None)
        frame = encode(("snapshot?", token))
        for worker in self.workers.values():
            if worker.index in alive:
                worker.send(frame)
        timer = self._reactor.callLater(REFRESH_TIMEOUT, self._finish_refresh, token)
        self._refreshes[token] = (d, alive, timer)
        return d

    def _finish_refresh(self, token: int) -> None:
        entry = self._refreshes.pop(token, None)
        if entry is not None:
            if entry[2] is not None and entry[2].active():
                entry[2].cancel()
            entry[0].callback(None)

    # --- workers -> main ----------------------------------------------------------------------

    @staticmethod
    def _worker_interest(held: set[str], name: str, added: bool,
                         add: Callable[[str], None], remove: Callable[[str], None]) -> None:
        """A worker's report that it holds C{name} (a channel or a prefix) or no longer: counted once per worker."""
        if added:
            if name not in held:
                held.add(name)
                add(name)
        elif name in held:
            held.discard(name)
            remove(name)

    def _received(self, worker: _Worker, message: tuple) -> None:
        worker.last_heard = self._reactor.seconds()
        kind = message[0]
        if kind == "interest":
            _, channel, added = message
            self._worker_interest(worker.channels, channel, added, self.interest.add, self.interest.remove)
        elif kind == "interest-prefix":
            _, prefix, added = message
            self._worker_interest(worker.prefixes, prefix, added, self.interest.add_prefix, self.interest.remove_prefix)
        elif kind == "stats":
            if self.stats_send is not None:
                self.stats_send(message[1])
        elif kind == "snapshot":
            _, token, snapshot = message
            worker.snapshot = snapshot
            entry = self._refreshes.get(token) if token else None
            if entry is not None:
                entry[1].discard(worker.index)
                if not entry[1]:
                    self._finish_refresh(token)
        elif kind == "ready":
            self._log.info("worker {index} (pid {pid}) serving", index=worker.index, pid=worker.pid)
        else:
            self._log.warn("worker {index}: unknown message {kind!r}", index=worker.index, kind=kind)

    # --- what the console, metrics and command socket read -------------------------------------

    def snapshots(self) -> list[dict[str, Any]]:
        """The latest snapshot of every live worker (at most a second old, or fresh after L{refresh})."""
        return [w.snapshot for w in self.workers.values() if w.alive and w.snapshot is not None]

    def is_connected(self, conn_id: str) -> bool:
        """Whether a worker held C{conn_id} at its last snapshot."""
        return any(conn_id in s.get("connections", ()) for s in self.snapshots())

    def table(self) -> list[dict[str, Any]]:
        """One row per worker for the console: index, pid, alive and its headline figures."""
        rows = []
        for index in sorted(self.workers):
            worker = self.workers[index]
            snap = worker.snapshot or {}
            counters = snap.get("counters", {})
            rows.append({
                "worker": index,
                "pid": worker.pid,
                "alive": worker.alive,
                "held": snap.get("held", 0),
                "channels": len(worker.channels),
                "prefixes": len(worker.prefixes),
                "deliveries": counters.get("deliveries", 0),
                "requests_received": counters.get("requests_received", 0),
                "drops": sum(counters.get("drops", {}).values()),
            })
        return rows
