"""
local_ports with C{workers = 2}, through the real C{twistd -n pushpin}: the main process binds
the Unix socket (with its mode) and the worker accepts on the same listening socket,
inherited; clients connecting over it land on both processes, a publish reaches every stream
whichever process holds it, the file keeps its mode while the worker runs and is removed at
stop.
"""

from __future__ import annotations

import os
import re
import stat

import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet.endpoints import UNIXClientEndpoint

from .harness import RawClient, poll_until
from .test_tls_listeners import start_configured
from .test_workers import _publish_http


async def _unix_stream(reactor, path: str, channel: str) -> RawClient:
    client = RawClient()
    await UNIXClientEndpoint(reactor, path).connect(protocol.Factory.forProtocol(lambda: client))
    client.transport.write(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
    return client


def _holders(output: str, channel: str) -> tuple[int, int]:
    """How many subscriptions to C{channel} the main process and worker 1 logged."""
    tags = re.findall(rf"^\[INFO\] \S+ \S+ (\[worker 1\] )?subscribe \S+ channel={re.escape(channel)}$", output, re.M)
    worker = sum(1 for tag in tags if tag)
    return len(tags) - worker, worker


@pytest_twisted.ensureDeferred
async def test_both_processes_accept_on_the_unix_socket_and_every_stream_gets_the_publish(reactor, tmp_path):
    """60 streams over the Unix socket: both processes hold some; one publish reaches all 60; the file keeps mode 0660 and is removed at stop."""
    path = str(tmp_path / "client.sock")
    proxy = await start_configured(reactor, tmp_path, ["* test"], workers="2",
                                   runner={"local_ports": f"unix:{path}?mode=660"})
    clients: list[RawClient] = []
    try:
        await proxy.wait_for_log(r"worker 1 \(pid \d+\) serving")
        assert re.search(rf"^\[INFO\] \S+ \S+ \[worker 1\] client \(local\) listening on {re.escape(path)}$", proxy.output, re.M)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660  # the worker's start left the mode alone
        for _ in range(3):  # in waves: each lands on whichever process accepts first
            wave = await defer.gatherResults([defer.Deferred.fromCoroutine(_unix_stream(reactor, path, "u")) for _ in range(20)])
            clients += wave
            for client in wave:
                await client.wait_for(reactor, b"[stream opened]\n")
        await poll_until(reactor, lambda: sum(_holders(proxy.output, "u")) >= 60, what="60 subscriptions to u")
        main, worker = _holders(proxy.output, "u")
        assert main + worker == 60 and main > 0 and worker > 0, (main, worker)
        await _publish_http(reactor, proxy, "u", "to every unix stream\n")
        for client in clients:
            await client.wait_for(reactor, b"to every unix stream\n")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    finally:
        for client in clients:
            client.transport.loseConnection()
        assert await proxy.stop() == 0
    assert not os.path.exists(path)
    assert "Traceback" not in proxy.output


@pytest_twisted.ensureDeferred
async def test_a_restarted_worker_accepts_on_the_unix_socket_again(reactor, tmp_path):
    """SIGKILL on the worker: the main process keeps serving the socket meanwhile, the new worker inherits it again and takes clients."""
    import signal

    path = str(tmp_path / "client.sock")
    proxy = await start_configured(reactor, tmp_path, ["* test"], workers="2", runner={"local_ports": path})
    clients: list[RawClient] = []
    try:
        pid = int((await proxy.wait_for_log(r"worker 1 \(pid (\d+)\) serving")).group(1))
        os.kill(pid, signal.SIGKILL)
        await proxy.wait_for_log(rf"worker 1 \(pid {pid}\) exited")
        alone = await _unix_stream(reactor, path, "r")  # the main process alone, until the restart
        clients.append(alone)
        await alone.wait_for(reactor, b"[stream opened]\n")
        await proxy.wait_for_log(rf"worker 1 \(pid (?!{pid}\)) ?\d+\) serving")
        assert os.path.exists(path)  # the killed worker's end did not remove it
        worker_held = 0
        for _ in range(10):  # waves until the new worker has taken some
            wave = await defer.gatherResults([defer.Deferred.fromCoroutine(_unix_stream(reactor, path, "r")) for _ in range(20)])
            clients += wave
            for client in wave:
                await client.wait_for(reactor, b"[stream opened]\n")
            await poll_until(reactor, lambda: sum(_holders(proxy.output, "r")) >= len(clients), what="the wave's subscriptions")
            worker_held = _holders(proxy.output, "r")[1]
            if worker_held:
                break
        assert worker_held > 0
        await _publish_http(reactor, proxy, "r", "after the restart\n")
        for client in clients:
            await client.wait_for(reactor, b"after the restart\n")
    finally:
        for client in clients:
            client.transport.loseConnection()
        assert await proxy.stop() == 0
    assert not os.path.exists(path)
