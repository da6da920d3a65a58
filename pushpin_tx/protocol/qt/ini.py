# -*- test-case-name: tests.protocol.test_config -*-
"""
Read INI files the way Qt's QSettings (IniFormat) reads them, which is what Pushpin uses.

Why by hand: Python's configparser disagrees with QSettings on the points a pushpin.conf relies
on. In QSettings an unquoted comma makes the value a string list (`http_port=7999,8000`),
double quotes protect commas and spaces, backslash escapes follow C, an unquoted `;` ends the
line, `[General]` is the section-less group, and a repeated key silently replaces the earlier
one. configparser has none of that (it also lower-cases keys and rejects duplicates), so this
small port of QSettingsPrivate::iniUnescapedStringList and readIniLine is the faithful option.

One deliberate difference: a line starting with `#` is a comment here (Qt 6 treats it as a
key named `#...` that nobody reads, which has the same effect for Pushpin).

Pure: decodes bytes handed in; the caller reads files.
"""

from __future__ import annotations

import string

__all__ = ["IniValue", "IniSyntaxError", "parse_ini"]

# A value with an unquoted comma is a string list in QSettings; otherwise a plain string.
IniValue = str | tuple[str, ...]

# QSettingsPrivate::iniUnescapedStringList's escape table.
_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    '"': '"', "?": "?", "'": "'", "\\": "\\",
}
_HEX = frozenset(string.hexdigits)
_OCT = frozenset("01234567")
_PLAIN_STOP = frozenset('\\",;')


class IniSyntaxError(ValueError):
    """A line that is neither a comment, a `[section]` header nor `key=value`."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


def parse_ini(text: str) -> dict[tuple[str, str], IniValue]:
    """Parse INI text into {(section, key): value}, in file order; later duplicates win.

    Keys outside any section, or under `[General]`, get the section "".
    """
    out: dict[tuple[str, str], IniValue] = {}
    section = ""
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped[0] == "[":
            end = stripped.find("]")
            if end == -1:
                raise IniSyntaxError(lineno, f"malformed section header {stripped!r}")
            name = stripped[1:end].strip()
            section = "" if name.lower() == "general" else name
            continue
        equals = _find_unquoted_equals(stripped)
        if equals == -1:
            raise IniSyntaxError(lineno, f"expected key=value, got {stripped!r}")
        key = stripped[:equals].rstrip(" \t")
        value = _unescape_value(stripped[equals + 1:])
        out.pop((section, key), None)  # a repeated key moves to its latest position
        out[(section, key)] = value
    return out


def _find_unquoted_equals(line: str) -> int:
    """Index of the first `=` outside double quotes (QConfFileSettingsPrivate::readIniLine)."""
    in_quotes = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == "=" and not in_quotes:
            return i
        i += 1
    return -1


def _unescape_value(raw: str) -> IniValue:
    """Port of QSettingsPrivate::iniUnescapedStringList plus stringToVariant's `@` forms."""
    items: list[str] = []
    current: list[str] = []
    is_list = in_quotes = quoted = False
    n = len(raw)
    i = _skip_spaces(raw, 0)
    while i < n:
        ch = raw[i]
        if ch == "\\":
            i += 1
            if i >= n:
                break
            escaped = raw[i]
            i += 1
            if escaped in _ESCAPES:
                current.append(_ESCAPES[escaped])
            elif escaped == "x":
                j = i
                while j < n and raw[j] in _HEX:
                    j += 1
                if j > i:  # QChar keeps the low 16 bits
                    current.append(chr(int(raw[i:j], 16) & 0xFFFF))
                i = j
            elif escaped in _OCT:
                j = i
                while j < n and raw[j] in _OCT:
                    j += 1
                current.append(chr(int(raw[i - 1:j], 8) & 0xFFFF))
                i = j
            # any other escaped character is dropped, as Qt does
        elif ch == '"':
            i += 1
            quoted = True
            in_quotes = not in_quotes
            if not in_quotes:
                i = _skip_spaces(raw, i)
        elif ch == "," and not in_quotes:
            items.append(_finish(current, quoted))
            current, quoted, is_list = [], False, True
            i = _skip_spaces(raw, i + 1)
        elif ch == ";" and not in_quotes:
            break  # readIniLine ends the line at an unquoted ';' (a trailing comment)
        else:
            j = i + 1
            while j < n and raw[j] not in _PLAIN_STOP:
                j += 1
            current.append(raw[i:j])
            i = j
    last = _finish(current, quoted)
    if is_list:
        return tuple(_atom(item) for item in (*items, last))
    return _atom(last)


def _skip_spaces(raw: str, i: int) -> int:
    while i < len(raw) and raw[i] in " \t":
        i += 1
    return i


def _finish(parts: list[str], quoted: bool) -> str:
    text = "".join(parts)
    return text if quoted else text.rstrip(" \t")


def _atom(text: str) -> str:
    """QSettingsPrivate::stringToVariant for the string-valued `@` forms."""
    if text.startswith("@@"):
        return text[1:]
    if text.startswith("@ByteArray(") and text.endswith(")"):
        return text[len("@ByteArray("):-1]
    if text == "@Invalid()":
        return ""
    return text
