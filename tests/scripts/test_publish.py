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
