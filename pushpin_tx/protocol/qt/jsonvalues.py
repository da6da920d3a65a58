# -*- test-case-name: tests.protocol.test_items,tests.protocol.test_respond -*-
"""
JSON the way Qt 5 reads and writes it, for L{pushpin_tx.protocol.items} and L{pushpin_tx.protocol.respond}.

Pushpin 1.36 is a Qt program: it parses publish bodies and hold bodies with
C{QJsonDocument::fromJson} and writes patched bodies with C{QJsonDocument::toJson}. Both
differ from the obvious Python call in ways a publisher can see (accepted documents, the
exact bytes of a patched body), so they are reproduced here by hand, checked against the
real Pushpin 1.36.0. Numbers and text in the values are converted by
L{pushpin_tx.protocol.qt.numbers} and L{pushpin_tx.protocol.qt.strings}. Pure code.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from typing import Any

from pushpin_tx.protocol.qt.strings import utf16_key

__all__ = ()

# --- reading ---------------------------------------------------------------------------------


def loads_json(data: bytes) -> dict[str, Any] | list[Any]:
    """
    Parse a JSON document the way C{QJsonDocument::fromJson} accepts it: UTF-8 (a leading
    BOM is allowed), an object or array at the top, raw control characters allowed inside
    strings, no C{NaN}/C{Infinity}, no number beyond double range. Raises C{ValueError}.

    Known differences: Qt also takes numbers written C{.5} or C{1.} and unknown escapes such
    as C{\\x}; those documents are refused here.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    text = data.decode("utf-8")
    try:
        value = json.loads(text, strict=False, parse_constant=_bad_constant, parse_float=_finite_float, parse_int=_double_int)
    except RecursionError as e:
        raise ValueError("JSON nested too deeply") from e
    if not isinstance(value, (dict, list)):
        raise ValueError("JSON document is not an object or array")
    return value


def _bad_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _double_int(text: str) -> int:
    number = int(text)
    try:
        float(number)
    except OverflowError:
        raise ValueError("number out of range") from None
    return number


# --- writing ---------------------------------------------------------------------------------

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps_json(value: object) -> bytes:
    """C{QJsonDocument::toJson(Compact)}: compact, keys sorted, Qt's number forms. Raises C{ValueError}."""
    return _write(value).encode("utf-8")


def _write(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return qt_number(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list):
        return "[" + ",".join(_write(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=utf16_key)
        return "{" + ",".join(_string(k) + ":" + _write(value[k]) for k in keys) + "}"
    raise ValueError(f"cannot write {type(value).__name__} as JSON")


def _string(text: str) -> str:
    # Qt escapes exactly what json.dumps(ensure_ascii=False) escapes (control characters as
    # \b \f \n \r \t or lowercase \u00xx, '"' and '\'), and writes an unpaired surrogate as
    # a \uxxxx escape where Python would leave an unencodable character.
    out = json.dumps(text, ensure_ascii=False)
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)


def qt_number(value: float) -> str:
    """
    A JSON number as Qt 5 writes it: integral values below 2**64 in plain ('f') form,
    everything else in the shorter of plain and exponent ('g') form, always with the fewest
    digits that read back to the same double; non-finite numbers are C{null}.
    """
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("number out of range") from None
    if not math.isfinite(number):
        return "null"
    if number == 0:
        return "0"
    magnitude = abs(number)
    digits, decpt = _shortest_digits(magnitude)
    count = len(digits)
    exponent_form = False
    if not (magnitude < 2.0**64 and magnitude == math.floor(magnitude)):
        # QLocaleData::doubleToString, DFSignificantDigits with FloatingPointShortest.
        cutoff = 6
        if decpt > 0:
            cutoff = count + 4 + (1 if decpt <= 10 else (2 if decpt > 100 else 1))
            if count > decpt:
                cutoff += 1
        exponent_form = decpt != count and (decpt <= -4 or decpt > cutoff)
    sign = "-" if number < 0 else ""
    if exponent_form:
        mantissa = digits[0] + ("." + digits[1:] if count > 1 else "")
        exponent = decpt - 1
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if decpt <= 0:
        return f"{sign}0.{'0' * -decpt}{digits}"
    if decpt < count:
        return f"{sign}{digits[:decpt]}.{digits[decpt:]}"
    return f"{sign}{digits}{'0' * (decpt - count)}"


def _shortest_digits(magnitude: float) -> tuple[str, int]:
    """The shortest round-trip digits of a positive double, and the decimal point position."""
    # repr() yields the shortest digit string that reads back to the same double, as Qt's
    # FloatingPointShortest (double-conversion) does.
    parts = decimal.Decimal(repr(magnitude)).as_tuple()
    digits = "".join(map(str, parts.digits))
    stripped = digits.rstrip("0")
    exponent = int(parts.exponent) + len(digits) - len(stripped)
    return stripped, len(stripped) + exponent
