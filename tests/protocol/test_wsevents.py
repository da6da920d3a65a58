"""
Tests for L{pushpin_tx.protocol.wsevents}: the C{application/websocket-events} codec of
WebSocket-over-HTTP (reference §8.2, §14.5), its interoperation with the C{gripcontrol}
library origins use, and request batching. Cases marked "observed" were checked against the
real Pushpin 1.36.0 on loopback.
"""

from __future__ import annotations

import pytest
from gripcontrol import decode_websocket_events, encode_websocket_events
from gripcontrol.websocketevent import WebSocketEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol.wsevents import (
    BATCH_CONTENT_MAX,
    EVENT_TYPES,
    EventBatcher,
    WsEvent,
    WsEventsError,
    close_content,
    decode_events,
    encode_event,
    encode_events,
    parse_close_content,
)

# One row per event type, as Pushpin writes it (reference §8.2 and §14.5).
WIRE = [
    (WsEvent("OPEN"), b"OPEN\r\n"),
    (WsEvent("TEXT", b"hello"), b"TEXT 5\r\nhello\r\n"),
    (WsEvent("BINARY", b"\x01\x02\x03"), b"BINARY 3\r\n\x01\x02\x03\r\n"),
    (WsEvent("PING"), b"PING\r\n"),
    (WsEvent("PING", b"are you there"), b"PING d\r\nare you there\r\n"),
    (WsEvent("PONG", b"clientpong"), b"PONG a\r\nclientpong\r\n"),
    (WsEvent("PONG"), b"PONG\r\n"),
    (WsEvent("CLOSE", b"\x03\xe8"), b"CLOSE 2\r\n\x03\xe8\r\n"),
    (WsEvent("CLOSE"), b"CLOSE\r\n"),
    (WsEvent("DISCONNECT"), b"DISCONNECT\r\n"),
    (WsEvent("TEXT", b"\r\n" * 8), b"TEXT 10\r\n" + b"\r\n" * 8 + b"\r\n"),
]


@pytest.mark.parametrize(("event", "wire"), WIRE)
def test_encode_each_event_type(event: WsEvent, wire: bytes) -> None:
    """Every event type is written as Pushpin writes it, with a lowercase hex length."""
    assert encode_event(event) == wire


@pytest.mark.parametrize(("event", "wire"), WIRE)
def test_decode_each_event_type(event: WsEvent, wire: bytes) -> None:
    """Every event type Pushpin writes reads back as the same event."""
    assert decode_events(wire) == [event]


@pytest.mark.parametrize("kind", ["TEXT", "BINARY", "PING", "PONG"])
def test_empty_message_is_written_bare(kind: str) -> None:
    """An empty message goes out without a length, as Pushpin sends it (observed: C{TEXT\\r\\n})."""
    assert encode_event(WsEvent(kind)) == kind.encode() + b"\r\n"


@pytest.mark.parametrize("kind", ["TEXT", "BINARY"])
def test_zero_length_and_bare_both_mean_empty(kind: str) -> None:
    """C{TEXT 0} with empty content and a bare C{TEXT} are both an empty message."""
    zero = kind.encode() + b" 0\r\n\r\n"
    bare = kind.encode() + b"\r\n"
    assert decode_events(zero) == decode_events(bare) == [WsEvent(kind)]


def test_observed_open_response_body() -> None:
    """The OPEN response of reference §14.5 decodes to OPEN and three text messages."""
    body = (
        b'OPEN\r\nTEXT 25\r\nc:{"type":"subscribe","channel":"wc"}\r\n'
        b"TEXT 9\r\nm:welcome\r\nTEXT a\r\nunprefixed\r\n"
    )
    assert decode_events(body) == [
        WsEvent("OPEN"),
        WsEvent("TEXT", b'c:{"type":"subscribe","channel":"wc"}'),
        WsEvent("TEXT", b"m:welcome"),
        WsEvent("TEXT", b"unprefixed"),
    ]
    assert encode_events(decode_events(body)) == body


def test_encode_events_concatenates_in_order() -> None:
    """A body is the events one after another; no events is an empty body."""
    body = encode_events([WsEvent("TEXT", b"hi"), WsEvent("CLOSE", b"\x03\xe8")])
    assert body == b"TEXT 2\r\nhi\r\nCLOSE 2\r\n\x03\xe8\r\n"
    assert encode_events([]) == b""
    assert decode_events(b"") == []


@pytest.mark.parametrize(
    ("length", "content"),
    [
        (b"a", b"0123456789"),
        (b"A", b"0123456789"),
        (b"0xA", b"0123456789"),
        (b"0Xa", b"0123456789"),
        (b"+b", b"abcdefghijk"),
        (b" +b ", b"abcdefghijk"),
        (b"\tc", b"abcdefghijkl"),
        (b"00000c", b"abcdefghijkl"),
        (b"0", b""),
        (b"0x0", b""),
    ],
)
def test_lengths_read_like_qt(length: bytes, content: bytes) -> None:
    """Lengths are hex in either case, with optional C{+}, C{0x} and surrounding blanks (observed)."""
    assert decode_events(b"TEXT " + length + b"\r\n" + content + b"\r\n") == [WsEvent("TEXT", content)]


def test_unknown_types_are_kept_for_the_caller_to_ignore() -> None:
    """Unknown and lower-case types decode (Pushpin ignores them, observed) and are marked unknown."""
    events = decode_events(b"FOO 3\r\nxyz\r\ntext 2\r\nlo\r\nBAR\r\n\r\nTEXT 1\r\nx\r\n")
    assert events == [
        WsEvent("FOO", b"xyz"),
        WsEvent("text", b"lo"),
        WsEvent("BAR"),
        WsEvent(""),
        WsEvent("TEXT", b"x"),
    ]
    assert [e.known for e in events] == [False, False, False, False, True]
    assert all(WsEvent(kind).known for kind in EVENT_TYPES)


def test_non_ascii_type_survives_decoding() -> None:
    """A type of arbitrary bytes is kept byte for byte (latin-1), not refused."""
    (event,) = decode_events(b"\xff\x00T\r\n")
    assert event.type.encode("latin-1") == b"\xff\x00T"
    assert not event.known


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"OPEN", "event 1 at byte 0: type line is not terminated by CRLF"),
        (b"OPEN\r\nTEXT", "event 2 at byte 6: type line is not terminated by CRLF"),
        (b"OPEN\n", "type line is not terminated by CRLF"),
        (b"TEXT 5\r\nhel", "content of 5 bytes is truncated (3 available)"),
        (b"TEXT 5\r\nhello", "content of 5 bytes is not followed by CRLF"),
        (b"TEXT 5\r\nhello\r", "content of 5 bytes is not followed by CRLF"),
        (b"TEXT 2\r\nhiXXTEXT 1\r\na\r\n", "content of 2 bytes is not followed by CRLF"),
        (b"TEXT 4\r\nhi\r\n", "content of 4 bytes is not followed by CRLF"),
        (b"TEXT 6\r\nhi\r\n", "content of 6 bytes is truncated (4 available)"),
        (b"TEXT zz\r\nhi\r\n", "bad content length b'zz'"),
        (b"TEXT -2\r\nhi\r\n", "bad content length b'-2'"),
        (b"TEXT \r\n\r\n", "bad content length b''"),
        (b"TEXT   \r\n\r\n", "bad content length b'  '"),
        (b"TEXT 0x\r\n\r\n", "bad content length b'0x'"),
        (b"TEXT 2 2\r\nhi\r\n", "bad content length b'2 2'"),
        (b"TEXT 1g\r\nhi\r\n", "bad content length b'1g'"),
        (b"TEXT 80000000\r\n", "content length b'80000000' is out of range"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    """Broken framing, truncation, bad lengths raise WsEventsError saying what and where."""
    with pytest.raises(WsEventsError) as info:
        decode_events(body)
    assert reason in str(info.value)


def test_error_names_the_failing_event_and_offset() -> None:
    """The message locates the bad event, counting from 1, by byte offset."""
    with pytest.raises(WsEventsError, match=r"^event 3 at byte 17: "):
        decode_events(b"OPEN\r\nTEXT 1\r\nx\r\nTEXT q\r\n")


def test_decode_errors_are_value_errors() -> None:
    """WsEventsError is a ValueError, so generic callers can catch it."""
    assert issubclass(WsEventsError, ValueError)


@pytest.mark.parametrize("kind", ["", "TE XT", "TEXT\r", "TÉXT", "\x00"])
def test_unencodable_types_are_refused(kind: str) -> None:
    """A type that would not survive the round trip cannot be encoded."""
    with pytest.raises(WsEventsError, match="cannot encode event type"):
        encode_event(WsEvent(kind))


def test_events_are_frozen_values() -> None:
    """Events compare by value and cannot be changed."""
    event = WsEvent("TEXT", b"a")
    assert event == WsEvent("TEXT", b"a")
    assert hash(event) == hash(WsEvent("TEXT", b"a"))
    with pytest.raises(AttributeError):
        event.type = "BINARY"  # type: ignore[misc]


# --- close payloads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "content"),
    [
        (1000, b"", b"\x03\xe8"),
        (4001, b"bye", b"\x0f\xa1bye"),
        (0, b"", b"\x00\x00"),
        (65535, "é".encode(), b"\xff\xff\xc3\xa9"),
        (None, b"", b""),
    ],
)
def test_close_content_both_ways(code: int | None, reason: bytes, content: bytes) -> None:
    """A close code and reason become 2 big-endian bytes plus the reason, and back."""
    assert close_content(code, reason) == content
    assert parse_close_content(content) == (code, reason)


def test_close_without_code_is_a_bare_close_event() -> None:
    """No code means empty content, so the event is written as a bare CLOSE (observed)."""
    assert encode_event(WsEvent("CLOSE", close_content(None))) == b"CLOSE\r\n"


@pytest.mark.parametrize(("code", "reason"), [(-1, b""), (65536, b""), (None, b"why")])
def test_close_content_refuses_what_a_close_frame_cannot_carry(code: int | None, reason: bytes) -> None:
    """A code outside 16 bits, or a reason without a code, is refused."""
    with pytest.raises(WsEventsError):
        close_content(code, reason)


def test_one_byte_close_content_is_refused() -> None:
    """A 1-byte close payload has no room for a code."""
    with pytest.raises(WsEventsError, match="1 byte"):
        parse_close_content(b"\x03")


# --- gripcontrol interoperation --------------------------------------------------------------


def test_gripcontrol_output_decodes() -> None:
    """Bodies written by gripcontrol's encode_websocket_events decode to the same events."""
    body = encode_websocket_events(
        [
            WebSocketEvent("OPEN"),
            WebSocketEvent("TEXT", b"m:hello"),
            WebSocketEvent("TEXT", "c:caf\u00e9"),
            WebSocketEvent("BINARY", b"\x00" * 300),
            WebSocketEvent("TEXT", b""),
            WebSocketEvent("PING"),
            WebSocketEvent("CLOSE", b"\x03\xe8"),
        ]
    )
    assert decode_events(body) == [
        WsEvent("OPEN"),
        WsEvent("TEXT", b"m:hello"),
        WsEvent("TEXT", "c:caf\u00e9".encode()),
        WsEvent("BINARY", b"\x00" * 300),
        WsEvent("TEXT"),
        WsEvent("PING"),
        WsEvent("CLOSE", b"\x03\xe8"),
    ]


def test_our_output_decodes_in_gripcontrol() -> None:
    """Bodies we write decode in gripcontrol; an empty message arrives with no content, as from Pushpin."""
    body = encode_events(
        [
            WsEvent("OPEN"),
            WsEvent("TEXT", b"hi"),
            WsEvent("BINARY", bytes(range(256))),
            WsEvent("TEXT"),
            WsEvent("PONG", b"p"),
            WsEvent("CLOSE", close_content(1001, b"going")),
            WsEvent("DISCONNECT"),
        ]
    )
    decoded = [(e.type, e.content) for e in decode_websocket_events(body)]
    assert decoded == [
        ("OPEN", None),
        ("TEXT", b"hi"),
        ("BINARY", bytes(range(256))),
        ("TEXT", None),
        ("PONG", b"p"),
        ("CLOSE", b"\x03\xe9going"),
        ("DISCONNECT", None),
    ]


_KNOWN = st.sampled_from(sorted(EVENT_TYPES))
_EVENTS = st.lists(st.builds(WsEvent, _KNOWN, st.binary(max_size=300)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(_EVENTS)
def test_roundtrip_through_gripcontrol_both_ways(events: list[WsEvent]) -> None:
    """Any event list survives us -> gripcontrol -> us, and gripcontrol -> us -> gripcontrol."""
    theirs = decode_websocket_events(encode_events(events))
    assert [WsEvent(e.type, e.content or b"") for e in theirs] == events
    body = encode_websocket_events([WebSocketEvent(e.type, e.content) for e in events])
    assert decode_events(body) == events
    again = decode_websocket_events(body)
    assert [(e.type, e.content) for e in again] == [(e.type, e.content) for e in events]


@settings(max_examples=300, deadline=None)
@given(_EVENTS)
def test_roundtrip(events: list[WsEvent]) -> None:
    """Decoding an encoded list gives the list back, and re-encoding gives the same bytes."""
    body = encode_events(events)
    assert decode_events(body) == events
    assert encode_events(decode_events(body)) == body


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_wsevents_error(body: bytes) -> None:
    """Arbitrary input never raises anything but WsEventsError."""
    try:
        events = decode_events(body)
    except WsEventsError:
        return
    assert all(isinstance(e, WsEvent) for e in events)


@settings(max_examples=300, deadline=None)
@given(_EVENTS, st.data())
def test_any_strict_prefix_of_a_body_is_refused_or_shorter(events: list[WsEvent], data: st.DataObject) -> None:
    """Cutting a body short never yields the full event list: it raises or holds fewer events."""
    body = encode_events(events)
    if not body:
        return
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    try:
        decoded = decode_events(body[:cut])
    except WsEventsError:
        return
    assert len(decoded) < len(events)
    assert decoded == events[: len(decoded)]


# --- batching --------------------------------------------------------------------------------


def batches(batcher: EventBatcher) -> list[list[WsEvent]]:
    out = []
    while batch := batcher.take_batch():
        out.append(batch)
    return out


def make(*events: WsEvent, **kwargs: object) -> EventBatcher:
    batcher = EventBatcher(**kwargs)  # type: ignore[arg-type]
    for event in events:
        batcher.push(event)
    return batcher


def test_messages_share_one_request() -> None:
    """Pending client messages go out together in one body, in order."""
    events = [WsEvent("TEXT", b"a"), WsEvent("BINARY", b"b"), WsEvent("PING"), WsEvent("PONG", b"p")]
    assert batches(make(*events)) == [events]


def test_nothing_pending_gives_an_empty_batch() -> None:
    """With nothing queued there is nothing to send."""
    batcher = EventBatcher()
    assert batcher.take_batch() == []
    assert len(batcher) == 0
    assert batcher.pending_content == 0


def test_byte_limit_cuts_after_the_crossing_message() -> None:
    """Messages are added until 200000 bytes have been added; the one crossing the limit is included."""
    big = WsEvent("BINARY", b"x" * 150_000)
    events = [big, big, big, WsEvent("TEXT", b"tail")]
    assert batches(make(*events)) == [[big, big], [big, WsEvent("TEXT", b"tail")]]


def test_exact_limit_starts_a_new_request() -> None:
    """Once exactly the limit has been added, the next message waits for the next request."""
    half = WsEvent("TEXT", b"y" * (BATCH_CONTENT_MAX // 2))
    assert batches(make(half, half, half)) == [[half, half], [half]]


def test_custom_limit() -> None:
    """The byte limit can be set."""
    a = WsEvent("TEXT", b"aaaa")
    assert batches(make(a, a, a, max_content=5)) == [[a, a], [a]]


def test_one_event_per_request() -> None:
    """With one_event every request carries a single event, CLOSE included."""
    events = [WsEvent("TEXT", b"1"), WsEvent("TEXT", b"2"), WsEvent("CLOSE", b"\x03\xe8")]
    assert batches(make(*events, one_event=True)) == [[e] for e in events]


def test_open_and_disconnect_travel_alone() -> None:
    """OPEN and DISCONNECT are never batched with anything else."""
    t = WsEvent("TEXT", b"t")
    events = [WsEvent("OPEN"), t, t, WsEvent("DISCONNECT"), t]
    assert batches(make(*events)) == [[WsEvent("OPEN")], [t, t], [WsEvent("DISCONNECT")], [t]]


def test_close_ends_the_batch_even_past_the_byte_limit() -> None:
    """A CLOSE joins the batch even when the limit is reached, and nothing follows it."""
    big = WsEvent("BINARY", b"z" * BATCH_CONTENT_MAX)
    close = WsEvent("CLOSE", b"\x03\xe8")
    after = WsEvent("TEXT", b"late")
    assert batches(make(big, close, after)) == [[big, close], [after]]


def test_pending_counts_message_bytes() -> None:
    """The batcher reports pending events and pending message bytes, which shrink as batches go."""
    batcher = make(WsEvent("TEXT", b"abc"), WsEvent("CLOSE", b"\x03\xe8"), WsEvent("BINARY", b"de"))
    assert len(batcher) == 3
    assert batcher.pending_content == 5
    assert batcher.take_batch() == [WsEvent("TEXT", b"abc"), WsEvent("CLOSE", b"\x03\xe8")]
    assert (len(batcher), batcher.pending_content) == (1, 2)
    assert batcher.take_batch() == [WsEvent("BINARY", b"de")]
    assert (len(batcher), batcher.pending_content) == (0, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.builds(WsEvent, st.sampled_from(["TEXT", "BINARY", "PING", "CLOSE", "OPEN"]), st.binary(max_size=40)),
        max_size=30,
    ),
    st.integers(min_value=1, max_value=100),
    st.booleans(),
)
def test_batches_preserve_every_event_in_order(events: list[WsEvent], limit: int, one_event: bool) -> None:
    """Batching loses, duplicates and reorders nothing, and every batch obeys the rules."""
    out = batches(make(*events, max_content=limit, one_event=one_event))
    assert [e for batch in out for e in batch] == events
    for batch in out:
        assert batch
        if one_event or batch[0].type == "OPEN":
            assert len(batch) == 1
        assert all(e.type != "CLOSE" for e in batch[:-1])
        messages = [e for e in batch if e.type not in ("OPEN", "CLOSE")]
        assert sum(len(e.content) for e in messages[:-1]) < limit
