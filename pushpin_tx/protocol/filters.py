# -*- test-case-name: tests.protocol.test_filters -*-
"""
Subscription filters (reference §9), as Pushpin 1.36 implements them in C{src/handler/filter.cpp},
C{format.cpp} and C{idformat.cpp}.

A subscription names filters per channel (C{Grip-Channel: c; filter=skip-self}, JSON
C{filters}, WebSocket C{filters}). Two kinds exist:

  - delivery filters decide whether a publish reaches the subscriber at all
    (C{skip-self}, C{skip-users}, C{require-sub}): L{should_deliver};
  - content filters rewrite the content (C{build-id}, C{var-subst}): L{apply_content_filters}.
    C{build-id} also rewrites proxied content, the origin's bodies relayed to a client
    (Pushpin's C{ResponseContent} target, C{ProxyContent} in 1.36): L{response_filters_of}
    and L{filter_response_body}.

Pushpin decides delivery over all the filters first and only then runs the content filters,
in the order the subscription lists them. Unknown filter names are ignored. Pure code.
"""

from __future__ import annotations

from typing import Callable, Collection, Iterable, Mapping, Sequence

from pushpin_tx.protocol.qt.strings import from_utf8

__all__ = [
    "FilterError",
    "SUPPORTED_FILTERS",
    "CONTENT_FILTERS",
    "should_deliver",
    "content_filters_of",
    "apply_content_filters",
    "RESPONSE_CONTENT_FILTERS",
    "response_filters_of",
    "filter_response_body",
    "render_id",
]

SUPPORTED_FILTERS = frozenset({"skip-self", "skip-users", "require-sub", "build-id", "var-subst"})

#: The filters that transform content, in Pushpin's own listing order (C{Filter::names()}).
#: Pushpin runs them in the order each subscription lists them, not in this order.
CONTENT_FILTERS = ("build-id", "var-subst")

#: The filters that also rewrite proxied content (C{Filter::targets} gives them
#: C{ResponseContent}): only C{build-id}; C{var-subst} rewrites published content alone.
RESPONSE_CONTENT_FILTERS = ("build-id",)


class FilterError(Exception):
    """A content filter failed; C{str(e)} is Pushpin's C{"<filter>: <reason>"} message."""


def should_deliver(
    filters: Sequence[str],
    *,
    sub_meta: Mapping[str, str],
    publish_meta: Mapping[str, str],
    subscribed_channels: Collection[str],
) -> bool:
    """
    Whether a publish passes the subscription's delivery filters.

      - C{skip-self}: drop when sub meta C{user} equals publish meta C{sender} (both non-empty);
      - C{skip-users}: drop when sub meta C{user} is in publish meta C{skip_users}
        (comma-separated, each entry trimmed);
      - C{require-sub}: drop when publish meta C{require_sub} names a channel that is not in
        C{subscribed_channels}. (Pushpin compares against the connection's channel names as
        the origin gave them; the caller chooses the naming, prefixed or not.)
    """
    user = sub_meta.get("user", "")
    for name in filters:
        if name == "skip-self":
            sender = publish_meta.get("sender", "")
            if user and sender and user == sender:
                return False
        elif name == "skip-users":
            skipped = {part.strip() for part in publish_meta.get("skip_users", "").split(",")}
            skipped.discard("")
            if user and user in skipped:
                return False
        elif name == "require-sub":
            required = publish_meta.get("require_sub", "")
            if required and required not in subscribed_channels:
                return False
    return True


def content_filters_of(filters: Sequence[str]) -> tuple[str, ...]:
    """The content filters among C{filters}, in the subscription's order (repeats kept)."""
    return tuple(name for name in filters if name in CONTENT_FILTERS)


def apply_content_filters(
    filters: Sequence[str], content: bytes, *, sub_meta: Mapping[str, str], prev_ids: Mapping[str, str | None]
) -> bytes:
    """
    Run the content filters among C{filters} over C{content}, in order.

    C{prev_ids} maps the connection's channels to their current prev-id (C{build-id}'s
    C{%(channel)s}); for proxied content (initial body, next-link bodies) Pushpin passes none.
    Raises L{FilterError}.
    """
    for name in filters:
        try:
            if name == "build-id":
                content = _build_id(content, sub_meta, prev_ids)
            elif name == "var-subst":
                content = _format(content, _var_subst_handler(sub_meta))
        except _FormatError as e:
            raise FilterError(f"{name}: {e}") from None
    return content


def response_filters_of(channel_filters: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """
    The filters to run over a proxied body, given each channel's filter list: the
    response-content ones of every channel, each once, in the order first met (Pushpin's
    C{allFilters} in C{HttpSession}, C{AcceptWorker}).
    """
    found: list[str] = []
    for filters in channel_filters:
        for name in filters:
            if name in RESPONSE_CONTENT_FILTERS and name not in found:
                found.append(name)
    return tuple(found)


def filter_response_body(filters: Sequence[str], body: bytes, *, sub_meta: Mapping[str, str]) -> bytes:
    """
    Run L{response_filters_of}'s C{filters} over a proxied C{body} (an initial response, a
    next-link page). Pushpin's filter context there carries the subscription meta and no
    prev-ids, so C{build-id}'s C{%I} must name its id (C{%(id)I}). An empty body is still
    filtered: C{build-id} without sub meta C{id_format} fails on it too, as Pushpin's
    C{FilterStack} does at C{finalize}. Raises L{FilterError}.
    """
    return apply_content_filters(filters, body, sub_meta=sub_meta, prev_ids={})


def render_id(id_format: str, prev_ids: Mapping[str, str | None], *, encoding: str | None) -> bytes:
    """
    Render C{build-id}'s id: C{id_format} (sub meta C{id_format}) with C{%(channel)s} replaced
    by that channel's prev-id and C{%%} by C{%}, then encoded (C{None} = as is, C{"hex"}).
    Raises L{FilterError}.
    """
    try:
        rendered = _format(id_format.encode("utf-8"), _id_handler(prev_ids))
    except _FormatError as e:
        raise FilterError(f"failed to render ID: {e}") from None
    try:
        hex_ = _check_encoding(encoding)
    except _FormatError as e:
        raise FilterError(str(e)) from None
    return _encode_id(rendered, hex_)


class _FormatError(Exception):
    """A directive could not be expanded (message without the filter name)."""


# A directive handler: (directive letter, argument or None) -> replacement bytes.
_Handler = Callable[[str, bytes | None], bytes]


def _build_id(content: bytes, sub_meta: Mapping[str, str], prev_ids: Mapping[str, str | None]) -> bytes:
    id_format = sub_meta.get("id_format")
    if id_format is None:
        raise _FormatError("no sub meta 'id_format'")
    default_id: bytes | None = None
    if prev_ids:
        try:
            default_id = _format(id_format.encode("utf-8"), _id_handler(prev_ids))
        except _FormatError as e:
            raise _FormatError(f"failed to render ID: {e}") from None
    hex_ = _check_encoding(sub_meta.get("id_encoding"))

    def handle(directive: str, arg: bytes | None) -> bytes:
        if directive != "I":
            raise _FormatError(f"Unknown directive '{directive}'")
        if arg is None:
            if default_id is None:
                raise _FormatError("No ID specified and no default ID in context")
            return _encode_id(default_id, hex_)
        return _encode_id(arg, hex_)

    return _format(content, handle)


def _check_encoding(encoding: str | None) -> bool:
    """Whether ids are hex-encoded; only C{"hex"} is supported."""
    if encoding is None:
        return False
    if encoding != "hex":
        raise _FormatError(f"unsupported encoding: {encoding}")
    return True


def _encode_id(value: bytes, hex_: bool) -> bytes:
    return value.hex().encode("ascii") if hex_ else value


def _id_handler(prev_ids: Mapping[str, str | None]) -> _Handler:
    return _variable_handler({k: v for k, v in prev_ids.items() if v is not None})


def _var_subst_handler(sub_meta: Mapping[str, str]) -> _Handler:
    return _variable_handler(sub_meta)


def _variable_handler(variables: Mapping[str, str]) -> _Handler:
    """C{%(name)s} -> the variable's value; any other directive is an error."""

    def handle(directive: str, arg: bytes | None) -> bytes:
        if directive != "s":
            raise _FormatError(f"Unknown directive '{directive}'")
        if arg is None:
            raise _FormatError("Directive 's' requires argument")
        key = from_utf8(arg)
        value = variables.get(key)
        if value is None:
            raise _FormatError(f"No such variable '{key}'")
        return value.encode("utf-8")

    return handle


def _format(template: bytes, handler: _Handler) -> bytes:
    """
    Expand C{%X}, C{%(arg)X} and C{%%} in C{template} (Pushpin's C{Format::process}): within
    C{(...)}, a backslash escapes the next byte. Error messages carry the byte position as
    Pushpin's do. Hand-written because neither C{%}-formatting nor C{string.Template} share
    this syntax (escapes in names, per-filter directive letters).
    """
    out = bytearray()
    size = len(template)
    n = 0
    while n < size:
        c = template[n]
        if c != ord("%"):
            out.append(c)
            n += 1
            continue
        if n + 1 >= size:
            raise _FormatError(f"Expected directive after '%' at position {n}")
        n += 1
        c = template[n]
        if c == ord("("):
            field_start = n
            if n + 1 >= size:
                raise _FormatError(f"Expected character after '(' at position {n}")
            n += 1
            arg = bytearray()
            closed = False
            while n < size:
                c = template[n]
                if c == ord("\\"):
                    if n + 1 >= size:
                        raise _FormatError(f"Expected character after '\\' at position {n}")
                    n += 1
                    arg.append(template[n])
                elif c == ord(")"):
                    closed = True
                    break
                else:
                    arg.append(c)
                n += 1
            if not closed:
                raise _FormatError(f"Unterminated field starting at position {field_start}")
            if n + 1 >= size:
                raise _FormatError(f"Expected directive after ')' at position {n}")
            n += 1
            # An empty "()" is a null argument in Pushpin, the same as no argument.
            out += _expand(handler, template[n], bytes(arg) if arg else None, n)
        elif c == ord("%"):
            out.append(c)
        elif chr(c).isascii() and chr(c).isalpha():
            out += _expand(handler, c, None, n)
        else:
            raise _FormatError(f"Unknown directive '{chr(c)}' at position {n}")
        n += 1
    return bytes(out)


def _expand(handler: _Handler, directive: int, arg: bytes | None, position: int) -> bytes:
    try:
        return handler(chr(directive), arg)
    except _FormatError as e:
        raise _FormatError(f"{e} at position {position}") from None
