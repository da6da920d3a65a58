"""
HTTP/2 on https_ports end to end through the real C{twistd -n pushpin}: ALPN picks h2 for a
client that offers it (HTTP/1.1 stays the answer for one that does not), and on one HTTP/2
connection a proxied GET, a response hold, a stream hold, SSE with keep-alives and a
Grip-Link rel=next stream all work at once; a stream whose client opens no window stalls
alone while another stream of the connection gets its messages; httpx's HTTP/2 client too.
The HTTP/2 client here is the h2 package on a Twisted TLS connection, so the test controls
each stream's WINDOW_UPDATEs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import pytest_twisted
from twisted.internet import protocol, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

from tests.net.certs import TestCA

from .harness import ScriptedOrigin, Waiter, start_origin
from .test_end_to_end import _publish
from .test_tls_listeners import _install, start_configured, tls_connect, verified


class H2Client(protocol.Protocol):
    """An HTTP/2 client (the h2 package): requests by stream, what each received, and streams whose data it does not acknowledge."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.waiter = Waiter()
        self.streams: dict[int, dict] = {}
        #: streams whose received DATA are not acknowledged (their window stays shut), with the bytes owed
        self.held: dict[int, int] = {}
        self.closed = False

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(1 << 24)  # the connection's window: only streams' stay small
        self.transport.write(self.conn.data_to_send())

    def request(self, path: bytes, *, hold: bool = False, method: bytes = b"GET", body: bytes | None = None,
                length: bool = True) -> int:
        """Open a stream; a C{body} is sent as far as the stream's window allows, the rest as it opens (C{length}: with Content-Length)."""
        sid = self.conn.get_next_available_stream_id()
        headers = [(b":method", method), (b":path", path), (b":scheme", b"https"), (b":authority", b"example.com")]
        if body is not None and length:
            headers.append((b"content-length", b"%d" % len(body)))
        self.conn.send_headers(sid, headers, end_stream=body is None)
        self.streams[sid] = {"headers": None, "data": bytearray(), "ended": False, "reset": False, "upload": body}
        if hold:
            self.held[sid] = 0
        self._send_uploads()
        self.transport.write(self.conn.data_to_send())
        return sid

    def _send_uploads(self) -> None:
        for sid, stream in self.streams.items():
            body = stream.get("upload")
            while body:
                room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
                if room <= 0:
                    break
                self.conn.send_data(sid, body[:room], end_stream=len(body) <= room)
                body = stream["upload"] = body[room:]

    def release(self, sid: int) -> None:
        """Acknowledge what stream C{sid} received, and from now on all it receives."""
        owed = self.held.pop(sid)
        if owed:
            self.conn.acknowledge_received_data(owed, sid)
            self.transport.write(self.conn.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            sid = getattr(event, "stream_id", None)
            if isinstance(event, h2.events.ResponseReceived):
                self.streams[sid]["headers"] = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                self.streams[sid]["data"] += event.data
                if sid in self.held:
                    self.held[sid] += event.flow_controlled_length
                elif event.flow_controlled_length:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, h2.events.StreamEnded):
                self.streams[sid]["ended"] = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams[sid]["reset"] = True
        self._send_uploads()  # a WINDOW_UPDATE lets more of an upload go
        out = self.conn.data_to_send()
        if out:
            self.transport.write(out)
        self.waiter.check()

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        self.waiter.check()

    def wait_data(self, reactor, sid: int, needle: bytes):
        return self.waiter.wait(reactor, lambda: needle in self.streams[sid]["data"], what=f"{needle!r} on stream {sid}")

    def wait_end(self, reactor, sid: int):
        return self.waiter.wait(reactor, lambda: self.streams[sid]["ended"], what=f"end of stream {sid}")


def h2_options(ca: TestCA, protocols=(b"h2", b"http/1.1")):
    """A verifying client for example.com offering C{protocols} by ALPN."""
    return ssl.optionsForClientTLS("example.com", trustRoot=ssl.Certificate.loadPEM(ca.pem), acceptableProtocols=list(protocols))


async def h2_connect(reactor, port: int, ca: TestCA) -> H2Client:
    client = H2Client()
    endpoint = wrapClientTLS(h2_options(ca), TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return client


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def _digest(body: bytes) -> bytes:
    return b"got %d %s\n" % (len(body), hashlib.sha256(body).hexdigest().encode())


def _origin() -> ScriptedOrigin:
    origin = ScriptedOrigin()

    def held(kind: str, channel: bytes, body: bytes, *extra: tuple[bytes, bytes]):
        def handler(req):
            req.setHeader(b"content-type", b"text/event-stream" if channel == b"sse" else b"text/plain")
            req.setHeader(b"grip-hold", kind.encode())
            req.setHeader(b"grip-channel", channel)
            for name, value in extra:
                req.setHeader(name, value)
            return body
        return handler

    origin.handlers[b"/plain"] = lambda req: b"plain over h2\n"
    origin.handlers[b"/poll"] = held("response", b"poll", b"timeout\n")
    origin.handlers[b"/stream"] = held("stream", b"st", b"stream open\n")
    origin.handlers[b"/slow"] = held("stream", b"slow", b"slow open\n")
    origin.handlers[b"/sse"] = held("stream", b"sse", b":open\n\n", (b"grip-keep-alive", b":ka\\n\\n; format=cstring; timeout=1"))

    def first(req):
        req.setHeader(b"content-type", b"text/plain")
        req.setHeader(b"grip-link", b"</next2>; rel=next")
        return b"page one\n"

    origin.handlers[b"/next1"] = first
    origin.handlers[b"/next2"] = lambda req: b"page two\n"
    origin.handlers[b"/upload"] = lambda req: _digest(origin.requests[-1]["body"])
    return origin


async def _start(reactor, tmp_path: Path, ca: TestCA, **runner: str):
    _install(ca, tmp_path)
    origin_port = await start_origin(reactor, _origin())
    proxy = await start_configured(reactor, tmp_path, [f"* 127.0.0.1:{origin_port.getHost().port}"],
                                   runner={"https_ports": "127.0.0.1:0", **runner})
    return origin_port, proxy


@pytest_twisted.ensureDeferred
async def test_alpn_picks_h2_and_http11_stays_the_fallback(reactor, tmp_path, ca):
    """A client offering h2 gets h2 and a proxied GET over it; one offering http/1.1 only, or no ALPN, gets HTTP/1.1 on the same port."""
    origin_port, proxy = await _start(reactor, tmp_path, ca)
    try:
        client = await h2_connect(reactor, proxy.https_port, ca)
        sid = client.request(b"/plain")
        await client.wait_end(reactor, sid)
        assert client.transport.negotiatedProtocol == b"h2"
        assert client.streams[sid]["headers"][b":status"] == b"200"
        assert bytes(client.streams[sid]["data"]) == b"plain over h2\n"
        second = client.request(b"/plain")  # the connection serves a second request
        await client.wait_end(reactor, second)
        assert bytes(client.streams[second]["data"]) == b"plain over h2\n"
        client.transport.loseConnection()

        for offered in ([b"http/1.1"], None):
            options = h2_options(ca, offered) if offered else verified(ca, "example.com")
            old = await tls_connect(reactor, proxy.https_port, options)
            old.transport.write(b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n")
            await old.wait_for(reactor, b"plain over h2\n")
            assert old.received.startswith(b"HTTP/1.1 200 OK\r\n")
            assert old.transport.negotiatedProtocol in (b"http/1.1", None)
            old.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_every_hold_on_one_h2_connection(reactor, tmp_path, ca):
    """On one HTTP/2 connection a long-poll, a stream, SSE with keep-alives and a rel=next stream run at once and each gets its own."""
    origin_port, proxy = await _start(reactor, tmp_path, ca)
    try:
        client = await h2_connect(reactor, proxy.https_port, ca)
        poll = client.request(b"/poll")
        stream = client.request(b"/stream")
        sse = client.request(b"/sse")
        pages = client.request(b"/next1")
        await client.wait_data(reactor, stream, b"stream open\n")
        await client.wait_data(reactor, sse, b":open\n\n")
        await client.wait_end(reactor, pages)
        assert bytes(client.streams[pages]["data"]) == b"page one\npage two\n"
        await proxy.wait_for_log(r"channel=poll")
        await client.wait_data(reactor, sse, b":ka\n\n")  # the keep-alive, 1 s after the last write
        await _publish(reactor, proxy.control_port, [
            {"channel": "poll", "formats": {"http-response": {"body": "answer\n"}}},
            {"channel": "st", "formats": {"http-stream": {"content": "published\n"}}},
            {"channel": "sse", "formats": {"http-stream": {"content": "data: hi\n\n"}}},
        ])
        await client.wait_end(reactor, poll)
        assert bytes(client.streams[poll]["data"]) == b"answer\n"
        assert client.streams[poll]["headers"][b"content-length"] == b"7"
        await client.wait_data(reactor, stream, b"stream open\npublished\n")
        await client.wait_data(reactor, sse, b"data: hi\n\n")
        headers = client.streams[stream]["headers"]
        assert b"transfer-encoding" not in headers and b"connection" not in headers
        assert not client.streams[stream]["ended"]  # a stream hold stays open
        await _publish(reactor, proxy.control_port, [{"channel": "st", "formats": {"http-stream": {"action": "close"}}}])
        await client.wait_end(reactor, stream)  # closed cleanly: END_STREAM, not a reset
        assert not client.streams[stream]["reset"]
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stream_with_its_window_shut_stalls_alone(reactor, tmp_path, ca):
    """A stream whose client opens no window stops at its 65,535 bytes while another stream of the connection gets its messages; opened, it gets the rest in order."""
    origin_port, proxy = await _start(reactor, tmp_path, ca)
    try:
        client = await h2_connect(reactor, proxy.https_port, ca)
        slow = client.request(b"/slow", hold=True)
        fast = client.request(b"/stream")
        await client.wait_data(reactor, slow, b"slow open\n")
        await client.wait_data(reactor, fast, b"stream open\n")
        chunks = [(b"%03d" % i) * 3000 + b"\n" for i in range(40)]  # 40 x 9 KB: more than the window
        await _publish(reactor, proxy.control_port, [
            {"channel": "slow", "formats": {"http-stream": {"content": chunk.decode()}}} for chunk in chunks])
        for i in range(5):
            await _publish(reactor, proxy.control_port, [{"channel": "st", "formats": {"http-stream": {"content": f"fast {i}\n"}}}])
            await client.wait_data(reactor, fast, f"fast {i}\n".encode())
        got = len(client.streams[slow]["data"])
        assert got <= 65535, got  # the slow stream's window: no more
        client.release(slow)
        expected = b"slow open\n" + b"".join(chunks)
        await client.waiter.wait(reactor, lambda: len(client.streams[slow]["data"]) >= len(expected), what=f"the rest ({len(client.streams[slow]['data'])} of {len(expected)}, owed {client.held})")
        assert bytes(client.streams[slow]["data"]) == expected
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_uploads_over_h2_small_large_and_without_length(reactor, tmp_path, ca):
    """POSTs over h2 reach the origin whole: a small body, a 300 KB one (streamed, past the stream's window), and one without Content-Length."""
    origin_port, proxy = await _start(reactor, tmp_path, ca)
    try:
        client = await h2_connect(reactor, proxy.https_port, ca)
        bodies = [b"small", bytes(range(256)) * 1200, b"u" * 150000]
        sids = [client.request(b"/upload", method=b"POST", body=bodies[0]),
                client.request(b"/upload", method=b"POST", body=bodies[1]),
                client.request(b"/upload", method=b"POST", body=bodies[2], length=False)]
        for sid, body in zip(sids, bodies):
            await client.wait_end(reactor, sid)
            assert bytes(client.streams[sid]["data"]) == _digest(body)
        client.transport.loseConnection()
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()


@pytest_twisted.ensureDeferred
async def test_httpx_http2_client(reactor, tmp_path, ca):
    """httpx's own HTTP/2 client gets a proxied GET and a published long-poll answer over h2, both on one connection."""
    import threading

    import httpx
    from twisted.internet import threads

    origin_port, proxy = await _start(reactor, tmp_path, ca)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem)
    base = f"https://localhost:{proxy.https_port}"
    try:
        with httpx.Client(http2=True, verify=str(ca_file)) as http:
            plain = await threads.deferToThread(http.get, base + "/plain")
            assert plain.http_version == "HTTP/2" and plain.text == "plain over h2\n"
            started = threading.Event()
            poll = threads.deferToThread(lambda: (started.set(), http.get(base + "/poll"))[1])
            await proxy.wait_for_log(r"channel=poll")
            await _publish(reactor, proxy.control_port, [{"channel": "poll", "formats": {"http-response": {"body": "late\n"}}}])
            answer = await poll
            assert answer.http_version == "HTTP/2" and answer.text == "late\n"
    finally:
        assert await proxy.stop() == 0
        await origin_port.stopListening()
