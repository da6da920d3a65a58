"""
Proxying rules that need the real process: TLS toward origins, routes reloads (file change,
SIGHUP, --route), clients that vanish mid-request and a big stream-hold body, through the
real C{twistd -n pushpin} on loopback ports. Each test asserts the bytes a client sees.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import endpoints, ssl
from twisted.web import server

from ..proxyfakes import dechunk
from .harness import ScriptedOrigin, raw_connect, raw_request, start_origin, start_proxy

GENERIC_502 = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 32\r\n\r\n"
    b"Error while proxying to origin.\n"
)


def _get(host: bytes, path: bytes = b"/plain") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)


async def _fetch(reactor, proxy, host: bytes, until: bytes) -> bytes:
    """GET /plain on a keep-alive connection; everything received once C{until} arrived."""
    client = await raw_request(reactor, proxy.client_port, _get(host), until=until)
    client.transport.loseConnection()
    return client.received


def _plain(body: bytes):
    def handler(request):
        request.setHeader(b"content-type", b"text/plain")
        return body

    return handler


def _stream(channel: bytes, body: bytes):
    def handler(request):
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", channel)
        return body

    return handler


async def _publish(reactor, control_port: int, channel: str, content: str) -> bytes:
    body = json.dumps({"items": [{"channel": channel, "formats": {"http-stream": {"content": content}}}]}).encode()
    client = await raw_request(
        reactor,
        control_port,
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body),
    )
    assert client.received.endswith(b"\r\n\r\nPublished\n"), client.received
    return client.received


@pytest.fixture
def origin():
    o = ScriptedOrigin()
    o.handlers[b"/plain"] = _plain(b"plain\n")
    o.handlers[b"/stream"] = _stream(b"r1", b"open\n")
    return o


async def _open_stream(reactor, proxy, host: bytes):
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /stream HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
    await client.wait_for(reactor, b"5\r\nopen\n\r\n")
    await proxy.wait_for_log(r"subscribe http://%s/stream channel=r1" % host.decode())
    return client


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 that no trust store knows."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "origin.key", directory / "origin.crt"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest_twisted.ensureDeferred
async def test_tls_origin_is_verified_unless_the_target_says_insecure(reactor, tmp_path, origin):
    """An ssl target with a self-signed certificate: 502 when verified, the body with ',insecure'."""
    key_path, cert_path = _self_signed(tmp_path)
    site = server.Site(origin)
    site.noisy = False
    # Loaded from the PEM files (the file APIs), like an "ssl:0:privateKey=...:certKey=..." endpoint.
    context = ssl.DefaultOpenSSLContextFactory(str(key_path), str(cert_path))
    tls_port = await endpoints.SSL4ServerEndpoint(reactor, 0, context, interface="127.0.0.1").listen(site)
    port = tls_port.getHost().port
    proxy = await start_proxy(
        reactor, tmp_path, [f"verified.test 127.0.0.1:{port},ssl", f"insecure.test 127.0.0.1:{port},ssl,insecure"]
    )
    try:
        refused = await _fetch(reactor, proxy, b"verified.test", b"origin.\n")
        assert refused == GENERIC_502
        await proxy.wait_for_log(r"cannot connect to 127\.0\.0\.1:%d: .*certificate verify failed" % port)
        assert origin.requests == []
        ok = await _fetch(reactor, proxy, b"insecure.test", b"plain\n")
        assert ok == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nplain\n"
        assert [r["uri"] for r in origin.requests] == [b"/plain"]
        assert dict((k.lower(), v) for k, v in origin.requests[0]["headers"])[b"host"] == b"insecure.test"
    finally:
        await proxy.stop()
        await tls_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_changed_routes_file_applies_within_two_seconds_and_held_streams_survive(reactor, tmp_path, origin):
    """Editing the routes file adds a route within ~2 s; a stream held before the edit still gets publishes."""
    origin_port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{origin_port.getHost().port}"
    proxy = await start_proxy(reactor, tmp_path, [f"a.test {target}"])
    try:
        held = await _open_stream(reactor, proxy, b"a.test")

        async def edit_the_file() -> None:
            (tmp_path / "routes").write_text(f"a.test {target}\nb.test {target}\n")
            changed_at = reactor.seconds()
            await proxy.wait_for_log(r"routes loaded with 2 entries", timeout=5)
            assert reactor.seconds() - changed_at < 3.0

        after = await _reload_adds_b_and_keeps_held(reactor, proxy, held, edit_the_file, "after reload\n")
        assert after == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nplain\n"
    finally:
        await proxy.stop()
        await origin_port.stopListening()


async def _reload_adds_b_and_keeps_held(reactor, proxy, held, reload, message: str) -> bytes:
    """
    b.test has no route; C{reload()} brings the new routes in; b.test is then proxied, and the
    stream held on a.test from before gets a publish. Returns b.test's answer for the caller.
    """
    before = await _fetch(reactor, proxy, b"b.test", b"b.test\n")
    assert before.endswith(b"\r\n\r\nNo route for host: b.test\n")
    await reload()
    after = await _fetch(reactor, proxy, b"b.test", b"plain\n")
    await _publish(reactor, proxy.control_port, "r1", message)
    await held.wait_for(reactor, b"%x\r\n%s\r\n" % (len(message), message.encode()))
    assert not held.closed
    held.transport.loseConnection()
    return after


@pytest_twisted.ensureDeferred
async def test_sighup_reloads_the_routes_at_once_and_held_streams_survive(reactor, tmp_path, origin):
    """SIGHUP logs 'reloading' and re-reads the routes then and there; a held stream keeps receiving."""
    origin_port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{origin_port.getHost().port}"
    new_text = f"a.test {target}\nb.test {target}\n"
    old_base = f"a.test {target}\n"
    # Same size and (below) same mtime and inode: the file watcher cannot see this edit, so
    # only the signal can make the new route appear.
    old_text = old_base + "#" * (len(new_text) - len(old_base) - 1) + "\n"
    proxy = await start_proxy(reactor, tmp_path, [old_text.rstrip("\n")])
    routes = tmp_path / "routes"
    try:
        assert routes.read_text() == old_text
        held = await _open_stream(reactor, proxy, b"a.test")
        stat = os.stat(routes)
        routes.write_text(new_text)
        os.utime(routes, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert (os.stat(routes).st_size, os.stat(routes).st_ino) == (stat.st_size, stat.st_ino)

        async def send_hup() -> None:
            proxy.transport.signalProcess("HUP")
            await proxy.wait_for_log(r"reloading\n.*routes loaded with 2 entries", timeout=5)

        after = await _reload_adds_b_and_keeps_held(reactor, proxy, held, send_hup, "after hup\n")
        assert after.endswith(b"\r\n\r\nplain\n")
    finally:
        await proxy.stop()
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_route_option_replaces_the_routes_file(reactor, tmp_path, origin):
    """--route lines are the whole routing table: the routes file's catch-all is not used."""
    origin_port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{origin_port.getHost().port}"
    proxy = await start_proxy(
        reactor, tmp_path, ["* 127.0.0.1:1"], f"--route=a.test {target}", "--route=dead.test 127.0.0.1:1"
    )
    try:
        ok = await _fetch(reactor, proxy, b"a.test", b"plain\n")
        assert ok.endswith(b"\r\n\r\nplain\n")
        assert await _fetch(reactor, proxy, b"dead.test", b"origin.\n") == GENERIC_502
        other = await _fetch(reactor, proxy, b"other.test", b"other.test\n")
        assert other.endswith(b"\r\n\r\nNo route for host: other.test\n")
        assert "routes loaded with" not in proxy.output
    finally:
        await proxy.stop()
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_client_leaving_mid_request_does_not_disturb_others(reactor, tmp_path, origin):
    """A client that sends half a body and hangs up: nothing reaches the origin, other clients are served."""
    origin_port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"])
    try:
        quitter = await raw_connect(reactor, proxy.client_port)
        quitter.transport.write(b"POST /plain HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
        bystander = await raw_connect(reactor, proxy.client_port)
        quitter.transport.loseConnection()
        await quitter.wait_closed(reactor)
        bystander.transport.write(_get(b"a.test"))
        await bystander.wait_for(reactor, b"plain\n")
        assert bystander.received.endswith(b"\r\n\r\nplain\n")
        bystander.transport.loseConnection()
        again = await _fetch(reactor, proxy, b"a.test", b"plain\n")
        assert again.endswith(b"\r\n\r\nplain\n")
        assert [r["method"] for r in origin.requests] == [b"GET", b"GET"]
        assert "Traceback" not in proxy.output and "Unhandled" not in proxy.output
    finally:
        await proxy.stop()
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stream_hold_with_a_150000_byte_initial_body_is_relayed_whole_then_held(reactor, tmp_path, origin):
    """A stream hold whose first body is 150000 bytes: the client gets every byte chunked, then publishes."""
    payload = bytes(range(97, 123)) * (150000 // 26) + b"!" * (150000 % 26)
    origin.handlers[b"/big"] = _stream(b"big", payload)
    origin_port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"])
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")

        def body_so_far() -> bytes:
            return dechunk(client.received.partition(b"\r\n\r\n")[2])[0]

        await client.waiter.wait(reactor, lambda: len(body_so_far()) >= len(payload), what="the 150000-byte body")
        head = client.received.partition(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Transfer-Encoding: chunked" in head
        assert b"Content-Length" not in head and b"Grip-" not in head
        assert body_so_far() == payload
        await proxy.wait_for_log(r"subscribe http://a.test/big channel=big")
        await _publish(reactor, proxy.control_port, "big", "later\n")
        await client.wait_for(reactor, b"6\r\nlater\n\r\n")
        assert dechunk(client.received.partition(b"\r\n\r\n")[2]) == (payload + b"later\n", False)
        client.transport.loseConnection()
    finally:
        await proxy.stop()
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_ipv6_target(reactor, tmp_path, origin):
    """A route target written [::1]:PORT (Pushpin 1.41) reaches an origin listening on IPv6 loopback; the access line names it so."""
    port = await endpoints.TCP6ServerEndpoint(reactor, 0, interface="::1").listen(server.Site(origin))
    proxy = await start_proxy(reactor, tmp_path, [f"* [::1]:{port.getHost().port}"])
    try:
        received = await _fetch(reactor, proxy, b"example.com", b"plain\n")
        assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"\r\n\r\nplain\n")
        await proxy.wait_for_log(rf"GET http://example.com/plain -> \[::1\]:{port.getHost().port} code=200 6")
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_orig_headers_need_mark(reactor, tmp_path, origin):
    """With orig_headers, a name in orig_headers_need_mark reaches the origin marked only when the client marked it itself."""
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"*,orig_headers 127.0.0.1:{port.getHost().port}"], orig_headers_need_mark="Cookie")
    try:
        client = await raw_request(
            reactor,
            proxy.client_port,
            b"GET /plain HTTP/1.1\r\nHost: example.com\r\nCookie: forged\r\nX-A: 1\r\n\r\n",
            until=b"plain\n",
        )
        client.transport.loseConnection()
        marked = [(k.lower(), v) for k, v in origin.requests[-1]["headers"] if k.lower().startswith(b"eb9bf0f5-")]
        assert (b"eb9bf0f5-x-a", b"1") in marked
        assert not [v for k, v in marked if k == b"eb9bf0f5-cookie"]
        client = await raw_request(
            reactor,
            proxy.client_port,
            b"GET /plain HTTP/1.1\r\nHost: example.com\r\nCookie: c\r\neb9bf0f5-Cookie: original\r\n\r\n",
            until=b"plain\n",
        )
        client.transport.loseConnection()
        marked = [(k.lower(), v) for k, v in origin.requests[-1]["headers"] if k.lower().startswith(b"eb9bf0f5-")]
        assert [v for k, v in marked if k == b"eb9bf0f5-cookie"] == [b"original"]
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_route_log_level_shows_the_routes_own_message(reactor, tmp_path, origin):
    """Route option log_level=1 (Pushpin 1.41) shows the too-many-subscriptions message as a warning; the default route keeps it at debug."""
    channels = b", ".join(b"c%d" % n for n in range(25))
    origin.handlers[b"/many"] = lambda request: (request.setHeader(b"grip-hold", b"stream"), request.setHeader(b"grip-channel", channels), b"x\n")[2]
    port = await start_origin(reactor, origin)
    target = f"127.0.0.1:{port.getHost().port}"
    proxy = await start_proxy(reactor, tmp_path, [f"loud.example,id=loud,log_level=1 {target}", f"* {target}"])
    try:
        for host in (b"quiet.example", b"loud.example"):
            client = await raw_request(reactor, proxy.client_port, b"GET /many HTTP/1.1\r\nHost: %s\r\n\r\n" % host, until=b"x\n")
            client.transport.loseConnection()
        await proxy.wait_for_log(r"\[WARN\].*too many channels \(25\), keeping the first 20 route=loud")
        assert len([line for line in proxy.output.splitlines() if "too many channels" in line]) == 1
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_services_with_pushpin_141_names(reactor, tmp_path, origin):
    """[runner] services=connmgr,proxy,handler (the 1.40+ names) starts like the old names and proxies."""
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"], services="connmgr,proxy,handler")
    try:
        received = await _fetch(reactor, proxy, b"example.com", b"plain\n")
        assert received.endswith(b"\r\n\r\nplain\n")
        assert "[runner] services" in proxy.output  # named among the keys only Pushpin's own processes use
    finally:
        assert await proxy.stop() == 0
        await port.stopListening()
