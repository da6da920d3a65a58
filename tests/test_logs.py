"""Log lines in Pushpin's shape, filtered by Pushpin's log levels."""

from __future__ import annotations

import calendar
import io
import time

import pytest
from twisted.logger import LogLevel

from pushpin_tx.logs import PushpinLogObserver


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


def test_json_lines_option():
    """--log-json writes one JSON object per line with time, level, message and namespace."""
    import json

    out = io.StringIO()
    observer = PushpinLogObserver(out, 2, json_lines=True)
    observer({"log_level": LogLevel.warn, "log_format": "dropped {n}", "n": 3, "log_time": calendar.timegm((2026, 11, 29, 9, 42, 51)) + 0.5, "log_namespace": "pushpin_tx.stats"})
    record = json.loads(out.getvalue())
    assert record == {"time": "2026-11-29T09:42:51.500Z", "level": "WARN", "message": "dropped 3", "namespace": "pushpin_tx.stats"}


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
