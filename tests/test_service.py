"""
The service tree's start and stop (L{pushpin_tx.service}): start is all or nothing, stop
runs in phases and leaves nothing behind, and the process-wide parts (SIGHUP, the reactor's
shutdown triggers) are touched only by the service that owns the process.
"""

from __future__ import annotations

import ast
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import zmq
from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError
from twisted.internet.tcp import Port
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher

from pushpin_tx.protocol.config import Settings, load_settings
from pushpin_tx.service import PushpinService, StartupError
from tests.integration.harness import write_config


class RecordingPort:
    """A listening port that records whether it was closed (and can fail to close)."""

    def __init__(self, host: str, port: int, *, fail_stop: bool = False) -> None:
        self._host = host
        self._port = port
        self._fail_stop = fail_stop
        self.stopped = 0

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", self._host or "0.0.0.0", self._port)

    def stopListening(self) -> defer.Deferred[None]:
        self.stopped += 1
        if self._fail_stop:
            return defer.fail(RuntimeError(f"port {self._port} would not close"))
        return defer.succeed(None)


class RecordingReactor(MemoryReactorClock):
    """A memory reactor whose TCP ports record their close; C{refuse} ports are 'in use'."""

    def __init__(self, *, refuse: set[int] = frozenset(), fail_stop: bool = False) -> None:  # type: ignore[assignment]
        super().__init__()
        self._refuse = refuse
        self._fail_stop = fail_stop
        self.ports: list[RecordingPort] = []
        self._next_port = 20000

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> RecordingPort:  # type: ignore[override]
        if port in self._refuse:
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))
        super().listenTCP(port, factory, backlog, interface)
        self._next_port += 1
        recorded = RecordingPort(interface, port or self._next_port, fail_stop=self._fail_stop)
        self.ports.append(recorded)
        return recorded

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        self.callLater(0, f, *args, **kw)


class FailingStart(service.Service):
    """A child whose startService raises, as a part that cannot start would."""

    def startService(self) -> None:
        super().startService()
        raise RuntimeError("this part cannot start")


def _settings(tmp_path: Path, **overrides: str) -> Settings:
    """One process, every listener on port 0 of loopback, ZeroMQ on loopback, rundir in tmp_path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_settings(str(write_config(tmp_path, ["* test"], workers="1", **overrides)))


@pytest.fixture
def log_lines():
    """Every formatted log message during the test, in order."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def _fired(d: defer.Deferred[Any] | None) -> list[Any]:
    results: list[Any] = []
    if d is None:
        return [None]
    d.addBoth(results.append)
    return results


def _free_tcp_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- start ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_stops_start_up_and_closes_what_was_bound(reactor, tmp_path, log_lines):
    """The control port in use: start-up fails naming it, and the ZeroMQ inputs bound before it are closed again."""
    blocker = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
    pull = f"tcp://127.0.0.1:{_free_tcp_port()}"
    try:
        settings = _settings(tmp_path, push_in_http_port=str(blocker.getHost().port), push_in_spec=pull)
        pushpin = PushpinService(settings, reactor)
        with pytest.raises(StartupError, match="already in use"):
            pushpin.privilegedStartService()
        assert [line for line in log_lines if line.startswith("start-up failed")] == [
            f"start-up failed: control API: cannot listen on 127.0.0.1:{blocker.getHost().port}: address already in use"]
        # the publish-pull address is free again: another socket can bind it
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PULL)
        try:
            sock.bind(pull)
        finally:
            sock.close(linger=0)
            ctx.term()
        assert pushpin.stopService() is None  # nothing is running: nothing to stop
    finally:
        await blocker.stopListening()
    assert [r for r in reactor.getReaders() if isinstance(r, Port)] == []


def test_the_client_port_in_use_closes_the_control_api_and_inputs_bound_first(tmp_path):
    """Publish inputs and the control API start before the client port; when that is in use, they close again."""
    reactor = RecordingReactor(refuse={7999})
    pushpin = PushpinService(_settings(tmp_path, http_port="127.0.0.1:7999"), reactor)
    with pytest.raises(StartupError, match="already in use"):
        pushpin.privilegedStartService()
    assert [p.stopped for p in reactor.ports] == [1]  # the control API's port, closed again
    assert pushpin.zmq is not None and pushpin.zmq.endpoints == {}  # its sockets closed


def test_a_part_failing_to_start_stops_every_part_that_had_bound(tmp_path):
    """A part that cannot start (after every port was bound) stops start-up, and every port bound is closed again."""
    reactor = RecordingReactor()
    pushpin = PushpinService(_settings(tmp_path), reactor)
    FailingStart().setServiceParent(pushpin)
    pushpin.privilegedStartService()
    assert len(reactor.ports) == 2 and not any(p.stopped for p in reactor.ports)  # client and control API
    with pytest.raises(StartupError, match="this part cannot start"):
        pushpin.startService()
    assert [p.stopped for p in reactor.ports] == [1, 1]
    assert not pushpin.running and not any(child.running for child in pushpin)
    assert pushpin.zmq is not None and pushpin.zmq.endpoints == {}
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []  # the routes watcher's poll stopped too


def test_publish_inputs_and_the_control_api_are_bound_before_the_client_port(tmp_path, log_lines):
    """Start order: routes, ZeroMQ inputs, control API, then the client port."""
    reactor = RecordingReactor()
    pushpin = PushpinService(_settings(tmp_path), reactor)
    pushpin.privilegedStartService()
    pushpin.startService()
    try:
        order = [line.split(" ")[0] for line in log_lines if " bound to " in line or " listening on " in line]
        assert order == ["publish-pull", "publish-sub", "command", "stats", "control", "client"]
        assert [type(factory).__name__ for _, factory, _, _ in reactor.tcpServers] == ["ControlSite", "ClientSite"]
    finally:
        _fired(pushpin.stopService())


# --- stop -------------------------------------------------------------------------------------


def test_stop_closes_every_port_once_and_leaves_no_timer(tmp_path, log_lines):
    """A stopped service closed each of its ports exactly once and left no timer on the reactor."""
    reactor = RecordingReactor()
    pushpin = PushpinService(_settings(tmp_path), reactor)
    pushpin.privilegedStartService()
    pushpin.startService()
    assert _fired(pushpin.stopService()) == [None]
    assert [p.stopped for p in reactor.ports] == [1, 1]
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []
    assert not any(child.running for child in pushpin)
    assert [line for line in log_lines if line in ("stopping...", "stopped")] == ["stopping...", "stopped"]


def test_a_service_bound_but_never_started_closes_its_ports_at_stop(tmp_path):
    """Stopped between binding and starting (twistd's two steps), the service still closes every port and socket."""
    reactor = RecordingReactor()
    pushpin = PushpinService(_settings(tmp_path), reactor)
    pushpin.privilegedStartService()
    assert _fired(pushpin.stopService()) == [None]
    assert [p.stopped for p in reactor.ports] == [1, 1]
    assert pushpin.zmq is not None and pushpin.zmq.endpoints == {}


def test_a_second_stop_waits_for_the_first_instead_of_stopping_twice(tmp_path, log_lines):
    """stopService called again while stopping (or after) waits for the one stop: one 'stopping...', ports closed once."""
    reactor = RecordingReactor()
    pushpin = PushpinService(_settings(tmp_path), reactor)
    pushpin.privilegedStartService()
    pushpin.startService()
    first = _fired(pushpin.stopService())
    second = _fired(pushpin.stopService())
    assert first == second == [None]
    assert log_lines.count("stopping...") == 1
    assert [p.stopped for p in reactor.ports] == [1, 1]


def test_a_part_failing_to_stop_is_logged_and_the_rest_still_stops(tmp_path, log_lines, no_logged_failures):
    """A port that fails to close is logged at once, with what was being done; the rest of the stop still runs."""
    reactor = RecordingReactor(fail_stop=True)
    pushpin = PushpinService(_settings(tmp_path), reactor)
    pushpin.privilegedStartService()
    pushpin.startService()
    assert _fired(pushpin.stopService()) == [None]  # the stop itself completes
    assert sorted(str(f.value) for f in no_logged_failures) == sorted(f"port {p._port} would not close" for p in reactor.ports)
    assert "closing the client listeners failed" in log_lines and "stopping failed" in log_lines
    assert log_lines[-1] == "stopped"
    assert pushpin.zmq is not None and pushpin.zmq.endpoints == {}
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []
    no_logged_failures.clear()  # seen and checked: the failures this test provokes


def test_building_a_service_registers_nothing_on_the_reactor(tmp_path):
    """The origin pools are the service's to close at stop: building one adds no reactor shutdown trigger."""
    reactor = RecordingReactor()
    PushpinService(_settings(tmp_path), reactor)
    assert reactor.triggers == {}


# --- process-wide parts -----------------------------------------------------------------------


def test_sighup_is_handled_only_while_a_service_that_owns_the_process_runs(tmp_path, log_lines):
    """Under twistd SIGHUP reloads while running, and the previous handler is back after stop; otherwise it is never taken."""
    previous = signal.getsignal(signal.SIGHUP)
    reactor = RecordingReactor()
    borrowed = PushpinService(_settings(tmp_path / "a"), reactor)
    borrowed.privilegedStartService()
    borrowed.startService()
    assert signal.getsignal(signal.SIGHUP) is previous
    _fired(borrowed.stopService())

    owner = PushpinService(_settings(tmp_path / "b"), reactor, owns_process=True)
    owner.privilegedStartService()
    owner.startService()
    try:
        handler = signal.getsignal(signal.SIGHUP)
        assert handler is not previous and callable(handler)
        handler(signal.SIGHUP, None)
        reactor.advance(0)
        assert "reloading" in log_lines
    finally:
        _fired(owner.stopService())
        if signal.getsignal(signal.SIGHUP) is not previous:
            signal.signal(signal.SIGHUP, previous)
            pytest.fail("SIGHUP handler left installed after stop")


def test_only_the_first_sigterm_reaches_the_reactors_handler_of_a_process_the_service_owns(tmp_path, log_lines):
    """Once the reactor runs, a second SIGTERM while stopping is noted, not passed on (a second reactor.stop would raise)."""
    calls: list[int] = []
    previous_term = signal.signal(signal.SIGTERM, lambda number, frame: calls.append(number))  # as the reactor's
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)  # the reactor installed none for it
    reactor = RecordingReactor()
    owner = PushpinService(_settings(tmp_path), reactor, owns_process=True)
    try:
        owner.privilegedStartService()
        owner.startService()
        # twistd starts the services before the reactor runs and installs its handlers
        during_startup = reactor.triggers["during"]["startup"]
        assert signal.getsignal(signal.SIGTERM) is not None and during_startup
        for hook, args, kwargs in during_startup:  # the reactor starts running
            hook(*args, **kwargs)
        assert calls == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
        reactor.advance(0)
        assert calls == [signal.SIGTERM]
        assert "received SIGTERM while stopping: the stop under way goes on" in log_lines
        assert owner.stop_reactor() is False  # a worker's link asking now: the stop is under way
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        _fired(owner.stopService())


def test_a_sigterm_that_reached_the_reactor_before_the_wrapper_counts_as_the_stop_under_way(tmp_path, log_lines):
    """A SIGTERM between the reactor's handler install and ours queued a stop: the next one is only noted."""
    calls: list[int] = []
    previous_term = signal.signal(signal.SIGTERM, lambda number, frame: calls.append(number))  # as the reactor's
    reactor = RecordingReactor()
    reactor.threadCallQueue = [(reactor.stop, (), {})]  # what the reactor's handler queued
    owner = PushpinService(_settings(tmp_path), reactor, owns_process=True)
    try:
        owner.privilegedStartService()
        owner.startService()
        for hook, args, kwargs in reactor.triggers["during"]["startup"]:
            hook(*args, **kwargs)
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        reactor.advance(0)
        assert calls == []
        assert "received SIGTERM while stopping: the stop under way goes on" in log_lines
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        _fired(owner.stopService())


# --- wiring -----------------------------------------------------------------------------------


def test_the_service_passes_collaborators_in_and_touches_no_private_name_of_another_object():
    """Wiring is explicit: service.py neither sets nor reads another object's or module's _private attribute."""
    import pushpin_tx.service as module

    tree = ast.parse(Path(module.__file__).read_text())
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                wrong.append(ast.unparse(node))
    assert wrong == []


def test_the_service_provides_every_member_of_the_view_operations_code_reads():
    """A built service has each OpsView member, so ops code handed the service finds what mypy let it read."""
    from pushpin_tx.ops.view import OpsView

    members = [name for name in vars(OpsView) if not name.startswith("_")]
    assert {"counters", "router", "workers", "connection_tables", "publish", "reload"} <= set(members)
    for settings in (load_settings(None), load_settings(None, workers=2)):
        pushpin = PushpinService(settings, MemoryReactorClock())
        assert [name for name in members if not hasattr(pushpin, name)] == []
        assert pushpin.connection_tables() == [pushpin.acceptor.connections, pushpin.websockets.connections]

