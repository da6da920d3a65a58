# -*- test-case-name: tests.protocol.test_grip -*-
"""
GRIP instructions: decide whether an origin response is one, and parse it into an L{Instruct}.

An origin tells Pushpin what to do with a request through C{Grip-*} response headers (the
header form, any status code) or through an C{application/grip-instruct} JSON body (the JSON
form, status 200). Both end up as one frozen L{Instruct}: hold mode, channels, timeouts,
keep-alive, subscription meta, next link, and the L{Response} the client will eventually get.
Errors raise L{InstructError}, whose text is what Pushpin shows in debug mode after
C{Failed to parse accept instructions: }.

The rules follow Pushpin 1.36's C{Instruct::fromResponse} (C{src/handler/instruct.cpp}) and
the header helpers it uses (ported in L{pushpin_tx.protocol.qt.headervalues}); see reference §4.2, §5.1-§5.4.
Pure code: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from pushpin_tx.protocol.gripjson import DEFAULT_KEEP_ALIVE_TIMEOUT, JsonInstructError, apply_json
from pushpin_tx.protocol.headers import Headers
from pushpin_tx.protocol.qt import headervalues as qp
from pushpin_tx.protocol.qt.numbers import bytearray_to_int
from pushpin_tx.protocol.qt.strings import from_base64, from_utf8

__all__ = [
    "InstructError",
    "Channel",
    "KeepAlive",
    "Response",
    "NextLink",
    "gone_link_of",
    "Instruct",
    "is_grip_instruct",
    "parse_instruct",
    "parse_grip_status",
    "reason_phrase",
]

DEFAULT_RESPONSE_TIMEOUT = 55
MINIMUM_RESPONSE_TIMEOUT = 5
MINIMUM_KEEP_ALIVE_TIMEOUT = 1
DEFAULT_NEXT_LINK_TIMEOUT = 120

GRIP_INSTRUCT_TYPE = b"application/grip-instruct"

# Never passed on to the client: recomputed (Content-Length) or hop-by-hop / already decoded.
_DROPPED_HEADERS = frozenset(
    {b"content-length", b"connection", b"keep-alive", b"content-encoding", b"transfer-encoding"}
)

# Pushpin's StatusReasons table (src/core/statusreasons.cpp), checked against the strings in the
# 1.36.0 pushpin-handler binary. Deliberately not http.HTTPStatus: the texts differ (413, 414, 416...).
_REASONS: dict[int, bytes] = {
    100: b"Continue", 101: b"Switching Protocols", 102: b"Processing",
    200: b"OK", 201: b"Created", 202: b"Accepted", 203: b"Non-Authoritative Information",
    204: b"No Content", 205: b"Reset Content", 206: b"Partial Content", 207: b"Multi-Status",
    208: b"Already Reported", 226: b"IM Used",
    300: b"Multiple Choices", 301: b"Moved Permanently", 302: b"Found", 303: b"See Other",
    304: b"Not Modified", 305: b"Use Proxy", 306: b"Reserved", 307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 402: b"Payment Required", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 406: b"Not Acceptable",
    407: b"Proxy Authentication Required", 408: b"Request Timeout", 409: b"Conflict", 410: b"Gone",
    411: b"Length Required", 412: b"Precondition Failed", 413: b"Request Entity Too Large",
    414: b"Request-URI Too Long", 415: b"Unsupported Media Type",
    416: b"Requested Range Not Satisfiable", 417: b"Expectation Failed",
    422: b"Unprocessable Entity", 423: b"Locked", 424: b"Failed Dependency",
    426: b"Upgrade Required", 428: b"Precondition Required", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates", 507: b"Insufficient Storage", 508: b"Loop Detected",
    510: b"Not Extended", 511: b"Network Authentication Required",
}  # fmt: skip
_UNDEFINED_REASON = b"Undefined Reason"

# Characters a host may not contain (QUrl rejects them); anything else, IDN letters included, passes.
_BAD_HOST_CHARS = re.compile(r"[\s\x00-\x1f\x7f\"#%/<>?@\[\\\]^`{|}]")
# Percent-encode what may not appear raw in a URI, as QUrl's tolerant mode does.
_URI_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


class InstructError(Exception):
    """The origin's GRIP instruction is invalid; C{str(e)} is Pushpin's debug-mode reason."""


@dataclass(frozen=True, slots=True)
class Channel:
    """
    A channel to subscribe: its full name (route prefix included), prev-id and filters. With
    C{prefix} set (C{Grip-Channel: news.; prefix}) C{name} is a channel-name prefix: the hold
    takes every channel whose name starts with it. A prefix channel has no prev-id.
    """

    name: str
    prev_id: str | None
    filters: tuple[str, ...]
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Stream keep-alive: C{data} written every C{timeout} seconds ("idle" or "interval" timing)."""

    data: bytes
    timeout: int
    mode: str


@dataclass(frozen=True, slots=True)
class Response:
    """The response the client gets (stream start, timeout or no-hold response). Treat as immutable."""

    code: int
    reason: bytes
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class NextLink:
    """C{Grip-Link: <uri>; rel=next}: absolute URI to fetch next, and its idle timeout in seconds."""

    uri: str
    timeout: int


@dataclass(frozen=True, slots=True)
class Instruct:
    """A parsed GRIP instruction. C{hold} is C{None}, C{"response"} or C{"stream"}."""

    hold: str | None
    channels: tuple[Channel, ...]
    timeout: int
    keep_alive: KeepAlive | None
    meta: dict[str, str]
    response: Response
    next_link: NextLink | None
    #: C{Grip-Link: <uri>; rel=gone} (Pushpin 1.41), absolute: POSTed to when the session ends
    gone_link: str | None = None


def reason_phrase(code: int) -> bytes:
    """The reason phrase Pushpin uses for C{code}; C{b"Undefined Reason"} when it has none."""
    return _REASONS.get(code, _UNDEFINED_REASON)


def is_grip_instruct(headers: Headers) -> bool:
    """
    Whether an origin response carries GRIP instructions (§4.2): any header name starts with
    C{Grip-} (case-insensitive), or the first C{Content-Type} up to its first C{;} is exactly
    C{application/grip-instruct}. Observed on 1.36.0, that comparison is case-sensitive and
    untrimmed: C{Application/Grip-Instruct} and C{application/grip-instruct ; charset=utf-8}
    are relayed as ordinary responses.
    """
    for name, _ in headers:
        if name[:5].lower() == b"grip-":  # (_is_grip, inline: every origin answer is asked)
            return True
    content_type = qp.first(headers, b"content-type")
    return content_type is not None and content_type.split(b";", 1)[0] == GRIP_INSTRUCT_TYPE


def gone_link_of(headers: Headers, request_uri: str) -> str | None:
    """
    The absolute URI of a C{Grip-Link: <uri>; rel=gone} in an origin's headers (Pushpin 1.41:
    the header form only), None when there is none or it is malformed (the instruct's parse
    then refuses it).
    """
    found = None
    for params in qp.all_as_params(headers, b"grip-link"):
        if len(params) >= 2 and qp.param(params, b"rel") == b"gone":
            try:
                found = _link_of(params)
            except InstructError:
                return None
    return _absolute_uri(request_uri, found) if found is not None else None


def parse_grip_status(value: bytes) -> tuple[int, bytes]:
    """
    Parse a C{Grip-Status} value, C{CODE[ reason]}: the code must be an integer in 0-999, the
    reason (everything after the first space, spaces kept) defaults to L{reason_phrase}.
    """
    code_text, _, reason = value.partition(b" ")
    code = bytearray_to_int(code_text)
    if code is None or not 0 <= code <= 999:
        raise InstructError("Grip-Status contains invalid status code")
    return code, reason or reason_phrase(code)


def parse_instruct(
    code: int, reason: bytes, headers: Headers, body: bytes, *, request_uri: str, prefix: str = ""
) -> Instruct:
    """
    Parse an origin response that L{is_grip_instruct} accepted.

    C{request_uri} (absolute) resolves a relative C{Grip-Link}; C{prefix} (the route's channel
    prefix) is prepended to every channel name. Raises L{InstructError}.
    """
    draft = _Draft(code=code, reason=reason, body=body)
    present = _parse_headers(draft, headers)
    content_type = present.get(b"content-type")
    # the JSON form: the handler's test (getAsFirstParameter), trimmed but still case-sensitive
    if content_type is not None and content_type[0].split(b";", 1)[0].strip() == GRIP_INSTRUCT_TYPE:
        if code != 200:
            raise InstructError("response code for application/grip-instruct content must be 200")
        try:
            apply_json(draft, body)
        except JsonInstructError as e:
            raise InstructError(str(e)) from None
    return draft.finish(request_uri, prefix)


@dataclass(slots=True)
class _Draft:
    """Mutable collection point while the header form, then the JSON form (L{apply_json}), are read."""

    code: int
    reason: bytes
    body: bytes
    headers: Headers | None = None
    hold: str | None = None
    channels: list[tuple[str, str | None, list[str]]] | None = None
    #: C{Grip-Channel: <prefix>; prefix} subscriptions: (prefix, filters)
    prefix_channels: list[tuple[str, list[str]]] | None = None
    timeout: int | None = None
    ka_mode: str | None = None
    ka_data: bytes = b""
    ka_timeout: int | None = None
    meta: dict[str, str] | None = None
    link: str | None = None
    link_timeout: int = DEFAULT_NEXT_LINK_TIMEOUT
    gone: str | None = None

    def finish(self, request_uri: str, prefix: str) -> Instruct:
        """Apply defaults and clamps, check cross-field rules, build the frozen value."""
        channels = tuple([Channel(prefix + name, prev, tuple(f)) for name, prev, f in self.channels or ()])
        if self.prefix_channels:
            channels += tuple(Channel(prefix + name, None, tuple(f), True) for name, f in self.prefix_channels)
        next_link = None
        if self.link is not None:
            next_link = NextLink(_absolute_uri(request_uri, self.link), self.link_timeout)
        # A stream hold whose channels carry prev-id but no next link parses: Pushpin 1.36
        # rejects it only once the initial response has gone out (httpsession.cpp,
        # prepareToSendQueueOrHold), so the client gets that response, complete, and no hold.
        # The acceptor (web/accept.py) and a stream's recovery (core/hold.py) act on it.
        keep_alive = None
        if self.ka_timeout is not None and self.ka_data:
            # JSON-only keep-alive has no mode: Pushpin re-arms it after each send but never on
            # published data, which is interval timing.
            keep_alive = KeepAlive(
                self.ka_data, max(self.ka_timeout, MINIMUM_KEEP_ALIVE_TIMEOUT), self.ka_mode or "interval"
            )
        timeout = self.timeout if self.timeout is not None else DEFAULT_RESPONSE_TIMEOUT
        # GRIP headers never reach the client (§5.1). Observed on 1.36.0, Pushpin does pass on
        # Grip-* names listed in a JSON instruct's own response headers; they are dropped here too.
        headers = [(k, v) for k, v in self.headers or () if k[:5].lower() != b"grip-" and k.lower() not in _DROPPED_HEADERS]
        # built through the slot descriptors: the same values as Instruct(...) and
        # Response(...), without the frozen dataclasses' object.__setattr__ per field
        response = _new(Response)
        _set_code(response, self.code)
        _set_reason(response, self.reason or reason_phrase(self.code))
        _set_headers(response, headers)
        _set_body(response, self.body)
        instruct = _new(Instruct)
        _set_hold(instruct, self.hold)
        _set_channels(instruct, channels)
        _set_timeout(instruct, max(timeout, MINIMUM_RESPONSE_TIMEOUT))
        _set_keep_alive(instruct, keep_alive)
        _set_meta(instruct, dict(self.meta or {}))
        _set_response(instruct, response)
        _set_next_link(instruct, next_link)
        _set_gone_link(instruct, _absolute_uri(request_uri, self.gone) if self.gone is not None else None)
        return instruct


_new = object.__new__
_set_code, _set_reason, _set_headers, _set_body = (
    Response.__dict__[name].__set__ for name in ("code", "reason", "headers", "body")
)
_set_hold, _set_channels, _set_timeout, _set_keep_alive, _set_meta, _set_response, _set_next_link, _set_gone_link = (
    Instruct.__dict__[name].__set__
    for name in ("hold", "channels", "timeout", "keep_alive", "meta", "response", "next_link", "gone_link")
)


def _is_grip(name: bytes) -> bool:
    return name[:5].lower() == b"grip-"


def _text(value: bytes | None) -> str:
    return from_utf8(value or b"")


# -- header form (§5.1) ------------------------------------------------------------------------


def _parse_headers(draft: _Draft, headers: Headers) -> dict[bytes, list[bytes]]:
    """
    Read the header form into C{draft}; return the headers' values by lower-cased name, in
    order. Every header name is lower-cased once, here: most GRIP headers are absent from
    a given answer, and each lookup would otherwise scan and lower-case every header again
    (C{qp.first} is the first of a name's values, C{qp.all_as_params} parses each in order).
    """
    present: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        key = name.lower()
        values = present.get(key)
        if values is None:
            present[key] = [value]
        else:
            values.append(value)
    hold_values = present.get(b"grip-hold")
    hold = hold_values[0] if hold_values is not None else None
    if hold is not None:
        if hold not in (b"response", b"stream"):
            raise InstructError("Grip-Hold must be set to either 'response' or 'stream'")
        draft.hold = hold.decode()

    draft.channels = []
    channel_values = present.get(b"grip-channel")
    for params in _channel_params(channel_values) if channel_values is not None else ():
        prev_id = qp.param(params, b"prev-id")
        filters = [_text(value) for key, value in params[1:] if key == b"filter"]
        if any(key.lower() == b"prefix" for key, _ in params[1:]):
            # a parameter, not a character of the name: no real channel name can collide with it
            if not params[0][0]:
                raise InstructError("Grip-Channel with 'prefix' must name a non-empty prefix")
            if prev_id is not None:
                raise InstructError("Grip-Channel with 'prefix' cannot have a prev-id")
            if draft.prefix_channels is None:
                draft.prefix_channels = []
            draft.prefix_channels.append((_text(params[0][0]), filters))
            continue
        draft.channels.append((_text(params[0][0]), None if prev_id is None else _text(prev_id), filters))

    timeout_values = present.get(b"grip-timeout")
    timeout = timeout_values[0] if timeout_values is not None else None
    if timeout is not None:
        draft.timeout = bytearray_to_int(timeout)
        if draft.timeout is None:
            raise InstructError("failed to parse Grip-Timeout")
        if draft.timeout < 0:
            raise InstructError("Grip-Timeout has invalid value")

    keep_alive = present.get(b"grip-keep-alive")
    if keep_alive is not None:
        _parse_keep_alive_header(draft, keep_alive[0])

    draft.meta = {}
    set_meta = present.get(b"grip-set-meta")
    for params in qp.all_as_params(_named(set_meta), b"v", parse_first=True) if set_meta is not None else ():
        if not params:
            raise InstructError("Grip-Set-Meta cannot be empty")
        draft.meta[_text(params[0][0])] = _text(params[0][1])

    status_values = present.get(b"grip-status")
    status = status_values[0] if status_values is not None else None
    if status:
        draft.code, draft.reason = parse_grip_status(status)

    links = present.get(b"grip-link")
    for params in qp.all_as_params(_named(links), b"v") if links is not None else ():
        # Pushpin 1.36 looks only at rel=next links, 1.41 also at rel=gone; anything else is
        # ignored unvalidated.
        if len(params) >= 2:
            rel = qp.param(params, b"rel")
            if rel == b"next":
                _parse_next_link(draft, params)
            elif rel == b"gone":
                draft.gone = _link_of(params)

    expose_values = present.get(b"grip-expose-headers")
    expose = qp.all_values(_named(expose_values), b"v") if expose_values is not None else None
    if expose:
        allowed = {name.lower() for name in expose}
        draft.headers = [(k, v) for k, v in headers if k.lower() in allowed]
    else:
        draft.headers = list(headers)
    return present


def _named(values: list[bytes]) -> list[tuple[bytes, bytes]]:
    """One header's values as C{(b"v", value)} pairs, for the C{qp} helpers that take headers."""
    return [(b"v", value) for value in values]


def _channel_params(values: list[bytes]) -> list[list[qp.Param]]:
    """
    C{qp.all_as_params} of the C{Grip-Channel} header values C{values}, the same lists: a
    value with nothing to split or parse (no comma, semicolon or quote: one plain channel
    name, the usual case) is its own one parameter here, without the general parser's scan
    (a few per cent of opening a held stream); any other value takes the general parser.
    """
    out: list[list[qp.Param]] = []
    for value in values:
        if b"," in value or b";" in value or b'"' in value:
            out += qp.all_as_params([(b"v", value)], b"v")
        elif value:
            out.append([(value.strip(), None)])
    return out


def _parse_keep_alive_header(draft: _Draft, value: bytes | None) -> None:
    if not value:
        return
    params = qp.parse_params(value)
    if params is None:
        return  # Pushpin treats an unparsable value like an absent header
    data = params[0][0]
    if not data:
        raise InstructError("Grip-Keep-Alive cannot be empty")

    mode = qp.param(params, b"mode")
    if not mode or mode == b"idle":
        draft.ka_mode = "idle"
    elif mode == b"interval":
        draft.ka_mode = "interval"
    else:
        raise InstructError(f"no such Grip-Keep-Alive mode '{_text(mode)}'")

    if qp.has_param(params, b"timeout"):
        draft.ka_timeout = bytearray_to_int(qp.param(params, b"timeout") or b"")
        if draft.ka_timeout is None:
            raise InstructError("failed to parse Grip-Keep-Alive timeout value")
        if draft.ka_timeout < 0:
            raise InstructError("Grip-Keep-Alive timeout has invalid value")
    else:
        draft.ka_timeout = DEFAULT_KEEP_ALIVE_TIMEOUT

    fmt = qp.param(params, b"format")
    if not fmt or fmt == b"raw":
        draft.ka_data = data
    elif fmt == b"cstring":
        unescaped = qp.unescape_cstring(data)
        if unescaped is None:
            raise InstructError("failed to parse Grip-Keep-Alive cstring format")
        draft.ka_data = unescaped
    elif fmt == b"base64":
        draft.ka_data = from_base64(data)
    else:
        raise InstructError(f"no such Grip-Keep-Alive format '{_text(fmt)}'")


def _link_of(params: list[qp.Param]) -> str:
    raw = params[0][0]
    if len(raw) <= 2 or raw[:1] != b"<" or raw[-1:] != b">":
        raise InstructError("failed to parse Grip-Link value")
    link = from_utf8(raw[1:-1])
    if not _valid_link(link):
        raise InstructError("Grip-Link contains invalid link")
    return link


def _parse_next_link(draft: _Draft, params: list[qp.Param]) -> None:
    draft.link = _link_of(params)
    if qp.has_param(params, b"timeout"):
        timeout = bytearray_to_int(qp.param(params, b"timeout") or b"")
        if timeout is None:
            raise InstructError("failed to parse Grip-Link timeout value")
        if timeout < 0:
            raise InstructError("Grip-Link timeout has invalid value")
        draft.link_timeout = timeout
    else:
        draft.link_timeout = DEFAULT_NEXT_LINK_TIMEOUT


def _valid_link(link: str) -> bool:
    """An approximation of C{QUrl::isValid} for a link parsed in tolerant mode."""
    try:
        parts = urlsplit(link)
        parts.port  # raises on a non-numeric or out-of-range port
    except ValueError:
        return False
    if not parts.scheme and "//" not in link[:2]:
        # A relative reference may not have a ':' before its first '/' (it would be a scheme).
        path = parts.path
        colon = path.find(":")
        slash = path.find("/")
        if colon != -1 and (slash == -1 or colon < slash):
            return False
    if parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        if not host.startswith("["):
            host = host.partition(":")[0]
            if _BAD_HOST_CHARS.search(host):
                return False
    return True


def _absolute_uri(request_uri: str, link: str) -> str:
    return quote(urljoin(request_uri, link), safe=_URI_SAFE)
