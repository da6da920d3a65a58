# -*- test-case-name: tests.ops.test_logs -*-
"""
Log lines in Pushpin's shape: C{[INFO] 2026-11-29 09:42:51.971 message}.

Operators grep Pushpin logs for these prefixes, so the twistd plugin installs this observer
in place of twistd's default one (see L{pushpin_tx.tap.Options.postOptions}). Pushpin's
C{--loglevel} numbers map onto twisted.logger levels: 0 error, 1 warning, 2 info, 3 debug.

Twisted's listening ports log C{"ClientSite starting on 7999"} and C{"(TCP Port 7999
Closed)"} whatever their factory's C{noisy} says; our listeners already log C{"client
listening on 0.0.0.0:7999"} (role and address), so those two are shown at debug level only
(L{is_port_noise}).
"""

from __future__ import annotations

import atexit
import json
import re
import sys
import threading
import time
from typing import IO, Any, Callable

from twisted.logger import ILogObserver, LogLevel, formatEvent
from zope.interface import implementer

__all__ = ["PushpinLogObserver", "level_for", "is_port_noise", "configure", "twistd_observer", "TWISTD_LOGGER"]

_NAMES = {
    LogLevel.critical: "ERR",
    LogLevel.error: "ERR",
    LogLevel.warn: "WARN",
    LogLevel.info: "INFO",
    LogLevel.debug: "DEBUG",
}

_THRESHOLDS = [LogLevel.error, LogLevel.warn, LogLevel.info, LogLevel.debug]


#: what twisted.internet.tcp.Port (and unix.Port) log, through the legacy log.msg, when they
#: start listening and when they close: C{"<factory> starting on <port>"}, C{"(TCP Port N Closed)"}
_PORT_NOISE = re.compile(r"\A(?:\w+ starting on \S+|\((?:TCP|UNIX|UDP)\w* Port \S+ Closed\))\Z")


def is_port_noise(event: dict) -> bool:
    """
    Whether C{event} is one of Twisted's listening-port lines, which our listeners' own
    C{"<role> listening on <address>"} lines say better. Only legacy C{log.msg} events
    match (that is how Twisted's ports log), so no line of ours is ever taken for one.
    """
    if event.get("log_namespace") != "log_legacy":
        return False
    text = event.get("log_text")
    return isinstance(text, str) and _PORT_NOISE.match(text) is not None


def level_for(loglevel: int) -> LogLevel:
    """The most verbose twisted.logger level shown at Pushpin log level C{loglevel}."""
    return _THRESHOLDS[max(0, min(loglevel, 3))]


@implementer(ILogObserver)
class PushpinLogObserver:
    """Writes events at or above a level as Pushpin-style lines to a text stream."""

    def __init__(
        self,
        stream: IO[str],
        loglevel: int = 2,
        localtime: Callable[[float], time.struct_time] = time.localtime,
        *,
        json_lines: bool = False,
        path: str | None = None,
        flush_later: Callable[[Callable[[], None]], bool] | None = None,
    ) -> None:
        """
        @param json_lines: write one JSON object per line (for log shippers) instead of
            Pushpin's text lines: C{time} (ISO 8601, UTC), C{level}, C{message},
            C{namespace}, and C{traceback} for failures.
        @param flush_later: C{flush_later(f)} arranges for C{f} to be called soon (at the
            end of the reactor turn) and says whether it will be; without it, or when it
            says no, every line is flushed as it is written. Flushing once per turn instead
            of once per line saves a C{write} call per access line, a visible share of a
            proxied GET (bench/README.md); the lines still reach the stream at the end of the
            turn that logged them.
        """
        self._stream = stream
        self._path = path
        self._threshold = level_for(loglevel)
        self._localtime = localtime
        self._json = json_lines
        self._stamp_second = -1
        self._stamp = ""
        self._stamp_millis = -1
        self._stamp_full = ""
        self._flush_later = flush_later
        self._pending: list[str] = []
        #: the levels at or above the threshold (a set lookup: LogLevel's ordering is Python code)
        self._shown = frozenset(lv for lv in LogLevel.iterconstants() if lv >= self._threshold)

    def __call__(self, event: dict) -> None:
        get = event.get
        level = get("log_level", LogLevel.info)
        if level is LogLevel.info and get("log_namespace") == "log_legacy" and is_port_noise(event):
            level = LogLevel.debug  # our "<role> listening on" line says it (module docstring)
        failure = get("log_failure")
        if level not in self._shown and failure is None:
            return  # less severe than the configured level (twisted.logger orders debug < info < warn)
        if self._json:
            self._write_json(event, level, failure)
            return
        millis = round(get("log_time", time.time()) * 1000)
        if millis != self._stamp_millis:  # the same millisecond's lines share their prefix
            second = millis // 1000
            if second != self._stamp_second:  # strftime/localtime once per second, not per line
                self._stamp_second = second
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self._localtime(second))
            self._stamp_millis = millis
            self._stamp_full = self._stamp + ".%03d " % (millis % 1000)
        stamp = self._stamp_full
        log_format = get("log_format")
        # a preformatted line (the proxy's access lines, "{line}"; a held connection's
        # subscribe lines, "{text}") skips twisted.logger's formatter: formatting "{text}"
        # with a str gives that str
        line = get("line") if log_format == "{line}" else get("text") if log_format == "{text}" else None
        text = line if line.__class__ is str else formatEvent(event)
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        self._write(f"[{_NAMES.get(level, 'INFO')}] {stamp}{text}\n")

    def _write(self, line: str) -> None:
        """Write and flush C{line} now, or keep it for one write at the end of this reactor
        turn when a scheduler says it can (the stream may be unbuffered: PYTHONUNBUFFERED)."""
        later = self._flush_later
        if later is not None and later(self.flush):
            self._pending.append(line)
            return
        if self._pending:
            self.flush()
        self._stream.write(line)
        self._stream.flush()

    def flush(self) -> None:
        """Write out every line logged so far."""
        pending = self._pending
        try:
            if pending:
                self._pending = []
                self._stream.write("".join(pending))
            self._stream.flush()
        except ValueError:  # closed (interpreter exit)
            pass

    def reopen(self) -> None:
        """Close and reopen the log file (a no-op when writing to a stream we did not open)."""
        if self._path is None:
            return
        self.flush()  # lines logged before the reopen belong to the old file
        old, self._stream = self._stream, open(self._path, "a", encoding="utf-8")
        old.close()

    def _write_json(self, event: dict, level: LogLevel, failure: object) -> None:
        when = event.get("log_time", time.time())
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + ".%03dZ" % (round(when * 1000) % 1000),
            "level": _NAMES.get(level, "INFO"),
            "message": formatEvent(event),
            "namespace": event.get("log_namespace", ""),
        }
        if failure is not None:
            record["traceback"] = failure.getTraceback()  # type: ignore[attr-defined]
        self._write(json.dumps(record, ensure_ascii=False) + "\n")


#: set by L{configure} from the plugin's options, read by L{twistd_observer}
_configured: tuple[int, str | None, bool] = (2, None, False)

#: what twistd's C{logger} option must name (it takes a dotted name, not an object)
TWISTD_LOGGER = "pushpin_tx.ops.logs.twistd_observer"


def configure(loglevel: int, logfile: str | None, json_lines: bool = False) -> None:
    """Remember the log level, file and format for L{twistd_observer}."""
    global _configured
    _configured = (loglevel, logfile, json_lines)


def configuration() -> tuple[int, str | None, bool]:
    """The log level, file and format L{configure} was given (a worker process logs the same way)."""
    return _configured


#: the observer twistd installed, for L{reopen}
_installed: PushpinLogObserver | None = None


def twistd_observer() -> PushpinLogObserver:
    """The observer twistd installs when its C{logger} option names this function."""
    global _installed
    loglevel, logfile, json_lines = _configured
    stream: IO[str] = sys.stdout if not logfile or logfile == "-" else open(logfile, "a", encoding="utf-8")
    _installed = PushpinLogObserver(
        stream, loglevel, json_lines=json_lines, path=logfile if stream is not sys.stdout else None, flush_later=_TurnEndFlush()
    )
    atexit.register(_installed.flush)  # whatever the last turn logged, on any way out
    return _installed


class _TurnEndFlush:
    """
    C{flush_later} for the installed observer: one C{callLater(0, flush)} per reactor turn
    that logged something. Says no (flush at once) before the reactor runs, once it has
    stopped and from any thread but its own, where a C{callLater} would be unsafe or might
    never run; a shutdown trigger and C{atexit} cover the lines of the very last turn.
    """

    def __init__(self) -> None:
        self._pending = False
        self._trigger_added = False

    def __call__(self, flush: Callable[[], None]) -> bool:
        if self._pending and threading.get_ident() == _MAIN_THREAD:
            return True  # this turn's flush is arranged already (the reactor is running: it was asked)
        reactor: Any = sys.modules.get("twisted.internet.reactor")  # never install one from here
        if reactor is None or not getattr(reactor, "running", False) or threading.get_ident() != _MAIN_THREAD:
            return False
        if not self._pending:
            self._pending = True
            if not self._trigger_added:
                self._trigger_added = True
                reactor.addSystemEventTrigger("after", "shutdown", self._run, flush)  # (and no flush pending after it)
            reactor.callLater(0, self._run, flush)
        return True

    def _run(self, flush: Callable[[], None]) -> None:
        self._pending = False
        flush()


_MAIN_THREAD = threading.main_thread().ident


def reopen() -> None:
    """SIGHUP: reopen the log file (after logrotate moved it), if logging to one."""
    if _installed is not None:
        _installed.reopen()
