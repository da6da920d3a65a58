# -*- test-case-name: tests.test_tap -*-
"""
C{twistd pushpin}: command-line options mirroring Pushpin's runner, and C{makeService},
which hands the parsed settings and the reactor to L{pushpin_tx.service.PushpinService}
(the wiring lives there).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.python import usage

from pushpin_tx.protocol.config import ConfigError, Settings, load_settings
from pushpin_tx.protocol.publish_auth import PublishAuthError, publish_auth_from_settings
from pushpin_tx.zeromq.curve import CurveError, curve_from_settings
from pushpin_tx.ops.console import ConsoleConfigError, check_console_settings
from pushpin_tx.ops.metrics import MetricsConfigError, check_metrics_settings
from pushpin_tx.ops import logs
from pushpin_tx.scripts import check
from pushpin_tx.service import DRAIN_SECONDS, PushpinService

# PushpinService and DRAIN_SECONDS are re-exported: the worker entry point and older tests
# import them from here.
__all__ = ["Options", "makeService", "PushpinService", "DRAIN_SECONDS"]


class Options(usage.Options):
    """Pushpin's runner options (reference §1)."""

    synopsis = "[options]"
    longdesc = "Run pushpin-tx, a realtime reverse proxy compatible with Pushpin 1.36."

    optParameters = [
        ["config", None, None, "Config file (default: the embedded pushpin.conf, routes '* test')."],
        ["port", None, None, "Run a single HTTP client listener on [addr:]port, replacing the configured ones."],
        ["id", None, None, "Instance id: ipc prefix pN-, port offset N*10.", int],
        ["loglevel", None, None, "Log level: 0 error, 1 warning, 2 info (default), 3 debug.", int],
        ["logfile", None, None, "Write logs to this file instead of standard output."],
        ["workers", None, None, "Reactor processes serving clients (default: [runner] workers, else one per core).", int],
    ]
    optFlags = [
        ["verbose", None, "Verbose output (log level 3)."],
        ["merge-output", "m", "Accepted for compatibility: pushpin-tx writes one log for all its processes."],
        ["log-json", None, "Write logs as JSON lines (time, level, message, namespace) for log shippers."],
        ["check", None, "Check the config and routes, print every problem and exit without starting "
                        "(status 0: it would start); the same as pushpin-tx-check."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["route"] = []
        self.settings: Settings | None = None

    def opt_route(self, line: str) -> None:
        """A route line (repeatable); replaces the routes file."""
        self["route"].append(line)

    def postOptions(self) -> None:
        if self["check"]:
            # print the findings and exit before twistd builds anything (SystemExit passes
            # through twistd's option parsing as the process's exit status)
            raise SystemExit(check.run(self["config"], routes=self["route"] or None,
                                       port=self["port"], instance_id=self["id"]))
        loglevel = 3 if self["verbose"] else self["loglevel"]
        try:
            self.settings = load_settings(
                self["config"],
                port=self["port"],
                instance_id=self["id"],
                routes=self["route"] or None,
                log_level=loglevel,
                workers=self["workers"],
            )
            settings = self.settings
            if settings.prometheus_port:
                check_metrics_settings(settings.prometheus_port, settings.prometheus_prefix)
            # the control API's credentials and the inputs' CURVE keys: read once here, so a bad
            # key file stops start-up with a usage error (the service reads them again)
            publish_auth_from_settings(settings, time.time)
            curve_from_settings(settings)
            if settings.console_ssh_endpoint:
                check_console_settings(
                    endpoint=settings.console_ssh_endpoint,
                    authorized_keys=settings.console_authorized_keys,
                    passwd=settings.console_passwd,
                    telnet_endpoint=settings.console_telnet_endpoint,
                    allow_remote=settings.console_allow_remote,
                )
        except (ConfigError, MetricsConfigError, ConsoleConfigError, PublishAuthError, CurveError) as e:
            raise usage.UsageError(str(e))
        parent = getattr(self, "parent", None)
        if parent is not None and not parent.get("logger"):
            # twistd builds its log observer from its own options after parsing ours: name
            # one that writes Pushpin-shaped lines at our log level (see pushpin_tx.ops.logs).
            logfile = self["logfile"] or (parent.get("logfile") or None)
            logs.configure(self.settings.log_level, logfile, bool(self["log-json"]))
            parent["logger"] = logs.TWISTD_LOGGER


def makeService(options: Options, reactor: Any = None) -> PushpinService:
    """Build the service tree for C{twistd pushpin}."""
    if reactor is None:
        from twisted.internet import reactor as installed

        reactor = installed
    settings = options.settings
    if settings is None:
        options.postOptions()
        settings = options.settings
    assert settings is not None
    return PushpinService(settings, reactor, owns_process=True)
