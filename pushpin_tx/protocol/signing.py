# -*- test-case-name: tests.protocol.test_signing -*-
"""
C{Grip-Sig}: the JWT that tells an origin Pushpin is in front of it, and the check that
makes an upstream proxy "trusted" (reference §2 sig_iss/sig_key/upstream_key, §4.1 step 7).

Tokens are made with pyjwt. Signing is too slow to do per request, so a token is reused for a
minute (its claims are only C{iss} and an C{exp} an hour ahead, as Pushpin's). Verification
always names the one algorithm the configured key is for: a token cannot pick its own.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

if TYPE_CHECKING:
    from pushpin_tx.protocol.config import SigningKey

__all__ = ["GripSigner", "verify_grip_sig"]

_LIFETIME = 3600
_REUSE = 60

#: What pyjwt signs with: an HS256 secret, or a loaded RS256 / ES256 private key.
_SigningMaterial = bytes | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: What pyjwt verifies with: an HS256 secret, or a loaded RS256 / ES256 public key.
_VerifyingMaterial = bytes | rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class GripSigner:
    """Makes C{Grip-Sig} values for one issuer and key."""

    def __init__(self, iss: str, key: "SigningKey", now: Callable[[], float]) -> None:
        """
        @param now: the current POSIX time (the reactor's C{seconds}).
        """
        self._iss = iss
        self._key = key
        self._now = now
        self._token: bytes | None = None
        self._made = 0.0

    def token(self) -> bytes:
        """A valid token, reused while it is less than a minute old."""
        now = self._now()
        if self._token is None or now - self._made >= _REUSE or now < self._made:
            claims = {"iss": self._iss, "exp": int(now) + _LIFETIME}
            with warnings.catch_warnings():
                # pyjwt warns about short HMAC keys; Pushpin's stock key is "changeme" and the
                # key is the user's choice: a warning per token would only flood the log.
                warnings.simplefilter("ignore", UserWarning)
                self._token = jwt.encode(claims, self._signing_material(), algorithm=self._key.algorithm).encode("ascii")
            self._made = now
        return self._token

    def _signing_material(self) -> _SigningMaterial:
        if self._key.algorithm.startswith("HS"):
            return self._key.key
        private = serialization.load_pem_private_key(self._key.key, password=None)
        if isinstance(private, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            return private
        raise ValueError(f"not an RSA or EC private key: {type(private).__name__}")  # config refuses these

def verify_grip_sig(token: bytes, key: "SigningKey", now: float) -> bool:
    """Whether C{token} is a valid JWT signed with C{key} whose C{exp} is after C{now}."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # short HMAC keys: the user's choice
            return _decode(token, key, now)
    except Exception:
        return False


def _decode(token: bytes, key: "SigningKey", now: float) -> bool:
    claims = jwt.decode(
        token,
        _verifying_material(key),
        algorithms=[key.algorithm],
        options={"require": ["exp"], "verify_exp": False, "verify_aud": False},
    )
    return float(claims["exp"]) > now


def _verifying_material(key: "SigningKey") -> _VerifyingMaterial:
    if key.algorithm.startswith("HS"):
        return key.key
    public: object
    try:
        public = serialization.load_pem_public_key(key.key)
    except ValueError:
        public = serialization.load_pem_private_key(key.key, password=None).public_key()
    if isinstance(public, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return public
    raise ValueError(f"not an RSA or EC key: {type(public).__name__}")  # config refuses these
