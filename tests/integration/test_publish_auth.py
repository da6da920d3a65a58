"""
Authenticated publishing on the real C{twistd -n pushpin} (issue 18): the control API with
C{push_in_http_auth_key}/C{_iss}/C{_basic}, publishers being the real C{gripcontrol} and
C{pubcontrol} libraries signing as they do for Fanout's service; the ZeroMQ PULL input with
CURVE and real pyzmq clients; the start-up warnings and errors.
"""

from __future__ import annotations

import json
import re
import sys

import bcrypt
import pytest
import pytest_twisted
import zmq
import zmq.auth
from gripcontrol import GripPubControl, HttpStreamFormat
from pubcontrol import Item, PubControlClient
from twisted.internet import defer, threads, utils

from .harness import DEADLINE, child_env, proxy_argv, raw_connect, raw_request, start_origin, start_proxy, write_config, ScriptedOrigin

SECRET = "publishers-secret-of-32-bytes!!!"


def _stream_origin(origin: ScriptedOrigin) -> None:
    def stream(req):
        req.setHeader(b"content-type", b"text/plain")
        req.setHeader(b"grip-hold", b"stream")
        req.setHeader(b"grip-channel", b"news")
        return b"stream start\n"

    origin.handlers[b"/stream"] = stream


@pytest.fixture
def authed(reactor, tmp_path):
    """The proxy with JWT (HS256, issuer realm) and Basic (user:pass) publishing, and a held stream client."""
    (tmp_path / "publishers").write_bytes(b"user:" + bcrypt.hashpw(b"pass", bcrypt.gensalt(rounds=4)) + b"\n")
    origin = ScriptedOrigin()
    _stream_origin(origin)
    port = pytest_twisted.blockon(defer.ensureDeferred(start_origin(reactor, origin)))
    proxy = pytest_twisted.blockon(defer.ensureDeferred(start_proxy(
        reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"],
        push_in_http_auth_key=SECRET, push_in_http_auth_iss="realm", push_in_http_auth_basic="file:publishers")))
    yield proxy
    pytest_twisted.blockon(defer.ensureDeferred(proxy.stop()))
    pytest_twisted.blockon(port.stopListening())


async def _held(reactor, proxy):
    client = await raw_connect(reactor, proxy.client_port)
    client.transport.write(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
    await client.wait_for(reactor, b"stream start\n")
    await proxy.wait_for_log(r"subscribe http://example.com/stream channel=news")
    return client


@pytest_twisted.ensureDeferred
async def test_gripcontrol_and_pubcontrol_publish_with_credentials(reactor, authed):
    """GripPubControl signing for Fanout (control_iss + key) and pubcontrol's Basic both reach the held client."""
    client = await _held(reactor, authed)
    grip = GripPubControl({"control_uri": f"http://127.0.0.1:{authed.control_port}", "control_iss": "realm", "key": SECRET})
    await threads.deferToThread(grip.publish, "news", Item(HttpStreamFormat("signed\n")), blocking=True)
    await client.wait_for(reactor, b"signed\n")
    basic = PubControlClient(f"http://127.0.0.1:{authed.control_port}")
    basic.set_auth_basic("user", "pass")
    await threads.deferToThread(basic.publish, "news", Item(HttpStreamFormat("basic\n")), blocking=True)
    await client.wait_for(reactor, b"basic\n")
    assert SECRET not in authed.output and "pass" not in authed.output.replace("passed", "")
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_refused_publishes_change_nothing(reactor, authed):
    """No credentials, a wrong key and a wrong password get 401 with WWW-Authenticate; the client sees none of them."""
    client = await _held(reactor, authed)
    body = json.dumps({"items": [{"channel": "news", "formats": {"http-stream": {"content": "leak\n"}}}]}).encode()
    for header in (b"", b"Authorization: Basic dXNlcjp3cm9uZw==\r\n"):
        got = await raw_request(reactor, authed.control_port,
                                b"POST /publish/ HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s" % (header, len(body), body),
                                until=b"Unauthorized.\n")
        assert got.received.startswith(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"pushpin\"\r\n"
                                       b"WWW-Authenticate: Basic realm=\"pushpin\", charset=\"UTF-8\"\r\n")
    wrong = GripPubControl({"control_uri": f"http://127.0.0.1:{authed.control_port}", "control_iss": "realm",
                            "key": "another-secret-also-32-bytes!!!!"})
    with pytest.raises(Exception, match="401"):
        await threads.deferToThread(wrong.publish, "news", Item(HttpStreamFormat("leak\n")), blocking=True)
    good = GripPubControl({"control_uri": f"http://127.0.0.1:{authed.control_port}", "control_iss": "realm", "key": SECRET})
    await threads.deferToThread(good.publish, "news", Item(HttpStreamFormat("after\n")), blocking=True)
    await client.wait_for(reactor, b"after\n")
    assert b"leak" not in client.received
    await authed.wait_for_log(r"code=401 \d+ auth=wrong user or password")
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_pushpin_tx_publish_signs_with_jwt(reactor, authed):
    """pushpin-tx-publish --jwt-key/--jwt-iss publishes to the authenticated proxy; without them it is refused."""
    client = await _held(reactor, authed)
    url = f"http://127.0.0.1:{authed.control_port}"
    argv = ["-m", "pushpin_tx.scripts.publish", "--spec", url, "news"]
    out, err, code = await utils.getProcessOutputAndValue(sys.executable, [*argv, "unsigned"], env=child_env())
    assert (code, err) == (1, b"Error: Unauthorized.\n")
    out, err, code = await utils.getProcessOutputAndValue(
        sys.executable, [*argv, "from the tool", "--jwt-key", SECRET, "--jwt-iss", "realm"], env=child_env())
    assert (code, out) == (0, b"Published\n")
    await client.wait_for(reactor, b"from the tool\n")
    client.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_curve_on_the_pull_input(reactor, tmp_path):
    """With CURVE keys configured, a listed pyzmq CURVE client publishes and an unknown key gets nothing in."""
    server_public, server_secret = zmq.auth.create_certificates(str(tmp_path), "server")
    good, stranger = zmq.curve_keypair(), zmq.curve_keypair()
    (tmp_path / "clients").write_bytes(good[0] + b"\n")
    origin = ScriptedOrigin()
    _stream_origin(origin)
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{port.getHost().port}"],
                              push_in_curve_secret_key="file:server.key_secret", push_in_curve_clients="file:clients")
    ctx = zmq.Context()
    socks = []
    try:
        server_key = zmq.auth.load_certificate(server_public)[0]
        await proxy.wait_for_log(re.escape(f"CURVE on for the ZeroMQ inputs: server public key {server_key.decode()}"))
        endpoint = (await proxy.wait_for_log(r"publish-pull bound to (tcp://\S+)")).group(1)
        client = await _held(reactor, proxy)
        for pair, text in ((stranger, "stranger"), (good, "listed")):
            sock = ctx.socket(zmq.PUSH)
            socks.append(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.curve_publickey, sock.curve_secretkey = pair
            sock.curve_serverkey = server_key
            sock.connect(endpoint)
            sock.send(b"J" + json.dumps({"channel": "news", "formats": {"http-stream": {"content": text + "\n"}}}).encode())
            if text == "stranger":
                await proxy.wait_for_log(re.escape(f"ZAP: CURVE connection refused: unknown client key {stranger[0].decode()}"))
        await client.wait_for(reactor, b"listed\n")
        assert b"stranger" not in client.received
        client.transport.loseConnection()
    finally:
        for sock in socks:
            sock.close(linger=0)
        ctx.term()
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_reachable_without_credentials_warns(reactor, tmp_path):
    """A control API on every interface without credentials, and ZeroMQ inputs off loopback without CURVE, start with a loud warning."""
    proxy = await start_proxy(reactor, tmp_path, ["* 127.0.0.1:1"], push_in_http_addr="0.0.0.0", push_in_spec="tcp://*:0")
    try:
        await proxy.wait_for_log(r"SECURITY: the control API listens on 0\.0\.0\.0, reachable from other hosts, with no credentials")
        await proxy.wait_for_log(r"SECURITY: ZeroMQ inputs bound off loopback without CURVE \(tcp://\*:0\)")
    finally:
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_credentials_silence_the_warning(reactor, tmp_path):
    """With a key configured, a control API on every interface starts without the warning."""
    proxy = await start_proxy(reactor, tmp_path, ["* 127.0.0.1:1"], push_in_http_addr="0.0.0.0", push_in_http_auth_key=SECRET)
    try:
        await proxy.wait_for_log(r"control API listening")
        assert "SECURITY" not in proxy.output
    finally:
        await proxy.stop()


@pytest.mark.parametrize("overrides, message", [
    ({"push_in_http_auth_basic": "file:missing"}, "push_in_http_auth_basic: cannot read"),
    ({"push_in_http_auth_iss": "realm"}, "push_in_http_auth_iss needs push_in_http_auth_key"),
    ({"push_in_http_auth_basic": "publishers"}, "push_in_http_auth_basic: expected file:PATH"),
    ({"push_in_curve_clients": "file:clients"}, "push_in_curve_clients needs push_in_curve_secret_key"),
    ({"push_in_curve_secret_key": "file:missing", "push_in_curve_clients": "file:missing"}, "cannot read the CURVE secret key file"),
])
@pytest_twisted.ensureDeferred
async def test_unusable_credentials_stop_start_up(reactor, tmp_path, overrides, message):
    """A bad auth or CURVE setting stops start-up with one message naming the key, and no secret."""
    conf = write_config(tmp_path, ["* 127.0.0.1:1"], **overrides)
    d = utils.getProcessOutputAndValue(sys.executable, proxy_argv("--config", str(conf))[1:], env=child_env(), path=str(tmp_path))
    d.addTimeout(DEADLINE, reactor)
    out, err, code = await d
    assert code != 0
    assert message in (out + err).decode()
