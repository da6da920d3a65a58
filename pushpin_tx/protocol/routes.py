"""
The routes file: parse Pushpin 1.36's routes format and pick the route for a request (pure).

Pushpin reads one route per line: a condition token (host plus props such as ``path_beg``) followed
by one or more target tokens (``host:port``, ``test``, ``zhttp/SPEC``, ``zhttpreq/SPEC``, each with
options). This module is a faithful port of Pushpin's own code for it (``routesfile.cpp`` for the
tokenizer, ``domainmap.cpp`` for the rules and the lookup), quirks included, because deployments
carry routes files written against the real thing: warnings have Pushpin's exact texts, bad lines
are skipped while the rest load, and the selection and id rules are the same. No I/O happens here;
L{pushpin_tx.ops.routes_watch} reads the file and swaps tables.

Quirks kept on purpose (each checked against the Pushpin 1.36.0 binary):
  - the condition host is compared as written, while the request host arrives lower-cased, so a
    route host written with capitals never matches by host (it is still reachable by id);
  - a line whose condition has no host and no id still loads: it gets a synthesised id;
  - rules are compared pairwise in file order, so a later rule with ``ssl`` beats an earlier rule
    with a longer ``path_beg`` (but not the other way round);
  - the synthesised id spells ``ssl=no`` as ``ssl`` and ``ssl=yes`` as ``no-ssl`` (inverted);
  - repeated props: single-valued ones take the last value, repeatable ones (``header``, ``sub``)
    are applied in reverse file order (Qt's QMultiHash::values order).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pushpin_tx.protocol.qt.numbers import string_to_int
from pushpin_tx.protocol.qt.strings import from_base64, from_utf8, to_utf8

__all__ = [
    "Route",
    "RouteLineError",
    "RouteTable",
    "Target",
    "parse_override_routes",
    "parse_routes",
    "tokenize_line",
]

Props = list[tuple[str, "str | None"]]

_SPECIAL_RE = re.compile(r'[", #]')  # what ends a token part (Pushpin's findNext set)


class RouteLineError(Exception):
    """A routes line that could not be used; C{str(e)} is the message Pushpin logs after C{file:line: }."""


@dataclass(frozen=True, slots=True)
class Target:
    """One origin of a route (targets are tried in order; the next only when connecting fails)."""

    kind: str  # "http" (host:port), "test", "zhttp", "zhttpreq"
    host: str = ""
    port: int = 0
    spec: str = ""
    ssl: bool = False
    untrusted: bool = False
    trust_connect_host: bool = False
    insecure: bool = False
    host_override: str | None = None
    subs: tuple[str, ...] = ()
    over_http: bool = False
    one_event: bool = False
    ipc_file_mode: int | None = None  # zhttp targets: octal "ipc_file_mode=" (extra to the brief's API)

    def label(self) -> str:
        """Name the target the way Pushpin's access log does: C{127.0.0.1:8000}, C{test}, C{zhttp/SPEC}."""
        if self.kind == "test":
            return "test"
        if self.kind in ("zhttp", "zhttpreq"):
            return f"{self.kind}/{self.spec}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"  # an IPv6 address (1.41)
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Route:
    """One accepted routes line: the condition, the per-route settings and the targets."""

    id: str
    explicit_id: bool = False
    host: str | None = None  # None = "*"; "" = no host (only reachable by id); else the host as written
    path_beg: str = ""
    proto: str | None = None  # "http" | "ws"
    ssl: bool | None = None
    sig_iss: str | None = None
    sig_key: str | None = None  # as written; see sig_key_bytes() for the "base64:" form
    prefix: str = ""
    orig_headers: bool = False
    as_host: str | None = None
    path_rem: int = 0
    replace_beg: str | None = None
    debug: bool = False
    #: route option log_level (Pushpin 1.41): the level of the route's own messages (3 debug)
    log_level: int = 3
    aco: bool = False
    jsonp_mode: str = "extended"
    jsonp_cb: str = "callback"
    jsonp_body: str | None = None
    jsonp_defcb: str | None = None
    jsonp_defmethod: str | None = "GET"
    session: bool = False
    sockjs: str | None = None
    sockjs_as_path: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # in the order Pushpin applies them; "" value = remove
    no_grip: bool = False
    targets: tuple[Target, ...] = ()
    line: int = 0

    def sig_key_bytes(self) -> bytes | None:
        """The signing key as bytes: C{base64:...} is decoded (leniently, like Qt), anything else is UTF-8."""
        if not self.sig_key:
            return None
        if self.sig_key.startswith("base64:"):
            return from_base64(to_utf8(self.sig_key[7:]))
        return to_utf8(self.sig_key)

    def rewrite_path(self, path: str) -> str:
        """Apply C{path_rem} / C{replace_beg} to an encoded path+query, as Pushpin does toward the origin.

        Only the path part changes (the query is kept intact). C{replace_beg} drops C{len(path_beg)}
        bytes (overriding C{path_rem}) and prepends its value. An emptied path becomes C{/}; a result
        without a leading C{/} is returned as is (Pushpin then fails the request with a 502).
        """
        path_part, sep, query = path.partition("?")
        if self.replace_beg is not None:
            remove = len(self.path_beg.encode("utf-8"))
        else:
            remove = self.path_rem
        raw = path_part.encode("utf-8")
        if remove > 0:
            raw = raw[remove:]
        if self.replace_beg:
            raw = self.replace_beg.encode("utf-8") + raw
        new_path = from_utf8(raw) or "/"
        return new_path + sep + query

    def matches(self, proto: str, ssl: bool, path: str) -> bool:
        """Whether the condition's proto, ssl and path_beg accept a request (the host is checked by the table)."""
        return (
            (self.proto is None or self.proto == proto)
            and (self.ssl is None or self.ssl == ssl)
            and (not self.path_beg or path.startswith(self.path_beg))
        )

    def _more_specific_than(self, other: Route, proto: str, ssl: bool, path: str) -> bool:
        # Pushpin's Rule::isMoreSpecificMatch: proto beats no proto, then a longer path_beg, then ssl
        # beats no ssl; anything else keeps the earlier rule.
        if not self.matches(proto, ssl, path):
            return False
        if other.proto is None and self.proto is not None:
            return True
        if other.proto is not None and self.proto is None:
            return False
        if len(self.path_beg.encode("utf-8")) > len(other.path_beg.encode("utf-8")):
            return True
        return other.ssl is None and self.ssl is not None


def tokenize_line(line: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Split one routes line into C{[(value, [(prop, value-or-None), ...]), ...]}.

    A port of Pushpin's C{RoutesFile::parseLine} state machine. Only the space character separates
    tokens; C{#} outside quotes ends the line; C{"..."} may appear anywhere in a token and protects
    spaces, commas, C{#} and C{=} (C{\\\\} and C{\\"} are its only escapes). A token whose value part
    holds C{=} has an empty value and is read as props. C{prop} without C{=} gives C{None}.

    @raise RouteLineError: with Pushpin's message (C{""} for a bad quote or escape, C{"expecting prop"},
        C{"empty prop name"}).
    """
    # Written by hand (no shlex or csv): the grammar is Pushpin's own, including its odd corners,
    # such as re-reading a token from where the call started when it turns out to be a prop.
    out: list[tuple[str, Props]] = []
    state = "sep"
    index = 0
    length = len(line)
    while True:
        start = index
        part = ""
        while True:
            if state == "sep":
                while index < length and line[index] == " ":
                    index += 1
                if index >= length or line[index] == "#":
                    return out
                state = "value"
                continue
            found = _SPECIAL_RE.search(line, index)
            at = found.start() if found else -1
            if at != -1 and line[at] == '"':
                part += line[index:at]
                at += 1
                while at < length:
                    ch = line[at]
                    if ch == "\\":
                        at += 1
                        if at >= length or line[at] not in '\\"':
                            raise RouteLineError("")
                        part += line[at]
                    elif ch == '"':
                        break
                    else:
                        part += ch
                    at += 1
                if at >= length:
                    raise RouteLineError("")
                index = at + 1
                continue
            if at == -1:
                at = length
            part += line[index:at]
            if state == "value":
                if "=" in part:
                    # Pushpin returns an empty value and re-reads from where this call began.
                    out.append(("", []))
                    index = start
                    state = "prop"
                    break
                out.append((part, []))
            else:
                if not part:
                    raise RouteLineError("expecting prop")
                name, eq, value = part.partition("=")
                if not name:
                    raise RouteLineError("empty prop name")
                out[-1][1].append((name, value if eq else None))
            if at < length and line[at] == ",":
                at += 1
                state = "prop"
            else:
                state = "sep"
            index = at
            break


class _Props:
    """Lookups over one token's props with Qt QMultiHash semantics."""

    def __init__(self, props: Props) -> None:
        self._props = props

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self._props)

    def get(self, name: str) -> str:
        """The most recently given value ("" when absent or valueless), like QMultiHash::value."""
        for n, v in reversed(self._props):
            if n == name:
                return v or ""
        return ""

    def get_all(self, name: str) -> list[str]:
        """Every value, most recent first, like QMultiHash::values."""
        return [v or "" for n, v in reversed(self._props) if n == name]


def _parse_line(line: str, line_num: int) -> Route | None:
    """Turn one line into a Route (with its id still unsynthesised), None for a blank/comment line."""
    sections = tokenize_line(line)
    if not sections:
        return None
    if len(sections) < 2:
        raise RouteLineError("must specify condition and at least one target")
    value, raw_props = sections[0]
    props = _Props(raw_props)
    host = None if value == "*" else value  # "" = unspecified (by id only)

    proto = None
    if props.has("proto"):
        proto = props.get("proto")
        if proto not in ("http", "ws"):
            raise RouteLineError("proto must be set to 'http' or 'ws'")
    ssl = None
    if props.has("ssl"):
        ssl_text = props.get("ssl")
        if ssl_text not in ("yes", "no"):
            raise RouteLineError("ssl must be set to 'yes' or 'no'")
        ssl = ssl_text == "yes"
    path_beg = ""
    if props.has("path_beg"):
        path_beg = props.get("path_beg")
        if not path_beg:
            raise RouteLineError("path_beg cannot be empty")
    jsonp_mode = "extended"
    if props.has("jsonp_mode"):
        jsonp_mode = props.get("jsonp_mode")
        if jsonp_mode not in ("basic", "extended"):
            raise RouteLineError("jsonp_mode must be set to 'basic' or 'extended'")
    headers = []
    for spec in props.get_all("header"):
        at = spec.find(":")
        if at < 1:
            raise RouteLineError("header must use format 'name:value'")
        headers.append((spec[:at], spec[at + 1 :].lstrip(" ")))
    targets = tuple(_parse_target(val, _Props(tprops)) for val, tprops in sections[1:])

    def optional(name: str) -> str | None:
        return props.get(name) or None

    return Route(
        id=props.get("id"),
        explicit_id=props.has("id"),
        host=host,
        path_beg=path_beg,
        proto=proto,
        ssl=ssl,
        sig_iss=optional("sig_iss"),
        sig_key=optional("sig_key"),
        prefix=props.get("prefix"),
        orig_headers=props.has("orig_headers"),
        as_host=optional("as_host"),
        path_rem=string_to_int(props.get("path_rem")) or 0,
        replace_beg=props.get("replace_beg") if props.has("replace_beg") else None,
        debug=props.has("debug"),
        # QString::toInt: anything but an integer is 0
        log_level=(string_to_int(props.get("log_level")) or 0) if props.has("log_level") else 3,
        aco=props.has("aco"),
        jsonp_mode=jsonp_mode,
        jsonp_cb=props.get("jsonp_cb") or "callback",  # Pushpin treats an empty one as "callback"
        jsonp_body=optional("jsonp_body"),
        jsonp_defcb=optional("jsonp_defcb"),
        jsonp_defmethod=(
            props.get("jsonp_defmethod")
            if props.has("jsonp_defmethod")
            else ("POST" if jsonp_mode == "basic" else "GET")
        ),
        session=props.has("session"),
        sockjs=optional("sockjs"),
        sockjs_as_path=optional("sockjs_as_path"),
        headers=tuple(headers),
        no_grip=props.has("no_grip"),
        targets=targets,
        line=line_num,
    )


def _parse_target(value: str, props: _Props) -> Target:
    """One target token; unknown options are ignored, as in Pushpin."""
    host, port, spec = "", 0, ""
    if value == "test":
        kind = "test"
    elif value.startswith("zhttp/"):
        kind, spec = "zhttp", value[6:]
    elif value.startswith("zhttpreq/"):
        kind, spec = "zhttpreq", value[9:]
    else:
        kind = "http"
        if value.startswith("["):
            # an IPv6 literal, [addr]:port (Pushpin 1.41)
            at = value.find("]:")
            host, port_at = (value[1:at], at + 2) if at >= 0 else ("", -1)
        else:
            at = value.find(":")
            host, port_at = (value[:at], at + 1) if at >= 0 else ("", -1)
        if port_at < 0:
            raise RouteLineError("target bad format")
        parsed = string_to_int(value[port_at:])
        if parsed is None or not 1 <= parsed <= 65535:
            raise RouteLineError("target invalid port")
        port = parsed
    mode = string_to_int(props.get("ipc_file_mode"), base=8) if props.has("ipc_file_mode") else None
    return Target(
        kind=kind,
        host=host,
        port=port,
        spec=spec,
        ssl=props.has("ssl"),
        untrusted=props.has("untrusted"),
        trust_connect_host=props.has("trust_connect_host"),
        insecure=props.has("insecure"),
        host_override=props.get("host") or None,
        subs=tuple(s for s in props.get_all("sub") if s),
        over_http=props.has("over_http"),
        one_event=props.has("one_event"),
        ipc_file_mode=mode if mode is not None and mode >= 0 else None,
    )


def _synthesised_id(route: Route) -> str:
    # Pushpin's Rule::idFromCondition, including its inverted ssl words.
    ssl = "*" if route.ssl is None else ("no-ssl" if route.ssl else "ssl")
    return ",".join((route.host or "*", route.proto or "*", ssl, route.path_beg or "*"))


def _build(lines: Iterable[tuple[str, int]], filename: str, warn_duplicates: bool) -> tuple[list[Route], list[str]]:
    routes: list[Route] = []
    warnings: list[str] = []
    seen: dict[str | None, set[tuple[str | None, bool | None, str]]] = {}
    for line, num in lines:
        try:
            route = _parse_line(line, num)
        except RouteLineError as e:
            warnings.append(f"{filename}:{num}: {e}")
            continue
        if route is None:
            continue
        if not route.id:
            route = dataclasses.replace(route, id=_synthesised_id(route))
        if route.host != "":
            conditions = seen.setdefault(route.host, set())
            condition = (route.proto, route.ssl, route.path_beg)
            if condition in conditions:
                if warn_duplicates:
                    warnings.append(f"{filename}:{num} skipping duplicate condition")
                continue
            conditions.add(condition)
        routes.append(route)
    return routes, warnings


def _split_lines(text: str) -> list[str]:
    # QTextStream::readLine: lines end at "\n" (a "\r" before it is dropped); a lone "\r" stays;
    # a trailing newline does not make an extra empty line; a leading BOM is consumed.
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def parse_routes(text: str, filename: str = "routes") -> tuple[list[Route], list[str]]:
    """Parse a whole routes file; return the routes that load and Pushpin's warning texts for the rest.

    Warnings look like C{routes:5: must specify condition and at least one target} or, for a
    repeated (host, proto, ssl, path_beg), C{routes:7 skipping duplicate condition} (no colon after
    the number, as Pushpin logs it). Repeated ids load silently and become unusable by id.
    """
    lines = _split_lines(text)
    return _build(((ln, n) for n, ln in enumerate(lines, start=1)), filename, warn_duplicates=True)


def parse_override_routes(lines: Sequence[str]) -> tuple[list[Route], list[str]]:
    """Parse C{--route} lines: each is C{<route>:1} in warnings, and duplicates are dropped silently."""
    return _build(((ln, 1) for ln in lines), "<route>", warn_duplicates=False)


def _strip_port(host: str) -> str:
    # By hand: urllib's parsers want a whole URL; this is QUrl::host() on a Host value ("[::1]:80").
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end != -1 else host[1:]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class RouteTable:
    """The loaded routes, indexed by host and by id, answering Pushpin's route lookups."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._by_host: dict[str | None, list[Route]] = {}
        self._by_id: dict[str, Route | None] = {}  # None marks an id used more than once
        for route in self.routes:
            if route.host != "":
                self._by_host.setdefault(route.host, []).append(route)
            if route.id:
                self._by_id[route.id] = None if route.id in self._by_id else route

    def __len__(self) -> int:
        """How many routes loaded (the N of Pushpin's "routes loaded with N entries")."""
        return len(self.routes)

    def lookup(self, host: str, path: str, *, proto: str, ssl: bool) -> Route | None:
        """Pick the route for a request: exact-host rules, else the C{*} rules, then the most specific match.

        C{host} may carry a port (it is stripped) and any case (it is lower-cased, as the request
        URI Pushpin looks up with is); C{path} is the encoded path without the query. If the host
        has rules but none matches, there is no route (the C{*} rules are not consulted then).
        """
        name = _strip_port(host).lower()
        rules = self._by_host.get(name)
        if rules is None:
            rules = self._by_host.get(None)
        if rules is None:
            return None
        best: Route | None = None
        for route in rules:
            if (best is None and route.matches(proto, ssl, path)) or (
                best is not None and route._more_specific_than(best, proto, ssl, path)
            ):
                best = route
        return best

    def lookup_by_id(self, route_id: str) -> Route | None:
        """The route with this id (explicit or synthesised); None if unknown or shared by several lines."""
        return self._by_id.get(route_id)

    def is_id_shared(self, route_id: str) -> bool:
        """Whether several lines carry this id (Pushpin then ignores a C{Pushpin-Route} naming it).

        Pushpin falls back to the host lookup only in this case; an unknown id gives no route.
        """
        return route_id in self._by_id and self._by_id[route_id] is None
