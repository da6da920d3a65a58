"""
A routes file with an invalid line, as the real C{twistd -n pushpin} treats it: at start-up
the process stops with the file, line and reason (where Pushpin 1.36 warns, loads what is
left, possibly nothing, and answers every request 502); on a reload the routes in force stay
and the error is logged.
"""

from __future__ import annotations

import sys

import pytest_twisted
from twisted.internet import utils

from .harness import DEADLINE, child_env, proxy_argv, raw_request, start_proxy, write_config


@pytest_twisted.ensureDeferred
async def test_a_routes_file_with_an_invalid_line_stops_start_up(reactor, tmp_path):
    """'* localhost:zz': one error line with the file, line and Pushpin's reason, status 1, nothing listening."""
    conf = write_config(tmp_path, ["* test", "* localhost:zz"], workers="2")
    d = utils.getProcessOutputAndValue(sys.executable, proxy_argv("--config", str(conf))[1:], env=child_env(), path=str(tmp_path))
    d.addTimeout(DEADLINE, reactor)
    out, err, code = await d
    output = (out + err).decode("utf-8", "replace")
    assert code == 1, output
    errors = [line.split(" ", 3)[3] for line in output.splitlines() if line.startswith("[ERR]")]
    assert errors == [f"start-up failed: {tmp_path / 'routes'}:2: target invalid port"], output
    assert "Traceback" not in output and "listening on" not in output and "routes loaded" not in output, output


@pytest_twisted.ensureDeferred
async def test_an_invalid_line_on_reload_keeps_the_routes_in_force(reactor, tmp_path):
    """SIGHUP after a bad edit: the error is logged with file and line, and requests still reach the old route."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    try:
        await proxy.wait_for_log(r"\bstarted\b")
        (tmp_path / "routes").write_text("* localhost:zz\n")
        proxy.transport.signalProcess("HUP")
        await proxy.wait_for_log(r"routes not reloaded: the 1 entries loaded before stay in force")
        client = await raw_request(reactor, proxy.client_port, b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    finally:
        assert await proxy.stop() == 0
    assert client.received.startswith(b"HTTP/1.1 200 "), client.received
    assert "[ERR] " in proxy.output and f"{tmp_path / 'routes'}:1: target invalid port" in proxy.output
    assert "routes loaded with 0 entries" not in proxy.output
