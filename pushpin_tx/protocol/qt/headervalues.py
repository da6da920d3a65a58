# -*- test-case-name: tests.protocol.test_grip -*-
"""
Byte-level parsers that reproduce how Pushpin 1.36 (a Qt program) splits GRIP header values.

GRIP headers are not parsed by any RFC grammar but by Pushpin's own C{HttpHeaders} helpers
(C{src/core/httpheaders.cpp}) and by Qt's number and base64 conversions (those are in
L{pushpin_tx.protocol.qt.numbers} and L{pushpin_tx.protocol.qt.strings}). Origins in the wild
rely on their exact quirks (comma splitting that respects quotes, a first parameter taken
verbatim up to the first C{;}, parse failures that silently drop one element, base64 that
skips junk), so these are hand-written ports rather than C{email.message} or
C{base64.b64decode}, which disagree on every one of those points.

Private to L{pushpin_tx.protocol.grip}; nothing here raises.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ()

#: One header parameter: name, and value (C{None} when there was no C{=value}, or when a
#: quoted value was empty: Pushpin keeps a null byte array in both cases).
Param = tuple[bytes, bytes | None]


def first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header C{name} (case-insensitive), or C{None}."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def split_header(value: bytes) -> list[bytes]:
    """Split a header value at commas outside double quotes, trimming each part (C{headerSplit})."""
    parts: list[bytes] = []
    pos = 0
    size = len(value)
    while pos < size:
        end = _find_unquoted(value, ord(","), pos)
        if end == -1:
            # An unterminated quote: the rest is one part (and will usually fail to parse).
            parts.append(value[pos:].strip())
            pos = size
        else:
            parts.append(value[pos:end].strip())
            pos = end + 1 if end < size else size
    return parts


def all_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every comma-separated element of every C{name} header, in order (C{getAll})."""
    name = name.lower()
    out: list[bytes] = []
    for key, value in headers:
        if key.lower() == name:
            out.extend(split_header(value))
    return out


def all_as_params(
    headers: Iterable[tuple[bytes, bytes]], name: bytes, *, parse_first: bool = False
) -> list[list[Param]]:
    """C{getAllAsParameters}: each element parsed; elements that fail to parse are skipped."""
    out: list[list[Param]] = []
    for element in all_values(headers, name):
        params = parse_params(element, parse_first=parse_first)
        if params is not None:
            out.append(params)
    return out


def parse_params(value: bytes, *, parse_first: bool = False) -> list[Param] | None:
    """
    Parse C{first; k=v; k="quoted \\" value"} into parameters (C{parseParameters}).

    Unless C{parse_first}, the first parameter is the text up to the first C{;} taken
    verbatim (quotes not honoured), with no value. Returns C{None} on an unterminated quote
    or a dangling backslash.
    """
    out: list[Param] = []
    size = len(value)
    start = 0
    if not parse_first:
        at = value.find(b";")
        if at == -1:
            out.append((value.strip(), None))
            start = size
        else:
            out.append((value[:at].strip(), None))
            start = at + 1
    while start < size:
        at = _find_any(value, b"=;", start)
        if at == -1:
            out.append((value[start:].strip(), None))
            break
        var = value[start:at].strip()
        if value[at] == ord(";"):
            out.append((var, None))
            start = at + 1
            continue
        at += 1
        if at < size and value[at] == ord('"'):
            quoted = _read_quoted(value, at + 1)
            if quoted is None:
                return None
            text, after = quoted
            out.append((var, text or None))
            semi = value.find(b";", after)
            start = semi + 1 if semi != -1 else size
        else:
            semi = value.find(b";", at)
            if semi == -1:
                out.append((var, value[at:].strip()))
                start = size
            else:
                out.append((var, value[at:semi].strip()))
                start = semi + 1
    return out


def param(params: list[Param], name: bytes) -> bytes | None:
    """The value of the first parameter called C{name} (case-insensitive), or C{None}."""
    name = name.lower()
    for key, value in params:
        if key.lower() == name:
            return value
    return None


def has_param(params: list[Param], name: bytes) -> bool:
    """Whether any parameter is called C{name} (case-insensitive)."""
    name = name.lower()
    return any(key.lower() == name for key, _ in params)


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def unescape_cstring(value: bytes) -> bytes | None:
    """
    Decode C{Grip-Keep-Alive; format=cstring}: C{\\\\ \\r \\n \\xHH}; any other escaped
    character is dropped. C{None} on a dangling or malformed escape, or an empty result.
    """
    out = bytearray()
    n = 0
    size = len(value)
    while n < size:
        c = value[n]
        if c != ord("\\"):
            out.append(c)
            n += 1
            continue
        if n + 1 >= size:
            return None
        n += 1
        escaped = value[n]
        if escaped == ord("\\"):
            out.append(ord("\\"))
        elif escaped == ord("r"):
            out.append(ord("\r"))
        elif escaped == ord("n"):
            out.append(ord("\n"))
        elif escaped == ord("x"):
            digits = value[n + 1 : n + 3]
            if n + 2 >= size or not all(h in _HEX_DIGITS for h in digits):
                return None
            out.append(int(digits, 16))
            n += 2
        n += 1
    # Pushpin's result is a null array when nothing was appended, which it reports as an error.
    return bytes(out) if out else None


def _find_unquoted(value: bytes, char: int, offset: int) -> int:
    """Index of C{char} outside quotes from C{offset}; C{len(value)} if absent; -1 on a bad quote."""
    in_quote = False
    n = offset
    size = len(value)
    while n < size:
        c = value[n]
        if in_quote:
            if c == ord("\\"):
                n += 1
                if n >= size:
                    return -1
            elif c == ord('"'):
                in_quote = False
        elif c == ord('"'):
            in_quote = True
        elif c == char:
            return n
        n += 1
    return -1 if in_quote else size


def _find_any(value: bytes, chars: bytes, offset: int) -> int:
    """Index of the first byte from C{chars} at or after C{offset}, or -1."""
    for n in range(offset, len(value)):
        if value[n] in chars:
            return n
    return -1


def _read_quoted(value: bytes, at: int) -> tuple[bytes, int] | None:
    """Read a quoted string whose opening quote precedes C{at}: (text, index after the closing quote)."""
    text = bytearray()
    n = at
    size = len(value)
    while n < size:
        c = value[n]
        if c == ord("\\"):
            if n + 1 >= size:
                return None
            n += 1
            text.append(value[n])
        elif c == ord('"'):
            return bytes(text), n + 1
        else:
            text.append(c)
        n += 1
    return None
