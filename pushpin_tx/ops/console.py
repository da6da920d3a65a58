# -*- test-case-name: tests.ops.test_console -*-
"""
The operator console: a Python prompt inside the running proxy, over SSH (twisted.conch's
manhole), with a few helpers for the questions an operator asks first (who is held, on which
channels, how deep are the queues) and a few levers (publish, close a connection, reload).

Why a live prompt: a held-connection proxy's state is in memory only, and a REPL over the
real objects answers questions nobody wrote an endpoint for. Because it is a Python prompt
it is as powerful as the process, so access is locked down:

  - SSH only on the configured endpoint, and that endpoint must be loopback (or a Unix
    socket) unless the operator explicitly allows otherwise;
  - authentication by an authorized_keys file (public keys) and/or a passwd-format file
    (bcrypt hashes, or plain passwords for development); there is no default password, and
    with neither file configured L{make_console_service} raises L{ConsoleConfigError};
  - telnet (plaintext) only when asked for, only on loopback, and only with a passwd file;
  - the SSH host key is generated on first start (ECDSA P-256: instant, unlike the 4096-bit
    RSA key C{manhole_tap} would make) and kept at the configured path.

The helpers live in L{pushpin_tx.ops.console_helpers} (re-exported here); this module is the
access control and the listeners.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from typing import Any, Iterable

import bcrypt
from twisted.application import service, strports
from twisted.conch import manhole, manhole_ssh, telnet
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import checkers, portal
from twisted.internet import protocol
from twisted.logger import Logger
from zope.interface import implementer

from pushpin_tx.ops.console_helpers import ConnInfo, ConsoleHelpers, Text

from pushpin_tx.net.listening import RecordingEndpoint

__all__ = [
    "ConnInfo",
    "ConsoleConfigError",
    "ConsoleHelpers",
    "ConsoleService",
    "Text",
    "check_console_settings",
    "is_local_endpoint",
    "load_or_create_host_key",
    "make_console_service",
]

_log = Logger()

_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")


class ConsoleConfigError(Exception):
    """The console cannot be started as configured; C{str()} says what to fix."""


# --- access control ------------------------------------------------------------------------


def _split_description(description: str) -> tuple[str, list[str], dict[str, str]]:
    """Split an endpoint description into (kind, positional args, keyword args).

    Written by hand because Twisted's own parser (C{endpoints._parse}) is private; this
    follows its rules: C{:} separates, C{\\} escapes the next character.
    """
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    kind, rest = parts[0].strip().lower(), parts[1:]
    args = [p for p in rest if "=" not in p]
    kwargs = dict(p.split("=", 1) for p in rest if "=" in p)
    return kind, args, kwargs


def is_local_endpoint(description: str) -> bool:
    """Whether a server endpoint description only accepts local connections: a TCP
    endpoint bound to a loopback address, or a Unix socket."""
    kind, args, kwargs = _split_description(description)
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6"):
        return False
    interface = kwargs.get("interface", args[1] if len(args) > 1 else "")  # tcp:PORT:INTERFACE:BACKLOG
    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        return False  # "" (all interfaces) or a host name


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """
    The public keys in one authorized_keys file, allowed for any user name (the file is the
    console's own, not a system user's). Re-read at every login, so edits apply at once.
    Lines with OpenSSH key options (C{from="..." ssh-ed25519 ...}) are not understood by
    Twisted's parser and are skipped with a logged error.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def getAuthorizedKeys(self, avatarId: bytes) -> Iterable[keys.Key]:
        try:
            with open(self.path, "rb") as f:
                return list(readAuthorizedKeyFile(f))
        except OSError as e:
            _log.error("console: cannot read {path}: {why}", path=self.path, why=e)
            return []


def _check_password(username: bytes, given: bytes, stored: bytes) -> bytes:
    """C{FilePasswordDB}'s hash hook: returns C{stored} exactly when C{given} matches it.

    A bcrypt hash (C{$2b$...}) is checked with bcrypt; anything else is a plain password
    (development only), compared in constant time. An empty password never matches.
    """
    if not stored:
        return b"\x00"
    if stored.startswith(_BCRYPT_PREFIXES):
        try:
            ok = bcrypt.checkpw(given, stored)
        except ValueError:
            ok = False
    else:
        ok = hmac.compare_digest(given, stored)
    return stored if ok else b"\x00"


def _passwd_checker(path: str) -> checkers.FilePasswordDB:
    return checkers.FilePasswordDB(path, hash=_check_password)


def _validate_file(path: str, what: str, count: Any) -> None:
    try:
        with open(path, "rb") as f:
            n = count(f)
    except OSError as e:
        raise ConsoleConfigError(f"console {what} {path!r}: cannot read it: {e.strerror or e}") from None
    if not n:
        raise ConsoleConfigError(f"console {what} {path!r}: no usable entries in it")


def _count_passwd(f: Any) -> int:
    return sum(1 for line in f if line.strip() and not line.startswith(b"#") and b":" in line)


def _count_keys(f: Any) -> int:
    return len(list(readAuthorizedKeyFile(f)))


# --- host key --------------------------------------------------------------------------------


def load_or_create_host_key(path: str) -> keys.Key:
    """
    The SSH host key at C{path}; on first use, a new ECDSA P-256 key is written there
    (mode 0600, atomically) and its fingerprint logged, so the operator can check it.
    """
    if os.path.exists(path):
        try:
            return keys.Key.fromFile(path)
        except (OSError, keys.BadKeyError) as e:
            raise ConsoleConfigError(f"console host key {path!r}: cannot load it: {e}") from None
    from cryptography.hazmat.primitives.asymmetric import ec

    key = keys.Key(ec.generate_private_key(ec.SECP256R1()))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.toString("openssh"))
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConsoleConfigError(
            f"console host key {path!r}: cannot create it: {e.strerror or e}"
            " (set [console] host_key to a writable path)"
        ) from None
    _log.info(
        "console: generated SSH host key {path} ({fingerprint})",
        path=path,
        fingerprint=_fingerprint(key),
    )
    return key


def _fingerprint(key: keys.Key) -> str:
    return "SHA256:" + key.fingerprint(keys.FingerprintFormats.SHA256_BASE64)


# --- the services ------------------------------------------------------------------------------


def _listener(reactor: Any, description: str, factory: Any, label: str) -> tuple[service.Service, RecordingEndpoint]:
    # strports.service binds in privilegedStartService and raises there on failure, so a
    # port in use stops start-up; the wrapper only records the port (and logs it as
    # "<label> listening on ..."; the factory's own "Starting factory <...>" would repeat it).
    factory.noisy = False
    svc = strports.service(description, factory, reactor=reactor)
    recorder = RecordingEndpoint(svc.endpoint, label, description)
    svc.endpoint = recorder
    return svc, recorder


@implementer(portal.IRealm)  # as TerminalRealm is; said again for mypy-zope
class _ConsoleRealm(manhole_ssh.TerminalRealm):
    """The manhole's SSH realm, logging who logs in."""

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        name = avatarId.decode("utf-8", "replace") if isinstance(avatarId, bytes) else str(avatarId)
        _log.info("console: {user} logged in over SSH", user=name)
        return super().requestAvatar(avatarId, mind, *interfaces)


class _ManholeProtocol:
    """Builds one manhole terminal session over the shared namespace."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def __call__(self) -> insults.ServerProtocol:
        return insults.ServerProtocol(manhole.ColoredManhole, self.namespace)


@implementer(portal.IRealm)
class _TelnetRealm:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if telnet.ITelnetProtocol in interfaces:
            _log.info("console: {user} logged in over telnet", user=avatarId)
            proto = telnet.TelnetBootstrapProtocol(insults.ServerProtocol, manhole.ColoredManhole, self.namespace)
            return telnet.ITelnetProtocol, proto, lambda: None
        # twisted.cred's IRealm contract: a realm that offers none of the requested
        # interfaces raises NotImplementedError (the portal turns it into a failed login).
        raise NotImplementedError("the console's telnet realm only offers ITelnetProtocol")


class ConsoleService(service.MultiService):
    """
    The console's listeners. The host key is loaded (or made) in C{privilegedStartService},
    before the SSH port is bound; nothing touches the disk or the network before that.

    @ivar ssh_port: the bound SSH port once started (C{getHost()} tells where).
    @ivar telnet_port: the bound telnet port, if telnet is on.
    """

    def __init__(self, ssh_factory: manhole_ssh.ConchFactory, host_key_path: str, *,
                 ssh: RecordingEndpoint | None = None, telnet: RecordingEndpoint | None = None) -> None:
        """
        @param ssh: the SSH listener's endpoint, which records the port it binds.
        @param telnet: the telnet listener's, if telnet is on.
        """
        super().__init__()
        self.ssh_factory = ssh_factory
        self.host_key_path = host_key_path
        self._ssh = ssh
        self._telnet = telnet

    @property
    def ssh_port(self) -> Any:
        return self._ssh.port if self._ssh is not None else None

    @property
    def telnet_port(self) -> Any:
        return self._telnet.port if self._telnet is not None else None

    def privilegedStartService(self) -> None:
        key = load_or_create_host_key(self.host_key_path)
        # Instance dicts: ConchFactory's class attributes are shared by every factory.
        # (Twisted annotates these as bytes -> bytes; SSHFactory reads Key objects from them)
        self.ssh_factory.publicKeys = {key.sshType(): key.public()}
        self.ssh_factory.privateKeys = {key.sshType(): key}  # type: ignore[dict-item]
        super().privilegedStartService()


def check_console_settings(
    *,
    endpoint: str,
    authorized_keys: str | None,
    passwd: str | None,
    telnet_endpoint: str | None,
    allow_remote: bool = False,
) -> None:
    """
    Refuse a console configuration that must not start (see L{make_console_service}); it
    reads the credentials files but opens nothing, so C{Options.postOptions} can call it and
    turn the error into a usage error.

    @raise ConsoleConfigError: no credentials, an unreadable or empty credentials file, a
        non-local endpoint without C{allow_remote}, or a telnet setup that is not local or
        has no passwd file.
    """
    if not authorized_keys and not passwd:
        raise ConsoleConfigError(
            "console: no credentials configured; set [console] authorized_keys and/or passwd"
            " (there is no default password)"
        )
    if not is_local_endpoint(endpoint) and not allow_remote:
        raise ConsoleConfigError(
            f"console: SSH endpoint {endpoint!r} is not loopback or a Unix socket;"
            " bind it to 127.0.0.1 (tcp:PORT:interface=127.0.0.1) or set [console] allow_remote=true"
        )
    if telnet_endpoint:
        if not is_local_endpoint(telnet_endpoint):
            raise ConsoleConfigError(
                f"console: telnet endpoint {telnet_endpoint!r} must be loopback or a Unix socket"
                " (telnet is plaintext)"
            )
        if not passwd:
            raise ConsoleConfigError("console: telnet needs a passwd file ([console] passwd)")

    if authorized_keys:
        _validate_file(authorized_keys, "authorized_keys", _count_keys)
    if passwd:
        _validate_file(passwd, "passwd file", _count_passwd)


def make_console_service(
    namespace: dict[str, Any],
    *,
    endpoint: str,
    authorized_keys: str | None,
    passwd: str | None,
    telnet_endpoint: str | None,
    host_key_path: str,
    allow_remote: bool = False,
    reactor: Any = None,
) -> ConsoleService:
    """
    Build the console: an SSH manhole on C{endpoint}, and telnet on C{telnet_endpoint} if given.

    @param namespace: the prompt's globals (L{ConsoleHelpers.namespace}), shared by sessions.
    @param endpoint: a server endpoint description, e.g. C{tcp:5564:interface=127.0.0.1}
        or C{unix:/run/pushpin/console.sock}.
    @param authorized_keys: path of an authorized_keys file (public-key logins).
    @param passwd: path of a passwd-format file, C{user:password[:...]} lines, the password
        a bcrypt hash (or plain text, for development).
    @param telnet_endpoint: plaintext telnet for development; loopback only; needs C{passwd}.
    @param host_key_path: where the SSH host key is kept (made on first start).
    @param allow_remote: allow C{endpoint} on a non-loopback interface.
    @raise ConsoleConfigError: see L{check_console_settings}.
    """
    check_console_settings(
        endpoint=endpoint,
        authorized_keys=authorized_keys,
        passwd=passwd,
        telnet_endpoint=telnet_endpoint,
        allow_remote=allow_remote,
    )
    ssh_checkers: list[Any] = []
    if authorized_keys:
        ssh_checkers.append(SSHPublicKeyChecker(AuthorizedKeysFile(authorized_keys)))
    password_checker = None
    if passwd:
        password_checker = _passwd_checker(passwd)
        ssh_checkers.append(password_checker)

    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor

    realm = _ConsoleRealm()
    # any callable making a ServerProtocol will do (TerminalRealm calls it), not only the class
    realm.chainedProtocolFactory = _ManholeProtocol(namespace)  # type: ignore[assignment]
    ssh_factory = manhole_ssh.ConchFactory(portal.Portal(realm, ssh_checkers))
    listeners = [_listener(reactor, endpoint, ssh_factory, "console (ssh)")]

    if telnet_endpoint:
        assert password_checker is not None  # check_console_settings: telnet needs a passwd file
        telnet_portal = portal.Portal(_TelnetRealm(namespace), [password_checker])
        telnet_factory = protocol.ServerFactory()
        telnet_factory.protocol = lambda: telnet.TelnetTransport(telnet.AuthenticatingTelnetProtocol, telnet_portal)
        listeners.append(_listener(reactor, telnet_endpoint, telnet_factory, "console (telnet)"))
    console = ConsoleService(ssh_factory, host_key_path, ssh=listeners[0][1],
                             telnet=listeners[1][1] if len(listeners) > 1 else None)
    for listener, _ in listeners:  # SSH first, then telnet
        listener.setServiceParent(console)
    return console
