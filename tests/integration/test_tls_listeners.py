"""
https_ports end to end through the real C{twistd -n pushpin}: certificates generated per
test in C{<config dir>/runner/certs}, real TLS clients on real sockets. SNI picks the host's
certificate, unknown hosts and clients without SNI get C{default_<port>}; a plain GET, a
stream, a long-poll and a WebSocket all work over TLS, and the origin is told the client's
scheme was https; with two workers too.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketServerFactory
from OpenSSL import SSL
from twisted.internet import protocol, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from tests.net.certs import TestCA

from .harness import RawClient, RunningProxy, ScriptedOrigin, Waiter, _ProxyProcess, child_env, proxy_argv, start_origin, write_config
from .test_end_to_end import _publish
from .test_websockets import Client, Echo

# running the proxy with keys the harness does not place -------------------------------------


async def start_configured(reactor, tmp_path: Path, routes: list[str], runner: dict[str, str] | None = None,
                           **overrides: str) -> RunningProxy:
    """
    start_proxy, with C{runner} keys set in C{[runner]} (the harness puts keys it does not
    know under C{[handler]}); the plain client port, control port and, when configured, the
    https port (C{.https_port}) are read from the log.
    """
    conf = write_config(tmp_path, routes, **overrides)
    if runner:
        text = conf.read_text()
        for key, value in runner.items():
            text, n = re.subn(rf"(?m)^#?{key}=.*$", f"{key}={value}", text)
            if n == 0:
                text = text.replace("[runner]", f"[runner]\n{key}={value}", 1)
        conf.write_text(text)
    waiter = Waiter()
    proc = _ProxyProcess(waiter)
    transport = reactor.spawnProcess(proc, sys.executable, proxy_argv("--config", str(conf)), env=child_env(), path=str(tmp_path))
    running = RunningProxy(reactor, proc, transport, waiter, tmp_path)
    try:
        match = await running.wait_for_log(r"\bclient listening on [^:\s]+:(\d+)")
        running.client_port = int(match.group(1))
        if runner and runner.get("https_ports"):
            match = await running.wait_for_log(r"client \(https\) listening on [^:\s]+:(\d+)")
            running.https_port = int(match.group(1))  # type: ignore[attr-defined]
        match = await running.wait_for_log(r"control API listening on [^:\s]+:(\d+)")
        running.control_port = int(match.group(1))
    except Exception:
        await running.stop()
        raise AssertionError("proxy did not start:\n" + running.output)
    return running


# TLS clients ---------------------------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class SniOnly:
    """A client that sends SNI C{name} (or none) and accepts any certificate: to see which one is served."""

    def __init__(self, name: str | None) -> None:
        self._name = name

    def clientConnectionForTLS(self, tlsProtocol):
        conn = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        if self._name is not None:
            conn.set_tlsext_host_name(self._name.encode())
        conn.set_app_data(tlsProtocol)
        return conn


def common_name(transport) -> str:
    from cryptography.x509.oid import NameOID

    cert = transport.getPeerCertificate()
    return str(cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def tls_connect(reactor, port: int, creator) -> RawClient:
    client = RawClient()
    endpoint = wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return client


def verified(ca: TestCA, host: str):
    """Twisted's own verifying client options for C{host}, trusting the test CA only."""
    return ssl.optionsForClientTLS(host, trustRoot=ssl.Certificate.loadPEM(ca.pem))


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def _install(ca: TestCA, tmp_path: Path) -> None:
    certs = tmp_path / "runner" / "certs"
    ca.install(certs, "example.com", "example.com")
    ca.install(certs, "_.wild.test", "*.wild.test", "*.wild.test")
    ca.install(certs, "default_0", "default cert", "localhost")  # https_ports=127.0.0.1:0


# tests ---------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_sni_picks_the_hosts_certificate_and_unknown_hosts_get_the_default(reactor, tmp_path, ca):
    """A verified HTTPS GET for example.com gets example.com's certificate; other names and no SNI get default_<port>."""
    _install(ca, tmp_path)
    origin = ScriptedOrigin()
    origin.handlers[b"/plain"] = lambda req: b"over tls\n"
    origin_port = await start_origin(reactor, origin)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"https_ports": "127.0.0.1:0"})
    try:
        client = await tls_connect(reactor, proxy.https_port, verified(ca, "example.com"))
        client.transport.write(b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"over tls\n")
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert common_name(client.transport) == "example.com"
        seen = dict((k.lower(), v) for k, v in origin.requests[-1]["headers"])
        assert seen[b"x-forwarded-proto"] == b"https"  # set_x_forwarded_protocol=proto-only
        client.transport.loseConnection()

        for name, expected in (("www.wild.test", "*.wild.test"), ("unknown.test", "default cert"), (None, "default cert")):
            other = await tls_connect(reactor, proxy.https_port, SniOnly(name))
            other.transport.write(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            await other.wait_for(reactor, b"over tls\n")
            assert common_name(other.transport) == expected, name
            other.transport.loseConnection()

        # the plain port is still plain HTTP, and its origin requests carry no https marker
        from .harness import raw_request

        answer = await raw_request(reactor, proxy.client_port, b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.received.endswith(b"over tls\n")
        assert b"x-forwarded-proto" not in dict((k.lower(), v) for k, v in origin.requests[-1]["headers"])
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stream_and_long_poll_over_tls(reactor, tmp_path, ca):
    """A held stream gets its published chunk and a long-poll its published response, both over TLS."""
    _install(ca, tmp_path)
    origin = ScriptedOrigin()

    def stream(req):
        req.setHeader(b"content-type", b"text/plain")
        req.setHeader(b"grip-hold", b"stream")
        req.setHeader(b"grip-channel", b"ts")
        return b"stream open\n"

    def poll(req):
        req.setHeader(b"content-type", b"text/plain")
        req.setHeader(b"grip-hold", b"response")
        req.setHeader(b"grip-channel", b"tp")
        return b"timeout\n"

    origin.handlers[b"/stream"] = stream
    origin.handlers[b"/poll"] = poll
    origin_port = await start_origin(reactor, origin)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"https_ports": "127.0.0.1:0"})
    try:
        streamer = await tls_connect(reactor, proxy.https_port, verified(ca, "example.com"))
        streamer.transport.write(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await streamer.wait_for(reactor, b"c\r\nstream open\n\r\n")
        poller = await tls_connect(reactor, proxy.https_port, verified(ca, "example.com"))
        poller.transport.write(b"GET /poll HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await proxy.wait_for_log(r"channel=ts")
        await proxy.wait_for_log(r"channel=tp")
        await _publish(reactor, proxy.control_port, [
            {"channel": "ts", "formats": {"http-stream": {"content": "tls data\n"}}},
            {"channel": "tp", "formats": {"http-response": {"body": "tls answer\n"}}},
        ])
        await streamer.wait_for(reactor, b"9\r\ntls data\n\r\n")
        await poller.wait_for(reactor, b"tls answer\n")
        assert poller.received.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 11\r\n" in poller.received
        streamer.transport.loseConnection()
        poller.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_websocket_over_tls_echoes_and_gets_publishes(reactor, tmp_path, ca):
    """A wss:// client talks to a plain WebSocket origin through the https port, and gets a ws-message publish."""
    _install(ca, tmp_path)
    factory = WebSocketServerFactory(reactor=reactor)
    factory.protocol = Echo
    factory.grip = True
    factory.offered = []
    factory.noisy = False
    origin_port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"https_ports": "127.0.0.1:0"})
    try:
        client_factory = WebSocketClientFactory(f"wss://example.com:{proxy.https_port}/echo", reactor=reactor)
        client_factory.protocol = Client
        client_factory.noisy = False
        endpoint = wrapClientTLS(verified(ca, "example.com"), TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.https_port))
        client = await endpoint.connect(client_factory)
        await client.wait(reactor, lambda: client.opened or client.closed, "handshake")
        assert client.opened
        client.sendMessage(b"over tls")
        await client.wait(reactor, lambda: client.messages, "echo")
        assert client.messages[0] == (b"echo over tls", False)
        await proxy.wait_for_log(r"channel=plain")
        await _publish(reactor, proxy.control_port, [{"channel": "plain", "formats": {"ws-message": {"content": "pub" * 100}}}])
        await client.wait(reactor, lambda: len(client.messages) > 1, "publish")
        assert client.messages[1] == (b"pub" * 100, False)
        client.sendClose(1000)
        await client.wait(reactor, lambda: client.closed, "closed")
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_https_port_with_two_workers(reactor, tmp_path, ca):
    """With workers=2 the main process binds the https port and the worker shares it: every TLS client is served."""
    _install(ca, tmp_path)
    origin = ScriptedOrigin()
    origin.handlers[b"/plain"] = lambda req: b"served\n"
    origin_port = await start_origin(reactor, origin)
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"https_ports": "127.0.0.1:0"}, workers="2")
    try:
        await proxy.wait_for_log(r"worker 1 \(pid \d+\) serving")
        for _ in range(8):  # new connections, spread over the two processes by the kernel
            client = await tls_connect(reactor, proxy.https_port, verified(ca, "example.com"))
            client.transport.write(b"GET /plain HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            await client.wait_for(reactor, b"served\n")
            await client.wait_closed(reactor)
        assert len(origin.requests) == 8
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_without_certificates_the_handshake_fails_quietly(reactor, tmp_path):
    """No certificate at all: start-up warns naming default_<port>.crt, a client's handshake fails, no traceback is logged."""
    proxy = await start_configured(reactor, tmp_path, ["* test"], runner={"https_ports": "127.0.0.1:0"})
    try:
        await proxy.wait_for_log(r"no default certificate for https port 0 \(.*runner/certs/default_0\.crt and \.key\)")
        client = RawClient()
        endpoint = wrapClientTLS(SniOnly("example.com"), TCP4ClientEndpoint(reactor, "127.0.0.1", proxy.https_port))
        await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        client.transport.write(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_closed(reactor)
        assert client.received == b""
        # a plain request after it is still served: the failed handshake harmed nothing
        from .harness import raw_request

        answer = await raw_request(reactor, proxy.client_port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.received.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        assert await proxy.stop() == 0
    assert "Traceback" not in proxy.output and "Unhandled" not in proxy.output
