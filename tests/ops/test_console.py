"""
The operator console: its helpers against real holds on a Clock, its access rules, and one
real SSH login (twisted.conch client) on a loopback port.
"""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import bcrypt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec
from twisted.conch.ssh import channel, connection, keys, session, transport, userauth
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint

from pushpin_tx.ops.console import (
    ConsoleConfigError,
    _passwd_checker,
    is_local_endpoint,
    load_or_create_host_key,
    make_console_service,
)
from pushpin_tx.ops.console_helpers import ConnInfo, ConsoleHelpers, Text
from pushpin_tx.protocol.grip import parse_instruct
from pushpin_tx.core.hold import ResponseHold, StreamHold
from pushpin_tx.core.intake import PublishIntake

from tests.fakes import RecordingSink, hold_context

# --- helpers against a small fake service ------------------------------------------------------


class ClientRequest(RecordingSink):
    """A hold's sink that also answers what the console asks of a twisted.web request."""

    def __init__(self, peer: tuple[str, int], uri: bytes) -> None:
        super().__init__()
        self._peer = peer
        self.uri = uri

    def getClientAddress(self):
        return IPv4Address("TCP", *self._peer)

    def isSecure(self):
        return False

    def getHeader(self, name):
        return b"example.com" if name == b"host" else None


class FakeService:
    """The parts of PushpinService the console reads, over real holds and a real router."""

    def __init__(self, clock) -> None:
        self.reactor = clock
        self.ctx = hold_context(clock)
        self.router = self.ctx.router
        self.counters = self.ctx.counters
        self.acceptor = SimpleNamespace(connections={})
        self.intake = PublishIntake(self.router, self.counters)
        self.reloads = 0
        self.worker_index = 0
        self.workers = None
        self.backplane = None
        self.sequencer = None

    def connection_tables(self):
        """The OpsView's connections: HTTP holds, and WebSocket sessions when a test adds some."""
        websockets = getattr(self, "websockets", None)
        return [self.acceptor.connections] + ([websockets.connections] if websockets is not None else [])

    def publish(self, items, source) -> None:
        """The OpsView's publish lever: through the intake."""
        self.intake.publish(items, source)

    def reload(self) -> None:
        self.reloads += 1

    def hold(self, kind: str, conn_id: str, *channels: str, peer=("10.0.0.7", 50123), uri=b"/x"):
        headers = [(b"Grip-Hold", kind.encode()), (b"Grip-Channel", ", ".join(channels).encode())]
        instruct = parse_instruct(200, b"OK", headers, b"", request_uri="http://example.com/x")
        sink = ClientRequest(peer, uri)
        cls = StreamHold if kind == "stream" else ResponseHold
        hold = cls(self.ctx, sink, instruct, conn_id)
        hold.start()
        self.acceptor.connections[conn_id] = hold
        self.counters.held[kind] += 1
        return hold

    def close_all(self) -> None:
        for hold in self.acceptor.connections.values():
            hold.client_gone()


@pytest.fixture
def fake(clock):
    service = FakeService(clock)
    yield service
    service.close_all()


def test_channels_lists_subscriber_counts_sorted_by_name(fake):
    """channels() maps each channel with listeners to its subscriber count, in name order."""
    fake.hold("stream", "1", "b")
    fake.hold("stream", "2", "a", "b")
    fake.hold("response", "3", "a")
    got = ConsoleHelpers(fake).channels()
    assert got == {"a": 2, "b": 2}
    assert list(got) == ["a", "b"]


def test_conn_shows_peer_route_channels_queue_and_age(fake, clock):
    """conn(id) reports who is held where: peer, URI, channels, queue depth, drops and age."""
    hold = fake.hold("stream", "7", "news", "sport", peer=("10.1.2.3", 4567), uri=b"/feed?x=1")
    hold.route_id = "main"
    hold.queue.pauseProducing()
    hold.queue.offer(b"one", "news")
    hold.queue.offer(b"two", "news")
    clock.advance(12.5)
    info = ConsoleHelpers(fake).conn("7")
    assert info == ConnInfo(
        conn_id="7", kind="stream", peer="10.1.2.3:4567", route="main", uri="http://example.com/feed?x=1",
        channels=("news", "sport"), queue_depth=2, dropped=0, delivered=0, age=12.5,
    )


def test_conn_of_a_long_poll_has_no_queue(fake):
    """A response hold has no delivery queue: its depth and drops show as None."""
    fake.hold("response", "4", "c")
    info = ConsoleHelpers(fake).conn(4)
    assert (info.kind, info.queue_depth, info.dropped, info.route) == ("response", None, None, None)


def test_conn_of_an_unknown_id_raises_a_clear_key_error(fake):
    """Asking for a connection that is not held says so by name."""
    with pytest.raises(KeyError, match="no held connection with id '99'"):
        ConsoleHelpers(fake).conn("99")


def test_conns_prints_one_line_each_in_numeric_id_order(fake, clock):
    """conns() is a header, one line per held connection (ids in numeric order), and a total."""
    fake.hold("stream", "10", "a", peer=("10.0.0.1", 1))
    fake.hold("response", "2", "b", peer=("10.0.0.2", 2))
    clock.advance(3)
    text = ConsoleHelpers(fake).conns()
    lines = text.splitlines()
    assert lines[0].split() == ["id", "kind", "age", "queue", "dropped", "peer", "channels"]
    assert lines[1].split() == ["2", "response", "3.0s", "-", "-", "10.0.0.2:2", "b"]
    assert lines[2].split() == ["10", "stream", "3.0s", "0", "0", "10.0.0.1:1", "a"]
    assert lines[3] == "2 held connections"
    assert repr(text) == str(text)  # the prompt shows the table, not a quoted string


def test_conns_limit_says_how_many_more_there_are(fake):
    """With more connections than the limit, the list ends with how many were left out."""
    for i in range(5):
        fake.hold("stream", str(i), "a")
    lines = ConsoleHelpers(fake).conns(limit=2).splitlines()
    assert len(lines) == 1 + 2 + 2
    assert lines[3] == "... 3 more (conns(limit=None) shows all)"
    assert lines[4] == "5 held connections"


def test_publish_reaches_streams_and_long_polls_through_the_intake(fake):
    """publish() sends one item with stream and response formats; both kinds of hold get it."""
    stream = fake.hold("stream", "1", "news")
    poll = fake.hold("response", "2", "news")
    receivers = ConsoleHelpers(fake).publish("news", "hello\n")
    assert receivers == 2
    assert stream._sink.framed == [b"6\r\nhello\n\r\n"]
    assert poll._sink.body == b"hello\n" and poll._sink.finished
    assert fake.counters.publishes["console"] == 1


def test_publish_of_bytes_sends_them_unchanged(fake):
    """Binary content is published as content-bin and arrives byte for byte."""
    stream = fake.hold("stream", "1", "bin")
    assert ConsoleHelpers(fake).publish("bin", b"\xff\x00") == 1
    assert stream._sink.framed == [b"2\r\n\xff\x00\r\n"]


def test_publish_to_an_idle_channel_reaches_nobody(fake):
    """Publishing where nobody listens is fine and returns 0."""
    assert ConsoleHelpers(fake).publish("nobody", "x") == 0


def test_close_drops_the_connection_and_its_subscriptions(fake):
    """close(id) aborts the client connection and leaves its channels at once."""
    hold = fake.hold("stream", "5", "news")
    helpers = ConsoleHelpers(fake)
    assert helpers.close("5") is True
    assert hold._sink.aborted
    assert fake.router.subscriber_count("news") == 0
    assert helpers.close("nope") is False


def test_reload_and_stats_reach_the_service(fake):
    """reload() re-reads routes through the service; stats() snapshots the counters."""
    fake.hold("stream", "1", "a")
    helpers = ConsoleHelpers(fake)
    helpers.reload()
    assert fake.reloads == 1
    stats = helpers.stats()
    assert stats["held"] == {"stream": 1}
    assert stats["held_connections"] == 1 and stats["channels"] == 1
    assert {"requests_received", "publishes", "deliveries", "drops"} <= set(stats)


def test_help_documents_every_helper_in_the_namespace(fake):
    """help() names each helper the prompt offers, and the namespace offers them all."""
    helpers = ConsoleHelpers(fake)
    ns = helpers.namespace()
    names = ["channels", "conn", "conns", "publish", "close", "reload", "stats", "help"]
    text = helpers.help()
    assert isinstance(text, Text)
    for name in names:
        assert f"{name}(" in text
        assert callable(ns[name])
    assert ns["router"] is fake.router and ns["counters"] is fake.counters
    assert "Drop a held connection" in helpers.help(helpers.close)  # help(obj) still works


# --- access rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "description, local",
    [
        ("tcp:5564:interface=127.0.0.1", True),
        ("tcp:0:interface=127.0.0.2", True),
        (r"tcp6:5564:interface=\:\:1", True),
        ("tcp:5564:127.0.0.1", True),
        ("unix:/run/pushpin/console.sock", True),
        ("tcp:5564", False),
        ("5564", False),
        ("tcp:5564:interface=0.0.0.0", False),
        ("tcp:5564:interface=10.0.0.1", False),
        ("tcp:5564:interface=localhost", False),
        ("ssl:5564:interface=127.0.0.1", False),
    ],
)
def test_only_loopback_and_unix_endpoints_count_as_local(description, local):
    """Loopback TCP and Unix sockets are local; all interfaces, other addresses and other kinds are not."""
    assert is_local_endpoint(description) is local


@pytest.fixture
def key_files(tmp_path):
    """A client key, an authorized_keys file holding it, and a host key path."""
    client = keys.Key(ec.generate_private_key(ec.SECP256R1()))
    auth = tmp_path / "authorized_keys"
    auth.write_bytes(b"# operators\n" + client.public().toString("openssh") + b" alice@test\n")
    return SimpleNamespace(client=client, authorized_keys=str(auth), host_key=str(tmp_path / "host_key"), dir=tmp_path)


def build(key_files, namespace=None, **overrides):
    kwargs = dict(
        endpoint="tcp:0:interface=127.0.0.1",
        authorized_keys=key_files.authorized_keys,
        passwd=None,
        telnet_endpoint=None,
        host_key_path=key_files.host_key,
    )
    kwargs.update(overrides)
    return make_console_service(namespace or {}, **kwargs)


def test_no_credentials_refuses_to_start(key_files):
    """Without authorized_keys or passwd there is no console: no default password, a clear error."""
    with pytest.raises(ConsoleConfigError, match="no credentials configured"):
        build(key_files, authorized_keys=None, passwd=None)


@pytest.mark.parametrize("endpoint", ["tcp:5564", "tcp:5564:interface=0.0.0.0", "tcp:5564:interface=192.0.2.1"])
def test_a_non_loopback_ssh_endpoint_is_refused_unless_allowed(key_files, endpoint):
    """SSH on a public interface needs allow_remote; with it, the console is built."""
    with pytest.raises(ConsoleConfigError, match="not loopback"):
        build(key_files, endpoint=endpoint)
    assert build(key_files, endpoint=endpoint, allow_remote=True) is not None


def test_telnet_must_be_local_and_password_protected(key_files):
    """Telnet is refused off loopback (even with allow_remote) and without a passwd file."""
    passwd = key_files.dir / "passwd"
    passwd.write_bytes(b"admin:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)) + b"\n")
    with pytest.raises(ConsoleConfigError, match="telnet endpoint"):
        build(key_files, passwd=str(passwd), telnet_endpoint="tcp:5565", allow_remote=True)
    with pytest.raises(ConsoleConfigError, match="telnet needs a passwd file"):
        build(key_files, telnet_endpoint="tcp:5565:interface=127.0.0.1")
    assert build(key_files, passwd=str(passwd), telnet_endpoint="tcp:5565:interface=127.0.0.1") is not None


@pytest.mark.parametrize("content, message", [(None, "cannot read it"), (b"# nothing here\n", "no usable entries")])
def test_an_unusable_authorized_keys_file_refuses_to_start(key_files, content, message):
    """A missing or keyless authorized_keys file is a start-up error, not a console nobody can enter."""
    path = key_files.dir / "empty_keys"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConsoleConfigError, match=message):
        build(key_files, authorized_keys=str(path))


def _login(checker, user: bytes, password: bytes):
    outcome = []
    checker.requestAvatarId(UsernamePassword(user, password)).addBoth(outcome.append)
    return outcome[0]


@pytest.mark.parametrize(
    "line, password, ok",
    [
        (b"admin:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)), b"s3cret", True),
        (b"admin:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)), b"wrong", False),
        (b"admin:plain-dev-pw:1000:1000::/:/bin/sh", b"plain-dev-pw", True),
        (b"admin:plain-dev-pw", b"plain", False),
        (b"admin:", b"", False),
    ],
)
def test_passwd_file_accepts_bcrypt_or_plain_and_never_an_empty_password(tmp_path, line, password, ok):
    """passwd lines hold a bcrypt hash (or a plain development password); an empty one never logs in."""
    path = tmp_path / "passwd"
    path.write_bytes(line + b"\n")
    outcome = _login(_passwd_checker(str(path)), b"admin", password)
    if ok:
        assert outcome == b"admin"
    else:
        assert outcome.check(UnauthorizedLogin)


def test_host_key_is_made_once_private_and_then_reused(tmp_path):
    """The first start writes a small ECDSA host key readable only by us; later starts load it."""
    path = str(tmp_path / "host_key")
    first = load_or_create_host_key(path)
    assert first.sshType() == b"ecdsa-sha2-nistp256"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_host_key(path) == first


def test_an_unwritable_host_key_path_is_a_clear_error(tmp_path):
    """A host key that cannot be created names the path and the setting to change."""
    with pytest.raises(ConsoleConfigError, match="host_key"):
        load_or_create_host_key(str(tmp_path / "missing-dir" / "host_key"))


# --- a real SSH session ------------------------------------------------------------------------------


class _Shell(channel.SSHChannel):
    """A session channel with a pty and a shell; types one line and collects the output."""

    name = b"session"

    def __init__(self, line: bytes, want: bytes, **kw) -> None:
        super().__init__(**kw)
        self.line = line
        self.want = want
        self.output = b""
        self.found: defer.Deferred = defer.Deferred()

    def channelOpen(self, data):
        pty = session.packRequest_pty_req(b"xterm", (25, 200, 0, 0), b"")
        d = self.conn.sendRequest(self, b"pty-req", pty, wantReply=True)
        d.addCallback(lambda _: self.conn.sendRequest(self, b"shell", b"", wantReply=True))
        d.addCallback(lambda _: self.write(self.line))
        d.addErrback(self.found.errback)

    def dataReceived(self, data):
        self.output += data
        if self.want in self.output and not self.found.called:
            self.found.callback(self.output)


class _Connection(connection.SSHConnection):
    def __init__(self, client) -> None:
        super().__init__()
        self.client = client

    def serviceStarted(self):
        super().serviceStarted()
        shell = _Shell(self.client.line, self.client.want, conn=self)
        self.client.shell = shell
        self.openChannel(shell)
        self.client.logged_in.callback(None)


class _Auth(userauth.SSHUserAuthClient):
    """Offers one key, once; no passwords."""

    def __init__(self, user: bytes, conn, key: keys.Key) -> None:
        super().__init__(user, conn)
        self.key = key
        self.offered = False
        self.key_refused = False

    def ssh_USERAUTH_FAILURE(self, packet):
        if self.lastAuth == b"publickey":
            self.key_refused = True
        return super().ssh_USERAUTH_FAILURE(packet)

    def getPublicKey(self):
        if self.offered:
            return None
        self.offered = True
        return self.key.public()

    def getPrivateKey(self):
        return defer.succeed(self.key)

    def getPassword(self, prompt=None):
        return None


class _Client(transport.SSHClientTransport):
    def __init__(self, key, line, want) -> None:
        self.key = key
        self.line = line
        self.want = want
        self.host_key: bytes | None = None
        self.logged_in: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.shell: _Shell | None = None

    def verifyHostKey(self, hostKey, fingerprint):
        self.host_key = hostKey
        return defer.succeed(True)

    def connectionSecure(self):
        self.auth = _Auth(b"alice", _Connection(self), self.key)
        self.requestService(self.auth)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        if not self.logged_in.called:
            self.logged_in.errback(UnauthorizedLogin("disconnected before logging in"))
        self.closed.callback(None)


async def _connect(reactor, port: int, key, line=b"channels()\r", want=b"{'news': 2}"):
    factory = protocol.Factory.forProtocol(lambda: _Client(key, line, want))
    return await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)


@pytest_twisted.ensureDeferred
async def test_ssh_login_with_an_authorized_key_runs_helpers(reactor, key_files, fake):
    """An authorized key logs in over SSH on loopback; channels() at the prompt shows the live channels."""
    fake.hold("stream", "1", "news")
    fake.hold("stream", "2", "news")
    console = build(key_files, ConsoleHelpers(fake).namespace())
    console.privilegedStartService()
    console.startService()
    try:
        port = console.ssh_port.getHost().port
        client = await _connect(reactor, port, key_files.client)
        try:
            await client.logged_in.addTimeout(10, reactor)
            output = await client.shell.found.addTimeout(10, reactor)
            assert b"\r\n{'news': 2}" in output
            host_key = keys.Key.fromFile(key_files.host_key)
            assert client.host_key == host_key.public().blob()
        finally:
            client.transport.loseConnection()
            await client.closed
    finally:
        await console.stopService()


@pytest_twisted.ensureDeferred
async def test_ssh_prompt_shows_prefix_subscriptions(reactor, key_files, fake):
    """Over a real SSH login, prefixes() at the prompt shows the live prefix subscriptions and their counts."""
    fake.hold("stream", "1", "news", "news.; prefix")
    fake.hold("stream", "2", "news.; prefix")
    console = build(key_files, ConsoleHelpers(fake).namespace())
    console.privilegedStartService()
    console.startService()
    try:
        port = console.ssh_port.getHost().port
        client = await _connect(reactor, port, key_files.client, line=b"prefixes()\r", want=b"{'news.': 2}")
        try:
            await client.logged_in.addTimeout(10, reactor)
            output = await client.shell.found.addTimeout(10, reactor)
            assert b"\r\n{'news.': 2}" in output
        finally:
            client.transport.loseConnection()
            await client.closed
    finally:
        await console.stopService()


@pytest_twisted.ensureDeferred
async def test_ssh_login_with_an_unknown_key_is_refused(reactor, key_files):
    """A key that is not in authorized_keys never gets a session."""
    console = build(key_files)
    console.privilegedStartService()
    console.startService()
    try:
        stranger = keys.Key(ec.generate_private_key(ec.SECP256R1()))
        client = await _connect(reactor, console.ssh_port.getHost().port, stranger)
        with pytest.raises(UnauthorizedLogin):
            await client.logged_in.addTimeout(10, reactor)
        await client.closed
        assert client.auth.key_refused  # the server said no to the signed key, not something else
        assert client.shell is None
    finally:
        await console.stopService()



class _Collect(protocol.Protocol):
    def __init__(self, want: bytes) -> None:
        self.want = want
        self.data = b""
        self.found: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data):
        self.data += data
        if self.want in self.data and not self.found.called:
            self.found.callback(self.data)

    def connectionLost(self, reason):
        self.closed.callback(None)


@pytest_twisted.ensureDeferred
async def test_start_and_stop_log_each_listener_once_by_its_role(reactor, key_files):
    """Starting and stopping the SSH and telnet consoles logs 'console (ssh) listening on ...', no factory noise."""
    from twisted.logger import formatEvent, globalLogPublisher

    passwd = key_files.dir / "passwd"
    passwd.write_bytes(b"admin:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)) + b"\n")
    said: list[str] = []
    observe = lambda event: said.append(formatEvent(event))  # noqa: E731
    globalLogPublisher.addObserver(observe)
    try:
        console = build(key_files, passwd=str(passwd), telnet_endpoint="tcp:0:interface=127.0.0.1")
        console.privilegedStartService()
        console.startService()
        await console.stopService()
    finally:
        globalLogPublisher.removeObserver(observe)
    # (the ports' own "ConchFactory starting on N" is ops.logs' to show at debug only)
    assert [line for line in said if line.startswith(("Starting factory", "Stopping factory"))] == []
    assert [line.split(" on ")[0] for line in said if " listening on " in line] == ["console (ssh) listening", "console (telnet) listening"]


@pytest_twisted.ensureDeferred
async def test_telnet_on_loopback_asks_for_a_login(reactor, key_files):
    """The development telnet console listens on loopback and asks for a user name before anything else."""
    passwd = key_files.dir / "passwd"
    passwd.write_bytes(b"admin:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(4)) + b"\n")
    console = build(key_files, passwd=str(passwd), telnet_endpoint="tcp:0:interface=127.0.0.1")
    console.privilegedStartService()
    console.startService()
    try:
        port = console.telnet_port.getHost().port
        client = _Collect(b"Username: ")
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(protocol.Factory.forProtocol(lambda: client))
        try:
            await client.found.addTimeout(10, reactor)
        finally:
            client.transport.loseConnection()
            await client.closed
    finally:
        await console.stopService()


class _WsClient:
    """A WebSocket session's client link: a protocol with a transport, and drop()."""

    def __init__(self) -> None:
        self.transport = SimpleNamespace(getPeer=lambda: IPv4Address("TCP", "10.9.9.9", 999))
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True


def test_websocket_sessions_are_listed_inspected_and_closed_too(fake, clock):
    """Sessions in the WebSocket gateway's table show up in conns()/conn() and close() drops them."""
    session = SimpleNamespace(kind="ws", channels={"chat": None}, queue=None, started_at=clock.seconds(), client=_WsClient())
    fake.websockets = SimpleNamespace(connections={"12": session})
    fake.hold("stream", "3", "news")
    helpers = ConsoleHelpers(fake)
    assert [line.split()[:2] for line in helpers.conns().splitlines()[1:3]] == [["3", "stream"], ["12", "ws"]]
    info = helpers.conn("12")
    assert (info.kind, info.peer, info.channels, info.queue_depth) == ("ws", "10.9.9.9:999", ("chat",), None)
    assert helpers.close("12") is True and session.client.dropped
    assert helpers.stats()["held_connections"] == 2


def test_prefixes_lists_prefix_subscriber_counts_apart_from_channels(fake):
    """prefixes() maps each subscribed prefix to its prefix subscribers, by name; channels() stays exact channels."""
    fake.hold("stream", "1", "news", "room.; prefix")
    fake.hold("stream", "2", "news.; prefix", "room.; prefix")
    fake.hold("response", "3", "news.; prefix")
    helpers = ConsoleHelpers(fake)
    got = helpers.namespace()["prefixes"]()
    assert got == {"news.": 2, "room.": 2} and list(got) == ["news.", "room."]
    assert helpers.channels() == {"news": 1}
    stats = helpers.stats()
    assert (stats["channels"], stats["prefixes"]) == (1, 2)
    assert "prefixes()" in helpers.help()


def test_a_connections_prefixes_show_in_conn_and_conns(fake, clock):
    """conn(id) lists a hold's prefix subscriptions apart from its channels; its conns() line names them."""
    fake.hold("stream", "7", "news", "news.; prefix", "room.; prefix; filter=skip-self", peer=("10.1.2.3", 4567))
    helpers = ConsoleHelpers(fake)
    info = helpers.conn("7")
    assert (info.channels, info.prefixes) == (("news",), ("news.", "room."))
    line = helpers.conns().splitlines()[1]
    assert line.split()[-2:] == ["news", "prefixes=news.,room."]
    assert ConsoleHelpers(fake).conn("7") == info  # a value: equal when nothing changed
    fake.hold("stream", "8", "plain")
    assert helpers.conn("8").prefixes == () and "prefixes=" not in helpers.conns().splitlines()[2]


def test_a_websocket_sessions_prefixes_show_in_conn(fake, clock):
    """A WebSocket session's subscribe with "prefix": true shows as a prefix of that connection, and in prefixes()."""
    import json

    from pushpin_tx.core.ws_session import OPCODE_TEXT, WsSession
    from tests.core.test_ws_session import FakeClient, FakeOrigin

    session = WsSession(fake.ctx, "12", grip=True)
    session.open(FakeClient(), FakeOrigin())
    session.origin_message(OPCODE_TEXT, b"c:" + json.dumps({"type": "subscribe", "channel": "chat"}).encode())
    session.origin_message(OPCODE_TEXT, b"c:" + json.dumps({"type": "subscribe", "channel": "news.", "prefix": True}).encode())
    fake.websockets = SimpleNamespace(connections={"12": session})
    helpers = ConsoleHelpers(fake)
    try:
        info = helpers.conn("12")
        assert (info.kind, info.channels, info.prefixes) == ("ws", ("chat",), ("news.",))
        assert helpers.prefixes() == {"news.": 1} and helpers.channels() == {"chat": 1}
    finally:
        session.end()


def test_workers_table_has_a_prefixes_column(fake):
    """workers() shows each process's prefix count beside its channels."""
    fake.hold("stream", "1", "a", "news.; prefix", "room.; prefix")
    lines = ConsoleHelpers(fake).workers().splitlines()
    assert lines[0].split()[3:6] == ["held", "channels", "prefixes"]
    assert lines[1].split()[3:6] == ["1", "1", "2"]


def test_settings_can_be_checked_before_anything_is_built(key_files):
    """check_console_settings refuses the same mistakes up front, so start-up can report them as usage errors."""
    from pushpin_tx.ops.console import check_console_settings

    ok = dict(endpoint="tcp:5564:interface=127.0.0.1", authorized_keys=key_files.authorized_keys, passwd=None, telnet_endpoint=None)
    assert check_console_settings(**ok) is None
    with pytest.raises(ConsoleConfigError, match="no credentials"):
        check_console_settings(**{**ok, "authorized_keys": None})
    with pytest.raises(ConsoleConfigError, match="not loopback"):
        check_console_settings(**{**ok, "endpoint": "tcp:5564"})


def test_backplane_shows_off_or_the_backplanes_state(fake):
    """backplane() is {'state': 'off'} without a backplane, else the backplane's snapshot; help() names it."""
    helpers = ConsoleHelpers(fake)
    assert helpers.namespace()["backplane"]() == {"state": "off"}
    fake.backplane = SimpleNamespace(snapshot=lambda: {"state": "down", "url": "redis://:***@10.0.0.5:6379/0"})
    assert helpers.backplane() == {"state": "down", "url": "redis://:***@10.0.0.5:6379/0"}
    assert "backplane()" in helpers.help()
