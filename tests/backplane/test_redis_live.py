"""Two backplanes in this process against a real redis-server: TLS with a private CA (rediss://...?ca=), a password, a wrong password."""

from __future__ import annotations

import datetime
import ipaddress

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.logger import formatEvent, globalLogPublisher

from pushpin_tx.backplane.redis import RedisBackplane, parse_backplane_url
from pushpin_tx.protocol.items import parse_item
from tests.backplane.cluster import until
from tests.backplane.redisproc import RedisServer, free_port


class Interest:
    """A router's interest side holding a fixed set of channels."""

    def __init__(self, *channels: str) -> None:
        self.held = set(channels)

    def add_interest_listener(self, listener) -> None:
        pass

    def remove_interest_listener(self, listener) -> None:
        pass

    def channels(self):
        return iter(self.held)


def write_tls_files(directory) -> dict[str, str]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test redis CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": str(directory / "ca.pem"), "cert": str(directory / "server.pem"), "key": str(directory / "server.key")}
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return files


@pytest_twisted.ensureDeferred
async def test_tls_with_a_private_ca_and_a_password(reactor, tmp_path):
    """rediss://:password@127.0.0.1:port/0?ca=FILE: two backplanes connect, and one's publish reaches the other once."""
    files = write_tls_files(tmp_path)
    port = free_port()
    redis = RedisServer(reactor, free_port(), "--port", "0", "--tls-port", str(port), "--tls-cert-file", files["cert"],
                        "--tls-key-file", files["key"], "--tls-ca-cert-file", files["ca"], "--tls-auth-clients", "no",
                        "--requirepass", "s3cret pass")
    await redis.start()
    url = f"rediss://:s3cret%20pass@127.0.0.1:{port}/0?ca={files['ca']}"
    got_a: list = []
    got_b: list = []
    a = RedisBackplane(parse_backplane_url(url), reactor, Interest("t"), got_a.append)
    b = RedisBackplane(parse_backplane_url(url), reactor, Interest("t"), got_b.append)
    try:
        a.startService()
        b.startService()
        await until(reactor, lambda: a.state == b.state == "up" and a.subscribed == b.subscribed == 1, "both up over TLS")
        item = parse_item({"channel": "t", "id": "1", "formats": {"http-stream": {"content": "over tls\n"}}})
        a.publish(item)
        await until(reactor, lambda: got_a and got_b, "the item at both")
        assert got_a == got_b == [item] and b.received_remote == 1 and a.received_remote == 0
    finally:
        a.stopService()
        b.stopService()
        await redis.stop()


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_keeps_the_backplane_down_and_is_not_logged(reactor, tmp_path):
    """Against a real Redis, a wrong password: state down, WRONGPASS logged, the password in no log line; publishes stay local."""
    redis = await RedisServer(reactor, None, "--requirepass", "right").start()
    events: list = []
    globalLogPublisher.addObserver(events.append)
    delivered: list = []
    backplane = RedisBackplane(parse_backplane_url(f"redis://:wr0ng-pw@127.0.0.1:{redis.port}/0"), reactor,
                               Interest(), delivered.append)
    try:
        backplane.startService()
        await until(reactor, lambda: "WRONGPASS" in backplane.last_error, "the refusal")
        await until(reactor, lambda: backplane.state == "down", "down")
        backplane.publish(parse_item({"channel": "x", "formats": {"http-stream": {"content": "local\n"}}}))
        assert len(delivered) == 1 and backplane.local_only == 1
    finally:
        backplane.stopService()
        globalLogPublisher.removeObserver(events.append)
        await redis.stop()
    texts = [formatEvent(e) for e in events]
    assert any("refused the handshake: WRONGPASS" in t for t in texts)
    assert not any("wr0ng-pw" in t for t in texts)
