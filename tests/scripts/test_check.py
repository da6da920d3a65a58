"""
pushpin-tx-check: tables of broken configs and routes files, each problem reported with its
file, line and key; the effective routes; the key diagnostics; the exit status.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from pushpin_tx.protocol.config import LIBDIR
from pushpin_tx.scripts.check import check, format_report, main, run

ROOT = Path(__file__).resolve().parents[2]
GOOD = "[runner]\nhttp_port=7999\n[proxy]\nroutesfile=routes\n"


def write_config(tmp_path: Path, text: str, routes: str | None = "* test\n") -> str:
    """Write pushpin.conf (and a routes file beside it) into tmp_path; return the config path."""
    if routes is not None:
        (tmp_path / "routes").write_text(routes)
    path = tmp_path / "pushpin.conf"
    path.write_text(text)
    return str(path)


def report_text(config: str | None, **kwargs: object) -> tuple[int, str]:
    """Run the check as the command does; return (status, printed report)."""
    out = io.StringIO()
    status = run(config, out=out, **kwargs)  # type: ignore[arg-type]
    return status, out.getvalue()


# (config text, line, "[section] key" or None, part of the message)
BROKEN_CONFIGS = [
    ("[runner]\nhttp_port=99999\n", 2, "[runner] http_port", "invalid port '99999'"),
    ("[runner]\nhttp_port=localhost:80\n", 2, "[runner] http_port",
     "the host must be an IP address"),
    (GOOD + "debug=yes\n", 5, "[proxy] debug", "invalid boolean 'yes'"),
    (GOOD + "x_forwarded_for=truncate:x\n", 5, "[proxy] x_forwarded_for", "truncate count"),
    (GOOD + "sig_key=file:missing.pem\n", 5, "[proxy] sig_key", "cannot read key file"),
    (GOOD + "sig_iss=a,b\n", 5, "[proxy] sig_iss", "expected one value"),
    (GOOD + "[handler]\nmessage_rate=fast\n", 6, "[handler] message_rate",
     "invalid integer 'fast'"),
    (GOOD + "[handler]\npush_in_http_port=70000\n", 6, "[handler] push_in_http_port",
     "invalid port '70000'"),
    (GOOD + "[handler]\nstats_format=xml\n", 6, "[handler] stats_format", "invalid stats format"),
    (GOOD + "[handler]\ndelivery_overflow=explode\n", 6, "[handler] delivery_overflow",
     "expected drop or disconnect"),
    (GOOD + "[handler]\ndelivery_queue_max=0\n", 6, "[handler] delivery_queue_max", "must be >= 1"),
    ("[global]\nport_offset=-1\n" + GOOD, 2, "[global] port_offset", "must be >= 0"),
    ("[runner]\nhttp_port=7999\nworkers=many\n", 3, "[runner] workers",
     "expected a number >= 1 or 'auto'"),
    ("[runner]\nhttp_port=7999\nlog_level=loud\n", 3, "[runner] log_level", "invalid log level"),
    ("[global]\ninclude=nowhere.conf\n" + GOOD, 2, "[global] include", "cannot read"),
    ("[runner]\nhttp_port=7999\nthis is not a key\n", 3, None, "expected key=value"),
    ("[runner]\nhttp_port=7999\n[proxy\n", 3, None, "malformed section header"),
    ("[runner]\nhttp_port=\n", 2, "[runner] http_port", "no server ports configured"),
    (GOOD + "[handler]\nprometheus_port=nonsense\n", 6, "[handler] prometheus_port",
     "expected addr:port, port or ipc://path"),
]


@pytest.mark.parametrize("text, line, key, message", BROKEN_CONFIGS)
def test_broken_config_is_reported_with_file_line_and_key(
        tmp_path: Path, text: str, line: int | None, key: str | None, message: str) -> None:
    """Each broken config fails the check, and the problem names the file, line and key."""
    path = write_config(tmp_path, text)
    status, out = report_text(path)
    assert status == 1
    where = f"{path}:{line}:" if line else f"{path}:"
    expected = f"{where} {key}: " if key else f"{where} "
    assert any(entry.strip().startswith(expected) and message in entry
               for entry in out.splitlines()), out
    assert "FAILED: twistd pushpin would not start (1 error)" in out


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path) -> None:
    """A config with several bad keys and a bad line gets one message for each, in line order."""
    path = write_config(tmp_path, (
        "[runner]\n"              # 1
        "http_port=7999\n"        # 2
        "client_buffer_size=big\n"  # 3
        "garbage\n"               # 4
        "[proxy]\n"               # 5
        "routesfile=routes\n"     # 6
        "log_from=maybe\n"        # 7
        "[handler]\n"             # 8
        "message_wait=-\n"        # 9
    ))
    report = check(path)
    assert [(p.line, p.key) for p in report.errors] == [
        (3, "client_buffer_size"), (4, None), (7, "log_from"), (9, "message_wait")]
    assert not report.would_start
    status, out = report_text(path)
    assert status == 1 and "(4 errors)" in out


def test_problem_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    """A bad key that comes from the include is located in the included file, at its line."""
    (tmp_path / "base.conf").write_text("[handler]\nmessage_hwm=lots\n")
    path = write_config(tmp_path, "[global]\ninclude=base.conf\n" + GOOD)
    report = check(path)
    [problem] = report.errors
    assert str(problem) == (f"{tmp_path / 'base.conf'}:2: [handler] message_hwm: "
                            "invalid integer 'lots'")


def test_command_line_problems_are_reported(tmp_path: Path) -> None:
    """A bad --port or --id is reported as a command-line problem."""
    path = write_config(tmp_path, GOOD)
    report = check(path, port="host:port", instance_id=-1)
    assert [str(p) for p in report.errors] == [
        "command line: --id: must be >= 0, got -1",
        "command line: --port: invalid listen address 'host:port' (the host must be an IP "
        "address)"]


def test_unreadable_config_fails_with_its_path(tmp_path: Path) -> None:
    """A config file that cannot be read is one error naming it, and nothing else is checked."""
    missing = str(tmp_path / "absent.conf")
    status, out = report_text(missing)
    assert status == 1
    assert f"{missing}: cannot read config file: No such file or directory" in out
    assert "effective routes" not in out


# (routes text, the error the check must print: an invalid line stops start-up)
INVALID_ROUTES = [
    ("* test\nlonely\n", "routes:2: must specify condition and at least one target"),
    ("* test\n*,proto=ftp test\n", "routes:2: proto must be set to 'http' or 'ws'"),
    ("* test\n*,ssl=maybe test\n", "routes:2: ssl must be set to 'yes' or 'no'"),
    ("* test\nexample.com localhost\n", "routes:2: target bad format"),
    ("* test\nexample.com localhost:0\n", "routes:2: target invalid port"),
    ("* localhost:zz\n", "routes:1: target invalid port"),
    ("* test\n*,path_beg= test\n", "routes:2: path_beg cannot be empty"),
    ('* test\n* "unterminated\n', "routes:2: (a quote is not closed or an escape is not"),
]

# (routes text, the warning the check must print: start-up survives it)
ROUTES_WARNINGS = [
    ("* test\n* 127.0.0.1:8000\n", "routes:2 skipping duplicate condition"),
    ("# nothing\n", "no routes loaded"),
]


@pytest.mark.parametrize("routes, error", INVALID_ROUTES)
def test_an_invalid_routes_line_is_an_error_with_file_and_line(tmp_path: Path, routes: str, error: str) -> None:
    """An invalid routes line is printed with Pushpin's text, file and line, as an error: start-up would stop."""
    path = write_config(tmp_path, GOOD, routes)
    status, out = report_text(path)
    assert status == 1
    expected = error.replace("routes:", f"{tmp_path / 'routes'}:", 1)
    errors = out.split("errors (start-up would stop):", 1)[1].split("effective routes", 1)[0]
    assert any(line.strip().startswith(expected) for line in errors.splitlines()), out
    assert "FAILED: twistd pushpin would not start (1 error)" in out


@pytest.mark.parametrize("routes, warning", ROUTES_WARNINGS)
def test_routes_warnings_have_file_and_line_and_start_up_survives_them(
        tmp_path: Path, routes: str, warning: str) -> None:
    """A duplicate condition (skipped, as Pushpin does) or an empty table is a warning; it would start."""
    path = write_config(tmp_path, GOOD, routes)
    status, out = report_text(path)
    assert status == 0
    routes_path = str(tmp_path / "routes")
    expected = warning.replace("routes:", f"{routes_path}:", 1) if warning.startswith(
        "routes") else warning
    assert any(line.strip().startswith(expected) for line in out.splitlines()), out
    assert "OK: twistd pushpin would start" in out
    assert report_text(path, strict=True)[0] == 1


def test_missing_routes_file_is_a_warning(tmp_path: Path) -> None:
    """A routes file that cannot be opened is Pushpin's warning; the proxy starts with no routes."""
    path = write_config(tmp_path, GOOD, routes=None)
    status, out = report_text(path)
    assert status == 0
    assert f"unable to open routes file: {tmp_path / 'routes'}" in out


def test_effective_routes_are_listed_with_line_id_condition_and_targets(tmp_path: Path) -> None:
    """The routes that load are printed in file order with their options; secrets are hidden."""
    routes = ("# comment\n"
              "api.example.com,path_beg=/v1,proto=http,id=api,sig_key=s3cret "
              "10.0.0.1:8000,over_http 10.0.0.2:8000,ssl,host=origin.example\n"
              "* test\n")
    status, out = report_text(write_config(tmp_path, GOOD, routes))
    assert status == 0
    assert ("line 2: id=api  api.example.com,path_beg=/v1,proto=http -> 10.0.0.1:8000,over_http, "
            "10.0.0.2:8000,ssl,host=origin.example  (sig_key=<set>)") in out
    assert "line 3: id=*,*,*,*  * -> test" in out
    assert "s3cret" not in out


def test_route_lines_replace_the_routes_file(tmp_path: Path) -> None:
    """With --route lines the file is not read, and an invalid one is an error of the command line."""
    path = write_config(tmp_path, GOOD, routes=None)
    report = check(path, routes=["* 127.0.0.1:9000", "broken"])
    assert report.routes_source == "--route"
    assert [r.targets[0].label() for r in report.routes] == ["127.0.0.1:9000"]
    assert [str(p) for p in report.errors] == ["command line: --route: must specify condition and at least one target"]
    assert report.warnings == [] and not report.would_start


def test_key_diagnostics_are_listed_with_their_lines(tmp_path: Path) -> None:
    """Not-applicable, not-implemented and unknown keys are listed with file and line."""
    path = write_config(tmp_path, (
        "[runner]\nhttp_port=7999\nservices=condure\n"
        "[proxy]\nmax_open_requests=10\nroutesfile=routes\nauto_cross_orign=true\n"))
    report = check(path)
    assert report.would_start
    assert report.not_applicable == [f"{path}:3: [runner] services"]
    assert report.not_implemented == [f"{path}:5: [proxy] max_open_requests"]
    assert report.unknown == [f"{path}:7: [proxy] auto_cross_orign"]
    out = io.StringIO()
    format_report(report, out, strict=True)
    assert "FAILED (--strict)" in out.getvalue()
    assert report.status() == 0 and report.status(strict=True) == 1


def test_stock_configs_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped etc/pushpin.conf and the embedded default both pass, strictly."""
    assert main(["--config", str(ROOT / "etc" / "pushpin.conf"), "--strict"]) == 0
    assert "OK: twistd pushpin would start" in capsys.readouterr().out
    assert main(["--strict"]) == 0
    out = capsys.readouterr().out
    assert f"(from {os.path.join(LIBDIR, 'routes')})" in out


def test_console_settings_are_checked(tmp_path: Path) -> None:
    """A console on a non-loopback endpoint without allow_remote is refused, as twistd would."""
    path = write_config(tmp_path, GOOD + "[console]\nssh_endpoint=tcp:2222\n")
    report = check(path)
    assert not report.would_start
    [problem] = report.errors
    assert (problem.file, problem.line, problem.key) == (path, 6, "ssh_endpoint")
