"""
Hostile input on every surface a client or publisher can reach: random and malformed bytes
on the client port, the control API, the ZeroMQ PULL, SUB and command sockets, and inside
WebSocket frames. Hypothesis makes the payloads (random bytes, and pieces of the real
protocol glued together at random, which get further into the parsers). Each one must be
refused with a clear error or logged and dropped, the next well-formed input must still be
served, and the process must stay up with nothing unhandled in its log.

Hypothesis is not async-aware and pytest-twisted runs every test inside the reactor, so the
payloads are drawn first (L{support.examples}: hypothesis' generation phase, no I/O) and then sent
one by one; a failing assertion names the payload that broke it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest_twisted
import zmq
from hypothesis import strategies as st

from pushpin_tx.protocol import tnetstring

from ..integration.harness import poll_until, raw_connect, raw_request, start_proxy
from ..integration.test_websockets import ws_connect
from .support import (
    WS_HANDSHAKE,
    assert_alive,
    assert_clean_log,
    examples,
    json_values,
    open_stream,
    publish,
    still_serves,
    stream_item,
    ws_frame,
)

#: how long one hostile connection may take to be answered or closed, in seconds
ANSWERED = 5.0

HTTP_PIECES = [
    b"GET ", b"POST ", b"PUT ", b"OPTIONS ", b"/", b"/stream", b"/response", b"/ws", b"/publish/", b"?channel=x",
    b" HTTP/1.1", b" HTTP/1.0", b" HTTP/9.9", b"\r\n", b"\n", b"\r\n\r\n", b"Host: localhost", b"Host:",
    b"Content-Length: ", b"Transfer-Encoding: chunked", b"Upgrade: websocket", b"Connection: Upgrade",
    b"Connection: close", b"Expect: 100-continue", b"Grip-Sig: x", b"Accept: application/json", b":", b" ",
    b"0", b"5", b"-1", b"99999999999999999999", b"ffffffff", b"\x00", b"\xff", b"%zz", b"{", b'"items"', b"[",
]
#: random bytes, or HTTP pieces glued together at random
http_garbage = st.one_of(
    st.binary(min_size=1, max_size=512),
    st.lists(st.one_of(st.sampled_from(HTTP_PIECES), st.binary(max_size=12)), min_size=1, max_size=40).map(b"".join),
)

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def _statuses(received: bytes) -> list[int]:
    return [int(code) for code in _STATUS.findall(received)]


async def _send_and_hang_up(reactor: Any, port: int, payload: bytes) -> bytes:
    """Send C{payload}, then half-close: the server must answer and/or close, never hang."""
    client = await raw_connect(reactor, port)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    try:
        await client.wait_closed(reactor, ANSWERED)
    finally:
        client.transport.abortConnection()
    return client.received


@pytest_twisted.ensureDeferred
async def test_random_bytes_on_the_client_port_get_a_4xx_or_a_close_never_a_5xx(reactor, tmp_path):
    """Random and half-HTTP bytes on the client port are answered 4xx (or 1xx-3xx if they happen to
    make a request) or closed; never a 5xx; the proxy then serves a request and a publish."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    seen: list[int] = []
    try:
        # half of them end their header block, so that they are parsed, not just cut off
        payloads = st.tuples(http_garbage, st.booleans()).map(lambda t: t[0] + b"\r\n\r\n" if t[1] else t[0])
        for payload in examples(payloads):
            received = await _send_and_hang_up(reactor, proxy.client_port, payload)
            codes = _statuses(received)
            assert not received or received.startswith(b"HTTP/1."), (payload, received[:300])
            assert all(code < 500 for code in codes), (payload, received[:300])
            seen.extend(codes)
            assert_alive(proxy)
        assert 400 in seen, f"no malformed request was answered 400: {sorted(set(seen))}"
        await still_serves(reactor, proxy, "client-port")
        assert_clean_log(proxy)
    finally:
        await proxy.stop()


async def _control_post(reactor: Any, port: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    request = (
        b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (content_type, len(body), body)
    )
    client = await raw_request(reactor, port, request, timeout=ANSWERED)
    return client.received


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_control_api_is_refused_with_a_clear_error(reactor, tmp_path):
    """Random bytes, and publish bodies that are random JSON or random bytes, get Pushpin's 4xx with a
    text reason (or 200 when they happen to be a valid publish), never a 5xx; publishing still works."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    seen: list[int] = []
    try:
        for raw in examples(http_garbage):
            received = await _send_and_hang_up(reactor, proxy.control_port, raw)
            assert not received or received.startswith(b"HTTP/1."), (raw, received[:300])
            assert all(code < 500 for code in _statuses(received)), (raw, received[:300])
            assert_alive(proxy)
        bodies = st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=300))
        for body in examples(bodies):
            received = await _control_post(reactor, proxy.control_port, body)
            head, _, text = received.partition(b"\r\n\r\n")
            code = _statuses(head)[0]
            assert code in (200, 400), (body, received)
            assert b"Connection: close" in head and text.endswith(b"\n") and len(text) > 1, (body, received)
            seen.append(code)
            assert_alive(proxy)
        assert 400 in seen
        await still_serves(reactor, proxy, "control")
        assert_clean_log(proxy)
    finally:
        await proxy.stop()


ITEM_PIECES = [
    b"J", b"T", b"{", b"}", b'"channel"', b'"formats"', b'"http-stream"', b'"content"', b":", b",", b'"x"', b"[", b"]",
    b"0:~", b"1:a,", b"3:abc,", b"999999999:", b"5:", b"}", b"]", b"!", b"#", b"^", b"true", b"-1", b"\x00",
]
zmq_frame = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(ITEM_PIECES), st.binary(max_size=8)), max_size=30).map(b"".join),
    json_values.map(lambda v: b"J" + json.dumps(v).encode()),
)
zmq_message = st.lists(zmq_frame, min_size=1, max_size=3)


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_zmq_pull_socket_is_logged_and_dropped(reactor, tmp_path):
    """Random single- and multi-part messages on PULL are logged and dropped; a valid item sent after
    each one still reaches a held stream."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    stream = None
    try:
        endpoint = (await proxy.wait_for_log(r"publish-pull bound to (tcp://[\d.]+:\d+)")).group(1)
        push.connect(endpoint)
        stream = await open_stream(reactor, proxy.client_port, b"/stream?channel=zpull")
        for n, message in enumerate(examples(zmq_message)):
            push.send_multipart(message)
            # one PUSH socket keeps order: once this arrives, the garbage before it was handled
            marker = f"zpull ok {n}"
            push.send(b"J" + json.dumps(stream_item("zpull", marker + "\n")).encode())
            await stream.wait(reactor, lambda: marker.encode() in stream.lines, f"{marker} after {message!r}")
            assert_alive(proxy)
        assert "IN pull: " in proxy.output  # the garbage was logged
        await still_serves(reactor, proxy, "zmq-pull")
        assert_clean_log(proxy)
    finally:
        if stream is not None:
            stream.transport.abortConnection()
        push.close()
        ctx.term()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_zmq_sub_socket_is_logged_and_dropped(reactor, tmp_path):
    """Random frames from an XPUB publisher, on a held channel and others, are logged and dropped; a
    valid item after each still reaches the held stream."""
    ctx = zmq.Context()
    xpub = ctx.socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    proxy = await start_proxy(reactor, tmp_path, ["* test"], push_in_sub_connect="true", push_in_sub_specs=f"tcp://127.0.0.1:{port}")
    stream = None
    events: list[bytes] = []

    def interest() -> list[bytes]:
        while xpub.poll(0):
            events.append(xpub.recv())
        return events

    try:
        stream = await open_stream(reactor, proxy.client_port, b"/stream?channel=zsub")
        await poll_until(reactor, lambda: b"\x01zsub" in interest(), what="SUB interest in zsub")
        for n, (rest, on_channel) in enumerate(examples(st.tuples(zmq_message, st.booleans()))):
            message = [b"zsub", *rest] if on_channel else rest
            xpub.send_multipart(message)
            marker = f"zsub ok {n}"
            xpub.send_multipart([b"zsub", b"J" + json.dumps({"formats": {"http-stream": {"content": marker + "\n"}}}).encode()])
            await stream.wait(reactor, lambda: marker.encode() in stream.lines, f"{marker} after {message!r}")
            assert_alive(proxy)
        assert "IN sub: " in proxy.output
        await still_serves(reactor, proxy, "zmq-sub")
        assert_clean_log(proxy)
    finally:
        if stream is not None:
            stream.transport.abortConnection()
        xpub.close()
        ctx.term()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_zmq_command_socket_gets_bad_format_or_is_logged(reactor, tmp_path):
    """Random command messages from a DEALER: those with an envelope delimiter get exactly one answer
    (a failure with a condition, unless valid by chance), the rest are logged and skipped; a valid
    command after each is still answered."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    replies: list[list[bytes]] = []

    def drain() -> list[list[bytes]]:
        while dealer.poll(0):
            replies.append(dealer.recv_multipart())
        return replies

    try:
        endpoint = (await proxy.wait_for_log(r"command bound to (tcp://[\d.]+:\d+)")).group(1)
        dealer.connect(endpoint)
        conditions: set[bytes] = set()
        request_frame = st.one_of(
            zmq_frame,
            json_values.map(lambda v: tnetstring.dumps(_bytes_keys(v))),
            st.fixed_dictionaries(
                {"method": st.sampled_from(["conncheck", "get-zmq-uris", "recover", "refresh", "publish", "nope", ""])},
                optional={"id": st.text(max_size=5), "args": json_values},
            ).map(lambda v: tnetstring.dumps(_bytes_keys(v))),
        )

        messages = st.lists(st.one_of(st.just(b""), request_frame), min_size=1, max_size=4)
        for n, frames in enumerate(examples(messages)):
            replies.clear()
            dealer.send_multipart(frames)
            tag = b"sentinel-%d" % n
            dealer.send_multipart([b"", tnetstring.dumps({b"id": tag, b"method": b"get-zmq-uris"})])
            await poll_until(reactor, lambda: any(_packet(r).get(b"id") == tag for r in drain()), what=f"sentinel reply after {frames!r}")
            garbage_replies = replies[:-1]
            assert len(garbage_replies) == (1 if b"" in frames else 0), (frames, replies)
            for reply in garbage_replies:
                packet = _packet(reply)
                assert b"success" in packet, (frames, reply)
                if not packet[b"success"]:
                    conditions.add(packet[b"condition"])
            assert_alive(proxy)
        assert b"bad-format" in conditions
        assert conditions <= {b"bad-format", b"bad-request", b"method-not-found", b"item-not-found"}, conditions
        await still_serves(reactor, proxy, "command")
        assert_clean_log(proxy)
    finally:
        dealer.close()
        ctx.term()
        await proxy.stop()


def _bytes_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k).encode(): _bytes_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes_keys(v) for v in value]
    return value


def _packet(reply: list[bytes]) -> dict:
    """The reply's tnetstring packet (its last frame); {} if it is not one."""
    try:
        packet = tnetstring.loads(reply[-1])
    except tnetstring.TnetstringError:
        return {}
    return packet if isinstance(packet, dict) else {}


@st.composite
def ws_frames(draw: Any) -> bytes:
    """One frame with random header bits: FIN, RSV, any opcode, masked or not, a length that may lie."""
    payload = draw(st.binary(max_size=200))
    byte0 = draw(st.integers(0, 255))
    masked = draw(st.booleans())
    declared = draw(st.sampled_from([len(payload), len(payload) + 1, max(len(payload) - 1, 0), 126, 127, 70000]))
    if declared < 126:
        length = bytes([(0x80 if masked else 0) | declared])
    elif declared < 65536:
        length = bytes([(0x80 if masked else 0) | 126]) + declared.to_bytes(2, "big")
    else:
        length = bytes([(0x80 if masked else 0) | 127]) + declared.to_bytes(8, "big")
    return bytes([byte0]) + length + (b"\x01\x02\x03\x04" if masked else b"") + payload


ws_garbage = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.lists(st.one_of(ws_frames(), st.builds(ws_frame, st.binary(max_size=50), st.sampled_from([0, 1, 2, 8, 9, 10]))), min_size=1, max_size=4).map(b"".join),
)


def _server_close_codes(data: bytes) -> list[int]:
    """Close codes in the unmasked frames a server sent (stops at the first incomplete frame)."""
    codes, pos = [], 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        payload, pos = data[pos : pos + n], pos + n
        if opcode == 8 and len(payload) >= 2:
            codes.append(int.from_bytes(payload[:2], "big"))
    return codes


async def _ws_garbage(reactor: Any, port: int, payload: bytes) -> bytes:
    client = await raw_connect(reactor, port)
    client.transport.write(WS_HANDSHAKE % (b"/ws?channel=wsfuzz", b"localhost"))
    await client.wait_for(reactor, b"\r\n\r\n")
    assert client.received.startswith(b"HTTP/1.1 101 "), client.received
    handshake_end = client.received.index(b"\r\n\r\n") + 4
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    try:
        await client.wait_closed(reactor, ANSWERED)
    finally:
        client.transport.abortConnection()
    return client.received[handshake_end:]


@pytest_twisted.ensureDeferred
async def test_garbage_websocket_frames_close_only_that_client(reactor, tmp_path):
    """Random bytes and frames with random header bits after a good handshake close that client
    (with 1002/1007/1009 when a close frame is sent, never 1011); a WebSocket opened first and one
    opened after all this still echo and get publishes."""
    proxy = await start_proxy(reactor, tmp_path, ["* test"])
    codes: dict[int, bytes] = {}
    bystander = None
    try:
        bystander = await ws_connect(reactor, proxy.client_port, "/ws?channel=wsfuzz")
        for payload in examples(ws_garbage):
            sent_back = await _ws_garbage(reactor, proxy.client_port, payload)
            for code in _server_close_codes(sent_back):
                codes.setdefault(code, payload)
            assert_alive(proxy)
        assert set(codes) <= {1000, 1002, 1007, 1009}, f"close codes sent (with a payload that caused each): {codes}"
        await publish(reactor, proxy, "wsfuzz", "still here", ws=True)
        await bystander.wait(reactor, lambda: any(m == b"still here" for m, _ in bystander.messages), "publish to the bystander")
        after = await ws_connect(reactor, proxy.client_port, "/ws?channel=wsfuzz")
        after.sendMessage(b"echo?")
        await after.wait(reactor, lambda: (b"echo?", False) in after.messages, "echo after the garbage")
        after.sendClose(1000)
        await after.wait(reactor, lambda: after.closed, "closed")
        assert not bystander.closed
        await still_serves(reactor, proxy, "ws-frames")
        assert_clean_log(proxy)
    finally:
        if bystander is not None:
            bystander.transport.abortConnection()
        await proxy.stop()
