"""
Type checking, run inside pytest so that the README's test command (and so CI) runs it: mypy
with the C{[tool.mypy]} settings of C{pyproject.toml}, over the whole package, and strictly
over the pure protocol layer. A failure prints mypy's report.

The mypy cache lives in the system temp directory, not in the repository.
"""

from __future__ import annotations

import pathlib
import tempfile

import pytest
from mypy import api

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
PACKAGE = ROOT / "pushpin_tx"
CACHE = pathlib.Path(tempfile.gettempdir()) / "pushpin-tx-mypy-cache"
_PROBE = "\n\ndef _typing_probe(x):\n    return x\n"


def _mypy(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run mypy from the repository root with the project's configuration: (exit status, report)."""
    monkeypatch.chdir(ROOT)
    stdout, stderr, status = api.run(["--config-file", str(CONFIG), "--cache-dir", str(CACHE), *args])
    return status, stdout + stderr


def test_protocol_layer_passes_strict_mypy(monkeypatch: pytest.MonkeyPatch) -> None:
    """pushpin_tx.protocol type-checks with mypy's strict flags and no errors."""
    status, report = _mypy(monkeypatch, str(PACKAGE / "protocol"))
    assert status == 0, f"mypy (strict) found errors in pushpin_tx.protocol:\n{report}"


def test_whole_package_passes_mypy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole of pushpin_tx type-checks with the project's mypy settings and no errors."""
    status, report = _mypy(monkeypatch, str(PACKAGE))
    assert status == 0, f"mypy found errors in pushpin_tx:\n{report}"


def test_strict_flags_apply_to_protocol_and_only_there(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """An unannotated function is an error in a protocol module and allowed outside the protocol layer."""
    inside = PACKAGE / "protocol" / "testorigin.py"
    outside = PACKAGE / "__init__.py"
    for source in (inside, outside):
        (tmp_path / source.name).write_text(source.read_text(encoding="utf-8") + _PROBE, encoding="utf-8")
    status, report = _mypy(monkeypatch, "--shadow-file", str(inside), str(tmp_path / inside.name), str(inside))
    assert status == 1 and "[no-untyped-def]" in report, report
    status, report = _mypy(monkeypatch, "--shadow-file", str(outside), str(tmp_path / outside.name), str(outside))
    assert status == 0, report
