"""
Start an example as a user does (C{python3 examples/NAME/run.py}, on free loopback ports)
and read what it prints; plain blocking HTTP clients with deadlines for the tests.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.watched import WatchedProcess

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


class RunningExample(WatchedProcess):
    """An example's C{run.py} in a child process; its output collected line by line."""

    label = "the example's"

    def __init__(self, name: str, *args: str, cwd: Path = ROOT) -> None:
        argv = [sys.executable, str(ROOT / "examples" / name / "run.py"), "--port", "0", "--control-port", "0", *args]
        super().__init__(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                          cwd=str(cwd)), DEADLINE)
        match = self.wait_for(r"ready: open (http://127\.0\.0\.1:(\d+))/ \(control API (\S+)\)", 30)
        self.url = match.group(1)
        self.port = int(match.group(2))
        self.control_uri = match.group(3)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"the example did not stop on Ctrl-C:\n{self.output}")
            # Both stopped: the proxy logged its clean shutdown, then run.py its own last line.
            self.wait_for(r"\[proxy\] .*Server Shut Down\.", 1)
            self.wait_for(r"\] stopped\n", 1)
        return self.process.returncode


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = DEADLINE):
    """One HTTP request; (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def get_json(port: int, path: str, timeout: float = DEADLINE):
    status, _, body = request(port, "GET", path, timeout=timeout)
    assert status == 200, (status, body)
    return json.loads(body)


class Stream:
    """A held HTTP response read as it arrives (a raw socket, so nothing is buffered away)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        self.received = b""

    def read_until(self, needle: bytes, timeout: float = DEADLINE) -> bytes:
        """Read until C{needle} has arrived; what was received so far."""
        deadline = time.monotonic() + timeout
        while needle not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout} s; got ...{self.received[-500:]!r}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise AssertionError(f"closed before {needle!r}; got ...{self.received[-500:]!r}")
            self.received += data
        return self.received

    def body(self) -> bytes:
        """The chunked body received so far, de-chunked (what a client application reads)."""
        head, _, rest = self.received.partition(b"\r\n\r\n")
        out = b""
        while rest:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if size == 0 or len(rest) < size:
                out += rest[:size] if size else b""
                break
            out += rest[:size]
            rest = rest[size + 2 :]
        return out

    def close(self) -> None:
        self.sock.close()


CHROMIUM = "/usr/bin/chromium"


def sync_playwright():
    """playwright's sync API, or a skip saying what is missing (CI installs both)."""
    import os

    import pytest

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (Debian's chromium package)")
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:
        pytest.skip("playwright for Python is not installed (pip install playwright)")
    return start


def launch_chromium(p):
    """Debian's Chromium, headless; no sandbox, as CI runs as root."""
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
