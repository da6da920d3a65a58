"""
Origins that misbehave: WebSocket-over-HTTP answers with garbage event bodies, GRIP headers
and JSON instructs made at random, answers that stall after the headers, and connections
that close mid-body (huge bodies: L{tests.stress.test_huge_bodies}). The client concerned
gets a clean end (an error response, a close, or a close code), never a hang; everyone else
is served as usual, and the proxy's log holds nothing unhandled.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.web.server import NOT_DONE_YET

from ..integration.harness import ScriptedOrigin, Waiter, raw_connect, raw_request
from ..integration.test_websockets import ws_connect
from .support import (
    assert_alive,
    assert_clean_log,
    examples,
    json_values,
    metrics_port,
    open_stream,
    origin_env,
    poll_scrape,
    publish,
    scaled,
    scrape,
    still_serves,
)

#: every wait on one misbehaving exchange ends within this, in seconds
ENDS = 5.0


# --- WebSocket-over-HTTP garbage -----------------------------------------------------------

EVENT_PIECES = [
    b"OPEN", b"TEXT", b"BINARY", b"PING", b"PONG", b"CLOSE", b"DISCONNECT", b"text", b"FOO", b" ", b"\r\n", b"\n",
    b"0", b"2", b"5", b"a", b"ff", b"-1", b"0x3", b"+2", b"99999999", b"hi", b"c:", b"m:", b'{"type":"subscribe","channel":"x"}',
    b'{"type":', b"\x03\xe8", b"\x00",
]
woh_bodies = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(EVENT_PIECES), st.binary(max_size=6)), min_size=1, max_size=25).map(b"".join),
)


class WohOrigin:
    """Accepts every OPEN, answers the message "go" with the body under test and "again" with "ok"."""

    def __init__(self, origin: ScriptedOrigin) -> None:
        self.garbage = b""
        self.answered = 0
        self.waiter = Waiter()
        origin.handlers[b"/woh"] = self.render

    def render(self, request: Any) -> bytes:
        request.content.seek(0)
        body = request.content.read()
        request.setHeader(b"content-type", b"application/websocket-events")
        if body.startswith(b"OPEN"):
            return b"OPEN\r\n"
        if b"\r\ngo\r\n" in body:
            self.answered += 1
            self.waiter.check()
            return self.garbage
        if b"\r\nagain\r\n" in body:
            return b"TEXT 2\r\nok\r\n"
        return b""


@pytest_twisted.ensureDeferred
async def test_garbage_websocket_over_http_answers_end_only_that_session(reactor, tmp_path):
    """Random application/websocket-events bodies from the origin: the session concerned ends (1011
    for a body that cannot be decoded) or carries on, never hangs; the proxy keeps serving."""
    origin = ScriptedOrigin()
    woh = WohOrigin(origin)
    port, proxy = await origin_env(reactor, tmp_path, origin)
    codes: dict[object, bytes] = {}
    try:
        for body in examples(woh_bodies):
            woh.garbage = body
            client = await ws_connect(reactor, proxy.client_port, "/woh")
            assert client.opened, body
            before = woh.answered
            client.sendMessage(b"go")
            await woh.waiter.wait(reactor, lambda: woh.answered > before, ENDS, "the garbage answer")
            if not client.closed:
                client.sendMessage(b"again")
            try:
                await client.waiter.wait(reactor, lambda: client.closed or any(m == b"ok" for m, _ in client.messages), ENDS)
            except AssertionError:
                raise AssertionError(f"the session neither ended nor went on after the origin answered {body!r}:\n{proxy.output[-2500:]}") from None
            if client.closed:
                codes.setdefault(client.close_code, body)
            else:
                client.transport.abortConnection()
            assert_alive(proxy)
        assert 1011 in codes, f"no undecodable body was refused with 1011: {codes}"
        await still_serves(reactor, proxy, "woh")
        assert_clean_log(proxy)
    finally:
        await proxy.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_close_codes_from_a_websocket_over_http_origin_reach_the_client(reactor, tmp_path):
    """A CLOSE event from the origin closes the client with the origin's code, whatever the code:
    1000, 1001, 1011 and 4000 alike (Pushpin passes the code on)."""
    origin = ScriptedOrigin()
    woh = WohOrigin(origin)
    port, proxy = await origin_env(reactor, tmp_path, origin)
    got: dict[int, object] = {}
    try:
        for code in (1000, 4000, 1001, 1011):
            woh.garbage = b"CLOSE 2\r\n" + code.to_bytes(2, "big") + b"\r\n"
            client = await ws_connect(reactor, proxy.client_port, "/woh")
            client.sendMessage(b"go")
            try:
                await client.waiter.wait(reactor, lambda: client.closed, ENDS)
                got[code] = client.close_code
            except AssertionError:
                got[code] = "still open"
                client.transport.abortConnection()
        assert got == {1000: 1000, 4000: 4000, 1001: 1001, 1011: 1011}, f"close code the client got, by the origin's: {got}"
        assert_clean_log(proxy)
    finally:
        await proxy.stop()
        await port.stopListening()


# --- random GRIP instructions ----------------------------------------------------------------

GRIP_HEADERS = ["Grip-Hold", "Grip-Channel", "Grip-Timeout", "Grip-Keep-Alive", "Grip-Link", "Grip-Status", "Grip-Set-Meta"]
GRIP_VALUE_PIECES = [
    "response", "stream", "x", "ch", ";", ",", " ", "prev-id=", "filter=", "skip-self", "timeout=", "format=", "cstring",
    "base64", "raw", "=", "0", "5", "-1", "99999999999", "<", ">", "/next", "rel=next", "http://", "\\n", "'", '"', "%",
]
grip_header_values = st.lists(st.one_of(st.sampled_from(GRIP_VALUE_PIECES), st.text(max_size=4)), max_size=8).map("".join)
grip_headers = st.dictionaries(st.sampled_from(GRIP_HEADERS), grip_header_values, min_size=1, max_size=4)
instruct_keys = st.sampled_from(["hold", "mode", "channels", "name", "prev-id", "filters", "timeout", "keep-alive", "response", "code", "headers", "body", "body-bin", "meta", "x"])
grip_instructs = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.sampled_from(["response", "stream", "ch", ""]) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(instruct_keys, inner, max_size=4),
    max_leaves=15,
)
grip_answers = st.one_of(
    grip_headers.map(lambda h: ("headers", h)),
    grip_instructs.map(lambda v: ("json", json.dumps(v))),
    json_values.map(lambda v: ("json", json.dumps(v))),
    st.binary(max_size=100).map(lambda b: ("json", b.decode("latin-1"))),
)


@pytest_twisted.ensureDeferred
async def test_random_grip_instructions_get_a_502_an_answer_or_a_hold(reactor, tmp_path):
    """Random GRIP headers and application/grip-instruct bodies: each request is either refused with
    Pushpin's 502, answered as instructed, or held (and released when its client leaves); never an
    internal error, and nothing is left held."""
    origin = ScriptedOrigin()
    answer: dict[str, Any] = {}

    def grip(request: Any) -> bytes:
        kind, value = answer["now"]
        if kind == "headers":
            request.setHeader(b"content-type", b"text/plain")
            for name, text in value.items():
                request.setHeader(name.encode(), text.encode("utf-8", "replace"))
            return b"body\n"
        request.setHeader(b"content-type", b"application/grip-instruct")
        return value.encode("utf-8", "replace")

    origin.handlers[b"/grip"] = grip
    port, proxy = await origin_env(reactor, tmp_path, origin, prometheus_port="127.0.0.1:0")
    outcomes: dict[str, int] = {}
    try:
        mport = await metrics_port(proxy)
        for n, value in enumerate(examples(grip_answers)):
            answer["now"] = value
            client = await raw_connect(reactor, proxy.client_port)
            client.transport.write(b"GET /grip?n=%d HTTP/1.1\r\nHost: grip.example\r\n\r\n" % n)
            # the access line says how the proxy took it: a code, or "accept" for a hold
            line = await proxy.wait_for_log(rf"GET http://grip\.example/grip\?n={n} -> \S+ (code=\d+|accept)", ENDS)
            outcome = line.group(1)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome != "accept":
                await client.wait_for(reactor, b"\r\n\r\n", ENDS)
                code = int(client.received.split(b" ", 2)[1])
                # a 500 is fine when the instruct asked for it (Grip-Status, "code"), not from the proxy itself
                assert not (code == 500 and client.received.endswith(b"Internal Server Error\n")), (value, client.received)
                if code == 502:
                    assert client.received.endswith(b"Error while proxying to origin.\n"), (value, client.received)
            client.transport.abortConnection()
            assert_alive(proxy)

        async def nothing_held() -> bool:
            m = await scrape(reactor, mport)
            return sum(v for v in m.get("held_connections", {}).values()) == 0 and m.value("subscriptions") == 0

        await poll_scrape(reactor, nothing_held, "every hold released", ENDS)
        assert "code=502" in outcomes, outcomes
        await still_serves(reactor, proxy, "grip")
        assert_clean_log(proxy)
    finally:
        await proxy.stop()
        await port.stopListening()


# --- stalls, cut bodies ------------------------------------------------------------------------


class Stalling:
    """Answers with a head and part of the body, then waits for the test to cut it off."""

    def __init__(self, origin: ScriptedOrigin) -> None:
        self.requests: list[Any] = []
        self.gone: list[Any] = []
        self.waiter = Waiter()
        origin.handlers[b"/stall"] = lambda r: self.start(r, grip=False)
        origin.handlers[b"/stall-grip"] = lambda r: self.start(r, grip=True)

    def start(self, request: Any, grip: bool) -> object:
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"content-length", b"100")
        if grip:
            request.setHeader(b"grip-hold", b"stream")
            request.setHeader(b"grip-channel", b"stalled")
        request.write(b"x" * 10)
        self.requests.append(request)
        request.notifyFinish().addBoth(lambda _: (self.gone.append(request), self.waiter.check()))
        self.waiter.check()
        return NOT_DONE_YET


@pytest.mark.stress
@pytest_twisted.ensureDeferred
async def test_stalled_and_cut_off_origin_answers_end_cleanly_and_others_are_served(reactor, tmp_path):
    """Origin answers that stall after the head (plain and GRIP) do not delay anyone else; a client
    that gives up releases its origin request; cutting the origin off closes the plain client (short
    body, never passed off as complete) and gets the GRIP one a 502; many concurrent cut-offs too."""
    origin = ScriptedOrigin()
    stalling = Stalling(origin)
    origin.handlers[b"/fine"] = lambda r: b"fine\n"

    def cut(request: Any) -> object:
        if b"chunked" in request.uri:
            request.write(b"part of a chunked body\n")  # no length: twisted.web chunks it
        else:
            request.setHeader(b"content-length", b"1000")
            request.write(b"y" * 100)
        request.channel.transport.loseConnection()  # after the bytes are flushed
        return NOT_DONE_YET

    origin.handlers[b"/cut"] = cut
    port, proxy = await origin_env(reactor, tmp_path, origin)
    streams = []
    try:
        watcher = await open_stream(reactor, proxy.client_port, b"/stream?channel=bystander")
        streams.append(watcher)
        plain = await raw_connect(reactor, proxy.client_port)
        plain.transport.write(b"GET /stall HTTP/1.1\r\nHost: o.example\r\n\r\n")
        quitter = await raw_connect(reactor, proxy.client_port)
        quitter.transport.write(b"GET /stall HTTP/1.1\r\nHost: o.example\r\n\r\n")
        grip = await raw_connect(reactor, proxy.client_port)
        grip.transport.write(b"GET /stall-grip HTTP/1.1\r\nHost: o.example\r\n\r\n")
        await stalling.waiter.wait(reactor, lambda: len(stalling.requests) == 3, ENDS, "three stalled answers")
        await plain.wait_for(reactor, b"\r\n\r\nxxxxxxxxxx", ENDS)  # the plain head and bytes are relayed at once

        # while they stall, everyone else is served
        for n in range(5):
            fine = await raw_request(reactor, proxy.client_port, b"GET /fine HTTP/1.1\r\nHost: o.example\r\nConnection: close\r\n\r\n", timeout=ENDS)
            assert fine.received.startswith(b"HTTP/1.1 200 OK\r\n") and fine.received.endswith(b"fine\n")
            await publish(reactor, proxy, "bystander", f"while stalled {n}\n")
        await watcher.wait(reactor, lambda: b"while stalled 4" in watcher.lines, "publishes while origins stall", ENDS)

        # a client that gives up releases its origin request at once
        quitter.transport.abortConnection()
        await stalling.waiter.wait(reactor, lambda: len(stalling.gone) == 1, ENDS, "the origin request released")

        # the origin breaks off: the plain client is closed short, the GRIP one gets a 502
        for request in stalling.requests:
            if request not in stalling.gone:
                request.channel.transport.abortConnection()
        await plain.wait_closed(reactor, ENDS)
        assert plain.received.startswith(b"HTTP/1.1 200 OK\r\n") and plain.received.split(b"\r\n\r\n", 1)[1] == b"x" * 10
        await grip.wait_for(reactor, b"Error while proxying to origin.\n", ENDS)
        assert grip.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")

        # many origins cutting off at once: every client is closed short, nothing completes falsely
        paths = [b"/cut", b"/cut?chunked"] * scaled(25)

        async def one(path: bytes) -> bytes:
            client = await raw_request(reactor, proxy.client_port, b"GET %s HTTP/1.1\r\nHost: o.example\r\n\r\n" % path, timeout=ENDS)
            return client.received

        answers = await defer.gatherResults([defer.ensureDeferred(one(p)) for p in paths], consumeErrors=True)
        for path, received in zip(paths, answers):
            assert received.startswith(b"HTTP/1.1 200 OK\r\n"), received[:200]
            if path == b"/cut":
                assert received.endswith(b"y" * 100), received[-200:]
            else:
                assert b"part of a chunked body" in received and not received.endswith(b"0\r\n\r\n"), received[-200:]
        await publish(reactor, proxy, "bystander", "after the cuts\n")
        await watcher.wait(reactor, lambda: b"after the cuts" in watcher.lines, "publish after the cuts", ENDS)
        await still_serves(reactor, proxy, "stalls")
        assert_clean_log(proxy)
    finally:
        for s in streams:
            s.transport.abortConnection()
        for request in stalling.requests:
            if request not in stalling.gone:
                request.channel.transport.abortConnection()
        await proxy.stop()
        await port.stopListening()
