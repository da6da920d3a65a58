"""
Tests for L{pushpin_tx.protocol.tnetstring}: the tnetstring codec used on Pushpin's ZMQ sockets (§6.3).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol import tnetstring
from pushpin_tx.protocol.tnetstring import TnetstringError, dumps, loads, pop

ROUND_TRIPS = [
    (b"", b"0:,"),
    (b"hello", b"5:hello,"),
    (b"a:b,c}", b"6:a:b,c},"),
    (0, b"1:0#"),
    (-42, b"3:-42#"),
    (2**70, b"22:1180591620717411303424#"),
    (1.5, b"3:1.5^"),
    (-0.25, b"5:-0.25^"),
    (1e100, b"6:1e+100^"),
    (math.inf, b"3:inf^"),
    (True, b"4:true!"),
    (False, b"5:false!"),
    (None, b"0:~"),
    ([], b"0:]"),
    ({}, b"0:}"),
    ([1, b"x", None], b"11:1:1#1:x,0:~]"),
    ({b"k": [True, {b"n": b""}]}, b"25:1:k,17:4:true!7:1:n,0:,}]}"),
]


@pytest.mark.parametrize(("value", "encoded"), ROUND_TRIPS)
def test_encoding_table(value: object, encoded: bytes) -> None:
    """Each kind of value has the documented SIZE:DATA+TAG encoding and decodes back to itself."""
    assert dumps(value) == encoded
    assert loads(encoded) == value


def test_text_is_encoded_as_utf8_and_decodes_as_bytes() -> None:
    """A str is written as its UTF-8 bytes (dict keys too); reading gives bytes back."""
    assert dumps("é") == b"2:\xc3\xa9,"
    assert loads(dumps({"clé": "v"})) == {"clé".encode(): b"v"}


def test_tuples_are_lists() -> None:
    """A tuple is written as a list."""
    assert dumps((1, 2)) == dumps([1, 2])


@pytest.mark.parametrize("value", [object(), {1: b"x"}, 1j, {b"k": set()}])
def test_unsupported_types_raise_type_error(value: object) -> None:
    """Values with no tnetstring form are refused with TypeError."""
    with pytest.raises(TypeError):
        dumps(value)


def test_reference_example_decodes() -> None:
    """The §6.3 publish frame decodes to the item it describes."""
    frame = b"68:7:channel,4:news,7:formats,37:11:http-stream,18:7:content,5:tick\n,}}}"
    assert loads(frame) == {b"channel": b"news", b"formats": {b"http-stream": {b"content": b"tick\n"}}}


def test_pop_returns_the_rest() -> None:
    """pop() decodes the first value and hands back whatever follows it."""
    assert pop(b"1:a,2:bc,tail") == (b"a", b"2:bc,tail")
    assert pop(b"0:~") == (None, b"")


def test_duplicate_dict_keys_keep_the_last_value() -> None:
    """A repeated dict key takes the last value."""
    assert loads(b"16:1:k,1:1#1:k,1:2#}") == {b"k": 2}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b":",
        b"5",
        b"5:abc,",
        b"3:abc",
        b"3:abc?",
        b"x:abc,",
        b"-1:,",
        b"+1:a,",
        b" 1:a,",
        b"1234567890:a,",
        b"1:a,junk",
        b"1:x#",
        b"3:1.5#",
        b"0:#",
        b"2:1x^",
        b"0:^",
        b"4:True!",
        b"1:x~",
        b"4:1:a,}",
        b"5:1:1#0:~}",
        b"4:1:a]extra",
        b"3:1:a]",
        b"\xff",
    ],
)
def test_malformed_input_raises_tnetstring_error(data: bytes) -> None:
    """Truncated data, bad sizes, bad tags, bad scalars, bad dicts and trailing bytes are refused."""
    with pytest.raises(TnetstringError):
        loads(data)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    """Lists nested past the depth limit raise TnetstringError instead of exhausting the stack."""
    data = b"0:]"
    for _ in range(tnetstring.MAX_DEPTH + 5):
        data = b"%d:%s]" % (len(data), data)
    with pytest.raises(TnetstringError):
        loads(data)


def test_non_bytes_input_is_refused() -> None:
    """Only byte strings can be decoded; bytearray and memoryview are accepted too."""
    with pytest.raises(TnetstringError):
        loads("1:a,")  # type: ignore[arg-type]
    assert loads(bytearray(b"1:a,")) == b"a"
    assert loads(memoryview(b"1:a,")) == b"a"


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.binary(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_round_trip_property(value: object) -> None:
    """Whatever dumps() writes, loads() reads back equal."""
    assert loads(dumps(value)) == value


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_random_bytes_only_raise_tnetstring_error(data: bytes) -> None:
    """Arbitrary bytes either decode or raise TnetstringError, never anything else."""
    try:
        loads(data)
        pop(data)
    except TnetstringError:
        pass


@settings(max_examples=1000, deadline=None)
@given(_values, st.data())
def test_fuzz_mutated_encodings_only_raise_tnetstring_error(value: object, data: st.DataObject) -> None:
    """Valid encodings with a byte changed, removed or inserted never raise anything but TnetstringError."""
    encoded = bytearray(dumps(value))
    at = data.draw(st.integers(0, len(encoded)))
    how = data.draw(st.sampled_from(["flip", "drop", "insert"]))
    byte = data.draw(st.sampled_from(b":,#^!~}]0123456789-x"))
    if how == "flip" and at < len(encoded):
        encoded[at] = byte
    elif how == "drop" and at < len(encoded):
        del encoded[at]
    else:
        encoded.insert(at, byte)
    try:
        loads(bytes(encoded))
    except TnetstringError:
        pass
