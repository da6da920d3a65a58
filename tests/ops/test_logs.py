"""Log lines in Pushpin's shape, filtered by Pushpin's log levels."""

from __future__ import annotations

import calendar
import io
import time

import pytest
from twisted.logger import LogLevel

from pushpin_tx.ops.logs import PushpinLogObserver


def emit(loglevel: int, level: LogLevel, text: str = "hello {who}") -> str:
    out = io.StringIO()
    observer = PushpinLogObserver(out, loglevel, localtime=time.gmtime)
    observer({"log_level": level, "log_format": text, "who": "world", "log_time": calendar.timegm((2026, 11, 29, 9, 42, 51)) + 0.971})
    return out.getvalue()


def test_line_shape_matches_pushpin():
    """[LEVEL] YYYY-MM-DD HH:MM:SS.mmm message, with milliseconds."""
    assert emit(2, LogLevel.info) == "[INFO] 2026-11-29 09:42:51.971 hello world\n"
    assert emit(2, LogLevel.warn).startswith("[WARN] ")
    assert emit(2, LogLevel.error).startswith("[ERR] ")


@pytest.mark.parametrize(
    "loglevel, shown",
    [
        (0, {LogLevel.error, LogLevel.critical}),
        (1, {LogLevel.error, LogLevel.critical, LogLevel.warn}),
        (2, {LogLevel.error, LogLevel.critical, LogLevel.warn, LogLevel.info}),
        (3, {LogLevel.error, LogLevel.critical, LogLevel.warn, LogLevel.info, LogLevel.debug}),
    ],
)
def test_levels_filter_less_severe_events(loglevel, shown):
    """Level N shows events at its severity and above: 0 errors, 1 +warnings, 2 +info, 3 +debug."""
    for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
        assert bool(emit(loglevel, level)) == (level in shown), level


def test_lines_of_one_millisecond_and_the_next_carry_their_own_stamps():
    """Lines in one millisecond share a stamp; the next millisecond, second and a later minute get theirs."""
    out = io.StringIO()
    observer = PushpinLogObserver(out, 2, localtime=time.gmtime)
    base = calendar.timegm((2026, 11, 29, 9, 42, 51))
    for offset in (0.971, 0.9712, 0.972, 0.9995, 1.0, 61.003, 0.971):
        observer({"log_level": LogLevel.info, "log_format": "{line}", "line": f"at {offset}", "log_time": base + offset})
    assert out.getvalue().splitlines() == [
        "[INFO] 2026-11-29 09:42:51.971 at 0.971",
        "[INFO] 2026-11-29 09:42:51.971 at 0.9712",
        "[INFO] 2026-11-29 09:42:51.972 at 0.972",
        "[INFO] 2026-11-29 09:42:52.000 at 0.9995",  # rounds up into the next second, as before
        "[INFO] 2026-11-29 09:42:52.000 at 1.0",
        "[INFO] 2026-11-29 09:43:52.003 at 61.003",
        "[INFO] 2026-11-29 09:42:51.971 at 0.971",  # an earlier time again (a clock step back)
    ]


def test_json_lines_option():
    """--log-json writes one JSON object per line with time, level, message and namespace."""
    import json

    out = io.StringIO()
    observer = PushpinLogObserver(out, 2, json_lines=True)
    observer({"log_level": LogLevel.warn, "log_format": "dropped {n}", "n": 3, "log_time": calendar.timegm((2026, 11, 29, 9, 42, 51)) + 0.5, "log_namespace": "pushpin_tx.core.stats"})
    record = json.loads(out.getvalue())
    assert record == {"time": "2026-11-29T09:42:51.500Z", "level": "WARN", "message": "dropped 3", "namespace": "pushpin_tx.core.stats"}


def test_reopen_follows_a_rotated_log_file(tmp_path):
    """After logrotate moves the file, reopen (SIGHUP) writes to a new file at the configured path."""
    path = tmp_path / "pushpin.log"
    observer = PushpinLogObserver(open(path, "a", encoding="utf-8"), 2, path=str(path))
    observer({"log_level": LogLevel.info, "log_format": "before", "log_time": 0})
    path.rename(tmp_path / "pushpin.log.1")
    observer.reopen()
    observer({"log_level": LogLevel.info, "log_format": "after", "log_time": 0})
    assert "before" in (tmp_path / "pushpin.log.1").read_text()
    assert "after" in path.read_text() and "before" not in path.read_text()


def test_timestamp_changes_with_the_second():
    """Lines in the same second share the formatted time; the next second gets its own."""
    out = io.StringIO()
    observer = PushpinLogObserver(out, 2, localtime=time.gmtime)
    base = calendar.timegm((2026, 11, 29, 9, 42, 51))
    for when in (base + 0.1, base + 0.9, base + 1.0):
        observer({"log_level": LogLevel.info, "log_format": "x", "log_time": when})
    assert [line[7:30] for line in out.getvalue().splitlines()] == [
        "2026-11-29 09:42:51.100",
        "2026-11-29 09:42:51.900",
        "2026-11-29 09:42:52.000",
    ]


class Later:
    """A flush_later that queues the flush, as the reactor's end of turn would."""

    def __init__(self, can: bool = True) -> None:
        self.can = can
        self.queued: list = []

    def __call__(self, flush) -> bool:
        if self.can:
            self.queued.append(flush)
        return self.can


def test_lines_of_one_turn_are_written_together_at_its_end():
    """With a turn-end flush, lines reach the stream in one write when the turn ends, in order."""
    out = io.StringIO()
    later = Later()
    observer = PushpinLogObserver(out, 2, flush_later=later)
    for n in range(3):
        observer({"log_level": LogLevel.info, "log_format": "{line}", "line": f"GET /{n}", "log_time": 0})
    assert out.getvalue() == ""
    later.queued[0]()
    assert [line.split(" ", 3)[3] for line in out.getvalue().splitlines()] == ["GET /0", "GET /1", "GET /2"]


def test_lines_are_written_at_once_when_no_turn_end_is_coming():
    """When the flush cannot be scheduled (reactor stopped, another thread), earlier and new lines are written at once."""
    out = io.StringIO()
    later = Later()
    observer = PushpinLogObserver(out, 2, flush_later=later)
    observer({"log_level": LogLevel.info, "log_format": "first", "log_time": 0})
    later.can = False
    observer({"log_level": LogLevel.info, "log_format": "second", "log_time": 0})
    assert [line.split(" ", 3)[3] for line in out.getvalue().splitlines()] == ["first", "second"]


def test_reopen_writes_pending_lines_to_the_old_file(tmp_path):
    """Lines logged before SIGHUP's reopen end up in the rotated file, later ones in the new file."""
    path = tmp_path / "pushpin.log"
    later = Later()
    observer = PushpinLogObserver(open(path, "a", encoding="utf-8"), 2, path=str(path), flush_later=later)
    observer({"log_level": LogLevel.info, "log_format": "before", "log_time": 0})
    path.rename(tmp_path / "pushpin.log.1")
    observer.reopen()
    observer({"log_level": LogLevel.info, "log_format": "after", "log_time": 0})
    observer.flush()
    assert "before" in (tmp_path / "pushpin.log.1").read_text()
    assert "after" in path.read_text() and "before" not in path.read_text()


def test_preformatted_access_lines_are_written_as_given():
    """A "{line}" event (the proxy's access lines) is written verbatim, braces included."""
    out = io.StringIO()
    PushpinLogObserver(out, 2)({"log_level": LogLevel.info, "log_format": "{line}", "line": "GET http://h/{x} -> o:80 code=200 2", "log_time": 0})
    assert out.getvalue().endswith(" GET http://h/{x} -> o:80 code=200 2\n")


def test_preformatted_text_lines_are_written_as_formatting_would():
    """A "{text}" event (a held connection's subscribe line) is written as twisted.logger would format it; a non-str is formatted."""
    from twisted.logger import formatEvent

    for text in ["subscribe http://h/{x}?a=%s channel=c{1}", 42]:
        out = io.StringIO()
        event = {"log_level": LogLevel.info, "log_format": "{text}", "text": text, "log_time": 0}
        PushpinLogObserver(out, 2)(event)
        assert out.getvalue().endswith(f" {formatEvent(event)}\n")
        assert out.getvalue().endswith(f" {text}\n")


@pytest.mark.parametrize("text", ["ClientSite starting on 7999", "(TCP Port 5561 Closed)", "_MetricsSite starting on 9100",
                                  "(UNIX Port /run/pushpin/x.sock Closed)"])
def test_twisteds_port_lines_are_shown_at_debug_level_only(text):
    """Twisted's 'X starting on N' and '(TCP Port N Closed)' repeat our 'listening on' lines: hidden at info, shown at debug."""
    from twisted.python import log as legacy
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        legacy.msg(text)  # as twisted.internet.tcp.Port logs them
    finally:
        globalLogPublisher.removeObserver(events.append)
    (event,) = events
    for loglevel, shown in ((2, ""), (3, f"[DEBUG] 2026-11-29 09:42:51.971 {text}\n")):
        out = io.StringIO()
        PushpinLogObserver(out, loglevel, localtime=time.gmtime)(dict(event, log_time=calendar.timegm((2026, 11, 29, 9, 42, 51)) + 0.971))
        assert out.getvalue() == shown


def test_our_own_lines_that_look_like_port_lines_are_kept():
    """Only Twisted's legacy port events are demoted: one of ours with the same words stays at info."""
    assert emit(2, LogLevel.info, "ClientSite starting on 7999") == "[INFO] 2026-11-29 09:42:51.971 ClientSite starting on 7999\n"


def test_turn_end_flush_arranges_one_flush_per_turn_and_none_after_shutdown(monkeypatch):
    """The installed observer's flush_later: one callLater per reactor turn that logs, whatever the lines; after the shutdown trigger has flushed, nothing is left arranged, and a stopped reactor gets its lines written at once."""
    import sys

    from twisted.internet.testing import MemoryReactorClock

    from pushpin_tx.ops.logs import _TurnEndFlush

    reactor = MemoryReactorClock()
    reactor.running = True
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", reactor)
    flushes: list[float] = []

    def flush() -> None:
        flushes.append(reactor.seconds())

    later = _TurnEndFlush()
    assert all(later(flush) for _ in range(3))
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(1)
    assert flushes == [1] and reactor.getDelayedCalls() == []
    assert later(flush)  # the next turn arranges its own
    [(trigger, args, kwargs)] = reactor.triggers["after"]["shutdown"]
    trigger(*args, **kwargs)  # the reactor shutting down within that turn: its trigger flushes, nothing stays arranged
    assert flushes == [1, 1]
    reactor.running = False
    assert not later(flush)  # stopped: written at once by the observer
