"""
What every example's C{run.py} shares: start a small origin (the standard library's
C{http.server}, one thread per request), start C{twistd -n pushpin} in front of it with a
route to that origin, print the URL to open, and stop both on Ctrl-C.

With the default ports (proxy 7999, control API 5561) the proxy runs on its embedded
config, only the route given on the command line (C{--route}). Any other port (C{0} means
"any free port", as the tests use) is written into a copy of the embedded config in a
temporary directory, with the ZeroMQ inputs on free ports too.
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

DEFAULT_PORT = 7999
DEFAULT_CONTROL_PORT = 5561

# A function-style handler: a request as a dict (method, path, query, headers, body) in,
# (status, headers, body) out.
Handler = Callable[[dict], "tuple[int, dict[str, str], bytes]"]


def options(description: str) -> argparse.ArgumentParser:
    """The options every example takes; an example may add its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the proxy's client port (default 7999; 0: any free port)")
    parser.add_argument("--control-port", type=int, default=DEFAULT_CONTROL_PORT, help="the proxy's control API port (default 5561; 0: any free port)")
    parser.add_argument("--origin-port", type=int, default=0, help="the origin's port (default: any free port)")
    return parser


class _OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    handler: Handler

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        request = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.rfile.read(length) if length else b"",
        }
        try:
            status, headers, body = type(self).handler(request)
        except Exception as e:  # an example's bug, or a publish the proxy refused: say so
            print(f"[origin] {self.command} {self.path} failed: {e!r}", flush=True)
            status, headers, body = 500, {"Content-Type": "text/plain"}, f"origin error: {e}\n".encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:
        print(f"[origin] {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)


def _proxy_config(tmp: Path, port: int, control_port: int) -> Path:
    """The embedded pushpin.conf with these ports, ZeroMQ inputs on free ports, rundir in C{tmp}."""
    import pushpin_tx

    text = (Path(pushpin_tx.__file__).parent / "data" / "pushpin.conf").read_text()
    values = {
        "http_port": f"127.0.0.1:{port}",
        "push_in_http_port": str(control_port),
        "push_in_spec": "tcp://127.0.0.1:0",
        "push_in_sub_specs": "tcp://127.0.0.1:0",
        "command_spec": "tcp://127.0.0.1:0",
        "rundir": str(tmp / "run"),
        "workers": "1",
    }
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^#?{key}=.*$", f"{key}={value}", text)
        if n == 0:
            text = text.replace("[runner]", f"[runner]\n{key}={value}", 1)
    conf = tmp / "pushpin.conf"
    conf.write_text(text)
    (tmp / "routes").write_text("")
    return conf


class Example:
    """A running example: the origin's server, the proxy process, and the ports they bound."""

    def __init__(self, name: str, handler: Handler, route_options: str = "") -> None:
        self.name = name
        self.handler = handler
        self.route_options = route_options
        self.origin: http.server.ThreadingHTTPServer | None = None
        self.proxy: subprocess.Popen | None = None
        self.port = 0
        self.control_port = 0
        self._ready = threading.Event()
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def control_uri(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self, args: argparse.Namespace) -> None:
        handler_class = type("Handler", (_OriginHandler,), {"handler": staticmethod(self.handler)})
        self.origin = http.server.ThreadingHTTPServer(("127.0.0.1", args.origin_port), handler_class)
        self.origin.daemon_threads = True
        origin_port = self.origin.server_address[1]
        threading.Thread(target=self.origin.serve_forever, daemon=True).start()

        route = f"* localhost:{origin_port}" + (f",{self.route_options}" if self.route_options else "")
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "pushpin", "--route", route]
        if (args.port, args.control_port) != (DEFAULT_PORT, DEFAULT_CONTROL_PORT):
            self._tmp = tempfile.TemporaryDirectory(prefix=f"pushpin-tx-{self.name}-")
            argv += ["--config", str(_proxy_config(Path(self._tmp.name), args.port, args.control_port))]
        # The repository's twisted/plugins (the pushpin plugin) is importable from any
        # directory, also when the package is installed in editable mode.
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        print(f"[{self.name}] origin on 127.0.0.1:{origin_port}; starting: twistd -n pushpin --route '{route}'", flush=True)
        self.proxy = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True, bufsize=1)
        threading.Thread(target=self._read_proxy, daemon=True).start()

    def _read_proxy(self) -> None:
        assert self.proxy is not None and self.proxy.stdout is not None
        for line in self.proxy.stdout:
            print(f"[proxy] {line}", end="", flush=True)
            if m := re.search(r"control API listening on [^:]+:(\d+)", line):
                self.control_port = int(m.group(1))
            elif m := re.search(r"client listening on [^:]+:(\d+)", line):
                self.port = int(m.group(1))
            if self.port and self.control_port:
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once the proxy has bound its client port and control API."""
        self._ready.wait(timeout)
        return bool(self.port and self.control_port)

    def stop(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(15)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        if self.origin is not None:
            self.origin.shutdown()
            self.origin.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()


def run(example: Example, args: argparse.Namespace, on_ready: Callable[[Example], None], hints: list[str]) -> int:
    """Start the example, tell the user where to look, and wait for Ctrl-C (or SIGTERM)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    example.start(args)
    try:
        if not example.wait_ready():
            print(f"[{example.name}] the proxy did not start (see its log above)", flush=True)
            return 1
        on_ready(example)
        base = f"http://127.0.0.1:{example.port}"
        print(f"[{example.name}] ready: open {base}/ (control API {example.control_uri}); Ctrl-C stops", flush=True)
        for hint in hints:
            print(f"[{example.name}]   {hint.format(base=base, control=example.control_uri)}", flush=True)
        while not stop.is_set():
            if example.proxy is not None and example.proxy.poll() is not None:
                print(f"[{example.name}] the proxy exited ({example.proxy.returncode})", flush=True)
                return 1
            stop.wait(0.5)
        print(f"[{example.name}] stopping", flush=True)
        return 0
    finally:
        example.stop()
        print(f"[{example.name}] stopped", flush=True)
