"""
Registers the C{stress} marker (the slow tests of this directory; they run by default, and
C{-m "not stress"} leaves them out) and raises the open-file limit that waves of hundreds
of clients need.
"""

from __future__ import annotations

import resource

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker, so C{--strict-markers} accepts it and C{--markers} lists it."""
    config.addinivalue_line(
        "markers",
        "stress: slow stress test against the real twistd -n pushpin (runs by default; "
        'deselect with -m "not stress"; PUSHPIN_TX_STRESS_SCALE=N makes it N times bigger)',
    )


@pytest.fixture(scope="session", autouse=True)
def enough_file_descriptors() -> None:
    """Waves of clients (and the proxy, which inherits the limit) need a few thousand descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
