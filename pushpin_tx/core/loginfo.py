# -*- test-case-name: tests.web.test_proxy -*-
"""
Log events written on hot paths (access lines, held connections, WebSocket sessions), one
level below C{Logger.info}: L{emit_info}.
"""

from __future__ import annotations

import time

from twisted.logger import Logger, LogLevel

__all__ = ["emit_info"]

def emit_info(log: Logger, log_format: str, **fields: object) -> None:
    """
    C{log.info(log_format, **fields)}: the same event to the same observer, without
    C{Logger.emit}'s check that the level is one of C{LogLevel}'s constants (a sorted scan of
    them on every call, visible in every held stream's opening: bench/README.md). Written by hand
    because twisted.logger has no unchecked emit; the level here is a constant.
    """
    fields.update(
        log_logger=log,
        log_level=LogLevel.info,
        log_namespace=log.namespace,
        log_source=log.source,
        log_format=log_format,
        log_time=time.time(),
    )
    log.observer(fields)
