"""
Tests for L{pushpin_tx.protocol.grip}: GRIP instruction detection and parsing (reference §4.2, §5.1-§5.4).

The first group ports Pushpin's own C{instructtest} (noHold, responseHold,
responseHoldChannelParams, streamHold, streamHoldKeepAlive); cases marked "observed" were
checked against the real Pushpin 1.36.0 binaries on loopback.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol.grip import (
    Channel,
    InstructError,
    Instruct,
    KeepAlive,
    NextLink,
    gone_link_of,
    is_grip_instruct,
    parse_grip_status,
    parse_instruct,
    reason_phrase,
)
from pushpin_tx.protocol.headers import Headers

URI = "http://example.com/fruit/list?x=1"
JSON_CT = (b"Content-Type", b"application/grip-instruct")


def parse(headers: Headers, body: bytes = b"hello world", code: int = 200, prefix: str = "") -> Instruct:
    return parse_instruct(code, b"OK", headers, body, request_uri=URI, prefix=prefix)


def parse_json(doc: Any, *extra: tuple[bytes, bytes], code: int = 200, prefix: str = "") -> Instruct:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse([JSON_CT, *extra], body, code=code, prefix=prefix)


def error_of(headers: Headers, body: bytes = b"", code: int = 200) -> str:
    with pytest.raises(InstructError) as info:
        parse(headers, body, code=code)
    return str(info.value)


def json_error(doc: Any, code: int = 200) -> str:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return error_of([JSON_CT], body, code=code)


def header(instruct: Instruct, name: bytes) -> bytes | None:
    for key, value in instruct.response.headers:
        if key.lower() == name.lower():
            return value
    return None


def plain(*extra: tuple[bytes, bytes]) -> Headers:
    return [(b"Content-Type", b"text/plain"), *extra]


# -- Pushpin's instructtest ---------------------------------------------------------------------


def test_no_hold_header_form() -> None:
    """instructtest noHold: a Grip-Channel without Grip-Hold is a no-hold instruct; GRIP headers are stripped."""
    i = parse(plain((b"Grip-Channel", b"test")))
    assert i.hold is None
    assert (i.response.code, i.response.reason) == (200, b"OK")
    assert i.response.headers == [(b"Content-Type", b"text/plain")]
    assert i.response.body == b"hello world"


@pytest.mark.parametrize(
    "status, code, reason",
    [(b"404", 404, b"Not Found"), (b"404 Nothing To See Here", 404, b"Nothing To See Here")],
)
def test_no_hold_grip_status(status: bytes, code: int, reason: bytes) -> None:
    """instructtest noHold: Grip-Status replaces the status line, with the standard reason by default."""
    i = parse(plain((b"Grip-Channel", b"test"), (b"Grip-Status", status)))
    assert i.hold is None
    assert (i.response.code, i.response.reason) == (code, reason)


def test_no_hold_json_form() -> None:
    """instructtest noHold: a JSON instruct with only a response is a no-hold instruct."""
    i = parse_json({"response": {"code": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello world"}})
    assert i.hold is None
    assert (i.response.code, i.response.reason) == (200, b"OK")
    assert i.response.headers == [(b"Content-Type", b"text/plain")]
    assert i.response.body == b"hello world"


def test_response_hold_header_form() -> None:
    """instructtest responseHold: channels from repeated and comma-separated headers, timeout, comma-separated meta."""
    i = parse(
        plain(
            (b"Grip-Hold", b"response"),
            (b"Grip-Channel", b"apple"),
            (b"Grip-Channel", b"banana, cherry"),
            (b"Grip-Timeout", b"120"),
            (b"Grip-Set-Meta", b"foo=bar, bar=baz"),
        )
    )
    assert i.hold == "response"
    assert [c.name for c in i.channels] == ["apple", "banana", "cherry"]
    assert i.timeout == 120
    assert i.meta == {"foo": "bar", "bar": "baz"}
    assert i.response.headers == [(b"Content-Type", b"text/plain")]
    assert i.response.body == b"hello world"


def test_response_hold_json_form() -> None:
    """instructtest responseHold: the JSON form gives the same hold, timeout, meta and timeout response."""
    i = parse_json(
        {
            "hold": {
                "mode": "response",
                "channels": [{"name": "test"}],
                "timeout": 120,
                "meta": {"foo": "bar", "bar": "baz"},
            },
            "response": {"code": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello world"},
        }
    )
    assert i.hold == "response"
    assert i.channels == (Channel("test", None, ()),)
    assert i.timeout == 120
    assert i.meta == {"foo": "bar", "bar": "baz"}
    assert (i.response.code, i.response.reason, i.response.body) == (200, b"OK", b"hello world")
    assert i.response.headers == [(b"Content-Type", b"text/plain")]


CHANNEL_PARAMS = (
    Channel("apple", "item1", ("f1",)),
    Channel("banana", None, ("f2",)),
    Channel("cherry", None, ("f1", "f2")),
)


def test_response_hold_channel_params_header_form() -> None:
    """instructtest responseHoldChannelParams: prev-id and repeated filter params per channel."""
    i = parse(
        plain(
            (b"Grip-Hold", b"response"),
            (b"Grip-Channel", b"apple; prev-id=item1; filter=f1"),
            (b"Grip-Channel", b"banana; filter=f2, cherry; filter=f1; filter=f2"),
        )
    )
    assert i.channels == CHANNEL_PARAMS
    assert i.response.headers == [(b"Content-Type", b"text/plain")]


def test_response_hold_channel_params_json_form() -> None:
    """instructtest responseHoldChannelParams: JSON prev-id and filters."""
    i = parse_json(
        {
            "hold": {
                "mode": "response",
                "channels": [
                    {"name": "apple", "prev-id": "item1", "filters": ["f1"]},
                    {"name": "banana", "filters": ["f2"]},
                    {"name": "cherry", "filters": ["f1", "f2"]},
                ],
            },
            "response": {"code": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello world"},
        }
    )
    assert i.channels == CHANNEL_PARAMS
    assert i.response.body == b"hello world"


def test_stream_hold_header_form() -> None:
    """instructtest streamHold: Grip-Hold stream with three channels."""
    i = parse(plain((b"Grip-Hold", b"stream"), (b"Grip-Channel", b"apple"), (b"Grip-Channel", b"banana, cherry")))
    assert i.hold == "stream"
    assert [c.name for c in i.channels] == ["apple", "banana", "cherry"]
    assert i.response.headers == [(b"Content-Type", b"text/plain")]
    assert i.response.body == b"hello world"


def test_stream_hold_json_form() -> None:
    """instructtest streamHold: JSON mode stream."""
    i = parse_json(
        {
            "hold": {"mode": "stream", "channels": [{"name": "test"}]},
            "response": {"code": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello world"},
        }
    )
    assert i.hold == "stream"
    assert [c.name for c in i.channels] == ["test"]
    assert (i.response.code, i.response.reason, i.response.body) == (200, b"OK", b"hello world")


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        (b"ping1\\n; timeout=10", KeepAlive(b"ping1\\n", 10, "idle")),
        (b"ping2\\n; format=cstring", KeepAlive(b"ping2\n", 55, "idle")),
        (b"cGluZzMK; format=base64", KeepAlive(b"ping3\n", 55, "idle")),
        (b"ping4\\n; mode=interval", KeepAlive(b"ping4\\n", 55, "interval")),
    ],
)
def test_stream_hold_keep_alive(value: bytes | None, expected: KeepAlive | None) -> None:
    """instructtest streamHoldKeepAlive: raw (default), cstring and base64 data; idle (default) and interval modes."""
    headers = plain((b"Grip-Hold", b"stream"), (b"Grip-Channel", b"test"))
    if value is not None:
        headers.append((b"Grip-Keep-Alive", value))
    i = parse(headers)
    assert i.hold == "stream"
    assert i.keep_alive == expected


# -- Grip-Hold, Grip-Timeout ------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"Response", b"STREAM", b"none", b"", b"response, stream"])
def test_grip_hold_invalid(value: bytes) -> None:
    """Grip-Hold other than exactly response or stream is an error."""
    assert error_of(plain((b"Grip-Hold", value))) == "Grip-Hold must be set to either 'response' or 'stream'"


def test_grip_hold_first_header_wins() -> None:
    """Only the first Grip-Hold header counts."""
    assert parse(plain((b"Grip-Hold", b"stream"), (b"Grip-Hold", b"bogus"))).hold == "stream"


@pytest.mark.parametrize(
    "value, timeout",
    [(None, 55), (b"0", 5), (b"1", 5), (b"3", 5), (b"5", 5), (b"6", 6), (b"10", 10), (b"300", 300), (b"+7", 7)],
)
def test_grip_timeout(value: bytes | None, timeout: int) -> None:
    """Grip-Timeout defaults to 55 s and is raised to at least 5 s; no upper clamp (observed)."""
    headers = plain((b"Grip-Hold", b"response"), (b"Grip-Channel", b"c"))
    if value is not None:
        headers.append((b"Grip-Timeout", value))
    assert parse(headers).timeout == timeout


@pytest.mark.parametrize(
    "value, message",
    [
        (b"-1", "Grip-Timeout has invalid value"),
        (b"1.5", "failed to parse Grip-Timeout"),
        (b"abc", "failed to parse Grip-Timeout"),
        (b"", "failed to parse Grip-Timeout"),
        (b"99999999999", "failed to parse Grip-Timeout"),
    ],
)
def test_grip_timeout_invalid(value: bytes, message: str) -> None:
    """A negative, fractional, non-numeric, empty or out-of-range Grip-Timeout is an error (observed: 502)."""
    assert error_of(plain((b"Grip-Hold", b"response"), (b"Grip-Timeout", value))) == message


# -- Grip-Channel and prefix -------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([b"a, b; prev-id=3"], (Channel("a", None, ()), Channel("b", "3", ()))),
        ([b'a; prev-id="x,y"'], (Channel("a", "x,y", ()),)),
        ([b'a; PREV-ID="q\\"t"'], (Channel("a", 'q"t', ()),)),
        ([b"a; prev-id"], (Channel("a", None, ()),)),
        ([b"a; prev-id="], (Channel("a", "", ()),)),
        ([b"a; Filter=skip-self; filter=var-subst"], (Channel("a", None, ("var-subst",)),)),
        ([b'a; prev-id="unterminated', b"b"], (Channel("b", None, ()),)),
        ([b"", b"caf\xc3\xa9"], (Channel("caf\u00e9", None, ()),)),
        ([b"  spaced  ; filter=  f1  "], (Channel("spaced", None, ("f1",)),)),
    ],
)
def test_grip_channel_parsing(values: list[bytes], expected: tuple[Channel, ...]) -> None:
    """Grip-Channel parses like Pushpin's: quote-aware commas, any-case prev-id, exact filter, bad elements skipped."""
    i = parse(plain(*[(b"Grip-Channel", v) for v in values]))
    assert i.channels == expected


def test_prefix_prepended_to_every_channel() -> None:
    """The route prefix is prepended to header and JSON channel names alike."""
    i = parse_json({"hold": {"channels": [{"name": "j"}]}}, (b"Grip-Channel", b"h; prev-id=1"), prefix="pre:")
    assert [c.name for c in i.channels] == ["pre:h", "pre:j"]
    assert i.channels[0].prev_id == "1"


# -- Grip-Keep-Alive ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, data",
    [
        (b"\\\\; format=cstring", b"\\"),
        (b"a\\r\\nb; format=cstring", b"a\r\nb"),
        (b"\\x41\\x7e; format=cstring", b"A~"),
        (b"a\\qb; format=cstring", b"ab"),
        (b"cGluZzM; format=base64", b"ping3"),
        (b"cGlu*Zz!MK; format=base64", b"ping3\n"),
        (b"a, b; format=raw", b"a, b"),
        (b'x; format=""', b"x"),
    ],
)
def test_keep_alive_formats(value: bytes, data: bytes) -> None:
    """Keep-alive data: cstring escapes (unknown ones dropped), lenient base64, raw; the value is not comma-split."""
    i = parse(plain((b"Grip-Hold", b"stream"), (b"Grip-Keep-Alive", value)))
    assert i.keep_alive is not None
    assert i.keep_alive.data == data


@pytest.mark.parametrize(
    "params, timeout, mode",
    [
        (b"", 55, "idle"),
        (b"; timeout=0", 1, "idle"),
        (b"; timeout=3", 3, "idle"),
        (b"; mode=idle", 55, "idle"),
        (b"; mode=", 55, "idle"),
        (b"; MODE=interval; Timeout=20", 20, "interval"),
    ],
)
def test_keep_alive_timeout_and_mode(params: bytes, timeout: int, mode: str) -> None:
    """Keep-alive timeout defaults to 55 with a minimum of 1 (0 behaves like 1); mode defaults to idle."""
    i = parse(plain((b"Grip-Hold", b"stream"), (b"Grip-Keep-Alive", b"\\n" + params)))
    assert i.keep_alive == KeepAlive(b"\\n", timeout, mode)


@pytest.mark.parametrize(
    "value, message",
    [
        (b"; timeout=5", "Grip-Keep-Alive cannot be empty"),
        (b"x; mode=sometimes", "no such Grip-Keep-Alive mode 'sometimes'"),
        (b"x; mode=Idle", "no such Grip-Keep-Alive mode 'Idle'"),
        (b"x; timeout=abc", "failed to parse Grip-Keep-Alive timeout value"),
        (b"x; timeout", "failed to parse Grip-Keep-Alive timeout value"),
        (b"x; timeout=-1", "Grip-Keep-Alive timeout has invalid value"),
        (b"x; format=hex", "no such Grip-Keep-Alive format 'hex'"),
        (b"x\\; format=cstring", "failed to parse Grip-Keep-Alive cstring format"),
        (b"\\x4; format=cstring", "failed to parse Grip-Keep-Alive cstring format"),
        (b"\\xZZ; format=cstring", "failed to parse Grip-Keep-Alive cstring format"),
        (b"\\q; format=cstring", "failed to parse Grip-Keep-Alive cstring format"),
    ],
)
def test_keep_alive_invalid(value: bytes, message: str) -> None:
    """Empty data, unknown mode or format, a bad timeout or a bad cstring escape is an error."""
    assert error_of(plain((b"Grip-Hold", b"stream"), (b"Grip-Keep-Alive", value))) == message


@pytest.mark.parametrize("value", [b"", b'x; mode="unterminated', b"!!!; format=base64"])
def test_keep_alive_ignored(value: bytes) -> None:
    """An empty or unparsable Grip-Keep-Alive, or one whose data decodes to nothing, gives no keep-alive."""
    assert parse(plain((b"Grip-Hold", b"stream"), (b"Grip-Keep-Alive", value))).keep_alive is None


# -- Grip-Set-Meta -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, meta",
    [
        ([b"user=alice"], {"user": "alice"}),
        ([b"name=World", b"user=al"], {"name": "World", "user": "al"}),
        ([b"name=World, user=al"], {"name": "World", "user": "al"}),
        ([b'list="a,b"; ignored=1'], {"list": "a,b"}),
        ([b"flag"], {"flag": ""}),
        ([b"k=1", b"k=2"], {"k": "2"}),
        ([b""], {}),
    ],
)
def test_grip_set_meta(values: list[bytes], meta: dict[str, str]) -> None:
    """Grip-Set-Meta is repeatable and comma-separable (observed with var-subst); the last value of a key wins."""
    assert parse(plain(*[(b"Grip-Set-Meta", v) for v in values])).meta == meta


def test_grip_set_meta_empty_element() -> None:
    """An empty element between commas is an error."""
    assert error_of(plain((b"Grip-Set-Meta", b", a=b"))) == "Grip-Set-Meta cannot be empty"


# -- Grip-Status -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"201 Custom Reason", (201, b"Custom Reason")),
        (b"404", (404, b"Not Found")),
        (b"299", (299, b"Undefined Reason")),
        (b"999", (999, b"Undefined Reason")),
        (b"0", (0, b"Undefined Reason")),
        (b"200  two  spaces", (200, b" two  spaces")),
        (b"404 ", (404, b"Not Found")),
    ],
)
def test_parse_grip_status(value: bytes, expected: tuple[int, bytes]) -> None:
    """Grip-Status is CODE [reason], reason spaces kept, standard reason when missing (observed)."""
    assert parse_grip_status(value) == expected


@pytest.mark.parametrize("value", [b"1000", b"abc", b"-1", b"", b" 200", b"2OO OK"])
def test_parse_grip_status_invalid(value: bytes) -> None:
    """A Grip-Status code outside 0-999 or not a number is an error (observed: 1000, abc -> 502)."""
    with pytest.raises(InstructError, match="Grip-Status contains invalid status code"):
        parse_grip_status(value)


def test_grip_status_applied_to_response() -> None:
    """Grip-Status sets the code and reason of the response the client gets (§14.4)."""
    i = parse(plain((b"Grip-Hold", b"response"), (b"Grip-Timeout", b"5"), (b"Grip-Status", b"201 Custom Reason")))
    assert (i.response.code, i.response.reason) == (201, b"Custom Reason")


def test_grip_status_empty_is_ignored() -> None:
    """An empty Grip-Status header leaves the origin's status alone."""
    i = parse_instruct(203, b"Fine", plain((b"Grip-Status", b"")), b"", request_uri=URI)
    assert (i.response.code, i.response.reason) == (203, b"Fine")


def test_origin_status_kept_and_empty_reason_filled() -> None:
    """Without Grip-Status the origin's code is kept; an empty origin reason becomes the standard one."""
    i = parse_instruct(404, b"", plain((b"Grip-Hold", b"response")), b"", request_uri=URI)
    assert (i.response.code, i.response.reason) == (404, b"Not Found")


@pytest.mark.parametrize(
    "code, reason",
    [
        (200, b"OK"),
        (202, b"Accepted"),
        (404, b"Not Found"),
        (413, b"Request Entity Too Large"),
        (414, b"Request-URI Too Long"),
        (416, b"Requested Range Not Satisfiable"),
        (306, b"Reserved"),
        (511, b"Network Authentication Required"),
        (418, b"Undefined Reason"),
        (299, b"Undefined Reason"),
        (0, b"Undefined Reason"),
    ],
)
def test_reason_phrase(code: int, reason: bytes) -> None:
    """reason_phrase follows Pushpin's StatusReasons table, Undefined Reason otherwise."""
    assert reason_phrase(code) == reason


# -- Grip-Expose-Headers and header removal ----------------------------------------------------

HOLD_HEADERS = [
    (b"Content-Type", b"text/plain"),
    (b"X-A", b"a"),
    (b"X-B", b"b"),
    (b"X-C", b"c"),
    (b"Grip-Hold", b"response"),
]


@pytest.mark.parametrize(
    "expose, kept",
    [
        ([b"X-A"], [b"X-A"]),
        ([b"x-a, X-B"], [b"X-A", b"X-B"]),
        ([b"X-C", b"content-type"], [b"Content-Type", b"X-C"]),
        ([b"X-A, Grip-Hold, Content-Length"], [b"X-A"]),
        ([b""], [b"Content-Type", b"X-A", b"X-B", b"X-C"]),
    ],
)
def test_grip_expose_headers(expose: list[bytes], kept: list[bytes]) -> None:
    """Grip-Expose-Headers keeps only the listed headers, Content-Type included (observed); GRIP headers never."""
    headers = HOLD_HEADERS + [(b"Content-Length", b"11")] + [(b"Grip-Expose-Headers", e) for e in expose]
    i = parse(headers)
    assert [k for k, _ in i.response.headers] == kept


def test_removed_headers_and_order_kept() -> None:
    """GRIP headers (any case), Content-Length and hop-by-hop headers are removed; the rest keep order and repeats."""
    i = parse(
        [
            (b"Set-Cookie", b"a=1"),
            (b"grip-channel", b"c"),
            (b"Content-Length", b"11"),
            (b"Connection", b"keep-alive"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Content-Encoding", b"gzip"),
            (b"Transfer-Encoding", b"chunked"),
            (b"GRIP-FOO", b"x"),
            (b"X-Orig", b"1"),
            (b"Set-Cookie", b"b=2"),
        ]
    )
    assert i.response.headers == [(b"Set-Cookie", b"a=1"), (b"X-Orig", b"1"), (b"Set-Cookie", b"b=2")]


# -- Grip-Link ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, uri, timeout",
    [
        (b"</fruit/?after=3>; rel=next; timeout=120", "http://example.com/fruit/?after=3", 120),
        (b"<next?p=2>; rel=next", "http://example.com/fruit/next?p=2", 120),
        (b"<../other>; rel=next; timeout=0", "http://example.com/other", 0),
        (b"<https://cdn.example/x>; rel=next", "https://cdn.example/x", 120),
        (b"<//mirror.example/y>; rel=next", "http://mirror.example/y", 120),
        (b"</a b/\xc3\xa9>; rel=next", "http://example.com/a%20b/%C3%A9", 120),
        (b"</one>; rel=next, </two>; rel=next; timeout=9", "http://example.com/two", 9),
    ],
)
def test_grip_link_next(value: bytes, uri: str, timeout: int) -> None:
    """Grip-Link rel=next is resolved against the request URI; its timeout defaults to 120 s; the last one wins."""
    assert parse(plain((b"Grip-Link", value))).next_link == NextLink(uri, timeout)


@pytest.mark.parametrize(
    "value",
    [b"<bad>", b"bad; rel=prev", b"<x>; rel=prev", b"</x>; rel=Next", b"</x>; rel"],
)
def test_grip_link_without_rel_next_is_ignored(value: bytes) -> None:
    """Links that are neither rel=next nor rel=gone are ignored without validation (observed on 1.36)."""
    i = parse(plain((b"Grip-Link", value)))
    assert i.next_link is None and i.gone_link is None


@pytest.mark.parametrize(
    "value, uri",
    [
        (b"</gone>; rel=gone", "http://example.com/gone"),
        (b"<http://other.example/g?x=1>; rel=gone", "http://other.example/g?x=1"),
        (b"</next>; rel=next, </bye>; rel=gone", "http://example.com/bye"),
    ],
)
def test_grip_link_gone(value: bytes, uri: str) -> None:
    """Grip-Link rel=gone (Pushpin 1.41) is resolved against the request URI, beside any next link."""
    i = parse(plain((b"Grip-Hold", b"response"), (b"Grip-Channel", b"c"), (b"Grip-Link", value)))
    assert i.gone_link == uri
    assert gone_link_of([(b"Grip-Link", value)], "http://example.com/path") == uri


def test_grip_link_gone_malformed_is_refused() -> None:
    """A malformed gone link is a parse error, as in 1.41 (1.36 ignored it); gone_link_of gives None."""
    assert error_of(plain((b"Grip-Link", b"bad; rel=gone"))) == "failed to parse Grip-Link value"
    assert gone_link_of([(b"Grip-Link", b"bad; rel=gone")], "http://example.com/") is None


@pytest.mark.parametrize(
    "value, message",
    [
        (b"bad; rel=next", "failed to parse Grip-Link value"),
        (b"<>; rel=next", "failed to parse Grip-Link value"),
        (b"</x; rel=next", "failed to parse Grip-Link value"),
        (b"<http://[::1/x>; rel=next", "Grip-Link contains invalid link"),
        (b"<http://host:port/>; rel=next", "Grip-Link contains invalid link"),
        (b"<http://bad host/>; rel=next", "Grip-Link contains invalid link"),
        (b"<1x:y>; rel=next", "Grip-Link contains invalid link"),
        (b"</x>; rel=next; timeout=abc", "failed to parse Grip-Link timeout value"),
        (b"</x>; rel=next; timeout=-1", "Grip-Link timeout has invalid value"),
    ],
)
def test_grip_link_invalid(value: bytes, message: str) -> None:
    """A malformed rel=next link, an invalid URL or a bad timeout is an error (observed: 'bad; rel=next')."""
    assert error_of(plain((b"Grip-Link", value))) == message


def test_stream_hold_prev_id_without_next_link_parses() -> None:
    """A stream hold with prev-id but no next link parses; the acceptor answers it unheld (Pushpin checks it after the first response)."""
    i = parse(plain((b"Grip-Hold", b"stream"), (b"Grip-Channel", b"pn; prev-id=1")))
    assert i.hold == "stream"
    assert i.channels == (Channel("pn", "1", ()),)
    assert i.next_link is None


def test_stream_hold_prev_id_with_next_link() -> None:
    """The reliable-streaming pattern: stream hold, prev-id and a next link with timeout."""
    i = parse(
        plain(
            (b"Grip-Hold", b"stream"),
            (b"Grip-Channel", b"fruit; prev-id=3"),
            (b"Grip-Link", b"</fruit/?after=3>; rel=next; timeout=120"),
        )
    )
    assert i.channels == (Channel("fruit", "3", ()),)
    assert i.next_link == NextLink("http://example.com/fruit/?after=3", 120)


def test_response_hold_prev_id_without_link_is_fine() -> None:
    """prev-id without a next link is allowed on response holds (they recover by retrying)."""
    assert parse(plain((b"Grip-Hold", b"response"), (b"Grip-Channel", b"c; prev-id=1"))).channels[0].prev_id == "1"


def test_response_hold_without_channels() -> None:
    """A response hold with no channels is valid; it just waits for its timeout."""
    i = parse(plain((b"Grip-Hold", b"response"), (b"Grip-Timeout", b"7")))
    assert (i.hold, i.channels, i.timeout) == ("response", (), 7)


# -- JSON form ---------------------------------------------------------------------------------


def test_json_requires_status_200() -> None:
    """A JSON instruct with a status other than 200 is an error."""
    message = json_error({"response": {}}, code=201)
    assert message == "response code for application/grip-instruct content must be 200"


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "failed to parse application/grip-instruct content as JSON"),
        (b"{", "failed to parse application/grip-instruct content as JSON"),
        (b'{"response":{"code":NaN}}', "failed to parse application/grip-instruct content as JSON"),
        (b'{"a":"\xff"}', "failed to parse application/grip-instruct content as JSON"),
        (b"[" * 100000, "failed to parse application/grip-instruct content as JSON"),
        (b"[]", "instruct must be an object"),
        (b'"x"', "instruct must be an object"),
        (b"null", "instruct must be an object"),
    ],
)
def test_json_body_invalid(body: bytes, message: str) -> None:
    """Unparsable JSON (NaN and bad UTF-8 included) or a non-object document is an error."""
    assert json_error(body) == message


def test_json_whitespace_and_empty_object() -> None:
    """Whitespace around the document is fine; an empty object is an empty no-hold response."""
    i = parse_json(b' {} \n')
    assert i.hold is None
    assert (i.response.code, i.response.reason, i.response.headers, i.response.body) == (200, b"OK", [], b"")


@pytest.mark.parametrize(
    "hold, message",
    [
        ([], "instruct contains 'hold' with wrong type"),
        (None, "instruct contains 'hold' with wrong type"),
        ({"mode": "long", "channels": []}, "hold 'mode' must be set to either 'response' or 'stream'"),
        ({"mode": 1, "channels": []}, "hold contains 'mode' with wrong type"),
        ({}, "hold does not contain 'channels'"),
        ({"channels": {"name": "a"}}, "hold contains 'channels' with wrong type"),
        ({"channels": ["a"]}, "channel is not an object"),
        ({"channels": [{}]}, "channel does not contain 'name'"),
        ({"channels": [{"name": 5}]}, "channel contains 'name' with wrong type"),
        ({"channels": [{"name": None}]}, "channel contains 'name' with wrong type"),
        ({"channels": [{"name": "a", "prev-id": 3}]}, "channel contains 'prev-id' with wrong type"),
        ({"channels": [{"name": "a", "filters": "skip-self"}]}, "channel contains 'filters' with wrong type"),
        ({"channels": [{"name": "a", "filters": [1]}]}, "filters contains value with wrong type"),
        ({"channels": [], "timeout": "abc"}, "hold contains 'timeout' with wrong type"),
        ({"channels": [], "timeout": True}, "hold contains 'timeout' with wrong type"),
        ({"channels": [], "timeout": None}, "hold contains 'timeout' with wrong type"),
        ({"channels": [], "timeout": -1}, "hold contains 'timeout' with invalid value"),
        ({"channels": [], "timeout": 1e12}, "hold contains 'timeout' with invalid value"),
        ({"channels": [], "keep-alive": "\n"}, "hold contains 'keep-alive' with wrong type"),
        ({"channels": [], "keep-alive": {"content": 1}}, "keep-alive contains 'content' with wrong type"),
        ({"channels": [], "keep-alive": {"content-bin": None}}, "keep-alive contains 'content-bin' with wrong type"),
        ({"channels": [], "keep-alive": {"timeout": []}}, "keep-alive contains 'timeout' with wrong type"),
        ({"channels": [], "keep-alive": {"timeout": -5}}, "keep-alive contains 'timeout' with invalid value"),
        ({"channels": [], "meta": ["a"]}, "hold contains 'meta' with wrong type"),
        ({"channels": [], "meta": {"user": 1}}, "'meta' contains 'user' with wrong type"),
    ],
)
def test_json_hold_invalid(hold: Any, message: str) -> None:
    """Every wrong type or value in JSON hold is an error with Pushpin's wording."""
    assert json_error({"hold": hold}) == message


@pytest.mark.parametrize(
    "timeout, expected",
    [(None, 55), (30, 30), (0, 5), (4, 5), ("30", 30), (1.5, 5), (7.5, 8), (7.49, 7), (300, 300)],
)
def test_json_hold_timeout(timeout: Any, expected: int) -> None:
    """JSON hold timeout: default 55, minimum 5; numbers round half up and numeric strings parse, as Qt does."""
    hold: dict[str, Any] = {"channels": [{"name": "c"}]}
    if timeout is not None:
        hold["timeout"] = timeout
    i = parse_json({"hold": hold})
    assert (i.hold, i.timeout) == ("response", expected)


@pytest.mark.parametrize(
    "keep_alive, expected",
    [
        ({"content": "\n"}, KeepAlive(b"\n", 55, "interval")),
        ({"content-bin": "Cg=="}, KeepAlive(b"\n", 55, "interval")),
        ({"content": "x", "content-bin": "eQ=="}, KeepAlive(b"y", 55, "interval")),
        ({"content": "\u00e9", "timeout": 20}, KeepAlive(b"\xc3\xa9", 20, "interval")),
        ({"content": "x", "timeout": 0}, KeepAlive(b"x", 1, "interval")),
        ({"timeout": 20}, None),
        ({"content": ""}, None),
    ],
)
def test_json_keep_alive(keep_alive: dict[str, Any], expected: KeepAlive | None) -> None:
    """JSON keep-alive: content or base64 content-bin (preferred), timeout default 55 (min 1), interval timing."""
    i = parse_json({"hold": {"mode": "stream", "channels": [{"name": "s"}], "keep-alive": keep_alive}})
    assert i.keep_alive == expected


def test_json_keep_alive_keeps_header_mode() -> None:
    """With a Grip-Keep-Alive header too, its mode stays and the JSON content and timeout replace the rest."""
    i = parse_json(
        {"hold": {"mode": "stream", "channels": [{"name": "s"}], "keep-alive": {"content": "j", "timeout": 9}}},
        (b"Grip-Keep-Alive", b"h; mode=idle; timeout=3"),
    )
    assert i.keep_alive == KeepAlive(b"j", 9, "idle")


def test_json_meta_merges_with_grip_set_meta() -> None:
    """JSON hold meta is added to Grip-Set-Meta; JSON wins on the same key."""
    i = parse_json(
        {"hold": {"channels": [], "meta": {"user": "alice", "id_format": "%(c)s"}}},
        (b"Grip-Set-Meta", b"user=bob, name=World"),
    )
    assert i.meta == {"user": "alice", "name": "World", "id_format": "%(c)s"}


def test_json_channels_follow_header_channels() -> None:
    """Grip-Channel headers still count in the JSON form; JSON channels come after them."""
    doc = {"hold": {"channels": [{"name": "j", "prev-id": "7", "filters": ["skip-self"]}]}}
    i = parse_json(doc, (b"Grip-Channel", b"h"))
    assert i.channels == (Channel("h", None, ()), Channel("j", "7", ("skip-self",)))


def test_json_hold_overrides_grip_hold_header() -> None:
    """JSON hold decides the mode over Grip-Hold; without JSON hold the header mode stays."""
    assert parse_json({"hold": {"channels": []}}, (b"Grip-Hold", b"stream")).hold == "response"
    assert parse_json({"response": {}}, (b"Grip-Hold", b"stream")).hold == "stream"


@pytest.mark.parametrize(
    "response, code, reason",
    [
        ({}, 200, b"OK"),
        ({"code": 404}, 404, b"Not Found"),
        ({"code": 404, "reason": "Gone Fishing"}, 404, b"Gone Fishing"),
        ({"reason": "Fine"}, 200, b"Fine"),
        ({"code": 299}, 299, b"Undefined Reason"),
        ({"code": "404"}, 404, b"Not Found"),
        ({"code": 201.5}, 202, b"Accepted"),
        ({"code": 200, "reason": ""}, 200, b"OK"),
    ],
)
def test_json_response_status(response: dict[str, Any], code: int, reason: bytes) -> None:
    """JSON code defaults to 200 with the origin's reason; a given code takes its standard reason (observed: "404", 201.5)."""
    i = parse_json({"response": response})
    assert (i.response.code, i.response.reason) == (code, reason)


def test_json_response_with_grip_status() -> None:
    """Grip-Status applies in the JSON form unless the JSON response gives a code."""
    assert parse_json({"response": {"body": "x"}}, (b"Grip-Status", b"404 Nope")).response.code == 404
    assert parse_json({"response": {"body": "x"}}, (b"Grip-Status", b"404 Nope")).response.reason == b"Nope"
    i = parse_json({"response": {"code": 202}}, (b"Grip-Status", b"404 Nope"))
    assert (i.response.code, i.response.reason) == (202, b"Accepted")


@pytest.mark.parametrize(
    "response, message",
    [
        ({"code": 1000}, "response contains 'code' with invalid value"),
        ({"code": -1}, "response contains 'code' with invalid value"),
        ({"code": True}, "response contains 'code' with wrong type"),
        ({"code": "abc"}, "response contains 'code' with wrong type"),
        ({"reason": None}, "response contains 'reason' with wrong type"),
        ({"reason": "a\r\nb"}, "response contains 'reason' with invalid value"),
        ({"headers": "X-A: 1"}, "response contains 'headers' with wrong type"),
        ({"headers": ["X-A"]}, "headers contains element with wrong type"),
        ({"headers": [["X-A"]]}, "headers contains list with wrong number of elements"),
        ({"headers": [["X-A", "1", "2"]]}, "headers contains list with wrong number of elements"),
        ({"headers": [[1, "1"]]}, "header contains name element with wrong type"),
        ({"headers": [["X-A", 1]]}, "header contains value element with wrong type"),
        ({"headers": {"X-A": 1}}, "headers contains 'X-A' with wrong type"),
        ({"headers": [["X-A", "1\r\nX-Inj: 2"]]}, "headers contains invalid header"),
        ({"headers": {"": "1"}}, "headers contains invalid header"),
        ({"headers": {"X:A": "1"}}, "headers contains invalid header"),
        ({"body": 5}, "response contains 'body' with wrong type"),
        ({"body-bin": None}, "response contains 'body-bin' with wrong type"),
    ],
)
def test_json_response_invalid(response: dict[str, Any], message: str) -> None:
    """Every wrong type or value in JSON response is an error (observed: null reason); CR/LF in headers is refused."""
    assert json_error({"response": response}) == message


def test_json_response_not_an_object() -> None:
    """A JSON response that is not an object is an error (Pushpin gives no reason text; observed)."""
    assert json_error({"response": "x"}) == "instruct contains 'response' with wrong type"


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"Zed": "1", "Alpha": "2", "Mid": "3"}, [(b"Alpha", b"2"), (b"Mid", b"3"), (b"Zed", b"1")]),
        ([["Zed", "1"], ["Alpha", "2"], ["Zed", "3"]], [(b"Zed", b"1"), (b"Alpha", b"2"), (b"Zed", b"3")]),
        (
            [["X-A", "1"], ["Grip-Foo", "2"], ["Content-Length", "9"], ["Connection", "close"]],
            [(b"X-A", b"1")],
        ),
        ({"X-\u00e9": "\u00e9"}, [(b"X-\xc3\xa9", b"\xc3\xa9")]),
    ],
)
def test_json_response_headers(headers: Any, expected: Headers) -> None:
    """JSON headers: an object (key order, observed) or a list of pairs (order, repeats kept); GRIP and hop headers go."""
    assert parse_json({"response": {"headers": headers}}).response.headers == expected


@pytest.mark.parametrize(
    "response, body",
    [
        ({"body": "timeout body\n"}, b"timeout body\n"),
        ({"body": "\u00e9\ud800"}, "\u00e9\ufffd".encode()),
        ({"body-bin": base64.b64encode(b"\x00\xff").decode()}, b"\x00\xff"),
        ({"body-bin": "AP8"}, b"\x00\xff"),
        ({"body-bin": "A P\n8=="}, b"\x00\xff"),
        ({"body": "text", "body-bin": "Ymlu"}, b"bin"),
        ({}, b""),
    ],
)
def test_json_response_body(response: dict[str, Any], body: bytes) -> None:
    """JSON body is UTF-8 text, or base64 body-bin (preferred, lenient); absent means empty."""
    assert parse_json({"response": response}).response.body == body


def test_json_form_ignores_origin_headers_and_body() -> None:
    """In the JSON form the origin's other headers, body and Grip-Expose-Headers do not reach the client (observed)."""
    i = parse(
        [JSON_CT, (b"X-Origin", b"1"), (b"Grip-Expose-Headers", b"X-A")],
        json.dumps({"response": {"headers": [["X-A", "1"], ["X-B", "2"]], "body": "t\n"}}).encode(),
    )
    assert i.response.headers == [(b"X-A", b"1"), (b"X-B", b"2")]
    assert i.response.body == b"t\n"


def test_json_form_honours_grip_link_and_prefix() -> None:
    """Grip-Link applies in the JSON form too."""
    doc = {"hold": {"mode": "stream", "channels": [{"name": "f", "prev-id": "3"}]}}
    i = parse_json(doc, (b"Grip-Link", b"</n>; rel=next"))
    assert i.next_link == NextLink("http://example.com/n", 120)


def test_json_form_with_content_type_parameters() -> None:
    """A Content-Type with parameters after ';' still selects the JSON form."""
    i = parse([(b"Content-Type", b"application/grip-instruct; charset=utf-8")], b'{"hold":{"channels":[{"name":"c"}]}}')
    assert i.hold == "response"


def test_json_strings_with_lone_surrogates() -> None:
    """Lone surrogate escapes in JSON strings become U+FFFD instead of breaking UTF-8 encoding."""
    i = parse_json(b'{"hold":{"channels":[{"name":"a\\ud800"}],"meta":{"k":"\\udfff"}}}')
    assert i.channels[0].name == "a\ufffd"
    assert i.meta == {"k": "\ufffd"}


# -- is_grip_instruct --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, expected",
    [
        ([JSON_CT], True),
        ([(b"content-type", b"application/grip-instruct; charset=utf-8")], True),
        ([(b"Content-Type", b"Application/Grip-Instruct")], False),
        ([(b"Content-Type", b"application/grip-instruct ; charset=utf-8")], False),
        ([(b"Content-Type", b"text/plain"), (b"grip-hold", b"response")], True),
        ([(b"GRIP-STATUS", b"200")], True),
        ([(b"Grip-", b"")], True),
        ([(b"X-Grip-Hold", b"response")], False),
        ([(b"Gripper", b"x")], False),
        ([(b"Content-Type", b"text/plain")], False),
        ([], False),
    ],
)
def test_is_grip_instruct(headers: Headers, expected: bool) -> None:
    """GRIP if a header starts with Grip- or Content-Type is exactly application/grip-instruct (observed: case-sensitive)."""
    assert is_grip_instruct(headers) is expected


# -- fuzzing -----------------------------------------------------------------------------------

_NAMES = st.sampled_from(
    [
        b"Grip-Hold", b"Grip-Channel", b"Grip-Timeout", b"Grip-Keep-Alive", b"Grip-Set-Meta",
        b"Grip-Status", b"Grip-Link", b"Grip-Expose-Headers", b"Content-Type", b"X-Other",
        b"Content-Length",
    ]
)  # fmt: skip
_VALUE_BYTES = st.sampled_from(list(b' ;,="\\<>:/?#%-_.aAzZ09xnr\xc3\xa9')) | st.integers(0, 255)
_VALUES = st.lists(_VALUE_BYTES, max_size=40).map(bytes) | st.sampled_from(
    [b"response", b"stream", b"</n>; rel=next", b"a; prev-id=1; filter=x", b"\\x41; format=cstring", b"5"]
)


def _check_invariants(i: Instruct) -> None:
    assert i.hold in (None, "response", "stream")
    assert i.timeout >= 5
    assert i.keep_alive is None or (i.keep_alive.timeout >= 1 and i.keep_alive.data)
    for name, _ in i.response.headers:
        assert not name.lower().startswith(b"grip-")
        assert name.lower() != b"content-length"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8), st.binary(max_size=30))
def test_fuzz_headers_raise_only_instruct_error(headers: Headers, body: bytes) -> None:
    """Random GRIP header values either parse into a sane Instruct or raise InstructError, nothing else."""
    try:
        i = parse_instruct(200, b"OK", headers, body, request_uri=URI, prefix="p:")
    except InstructError:
        return
    _check_invariants(i)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    ["mode", "channels", "timeout", "keep-alive", "meta", "name", "prev-id", "filters", "content",
     "content-bin", "code", "reason", "headers", "body", "body-bin"]
)  # fmt: skip
_JSONISH = st.recursive(
    _JSON, lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4), max_leaves=16
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["hold", "response", "other"]), _JSONISH, max_size=3) | _JSON)
def test_fuzz_json_raise_only_instruct_error(doc: Any) -> None:
    """Random JSON instructions either parse into a sane Instruct or raise InstructError, nothing else."""
    try:
        i = parse_json(json.dumps(doc).encode())
    except InstructError:
        return
    _check_invariants(i)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_fuzz_json_bytes_raise_only_instruct_error(body: bytes) -> None:
    """Arbitrary bytes as a JSON instruct body never raise anything but InstructError."""
    try:
        _check_invariants(parse([JSON_CT], body))
    except InstructError:
        pass


# -- prefix (wildcard) channels: Grip-Channel: <prefix>; prefix -----------------------------------


def test_a_prefix_parameter_makes_a_prefix_channel_with_the_route_prefix_applied():
    """C{Grip-Channel: news.; prefix; filter=skip-self} is a prefix subscription, route prefix prepended; a plain channel stays exact."""
    got = parse([(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"news.; prefix; filter=skip-self"), (b"Grip-Channel", b"news.")], prefix="app-")
    assert got.channels == (Channel("app-news.", None, ()), Channel("app-news.", None, ("skip-self",), True))


def test_a_star_in_a_name_is_an_ordinary_channel_name():
    """Without the parameter nothing is a wildcard: C{news.*} is the channel called C{news.*}, as in Pushpin."""
    got = parse([(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"news.*")])
    assert got.channels == (Channel("news.*", None, ()),)


@pytest.mark.parametrize("value, why", [(b"; prefix", "non-empty prefix"), (b"news.; prefix; prev-id=3", "cannot have a prev-id")])
def test_an_empty_prefix_or_a_prefix_with_prev_id_is_refused(value, why):
    """An empty prefix (every channel) and a prefix with a prev-id (no single sequence to follow) are invalid instructions."""
    with pytest.raises(InstructError, match=why):
        parse([(b"Grip-Hold", b"stream"), (b"Grip-Channel", value)])


# the short paths of the header form ------------------------------------------------------------

_GRIP_CHANNEL_PIECES = [b"a", b"b", b" ", b"\t", b",", b";", b'"', b"=", b"\\", b"prev-id", b"filter", b"prefix", b"\xc3\xa9"]


@settings(max_examples=500)
@given(st.lists(st.lists(st.sampled_from(_GRIP_CHANNEL_PIECES), max_size=8).map(b"".join), max_size=4))
def test_plain_grip_channel_values_parse_as_the_general_parser_does(values: list[bytes]) -> None:
    """Grip-Channel values without comma, semicolon or quote take a short path: the same parameters as the general parser's for every value."""
    from pushpin_tx.protocol.grip import _channel_params
    from pushpin_tx.protocol.qt import headervalues as qp

    assert _channel_params(values) == qp.all_as_params([(b"Grip-Channel", v) for v in values], b"grip-channel")


def test_instruct_built_by_its_slots_is_the_dataclass_value() -> None:
    """parse_instruct builds Instruct and Response through their slot descriptors: equal to the values their constructors give, every field set."""
    import dataclasses

    from pushpin_tx.protocol.grip import Response

    headers = [(b"Content-Type", b"text/plain"), (b"Grip-Hold", b"stream"), (b"Grip-Channel", b"c; prev-id=1"),
               (b"Grip-Link", b"</next>; rel=next"), (b"Grip-Link", b"</gone>; rel=gone"), (b"Grip-Keep-Alive", b"k; timeout=20")]
    got = parse_instruct(200, b"OK", headers, b"body", request_uri="http://example.com/s")
    built = Instruct(hold="stream", channels=(Channel("c", "1", ()),), timeout=55, keep_alive=KeepAlive(b"k", 20, "idle"), meta={},
                     response=Response(200, b"OK", [(b"Content-Type", b"text/plain")], b"body"),
                     next_link=NextLink("http://example.com/next", 120), gone_link="http://example.com/gone")
    assert got == built
    assert [f.name for f in dataclasses.fields(Instruct)] == [f for f in Instruct.__slots__]
    for value in (got, got.response):
        assert all(hasattr(value, f.name) for f in dataclasses.fields(value))
