# -*- test-case-name: tests.web.test_proxy -*-
"""
Log events written on hot paths (access lines, held connections, WebSocket sessions), one
level below C{Logger.info}: L{emit_info}, and L{InfoLines} for one logger's preformatted
lines written many times (the publish line, once per item).
"""

from __future__ import annotations

import time

from twisted.logger import Logger, LogLevel

__all__ = ["emit_info", "InfoLines"]


def _event(log: Logger, log_format: str) -> dict[str, object]:
    """What C{log.info(log_format, ...)} puts in its event besides the fields and the time."""
    return {"log_logger": log, "log_level": LogLevel.info, "log_namespace": log.namespace,
            "log_source": log.source, "log_format": log_format}


def emit_info(log: Logger, log_format: str, **fields: object) -> None:
    """
    C{log.info(log_format, **fields)}: the same event to the same observer, without
    C{Logger.emit}'s check that the level is one of C{LogLevel}'s constants (a sorted scan of
    them on every call, visible in every held stream's opening: bench/README.md). Written by hand
    because twisted.logger has no unchecked emit; the level here is a constant.
    """
    # set in place in _event's order (the event's keys in the same order): no second dict
    fields["log_logger"] = log
    fields["log_level"] = LogLevel.info
    fields["log_namespace"] = log.namespace
    fields["log_source"] = log.source
    fields["log_format"] = log_format
    fields["log_time"] = time.time()
    log.observer(fields)


class InfoLines:
    """
    L{emit_info}C{(log, "{line}", line=...)} for lines written many times from one logger:
    the event's constant part is built once, not once per line.
    """

    __slots__ = ("_observer", "_event")

    def __init__(self, log: Logger) -> None:
        self._observer = log.observer
        self._event = _event(log, "{line}")

    def emit(self, line: str) -> None:
        """Log C{line} at info level, as given."""
        self._observer({**self._event, "line": line, "log_time": time.time()})
