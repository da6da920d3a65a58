"""
C{twistd pushpin}'s plugin side (L{pushpin_tx.tap}): C{makeService} builds the service that
owns the process, so a failed start exits with status 1 rather than a traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pushpin_tx.tap import Options, makeService
from tests.integration.harness import write_config
from tests.test_service import RecordingReactor


def _options(tmp_path: Path, **overrides: str) -> Options:
    options = Options()
    options.parseOptions(["--config", str(write_config(tmp_path, ["* test"], workers="1", **overrides))])
    return options


def test_make_service_builds_the_service_that_owns_the_process(tmp_path):
    """The service twistd runs handles the process-wide parts (SIGHUP, exit status)."""
    assert makeService(_options(tmp_path), reactor=RecordingReactor()).owns_process


def test_a_failed_start_under_twistd_exits_with_status_1(tmp_path):
    """A port in use ends start-up with SystemExit(1), after the bound ports were closed again."""
    reactor = RecordingReactor(refuse={7999})
    pushpin = makeService(_options(tmp_path, http_port="127.0.0.1:7999"), reactor=reactor)
    with pytest.raises(SystemExit) as raised:
        pushpin.privilegedStartService()
    assert raised.value.code == 1
    assert [p.stopped for p in reactor.ports] == [1]  # the control API's port
