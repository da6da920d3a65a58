"""
End to end with C{workers = 2}: the real C{twistd -n pushpin} spawns a second reactor
process on the same client port; clients land on either; every publish input reaches
every client exactly once and in order; the SUB socket, the metrics and the shutdown see
both processes; a worker that dies is started again.
"""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
import pytest_twisted
import zmq
from prometheus_client.parser import text_string_to_metric_families

from .harness import poll_until, raw_connect, raw_request, start_proxy, xpub_publisher


async def _stream(reactor, proxy, channel: str):
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /stream?channel=%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % channel.encode())
    await client.wait_for(reactor, b"[stream opened]\n")
    return client


async def _subscribed(reactor, proxy, channel: str, n: int) -> None:
    rx = re.compile(rf"subscribe \S+ channel={re.escape(channel)}\n")
    await poll_until(reactor, lambda: len(rx.findall(proxy.output)) >= n, what=f"{n} subscriptions to {channel}")


def _holders(output: str, channel: str) -> tuple[int, int]:
    """How many subscribe lines for C{channel} the main process and worker 1 logged."""
    lines = re.findall(rf"^\[INFO\] \S+ \S+ (\[worker 1\] )?subscribe \S+ channel={re.escape(channel)}$", output, re.M)
    worker = sum(1 for tag in lines if tag)
    return len(lines) - worker, worker


def _chunks(received: bytes) -> list[bytes]:
    """The chunk payloads of a chunked HTTP/1.1 stream (the head stripped)."""
    body = received.split(b"\r\n\r\n", 1)[1]
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2:]
    return out


async def _publish_http(reactor, proxy, channel: str, content: str) -> None:
    body = json.dumps({"items": [{"channel": channel, "formats": {"http-stream": {"content": content}}}]}).encode()
    answer = await raw_request(
        reactor, proxy.control_port,
        b"POST /publish/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n%s" % (len(body), body),
    )
    assert answer.received.startswith(b"HTTP/1.1 200"), answer.received


async def _serves(reactor, proxy, channel: str, n: int) -> None:
    """C{n} new streams on C{channel} (wherever the kernel puts them) all get a publish."""
    clients = [await _stream(reactor, proxy, channel) for _ in range(n)]
    await _subscribed(reactor, proxy, channel, n)
    await _publish_http(reactor, proxy, channel, f"to {channel}\n")
    for client in clients:
        await client.wait_for(reactor, f"to {channel}\n".encode())
        client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_two_workers_serve_one_port_and_every_publish_reaches_every_stream_in_order(reactor, tmp_path):
    """16 streams spread over 2 processes get 20 publishes (HTTP, then PUSH) once each, in order; metrics sum both; SIGTERM drains both."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], workers="2", prometheus_port="127.0.0.1:0", prometheus_prefix="pp_")
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    clients = []
    try:
        await proxy.wait_for_log(r"worker 1 \(pid \d+\) serving")
        metrics_port = int((await proxy.wait_for_log(r"metrics listening on [^:]+:(\d+)")).group(1))
        pull = (await proxy.wait_for_log(r"publish-pull bound to (tcp://[\d.]+:\d+)")).group(1)
        push.connect(pull)
        # SO_REUSEPORT spreads connections by address hash: open 16, more if one process has none
        while len(clients) < 16 or (0 in _holders(proxy.output, "w") and len(clients) < 64):
            clients.append(await _stream(reactor, proxy, "w"))
            await _subscribed(reactor, proxy, "w", len(clients))
        n = len(clients)
        assert 0 not in _holders(proxy.output, "w")
        for i in range(10):
            await _publish_http(reactor, proxy, "w", f"m{i}\n")
        for i in range(10, 20):
            push.send(b"J" + json.dumps({"channel": "w", "formats": {"http-stream": {"content": f"m{i}\n"}}}).encode())
        expected = [f"m{i}\n".encode() for i in range(20)]
        for client in clients:
            await client.wait_for(reactor, b"m19\n")
        for client in clients:
            assert _chunks(client.received)[1:] == expected  # after "[stream opened]", each once, in order

        # each process logs its own receivers for a publish
        main, worker = _holders(proxy.output, "w")
        assert re.search(rf"^\[INFO\] \S+ \S+ publish channel=w receivers={main}$", proxy.output, re.M)
        assert re.search(rf"\[worker 1\] publish channel=w receivers={worker}$", proxy.output, re.M)

        scrape = await raw_request(reactor, metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        families = {f.name: f for f in text_string_to_metric_families(scrape.received.split(b"\r\n\r\n", 1)[1].decode())}
        value = lambda name: families[name].samples[0].value  # noqa: E731
        assert value("pp_connection_connected") == n
        assert value("pp_message_received") == 20
        assert value("pp_message_sent") == n * 20  # deliveries in both processes
        assert value("pp_subscribed_channels") == 1
    finally:
        push.close()
        ctx.term()
        code = await proxy.stop()
    assert code == 0
    for client in clients:
        await client.wait_closed(reactor)
        assert client.received.endswith(b"0\r\n\r\n")  # drained: the stream's last chunk, in either process
    assert re.search(r"worker 1 \(pid \d+\) stopped", proxy.output)


@pytest_twisted.ensureDeferred
async def test_sub_socket_subscribes_to_channels_held_only_by_a_worker(reactor, tmp_path):
    """The main process's SUB socket subscribes to every channel held in any process, and those clients get the messages."""
    ctx = zmq.Context()
    xpub, port, poll = xpub_publisher(ctx)
    proxy = await start_proxy(reactor, tmp_path, ["* test"], workers="2", push_in_sub_connect="true",
                              push_in_sub_specs=f"tcp://127.0.0.1:{port}")
    try:
        await proxy.wait_for_log(r"worker 1 \(pid \d+\) serving")
        # one stream per channel until both processes hold at least one channel alone
        channels: list[str] = []
        clients = {}
        per_process = [0, 0]
        while (len(channels) < 8 or 0 in per_process) and len(channels) < 64:
            channel = f"c{len(channels)}"
            channels.append(channel)
            clients[channel] = await _stream(reactor, proxy, channel)
            await _subscribed(reactor, proxy, channel, 1)
            main, worker = _holders(proxy.output, channel)
            per_process[0] += main
            per_process[1] += worker
        assert 0 not in per_process
        await poll_until(reactor, lambda: all(b"\x01" + c.encode() in poll() for c in channels), what="SUB interest in every channel")
        for channel in channels:
            xpub.send_multipart([channel.encode(), b"J" + json.dumps({"formats": {"http-stream": {"content": f"to {channel}\n"}}}).encode()])
        for channel, client in clients.items():
            await client.wait_for(reactor, f"to {channel}\n".encode())
        for client in clients.values():
            client.transport.loseConnection()
        await poll_until(reactor, lambda: all(b"\x00" + c.encode() in poll() for c in channels), what="SUB unsubscribes")
    finally:
        xpub.close()
        ctx.term()
        assert await proxy.stop() == 0


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_is_started_again_and_serves(reactor, tmp_path):
    """SIGKILL on the worker: the main process logs it, starts a new one, and new clients on the port are served."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], workers="2")
    try:
        pid = int((await proxy.wait_for_log(r"worker 1 \(pid (\d+)\) serving")).group(1))
        os.kill(pid, signal.SIGKILL)
        await proxy.wait_for_log(rf"worker 1 \(pid {pid}\) exited: .*; starting it again in 1 s")
        new_pid = int((await proxy.wait_for_log(rf"worker 1 \(pid (?!{pid}\)) ?(\d+)\) serving")).group(1))
        assert new_pid != pid
        await _serves(reactor, proxy, "again", 8)
    finally:
        assert await proxy.stop() == 0


@pytest_twisted.ensureDeferred
async def test_sighup_to_a_worker_is_ignored_and_a_second_instance_cannot_share_the_port(reactor, tmp_path, no_logged_failures):
    """A hang-up reaching the worker does not kill it; another pushpin-tx on the same client port fails to start."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], workers="2")
    try:
        pid = int((await proxy.wait_for_log(r"worker 1 \(pid (\d+)\) serving")).group(1))
        os.kill(pid, signal.SIGHUP)
        proxy.transport.signalProcess("HUP")  # the main process reloads, and tells the worker
        await proxy.wait_for_log(r"\[worker 1\] reloading")
        assert "exited" not in proxy.output
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        with pytest.raises(AssertionError, match=r"(?is)proxy did not start.*cannot listen on .*already in use"):
            await start_proxy(reactor, second_dir, ["* test"], workers="2", http_port=f"127.0.0.1:{proxy.client_port}")
        # the harness reports the second proxy's early exit as a failure while it waits: expected here
        assert all("before logging" in f.getErrorMessage() for f in no_logged_failures)
        no_logged_failures.clear()
        await _serves(reactor, proxy, "hup", 4)
    finally:
        assert await proxy.stop() == 0
