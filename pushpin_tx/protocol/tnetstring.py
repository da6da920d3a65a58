# -*- test-case-name: tests.protocol.test_tnetstring -*-
"""
Tnetstring encoding and decoding (pure).

Pushpin speaks tnetstrings on its ZMQ sockets: publish items on the PULL and SUB inputs
(reference §6.3), stats packets, command requests. A tnetstring is C{SIZE:DATA TAG}: the
decimal byte length of DATA, a colon, DATA, then one tag byte saying what DATA is::

    ,  byte string      #  integer      ^  float      !  true/false
    ~  null (empty)     }  dict: key/value pairs, keys are byte strings
    ]  list

This codec is written by hand because the PyPI C{tnetstring} package is unmaintained (last
release 2011, Python 2 era) and C-only; the format is small enough that a pure, fully
tested implementation is cheaper than a fragile dependency.

Decoded byte strings stay C{bytes} (tnetstrings carry no text type); L{dumps} encodes a
C{str} as its UTF-8 bytes. L{loads} and L{pop} raise only L{TnetstringError}, whatever the
input, so a hostile ZMQ peer cannot crash a reader.
"""

from __future__ import annotations

import re

__all__ = ["TnetstringError", "dumps", "loads", "pop"]

#: Containers nested deeper than this are refused (a guard against stack exhaustion).
MAX_DEPTH = 256

#: At most this many size digits (the format's own limit: sizes up to 999,999,999 bytes).
_MAX_SIZE_DIGITS = 9

_INT = re.compile(rb"-?[0-9]+\Z")
_FLOAT = re.compile(
    rb"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\Z",
    re.IGNORECASE,
)


class TnetstringError(ValueError):
    """The data is not a well-formed tnetstring."""


def dumps(value: object) -> bytes:
    """
    Encode C{value}: C{dict} (C{str} or C{bytes} keys), C{list}/C{tuple}, C{bytes}, C{str}
    (as UTF-8), C{int}, C{float}, C{bool} and C{None}. Other types raise C{TypeError}.
    """
    out: list[bytes] = []
    _dump(value, out, 0)
    return b"".join(out)


def _frame(payload: bytes, tag: bytes) -> bytes:
    return b"%d:%s%s" % (len(payload), payload, tag)


def _dump(value: object, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("tnetstring nesting too deep")
    # bool before int: bool is an int subclass.
    if value is None:
        out.append(b"0:~")
    elif value is True:
        out.append(b"4:true!")
    elif value is False:
        out.append(b"5:false!")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(_frame(bytes(value), b","))
    elif isinstance(value, str):
        out.append(_frame(value.encode("utf-8"), b","))
    elif isinstance(value, int):
        out.append(_frame(b"%d" % value, b"#"))
    elif isinstance(value, float):
        out.append(_frame(repr(value).encode("ascii"), b"^"))
    elif isinstance(value, dict):
        parts: list[bytes] = []
        for key, item in value.items():
            if not isinstance(key, (str, bytes)):
                raise TypeError(f"tnetstring dict keys must be str or bytes, not {type(key).__name__}")
            _dump(key, parts, depth + 1)
            _dump(item, parts, depth + 1)
        out.append(_frame(b"".join(parts), b"}"))
    elif isinstance(value, (list, tuple)):
        parts = []
        for item in value:
            _dump(item, parts, depth + 1)
        out.append(_frame(b"".join(parts), b"]"))
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a tnetstring")


def loads(data: bytes) -> object:
    """Decode exactly one tnetstring; trailing bytes are an error. Strings come back as C{bytes}."""
    data = _as_bytes(data)
    value, end = _parse(data, 0, len(data), 0)
    if end != len(data):
        raise TnetstringError(f"{len(data) - end} trailing bytes after the tnetstring")
    return value


def pop(data: bytes) -> tuple[object, bytes]:
    """Decode the first tnetstring in C{data}; return it and the bytes that follow it."""
    data = _as_bytes(data)
    value, end = _parse(data, 0, len(data), 0)
    return value, data[end:]


def _as_bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TnetstringError(f"tnetstring input must be bytes, not {type(data).__name__}")


def _parse(data: bytes, pos: int, limit: int, depth: int) -> tuple[object, int]:
    """Parse one value starting at C{pos} that must end by C{limit}; return it and its end."""
    if depth > MAX_DEPTH:
        raise TnetstringError(f"tnetstring nested deeper than {MAX_DEPTH} levels")
    colon = data.find(b":", pos, min(limit, pos + _MAX_SIZE_DIGITS + 1))
    if colon == -1:
        if pos >= limit:
            raise TnetstringError("missing tnetstring (no data)")
        raise TnetstringError("malformed tnetstring size (no ':' after at most 9 digits)")
    size_text = data[pos:colon]
    if not size_text or not size_text.isdigit() or not size_text.isascii():
        raise TnetstringError(f"malformed tnetstring size {size_text!r}")
    size = int(size_text)
    start = colon + 1
    tag_at = start + size
    if tag_at >= limit:
        raise TnetstringError(f"tnetstring declares {size} bytes but fewer remain, or the type tag is missing")
    payload_end = tag_at
    tag = data[tag_at]
    end = tag_at + 1
    if tag == 0x2C:  # ','
        return data[start:payload_end], end
    if tag == 0x7D:  # '}'
        return _parse_dict(data, start, payload_end, depth), end
    if tag == 0x5D:  # ']'
        return _parse_list(data, start, payload_end, depth), end
    payload = data[start:payload_end]
    if tag == 0x23:  # '#'
        if not _INT.match(payload):
            raise TnetstringError(f"malformed tnetstring integer {payload[:40]!r}")
        return int(payload), end
    if tag == 0x5E:  # '^'
        if not _FLOAT.match(payload):
            raise TnetstringError(f"malformed tnetstring float {payload[:40]!r}")
        return float(payload), end
    if tag == 0x21:  # '!'
        if payload == b"true":
            return True, end
        if payload == b"false":
            return False, end
        raise TnetstringError(f"malformed tnetstring boolean {payload[:40]!r}")
    if tag == 0x7E:  # '~'
        if payload:
            raise TnetstringError("tnetstring null must be empty")
        return None, end
    raise TnetstringError(f"unknown tnetstring type tag {bytes([tag])!r}")


def _parse_dict(data: bytes, pos: int, limit: int, depth: int) -> dict[bytes, object]:
    out: dict[bytes, object] = {}
    while pos < limit:
        key, pos = _parse(data, pos, limit, depth + 1)
        if not isinstance(key, bytes):
            raise TnetstringError("tnetstring dict key is not a byte string")
        if pos >= limit:
            raise TnetstringError("tnetstring dict key has no value")
        out[key], pos = _parse(data, pos, limit, depth + 1)
    return out


def _parse_list(data: bytes, pos: int, limit: int, depth: int) -> list[object]:
    out: list[object] = []
    while pos < limit:
        item, pos = _parse(data, pos, limit, depth + 1)
        out.append(item)
    return out
