# -*- test-case-name: tests.protocol.test_wsevents -*-
"""
The C{application/websocket-events} codec of WebSocket-over-HTTP (reference §8.2).

With an C{over_http} target, each WebSocket connection is carried to the origin as a series
of HTTP POSTs whose request and response bodies are lists of events::

    OPEN\\r\\n
    TEXT 5\\r\\nhello\\r\\n            type, space, content length in hex, CRLF, content, CRLF
    CLOSE 2\\r\\n\\x03\\xe8\\r\\n
    DISCONNECT\\r\\n

This module turns those bodies into L{WsEvent} values and back, and cuts the queue of client
events into request bodies the way Pushpin does. It is pure: no I/O, no clock, no logging.

The rules follow Pushpin 1.36 (C{src/proxy/websocketoverhttp.cpp}: C{encodeEvents},
C{decodeEvents}, C{update()}):

  - an event is written bare (C{TYPE\\r\\n}) when its content is empty, for every type.
    Pushpin sends PING/PONG without content when the payload is empty, a CLOSE without a code
    bare, and an empty TEXT or BINARY message bare too (its content is a null byte array;
    observed on 1.36.0: empty text, binary and ping frames from a client reach the origin as
    C{TEXT\\r\\n}, C{BINARY\\r\\n}, C{PING\\r\\n}), so C{TEXT\\r\\n} and C{TEXT 0\\r\\n\\r\\n}
    both mean an empty text message;
  - lengths are written in lowercase hex and read as Qt's C{QByteArray::toInt(&ok, 16)} reads
    them: either case, an optional C{+}, an optional C{0x}, surrounding whitespace allowed;
  - event types Pushpin does not know (including lower-case ones such as C{text}) are kept
    rather than refused: Pushpin decodes them and then ignores them, and a caller checking
    that the first event of the OPEN response is C{OPEN} must see them to do the same.

Where Pushpin is looser, this decoder is strict on purpose and raises L{WsEventsError}
(the session then fails as Pushpin does for a body it cannot decode): Pushpin silently takes
a short content when a declared length runs past the end of the body, never checks the two
bytes after a content (they are skipped whatever they are), reads a negative length (which
can send its parser backwards), and reads a length of only spaces as 0. Observed on 1.36.0:
an OPEN response C{OPEN\\r\\nTEXT 5\\r\\nhel} gives the client a text frame C{hel}, and
C{TEXT 2\\r\\nhiXXTEXT 1\\r\\na\\r\\n} gives C{hi} then C{a}; C{TEXT 0xA}, C{TEXT  +b } and
C{TEXT C} are read as lengths 10, 11 and 12; C{FOO 3} and C{text 2} events are ignored.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Iterable

from pushpin_tx.protocol.qt.numbers import bytearray_to_int

__all__ = [
    "BATCH_CONTENT_MAX",
    "CONTENT_TYPE",
    "EVENT_TYPES",
    "RESPONSE_BODY_MAX",
    "EventBatcher",
    "WsEvent",
    "WsEventsError",
    "close_content",
    "decode_events",
    "encode_event",
    "encode_events",
    "parse_close_content",
]

#: The media type of event bodies, in both directions (Pushpin compares it exactly).
CONTENT_TYPE = b"application/websocket-events"

#: The event types Pushpin sends or acts on.
EVENT_TYPES = frozenset({"OPEN", "TEXT", "BINARY", "PING", "PONG", "CLOSE", "DISCONNECT"})

#: Client message bytes Pushpin puts in one request before it stops adding messages
#: (C{BUFFER_SIZE}); the message that crosses the limit is still included.
BATCH_CONTENT_MAX = 200_000

#: The largest origin response body Pushpin reads (C{RESPONSE_BODY_MAX}); beyond it the
#: connection fails.
RESPONSE_BODY_MAX = 1_000_000

# Events that are not client messages (their content does not count against BATCH_CONTENT_MAX).
_SESSION_TYPES = frozenset({"OPEN", "CLOSE", "DISCONNECT"})

_INT32_MAX = 2**31 - 1
# A type we write must survive the round trip: printable ASCII, no space (the length
# separator), not empty.
_TYPE_TOKEN = re.compile(r"[!-~]+\Z")


class WsEventsError(ValueError):
    """An event body (or close payload) that cannot be decoded, or an event that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class WsEvent:
    """
    One WebSocket-over-HTTP event.

    @ivar type: C{OPEN}, C{TEXT}, C{BINARY}, C{PING}, C{PONG}, C{CLOSE} or C{DISCONNECT};
        a decoded body may also hold types outside L{EVENT_TYPES} (see L{known}).
    @ivar content: the payload; for C{CLOSE}, see L{close_content}. Empty when absent.
    """

    type: str
    content: bytes = b""

    @property
    def known(self) -> bool:
        """Whether Pushpin acts on this type (unknown types are ignored by the receiver)."""
        return self.type in EVENT_TYPES


def encode_event(event: WsEvent) -> bytes:
    """
    Write one event: C{TYPE HEXLEN\\r\\nCONTENT\\r\\n}, or C{TYPE\\r\\n} when the content is empty.

    @raise WsEventsError: the type is empty or not a printable ASCII token without spaces.
    """
    if not _TYPE_TOKEN.match(event.type):
        raise WsEventsError(f"cannot encode event type {event.type!r}")
    head = event.type.encode("ascii")
    if not event.content:
        return head + b"\r\n"
    return b"%s %x\r\n%s\r\n" % (head, len(event.content), event.content)


def encode_events(events: Iterable[WsEvent]) -> bytes:
    """Write a body holding C{events} in order (an empty iterable gives an empty body)."""
    return b"".join(encode_event(event) for event in events)


def decode_events(body: bytes) -> list[WsEvent]:
    """
    Read every event of a body. An empty body holds no events.

    @raise WsEventsError: a type line without CRLF, a bad length, a content running past the
        end of the body, or a content not followed by CRLF. The message says which event
        (counted from 1) and at which byte offset.
    """
    # gripcontrol.decode_websocket_events reads this format too, but it is as loose as Pushpin
    # (no truncation or CRLF checks), raises bare ValueErrors and gives None for bare events.
    events: list[WsEvent] = []
    pos = 0
    size = len(body)
    while pos < size:
        where = f"event {len(events) + 1} at byte {pos}"
        eol = body.find(b"\r\n", pos)
        if eol == -1:
            raise WsEventsError(f"{where}: type line is not terminated by CRLF")
        line = body[pos:eol]
        pos = eol + 2
        space = line.find(b" ")
        if space == -1:
            events.append(WsEvent(line.decode("latin-1")))
            continue
        length = _parse_length(line[space + 1 :], where)
        end = pos + length
        if end > size:
            raise WsEventsError(f"{where}: content of {length} bytes is truncated ({size - pos} available)")
        if body[end : end + 2] != b"\r\n":
            raise WsEventsError(f"{where}: content of {length} bytes is not followed by CRLF")
        # latin-1 maps bytes 1:1, so an unknown (even non-ASCII) type is kept exactly.
        events.append(WsEvent(line[:space].decode("latin-1"), body[pos:end]))
        pos = end + 2
    return events


def _parse_length(text: bytes, where: str) -> int:
    """
    A content length as Pushpin reads it, with C{QByteArray::toInt(&ok, 16)}, limited to a
    32-bit int. A C{-} sign is refused here although Qt takes it (see the module docstring).
    """
    length = bytearray_to_int(text, base=16, bits=64)
    if length is None or text.lstrip(b" \t\n\v\f\r").startswith(b"-"):
        raise WsEventsError(f"{where}: bad content length {text!r} (expected hex digits)")
    if length > _INT32_MAX:
        raise WsEventsError(f"{where}: content length {text!r} is out of range")
    return length


def close_content(code: int | None, reason: bytes = b"") -> bytes:
    """
    The content of a C{CLOSE} event: the code as 2 bytes big-endian, then the UTF-8 reason;
    empty (a bare C{CLOSE}) when there is no code.

    @raise WsEventsError: a code outside 0..65535, or a reason without a code (a WebSocket
        close frame cannot carry one).
    """
    if code is None:
        if reason:
            raise WsEventsError("a close reason needs a close code")
        return b""
    if not 0 <= code <= 0xFFFF:
        raise WsEventsError(f"close code {code} does not fit in 2 bytes")
    return code.to_bytes(2, "big") + reason


def parse_close_content(content: bytes) -> tuple[int | None, bytes]:
    """
    Read the content of a C{CLOSE} event: C{(code, reason)}, or C{(None, b"")} when empty.

    @raise WsEventsError: a 1-byte content. (Pushpin itself reads that as a close without a
        code; a caller wanting the same can catch this and use C{(None, b"")}.)
    """
    if not content:
        return None, b""
    if len(content) < 2:
        raise WsEventsError("close content of 1 byte has no room for a code")
    return int.from_bytes(content[:2], "big"), content[2:]


class EventBatcher:
    """
    The client events waiting to be POSTed to the origin, taken out one request at a time.

    L{take_batch} follows Pushpin's C{update()}: C{OPEN} and C{DISCONNECT} always travel
    alone; messages are added while fewer than C{max_content} message bytes have been added
    (so the message that crosses the limit is still included); a C{CLOSE} ends the batch and
    is added even past the byte limit; with C{one_event}, every batch holds one event. The
    flow control that stops a client from queueing more than that in the first place (and
    keeping only one request outstanding) is the caller's job.
    """

    def __init__(self, *, one_event: bool = False, max_content: int = BATCH_CONTENT_MAX) -> None:
        self._one_event = one_event
        self._max_content = max_content
        self._pending: deque[WsEvent] = deque()
        self._pending_content = 0

    def push(self, event: WsEvent) -> None:
        """Queue an event behind the ones already pending."""
        self._pending.append(event)
        self._pending_content += _message_size(event)

    def __len__(self) -> int:
        """How many events are pending."""
        return len(self._pending)

    @property
    def pending_content(self) -> int:
        """The message bytes pending (content of every event but OPEN, CLOSE and DISCONNECT)."""
        return self._pending_content

    def take_batch(self) -> list[WsEvent]:
        """Remove and return the events of the next request body (empty when nothing is pending)."""
        pending = self._pending
        if not pending:
            return []
        if pending[0].type in ("OPEN", "DISCONNECT"):
            return [self._pop()]
        batch: list[WsEvent] = []
        content = 0
        while pending and not (self._one_event and batch):
            head = pending[0]
            if head.type in ("OPEN", "DISCONNECT"):
                break
            if head.type == "CLOSE":
                batch.append(self._pop())
                break
            if content >= self._max_content:
                break
            batch.append(self._pop())
            content += _message_size(head)
        return batch

    def _pop(self) -> WsEvent:
        event = self._pending.popleft()
        self._pending_content -= _message_size(event)
        return event


def _message_size(event: WsEvent) -> int:
    return 0 if event.type in _SESSION_TYPES else len(event.content)
