# -*- test-case-name: tests.protocol.test_headers -*-
"""
Header rewriting between client, proxy and origin, as Pushpin 1.36 does it (reference §4.1,
§4.2, §5.1). Pure functions over C{list[tuple[bytes, bytes]]}, so every rule is testable
without a socket.
"""

from __future__ import annotations

from typing import Iterable, Sequence

__all__ = [
    "Headers",
    "GRIP_FEATURE",
    "get_header",
    "get_all",
    "remove",
    "set_header",
    "request_headers_to_origin",
    "response_headers_to_client",
    "forwarded_for",
    "cors_headers",
    "CORS_DEFAULT_METHODS",
]

Headers = list[tuple[bytes, bytes]]

#: What Pushpin announces to origins in C{Grip-Feature}: 1.36's list with 1.41's C{link:gone}.
GRIP_FEATURE = (
    b"status, session, link:next, link:gone, filter:skip-self, filter:skip-users, filter:require-sub, "
    b"filter:build-id, filter:var-subst"
)

# Removed from the client's request before it goes to the origin (§4.1 step 5). Observed on
# 1.36.0: headers *named in* Connection are kept, and TE / Proxy-Connection pass through.
_REQUEST_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"accept-encoding",
        b"content-encoding",
        b"transfer-encoding",
        b"expect",
        b"content-length",  # the HTTP client frames the body itself
        b"host",  # set deliberately below: exactly one Host
    }
)

#: the prefix Pushpin marks original client headers with (route option orig_headers)
_MARK = b"eb9bf0f5-"

# Removed from an origin response before it is relayed (§4.2).
_RESPONSE_HOP = frozenset(
    {b"connection", b"keep-alive", b"content-encoding", b"transfer-encoding", b"content-length"}
)


def get_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of C{name} (case-insensitive), or C{None}."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def get_all(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of C{name}, in order."""
    name = name.lower()
    return [value for key, value in headers if key.lower() == name]


def remove(headers: Iterable[tuple[bytes, bytes]], names: Iterable[bytes]) -> Headers:
    """C{headers} without any of C{names} (case-insensitive)."""
    drop = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def set_header(headers: Headers, name: bytes, value: bytes | None) -> Headers:
    """Replace every C{name} with one C{name: value} (appended), or remove it when C{None}."""
    out = remove(headers, [name])
    if value is not None:
        out.append((name, value))
    return out


def forwarded_for(existing: Sequence[bytes], client_ip: str, truncate: int | None, append: bool) -> bytes | None:
    """
    Apply an C{x_forwarded_for} rule (§2) to the client's X-Forwarded-For values.

    @return: the new header value, or C{None} when the header should be absent.
    """
    values = [v.strip() for raw in existing for v in raw.split(b",") if v.strip()]
    if truncate is not None:
        values = values[len(values) - truncate :] if truncate > 0 else []
    if append:
        values.append(client_ip.encode("ascii"))
    return b", ".join(values) if values else None


# the request-side drop sets, per (extra names, whether X-Forwarded-Proto is ours): worked out
# once, not per request
_drop_sets: dict[tuple[tuple[bytes, ...], bool], frozenset[bytes]] = {}


def _drop_set(extra_remove: Iterable[bytes], forwarding_proto: bool) -> frozenset[bytes]:
    extra = extra_remove if isinstance(extra_remove, tuple) else tuple(extra_remove)
    key = (extra, forwarding_proto)
    found = _drop_sets.get(key)
    if found is None:
        drop = set(_REQUEST_HOP)
        drop.update(n.lower() for n in extra)
        if forwarding_proto:
            drop.update((b"x-forwarded-proto", b"x-forwarded-protocol"))
        found = frozenset(drop)
        if len(_drop_sets) < 64:
            _drop_sets[key] = found
    return found


def request_headers_to_origin(
    client_headers: Sequence[tuple[bytes, bytes]],
    *,
    host: bytes,
    trusted: bool,
    grip_enabled: bool,
    grip_sig: bytes | None,
    client_ip: str,
    client_scheme_secure: bool,
    xff_truncate: int | None,
    xff_append: bool,
    accept_x_forwarded_protocol: bool,
    set_x_forwarded_protocol: str,
    route_headers: Sequence[tuple[str, str]] = (),
    orig_headers: bool = False,
    extra_remove: Iterable[bytes] = (),
    orig_need_mark: Sequence[bytes] = (),
) -> Headers:
    """
    The header list the origin receives for a client request (§4.1 steps 4-8).

    With the route's C{orig_headers}, an untrusted client's headers are copied at the end
    with the C{eb9bf0f5-} mark, as Pushpin's C{manipulateRequestHeaders} does: a header the
    client sent marked already is moved there as it is, and a name listed in C{[proxy]
    orig_headers_need_mark} (C{orig_need_mark}) is copied only when the client marked it
    itself. Without C{orig_headers}, marked client headers are dropped; a trusted client's
    pass as they are.

    @param host: the Host value (the client's, unless C{as_host} / target C{host=}).
    @param grip_sig: the C{Grip-Sig} token, or C{None} for none (trusted client, C{no_grip}).
    """
    forwarding_proto = accept_x_forwarded_protocol or set_x_forwarded_protocol in ("proto-only", "true")
    drop = _drop_set(extra_remove, forwarding_proto)
    out: Headers = [(b"Host", host)]
    has_accept = False
    client_xff: list[bytes] = []
    marking = orig_headers and not trusted
    for name, value in client_headers:
        lower = name.lower()
        if lower[:9] == _MARK and (marking or not orig_headers):
            continue  # moved to the end below, or dropped
        if lower == b"x-forwarded-for":
            client_xff.append(value)  # rewritten below
            continue
        if lower in drop:
            continue
        if not trusted and lower.startswith(b"grip-"):
            continue
        if lower == b"accept":
            has_accept = True
        out.append((name, value))
    if not has_accept:
        out.append((b"Accept", b"*/*"))
    if marking:
        need_mark = {n.lower() for n in orig_need_mark}
        for name, value in client_headers:
            lower = name.lower()
            if lower[:9] == _MARK:
                out.append((name, value))
            elif lower not in need_mark:
                out.append((b"eb9bf0f5-" + name, value))
    if grip_sig is not None:
        out.append((b"Grip-Sig", grip_sig))
    if grip_enabled and not trusted:
        out.append((b"Grip-Feature", GRIP_FEATURE))
    if client_scheme_secure and set_x_forwarded_protocol in ("proto-only", "true"):
        out.append((b"X-Forwarded-Proto", b"https"))
        if set_x_forwarded_protocol == "true":
            out.append((b"X-Forwarded-Protocol", b"https"))
    xff = forwarded_for(client_xff, client_ip, xff_truncate, xff_append) if client_xff or xff_append else None
    if xff is not None:
        out.append((b"X-Forwarded-For", xff))
    for route_name, route_value in route_headers:
        out = set_header(out, route_name.encode("latin-1"), route_value.encode("latin-1") if route_value else None)
    return out


def response_headers_to_client(origin_headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """An origin's response headers as relayed to the client (no GRIP involved)."""
    return [(k, v) for k, v in origin_headers if k.lower() not in _RESPONSE_HOP]


# CORS (§11, [proxy] auto_cross_origin / route option aco) ------------------------------

#: response headers a browser exposes anyway (Pushpin's isSimpleHeader), never listed in
#: Access-Control-Expose-Headers
_CORS_SIMPLE = frozenset(
    {b"cache-control", b"content-language", b"content-length", b"content-type", b"expires", b"last-modified", b"pragma"}
)

#: what Pushpin allows when a request names no Access-Control-Request-Method
CORS_DEFAULT_METHODS = b"OPTIONS, HEAD, GET, POST, PUT, DELETE"


def _has(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bool:
    return get_header(headers, name) is not None


def cors_headers(request_headers: Sequence[tuple[bytes, bytes]], response_headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """
    C{response_headers} with Pushpin's cross-origin headers added, each only when the origin
    did not set it (C{Cors::applyCorsHeaders}, 1.36 to 1.41): C{Access-Control-Allow-Methods}
    (the request's C{Access-Control-Request-Method}, else every common method),
    C{-Allow-Headers} (the request's C{Access-Control-Request-Headers}, joined, if any),
    C{-Expose-Headers} (every response header but the simple ones, C{Access-Control-*} and
    C{Grip-*}), C{-Allow-Credentials: true}, C{-Allow-Origin} (the request's C{Origin}, else
    C{*}) and C{-Max-Age: 3600}. A preflight C{OPTIONS} goes to the origin like any request
    and its answer gets these headers: Pushpin does not answer it itself.
    """
    out = list(response_headers)
    if not _has(out, b"access-control-allow-methods"):
        method = get_header(request_headers, b"access-control-request-method")
        out.append((b"Access-Control-Allow-Methods", method if method else CORS_DEFAULT_METHODS))
    if not _has(out, b"access-control-allow-headers"):
        # getAll(name, split=true): every value, split at commas, trimmed, empty ones dropped
        allow = [
            part.strip()
            for value in get_all(request_headers, b"access-control-request-headers")
            for part in value.split(b",")
            if part.strip()
        ]
        if allow:
            out.append((b"Access-Control-Allow-Headers", b", ".join(allow)))
    if not _has(out, b"access-control-expose-headers"):
        expose: list[bytes] = []
        seen: set[bytes] = set()
        for name, _ in out:
            lower = name.lower()
            if lower in _CORS_SIMPLE or lower.startswith((b"access-control-", b"grip-")) or lower in seen:
                continue
            seen.add(lower)
            expose.append(name)
        if expose:
            out.append((b"Access-Control-Expose-Headers", b", ".join(expose)))
    if not _has(out, b"access-control-allow-credentials"):
        out.append((b"Access-Control-Allow-Credentials", b"true"))
    if not _has(out, b"access-control-allow-origin"):
        origin = get_header(request_headers, b"origin")
        out.append((b"Access-Control-Allow-Origin", origin if origin else b"*"))
    if not _has(out, b"access-control-max-age"):
        out.append((b"Access-Control-Max-Age", b"3600"))
    return out
