"""
client_maxconn end to end through the real C{twistd -n pushpin}, as Pushpin's connection
manager keeps it: a client over the limit is not refused or closed; it connects, waits
unanswered, and is served as soon as another connection closes.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import task

from .harness import ScriptedOrigin, raw_connect, start_origin
from .test_tls_listeners import start_configured

#: how long a client over the limit is watched for an answer it must not get
UNANSWERED_FOR = 1.0


@pytest_twisted.ensureDeferred
async def test_a_client_over_the_limit_waits_until_a_connection_closes(reactor, tmp_path):
    """With client_maxconn=2 and two connections open, a third gets no answer until one of them closes."""
    origin = ScriptedOrigin()
    origin.handlers[b"/plain"] = lambda req: b"served\n"
    origin_port = await start_origin(reactor, origin)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"client_maxconn": "2"}, workers="1")
    try:
        first = await raw_connect(reactor, proxy.client_port)
        first.transport.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then kept alive
        await first.wait_for(reactor, b"served\n")
        second = await raw_connect(reactor, proxy.client_port)  # idle: counts too, as in connmgr
        await proxy.wait_for_log(r"client_maxconn reached \(2 connections")
        third = await raw_connect(reactor, proxy.client_port)  # the kernel completes the connect
        third.transport.write(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # the absence of an answer can only be watched for a while
        await task.deferLater(reactor, UNANSWERED_FOR, lambda: None)
        assert third.received == b"" and not third.closed
        first.transport.loseConnection()
        await third.wait_closed(reactor)
        assert third.received.startswith(b"HTTP/1.1 200 OK\r\n") and third.received.endswith(b"served\n")
        assert len(origin.requests) == 2
        second.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()
