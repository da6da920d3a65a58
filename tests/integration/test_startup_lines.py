"""
What the real C{twistd -n pushpin} says while it starts and stops, as a new user reads it:
every line true for the configuration that runs (two worker processes here, as the default
config gives on a 2-core machine), each listener named once by its role and address, and
none of Twisted's own port lines repeating them in another vocabulary.
"""

from __future__ import annotations

import re

import pytest_twisted

from .harness import start_proxy


def messages(output: str) -> list[str]:
    """The log's messages, without their level and time (continuation lines dropped)."""
    return [line.split(" ", 3)[3] for line in output.splitlines() if re.match(r"\[(INFO|WARN|ERR|DEBUG)\] ", line)]


@pytest_twisted.ensureDeferred
async def test_a_two_process_start_and_stop_say_only_what_is_true_once(reactor, tmp_path):
    """Two workers: no 'one process' claim, each listener once as 'role listening on address', no Twisted port lines."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], workers="2", prometheus_port="127.0.0.1:0")
    try:
        await proxy.wait_for_log(r"worker 1 \(pid \d+\) serving")
    finally:
        assert await proxy.stop() == 0
    said = messages(proxy.output)
    assert "workers: 2 processes serving clients" in said
    assert not [m for m in said if "one process" in m], said
    assert "config keys for Pushpin's own processes, not used by pushpin-tx: [runner] services, [proxy] updates_check," \
           " [proxy] organization_name" in said
    # Twisted's "ClientSite starting on N" / "(TCP Port N Closed)": our listening lines say it
    assert not [m for m in said if re.search(r"starting on \d+|Port \d+ Closed", m)], said
    assert not [m for m in said if m.startswith(("Starting factory", "Stopping factory"))], said
    listening = [re.sub(r":\d+$", ":N", m) for m in said if " listening on " in m]
    assert listening == [
        "control API listening on 127.0.0.1:N",
        "client listening on 127.0.0.1:N",
        "prometheus metrics listening on 127.0.0.1:N",
        "[worker 1] client listening on 127.0.0.1:N",
    ], said
    assert f"client listening on 127.0.0.1:{proxy.client_port}" in said
