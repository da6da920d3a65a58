"""Request and response header rewriting (reference §4.1, §4.2, §14.1)."""

from __future__ import annotations

import pytest

from pushpin_tx.protocol.headers import GRIP_FEATURE, forwarded_for, request_headers_to_origin, response_headers_to_client


def rewrite(client, **kw):
    args = dict(
        host=b"example.com:8080",
        trusted=False,
        grip_enabled=True,
        grip_sig=b"tok",
        client_ip="127.0.0.1",
        client_scheme_secure=False,
        xff_truncate=None,
        xff_append=True,
        accept_x_forwarded_protocol=False,
        set_x_forwarded_protocol="proto-only",
    )
    args.update(kw)
    return request_headers_to_origin(client, **args)


def test_observed_rewrite_of_14_1():
    """The §14.1 capture: hop headers and forged Grip-* go, X-Hop/TE stay, Grip-Sig/Feature and XFF added."""
    client = [
        (b"Host", b"example.com:8080"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"300"),
        (b"TE", b"trailers"),
        (b"Grip-Hold", b"response"),
        (b"Grip-Sig", b"forged"),
        (b"X-Forwarded-For", b"9.9.9.9"),
        (b"X-Forwarded-Proto", b"https"),
        (b"Accept-Encoding", b"gzip"),
    ]
    out = rewrite(client)
    assert out == [
        (b"Host", b"example.com:8080"),
        (b"X-Hop", b"1"),
        (b"TE", b"trailers"),
        (b"Accept", b"*/*"),
        (b"Grip-Sig", b"tok"),
        (b"Grip-Feature", GRIP_FEATURE),
        (b"X-Forwarded-For", b"9.9.9.9, 127.0.0.1"),
    ]


def test_trusted_client_keeps_its_grip_headers_and_gets_no_signature():
    """A client trusted through upstream_key passes Grip-* headers on, unsigned by us."""
    out = rewrite([(b"Grip-Hold", b"stream")], trusted=True, grip_sig=None)
    assert (b"Grip-Hold", b"stream") in out
    assert not any(k == b"Grip-Sig" or k == b"Grip-Feature" for k, _ in out)


def test_no_grip_route_sends_no_signature_but_strips_client_grip():
    """no_grip: no Grip-Sig/Grip-Feature, and client Grip-* still removed."""
    out = rewrite([(b"Grip-Hold", b"stream")], grip_enabled=False, grip_sig=None)
    assert all(not k.lower().startswith(b"grip-") for k, _ in out)


def test_https_client_gets_x_forwarded_proto_per_setting():
    """proto-only adds X-Forwarded-Proto; true adds X-Forwarded-Protocol too; only for TLS clients."""
    assert (b"X-Forwarded-Proto", b"https") in rewrite([], client_scheme_secure=True)
    both = rewrite([], client_scheme_secure=True, set_x_forwarded_protocol="true")
    assert (b"X-Forwarded-Protocol", b"https") in both
    assert not any(k.startswith(b"X-Forwarded-Proto") for k, _ in rewrite([], client_scheme_secure=True, set_x_forwarded_protocol=""))


def test_client_x_forwarded_proto_passes_when_no_option_is_on():
    """With none of the three options on, a client's X-Forwarded-Proto passes through."""
    out = rewrite([(b"X-Forwarded-Proto", b"https")], set_x_forwarded_protocol="")
    assert (b"X-Forwarded-Proto", b"https") in out


@pytest.mark.parametrize(
    "existing, truncate, append, expected",
    [
        ([b"1.1.1.1, 2.2.2.2"], None, False, b"1.1.1.1, 2.2.2.2"),
        ([b"1.1.1.1, 2.2.2.2"], 1, False, b"2.2.2.2"),
        ([b"1.1.1.1", b"2.2.2.2"], 0, True, b"127.0.0.1"),
        ([], None, True, b"127.0.0.1"),
        ([b"1.1.1.1"], 0, False, None),
        ([], None, False, None),
    ],
)
def test_forwarded_for_rules(existing, truncate, append, expected):
    """x_forwarded_for: truncate:N keeps the last N, append adds the client, empty drops the header."""
    assert forwarded_for(existing, "127.0.0.1", truncate, append) == expected


def test_route_header_option_sets_and_removes():
    """Route header=Name:Value overrides a client header; an empty value removes it."""
    out = rewrite([(b"X-A", b"client"), (b"X-B", b"gone")], route_headers=[("X-A", "route"), ("X-B", "")])
    assert (b"X-A", b"route") in out and not any(k == b"X-B" for k, _ in out)


def test_orig_headers_copies_client_headers_marked():
    """Route orig_headers: every client header is also sent as eb9bf0f5-<Name>."""
    out = rewrite([(b"Grip-Hold", b"x")], orig_headers=True)
    assert (b"eb9bf0f5-Grip-Hold", b"x") in out


def test_orig_headers_already_marked_move_to_the_end():
    """A client header marked already moves behind the others, with the marked copies, as it is (Pushpin's manipulateRequestHeaders)."""
    out = rewrite([(b"eb9bf0f5-Cookie", b"c=1"), (b"X-A", b"1")], orig_headers=True)
    names = [name for name, _ in out]
    assert names.index(b"eb9bf0f5-Cookie") == names.index(b"X-A") + 2
    assert out[names.index(b"eb9bf0f5-Cookie") + 1] == (b"eb9bf0f5-X-A", b"1")
    assert [name for name, _ in out].count(b"eb9bf0f5-Cookie") == 1


def test_orig_headers_need_mark():
    """[proxy] orig_headers_need_mark: a listed name is copied only if the client marked it itself."""
    client = [(b"Cookie", b"forged"), (b"eb9bf0f5-cookie", b"real"), (b"X-A", b"1")]
    out = rewrite(client, orig_headers=True, orig_need_mark=(b"COOKIE",))
    marked = [(k, v) for k, v in out if k.lower().startswith(b"eb9bf0f5-")]
    assert marked == [(b"eb9bf0f5-cookie", b"real"), (b"eb9bf0f5-X-A", b"1")]
    assert (b"Cookie", b"forged") in out


def test_marked_headers_dropped_without_orig_headers():
    """Without the route's orig_headers, a client's marked headers are dropped, trusted or not."""
    for trusted in (False, True):
        out = rewrite([(b"eb9bf0f5-X", b"1"), (b"X", b"2")], trusted=trusted)
        assert (b"eb9bf0f5-X", b"1") not in out and (b"X", b"2") in out


def test_trusted_client_marked_headers_pass_with_orig_headers():
    """A trusted client is assumed to have marked its headers already: they pass, nothing more is added."""
    out = rewrite([(b"eb9bf0f5-X", b"1"), (b"X", b"2")], trusted=True, orig_headers=True)
    assert [(k, v) for k, v in out if k.startswith(b"eb9bf0f5-")] == [(b"eb9bf0f5-X", b"1")]


def test_relayed_response_loses_hop_headers_only():
    """A relayed response keeps its headers, minus Connection/Keep-Alive/encodings/length."""
    origin = [(b"Content-Type", b"text/plain"), (b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")]
    assert response_headers_to_client(origin) == [(b"Content-Type", b"text/plain"), (b"X-A", b"1")]
