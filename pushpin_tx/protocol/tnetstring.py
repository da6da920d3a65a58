# -*- test-case-name: tests.protocol.test_tnetstring -*-
"""
Tnetstring encoding and decoding (pure).

Pushpin speaks tnetstrings on its ZMQ sockets: publish items on the PULL and SUB inputs
(reference §6.3), stats packets, command requests. A tnetstring is C{SIZE:DATA TAG}: the
decimal byte length of DATA, a colon, DATA, then one tag byte saying what DATA is::

    ,  byte string      #  integer      ^  float      !  true/false
    ~  null (empty)     }  dict: key/value pairs, keys are byte strings
    ]  list

Why by hand (measured for issue 18 on 2026-12-02): the old C{tnetstring} package is Python 2
era (2011); C{tnetstring3} 0.4.0 is maintained (a C extension, wheels for CPython 3.10-3.14)
and much faster, but it does not keep Pushpin's rules nor this module's promise:

  - hostile bytes escape as other exceptions, past the C{except TnetstringError} of the ZMQ
    inputs and the command socket: C{OverflowError} for a non-ASCII byte among an integer's
    digits (C{2:} then bytes D9 A1 then C{#}; 118 of 300,000 random and mutated frames in
    a differential fuzz against this module), C{TypeError} for a list decoded as a dict key, C{RecursionError}
    past its depth limit (512);
  - it accepts what Pushpin refuses: dict keys that are not byte strings (an integer key
    comes back as C{{1: b'x'}}), hex floats (C{4:-0x0^}), C{+1#}, trailing bytes after C{loads};
    and it encodes int dict keys;
  - it refuses what pushpin-tx writes: C{str} (stats packets and command replies have str
    keys and values), tuples, C{bytearray}/C{memoryview}.

Run against our tests (tests/protocol/test_tnetstring.py) it fails 10 of 55. Behind an
adapter (a Python walk on encode for str, tuples and key types; on decode, catching the four
exception types above and refusing trailing bytes; C{_adapted} in the bench) it passes all
55, but still reads the wider language above, and a C parser whose fuzzing already turned
up an unexpected exception is a worse bet on hostile ZMQ input than this one (a memory fault
there would not be catchable at all). The adapter also costs back half the encode gain.
Speed, C{bench/tnetstring_speed.py}, best of 7, microseconds per operation:

    =================================== ========== =============== ===================
    operation                           this       tnetstring3 raw tnetstring3 adapted
    =================================== ========== =============== ===================
    decode publish item (414 B, pop)    19.0       1.08            1.13
    encode publish item                 14.4       1.21            7.24
    decode command request (39 B, pop)  3.08       0.25            0.29
    encode stats report (str keys)      9.73       refused         5.27
    encode command reply (str keys)     5.05       refused         2.74
    =================================== ========== =============== ===================

None of these is on the proxied-request path (bench C{proxy_get}); the publish decode is the
one that could show, once per published item. Should a profile ever put it in sight, the lead
is a faster decode here, or C{tnetstring3} behind a validating walk that keeps the rules above.

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
