"""
Start and stop the proxies under test on free loopback ports with equivalent generated
configs: pushpin-tx (C{twistd -n pushpin --config FILE}) and, when installed, the real
Pushpin 1.36 (its runner with condure, zurl, pushpin-proxy and pushpin-handler). The
proxy runs pinned to L{common.PROXY_CPUS} (or unpinned, on every core, when asked); its RSS
and CPU are summed over its process tree, which includes pushpin-tx's worker processes
(C{[runner] workers}, children of the main process) and Pushpin's services.

Readiness never depends on the log level: every address is a fixed free loopback port
written into the generated config, and a proxy is ready when its client, control and PULL
ports accept, every expected process listens on the client port, and a C{Pushpin-Check: 1}
request (answered by the proxy itself) gets a 200. Kept apart from L{common} so that each
stays small.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from common import (PROXY_CPUS, ROOT, listening_pids, preexec, spawn_python, stop_process, tree_cpu, tree_pids,
                    tree_rss)

__all__ = ["PUSHPIN_BIN", "Proxy", "pushpin_installed", "start_pushpin_tx", "start_pushpin", "start_proxy",
           "free_port", "wait_port", "wait_http_ok"]

PUSHPIN_BIN = "/usr/bin/pushpin"
START_DEADLINE = 30.0
#: how long to wait for every pushpin-tx worker to listen on the client port (a build that
#: ignores C{[runner] workers} never gets there: the run goes on with a note)
WORKERS_DEADLINE = 15.0


def free_port() -> int:
    """A free loopback TCP port (bound and released; fine for a benchmark on a quiet machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline: float) -> bool:
    """Whether something accepts connections on 127.0.0.1:C{port} before C{deadline} (monotonic)."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class Proxy:
    """A running proxy under test: pushpin-tx or Pushpin, on loopback ports."""

    kind: str  # "pushpin-tx" or "pushpin"
    proc: subprocess.Popen
    workdir: Path
    client_port: int
    control_port: int
    push_in_spec: str | None  # the PULL input, or None when the proxy has none
    log_path: Path
    workers: int = 1  # pushpin-tx's [runner] workers (1 for Pushpin: not applicable)
    listening: int = 1  # processes found listening on the client port when it was ready
    _pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The processes whose RSS and CPU count (refreshed: children may come and go)."""
        self._pids = tree_pids(self.proc.pid)
        return self._pids

    def rss(self) -> int:
        """RSS in bytes of the whole process tree."""
        return tree_rss(self.pid, self.pids())

    def cpu(self) -> float:
        """CPU seconds of the whole process tree."""
        return tree_cpu(self.pid, self.pids())

    def main_pid(self) -> int:
        """The Python process of pushpin-tx (the one to profile); the runner for Pushpin."""
        return self.pid

    def alive(self) -> bool:
        """Whether the proxy (the runner, for Pushpin) is still running."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last C{lines} of each of its log files."""
        texts = []
        for path in [self.log_path, *sorted(self.workdir.glob("log/*.log"))]:
            try:
                body = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            texts.append(f"--- {path}\n" + "\n".join(body))
        return "\n".join(texts)

    def stop(self) -> None:
        """
        Stop it (SIGTERM, then SIGKILL to its process group) and remove its directory
        (kept, with its logs, when the environment has BENCH_KEEP=1).
        """
        stop_process(self.proc)
        if os.environ.get("BENCH_KEEP") == "1":
            print(f"note: {self.kind} config and logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def pushpin_installed() -> bool:
    """Whether the real Pushpin is installed here."""
    return os.path.exists(PUSHPIN_BIN)


def _set_keys(text: str, values: dict[str, str], sections: dict[str, str]) -> str:
    """Set C{key=value} lines in an ini text (uncommenting a stock line, else adding to a section)."""
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^#?{re.escape(key)}=.*$", lambda _m: f"{key}={value}", text)
        if n == 0:
            section = sections.get(key, "[handler]")
            text = text.replace(section, f"{section}\n{key}={value}", 1)
    return text


def _wait_ports(proc: subprocess.Popen, ports: Sequence[int], deadline: float, what: str) -> None:
    """Wait until every port in C{ports} accepts; raise if C{proc} exits or the deadline passes."""
    for port in ports:
        while not wait_port(port, min(deadline, time.monotonic() + 0.5)):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} before listening on port {port}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{what} did not listen on port {port} within {START_DEADLINE:.0f}s")


def _wait_listeners(proc: subprocess.Popen, port: int, want: int, deadline: float) -> int:
    """
    How many processes of C{proc}'s tree hold a listening socket on C{port}, waiting (until
    C{deadline}) for C{want} of them: with C{workers=N} the connections spread over the
    processes listening when they arrive, so the load must not start before all N are.
    """
    found = 0
    while True:
        found = len(listening_pids(tree_pids(proc.pid), port))
        if found >= want or time.monotonic() >= deadline or proc.poll() is not None:
            return found
        time.sleep(0.1)


def start_pushpin_tx(routes: Sequence[str], *, log_level: int = 2, nofile: int = 1 << 20,
                     overrides: dict[str, str] | None = None, workers: int = 1,
                     cpus: set[int] | None = None) -> Proxy:
    """
    C{twistd -n pushpin --config FILE} on free loopback ports, pinned to C{cpus} (default the
    proxy core). C{workers} is written as C{[runner] workers} (1: one process, as Pushpin's
    comparison needs). C{overrides} sets further config keys (a stock line is uncommented,
    else added to [handler]).
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-tx-"))
    client, control, pull = (free_port() for _ in range(3))
    text = (ROOT / "etc" / "pushpin.conf").read_text()
    text = _set_keys(text, {
        "http_port": f"127.0.0.1:{client}",
        "workers": str(workers),
        "push_in_http_addr": "127.0.0.1",
        "push_in_http_port": str(control),
        "rundir": str(workdir / "run"),
        "push_in_spec": f"tcp://127.0.0.1:{pull}",
        "push_in_sub_specs": "tcp://127.0.0.1:0",
        "command_spec": "tcp://127.0.0.1:0",
        "log_level": str(log_level),
        **(overrides or {}),
    }, {"workers": "[runner]"})
    conf = workdir / "pushpin.conf"
    conf.write_text(text)
    (workdir / "routes").write_text("\n".join(routes) + "\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log_path = workdir / "pushpin-tx.log"
    with open(log_path, "wb") as log:
        proc = spawn_python(["-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "pushpin",
                             "--config", str(conf)], cpus=PROXY_CPUS if cpus is None else cpus, nofile=nofile,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    deadline = time.monotonic() + START_DEADLINE
    try:
        _wait_ports(proc, [client, control, pull], deadline, "pushpin-tx")
        _wait_ready(client, deadline)
        listening = _wait_listeners(proc, client, workers, time.monotonic() + WORKERS_DEADLINE)
        if proc.poll() is not None:
            raise RuntimeError(f"pushpin-tx exited with {proc.returncode}")
    except Exception as e:
        stop_process(proc)
        text = log_path.read_text(errors="replace")
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"pushpin-tx did not start ({e}):\n{text[-3000:]}") from e
    if listening < workers:
        print(f"note: pushpin-tx: {listening} process(es) listen on the client port, {workers} workers asked "
              f"(a build without [runner] workers ignores the key)", file=sys.stderr)
    return Proxy("pushpin-tx", proc, workdir, client, control, f"tcp://127.0.0.1:{pull}", log_path,
                 workers=workers, listening=listening)


def start_pushpin(routes: Sequence[str], *, log_level: int = 2, nofile: int = 1 << 20,
                  overrides: dict[str, str] | None = None, cpus: set[int] | None = None) -> Proxy:
    """
    The real Pushpin (runner, condure, zurl, pushpin-proxy, pushpin-handler) privately on
    free loopback ports, pinned (all of it) to C{cpus} (default the proxy core).

    Debian quirk: the packaged internal.conf points the proxy's zurl sockets at
    /var/run/zurl, while the zurl the runner starts binds under rundir; the three zurl keys
    are set in [proxy] so proxied requests reach zurl.
    """
    workdir = Path(tempfile.mkdtemp(prefix="bench-pp-"))
    (workdir / "run").mkdir()
    (workdir / "log").mkdir()
    client, control, pull, sub, command = (free_port() for _ in range(5))
    prefix = f"bench{os.getpid()}-"
    text = Path("/etc/pushpin/pushpin.conf").read_text()
    text = _set_keys(text, {
        "rundir": str(workdir / "run"),
        "logdir": str(workdir / "log"),
        "ipc_prefix": prefix,
        "port_offset": "0",
        "services": "condure,zurl,pushpin-proxy,pushpin-handler",
        "http_port": f"127.0.0.1:{client}",
        "log_level": str(log_level),
        "push_in_spec": f"tcp://127.0.0.1:{pull}",
        "push_in_sub_specs": f"tcp://127.0.0.1:{sub}",
        "push_in_http_addr": "127.0.0.1",
        "push_in_http_port": str(control),
        "command_spec": f"tcp://127.0.0.1:{command}",
        "zurl_out_specs": "ipc://{rundir}/{ipc_prefix}zurl-in",
        "zurl_out_stream_specs": "ipc://{rundir}/{ipc_prefix}zurl-in-stream",
        "zurl_in_specs": "ipc://{rundir}/{ipc_prefix}zurl-out",
        **(overrides or {}),
    }, {"zurl_out_specs": "[proxy]", "zurl_out_stream_specs": "[proxy]", "zurl_in_specs": "[proxy]"})
    conf = workdir / "pushpin.conf"
    conf.write_text(text)
    (workdir / "routes").write_text("\n".join(routes) + "\n")
    log_path = workdir / "runner.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([PUSHPIN_BIN, "--config", str(conf)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(workdir), start_new_session=True,
                                preexec_fn=preexec(PROXY_CPUS if cpus is None else cpus, nofile))
    deadline = time.monotonic() + START_DEADLINE
    try:
        _wait_ports(proc, [client, control, pull], deadline, "Pushpin")
        # the handler's HTTP server answers before the proxy's internal sockets connect up
        _wait_ready(client, deadline)
    except Exception:
        stop_process(proc)
        text = log_path.read_text(errors="replace")
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError("Pushpin did not start:\n" + text[-3000:])
    return Proxy("pushpin", proc, workdir, client, control, f"tcp://127.0.0.1:{pull}", log_path)


def wait_http_ok(port: int, path: str, deadline: float) -> bytes:
    """
    C{GET path} on a fresh connection until the answer is a 200 (Pushpin answers 500 or 502
    for a moment after start-up, until its processes are connected up); the last answer.
    """
    data = b""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % path.encode())
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            pass
        if data.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def _wait_ready(port: int, deadline: float) -> None:
    """Wait until C{Pushpin-Check: 1} (answered by the proxy itself, both Pushpin and pushpin-tx) gets a 200."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nPushpin-Check: 1\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
                if data.startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no 200 to Pushpin-Check on port {port} in time")


def start_proxy(kind: str, routes: Sequence[str], *, log_level: int = 2, nofile: int = 1 << 20,
                overrides: dict[str, str] | None = None, workers: int = 1, cpus: set[int] | None = None) -> Proxy:
    """
    Start C{kind} ("pushpin-tx" or "pushpin") with the same config C{overrides}, pinned to
    C{cpus} (default the proxy core). C{workers} applies to pushpin-tx only.
    """
    if kind == "pushpin-tx":
        return start_pushpin_tx(routes, log_level=log_level, nofile=nofile, overrides=overrides, workers=workers,
                                cpus=cpus)
    if kind == "pushpin":
        return start_pushpin(routes, log_level=log_level, nofile=nofile, overrides=overrides, cpus=cpus)
    raise ValueError(kind)
