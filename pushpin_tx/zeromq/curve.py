# -*- test-case-name: tests.zeromq.test_curve -*-
"""
ZeroMQ CURVE security for the publish inputs (issue 18; Pushpin has none): off unless
C{[handler] push_in_curve_secret_key=file:PATH} is set, and then every socket the handler
binds (PULL, SUB, command, stats) is a CURVE server with that key, and only the client
public keys listed in C{push_in_curve_clients=file:PATH} may connect.

Key files:

  - the secret key: either a certificate as C{zmq.auth.create_certificates} writes it (the
    C{.key_secret} file, a C{secret-key = "..."} line) or a file whose one line is the
    40-character Z85 secret key (C{#} comments allowed). The public key clients need is
    derived from it and logged at start-up.
  - the clients: one Z85 public key (40 characters) per line, C{#} comments allowed; a
    certificate's C{public-key = "..."} line is read too, so C{.key} files can be
    concatenated.

Who may connect is decided by ZAP (RFC 27), answered in the reactor by L{ZapHandler}: a ROUTER
socket bound to C{inproc://zeromq.zap.01} in the service's context, read by a L{ZmqReader}
like every other socket. Chosen over C{zmq.auth.thread.ThreadAuthenticator} because it needs
no thread (one less thing to stop before C{Context.term}, and nothing to fork around), its
decisions are plain function calls testable without sockets, and it is ~30 lines. The ZAP
socket is bound before any CURVE socket, so no handshake can happen without it: libzmq lets
every CURVE client in when no ZAP handler is bound. Handshakes that arrive before the reactor
runs wait in the ZAP socket's queue.

A C{push_in_sub_connect} SUB socket connects out instead of binding: CURVE is not applied to
it (it would be the server end of a connection it opens; the publisher would need to be the
CURVE client), and start-up says so.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import zmq
from twisted.logger import Logger
from zmq.utils import z85

from pushpin_tx.zeromq.reader import ZmqReader

__all__ = ["CurveConfig", "CurveError", "ZapHandler", "curve_from_settings", "exposed_specs", "load_curve", "zap_reply",
           "ZAP_ENDPOINT", "ZAP_DOMAIN"]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: the ZAP domain of every CURVE socket of ours
ZAP_DOMAIN = b"pushpin"
_CERT_LINE = re.compile(rb'^\s*(secret|public)-key\s*=\s*"(.{40})"\s*$')
#: the other lines of a zmq.auth certificate (sections, metadata): Z85 has '=' and '[' in its
#: alphabet, so a key is told apart by its length, not by these characters
_CERT_OTHER = re.compile(rb'^(?:[a-z][a-z0-9-]*|[\w-]+\s*=\s*".*")$')


def _is_structure(line: bytes) -> bool:
    return len(line) != 40 and _CERT_OTHER.match(line) is not None


class CurveError(ValueError):
    """A CURVE key file cannot be used (the message names no secret key)."""


@dataclass(frozen=True, slots=True, repr=False)
class CurveConfig:
    """The server's key pair (Z85) and the client public keys (Z85) allowed in."""

    secret_key: bytes
    public_key: bytes
    clients: frozenset[bytes]

    def __repr__(self) -> str:
        return f"CurveConfig(public={self.public_key.decode()}, {len(self.clients)} clients)"

    def secure(self, sock: zmq.Socket) -> None:
        """Make C{sock} a CURVE server of this key, authenticated by ZAP (before it binds)."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret_key)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)


def _valid_z85(key: bytes) -> bool:
    if len(key) != 40:
        return False
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _read(path: str, what: str) -> list[tuple[int, bytes]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CurveError(f"cannot read the {what} file {path!r}: {e.strerror}") from None
    return [(n, line.strip()) for n, line in enumerate(data.splitlines(), 1)
            if line.strip() and not line.strip().startswith(b"#")]


def _secret_key(path: str) -> bytes:
    lines = _read(path, "CURVE secret key")
    found = [m.group(2) for _, line in lines if (m := _CERT_LINE.match(line)) and m.group(1) == b"secret"]
    if not found:
        found = [line for _, line in lines if not _is_structure(line)]
    if len(found) != 1 or not _valid_z85(found[0]):
        raise CurveError(f"{path}: expected one Z85 CURVE secret key (40 characters), "
                         "or a certificate with a secret-key line")
    return found[0]


def _clients(path: str) -> frozenset[bytes]:
    keys = set()
    for number, line in _read(path, "CURVE clients"):
        m = _CERT_LINE.match(line)
        if m and m.group(1) == b"secret":
            raise CurveError(f"{path}, line {number}: a secret key; list the clients' public keys")
        if m:
            key = m.group(2)
        elif _is_structure(line):  # the rest of a certificate file
            continue
        else:
            key = line
        if not _valid_z85(key):
            raise CurveError(f"{path}, line {number}: not a Z85 CURVE public key (40 characters)")
        keys.add(key)
    if not keys:
        raise CurveError(f"{path}: no client keys")
    return frozenset(keys)


def load_curve(secret_key_path: str, clients_path: str | None) -> CurveConfig:
    """
    The CURVE configuration from its two files.

    @raise CurveError: a file is unreadable or holds no valid key, or no clients file is
        given (a CURVE server that lets every key in is not authentication), or this libzmq
        has no CURVE.
    """
    if not zmq.has("curve"):
        raise CurveError("this libzmq was built without CURVE support")
    if not clients_path:
        raise CurveError("push_in_curve_secret_key needs push_in_curve_clients (the allowed client public keys)")
    secret = _secret_key(secret_key_path)
    return CurveConfig(secret, zmq.curve_public(secret), _clients(clients_path))


def zap_reply(frames: list[bytes], clients: frozenset[bytes]) -> tuple[list[bytes], str]:
    """
    The ZAP reply (with the ROUTER envelope) to one request, and a few words for the log.
    Only CURVE handshakes of our domain whose client key is listed get C{200}.
    """
    try:
        split = frames.index(b"")
    except ValueError:
        return [], "malformed ZAP request"
    envelope, body = frames[: split + 1], frames[split + 1 :]
    if len(body) < 6:
        return [], "malformed ZAP request"
    version, request_id, domain, _address, _identity, mechanism = body[:6]
    credentials = body[6:]

    def reply(code: bytes, text: bytes, user: bytes = b"") -> list[bytes]:
        return [*envelope, b"1.0", request_id, code, text, user, b""]

    if version != b"1.0":
        return reply(b"400", b"unsupported ZAP version"), "unsupported ZAP version"
    if mechanism != b"CURVE" or domain != ZAP_DOMAIN or len(credentials) != 1 or len(credentials[0]) != 32:
        return reply(b"400", b"CURVE required"), f"mechanism {mechanism.decode('latin-1')} refused"
    key = z85.encode(credentials[0])
    if key not in clients:
        return reply(b"400", b"unknown client key"), f"unknown client key {key.decode()}"
    return reply(b"200", b"OK", key), f"client key {key.decode()} allowed"


class ZapHandler:
    """Answers ZAP requests in the reactor (see the module docstring)."""

    _log = Logger()

    def __init__(self, reactor: Any, ctx: zmq.Context, config: CurveConfig,
                 on_socket: Callable[[zmq.Socket], None] | None = None) -> None:
        """
        Binds the ZAP endpoint in C{ctx} at once (before any CURVE socket binds).
        @param on_socket: told of the ZAP socket (so its owner closes it on failure).
        """
        self._config = config
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        if on_socket is not None:
            on_socket(sock)
        sock.bind(ZAP_ENDPOINT)
        self._reader = ZmqReader(reactor, sock, self._on_request, name="zmq-zap")
        self.allowed = 0
        self.refused = 0

    @property
    def reader(self) -> ZmqReader:
        return self._reader

    def _on_request(self, frames: list[bytes]) -> None:
        reply, why = zap_reply(frames, self._config.clients)
        if not reply:
            self._log.warn("ZAP: {why}, ignored", why=why)
            return
        if reply[-4] == b"200":
            self.allowed += 1
            self._log.debug("ZAP: {why}", why=why)
        else:
            self.refused += 1
            self._log.warn("ZAP: CURVE connection refused: {why}", why=why)
        try:
            self._reader.socket.send_multipart(reply, zmq.NOBLOCK)
        except zmq.ZMQError as e:
            self._log.warn("ZAP: reply dropped: {why}", why=e)
        self._reader.poke()


class CurveSettings(Protocol):
    """The C{[handler]} keys L{curve_from_settings} reads (a L{Settings} has them)."""

    @property
    def push_in_curve_secret_key(self) -> str | None: ...
    @property
    def push_in_curve_clients(self) -> str | None: ...


def curve_from_settings(settings: CurveSettings) -> CurveConfig | None:
    """
    CURVE from C{[handler] push_in_curve_secret_key} and C{push_in_curve_clients}; C{None}
    (plain ZeroMQ) when neither is set.

    @raise CurveError: a clients file without a secret key, or see L{load_curve}.
    """
    secret, clients = settings.push_in_curve_secret_key, settings.push_in_curve_clients
    if secret is None:
        if clients is not None:
            raise CurveError("[handler] push_in_curve_clients needs push_in_curve_secret_key")
        return None
    try:
        return load_curve(secret, clients)
    except CurveError as e:
        raise CurveError(f"[handler] {e}") from None


def exposed_specs(specs: "list[str] | tuple[str, ...]") -> list[str]:
    """The C{tcp://} endpoints among C{specs} that other hosts can reach (not loopback)."""
    out = []
    for spec in specs:
        if not spec.startswith("tcp://"):
            continue  # ipc:// and inproc:// are local
        host = spec[len("tcp://"):].rpartition(":")[0].strip("[]")
        if not _loopback(host):
            out.append(spec)
    return out


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: assume reachable
