"""
A stream's next link answered with its own instruct (Pushpin 1.41, "apply next link response's
own filters to its content"): through the real service, the page fetched from the next link
goes out through the filters of the page's own channels, under its own meta, not through the
first answer's; and a next link answering with a response hold ends the stream with Pushpin's
reason (debug mode) instead of relaying the page.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest_twisted

from ..proxyfakes import dechunk
from .harness import ScriptedOrigin, raw_connect, start_origin, start_proxy
from .test_end_to_end import _publish


def _body(raw: bytes) -> tuple[bytes, bool]:
    """The chunked body of a raw response as far as it came, and whether its last chunk did."""
    return dechunk(raw.partition(b"\r\n\r\n")[2])


def _stream(request, *headers: tuple[bytes, bytes]) -> None:
    request.setHeader(b"content-type", b"text/plain")
    request.setHeader(b"grip-hold", b"stream")
    for name, value in headers:
        request.responseHeaders.addRawHeader(name, value)


@asynccontextmanager
async def _streaming(reactor, tmp_path, first, page, *, options: str = "", first_body: bytes):
    """
    A proxy in front of an origin whose C{/stream} answers C{first} and whose C{/next} answers
    C{page}; a client streaming C{/stream}, once it has C{first_body} and the proxy has
    subscribed it to channel feed. Yields (origin, proxy, client).
    """
    origin = ScriptedOrigin()
    origin.handlers[b"/stream"] = first
    origin.handlers[b"/next"] = page
    port = await start_origin(reactor, origin)
    proxy = await start_proxy(reactor, tmp_path, [f"*{options} 127.0.0.1:{port.getHost().port}"])
    client = None
    try:
        client = await raw_connect(reactor, proxy.client_port)
        client.transport.write(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, first_body)
        await proxy.wait_for_log(r"subscribe .*channel=feed")
        yield origin, proxy, client
    finally:
        if client is not None:
            client.transport.loseConnection()
        await proxy.stop()
        await port.stopListening()


async def _hint(reactor, proxy) -> None:
    """A hint on channel feed: the stream fetches its next link."""
    await _publish(reactor, proxy.control_port, [{"channel": "feed", "formats": {"http-stream": {"action": "hint"}}}])


@pytest_twisted.ensureDeferred
async def test_next_link_page_goes_out_through_its_own_channels_filter(reactor, tmp_path):
    """The first answer's channel has no filter, the next link's has build-id: the client sees the first body as it came, the page rewritten, and later publishes rewritten under the new instruct."""
    meta = (b"grip-set-meta", b"id_format=%(feed)s, id_encoding=hex")

    def first(request):
        _stream(request, meta, (b"grip-channel", b"feed"), (b"grip-link", b"</next>; rel=next"))
        return b"first %(a)I\n"

    def page(request):
        _stream(request, meta, (b"grip-channel", b"feed; filter=build-id"), (b"grip-link", b"</next>; rel=next"))
        return b"page %(b)I\n"

    async with _streaming(reactor, tmp_path, first, page, first_body=b"first %(a)I\n") as (origin, proxy, client):
        await _hint(reactor, proxy)
        await client.wait_for(reactor, b"page 62\n")
        assert [r["uri"] for r in origin.requests] == [b"/stream", b"/next"]
        # the page's instruct is the stream's now: its channel's build-id rewrites publishes too
        await _publish(reactor, proxy.control_port, [{"channel": "feed", "id": "7", "formats": {"http-stream": {"content": "item %I\n"}}}])
        await client.wait_for(reactor, b"item 37\n")
        assert _body(client.received) == (b"first %(a)I\npage 62\nitem 37\n", False)


@pytest_twisted.ensureDeferred
async def test_next_link_answering_a_response_hold_ends_the_stream_with_the_reason(reactor, tmp_path):
    """debug route: a next link answered with Grip-Hold: response is not relayed; the stream ends, Pushpin's reason after what was sent."""

    def first(request):
        _stream(request, (b"grip-channel", b"feed"), (b"grip-link", b"</next>; rel=next"))
        return b"first\n"

    def page(request):
        request.setHeader(b"grip-hold", b"response")
        request.setHeader(b"grip-channel", b"feed")
        return b"not for the stream\n"

    async with _streaming(reactor, tmp_path, first, page, options=",debug", first_body=b"first\n") as (_, proxy, client):
        await _hint(reactor, proxy)
        await client.wait_for(reactor, b"0\r\n\r\n")
        assert _body(client.received) == (b"first\n\n\nNext link returned non-stream hold.\n", True)
        await proxy.wait_for_log(r"next link .*Next link returned non-stream hold\.")
