"""
[handler] update_on_first_subscription through the real service: about a second after a
channel's first subscriber, the origin is asked again for each hold on it, as Pushpin 1.36
and 1.41 (by default) ask it: a long-poll's own request again (Grip-Last for a channel with a
prev-id), a stream's next link with Grip-Last. With C{false}, nothing is asked again.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from .harness import ScriptedOrigin, raw_connect
from .test_end_to_end import Env, _publish


@pytest.fixture
def origin():
    return ScriptedOrigin()


class Origin:
    """Answers a long-poll on channel lp, a stream on channel st with a next link, and the link; notes when."""

    def __init__(self, reactor, origin: ScriptedOrigin, *, poll_timeout: int = 20) -> None:
        self.reactor = reactor
        self.origin = origin
        #: (reactor time, path, Grip-Last) of each request the origin got
        self.asked: list[tuple[float, bytes, bytes | None]] = []
        self.poll_timeout = poll_timeout
        origin.handlers[b"/lp"] = self.long_poll
        origin.handlers[b"/stream"] = self.stream
        origin.handlers[b"/next"] = self.next_link

    def _note(self, request) -> None:
        self.asked.append((self.reactor.seconds(), request.uri, request.getHeader(b"grip-last")))
        self.origin.waiter.check()  # (the origin checked its waiters before this handler ran)

    def long_poll(self, request):
        self._note(request)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"response")
        request.setHeader(b"grip-channel", b"lp; prev-id=7")
        request.setHeader(b"grip-timeout", str(self.poll_timeout).encode())
        return b"timed out\n"

    def stream(self, request):
        self._note(request)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"st; prev-id=3")
        request.setHeader(b"grip-link", b"</next?from=3>; rel=next; timeout=120")
        return b"hello\n"

    def next_link(self, request):
        self._note(request)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"grip-hold", b"stream")
        request.setHeader(b"grip-channel", b"st; prev-id=4")
        request.setHeader(b"grip-link", b"</next?from=4>; rel=next; timeout=120")
        return b"page\n"

    def paths(self) -> list[bytes]:
        return [path for _, path, _ in self.asked]

    def wait_asked(self, path: bytes, times: int, what: str):
        return self.origin.waiter.wait(self.reactor, lambda: self.paths().count(path) >= times, what=what)


@pytest_twisted.ensureDeferred
async def test_a_long_poll_is_asked_again_a_second_after_it_subscribed(reactor, tmp_path, origin):
    """The origin gets the long-poll's request again about 1 s later, with Grip-Last; the client keeps waiting and gets the publish."""
    script = Origin(reactor, origin)
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_connect(reactor, env.proxy.client_port)
        client.transport.write(b"GET /lp HTTP/1.1\r\nHost: example.com\r\nX-Mine: 1\r\n\r\n")
        await script.wait_asked(b"/lp", 2, "the long-poll asked again")
        (first, _, last_first), (again, uri, last_again) = script.asked
        assert uri == b"/lp" and last_first is None and last_again == b"lp; last-id=7"
        # Pushpin: the 1,000 ms timer plus the update limiter's 100 ms batch wait
        assert 1.0 <= again - first < 3.0, again - first
        retried = origin.requests[-1]
        assert (b"X-Mine", b"1") in retried["headers"] and retried["method"] == b"GET"
        assert client.received == b""
        await env.proxy.wait_for_log(r"subscribe http://example.com/lp channel=lp retry")
        await _publish(reactor, env.proxy.control_port, [{"channel": "lp", "formats": {"http-response": {"body": "news\n"}}}])
        await client.wait_for(reactor, b"\r\n\r\nnews\n")
        assert script.paths() == [b"/lp", b"/lp"]
        client.transport.loseConnection()
    finally:
        assert await env.stop() == 0


@pytest_twisted.ensureDeferred
async def test_a_stream_with_a_next_link_is_recovered(reactor, tmp_path, origin):
    """About 1 s after a stream subscribed, its next link is fetched with Grip-Last and the page reaches the client."""
    script = Origin(reactor, origin)
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_connect(reactor, env.proxy.client_port)
        client.transport.write(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"6\r\nhello\n\r\n")
        await client.wait_for(reactor, b"5\r\npage\n\r\n")
        (first, _, _), (fetched, uri, last) = script.asked
        assert uri == b"/next?from=3" and last == b"st; last-id=3"
        assert 1.0 <= fetched - first < 3.0, fetched - first
        # the stream goes on from the page's position
        await _publish(reactor, env.proxy.control_port, [
            {"channel": "st", "id": "5", "prev-id": "4", "formats": {"http-stream": {"content": "five\n"}}}])
        await client.wait_for(reactor, b"5\r\nfive\n\r\n")
        assert script.paths() == [b"/stream", b"/next?from=3"]
        client.transport.loseConnection()
    finally:
        assert await env.stop() == 0


@pytest_twisted.ensureDeferred
async def test_turned_off_nothing_is_asked_again(reactor, tmp_path, origin):
    """update_on_first_subscription=false: past the second (the long-poll's own 2 s timeout), the origin was asked once per client."""
    script = Origin(reactor, origin, poll_timeout=2)
    env = await Env(reactor, tmp_path, origin).start(update_on_first_subscription="false")
    try:
        assert "update_on_first_subscription" not in env.proxy.output  # no "not implemented" line either way
        stream = await raw_connect(reactor, env.proxy.client_port)
        stream.transport.write(b"GET /stream HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await stream.wait_for(reactor, b"6\r\nhello\n\r\n")
        poll = await raw_connect(reactor, env.proxy.client_port)
        poll.transport.write(b"GET /lp HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await poll.wait_for(reactor, b"\r\n\r\ntimed out\n")  # 2 s after it subscribed
        assert script.paths() == [b"/stream", b"/lp"]
        assert b"page" not in stream.received
        stream.transport.loseConnection()
        poll.transport.loseConnection()
    finally:
        assert await env.stop() == 0


@pytest_twisted.ensureDeferred
async def test_a_long_poll_on_a_channel_already_held_is_not_asked_again(reactor, tmp_path, origin):
    """
    The second long-poll on a subscribed channel starts no timer: only the first subscription's
    update asks again. One process: with workers, each process counts its own first
    subscriptions, and the second client may be another process's (README).
    """
    script = Origin(reactor, origin, poll_timeout=3)
    env = await Env(reactor, tmp_path, origin).start(workers="1")
    try:
        first = await raw_connect(reactor, env.proxy.client_port)
        first.transport.write(b"GET /lp HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await script.wait_asked(b"/lp", 2, "the first long-poll asked again")
        # the re-ask's hold keeps the channel subscribed (and it lingers after a long-poll)
        second = await raw_connect(reactor, env.proxy.client_port)
        second.transport.write(b"GET /lp HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await second.wait_for(reactor, b"\r\n\r\ntimed out\n")  # its 3 s timeout: well past a second
        assert script.paths() == [b"/lp", b"/lp", b"/lp"]
        first.transport.loseConnection()
        second.transport.loseConnection()
    finally:
        assert await env.stop() == 0


@pytest_twisted.ensureDeferred
async def test_news_the_subscription_missed_reaches_the_client_through_the_re_ask(reactor, tmp_path, origin):
    """What was published before the subscription took effect: the re-asked origin answers it, and the client gets that answer."""
    script = Origin(reactor, origin)
    missed = []

    def long_poll(request):
        if not script.paths().count(b"/lp"):
            return script.long_poll(request)
        script._note(request)  # asked again: meanwhile there is news, answered at once (no hold)
        missed.append(request.getHeader(b"grip-last"))
        request.setHeader(b"content-type", b"text/plain")
        return b"missed news\n"

    origin.handlers[b"/lp"] = long_poll
    env = await Env(reactor, tmp_path, origin).start()
    try:
        client = await raw_connect(reactor, env.proxy.client_port)
        client.transport.write(b"GET /lp HTTP/1.1\r\nHost: example.com\r\n\r\n")
        await client.wait_for(reactor, b"\r\n\r\nmissed news\n")
        assert client.received.startswith(b"HTTP/1.1 200 OK\r\n") and missed == [b"lp; last-id=7"]
        (first, _, _), (again, _, _) = script.asked
        assert 1.0 <= again - first < 3.0, again - first
        client.transport.loseConnection()
    finally:
        assert await env.stop() == 0
