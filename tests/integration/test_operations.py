"""
Operations end to end through the real C{twistd -n pushpin}: Prometheus metrics, the
pushpin-tx-publish command, and a SIGTERM that drains held connections cleanly.
"""

from __future__ import annotations

import re

import sys

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import utils

from .harness import raw_connect, raw_request, start_proxy


@pytest_twisted.ensureDeferred
async def test_metrics_publish_command_and_graceful_stop(reactor, tmp_path):
    """Metrics show a held stream; the publish command reaches it; SIGTERM ends stream and long-poll cleanly."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"], prometheus_port="127.0.0.1:0", prometheus_prefix="pp_")
    try:
        match = await proxy.wait_for_log(r"metrics listening on [^:]+:(\d+)")
        metrics_port = int(match.group(1))
        stream = await raw_connect(reactor, proxy.client_port)
        stream.transport.write(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await stream.wait_for(reactor, b"[stream opened]\n")
        poll = await raw_connect(reactor, proxy.client_port)
        poll.transport.write(b"GET /response HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await proxy.wait_for_log(r"subscribe http://localhost[^ ]*/response channel=test")

        scrape = await raw_request(reactor, metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        text = scrape.received.split(b"\r\n\r\n", 1)[1].decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert "pp_connection_connected" in families and "pp_message_sent" in families
        held = {s.labels.get("kind"): s.value for f in families.values() for s in f.samples if s.name.endswith("held_connections")}
        assert held.get("stream") == 1 and held.get("response") == 1

        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable,
            ["-m", "pushpin_tx.scripts.publish", "test", "from the command line"],
            env={"GRIP_URL": f"http://127.0.0.1:{proxy.control_port}", "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2])},
        )
        assert code == 0, (out, err)
        await stream.wait_for(reactor, b"from the command line")
        await poll.wait_for(reactor, b"from the command line")

        poll2 = await raw_connect(reactor, proxy.client_port)
        poll2.transport.write(b"GET /response?channel=other HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await proxy.wait_for_log(r"channel=other")
        assert await proxy.stop() == 0
        assert stream.received.endswith(b"0\r\n\r\n")  # the stream's last chunk, not a reset
        assert poll2.received.endswith(b"nothing for now\n")  # the long-poll got its timeout answer
        # one line per process that held some (PUSHPIN_TX_TEST_WORKERS=2 spreads them)
        assert sum(int(n) for n in re.findall(r"draining (\d+) held connections", proxy.output)) == 2
    finally:
        await proxy.stop()
