# -*- test-case-name: tests.integration.test_websockets -*-
"""
Plain WebSocket proxying (reference §8.1): the origin is a WebSocket server, reached with
autobahn's client. On GRIP routes the proxy offers C{Sec-WebSocket-Extensions: grip};
when the origin accepts it, its messages carry GRIP control messages and a prefix.

autobahn's client refuses an extension it did not negotiate itself, so L{OriginWebSocket}
takes C{grip} out of the origin's handshake answer before autobahn reads it (and keeps the
answer's status and headers, so a refusal can be passed to the client as it was).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from pushpin_tx.protocol.wscontrol import parse_grip_extension
from pushpin_tx.core.ws_session import OPCODE_BINARY, OPCODE_PING, OPCODE_PONG, OPCODE_TEXT

if TYPE_CHECKING:
    from pushpin_tx.core.ws_session import WsSession

__all__ = ["OriginWebSocket", "HandshakeRefused", "connect_origin"]


class HandshakeRefused(Exception):
    """The origin answered the upgrade with something other than 101."""

    def __init__(self, code: int, reason: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"origin refused the WebSocket handshake with {code}")
        self.code, self.reason, self.headers, self.body = code, reason, headers, body


def _split_head(data: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers, data[end + 4 :]


class OriginWebSocket(WebSocketClientProtocol):
    """The proxy's WebSocket to the origin; also the session's L{OriginLink}."""

    _log = Logger()

    def __init__(self) -> None:
        super().__init__()
        self.session: "WsSession | None" = None
        self.opened: Deferred[OriginWebSocket] = Deferred()
        self.grip = False
        self.message_prefix = b"m:"
        self.accept_headers: list[tuple[bytes, bytes]] = []
        self._refusal: HandshakeRefused | None = None

    def processHandshake(self) -> Any:
        parsed = _split_head(self.data)
        if parsed is not None and self._refusal is None:
            status_line, headers, rest = parsed
            parts = status_line.split(b" ", 2)
            code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            if code != 101:
                self._refusal = HandshakeRefused(code, parts[2] if len(parts) > 2 else b"", headers, rest)
            else:
                extensions = [v for k, v in headers if k.lower() == b"sec-websocket-extensions"]
                self.grip, self.message_prefix = parse_grip_extension(extensions)
                self.accept_headers = headers
                kept = [
                    (k, v) for k, v in headers if k.lower() != b"sec-websocket-extensions"
                ]
                self.data = status_line + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in kept) + b"\r\n" + rest
        return super().processHandshake()

    def onOpen(self) -> None:
        if not self.opened.called:
            self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.session is not None:
            self.session.origin_message(OPCODE_BINARY if isBinary else OPCODE_TEXT, payload)

    def onPing(self, payload: bytes) -> None:
        super().onPing(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(self._refusal or ConnectionError(f"origin WebSocket failed: {reason}"))
            return
        session, self.session = self.session, None
        if session is None:
            return
        if self.remoteCloseCode is not None:
            session.origin_close(self.remoteCloseCode, self.remoteCloseReason or "")
        else:
            session.origin_disconnect()

    # OriginLink ------------------------------------------------------------------------------

    def client_message(self, opcode: int, payload: bytes) -> None:
        if self.state != WebSocketClientProtocol.STATE_OPEN:
            return
        if opcode == OPCODE_PING:
            self.sendPing(payload or None)
        elif opcode == OPCODE_PONG:
            self.sendPong(payload or None)
        else:
            self.sendMessage(payload, isBinary=opcode == OPCODE_BINARY)

    def client_closed(self, code: int | None, reason: bytes) -> None:
        self.session = None
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            if code is None or not (code == 1000 or 3000 <= code <= 4999):
                self.sendClose()
            else:
                self.sendClose(code, reason.decode("utf-8", "replace") or None)

    def client_gone(self) -> None:
        self.session = None
        self.dropConnection(abort=True)

    def detach(self) -> None:
        self.session = None
        if self.state == WebSocketClientProtocol.STATE_OPEN:
            self.sendClose()


async def connect_origin(
    reactor: Any,
    *,
    host: str,
    port: int,
    ssl: bool,
    path: str,
    headers: list[tuple[bytes, bytes]],
    protocols: list[str],
    context_factory: Callable[[str, int], Any] | None = None,
) -> OriginWebSocket:
    """Open a WebSocket to the origin; fails with L{HandshakeRefused} or a connection error."""
    scheme = "wss" if ssl else "ws"
    host_header = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), f"{host}:{port}")
    extra = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k.lower() != b"host"}
    factory = WebSocketClientFactory(
        f"{scheme}://{host_header}{path}", headers=extra, protocols=protocols or None, reactor=reactor
    )
    factory.protocol = OriginWebSocket
    factory.noisy = False
    factory.setProtocolOptions(perMessageCompressionOffers=[], autoFragmentSize=0)
    factory.useragent = None
    endpoint: Any
    if ":" in host:  # an IPv6 address (route target [addr]:port)
        endpoint = endpoints.TCP6ClientEndpoint(reactor, host, port, timeout=10)
        if ssl:
            endpoint = endpoints.wrapClientTLS(context_factory(host, port), endpoint)  # type: ignore[misc]
    elif ssl:
        endpoint = endpoints.SSL4ClientEndpoint(reactor, host, port, context_factory(host, port))  # type: ignore[misc]
    else:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port, timeout=10)
    protocol: OriginWebSocket = await endpoint.connect(factory)
    try:
        return await protocol.opened
    except CancelledError:
        # the client left during the handshake: let go of the origin at once
        protocol.dropConnection(abort=True)
        raise
