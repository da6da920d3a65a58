"""
The short ways through L{pushpin_tx.protocol.items}: the common-shape item path, the
uncopied JSON reader and the slot constructors give exactly what the general path gives
(the same L{Item}, or the same error text), for every shape of JSON item.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol import items as I
from pushpin_tx.protocol.items import HttpResponseFormat, HttpStreamFormat, Item, WsMessageFormat

#: the reader every JSON item went through before the short ways: each object copied
_COPYING = I._Reader(tnet=False)

_texts = st.sampled_from(["a", "", "é", "\ud800", "x\ny", "0"]) | st.text(max_size=4)
_scalars = st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=False, allow_infinity=False) | _texts
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_texts, inner, max_size=2),
                       max_leaves=4)
_format_keys = st.sampled_from(["content", "content-bin", "body", "body-bin", "action", "type", "code", "headers",
                                "content-filters", "reason", "extra"])
_format = st.dictionaries(_format_keys, _texts | _values, max_size=3)
_formats = st.dictionaries(st.sampled_from(["http-stream", "ws-message", "http-response", "other"]), _format | _values,
                           max_size=3)
_item_keys = st.sampled_from(["channel", "id", "prev-id", "formats", "meta", "size", "no-seq", "http-stream", "x"])
_items = st.dictionaries(_item_keys, _texts | _values | _formats, max_size=5) | _values


_near_format = st.dictionaries(st.sampled_from(["content", "body"]), _texts | _scalars, min_size=1, max_size=1)
_near_common = st.fixed_dictionaries(
    {"channel": _texts | _scalars, "formats": st.dictionaries(st.sampled_from(["http-stream", "ws-message", "http-response"]),
                                                              _near_format, max_size=3)},
    optional={"id": _texts | _scalars, "prev-id": _texts | _scalars},
)


def outcome(parse: Any, raw: object, *args: Any) -> tuple[str, Any]:
    """What C{parse(raw, *args)} gives: the item, or the error text."""
    try:
        return ("item", parse(raw, *args))
    except I.ItemError as e:
        return ("error", str(e))


def common(**formats: dict[str, Any]) -> dict[str, Any]:
    return {"channel": "c", "formats": formats}


@pytest.mark.parametrize("raw", [
    common(**{"http-stream": {"content": "12 34\n"}}),
    common(**{"ws-message": {"content": "é"}}),
    common(**{"http-response": {"body": "b"}}),
    common(**{"http-stream": {"content": "s"}, "ws-message": {"content": "w"}, "http-response": {"body": "r"}}),
    {"channel": "c", "id": "i1", "prev-id": "i0", "formats": {"http-stream": {"content": "x"}}},
    {"channel": "c", "id": None, "formats": {"http-stream": {"content": "x"}}},
    {"channel": "c", "prev-id": 3, "formats": {"http-stream": {"content": "x"}}},
    {"channel": 1, "formats": {"http-stream": {"content": "x"}}},
    {"formats": {"http-stream": {"content": "x"}}},
    common(),
    common(**{"http-stream": {"content": 5}}),
    common(**{"http-stream": {"content": "x", "action": "close"}}),
    common(**{"http-stream": {"content-bin": "eA=="}}),
    common(**{"http-stream": []}),
    common(**{"unknown": {"content": "x"}}),
    {"channel": "c", "formats": {"http-stream": {"content": "x"}}, "meta": {"b": "2", "a": "1"}},
    {"channel": "c", "http-stream": {"content": "x"}},
    {"channel": "c", "formats": {"http-stream": {"content": "\ud800"}}},
    [],
    "item",
])
def test_common_shapes_and_their_neighbours_match_the_general_path(raw):
    """Each common shape, and each one step away from it, parses as the general path parses it."""
    assert outcome(I._parse_json_item, raw) == outcome(I._parse_item, raw, None, _COPYING)


def test_the_common_shape_gives_the_values_a_publisher_sent():
    """A channel, an id and the three content formats come out as the formats' send values."""
    got = I._parse_json_item({"channel": "c", "id": "i", "formats": {"http-stream": {"content": "s"},
                                                                    "ws-message": {"content": "w"},
                                                                    "http-response": {"body": "r"}}})
    assert got == Item("c", "i", None, {}, None, False, HttpResponseFormat("send", 200, None, (), None, b"r", None, None),
                       HttpStreamFormat("send", b"s", None), WsMessageFormat("send", "text", b"w", None, None, None))


@settings(max_examples=600, deadline=None)
@given(_items | _near_common, st.sampled_from([None, "", "sub"]))
def test_any_json_item_parses_as_the_general_copying_path_parses_it(raw, channel):
    """For any JSON item (and a SUB socket's channel or none) the result or the error text is the general path's."""
    raw = json.loads(json.dumps(raw))  # only what a JSON document can hold
    assert outcome(I._parse_json_item, raw, channel) == outcome(I._parse_item, raw, channel, _COPYING)
    assert outcome(I._parse_item, raw, channel, I._JSON_READER) == outcome(I._parse_item, raw, channel, _COPYING)


def test_publish_bodies_use_the_short_way_with_the_same_answers():
    """parse_publish_body: the same items, and the same 400 reason for the first bad item."""
    good = {"items": [common(**{"http-stream": {"content": f"{n}"}}) for n in range(3)]}
    assert I.parse_publish_body(json.dumps(good).encode()) == [I._parse_item(raw, None, _COPYING) for raw in good["items"]]
    bad = {"items": [good["items"][0], {"channel": "c", "id": None, "formats": {"http-stream": {"content": "x"}}}]}
    with pytest.raises(I.PublishBodyError, match=r"^Invalid format: publish item object contains 'id' with wrong type$"):
        I.parse_publish_body(json.dumps(bad).encode())


@pytest.mark.parametrize("cls, args", [
    (Item, ("c", "i", None, {"k": "v"}, 3, True, None, HttpStreamFormat("send", b"x", ("f",)), None)),
    (HttpStreamFormat, ("send", b"x", None)),
    (WsMessageFormat, ("close", "text", None, 1000, "bye", None)),
    (HttpResponseFormat, ("send", 201, b"Made", ((b"A", b"1"),), (b"A",), b"body", None, None)),
])
def test_slot_constructors_build_what_the_dataclass_builds(cls, args):
    """A slot constructor's object equals, reprs and stays frozen like the class's own."""
    made = I._slot_constructor(cls)(*args)
    assert type(made) is cls and made == cls(*args) and repr(made) == repr(cls(*args))
    field = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, field, "x")
