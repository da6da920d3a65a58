"""
Tests for L{pushpin_tx.protocol.qt.numbers} and L{pushpin_tx.protocol.qt.strings}: Qt's
conversions, each implemented once, and the call sites that use each one.

Before these modules there were four integer parsers (JSON values, GRIP headers, routes,
JSON Patch indexes) and three base64 decoders. The rows marked "was:" show the edge cases
where the old copies disagreed with each other or with Qt: each call site now uses the
function for the Qt call Pushpin makes there, and keeps its behaviour except in those rows,
where it now does what that Qt call does.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushpin_tx.protocol.grip import Instruct, InstructError, parse_grip_status, parse_instruct
from pushpin_tx.protocol.headers import Headers
from pushpin_tx.protocol.items import parse_item
from pushpin_tx.protocol.qt.numbers import Base, Bits, bytearray_to_int, int_cast, qround64, string_to_int, variant_to_int
from pushpin_tx.protocol.qt.strings import from_base64, from_utf8, replace_lone_surrogates, to_utf8, utf16_key
from pushpin_tx.protocol.respond import RespondError, merge_response
from pushpin_tx.protocol.routes import Route, parse_routes
from pushpin_tx.protocol.wsevents import WsEventsError, decode_events

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# --- QByteArray::toInt / toLongLong ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"404", 404),
        (b" \t42\r\n", 42),
        (b"\v-7\f", -7),
        (b"+5", 5),
        (b"007", 7),
        (b"2147483647", INT32_MAX),
        (b"-2147483648", -(2**31)),
        (b"2147483648", None),
        (b"-2147483649", None),
        (b"", None),
        (b"  ", None),
        (b"+", None),
        (b"1 2", None),
        (b"+ 1", None),
        (b"0x10", None),
        (b"1e3", None),
        (b"1.0", None),
        (b"12abc", None),
        (b"1_000", None),
        (b"\xa012", None),  # Latin-1 NBSP: not C isspace()
        (b"\xc2\xa012", None),  # UTF-8 NBSP: a QByteArray is not text
        (b"\x1c12", None),
        (b"12\x00abc", 12),  # Qt reads up to the first NUL. was: refused (GRIP headers, WebSocket events)
        (b"\x00", None),
    ],
)
def test_bytearray_to_int(data: bytes, expected: int | None) -> None:
    """bytearray_to_int is QByteArray::toInt(&ok): ASCII whitespace, a sign, decimal digits, 32 bits."""
    assert bytearray_to_int(data) == expected


@pytest.mark.parametrize(
    ("data", "base", "bits", "expected"),
    [
        (b"9223372036854775807", 10, 64, INT64_MAX),
        (b"-9223372036854775808", 10, 64, -(2**63)),
        (b"9223372036854775808", 10, 64, None),
        (b"4294967296", 10, 32, None),
        (b"4294967296", 10, 64, 2**32),
        (b"0755", 8, 32, 0o755),
        (b"-17", 8, 32, -0o17),
        (b"8", 8, 32, None),
        (b"ff", 16, 32, 255),
        (b" +0xA ", 16, 32, 10),
        (b"0XfF", 16, 32, 255),
        (b"-a", 16, 32, -10),
        (b"7fffffff", 16, 32, INT32_MAX),
        (b"80000000", 16, 32, None),
        (b"80000000", 16, 64, 2**31),
        (b"0x", 16, 32, None),
        (b"0x-1", 16, 32, None),
        (b"g", 16, 32, None),
    ],
)
def test_bytearray_to_int_bits_and_base(data: bytes, base: Base, bits: Bits, expected: int | None) -> None:
    """bits=64 is QByteArray::toLongLong; base 8 reads octal digits only, base 16 hex after an optional 0x."""
    assert bytearray_to_int(data, base=base, bits=bits) == expected


# --- QString::toInt / toLongLong -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("404", 404),
        (" \t42\r\n", 42),
        ("+5", 5),
        ("-7", -7),
        ("2147483647", INT32_MAX),
        ("2147483648", None),
        ("-2147483649", None),
        ("", None),
        (" ", None),
        ("1 2", None),
        ("0x10", None),
        ("1e3", None),
        ("12abc", None),
        ("1_000", None),  # Python's int() takes this; Qt does not
        ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: int() takes it; the C locale does not
        ("\uff15", None),  # FULLWIDTH DIGIT FIVE
        ("\uff0b5", None),  # FULLWIDTH PLUS SIGN is not a sign
        # QChar::isSpace, not ASCII only. was: 0 for a JSON value (QVariant::toInt)
        ("\u00a012", 12),
        ("\u200312\u3000", 12),
        ("\u2028 5\u0085", 5),
        # was: accepted by the routes parser (Python's str.strip() removes U+001C)
        ("\x1c12", None),
        # U+2212 MINUS SIGN counts as "-" (QLocaleData::digitToCLocale). was: refused everywhere
        ("\u22125", -5),
        ("\u2212 5", None),
    ],
)
def test_string_to_int(text: str, expected: int | None) -> None:
    """string_to_int is QString::toInt(&ok): Unicode spaces around, a sign (U+2212 too), ASCII digits, 32 bits."""
    assert string_to_int(text) == expected


@pytest.mark.parametrize(
    ("text", "base", "bits", "expected"),
    [
        ("9223372036854775807", 10, 64, INT64_MAX),
        ("9223372036854775808", 10, 64, None),
        ("4294967296", 10, 64, 2**32),
        ("0660", 8, 32, 0o660),
        (" +17 ", 8, 32, 0o17),
        ("\u221210", 8, 32, -8),
        ("0789", 8, 32, None),
        ("9", 8, 32, None),
        ("\u00a00x1F", 16, 32, 31),
        ("\u2212a", 16, 32, -10),
        ("1g", 16, 32, None),
        ("12\x00", 10, 32, None),  # a QString does not end at a NUL
    ],
)
def test_string_to_int_bits_and_base(text: str, base: Base, bits: Bits, expected: int | None) -> None:
    """bits=64 is QString::toLongLong; base 8 (ipc_file_mode) reads octal digits only."""
    assert string_to_int(text, base=base, bits=bits) == expected


def test_the_two_int_parsers_differ_only_in_whitespace_and_sign() -> None:
    """QByteArray::toInt and QString::toInt agree on ASCII input and part on Unicode spaces and U+2212."""
    for text in ("42", " -42 ", "+0", "x", "", "99999999999"):
        assert bytearray_to_int(text.encode()) == string_to_int(text)
    assert bytearray_to_int("\u00a042".encode()) is None
    assert string_to_int("\u00a042") == 42


# --- qRound64, int(qlonglong), QVariant::toInt -----------------------------------------------


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0.5, 1),
        (-0.5, 0),
        (-2.5, -2),
        (2.4999999, 2),
        (999.5, 1000),
        (-1.5, -1),
        (2.0**62, 2**62),
        (2.0**63, None),
        (-(2.0**63), -(2**63)),
        (1e300, None),
        (float("nan"), None),
        (float("inf"), None),
        (float("-inf"), None),
    ],
)
def test_qround64(number: float, expected: int | None) -> None:
    """qround64 is qRound64: half up; None where the result leaves qint64 (undefined in Qt)."""
    assert qround64(number) == expected


@pytest.mark.parametrize(
    ("number", "expected"),
    [(0, 0), (-1, -1), (2**31, -(2**31)), (2**32 + 5, 5), (-(2**31) - 1, INT32_MAX), (2**63 - 1, -1)],
)
def test_int_cast(number: int, expected: int) -> None:
    """int_cast keeps the low 32 bits as a signed int, like C++'s int(qlonglong)."""
    assert int_cast(number) == expected


@pytest.mark.parametrize(
    ("value", "json_numbers", "expected"),
    [
        (True, True, 1),
        (False, True, 0),
        (200, True, 200),
        (999.5, True, 1000),
        (-2.5, True, -2),
        (4294967496, True, 200),  # wraps to 32 bits
        (1e300, True, 0),  # observed: x86 gives INT64_MIN, whose low 32 bits are 0
        (2**63, False, 0),  # beyond a tnetstring's 64 bits: read as a double, out of range
        (2**40 + 3, False, 3),
        (-1, False, -1),
        ("404", True, 404),
        (" 12 ", True, 12),
        ("abc", True, 0),
        ("4294967496", True, 200),  # QString::toLongLong, then int(): low 32 bits
        ("9223372036854775808", True, 0),  # beyond qlonglong: not ok, 0
        ("\u00a012", True, 12),  # was: 0 (QString::toLongLong skips Unicode spaces)
        ("\u22125", True, -5),  # was: 0
        (b"\xa012", False, 0),  # a tnetstring byte string: QByteArray::toLongLong
        (b"4294967496", False, 200),
        (b"12\x00x", False, 12),  # QByteArray::toLongLong stops at a NUL. was: 0
        (None, True, None),
        ([], True, None),
        ({"a": 1}, True, None),
    ],
)
def test_variant_to_int(value: object, json_numbers: bool, expected: int | None) -> None:
    """variant_to_int is QVariant::toInt: toLongLong of each type, then the cast to int; None where Qt cannot convert."""
    assert variant_to_int(value, json_numbers=json_numbers) == expected


# --- the call sites -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"404", 404),
        (b"\t404", 404),
        (b"+404", 404),
        (b"404\x00x", 404),  # was: invalid
        (b"\xc2\xa0404", None),
        (b"\xe2\x88\x92404", None),
        (b"0x1F", None),
    ],
)
def test_grip_status_reads_with_qbytearray_toint(value: bytes, code: int | None) -> None:
    """Grip-Status is a header, read with QByteArray::toInt: no Unicode spaces or U+2212 there."""
    if code is None:
        with pytest.raises(InstructError):
            parse_grip_status(value)
    else:
        assert parse_grip_status(value)[0] == code


def _instruct(headers: Headers, body: bytes = b"") -> Instruct:
    return parse_instruct(200, b"OK", headers, body, request_uri="http://example.com/", prefix="")


def test_grip_header_timeouts_read_with_qbytearray_toint() -> None:
    """Grip-Timeout and the keep-alive timeout parameter refuse a UTF-8 NBSP that QString::toInt would skip."""
    hold = [(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"c")]
    with pytest.raises(InstructError, match="failed to parse Grip-Timeout"):
        _instruct(hold + [(b"Grip-Timeout", b"\xc2\xa030")])
    with pytest.raises(InstructError, match="failed to parse Grip-Keep-Alive timeout value"):
        _instruct(hold + [(b"Grip-Keep-Alive", b"x; timeout=\xc2\xa05")])
    with pytest.raises(InstructError, match="failed to parse Grip-Keep-Alive timeout value"):
        _instruct(hold + [(b"Grip-Keep-Alive", b"x; timeout")])


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        ("404", 404),
        (" 404 ", 404),
        ("\u00a0404", 404),  # was: "wrong type" (the JSON string went through QByteArray::toInt)
        ("\u2212404", "invalid value"),  # was: "wrong type"
        ("4294967296", "wrong type"),  # beyond 32 bits, refused rather than wrapped
        ("abc", "wrong type"),
        (404.5, 405),
        (-0.5, 0),
        (1e300, "invalid value"),
    ],
)
def test_json_instruct_code_reads_with_qstring_toint(code: object, outcome: int | str) -> None:
    """A JSON instruction's code string is read like QString::toInt, a number like qRound64, nonsense refused."""
    body = json.dumps({"response": {"code": code}}).encode()
    ct = [(b"Content-Type", b"application/grip-instruct")]
    if isinstance(outcome, int):
        assert _instruct(ct, body).response.code == outcome
    else:
        with pytest.raises(InstructError, match=f"'code' with {outcome}"):
            _instruct(ct, body)


@pytest.mark.parametrize(
    ("target", "port"),
    [
        ("localhost:80", 80),
        ("localhost:+80", 80),
        ('"localhost:\u00a080"', 80),  # QString::toInt skips Unicode spaces
        ('"localhost:\x1c80"', None),  # was: port 80 (str.strip() removes U+001C; QChar::isSpace does not)
        ("localhost:\u221280", None),  # -80: parsed, then out of range
        ("localhost:80x", None),
    ],
)
def test_route_port_reads_with_qstring_toint(target: str, port: int | None) -> None:
    """A route target's port is read with QString::toInt, then checked for 1-65535."""
    routes, warnings = parse_routes(f"* {target}\n")
    if port is None:
        assert warnings == ["routes:1: target invalid port"]
    else:
        assert [t.port for t in routes[0].targets] == [port]


def test_publish_item_code_reads_with_qvariant_toint() -> None:
    """A publish item's code string goes through QVariant::toInt: QString::toLongLong, then the 32-bit cast."""
    item = parse_item({"channel": "c", "formats": {"http-response": {"code": "\u00a04294967496", "body": ""}}})
    assert item.http_response is not None
    assert item.http_response.code == 200


@pytest.mark.parametrize(
    ("length", "outcome"),
    [
        (b"5", 5),
        (b"0xA", 10),  # observed
        (b" +b ", 11),  # observed
        (b"C", 12),  # observed
        (b"5\x00", 5),  # was: "bad content length"
        (b"-1", "bad content length"),  # Qt takes a sign; refused on purpose
        (b"-0", "bad content length"),
        (b"0x", "bad content length"),
        (b"80000000", "out of range"),
        (b"ffffffffffffffffff", "bad content length"),  # beyond qlonglong. was: "out of range"
    ],
)
def test_websocket_event_length_reads_with_qbytearray_toint_hex(length: bytes, outcome: int | str) -> None:
    """A WebSocket-over-HTTP content length is QByteArray::toInt(&ok, 16), minus signs refused."""
    if isinstance(outcome, int):
        assert decode_events(b"TEXT " + length + b"\r\n" + b"x" * outcome + b"\r\n")[0].content == b"x" * outcome
    else:
        with pytest.raises(WsEventsError, match=outcome):
            decode_events(b"TEXT " + length + b"\r\nx\r\n")


def _patched(path: str) -> bytes:
    item = parse_item({"channel": "c", "formats": {"http-response": {"body-patch": [{"op": "replace", "path": path, "value": 9}]}}})
    assert item.http_response is not None
    return merge_response(200, b"OK", [], b'{"l":[1,2]}', item.http_response)[3]


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/l/1", b'{"l":[1,9]}'),
        ("/l/ 1 ", b'{"l":[1,9]}'),
        ("/l/+0", b'{"l":[9,2]}'),
        ("/l/\u00a01", b'{"l":[1,9]}'),  # was: "index must be an integer" (ASCII spaces only)
        ("/l/\u22121", "index out of range"),  # was: "index must be an integer"
        ("/l/x", "index must be an integer"),
        ("/l/2147483648", "index must be an integer"),
        ("/l/2", "index out of range"),
    ],
)
def test_json_patch_index_reads_with_qstring_toint(path: str, outcome: bytes | str) -> None:
    """A body-patch path's array index is read with QString::toInt(&ok)."""
    if isinstance(outcome, bytes):
        assert _patched(path) == outcome
    else:
        with pytest.raises(RespondError, match=outcome):
            _patched(path)


# --- QByteArray::fromBase64 ------------------------------------------------------------------


def _qt_from_base64(data: bytes) -> bytes:
    """QByteArray::fromBase64's own loop (6 bits in, a byte out per 8 bits), as the oracle."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = bytearray()
    buf = bits = 0
    for c in data:
        digit = alphabet.find(bytes([c]))
        if digit < 0:
            continue
        buf = (buf << 6) | digit
        bits += 6
        if bits >= 8:
            bits -= 8
            out.append(buf >> bits)
            buf &= (1 << bits) - 1
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"AP8=", b"\x00\xff"),
        (b"AP8", b"\x00\xff"),
        (b"A P\n8==", b"\x00\xff"),
        (b"=A=P=8=", b"\x00\xff"),
        (b"QQ", b"A"),
        (b"Q", b""),  # six dangling bits make no byte
        (b"QUJD\xc3\xa9RA", b"ABCD"),  # bytes outside the alphabet, even UTF-8, are skipped
        (b"Ym-lu_", b"bin"),  # not the URL-safe alphabet
        (b"", b""),
    ],
)
def test_from_base64(data: bytes, expected: bytes) -> None:
    """from_base64 is QByteArray::fromBase64: junk and padding skipped anywhere, a dangling group dropped."""
    assert from_base64(data) == expected


@given(st.binary(max_size=64))
def test_from_base64_matches_qts_loop_on_any_bytes(data: bytes) -> None:
    """On any input, from_base64 gives what Qt's bit loop gives."""
    assert from_base64(data) == _qt_from_base64(data)


@given(st.binary(max_size=64))
def test_from_base64_reads_canonical_base64(data: bytes) -> None:
    """Standard base64 reads back exactly, with or without its padding."""
    encoded = base64.b64encode(data)
    assert from_base64(encoded) == data
    assert from_base64(encoded.rstrip(b"=")) == data


@pytest.mark.parametrize(
    ("text", "expected"),
    [("base64:AP8", b"\x00\xff"), ("base64:A P 8 ==", b"\x00\xff"), ("base64:\u00e9QQ", b"A"), ("plain\u00e9", b"plain\xc3\xa9")],
)
def test_route_sig_key_base64_reads_with_qt_frombase64(text: str, expected: bytes) -> None:
    """A route's sig_key=base64:... is QByteArray::fromBase64 of its UTF-8, anything else its UTF-8."""
    assert Route(id="r", sig_key=text).sig_key_bytes() == expected


# --- QString::toUtf8 / fromUtf8, and lone surrogates ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("abc", b"abc"),
        ("\u00e9", b"\xc3\xa9"),
        ("\U0001f600", b"\xf0\x9f\x98\x80"),
        ("a\ud800b", b"a?b"),
        ("\udfff\ud800", b"??"),  # reversed halves are two lone surrogates
    ],
)
def test_to_utf8(text: str, expected: bytes) -> None:
    """to_utf8 is QString::toUtf8: an unpaired surrogate is written as '?'."""
    assert to_utf8(text) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"abc", "abc"),
        (b"\xc3\xa9", "\u00e9"),
        (b"\xff", "\ufffd"),
        (b"a\xc3", "a\ufffd"),
        (b"\xed\xa0\x80", "\ufffd\ufffd\ufffd"),  # an encoded surrogate is malformed UTF-8
    ],
)
def test_from_utf8(data: bytes, expected: str) -> None:
    """from_utf8 is QString::fromUtf8: malformed UTF-8 becomes U+FFFD, never a lone surrogate."""
    assert from_utf8(data) == expected


def test_the_two_lone_surrogate_rules() -> None:
    """Publish items write a lone surrogate as '?' (QString::toUtf8); GRIP JSON instructions as U+FFFD."""
    assert replace_lone_surrogates("a\ud800b\udfff\U0001f600") == "a\ufffdb\ufffd\U0001f600"
    assert to_utf8("\ud800") == b"?"
    assert to_utf8(replace_lone_surrogates("\ud800")) == "\ufffd".encode()
    item = parse_item({"channel": "c", "formats": {"http-stream": {"content": "x\ud800"}}})
    assert item.http_stream is not None
    assert item.http_stream.content == b"x?"
    body = json.dumps({"response": {"body": "x\ud800"}}).encode()
    instruct = _instruct([(b"Content-Type", b"application/grip-instruct")], body)
    assert instruct.response.body == "x\ufffd".encode()


def test_utf16_key_orders_like_qstring() -> None:
    """utf16_key sorts by UTF-16 code units, as QString's operator< does: U+FFFF after U+1F600."""
    assert sorted(["\uffff", "\U0001f600", "a"], key=utf16_key) == ["a", "\U0001f600", "\uffff"]
