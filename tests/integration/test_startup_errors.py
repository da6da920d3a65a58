"""
Start-up errors of the real C{twistd -n pushpin}, as a user meets them: whichever listener
cannot bind (the client port, with one process or two, the control API, a ZeroMQ input,
metrics, the console), the process writes one error line naming the listener and its
address, no traceback, and exits with status 1.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import utils

from .harness import DEADLINE, child_env, proxy_argv, start_proxy, write_config

#: a key for the console's authorized_keys (never used to log in: the console cannot start)
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB3m5bBJlS2x6mOWyq0vBGs9n2Xr7C8JxV2s9wU0Qn1C test\n"


async def run_to_exit(reactor, tmp_path: Path, conf: Path) -> tuple[int, str]:
    """Run the proxy on C{conf} until it exits; its exit status and whole output."""
    d = utils.getProcessOutputAndValue(sys.executable, proxy_argv("--config", str(conf))[1:], env=child_env(), path=str(tmp_path))
    d.addTimeout(DEADLINE, reactor)
    out, err, code = await d
    return code, (out + err).decode("utf-8", "replace")


def errors(output: str) -> list[str]:
    """The error lines of a log, without their level and time."""
    return [line.split(" ", 3)[3] for line in output.splitlines() if line.startswith("[ERR]")]


def held_port() -> socket.socket:
    """A loopback port some other program listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def config_for(tmp_path: Path, listener: str, port: int, workers: str) -> Path:
    """A config whose C{listener} is on C{port} (every other listener on port 0)."""
    overrides = {
        "client": {"http_port": f"127.0.0.1:{port}"},
        "control API": {"push_in_http_port": str(port)},
        "publish-pull": {"push_in_spec": f"tcp://127.0.0.1:{port}"},
        "prometheus metrics": {"prometheus_port": f"127.0.0.1:{port}"},
        "console (ssh)": {},
    }[listener]
    conf = write_config(tmp_path, ["* test"], workers=workers, **overrides)
    if listener == "console (ssh)":
        (tmp_path / "keys").write_text(PUBLIC_KEY)
        conf.write_text(conf.read_text() + f"\n[console]\nssh_endpoint=tcp:{port}:interface=127.0.0.1\nauthorized_keys=keys\n")
    return conf


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("listener", ["client", "control API", "publish-pull", "prometheus metrics", "console (ssh)"])
@pytest_twisted.ensureDeferred
async def test_a_port_in_use_is_one_error_line_naming_the_listener_and_address(reactor, tmp_path, listener, workers):
    """Each listener's port held by another program: one error line (what, where, why), no traceback, status 1."""
    blocker = held_port()
    try:
        port = blocker.getsockname()[1]
        verb = "bind tcp://" if listener == "publish-pull" else "listen on "
        code, output = await run_to_exit(reactor, tmp_path, config_for(tmp_path, listener, port, workers))
    finally:
        blocker.close()
    assert code == 1, output
    assert errors(output) == [f"start-up failed: {listener}: cannot {verb}127.0.0.1:{port}: address already in use"], output
    assert "Traceback" not in output, output
    assert "worker 1 started" not in output, output


@pytest_twisted.ensureDeferred
async def test_a_second_pushpin_tx_on_the_client_port_of_a_first_with_two_workers_stops_with_one_line(reactor, tmp_path):
    """The issue's case: a second instance (workers=2) on a running one's client port says so in one line and exits 1."""
    (tmp_path / "first").mkdir()
    first = await start_proxy(reactor, tmp_path / "first", ["* test"], workers="2")
    try:
        await first.wait_for_log(r"worker 1 \(pid \d+\) serving")
        second = tmp_path / "second"
        second.mkdir()
        code, output = await run_to_exit(reactor, second, config_for(second, "client", first.client_port, "2"))
    finally:
        assert await first.stop() == 0
    assert code == 1, output
    assert errors(output) == [
        f"start-up failed: client: cannot listen on 127.0.0.1:{first.client_port}: address already in use by another pushpin-tx"
    ], output
    assert "Traceback" not in output, output
    assert "Traceback" not in first.output, first.output
