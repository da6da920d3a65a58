"""
Prefix (wildcard) channels in the JSON instruct (C{application/grip-instruct}):
C{{"name": "news.", "prefix": true}} is what C{Grip-Channel: news.; prefix} is, with the same rules.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pushpin_tx.protocol.grip import Channel, Instruct, InstructError, parse_instruct
from pushpin_tx.protocol.headers import Headers

URI = "http://example.com/news"
JSON_CT = (b"Content-Type", b"application/grip-instruct")


def parse_json(doc: Any, *extra: tuple[bytes, bytes], prefix: str = "") -> Instruct:
    return parse_instruct(200, b"OK", [JSON_CT, *extra], json.dumps(doc).encode(), request_uri=URI, prefix=prefix)


def parse_headers(headers: Headers) -> Instruct:
    return parse_instruct(200, b"OK", headers, b"", request_uri=URI)


def stream(*channels: dict[str, Any]) -> dict[str, Any]:
    return {"hold": {"mode": "stream", "channels": list(channels)}}


def error_of(doc: Any) -> str:
    with pytest.raises(InstructError) as info:
        parse_json(doc)
    return str(info.value)


def test_a_prefix_channel_is_the_header_forms_prefix_channel():
    """{"name": "news.", "prefix": true} parses to the same Channel as Grip-Channel: news.; prefix (filters too)."""
    got = parse_json(stream({"name": "news.", "prefix": True, "filters": ["skip-self"]}))
    header = parse_headers([(b"Grip-Hold", b"stream"), (b"Grip-Channel", b"news.; prefix; filter=skip-self")])
    assert got.channels == header.channels == (Channel("news.", None, ("skip-self",), True),)
    assert got.hold == "stream"


def test_prefix_false_or_absent_is_an_exact_channel():
    """"prefix": false is an exact channel, as a channel without the member is; prev-id stays allowed there."""
    got = parse_json(stream({"name": "news.", "prefix": False, "prev-id": "3"}, {"name": "sport"}))
    assert got.channels == (Channel("news.", "3", ()), Channel("sport", None, ()))


def test_route_prefix_applies_and_header_and_json_prefixes_add_up():
    """The route's channel prefix is prepended; header-form and JSON prefix channels both count, exact ones first."""
    got = parse_json(
        stream({"name": "news.", "prefix": True}, {"name": "exact"}),
        (b"Grip-Channel", b"room.; prefix"),
        prefix="app-",
    )
    assert got.channels == (
        Channel("app-exact", None, ()),
        Channel("app-room.", None, (), True),
        Channel("app-news.", None, (), True),
    )


def test_a_response_hold_takes_a_prefix_too():
    """A long-poll (mode response, the default) may hold a prefix, as the header form's may."""
    got = parse_json({"hold": {"channels": [{"name": "news.", "prefix": True}]}})
    assert (got.hold, got.channels) == ("response", (Channel("news.", None, (), True),))


@pytest.mark.parametrize(
    "channel, header, why",
    [
        ({"name": "news.", "prefix": True, "prev-id": "3"}, b"news.; prefix; prev-id=3", "cannot have a prev-id"),
        ({"name": "", "prefix": True}, b"; prefix", "must name a non-empty prefix"),
    ],
)
def test_the_header_forms_refusals_apply(channel, header, why):
    """A prefix with a prev-id, or an empty prefix, is an instruct error in both forms, with the same wording."""
    assert error_of(stream(channel)) == f"channel with 'prefix' {why}"
    with pytest.raises(InstructError) as info:
        parse_headers([(b"Grip-Hold", b"stream"), (b"Grip-Channel", header)])
    assert str(info.value) == f"Grip-Channel with 'prefix' {why}"


@pytest.mark.parametrize("value", [1, 0, "true", None, [], {}])
def test_a_prefix_that_is_not_a_boolean_is_a_type_error(value):
    """"prefix" must be true or false: anything else is refused as other members of the wrong type are."""
    assert error_of(stream({"name": "news.", "prefix": value})) == "channel contains 'prefix' with wrong type"
    # the same wording as the other channel members' type errors
    assert error_of(stream({"name": 5})) == "channel contains 'name' with wrong type"
