"""Grip-Sig tokens: Pushpin's claims, a reused token, and verification with a fixed algorithm."""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pushpin_tx.protocol.config import SigningKey
from pushpin_tx.protocol.signing import GripSigner, verify_grip_sig


def test_token_has_pushpins_claims_and_is_reused_for_a_minute():
    """Claims are iss and exp = now + 3600; the same token is reused for 60 s, then renewed."""
    now = [1000.0]
    signer = GripSigner("pushpin", SigningKey("HS256", b"changeme"), lambda: now[0])
    token = signer.token()
    claims = jwt.decode(token, b"changeme", algorithms=["HS256"], options={"verify_exp": False})
    assert claims == {"iss": "pushpin", "exp": 4600}
    now[0] = 1059.0
    assert signer.token() is token
    now[0] = 1060.0
    assert signer.token() != token


def test_verify_accepts_only_the_configured_key_and_algorithm():
    """A token verifies under its key; another key, 'none' or an expired token does not."""
    key = SigningKey("HS256", b"secret")
    good = jwt.encode({"iss": "up", "exp": 2000}, b"secret", algorithm="HS256").encode()
    assert verify_grip_sig(good, key, now=1000)
    assert not verify_grip_sig(good, key, now=2001)
    assert not verify_grip_sig(good, SigningKey("HS256", b"other"), now=1000)
    unsigned = jwt.encode({"iss": "up", "exp": 2000}, None, algorithm="none").encode()
    assert not verify_grip_sig(unsigned, key, now=1000)
    assert not verify_grip_sig(b"garbage", key, now=1000)


def test_ec_keys_sign_es256_and_verify_with_the_public_key():
    """An EC PEM sig_key signs ES256; an upstream_key given as the public PEM verifies it."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = GripSigner("pushpin", SigningKey("ES256", pem), lambda: 1000.0).token()
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert verify_grip_sig(token, SigningKey("ES256", public), now=1000)
