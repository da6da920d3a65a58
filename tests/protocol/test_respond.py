"""
Tests for L{pushpin_tx.protocol.respond}: the response a long-poll hold gets from an http-response
publish (reference §6.1, §14.3, §14.4). Expected bytes were observed on Pushpin 1.36.0.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol.headers import Headers
from pushpin_tx.protocol.items import HttpResponseFormat, parse_item
from pushpin_tx.protocol.respond import RespondError, merge_response, standard_reason


def published(**fields: Any) -> HttpResponseFormat:
    """The http-response format of a JSON publish with C{fields}."""
    fmt = parse_item({"channel": "c", "formats": {"http-response": fields}}).http_response
    assert fmt is not None
    return fmt


def merge(hold_headers: Headers, hold_body: bytes, **fields: Any) -> tuple[int, bytes, Headers, bytes]:
    """merge_response for a 200 OK hold."""
    return merge_response(200, b"OK", hold_headers, hold_body, published(**fields))


def test_reference_example_14_3() -> None:
    """§14.3: code 202 with published headers; hold headers the publish names are replaced and go after the rest."""
    hold = [(b"Content-Type", b"text/plain"), (b"X-Orig", b"1")]
    result = merge(hold, b"timeout body\n", code=202, headers={"Content-Type": "application/json", "X-Pub": "p"}, body='{"x":1}\n')
    assert result == (
        202,
        b"Accepted",
        [(b"X-Orig", b"1"), (b"Content-Type", b"application/json"), (b"X-Pub", b"p")],
        b'{"x":1}\n',
    )


def test_reference_example_14_4_expose_headers_quirk() -> None:
    """§14.4: names in Grip-Expose-Headers are removed from the merged headers, even published ones."""
    hold = [(b"Content-Type", b"text/plain"), (b"X-A", b"a"), (b"X-B", b"b"), (b"X-C", b"c")]
    result = merge(hold, b"body\n", headers={"Grip-Expose-Headers": "X-A, X-B", "X-D": "d"}, body="p\n")
    assert result == (200, b"OK", [(b"Content-Type", b"text/plain"), (b"X-C", b"c"), (b"X-D", b"d")], b"p\n")


def test_expose_headers_remove_published_headers_too() -> None:
    """§6.1: Grip-Expose-Headers: X-A, X-D with a published X-D lets neither X-A nor X-D through."""
    hold = [(b"X-A", b"a"), (b"X-B", b"b")]
    _, _, headers, _ = merge(hold, b"", headers=[["Grip-Expose-Headers", "x-a, X-D"], ["X-D", "d"]], body="")
    assert headers == [(b"X-B", b"b")]


def test_code_defaults_to_200_not_the_hold_status() -> None:
    """§14.4: a publish without code answers 200 OK even when the hold's Grip-Status was 201."""
    code, reason, _, _ = merge_response(201, b"Custom Reason", [], b"body\n", published(body="x"))
    assert (code, reason) == (200, b"OK")


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"code": 299}, (299, b"Undefined Reason")),
        ({"code": 0}, (0, b"Undefined Reason")),
        ({"code": 418}, (418, b"Undefined Reason")),
        ({"code": 202}, (202, b"Accepted")),
        ({"code": 404, "reason": "Gone Fishing"}, (404, b"Gone Fishing")),
        ({"code": 200, "reason": ""}, (200, b"OK")),
    ],
)
def test_status_line(fields: dict[str, Any], status: tuple[int, bytes]) -> None:
    """The reason is the published one, or Pushpin's standard phrase ("Undefined Reason" when it has none)."""
    code, reason, _, _ = merge([], b"", body="", **fields)
    assert (code, reason) == status


def test_standard_reason() -> None:
    """standard_reason gives Pushpin's phrases."""
    assert standard_reason(200) == b"OK"
    assert standard_reason(299) == b"Undefined Reason"


def test_observed_header_order() -> None:
    """§6.1: hold Content-Type/X-Orig + published Content-Type/X-Pub give X-Orig, Content-Type, X-Pub."""
    hold = [(b"Content-Type", b"text/plain"), (b"X-Orig", b"1")]
    _, _, headers, _ = merge(hold, b"", headers={"Content-Type": "application/json", "X-Pub": "p"}, body="")
    assert headers == [(b"X-Orig", b"1"), (b"Content-Type", b"application/json"), (b"X-Pub", b"p")]


def test_replacement_is_case_insensitive_and_drops_every_repeat() -> None:
    """A published header replaces all hold headers of that name, whatever their case."""
    hold = [(b"x-a", b"1"), (b"Keep", b"k"), (b"X-A", b"2")]
    _, _, headers, _ = merge(hold, b"", headers=[["X-a", "new"], ["X-a", "new2"]], body="")
    assert headers == [(b"Keep", b"k"), (b"X-a", b"new"), (b"X-a", b"new2")]


def test_content_length_is_left_to_the_caller() -> None:
    """Content-Length from the hold or the publish is never returned."""
    hold = [(b"Content-Length", b"13"), (b"X", b"1")]
    _, _, headers, _ = merge(hold, b"", headers={"content-length": "99"}, body="abc")
    assert headers == [(b"X", b"1")]


PATCHES: list[tuple[bytes, list[Any], bytes]] = [
    # the §6.1 example; no trailing newline in, none out
    (b'{"a": 1, "b": [1,2]}', [{"op": "replace", "path": "/a", "value": 2}, {"op": "add", "path": "/b/-", "value": 3}],
     b'{"a":2,"b":[1,2,3]}'),
    # the hold body's final "\n" or "\r\n" is kept
    (b'{"a": 1, "b": [1,2]}\r\n', [{"op": "replace", "path": "/a", "value": 2}], b'{"a":2,"b":[1,2]}\r\n'),
    (b'[1, {"x": 2}]\n', [{"op": "add", "path": "/0", "value": 1.5}], b'[1.5,{"x":2}]\n'),  # add at an index replaces
    (b'{"b": 1, "a": 2}', [], b'{"a":2,"b":1}'),  # keys sorted
    (b'{"a":1,"b":[1,2]}', [{"op": "add", "path": "/", "value": {"q": 1}}], b'{"q":1}'),  # "/" is the root
    (b'{"a":1,"b":[1,2]}', [{"op": "replace", "path": "/", "value": [5]}], b"[5]"),
    (b'{"a":1,"b":[1,2]}', [{"op": "add", "path": "/b/+0", "value": 9}], b'{"a":1,"b":[9,2]}'),
    (b'{"a":1,"b":[1,2]}', [{"op": "add", "path": "/b/ 1", "value": 9}], b'{"a":1,"b":[1,9]}'),
    (b'{"a":1,"b":[1,2]}', [{"op": "remove", "path": "/b/0"}], b'{"a":1,"b":[2]}'),
    (b'{"a":1,"b":[1,2]}', [{"op": "move", "from": "/b/0", "path": "/b/-"}], b'{"a":1,"b":[2,1]}'),
    (b'{"a":1,"b":[1,2]}', [{"op": "move", "from": "/b", "path": "/"}], b"[1,2]"),
    (b'{"a":1,"b":[1,2]}', [{"op": "move", "from": "/", "path": "/x"}], b'{"a":1,"b":[1,2],"x":{"a":1,"b":[1,2]}}'),
    (b'{"a":1,"b":[1,2]}', [{"op": "copy", "from": "/", "path": "/x"}], b'{"a":1,"b":[1,2],"x":{"a":1,"b":[1,2]}}'),
    (b'{"a":1,"b":[1,2]}', [{"op": "move", "from": "/a", "path": "/a"}], b'{"a":1,"b":[1,2]}'),
    (b'{"n":1,"o":{"x":1}}', [{"op": "copy", "from": "/o", "path": "/p"}], b'{"n":1,"o":{"x":1},"p":{"x":1}}'),
    (b'{"n":1}', [{"op": "move", "from": "/n", "path": "/m"}], b'{"m":1}'),
    (b'{"a":1}', [{"op": "add", "path": "/~1x~0", "value": 1}], b'{"/x~":1,"a":1}'),
    (b'{"l":[1]}', [{"op": "add", "path": "/l/-", "value": {"k": [True, None, "s", 1.5]}}], b'{"l":[1,{"k":[true,null,"s",1.5]}]}'),
    (b'{"b":[1,2]}', [{"op": "add", "path": "/b/1", "value": [7]}, {"op": "add", "path": "/b/1/-", "value": 8}], b'{"b":[1,[7,8]]}'),
    (b'{"a":1}', [{"op": "add", "path": "/l", "value": 2, "extra": 1}], b'{"a":1,"l":2}'),
    # test op: numbers, booleans and numeric strings compare as rounded integers
    (b'{"a":1,"b":[1,2]}', [{"op": "test", "path": "/", "value": {"b": [1, 2], "a": 1}}], b'{"a":1,"b":[1,2]}'),
    (b'{"a":1}', [{"op": "test", "path": "/a", "value": 1.4}], b'{"a":1}'),
    (b'{"a":1}', [{"op": "test", "path": "/a", "value": "1"}], b'{"a":1}'),
    (b'{"a":1}', [{"op": "test", "path": "/a", "value": True}], b'{"a":1}'),
    (b'{"a":1}', [{"op": "test", "path": "/a", "value": 4294967297}], b'{"a":1}'),
    (b'{"s":"abc"}', [{"op": "test", "path": "/s", "value": 0}], b'{"s":"abc"}'),
    (b'{"l":[1]}', [{"op": "test", "path": "/l", "value": [1.2]}], b'{"l":[1]}'),
    (b'{"o":{"x":1}}', [{"op": "test", "path": "/o", "value": {"x": True}}], b'{"o":{"x":1}}'),
]


@pytest.mark.parametrize(("hold_body", "patch", "body"), PATCHES)
def test_body_patch(hold_body: bytes, patch: list[Any], body: bytes) -> None:
    """body-patch is applied to the hold's JSON body with Pushpin's own JSON Patch rules (observed results)."""
    _, _, _, got = merge([], hold_body, **{"body-patch": patch})
    assert got == body


PATCH_FAILURES: list[tuple[bytes, list[Any]]] = [
    (b"not json\n", []),
    (b"", []),
    (b"5", []),
    (b'{"a":1}', [{"op": "replace", "path": "", "value": 5}]),  # "" is not a pointer here
    (b'{"a":1}', [{"op": "replace", "path": "", "value": [5]}]),
    (b'{"a":1}', [{"op": "replace", "path": "/", "value": 5}]),  # result must be an object or array
    (b'{"a":1}', [{"op": "remove", "path": "/"}]),
    (b'{"a":1}', [{"op": "bogus", "path": "/a"}]),
    (b'{"a":1}', [{"op": "test", "path": "/a", "value": 2}]),
    (b'{"n":1}', [{"op": "test", "path": "/n", "value": 1.6}]),
    (b'{"a":null}', [{"op": "test", "path": "/a", "value": None}]),  # null never equals null
    (b'{"a":null}', [{"op": "test", "path": "/a", "value": 0}]),
    (b'{"o":{"x":1}}', [{"op": "test", "path": "/o", "value": [1]}]),
    (b'{"a":1}', [{"op": "test", "path": "/zz", "value": 0}]),
    (b'{"a":1}', [5]),
    (b'{"l":[1]}', [{"op": "add", "path": "/l/1", "value": 5}]),  # an index must exist
    (b'{"l":[1]}', [{"op": "add", "path": "/l/01", "value": 5}]),
    (b'{"l":[1]}', [{"op": "add", "path": "/l/-1", "value": 5}]),
    (b'{"o":{"x":1}}', [{"op": "add", "path": "/o/x/y", "value": 5}]),
    (b'{"a":1}', [{"op": "add", "path": "/zz/y", "value": 5}]),
    (b'{"a":1}', [{"op": "add", "path": "//x", "value": 9}]),
    (b'{"a":1}', [{"op": "add", "path": "/a/", "value": 9}]),
    (b'{"a":1}', [{"op": "add", "path": "a", "value": 1}]),
    (b'{"a":1}', [{"op": "remove", "path": "/zz"}]),
    (b'{"a":1}', [{"op": "replace", "path": "/zz", "value": 1}]),
    (b'{"l":[1]}', [{"op": "replace", "path": "/l/5", "value": 1}]),
    (b'{"l":[1]}', [{"op": "replace", "path": "/l/-", "value": 1}]),
    (b'{"l":[1]}', [{"op": "remove", "path": "/l/-"}]),
    (b'{"l":[1]}', [{"op": "test", "path": "/l/-", "value": 1}]),
    (b'{"l":[1]}', [{"op": "add", "path": "/l/-/0", "value": 1}]),
    (b'{"l":[{"x":1}]}', [{"op": "add", "path": "/l/0/x/y", "value": 2}]),
    (b'{"o":{"x":1}}', [{"op": "move", "from": "/o", "path": "/o/x"}]),
    (b'{"b":[1,2]}', [{"op": "move", "from": "/b/0", "path": "/b/1"}]),
    (b'{"a":1}', [{"op": "move", "from": "/a", "path": "/"}]),
    (b'{"a":1}', [{"op": "copy", "from": "/zz", "path": "/x"}]),
    (b'{"l":[1]}', [{"op": "copy", "from": "/l/-", "path": "/x"}]),
    (b'{"a":1}', [{"op": "add", "path": "/x"}]),
    (b'{"a":1}', [{"path": "/x", "value": 1}]),
    (b'{"a":1}', [{"op": "add", "value": 1}]),
    (b'{"a":1}', [{"op": "add", "path": 5, "value": 1}]),
    (b'{"a":1}', [{"op": "move", "path": "/b"}]),
]


@pytest.mark.parametrize(("hold_body", "patch"), PATCH_FAILURES)
def test_body_patch_failures(hold_body: bytes, patch: list[Any]) -> None:
    """A non-JSON hold body or a failing patch raises RespondError (the hold answers 502, as observed)."""
    with pytest.raises(RespondError):
        merge([], hold_body, **{"body-patch": patch})


def test_patch_values_are_not_shared_between_deliveries() -> None:
    """Applying the same published patch to several holds never alters the publish's own values."""
    fmt = published(**{"body-patch": [{"op": "add", "path": "/x", "value": {"k": []}}, {"op": "add", "path": "/x/k/-", "value": 1}]})
    for _ in range(2):
        assert merge_response(200, b"OK", [], b"{}", fmt)[3] == b'{"x":{"k":[1]}}'
    assert fmt.body_patch is not None and fmt.body_patch[0]["value"] == {"k": []}


NUMBERS = [
    ("1.0", "1"), ("1e4", "10000"), ("1e5", "100000"), ("1e17", "100000000000000000"),
    ("12345678901234567890", "12345678901234567000"), ("1e20", "1e+20"), ("1e21", "1e+21"), ("1e22", "1e+22"),
    ("1234567890123456789012", "1234567890123456800000"), ("12345e20", "1.2345e+24"), ("1.5e300", "1.5e+300"),
    ("1.7976931348623157e308", "1.7976931348623157e+308"), ("5e-324", "5e-324"), ("0.1", "0.1"), ("1e-7", "1e-07"),
    ("0.0001", "0.0001"), ("1e-5", "1e-05"), ("0.00012", "0.00012"), ("1.25e-5", "1.25e-05"), ("1.2345e-4", "0.00012345"),
    ("123456.789", "123456.789"), ("100000.5", "100000.5"), ("-1e5", "-100000"), ("-0.00001", "-1e-05"), ("-0", "0"),
    ("-0.0", "0"), ("9007199254740992", "9007199254740992"), ("2.5e-10", "2.5e-10"), ("0.5", "0.5"),
]


@pytest.mark.parametrize(("number", "written"), NUMBERS)
def test_numbers_are_written_like_qt(number: str, written: str) -> None:
    """A patched body's numbers are rewritten in Qt's shortest form (observed on 1.36.0)."""
    _, _, _, body = merge([], b"[" + number.encode() + b"]", **{"body-patch": []})
    assert body == b"[" + written.encode() + b"]"


def test_strings_are_written_like_qt() -> None:
    """Control characters are escaped, non-ASCII is raw UTF-8, keys sort by UTF-16 code units."""
    hold = '{"f": "\\u00e9\\u0001/\\u007f\\t\\"\\\\\\u2028\\ud83d\\ude00", "\\uffff": 4, "\\ud83d\\ude00": 3, "Z": 2}'.encode()
    _, _, _, body = merge([], hold, **{"body-patch": []})
    assert body == '{"Z":2,"f":"é\\u0001/\x7f\\t\\"\\\\\u2028😀","😀":3,"\uffff":4}'.encode()
    _, _, _, body = merge([], b'{"c": "\\b\\f\\n\\r\\u001b\\u0000<>&\'"}', **{"body-patch": []})
    assert body == b'{"c":"\\b\\f\\n\\r\\u001b\\u0000<>&\'"}'


def test_unpaired_surrogates_are_written_as_escapes() -> None:
    """A lone surrogate in the hold body comes out as a \\u escape, as Qt writes it."""
    _, _, _, body = merge([], b'["\\ud800x"]', **{"body-patch": []})
    assert body == b'["\\ud800x"]'


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=15,
)
_ops = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
         "path": st.sampled_from(["/", "/a", "/a/0", "/a/-", "/b", "/b/c", "", "//"])},
        optional={"value": _json, "from": st.sampled_from(["/", "/a", "/a/0", "/b"])},
    ),
    max_size=4,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b"]), _json), _ops)
def test_random_patches_only_raise_respond_error(document: dict[str, Any], ops: list[Any]) -> None:
    """Any patch on any JSON object either produces a body that is valid JSON or raises RespondError."""
    try:
        _, _, _, body = merge([], json.dumps(document).encode(), **{"body-patch": ops})
    except RespondError:
        return
    json.loads(body)
