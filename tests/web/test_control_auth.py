"""
Authenticated publishing on the control API (issue 18): JWT Bearer and Basic credentials,
checked on a real loopback listener in this process, publishers being the real C{pubcontrol}
and C{gripcontrol} libraries signing as they do for Fanout's service.
"""

from __future__ import annotations

import base64
import time

import bcrypt
import jwt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from gripcontrol import GripPubControl, HttpStreamFormat
from pubcontrol import Item, PubControlClient
from twisted.internet import threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher

from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.stats import Counters
from pushpin_tx.protocol.config import SigningKey
from pushpin_tx.protocol.publish_auth import BasicAttempt, PublishAuth, PublishAuthError, Verdict, load_htpasswd
from pushpin_tx.web.control import ControlResource, ControlSite

from tests.integration.harness import raw_request

SECRET = b"a publisher's shared secret, 32+"
BODY = b'{"items":[{"channel":"c","formats":{"http-stream":{"content":"hi\\n"}}}]}'


class Recorder:
    def __init__(self):
        self.got = []

    def deliver(self, publication, channel):
        self.got.append((channel, publication.stream_content))


def _hash(password: bytes) -> bytes:
    return bcrypt.hashpw(password, bcrypt.gensalt(rounds=4))  # the cheapest cost: tests stay fast


def _auth(**kw) -> PublishAuth:
    return PublishAuth(now=time.time, **kw)


def _listen(reactor, auth: PublishAuth):
    router = ChannelRouter()
    sub = Recorder()
    router.subscribe("c", sub)
    recovered: list[int] = []
    resource = ControlResource(PublishIntake(router, Counters()), recover=lambda: recovered.append(1), auth=auth)
    site = ControlSite(resource, max_headers=10000, max_body=1000000, reactor=reactor)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site))
    return port, sub, recovered


@pytest.fixture
def hs256(reactor):
    port, sub, recovered = _listen(reactor, _auth(jwt_key=SigningKey("HS256", SECRET), issuer="realm"))
    yield port.getHost().port, sub, recovered
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def basic(reactor, tmp_path):
    path = tmp_path / "publishers"
    path.write_bytes(b"# publishers\nuser:" + _hash(b"pass") + b"\n\nother:" + _hash(b"x") + b"\n")
    port, sub, recovered = _listen(reactor, _auth(users=load_htpasswd(str(path))))
    yield port.getHost().port, sub, recovered
    pytest_twisted.blockon(port.stopListening())


def _post(path: bytes, authorization: bytes | None = None, body: bytes = BODY) -> bytes:
    extra = b"Authorization: " + authorization + b"\r\n" if authorization is not None else b""
    return b"POST %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Length: %d\r\n\r\n%s" % (path, extra, len(body), body)


async def _send(reactor, port: int, data: bytes) -> bytes:
    return (await raw_request(reactor, port, data)).received


def _token(claims: dict, key=SECRET, algorithm="HS256") -> bytes:
    return jwt.encode(claims, key, algorithm=algorithm).encode("ascii")


UNAUTHORIZED_BEARER = (
    b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm="pushpin"\r\nContent-Type: text/plain\r\n'
    b"Connection: close\r\nContent-Length: 14\r\n\r\nUnauthorized.\n"
)


@pytest_twisted.ensureDeferred
async def test_gripcontrol_signing_as_for_fanout_publishes(reactor, hs256):
    """GripPubControl with control_iss and key (Fanout's form) signs a JWT that is accepted."""
    port, sub, _ = hs256
    publisher = GripPubControl({"control_uri": f"http://127.0.0.1:{port}", "control_iss": "realm", "key": SECRET})
    await threads.deferToThread(publisher.publish, "c", Item(HttpStreamFormat("from gripcontrol\n")), blocking=True)
    assert sub.got == [("c", b"from gripcontrol\n")]


@pytest_twisted.ensureDeferred
async def test_no_credentials_get_401_with_a_challenge_and_publish_nothing(reactor, hs256):
    """A publish without Authorization gets 401 with WWW-Authenticate and reaches nobody."""
    port, sub, _ = hs256
    assert await _send(reactor, port, _post(b"/publish/")) == UNAUTHORIZED_BEARER
    assert sub.got == []


@pytest.mark.parametrize("token", [
    pytest.param(_token({"iss": "realm", "exp": int(time.time()) - 1}), id="expired"),
    pytest.param(_token({"iss": "realm"}), id="no-exp"),
    pytest.param(jwt.encode({"iss": "realm", "exp": int(time.time()) + 60}, None, algorithm="none").encode(), id="alg-none"),
    pytest.param(_token({"iss": "realm", "exp": int(time.time()) + 60}, key=b"another key, also 32 bytes long!"), id="wrong-key"),
    pytest.param(_token({"iss": "elsewhere", "exp": int(time.time()) + 60}), id="wrong-issuer"),
    pytest.param(_token({"exp": int(time.time()) + 60}), id="no-issuer"),
    pytest.param(_token({"iss": "realm", "exp": int(time.time()) + 60}, algorithm="HS512"), id="other-algorithm"),
    pytest.param(b"not.a.token", id="garbage"),
])
@pytest_twisted.ensureDeferred
async def test_bad_tokens_are_refused(reactor, hs256, token):
    """Expired, exp-less, alg=none, wrong-key, wrong-issuer, other-algorithm and garbage tokens all get 401."""
    port, sub, _ = hs256
    assert await _send(reactor, port, _post(b"/publish/", b"Bearer " + token)) == UNAUTHORIZED_BEARER
    assert sub.got == []


@pytest_twisted.ensureDeferred
async def test_recover_needs_credentials_and_get_root_does_not(reactor, hs256):
    """/recover/ is refused without credentials and done with them; GET / answers without any."""
    port, _, recovered = hs256
    assert (await _send(reactor, port, _post(b"/recover/", body=b""))).startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert recovered == []
    good = b"Bearer " + _token({"iss": "realm", "exp": int(time.time()) + 60})
    assert (await _send(reactor, port, _post(b"/recover/", good, b""))).endswith(b"\r\n\r\nUpdated\n")
    assert recovered == [1]
    root = await _send(reactor, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert root.startswith(b"HTTP/1.1 200 OK\r\n") and root.endswith(b"Pushpin API\n")


@pytest_twisted.ensureDeferred
async def test_credentials_are_checked_before_the_method(reactor, hs256):
    """A GET of /publish/ without credentials is 401, not 405: nothing is said to a stranger."""
    port, _, _ = hs256
    got = await _send(reactor, port, b"GET /publish/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 401 Unauthorized\r\n")


@pytest_twisted.ensureDeferred
async def test_no_token_or_password_reaches_a_log_line(reactor, hs256, basic):
    """Refused and accepted publishes log why in fixed words; the token and the password never appear."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        token = _token({"iss": "realm", "exp": int(time.time()) + 60})
        wrong = _token({"iss": "realm", "exp": int(time.time()) + 60}, key=b"another key, also 32 bytes long!")
        await _send(reactor, hs256[0], _post(b"/publish/", b"Bearer " + token))
        await _send(reactor, hs256[0], _post(b"/publish/", b"Bearer " + wrong))
        await _send(reactor, basic[0], _post(b"/publish/", b"Basic " + base64.b64encode(b"user:pass")))
        await _send(reactor, basic[0], _post(b"/publish/", b"Basic " + base64.b64encode(b"user:secretword")))
    finally:
        globalLogPublisher.removeObserver(events.append)
    from twisted.logger import formatEvent

    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "auth=jwt iss=realm" in text and "auth=token signature invalid" in text
    assert "auth=basic user=user" in text and "auth=wrong user or password" in text
    for secret in (token.decode(), wrong.decode(), SECRET.decode(), "secretword", base64.b64encode(b"user:pass").decode()):
        assert secret not in text


@pytest_twisted.ensureDeferred
async def test_pubcontrol_basic_auth_in_its_python3_form_publishes(reactor, basic):
    """pubcontrol 3.5's Basic header (the str() of bytes: Basic b'...') is accepted."""
    port, sub, _ = basic
    client = PubControlClient(f"http://127.0.0.1:{port}")
    client.set_auth_basic("user", "pass")
    assert client._gen_auth_header().startswith("Basic b'")  # the form users cannot fix
    await threads.deferToThread(client.publish, "c", Item(HttpStreamFormat("basic\n")), blocking=True)
    assert sub.got == [("c", b"basic\n")]


@pytest.mark.parametrize("header, ok", [
    pytest.param(b"Basic " + base64.b64encode(b"user:pass"), True, id="standard"),
    pytest.param(b"basic " + base64.b64encode(b"other:x"), True, id="second-user-lowercase-scheme"),
    pytest.param(b"Basic " + base64.b64encode(b"user:wrong"), False, id="wrong-password"),
    pytest.param(b"Basic " + base64.b64encode(b"nobody:pass"), False, id="unknown-user"),
    pytest.param(b"Basic " + base64.b64encode(b"userpass"), False, id="no-colon"),
    pytest.param(b"Basic !!!", False, id="not-base64"),
    pytest.param(b"Bearer " + _token({"exp": int(time.time()) + 60}), False, id="bearer-not-configured"),
])
@pytest_twisted.ensureDeferred
async def test_basic_credentials(reactor, basic, header, ok):
    """Basic users from the htpasswd file publish; wrong passwords, unknown users and other schemes get 401."""
    port, sub, _ = basic
    got = await _send(reactor, port, _post(b"/publish/", header))
    if ok:
        assert got.endswith(b"\r\n\r\nPublished\n") and sub.got == [("c", b"hi\n")]
    else:
        assert got == (b'HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm="pushpin", charset="UTF-8"\r\n'
                       b"Content-Type: text/plain\r\nConnection: close\r\nContent-Length: 14\r\n\r\nUnauthorized.\n")
        assert sub.got == []


def test_a_successful_basic_check_is_remembered():
    """bcrypt runs once per publisher: the second check of the same credentials needs no thread."""
    auth = _auth(users={"user": _hash(b"pass")})
    header = [b"Basic " + base64.b64encode(b"user:pass")]
    attempt = auth.check(header)
    assert isinstance(attempt, BasicAttempt) and attempt.verify()
    assert auth.settle(attempt, True) == Verdict(True, "basic user=user")
    assert auth.check(header) == Verdict(True, "basic user=user")
    wrong = auth.check([b"Basic " + base64.b64encode(b"user:other")])
    assert isinstance(wrong, BasicAttempt) and not wrong.verify()
    assert "pass" not in repr(attempt) and "user" in repr(attempt)


def test_two_authorization_headers_are_refused():
    """More than one Authorization value is refused, whatever they hold."""
    auth = _auth(jwt_key=SigningKey("HS256", SECRET))
    good = b"Bearer " + _token({"exp": int(time.time()) + 60})
    assert auth.check([good]) == Verdict(True, "jwt")
    assert auth.check([good, good]) == Verdict(False, "more than one Authorization header")


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
def test_public_key_tokens_and_the_algorithm_swap(kind):
    """With a PEM public key, tokens signed by its private key pass; an HS256 token keyed with the public PEM does not."""
    private = rsa.generate_private_key(65537, 2048) if kind == "RS256" else ec.generate_private_key(ec.SECP256R1())
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    auth = _auth(jwt_key=SigningKey(kind, public_pem), issuer="realm")
    claims = {"iss": "realm", "exp": int(time.time()) + 60}
    assert auth.check([b"Bearer " + _token(claims, private, kind)]) == Verdict(True, "jwt iss=realm")
    # pyjwt itself refuses to HMAC with a PEM key; sign the swap by hand as an attacker would
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"." + b64(json.dumps(claims).encode())
    forged = signing_input + b"." + b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    assert auth.check([b"Bearer " + forged]) == Verdict(False, "token algorithm not accepted")


def test_configuring_nothing_or_a_wrong_key_is_an_error():
    """A PublishAuth with no credentials, or an RS256 key that is not RSA, cannot be made."""
    with pytest.raises(PublishAuthError):
        _auth()
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(PublishAuthError, match="not an RS256 key"):
        _auth(jwt_key=SigningKey("RS256", ec_pem))


@pytest.mark.parametrize("text, message", [
    (b"user\n", "line 1: expected user:bcrypt-hash"),
    (b"# only a comment\n", "no users"),
    (b"user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", "line 1: the hash is not bcrypt"),
    (b"a:" + _hash(b"x") + b"\na:" + _hash(b"y") + b"\n", "line 2: user 'a' is listed twice"),
])
def test_htpasswd_errors_name_the_line_not_the_hash(tmp_path, text, message):
    """A bad publishers file is refused with its line number, and no hash in the message."""
    path = tmp_path / "publishers"
    path.write_bytes(text)
    with pytest.raises(PublishAuthError, match=message) as info:
        load_htpasswd(str(path))
    assert "$2" not in str(info.value) and "W6ph" not in str(info.value)


def test_htpasswd_accepts_apache_2y_hashes(tmp_path):
    """htpasswd -B writes $2y$ hashes; they are read and checked."""
    path = tmp_path / "publishers"
    path.write_bytes(b"user:" + _hash(b"pass").replace(b"$2b$", b"$2y$", 1) + b"\n")
    auth = _auth(users=load_htpasswd(str(path)))
    attempt = auth.check([b"Basic " + base64.b64encode(b"user:pass")])
    assert isinstance(attempt, BasicAttempt) and attempt.verify()


def _settings(key=None, iss="", basic=None):
    from types import SimpleNamespace

    return SimpleNamespace(push_in_http_auth_key=key, push_in_http_auth_iss=iss, push_in_http_auth_basic=basic)


def test_auth_from_settings(tmp_path):
    """No key and no publishers file: no auth (as Pushpin); a key, a file or both make the checks."""
    from pushpin_tx.protocol.publish_auth import publish_auth_from_settings

    assert publish_auth_from_settings(_settings(), time.time) is None
    path = tmp_path / "publishers"
    path.write_bytes(b"user:" + _hash(b"pass") + b"\n")
    auth = publish_auth_from_settings(_settings(SigningKey("HS256", SECRET), "realm", str(path)), time.time)
    assert auth is not None and auth.issuer == "realm" and repr(auth) == "PublishAuth(jwt+basic)"
    assert len(auth.challenges()) == 2


@pytest.mark.parametrize("kw, message", [
    ({"iss": "realm"}, "push_in_http_auth_iss needs push_in_http_auth_key"),
    ({"basic": "/nonexistent/publishers"}, "push_in_http_auth_basic: cannot read"),
    ({"key": SigningKey("RS256", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")},
     "push_in_http_auth_key: the key file holds no PEM key"),
])
def test_auth_settings_errors_name_the_key(kw, message):
    """Unusable auth settings are refused naming the key at fault."""
    from pushpin_tx.protocol.publish_auth import publish_auth_from_settings

    with pytest.raises(PublishAuthError, match=message):
        publish_auth_from_settings(_settings(**kw), time.time)


@pytest.mark.parametrize("host, reachable", [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("[::1]", False), ("localhost", False),
    ("", True), ("0.0.0.0", True), ("::", True), ("192.0.2.7", True), ("pushpin.example", True),
])
def test_reachable_from_elsewhere(host, reachable):
    """Only loopback addresses (and localhost) keep the control API to this host."""
    from pushpin_tx.web.control import reachable_from_elsewhere

    assert reachable_from_elsewhere(host) is reachable


def test_a_basic_check_runs_in_the_thread_hook_and_a_client_that_left_gets_nothing():
    """The bcrypt check goes through in_thread; if the client left meanwhile, nothing is written, the publish still counts."""
    from twisted.internet import defer
    from twisted.internet.testing import StringTransport

    router = ChannelRouter()
    sub = Recorder()
    router.subscribe("c", sub)
    pending: list[tuple[defer.Deferred, object]] = []

    def in_thread(fn):
        d: defer.Deferred = defer.Deferred()
        pending.append((d, fn))
        return d

    auth = _auth(users={"user": _hash(b"pass")})
    resource = ControlResource(PublishIntake(router, Counters()), auth=auth, in_thread=in_thread)
    site = ControlSite(resource, max_headers=10000, max_body=1000000, timeout=None)
    transports = []
    for _ in range(2):
        proto = site.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(_post(b"/publish/", b"Basic " + base64.b64encode(b"user:pass")))
        transports.append((proto, transport))
    assert len(pending) == 2 and transports[0][1].value() == b""  # nothing answered before the check
    transports[0][0].connectionLost(None)
    for d, fn in pending:
        d.callback(fn())
    assert transports[0][1].value() == b""
    assert transports[1][1].value().endswith(b"\r\n\r\nPublished\n")
    assert sub.got == [("c", b"hi\n"), ("c", b"hi\n")]


def test_an_unknown_user_with_a_listed_password_is_refused():
    """An unknown user is checked against a listed user's hash (same time) and refused even with that user's password."""
    auth = _auth(users={"user": _hash(b"pass")})
    attempt = auth.check([b"Basic " + base64.b64encode(b"intruder:pass")])
    assert isinstance(attempt, BasicAttempt) and attempt.hashed == auth.users["user"]
    assert attempt.verify() is False
