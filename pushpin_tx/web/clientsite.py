# -*- test-case-name: tests.web.test_proxy -*-
"""
The client-facing HTTP server: twisted.web's C{Site} with a request class that can be held.

L{ClientRequest} is a twisted.web C{Request} that also serves as the L{HttpSink} of a hold:
it writes a status line and headers once, then either body bytes (framed by twisted.web) or
bytes the router already framed for every subscriber (written straight to the transport,
so a published chunk is encoded once, not once per connection).

On an https port whose ALPN picked C{h2}, the L{ClientChannel} hands the connection to
L{pushpin_tx.web.h2} before reading anything; each request is then an HTTP/2 stream (the
request's C{channel} is twisted.web's C{H2Stream}, its C{transport} None) and the same
L{ClientRequest} serves it: C{chunked} stays 0 (HTTP/2 frames the body), so holds write
bodies unframed; aborting or cutting a response short resets the stream, not the connection.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, cast
from weakref import WeakKeyDictionary

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from pushpin_tx._compat import at_request_start, canonical_header_name, channel_paused, deliver_parsed_head, http_channel_made_on_tcp, is_disconnected, parse_request_line, request_line
from pushpin_tx.net import gcpolicy
from pushpin_tx.net.writethrough import TurnCounter, writer_for
from pushpin_tx.web.h2 import h2_available, take_over

__all__ = ["ClientRequest", "ClientChannel", "ClientSite", "StreamingBody", "STREAM_UPLOADS_OVER"]

#: Request bodies announced larger than this go to the origin as they arrive. Pushpin cannot
#: accept GRIP for them either (§4.1 step 9), so nothing is lost by not keeping them; smaller
#: bodies are kept whole, for GRIP and retries. A chunked body (length unknown) is kept in
#: memory while it is this size or less; the chunk that takes it past this starts streaming
#: (what was kept goes first), so it never waits in a temporary file.
STREAM_UPLOADS_OVER = 100000

# twisted.web keeps request bodies shorter than this in memory (a BytesIO), longer ones in a
# temporary file (what its Request.gotLength does)
_IN_MEMORY_BELOW = 100000

# While the origin connection is being made, this much of an upload is held before the
# client is paused.
_EARLY_BUFFER = 65536


@implementer(IBodyProducer)
class StreamingBody:
    """
    A client's upload on its way to the origin: chunks are written as they arrive, and while
    the origin connection cannot take more, the client's connection stops being read.
    """

    def __init__(self, length: "int | object", transport: Any) -> None:
        #: the announced length, or twisted.web's UNKNOWN_LENGTH for a chunked upload
        self.length = length
        self._transport = transport
        self._consumer: Any = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._done: Deferred[None] = Deferred()
        self._paused = False
        self.started = False

    def startProducing(self, consumer: Any) -> "Deferred[None]":
        self.started = True
        self._consumer = consumer
        early, self._early = self._early, []
        for chunk in early:
            consumer.write(chunk)
        if self._paused:
            self.resumeProducing()
        return self._done

    def feed(self, data: bytes) -> None:
        if self._consumer is not None:
            self._consumer.write(data)
            return
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > _EARLY_BUFFER and not self._paused:
            self.pauseProducing()

    def complete(self) -> None:
        if not self._done.called:
            self._done.callback(None)

    def pauseProducing(self) -> None:
        self._paused = True
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._paused = False
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        self._consumer = None  # the origin request failed; the rest of the upload is ignored


class ClientRequest(server.Request):
    """A client request that a hold can write to, and whose large upload is streamed."""

    #: the streamed upload of a large request, None for a body kept whole
    upload: StreamingBody | None = None
    channel: "ClientChannel"
    _body_done = False
    _finish_pending = False
    #: a chunked body, kept in memory until it is known to be small or found to be large
    _chunked = False
    #: over HTTP/2: the announced length of a body kept as a chunked one is (UNKNOWN_LENGTH: none)
    _announced: "int | object" = UNKNOWN_LENGTH
    #: Every head is the origin's, a GRIP instruct's or one of Pushpin's own answers, each
    #: naming its Content-Type when it has one: twisted.web must not add C{text/html} to
    #: the others (observed on 1.36.0: an origin answer without one, and a JSON instruct
    #: response without headers, reach the client with none).
    defaultContentType = None

    def gotLength(self, length: int | None) -> None:
        if not isinstance(self.channel, ClientChannel) and (length is None or length > STREAM_UPLOADS_OVER):
            # An HTTP/2 stream tells its length while it is being made, before its connection
            # knows it: nothing may answer yet. A large body is kept as a chunked one (in
            # memory to STREAM_UPLOADS_OVER, streamed from the chunk that passes it).
            self._chunked = True
            self._announced = UNKNOWN_LENGTH if length is None else length
            self.content = BytesIO()
            return
        if length is None:
            # chunked: kept here up to STREAM_UPLOADS_OVER (handleContentChunk decides)
            self._chunked = True
            self.content = BytesIO()
            return
        if length < _IN_MEMORY_BELOW:
            # what twisted.web picks for this length, without its per-request lookup of a
            # Site.getContentFile hook (ClientSite has none)
            self.content = BytesIO()
            return
        super().gotLength(length)
        if length > STREAM_UPLOADS_OVER:
            self._start_streaming(length)

    def process(self) -> None:
        """
        twisted.web's C{Request.process} without what a proxy never uses: the C{Server} and
        C{Date} headers (§14: Pushpin adds neither, and formatting the date is work on
        every response) and the unquoted C{postpath} list (the proxy resource is a leaf).
        """
        site = self.channel.site
        resource = site.resource
        if self.path == b"*" or not resource.isLeaf:
            super().process()
            return
        self.site = site
        # Site.getResourceFor for a leaf: the resource itself; its paths empty (tuples, which
        # the garbage collector does not track: they live as long as a held request)
        self.prepath = self.postpath = self.sitepath = _NO_SEGMENTS  # type: ignore[assignment]
        try:
            self.render(resource)
        except BaseException:
            self.processingFailed(Failure())

    def _start_streaming(self, length: "int | object") -> None:
        """Headers are in, a large body follows: start proxying now, as requestReceived would."""
        channel = self.channel
        if isinstance(channel, ClientChannel):
            self.upload = StreamingBody(length, channel.transport)
            self.method, self.uri, self.clientproto = request_line(channel)
        else:  # an HTTP/2 stream: it reads its request's DATA, and pauses reading them
            self.upload = StreamingBody(length, channel)
            self.method, self.uri, self.clientproto = channel.command, channel.path, b"HTTP/2"
        self.path = self.uri.split(b"?", 1)[0]
        self.args = {}
        self.client = channel.getPeer()
        self.host = channel.getHost()
        self.process()

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:
            self.upload.feed(data)
            return
        super().handleContentChunk(data)
        if self._chunked:
            content = self.content
            assert content is not None
            if content.tell() > STREAM_UPLOADS_OVER:
                # too large to keep for GRIP: stream it from here on, what was kept first
                self._chunked = False
                kept = content.getvalue()
                self.content = BytesIO()
                self._start_streaming(self._announced)
                assert self.upload is not None
                self.upload.feed(kept)

    #: C{args}, parsed from the query once asked for (see L{requestReceived})
    _args: "dict[bytes, list[bytes]] | None" = None

    @property
    def args(self) -> "dict[bytes, list[bytes]]":
        """twisted.web's C{request.args}: the query's arguments, parsed as twisted.web does, when first asked for."""
        args = self._args
        if args is None:
            _, mark, query = self.uri.partition(b"?")
            args = self._args = http.parse_qs(query, 1) if mark else {}
        return args

    @args.setter
    def args(self, value: "dict[bytes, list[bytes]]") -> None:
        self._args = value

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.upload is None:
            if self._parsePOSTFormSubmission:  # (never for ClientSite's requests: form posts are bodies to pass on)
                super().requestReceived(command, path, version)
                return
            # twisted.web's requestReceived without parsing the query into args for every
            # request (the proxy passes it on as it came; args is parsed if asked for) and
            # without the form parsing it does not do here
            content = self.content
            assert content is not None
            content.seek(0, 0)
            self.method, self.uri, self.clientproto = command, path, version
            self.path = path.split(b"?", 1)[0]
            self._args = None
            self.process()
            return
        # the whole upload has arrived; the request was already being handled
        self._body_done = True
        self.upload.complete()
        if self._finish_pending:
            self._finish_pending = False
            self.finish()

    def setHeader(self, name: Any, value: Any) -> None:
        # Pushpin adds neither Server nor Date to what it sends (§14); twisted.web's
        # process() sets both through here before rendering. Origin headers never come
        # through setHeader (they are added raw), so an origin's own Date still passes.
        lower = name.lower() if isinstance(name, bytes) else name.lower().encode()
        if lower in (b"server", b"date"):
            return
        super().setHeader(name, value)

    # HttpSink ------------------------------------------------------------------------------

    def send_head(self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], length: int | None) -> None:
        # (over HTTP/2 the connection leaves out connection-specific headers: ClientH2Connection)
        self.setResponseCode(code, reason)
        raw = self.responseHeaders
        for name, value in headers:
            raw.addRawHeader(name, value)
        if length is not None:
            raw.setRawHeaders(b"content-length", [b"%d" % length])
        # twisted.web builds the head (L{ClientChannel.writeHeaders} keeps it); it leaves with
        # what follows (the first body bytes, a registered producer, the end of the response),
        # so a held stream's head and initial body reach the client in one send, not two.
        server.Request.write(self, b"")

    def write(self, data: bytes) -> None:
        super().write(data)
        channel = getattr(self, "channel", None)  # gone once the request is cleaned up
        if channel is not None and getattr(channel, "_head", None) is not None:
            channel.flush_head()  # a head without a body write (HEAD, 204, empty body)

    def write_framed(self, data: bytes) -> None:
        if is_disconnected(self) or self.finished:
            return
        self.sentLength += len(data)
        self.channel.write(data)  # with the head, if it is still waiting (see send_head)

    def write_body(self, data: bytes) -> None:
        if is_disconnected(self) or self.finished:
            return
        self.write(data)

    def finish(self) -> None:
        if is_disconnected(self) or self.finished:
            return
        channel = self.channel
        if channel is not None and getattr(channel, "_head", None) is not None and not self.chunked:
            channel.flush_head()  # no last chunk will carry the head (see send_head)
        if self.upload is not None and not self._body_done:
            # twisted.web ends a request only once its body is in (the channel is still reading
            # it): the answer is complete on the wire, its end waits for the upload.
            self._finish_pending = True
            return
        super().finish()

    def abort(self) -> None:
        """Drop the connection at once, discarding anything not yet sent."""
        channel = self.channel
        if channel is None:
            return
        if not isinstance(channel, ClientChannel):
            channel.abortConnection()  # an HTTP/2 stream: RST_STREAM, the connection's other streams go on
            return
        if channel.transport is not None:
            channel.flush_head()  # a head kept by send_head went out before, as it always did
            cast(ITCPTransport, channel.transport).abortConnection()

    def close(self) -> None:
        """Close the connection after what was written is sent: an unfinished body then shows
        the client that it is short (missing bytes or missing last chunk). An HTTP/2 stream
        has no such ending (END_STREAM tells a complete one): it is reset, what it had queued
        and not sent dropped with it."""
        if self.channel is not None and not isinstance(self.channel, ClientChannel):
            self.channel.abortConnection()
            return
        if self.channel is not None and self.channel.transport is not None:
            self.channel.flush_head()
            self.channel.transport.loseConnection()

    def register_producer(self, producer: Any) -> None:
        """
        Make C{producer} (a push producer) this connection's: paused while the client's
        buffer is full. twisted.web only tells a producer to pause when its channel I{becomes}
        paused, so one registered while the channel is already paused is paused here.
        """
        if is_disconnected(self):
            return
        channel = self.channel
        if channel is not None and getattr(channel, "_head", None) is not None:
            channel.flush_head()  # nothing followed the head (see send_head): it goes now
        self.registerProducer(producer, True)
        if channel_paused(self.channel):
            producer.pauseProducing()

    def unregister_producer(self) -> None:
        if self.producer is not None and not is_disconnected(self):
            self.unregisterProducer()


def _parse_error_text(channel: "ClientChannel") -> str:
    """What Pushpin 1.40's connmgr says about the request C{channel} could not parse."""
    if channel._receivedHeaderSize > channel.totalHeadersSize:
        return f"Request header size exceeded limit of {channel.totalHeadersSize} bytes."
    if channel._in_request_line:
        parts = channel._line.split(b" ")
        if len(parts) == 3 and parts[0] and parts[1] and parts[2] not in (b"HTTP/1.0", b"HTTP/1.1"):
            return "Failed to parse request: invalid HTTP version"
        return "Failed to parse request: invalid token"
    if channel._receivedHeaderCount > channel.maxHeaders:
        return "Failed to parse request: too many headers"
    # twisted.web parses a header line once the next one is in: the one at fault is kept here
    line = getattr(channel, "_HTTPChannel__header", b"") or channel._line
    name, colon, value = line.partition(b":")
    if colon and name and not any(c in name for c in b" \t") and any(c in value for c in b"\x00\r\n"):
        return "Failed to parse request: invalid header value"
    if channel._transferDecoder is not None:
        return "Failed to parse request: invalid chunk size"
    if colon and name.strip().lower() == b"content-length":
        return "Failed to parse request: invalid content length"
    return "Failed to parse request: invalid header name"


class ClientChannel(http.HTTPChannel):
    """
    HTTP/1.x channel with Pushpin's request-header limit (C{client_buffer_size}), and cheaper
    writes: a response head is sent together with the first body bytes, on the socket at
    once when nothing is queued for it (L{writethrough}); and the connection's addresses are
    looked up once, not for every request (twisted.web asks for both per request, and the
    local one costs a C{getsockname} call each time).
    """

    #: set by the site that builds it
    site: "ClientSite"
    #: a response head waiting for the body bytes that follow it (see L{writeHeaders})
    _head: bytes | None = None
    _send: Any = None
    _peer: Any = None
    _host: Any = None
    _secure: bool = False
    _secure_of: Any = None
    #: the process's client connection count this connection holds a place in (None: not counted)
    _counted: Any = None
    #: the garbage-collection epoch it opened in (net/gcpolicy.py: whether it is frozen yet)
    gc_epoch = 0
    #: whether the first bytes must look at ALPN first (a TLS connection of a site with HTTP/2)
    _alpn_pending = False

    # the idle timeout (twisted.web's TimeoutMixin), armed lazily: see L{setTimeout}
    #: the armed timer, once there is one
    _idle_call: Any = None
    #: when the idle timeout not yet armed is due (None: none is waiting to be armed)
    _idle_due: float | None = None

    def setTimeout(self, period: Any) -> Any:
        """
        TimeoutMixin's C{setTimeout}, the same timeout at the same moment, but a connection's
        first one is not armed at once: a client's request nearly always follows its connection
        within the same second, and a request in progress (a held one) has no idle timeout, so
        the timer twisted.web arms on connecting and cancels a moment later would be made, kept
        in the reactor's heap and cancelled once per connection for nothing. It waits in the
        site's list (L{ClientSite.arm_idle_timeouts}, once a second) and is armed only for
        connections still idle then, for the rest of its period.
        """
        prev = self.timeOut
        self.timeOut = period
        call = self._idle_call
        if call is not None:
            if period is None:
                if call.active():
                    call.cancel()
                self._idle_call = None
            else:
                call.reset(period)
        elif self._idle_due is not None:
            if period is None:
                self._idle_due = None
                self.site.idle_done(self)  # (not kept past its request: it may be held, or gone)
            else:
                self._idle_due = self.site.reactor.seconds() + period
        elif period is not None:
            site = getattr(self, "site", None)
            if site is None or period <= _ARM_IDLE_EVERY:
                self._idle_call = self.callLater(period, self._idle_timed_out)
            else:
                self._idle_due = site.reactor.seconds() + period
                site.idle_pending(self)
        return prev

    def resetTimeout(self) -> None:
        """TimeoutMixin's C{resetTimeout}: the idle period starts again (if there is one)."""
        if self.timeOut is None:
            return
        call = self._idle_call
        if call is not None:
            call.reset(self.timeOut)
        elif self._idle_due is not None:
            self._idle_due = self.site.reactor.seconds() + self.timeOut

    def arm_idle_timeout(self, now: float) -> None:
        """Arm the idle timeout still waiting (if any), for what is left of its period."""
        due = self._idle_due
        if due is not None:
            self._idle_due = None
            self._idle_call = self.callLater(max(due - now, 0.0), self._idle_timed_out)

    def _idle_timed_out(self) -> None:
        self._idle_call = None
        self.timeoutConnection()

    def connectionMade(self) -> None:
        limit = getattr(self.site, "limit", None)  # the site is set by buildProtocol, before this
        if limit is not None:
            limit.opened()
            self._counted = limit
        if type(self.transport) is tcp.Server:
            http_channel_made_on_tcp(self)  # (twisted.web's connectionMade, without zope's lookups)
            return
        super().connectionMade()
        if getattr(self.site, "http2", False):
            self._alpn_pending = True

    def dataReceived(self, data: bytes) -> None:
        if self._alpn_pending:
            # the handshake is done when the first bytes arrive (what twisted.web's
            # HTTP/2-negotiating channel waits for too)
            self._alpn_pending = False
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                take_over(self, data)
                return
        if data[-4:] == b"\r\n\r\n" and len(data) <= self._whole_head_max and at_request_start(self) and self._whole_head(data):
            return
        super().dataReceived(data)

    @property
    def _whole_head_max(self) -> int:
        """The longest bytes L{_whole_head} reads: within the header limit and twisted.web's line limit."""
        return min(self.totalHeadersSize, self.MAX_LENGTH)

    def _whole_head(self, data: bytes) -> bool:
        """
        A request head without a body that came in one read, as nearly every GET, stream and
        WebSocket upgrade does, parsed in one pass instead of twisted.web's line by line
        (C{LineReceiver} splitting its buffer per line, C{lineReceived} and C{headerReceived}
        per header: ~15 % of opening a WebSocket, bench/README.md), then handed to
        twisted.web's own C{allHeadersReceived} and C{allContentReceived}
        (L{deliver_parsed_head}). The same parser pieces decide (its request-line parser,
        its header-name canonicalisation); anything they would refuse, and anything this
        does not cover (a body or its length, C{Expect}, a folded or odd line, a NUL, a bare
        CR or LF, a pipelined request), returns False untouched, and twisted.web reads the
        bytes as always: its answers, Pushpin's 400 texts among them, are unchanged.
        """
        head = data[:-4]
        lines = head.split(b"\r\n")
        breaks = len(lines) - 1
        if breaks > self.maxHeaders or head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\x00" in head:
            return False
        try:
            command, path, version = parse_request_line(lines[0])
        except ValueError:
            return False
        headers: dict[bytes, list[bytes]] = {}
        for i in range(1, breaks + 1):
            line = lines[i]
            name, colon, value = line.partition(b":")
            if not colon or line[0] in b" \t":
                return False
            try:
                name = canonical_header_name(name)
            except ValueError:
                return False
            if name in _NOT_IN_ONE_READ:
                return False
            value = value.strip(b" \t")
            values = headers.get(name)
            if values is None:
                headers[name] = [value]
            else:
                values.append(value)
        self.resetTimeout()
        deliver_parsed_head(self, command, path, version, headers)
        return True

    def hand_over_count(self) -> Any:
        """The connection count this connection holds a place in, now the protocol's taking the
        connection over (a WebSocket upgrade) to release when it ends; None when not counted."""
        limit, self._counted = self._counted, None
        return limit

    def isSecure(self) -> bool:
        """twisted.web's answer (is the transport TLS?), worked out once per transport: the
        proxy asks several times per request and each asks zope for an adapter."""
        transport = self.transport
        if self._secure_of is not transport:
            # a plain TCP connection that has not started TLS: not secure, without asking zope
            plain = type(transport) is tcp.Server and not cast(tcp.Server, transport).TLS
            self._secure = False if plain else super().isSecure()
            self._secure_of = transport
        return self._secure

    def getPeer(self) -> Any:
        peer = self._peer
        if peer is None:
            peer = self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return peer

    def getHost(self) -> Any:
        host = self._host
        if host is None:
            transport = self.transport
            host = _listening_address(transport)
            if host is None:
                host = transport.getHost()  # type: ignore[union-attr]
            self._host = host
        return host

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """Build the head as twisted.web does, but keep it for the write that follows: the
        head and the first body bytes then leave in one C{send}. L{ClientRequest.write}
        flushes it when no body write follows."""
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        self._head = b"".join(parts)

    def flush_head(self) -> None:
        """Send a head kept by L{writeHeaders} on its own."""
        head = self._head
        if head is not None:
            self._head = None
            self.send(head)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        self.send(data)

    def writeSequence(self, iovec: Any) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self.send(head + b"".join(iovec))
            return
        self.send(b"".join(iovec))

    def send(self, data: bytes) -> None:
        """Write C{data} to the connection, straight to the socket when nothing is queued."""
        send = self._send
        if send is None:
            transport = self.transport
            site = getattr(self, "site", None)
            send = self._send = writer_for(transport, getattr(site, "turns", None))
        send(data)

    # malformed requests ----------------------------------------------------------------------

    #: the line being parsed, and whether it is a request line (for a 400 answer's reason)
    _line = b""
    _in_request_line = False

    def lineReceived(self, line: bytes) -> None:
        self._line = line
        self._in_request_line = bool(getattr(self, "_HTTPChannel__first_line", 0))
        super().lineReceived(line)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """
        A request that cannot be parsed gets Pushpin 1.40's answer (connmgr's
        C{send_error_response}): C{400} in HTTP/1.0 (no version was read), C{text/plain},
        C{Failed to parse request: <httparse's reason>} or the header-size message; then the
        connection closes. twisted.web (and Pushpin before 1.40) sent a bare C{400} or none.
        """
        self._send_parse_error(_parse_error_text(self))

    def _send_parse_error(self, text: str) -> None:
        body = text.encode("utf-8") + b"\n"
        transport = self.transport
        if transport is None:
            return
        self.flush_head()
        transport.write(
            b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._send = None
        limit, self._counted = self._counted, None
        if limit is not None:
            limit.closed()
        gcpolicy.closed(self.gc_epoch)
        super().connectionLost(reason)


#: headers that L{ClientChannel._whole_head} leaves to twisted.web (a body, or a 100 to send)
_NOT_IN_ONE_READ = frozenset((b"Content-Length", b"Transfer-Encoding", b"Expect"))

#: how often a site arms the idle timeouts of its new connections that are still idle (seconds);
#: a shorter timeout is armed at once
_ARM_IDLE_EVERY = 1.0

#: an empty path (prepath, postpath, sitepath) shared by every request to the leaf resource
_NO_SEGMENTS: tuple[bytes, ...] = ()

#: the address each listening port is bound to, when that is one IPv4 address (None: a wildcard)
_PORT_ADDRESSES: "WeakKeyDictionary[Any, IPv4Address | None]" = WeakKeyDictionary()


def _listening_address(transport: Any) -> IPv4Address | None:
    """
    The local address of a connection accepted on a port bound to one IPv4 address: that
    address, the same answer as the connection's own C{getHost()} (twisted.web asks for it
    once per request) without a C{getsockname} call per connection. None when it cannot be
    known so (another transport, a wildcard or IPv6 port): the caller asks the transport.
    """
    if type(transport) is not tcp.Server:
        return None
    port = transport.server
    try:
        return _PORT_ADDRESSES[port]
    except KeyError:
        pass
    except TypeError:  # not weakly referenceable
        return None
    try:
        bound = port.getHost()
    except (OSError, AttributeError):  # the port is closing
        return None
    address = bound if isinstance(bound, IPv4Address) and bound.host != "0.0.0.0" else None
    _PORT_ADDRESSES[port] = address
    return address


class ClientSite(server.Site):
    """The client listener's site."""

    requestFactory = ClientRequest
    # A plain HTTP/1.x channel, not twisted.web's HTTP/2-negotiating wrapper (which would sit
    # between the transport and every HTTP/1.x channel): a TLS connection that negotiated h2
    # is handed over by the channel itself (ClientChannel.dataReceived, web/h2.py).
    protocol = ClientChannel  # type: ignore[assignment]  # (typed for twisted.web's own HTTP/2-negotiating wrapper)

    def __init__(self, resource: Any, *, header_limit: int = 8192, limit: Any = None, http2: bool = True, **kw: Any) -> None:
        """
        @param limit: the process's L{pushpin_tx.net.maxconn.ConnectionLimit} (C{client_maxconn}),
            which every connection of this site counts in until it ends.
        @param http2: whether its TLS connections offer C{h2} by ALPN (C{[runner] http2});
            plain connections are HTTP/1.x whatever this says (no h2c).
        """
        # A proxy passes bodies on untouched: twisted.web must not parse form posts into
        # request.args (it would also answer a malformed multipart body 400 itself).
        super().__init__(resource, parsePOSTFormSubmission=False, **kw)
        self._header_limit = header_limit
        self.limit = limit
        self.http2 = http2 and h2_available()
        self.noisy = False
        #: reactor turns, for coalescing several writes to one connection in one turn
        self.turns = TurnCounter(self.reactor)
        #: connections whose idle timeout waits to be armed (L{ClientChannel.setTimeout}), as a
        #: dict's keys: one that stops being idle leaves at once (a closed one kept here, then
        #: frozen by net/gcpolicy.py with it, would wait for a full collection to be freed)
        self._idle_pending: dict[ClientChannel, None] = {}
        self._idle_arming: Any = None
        #: one bound callLater for every connection's (twisted.web binds one per connection)
        self._call_later = self.reactor.callLater

    def idle_pending(self, channel: "ClientChannel") -> None:
        """C{channel}'s idle timeout is to be armed at the next L{arm_idle_timeouts}, if still idle then."""
        self._idle_pending[channel] = None
        if self._idle_arming is None:
            self._idle_arming = self.reactor.callLater(_ARM_IDLE_EVERY, self.arm_idle_timeouts)

    def idle_done(self, channel: "ClientChannel") -> None:
        """C{channel} is no longer idle (a request came, or it closed): nothing to arm for it."""
        self._idle_pending.pop(channel, None)

    def arm_idle_timeouts(self) -> None:
        """Arm the idle timeouts of the connections that are still idle (the others have none waiting)."""
        self._idle_arming = None
        pending, self._idle_pending = self._idle_pending, {}
        now = self.reactor.seconds()
        for channel in pending:
            channel.arm_idle_timeout(now)

    def stopFactory(self) -> None:
        if self._idle_arming is not None and self._idle_arming.active():
            self._idle_arming.cancel()
        self._idle_arming = None
        self._idle_pending = {}
        super().stopFactory()

    def buildProtocol(self, addr: Any) -> ClientChannel:  # type: ignore[override]  # (as for protocol above)
        # twisted.web's Factory, HTTPFactory and Site buildProtocol in one (three calls a
        # connection; tests/web/test_clientsite.py compares the channels both make)
        channel = self.protocol()
        channel.factory = self
        channel.callLater = self._call_later  # type: ignore[assignment]  # (the reactor's callLater, as twisted.web sets it)
        channel.timeOut = self.timeOut  # type: ignore[assignment]  # (twisted.web's own assignment; it types the two apart)
        channel.requestFactory = self.requestFactory
        channel.site = self
        channel.totalHeadersSize = self._header_limit
        channel.gc_epoch = gcpolicy.opened()
        return channel

    @property
    def alpn(self) -> tuple[bytes, ...]:
        """The ALPN protocols its TLS listeners offer, preferred first (read by L{pushpin_tx.net.tls})."""
        return (b"h2", b"http/1.1") if self.http2 else (b"http/1.1",)

    def log(self, request: Any) -> None:
        """Access lines are written by the proxy resource in Pushpin's shape instead."""
