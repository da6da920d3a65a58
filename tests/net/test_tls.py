"""The https ports' identities: Pushpin's certs directory rules, checked with real in-memory TLS handshakes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytest_twisted
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.logger import LogLevel, capturedLogs  # type: ignore[attr-defined]
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web import server
from twisted.web.resource import Resource

from pushpin_tx.net.tls import IdentityStore, SniConnectionCreator, default_identity, tls_factory
from tests.net.certs import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def _client(ca: TestCA, tmp_path: Path, sni: bytes | None) -> SSL.Connection:
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.load_verify_locations(str(tmp_path / "ca.pem"))
    ctx.set_verify(SSL.VERIFY_PEER, lambda *a: a[-1])
    conn = SSL.Connection(ctx, None)
    if sni is not None:
        conn.set_tlsext_host_name(sni)
    conn.set_connect_state()
    return conn


def _handshake(client: SSL.Connection, server_conn: SSL.Connection) -> None:
    """Run a handshake between two memory-BIO connections, raising the first side's SSL error."""
    server_conn.set_accept_state()
    for _ in range(20):
        done = 0
        for conn in (client, server_conn):
            try:
                conn.do_handshake()
                done += 1
            except SSL.WantReadError:
                pass
        for src, dst in ((client, server_conn), (server_conn, client)):
            try:
                dst.bio_write(src.bio_read(65536))
            except SSL.WantReadError:
                pass
        if done == 2:
            return
    raise AssertionError("handshake did not finish")


def _served_name(ca: TestCA, tmp_path: Path, creator: SniConnectionCreator, sni: bytes | None) -> str:
    client = _client(ca, tmp_path, sni)
    _handshake(client, creator.serverConnectionForTLS(None))
    cert = client.get_peer_certificate()
    assert cert is not None
    return str(cert.to_cryptography().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_sni_picks_the_host_certificate_and_others_get_the_default(ca: TestCA, tmp_path: Path) -> None:
    """A known SNI name gets its own certificate; an unknown one, or none, the port's default_<port>."""
    certs = tmp_path / "certs"
    ca.install(certs, "example.com", "example.com")
    ca.install(certs, "default_443", "default")
    creator = SniConnectionCreator(IdentityStore(str(certs)), default_identity(443))
    assert _served_name(ca, tmp_path, creator, b"example.com") == "example.com"
    assert _served_name(ca, tmp_path, creator, b"EXAMPLE.com") == "example.com"
    assert _served_name(ca, tmp_path, creator, b"other.org") == "default"
    assert _served_name(ca, tmp_path, creator, None) == "default"


def test_wildcard_file_one_level_up(ca: TestCA, tmp_path: Path) -> None:
    """www.example.com falls back to _.example.com.crt; a.b.example.com does not (one level only)."""
    certs = tmp_path / "certs"
    ca.install(certs, "_.example.com", "*.example.com", "*.example.com")
    ca.install(certs, "default_8443", "default")
    creator = SniConnectionCreator(IdentityStore(str(certs)), default_identity(8443))
    assert _served_name(ca, tmp_path, creator, b"www.example.com") == "*.example.com"
    assert _served_name(ca, tmp_path, creator, b"a.b.example.com") == "default"


def test_no_identity_fails_the_handshake(ca: TestCA, tmp_path: Path) -> None:
    """No certificate for the name and no default: the handshake fails, as Pushpin's fatal alert."""
    creator = SniConnectionCreator(IdentityStore(str(tmp_path / "empty")), default_identity(443))
    with pytest.raises(SSL.Error):
        _handshake(_client(ca, tmp_path, b"example.com"), creator.serverConnectionForTLS(None))


def test_changed_files_are_loaded_again(ca: TestCA, tmp_path: Path) -> None:
    """A renewed certificate is served from the next handshake on, without a restart."""
    certs = tmp_path / "certs"
    ca.install(certs, "default_443", "first")
    creator = SniConnectionCreator(IdentityStore(str(certs)), default_identity(443))
    assert _served_name(ca, tmp_path, creator, None) == "first"
    ca.install(certs, "default_443", "second")
    later = os.stat(certs / "default_443.crt").st_mtime + 5
    os.utime(certs / "default_443.crt", (later, later))
    assert _served_name(ca, tmp_path, creator, None) == "second"


@pytest.mark.parametrize("name", ["../x", "a/b", "", "..", "a\x01", "x" * 254])
def test_unsafe_names_are_not_looked_up(tmp_path: Path, name: str) -> None:
    """An SNI name with a path separator, a control character or over 253 characters reads no file."""
    looked: list[str] = []
    store = IdentityStore(str(tmp_path), stat=lambda p: looked.append(p) or os.stat(p))
    assert store.by_name(name) is None
    assert looked == []


def test_a_bad_key_is_logged_without_key_material(ca: TestCA, tmp_path: Path) -> None:
    """A key that does not match its certificate is reported naming the identity, never the key's bytes."""
    certs = tmp_path / "certs"
    ca.install(certs, "default_443", "default")
    _, other_key = ca.issue("other")
    (certs / "default_443.key").write_bytes(other_key)
    with capturedLogs() as events:
        assert IdentityStore(str(certs)).by_name("default_443") is None
    text = "\n".join(str(e) for e in events)
    assert [e["log_level"] for e in events] == [LogLevel.warn]
    assert "default_443" in events[0]["name"]
    body = b"".join(other_key.splitlines()[1:-1]).decode()
    assert body[:20] not in text


def test_tls_factory_wraps_the_site_and_warns_without_a_default(tmp_path: Path) -> None:
    """The site goes behind Twisted's TLS with the SNI creator; a missing default certificate is logged at start."""
    site = server.Site(Resource())
    with capturedLogs() as events:
        factory = tls_factory(site, IdentityStore(str(tmp_path)), 443)
    assert isinstance(factory, TLSMemoryBIOFactory) and factory.wrappedFactory is site
    assert any("default_443" in str(e.get("name")) and e["log_level"] == LogLevel.warn for e in events)


@pytest_twisted.ensureDeferred
async def test_records_go_straight_to_the_socket_and_arrive_in_order(reactor, ca, tmp_path):
    """Over a real TLS connection, encrypted records take the write-through path and a stalled reader still gets every byte in order."""
    from twisted.internet import protocol
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, wrapClientTLS
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from zope.interface import implementer

    from tests.integration.harness import RawClient

    certs = tmp_path / "certs"
    ca.install(certs, "default_443", "default")
    servers: list[protocol.Protocol] = []

    class Server(protocol.Protocol):
        def connectionMade(self) -> None:
            servers.append(self)

    @implementer(IOpenSSLClientConnectionCreator)
    class AnyCert:
        def clientConnectionForTLS(self, tls_protocol: object) -> SSL.Connection:
            return SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)

    site = protocol.Factory.forProtocol(Server)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        tls_factory(site, IdentityStore(str(certs)), 443))
    client = RawClient()
    try:
        endpoint = wrapClientTLS(AnyCert(), TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        await client.waiter.wait(reactor, lambda: servers, what="server side")
        server = servers[0]
        tcp_transport = server.transport.transport  # under the TLS layer
        assert "write" in vars(tcp_transport)  # the write-through function, in place of Twisted's
        server.transport.write(b"first,")
        await client.wait_for(reactor, b"first,")
        client.transport.pauseProducing()  # the reader stalls: records queue in the transport
        blocks = [b"%08d" % n * 512 for n in range(1000)]  # ~4 MB
        for block in blocks:
            server.transport.write(block)
        client.transport.resumeProducing()
        await client.waiter.wait(reactor, lambda: len(client.received) == 6 + sum(map(len, blocks)), what="every byte")
        assert client.received == b"first," + b"".join(blocks)
    finally:
        if client.transport is not None:
            client.transport.loseConnection()
        for server in servers:
            server.transport.loseConnection()
        await port.stopListening()


def _negotiated(ca: TestCA, tmp_path: Path, creator: SniConnectionCreator, offered: list[bytes], sni: bytes | None = b"example.com") -> bytes | None:
    """The ALPN protocol a client offering C{offered} ends up with (None: no ALPN answer)."""
    ca.install(tmp_path, "example.com", "example.com", "example.com")
    ca.install(tmp_path, "default_443", "default cert", "localhost")
    client = _client(ca, tmp_path, sni)
    client.set_alpn_protos(offered)
    _handshake(client, creator.serverConnectionForTLS(None))
    return client.get_alpn_proto_negotiated() or None


@pytest.mark.parametrize("sni", [b"example.com", None])
def test_alpn_prefers_h2_then_http11(ca: TestCA, tmp_path: Path, sni: bytes | None) -> None:
    """A port offering h2 and http/1.1 answers h2 to a client offering both (in either order), with or without SNI switching the identity."""
    creator = SniConnectionCreator(IdentityStore(str(tmp_path)), "default_443", (b"h2", b"http/1.1"))
    assert _negotiated(ca, tmp_path, creator, [b"http/1.1", b"h2"], sni) == b"h2"
    assert _negotiated(ca, tmp_path, creator, [b"h2", b"http/1.1"], sni) == b"h2"
    assert _negotiated(ca, tmp_path, creator, [b"http/1.1"], sni) == b"http/1.1"


def test_alpn_http11_only_and_no_overlap(ca: TestCA, tmp_path: Path) -> None:
    """A port without h2 (the default, or http2=false) answers http/1.1; a client offering nothing it speaks gets no ALPN answer, the handshake still completes."""
    creator = SniConnectionCreator(IdentityStore(str(tmp_path)), "default_443")
    assert _negotiated(ca, tmp_path, creator, [b"h2", b"http/1.1"]) == b"http/1.1"
    assert _negotiated(ca, tmp_path, creator, [b"h2"]) is None
    assert _negotiated(ca, tmp_path, creator, [b"spdy/3"]) is None


def test_tls_factory_offers_what_the_site_lists(tmp_path: Path) -> None:
    """tls_factory's connections offer the site's alpn attribute, HTTP/1.1 alone for a site without one."""
    class H2Site(server.Site):
        alpn = (b"h2", b"http/1.1")

    store = IdentityStore(str(tmp_path))
    with capturedLogs():
        offers = [tls_factory(site, store, 443) for site in (H2Site(Resource()), server.Site(Resource()))]
    assert [f.creator.alpn for f in offers] == [(b"h2", b"http/1.1"), (b"http/1.1",)]
