# -*- test-case-name: tests.protocol.test_wscontrol -*-
"""
GRIP over WebSockets: the C{grip} extension an origin accepts, and the control messages it
sends (reference §8.1, §8.3).

On a GRIP route Pushpin offers C{Sec-WebSocket-Extensions: grip} to the origin. If the
origin's handshake response (or WebSocket-over-HTTP OPEN response) accepts it, the connection
is in GRIP mode: an origin text message starting with C{c:} is a control message (a JSON
object such as C{{"type": "subscribe", "channel": "news"}}), any other origin message must
start with the message prefix (default C{m:}, which is stripped) or is dropped. This module
reads the extension header, sorts origin messages into those three cases, and parses control
messages into frozen values. It is pure: no I/O, no clock, no logging; the caller logs a
L{WsControlError} and ignores the message, as Pushpin does.

The rules follow Pushpin 1.36: C{src/proxy/wsproxysession.cpp} (C{getExtension},
C{parseParams}, C{tryReadOut}), C{src/handler/wscontrolmessage.cpp} (field validation, whose
error texts are kept) and C{src/handler/handlerengine.cpp} (defaults and normalisation).
Quirks kept on purpose (those marked I{observed} were checked against the real Pushpin
1.36.0 over WebSocket-over-HTTP):

  - C{content-bin} without C{message-type} is sent as a I{text} message: the type defaults
    to text before the content is looked at (observed: a text frame C{hi} for
    C{{"type": "send-delayed", "content-bin": "aGk="}});
  - C{timeout} is whole seconds read as Qt's C{QVariant::toInt} reads it (C{2.5} is 3,
    C{"30"} is 30, C{"abc"} and C{true} are 0 and 1), negative is an error, 0 means the
    default; it is only read (and checked) when the message has content (observed:
    C{"timeout": "1"} works; a C{send-delayed} without content and with C{"timeout":
    "junk"} sends an empty text frame after 1 s);
  - an empty C{content} is a real, empty message (observed: keep-alives of empty frames);
  - JSON C{null} is a wrong type for every field, optional ones included (observed:
    C{set-meta} with C{"value": null} is refused, the meta is not deleted);
  - an unknown keep-alive C{mode} means C{idle} (observed);
  - C{content-bin} is decoded like C{QByteArray::fromBase64}: bytes outside the alphabet
    are skipped;
  - the extension name is matched case-sensitively; a C{message-prefix} parameter without
    C{=} is an empty prefix; a parameter list that does not parse (C{grip;
    message-prefix=} at the very end, an unterminated quote) turns GRIP mode off (all
    observed, as is a quoted prefix with a backslash escape).

Not checked here because they depend on connection state: the limit of subscriptions per
connection (C{connection_subscription_max}, default 20; an extra C{subscribe} is ignored)
and C{unsubscribe} leaving a route's implicit channels in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence, TypeAlias

from pushpin_tx.protocol.qt.jsonvalues import loads_json
from pushpin_tx.protocol.qt.numbers import variant_to_int
from pushpin_tx.protocol.qt.strings import from_base64, to_utf8
from pushpin_tx.protocol.qt.headervalues import split_header

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_MESSAGE_PREFIX",
    "KEEP_ALIVE_TIMEOUT_DEFAULT",
    "SEND_DELAYED_TIMEOUT_DEFAULT",
    "ControlMessage",
    "Detach",
    "FlushDelayed",
    "KeepAlive",
    "MessageType",
    "SendDelayed",
    "Session",
    "SetMeta",
    "Subscribe",
    "Unsubscribe",
    "WsControlError",
    "parse_control_message",
    "parse_grip_extension",
    "split_grip_text",
]

#: What starts a control message in an origin text message.
CONTROL_PREFIX = b"c:"
#: The message prefix when the C{grip} extension names none.
DEFAULT_MESSAGE_PREFIX = b"m:"
#: Seconds between keep-alive messages when C{timeout} is absent or 0.
KEEP_ALIVE_TIMEOUT_DEFAULT = 55
#: Seconds before a delayed message is sent when C{timeout} is absent or 0.
SEND_DELAYED_TIMEOUT_DEFAULT = 1

#: The frame type of a keep-alive or delayed message.
MessageType: TypeAlias = Literal["text", "binary", "ping", "pong"]
_MESSAGE_TYPES: dict[str, MessageType] = {"text": "text", "binary": "binary", "ping": "ping", "pong": "pong"}

# Pushpin's names for the object in its error messages (kept verbatim for the logs).
_OBJ = "grip control object"


class WsControlError(ValueError):
    """A control message that Pushpin would log and ignore; the message says why."""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """
    Subscribe the connection to C{channel} (the route's channel prefix not yet applied). With
    C{prefix} (C{"prefix": true} in the message) C{channel} is a channel-name prefix: every
    channel whose name starts with it.
    """

    channel: str
    filters: tuple[str, ...] = ()
    prefix: bool = False
    #: C{"prev-id"}: reliable mode for this channel (WebSocket-over-HTTP), starting after this id
    prev_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Unsubscribe the connection from C{channel} (prefix not yet applied); a prefix subscription with C{prefix}."""

    channel: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Detach:
    """Stop relaying between client and origin; close the origin leg, keep the client."""


@dataclass(frozen=True, slots=True)
class Session:
    """Set the connection's GRIP session id, or clear it when C{id} is None (absent or empty)."""

    id: str | None


@dataclass(frozen=True, slots=True)
class SetMeta:
    """Set connection meta C{name} to C{value} (which may be empty), or delete it when None."""

    name: str
    value: str | None


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """
    Send C{content} to the client as a C{message_type} frame every C{timeout} seconds:
    after C{timeout} seconds without a message to the client in C{"idle"} mode, regardless
    in C{"interval"} mode. C{content} None (no C{content}/C{content-bin}) turns keep-alives
    off; C{b""} is a real, empty keep-alive message.
    """

    content: bytes | None
    message_type: MessageType = "text"
    timeout: int = KEEP_ALIVE_TIMEOUT_DEFAULT
    mode: Literal["idle", "interval"] = "idle"


@dataclass(frozen=True, slots=True)
class SendDelayed:
    """
    Send C{content} as a C{message_type} frame after C{timeout} seconds unless flushed or
    replaced by another C{send-delayed} (which first flushes this one). Without
    C{content}/C{content-bin} the message is empty.
    """

    content: bytes = b""
    message_type: MessageType = "text"
    timeout: int = SEND_DELAYED_TIMEOUT_DEFAULT


@dataclass(frozen=True, slots=True)
class FlushDelayed:
    """Send the pending delayed message now, if there is one."""


ControlMessage: TypeAlias = (
    Subscribe | Unsubscribe | Detach | Session | SetMeta | KeepAlive | SendDelayed | FlushDelayed
)


def parse_control_message(payload: bytes) -> ControlMessage:
    """
    Parse the JSON of a control message (the bytes after C{c:}).

    @raise WsControlError: not a JSON object, an unknown C{type}, or a field of the wrong
        type or value. The text is Pushpin's, e.g. C{grip control object contains 'channel'
        with invalid value}.
    """
    try:
        doc = loads_json(payload)
    except ValueError as e:
        raise WsControlError(f"grip control message is not valid json ({e})") from None
    if not isinstance(doc, dict):
        raise WsControlError("grip control packet is not an object")
    kind = _get_str(doc, "type", required=True)
    if kind in ("subscribe", "unsubscribe"):
        channel = _get_str(doc, "channel", required=True)
        if not channel:
            raise WsControlError(f"{_OBJ} contains 'channel' with invalid value")
        prefix = _get_bool(doc, "prefix")
        if kind == "unsubscribe":
            return Unsubscribe(channel, prefix)
        filters = _get_filters(doc)
        prev_id = _get_str(doc, "prev-id")
        if prev_id is not None and prefix:
            raise WsControlError(f"{_OBJ} contains 'prev-id' with 'prefix'")
        return Subscribe(channel, filters, prefix, prev_id)
    if kind == "detach":
        return Detach()
    if kind == "session":
        return Session(_get_str(doc, "id") or None)
    if kind == "set-meta":
        name = _get_str(doc, "name", required=True)
        if not name:
            raise WsControlError(f"{_OBJ} contains 'name' with invalid value")
        return SetMeta(name, _get_str(doc, "value"))
    if kind in ("keep-alive", "send-delayed"):
        return _parse_delivery(doc, kind)
    if kind == "flush-delayed":
        return FlushDelayed()
    raise WsControlError(f"'type' contains unknown value: {kind}")


def _get_str(doc: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """C{VariantUtil::getString}: None when absent (an error if required); null is a wrong type."""
    if key not in doc:
        if required:
            raise WsControlError(f"{_OBJ} does not contain '{key}'")
        return None
    value = doc[key]
    if not isinstance(value, str):
        raise WsControlError(f"{_OBJ} contains '{key}' with wrong type")
    return value


def _get_bool(doc: dict[str, Any], key: str) -> bool:
    """An optional boolean member: False when absent, an error when not C{true} or C{false}."""
    if key not in doc:
        return False
    value = doc[key]
    if not isinstance(value, bool):
        raise WsControlError(f"{_OBJ} contains '{key}' with wrong type")
    return value


def _get_filters(doc: dict[str, Any]) -> tuple[str, ...]:
    if "filters" not in doc:
        return ()
    value = doc["filters"]
    if not isinstance(value, list):
        raise WsControlError(f"{_OBJ} contains 'filters' with wrong type")
    if not all(isinstance(name, str) for name in value):
        raise WsControlError("filters contains value with wrong type")
    return tuple(value)


def _parse_delivery(doc: dict[str, Any], kind: str) -> KeepAlive | SendDelayed:
    """The shared fields of C{keep-alive} and C{send-delayed}, checked in Pushpin's order."""
    message_type: MessageType = "text"
    type_text = _get_str(doc, "message-type")
    if type_text is not None:
        if type_text not in _MESSAGE_TYPES:
            raise WsControlError(f"{_OBJ} contains 'message-type' with unknown value")
        message_type = _MESSAGE_TYPES[type_text]
    content: bytes | None = None
    if "content-bin" in doc:
        encoded = doc["content-bin"]
        if not isinstance(encoded, str):
            raise WsControlError(f"{_OBJ} contains 'content-bin' with wrong type")
        content = from_base64(to_utf8(encoded))
    elif "content" in doc:
        text = doc["content"]
        if not isinstance(text, str):
            raise WsControlError(f"{_OBJ} contains 'content' with wrong type")
        content = to_utf8(text)
    timeout = 0
    if content is not None and "timeout" in doc:
        converted = variant_to_int(doc["timeout"])
        if converted is None:
            raise WsControlError(f"{_OBJ} contains 'timeout' with wrong type")
        if converted < 0:
            raise WsControlError(f"{_OBJ} contains 'timeout' with invalid value")
        timeout = converted
    if kind == "send-delayed":
        return SendDelayed(content or b"", message_type, timeout or SEND_DELAYED_TIMEOUT_DEFAULT)
    mode_text = _get_str(doc, "mode")
    mode: Literal["idle", "interval"] = "interval" if mode_text == "interval" else "idle"
    return KeepAlive(content, message_type, timeout or KEEP_ALIVE_TIMEOUT_DEFAULT, mode)


def parse_grip_extension(values: Sequence[bytes]) -> tuple[bool, bytes]:
    """
    Read the origin's C{Sec-WebSocket-Extensions} header values (every such header, in
    order): C{(True, prefix)} when the C{grip} extension is accepted, else C{(False, b"")}.

    Values are split at commas outside quotes; the first element named exactly C{grip}
    (case-sensitive) counts and other extensions are ignored. The prefix is its
    C{message-prefix} parameter (quoted or not; C{message-prefix=""} is C{b""}) or
    L{DEFAULT_MESSAGE_PREFIX}.
    """
    for value in values:
        for element in split_header(value):
            semi = element.find(b";")
            if semi == -1:
                if element == b"grip":
                    return True, DEFAULT_MESSAGE_PREFIX
                continue
            if element[:semi].strip() != b"grip":
                continue
            params = _extension_params(element[semi + 1 :])
            if params is None:
                return False, b""
            return True, params.get(b"message-prefix", DEFAULT_MESSAGE_PREFIX)
    return False, b""


def _extension_params(text: bytes) -> dict[bytes, bytes] | None:
    """
    C{wsproxysession.cpp}'s C{parseParams}: C{k=v; k="q\\"v"; flag}, later keys winning,
    None on a C{=} that ends the text, a dangling backslash or an unterminated quote. It
    differs from the header parser in L{pushpin_tx.protocol.qt.headervalues} on those first two points, and
    in giving a parameter without a value an empty (not null) value.
    """
    out: dict[bytes, bytes] = {}
    start = 0
    size = len(text)
    while start < size:
        at = _find_any(text, b"=;", start)
        if at == -1:
            out[text[start:].strip()] = b""
            break
        name = text[start:at].strip()
        if text[at] == ord(";"):
            out[name] = b""
            start = at + 1
            continue
        at += 1
        if at >= size:
            return None
        if text[at] != ord('"'):
            semi = text.find(b";", at)
            end = size if semi == -1 else semi
            out[name] = text[at:end].strip()
            start = end + 1
            continue
        value = bytearray()
        n = at + 1
        while True:
            if n >= size:
                return None
            c = text[n]
            if c == ord("\\"):
                if n + 1 >= size:
                    return None
                value.append(text[n + 1])
                n += 2
            elif c == ord('"'):
                break
            else:
                value.append(c)
                n += 1
        out[name] = bytes(value)
        semi = text.find(b";", n + 1)
        start = size if semi == -1 else semi + 1
    return out


def _find_any(text: bytes, chars: bytes, start: int) -> int:
    for n in range(start, len(text)):
        if text[n] in chars:
            return n
    return -1


def split_grip_text(
    payload: bytes, prefix: bytes, *, binary: bool = False
) -> tuple[Literal["control", "message", "drop"], bytes]:
    """
    Sort one complete origin message in GRIP mode: C{("control", json)} for a text message
    starting with C{c:} (the JSON after it), C{("message", rest)} when it starts with
    C{prefix} (stripped; an empty prefix lets every message through), C{("drop", b"")}
    otherwise. A binary message (C{binary=True}) is never a control message but must carry
    the prefix all the same.

    Pushpin only treats a single-frame text message as control: a fragmented C{c:} message,
    and over WebSocket-over-HTTP a C{c:} TEXT event longer than 16384 bytes (which Pushpin
    splits into frames), is dropped (observed: a 17000-byte C{subscribe} is ignored, a
    16000-byte one works). The caller, which knows about frames, must do the same.
    """
    if not binary and payload.startswith(CONTROL_PREFIX):
        return "control", payload[len(CONTROL_PREFIX) :]
    if payload.startswith(prefix):
        return "message", payload[len(prefix) :]
    return "drop", b""
