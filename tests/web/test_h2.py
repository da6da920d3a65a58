"""
HTTP/2 connections of the client site (L{pushpin_tx.web.h2}), in memory: an h2 client (the
h2 package) talks to a L{ClientH2Connection} on a C{StringTransport} with a C{Clock}; a held
request writes through its L{ClientRequest} as a hold does. Twisted's own H2Connection is
tested next to it where ours differs (its sending loop spinning on a stream without window).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET

from pushpin_tx._compat import H2Connection
from pushpin_tx.net.maxconn import ConnectionLimit
from pushpin_tx.web.clientsite import ClientChannel, ClientRequest, ClientSite
from pushpin_tx.web.h2 import ClientH2Connection, RoundRobin


class Producer:
    """A push producer that records whether it is paused (a hold's delivery queue stands here)."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class Holding(resource.Resource):
    """Every request is held: its head sent (with headers HTTP/2 forbids among them) and a producer registered."""

    isLeaf = True

    def __init__(self, forbidden: bool = True) -> None:
        super().__init__()
        self.forbidden = forbidden
        self.requests: list[ClientRequest] = []
        self.producers: list[Producer] = []

    def render(self, request: Any) -> Any:
        self.requests.append(request)
        forbidden = [(b"Connection", b"keep-alive"), (b"Transfer-Encoding", b"chunked"), (b"TE", b"gzip")] if self.forbidden else []
        request.send_head(200, b"OK", [(b"Content-Type", b"text/plain"), *forbidden, (b"X-Kept", b"1")], None)
        producer = Producer()
        self.producers.append(producer)
        request.register_producer(producer)
        return NOT_DONE_YET


class Pair:
    """An h2 client and a server-side HTTP/2 connection of C{cls}, joined by hand."""

    def __init__(self, cls: Any = ClientH2Connection, timeout: float | None = None) -> None:
        self.clock = Clock()
        self.resource = Holding(forbidden=cls is ClientH2Connection)
        self.site = ClientSite(self.resource, reactor=self.clock)
        self.transport = StringTransport()
        self.server = cls(self.clock)
        self.server.site = self.server.factory = self.site
        self.server.requestFactory = ClientRequest
        self.server.callLater = self.clock.callLater
        self.server.timeOut = timeout
        self.server.makeConnection(self.transport)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.client.increment_flow_control_window(1 << 24)
        self.events: list[Any] = []
        self.pump()

    def pump(self, turns: int = 20) -> None:
        for _ in range(turns):
            self.turn()
            out = self.transport.value()
            self.transport.clear()
            if out:
                self.events += self.client.receive_data(out)
            data = self.client.data_to_send()
            if data:
                self.server.dataReceived(data)

    def turn(self) -> None:
        """One reactor turn: the calls due now run, not those they schedule (Clock.advance(0) would run a
        loop that keeps rescheduling itself for ever)."""
        due = [call for call in self.clock.calls if call.getTime() <= self.clock.seconds()]
        for call in due:
            self.clock.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)

    def get(self, path: bytes = b"/") -> int:
        sid = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, [(b":method", b"GET"), (b":path", path), (b":scheme", b"https"), (b":authority", b"x")], end_stream=True)
        self.pump()
        return sid

    def received(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)

    def due_now(self) -> int:
        """Calls the clock would run at once: the sending loop rescheduling itself."""
        return sum(1 for call in self.clock.getDelayedCalls() if call.getTime() <= self.clock.seconds())


def test_a_stream_without_window_leaves_the_sending_loop() -> None:
    """A stream with 70 KB queued and a 65,535-byte window sends its window, pauses its producer, and the loop then waits instead of running every turn."""
    pair = Pair()
    sid = pair.get()
    request, producer = pair.resource.requests[0], pair.resource.producers[0]
    request.write_framed(b"x" * 70000)
    pair.pump(50)
    assert len(pair.received(sid)) == 65535
    assert producer.paused
    assert pair.due_now() == 0


def test_twisteds_sending_loop_spins_on_such_a_stream() -> None:
    """twisted.web's own H2Connection keeps rescheduling its loop, every turn, for a stream with data and no window (why ours takes it out)."""
    pair = Pair(H2Connection)
    pair.get()
    pair.resource.requests[0].write_framed(b"x" * 70000)
    pair.pump(50)
    assert pair.due_now() == 1


def test_a_window_update_sends_the_rest_and_resumes_the_producer() -> None:
    """Once the client opens the stream's window, what was queued goes out in order and the producer resumes."""
    pair = Pair()
    sid = pair.get()
    request, producer = pair.resource.requests[0], pair.resource.producers[0]
    body = bytes(range(256)) * 300  # 76,800 bytes
    request.write_framed(body)
    pair.pump(50)
    pair.client.acknowledge_received_data(65535, sid)
    pair.pump(50)
    assert pair.received(sid) == body
    assert not producer.paused


def test_one_stalled_stream_leaves_the_others_going() -> None:
    """Two streams on one connection: the one whose window is used up stalls, the other's writes still arrive."""
    pair = Pair()
    slow, fast = pair.get(), pair.get()
    slow_request, fast_request = pair.resource.requests
    slow_request.write_framed(b"s" * 70000)
    pair.pump(30)
    for i in range(5):
        fast_request.write_framed(b"fast %d\n" % i)
        pair.pump(5)
    assert pair.received(fast) == b"".join(b"fast %d\n" % i for i in range(5))
    assert len(pair.received(slow)) == 65535
    assert pair.resource.producers[0].paused and not pair.resource.producers[1].paused


def test_a_full_socket_pauses_every_streams_producer() -> None:
    """The transport pausing the connection pauses each stream's producer; resuming it resumes those with window left."""
    pair = Pair()
    pair.get(), pair.get()
    producers = pair.resource.producers
    pair.server.pauseProducing()
    assert all(p.paused for p in producers)
    pair.server.resumeProducing()
    assert not any(p.paused for p in producers)


def test_connection_specific_headers_are_left_out() -> None:
    """Connection, Transfer-Encoding and a TE other than trailers never reach an HTTP/2 client; other headers do, lower-cased; the body is unframed."""
    pair = Pair()
    sid = pair.get()
    request = pair.resource.requests[0]
    assert not request.chunked
    request.write_body(b"hello")
    request.unregister_producer()
    request.finish()
    pair.pump()
    response = next(e for e in pair.events if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain"), (b"x-kept", b"1")]
    assert pair.received(sid) == b"hello"
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in pair.events)


@pytest.mark.parametrize("how", ["abort", "close"])
def test_abort_and_close_reset_the_stream_only(how: str) -> None:
    """Aborting or cutting short a held response resets its stream; the connection serves the next request."""
    pair = Pair()
    sid = pair.get()
    getattr(pair.resource.requests[0], how)()
    pair.pump()
    assert any(isinstance(e, h2.events.StreamReset) and e.stream_id == sid for e in pair.events)
    assert not pair.transport.disconnecting
    pair.get()
    assert len(pair.resource.requests) == 2


def test_idle_timeout_waits_for_held_requests() -> None:
    """With a request held the idle timeout does not close the connection; once none is open, it does."""
    pair = Pair(timeout=5)
    sid = pair.get()
    pair.clock.advance(6)
    pair.pump()
    assert not pair.transport.disconnecting
    pair.resource.requests[0].unregister_producer()
    pair.resource.requests[0].finish()
    pair.pump()
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in pair.events)
    pair.clock.advance(6)
    assert pair.transport.disconnecting


def test_a_channel_hands_an_h2_connection_over_with_its_count() -> None:
    """A ClientChannel whose transport negotiated h2 hands the connection to a ClientH2Connection, which keeps the one client_maxconn place and frees it when it ends."""
    clock = Clock()
    limit = ConnectionLimit(10)
    site = ClientSite(Holding(), reactor=clock, limit=limit)
    transport = StringTransport()
    transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    assert limit.count == 1
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    channel.dataReceived(client.data_to_send())
    server = transport.protocol
    assert isinstance(server, ClientH2Connection) and transport.producer is server
    assert server.conn.decoder.max_header_list_size == 8192  # the site's header limit, enforced by HPACK
    assert limit.count == 1
    events = client.receive_data(transport.value())
    assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)  # the server's preface
    server.connectionLost(Exception("gone"))
    assert limit.count == 0


@pytest.mark.parametrize("negotiated, http2", [(b"http/1.1", True), (None, True), (b"h2", False)])
def test_a_channel_stays_http11_otherwise(negotiated: bytes | None, http2: bool) -> None:
    """ALPN's http/1.1, no ALPN, or a site with HTTP/2 off: the channel reads HTTP/1.1 itself."""
    site = ClientSite(Holding(), reactor=Clock(), http2=http2)
    transport = StringTransport()
    transport.negotiatedProtocol = negotiated  # type: ignore[attr-defined]
    transport.protocol = None  # type: ignore[attr-defined]
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.protocol is None and isinstance(channel, ClientChannel)
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")


def test_site_alpn_follows_its_http2_switch() -> None:
    """The site offers h2 then http/1.1 by default, http/1.1 alone with http2=False."""
    assert ClientSite(Holding(), reactor=Clock()).alpn == (b"h2", b"http/1.1")
    assert ClientSite(Holding(), reactor=Clock(), http2=False).alpn == (b"http/1.1",)


class CountingTransport(StringTransport):
    """A StringTransport that counts its writes."""

    writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def test_a_turn_sends_every_streams_frame_in_one_write() -> None:
    """Ten streams written to in one turn go out in the next pass as ten DATA frames in one transport write (twisted.web: one frame per turn; a loop run at each write: one write each)."""
    pair = Pair()
    sids = [pair.get() for _ in range(10)]
    pair.transport.__class__ = CountingTransport
    for request in pair.resource.requests:
        request.write_framed(b"event\n")
    pair.turn()
    assert pair.transport.writes == 1
    pair.pump()
    assert [pair.received(sid) for sid in sids] == [b"event\n"] * 10


def test_round_robin_takes_unblocked_streams_in_turn() -> None:
    """RoundRobin gives the unblocked streams in turn, skips blocked and removed ones, and raises DeadlockError when none can send."""
    import priority

    ring = RoundRobin(maximum_streams=4)
    for sid in (1, 3, 5):
        ring.insert_stream(sid)
    assert [next(ring) for _ in range(4)] == [1, 3, 5, 1]
    ring.block(3)
    assert [next(ring) for _ in range(3)] == [5, 1, 5]
    ring.unblock(3)
    ring.unblock(3)  # twice: still one turn
    assert sorted(next(ring) for _ in range(3)) == [1, 3, 5]
    ring.remove_stream(1)
    ring.block(5)
    assert [next(ring) for _ in range(2)] == [3, 3]
    ring.block(3)
    with pytest.raises(priority.DeadlockError):
        next(ring)
    with pytest.raises(priority.DuplicateStreamError):
        ring.insert_stream(3)
    with pytest.raises(priority.MissingStreamError):
        ring.reprioritize(9)
    ring.insert_stream(7)
    ring.insert_stream(9)  # four known: 3, 5, 7, 9
    with pytest.raises(priority.TooManyStreamsError):
        ring.insert_stream(11)


def test_headers_past_the_limit_end_the_connection() -> None:
    """A request whose header list passes the site's limit (client_buffer_size) ends the HTTP/2 connection; a smaller one is served."""
    clock = Clock()
    site = ClientSite(Holding(), reactor=clock, header_limit=1024)
    transport = StringTransport()
    transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    channel.dataReceived(client.data_to_send())
    server = transport.protocol
    client.receive_data(transport.value())
    server.dataReceived(client.data_to_send())  # the client's SETTINGS ACK
    base = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"), (b":authority", b"x")]
    client.send_headers(1, base + [(b"x-small", b"s" * 100)], end_stream=True)
    server.dataReceived(client.data_to_send())
    assert len(site.resource.requests) == 1
    client.send_headers(3, base + [(b"x-large", b"l" * 2000)], end_stream=True)
    server.dataReceived(client.data_to_send())
    assert len(site.resource.requests) == 1 and transport.disconnecting
