"""Tests for pushpin_tx.ops.routes_watch: loading, watching and reloading the routes file on a fake clock."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from pushpin_tx.protocol.routes import RouteTable
from pushpin_tx.ops.routes_watch import RoutesError, RoutesFileService


class Recorder:
    """Collects the tables handed to on_load and the log events, for assertions."""

    def __init__(self) -> None:
        self.tables: list[RouteTable] = []
        self.events: list[dict[str, Any]] = []
        self.log = Logger(namespace="test", observer=self.events.append)

    def on_load(self, table: RouteTable) -> None:
        self.tables.append(table)

    def messages(self, level: LogLevel | None = None) -> list[str]:
        return [formatEvent(e) for e in self.events if level is None or e["log_level"] is level]

    def ports(self) -> list[int]:
        table = self.tables[-1]
        return [r.targets[0].port for r in table.routes]


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _service(path: Path | str | None, rec: Recorder, clock: Clock,
             override: list[str] | None = None) -> RoutesFileService:
    return RoutesFileService(str(path) if path is not None else None, override=override, clock=clock,
                             on_load=rec.on_load, poll_interval=1.0, log=rec.log)


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes"
    _write(path, "* a:1\n", 1_000_000_000)
    return path


def test_start_loads_synchronously(routes_file: Path) -> None:
    """Starting the service loads the file at once, hands the table over and logs the count."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    assert rec.ports() == [1]
    assert svc.table is rec.tables[-1]
    assert rec.messages(LogLevel.info) == ["routes loaded with 1 entries"]
    svc.stopService()


@pytest.mark.parametrize("start", ["privilegedStartService", "startService"])
def test_invalid_lines_at_start_stop_start_up_naming_file_line_and_reason(tmp_path: Path, start: str) -> None:
    """Invalid lines at start raise RoutesError with Pushpin's texts (file:line: reason); no table is handed over."""
    path = tmp_path / "routes"
    _write(path, "* a:1\n\nbad\n*,path_beg=/x c:0\n", 1)
    rec, clock = Recorder(), Clock()
    svc = _service(path, rec, clock)
    with pytest.raises(RoutesError) as raised:
        getattr(svc, start)()
    assert str(raised.value) == f"{path}:3: must specify condition and at least one target; {path}:4: target invalid port"
    assert rec.tables == [] and svc.table is None
    assert clock.getDelayedCalls() == []  # nothing watched either
    svc.stopService()


def test_the_issues_file_with_no_valid_line_stops_start_up(tmp_path: Path) -> None:
    """'* localhost:zz' alone (which Pushpin loads as 0 entries) stops start-up: file, line 1, Pushpin's reason."""
    path = tmp_path / "routes"
    _write(path, "* localhost:zz\n", 1)
    svc = _service(path, Recorder(), Clock())
    with pytest.raises(RoutesError, match=rf"\A{path}:1: target invalid port\Z"):
        svc.privilegedStartService()


def test_a_duplicate_condition_is_skipped_with_pushpins_warning(tmp_path: Path) -> None:
    """A valid line whose condition an earlier line has is only skipped, with Pushpin's warning; the rest load."""
    path = tmp_path / "routes"
    _write(path, "* a:1\n\n* b:2\n*,path_beg=/{x} d:4\n", 1)
    rec, clock = Recorder(), Clock()
    svc = _service(path, rec, clock)
    svc.privilegedStartService()
    svc.startService()
    assert rec.messages(LogLevel.warn) == [f"{path}:3 skipping duplicate condition"]
    assert rec.ports() == [1, 4]
    assert rec.messages(LogLevel.info) == ["routes loaded with 2 entries"]
    assert len(rec.tables) == 1  # loaded once, before binding, not again at startService
    svc.stopService()


@pytest.mark.parametrize("how", ["file change", "reload"])
def test_invalid_lines_on_a_reload_keep_the_table_in_force(routes_file: Path, how: str) -> None:
    """A reload (file change or SIGHUP) that finds invalid lines logs each at error and keeps the routes in force."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    first = rec.tables[-1]
    _write(routes_file, "* a:1\n* localhost:zz\n", 2_000_000_000)
    if how == "reload":
        assert svc.reload() is None
    else:
        clock.pump([1.0, 1.0, 1.0])
    assert rec.tables == [first] and svc.table is first
    assert rec.messages(LogLevel.error) == [f"{routes_file}:2: target invalid port",
                                            "routes not reloaded: the 1 entries loaded before stay in force"]
    _write(routes_file, "* b:2\n", 3_000_000_000)  # fixed: the next reload takes it
    svc.reload()
    assert rec.ports() == [2]
    svc.stopService()


def test_change_is_reloaded_one_second_after_detection(routes_file: Path) -> None:
    """A change is noticed at the next poll, logged at once, and the file re-read one second later."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    clock.advance(1.0)
    assert len(rec.tables) == 1
    _write(routes_file, "* b:2\n", 2_000_000_000)
    clock.advance(1.0)
    assert rec.messages(LogLevel.info)[-1] == "routes file changed, reloading"
    assert len(rec.tables) == 1
    clock.advance(0.99)
    assert len(rec.tables) == 1
    clock.advance(0.01)
    assert len(rec.tables) == 2
    assert rec.ports() == [2]
    assert rec.messages(LogLevel.info)[-1] == "routes loaded with 1 entries"
    svc.stopService()


def test_burst_of_changes_reloads_once(routes_file: Path) -> None:
    """Changes while a reload is waiting fold into it, and the reload reads the latest content."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    _write(routes_file, "* b:2\n", 2_000_000_000)
    clock.advance(1.0)
    _write(routes_file, "* c:3\n", 3_000_000_000)
    clock.advance(0.5)
    clock.advance(0.5)
    assert len(rec.tables) == 2
    assert rec.ports() == [3]
    assert rec.messages(LogLevel.info).count("routes file changed, reloading") == 1
    clock.advance(5.0)
    assert len(rec.tables) == 2
    svc.stopService()


def test_replaced_file_with_same_size_and_mtime_is_noticed(routes_file: Path, tmp_path: Path) -> None:
    """Replacing the file (a new inode) is a change even when size and mtime are equal."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    other = tmp_path / "routes.new"
    _write(other, "* z:9\n", 1_000_000_000)
    os.replace(other, routes_file)
    clock.pump([1.0, 1.0, 1.0])
    assert rec.ports() == [9]
    svc.stopService()


def test_unchanged_file_is_not_reloaded(routes_file: Path) -> None:
    """Polling an unchanged file never reloads it."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    clock.pump([1.0] * 10)
    assert len(rec.tables) == 1
    svc.stopService()


@pytest.mark.parametrize("name", ["missing", "a-directory"])
def test_unreadable_file_at_start(tmp_path: Path, name: str) -> None:
    """An unreadable routes file is logged with its path and leaves an empty table, without crashing."""
    path = tmp_path / name
    if name == "a-directory":
        path.mkdir()
    rec, clock = Recorder(), Clock()
    svc = _service(path, rec, clock)
    svc.startService()
    assert rec.messages(LogLevel.warn) == [f"unable to open routes file: {path}"]
    assert len(rec.tables) == 1 and len(rec.tables[0]) == 0
    svc.stopService()


def test_file_appearing_later_is_loaded(tmp_path: Path) -> None:
    """A routes file created after start is picked up by the polling."""
    path = tmp_path / "routes"
    rec, clock = Recorder(), Clock()
    svc = _service(path, rec, clock)
    svc.startService()
    _write(path, "* a:1\n", 5)
    clock.pump([1.0, 1.0, 1.0])
    assert rec.ports() == [1]
    svc.stopService()


def test_file_vanishing_keeps_the_old_table(routes_file: Path) -> None:
    """If the file cannot be read at reload time, the routes in force stay (as in Pushpin)."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    first = rec.tables[-1]
    routes_file.unlink()
    clock.pump([1.0, 1.0, 1.0])
    assert rec.tables == [first]
    assert svc.table is first
    assert rec.messages(LogLevel.warn) == [f"unable to open routes file: {routes_file}"]
    svc.stopService()


def test_reload_reads_at_once(routes_file: Path) -> None:
    """reload() (SIGHUP) re-reads immediately and absorbs a reload that was waiting."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    _write(routes_file, "* b:2\n", 2_000_000_000)
    clock.advance(1.0)
    svc.reload()
    assert rec.ports() == [2]
    assert len(rec.tables) == 2
    clock.advance(3.0)
    assert len(rec.tables) == 2
    svc.stopService()


@pytest.mark.parametrize("pending", [False, True])
def test_stop_leaves_no_delayed_calls(routes_file: Path, pending: bool) -> None:
    """Stopping cancels the polling and any waiting reload."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    svc.startService()
    assert clock.getDelayedCalls() != []
    if pending:
        _write(routes_file, "* b:2\n", 2_000_000_000)
        clock.advance(1.0)
        assert len(clock.getDelayedCalls()) == 2
    svc.stopService()
    assert clock.getDelayedCalls() == []
    assert not svc.running


def test_override_lines_replace_the_file(routes_file: Path) -> None:
    """--route lines are used instead of the file, and nothing is watched."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock, override=["* o:7", "* o:8"])
    svc.startService()
    assert rec.ports() == [7]
    assert rec.messages(LogLevel.warn) == []  # duplicates among --route lines are dropped silently
    assert rec.messages(LogLevel.info) == []
    assert clock.getDelayedCalls() == []
    _write(routes_file, "* b:2\n", 2_000_000_000)
    clock.advance(5.0)
    assert len(rec.tables) == 1
    svc.reload()
    assert rec.ports() == [7]
    svc.stopService()
    assert clock.getDelayedCalls() == []


def test_an_invalid_route_option_stops_start_up() -> None:
    """An invalid --route line stops start-up as an invalid file line does, named <route>:1."""
    svc = _service(None, Recorder(), Clock(), override=["* o:7", "lonely"])
    with pytest.raises(RoutesError, match=r"\A<route>:1: must specify condition and at least one target\Z"):
        svc.privilegedStartService()


def test_load_returns_the_table(routes_file: Path) -> None:
    """load() parses now and returns the table it handed to on_load."""
    rec, clock = Recorder(), Clock()
    svc = _service(routes_file, rec, clock)
    table = svc.load()
    assert rec.tables == [table]
    assert len(table) == 1
