"""
Tests for L{pushpin_tx.protocol.wscontrol}: GRIP WebSocket control messages, the C{grip} extension
header and the sorting of origin messages (reference §8.1, §8.3). Cases marked "observed"
were checked against the real Pushpin 1.36.0 over WebSocket-over-HTTP on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from gripcontrol import websocket_control_message
from gripcontrol.websocketcontext import WebSocketContext
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol.wscontrol import (
    DEFAULT_MESSAGE_PREFIX,
    KEEP_ALIVE_TIMEOUT_DEFAULT,
    SEND_DELAYED_TIMEOUT_DEFAULT,
    ControlMessage,
    Detach,
    FlushDelayed,
    KeepAlive,
    SendDelayed,
    Session,
    SetMeta,
    Subscribe,
    Unsubscribe,
    WsControlError,
    parse_control_message,
    parse_grip_extension,
    split_grip_text,
)


def parse(doc: Any) -> ControlMessage:
    return parse_control_message(doc if isinstance(doc, bytes) else json.dumps(doc).encode())


# --- each control type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"type": "subscribe", "channel": "news"}, Subscribe("news")),
        (
            {"type": "subscribe", "channel": "n", "filters": ["skip-self", "var-subst"]},
            Subscribe("n", ("skip-self", "var-subst")),
        ),
        ({"type": "subscribe", "channel": "n", "filters": []}, Subscribe("n")),
        ({"type": "unsubscribe", "channel": "news"}, Unsubscribe("news")),
        ({"type": "unsubscribe", "channel": "news", "filters": 5}, Unsubscribe("news")),
        ({"type": "detach"}, Detach()),
        ({"type": "detach", "extra": [1, 2]}, Detach()),
        ({"type": "session", "id": "s1"}, Session("s1")),
        ({"type": "session"}, Session(None)),
        ({"type": "session", "id": ""}, Session(None)),
        ({"type": "set-meta", "name": "user", "value": "alice"}, SetMeta("user", "alice")),
        ({"type": "set-meta", "name": "user", "value": ""}, SetMeta("user", "")),
        ({"type": "set-meta", "name": "user"}, SetMeta("user", None)),
        ({"type": "flush-delayed"}, FlushDelayed()),
        ({"type": "subscribe", "channel": "caf\u00e9 \u2603"}, Subscribe("caf\u00e9 \u2603")),
    ],
)
def test_simple_control_messages(doc: dict[str, Any], expected: ControlMessage) -> None:
    """Each simple control type parses to its value; unrelated extra keys are ignored."""
    assert parse(doc) == expected


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"type": "keep-alive", "content": "ka"}, KeepAlive(b"ka", "text", KEEP_ALIVE_TIMEOUT_DEFAULT, "idle")),
        (
            {"type": "keep-alive", "content": "ka", "timeout": 30, "mode": "interval"},
            KeepAlive(b"ka", "text", 30, "interval"),
        ),
        (
            {"type": "keep-alive", "content-bin": "AAEC", "message-type": "binary"},
            KeepAlive(b"\x00\x01\x02", "binary", 55, "idle"),
        ),
        ({"type": "keep-alive", "content": "p", "message-type": "ping"}, KeepAlive(b"p", "ping", 55, "idle")),
        ({"type": "keep-alive", "content": "p", "message-type": "pong"}, KeepAlive(b"p", "pong", 55, "idle")),
        ({"type": "keep-alive"}, KeepAlive(None, "text", 55, "idle")),
        ({"type": "keep-alive", "mode": "interval"}, KeepAlive(None, "text", 55, "interval")),
        ({"type": "keep-alive", "content": ""}, KeepAlive(b"", "text", 55, "idle")),
        ({"type": "keep-alive", "content": "k", "timeout": 0}, KeepAlive(b"k", "text", 55, "idle")),
        ({"type": "keep-alive", "content": "k", "mode": "bogus"}, KeepAlive(b"k", "text", 55, "idle")),
        ({"type": "send-delayed", "content": "later"}, SendDelayed(b"later", "text", SEND_DELAYED_TIMEOUT_DEFAULT)),
        (
            {"type": "send-delayed", "content": "x", "timeout": 5, "message-type": "binary"},
            SendDelayed(b"x", "binary", 5),
        ),
        ({"type": "send-delayed"}, SendDelayed(b"", "text", 1)),
        ({"type": "send-delayed", "content": "x", "timeout": 0}, SendDelayed(b"x", "text", 1)),
        ({"type": "send-delayed", "content": "x", "mode": 5}, SendDelayed(b"x", "text", 1)),
    ],
)
def test_keep_alive_and_send_delayed(doc: dict[str, Any], expected: ControlMessage) -> None:
    """keep-alive and send-delayed fill in Pushpin's defaults: text, 55 s idle / 1 s."""
    assert parse(doc) == expected


def test_content_bin_without_message_type_is_text() -> None:
    """content-bin alone gives a text message, as Pushpin sends it (observed: text frame C{hi})."""
    assert parse({"type": "send-delayed", "content-bin": "aGk="}) == SendDelayed(b"hi", "text", 1)
    assert parse({"type": "keep-alive", "content-bin": "aGk="}) == KeepAlive(b"hi", "text", 55, "idle")


def test_content_bin_wins_over_content() -> None:
    """With both present, content-bin is used and content is not even type-checked."""
    assert parse({"type": "send-delayed", "content-bin": "aGk=", "content": 7}) == SendDelayed(b"hi")


@pytest.mark.parametrize(
    ("encoded", "content"),
    [
        ("aGk", b"hi"),
        ("a G\nk=", b"hi"),
        ("aGk=====", b"hi"),
        ("!!", b""),
        ("", b""),
        ("a", b""),
        ("aGk=aGk=", b"hi\x1a\x1a"),
    ],
)
def test_content_bin_is_decoded_leniently_like_qt(encoded: str, content: bytes) -> None:
    """base64 junk and padding are skipped and a dangling group dropped, as QByteArray::fromBase64 does."""
    assert parse({"type": "keep-alive", "content-bin": encoded}) == KeepAlive(content)


def test_empty_content_bin_is_a_real_empty_keep_alive() -> None:
    """An empty content-bin still turns keep-alives on (observed: empty binary frames)."""
    assert parse({"type": "keep-alive", "content-bin": "", "message-type": "binary"}) == KeepAlive(b"", "binary")


def test_content_text_is_utf8() -> None:
    """Text content is sent as UTF-8; an unpaired surrogate becomes C{?} as in Qt."""
    assert parse({"type": "send-delayed", "content": "caf\u00e9"}) == SendDelayed("caf\u00e9".encode())
    assert parse(b'{"type": "send-delayed", "content": "a\\ud800b"}') == SendDelayed(b"a?b")


@pytest.mark.parametrize(
    ("timeout", "seconds"),
    [(30, 30), (2.5, 3), (2.4, 2), (0.4, 55), ("30", 30), (" 7 ", 7), ("abc", 55), (True, 1), (False, 55), (-0.4, 55)],
)
def test_timeout_is_read_like_qvariant_to_int(timeout: Any, seconds: int) -> None:
    """Timeouts round half up, numeric strings parse, junk strings and false are 0 (the default) (observed: "1")."""
    assert parse({"type": "keep-alive", "content": "k", "timeout": timeout}) == KeepAlive(b"k", "text", seconds)


def test_timeout_is_ignored_without_content() -> None:
    """Without content the timeout is not read, so even a bad one passes (observed for send-delayed)."""
    assert parse({"type": "send-delayed", "timeout": "junk"}) == SendDelayed(b"", "text", 1)
    assert parse({"type": "keep-alive", "timeout": -5}) == KeepAlive(None)
    assert parse({"type": "keep-alive", "timeout": None}) == KeepAlive(None)


def test_messages_are_frozen_values() -> None:
    """Parsed messages compare by value and cannot be changed."""
    message = parse({"type": "subscribe", "channel": "a", "filters": ["skip-self"]})
    assert message == Subscribe("a", ("skip-self",))
    with pytest.raises(AttributeError):
        message.channel = "b"  # type: ignore[union-attr]


# --- errors ----------------------------------------------------------------------------------

OBJ = "grip control object"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "grip control message is not valid json"),
        (b"{", "grip control message is not valid json"),
        (b'{"type": "detach"} x', "grip control message is not valid json"),
        (b'"subscribe"', "grip control message is not valid json"),
        (b"42", "grip control message is not valid json"),
        (b'{"type": "detach", "x": NaN}', "grip control message is not valid json"),
        (b'{"type": "\xff"}', "grip control message is not valid json"),
        (b'[{"type": "detach"}]', "grip control packet is not an object"),
        (b"{}", f"{OBJ} does not contain 'type'"),
        (b'{"type": 1}', f"{OBJ} contains 'type' with wrong type"),
        (b'{"type": null}', f"{OBJ} contains 'type' with wrong type"),
        (b'{"type": "close"}', "'type' contains unknown value: close"),
        (b'{"type": "Subscribe", "channel": "a"}', "'type' contains unknown value: Subscribe"),
        (b'{"type": ""}', "'type' contains unknown value: "),
        (b'{"type": "subscribe"}', f"{OBJ} does not contain 'channel'"),
        (b'{"type": "subscribe", "channel": ""}', f"{OBJ} contains 'channel' with invalid value"),
        (b'{"type": "subscribe", "channel": 5}', f"{OBJ} contains 'channel' with wrong type"),
        (b'{"type": "unsubscribe", "channel": ""}', f"{OBJ} contains 'channel' with invalid value"),
        (b'{"type": "unsubscribe"}', f"{OBJ} does not contain 'channel'"),
        (b'{"type": "subscribe", "channel": "a", "filters": "skip-self"}', f"{OBJ} contains 'filters' with wrong type"),
        (b'{"type": "subscribe", "channel": "a", "filters": null}', f"{OBJ} contains 'filters' with wrong type"),
        (b'{"type": "subscribe", "channel": "a", "filters": ["ok", 1]}', "filters contains value with wrong type"),
        (b'{"type": "session", "id": 5}', f"{OBJ} contains 'id' with wrong type"),
        (b'{"type": "session", "id": null}', f"{OBJ} contains 'id' with wrong type"),
        (b'{"type": "set-meta", "value": "v"}', f"{OBJ} does not contain 'name'"),
        (b'{"type": "set-meta", "name": "", "value": "v"}', f"{OBJ} contains 'name' with invalid value"),
        (b'{"type": "set-meta", "name": 1}', f"{OBJ} contains 'name' with wrong type"),
        (b'{"type": "set-meta", "name": "user", "value": null}', f"{OBJ} contains 'value' with wrong type"),
        (b'{"type": "set-meta", "name": "user", "value": 3}', f"{OBJ} contains 'value' with wrong type"),
        (b'{"type": "keep-alive", "message-type": "close"}', f"{OBJ} contains 'message-type' with unknown value"),
        (b'{"type": "keep-alive", "message-type": "TEXT"}', f"{OBJ} contains 'message-type' with unknown value"),
        (b'{"type": "send-delayed", "message-type": 1}', f"{OBJ} contains 'message-type' with wrong type"),
        (b'{"type": "keep-alive", "content-bin": 5}', f"{OBJ} contains 'content-bin' with wrong type"),
        (b'{"type": "keep-alive", "content-bin": null}', f"{OBJ} contains 'content-bin' with wrong type"),
        (b'{"type": "send-delayed", "content": ["a"]}', f"{OBJ} contains 'content' with wrong type"),
        (b'{"type": "send-delayed", "content": null}', f"{OBJ} contains 'content' with wrong type"),
        (b'{"type": "keep-alive", "content": "k", "timeout": null}', f"{OBJ} contains 'timeout' with wrong type"),
        (b'{"type": "keep-alive", "content": "k", "timeout": [1]}', f"{OBJ} contains 'timeout' with wrong type"),
        (b'{"type": "keep-alive", "content": "k", "timeout": -1}', f"{OBJ} contains 'timeout' with invalid value"),
        (b'{"type": "send-delayed", "content": "k", "timeout": "-3"}', f"{OBJ} contains 'timeout' with invalid value"),
        (b'{"type": "keep-alive", "content": "k", "mode": 1}', f"{OBJ} contains 'mode' with wrong type"),
        (b'{"type": "keep-alive", "mode": null}', f"{OBJ} contains 'mode' with wrong type"),
    ],
)
def test_bad_control_messages_are_refused_with_pushpins_reason(payload: bytes, reason: str) -> None:
    """Anything Pushpin logs and ignores raises WsControlError carrying Pushpin's reason text."""
    with pytest.raises(WsControlError) as info:
        parse_control_message(payload)
    assert str(info.value).startswith(reason)


def test_control_errors_are_value_errors() -> None:
    """WsControlError is a ValueError, so generic callers can catch it."""
    assert issubclass(WsControlError, ValueError)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_random_payloads_parse_or_raise_wscontrol_error(payload: bytes) -> None:
    """Arbitrary bytes never raise anything but WsControlError."""
    try:
        parse_control_message(payload)
    except WsControlError:
        pass


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(
    ["channel", "filters", "id", "name", "value", "content", "content-bin", "message-type", "timeout", "mode"]
)
_TYPES = st.sampled_from(
    ["subscribe", "unsubscribe", "detach", "session", "set-meta", "keep-alive", "send-delayed", "flush-delayed"]
)


@settings(max_examples=400, deadline=None)
@given(_TYPES, st.dictionaries(_KEYS, _JSON, max_size=5))
def test_random_fields_parse_or_raise_wscontrol_error(kind: str, fields: dict[str, Any]) -> None:
    """Any field values on a known type give a message or a WsControlError, nothing else."""
    try:
        parse({"type": kind, **fields})
    except WsControlError:
        pass


# --- gripcontrol interoperation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "args", "expected"),
    [
        ("subscribe", {"channel": "room"}, Subscribe("room")),
        ("subscribe", {"channel": "room", "filters": ["skip-self"]}, Subscribe("room", ("skip-self",))),
        ("unsubscribe", {"channel": "room"}, Unsubscribe("room")),
        ("detach", None, Detach()),
        ("session", {"id": "abc"}, Session("abc")),
        ("set-meta", {"name": "user", "value": "alice"}, SetMeta("user", "alice")),
        ("set-meta", {"name": "user"}, SetMeta("user", None)),
        ("keep-alive", {"content": "{}", "timeout": 20}, KeepAlive(b"{}", "text", 20)),
        (
            "keep-alive",
            {"content": "ping", "message-type": "ping", "mode": "interval"},
            KeepAlive(b"ping", "ping", 55, "interval"),
        ),
        ("keep-alive", None, KeepAlive(None)),
        ("send-delayed", {"content": "bye", "timeout": 3}, SendDelayed(b"bye", "text", 3)),
        ("flush-delayed", None, FlushDelayed()),
    ],
)
def test_gripcontrol_control_messages_parse(kind: str, args: dict[str, Any] | None, expected: ControlMessage) -> None:
    """What gripcontrol's websocket_control_message writes parses to the intended message."""
    assert parse_control_message(websocket_control_message(kind, args).encode()) == expected


def test_gripcontrol_context_output_splits_and_parses() -> None:
    """A WebSocketContext's outgoing events sort into control and prefixed messages as Pushpin does."""
    ctx = WebSocketContext("cid", {}, [], grip_prefix="pre-")
    ctx.subscribe("news")
    ctx.send("hello")
    ctx.send_binary(b"\x00\x01")
    ctx.unsubscribe("news")
    ctx.detach()
    sorted_events = []
    for event in ctx.out_events:
        kind, rest = split_grip_text(event.content, DEFAULT_MESSAGE_PREFIX, binary=event.type == "BINARY")
        sorted_events.append(parse_control_message(rest) if kind == "control" else (kind, rest))
    assert sorted_events == [
        Subscribe("pre-news"),
        ("message", b"hello"),
        ("message", b"\x00\x01"),
        Unsubscribe("pre-news"),
        Detach(),
    ]


# --- the grip extension ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([b"grip"], (True, b"m:")),
        ([], (False, b"")),
        ([b""], (False, b"")),
        ([b"permessage-deflate"], (False, b"")),
        ([b"grip; message-prefix=\"\""], (True, b"")),
        ([b"grip; message-prefix=\"p\\\"x\""], (True, b'p"x')),
        ([b"grip;message-prefix=data:"], (True, b"data:")),
        ([b"grip; message-prefix = x: ; other=1"], (True, b"x:")),
        ([b"grip; message-prefix"], (True, b"")),
        ([b"grip; message-prefix= ; x=1"], (True, b"")),
        ([b"grip; message-prefix= "], (False, b"")),  # the element is trimmed first, so "=" ends it
        ([b"grip; other=1"], (True, b"m:")),
        ([b"grip;"], (True, b"m:")),
        ([b"grip; message-prefix=a; message-prefix=b"], (True, b"b")),
        ([b"grip; Message-Prefix=x"], (True, b"m:")),
        ([b"grip; message-prefix=\"a;b\""], (True, b"a;b")),
        ([b"grip; message-prefix=\"a,b\""], (True, b"a,b")),
        ([b"permessage-deflate, grip; message-prefix=\"p\\\"x\""], (True, b'p"x')),
        ([b"permessage-deflate; client_max_window_bits", b"grip"], (True, b"m:")),
        ([b"  grip  "], (True, b"m:")),
        ([b"grip ; message-prefix=z"], (True, b"z")),
        ([b"grip; message-prefix=a", b"grip; message-prefix=b"], (True, b"a")),
        ([b"GRIP"], (False, b"")),
        ([b"Grip; message-prefix=x"], (False, b"")),
        ([b"grip-ext"], (False, b"")),
        ([b"grip x"], (False, b"")),
        ([b"grip; message-prefix="], (False, b"")),
        ([b"grip; message-prefix=\"open"], (False, b"")),
        ([b"grip; message-prefix=\"a\\"], (False, b"")),
        ([b"grip; message-prefix=\"a\\\""], (False, b"")),
    ],
)
def test_grip_extension_variants(values: list[bytes], expected: tuple[bool, bytes]) -> None:
    """The grip extension is found among others and its prefix read as Pushpin reads it (observed)."""
    assert parse_grip_extension(values) == expected


# --- sorting origin messages -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "prefix", "binary", "expected"),
    [
        (b'c:{"type":"detach"}', b"m:", False, ("control", b'{"type":"detach"}')),
        (b"c:", b"m:", False, ("control", b"")),
        (b"m:hello", b"m:", False, ("message", b"hello")),
        (b"m:", b"m:", False, ("message", b"")),
        (b"hello", b"m:", False, ("drop", b"")),
        (b"", b"m:", False, ("drop", b"")),
        (b"M:hello", b"m:", False, ("drop", b"")),
        (b"hello", b"", False, ("message", b"hello")),
        (b"c:{}", b"", False, ("control", b"{}")),
        (b"data:x", b"data:", False, ("message", b"x")),
        (b"m:bin", b"m:", True, ("message", b"bin")),
        (b"c:bin", b"m:", True, ("drop", b"")),
        (b"c:bin", b"", True, ("message", b"c:bin")),
        (b"c:x", b"c:", False, ("control", b"x")),
    ],
)
def test_split_grip_text(payload: bytes, prefix: bytes, binary: bool, expected: tuple[str, bytes]) -> None:
    """Origin messages are control (text C{c:}), prefixed messages (prefix stripped) or dropped."""
    assert split_grip_text(payload, prefix, binary=binary) == expected


def test_subscribe_and_unsubscribe_take_a_prefix_flag():
    """C{"prefix": true} marks a prefix subscription (and its unsubscribe); absent means an exact channel."""
    assert parse({"type": "subscribe", "channel": "news.", "prefix": True, "filters": ["skip-self"]}) == Subscribe("news.", ("skip-self",), True)
    assert parse({"type": "unsubscribe", "channel": "news.", "prefix": True}) == Unsubscribe("news.", True)
    assert parse({"type": "subscribe", "channel": "news.*"}) == Subscribe("news.*", (), False)


def test_a_non_boolean_prefix_is_refused():
    """C{"prefix": "yes"} is a wrong type, with Pushpin's wording for one."""
    with pytest.raises(WsControlError, match="contains 'prefix' with wrong type"):
        parse({"type": "subscribe", "channel": "news.", "prefix": "yes"})


def test_subscribe_takes_a_prev_id_for_reliable_mode():
    """C{"prev-id"} on a subscribe asks for reliable mode from that id; with C{"prefix"} it is refused."""
    assert parse({"type": "subscribe", "channel": "feed", "prev-id": "7"}) == Subscribe("feed", (), False, "7")
    with pytest.raises(WsControlError, match="'prev-id' with 'prefix'"):
        parse({"type": "subscribe", "channel": "feed.", "prefix": True, "prev-id": "7"})
