"""
Tests for L{pushpin_tx.protocol.items}: publish item decoding and validation (reference §6.1-§6.3, §7).

Every expected error text below was observed on the real Pushpin 1.36.0 (control API and
PULL socket on loopback): the control API answers C{400 Invalid format: <reason>\\n}.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol import tnetstring
from pushpin_tx.protocol.items import (
    HttpResponseFormat,
    HttpStreamFormat,
    Item,
    ItemError,
    PublishBodyError,
    WsMessageFormat,
    parse_item,
    parse_publish_body,
    parse_zmq_item,
)
from pushpin_tx.protocol.qt.jsonvalues import loads_json
from pushpin_tx.protocol.qt.numbers import variant_to_int as qt_to_int

STREAM = {"http-stream": {"content": "x"}}


def item(**fields: Any) -> dict[str, Any]:
    """A JSON item on channel "a" with an http-stream format, fields overridden."""
    base: dict[str, Any] = {"channel": "a", "formats": STREAM}
    base.update(fields)
    return base


def fmt(name: str, **fields: Any) -> dict[str, Any]:
    """A JSON item on channel "a" with just the format C{name}."""
    return {"channel": "a", "formats": {name: fields}}


def reason_of(raw: Any) -> str | None:
    """Pushpin's reason for a JSON item, or None when it is accepted."""
    try:
        parse_item(raw)
    except ItemError as e:
        return str(e)
    return None


# --- accepted items and their fields ---------------------------------------------------------


def test_minimal_item_defaults() -> None:
    """An item with only a channel and one format gets empty meta, no ids, no size, sequencing on."""
    parsed = parse_item({"channel": "news", "formats": {"http-stream": {"content": "tick\n"}}})
    assert parsed == Item(
        channel="news",
        id=None,
        prev_id=None,
        meta={},
        size=None,
        no_seq=False,
        http_response=None,
        http_stream=HttpStreamFormat("send", b"tick\n", None),
        ws_message=None,
    )


def test_reference_example_every_field() -> None:
    """The §6.1 example item decodes field by field."""
    parsed = parse_item(
        {
            "channel": "news",
            "id": "11",
            "prev-id": "10",
            "meta": {"sender": "alice"},
            "size": 123,
            "no-seq": True,
            "formats": {
                "http-response": {"code": 200, "reason": "OK", "headers": {"Content-Type": "text/plain"}, "body": "hello\n"},
                "http-stream": {"content": "hello\n", "content-filters": ["var-subst"]},
                "ws-message": {"content": "hello"},
            },
        }
    )
    assert (parsed.channel, parsed.id, parsed.prev_id) == ("news", "11", "10")
    assert parsed.meta == {"sender": "alice"}
    assert (parsed.size, parsed.no_seq) == (123, True)
    assert parsed.http_response == HttpResponseFormat(
        action="send",
        code=200,
        reason=b"OK",
        headers=((b"Content-Type", b"text/plain"),),
        expose_headers=None,
        body=b"hello\n",
        body_patch=None,
        content_filters=None,
    )
    assert parsed.http_stream == HttpStreamFormat("send", b"hello\n", ("var-subst",))
    assert parsed.ws_message == WsMessageFormat("send", "text", b"hello", None, None, None)


def test_http_response_defaults() -> None:
    """An http-response without code or reason is a 200 whose reason is left to delivery."""
    parsed = parse_item(fmt("http-response", body="b"))
    assert parsed.http_response == HttpResponseFormat("send", 200, None, (), None, b"b", None, None)


def test_empty_reason_means_standard_reason() -> None:
    """An empty "reason" is the same as none (Pushpin falls back to the standard phrase)."""
    assert parse_item(fmt("http-response", body="", reason="")).http_response.reason is None  # type: ignore[union-attr]


def test_header_object_is_taken_in_sorted_key_order() -> None:
    """Headers given as a JSON object come out sorted by name, as Pushpin's QVariantMap delivers them."""
    parsed = parse_item(fmt("http-response", body="", headers={"X-Pub": "p", "Content-Type": "j", "A-First": "a"}))
    assert parsed.http_response.headers == (  # type: ignore[union-attr]
        (b"A-First", b"a"),
        (b"Content-Type", b"j"),
        (b"X-Pub", b"p"),
    )


def test_header_list_keeps_order_and_repeats() -> None:
    """Headers given as [name, value] pairs keep their order and repeated names."""
    pairs = [["X-Pub", "p"], ["Content-Type", "j"], ["x-pub", "q"]]
    parsed = parse_item(fmt("http-response", body="", headers=pairs))
    assert parsed.http_response.headers == ((b"X-Pub", b"p"), (b"Content-Type", b"j"), (b"x-pub", b"q"))  # type: ignore[union-attr]


def test_grip_headers_are_stripped_and_expose_list_kept_aside() -> None:
    """Grip-* headers never reach delivery; Grip-Expose-Headers names are split out (§6.1 quirk)."""
    headers = [["Grip-Expose-Headers", "X-A, X-B"], ["grip-foo", "1"], ["X-D", "d"], ["GRIP-EXPOSE-HEADERS", "X-C"]]
    parsed = parse_item(fmt("http-response", body="", headers=headers)).http_response
    assert parsed is not None
    assert parsed.headers == ((b"X-D", b"d"),)
    assert parsed.expose_headers == (b"X-A", b"X-B", b"X-C")


@pytest.mark.parametrize(
    ("key", "value", "body"),
    [
        ("body", "héllo", "héllo".encode()),
        ("body-bin", "aGk=", b"hi"),
        ("body-bin", "QQ==QQ==", b"A\x04\x10"),  # observed: padding is skipped, decoding goes on
        ("body-bin", "QUJD\nRA", b"ABCD"),
        ("body-bin", "_-QQ", b"A"),
        ("body-bin", "Q", b""),
        ("body", "<a\ud800b>", b"<a?b>"),  # observed: an unpaired surrogate becomes "?"
    ],
)
def test_body_text_and_lenient_base64(key: str, value: str, body: bytes) -> None:
    """body is UTF-8 text, body-bin is base64 decoded leniently like QByteArray::fromBase64."""
    assert parse_item(fmt("http-response", **{key: value})).http_response.body == body  # type: ignore[union-attr]


def test_body_bin_wins_over_body_and_body_over_patch() -> None:
    """body-bin is used before body, and body before body-patch (the others are not checked)."""
    parsed = parse_item(fmt("http-response", **{"body-bin": "eA==", "body": 5})).http_response
    assert parsed is not None and parsed.body == b"x"
    parsed = parse_item(fmt("http-response", body="y", **{"body-patch": 5})).http_response
    assert parsed is not None and (parsed.body, parsed.body_patch) == (b"y", None)


def test_body_patch_is_kept_as_given() -> None:
    """body-patch keeps its operations, even malformed ones, for delivery to judge."""
    ops = [{"op": "replace", "path": "/a", "value": 2}, 5]
    parsed = parse_item(fmt("http-response", **{"body-patch": ops})).http_response
    assert parsed is not None and parsed.body_patch == tuple(ops)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"content": "hi"}, WsMessageFormat("send", "text", b"hi", None, None, None)),
        ({"content-bin": "aGk="}, WsMessageFormat("send", "binary", b"hi", None, None, None)),
        ({"type": "binary", "content": "hi"}, WsMessageFormat("send", "binary", b"hi", None, None, None)),
        ({"type": "text", "content-bin": "aGk="}, WsMessageFormat("send", "text", b"hi", None, None, None)),
        ({"type": "ping", "content": "p"}, WsMessageFormat("send", "ping", b"p", None, None, None)),
        ({"type": "ping"}, WsMessageFormat("send", "ping", None, None, None, None)),
        ({"type": "pong"}, WsMessageFormat("send", "pong", None, None, None, None)),
        ({"content-bin": "eA==", "content": 5}, WsMessageFormat("send", "binary", b"x", None, None, None)),
        ({"content": "x", "content-filters": []}, WsMessageFormat("send", "text", b"x", None, None, ())),
        ({"action": "close"}, WsMessageFormat("close", "text", None, None, None, None)),
        ({"action": "close", "code": 4001, "reason": "bye"}, WsMessageFormat("close", "text", None, 4001, "bye", None)),
        ({"action": "close", "code": "x", "reason": ""}, WsMessageFormat("close", "text", None, 0, None, None)),
        ({"action": "close", "code": 70000}, WsMessageFormat("close", "text", None, 70000, None, None)),
        ({"action": "hint"}, WsMessageFormat("hint", "text", None, None, None, None)),
    ],
)
def test_ws_message_fields(fields: dict[str, Any], expected: WsMessageFormat) -> None:
    """ws-message: type follows content/content-bin unless given; ping/pong need no content; close has code/reason."""
    assert parse_item(fmt("ws-message", **fields)).ws_message == expected


@pytest.mark.parametrize(
    ("name", "action", "expected"),
    [
        ("http-stream", "close", HttpStreamFormat("close", b"", None)),
        ("http-stream", "hint", HttpStreamFormat("hint", b"", None)),
        ("http-response", "hint", HttpResponseFormat("hint", 200, None, (), None, b"", None, None)),
        ("http-response", "close", HttpResponseFormat("close", 200, None, (), None, b"", None, None)),
    ],
)
def test_non_send_actions_skip_the_other_fields(name: str, action: str, expected: object) -> None:
    """hint/close are accepted on every format and nothing else in the format is checked."""
    parsed = parse_item(fmt(name, action=action, content=5, body=5, code="x"))
    assert (parsed.http_stream if name == "http-stream" else parsed.http_response) == expected


def test_formats_may_sit_directly_on_the_item() -> None:
    """Without "formats", format keys on the item itself are used (§6.1)."""
    parsed = parse_item({"channel": "a", "http-stream": {"content": "x"}, "ws-message": {"content": "y"}})
    assert parsed.http_stream is not None and parsed.ws_message is not None


def test_formats_key_hides_item_level_formats() -> None:
    """When "formats" is present, format keys on the item itself are ignored, even invalid ones."""
    parsed = parse_item(item(**{"http-response": 5}))
    assert parsed.http_response is None and parsed.http_stream is not None


def test_only_unknown_formats_is_accepted_with_no_format() -> None:
    """A "formats" object with only unknown keys is not empty, so it passes with no format at all."""
    parsed = parse_item({"channel": "a", "formats": {"foo": {}}})
    assert (parsed.http_response, parsed.http_stream, parsed.ws_message) == (None, None, None)


def test_empty_channel_is_accepted() -> None:
    """An empty channel name is a valid string."""
    assert parse_item(item(channel="")).channel == ""


@pytest.mark.parametrize(
    ("raw", "channel", "expected"),
    [
        ({"formats": STREAM}, "sub", "sub"),
        ({"channel": "own", "formats": STREAM}, "sub", "sub"),
        ({"channel": 5, "formats": STREAM}, "sub", "sub"),
        ({"channel": "own", "formats": STREAM}, "", "own"),
        ({"channel": "own", "formats": STREAM}, None, "own"),
    ],
)
def test_sub_channel_overrides_item_channel(raw: dict[str, Any], channel: str | None, expected: str) -> None:
    """A non-empty SUB frame channel replaces the item's channel, which is then not even checked."""
    assert parse_item(raw, channel=channel).channel == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (202, 202),
        (0, 0),
        (999, 999),
        ("200", 200),
        (" 12 ", 12),
        ("+12", 12),
        ("abc", 0),
        ("12.0", 0),
        ("0x10", 0),
        ("99999999999999999999", 0),
        (True, 1),
        (False, 0),
        (999.49999, 999),
        (-0.4, 0),
        (-0.5, 0),
        (4294967496, 200),
        (4294967295.5, 0),
        (1e300, 0),
        (-1e300, 0),
        (99999999999999999999, 0),
    ],
)
def test_code_is_converted_like_qvariant_toint(value: object, expected: int) -> None:
    """code: strings parse or give 0, doubles round half up, the result wraps to 32 bits (observed)."""
    assert parse_item(fmt("http-response", code=value, body="")).http_response.code == expected  # type: ignore[union-attr]


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (1.5, 2), ("5", 5), ("abc", 0), (True, 1), (-0.5, 0), (4294967296, 0)])
def test_size_is_converted_like_qvariant_toint(value: object, expected: int) -> None:
    """size goes through the same conversion as code."""
    assert parse_item(item(size=value)).size == expected


def test_meta_keeps_string_values() -> None:
    """meta is an object of strings."""
    assert parse_item(item(meta={"user": "al", "empty": ""})).meta == {"user": "al", "empty": ""}


# --- refused items: Pushpin's reason texts ---------------------------------------------------

JSON_ERRORS: list[tuple[Any, str]] = [
    (1, "publish item object is not an object"),
    ([], "publish item object is not an object"),
    ({}, "publish item object does not contain 'channel'"),
    ({"channel": 5, "formats": STREAM}, "publish item object contains 'channel' with wrong type"),
    ({"channel": None, "formats": STREAM}, "publish item object contains 'channel' with wrong type"),
    ({"channel": "a"}, "no formats specified"),
    (item(formats={}), "no formats specified"),
    (item(formats=[]), "publish item object contains 'formats' with wrong type"),
    (item(formats=None), "publish item object contains 'formats' with wrong type"),
    (item(id=5), "publish item object contains 'id' with wrong type"),
    (item(id=None), "publish item object contains 'id' with wrong type"),
    (item(**{"prev-id": 5}), "publish item object contains 'prev-id' with wrong type"),
    (item(meta=5), "publish item object contains 'meta' with wrong type"),
    (item(meta=None), "publish item object contains 'meta' with wrong type"),
    (item(meta={"k": 5}), "'meta' contains 'k' with wrong type"),
    (item(meta={"k": None}), "'meta' contains 'k' with wrong type"),
    (item(meta={"b": 5, "a": 5}), "'meta' contains 'a' with wrong type"),
    (item(meta={"b": 5, "a": "x", "c": 6}), "'meta' contains 'b' with wrong type"),
    (item(size=-1), "publish item object contains 'size' with invalid value"),
    (item(size="-1"), "publish item object contains 'size' with invalid value"),
    (item(size=-0.6), "publish item object contains 'size' with invalid value"),
    (item(size=1e12), "publish item object contains 'size' with invalid value"),
    (item(size=2147483648), "publish item object contains 'size' with invalid value"),
    (item(size=[]), "publish item object contains 'size' with wrong type"),
    (item(size=None), "publish item object contains 'size' with wrong type"),
    (item(**{"no-seq": 1}), "publish item object contains 'no-seq' with wrong type"),
    (item(**{"no-seq": "true"}), "publish item object contains 'no-seq' with wrong type"),
    (item(**{"no-seq": None}), "publish item object contains 'no-seq' with wrong type"),
    # check order: id before formats, formats before meta, meta before size and no-seq
    ({"channel": "a", "formats": 5, "id": 5}, "publish item object contains 'id' with wrong type"),
    (item(meta={"k": 5}, size="x", **{"no-seq": 5}), "'meta' contains 'k' with wrong type"),
    (item(size=[], **{"no-seq": 5}), "publish item object contains 'size' with wrong type"),
    ({"channel": "a", "formats": {"ws-message": {}, "http-stream": {"content": 5}}, "meta": 5},
     "'http-stream' contains 'content' with wrong type"),
    ({"channel": "a", "http-response": 5, "ws-message": {}, "http-stream": {}}, "'http-response' is not an object"),
    ({"channel": "a", "ws-message": {}, "http-stream": {}}, "'http-stream' does not contain 'content' or 'content-bin'"),
    # actions: an unknown one has an empty reason
    (fmt("http-stream", action="bogus"), ""),
    (fmt("http-stream", action="refresh"), ""),  # refresh is a ws-message action only
    (fmt("http-response", action="refresh"), ""),
    (fmt("http-stream", action=""), ""),
    (fmt("http-response", action="bogus"), ""),
    (fmt("ws-message", action="bogus"), ""),
    (fmt("http-stream", action=None), "'http-stream' contains 'action' with wrong type"),
    (fmt("http-stream", action=5), "'http-stream' contains 'action' with wrong type"),
    # http-stream
    ({"channel": "a", "formats": {"http-stream": 5}}, "'http-stream' is not an object"),
    (fmt("http-stream"), "'http-stream' does not contain 'content' or 'content-bin'"),
    (fmt("http-stream", content=5), "'http-stream' contains 'content' with wrong type"),
    (fmt("http-stream", content=None), "'http-stream' contains 'content' with wrong type"),
    (fmt("http-stream", **{"content-bin": 5}), "'http-stream' contains 'content-bin' with wrong type"),
    (fmt("http-stream", **{"content-bin": None, "content": "x"}), "'http-stream' contains 'content-bin' with wrong type"),
    (fmt("http-stream", content="x", **{"content-filters": "a"}), "'http-stream' contains 'content-filters' with wrong type"),
    (fmt("http-stream", content="x", **{"content-filters": [5]}), "content-filters contains element with wrong type"),
    (fmt("http-stream", content=5, **{"content-filters": 5}), "'http-stream' contains 'content-filters' with wrong type"),
    # http-response
    (fmt("http-response"), "'http-response' does not contain 'body', 'body-bin', or 'body-patch'"),
    (fmt("http-response", body=5), "'http-response' contains 'body' with wrong type"),
    (fmt("http-response", body=None), "'http-response' contains 'body' with wrong type"),
    (fmt("http-response", **{"body-bin": 5}), "'http-response' contains 'body-bin' with wrong type"),
    (fmt("http-response", **{"body-bin": None, "body": "x"}), "'http-response' contains 'body-bin' with wrong type"),
    (fmt("http-response", **{"body-patch": {}}), "'http-response' contains 'body-patch' with wrong type"),
    (fmt("http-response", **{"body-patch": None}), "'http-response' contains 'body-patch' with wrong type"),
    (fmt("http-response", code=1000, body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=-1, body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=999.5, body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=-0.6, body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=1e10, body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=2147483648, body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code="1000", body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=" -5", body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code="4294968296", body=""), "'http-response' contains 'code' with invalid value"),
    (fmt("http-response", code=None, body=""), "'http-response' contains 'code' with wrong type"),
    (fmt("http-response", code=[], body=""), "'http-response' contains 'code' with wrong type"),
    (fmt("http-response", code={}, body=""), "'http-response' contains 'code' with wrong type"),
    (fmt("http-response", reason=5, body=""), "'http-response' contains 'reason' with wrong type"),
    (fmt("http-response", reason=None, body=""), "'http-response' contains 'reason' with wrong type"),
    (fmt("http-response", headers=5, body=""), "'http-response' contains 'headers' with wrong type"),
    (fmt("http-response", headers="x", body=""), "'http-response' contains 'headers' with wrong type"),
    (fmt("http-response", headers=None, body=""), "'http-response' contains 'headers' with wrong type"),
    (fmt("http-response", headers={"a": 5}, body=""), "headers contains 'a' with wrong type"),
    (fmt("http-response", headers={"a": None}, body=""), "headers contains 'a' with wrong type"),
    (fmt("http-response", headers=[5], body=""), "headers contains element with wrong type"),
    (fmt("http-response", headers=[{}], body=""), "headers contains element with wrong type"),
    (fmt("http-response", headers=[["a"]], body=""), "headers contains list with wrong number of elements"),
    (fmt("http-response", headers=[["a", "b", "c"]], body=""), "headers contains list with wrong number of elements"),
    (fmt("http-response", headers=[[5, "a"]], body=""), "header contains name element with wrong type"),
    (fmt("http-response", headers=[[None, "a"]], body=""), "header contains name element with wrong type"),
    (fmt("http-response", headers=[["a", 5]], body=""), "header contains value element with wrong type"),
    (fmt("http-response", **{"content-filters": 5}, body=""), "'http-response' contains 'content-filters' with wrong type"),
    (fmt("http-response", **{"content-filters": None}, body=""), "'http-response' contains 'content-filters' with wrong type"),
    (fmt("http-response", **{"content-filters": [None]}, body=""), "content-filters contains element with wrong type"),
    # http-response check order: code, reason, headers, content-filters, body
    (fmt("http-response", code="x"), "'http-response' does not contain 'body', 'body-bin', or 'body-patch'"),
    (fmt("http-response", body="x", reason=5, code="x"), "'http-response' contains 'reason' with wrong type"),
    (fmt("http-response", body="x", reason=5, headers=5), "'http-response' contains 'reason' with wrong type"),
    (fmt("http-response", body="x", headers=5, **{"content-filters": [5]}), "'http-response' contains 'headers' with wrong type"),
    (fmt("http-response", body=5, **{"content-filters": 5}), "'http-response' contains 'content-filters' with wrong type"),
    # ws-message
    (fmt("ws-message"), "'ws-message' does not contain 'content' or 'content-bin'"),
    (fmt("ws-message", type="text"), "'ws-message' does not contain 'content' or 'content-bin'"),
    (fmt("ws-message", type="binary"), "'ws-message' does not contain 'content' or 'content-bin'"),
    (fmt("ws-message", type="close"), "'ws-message' contains 'type' with unknown value"),
    (fmt("ws-message", type=""), "'ws-message' contains 'type' with unknown value"),
    (fmt("ws-message", type=5), "'ws-message' contains 'type' with wrong type"),
    (fmt("ws-message", type=None, content="x"), "'ws-message' contains 'type' with wrong type"),
    (fmt("ws-message", content=5), "'ws-message' contains 'content' with wrong type"),
    (fmt("ws-message", type="ping", content=5), "'ws-message' contains 'content' with wrong type"),
    (fmt("ws-message", **{"content-bin": 5}), "'ws-message' contains 'content-bin' with wrong type"),
    (fmt("ws-message", **{"content-bin": None}), "'ws-message' contains 'content-bin' with wrong type"),
    (fmt("ws-message", content="x", **{"content-filters": {}}), "'ws-message' contains 'content-filters' with wrong type"),
    (fmt("ws-message", content=5, type="x", **{"content-filters": 5}), "'ws-message' contains 'type' with unknown value"),
    (fmt("ws-message", content=5, **{"content-filters": 5}), "'ws-message' contains 'content-filters' with wrong type"),
    (fmt("ws-message", action="close", code=[]), "'ws-message' contains 'code' with wrong type"),
    (fmt("ws-message", action="close", code=None), "'ws-message' contains 'code' with wrong type"),
    (fmt("ws-message", action="close", code=-5), "'ws-message' contains 'code' with invalid value"),
    (fmt("ws-message", action="close", code=-0.6), "'ws-message' contains 'code' with invalid value"),
    (fmt("ws-message", action="close", code=4294967295), "'ws-message' contains 'code' with invalid value"),
    (fmt("ws-message", action="close", reason=5), "'ws-message' contains 'reason' with wrong type"),
    (fmt("ws-message", action="close", reason=None), "'ws-message' contains 'reason' with wrong type"),
]


@pytest.mark.parametrize(("raw", "expected"), JSON_ERRORS)
def test_json_item_errors(raw: Any, expected: str) -> None:
    """A JSON item Pushpin refuses is refused here with the same reason text."""
    assert reason_of(raw) == expected


def _t(**fields: Any) -> dict[bytes, Any]:
    """A tnetstring-decoded item: bytes keys, bytes strings."""
    return {k.replace("_", "-").encode(): v for k, v in fields.items()}


TSTREAM = {b"http-stream": {b"content": b"x"}}

TNET_CASES: list[tuple[dict[bytes, Any], str | None]] = [
    (_t(formats=TSTREAM), "publish item object does not contain 'channel'"),
    (_t(channel=None, formats=TSTREAM), "publish item object contains 'channel' with wrong type"),
    (_t(channel=5, formats=TSTREAM), "publish item object contains 'channel' with wrong type"),
    (_t(channel=b"a", id=None, formats=TSTREAM), None),  # null reads as absent
    (_t(channel=b"a", id=5, formats=TSTREAM), "publish item object contains 'id' with wrong type"),
    ({b"channel": b"a", b"formats": None, b"http-stream": {b"content": b"x"}}, None),
    (_t(channel=b"a", formats=None), "no formats specified"),
    ({b"channel": b"a", b"http-stream": None}, "no formats specified"),
    (_t(channel=b"a", formats={b"http-stream": None}), "'http-stream' is not an object"),
    (_t(channel=b"a", formats={b"http-stream": {}}), "'http-stream' does not contain 'content'"),
    (_t(channel=b"a", formats={b"http-stream": {b"content-bin": b"x"}}), "'http-stream' does not contain 'content'"),
    (_t(channel=b"a", formats={b"http-stream": {b"content": None}}), "'http-stream' contains 'content' with wrong type"),
    (_t(channel=b"a", formats={b"http-stream": {b"content": b"x", b"action": None}}), None),
    (_t(channel=b"a", formats={b"http-stream": {b"content": b"x", b"action": b"bogus"}}), ""),
    (_t(channel=b"a", formats={b"http-stream": {b"content": b"x", b"content-filters": None}}),
     "'http-stream' contains 'content-filters' with wrong type"),
    (_t(channel=b"a", formats={b"http-response": {}}), "'http-response' does not contain 'body' or 'body-patch'"),
    (_t(channel=b"a", formats={b"http-response": {b"body-bin": b"eA=="}}), "'http-response' does not contain 'body' or 'body-patch'"),
    (_t(channel=b"a", formats={b"http-response": {b"body": None}}), "'http-response' contains 'body' with wrong type"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"code": None}}), "'http-response' contains 'code' with wrong type"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"code": 1000}}), "'http-response' contains 'code' with invalid value"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"code": 4294967496}}), None),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"code": b"1000"}}), "'http-response' contains 'code' with invalid value"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"code": 999.6}}), "'http-response' contains 'code' with invalid value"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"headers": None}}), "'http-response' contains 'headers' with wrong type"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"headers": {b"a": None}}}), "headers contains 'a' with wrong type"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"headers": [[b"a", None]]}}), "header contains value element with wrong type"),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": None, b"reason": None}}), None),
    (_t(channel=b"a", formats={b"http-response": {b"body-patch": 5}}), "'http-response' contains 'body-patch' with wrong type"),
    (_t(channel=b"a", formats={b"ws-message": {}}), "'ws-message' does not contain 'content' or 'content-bin'"),
    (_t(channel=b"a", formats={b"ws-message": {b"type": None, b"content": b"x"}}), None),
    (_t(channel=b"a", formats={b"ws-message": {b"type": b"", b"content": b"x"}}), "'ws-message' contains 'type' with unknown value"),
    (_t(channel=b"a", formats={b"ws-message": {b"content-bin": None}}), "'ws-message' contains 'content-bin' with wrong type"),
    (_t(channel=b"a", formats={b"ws-message": {b"content-bin": 5}}), "'ws-message' contains 'content-bin' with wrong type"),
    (_t(channel=b"a", formats={b"ws-message": {b"action": b"close", b"code": None}}), "'ws-message' contains 'code' with wrong type"),
    (_t(channel=b"a", formats={b"ws-message": {b"action": b"close", b"code": -1}}), "'ws-message' contains 'code' with invalid value"),
    (_t(channel=b"a", formats={b"ws-message": {b"action": b"close", b"reason": None}}), None),
    (_t(channel=b"a", formats=TSTREAM, meta=None), None),
    (_t(channel=b"a", formats=TSTREAM, meta={b"k": None}), "'meta' contains 'k' with wrong type"),
    (_t(channel=b"a", formats=TSTREAM, meta=5), "publish item object contains 'meta' with wrong type"),
    (_t(channel=b"a", formats=TSTREAM, size=None), "publish item object contains 'size' with wrong type"),
    (_t(channel=b"a", formats=TSTREAM, size=b"-3"), "publish item object contains 'size' with invalid value"),
    (_t(channel=b"a", formats=TSTREAM, no_seq=None), "publish item object contains 'no-seq' with wrong type"),
    (_t(channel=b"a", formats=TSTREAM, no_seq=1), "publish item object contains 'no-seq' with wrong type"),
]


@pytest.mark.parametrize(("raw", "expected"), TNET_CASES)
def test_tnetstring_item_errors(raw: dict[bytes, Any], expected: str | None) -> None:
    """A tnetstring item is judged like Pushpin does it: nulls of optional fields are absent, texts differ for body/content."""
    try:
        parse_zmq_item(tnetstring.dumps(raw))
        got = None
    except ItemError as e:
        got = str(e)
    assert got == expected


def test_tnetstring_item_fields() -> None:
    """A tnetstring item's byte strings become text (ids, meta) or stay bytes (content); content-bin is raw."""
    raw = {
        b"channel": b"ch",
        b"id": b"2",
        b"prev-id": b"1",
        b"meta": {b"sender": b"bob"},
        b"size": 7,
        b"no-seq": True,
        b"formats": {
            b"http-response": {b"code": 201, b"headers": [[b"X-A", b"1"]], b"body": b"\x00\xff"},
            b"ws-message": {b"content-bin": b"\x01\x02"},
        },
    }
    parsed = parse_zmq_item(b"T" + tnetstring.dumps(raw))
    assert (parsed.channel, parsed.id, parsed.prev_id, parsed.meta, parsed.size, parsed.no_seq) == ("ch", "2", "1", {"sender": "bob"}, 7, True)
    assert parsed.http_response == HttpResponseFormat("send", 201, None, ((b"X-A", b"1"),), None, b"\x00\xff", None, None)
    assert parsed.ws_message == WsMessageFormat("send", "binary", b"\x01\x02", None, None, None)


def test_tnetstring_body_patch_becomes_json_style() -> None:
    """A tnetstring body-patch has its byte strings turned into text, as Pushpin's convertToJsonStyle does."""
    raw = {b"channel": b"a", b"http-response": {b"body-patch": [{b"op": b"add", b"path": b"/x", b"value": [b"v", 1]}]}}
    parsed = parse_item(tnetstring.loads(tnetstring.dumps(raw)))
    assert parsed.http_response.body_patch == ({"op": "add", "path": "/x", "value": ["v", 1]},)  # type: ignore[union-attr]


# --- the control API body (§6.2) -------------------------------------------------------------

BODY_ERRORS = [
    (b"", "Body is not valid JSON."),
    (b"nope", "Body is not valid JSON."),
    (b"5", "Body is not valid JSON."),
    (b'"str"', "Body is not valid JSON."),
    (b"null", "Body is not valid JSON."),
    (b'{"items":[]} trailing', "Body is not valid JSON."),
    (b'{"items":[]}\x00', "Body is not valid JSON."),
    (b'{"items":[NaN]}', "Body is not valid JSON."),
    (b'{"items":[1e400]}', "Body is not valid JSON."),
    (b'{"items":[-Infinity]}', "Body is not valid JSON."),
    (b'{"items":["\xff"]}', "Body is not valid JSON."),
    (b'{"items":[], }', "Body is not valid JSON."),
    (b'{"items":[01]}', "Body is not valid JSON."),
    (b"{'items':[]}", "Body is not valid JSON."),
    (b"[]", "Invalid format."),
    (b"{}", "Invalid format: object does not contain 'items'"),
    (b'{"items":{}}', "Invalid format: object contains 'items' with wrong type"),
    (b'{"items":null}', "Invalid format: object contains 'items' with wrong type"),
    (b'{"items":[], "items":5}', "Invalid format: object contains 'items' with wrong type"),
    (b'{"items":[1]}', "Invalid format: publish item object is not an object"),
    (b'{"items":["a\x01b"]}', "Invalid format: publish item object is not an object"),
    (b'{"items":["\\ud800"]}', "Invalid format: publish item object is not an object"),
    (b'{"items":[{"channel":"a"}]}', "Invalid format: no formats specified"),
    (b'{"items":[{"channel":"a","formats":{"http-stream":{"action":"x"}}}]}', "Invalid format: "),
]


@pytest.mark.parametrize(("body", "expected"), BODY_ERRORS)
def test_publish_body_errors(body: bytes, expected: str) -> None:
    """POST /publish/ bodies Pushpin refuses give the same 400 text (without the final newline)."""
    with pytest.raises(PublishBodyError) as caught:
        parse_publish_body(body)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    "body",
    [b'{"items":[]}', b'\xef\xbb\xbf{"items":[]}', b'  {"items":[]}  \n', b'{"items":[], "other": 1}'],
)
def test_publish_body_accepted_shapes(body: bytes) -> None:
    """An items list (possibly empty; BOM and surrounding whitespace allowed) is accepted."""
    assert parse_publish_body(body) == []


def test_publish_body_parses_every_item_in_order() -> None:
    """Every item of the body is returned, in order."""
    body = json.dumps({"items": [{"channel": "a", "formats": STREAM}, {"channel": "b", "formats": STREAM}]}).encode()
    assert [i.channel for i in parse_publish_body(body)] == ["a", "b"]


def test_publish_body_is_all_or_nothing() -> None:
    """An invalid second item rejects the whole body: nothing is returned for the valid first one."""
    body = json.dumps({"items": [{"channel": "a", "formats": STREAM}, {"channel": "b"}]}).encode()
    with pytest.raises(PublishBodyError, match="^Invalid format: no formats specified$"):
        parse_publish_body(body)


# --- ZMQ frames (§6.3) -----------------------------------------------------------------------

REFERENCE_T = b"T68:7:channel,4:news,7:formats,37:11:http-stream,18:7:content,5:tick\n,}}}"


@pytest.mark.parametrize(
    "frame",
    [
        REFERENCE_T,
        REFERENCE_T[1:],
        b'J{"channel":"news","formats":{"http-stream":{"content":"tick\\n"}}}',
        REFERENCE_T + b"trailing bytes are ignored",
    ],
)
def test_zmq_frame_encodings(frame: bytes) -> None:
    """J+JSON, T+tnetstring and a bare tnetstring all give the §6.3 example item."""
    parsed = parse_zmq_item(frame)
    assert parsed.channel == "news"
    assert parsed.http_stream == HttpStreamFormat("send", b"tick\n", None)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b"Jnope", "received message with invalid format (json parse failed)"),
        (b"J[1]", "received message with invalid format (not a valid json object)"),
        (b"x", "received message with invalid format (tnetstring parse failed)"),
        (b"", "received message with invalid format (tnetstring parse failed)"),
        (b"T", "received message with invalid format (tnetstring parse failed)"),
        (b"1:x,", "publish item object is not an object"),
        (b'J{"channel":5}', "publish item object contains 'channel' with wrong type"),
    ],
)
def test_zmq_frame_errors(frame: bytes, expected: str) -> None:
    """Undecodable frames and invalid items raise ItemError with Pushpin's (log) text."""
    with pytest.raises(ItemError) as caught:
        parse_zmq_item(frame)
    assert str(caught.value) == expected


def test_zmq_sub_channel_overrides() -> None:
    """On the SUB socket the frame's channel is used and the item needs none of its own."""
    assert parse_zmq_item(b'J{"http-stream":{"content":"x"}}', channel="c1").channel == "c1"


# --- helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "json_numbers", "expected"),
    [
        (None, True, None),
        ([1], True, None),
        ({}, True, None),
        (2**53 + 1, True, 0),  # a JSON number is a double first
        (2**53 + 1, False, 1),  # a tnetstring integer is exact
        (b" 7 ", False, 7),
        (float("nan"), True, 0),
        (10**400, True, 0),
    ],
)
def test_qt_to_int(value: object, json_numbers: bool, expected: int | None) -> None:
    """qt_to_int follows QVariant::toInt, with None where Qt cannot convert."""
    assert qt_to_int(value, json_numbers=json_numbers) == expected


def test_loads_json_rejects_what_qt_rejects() -> None:
    """loads_json refuses scalars at the top, NaN and overflowing numbers; allows raw control characters."""
    for bad in (b"1", b"[NaN]", b"[1e999]", b"[" + b"9" * 400 + b"]"):
        with pytest.raises(ValueError):
            loads_json(bad)
    assert loads_json(b'["a\x01"]') == ["a\x01"]


# --- properties ------------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_keys = st.sampled_from(
    ["channel", "id", "prev-id", "meta", "size", "no-seq", "formats", "http-response", "http-stream", "ws-message",
     "action", "code", "reason", "headers", "body", "body-bin", "body-patch", "content", "content-bin",
     "content-filters", "type", "x"]
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys | st.text(max_size=4), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(_json_values, st.sampled_from([None, "", "sub"]))
def test_random_json_values_only_raise_item_error(value: Any, channel: str | None) -> None:
    """Any JSON value given to parse_item either parses or raises ItemError, nothing else."""
    try:
        parse_item(value, channel=channel)
    except ItemError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["http-response", "http-stream", "ws-message"]), _json_values, min_size=1))
def test_random_formats_only_raise_item_error(formats: dict[str, Any]) -> None:
    """Random format objects on a valid item either parse or raise ItemError."""
    try:
        parse_item({"channel": "a", "formats": formats})
    except ItemError:
        pass


_tnet_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys.map(str.encode) | st.binary(max_size=3), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(_tnet_values)
def test_random_tnetstring_frames_only_raise_item_error(value: Any) -> None:
    """Any tnetstring value sent as a ZMQ frame either parses or raises ItemError."""
    try:
        parse_zmq_item(tnetstring.dumps(value))
    except ItemError:
        pass
