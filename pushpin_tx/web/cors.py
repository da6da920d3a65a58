# -*- test-case-name: tests.web.test_cors -*-
"""
Auto cross-origin (§11: C{[proxy] auto_cross_origin}, route option C{aco}): CORS headers on
every answer, and JSON-P, as Pushpin 1.36 does them (C{src/proxy/requestsession.cpp},
C{src/handler/httpsession.cpp}; unchanged through 1.41).

JSON-P applies to a C{GET} with the callback parameter (C{callback}, or the route's
C{jsonp_cb}), or, with C{jsonp_defcb} and C{jsonp_body} set, with the body parameter. The
parameters C{_method}, C{_headers} (a JSON object of strings) and C{_body} (or the route's
C{jsonp_body}, sent as C{application/json}) are taken out of the query and applied to the
request the origin gets. Its answer is always C{200 OK} C{application/javascript}:
C{/**/cb(BODY);} in basic mode, C{/**/cb({"code": ..., "reason": ..., "headers": ...,
"body": ...});} in extended mode (the default). A JSON-P answer gets no CORS headers.

A relayed answer is wrapped here (L{wrap_relay}), a held one (GRIP) by
L{CrossOriginRequest}, which stands in front of the client request for the acceptor and
its holds: a long-poll's answer is wrapped whole (the compact, key-sorted JSON Pushpin's
handler writes; an instruct answered at once, without a hold, the way the proxy wraps a
relayed answer), a stream only gets the CORS headers (Pushpin never wraps a stream).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pushpin_tx.protocol import headers as hdr

if TYPE_CHECKING:
    from pushpin_tx.protocol.routes import Route

__all__ = ["CrossOrigin", "JsonpError", "JsonpRequest", "jsonp_request", "cross_origin_for", "wrap_relay_whole", "relay_start", "relay_chunk", "relay_end", "wrap_held", "CrossOriginRequest"]


class JsonpError(Exception):
    """A JSON-P parameter is unusable: the client gets C{400} with this text."""


@dataclass
class CrossOrigin:
    """What auto cross-origin settled for one request."""

    #: the client's request headers (what the CORS headers answer)
    request_headers: hdr.Headers
    #: the JSON-P callback, or None: plain CORS
    callback: bytes | None = None
    extended: bool = True
    #: the JSON-P request sent to the origin in place of the client's
    forward: "JsonpRequest | None" = None


@dataclass
class JsonpRequest:
    """The request the origin gets in place of a JSON-P GET."""

    method: bytes
    path: bytes
    headers: hdr.Headers
    body: bytes
    callback: bytes


def _from_hex(c: int) -> int:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


def percent_decode(data: bytes) -> bytes | None:
    """Pushpin's C{parsePercentEncoding}: C{None} for a bad escape, and for empty input (a null QByteArray)."""
    if not data:
        return None
    out = bytearray()
    n = 0
    while n < len(data):
        c = data[n]
        if c == 37:  # "%"
            if n + 2 >= len(data):
                return None
            hi, lo = _from_hex(data[n + 1]), _from_hex(data[n + 2])
            if hi == -1 or lo == -1:
                return None
            out.append((hi << 4) + lo)
            n += 3
        else:
            out.append(c)
            n += 1
    return bytes(out)


def _query_items(query: bytes) -> list[tuple[bytes, bytes | None, bytes]]:
    """C{[(key, value or None, raw item)]}, split as QUrlQuery does (C{&}, then the first C{=})."""
    items = []
    for raw in query.split(b"&"):
        if not raw:
            continue
        key, eq, value = raw.partition(b"=")
        items.append((key, value if eq else None, raw))
    return items


def _item(items: list[tuple[bytes, bytes | None, bytes]], name: bytes) -> bytes | None:
    for key, value, _ in items:
        if key == name:
            return value if value is not None else b""
    return None


def jsonp_request(route: "Route | None", method: bytes, path: bytes, client_headers: hdr.Headers, host: bytes) -> JsonpRequest | None:
    """
    Pushpin's C{tryApplyJsonp}: the request to send instead when this one asks for JSON-P,
    None when it does not. Raises L{JsonpError} with Pushpin's text for a bad parameter.
    """
    if method != b"GET":
        return None
    callback_param = (route.jsonp_cb if route is not None else "callback").encode("utf-8") or b"callback"
    body_param = route.jsonp_body.encode("utf-8") if route is not None and route.jsonp_body else None
    default_cb = route.jsonp_defcb.encode("utf-8") if route is not None and route.jsonp_defcb else None
    path_part, sep, query = path.partition(b"?")
    items = _query_items(query)
    keys = {key for key, _, _ in items}
    if callback_param not in keys and (default_cb is None or body_param is None or body_param not in keys):
        return None
    removed: set[bytes] = set()
    if callback_param in keys:
        callback = percent_decode(_item(items, callback_param) or b"")
        if not callback:
            raise JsonpError("Invalid callback parameter.")
        removed.add(callback_param)
    else:
        assert default_cb is not None
        callback = default_cb
    new_method = b""
    if b"_method" in keys:
        decoded = percent_decode(_item(items, b"_method") or b"")
        if not decoded or not all(32 <= c < 127 for c in decoded):
            raise JsonpError("Invalid _method parameter.")
        new_method = decoded
        removed.add(b"_method")
    headers: hdr.Headers = []
    if b"_headers" in keys:
        decoded = percent_decode(_item(items, b"_headers") or b"")
        try:
            document = json.loads(decoded) if decoded is not None else None
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise JsonpError("Invalid _headers parameter.")
        # QVariantMap: keys in sorted order
        for key in sorted(document):
            value = document[key]
            if not isinstance(value, str):
                raise JsonpError("Invalid _headers parameter.")
            if key.lower() in ("host", "accept"):
                continue
            headers.append((key.encode("utf-8"), value.encode("utf-8")))
        removed.add(b"_headers")
    body = b""
    if body_param is not None:
        if body_param in keys:
            decoded = percent_decode(_item(items, body_param) or b"")
            if decoded is None:
                raise JsonpError("Invalid body parameter.")
            body = decoded
            headers = hdr.remove(headers, [b"content-type"]) + [(b"Content-Type", b"application/json")]
            removed.add(body_param)
    elif b"_body" in keys:
        decoded = percent_decode(_item(items, b"_body") or b"")
        if decoded is None:
            raise JsonpError("Invalid _body parameter.")
        body = decoded
        removed.add(b"_body")
    kept = b"&".join(raw for key, _, raw in items if key not in removed)
    new_path = path_part + (b"?" + kept if kept else b"")
    if not new_method:
        new_method = ((route.jsonp_defmethod or "") if route is not None else "").encode("latin-1")
    headers.append((b"Host", host))
    headers.append((b"Accept", b"*/*"))
    headers.extend((k, v) for k, v in client_headers if k.lower() not in (b"host", b"accept"))
    return JsonpRequest(new_method, new_path, headers, body, callback)


def cross_origin_for(settings_aco: bool, route: "Route | None") -> bool:
    """Whether auto cross-origin applies: the global setting or the route's C{aco}."""
    return settings_aco or bool(route is not None and route.aco)


# wrapping answers ----------------------------------------------------------------------


def _json_string(text: str) -> str:
    """A JSON string as Qt writes one (only C{"}, C{\\} and control characters escaped)."""
    return json.dumps(text, ensure_ascii=False)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


#: origin headers a relayed JSON-P answer copies into its own
_EXTRACTABLE = (b"cache-control",)

#: what Pushpin's proxy session drops from an origin answer before the JSON-P start sees it
_RELAY_DROP = (b"connection", b"keep-alive", b"content-encoding", b"transfer-encoding")


def relay_start(co: CrossOrigin, code: int, reason: bytes, origin_headers: hdr.Headers) -> bytes:
    """
    The start of a relayed JSON-P body (C{makeJsonpStart}): C{/**/cb(} and, extended, the
    head (C{origin_headers} as the origin sent them, its C{Content-Length} included).
    """
    out = b"/**/" + (co.callback or b"") + b"("
    if co.extended:
        first: dict[str, str] = {}
        for name, value in hdr.remove(origin_headers, _RELAY_DROP):
            key = _text(name)
            if key not in first:  # QVariantMap: exact-case names, the first value
                first[key] = _text(value)
        headers_json = json.dumps(dict(sorted(first.items())), ensure_ascii=False, separators=(",", ":"))
        out += (
            b'{"code": %d, "reason": %s, "headers": %s, "body": "'
            % (code, _json_string(_text(reason)).encode("utf-8"), headers_json.encode("utf-8"))
        )
    return out


def relay_chunk(co: CrossOrigin, data: bytes) -> bytes:
    """Body bytes of a relayed JSON-P answer (C{makeJsonpBody}): escaped inside the string when extended."""
    if co.extended:
        return _json_string(_text(data))[1:-1].encode("utf-8")
    return data


def relay_end(co: CrossOrigin) -> bytes:
    """The end of a relayed JSON-P body (C{makeJsonpEnd})."""
    return b'"});\n' if co.extended else b");\n"


def _trim_newline(body: bytes) -> bytes:
    if body.endswith(b"\r\n"):
        return body[:-2]
    if body.endswith(b"\n"):
        return body[:-1]
    return body


def wrap_relay_whole(co: CrossOrigin, code: int, reason: bytes, origin_headers: hdr.Headers, body: bytes) -> tuple[hdr.Headers, bytes]:
    """A relayed answer whose body is all here: the headers and body the client gets (C{200 OK})."""
    if not co.extended:
        body = _trim_newline(body)
    wrapped = relay_start(co, code, reason, origin_headers) + relay_chunk(co, body) + relay_end(co)
    headers: hdr.Headers = [(b"Content-Type", b"application/javascript")]
    headers.extend((k, v) for k, v in origin_headers if k.lower() in _EXTRACTABLE)
    return headers, wrapped


def wrap_held(co: CrossOrigin, code: int, reason: bytes, headers: hdr.Headers, body: bytes) -> tuple[int, bytes, hdr.Headers, bytes]:
    """
    A held answer (a long-poll's publish or timeout), as the handler's C{respond} wraps it:
    C{200 OK}, the hold's headers with C{Content-Type: application/javascript}, and, extended,
    C{{"body":...,"code":...,"headers":{...},"reason":...}} (compact, keys sorted, a header's
    values joined with C{", "}).
    """
    headers = hdr.remove(headers, [b"content-length"])
    if co.extended:
        merged: dict[str, str] = {}
        seen: set[bytes] = set()
        for name, _ in headers:
            lower = name.lower()
            if lower in seen:
                continue
            seen.add(lower)
            merged[_text(name)] = ", ".join(_text(v) for v in hdr.get_all(headers, name))
        document = {"body": _text(body), "code": code, "headers": dict(sorted(merged.items())), "reason": _text(reason)}
        result = json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    else:
        result = _trim_newline(body)
    wrapped = b"/**/" + (co.callback or b"") + b"(" + result + b");\n"
    headers = hdr.remove(headers, [b"content-type"]) + [(b"Content-Type", b"application/javascript")]
    return 200, b"OK", headers, wrapped


class CrossOriginRequest:
    """
    The client request as the acceptor and its holds see it when auto cross-origin applies:
    every attribute is the request's, but a response head gets the CORS headers, and a
    JSON-P long-poll's answer is collected and sent wrapped once it is complete.
    """

    def __init__(self, request: Any, co: CrossOrigin) -> None:
        object.__setattr__(self, "_request", request)
        object.__setattr__(self, "_co", co)
        object.__setattr__(self, "_held", None)  # [code, reason, headers, parts] while collecting
        #: still inside the acceptor: an answer now is the instruct's own (no hold), which
        #: Pushpin's proxy wraps (its spaced format); a hold's answer comes later (handler's)
        object.__setattr__(self, "_accepting", True)

    def accepted(self) -> None:
        """The acceptor is done: any answer from now on is a hold's."""
        object.__setattr__(self, "_accepting", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._request, name, value)

    def send_head(self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        co = self._co
        if co.callback is not None and length is not None:
            # a whole answer (a long-poll's): wrapped at finish
            object.__setattr__(self, "_held", [code, reason, list(headers), []])
            return
        # a stream is never wrapped, JSON-P or not: it gets the CORS headers (observed on 1.36)
        self._request.send_head(code, reason, hdr.cors_headers(co.request_headers, headers), length)

    def write_body(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            held[3].append(data)
            return
        self._request.write_body(data)

    def finish(self) -> None:
        held = self._held
        if held is not None:
            object.__setattr__(self, "_held", None)
            body = b"".join(held[3])
            if self._accepting:
                headers, wrapped = wrap_relay_whole(self._co, held[0], held[1], held[2], body)
                code, reason = 200, b"OK"
            else:
                code, reason, headers, wrapped = wrap_held(self._co, held[0], held[1], held[2], body)
            self._request.send_head(code, reason, headers, len(wrapped))
            self._request.write_body(wrapped)
        self._request.finish()

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return other is self
