"""
Start and stop of the real C{twistd -n pushpin}, as an operator sees them: a port in use ends
start-up with one clear error and exit status 1; SIGTERM on an idle proxy logs Pushpin's
"stopping..." / "stopped" and exits cleanly; SIGHUP while running reloads.
"""

from __future__ import annotations

import sys

import pytest_twisted
from twisted.internet import protocol, utils

from .harness import DEADLINE, child_env, proxy_argv, start_proxy, write_config


@pytest_twisted.ensureDeferred
async def test_a_port_in_use_ends_start_up_with_one_error_and_status_1(reactor, tmp_path):
    """The control port in use: the proxy logs why and exits with status 1, no traceback."""
    blocker = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
    try:
        port = blocker.getHost().port
        conf = write_config(tmp_path, ["* test"], push_in_http_port=str(port))
        d = utils.getProcessOutputAndValue(sys.executable, proxy_argv("--config", str(conf))[1:], env=child_env(), path=str(tmp_path))
        d.addTimeout(DEADLINE, reactor)
        out, err, code = await d
    finally:
        await blocker.stopListening()
    output = (out + err).decode("utf-8", "replace")
    assert code == 1, output
    assert [line.split(" ", 3)[3] for line in output.splitlines() if line.startswith("[ERR]")] == [
        f"start-up failed: control API: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "Traceback" not in output, output
    assert "started" not in output.split("starting...")[-1]


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_and_sigterm_stops_cleanly(reactor, tmp_path):
    """SIGHUP logs 'reloading'; SIGTERM logs 'stopping...' then 'stopped' and the process ends cleanly."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    try:
        await proxy.wait_for_log(r"\bstarted\b")
        proxy.transport.signalProcess("HUP")
        await proxy.wait_for_log(r"\breloading\b")
    finally:
        code = await proxy.stop()
    assert code == 0
    tail = proxy.output.split("Received SIGTERM", 1)[1]
    assert tail.index("stopping...") < tail.index("stopped") < tail.index("Server Shut Down.")
