"""Auto cross-origin: Pushpin's CORS headers, the JSON-P request rewrite and the wrapping of answers (web/cors.py)."""

from __future__ import annotations

from typing import Any

import pytest

from pushpin_tx.protocol.headers import cors_headers
from pushpin_tx.protocol.routes import parse_routes
from pushpin_tx.web import cors
from pushpin_tx.web.cors import CrossOrigin, CrossOriginRequest, JsonpError, jsonp_request, percent_decode


def route(options: str = "") -> Any:
    routes, warnings = parse_routes(f"*{options} 127.0.0.1:80\n")
    assert not warnings
    return routes[0]


def test_cors_headers_echo_the_request() -> None:
    """The preflight's method, headers and Origin are echoed; credentials and max-age added."""
    out = cors_headers(
        [(b"Origin", b"http://a"), (b"Access-Control-Request-Method", b"PATCH"), (b"Access-Control-Request-Headers", b"X-A, ,x-b"), (b"Access-Control-Request-Headers", b"X-C")],
        [(b"Content-Type", b"text/plain")],
    )
    assert out == [
        (b"Content-Type", b"text/plain"),
        (b"Access-Control-Allow-Methods", b"PATCH"),
        (b"Access-Control-Allow-Headers", b"X-A, x-b, X-C"),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Access-Control-Allow-Origin", b"http://a"),
        (b"Access-Control-Max-Age", b"3600"),
    ]


def test_cors_headers_keep_the_origins_and_expose_the_rest() -> None:
    """Headers the origin set itself are left alone; Expose lists every non-simple, non-Grip, non-CORS name once."""
    out = cors_headers(
        [],
        [(b"X-One", b"1"), (b"Cache-Control", b"no-cache"), (b"x-one", b"2"), (b"Grip-Foo", b"x"), (b"Access-Control-Allow-Origin", b"http://mine"), (b"ETag", b"e")],
    )
    assert (b"Access-Control-Allow-Origin", b"http://mine") in out
    assert [v for k, v in out if k.lower() == b"access-control-allow-origin"] == [b"http://mine"]
    assert (b"Access-Control-Expose-Headers", b"X-One, ETag") in out
    assert (b"Access-Control-Allow-Methods", b"OPTIONS, HEAD, GET, POST, PUT, DELETE") in out


def test_jsonp_only_for_get_with_a_callback() -> None:
    """JSON-P applies to a GET with the callback parameter only; otherwise the request is left alone."""
    r = route(",aco")
    assert jsonp_request(r, b"POST", b"/x?callback=f", [], b"h") is None
    assert jsonp_request(r, b"GET", b"/x?cb=f", [], b"h") is None
    assert jsonp_request(route(",aco,jsonp_cb=cb"), b"GET", b"/x?cb=f", [], b"h") is not None


def test_jsonp_request_rewrite() -> None:
    """callback, _method, _headers and _body leave the query and shape the origin request; Host/Accept in _headers are ignored."""
    j = jsonp_request(
        route(",aco"),
        b"GET",
        b"/x?a=1&callback=my.cb&_method=DELETE&_headers=%7B%22X-B%22%3A%222%22%2C%22Host%22%3A%22evil%22%7D&_body=%7B%7D",
        [(b"Host", b"h.example"), (b"Accept", b"text/html"), (b"User-Agent", b"ua")],
        b"h.example",
    )
    assert j is not None
    assert (j.method, j.path, j.body, j.callback) == (b"DELETE", b"/x?a=1", b"{}", b"my.cb")
    assert j.headers == [(b"X-B", b"2"), (b"Host", b"h.example"), (b"Accept", b"*/*"), (b"User-Agent", b"ua")]


def test_jsonp_default_callback_and_body_param() -> None:
    """With jsonp_defcb and jsonp_body, the body parameter alone turns JSON-P on; its body goes as application/json; basic mode defaults to POST."""
    j = jsonp_request(route(",aco,jsonp_mode=basic,jsonp_defcb=dflt,jsonp_body=b"), b"GET", b"/x?b=%5B1%5D", [], b"h")
    assert j is not None
    assert (j.method, j.path, j.body, j.callback) == (b"POST", b"/x", b"[1]", b"dflt")
    assert (b"Content-Type", b"application/json") in j.headers


@pytest.mark.parametrize(
    "query, message",
    [
        (b"callback=", "Invalid callback parameter."),
        (b"callback=%zz", "Invalid callback parameter."),
        (b"callback=f&_method=%01", "Invalid _method parameter."),
        (b"callback=f&_headers=%5B%5D", "Invalid _headers parameter."),
        (b"callback=f&_headers=%7B%22a%22%3A1%7D", "Invalid _headers parameter."),
        (b"callback=f&_body=", "Invalid _body parameter."),
    ],
)
def test_jsonp_bad_parameters(query: bytes, message: str) -> None:
    """Each unusable parameter is refused with Pushpin's text (an empty _body too: a null QByteArray)."""
    with pytest.raises(JsonpError, match=message.replace(".", r"\.")):
        jsonp_request(route(",aco"), b"GET", b"/x?" + query, [], b"h")


def test_percent_decode() -> None:
    """Pushpin's percent decoding: no '+' rule, a short or bad escape is an error."""
    assert percent_decode(b"a%20b+c") == b"a b+c"
    assert percent_decode(b"a%2") is None
    assert percent_decode(b"%g0") is None


def test_wrap_relay_whole_extended_and_basic() -> None:
    """A relayed answer: extended carries code/reason/headers (spaced, as 1.36's proxy writes it); basic trims one newline."""
    co = CrossOrigin([], callback=b"cb")
    headers, body = cors.wrap_relay_whole(co, 404, b"Not Found", [(b"Content-Type", b"text/plain"), (b"Cache-Control", b"no-store")], b'a"\n')
    assert body == b'/**/cb({"code": 404, "reason": "Not Found", "headers": {"Cache-Control":"no-store","Content-Type":"text/plain"}, "body": "a\\"\\n"});\n'
    assert headers == [(b"Content-Type", b"application/javascript"), (b"Cache-Control", b"no-store")]
    co.extended = False
    assert cors.wrap_relay_whole(co, 200, b"OK", [], b"x\r\n")[1] == b"/**/cb(x);\n"


def test_wrap_held_merges_headers() -> None:
    """A held answer: compact, key-sorted JSON, repeated headers joined, 200 OK with the hold's headers kept."""
    code, reason, headers, body = cors.wrap_held(
        CrossOrigin([], callback=b"f"), 503, b"Busy", [(b"X-A", b"1"), (b"Content-Type", b"text/plain"), (b"X-A", b"2"), (b"Content-Length", b"9")], b"b\n"
    )
    assert (code, reason) == (200, b"OK")
    assert body == b'/**/f({"body":"b\\n","code":503,"headers":{"Content-Type":"text/plain","X-A":"1, 2"},"reason":"Busy"});\n'
    assert headers == [(b"X-A", b"1"), (b"X-A", b"2"), (b"Content-Type", b"application/javascript")]


class Sink:
    """A client request as the holds write to it: records what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.flag = False

    def send_head(self, code: int, reason: bytes, headers: list, length: int | None) -> None:
        self.calls.append(("head", code, reason, headers, length))

    def write_body(self, data: bytes) -> None:
        self.calls.append(("body", data))

    def finish(self) -> None:
        self.calls.append(("finish",))


def test_cross_origin_request_wraps_a_long_poll() -> None:
    """A JSON-P long-poll's answer is held back until finish, then sent wrapped; other attributes are the request's."""
    sink = Sink()
    wrapper = CrossOriginRequest(sink, CrossOrigin([], callback=b"f", extended=False))
    wrapper.accepted()  # the acceptor is done: this is the hold's answer
    wrapper.send_head(200, b"OK", [(b"Content-Type", b"text/plain")], 3)
    wrapper.write_body(b"hi\n")
    assert sink.calls == []
    wrapper.finish()
    assert sink.calls == [("head", 200, b"OK", [(b"Content-Type", b"application/javascript")], 11), ("body", b"/**/f(hi);\n"), ("finish",)]
    wrapper.flag = True
    assert sink.flag is True and wrapper.flag is True


def test_cross_origin_request_stream_gets_cors() -> None:
    """A stream (no length) is never wrapped, even for JSON-P: it gets the CORS headers."""
    sink = Sink()
    wrapper = CrossOriginRequest(sink, CrossOrigin([(b"Origin", b"http://o")], callback=b"f"))
    wrapper.send_head(200, b"OK", [], None)
    wrapper.write_body(b"x")
    head = sink.calls[0]
    assert (b"Access-Control-Allow-Origin", b"http://o") in head[3]
    assert sink.calls[1] == ("body", b"x")


def test_cross_origin_request_answer_during_accept_uses_the_proxy_format() -> None:
    """An instruct answered while the acceptor still works (no hold) is wrapped as the proxy wraps a relayed answer."""
    sink = Sink()
    wrapper = CrossOriginRequest(sink, CrossOrigin([], callback=b"f"))
    wrapper.send_head(203, b"Fine", [(b"Content-Type", b"text/plain")], 2)
    wrapper.write_body(b"x\n")
    wrapper.finish()
    body = b'/**/f({"code": 203, "reason": "Fine", "headers": {"Content-Type":"text/plain"}, "body": "x\\n"});\n'
    assert sink.calls[0] == ("head", 200, b"OK", [(b"Content-Type", b"application/javascript")], len(body))
    assert sink.calls[1] == ("body", body)
