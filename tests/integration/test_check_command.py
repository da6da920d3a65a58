"""
The config check as an operator runs it: C{python -m pushpin_tx.scripts.check} (what the
C{pushpin-tx-check} console script runs) and C{twistd -n pushpin --check}, as subprocesses,
judged by their exit status and what they print.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path



from .harness import ROOT, child_env, proxy_argv

STOCK = ROOT / "etc" / "pushpin.conf"
BROKEN = """\
[runner]
http_port=127.0.0.1:7999
workers=two
[proxy]
routesfile=routes
accept_pushpin_route=perhaps
[handler]
push_in_http_port=123456
"""
BROKEN_ROUTES = "* test\nexample.com,proto=gopher test\n"


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command with the repository on the path; capture its output (with a deadline)."""
    return subprocess.run(argv, cwd=cwd, env=child_env(), capture_output=True, text=True,
                          timeout=60)


def check_argv(*args: str) -> list[str]:
    """The pushpin-tx-check command line."""
    return [sys.executable, "-m", "pushpin_tx.scripts.check", *args]


def broken_config(tmp_path: Path) -> Path:
    """A config with three bad keys and a routes file with one bad line."""
    (tmp_path / "routes").write_text(BROKEN_ROUTES)
    conf = tmp_path / "pushpin.conf"
    conf.write_text(BROKEN)
    return conf


def expected_messages(conf: Path) -> list[str]:
    """What the check must print for L{broken_config}, each with file, line and key."""
    return [
        f"{conf}:3: [runner] workers: expected a number >= 1 or 'auto', got 'two'",
        f"{conf}:6: [proxy] accept_pushpin_route: invalid boolean 'perhaps'",
        f"{conf}:8: [handler] push_in_http_port: invalid port '123456'",
        f"{conf.parent / 'routes'}:2: proto must be set to 'http' or 'ws'",
    ]


def test_check_command_passes_the_stock_config(tmp_path: Path) -> None:
    """pushpin-tx-check exits 0 for the shipped etc/pushpin.conf and shows its routes."""
    result = run(check_argv("--config", str(STOCK)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"effective routes (from {ROOT / 'etc' / 'routes'}):" in result.stdout
    assert "  line 3: id=*,*,*,*  * -> test" in result.stdout
    assert f"{STOCK}:27: [runner] services" in result.stdout
    assert result.stdout.rstrip().endswith("OK: twistd pushpin would start")


def test_check_command_fails_a_broken_config_with_every_message(tmp_path: Path) -> None:
    """pushpin-tx-check exits 1 and prints every problem with its file, line and key."""
    conf = broken_config(tmp_path)
    result = run(check_argv("--config", str(conf)), tmp_path)
    assert result.returncode == 1
    for message in expected_messages(conf):
        assert message in result.stdout, result.stdout
    # three bad keys and the invalid routes line (it stops start-up too)
    assert "FAILED: twistd pushpin would not start (4 errors)" in result.stdout


def test_check_command_strict_fails_on_warnings(tmp_path: Path) -> None:
    """--strict turns a skipped (duplicate) routes line into a failure; without it the config passes."""
    (tmp_path / "routes").write_text("* test\n* 127.0.0.1:8000\n")
    conf = tmp_path / "pushpin.conf"
    conf.write_text("[runner]\nhttp_port=7999\n[proxy]\nroutesfile=routes\n")
    assert run(check_argv("--config", str(conf)), tmp_path).returncode == 0
    result = run(check_argv("--config", str(conf), "--strict"), tmp_path)
    assert result.returncode == 1
    assert "FAILED (--strict)" in result.stdout


def test_check_command_usage_error_exits_2(tmp_path: Path) -> None:
    """An unknown option is a usage error (exit 2), as for the other pushpin-tx commands."""
    result = run(check_argv("--no-such-option"), tmp_path)
    assert result.returncode == 2
    assert "usage: pushpin-tx-check" in result.stderr


def test_twistd_check_flag_passes_the_stock_config_without_starting(tmp_path: Path) -> None:
    """twistd -n pushpin --check exits 0 for the stock config and binds nothing."""
    result = run(proxy_argv("--check", "--config", str(STOCK)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: twistd pushpin would start" in result.stdout
    assert "listening" not in result.stdout + result.stderr


def test_twistd_check_flag_fails_a_broken_config(tmp_path: Path) -> None:
    """twistd -n pushpin --check exits 1 with every message for a broken config."""
    conf = broken_config(tmp_path)
    result = run(proxy_argv("--check", "--config", str(conf)), tmp_path)
    assert result.returncode == 1
    for message in expected_messages(conf):
        assert message in result.stdout, result.stdout
