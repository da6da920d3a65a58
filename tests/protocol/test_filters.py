"""
Tests for L{pushpin_tx.protocol.filters}: subscription filters (reference §9).

Includes the cases observed on Pushpin 1.36.0, ports of Pushpin's C{idformattest} and of the
C{messageFilters} case of its C{filtertest}.
"""

from __future__ import annotations

from typing import Mapping

import pytest

from pushpin_tx.protocol.filters import (
    CONTENT_FILTERS,
    RESPONSE_CONTENT_FILTERS,
    SUPPORTED_FILTERS,
    FilterError,
    apply_content_filters,
    content_filters_of,
    filter_response_body,
    render_id,
    response_filters_of,
    should_deliver,
)


def test_filter_names() -> None:
    """The supported filters are the five Pushpin 1.36 announces in Grip-Feature; two of them rewrite content."""
    assert SUPPORTED_FILTERS == {"skip-self", "skip-users", "require-sub", "build-id", "var-subst"}
    assert CONTENT_FILTERS == ("build-id", "var-subst")
    assert set(CONTENT_FILTERS) <= SUPPORTED_FILTERS


# -- delivery filters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, sub_meta, publish_meta, expected",
    [
        # skip-self (observed: user=alice drops sender alice, delivers bob, "" and no meta)
        (["skip-self"], {"user": "alice"}, {"sender": "alice"}, False),
        (["skip-self"], {"user": "alice"}, {"sender": "bob"}, True),
        (["skip-self"], {"user": "alice"}, {"sender": ""}, True),
        (["skip-self"], {"user": "alice"}, {}, True),
        (["skip-self"], {}, {"sender": "alice"}, True),
        (["skip-self"], {"user": ""}, {"sender": ""}, True),
        (["skip-self"], {"user": "alice"}, {"sender": "Alice"}, True),
        # skip-users: comma list, entries trimmed, exact match
        (["skip-users"], {"user": "alice"}, {"skip_users": "bob,alice"}, False),
        (["skip-users"], {"user": "alice"}, {"skip_users": " bob , alice "}, False),
        (["skip-users"], {"user": "alice"}, {"skip_users": "alicia, al"}, True),
        (["skip-users"], {"user": "alice"}, {}, True),
        (["skip-users"], {"user": ""}, {"skip_users": ",, ,"}, True),
        (["skip-users"], {}, {"skip_users": "alice"}, True),
        # require-sub: the named channel must be one of the connection's channels
        (["require-sub"], {}, {"require_sub": "c2"}, True),
        (["require-sub"], {}, {"require_sub": "c3"}, False),
        (["require-sub"], {}, {"require_sub": ""}, True),
        (["require-sub"], {}, {}, True),
        # combinations, unknown names and content filters never block delivery
        (["skip-self", "skip-users"], {"user": "alice"}, {"sender": "bob", "skip_users": "alice"}, False),
        (["skip-users", "require-sub"], {"user": "alice"}, {"skip_users": "bob", "require_sub": "c1"}, True),
        (["var-subst", "build-id", "no-such-filter"], {"user": "alice"}, {"sender": "alice"}, True),
        ([], {"user": "alice"}, {"sender": "alice"}, True),
        (["skip-self"], {"user": "alice"}, {"sender": "alice", "skip_users": ""}, False),
    ],
)
def test_should_deliver(
    filters: list[str], sub_meta: Mapping[str, str], publish_meta: Mapping[str, str], expected: bool
) -> None:
    """Delivery filters drop a publish exactly as Pushpin's skip-self, skip-users and require-sub do."""
    result = should_deliver(filters, sub_meta=sub_meta, publish_meta=publish_meta, subscribed_channels={"c1", "c2"})
    assert result is expected


def test_require_sub_accepts_any_collection() -> None:
    """require-sub works with the connection's channels given as a dict or a list."""
    meta = {"require_sub": "pre:c"}
    assert should_deliver(["require-sub"], sub_meta={}, publish_meta=meta, subscribed_channels={"pre:c": object()})
    assert not should_deliver(["require-sub"], sub_meta={}, publish_meta=meta, subscribed_channels=["c"])


@pytest.mark.parametrize(
    "filters, expected",
    [
        ([], ()),
        (["skip-self", "require-sub"], ()),
        (["skip-self", "var-subst", "build-id", "x"], ("var-subst", "build-id")),
        (["build-id", "skip-users", "var-subst"], ("build-id", "var-subst")),
        (["var-subst", "var-subst"], ("var-subst", "var-subst")),
    ],
)
def test_content_filters_of(filters: list[str], expected: tuple[str, ...]) -> None:
    """content_filters_of keeps the content filters in subscription order (what a publish's content-filters must equal)."""
    assert content_filters_of(filters) == expected


# -- var-subst ---------------------------------------------------------------------------------

NAME_META = {"name": "World", "user": "al"}


@pytest.mark.parametrize(
    "content, sub_meta, expected",
    [
        (b"Hello %(name)s 100%% %(user)s", NAME_META, b"Hello World 100% al"),
        (b"no directives", {}, b"no directives"),
        (b"%%(name)s", NAME_META, b"%(name)s"),
        (b"%(name)s%(name)s", NAME_META, b"WorldWorld"),
        (b"%(a\\)b)s", {"a)b": "x"}, b"x"),
        (b"%(caf\xc3\xa9)s!", {"caf\u00e9": "\u00e9t\u00e9"}, "\u00e9t\u00e9!".encode()),
        (b"%(empty)s.", {"empty": ""}, b"."),
        (b"\xff%%", {}, b"\xff%"),
    ],
)
def test_var_subst(content: bytes, sub_meta: Mapping[str, str], expected: bytes) -> None:
    """var-subst replaces %(name)s with subscription meta and %% with % (observed: 'Hello World 100% al')."""
    assert apply_content_filters(["var-subst"], content, sub_meta=sub_meta, prev_ids={}) == expected


@pytest.mark.parametrize(
    "content, message",
    [
        (b"Hello %(nope)s", "var-subst: No such variable 'nope' at position 13"),
        (b"%s", "var-subst: Directive 's' requires argument at position 1"),
        (b"%()s", "var-subst: Directive 's' requires argument at position 3"),
        (b"%d", "var-subst: Unknown directive 'd' at position 1"),
        (b"%(name)d", "var-subst: Unknown directive 'd' at position 7"),
        (b"%I", "var-subst: Unknown directive 'I' at position 1"),
        (b"100%", "var-subst: Expected directive after '%' at position 3"),
        (b"% x", "var-subst: Unknown directive ' ' at position 1"),
        (b"%(", "var-subst: Expected character after '(' at position 1"),
        (b"%(name", "var-subst: Unterminated field starting at position 1"),
        (b"%(name)", "var-subst: Expected directive after ')' at position 6"),
        (b"%(na\\", "var-subst: Expected character after '\\' at position 4"),
    ],
)
def test_var_subst_errors(content: bytes, message: str) -> None:
    """An unknown variable or a bad directive is a filter error with Pushpin's message (observed: %(nope)s, position 13)."""
    with pytest.raises(FilterError) as info:
        apply_content_filters(["skip-self", "var-subst"], content, sub_meta=NAME_META, prev_ids={})
    assert str(info.value) == message


def test_message_filters_stack() -> None:
    """filtertest messageFilters: skip-self + var-subst deliver 'hello alice', and drop once the sender is alice."""
    filters = ["skip-self", "var-subst"]
    sub_meta = {"user": "alice"}
    assert should_deliver(filters, sub_meta=sub_meta, publish_meta={}, subscribed_channels=())
    assert apply_content_filters(filters, b"hello %(user)s", sub_meta=sub_meta, prev_ids={}) == b"hello alice"
    assert not should_deliver(filters, sub_meta=sub_meta, publish_meta={"sender": "alice"}, subscribed_channels=())


def test_delivery_filters_leave_content_alone() -> None:
    """Without content filters the content passes through untouched, directives and all."""
    content = b"%(x)s %I 100%"
    assert apply_content_filters(["skip-self", "require-sub", "bogus"], content, sub_meta={}, prev_ids={}) == content


# -- build-id (idformat.cpp) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "id_format, prev_ids, encoding, expected",
    [
        # idformattest renderId
        ("This template has no directives.", {}, None, b"This template has no directives."),
        (
            "My name is %(name)s and I eat %(food\\\\fruit(type\\))s 10%% of the time.",
            {"name": "Alice", "food\\fruit(type)": "apples"},
            None,
            b"My name is Alice and I eat apples 10% of the time.",
        ),
        ("%(c1)s:%(c2)s", {"c1": "7", "c2": "9"}, None, b"7:9"),
        ("%(c1)s", {"c1": "C3PO"}, "hex", b"4333504f"),
        ("%(c1)s", {"c1": "\u00e9"}, None, b"\xc3\xa9"),
    ],
)
def test_render_id(id_format: str, prev_ids: Mapping[str, str], encoding: str | None, expected: bytes) -> None:
    """render_id fills %(channel)s with prev-ids and %% with %, then encodes (idformattest renderId)."""
    assert render_id(id_format, prev_ids, encoding=encoding) == expected


@pytest.mark.parametrize(
    "id_format, prev_ids, encoding, message",
    [
        ("%(c9)s", {"c1": "7"}, None, "failed to render ID: No such variable 'c9' at position 5"),
        ("%(c1)s", {"c1": None}, None, "failed to render ID: No such variable 'c1' at position 5"),
        ("%I", {"c1": "7"}, None, "failed to render ID: Unknown directive 'I' at position 1"),
        ("%(c1)s", {"c1": "7"}, "base64", "unsupported encoding: base64"),
    ],
)
def test_render_id_errors(
    id_format: str, prev_ids: Mapping[str, str | None], encoding: str | None, message: str
) -> None:
    """An unknown channel, a wrong directive or an unsupported encoding is a filter error."""
    with pytest.raises(FilterError) as info:
        render_id(id_format, prev_ids, encoding=encoding)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "content, sub_meta, prev_ids, expected",
    [
        # idformattest renderContent, with the id C3PO built from the channel's prev-id
        (b"This content has no directives.", {"id_format": "%(c)s"}, {"c": "C3PO"}, b"This content has no directives."),
        (b"The ID is %I.", {"id_format": "%(c)s"}, {"c": "C3PO"}, b"The ID is C3PO."),
        (b"The ID is %I.", {"id_format": "%(c)s", "id_encoding": "hex"}, {"c": "C3PO"}, b"The ID is 4333504f."),
        (b"The ID is %(R2D2)I.", {"id_format": "%(c)s", "id_encoding": "hex"}, {"c": "C3PO"}, b"The ID is 52324432."),
        # a literal id needs no prev-ids; %% still collapses
        (b"id=%(x)I 5%%", {"id_format": "ignored"}, {}, b"id=x 5%"),
        (b"%I/%I", {"id_format": "%(a)s-%(b)s"}, {"a": "1", "b": "2"}, b"1-2/1-2"),
    ],
)
def test_build_id(content: bytes, sub_meta: Mapping[str, str], prev_ids: Mapping[str, str], expected: bytes) -> None:
    """build-id puts the id rendered from sub meta id_format at %I, and x at %(x)I (idformattest renderContent)."""
    assert apply_content_filters(["build-id"], content, sub_meta=sub_meta, prev_ids=prev_ids) == expected


@pytest.mark.parametrize(
    "content, sub_meta, prev_ids, message",
    [
        (b"plain", {}, {"c": "1"}, "build-id: no sub meta 'id_format'"),
        (b"ID %I.", {"id_format": "%(c)s"}, {}, "build-id: No ID specified and no default ID in context at position 4"),
        (b"x", {"id_format": "%(zz)s"}, {"c": "1"}, "build-id: failed to render ID: No such variable 'zz' at position 5"),
        (b"x", {"id_format": "%(c)s", "id_encoding": "HEX"}, {"c": "1"}, "build-id: unsupported encoding: HEX"),
        (b"%s", {"id_format": "%(c)s"}, {"c": "1"}, "build-id: Unknown directive 's' at position 1"),
        (b"50%", {"id_format": "%(c)s"}, {"c": "1"}, "build-id: Expected directive after '%' at position 2"),
    ],
)
def test_build_id_errors(
    content: bytes, sub_meta: Mapping[str, str], prev_ids: Mapping[str, str], message: str
) -> None:
    """build-id fails without id_format, without any id for %I, on a bad template, encoding or directive."""
    with pytest.raises(FilterError) as info:
        apply_content_filters(["build-id"], content, sub_meta=sub_meta, prev_ids=prev_ids)
    assert str(info.value) == message


def test_content_filters_run_in_subscription_order() -> None:
    """Content filters run in the order listed: build-id first consumes %I and %%, var-subst first trips on %I."""
    sub_meta = {"id_format": "%(c)s", "name": "World"}
    content = b"%I %%(name)s"
    result = apply_content_filters(["build-id", "var-subst"], content, sub_meta=sub_meta, prev_ids={"c": "7"})
    assert result == b"7 World"
    with pytest.raises(FilterError, match="^var-subst: Unknown directive 'I'"):
        apply_content_filters(["var-subst", "build-id"], content, sub_meta=sub_meta, prev_ids={"c": "7"})


def test_build_id_then_var_subst_sees_collapsed_percent() -> None:
    """Each content filter sees the previous one's output: %%%% becomes %% after build-id, then % after var-subst."""
    result = apply_content_filters(["build-id", "var-subst"], b"%%%%", sub_meta={"id_format": "x"}, prev_ids={})
    assert result == b"%"


# -- proxied content (Pushpin's ResponseContent target) -----------------------------------------


def test_only_build_id_rewrites_proxied_content() -> None:
    """Filter::targets gives ResponseContent to build-id alone; var-subst and the delivery filters leave proxied bodies be."""
    assert RESPONSE_CONTENT_FILTERS == ("build-id",)
    assert response_filters_of([["skip-self", "var-subst"], ["require-sub"]]) == ()


def test_response_filters_are_every_channels_once_in_first_seen_order() -> None:
    """Pushpin's allFilters: each channel's response-content filters, a name listed by several channels (or twice) run once."""
    assert response_filters_of([["skip-self"], ["build-id", "var-subst", "build-id"], ["build-id"]]) == ("build-id",)
    assert response_filters_of([]) == ()


def test_response_body_rendered_with_sub_meta_and_no_prev_ids() -> None:
    """A proxied body has no prev-ids in its filter context: %(x)I renders x (hex with id_encoding), a bare %I fails."""
    meta = {"id_format": "%(c)s", "id_encoding": "hex"}
    assert filter_response_body(("build-id",), b"id %(ab)I %%\n", sub_meta=meta) == b"id 6162 %\n"
    with pytest.raises(FilterError, match=r"^build-id: No ID specified and no default ID in context at position 1$"):
        filter_response_body(("build-id",), b"%I", sub_meta=meta)


def test_response_body_filter_fails_without_id_format_even_when_empty() -> None:
    """build-id without sub meta id_format fails on an empty body too (Pushpin's FilterStack finalize runs regardless)."""
    with pytest.raises(FilterError, match=r"^build-id: no sub meta 'id_format'$"):
        filter_response_body(("build-id",), b"", sub_meta={})
    assert filter_response_body((), b"%I", sub_meta={}) == b"%I"
