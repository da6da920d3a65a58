# -*- test-case-name: tests.protocol.test_qt -*-
"""
Qt 5's text and byte-array conversions, one function per Qt call that Pushpin 1.36 makes.

Python strings can hold what UTF-8 cannot encode: a lone surrogate, which a JSON C{\\ud800}
escape produces. Qt's C{QString} holds it too and writes it as C{?} (L{to_utf8}); decoding
bad UTF-8 gives U+FFFD (L{from_utf8}). L{replace_lone_surrogates} is the one place that
turns lone surrogates into U+FFFD before encoding, for the GRIP JSON instruction. Pure code.
"""

from __future__ import annotations

import binascii
import re

__all__ = ["from_base64", "from_utf8", "replace_lone_surrogates", "to_utf8", "utf16_key"]

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_BASE64 = bytes(c for c in range(256) if c not in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def to_utf8(text: str) -> bytes:
    """C{QString::toUtf8}: UTF-8, with each unpaired surrogate written as C{?} (observed on Pushpin 1.36)."""
    return text.encode("utf-8", "replace")


def from_utf8(data: bytes) -> str:
    """
    C{QString::fromUtf8}: UTF-8 text, malformed sequences replaced by U+FFFD.

    Known difference: Qt replaces byte by byte after a malformed sequence (C{b"\\xe2\\x82A"}
    gives two U+FFFD), Python once per maximal prefix of a valid sequence (one U+FFFD).
    """
    return data.decode("utf-8", "replace")


def replace_lone_surrogates(text: str) -> str:
    """
    Each unpaired surrogate replaced by U+FFFD; paired surrogates are already one character
    in Python and stay. Used for the strings of a GRIP JSON instruction (channel names, meta,
    response body and headers), so that they stay encodable wherever they go.

    No Qt call does this. Pushpin keeps the surrogate in its C{QString}, and L{to_utf8}
    would later write C{?}, as it does for publish items (observed there).
    """
    return _LONE_SURROGATE.sub("\ufffd", text)


def utf16_key(text: str) -> bytes:
    """A sort key in C{QString::operator<} order: UTF-16 code units, which differs from code points above U+FFFF."""
    return text.encode("utf-16-be", "surrogatepass")


def from_base64(data: bytes) -> bytes:
    """
    C{QByteArray::fromBase64(data)} in its default lenient mode (C{Base64Encoding}, no
    C{AbortOnBase64DecodingErrors}): bytes outside the alphabet, padding included wherever
    it is, are skipped and a dangling 6-bit group is dropped. C{base64.b64decode} insists on
    correct padding instead. Text is converted first, as Pushpin does:
    C{from_base64(to_utf8(text))} is C{QByteArray::fromBase64(text.toUtf8())}.
    """
    digits = data.translate(None, _NON_BASE64)
    if len(digits) % 4 == 1:
        digits = digits[:-1]
    return binascii.a2b_base64(digits + b"=" * (-len(digits) % 4))
