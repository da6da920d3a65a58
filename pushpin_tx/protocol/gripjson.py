# -*- test-case-name: tests.protocol.test_grip -*-
"""
The JSON form of GRIP instructions (reference §5.2): an C{application/grip-instruct} body.

Split out of L{pushpin_tx.protocol.grip} to keep modules small. L{apply_json} overlays the body on the
draft that the header form already filled, exactly as Pushpin 1.36's C{Instruct::fromResponse}
does: C{Grip-*} headers still count (channels from both forms add up, C{Grip-Status} and
C{Grip-Link} apply), C{hold} fields override, and the client-facing response is rebuilt from
C{response} alone. Error texts are Pushpin's own. Pure code.

Ours: a channel with C{"prefix": true} (C{{"name": "news.", "prefix": true}}) is a prefix
subscription, as C{Grip-Channel: news.; prefix} is, with the header form's rules (filters
allowed, a non-empty name, no C{prev-id}); C{"prefix"} must be a boolean.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn, Protocol

from pushpin_tx.protocol.headers import Headers
from pushpin_tx.protocol.qt.numbers import qround64, string_to_int
from pushpin_tx.protocol.qt.strings import from_base64, replace_lone_surrogates, to_utf8

__all__ = ()

DEFAULT_KEEP_ALIVE_TIMEOUT = 55


class _Draft(Protocol):
    """
    What L{apply_json} fills in: the fields of L{pushpin_tx.protocol.grip}'s draft instruction.
    Declared here, not imported, so that grip (which calls this module) is not imported back.
    """

    code: int
    reason: bytes
    body: bytes
    headers: Headers | None
    hold: str | None
    channels: list[tuple[str, str | None, list[str]]] | None
    prefix_channels: list[tuple[str, list[str]]] | None
    timeout: int | None
    ka_data: bytes
    ka_timeout: int | None
    meta: dict[str, str] | None

_BAD_HEADER_BYTES = re.compile(rb"[\r\n\x00]")


class JsonInstructError(Exception):
    """Invalid JSON instruction; L{pushpin_tx.protocol.grip} re-raises it as C{InstructError}."""


def apply_json(draft: _Draft, body: bytes) -> None:
    """Overlay the JSON instruction in C{body} on C{draft} (already filled from the headers)."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise JsonInstructError("failed to parse application/grip-instruct content as JSON") from None
    if not isinstance(doc, dict):
        raise JsonInstructError("instruct must be an object")

    if "hold" in doc:
        hold = doc["hold"]
        if not isinstance(hold, dict):
            raise JsonInstructError("instruct contains 'hold' with wrong type")
        _parse_json_hold(draft, hold)

    # The client-facing response comes from "response" alone; without it, it is empty.
    draft.headers = []
    draft.body = b""
    if "response" in doc:
        response = doc["response"]
        if not isinstance(response, dict):
            raise JsonInstructError("instruct contains 'response' with wrong type")
        _parse_json_response(draft, response)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_json_hold(draft: _Draft, hold: dict[str, Any]) -> None:
    mode = _get_str(hold, "hold", "mode")
    if mode is None or mode == "response":
        draft.hold = "response"
    elif mode == "stream":
        draft.hold = "stream"
    else:
        raise JsonInstructError("hold 'mode' must be set to either 'response' or 'stream'")

    if "channels" not in hold:
        raise JsonInstructError("hold does not contain 'channels'")
    channels = hold["channels"]
    if not isinstance(channels, list):
        raise JsonInstructError("hold contains 'channels' with wrong type")
    assert draft.channels is not None
    for channel in channels:
        if not isinstance(channel, dict):
            raise JsonInstructError("channel is not an object")
        if "name" not in channel:
            raise JsonInstructError("channel does not contain 'name'")
        name = _get_str(channel, "channel", "name")
        prev_id = _get_str(channel, "channel", "prev-id")
        filters: list[str] = []
        if "filters" in channel:
            if not isinstance(channel["filters"], list):
                raise JsonInstructError("channel contains 'filters' with wrong type")
            for item in channel["filters"]:
                if not isinstance(item, str):
                    raise JsonInstructError("filters contains value with wrong type")
                filters.append(_clean(item))
        if "prefix" in channel and _get_bool(channel, "channel", "prefix"):
            # the header form's rules (grip._parse_headers), in this form's words
            if not name:
                raise JsonInstructError("channel with 'prefix' must name a non-empty prefix")
            if prev_id is not None:
                raise JsonInstructError("channel with 'prefix' cannot have a prev-id")
            if draft.prefix_channels is None:
                draft.prefix_channels = []
            draft.prefix_channels.append((name, filters))
            continue
        draft.channels.append((name or "", prev_id, filters))

    if "timeout" in hold:
        draft.timeout = _get_int(hold, "hold", "timeout")

    if "keep-alive" in hold:
        keep_alive = hold["keep-alive"]
        if not isinstance(keep_alive, dict):
            raise JsonInstructError("hold contains 'keep-alive' with wrong type")
        if "content-bin" in keep_alive:
            draft.ka_data = from_base64(to_utf8(_get_str(keep_alive, "keep-alive", "content-bin") or ""))
        elif "content" in keep_alive:
            draft.ka_data = _utf8(_get_str(keep_alive, "keep-alive", "content") or "")
        if "timeout" in keep_alive:
            draft.ka_timeout = _get_int(keep_alive, "keep-alive", "timeout")
        else:
            draft.ka_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT

    if "meta" in hold:
        meta = hold["meta"]
        if not isinstance(meta, dict):
            raise JsonInstructError("hold contains 'meta' with wrong type")
        assert draft.meta is not None
        for key, value in meta.items():
            if not isinstance(value, str):
                raise JsonInstructError(f"'meta' contains '{_clean(key)}' with wrong type")
            draft.meta[_clean(key)] = _clean(value)


def _parse_json_response(draft: _Draft, response: dict[str, Any]) -> None:
    if "code" in response:
        draft.code = _get_int(response, "response", "code")
        if draft.code > 999:
            raise JsonInstructError("response contains 'code' with invalid value")
        draft.reason = b""  # an explicit code takes its standard reason unless one is given
    reason = _get_str(response, "response", "reason")
    if reason:
        draft.reason = _utf8(reason)
        if _BAD_HEADER_BYTES.search(draft.reason):
            raise JsonInstructError("response contains 'reason' with invalid value")

    if "headers" in response:
        draft.headers = _json_headers(response["headers"])

    if "body-bin" in response:
        draft.body = from_base64(to_utf8(_get_str(response, "response", "body-bin") or ""))
    elif "body" in response:
        if not isinstance(response["body"], str):
            raise JsonInstructError("response contains 'body' with wrong type")
        draft.body = _utf8(response["body"])


def _json_headers(value: object) -> Headers:
    headers: Headers = []
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, list):
                raise JsonInstructError("headers contains element with wrong type")
            if len(item) != 2:
                raise JsonInstructError("headers contains list with wrong number of elements")
            name, val = item
            if not isinstance(name, str):
                raise JsonInstructError("header contains name element with wrong type")
            if not isinstance(val, str):
                raise JsonInstructError("header contains value element with wrong type")
            headers.append((_utf8(name), _utf8(val)))
    elif isinstance(value, dict):
        # Pushpin reads JSON objects into a QVariantMap, which iterates in key order.
        for name in sorted(value):
            if not isinstance(value[name], str):
                raise JsonInstructError(f"headers contains '{_clean(name)}' with wrong type")
            headers.append((_utf8(name), _utf8(value[name])))
    else:
        raise JsonInstructError("response contains 'headers' with wrong type")
    for name, val in headers:
        # Pushpin passes these through verbatim (a response-splitting hole); refuse them instead.
        if not name or b":" in name or _BAD_HEADER_BYTES.search(name + val):
            raise JsonInstructError("headers contains invalid header")
    return headers


def _get_str(obj: dict[str, Any], parent: str, key: str) -> str | None:
    """An optional string member; C{None} when absent."""
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise JsonInstructError(f"{parent} contains '{key}' with wrong type")
    return _clean(value)


def _get_bool(obj: dict[str, Any], parent: str, key: str) -> bool:
    """A present boolean member: C{true} or C{false}, nothing else (not 1, not "true")."""
    value = obj[key]
    if not isinstance(value, bool):
        raise JsonInstructError(f"{parent} contains '{key}' with wrong type")
    return value


def _get_int(obj: dict[str, Any], parent: str, key: str) -> int:
    """A present numeric member, rounded like Qt does; must be >= 0."""
    value = obj[key]
    # Qt's QVariant conversion (observed on 1.36.0): numbers round half up (qRound64), numeric
    # strings parse ("404" is 404; read here with QString::toInt). Qt would also turn booleans
    # into 1/0, any other string into 0 and wrap a number beyond 32 bits, which yields
    # nonsense (status 0); those are refused as the wrong type or an invalid value instead.
    number: int | None
    if isinstance(value, str):
        number = string_to_int(value)
        if number is None:
            raise JsonInstructError(f"{parent} contains '{key}' with wrong type")
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise JsonInstructError(f"{parent} contains '{key}' with wrong type")
    else:
        number = qround64(value) if isinstance(value, float) else value
    if number is None or number < 0 or number > 2**31 - 1:
        raise JsonInstructError(f"{parent} contains '{key}' with invalid value")
    return number


def _clean(text: str) -> str:
    """Lone surrogates (legal in JSON escapes, unencodable in UTF-8) become U+FFFD."""
    return replace_lone_surrogates(text)


def _utf8(text: str) -> bytes:
    """Text with lone surrogates as U+FFFD, in UTF-8 (Pushpin would write C{?}: see L{replace_lone_surrogates})."""
    return to_utf8(_clean(text))
