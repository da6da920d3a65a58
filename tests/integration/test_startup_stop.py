"""
SIGTERM at any moment of start-up, as an operator (or systemd) sends it: the real
C{twistd -n pushpin} with two processes stops without a traceback in its log, whether the
signal comes before the reactor runs, while the worker starts, or once all serve; the
worker process ends with it.
"""

from __future__ import annotations

import os
import re
import signal
import sys

import pytest
import pytest_twisted
from twisted.internet.error import ProcessExitedAlready

from .harness import DEADLINE, RunningProxy, Waiter, _ProxyProcess, child_env, poll_until, proxy_argv, write_config

#: the moments of start-up at which the signal is sent: just after each of these log lines
#: (the first two come before the reactor runs)
MOMENTS = [
    r"reactor class",
    r"starting\.\.\.",
    r"client listening on",
    r"worker 1 started \(pid \d+\)",
    r"\[worker 1\] starting\.\.\.",
    r"\[worker 1\] started",
    r"worker 1 \(pid \d+\) serving",
]

#: who gets SIGTERM: the main process (kill PID); every process of the unit (systemd's
#: default KillMode=control-group, or a terminal's process group); the main process twice
WHO = ["main", "main and worker", "main twice"]


def _gone(pid: int) -> bool:
    """Whether process C{pid} has ended (and been reaped, or is a zombie nobody waits on)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("moment", MOMENTS)
@pytest_twisted.ensureDeferred
async def test_sigterm_during_start_up_logs_no_traceback(reactor, tmp_path, moment, who):
    """SIGTERM at each moment of a two-process start-up: no traceback in the log, the process and its worker end."""
    conf = write_config(tmp_path, ["* test"], workers="2")
    waiter = Waiter()
    proc = _ProxyProcess(waiter)
    transport = reactor.spawnProcess(proc, sys.executable, proxy_argv("--config", str(conf)), env=child_env(), path=str(tmp_path))
    proxy = RunningProxy(reactor, proc, transport, waiter, tmp_path)
    await proxy.wait_for_log(moment)
    started = re.search(r"worker 1 started \(pid (\d+)\)", proxy.output)
    if who == "main and worker" and started is not None:
        os.kill(int(started.group(1)), signal.SIGTERM)
    if who == "main twice":  # the second once the first is being handled (or the process is gone)
        transport.signalProcess("TERM")
        ended = lambda: proc.exit_code is not None or proc.exit_signal is not None  # noqa: E731
        await waiter.wait(reactor, lambda: "Received SIGTERM" in proc.output or ended(), DEADLINE, "the first SIGTERM handled")
        if not ended():  # (before the reactor runs, the default action ends the process)
            try:
                transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
    await proxy.stop()
    output = proxy.output
    assert "Traceback" not in output, output
    assert "Unhandled" not in output, output
    started = re.search(r"worker 1 started \(pid (\d+)\)", output)
    if started is not None:
        pid = int(started.group(1))
        await poll_until(reactor, lambda: _gone(pid), DEADLINE, f"worker pid {pid} to end")
    if "Received SIGTERM" in output:  # the reactor was running: the stop was the clean one
        assert "stopped" in output.split("Received SIGTERM", 1)[1], output
