# -*- test-case-name: tests.scripts.test_check -*-
"""
C{pushpin-tx-check}: say whether C{twistd pushpin} would start with a config, and why not.

  pushpin-tx-check [--config FILE] [--route LINE]... [--port [ADDR:]PORT] [--id N] [--strict]

It reads C{pushpin.conf} (and its include) and the routes file (or the C{--route} lines) the
way C{twistd pushpin} does, opens nothing, and prints:

  - every problem, each as C{FILE:LINE: [section] key: message}: the ones that stop start-up
    (errors, invalid routes lines among them, with Pushpin's own texts) and the ones it
    survives (warnings: a duplicate routes condition, an unreadable routes file, no routes);
  - the effective routes, in file order, each with its line, id, condition and targets;
  - the keys that are set but mean nothing to pushpin-tx (not applicable: they steer Pushpin's
    child processes), the ones it reads but does not honour yet (not implemented), and the
    ones nobody reads (unknown: probably typos).

Exit status: 0 when it would start, 1 when it would not; with C{--strict}, warnings (skipped
duplicate routes lines, an unreadable routes file, no routes, unknown or not-implemented keys)
count as failures too. Usage errors exit 2 (argparse). C{twistd pushpin --check} runs the same check.

Synchronous and pure apart from reading the files: no reactor, no sockets.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from pushpin_tx import __version__
from pushpin_tx.ops.console import ConsoleConfigError, check_console_settings
from pushpin_tx.ops.metrics import MetricsConfigError, check_metrics_settings
from pushpin_tx.ops.routes_watch import invalid_lines
from pushpin_tx.protocol.config import ConfigProblem, Settings, check_settings
from pushpin_tx.protocol.routes import Route, Target, parse_override_routes, parse_routes

__all__ = ["CheckReport", "check", "format_report", "format_route", "main", "run"]

# what Pushpin's empty warning for a routes line means (it prints "routes:N: " and nothing else)
_EMPTY_MESSAGE = "(a quote is not closed or an escape is not \\\\ or \\\")"


@dataclass
class CheckReport:
    """Everything the check found; L{format_report} prints it."""

    config_path: str
    settings: Settings | None
    #: problems that stop start-up
    errors: list[ConfigProblem] = field(default_factory=list)
    #: problems start-up survives (duplicate routes lines skipped, routes file unreadable, no routes)
    warnings: list[str] = field(default_factory=list)
    #: where the routes come from: a file's path, or "--route" for command-line lines
    routes_source: str = ""
    routes: list[Route] = field(default_factory=list)
    #: "FILE:LINE: [section] key" for each key in the three diagnostic groups
    not_applicable: list[str] = field(default_factory=list)
    not_implemented: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def would_start(self) -> bool:
        """Whether C{twistd pushpin} would start with this config."""
        return not self.errors

    def status(self, strict: bool = False) -> int:
        """The exit status: 0 it would start (and, if strict, nothing to warn about), else 1."""
        if not self.would_start:
            return 1
        if strict and (self.warnings or self.unknown or self.not_implemented):
            return 1
        return 0


def check(config_path: str | None, *, routes: Sequence[str] | None = None,
          port: str | None = None, instance_id: int | None = None) -> CheckReport:
    """Check a config (None: the embedded default) and its routes without starting anything."""
    found = check_settings(config_path, port=port, instance_id=instance_id, routes=routes)
    settings = found.settings
    report = CheckReport(os.path.abspath(config_path) if config_path
                         else "(embedded default pushpin.conf)", settings,
                         errors=sorted(found.problems, key=_problem_order))
    if settings is None:
        return report

    def where(label: str) -> str:
        file, line = found.locations.get(label, ("", 0))
        return f"{file}:{line}: {label}" if file else label

    report.not_applicable = [where(label) for label in settings.not_applicable]
    report.not_implemented = [where(label) for label in settings.not_implemented]
    report.unknown = [where(label) for label in settings.unknown]
    report.errors.extend(_service_problems(settings, found.locations))
    _check_routes(report, settings)
    return report


def _problem_order(problem: ConfigProblem) -> tuple[int, str, int]:
    """Command-line problems first, then by file and line."""
    return (1 if problem.file else 0, problem.file, problem.line or 0)


def _service_problems(settings: Settings,
                      locations: dict[str, tuple[str, int]]) -> list[ConfigProblem]:
    """What C{twistd pushpin}'s option parsing refuses beyond the config reader: the metrics
    endpoint and the operator console (the same checks, L{pushpin_tx.tap.Options.postOptions})."""
    problems = []

    def at(section: str, key: str, message: str) -> ConfigProblem:
        file, line = locations.get(f"[{section}] {key}", (settings.config_path or "", 0))
        return ConfigProblem(file, line or None, section, key, message)

    if settings.prometheus_port:
        section = "handler" if "[handler] prometheus_port" in locations else "proxy"
        try:
            check_metrics_settings(settings.prometheus_port, settings.prometheus_prefix)
        except MetricsConfigError as e:
            problems.append(at(section, "prometheus_port", str(e)))
    if settings.console_ssh_endpoint:
        try:
            check_console_settings(
                endpoint=settings.console_ssh_endpoint,
                authorized_keys=settings.console_authorized_keys,
                passwd=settings.console_passwd,
                telnet_endpoint=settings.console_telnet_endpoint,
                allow_remote=settings.console_allow_remote,
            )
        except ConsoleConfigError as e:
            problems.append(at("console", "ssh_endpoint", str(e)))
    return problems


def _check_routes(report: CheckReport, settings: Settings) -> None:
    """
    Load the routes as L{pushpin_tx.ops.routes_watch} does: an invalid line is an error (it
    stops start-up), the other warnings (a duplicate condition) are report warnings.
    """
    if settings.routes_override is not None:
        report.routes_source = filename = "--route"
        routes, warnings = parse_override_routes(settings.routes_override)
        filename = "<route>"
    else:
        path = settings.routesfile
        report.routes_source = path or "(none: [proxy] routesfile is empty)"
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            report.warnings.append(f"unable to open routes file: {path or '(empty path)'}"
                                   f" ({e.strerror or e}); the proxy would start with no routes")
            return
        routes, warnings = parse_routes(data.decode("utf-8", errors="replace"), path)
        filename = path
    report.routes = routes
    invalid = invalid_lines(warnings)
    for problem in invalid:
        report.errors.append(_routes_problem(filename, problem))
    # Pushpin's message for a bad quote or escape is empty: say what it means
    report.warnings.extend(w + _EMPTY_MESSAGE if w.endswith(": ") else w for w in warnings if w not in invalid)
    if not routes:
        report.warnings.append("no routes loaded: no request would reach an origin")


def _routes_problem(filename: str, warning: str) -> ConfigProblem:
    """An invalid routes line (Pushpin's C{FILE:LINE: reason}) as a problem with its file and line."""
    number, _, reason = warning[len(filename) + 1:].partition(": ")
    if not reason:  # Pushpin's message for a bad quote or escape is empty
        reason = _EMPTY_MESSAGE
    return ConfigProblem(filename if filename != "<route>" else "", int(number) if number.isdigit() else None,
                         None, None, reason if filename != "<route>" else f"--route: {reason}")


def format_route(route: Route) -> str:
    """One route as C{LINE  id=ID  CONDITION -> TARGET, ...}, options included."""
    if route.host is None:
        condition = ["*"]
    elif route.host == "":
        condition = ["(by id only)"]
    else:
        condition = [route.host]
    if route.path_beg:
        condition.append(f"path_beg={route.path_beg}")
    if route.proto:
        condition.append(f"proto={route.proto}")
    if route.ssl is not None:
        condition.append(f"ssl={'yes' if route.ssl else 'no'}")
    options = [name for name, on in (
        ("debug", route.debug), ("aco", route.aco), ("session", route.session),
        ("orig_headers", route.orig_headers), ("no_grip", route.no_grip)) if on]
    for name, value in (("as_host", route.as_host), ("prefix", route.prefix or None),
                        ("replace_beg", route.replace_beg), ("sig_iss", route.sig_iss),
                        ("sockjs", route.sockjs)):
        if value is not None:
            options.append(f"{name}={value}")
    if route.path_rem:
        options.append(f"path_rem={route.path_rem}")
    if route.sig_key:
        options.append("sig_key=<set>")  # never print a secret
    options.extend(f"header={name}:{value}" for name, value in route.headers)
    targets = ", ".join(_format_target(target) for target in route.targets)
    text = f"line {route.line}: id={route.id}  {','.join(condition)} -> {targets}"
    return text + (f"  ({' '.join(options)})" if options else "")


def _format_target(target: Target) -> str:
    flags = [name for name, on in (
        ("ssl", target.ssl), ("untrusted", target.untrusted), ("insecure", target.insecure),
        ("trust_connect_host", target.trust_connect_host), ("over_http", target.over_http),
        ("one_event", target.one_event)) if on]
    if target.host_override:
        flags.append(f"host={target.host_override}")
    flags.extend(f"sub={sub}" for sub in target.subs)
    return ",".join([target.label(), *flags])


def format_report(report: CheckReport, out: TextIO, strict: bool = False) -> None:
    """Print the report: problems first, then the routes and the key diagnostics, then the verdict."""
    settings = report.settings
    print(f"config: {report.config_path}", file=out)
    _section(out, "errors (start-up would stop)", [str(p) for p in report.errors])
    _section(out, "warnings", report.warnings)
    if settings is not None:
        _section(out, f"effective routes (from {report.routes_source})",
                 [format_route(route) for route in report.routes])
        _section(out, "keys not applicable to pushpin-tx (they steer Pushpin's own processes)",
                 report.not_applicable)
        _section(out, "keys not implemented yet (ignored)", report.not_implemented)
        _section(out, "unknown keys (ignored: Pushpin 1.36 reads no such key)", report.unknown)
    if report.would_start:
        verdict = "OK: twistd pushpin would start"
        if report.status(strict):
            verdict = "FAILED (--strict): twistd pushpin would start, with the warnings above"
    else:
        count = len(report.errors)
        verdict = f"FAILED: twistd pushpin would not start ({count} error{'s' * (count != 1)})"
    print(verdict, file=out)


def _section(out: TextIO, title: str, lines: Sequence[str]) -> None:
    if not lines:
        return
    print(f"{title}:", file=out)
    for line in lines:
        print(f"  {line}", file=out)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushpin-tx-check",
        description="Check pushpin.conf and the routes without starting anything; "
                    "exit 0 if twistd pushpin would start.")
    parser.add_argument("--config", help="config file (default: the embedded pushpin.conf)")
    parser.add_argument("--route", action="append", metavar="LINE",
                        help="a route line, replacing the routes file (repeatable)")
    parser.add_argument("--port", metavar="[ADDR:]PORT",
                        help="check as if started with --port (one HTTP listener)")
    parser.add_argument("--id", type=int, metavar="N", help="instance id, as twistd pushpin --id")
    parser.add_argument("--strict", action="store_true",
                        help="fail on warnings and on unknown or not-implemented keys too")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def run(config_path: str | None, *, routes: Sequence[str] | None = None,
        port: str | None = None, instance_id: int | None = None, strict: bool = False,
        out: TextIO | None = None) -> int:
    """Check, print the report and return the exit status (for C{twistd pushpin --check} too)."""
    report = check(config_path, routes=routes, port=port, instance_id=instance_id)
    format_report(report, out or sys.stdout, strict)
    return report.status(strict)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 would start, 1 would not)."""
    args = _parser().parse_args(argv)
    return run(args.config, routes=args.route, port=args.port, instance_id=args.id,
               strict=args.strict)


if __name__ == "__main__":
    sys.exit(main())
