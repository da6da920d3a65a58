"""
pushpin-tx-publish, the pushpin-publish equivalent: the item it builds, its messages and exit
codes, against the real control API resource on a loopback port and a real ZeroMQ PULL socket.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
import zmq
from twisted.internet import threads
from twisted.internet.endpoints import TCP4ServerEndpoint

from pushpin_tx.web.control import ControlResource, ControlSite
from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.protocol.items import parse_zmq_item
from pushpin_tx.scripts.publish import build_item, main, to_json_style
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.stats import Counters

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A subscriber that keeps the items it is handed."""

    def __init__(self) -> None:
        self.items = []

    def deliver(self, publication, channel):
        self.items.append(publication.item)


@pytest.fixture
def control(reactor):
    """The real control API on a loopback port, with a recorder subscribed to "news"."""
    router = ChannelRouter()
    recorder = Recorder()
    router.subscribe("news", recorder)
    site = ControlSite(ControlResource(PublishIntake(router, Counters())), max_headers=10000, max_body=1000000, reactor=reactor)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    yield f"http://127.0.0.1:{port.getHost().port}", recorder
    pytest_twisted.blockon(port.stopListening())


def run_in_thread(argv):
    """main() blocks (urllib); run it off the reactor thread so the control API can answer."""
    return threads.deferToThread(main, argv)


@pytest_twisted.ensureDeferred
async def test_publish_reaches_subscribers_and_prints_published(control, capsys):
    """A publish with every option arrives as the item pushpin-publish would send; exit 0, 'Published'."""
    url, recorder = control
    argv = [
        "--spec", url, "news", "hello",
        "--id", "2", "--prev-id", "1", "--sender", "alice", "-M", "k=v",
        "-H", "X-A: b", "--header", "X-C:d", "--code", "201", "--no-seq",
    ]
    assert await run_in_thread(argv) == 0
    assert capsys.readouterr() == ("Published\n", "")
    (item,) = recorder.items
    assert (item.channel, item.id, item.prev_id, item.no_seq) == ("news", "2", "1", True)
    assert item.meta == {"sender": "alice", "k": "v"}
    assert item.http_stream.content == b"hello\n"
    assert item.ws_message.content == b"hello"
    response = item.http_response
    assert (response.code, response.body) == (201, b"hello\n")
    assert list(response.headers) == [(b"X-A", b"b"), (b"X-C", b"d")]


@pytest_twisted.ensureDeferred
async def test_grip_url_is_the_default_spec(control, capsys, monkeypatch):
    """Without --spec, GRIP_URL names the control API (a trailing slash is fine)."""
    url, recorder = control
    monkeypatch.setenv("GRIP_URL", url + "/")
    assert await run_in_thread(["news", "x", "--no-eol"]) == 0
    assert capsys.readouterr().out == "Published\n"
    assert recorder.items[0].http_stream.content == b"x"


@pytest_twisted.ensureDeferred
async def test_a_refused_publish_prints_the_servers_message_and_exits_1(control, capsys):
    """When the server does not answer 200, its own message is printed after 'Error: '."""
    url, recorder = control
    assert await run_in_thread(["--spec", url + "/not-here", "news", "x"]) == 1
    assert capsys.readouterr() == ("", "Error: Not Found\n")
    assert recorder.items == []


def test_an_unreachable_server_is_reported_like_pushpin(capsys):
    """Connection refused reads as Pushpin's tool says it, and exits 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert main(["--spec", f"http://127.0.0.1:{free}", "news", "x"]) == 1
    assert capsys.readouterr().err == "Error: Connection refused (os error 111)\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["news"], "must specify content"),
        (["news", "x", "--code", "1000"], "code must be an integer between 0 and 999"),
        (["news", "x", "--code", "abc"], "failed to parse code: invalid digit found in string"),
        (["news", "x", "-H", "no-colon"], 'header must be in the form "name: value"'),
        (["news", "x", "-M", "no-equals"], 'meta must be in the form "name=value"'),
        (["news", '{"op": "add"}', "--patch"], "patch content must be a JSON array"),
        (["news", "x", "-u", "user:pass"], "Authentication requires https"),
        (["news", "@/nonexistent/file"], "can't read file /nonexistent/file: No such file or directory (os error 2)"),
    ],
)
def test_bad_arguments_fail_with_pushpins_messages(capsys, args, message):
    """Invalid input is refused before anything is sent, with pushpin-publish's wording and exit 1."""
    assert main(["--spec", "http://127.0.0.1:1", *args]) == 1
    assert capsys.readouterr() == ("", f"Error: {message}\n")


@pytest.mark.parametrize(
    "kwargs, formats",
    [
        ({"hint": True}, {"http-response": {"action": "hint"}, "http-stream": {"action": "hint"}, "ws-message": {"action": "hint"}}),
        ({"close": True}, {"http-stream": {"action": "close"}, "ws-message": {"action": "close"}}),
        ({"content": '[{"op": "replace", "path": "/a", "value": 2}]', "patch": True, "headers": [("X", "1")]},
         {"http-response": {"code": 200, "body-patch": [{"op": "replace", "path": "/a", "value": 2}], "headers": [["X", "1"]]}}),
    ],
)
def test_hint_close_and_patch_items_match_pushpin_publish(kwargs, formats):
    """--hint, --close and --patch build the same formats pushpin-publish sends."""
    content = kwargs.pop("content", None)
    assert build_item("c", content, **kwargs) == {"channel": "c", "formats": formats}


def test_file_content_is_sent_as_is_and_binary_as_base64(tmp_path):
    """@FILE content is the file's bytes (no newline added); non-UTF-8 goes out as body-bin/content-bin."""
    path = tmp_path / "blob"
    path.write_bytes(b"\xff\xfe")
    item = to_json_style(build_item("c", f"@{path}"))
    encoded = base64.b64encode(b"\xff\xfe").decode()
    assert item["formats"] == {
        "http-response": {"code": 200, "body-bin": encoded},
        "http-stream": {"content-bin": encoded},
        "ws-message": {"content-bin": encoded},
    }


def test_a_zmq_spec_pushes_one_tnetstring_frame(capsys):
    """A non-HTTP spec sends the item as one tnetstring frame on a PUSH socket, as Pushpin's tool does."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        assert main(["--spec", f"tcp://127.0.0.1:{port}", "news", "tick", "--id", "7"]) == 0
        assert pull.poll(5000)
        frame = pull.recv(zmq.NOBLOCK)
    finally:
        pull.close(0)
        ctx.term()
    assert capsys.readouterr().out == "Published\n"
    item = parse_zmq_item(frame)
    assert (item.channel, item.id, item.http_stream.content, item.ws_message.content) == ("news", "7", b"tick\n", b"tick")


def test_a_zmq_spec_with_nobody_listening_fails_instead_of_hanging(capsys):
    """Nothing bound at the spec: the tool gives up after --timeout and exits 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    spec = f"tcp://127.0.0.1:{free}"
    assert main(["--spec", spec, "--timeout", "0.2", "news", "x"]) == 1
    assert capsys.readouterr().err == f"Error: could not connect to {spec} within 0.2 s\n"


def test_the_module_runs_as_a_command():
    """python -m pushpin_tx.scripts.publish is the command: usage errors exit non-zero, --version works."""
    version = subprocess.run([sys.executable, "-m", "pushpin_tx.scripts.publish", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("pushpin-tx-publish ")
    usage = subprocess.run([sys.executable, "-m", "pushpin_tx.scripts.publish"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert usage.returncode != 0 and "channel" in usage.stderr


@pytest.fixture
def authed_control(reactor):
    """The control API needing an HS256 JWT with iss "realm", with a recorder on "news"."""
    import time as _time

    from pushpin_tx.protocol.config import SigningKey
    from pushpin_tx.protocol.publish_auth import PublishAuth

    router = ChannelRouter()
    recorder = Recorder()
    router.subscribe("news", recorder)
    auth = PublishAuth(now=_time.time, jwt_key=SigningKey("HS256", b"the publishers' secret, 32 bytes"), issuer="realm")
    site = ControlSite(ControlResource(PublishIntake(router, Counters()), auth=auth), max_headers=10000, max_body=1000000,
                       reactor=reactor)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    yield f"http://127.0.0.1:{port.getHost().port}", recorder
    pytest_twisted.blockon(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_jwt_options_sign_the_publish(authed_control, capsys):
    """--jwt-key and --jwt-iss sign a JWT the control API accepts; without them the publish is refused with 401."""
    url, recorder = authed_control
    key = ["--jwt-key", "the publishers' secret, 32 bytes"]
    assert await run_in_thread(["--spec", url, "news", "signed", *key, "--jwt-iss", "realm"]) == 0
    assert capsys.readouterr().out == "Published\n"
    assert [i.http_stream.content for i in recorder.items] == [b"signed\n"]
    assert await run_in_thread(["--spec", url, "news", "unsigned"]) == 1
    assert await run_in_thread(["--spec", url, "news", "other issuer", *key, "--jwt-iss", "elsewhere"]) == 1
    assert capsys.readouterr().err == "Error: Unauthorized.\nError: Unauthorized.\n"
    assert len(recorder.items) == 1


def test_jwt_with_a_pem_key_file(tmp_path):
    """--jwt-key file:PEM signs RS256 with the private key; a public key file is refused before sending."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from pushpin_tx.scripts.publish import PublishError, jwt_authorization

    private = rsa.generate_private_key(65537, 2048)
    (tmp_path / "key.pem").write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "pub.pem").write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    value = jwt_authorization(f"file:{tmp_path / 'key.pem'}", "realm", 1000.0)
    assert value.startswith("Bearer ")
    claims = jwt.decode(value[7:], private.public_key(), algorithms=["RS256"], options={"verify_exp": False})
    assert claims == {"iss": "realm", "exp": 4600}
    with pytest.raises(PublishError, match="holds a public key"):
        jwt_authorization(f"file:{tmp_path / 'pub.pem'}", None, 1000.0)


def test_curve_options_make_a_curve_client(tmp_path, capsys):
    """--curve-server-key and --curve-secret-key make the PUSH socket a CURVE client of the server's key."""
    import zmq.auth

    server_public, server_secret = zmq.curve_keypair()
    client_public_file, client_secret_file = zmq.auth.create_certificates(str(tmp_path), "client")
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        pull.curve_server = True
        pull.curve_secretkey = server_secret
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        argv = ["--spec", f"tcp://127.0.0.1:{port}", "news", "secure",
                "--curve-server-key", server_public.decode(), "--curve-secret-key", f"file:{client_secret_file}"]
        assert main(argv) == 0
        assert pull.poll(5000)
        frame = pull.recv(zmq.NOBLOCK)
    finally:
        pull.close(0)
        ctx.term()
    assert parse_zmq_item(frame).http_stream.content == b"secure\n"
    assert capsys.readouterr().out == "Published\n"


@pytest.mark.parametrize("args, message", [
    (["--spec", "tcp://127.0.0.1:1", "--curve-server-key", "x" * 40], "CURVE needs both --curve-server-key and --curve-secret-key"),
    (["--spec", "tcp://127.0.0.1:1", "--curve-server-key", "x" * 40, "--curve-secret-key", "y" * 40],
     "--curve-secret-key: give the secret key as file:PATH, not on the command line"),
    (["--spec", "http://127.0.0.1:1", "--curve-server-key", "x" * 40], "the --curve options are for a ZeroMQ spec"),
    (["--spec", "tcp://127.0.0.1:1", "--jwt-key", "k"], "--jwt-key is for an http(s) spec"),
    (["--spec", "http://127.0.0.1:1", "--jwt-iss", "realm"], "--jwt-iss needs --jwt-key"),
])
def test_auth_option_mistakes_are_reported(capsys, args, message):
    """Auth options that cannot apply are refused with a message and exit 1, before anything is sent."""
    assert main([*args, "news", "x"]) == 1
    assert capsys.readouterr().err == f"Error: {message}\n"
