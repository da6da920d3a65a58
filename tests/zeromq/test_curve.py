"""
CURVE security on the ZeroMQ inputs (issue 18): real pyzmq CURVE clients against the
service's real sockets, the ZAP decisions, and the key files.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import pytest_twisted
import zmq
import zmq.auth
from zmq.utils import z85

from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.protocol.config import load_settings
from pushpin_tx.zeromq.curve import ZAP_DOMAIN, CurveError, load_curve, zap_reply
from pushpin_tx.zeromq.inputs import ZmqInputService
from tests.integration.harness import poll_until
from tests.zeromq.test_inputs import Callbacks, RecordingIntake, lines, logs, running  # noqa: F401  (fixtures)
from tests.zeromq.test_reader import zctx  # noqa: F401  (fixture)
from tests.zeromq.test_reader import no_zmq_readers  # noqa: F401  (autouse fixture)

LOCAL = "tcp://127.0.0.1:0"
STREAM = {"channel": "news", "formats": {"http-stream": {"content": "tick\n"}}}


@pytest.fixture
def keys(tmp_path):
    """A server certificate and two client key pairs; the clients file lists only the first."""
    server_public, server_secret = zmq.auth.create_certificates(str(tmp_path), "server")
    good = zmq.curve_keypair()
    stranger = zmq.curve_keypair()
    clients = tmp_path / "clients"
    clients.write_bytes(b"# publishers allowed in\n" + good[0] + b"\n")
    return load_curve(server_secret, str(clients)), good, stranger


def _service(reactor, curve, *, pull=LOCAL, command="", sub_connect=False, subs=()):
    settings = dataclasses.replace(load_settings(None), push_in_spec=pull, push_in_sub_specs=tuple(subs),
                                   push_in_sub_connect=sub_connect, command_spec=command, stats_spec="")
    intake = RecordingIntake(reactor)
    callbacks = Callbacks()
    svc = ZmqInputService(settings, reactor, intake, ChannelRouter(), is_connected=callbacks.is_connected,
                          recover=callbacks.recover, refresh=callbacks.refresh, curve=curve)
    return svc, intake


def _client(ctx, kind, server_public, pair=None):
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if pair is not None:
        sock.curve_publickey, sock.curve_secretkey = pair
        sock.curve_serverkey = server_public
    return sock


@pytest_twisted.ensureDeferred
async def test_a_listed_client_publishes_and_an_unknown_key_is_refused(reactor, zctx, running, logs, keys):
    """A CURVE client whose key is listed gets its item in; one with an unknown key is refused by ZAP and gets nothing in."""
    curve, good, stranger = keys
    svc, intake = _service(reactor, curve)
    running(svc)
    endpoint = svc.endpoints["publish-pull"]
    assert f"CURVE on for the ZeroMQ inputs: server public key {curve.public_key.decode()}, 1 client keys allowed" in lines(logs)
    refused = _client(zctx, zmq.PUSH, curve.public_key, stranger)
    allowed = _client(zctx, zmq.PUSH, curve.public_key, good)
    try:
        refused.connect(endpoint)
        refused.send(b"J" + json.dumps({**STREAM, "channel": "stranger"}).encode())
        await poll_until(reactor, lambda: svc._zap is not None and svc._zap.refused == 1, what="the ZAP refusal")
        assert f"ZAP: CURVE connection refused: unknown client key {stranger[0].decode()}" in lines(logs)
        allowed.connect(endpoint)
        allowed.send(b"J" + json.dumps(STREAM).encode())
        [[item]] = await intake.items.wait(1)
    finally:
        refused.close(linger=0)
        allowed.close(linger=0)
    assert item.channel == "news"
    assert [i.channel for _, items in intake.calls for i in items] == ["news"]
    assert svc._zap.allowed == 1


@pytest_twisted.ensureDeferred
async def test_a_plain_client_gets_nothing_in(reactor, zctx, running, keys):
    """A client without CURVE cannot complete the handshake: its item never arrives, a CURVE client's does."""
    curve, good, _ = keys
    svc, intake = _service(reactor, curve)
    running(svc)
    endpoint = svc.endpoints["publish-pull"]
    plain = _client(zctx, zmq.PUSH, None)
    monitor = plain.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                       | zmq.EVENT_DISCONNECTED)
    allowed = _client(zctx, zmq.PUSH, curve.public_key, good)
    try:
        plain.connect(endpoint)
        plain.send(b"J" + json.dumps({**STREAM, "channel": "plain"}).encode())
        await poll_until(reactor, lambda: monitor.poll(0), what="the plain client's failed handshake")
        allowed.connect(endpoint)
        allowed.send(b"J" + json.dumps(STREAM).encode())
        await intake.items.wait(1)
    finally:
        plain.disable_monitor()
        monitor.close(linger=0)
        plain.close(linger=0)
        allowed.close(linger=0)
    assert [i.channel for _, items in intake.calls for i in items] == ["news"]


@pytest_twisted.ensureDeferred
async def test_the_command_socket_answers_a_curve_client(reactor, zctx, running, keys):
    """The command socket is a CURVE server too: a listed REQ client gets its ZRPC answer."""
    from pushpin_tx.protocol import tnetstring

    curve, good, _ = keys
    svc, _ = _service(reactor, curve, pull="", command=LOCAL)
    running(svc)
    req = _client(zctx, zmq.REQ, curve.public_key, good)
    try:
        req.connect(svc.endpoints["command"])
        req.send(tnetstring.dumps({"id": b"1", "method": b"get-zmq-uris"}))
        await poll_until(reactor, lambda: req.poll(0), what="the command answer")
        reply = tnetstring.loads(req.recv())
    finally:
        req.close(linger=0)
    assert reply[b"success"] is True


def test_a_connected_sub_socket_stays_plain_with_a_warning(reactor, zctx, running, logs, keys):
    """push_in_sub_connect opens the SUB socket outwards: CURVE is not applied to it, and start-up says so."""
    curve, _, _ = keys
    svc, _ = _service(reactor, curve, pull="", subs=("tcp://127.0.0.1:1",), sub_connect=True)
    running(svc)
    assert "CURVE is not applied to the publish-sub socket: push_in_sub_connect connects it out" in lines(logs)
    assert svc.sub_reader.socket.getsockopt(zmq.CURVE_SERVER) == 0
    svc.stopService()


KEY1 = z85.encode(b"\x01" * 32).decode()
KEY2 = z85.encode(b"\x02" * 32).decode()


def _request(mechanism=b"CURVE", key=b"\x01" * 32, domain=ZAP_DOMAIN, version=b"1.0"):
    return [b"peer", b"", version, b"r1", domain, b"127.0.0.1", b"", mechanism, key]


@pytest.mark.parametrize("frames, code, why", [
    (_request(), b"200", f"client key {KEY1} allowed"),
    (_request(key=b"\x02" * 32), b"400", f"unknown client key {KEY2}"),
    (_request(mechanism=b"NULL", key=b""), b"400", "mechanism NULL refused"),
    (_request(domain=b"other"), b"400", "mechanism CURVE refused"),
    (_request(version=b"2.0"), b"400", "unsupported ZAP version"),
])
def test_zap_decisions(frames, code, why):
    """ZAP lets in only CURVE handshakes of our domain with a listed key, and replies in RFC 27's form."""
    clients = frozenset({z85.encode(b"\x01" * 32)})
    reply, said = zap_reply(frames, clients)
    assert reply[:4] == [b"peer", b"", b"1.0", b"r1"] and reply[4] == code and said == why
    assert len(reply) == 8


def test_a_malformed_zap_request_gets_no_reply():
    """A request without the envelope delimiter, or too short, is not answered."""
    assert zap_reply([b"x", b"y"], frozenset()) == ([], "malformed ZAP request")
    assert zap_reply([b"peer", b"", b"1.0"], frozenset()) == ([], "malformed ZAP request")


def test_key_files(tmp_path):
    """A bare Z85 secret key file and a clients file made of certificates are both read."""
    public, secret = zmq.curve_keypair()
    (tmp_path / "secret").write_bytes(b"# the server's key\n" + secret + b"\n")
    client_public, _ = zmq.auth.create_certificates(str(tmp_path), "client")
    (tmp_path / "clients").write_bytes(open(client_public, "rb").read())
    curve = load_curve(str(tmp_path / "secret"), str(tmp_path / "clients"))
    assert curve.public_key == public and curve.secret_key == secret
    assert curve.clients == frozenset({zmq.auth.load_certificate(client_public)[0]})
    assert secret.decode() not in repr(curve)


@pytest.mark.parametrize("secret, clients, message", [
    (b"short\n", b"", "expected one Z85 CURVE secret key"),
    (None, b"not a key\n", "line 1: not a Z85 CURVE public key"),
    (None, b"# nobody\n", "no client keys"),
    (None, b'secret-key = "' + b"0" * 40 + b'"\n', "line 1: a secret key; list the clients' public keys"),
])
def test_bad_key_files_are_refused_without_echoing_a_secret(tmp_path, secret, clients, message):
    """Unusable key files stop start-up with a message that names the file, never the key."""
    public, good_secret = zmq.curve_keypair()
    (tmp_path / "secret").write_bytes(secret if secret is not None else good_secret + b"\n")
    (tmp_path / "clients").write_bytes(clients or public + b"\n")
    with pytest.raises(CurveError, match=message) as info:
        load_curve(str(tmp_path / "secret"), str(tmp_path / "clients"))
    assert good_secret.decode() not in str(info.value)


def test_curve_needs_a_clients_file(tmp_path):
    """A CURVE server that would let every key in is refused: the clients file is required."""
    _, secret = zmq.curve_keypair()
    (tmp_path / "secret").write_bytes(secret)
    with pytest.raises(CurveError, match="needs push_in_curve_clients"):
        load_curve(str(tmp_path / "secret"), None)


def test_curve_from_settings(tmp_path, keys):
    """Neither key set: plain ZeroMQ; a clients file alone is an error; both load the configuration."""
    from types import SimpleNamespace

    from pushpin_tx.zeromq.curve import curve_from_settings

    def settings(secret, clients):
        return SimpleNamespace(push_in_curve_secret_key=secret, push_in_curve_clients=clients)

    assert curve_from_settings(settings(None, None)) is None
    with pytest.raises(CurveError, match=r"push_in_curve_clients needs push_in_curve_secret_key"):
        curve_from_settings(settings(None, str(tmp_path / "clients")))
    curve = curve_from_settings(settings(str(tmp_path / "server.key_secret"), str(tmp_path / "clients")))
    assert curve is not None and curve.clients == keys[0].clients
    with pytest.raises(CurveError, match=r"^\[handler\] cannot read"):
        curve_from_settings(settings(str(tmp_path / "missing"), str(tmp_path / "clients")))


@pytest.mark.parametrize("specs, exposed", [
    (["tcp://127.0.0.1:5560", "tcp://localhost:1", "tcp://[::1]:2", "ipc:///run/x", "inproc://y"], []),
    (["tcp://*:5560", "tcp://0.0.0.0:1", "tcp://eth0:2", "tcp://192.0.2.1:3"],
     ["tcp://*:5560", "tcp://0.0.0.0:1", "tcp://eth0:2", "tcp://192.0.2.1:3"]),
])
def test_exposed_specs(specs, exposed):
    """Only tcp:// endpoints off loopback count as reachable from other hosts."""
    from pushpin_tx.zeromq.curve import exposed_specs

    assert exposed_specs(specs) == exposed
