# -*- test-case-name: tests.protocol.test_qt -*-
"""
Qt 5's integer conversions, one function per Qt call that Pushpin 1.36 makes.

Pushpin reads numbers with several Qt calls that look alike and are not: C{QByteArray::toInt}
(header values and WebSocket-over-HTTP lengths: ASCII whitespace only, reading stops at a
NUL), C{QString::toInt} (routes, JSON strings, JSON Patch indexes: any Unicode space, and
the sign U+2212), the C{toLongLong} forms (64-bit range) behind C{QVariant::toInt}, which
then keeps the low 32 bits, and C{qRound64} for doubles. Each is here once; callers pick
the one their Qt call is, so the differences stay visible. The conversions return C{None}
where Qt's C{bool *ok} would be false. Pure code.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

__all__ = ["bytearray_to_int", "int_cast", "qround64", "string_to_int", "variant_to_int"]

#: The width of the Qt integer type converted to: C{int} (32) or C{qlonglong} (64).
Bits = Literal[32, 64]
#: The bases Pushpin parses in: decimal; octal for C{ipc_file_mode}; hexadecimal, where
#: strtoll also takes a C{0x} prefix, for WebSocket-over-HTTP content lengths.
Base = Literal[8, 10, 16]

# qstrtoll and QLocaleData::bytearrayToLongLong skip C isspace() around the digits.
_BYTES_NUMBER: dict[int, re.Pattern[bytes]] = {
    10: re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)[ \t\n\v\f\r]*\Z"),
    8: re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-7]+)[ \t\n\v\f\r]*\Z"),
    16: re.compile(rb"[ \t\n\v\f\r]*([+-]?)(?:0[xX])?([0-9a-fA-F]+)[ \t\n\v\f\r]*\Z"),
}
# After QLocaleData::numberToCLocale trimmed QChar::isSpace and mapped U+2212 to '-'.
_TEXT_NUMBER: dict[int, re.Pattern[str]] = {
    10: re.compile(r"([+\-\u2212]?)([0-9]+)\Z"),
    8: re.compile(r"([+\-\u2212]?)([0-7]+)\Z"),
    16: re.compile(r"([+\-\u2212]?)(?:0[xX])?([0-9a-fA-F]+)\Z"),
}


def bytearray_to_int(data: bytes, *, base: Base = 10, bits: Bits = 32) -> int | None:
    """
    C{QByteArray::toInt(&ok, base)} (C{bits=64}: C{QByteArray::toLongLong(&ok, base)}):
    optional ASCII whitespace (C{" \\t\\n\\v\\f\\r"}) around an optionally signed run of
    digits (in base 16 after an optional C{0x}); C{None} for anything else, including a result
    outside the type's range. Qt reads the array up to its first NUL byte, so C{b"12\\0x"}
    is 12.
    """
    match = _BYTES_NUMBER[base].match(data.split(b"\0", 1)[0])
    if match is None:
        return None
    sign, digits = match.groups()
    number = int(digits, base)
    return _in_range(-number if sign == b"-" else number, bits)


def string_to_int(text: str, *, base: Base = 10, bits: Bits = 32) -> int | None:
    """
    C{QString::toInt(&ok, base)} (C{bits=64}: C{QString::toLongLong(&ok, base)}), which
    parses in the C locale: leading and trailing C{QChar::isSpace} characters are skipped
    (Unicode spaces such as U+00A0 included, unlike L{bytearray_to_int}), the sign may also
    be U+2212 MINUS SIGN, and the digits are ASCII (in base 16 after an optional C{0x}).
    C{None} for anything else, including a result outside the type's range; a NUL character
    is not skipped and fails.
    """
    start, end = 0, len(text)
    while start < end and _qchar_is_space(text[start]):
        start += 1
    while end > start and _qchar_is_space(text[end - 1]):
        end -= 1
    match = _TEXT_NUMBER[base].match(text, start, end)
    if match is None:
        return None
    sign, digits = match.groups()
    number = int(digits, base)
    return _in_range(-number if sign in ("-", "\u2212") else number, bits)


def qround64(number: float) -> int | None:
    """
    C{qRound64(d)}: round half up (C{-2.5} is C{-2}). C{None} when the result does not fit a
    C{qint64} or C{number} is not finite, where Qt's result is undefined (x86 gives
    C{INT64_MIN}); each caller says what it makes of that.
    """
    if not math.isfinite(number):
        return None
    return _in_range(math.floor(number + 0.5), 64)


def int_cast(number: int) -> int:
    """C{int(qlonglong)}: the low 32 bits as a signed number, the cast C{QVariant::toInt} makes."""
    number &= 0xFFFFFFFF
    return number - 2**32 if number >= 2**31 else number


def variant_to_int(value: object, *, json_numbers: bool = True) -> int | None:
    """
    C{QVariant::toInt()} on a decoded JSON or tnetstring value: C{None} where Qt cannot
    convert the type at all (null, list, object), else what Qt computes as a C{qlonglong}
    and then casts to C{int} (L{int_cast}): booleans are 0/1, doubles go through
    L{qround64}, strings through C{QString::toLongLong} (L{string_to_int}) and byte strings
    through C{QByteArray::toLongLong} (L{bytearray_to_int}); what does not convert is 0.

    An C{int} is a JSON number, a double in Qt, unless C{json_numbers} is false: then it is
    a tnetstring integer, exact in 64 bits.
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not json_numbers and _in_range(value, 64) is not None:
            return int_cast(value)
        try:
            value = float(value)
        except OverflowError:  # beyond double range; Qt's parsers never produce these
            return 0
    if isinstance(value, float):
        # x86 turns an out-of-range double-to-int64 conversion into INT64_MIN, whose low 32
        # bits are 0 (observed: code 1e300 is accepted as code 0).
        return int_cast(qround64(value) or 0)
    if isinstance(value, str):
        return int_cast(string_to_int(value, bits=64) or 0)
    if isinstance(value, bytes):
        return int_cast(bytearray_to_int(value, bits=64) or 0)
    return None


def _in_range(number: int, bits: Bits) -> int | None:
    limit = 2 ** (bits - 1)
    return number if -limit <= number < limit else None


def _qchar_is_space(char: str) -> bool:
    """C{QChar::isSpace}: tab to carriage return, space, U+0085, U+00A0 and Unicode categories Z*."""
    code = ord(char)
    if code == 0x20 or 0x09 <= code <= 0x0D:
        return True
    if code < 0x80:
        return False
    return code in (0x85, 0xA0) or unicodedata.category(char) in ("Zs", "Zl", "Zp")
