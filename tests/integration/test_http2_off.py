"""
C{[runner] http2=false} through the real C{twistd -n pushpin}: the https port answers ALPN
with http/1.1 to a client offering h2 first, and serves it HTTP/1.1. (Needs patch helper-J-1:
service.py passes the setting to the client site.)
"""

from __future__ import annotations

import pytest_twisted

from .test_http2 import _start, ca, h2_options  # noqa: F401  (ca: the module's CA fixture)
from .test_tls_listeners import tls_connect


@pytest_twisted.ensureDeferred
async def test_http2_false_keeps_https_ports_on_http11(reactor, tmp_path, ca):  # noqa: F811
    """With http2=false a client offering h2 and http/1.1 is answered http/1.1 and served over HTTP/1.1."""
    origin_port, proxy = await _start(reactor, tmp_path, ca, http2="false")
    try:
        client = await tls_connect(reactor, proxy.https_port, h2_options(ca))
        client.transport.write(b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"plain over h2\n")
        assert client.transport.negotiatedProtocol == b"http/1.1"
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()
