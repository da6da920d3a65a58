"""The built-in test origin's query parsing: the same pairs as urllib's parse_qsl, for any query."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol.testorigin import query_pairs, split_target
from pushpin_tx.protocol.testorigin import test_response as answer


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab=&;+%2 ", max_size=30), st.booleans())
def test_query_pairs_are_exactly_parse_qsl(query: str, keep_blank: bool) -> None:
    """Any query, with or without escapes, blanks or bare names, splits as parse_qsl splits it."""
    assert query_pairs(query, keep_blank) == parse_qsl(query, keep_blank_values=keep_blank)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="/ab?#;:=&%[]\t\r\n .", max_size=24))
def test_split_target_is_exactly_urlsplits_path_and_query(target: str) -> None:
    """Any target, origin-form or not, splits into the path and query urlsplit gives (or raises as it does)."""
    try:
        parts = urlsplit(target)
    except ValueError:
        with pytest.raises(ValueError):
            split_target(target)
        return
    assert split_target(target) == (parts.path, parts.query)


@pytest.mark.parametrize(
    "path, channels",
    [
        (b"/stream?channel=a&channel=b&channel=a", b"a, b"),
        (b"/stream?channel=&x", b""),
        (b"/stream?channel=a%20b", b"a b"),
        (b"/stream", b"test"),
    ],
)
def test_stream_channels_come_from_the_query(path: bytes, channels: bytes) -> None:
    """/stream holds on each distinct channel= value, in order (blank values kept), default test."""
    code, _, headers, body = answer(path)
    assert code == 200 and body == b"[stream opened]\n"
    assert dict(headers)[b"Grip-Channel"] == channels
