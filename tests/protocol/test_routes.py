"""Tests for pushpin_tx.protocol.routes: the routes-file tokenizer, line parser, route table and path rewriting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushpin_tx.protocol.routes import (
    Route,
    RouteLineError,
    RouteTable,
    Target,
    parse_override_routes,
    parse_routes,
    tokenize_line,
)

# ---------------------------------------------------------------------------------------------------
# Tokenizer: every case of Pushpin's own routesfiletest lineTests, then the corners observed on 1.36.0


@pytest.mark.parametrize("line, expected", [
    # Pushpin's lineTests (1.36 version, plus the older "washington, usa" variant)
    ("apple", [("apple", [])]),
    ("apple banana", [("apple", []), ("banana", [])]),
    ("  apple   banana  # comment", [("apple", []), ("banana", [])]),
    ('apple,organic,type=gala,from="washington, \\"usa\\""',
     [("apple", [("organic", None), ("type", "gala"), ("from", 'washington, "usa"')])]),
    ('apple,organic,type=gala,from="washington, usa"',
     [("apple", [("organic", None), ("type", "gala"), ("from", "washington, usa")])]),
    ("apple,organic banana cherry,type=bing",
     [("apple", [("organic", None)]), ("banana", []), ("cherry", [("type", "bing")])]),
    (",organic", [("", [("organic", None)])]),
    ("type=gala", [("", [("type", "gala")])]),
    # further corners of the same state machine
    ("", []),
    ("     ", []),
    ("# just a comment", []),
    ("apple#comment", [("apple", [])]),
    ("apple,p=1#comment", [("apple", [("p", "1")])]),
    ('a"b c"d', [("ab cd", [])]),
    ('"a\\\\b"', [("a\\b", [])]),
    ('""', [("", [])]),
    ('x,p="1 # 2"', [("x", [("p", "1 # 2")])]),
    ('x,p="a,b"', [("x", [("p", "a,b")])]),
    ("x,p=a=b", [("x", [("p", "a=b")])]),
    ("x,p=", [("x", [("p", "")])]),
    ("x,p,p=2", [("x", [("p", None), ("p", "2")])]),
    ('"a=b" t', [("", [("a", "b")]), ("t", [])]),
    ("*\ttest", [("*\ttest", [])]),  # only the space character separates tokens
    ("a  ,b", [("a", []), ("", [("b", None)])]),
])
def test_tokenize_line(line: str, expected: list[tuple[str, list[tuple[str, str | None]]]]) -> None:
    """A routes line splits into values and props exactly as Pushpin's parser splits it."""
    assert tokenize_line(line) == expected


@pytest.mark.parametrize("line, message", [
    # Pushpin's lineTests error cases
    ('apple,organic,type="gala', ""),  # unterminated quote
    ("apple,organic,", "expecting prop"),  # empty prop name
    ("apple,organic,=gala", "empty prop name"),
    # further errors
    ('"a\\nb"', ""),  # the only escapes are \\ and \"
    ('"abc\\', ""),  # backslash at the end
    ("=gala", "empty prop name"),
    ("apple, banana", "expecting prop"),
    ("apple,#x", "expecting prop"),
    ("  id=lead target:1", "expecting prop"),  # observed: leading spaces before a prop-first condition
    ("* host=foo", "expecting prop"),  # observed: a target token that starts with a prop
])
def test_tokenize_line_errors(line: str, message: str) -> None:
    """A malformed line raises RouteLineError carrying Pushpin's (sometimes empty) message."""
    with pytest.raises(RouteLineError) as info:
        tokenize_line(line)
    assert str(info.value) == message


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenize_never_fails_otherwise(line: str) -> None:
    """Any text either tokenizes or raises RouteLineError, never another exception."""
    try:
        tokenize_line(line)
    except RouteLineError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_quoted_prop_round_trips(value: str) -> None:
    """Any prop value survives quoting with the two escapes."""
    assert tokenize_line("x,p=" + _quote(value)) == [("x", [("p", value)])]


# ---------------------------------------------------------------------------------------------------
# Whole files: warnings are Pushpin's exact log texts (both files were run through pushpin-proxy 1.36.0)

OBSERVED_FILE_1 = """\
# comment line
* test
Example.COM,id=ex localhost:9001
onlytarget
apple,organic,type="gala
apple,organic,
apple,organic,=gala
*,path_beg=/x localhost:0
*,path_beg=/x localhost:9002
*,path_beg=/x localhost:9003
,path_beg=/y localhost:9004
,id=onlyid localhost:9005
*,id=dup,path_beg=/d1 localhost:9006
*,id=dup,path_beg=/d2 localhost:9007
*,path_beg=/z [::1]:8000
*,path_beg=/w localhost:8000,bogus=1,weird
*,proto=foo localhost:8000
*,ssl=maybe localhost:8000
*,path_beg= localhost:8000
*,jsonp_mode=x localhost:8000
*,header=nocolon localhost:8000
*,header=:v localhost:8000
*,path_beg=/q localhost
*,path_beg=/r "a b":80
*,path_beg=/s x:"8\\0"
*,path_beg=/t localhost:70000
*,path_beg=/u localhost: 80
*,path_beg=/v localhost:+80
"""

OBSERVED_WARNINGS_1 = [
    "routes:4: must specify condition and at least one target",
    "routes:5: ",
    "routes:6: expecting prop",
    "routes:7: empty prop name",
    "routes:8: target invalid port",
    "routes:10 skipping duplicate condition",
    # (1.36 also refused line 15, "[::1]:8000", with "target invalid port": 1.41 reads IPv6 targets)
    "routes:17: proto must be set to 'http' or 'ws'",
    "routes:18: ssl must be set to 'yes' or 'no'",
    "routes:19: path_beg cannot be empty",
    "routes:20: jsonp_mode must be set to 'basic' or 'extended'",
    "routes:21: header must use format 'name:value'",
    "routes:22: header must use format 'name:value'",
    "routes:23: target bad format",
    "routes:25: ",
    "routes:26: target invalid port",
    "routes:27: target invalid port",
]

OBSERVED_FILE_2 = """\
Example.COM localhost:45871
lower.example localhost:45871,sub=s1,sub=s2
*,path_beg=/hdr,header=X-A:1,header=X-B:2,header=X-A:3 localhost:45871
*,path_beg=/rem,path_rem=3 localhost:45871
*,path_beg=/rep/,replace_beg=/new/ localhost:45871
*,path_beg=/both/,replace_beg=/n/,path_rem=1 localhost:45871
*,path_beg=/idtwice,id=a,id=b localhost:45871
*,path_beg=/pre%20x localhost:45871
*,path_beg=/tabs\tx localhost:45871
  id=lead localhost:45871
* host=foo
*,path_beg=/hash#c localhost:45871
*,path_beg=/num1 x:" 80"
*,path_beg=/num2 x:"80 "
*,path_beg=/num3 x:0080
*,path_beg=/num4 x:0x50
*,path_beg=/nohost :45871
* localhost:45871
"""

OBSERVED_WARNINGS_2 = [
    "routes:10: expecting prop",
    "routes:11: expecting prop",
    "routes:12: must specify condition and at least one target",
    "routes:16: target invalid port",
]


@pytest.mark.parametrize("text, warnings, loaded", [
    (OBSERVED_FILE_1, OBSERVED_WARNINGS_1, [2, 3, 9, 11, 12, 13, 14, 15, 16, 24, 28]),
    (OBSERVED_FILE_2, OBSERVED_WARNINGS_2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 17, 18]),
])
def test_observed_files(text: str, warnings: list[str], loaded: list[int]) -> None:
    """A file gives the same warnings and loads the same lines as pushpin-proxy 1.36.0 did (but for 1.41's IPv6 target)."""
    routes, got = parse_routes(text)
    assert got == warnings
    assert [r.line for r in routes] == loaded


def test_warning_uses_the_file_name() -> None:
    """Warnings start with the file name as given and the 1-based line number."""
    _, warnings = parse_routes("\n\n* localhost:0\n", "/etc/pushpin/routes")
    assert warnings == ["/etc/pushpin/routes:3: target invalid port"]


@pytest.mark.parametrize("text, lines", [
    ("* a:1\r\n*,path_beg=/b b:2\r\n#x\r\n*,path_beg=/c c:3", [1, 2, 4]),
    ("\ufeff* a:1\n", [1]),
    ("* a:1\n\n\n*,path_beg=/b b:2\n", [1, 4]),
    ("", []),
])
def test_line_numbers_and_endings(text: str, lines: list[int]) -> None:
    """CRLF endings, a BOM, blank and comment lines do not disturb the line numbers."""
    routes, warnings = parse_routes(text)
    assert warnings == []
    assert [r.line for r in routes] == lines


def test_lone_carriage_return_is_not_a_line_end() -> None:
    """A lone CR stays inside the line (Qt's readLine only splits at LF), so the target is mangled."""
    _, warnings = parse_routes("* a:1\r* b:2\n")
    assert warnings == ["routes:1: target invalid port"]


def test_override_lines() -> None:
    """--route lines are all "<route>:1" in warnings, and a duplicate condition is dropped silently."""
    routes, warnings = parse_override_routes(["* test", "* a:80", "bad", 'x,"y'])
    assert [r.targets[0].label() for r in routes] == ["test"]
    assert warnings == ["<route>:1: must specify condition and at least one target", "<route>:1: "]


# ---------------------------------------------------------------------------------------------------
# Condition props and target options


def _port(route: Route | None) -> int | None:
    """The first target's port of a looked-up route, None for no route."""
    return route.targets[0].port if route is not None else None


def _one(line: str) -> Route:
    routes, warnings = parse_routes(line)
    assert warnings == []
    assert len(routes) == 1
    return routes[0]


@pytest.mark.parametrize("line, field, value", [
    ("* t:1", "host", None),
    ("example.com t:1", "host", "example.com"),
    ("Example.COM t:1", "host", "Example.COM"),  # kept as written (see the case test below)
    (",id=x t:1", "host", ""),
    ("* t:1", "explicit_id", False),
    ("*,id=main t:1", "id", "main"),
    ("*,id=main t:1", "explicit_id", True),
    ("*,id=a,id=b t:1", "id", "b"),  # a repeated single-valued prop: the last one counts
    ("*,path_beg=/api t:1", "path_beg", "/api"),
    ("*,proto=http t:1", "proto", "http"),
    ("*,proto=ws t:1", "proto", "ws"),
    ("* t:1", "proto", None),
    ("*,ssl=yes t:1", "ssl", True),
    ("*,ssl=no t:1", "ssl", False),
    ("* t:1", "ssl", None),
    ("*,sig_iss=me t:1", "sig_iss", "me"),
    ("*,sig_key=secret t:1", "sig_key", "secret"),
    ("*,sig_key= t:1", "sig_key", None),
    ("*,prefix=pre- t:1", "prefix", "pre-"),
    ("*,orig_headers t:1", "orig_headers", True),
    ("* t:1", "orig_headers", False),
    ("*,as_host=other:8080 t:1", "as_host", "other:8080"),
    ("*,path_rem=4 t:1", "path_rem", 4),
    ("*,path_rem=abc t:1", "path_rem", 0),
    ("*,path_rem= t:1", "path_rem", 0),
    ("*,path_rem=-3 t:1", "path_rem", -3),
    ('*,path_rem=" 7 " t:1', "path_rem", 7),
    ("*,replace_beg=/v2 t:1", "replace_beg", "/v2"),
    ("*,replace_beg= t:1", "replace_beg", ""),
    ("* t:1", "replace_beg", None),
    ("*,debug t:1", "debug", True),
    ("*,aco t:1", "aco", True),
    ("* t:1", "jsonp_mode", "extended"),
    ("*,jsonp_mode=basic t:1", "jsonp_mode", "basic"),
    ("* t:1", "jsonp_cb", "callback"),
    ("*,jsonp_cb=cb t:1", "jsonp_cb", "cb"),
    ("*,jsonp_cb= t:1", "jsonp_cb", "callback"),
    ("*,jsonp_body=b t:1", "jsonp_body", "b"),
    ("*,jsonp_defcb=f t:1", "jsonp_defcb", "f"),
    ("* t:1", "jsonp_defmethod", "GET"),
    ("*,jsonp_mode=basic t:1", "jsonp_defmethod", "POST"),
    ("*,jsonp_mode=basic,jsonp_defmethod=PUT t:1", "jsonp_defmethod", "PUT"),
    ("*,session t:1", "session", True),
    ("*,sockjs=/sockjs t:1", "sockjs", "/sockjs"),
    ("*,sockjs_as_path=/ws t:1", "sockjs_as_path", "/ws"),
    ("*,header=X-A:1 t:1", "headers", (("X-A", "1"),)),
    ('*,header="X-A:   spaced out" t:1', "headers", (("X-A", "spaced out"),)),
    ("*,header=X-A: t:1", "headers", (("X-A", ""),)),
    ("*,header=X-A:1,header=X-B:2,header=X-A:3 t:1", "headers", (("X-A", "3"), ("X-B", "2"), ("X-A", "1"))),
    ("*,no_grip t:1", "no_grip", True),
    ("* t:1", "no_grip", False),
    ("*,bar=1,baz t:1", "prefix", ""),  # unknown condition props are accepted silently
])
def test_condition_props(line: str, field: str, value: object) -> None:
    """Each condition prop lands in its Route field with Pushpin's defaults and value rules."""
    assert getattr(_one(line), field) == value


def test_headers_apply_in_reverse_file_order() -> None:
    """Repeated header props come out in the order Pushpin applies them (observed: X-B: 2, then X-A: 1 wins)."""
    route = _one("*,header=X-A:1,header=X-B:2,header=X-A:3 t:1")
    applied: list[tuple[str, str]] = [("X-A", "orig")]
    for name, value in route.headers:
        applied = [h for h in applied if h[0].lower() != name.lower()]
        if value:
            applied.append((name, value))
    assert applied == [("X-B", "2"), ("X-A", "1")]


@pytest.mark.parametrize("token, expected", [
    ("127.0.0.1:8000", Target(kind="http", host="127.0.0.1", port=8000)),
    ("localhost:1", Target(kind="http", host="localhost", port=1)),
    ("localhost:65535", Target(kind="http", host="localhost", port=65535)),
    ("localhost:+80", Target(kind="http", host="localhost", port=80)),
    ("localhost:0080", Target(kind="http", host="localhost", port=80)),
    ('localhost:" 80 "', Target(kind="http", host="localhost", port=80)),
    ('"a b":80', Target(kind="http", host="a b", port=80)),
    (":80", Target(kind="http", host="", port=80)),
    ("test", Target(kind="test")),
    ("zhttp/tcp://127.0.0.1:9000", Target(kind="zhttp", spec="tcp://127.0.0.1:9000")),
    ("zhttpreq/ipc:///tmp/x", Target(kind="zhttpreq", spec="ipc:///tmp/x")),
    ("a:1,ssl", Target(kind="http", host="a", port=1, ssl=True)),
    ("a:1,untrusted", Target(kind="http", host="a", port=1, untrusted=True)),
    ("a:1,trust_connect_host", Target(kind="http", host="a", port=1, trust_connect_host=True)),
    ("a:1,insecure", Target(kind="http", host="a", port=1, insecure=True)),
    ("a:1,host=internal", Target(kind="http", host="a", port=1, host_override="internal")),
    ("a:1,host=internal:81", Target(kind="http", host="a", port=1, host_override="internal:81")),
    ("a:1,host=", Target(kind="http", host="a", port=1)),
    ("a:1,sub=c1", Target(kind="http", host="a", port=1, subs=("c1",))),
    ("a:1,sub=c1,sub=,sub=c2", Target(kind="http", host="a", port=1, subs=("c2", "c1"))),
    ("a:1,over_http", Target(kind="http", host="a", port=1, over_http=True)),
    ("a:1,over_http,one_event", Target(kind="http", host="a", port=1, over_http=True, one_event=True)),
    ("zhttp/ipc:///x,ipc_file_mode=0660", Target(kind="zhttp", spec="ipc:///x", ipc_file_mode=0o660)),
    ("zhttp/ipc:///x,ipc_file_mode=9", Target(kind="zhttp", spec="ipc:///x")),
    ("a:1,bogus=1,weird", Target(kind="http", host="a", port=1)),  # observed: unknown options ignored
])
def test_target_options(token: str, expected: Target) -> None:
    """Each target form and option parses to the matching Target."""
    assert _one("* " + token).targets == (expected,)


@pytest.mark.parametrize("token, message", [
    ("localhost", "target bad format"),
    ('""', "target bad format"),
    ("localhost:0", "target invalid port"),
    ("localhost:65536", "target invalid port"),
    ("localhost:", "target invalid port"),
    ("localhost:0x50", "target invalid port"),
    ("localhost:-80", "target invalid port"),
    ("localhost:99999999999", "target invalid port"),
    ("[::1]8000", "target bad format"),  # 1.41: an IPv6 literal needs "]:" before its port
    ("[::1]:0", "target invalid port"),
])
def test_bad_targets(token: str, message: str) -> None:
    """A bad target skips the whole line with Pushpin's message."""
    routes, warnings = parse_routes("* ok:1 " + token)
    assert routes == []
    assert warnings == [f"routes:1: {message}"]


def test_ipv6_target() -> None:
    """An IPv6 target [addr]:port (Pushpin 1.41) parses to the bare address; its label has the brackets back."""
    target = _one("* [::1]:8080,ssl").targets[0]
    assert (target.host, target.port, target.ssl) == ("::1", 8080, True)
    assert target.label() == "[::1]:8080"


@pytest.mark.parametrize("line, level", [("*", 3), ("*,log_level=1", 1), ("*,log_level=x", 0), ("*,log_level=", 0)])
def test_route_log_level(line: str, level: int) -> None:
    """Route option log_level (1.41): the level of the route's own messages, default 3 (debug); a non-number is 0 (QString::toInt)."""
    assert _one(line + " localhost:1").log_level == level


def test_failover_targets_keep_their_order() -> None:
    """Targets stay in file order, which is the order failover tries them."""
    route = _one("*,id=main,path_beg=/x localhost:8001 localhost:8002,ssl test")
    assert [t.label() for t in route.targets] == ["localhost:8001", "localhost:8002", "test"]
    assert route.targets[1].ssl


@pytest.mark.parametrize("target, label", [
    (Target(kind="http", host="127.0.0.1", port=8000), "127.0.0.1:8000"),
    (Target(kind="test"), "test"),
    (Target(kind="zhttp", spec="tcp://h:1"), "zhttp/tcp://h:1"),
    (Target(kind="zhttpreq", spec="tcp://h:1"), "zhttpreq/tcp://h:1"),
])
def test_target_label(target: Target, label: str) -> None:
    """Targets are named in logs the way Pushpin's access log names them."""
    assert target.label() == label


@pytest.mark.parametrize("sig_key, expected", [
    ("changeme", b"changeme"),
    ("base64:aGVsbG8=", b"hello"),
    ("base64:aGVsbG8", b"hello"),
    ("base64:aGVs bG8=", b"hello"),
    (None, None),
])
def test_sig_key_bytes(sig_key: str | None, expected: bytes | None) -> None:
    """A route's sig_key is used as UTF-8, or base64-decoded after a "base64:" prefix."""
    assert Route(id="r", sig_key=sig_key).sig_key_bytes() == expected


# ---------------------------------------------------------------------------------------------------
# Ids

@pytest.mark.parametrize("line, route_id, explicit", [
    ("* t:1", "*,*,*,*", False),
    ("example.com,proto=ws t:1", "example.com,ws,*,*", False),
    ("*,path_beg=/a,ssl=yes t:1", "*,*,no-ssl,/a", False),  # observed: the ssl words are inverted
    ("*,path_beg=/a,ssl=no t:1", "*,*,ssl,/a", False),
    (",path_beg=/b t:1", "*,*,*,/b", False),  # observed: neither host nor id still loads
    ("*,id=,path_beg=/e t:1", "*,*,*,/e", True),  # observed: logged as route=*,*,*,/e
    ("*,id=main t:1", "main", True),
])
def test_route_ids(line: str, route_id: str, explicit: bool) -> None:
    """A route has its explicit id, or the one Pushpin synthesises from the condition."""
    route = _one(line)
    assert (route.id, route.explicit_id) == (route_id, explicit)
    assert RouteTable([route]).lookup_by_id(route_id) is route


def test_id_only_route_is_reachable_only_by_id() -> None:
    """A condition without a host is skipped by host lookups but found by its id."""
    table = RouteTable(parse_routes(",id=solo a:1\n,path_beg=/b b:2\n* c:3\n")[0])
    assert _port(table.lookup_by_id("solo")) == 1
    assert _port(table.lookup_by_id("*,*,*,/b")) == 2
    assert _port(table.lookup("example.com", "/b", proto="http", ssl=False)) == 3


def test_only_id_only_routes_means_no_route_by_host() -> None:
    """With no "*" or host rules, a host lookup finds nothing even though id-only routes exist."""
    table = RouteTable(parse_routes(",id=solo a:1\n")[0])
    assert table.lookup("example.com", "/", proto="http", ssl=False) is None


def test_duplicate_ids_become_unusable() -> None:
    """Two lines with one id both load (no warning) but the id no longer selects either."""
    routes, warnings = parse_routes("*,id=dup,path_beg=/d1 a:1\n*,id=dup,path_beg=/d2 b:2\n* c:3\n")
    assert warnings == []
    table = RouteTable(routes)
    assert len(table) == 3
    assert table.lookup_by_id("dup") is None
    assert table.is_id_shared("dup")
    assert _port(table.lookup("h", "/d1", proto="http", ssl=False)) == 1


def test_synthesised_id_collision_makes_both_unusable() -> None:
    """A no-host rule and a "*" rule with the same condition share a synthesised id, so it is unusable."""
    table = RouteTable(parse_routes(",path_beg=/x a:1\n*,path_beg=/x b:2\n")[0])
    assert table.lookup_by_id("*,*,*,/x") is None
    assert _port(table.lookup("h", "/x", proto="http", ssl=False)) == 2


@pytest.mark.parametrize("route_id, shared", [("known", False), ("unknown", False), ("dup", True)])
def test_is_id_shared(route_id: str, shared: bool) -> None:
    """Only an id carried by several lines counts as shared (unknown ids are not)."""
    table = RouteTable(parse_routes("*,id=known a:1\n*,id=dup,path_beg=/1 b:1\n*,id=dup,path_beg=/2 c:1\n")[0])
    assert table.is_id_shared(route_id) is shared


# ---------------------------------------------------------------------------------------------------
# Duplicate conditions

@pytest.mark.parametrize("text, warnings, ports", [
    ("* a:1\n* b:2\n", ["routes:2 skipping duplicate condition"], [1]),
    ("*,path_beg=/x a:1\n*,path_beg=/x,id=other b:2\n", ["routes:2 skipping duplicate condition"], [1]),
    ("*,path_beg=/x a:1\n*,path_beg=/x,ssl=no b:2\n", [], [1, 2]),
    ("*,proto=ws a:1\n*,proto=http b:2\n", [], [1, 2]),
    ("* a:1\nexample.com b:2\n", [], [1, 2]),
    ("ex.com a:1\nEx.com b:2\n", [], [1, 2]),  # hosts compare as written
    (",id=a a:1\n,id=b b:2\n", [], [1, 2]),  # no-host rules are never duplicates
])
def test_duplicate_conditions(text: str, warnings: list[str], ports: list[int]) -> None:
    """A second line with the same host, proto, ssl and path_beg is skipped with Pushpin's warning."""
    routes, got = parse_routes(text)
    assert got == warnings
    assert [r.targets[0].port for r in routes] == ports


# ---------------------------------------------------------------------------------------------------
# Selection

SELECTION_FILE = """\
example.com,path_beg=/only ex:1
*,path_beg=/sp,proto=http star:4
*,path_beg=/sp/long star:5
*,path_beg=/ss,ssl=no star:6
*,path_beg=/ss star:7
*,path_beg=/s2 star:8
*,path_beg=/s2,ssl=no star:9
*,path_beg=/ln star:10
*,path_beg=/lnx star:11
*,path_beg=/tie,proto=http star:12
*,path_beg=/tie,proto=http,ssl=no star:13
*,path_beg=/wsonly,proto=ws star:14
*,path_beg=/pre%20x star:15
*,path_beg=/zz2,ssl=no star:16
*,path_beg=/zz2,ssl=yes star:17
* star:99
"""


@pytest.mark.parametrize("host, path, proto, ssl, port", [
    ("example.com", "/only/x", "http", False, 1),
    ("example.com", "/elsewhere", "http", False, None),  # host rules exist but none match: no fallback
    ("EXAMPLE.com", "/only", "http", False, 1),  # the request host is compared lower-cased
    ("example.com:8080", "/only", "http", False, 1),
    ("other.example", "/only", "http", False, 99),
    ("", "/only", "http", False, 99),
    ("x", "/sp/long/x", "http", False, 4),  # observed: proto beats a longer path_beg
    ("x", "/sp/long/x", "ws", False, 5),
    ("x", "/ss/x", "http", False, 6),  # observed: ssl beats no ssl at equal path length
    ("x", "/ss/x", "http", True, 7),
    ("x", "/s2/x", "http", False, 9),  # observed: a later ssl rule beats an earlier rule without
    ("x", "/lnx", "http", False, 11),  # observed: the longer path_beg wins
    ("x", "/ln", "http", False, 10),
    ("x", "/tie", "http", False, 13),
    ("x", "/tie", "http", True, 12),
    ("x", "/zz2", "http", False, 16),
    ("x", "/zz2", "http", True, 17),
    ("x", "/wsonly", "http", False, 99),
    ("x", "/wsonly", "ws", False, 14),
    ("x", "/pre%20xyz", "http", False, 15),  # observed: path_beg matches the encoded path
    ("x", "/pre xyz", "http", False, 99),
])
def test_selection(host: str, path: str, proto: str, ssl: bool, port: int | None) -> None:
    """The lookup applies Pushpin's rules: exact host else "*", then proto, path length, ssl, earlier line."""
    assert _port(RouteTable(parse_routes(SELECTION_FILE)[0]).lookup(host, path, proto=proto, ssl=ssl)) == port


@pytest.mark.parametrize("text, path, port", [
    # observed on 1.36.0: a later rule with ssl beats an earlier, longer path_beg without ssl ...
    ("*,path_beg=/ab a:1\n*,path_beg=/a,ssl=no b:2\n", "/abc", 2),
    # ... but in the other order the longer path_beg wins: the comparison is pairwise, in file order
    ("*,path_beg=/a,ssl=no b:2\n*,path_beg=/ab a:1\n", "/abc", 1),
    # a later rule that is not more specific never displaces the earlier one
    ("*,path_beg=/a,ssl=no a:1\n*,path_beg=/a b:2\n", "/a", 1),
    ("*,path_beg=/a,proto=http a:1\n*,path_beg=/a,ssl=no b:2\n", "/a", 1),
    ("*,path_beg=/ab a:1\n*,path_beg=/a b:2\n", "/ab", 1),
])
def test_selection_compares_in_file_order(text: str, path: str, port: int) -> None:
    """Rules are compared pairwise in file order, each replacing the best so far only if more specific."""
    assert _port(RouteTable(parse_routes(text)[0]).lookup("h", path, proto="http", ssl=False)) == port


@pytest.mark.parametrize("route_host, request_host, matched", [
    ("example.com", "example.com", True),
    ("example.com", "Example.COM", True),
    ("example.com", "example.com:8080", True),
    ("Example.COM", "example.com", False),  # observed: a capitalised route host never matches
    ("Example.COM", "Example.COM", False),
    ("::1", "[::1]:80", True),
    ("::1", "[::1]", True),
    ("::1", "::1", True),
    ("127.0.0.1", "127.0.0.1:7999", True),
])
def test_host_matching(route_host: str, request_host: str, matched: bool) -> None:
    """Request hosts are lower-cased and lose their port; route hosts are used as written."""
    table = RouteTable(parse_routes(f'"{route_host}" exact:1\n* star:2\n')[0])
    route = table.lookup(request_host, "/", proto="http", ssl=False)
    assert route is not None
    assert (route.targets[0].port == 1) is matched


def test_empty_table() -> None:
    """An empty table has no routes at all."""
    table = RouteTable([])
    assert len(table) == 0
    assert table.lookup("h", "/", proto="http", ssl=False) is None
    assert table.lookup_by_id("x") is None


# ---------------------------------------------------------------------------------------------------
# Path rewriting

@pytest.mark.parametrize("condition, path, expected", [
    ("*,path_beg=/rep/,replace_beg=/new/", "/rep/abc?q=/rep/", "/new/abc?q=/rep/"),  # observed
    ("*,path_beg=/both/,replace_beg=/n/,path_rem=1", "/both/abc", "/n/abc"),  # observed
    ("*,path_beg=/big,path_rem=99", "/big", "/"),  # observed
    ("*,path_beg=/neg,path_rem=-2", "/neg/x", "/neg/x"),  # observed
    ("*,path_beg=/pfx,replace_beg=/p", "/pfx/abc", "/p/abc"),  # observed
    ("*,path_beg=/rem,path_rem=3", "/remxyz?q=1/2", "mxyz?q=1/2"),  # observed: Pushpin then fails (502)
    ("*,path_beg=/eb/,replace_beg=", "/eb/abc", "abc"),  # observed: 502 too
    ("*,path_beg=/api,path_rem=4", "/api/v1/x?a=1", "/v1/x?a=1"),
    ("*,replace_beg=/pre", "/x", "/pre/x"),  # without path_beg nothing is removed
    ("*,path_beg=/a", "/a/b?c", "/a/b?c"),
    ("*,path_beg=/a,path_rem=2", "/a?", "/?"),
    ("*,path_beg=/%C3%A9,replace_beg=/e", "/%C3%A9/x", "/e/x"),
])
def test_rewrite_path(condition: str, path: str, expected: str) -> None:
    """path_rem and replace_beg rewrite only the path part, byte for byte as Pushpin does."""
    assert _one(condition + " t:1").rewrite_path(path) == expected
