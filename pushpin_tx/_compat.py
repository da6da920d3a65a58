# -*- test-case-name: tests.test_compat -*-
"""
Every private name of Twisted or autobahn that pushpin-tx relies on, in one place.

Each function or name here is an assumption about a library's internals; C{tests/test_compat.py}
checks each one against the installed version, and C{setup.cfg} caps the versions those tests
have passed on, so that an upgrade fails a test instead of misbehaving. Nothing else in the
package may import a private module (C{twisted.web._newclient}, C{twisted.web._abnf}) or read
an underscore attribute of a Twisted or autobahn object.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections import deque
from pprint import pformat
from typing import Any

from twisted.internet.defer import Deferred
import txaio as _txaio
from txaio.tx import _no_op as _txaio_no_op

from autobahn import util as _autobahn_util
from autobahn.twisted import util as _autobahn_twisted_util, websocket as _autobahn_twisted_websocket
from autobahn.wamp.types import TransportDetails
from autobahn.websocket import protocol as _autobahn_protocol
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.web._abnf import _decint, _istoken
from twisted.web._newclient import BadHeaders, BadResponseVersion, ParseError, RequestGenerationFailed
from twisted.web.client import HTTPConnectionPool, _HTTP11ClientFactory
from twisted.web.http import _ChunkedTransferDecoder, _DataLoss, _parseRequestLine
from twisted.web.http_headers import _nameEncoder
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.internet import tcp as _tcp, unix as _unix

try:  # the h2 package (twisted[http2]); without it https ports speak HTTP/1.1 only
    import priority as _priority
    from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection as _H2Connection, H2Stream as _H2Stream
except ImportError:  # pragma: no cover - h2 is an install requirement
    _H2Connection = _H2Stream = None  # type: ignore[misc,assignment]

__all__ = [
    "QuietConnectionPool",
    "is_disconnected",
    "channel_paused",
    "request_line",
    "at_request_start",
    "parse_request_line",
    "canonical_header_name",
    "deliver_parsed_head",
    "http_channel_made_on_tcp",
    "knows_write_buffer",
    "write_buffer_empty",
    "buffered_bytes",
    "LazyOptionsDump",
    "FastServerSetup",
    "debug_enabled",
    "LazyPformat",
    "lazy_hltype",
    "lazy_hlval",
    "quiet_autobahn_highlighting",
    "accept_server_handshake",
    "parsed_request_head",
    "cap_accepts",
    "compresses",
    # twisted.web's own HTTP/1.1 client pieces, for the lean origin client (origin/http11.py),
    # which must fail and parse exactly as the Agent does
    "RequestGenerationFailed",
    "BadHeaders",
    "BadResponseVersion",
    "ParseError",
    "ChunkedTransferDecoder",
    "DataLoss",
    "decint",
    "istoken",
    # twisted.web's HTTP/2 server (web/h2.py)
    "H2Connection",
    "H2Stream",
    "h2_available",
    "h2_wake_sender",
    "H2BurstConnection",
    # a Unix listening socket shared with the main process (workers > 1)
    "adopt_shared_unix_port",
]


# twisted.internet listening ports ------------------------------------------------------------


def cap_accepts(port: Any, room: Any) -> None:
    """
    Make listening C{port} accept at most C{room()} connections per readiness event.

    Twisted's C{tcp.Port.doRead} (which UNIX ports inherit) accepts up to C{numberAccepts}
    connections in one go, a number it grows by 20 after a full burst; C{doRead} reads it
    once, before the burst. So it is capped here before each call, by replacing the bound
    method the reactor calls with one that caps first (never below 1: a port reads only
    while there is room, see L{pushpin_tx.net.maxconn}).
    """
    accept_burst = getattr(port, "doRead", None)
    if accept_burst is None or not hasattr(port, "numberAccepts"):
        return  # not one of Twisted's listening ports: nothing to cap

    def doRead() -> Any:
        port.numberAccepts = max(1, min(port.numberAccepts, room()))
        return accept_burst()

    port.doRead = doRead


class _SharedUnixPort(_unix.Port):
    """
    A UNIX listening port on a socket another process bound and keeps (the main process,
    C{workers} > 1): it accepts as Twisted's does, and leaves the socket and its file alone.
    Twisted's own port, adopted (C{adoptStreamPort}), treats the socket as its own: it
    C{chmod}s the file to 0666 when it starts (undoing C{mode=}, and failing where this
    process may not), C{shutdown()}s the socket when it stops (which, on a listening socket,
    stops it for every process holding it) and unlinks the file.
    """

    # unix.Port (through tcp.Port, _SocketCloser) shuts a socket down before closing it
    _shouldShutdown = False

    def startListening(self) -> None:
        """unix.Port.startListening for a socket bound and listening already: no bind, no chmod."""
        _tcp._reservedFD.reserve()  # as Twisted's ports do, for accept() at EMFILE
        skt = self._preexistingSocket
        assert skt is not None and self.factory is not None  # (adopt_shared_unix_port made it so)
        self._preexistingSocket = None
        self.factory.doStart()
        self.connected = True
        self.socket = skt
        self.fileno = skt.fileno  # type: ignore[method-assign]  # as tcp.Port does
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Any) -> None:
        """tcp.Port's, not unix.Port's: the socket file is not this process's to remove."""
        _tcp.Port.connectionLost(self, reason)


def adopt_shared_unix_port(reactor: Any, fd: int, factory: Any) -> Any:
    """
    Accept on the listening Unix socket C{fd} (inherited; non-blocking), shared with the
    process that bound it: every process holding it takes connections from its one queue.
    Stopping the returned port closes only this process's descriptor.
    """
    port = _SharedUnixPort._fromListeningDescriptor(reactor, fd, factory)
    port.startListening()
    return port


# twisted.web server side ---------------------------------------------------------------------


def is_disconnected(request: Any) -> bool:
    """
    Whether C{request}'s client connection is gone: twisted.web's C{Request._disconnected},
    set by C{Request.connectionLost}. No public attribute says it (C{notifyFinish} fires, but
    too late for a check before a write), and C{request.finish()} after it raises.
    """
    return bool(request._disconnected)


def channel_paused(channel: Any) -> bool:
    """
    Whether twisted.web's C{HTTPChannel} is paused by its transport (the client stopped
    reading and the send buffer is full): C{HTTPChannel._waitingForTransport}, set by its
    C{pauseProducing} and cleared by C{resumeProducing}. twisted.web pauses a request's
    producer only when the channel I{becomes} paused, so one registered meanwhile must be
    paused by hand. False for anything that is not such a channel (or no channel).
    """
    return bool(getattr(channel, "_waitingForTransport", False))


def request_line(channel: Any) -> tuple[bytes, bytes, bytes]:
    """
    C{(method, uri, version)} of the request C{channel} is reading, once its request line is
    parsed and before its body has arrived: C{HTTPChannel._command}, C{_path} and
    C{_version}. twisted.web hands them to the request only when the whole body is in
    (C{requestReceived}); a streamed upload needs them when its headers are.
    """
    return channel._command, channel._path, channel._version


def at_request_start(channel: Any) -> bool:
    """
    Whether twisted.web's C{HTTPChannel} would read C{dataReceived}'s bytes as the start of a
    new request, with nothing kept from before: C{LineReceiver} in line mode with an empty
    C{_buffer}, not inside its own C{dataReceived} (C{_busyReceiving}) nor paused; the
    channel at its first line (C{__first_line} 1, not the 2 it sets after IE's extra empty
    line), no header line kept (C{__header}), no request being handled, no body decoder,
    and persistent (a closing connection drops what follows its request).
    """
    return bool(
        channel.line_mode
        and not channel._buffer
        and not channel._busyReceiving
        and not channel.paused
        and channel._HTTPChannel__first_line == 1
        and not channel._HTTPChannel__header
        and not channel._handlingRequest
        and channel._transferDecoder is None
        and channel.persistent
    )


#: twisted.web's request-line parser (C{twisted.web.http._parseRequestLine}): C{(method,
#: target, version)}, C{ValueError} for a line twisted.web answers 400
parse_request_line = _parseRequestLine


def canonical_header_name(name: bytes) -> bytes:
    """
    C{name} as twisted.web keeps it in a request's headers (C{_nameEncoder.encode}:
    Http-Header-Case, from its cache); C{ValueError} (its C{InvalidHeaderName}) when
    C{name} is not a token, which twisted.web answers 400.
    """
    return _nameEncoder.encode(name)


def deliver_parsed_head(channel: Any, command: bytes, path: bytes, version: bytes, headers: dict[bytes, list[bytes]]) -> None:
    """
    What C{HTTPChannel.lineReceived} does for a request head without a body, given the head
    already parsed (L{parse_request_line}, names from L{canonical_header_name}, values
    stripped of spaces and tabs, in order): the request made and queued as at its first
    line, its headers (C{Headers._rawHeaders}, as C{headerReceived}'s C{addRawHeader}
    calls leave it), the request line where C{allContentReceived} reads it, then
    twisted.web's own C{allHeadersReceived} and C{allContentReceived}.
    """
    factory = channel.requestFactory
    if INonQueuedRequestFactory.providedBy(factory):
        request = factory(channel)
    else:
        request = factory(channel, len(channel.requests))
    channel.requests.append(request)
    request.requestHeaders._rawHeaders = headers
    channel._command, channel._path, channel._version = command, path, version
    channel.allHeadersReceived()
    channel.allContentReceived()


def http_channel_made_on_tcp(channel: Any) -> None:
    """
    twisted.web's C{HTTPChannel.connectionMade} for a channel on a plain accepted TCP
    connection (a C{tcp.Server}): C{TCP_NODELAY} on, the idle timeout set, and the channel
    registered as the transport's producer, the transport being its own C{IPushProducer}
    (C{_networkProducer}), without asking zope twice per connection.
    """
    transport = channel.transport
    transport.setTcpNoDelay(True)
    channel.setTimeout(channel.timeOut)
    channel._networkProducer = transport
    transport.registerProducer(channel, True)


def knows_write_buffer(transport: Any) -> bool:
    """Whether L{write_buffer_empty} and L{buffered_bytes} can read C{transport}'s buffer."""
    return all(hasattr(transport, name) for name in ("_tempDataBuffer", "_tempDataLen", "dataBuffer", "offset"))


def write_buffer_empty(transport: Any) -> bool:
    """
    Whether a Twisted C{FileDescriptor} transport (a TCP connection, a process pipe) holds
    nothing unsent: what C{write} queues goes to C{_tempDataBuffer}, what a write turn
    moved on but did not send is C{dataBuffer} from C{offset}. Only for transports that
    L{knows_write_buffer}.
    """
    return not transport._tempDataBuffer and len(transport.dataBuffer) == transport.offset


def buffered_bytes(transport: Any) -> int:
    """How many bytes a C{FileDescriptor} transport holds unsent (see L{write_buffer_empty})."""
    return int(len(transport.dataBuffer) - transport.offset + transport._tempDataLen)


# twisted.web client side ---------------------------------------------------------------------


class _QuietFactory(_HTTP11ClientFactory):
    """Origin connections come and go all the time: no "Starting factory" line for each."""

    noisy = False


class QuietConnectionPool(HTTPConnectionPool):
    """
    twisted.web's connection pool, building its connections with L{_QuietFactory}: the pool's
    private C{_factory} attribute is the only way to choose the factory it uses.
    """

    _factory = _QuietFactory


#: C{ChunkedTransferDecoder(data_callback, finish_callback)}: twisted.web's decoder of a
#: chunked body, the one the Agent uses (C{finish_callback} gets the bytes after the last chunk)
ChunkedTransferDecoder = _ChunkedTransferDecoder

#: the reason (inside C{ResponseFailed}) the Agent gives a body cut short of its length
DataLoss = _DataLoss


def decint(value: bytes) -> int:
    """A decimal number as twisted.web parses C{Content-Length}: digits only (spaces or tabs around
    them allowed), no sign, no underscores; C{ValueError} else."""
    return _decint(value)


def istoken(value: bytes) -> bool:
    """Whether C{value} is an HTTP token (RFC 9110), as twisted.web checks a method."""
    return _istoken(value)


# twisted.web HTTP/2 server side ---------------------------------------------------------------

#: twisted.web's HTTP/2 connection (C{twisted.web._http2.H2Connection}): what
#: C{_GenericHTTPChannelProtocol} switches to when ALPN picks C{h2}; one L{H2Stream} per request,
#: which is the request's C{channel} (its C{transport} is None)
H2Connection: Any = _H2Connection

#: twisted.web's HTTP/2 stream (C{twisted.web._http2.H2Stream})
H2Stream: Any = _H2Stream


def h2_available() -> bool:
    """Whether twisted.web can serve HTTP/2 here (the C{h2} and C{priority} packages import)."""
    return _H2Connection is not None


class _BurstSending:
    """
    twisted.web's HTTP/2 sending loop (C{H2Connection._sendPrioritisedData}, taken over here)
    sending up to C{burst_frames} DATA frames (or C{burst_bytes}) per pass in one transport
    write, where twisted.web sends one frame per reactor turn (its loop reschedules itself
    with C{callLater(0)} after each): with 100 streams on a connection a publish to all of
    them took 100 turns, one TLS record and one send each. The rules are twisted.web's: the
    streams in the order of its C{priority} scheduler (web/h2.py puts a round robin there), no more than the flow-control window, a
    frame no larger than the peer's maximum, the stream's producer paused when its window is
    used up (C{flowControlBlocked}). A loop woken from waiting (a write, an end) runs on the
    next reactor turn, not inside the write, so a turn's writes leave together. And one more:
    a stream picked with no window left is
    blocked in the tree (twisted.web would pick it again every turn, sending nothing, until
    the client opened its window) until a WINDOW_UPDATE unblocks it (twisted.web's own
    C{_handleWindowUpdate}) and L{h2_wake_sender} restarts the loop.
    """

    burst_frames = 64
    burst_bytes = 262144

    def _sendPrioritisedData(self: Any, *args: Any) -> None:
        if not self._stillProducing:
            return
        conn = self.conn
        tree = self.priority
        queues = self._outboundStreamQueues
        frames = sent = 0
        while frames < self.burst_frames and sent < self.burst_bytes:
            try:
                stream = next(tree)
            except _priority.DeadlockError:
                self._write_burst(frames)
                assert self._sendingDeferred is None
                waiting: Deferred[Any] = Deferred()
                waiting.addCallback(self._next_pass)
                self._sendingDeferred = waiting
                return
            if self._consumerBlocked is not None:  # wait behind the transport
                self._write_burst(frames)
                self._consumerBlocked.addCallback(self._sendPrioritisedData)
                return
            queue = queues[stream]
            data = queue.popleft()
            if data is _END_STREAM_SENTINEL:
                conn.end_stream(stream)
                self._write_burst(frames + 1)  # what the stream sent leaves before it is cleaned up
                frames = sent = 0
                self._requestDone(stream)
                continue
            window = conn.local_flow_control_window(stream)
            if window <= 0:
                queue.appendleft(data)
                tree.block(stream)
                continue
            largest = min(conn.max_outbound_frame_size, window)
            if len(data) > largest:
                queue.appendleft(data[largest:])
                data = data[:largest]
            if data:
                conn.send_data(stream, data)
                sent += len(data)
            frames += 1
            if not queue:
                tree.block(stream)
            if self.remainingOutboundWindow(stream) <= 0:
                self.streams[stream].flowControlBlocked()
        self._write_burst(frames)
        self._reactor.callLater(0, self._sendPrioritisedData)

    def _next_pass(self: Any, _: Any = None) -> None:
        # A write (or an end) woke the loop: it runs on the next turn, so that every write of
        # this turn (a publish to many streams) leaves in that one pass, one transport write.
        self._reactor.callLater(0, self._sendPrioritisedData)

    def _write_burst(self: Any, frames: int) -> None:
        if frames:
            self.resetTimeout()
        out = self.conn.data_to_send()
        if out:
            self.transport.write(out)


#: twisted.web's HTTP/2 connection with the burst sending loop (L{_BurstSending})
H2BurstConnection: Any = type("H2BurstConnection", (_BurstSending, _H2Connection), {}) if _H2Connection is not None else None


def h2_wake_sender(connection: Any) -> None:
    """
    Restart the sending loop of twisted.web's L{H2Connection} if it stopped with every stream
    blocked (its C{_sendingDeferred}, which it fires itself only when a stream is written to
    or ended): the loop then looks again at which streams can send, e.g. after a WINDOW_UPDATE
    put a stream with queued data back into its priority tree.
    """
    waiting = connection._sendingDeferred
    if waiting is not None:
        connection._sendingDeferred = None
        waiting.callback(None)


# autobahn ------------------------------------------------------------------------------------


def compresses(protocol: Any) -> bool:
    """
    Whether an open autobahn WebSocket negotiated a per-message compression extension:
    autobahn keeps the accepted extension in C{_perMessageCompress} (None without one), set
    when the opening handshake completes, and names no public accessor for it.
    """
    return protocol._perMessageCompress is not None


class LazyPformat:
    """C{pformat(value)}, computed when the log line that holds it is formatted."""

    __slots__ = ("_value",)

    def __init__(self, value: object) -> None:
        self._value = value

    def __format__(self, spec: str) -> str:
        return format(pformat(self._value), spec)

    def __str__(self) -> str:
        return pformat(self._value)

    __repr__ = __str__


class LazyOptionsDump:
    """
    For an autobahn C{WebSocketProtocol} subclass: autobahn's private C{_connectionMade}
    logs the protocol's options at debug level on every connection, pretty-printing them
    with its module's global C{pformat} first, whether or not debug lines are written (a
    large share of opening a WebSocket: bench/README.md). For that call the global is L{LazyPformat},
    which formats only if the line is rendered (the same text then); restored at once
    (the reactor is single-threaded).
    """

    def _connectionMade(self) -> None:
        _autobahn_protocol.pformat = LazyPformat  # type: ignore[assignment]
        try:
            super()._connectionMade()  # type: ignore[misc]
        finally:
            _autobahn_protocol.pformat = pformat


#: os.getpid(), asked once per process (a system call; autobahn asks for every connection)
_own_pid: list[int] = []
#: threading.get_native_id() (a system call too) by threading.get_ident(), asked once per thread
_native_ids: dict[int, int] = {}
os.register_at_fork(after_in_child=_own_pid.clear)
os.register_at_fork(after_in_child=_native_ids.clear)


def debug_enabled(log: Any) -> bool:
    """
    Whether a txaio logger (autobahn's C{self.log}) writes debug lines: txaio binds the
    methods of the levels it does not write to its module's C{_no_op}, so a caller can skip
    building the fields of a line that goes nowhere.
    """
    return log.debug is not _txaio_no_op


class _LazyOptionsLog:
    """The list autobahn's C{_connectionMade} logs (option, value, where it came from), pretty-printed only if written."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def __str__(self) -> str:
        p = self._protocol
        source = type(p).__name__
        return pformat([(name, getattr(p, name), source) for name in p.CONFIG_ATTRS])

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    __repr__ = __str__


class _LazyUtf8Validator:
    """
    A protocol's C{utf8validator}, made when first used (autobahn resets it before each text
    message it validates, so a new one is the same as one made at connection time), then an
    attribute of the protocol: a WebSocket that never receives a text message never has one
    (a cffi object and a microsecond per connection).
    """

    def __get__(self, protocol: Any, owner: Any = None) -> Any:
        if protocol is None:
            return self
        validator = protocol.__dict__["utf8validator"] = Utf8Validator()
        return validator


#: what autobahn's C{WebSocketProtocol._connectionMade} sets on every connection to a value
#: that does not depend on it, made class attributes of L{FastServerSetup}: each connection
#: reads them until it changes one (autobahn assigns, it never mutates these in place)
_INITIAL_STATE: dict[str, Any] = {
    "_perMessageCompress": None,
    "trackedTimings": None,
    "send_state": _autobahn_protocol.WebSocketProtocol.SEND_STATE_GROUND,
    "triggered": False,
    "wasMaxFramePayloadSizeExceeded": False,
    "wasMaxMessagePayloadSizeExceeded": False,
    "closedByMe": False,
    "failedByMe": False,
    "droppedByMe": False,
    "wasClean": False,
    "wasNotCleanReason": None,
    "wasServerConnectionDropTimeout": False,
    "wasOpenHandshakeTimeout": False,
    "wasCloseHandshakeTimeout": False,
    "wasServingFlashSocketPolicyFile": False,
    "localCloseCode": None,
    "localCloseReason": None,
    "remoteCloseCode": None,
    "remoteCloseReason": None,
    "openHandshakeTimeoutCall": None,
    "closeHandshakeTimeoutCall": None,
    "autoPingTimeoutCall": None,
    "autoPingPending": None,
    "autoPingPendingCall": None,
    "autoPingPendingSeq": 0,
    "autoPingPendingSent": None,
}


class FastServerSetup(LazyOptionsDump):
    """
    For a server protocol subclass of autobahn's Twisted C{WebSocketServerProtocol} holding
    every option (C{CONFIG_ATTRS}) as a class attribute (L{pushpin_tx.websocket.client_side}):
    its C{connectionMade} and C{_connectionMade} (autobahn's private set-up of a connection)
    leave the same state as autobahn's, without what that case does not need. autobahn
    copies each option it does not find on the protocol (here none) and builds the list of
    them for a debug line whether or not it is written (here built only if written); it asks
    the system for the process id on every connection (here once per process) and a peer
    address from the transport twice; and it sets C{TCP_NODELAY} again on a connection
    twisted.web's C{HTTPChannel} already set it on (skipped when C{nodelay_already}). A
    TLS transport takes autobahn's own C{connectionMade} (its TLS transport details; it
    calls this C{_connectionMade} then), a class not holding every option both of autobahn's.
    tests/test_compat.py compares every attribute the two leave.

    Why: autobahn's connection set-up was a twelfth of opening a WebSocket (setup_cost
    profile, 2026-12-02).
    """

    utf8validator = _LazyUtf8Validator()
    #: set by whoever makes the connection when the socket has C{TCP_NODELAY} on already
    nodelay_already = False
    #: the peer address, when whoever makes the connection has it already (else asked of the transport)
    peer_address: Any = None
    _fast_setup: bool | None = None

    @classmethod
    def _can_set_up_fast(cls) -> bool:
        fast = cls.__dict__.get("_fast_setup")
        if fast is None:
            fast = all(name in dir(cls) for name in cls.CONFIG_ATTRS)  # type: ignore[attr-defined]
            cls._fast_setup = fast
        return bool(fast)

    def connectionMade(self) -> None:
        address = self.peer_address
        if address is not None:
            del self.peer_address  # (read once: not kept for the connection's life, on either path)
        transport = self.transport  # type: ignore[attr-defined]
        tls = _autobahn_twisted_util._HAS_TLS and _autobahn_twisted_util.ISSLTransport.providedBy(transport)
        if tls or not self._can_set_up_fast() or not self.factory.isServer:  # type: ignore[attr-defined]
            super().connectionMade()  # type: ignore[misc]
            return
        if address is None:
            peer = _autobahn_twisted_util.peer2str(transport)
        elif type(address) is _autobahn_twisted_util.IPv4Address:
            peer = f"tcp4:{address.host}:{address.port}"
        else:
            peer = _autobahn_twisted_util.peer2str(transport)
        if not _own_pid:
            _own_pid.append(os.getpid())
        ident = threading.get_ident()
        tid = _native_ids.get(ident)
        if tid is None:
            tid = _native_ids[ident] = threading.get_native_id()
        self._transport_details = TransportDetails(
            channel_type=TransportDetails.CHANNEL_TYPE_TCP,
            channel_framing=TransportDetails.CHANNEL_FRAMING_WEBSOCKET,
            peer=peer,
            is_server=self.is_server,  # type: ignore[attr-defined]
            own_pid=_own_pid[0],
            own_tid=tid,
            own_fd=-1,
            is_secure=False,
            channel_id={},
            peer_cert=None,
        )
        self.peer = peer
        if not (self.nodelay_already and self.tcpNoDelay):  # type: ignore[attr-defined]
            try:
                transport.setTcpNoDelay(self.tcpNoDelay)  # type: ignore[attr-defined]
            except Exception:  # as autobahn: not a TCP socket (Unix sockets say EINVAL)
                pass
        self._connectionMade()
        log = self.log  # type: ignore[attr-defined]
        if log.debug is not _txaio_no_op:
            log.debug('{func} connection established for peer="{peer}"', func=lazy_hltype(self.connectionMade), peer=lazy_hlval(self.peer))

    def _connectionMade(self) -> None:
        if not self._can_set_up_fast() or not self.factory.isServer or "peer" not in self.__dict__:  # type: ignore[attr-defined]
            super()._connectionMade()
            return
        p = _autobahn_protocol.WebSocketProtocol
        log = self.log  # type: ignore[attr-defined]
        if log.debug is not _txaio_no_op:
            log.debug("{func}: connection accepted from peer {peer}", func=lazy_hltype(self._connectionMade), peer=self.peer)
            log.debug("\n{attrs}", attrs=_LazyOptionsLog(self))
        # (the rest of autobahn's initial state is class attributes: _INITIAL_STATE)
        self.setTrackTimings(self.trackTimings)  # type: ignore[attr-defined]
        self.trafficStats = _autobahn_protocol.TrafficStats()
        self.state = p.STATE_CONNECTING
        self.data = b""
        self.send_queue: deque[Any] = deque()
        if self.openHandshakeTimeout > 0:  # type: ignore[attr-defined]
            self.openHandshakeTimeoutCall = self.factory._batched_timer.call_later(  # type: ignore[attr-defined]
                self.openHandshakeTimeout, self.onOpenHandshakeTimeout,  # type: ignore[attr-defined]
            )
        self.factory.countConnections += 1  # type: ignore[attr-defined]


for _name, _value in _INITIAL_STATE.items():
    setattr(FastServerSetup, _name, _value)


class _LazyHighlight:
    """What one of autobahn's C{hl*} helpers returns, worked out when the log line holding it is formatted."""

    __slots__ = ("_fn", "_args")

    def __init__(self, fn: Any, *args: Any) -> None:
        self._fn = fn
        self._args = args

    def __format__(self, spec: str) -> str:
        return format(self._fn(*self._args), spec)

    def __str__(self) -> str:
        return str(self._fn(*self._args))

    __repr__ = __str__


def lazy_hltype(obj: object) -> Any:
    """C{autobahn.util.hltype(obj)}, formatted only if the log line that holds it is written (the same text then)."""
    return _LazyHighlight(_autobahn_util.hltype, obj)


def lazy_hlval(val: object, color: str = "white", bold: bool = True) -> Any:
    """C{autobahn.util.hlval(val, ...)}, styled only if the log line that holds it is written; C{val} is read now."""
    return _LazyHighlight(_autobahn_util.hl, f"{val}", bold, color)


def quiet_autobahn_highlighting() -> None:
    """
    autobahn's WebSocket modules pass C{hltype(...)} and C{hlval(...)} (terminal colours by
    click) to their debug log lines, about ten per connection opened, whether or not debug
    lines are written: a sixteenth of opening a WebSocket (bench/README.md). Their module
    globals of those names become L{lazy_hltype} and L{lazy_hlval}, which style the text only
    when a line is formatted, the same text then. Every use in those modules is a log field
    (tests/test_compat.py checks). Idempotent.
    """
    for module in (_autobahn_protocol, _autobahn_twisted_websocket):
        module.hltype = lazy_hltype  # type: ignore[attr-defined]
        module.hlval = lazy_hlval  # type: ignore[attr-defined]


_BASE64_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


def parsed_request_head(method: bytes, uri: bytes, lines: Any) -> tuple[str, dict[str, str], dict[str, int]] | None:
    """
    What autobahn's C{parseHttpHeader} returns for the head C{method uri HTTP/1.1} with one
    line per header (C{lines}: C{(name, value)} pairs, twisted.web's C{getAllRawHeaders()}
    with each name's values joined by commas, the lines
    L{pushpin_tx.websocket.client_side.upgrade} writes), without decoding and splitting
    those bytes again; None where C{parseHttpHeader} would raise (a
    control character autobahn refuses), so that the caller leaves the bytes to autobahn.
    The names are tokens already (twisted.web refused any other), and unique ignoring case.
    """
    status = f"{method.decode('iso-8859-1')} {uri.decode('iso-8859-1')} HTTP/1.1"
    if _autobahn_protocol._HTTP_START_LINE_INVALID.search(status):
        return None
    parsed: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name, value in lines:
        key = name.decode("iso-8859-1").lower()
        parsed[key] = value.decode("iso-8859-1").strip(" \t")
        counts[key] = 1
    if _autobahn_protocol._HTTP_FIELD_VALUE_INVALID.search("".join(parsed.values())):
        return None
    return status.strip(" "), parsed, counts


def accept_server_handshake(protocol: Any, data: bytes, answer: Any,
                            parsed: tuple[str, dict[str, str], dict[str, int]] | None = None) -> bool:
    """
    autobahn's server handshake (C{WebSocketServerProtocol.processHandshake}) for the opening
    request C{data} (request line and headers, as C{dataReceived} would get them), when it
    passes every check autobahn makes: the same state set on C{protocol} (a server protocol
    made and connected, in C{STATE_CONNECTING}, nothing received yet), then the 101 for
    C{answer(protocols)} (what C{onConnect} returns for the client's subprotocols), which
    opens the connection: built by L{_succeed_plain} when the client offered no extension
    and the factory adds no headers, else by autobahn's own C{succeedHandshake}.

    Returns False, having changed nothing, for any request that one of autobahn's checks
    would fail (or that needs an option this path does not cover: a trusted
    C{X-Forwarded-For}, a connection limit, an external port): the caller then feeds C{data}
    to C{dataReceived} and autobahn answers as it always has.

    Why: autobahn's processHandshake, its txaio Deferred around C{onConnect} and their debug
    lines were a third of opening a proxied WebSocket (bench/README.md). The checks follow
    autobahn 25-26's processHandshake in its order; tests/test_compat.py runs requests
    through both paths and compares the protocols' state and what they sent.
    """
    p = _autobahn_protocol
    if protocol.state != p.WebSocketProtocol.STATE_CONNECTING or protocol.data:
        return False
    if protocol.trustXForwardedFor or protocol.maxConnections > 0 or protocol.factory.externalPort:
        return False
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data):
        return False
    if parsed is not None:  # (L{parsed_request_head}: what parseHttpHeader(data) returns)
        status_line, headers, counts = parsed
    else:
        try:
            status_line, headers, counts = p.parseHttpHeader(data)
        except Exception:
            return False
    parts = status_line.split()
    if len(parts) != 3 or parts[0].strip() != "GET" or parts[2].strip() != "HTTP/1.1":
        return False
    uri = parts[1].strip()
    split = _split_origin_form(uri)
    try:
        if split is None:
            _scheme, _netloc, path, _params, query, fragment = p.parse.urlparse(uri)
        else:
            path, query, fragment = split
        params = _parse_qs_plain(query)
        if params is None:
            params = p.parse.parse_qs(query)
    except Exception:
        return False
    if fragment != "" or counts.get("host") != 1:
        return False
    host = headers["host"].strip()
    if host.find(":") >= 0 and not host.endswith("]"):
        host, port = host.rsplit(":", 1)
        try:
            int(str(port.strip()))
        except ValueError:
            return False
    if not any(u.strip().lower() == "websocket" for u in headers.get("upgrade", "").split(",")):
        return False
    if not any(c.strip().lower() == "upgrade" for c in headers.get("connection", "").split(",")):
        return False
    if counts.get("sec-websocket-version") != 1:
        return False
    try:
        version = int(headers["sec-websocket-version"])
    except ValueError:
        return False
    if version not in protocol.versions:
        return False
    protocols: list[str] = []
    if "sec-websocket-protocol" in headers:
        protocols = [str(x.strip()) for x in headers["sec-websocket-protocol"].split(",")]
        if len(set(protocols)) != len(protocols):
            return False
    origin_key = "sec-websocket-origin" if version < 13 else "origin"
    origin = ""
    if origin_key in headers:
        if counts[origin_key] > 1:
            return False
        origin = headers[origin_key].strip()
        try:
            origin_tuple = p._url_to_origin(origin)
        except ValueError:
            return False
        factory = protocol.factory
        if not (origin_tuple == "null" and factory.allowNullOrigin) and not p._is_same_origin(
            origin_tuple, "https" if factory.isSecure else "http", factory.externalPort or factory.port,
            protocol.allowedOriginsPatterns,
        ):
            return False
    if counts.get("sec-websocket-key") != 1:
        return False
    key = headers["sec-websocket-key"].strip()
    if len(key) != 24 or key[-2:] != "==" or not _BASE64_KEY_CHARS.issuperset(key[:-2]):
        return False
    extensions: list[Any] = []
    if "sec-websocket-extensions" in headers:
        if counts["sec-websocket-extensions"] > 1:
            return False
        extensions = protocol._parseExtensionsHeader(headers["sec-websocket-extensions"])
    # every check passed: autobahn's state, as its _dataReceived and processHandshake leave it
    protocol.trafficStats.preopenIncomingOctetsWireLevel += len(data)
    if protocol.logOctets:
        protocol.logRxOctets(data)
    protocol.http_request_data = data
    protocol.http_status_line = status_line
    protocol.http_headers = headers
    protocol.http_request_uri = uri
    protocol.http_request_path = path
    protocol.http_request_params = params
    protocol.http_request_host = host
    protocol.websocket_version = version
    protocol.websocket_protocols = protocols
    protocol.websocket_origin = origin
    protocol.websocket_extensions = extensions
    protocol._wskey = key
    result = answer(protocols)
    if extensions or protocol.factory.headers or not _succeed_plain(protocol, result):
        protocol.succeedHandshake(result)
    return True


def _split_origin_form(uri: str) -> tuple[str, str, str] | None:
    """
    C{urlparse(uri)}'s path, query and fragment for an origin-form request target (one C{/}
    first; no C{;}, which urlparse splits off as params; no tab, CR or LF, which it removes),
    the same strings; None for anything else (urlparse's own then). Each WebSocket asks for
    a path and query of its own, so urlparse's cache never hits.
    """
    if uri[:1] != "/" or uri[1:2] == "/" or ";" in uri or "\t" in uri or "\r" in uri or "\n" in uri:
        return None
    rest, _, fragment = uri.partition("#")
    path, _, query = rest.partition("?")
    return path, query, fragment


def _parse_qs_plain(query: str) -> dict[str, list[str]] | None:
    """C{parse_qs(query)} for a query with nothing to decode (no C{%}, no C{+}), the same dict; None for any other (parse_qs's own then)."""
    if "%" in query or "+" in query:
        return None
    params: dict[str, list[str]] = {}
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value:
            if name in params:
                params[name].append(value)
            else:
                params[name] = [value]
    return params


_SWITCHING = "HTTP/1.1 101 Switching Protocols\r\n"
_UPGRADE_LINES = "Upgrade: WebSocket\r\nConnection: Upgrade\r\n"


def _succeed_plain(protocol: Any, result: tuple[str | None, dict[str, Any]]) -> bool:
    """
    autobahn's C{succeedHandshake(result)} for a handshake with no extension offered and no
    factory headers (C{result}: what C{onConnect} returned, a C{(subprotocol, headers)}
    pair), without its debug lines' fields, its per-extension bookkeeping or its response
    built one concatenation at a time; the same response, state and callbacks. False, having
    done nothing, for anything else (autobahn's own then).
    """
    if type(result) is not tuple or len(result) != 2:
        return False
    subprotocol, headers = result
    if subprotocol is not None and subprotocol not in protocol.websocket_protocols:
        return False  # (autobahn raises)
    p = _autobahn_protocol.WebSocketProtocol
    factory = protocol.factory
    log = protocol.log
    protocol.websocket_protocol_in_use = subprotocol
    protocol.websocket_extensions_in_use = []
    parts = [_SWITCHING]
    if factory.server:
        parts.append(f"Server: {factory.server}\r\n")
    parts.append(_UPGRADE_LINES)
    for name, value in headers.items():
        if isinstance(value, str):
            parts.append(f"{name}: {value}\r\n")
        else:
            try:
                values = iter(value)
            except TypeError:
                values = iter((value,))
            for one in values:
                parts.append(f"{name}: {one}\r\n")
    if subprotocol is not None:
        parts.append(f"Sec-WebSocket-Protocol: {subprotocol}\r\n")
    accept = base64.b64encode(hashlib.sha1(protocol._wskey.encode("utf8") + p._WS_MAGIC).digest())
    parts.append(f"Sec-WebSocket-Accept: {accept.decode()}\r\n\r\n")
    response = "".join(parts)
    if log.debug is not _txaio_no_op:
        log.debug("sending HTTP response:\n\n{response}", response=response)
    protocol.sendData(response.encode("utf8"))
    protocol.http_response_data = response
    protocol.state = p.STATE_OPEN
    if protocol.openHandshakeTimeoutCall is not None:
        if log.debug is not _txaio_no_op:
            log.debug("openHandshakeTimeoutCall.cancel")
        protocol.openHandshakeTimeoutCall.cancel()
        protocol.openHandshakeTimeoutCall = None
    protocol.inside_message = False
    protocol.current_frame = None
    if protocol.autoPingInterval:
        protocol.autoPingPendingCall = factory._batched_timer.call_later(protocol.autoPingInterval, protocol._sendAutoPing)
    if protocol.trackedTimings:
        protocol.trackedTimings.track("onOpen")
    protocol._onOpen()
    _txaio.resolve(protocol.is_open, None)  # type: ignore[attr-defined]  # (bound by txaio.use_twisted)
    if len(protocol.data) > 0:
        protocol.consumeData()
    return True
