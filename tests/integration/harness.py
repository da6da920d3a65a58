"""
Integration harness: the real C{twistd -n pushpin} in a child process on free loopback
ports, a scriptable origin on a real socket, and a raw-bytes client that shows exactly
what a client sees on the wire. Every wait has a deadline; nothing sleeps.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.web import resource, server

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


class Waiter:
    """Deferreds that fire when a condition on accumulated state becomes true."""

    def __init__(self) -> None:
        self._waiting: list[tuple[Callable[[], object], defer.Deferred]] = []

    def check(self) -> None:
        still = []
        for predicate, d in self._waiting:
            value = predicate()
            if value:
                d.callback(value)
            else:
                still.append((predicate, d))
        self._waiting = still

    def wait(self, reactor, predicate: Callable[[], object], timeout: float = DEADLINE, what: str = "") -> defer.Deferred:
        value = predicate()
        if value:
            return defer.succeed(value)
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((predicate, d))

        def timed_out(f):
            self._waiting = [(p, x) for p, x in self._waiting if x is not d]
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")

        d.addTimeout(timeout, reactor)
        d.addErrback(lambda f: timed_out(f) if f.check(defer.TimeoutError) else f)
        return d


async def poll_until(reactor, predicate: Callable[[], object], timeout: float = DEADLINE, what: str = "", interval: float = 0.01):
    """Re-check C{predicate} (state nothing notifies us about, e.g. a zmq socket) until true or the deadline."""
    from twisted.internet import task

    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await task.deferLater(reactor, interval, lambda: None)


class _ProxyProcess(protocol.ProcessProtocol):
    def __init__(self, waiter: Waiter) -> None:
        self.output = ""
        self.waiter = waiter
        self.ended: defer.Deferred = defer.Deferred()
        self.exit_code: int | None = None
        self.exit_signal: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        self.waiter.check()

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.exit_code = reason.value.exitCode
        self.exit_signal = reason.value.signal
        if self.exit_code is None and self.exit_signal is None:
            self.exit_code = -1
        self.waiter.check()
        self.ended.callback(self.exit_code)


class RunningProxy:
    """A C{twistd -n pushpin} child process and the ports it bound."""

    def __init__(self, reactor, proc: _ProxyProcess, transport, waiter: Waiter, config_dir: Path) -> None:
        self.reactor = reactor
        self.proc = proc
        self.transport = transport
        self.waiter = waiter
        self.config_dir = config_dir
        self.client_port = 0
        self.control_port = 0

    @property
    def output(self) -> str:
        return self.proc.output

    def wait_for_log(self, pattern: str, timeout: float = DEADLINE) -> defer.Deferred:
        """Fires with the first match of C{pattern} in the proxy's output."""
        rx = re.compile(pattern)

        def found():
            match = rx.search(self.proc.output)
            if match is None and (self.proc.exit_code is not None or self.proc.exit_signal is not None):
                raise AssertionError(f"proxy exited ({self.proc.exit_code}) before logging {pattern!r}:\n{self.proc.output}")
            return match

        return self.waiter.wait(self.reactor, found, timeout, f"log {pattern!r}")

    async def stop(self) -> int | None:
        """
        SIGTERM, then wait for the exit. Returns 0 for a clean shutdown: twistd re-raises the
        signal that stopped it once it has shut down, so "killed by TERM" is clean too.
        """
        if self.proc.exit_code is None and self.proc.exit_signal is None:
            try:
                self.transport.signalProcess("TERM")
            except Exception:
                pass
            d = self.proc.ended
            d.addTimeout(DEADLINE, self.reactor)
            await d
        # pytest shows captured output for failing tests only: the proxy's whole log then.
        print(f"---- proxy log ----\n{self.proc.output}")
        if self.proc.exit_signal == 15 and "Server Shut Down." in self.proc.output:
            return 0
        return self.proc.exit_code


def proxy_argv(*args: str) -> list[str]:
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "pushpin", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_config(tmp_path: Path, routes: list[str], **overrides: str) -> Path:
    """A pushpin.conf (Pushpin's stock keys) on port-0 loopback listeners, plus a routes file."""
    values = {
        "http_port": "127.0.0.1:0",
        "push_in_http_port": "0",
        "rundir": str(tmp_path / "run"),
        "push_in_spec": "tcp://127.0.0.1:0",
        "push_in_sub_specs": "tcp://127.0.0.1:0",
        "command_spec": "tcp://127.0.0.1:0",
        # one process unless a test asks for more (tests/integration/test_workers.py):
        # PUSHPIN_TX_TEST_WORKERS=2 runs the whole integration suite with two
        "workers": os.environ.get("PUSHPIN_TX_TEST_WORKERS", "1"),
    }
    values.update(overrides)
    text = (ROOT / "etc" / "pushpin.conf").read_text()
    for key, value in values.items():
        text, n = re.subn(rf"(?m)^#?{key}=.*$", f"{key}={value}", text)
        if n == 0:
            section = "[proxy]" if key in ("debug", "x_forwarded_for", "upstream_key", "sig_key", "accept_pushpin_route", "log_from", "log_user_agent") else "[handler]"
            text = text.replace(section, f"{section}\n{key}={value}", 1)
    conf = tmp_path / "pushpin.conf"
    conf.write_text(text)
    (tmp_path / "routes").write_text("\n".join(routes) + "\n")
    return conf


async def start_proxy(reactor, tmp_path: Path, routes: list[str], *extra_args: str, **overrides: str) -> RunningProxy:
    """Start C{twistd -n pushpin --config ...} and wait until its listeners are bound."""
    conf = write_config(tmp_path, routes, **overrides)
    waiter = Waiter()
    proc = _ProxyProcess(waiter)
    transport = reactor.spawnProcess(proc, sys.executable, proxy_argv("--config", str(conf), *extra_args), env=child_env(), path=str(tmp_path))
    running = RunningProxy(reactor, proc, transport, waiter, tmp_path)
    try:
        match = await running.wait_for_log(r"client listening on [^:]+:(\d+)")
        running.client_port = int(match.group(1))
        match = await running.wait_for_log(r"control API listening on [^:]+:(\d+)")
        running.control_port = int(match.group(1))
    except Exception:
        await running.stop()
        raise AssertionError("proxy did not start:\n" + running.output)
    return running


# origin ------------------------------------------------------------------------------------


class ScriptedOrigin(resource.Resource):
    """An origin whose answers the test sets per path; records every request it gets."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[bytes, Callable] = {}
        self.requests: list[dict] = []
        self.waiter = Waiter()

    def render(self, request):
        body = request.content.read()
        self.requests.append(
            {
                "method": request.method,
                "uri": request.uri,
                "headers": [(k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs],
                "body": body,
            }
        )
        self.waiter.check()
        # twisted.web adds these to every answer; a real origin's headers are the test's to set.
        request.responseHeaders.removeHeader(b"server")
        request.responseHeaders.removeHeader(b"date")
        handler = self.handlers.get(request.path)
        if handler is None:
            request.setResponseCode(404)
            return b"no handler\n"
        return handler(request)


async def start_origin(reactor, origin: ScriptedOrigin):
    site = server.Site(origin)
    site.noisy = False
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return port


# raw client ----------------------------------------------------------------------------------


class RawClient(protocol.Protocol):
    """Sends bytes, keeps every byte received, and knows when the server closed."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = False
        self.waiter = Waiter()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.waiter.check()

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        self.waiter.check()

    def wait_for(self, reactor, needle: bytes, timeout: float = DEADLINE) -> defer.Deferred:
        return self.waiter.wait(reactor, lambda: needle in self.received, timeout, f"{needle!r} in {self.received[-300:]!r}")

    def wait_closed(self, reactor, timeout: float = DEADLINE) -> defer.Deferred:
        return self.waiter.wait(reactor, lambda: self.closed, timeout, "connection closed")


async def raw_connect(reactor, port: int) -> RawClient:
    client = RawClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(protocol.Factory.forProtocol(lambda: client))
    return client


async def raw_request(reactor, port: int, data: bytes, until: bytes | None = None, timeout: float = DEADLINE) -> RawClient:
    """Send C{data} on a new connection; wait for C{until} in the answer, or for the close."""
    client = await raw_connect(reactor, port)
    client.transport.write(data)
    if until is None:
        await client.wait_closed(reactor, timeout)
    else:
        await client.wait_for(reactor, until, timeout)
    return client


def xpub_publisher(ctx):
    """
    A bound XPUB socket for a proxy's SUB input to connect to: returns the socket, its port,
    and C{poll()}, which collects the (un)subscribe events seen so far (the list grows).
    """
    import zmq

    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    events: list[bytes] = []

    def poll() -> list[bytes]:
        while xpub.poll(0):
            events.append(xpub.recv())
        return events

    return xpub, port, poll
