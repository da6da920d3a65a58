"""
local_ports end to end through the real C{twistd -n pushpin}: a client on the Unix socket
is proxied like one on TCP; the socket file gets the configured mode (1.37's
C{unix:/path?mode=}); a stale file left by a killed process does not stop start-up; the file
is removed at stop.
"""

from __future__ import annotations

import os
import socket
import stat

import pytest_twisted
from twisted.internet import protocol
from twisted.internet.endpoints import UNIXClientEndpoint

from .harness import RawClient, ScriptedOrigin, start_origin
from .test_tls_listeners import start_configured


@pytest_twisted.ensureDeferred
async def test_unix_socket_client_is_served_with_the_configured_mode(reactor, tmp_path):
    """A GET over the Unix socket reaches the origin; the file has mode 0660; a stale file is replaced; stop removes it."""
    origin = ScriptedOrigin()
    origin.handlers[b"/plain"] = lambda req: b"over unix\n"
    origin_port = await start_origin(reactor, origin)
    path = str(tmp_path / "client.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # a file nobody listens on, as a killed process leaves it
    stale.close()
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"local_ports": f"unix:{path}?mode=660"})
    try:
        await proxy.wait_for_log(r"client \(local\) listening on " + path)
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        client = RawClient()
        await UNIXClientEndpoint(reactor, path).connect(protocol.Factory.forProtocol(lambda: client))
        client.transport.write(b"GET /plain HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
        await client.wait_closed(reactor)
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n") and client.received.endswith(b"over unix\n")
        seen = dict((k.lower(), v) for k, v in origin.requests[-1]["headers"])
        assert seen[b"host"] == b"example.com" and b"x-forwarded-proto" not in seen
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()
    assert not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_a_path_that_is_not_a_socket_stops_start_up(reactor, tmp_path):
    """local_ports naming a regular file: start-up fails with one line naming it, and the file is kept."""
    from .harness import Waiter, _ProxyProcess, child_env, proxy_argv, write_config
    import re
    import sys

    path = tmp_path / "notes.txt"
    path.write_text("keep")
    conf = write_config(tmp_path, ["* test"])
    conf.write_text(re.sub(r"(?m)^#?local_ports=.*$", f"local_ports={path}", conf.read_text()))
    proc = _ProxyProcess(Waiter())
    reactor.spawnProcess(proc, sys.executable, proxy_argv("--config", str(conf)), env=child_env(), path=str(tmp_path))
    proc.ended.addTimeout(20, reactor)
    code = await proc.ended
    assert code == 1
    assert f"client (local): cannot listen on {path}: the path exists and is not a socket" in proc.output
    assert "Traceback" not in proc.output
    assert path.read_text() == "keep"
