# -*- test-case-name: tests.web.test_control_auth -*-
"""
Who may publish: the control API's credentials check (issue 18; Pushpin has none).

Off unless configured. Two kinds of credentials, either or both:

  - C{Authorization: Bearer <JWT>}, as C{gripcontrol}/C{pubcontrol} send for Fanout's
    service (C{GripPubControl({"control_iss": ..., "key": ...})}): signed with the
    configured key, verified with exactly the one algorithm that key is for (HS256 for a
    secret, RS256 or ES256 for a PEM public key), so C{alg=none} and algorithm swaps are
    refused by construction. C{exp} is required and must be in the future; when an issuer
    is configured, C{iss} must equal it.
  - C{Authorization: Basic <base64 user:pass>} against an htpasswd-style file of
    C{user:bcrypt-hash} lines. C{pubcontrol} 3.5 on Python 3 sends the C{str()} of the
    base64 bytes (C{Basic b'dXNlcjpwYXNz'}); that form is accepted too.

Checking a bcrypt hash takes a deliberate fraction of a second: L{PublishAuth.check} does
not do it, it returns a L{BasicAttempt} whose C{verify()} the caller runs off the reactor
thread, then hands the outcome back with L{PublishAuth.settle} (which remembers a success,
keyed by a keyed hash of the credentials, so a publisher is not re-hashed on every publish).

Nothing here ever puts a token, password, hash or key into an exception or a reason: the
reasons are fixed words for the log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, NamedTuple, Protocol

import bcrypt
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

if TYPE_CHECKING:
    from pushpin_tx.protocol.config import SigningKey

__all__ = ["BasicAttempt", "PublishAuth", "PublishAuthError", "Verdict", "load_htpasswd", "publish_auth_from_settings"]

#: the realm named in C{WWW-Authenticate}
REALM = "pushpin"
#: successful Basic credentials remembered (by keyed hash), so bcrypt runs once per publisher
_REMEMBER = 1024
_BCRYPT = re.compile(rb"^\$2[abxy]?\$\d\d\$[./A-Za-z0-9]{53}$")
_PY_BYTES_REPR = re.compile(rb"^b'([A-Za-z0-9+/=]*)'$")


class PublishAuthError(ValueError):
    """The configured credentials cannot be used (the message names no secret)."""


class Verdict(NamedTuple):
    """The outcome of a check: C{ok}, and a few fixed words for the log line."""

    ok: bool
    why: str


@dataclass(frozen=True, slots=True, repr=False)
class BasicAttempt:
    """Basic credentials whose bcrypt check is still to run (C{verify} blocks: use a thread)."""

    user: str
    password: bytes
    hashed: bytes
    known: bool

    def verify(self) -> bool:
        """The bcrypt check (thread-safe, slow on purpose); an unknown user is never valid."""
        try:
            ok = bcrypt.checkpw(self.password, self.hashed)
        except ValueError:
            return False
        return ok and self.known

    def __repr__(self) -> str:
        return f"BasicAttempt({self.user!r}, <redacted>)"


def load_htpasswd(path: str) -> dict[str, bytes]:
    """
    The C{user:bcrypt-hash} lines of C{path} (blank lines and C{#} comments skipped).

    @raise PublishAuthError: unreadable file, a line without a colon, a hash that is not
        bcrypt, a user named twice, or no users at all (errors give line numbers, never hashes).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PublishAuthError(f"cannot read {path!r}: {e.strerror}") from None
    users: dict[str, bytes] = {}
    for number, line in enumerate(data.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        user, colon, hashed = line.partition(b":")
        if not colon or not user:
            raise PublishAuthError(f"{path}, line {number}: expected user:bcrypt-hash")
        if not _BCRYPT.match(hashed):
            raise PublishAuthError(f"{path}, line {number}: the hash is not bcrypt (htpasswd -B makes one)")
        name = user.decode("utf-8", "replace")
        if name in users:
            raise PublishAuthError(f"{path}, line {number}: user {name!r} is listed twice")
        users[name] = hashed
    if not users:
        raise PublishAuthError(f"{path}: no users")
    return users


#: what pyjwt verifies with: an HS256 secret, or a loaded RS256 / ES256 public key
_Material = bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def _load_material(key: "SigningKey") -> _Material:
    if key.algorithm == "HS256":
        return key.key
    public: object
    try:
        public = serialization.load_pem_public_key(key.key)
    except ValueError:
        try:
            public = serialization.load_pem_private_key(key.key, password=None).public_key()
        except (ValueError, TypeError):
            raise PublishAuthError("the key file holds no PEM key") from None
    if key.algorithm == "RS256" and isinstance(public, rsa.RSAPublicKey):
        return public
    if key.algorithm == "ES256" and isinstance(public, ec.EllipticCurvePublicKey):
        return public
    raise PublishAuthError(f"the key is not an {key.algorithm} key")


@dataclass(slots=True, repr=False)
class PublishAuth:
    """
    The credentials a publish must carry. C{jwt_key}: JWT verification key (or C{None});
    C{issuer}: the C{iss} a token must name (C{""}: any); C{users}: Basic users and their
    bcrypt hashes (or C{None}); C{now}: the current POSIX time.
    """

    now: Callable[[], float]
    jwt_key: "SigningKey | None" = None
    issuer: str = ""
    users: dict[str, bytes] | None = None
    _material: _Material | None = field(default=None, init=False)
    _remembered: dict[bytes, None] = field(default_factory=dict, init=False)
    _salt: bytes = field(default_factory=lambda: os.urandom(32), init=False)

    def __post_init__(self) -> None:
        if self.jwt_key is None and not self.users:
            raise PublishAuthError("no credentials configured")
        if self.jwt_key is not None:
            if self.jwt_key.algorithm not in ("HS256", "RS256", "ES256"):
                raise PublishAuthError(f"unsupported algorithm {self.jwt_key.algorithm}")
            self._material = _load_material(self.jwt_key)

    def __repr__(self) -> str:
        kinds = [k for k, on in (("jwt", self.jwt_key is not None), ("basic", bool(self.users))) if on]
        return f"PublishAuth({'+'.join(kinds)})"

    def challenges(self) -> list[bytes]:
        """The C{WWW-Authenticate} values of a 401, one per accepted scheme."""
        out = []
        if self.jwt_key is not None:
            out.append(f'Bearer realm="{REALM}"'.encode("ascii"))
        if self.users:
            out.append(f'Basic realm="{REALM}", charset="UTF-8"'.encode("ascii"))
        return out

    def check(self, authorization: list[bytes]) -> Verdict | BasicAttempt:
        """
        The verdict on a request's C{Authorization} values, or a L{BasicAttempt} to verify
        (off the reactor thread) and L{settle}. More than one value is refused.
        """
        if not authorization:
            return Verdict(False, "no credentials")
        if len(authorization) > 1:
            return Verdict(False, "more than one Authorization header")
        scheme, _, credentials = authorization[0].strip().partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == b"bearer" and self.jwt_key is not None:
            return self._bearer(credentials)
        if scheme == b"basic" and self.users:
            return self._basic(credentials)
        return Verdict(False, "scheme not accepted")

    def settle(self, attempt: BasicAttempt, ok: bool) -> Verdict:
        """The verdict once C{attempt.verify()} gave C{ok}; a success is remembered."""
        if not ok:
            return Verdict(False, "wrong user or password")
        if len(self._remembered) >= _REMEMBER:
            self._remembered.pop(next(iter(self._remembered)))
        self._remembered[self._fingerprint(attempt.user, attempt.password, attempt.hashed)] = None
        return Verdict(True, f"basic user={attempt.user}")

    # --- the schemes ---------------------------------------------------------------------------

    def _bearer(self, token: bytes) -> Verdict:
        assert self.jwt_key is not None and self._material is not None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pyjwt's short-HMAC-key warning: the user's choice
                claims = jwt.decode(
                    token,
                    self._material,
                    algorithms=[self.jwt_key.algorithm],
                    options={"require": ["exp"], "verify_exp": False, "verify_aud": False, "verify_iss": False},
                )
        except jwt.InvalidAlgorithmError:
            return Verdict(False, "token algorithm not accepted")
        except jwt.InvalidSignatureError:
            return Verdict(False, "token signature invalid")
        except jwt.MissingRequiredClaimError:
            return Verdict(False, "token has no exp")
        except jwt.PyJWTError:
            return Verdict(False, "token invalid")
        try:
            expires = float(claims["exp"])
        except (TypeError, ValueError):
            return Verdict(False, "token exp invalid")
        if expires <= self.now():
            return Verdict(False, "token expired")
        iss = claims.get("iss")
        if self.issuer and iss != self.issuer:
            return Verdict(False, "token issuer wrong")
        return Verdict(True, f"jwt iss={iss}" if isinstance(iss, str) else "jwt")

    def _basic(self, credentials: bytes) -> Verdict | BasicAttempt:
        assert self.users is not None
        quoted = _PY_BYTES_REPR.match(credentials)  # pubcontrol 3.5: 'Basic ' + str(b64encode(...))
        if quoted:
            credentials = quoted.group(1)
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return Verdict(False, "basic credentials not base64")
        user_bytes, colon, password = decoded.partition(b":")
        if not colon:
            return Verdict(False, "basic credentials without a colon")
        user = user_bytes.decode("utf-8", "replace")
        hashed = self.users.get(user)
        if hashed is not None and self._fingerprint(user, password, hashed) in self._remembered:
            return Verdict(True, f"basic user={user}")
        # an unknown user is checked against a listed user's hash (and then refused whatever
        # the outcome), so the answer takes as long and does not tell who exists
        stand_in = next(iter(self.users.values()))
        return BasicAttempt(user, password, hashed if hashed is not None else stand_in, hashed is not None)

    def _fingerprint(self, user: str, password: bytes, hashed: bytes) -> bytes:
        message = user.encode("utf-8") + b"\0" + hashed + b"\0" + password
        return hmac.new(self._salt, message, hashlib.sha256).digest()


class AuthSettings(Protocol):
    """The C{[handler]} keys L{publish_auth_from_settings} reads (a L{Settings} has them)."""

    @property
    def push_in_http_auth_key(self) -> "SigningKey | None": ...
    @property
    def push_in_http_auth_iss(self) -> str: ...
    @property
    def push_in_http_auth_basic(self) -> str | None: ...


def publish_auth_from_settings(settings: AuthSettings, now: Callable[[], float]) -> PublishAuth | None:
    """
    The control API's credentials from C{[handler] push_in_http_auth_key},
    C{push_in_http_auth_iss} and C{push_in_http_auth_basic}; C{None} when none is set.

    @raise PublishAuthError: an issuer without a key, an unusable key or publishers file
        (the message names the key, never its value).
    """
    key, iss, basic = settings.push_in_http_auth_key, settings.push_in_http_auth_iss, settings.push_in_http_auth_basic
    if iss and key is None:
        raise PublishAuthError("[handler] push_in_http_auth_iss needs push_in_http_auth_key")
    if key is None and basic is None:
        return None
    try:
        users = load_htpasswd(basic) if basic is not None else None
    except PublishAuthError as e:
        raise PublishAuthError(f"[handler] push_in_http_auth_basic: {e}") from None
    try:
        return PublishAuth(now=now, jwt_key=key, issuer=iss, users=users)
    except PublishAuthError as e:
        raise PublishAuthError(f"[handler] push_in_http_auth_key: {e}") from None
