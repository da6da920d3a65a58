# -*- test-case-name: tests.protocol.test_signing -*-
"""
C{Grip-Sig}: the JWT that tells an origin Pushpin is in front of it, and the check that
makes an upstream proxy "trusted" (reference §2 sig_iss/sig_key/upstream_key, §4.1 step 7).

Tokens are made with pyjwt. Signing costs tens of microseconds, so a token is reused for a
minute (its claims are only C{iss} and an C{exp} an hour ahead, as Pushpin's). Verification
always names the one algorithm the configured key is for: a token cannot pick its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import warnings

import jwt
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from pushpin_tx.protocol.config import SigningKey

__all__ = ["GripSigner", "verify_grip_sig"]

_LIFETIME = 3600
_REUSE = 60


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

    def _signing_material(self) -> object:
        if self._key.algorithm.startswith("HS"):
            return self._key.key
        return serialization.load_pem_private_key(self._key.key, password=None)


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


def _verifying_material(key: "SigningKey") -> object:
    if key.algorithm.startswith("HS"):
        return key.key
    try:
        return serialization.load_pem_public_key(key.key)
    except ValueError:
        return serialization.load_pem_private_key(key.key, password=None).public_key()
