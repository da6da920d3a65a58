"""
Unit tests of C{workers = N} in one process: the pipe format, the shared interest and last
ids, the main process's pool (spawning, batching, snapshots, restarts, stopping) on a fake
process reactor and a Clock, and a worker's link applying what the main process sends.
"""

from __future__ import annotations

import pickle

import pytest
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.internet.error import ProcessTerminated, ReactorNotRunning

from pushpin_tx.protocol.config import load_settings
from pushpin_tx.protocol.items import parse_item
from pushpin_tx.ops.metrics import PushpinCollector
from pushpin_tx.service import PushpinService
from pushpin_tx.scripts.worker import WorkerLink, tagged
from pushpin_tx.workers.pool import (
    FIRST_SHARED_FD,
    REFRESH_TIMEOUT,
    RESTART_DELAY,
    STOP_TIMEOUT,
    MessageReader,
    SharedInterest,
    SharedLastIds,
    WorkerPool,
    encode,
    merge_counters,
)


def _decode_all(data: bytes) -> list:
    got: list = []
    reader = MessageReader(got.append)
    reader.dataReceived(data)
    return got


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
def test_messages_survive_any_split_of_the_pipe_bytes(chunk):
    """Length-prefixed pickles come out whole and in order however the pipe splits them."""
    messages = [("batch", [("item", {"x": i}), ("set", "c", str(i))]) for i in range(5)] + [("snapshot?", 9)]
    data = b"".join(encode(m) for m in messages)
    got: list = []
    reader = MessageReader(got.append)
    for i in range(0, len(data), chunk):
        reader.dataReceived(data[i:i + chunk])
    assert got == messages


def test_an_oversized_message_length_is_refused():
    """A length over the limit raises instead of buffering without bound."""
    reader = MessageReader(lambda m: None)
    with pytest.raises(ValueError, match="over the"):
        reader.dataReceived(b"\xff\xff\xff\xff")


class _Router:
    def __init__(self):
        self.listeners = []

    def add_interest_listener(self, listener):
        self.listeners.append(listener)


class _Listener:
    def __init__(self):
        self.events = []

    def channel_added(self, channel):
        self.events.append(("+", channel))

    def channel_removed(self, channel):
        self.events.append(("-", channel))


def test_shared_interest_reports_a_channel_once_for_all_processes():
    """A channel is added when the first process subscribes and removed when the last one leaves."""
    router = _Router()
    interest = SharedInterest(router)
    listener = _Listener()
    interest.add_interest_listener(listener)
    router.listeners[0].channel_added("a")  # the main process's own router
    interest.add("a")  # a worker
    interest.add("b")
    assert sorted(interest.channels()) == ["a", "b"] and interest.has("a")
    router.listeners[0].channel_removed("a")
    assert listener.events == [("+", "a"), ("+", "b")]
    interest.remove("a")
    interest.remove("a")  # more removals than adds are ignored
    assert listener.events == [("+", "a"), ("+", "b"), ("-", "a")]
    assert not interest.has("a")


def test_shared_last_ids_send_every_change_in_order():
    """set, forget and clear change the table and are sent on, in the order they happened."""
    sent = []
    ids = SharedLastIds(sent.append)
    ids.set("a", "1")
    ids.set("b", "7")
    ids.forget("a")
    assert ids.get("b") == "7" and ids.get("a") is None
    ids.clear()
    assert sent == [("set", "a", "1"), ("set", "b", "7"), ("forget", "a"), ("clear",)]


def test_merge_counters_adds_numbers_and_per_key_tallies():
    """Counter snapshots from several processes sum, key by key."""
    merged = merge_counters([
        {"deliveries": 3, "drops": {"queue-full": 1}, "held": {"stream": 2}},
        {"deliveries": 4, "drops": {"queue-full": 2, "stopped": 1}, "held": {}},
    ])
    assert merged == {"deliveries": 7, "drops": {"queue-full": 3, "stopped": 1}, "held": {"stream": 2}}


# --- the pool on a fake process reactor ----------------------------------------------------------


class _ProcessTransport:
    def __init__(self, pid):
        self.pid = pid
        self.written: list[tuple[int, bytes]] = []
        self.signals: list[str] = []

    def writeToChild(self, fd, data):
        self.written.append((fd, data))

    def signalProcess(self, name):
        self.signals.append(name)

    def messages(self):
        return _decode_all(b"".join(data for fd, data in self.written if fd == 3))


class _ProcessReactor(task.Clock):
    """A Clock that records spawnProcess calls and hands out fake process transports."""

    def __init__(self):
        super().__init__()
        self.spawned = []

    def spawnProcess(self, proto, executable, args, env=None, path=None, childFDs=None):
        transport = _ProcessTransport(1000 + len(self.spawned))
        self.spawned.append((proto, args, childFDs))
        proto.makeConnection(transport)
        return transport


def _pool(count=3, backpressure=None):
    reactor = _ProcessReactor()
    router = _Router()
    interest = SharedInterest(router)
    pool = WorkerPool(count, reactor, listen=lambda: [("127.0.0.1", 7999)], interest=interest,
                      init=lambda index: {"index": index}, backpressure=backpressure)
    pool.startService()
    return pool, reactor, interest


def _reply(worker, message):
    worker.childDataReceived(4, encode(message))


def test_pool_spawns_count_minus_one_workers_and_sends_each_its_start_up():
    """The main process is worker 0; workers 1..N-1 get their index and the bound client ports first."""
    pool, reactor, _ = _pool(3)
    assert sorted(pool.workers) == [1, 2]
    for proto, args, child_fds in reactor.spawned:
        assert args[1:] == ["-m", "pushpin_tx.scripts.worker"]
        assert child_fds == {1: 1, 2: 2, 3: "w", 4: "r"}
        assert proto.transport.messages()[0] == ("init", {"index": proto.index, "generation": 0, "listen": [("127.0.0.1", 7999)]})


def test_workers_inherit_the_shared_listening_sockets_and_are_told_their_paths():
    """Each Unix-socket listener the main process bound goes to every worker as descriptor 5, 6...; the start-up message names the path of each."""
    reactor = _ProcessReactor()
    pool = WorkerPool(3, reactor, listen=lambda: [], interest=SharedInterest(_Router()), init=lambda index: {"index": index},
                      shared=lambda: [("/run/a.sock", 11), ("/run/b.sock", 12)])
    pool.startService()
    assert len(reactor.spawned) == 2
    for proto, args, child_fds in reactor.spawned:
        assert child_fds == {1: 1, 2: 2, 3: "w", 4: "r", FIRST_SHARED_FD: 11, FIRST_SHARED_FD + 1: 12}
        assert proto.transport.messages()[0][1]["shared"] == [("/run/a.sock", FIRST_SHARED_FD), ("/run/b.sock", FIRST_SHARED_FD + 1)]
    pool.stopService()


def test_everything_forwarded_in_one_turn_goes_as_one_message_in_order():
    """Items and last-id changes queued in one reactor turn reach each worker as one batch, in order."""
    pool, reactor, _ = _pool(3)
    pool.forward(("set", "c", "1"))
    pool.forward(("item", "first"))
    pool.forward(("item", "second"))
    assert all(len(w.transport.messages()) == 1 for w in pool.workers.values())  # only the init so far
    reactor.advance(0)
    for worker in pool.workers.values():
        assert worker.transport.messages()[1:] == [("batch", [("set", "c", "1"), ("item", "first"), ("item", "second")])]


def test_worker_interest_reaches_the_shared_interest_and_leaves_with_the_worker():
    """A worker's subscribe/unsubscribe reports change the union; its death removes what it held."""
    pool, reactor, interest = _pool(2)
    worker = pool.workers[1]
    _reply(worker, ("interest", "a", True))
    _reply(worker, ("interest", "a", True))  # repeated: counted once
    _reply(worker, ("interest", "b", True))
    _reply(worker, ("interest", "b", False))
    assert sorted(interest.channels()) == ["a"]
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    assert list(interest.channels()) == []


class _PrefixListener(_Listener):
    def prefix_added(self, prefix):
        self.events.append(("+prefix", prefix))

    def prefix_removed(self, prefix):
        self.events.append(("-prefix", prefix))


def test_worker_prefixes_join_the_union_and_reach_prefix_listeners_only():
    """
    A worker's prefix reports (interest-prefix) and the main process's own prefixes make one
    union: a prefix is added with its first process and removed with its last (or when the
    worker dies); only listeners with prefix_added hear of it; reaches() sees channels under it.
    """
    pool, reactor, interest = _pool(2)
    with_prefixes, channels_only = _PrefixListener(), _Listener()
    interest.add_interest_listener(with_prefixes)
    interest.add_interest_listener(channels_only)
    worker = pool.workers[1]
    _reply(worker, ("interest-prefix", "news.", True))
    _reply(worker, ("interest-prefix", "news.", True))  # repeated: counted once
    interest.prefix_added("news.")  # the main process's own subscriptions
    _reply(worker, ("interest-prefix", "room.", True))
    assert sorted(interest.prefixes()) == ["news.", "room."]
    assert interest.reaches("news.sport") and interest.reaches("room.") and not interest.reaches("news")
    assert not interest.has("news.sport")
    _reply(worker, ("interest-prefix", "news.", False))
    assert with_prefixes.events == [("+prefix", "news."), ("+prefix", "room.")]
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    assert with_prefixes.events[-1] == ("-prefix", "room.") and list(interest.prefixes()) == ["news."]
    interest.prefix_removed("news.")
    assert with_prefixes.events[-1] == ("-prefix", "news.") and not interest.reaches("news.sport")
    assert channels_only.events == []


def test_refresh_fires_when_every_worker_answered_or_at_the_timeout():
    """refresh() asks each worker for a snapshot; it fires on the last answer, or after the timeout."""
    pool, reactor, _ = _pool(3)
    fired = []
    pool.refresh().addCallback(fired.append)
    token = pool.workers[1].transport.messages()[-1][1]
    _reply(pool.workers[1], ("snapshot", token, {"counters": {"deliveries": 5}, "connections": ["2"], "held": 1}))
    assert fired == []
    _reply(pool.workers[2], ("snapshot", token, {"counters": {"deliveries": 6}, "connections": ["3"], "held": 1}))
    assert fired == [None]
    assert pool.is_connected("3") and not pool.is_connected("4")
    assert [s["counters"]["deliveries"] for s in pool.snapshots()] == [5, 6]

    pool.refresh().addCallback(fired.append)  # nobody answers this one
    reactor.advance(REFRESH_TIMEOUT)
    assert fired == [None, None]


def test_a_worker_that_exits_is_logged_and_started_again(caplog):
    """An unexpected exit starts the worker again after the restart delay, with the same index."""
    pool, reactor, _ = _pool(2)
    old = pool.workers[1]
    old.processEnded(Failure(ProcessTerminated(exitCode=1)))
    assert len(reactor.spawned) == 1
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 2 and pool.workers[1] is not old
    assert pool.restarts == 1


def test_stop_terminates_every_worker_and_kills_those_that_linger():
    """stopService flushes, sends "stop" down each pipe after the last batch, waits, and SIGKILLs a worker still there after the timeout."""
    pool, reactor, _ = _pool(3)
    pool.forward(("item", "last"))
    done = []
    pool.stopService().addCallback(done.append)
    for w in pool.workers.values():
        assert w.transport.messages()[-2:] == [("batch", [("item", "last")]), ("stop",)]
    pool.workers[1].processEnded(Failure(ProcessTerminated(signal=15)))
    reactor.advance(STOP_TIMEOUT)
    assert pool.workers[2].transport.signals == ["KILL"]
    pool.workers[2].processEnded(Failure(ProcessTerminated(signal=9)))
    assert done and len(reactor.spawned) == 2  # no restart while stopping


# --- the main process's service with workers ---------------------------------------------------------


def _item(channel, content, id=None, prev_id=None):
    raw = {"channel": channel, "formats": {"http-stream": {"content": content}}}
    if id:
        raw["id"] = id
    if prev_id:
        raw["prev-id"] = prev_id
    return parse_item(raw)


class _Sub:
    kind = "stream"

    def __init__(self):
        self.got = []

    def deliver(self, publication, channel):
        self.got.append(publication.item)


def test_the_main_process_forwards_each_sequenced_item_after_its_last_id():
    """With workers, a publish goes to the local router and, after its last id, into the workers' batch."""
    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor)
    sub = _Sub()
    pushpin.router.subscribe("c", sub)
    item = _item("c", "x\n", id="1")
    pushpin.intake.publish([item], "http")
    assert pushpin.workers._pending[-2:] == [("set", "c", "1"), ("item", item)]
    reactor.advance(0)  # the end of the reactor turn: gathered publishes go out, the batch too
    assert sub.got == [item] and pushpin.workers._pending == []
    pickle.loads(pickle.dumps(item))  # what the pipe carries


def test_sequencing_in_the_main_process_counts_subscribers_held_only_by_a_worker():
    """An out-of-order item on a channel only a worker holds is parked, not sent past its gap."""
    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor)
    pushpin.workers.interest.add("c")  # as a worker's report does
    pushpin.intake.publish([_item("c", "a\n", id="1")], "http")
    pushpin.intake.publish([_item("c", "c\n", id="3", prev_id="2")], "http")
    items = [op[1] for op in pushpin.workers._pending if op[0] == "item"]
    assert [i.id for i in items] == ["1"]
    assert pushpin.sequencer.pending == 1
    pushpin.intake.publish([_item("c", "b\n", id="2", prev_id="1")], "http")
    assert [op[1].id for op in pushpin.workers._pending if op[0] == "item"] == ["1", "2", "3"]
    pushpin.sequencer.stop()


def test_metrics_add_the_workers_figures_to_the_main_process():
    """Scraped metrics are the main process's plus each worker's last snapshot; subscribed_channels is the union."""
    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor)
    pushpin.counters.deliveries = 10
    pushpin.workers.interest.add("a")
    worker = type("W", (), {})()
    worker.alive, worker.snapshot = True, {"metrics": {
        "message_sent": ("counter", {(): 32}),
        "held_connections": ("gauge", {(("kind", "stream"),): 4}),
        "drops_total": ("counter", {(("reason", "queue-full"),): 2}),
        "subscribed_channels": ("gauge", {(): 1}),
    }}
    pushpin.workers.workers[1] = worker
    metrics = {m.name: m for m in PushpinCollector(pushpin, "pp_", reactor.seconds).collect()}
    assert metrics["pp_message_sent"].samples[0].value == 42
    held = {s.labels["kind"]: s.value for s in metrics["pp_held_connections"].samples}
    assert held["stream"] == 4
    assert [(s.labels, s.value) for s in metrics["pp_drops_total"].samples] == [({"reason": "queue-full"}, 2)]
    assert metrics["pp_subscribed_channels"].samples[0].value == 1

    # the worker ends: its counters stay in the totals, its gauges leave
    worker.alive = False
    pushpin.workers._retire(worker)
    metrics = {m.name: m for m in PushpinCollector(pushpin, "pp_", reactor.seconds).collect()}
    assert metrics["pp_message_sent"].samples[0].value == 42
    assert {s.labels["kind"]: s.value for s in metrics["pp_held_connections"].samples}["stream"] == 0


# --- a worker's end ------------------------------------------------------------------------------------


def _worker_service():
    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor, worker_index=1, worker_count=2, listen_on=[("127.0.0.1", 7999)])
    transport = StringTransport()
    link = WorkerLink(pushpin, reactor, transport_factory=lambda proto: proto.makeConnection(transport))
    return pushpin, link, transport, reactor


def test_a_worker_has_no_publish_inputs_and_numbers_its_connections_apart():
    """A worker runs no control API, ZeroMQ, metrics or console, and its connection ids never collide with the main process's."""
    pushpin, link, transport, reactor = _worker_service()
    assert pushpin.control_listener is None and pushpin.zmq is None and pushpin.sequencer is None
    assert pushpin.client_listeners[0].reuse_port == ("127.0.0.1", 7999)
    assert not pushpin.client_listeners[0].claim  # the main process claims the port, for all
    assert [next(pushpin.proxy._ids) for _ in range(3)] == [2, 4, 6]
    assert pushpin.websockets._ids is pushpin.proxy._ids  # HTTP and WebSocket ids never collide
    restarted = PushpinService(load_settings(None, workers=2), MemoryReactorClock(), worker_index=1, worker_count=2,
                               listen_on=[("127.0.0.1", 7999)], generation=1)
    assert next(restarted.proxy._ids) == 2_000_000_002  # not the ids of the worker it replaces
    main = PushpinService(load_settings(None, workers=2), MemoryReactorClock())
    assert [next(main.proxy._ids) for _ in range(3)] == [1, 3, 5]


def test_a_worker_accepts_on_the_unix_sockets_it_inherited(tmp_path):
    """A worker's local listener adopts the inherited listening socket (the descriptor then closed): the file keeps its mode, and stopping leaves it in place, still listening for the main process."""
    import os
    import socket
    import stat

    path = str(tmp_path / "s.sock")
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(path)
    os.chmod(path, 0o640)
    bound.listen(8)
    bound.setblocking(False)
    inherited = os.dup(bound.fileno())
    reactor = MemoryReactorClock()
    try:
        pushpin = PushpinService(load_settings(None, workers=2), reactor, worker_index=1, worker_count=2,
                                 listen_on=[("127.0.0.1", 7999)], shared_local=[(path, inherited)])
        [local] = pushpin.local_listeners
        assert local in pushpin.client_listeners and local.reuse_port is None
        local.privilegedStartService()
        assert local.port in reactor.readers and local.port.getHost().name == path.encode()
        with pytest.raises(OSError):
            os.fstat(inherited)  # the port holds its own duplicate
        local.stopService()
        reactor.advance(0)
        assert os.path.exists(path) and stat.S_IMODE(os.stat(path).st_mode) == 0o640
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)  # not shut down: the main process's socket still listens
        client.close()
    finally:
        bound.close()


def test_a_worker_applies_batches_and_reports_interest_and_snapshots():
    """Last ids and items from the main process are applied in order; subscriptions and snapshots go up."""
    pushpin, link, transport, reactor = _worker_service()
    link.startService()
    assert _decode_all(transport.value())[-1] == ("ready",)
    transport.clear()
    sub = _Sub()
    pushpin.router.subscribe("c", sub)
    assert _decode_all(transport.value()) == [("interest", "c", True)]
    item = _item("c", "hi\n", id="5")
    link._protocol.dataReceived(encode(("batch", [("set", "c", "5"), ("item", item), ("recover",)])))
    reactor.advance(0)
    assert sub.got[0].id == "5" and pushpin.last_ids.get("c") == "5"
    link._protocol.dataReceived(encode(("batch", [("clear",)])))
    assert pushpin.last_ids.get("c") is None
    transport.clear()
    link._protocol.dataReceived(encode(("snapshot?", 7)))
    (kind, token, snapshot), = _decode_all(transport.value())
    assert (kind, token) == ("snapshot", 7)
    assert snapshot["router_published"] == 1 and snapshot["pid"] > 0
    pushpin.router.unsubscribe("c", sub)
    assert _decode_all(transport.value())[-1] == ("interest", "c", False)
    link.stopService()


def test_a_worker_reports_its_prefixes_and_gets_their_items_from_the_main_process():
    """A prefix subscription in a worker goes up as interest-prefix (on, and off when it ends); items under it are delivered."""
    pushpin, link, transport, reactor = _worker_service()
    early = _Sub()
    pushpin.router.subscribe_prefix("early.", early)  # held before the link starts: reported at start
    link.startService()
    assert ("interest-prefix", "early.", True) in _decode_all(transport.value())
    transport.clear()
    sub = _Sub()
    pushpin.router.subscribe_prefix("news.", sub)
    assert _decode_all(transport.value()) == [("interest-prefix", "news.", True)]
    link._protocol.dataReceived(encode(("batch", [("item", _item("news.sport", "goal\n"))])))
    reactor.advance(0)
    assert [i.channel for i in sub.got] == ["news.sport"]
    transport.clear()
    pushpin.router.unsubscribe_prefix("news.", sub)  # a stream-like subscriber: at once
    assert _decode_all(transport.value()) == [("interest-prefix", "news.", False)]
    pushpin.router.unsubscribe_prefix("early.", early)
    link.stopService()
    pushpin.subscriptions.stop()


@pytest.mark.parametrize("how", ["pipe closed", "stop message"])
def test_a_worker_stops_when_the_main_process_dies_or_says_stop(how):
    """The main process's pipe closing (it died), or a "stop" after a batch, stops the worker's reactor
    (its service then drains); a batch before the "stop" is applied first."""
    pushpin, link, transport, reactor = _worker_service()
    link.startService()
    reactor.running = True
    stopped = []
    reactor.stop = lambda: stopped.append(True)
    if how == "pipe closed":
        link._protocol.connectionLost(None)
    else:
        link._protocol.dataReceived(encode(("batch", [("set", "c", "1")])) + encode(("stop",)))
        assert pushpin.last_ids.get("c") == "1"
    assert stopped == [True]
    link.stopService()


@pytest.mark.parametrize("order", [("signal", "stop message", "pipe closed"), ("stop message", "pipe closed"),
                                   ("signal", "pipe closed"), ("pipe closed", "stop message")])
def test_a_worker_stops_its_reactor_once_whatever_asks_first(order, no_logged_failures):
    """The main process's "stop", its pipe's end and the worker's own SIGTERM in any order: one stop, no error."""
    from twisted.logger import formatEvent, globalLogPublisher

    said: list[str] = []
    observe = lambda event: said.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observe)
    pushpin, link, transport, reactor = _worker_service()
    link.startService()
    reactor.running = True
    stops = []

    def stop():  # as the reactor does: a second stop is refused
        if stops:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        stops.append(True)

    reactor.stop = stop
    for event in order:
        if event == "signal":
            reactor.stop()  # what the reactor's SIGTERM handler does
        elif event == "pipe closed":
            link._protocol.connectionLost(None)
        else:
            link._protocol.dataReceived(encode(("stop",)))
    globalLogPublisher.removeObserver(observe)
    assert stops == [True]
    # said once when it was the reason, never when a stop was already under way
    assert said.count("worker: the main process is gone, stopping") == (1 if order[0] == "pipe closed" else 0)
    link.stopService()


def test_worker_log_lines_are_tagged_with_the_worker():
    """A worker's log lines start with its tag; the event's fields still fill the message."""
    from twisted.logger import formatEvent

    seen = []
    observe = tagged(seen.append, "[worker 2] ")
    observe({"log_format": "publish channel={channel}", "channel": "c"})
    observe({"message": ("legacy",)})
    assert formatEvent(seen[0]) == "[worker 2] publish channel=c"
    assert "log_format" not in seen[1]


def test_a_workers_stats_packets_go_up_to_the_main_processs_stats_socket():
    """With a stats socket in the main process, a worker's conn packets travel up the pipe and out of that socket."""
    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor, worker_index=1, worker_count=2, listen_on=[("127.0.0.1", 7999)],
                             stats_forwarded=True)
    transport = StringTransport()
    link = WorkerLink(pushpin, reactor, transport_factory=lambda proto: proto.makeConnection(transport))
    link.startService()
    transport.clear()
    pushpin.stats.connected("2", "http", "127.0.0.1", False, route="r")
    (kind, packet), = [m for m in _decode_all(transport.value()) if m[0] == "stats"]
    assert packet.startswith(b"conn ")

    pool, _, _ = _pool(2)
    sent = []
    pool.stats_send = sent.append
    _reply(pool.workers[1], ("stats", packet))
    assert sent == [packet]
    link.stopService()


def test_the_console_sums_every_process_and_lists_the_workers():
    """stats() adds the workers' counters to the main process's; workers() shows one fresh line per process."""
    from pushpin_tx.ops.console_helpers import ConsoleHelpers

    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor)
    pushpin.counters.deliveries = 5

    class FakeWorker:
        index, pid, alive, channels, prefixes = 1, 4242, True, {"a"}, {"news."}
        snapshot = None

        def __init__(self):
            self.sent = []

        def send(self, frame):
            self.sent.append(frame)

    worker = FakeWorker()
    pool = pushpin.workers
    pool.workers[1] = worker
    snap = {"counters": {"deliveries": 7, "requests_received": 3, "drops": {"queue full": 1}}, "held": 2,
            "connections": ["2", "4"], "router_published": 1, "router_published_idle": 0}
    pool._received(worker, ("snapshot", 0, snap))  # the unasked once-a-second snapshot
    helpers = ConsoleHelpers(pushpin)
    total = helpers.stats()
    assert total["deliveries"] == 12 and total["held_connections"] == 2 and total["workers"] == 2
    assert pushpin.is_connected("4") and not pushpin.is_connected("6")

    tables = []
    helpers.workers().addCallback(tables.append)
    assert tables == []  # waits for the fresh snapshot it asked for
    (_, token), = _decode_all(worker.sent[-1])
    pool._received(worker, ("snapshot", token, dict(snap, held=3)))
    lines = str(tables[0]).splitlines()
    assert lines[0].split() == ["worker", "pid", "alive", "held", "channels", "prefixes", "deliveries", "requests", "drops"]
    assert lines[2].split() == ["1", "4242", "yes", "3", "1", "1", "7", "3", "1"]


def test_a_worker_far_behind_on_its_pipe_is_killed_and_started_again():
    """A stuck worker with more than MAX_BACKLOG unread bytes gets nothing more, is killed, and comes back."""
    from pushpin_tx.workers.pool import MAX_BACKLOG

    pool, reactor, _ = _pool(2)
    worker = pool.workers[1]

    class Pipe:  # the write-buffer fields of a Twisted FileDescriptor (_compat.buffered_bytes)
        dataBuffer, offset, _tempDataBuffer, _tempDataLen = b"", 0, [b"x" * (MAX_BACKLOG + 1)], MAX_BACKLOG + 1

    worker.transport.pipes = {3: Pipe()}
    pool.forward(("item", "x"))
    reactor.advance(0)
    assert worker.transport.signals == ["KILL"] and not worker.alive
    pool.forward(("item", "y"))
    reactor.advance(0)
    assert ("batch", [("item", "y")]) not in worker.transport.messages()
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    reactor.advance(RESTART_DELAY)
    assert pool.workers[1] is not worker and len(reactor.spawned) == 2


def test_a_worker_whose_pipe_closed_does_not_keep_the_batch_from_the_others():
    """A worker's pipe closing before it is reaped: it misses the batch, the other workers still get it."""
    pool, reactor, _ = _pool(3)

    def broken(fd, data):
        raise KeyError(fd)  # what Twisted's process transport does once the pipe is gone

    pool.workers[1].transport.writeToChild = broken
    pool.forward(("item", "x"))
    reactor.advance(0)
    assert pool.workers[2].transport.messages()[-1] == ("batch", [("item", "x")])
    pool.workers[2].childConnectionLost(3)
    pool.forward(("item", "y"))
    reactor.advance(0)  # nothing is written to a closed pipe, and nothing raises
    assert pool.workers[2].transport.messages()[-1] == ("batch", [("item", "x")])


def test_restarts_back_off_while_a_worker_keeps_dying_at_once():
    """A worker that dies within seconds of starting is restarted after 1, 2, 4 ... s (at most 30 s)."""
    pool, reactor, _ = _pool(2)
    delays = []
    for _ in range(4):
        worker = pool.workers[1]
        worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
        before = reactor.seconds()
        while pool.workers[1] is worker:
            reactor.advance(0.5)
        delays.append(reactor.seconds() - before)
    assert delays == [1.0, 2.0, 4.0, 8.0]
    reactor.advance(60)  # a worker that stayed up resets the back-off
    pool.workers[1].processEnded(Failure(ProcessTerminated(exitCode=1)))
    reactor.advance(RESTART_DELAY)
    assert len(reactor.spawned) == 6


def test_a_failing_interest_listener_does_not_stop_a_workers_exit_handling(no_logged_failures):
    """A listener raising on channel_removed is logged; the worker's end still completes (stop never hangs)."""
    pool, reactor, interest = _pool(2)

    class Failing:
        def channel_added(self, channel):
            pass

        def channel_removed(self, channel):
            raise RuntimeError("boom")

    interest.add_interest_listener(Failing())
    worker = pool.workers[1]
    _reply(worker, ("interest", "a", True))
    ended = []
    worker.ended.addCallback(ended.append)
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    assert ended == [None] and list(interest.channels()) == []
    assert [f.getErrorMessage() for f in no_logged_failures] == ["boom"]
    no_logged_failures.clear()


def test_a_new_worker_starts_with_the_main_processs_last_ids():
    """The start-up message of a (re)started worker carries the last-id table, so its holds check prev-ids too."""
    settings = load_settings(None, workers=2)
    reactor = MemoryReactorClock()
    pushpin = PushpinService(settings, reactor)
    pushpin.workers.interest.add("c")
    pushpin.intake.publish([_item("c", "a\n", id="7")], "http")
    assert ("c", "7") in pushpin.workers._init(1)["last_ids"]


def test_a_silent_worker_is_killed_and_started_again():
    """A worker that sends nothing (not even its once-a-second snapshot) for SILENCE_LIMIT is stuck: killed, restarted."""
    from pushpin_tx.workers.pool import HEARTBEAT_CHECK, SILENCE_LIMIT

    pool, reactor, _ = _pool(2)
    worker = pool.workers[1]
    reactor.advance(SILENCE_LIMIT - HEARTBEAT_CHECK)
    _reply(worker, ("snapshot", 0, {"counters": {}}))  # alive and well
    reactor.advance(SILENCE_LIMIT)
    assert worker.transport.signals == []
    reactor.advance(HEARTBEAT_CHECK * 2)
    assert worker.transport.signals == ["KILL"]
    worker.processEnded(Failure(ProcessTerminated(signal=9)))
    reactor.advance(RESTART_DELAY)
    assert pool.workers[1] is not worker
    assert pool.workers[1].transport.messages()[0][1]["generation"] == 1  # ids start above the dead one's
    pool.stopService()


def test_a_client_port_can_be_claimed_by_one_pushpin_tx_only():
    """The claim on an address fails for a second instance and is free again once released."""
    from pushpin_tx.net.listening import claim_port

    first = claim_port("127.0.0.1", 65001)
    with pytest.raises(OSError, match="already in use by another pushpin-tx"):
        claim_port("127.0.0.1", 65001)
    other = claim_port("127.0.0.1", 65002)  # another port is another claim
    first.close()
    again = claim_port("127.0.0.1", 65001)
    again.close()
    other.close()


def test_a_recover_after_publishes_in_the_same_turn_delivers_them_first():
    """Publishes gathered in a turn reach the holds before a recover that follows them re-syncs those holds."""
    pushpin, link, transport, reactor = _worker_service()
    link.startService()
    order = []

    class Hold:
        kind = "stream"

        def deliver(self, publication, channel):
            order.append(("item", publication.item.id))

        def resync(self):
            order.append(("resync",))

    hold = Hold()
    pushpin.router.subscribe("c", hold)
    pushpin.acceptor.connections["9"] = hold
    link._protocol.dataReceived(encode(("batch", [("item", _item("c", "x\n", id="1")), ("clear",), ("recover",)])))
    assert order == [("item", "1"), ("resync",)]
    del pushpin.acceptor.connections["9"]
    pushpin.router.unsubscribe("c", hold)
    reactor.advance(0)
    link.stopService()


def test_a_worker_behind_on_its_pipe_holds_the_publishers_back_until_it_catches_up():
    """The slowest worker's pipe backlog over the delivery bound holds publishers back (well before MAX_BACKLOG), and releases them once it has read."""
    from pushpin_tx.core.pending import Backpressure

    pressure = Backpressure(1000)
    pool, reactor, _ = _pool(2, backpressure=pressure)
    answers = []
    worker = pool.workers[1]

    class Pipe:  # the write-buffer fields of a Twisted FileDescriptor (_compat.buffered_bytes)
        dataBuffer, offset, _tempDataBuffer, _tempDataLen = b"", 0, [b"x" * 5000], 5000

    pipe = worker.transport.pipes = {3: Pipe()}
    pool.forward(("item", "x"))
    reactor.advance(0)
    assert pressure.congested and worker.alive
    pressure.when_relieved(lambda: answers.append("answered"))
    reactor.advance(0.01)
    assert answers == []  # still behind: looked at again
    pipe[3]._tempDataBuffer, pipe[3]._tempDataLen = [], 0
    reactor.advance(0.01)
    assert answers == ["answered"] and not pressure.congested
    assert reactor.getDelayedCalls() == [] or all(c.getTime() > reactor.seconds() + 0.5 for c in reactor.getDelayedCalls())
    pool.stopService()



def test_with_workers_the_sequencer_counts_a_channel_only_a_workers_prefix_reaches():
    """
    The main process sequences (has listeners for) a channel held only under a prefix in a
    worker: the shared interest's reaches(), not the main process's own router.
    """
    from pushpin_tx.workers.pool import _Worker

    pushpin = PushpinService(load_settings(None, workers=2), MemoryReactorClock())
    try:
        assert not pushpin.sequencer._has_listeners("news.sport")
        pushpin.workers._received(_Worker(pushpin.workers, 1), ("interest-prefix", "news.", True))
        assert pushpin.sequencer._has_listeners("news.sport") and not pushpin.sequencer._has_listeners("newsletter")
        assert pushpin.router.has_subscribers("news.sport") is False  # nobody in the main process itself
    finally:
        pushpin.subscriptions.stop()
