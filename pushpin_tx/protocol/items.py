# -*- test-case-name: tests.protocol.test_items -*-
"""
Publish items: the values publishers send, and their decoding from JSON and tnetstrings.

An item names a channel and carries up to three formats, one per kind of subscriber: an
C{http-response} for held long-polls, an C{http-stream} chunk for streams and a C{ws-message}
for WebSockets (reference §6.1, §7). Items arrive as JSON on the HTTP control API
(C{POST /publish/}, §6.2) and as JSON or tnetstring frames on the ZMQ inputs (§6.3).

The validation mirrors Pushpin 1.36 (C{src/handler/publishitem.cpp}, C{publishformat.cpp},
C{variantutil.cpp}) because the control API answers C{400 Invalid format: <reason>} and
publishers see that reason verbatim. L{ItemError} carries it. Observed on 1.36.0, and kept:

  - keys are checked in Pushpin's order (channel, id, prev-id, formats, the formats in the
    order http-response, http-stream, ws-message, then meta, size, no-seq); in a JSON object
    Pushpin walks C{meta} and C{headers} in sorted key order (a C{QVariantMap}), so the first
    reported bad meta key, and the order of published headers, follow that sort;
  - an unknown C{action} (including C{""}) gives an I{empty} reason, so the control API
    answers C{Invalid format: } with nothing after it; C{"refresh"} (Pushpin 1.38) is known
    on C{ws-message} only here (1.41 parses it on every format; on HTTP holds it does nothing);
  - numbers are converted the way Qt's C{QVariant::toInt} does it: doubles round half up,
    numeric strings parse (anything else is 0), booleans are 0/1, and the result wraps to 32
    bits. So C{"code": "abc"} is code 0, C{"code": 999.5} is 1000 (invalid), C{"code":
    4294967496} is 200; C{null}, lists and objects are of the wrong type;
  - in a JSON item C{null} is a wrong type everywhere; in a tnetstring item a null optional
    field counts as absent (Qt reads it as an invalid variant);
  - base64 (C{body-bin}, C{content-bin}) is decoded leniently, like C{QByteArray::fromBase64}:
    bytes outside the alphabet (padding included) are skipped;
  - text is UTF-8 encoded with unpaired surrogates written as C{?}, as C{QString::toUtf8} does.

Items are not semantically checked beyond that: Pushpin accepts an C{action} of C{hint} or
C{close} on every format (an C{http-response} C{close} and a C{ws-message} C{hint} are then
ignored at delivery), an item whose C{formats} holds only unknown keys, and any element in a
C{body-patch} list (a bad op only fails when the patch is applied, see L{pushpin_tx.protocol.respond}).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, TypeVar

from pushpin_tx.protocol import tnetstring
from pushpin_tx.protocol.headers import Headers
from pushpin_tx.protocol.qt.headervalues import split_header
from pushpin_tx.protocol.qt.jsonvalues import loads_json
from pushpin_tx.protocol.qt.numbers import variant_to_int
from pushpin_tx.protocol.qt.strings import from_base64, from_utf8, to_utf8, utf16_key

__all__ = [
    "HttpResponseFormat",
    "HttpStreamFormat",
    "Item",
    "ItemError",
    "PublishBodyError",
    "WsMessageFormat",
    "parse_item",
    "parse_publish_body",
    "parse_zmq_item",
]

_NOT_JSON = "Body is not valid JSON."


class ItemError(Exception):
    """An item Pushpin would refuse; C{str(e)} is Pushpin's reason (possibly empty)."""


class PublishBodyError(Exception):
    """A C{POST /publish/} body Pushpin would refuse; C{str(e)} is the 400 body without C{\\n}."""


@dataclass(frozen=True, slots=True)
class HttpResponseFormat:
    """
    The C{http-response} format. C{action} is C{"send"}, C{"hint"} or C{"close"} (Pushpin
    accepts C{close} but ignores it for response holds); the other fields are only parsed for
    C{"send"} and keep their defaults otherwise. C{reason} is C{None} when the standard phrase
    for C{code} applies. C{headers} has C{Grip-*} headers removed; the names listed by any
    C{Grip-Expose-Headers} are in C{expose_headers} (C{None} when there was none), and are
    I{removed} from the delivered response, a quirk of Pushpin 1.36 (§6.1). Exactly one of
    C{body} and C{body_patch} matters: C{body_patch} is a list of JSON Patch operations (kept
    as given, JSON-style) when not C{None}. C{content_filters} is C{None} when absent.
    """

    action: str
    code: int
    reason: bytes | None
    headers: tuple[tuple[bytes, bytes], ...]
    expose_headers: tuple[bytes, ...] | None
    body: bytes
    body_patch: tuple[Any, ...] | None
    content_filters: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class HttpStreamFormat:
    """The C{http-stream} format: C{action} C{"send"}, C{"close"} or C{"hint"}; C{content} for sends."""

    action: str
    content: bytes
    content_filters: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class WsMessageFormat:
    """
    The C{ws-message} format. For C{action="send"}, C{type} is C{text}, C{binary}, C{ping} or
    C{pong}, and C{content} is C{None} only for a ping/pong without content (accepted; nothing
    is sent). For C{action="close"}, C{close_code}/C{close_reason} are the optional close frame
    fields (the code is only checked to be >= 0). C{"hint"} is accepted and means nothing.
    """

    action: str
    type: str
    content: bytes | None
    close_code: int | None
    close_reason: str | None
    content_filters: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Item:
    """One published item (§6.1, §7). C{size} is C{None} when absent; C{meta} is publish meta."""

    channel: str
    id: str | None
    prev_id: str | None
    meta: dict[str, str]
    size: int | None
    no_seq: bool
    http_response: HttpResponseFormat | None
    http_stream: HttpStreamFormat | None
    ws_message: WsMessageFormat | None


# --- item parsing ----------------------------------------------------------------------------

_ITEM = "publish item object"
_FORMAT_KEYS = ("http-response", "http-stream", "ws-message")
_ACTIONS = frozenset({"send", "hint", "close"})
_WS_TYPES = frozenset({"text", "binary", "ping", "pong"})
#: ws-message only: "refresh" asks a WebSocket-over-HTTP origin for a request now (1.38)
_WS_ACTIONS = frozenset({"refresh"})


class _Reader:
    """
    Field access with Pushpin's error texts; C{tnet} is the decoding (changes null and texts).
    C{plain}: the value is a JSON document as C{json} decodes it, whose objects have C{str}
    keys only, so L{obj} takes them as they are instead of copying each one (a publish
    flood spent 40 % of its item parsing in those copies, cProfile).
    """

    __slots__ = ("tnet", "plain")

    def __init__(self, tnet: bool, plain: bool = False) -> None:
        self.tnet = tnet
        self.plain = plain and not tnet

    def obj(self, value: object) -> dict[str, Any] | None:
        """The value as a str-keyed dict, or C{None} if it is not an object."""
        if not isinstance(value, dict):
            return None
        if self.plain:
            return value
        return {_text(k): v for k, v in value.items() if isinstance(k, (str, bytes))}

    def keys(self, obj: dict[str, Any]) -> Iterable[str]:
        """Iteration order of an object: sorted in a JSON document (QVariantMap), as given otherwise."""
        if self.tnet:
            return list(obj)
        return sorted(obj, key=utf16_key)

    def string(self, obj: dict[str, Any], pn: str, key: str, required: bool = False) -> str | None:
        """C{VariantUtil::getString(in, pn, key, required)}."""
        if key not in obj:
            if required:
                raise ItemError(f"{pn} does not contain '{key}'")
            return None
        value = obj[key]
        if value is None and self.tnet and not required:
            return None
        text = _string_value(value)
        if text is None:
            raise ItemError(f"{pn} contains '{key}' with wrong type")
        return text

    def int_field(self, obj: dict[str, Any], pn: str, key: str) -> int | None:
        """A field converted like C{canConvert(Int)} / C{toInt()}; C{None} when absent."""
        if key not in obj:
            return None
        number = variant_to_int(obj[key], json_numbers=not self.tnet)
        if number is None:
            raise ItemError(f"{pn} contains '{key}' with wrong type")
        return number

    def filters(self, obj: dict[str, Any], pn: str) -> tuple[str, ...] | None:
        """C{content-filters}: a list of strings, or C{None} when absent."""
        if "content-filters" not in obj:
            return None
        value = obj["content-filters"]
        if not isinstance(value, list):
            raise ItemError(f"{pn} contains 'content-filters' with wrong type")
        out = []
        for element in value:
            text = _string_value(element)
            if text is None:
                raise ItemError("content-filters contains element with wrong type")
            out.append(text)
        return tuple(out)

    def content(self, obj: dict[str, Any], pn: str, key: str) -> bytes:
        """C{content}/C{body}: a byte string or text."""
        value = obj[key]
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return to_utf8(value)
        raise ItemError(f"{pn} contains '{key}' with wrong type")


def _text(value: str | bytes) -> str:
    return from_utf8(value) if isinstance(value, bytes) else value


def _string_value(value: object) -> str | None:
    """C{VariantUtil::getString(v, &ok)}: text from a string or byte string, else C{None}."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return from_utf8(value)
    return None



def parse_item(obj: object, *, channel: str | None = None) -> Item:
    """
    Validate one decoded item: a JSON object (C{str} keys) or a decoded tnetstring dict
    (C{bytes} keys and strings). A non-empty C{channel} (the SUB socket's first frame)
    overrides the item's own C{channel} key, which then becomes optional. Raises L{ItemError}.
    """
    tnet = isinstance(obj, dict) and any(isinstance(k, bytes) for k in obj)
    return _parse_item(obj, channel, _Reader(tnet))


def _parse_item(raw: object, channel: str | None, r: _Reader) -> Item:
    obj = r.obj(raw)
    if obj is None:
        raise ItemError(f"{_ITEM} is not an object")
    if not channel:
        channel = r.string(obj, _ITEM, "channel", required=True)
    assert channel is not None
    item_id = r.string(obj, _ITEM, "id")
    prev_id = r.string(obj, _ITEM, "prev-id")

    formats: dict[str, Any]
    raw_formats = obj.get("formats")
    if "formats" in obj and not (raw_formats is None and r.tnet):
        found = r.obj(raw_formats)
        if found is None:
            raise ItemError(f"{_ITEM} contains 'formats' with wrong type")
        formats = found
    else:
        formats = {k: obj[k] for k in _FORMAT_KEYS if k in obj and not (obj[k] is None and r.tnet)}
    if not formats:
        raise ItemError("no formats specified")
    http_response = _http_response(formats["http-response"], r) if "http-response" in formats else None
    http_stream = _http_stream(formats["http-stream"], r) if "http-stream" in formats else None
    ws_message = _ws_message(formats["ws-message"], r) if "ws-message" in formats else None

    meta: dict[str, str] = {}
    if "meta" in obj and not (obj["meta"] is None and r.tnet):
        raw_meta = r.obj(obj["meta"])
        if raw_meta is None:
            raise ItemError(f"{_ITEM} contains 'meta' with wrong type")
        for key in r.keys(raw_meta):
            value = _string_value(raw_meta[key])
            if value is None:
                raise ItemError(f"'meta' contains '{key}' with wrong type")
            meta[key] = value

    size = r.int_field(obj, _ITEM, "size")
    if size is not None and size < 0:
        raise ItemError(f"{_ITEM} contains 'size' with invalid value")
    no_seq = False
    if "no-seq" in obj:
        if not isinstance(obj["no-seq"], bool):
            raise ItemError(f"{_ITEM} contains 'no-seq' with wrong type")
        no_seq = obj["no-seq"]

    return _new_item(
        channel=channel,
        id=item_id,
        prev_id=prev_id,
        meta=meta,
        size=size,
        no_seq=no_seq,
        http_response=http_response,
        http_stream=http_stream,
        ws_message=ws_message,
    )


def _format(raw: object, pn: str, r: _Reader, actions: frozenset[str] = frozenset()) -> tuple[dict[str, Any], str]:
    obj = r.obj(raw)
    if obj is None:
        raise ItemError(f"{pn} is not an object")
    action = r.string(obj, pn, "action")
    if action is None:
        action = "send"
    elif action not in _ACTIONS and action not in actions:
        # Pushpin fails here without setting a message: the reason is empty.
        raise ItemError("")
    return obj, action


def _http_response(raw: object, r: _Reader) -> HttpResponseFormat:
    pn = "'http-response'"
    obj, action = _format(raw, pn, r)
    if action != "send":
        return HttpResponseFormat(action, 200, None, (), None, b"", None, None)
    code = r.int_field(obj, pn, "code")
    if code is None:
        code = 200
    elif not 0 <= code <= 999:
        raise ItemError(f"{pn} contains 'code' with invalid value")
    reason_text = r.string(obj, pn, "reason")
    reason = to_utf8(reason_text) if reason_text else None
    headers = _headers(obj, pn, r) if "headers" in obj else []
    content_filters = r.filters(obj, pn)

    body = b""
    body_patch: tuple[Any, ...] | None = None
    if not r.tnet and "body-bin" in obj:
        body = from_base64(to_utf8(r.string(obj, pn, "body-bin") or ""))
    elif "body" in obj:
        body = r.content(obj, pn, "body")
    elif "body-patch" in obj:
        patch = obj["body-patch"]
        if patch is None and r.tnet:
            patch = []  # an invalid variant reads as an empty list here
        if not isinstance(patch, list):
            raise ItemError(f"{pn} contains 'body-patch' with wrong type")
        body_patch = tuple(_json_style(op) for op in patch)
    elif r.tnet:
        raise ItemError(f"{pn} does not contain 'body' or 'body-patch'")
    else:
        raise ItemError(f"{pn} does not contain 'body', 'body-bin', or 'body-patch'")

    expose: list[bytes] | None = None
    kept: Headers = []
    for name, value in headers:
        if name.lower() == b"grip-expose-headers":
            expose = (expose or []) + split_header(value)
        if name[:5].lower() != b"grip-":
            kept.append((name, value))
    return HttpResponseFormat(
        action=action,
        code=code,
        reason=reason,
        headers=tuple(kept),
        expose_headers=None if expose is None else tuple(expose),
        body=body,
        body_patch=body_patch,
        content_filters=content_filters,
    )


def _headers(obj: dict[str, Any], pn: str, r: _Reader) -> Headers:
    raw = obj["headers"]
    out: Headers = []
    if isinstance(raw, list):
        for pair in raw:
            if not isinstance(pair, list):
                raise ItemError("headers contains element with wrong type")
            if len(pair) != 2:
                raise ItemError("headers contains list with wrong number of elements")
            name = _string_value(pair[0])
            if name is None:
                raise ItemError("header contains name element with wrong type")
            value = _string_value(pair[1])
            if value is None:
                raise ItemError("header contains value element with wrong type")
            out.append((to_utf8(name), to_utf8(value)))
        return out
    mapping = r.obj(raw)
    if mapping is None:
        raise ItemError(f"{pn} contains 'headers' with wrong type")
    for key in r.keys(mapping):
        value = _string_value(mapping[key])
        if value is None:
            raise ItemError(f"headers contains '{key}' with wrong type")
        out.append((to_utf8(key), to_utf8(value)))
    return out


def _http_stream(raw: object, r: _Reader) -> HttpStreamFormat:
    pn = "'http-stream'"
    obj, action = _format(raw, pn, r)
    if action != "send":
        return HttpStreamFormat(action, b"", None)
    content_filters = r.filters(obj, pn)
    if not r.tnet and "content-bin" in obj:
        content = from_base64(to_utf8(r.string(obj, pn, "content-bin") or ""))
    elif "content" in obj:
        content = r.content(obj, pn, "content")
    elif r.tnet:
        raise ItemError(f"{pn} does not contain 'content'")
    else:
        raise ItemError(f"{pn} does not contain 'content' or 'content-bin'")
    return HttpStreamFormat(action, content, content_filters)


def _ws_message(raw: object, r: _Reader) -> WsMessageFormat:
    pn = "'ws-message'"
    obj, action = _format(raw, pn, r, _WS_ACTIONS)
    if action == "close":
        code = r.int_field(obj, pn, "code")
        if code is not None and code < 0:
            raise ItemError(f"{pn} contains 'code' with invalid value")
        reason = r.string(obj, pn, "reason")
        return WsMessageFormat(action, "text", None, code, reason or None, None)
    if action != "send":
        return WsMessageFormat(action, "text", None, None, None, None)
    msg_type = r.string(obj, pn, "type")
    if msg_type is not None and msg_type not in _WS_TYPES:
        raise ItemError(f"{pn} contains 'type' with unknown value")
    content_filters = r.filters(obj, pn)
    content: bytes | None = None
    if "content-bin" in obj:
        value = obj["content-bin"]
        if r.tnet:
            if not isinstance(value, bytes):
                raise ItemError(f"{pn} contains 'content-bin' with wrong type")
            content = value
        else:
            if not isinstance(value, str):
                raise ItemError(f"{pn} contains 'content-bin' with wrong type")
            content = from_base64(to_utf8(value))
        msg_type = msg_type or "binary"
    elif "content" in obj:
        content = r.content(obj, pn, "content")
        msg_type = msg_type or "text"
    elif msg_type in (None, "text", "binary"):
        raise ItemError(f"{pn} does not contain 'content' or 'content-bin'")
    assert msg_type is not None
    return WsMessageFormat(action, msg_type, content, None, None, content_filters)


def _json_style(value: object) -> object:
    """Byte strings to text and byte keys to text keys (C{convertToJsonStyle}), recursively."""
    if isinstance(value, bytes):
        return from_utf8(value)
    if isinstance(value, dict):
        return {_text(k): _json_style(v) for k, v in value.items() if isinstance(k, (str, bytes))}
    if isinstance(value, list):
        return [_json_style(v) for v in value]
    return value


# --- the common shape, quickly ----------------------------------------------------------------

_T = TypeVar("_T")


def _slot_constructor(cls: type[_T]) -> Callable[..., _T]:
    """
    A positional constructor for the frozen slots dataclass C{cls} that gives the same
    object as C{cls(...)} at half the cost: it sets each slot through its descriptor
    instead of the generated C{__init__}'s C{object.__setattr__} calls (a publish flood
    builds two of these per item; measured 0.94 -> 0.48 us for an L{Item}). Only for values
    already validated: it runs no C{__post_init__} (these classes have none) and no defaults.
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for name in names:
        namespace["_set_" + name] = getattr(cls, name).__set__
    lines = [f"def make({', '.join(names)}):", "    obj = _new(_cls)"]
    lines += [f"    _set_{name}(obj, {name})" for name in names]
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # noqa: S102 (generated from the field names, as dataclasses does)
    make: Callable[..., _T] = namespace["make"]
    return make


_new_item = _slot_constructor(Item)
_new_stream = _slot_constructor(HttpStreamFormat)
_new_ws = _slot_constructor(WsMessageFormat)
_new_response = _slot_constructor(HttpResponseFormat)

_PLAIN_ITEM_KEYS = frozenset({"channel", "id", "prev-id", "formats"})
_CONTENT_ONLY = frozenset({"content"})
_BODY_ONLY = frozenset({"body"})


def _parse_json_item(raw: object, channel: str | None = None) -> Item:
    """
    C{_parse_item(raw, channel, _JSON_READER)}, the same L{Item}, with a short way for the
    shape nearly every publisher sends: a C{channel}, maybe an C{id} and a C{prev-id}
    (strings), and C{formats} holding C{http-stream}/C{ws-message} C{{"content": text}}
    and/or C{http-response} C{{"body": text}}. Anything else, every error included, takes
    the general path, so answers and reasons are unchanged. Item parsing was a quarter of
    a publish flood (py-spy, bench/README.md); this path is about twice as fast.
    """
    if raw.__class__ is not dict or not raw.keys() <= _PLAIN_ITEM_KEYS:
        return _parse_item(raw, channel, _JSON_READER)
    assert isinstance(raw, dict)
    get = raw.get
    if not channel:
        channel = get("channel")
        if channel.__class__ is not str:
            return _parse_item(raw, None, _JSON_READER)
    item_id = get("id")
    prev_id = get("prev-id")
    formats = get("formats")
    if ((item_id.__class__ is not str and "id" in raw) or (prev_id.__class__ is not str and "prev-id" in raw)
            or formats.__class__ is not dict or not formats):
        return _parse_item(raw, channel, _JSON_READER)
    http_response = http_stream = ws_message = None
    for key, value in formats.items():
        if value.__class__ is not dict:
            return _parse_item(raw, channel, _JSON_READER)
        if key == "http-stream" and value.keys() == _CONTENT_ONLY and value["content"].__class__ is str:
            http_stream = _new_stream("send", to_utf8(value["content"]), None)
        elif key == "ws-message" and value.keys() == _CONTENT_ONLY and value["content"].__class__ is str:
            ws_message = _new_ws("send", "text", to_utf8(value["content"]), None, None, None)
        elif key == "http-response" and value.keys() == _BODY_ONLY and value["body"].__class__ is str:
            http_response = _new_response("send", 200, None, (), None, to_utf8(value["body"]), None, None)
        else:
            return _parse_item(raw, channel, _JSON_READER)
    assert channel is not None
    return _new_item(channel, item_id, prev_id, {}, None, False, http_response, http_stream, ws_message)


# --- whole bodies and frames -----------------------------------------------------------------

_JSON_READER = _Reader(tnet=False, plain=True)
_TNET_READER = _Reader(tnet=True)


def parse_publish_body(body: bytes) -> list[Item]:
    """
    Parse the control API's C{POST /publish/} body, C{{"items": [...]}}, all or nothing.
    Raises L{PublishBodyError} with the exact 400 text (without its trailing newline).
    """
    try:
        doc = loads_json(body)
    except ValueError:
        raise PublishBodyError(_NOT_JSON) from None
    if not isinstance(doc, dict):
        raise PublishBodyError("Invalid format.")
    if "items" not in doc:
        raise PublishBodyError("Invalid format: object does not contain 'items'")
    raw_items = doc["items"]
    if not isinstance(raw_items, list):
        raise PublishBodyError("Invalid format: object contains 'items' with wrong type")
    try:
        return [_parse_json_item(raw) for raw in raw_items]
    except ItemError as e:
        raise PublishBodyError(f"Invalid format: {e}") from None


def parse_zmq_item(frame: bytes, *, channel: str | None = None) -> Item:
    """
    Decode one ZMQ item frame (§6.3): C{J} + JSON, C{T} + tnetstring, or a bare tnetstring.
    As in Pushpin, bytes after the tnetstring are ignored. Raises L{ItemError}; frames that do
    not decode carry Pushpin's log text (C{received message with invalid format (...)}).
    """
    if frame[:1] == b"J":
        try:
            doc = loads_json(frame[1:])
        except ValueError:
            raise ItemError("received message with invalid format (json parse failed)") from None
        if not isinstance(doc, dict):
            raise ItemError("received message with invalid format (not a valid json object)")
        return _parse_json_item(doc, channel)
    try:
        value, _rest = tnetstring.pop(frame[1:] if frame[:1] == b"T" else frame)
    except tnetstring.TnetstringError:
        raise ItemError("received message with invalid format (tnetstring parse failed)") from None
    return _parse_item(value, channel, _TNET_READER)
