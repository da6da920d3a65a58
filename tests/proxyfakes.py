"""
In-memory wiring for the proxy tests: the real L{ProxyResource} behind our L{ClientSite},
raw client connections on a C{StringTransport}, and origins that are twisted.web resources
reached over iosim connections by the service's own origin client (L{OriginNetwork}).
Everything the proxy does runs on one C{MemoryReactorClock}: no sockets, no global reactor,
nothing left behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import ISSLTransport, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from pushpin_tx.web.accept import Acceptor
from pushpin_tx.web.clientsite import ClientSite
from pushpin_tx.protocol.config import Settings, load_settings
from pushpin_tx.core.hold import HoldContext
from pushpin_tx.protocol.items import parse_item
from pushpin_tx.origin.client import OriginClient
from pushpin_tx.origin.http11 import OriginPool
from pushpin_tx.web.proxy import ProxyResource
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.protocol.routes import RouteTable, parse_routes
from pushpin_tx.core.stats import Counters
from pushpin_tx.service import PushpinService

ROOT = Path(__file__).resolve().parents[1]

#: The in-memory clock starts here (a plausible POSIX time), so JWT expiry checks make sense.
START_TIME = 1_800_000_000.0

#: Where raw clients connect from (the proxy's idea of the client IP).
CLIENT_IP = "10.0.0.7"

Handler = Callable[[Any], object]


def write_config(directory: Path, **keys: str) -> Path:
    """The stock etc/pushpin.conf with C{keys} set (each must already be in the file)."""
    text = (ROOT / "etc" / "pushpin.conf").read_text()
    for key, value in {"http_port": "127.0.0.1:0", **keys}.items():
        text, n = re.subn(rf"(?m)^#?{key}=.*$", lambda _m: f"{key}={value}", text)
        assert n == 1, f"{key} is not a key of the stock pushpin.conf"
    path = directory / "pushpin.conf"
    path.write_text(text)
    return path


@dataclass
class SeenRequest:
    """One request as an origin received it."""

    method: bytes
    uri: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The only value of C{name} (case-insensitive); fails if it came more than once."""
        values = self.all(name)
        assert len(values) <= 1, f"{name!r} came {len(values)} times: {values}"
        return values[0] if values else None

    def all(self, name: bytes) -> list[bytes]:
        """Every value of C{name}, in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def names(self) -> set[bytes]:
        """The lower-cased header names."""
        return {k.lower() for k, _ in self.headers}


class Origin(Resource):
    """A twisted.web origin whose answers are set per path; records every request it gets."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[bytes, Handler] = {}
        self.requests: list[SeenRequest] = []
        #: requests answered with NOT_DONE_YET, for the test to finish later
        self.pending: list[Any] = []

    def render(self, request: Any) -> object:
        """Record the request, then answer with the handler for its path (404 without one)."""
        self.requests.append(
            SeenRequest(
                request.method,
                request.uri,
                [(k, v) for k, vs in request.requestHeaders.getAllRawHeaders() for v in vs],
                request.content.read(),
            )
        )
        # twisted.web adds these to every answer; what a real origin sends is the test's choice.
        request.responseHeaders.removeHeader(b"server")
        request.responseHeaders.removeHeader(b"date")
        handler = self.handlers.get(request.path)
        if handler is None:
            request.setResponseCode(404)
            return b"no handler\n"
        return handler(request)

    @property
    def last(self) -> SeenRequest:
        """The most recent request."""
        assert self.requests, "the origin received no request"
        return self.requests[-1]


def answer(body: bytes, *headers: tuple[bytes, bytes], code: int = 200) -> Handler:
    """A handler answering C{code} with C{headers} (in order) and C{body}."""

    def handler(request: Any) -> bytes:
        request.setResponseCode(code)
        for name, value in headers:
            request.responseHeaders.addRawHeader(name, value)
        return body

    return handler


class _SilentOrigin(Protocol):
    """An origin that accepts the connection, reads the request and never answers."""


@implementer(IStreamClientEndpoint)
class _OriginEndpoint:
    """Connects to one in-memory origin (see L{OriginNetwork.endpoint_for})."""

    def __init__(self, network: "OriginNetwork", netloc: str) -> None:
        self._network = network
        self._netloc = netloc

    def connect(self, factory: Any) -> Deferred[Any]:
        """IStreamClientEndpoint.connect: the origin's protocol on an iosim pump, or a refusal."""
        return self._network._connect(self._netloc, factory)


class OriginNetwork:
    """
    The in-memory origins as the proxy's network: each C{host:port} is a twisted.web C{Site}
    around its origin resource, and every connection the proxy opens, through the pooled
    origin client or through the Agent, is a pair of iosim transports pumped by L{flush}.
    Any other address refuses the connection, as a closed port does. The proxy's production
    origin client (L{OriginClient} with its L{OriginPool}) runs on it unchanged.
    """

    def __init__(self, origins: dict[str, Resource]) -> None:
        # the origins' own clock: their idle timers never reach the proxy's
        self._origin_clock = MemoryReactorClock()
        self._sites = {netloc: Site(resource, reactor=self._origin_clock) for netloc, resource in origins.items()}
        for site in self._sites.values():
            site.noisy = False
        self._pumps: list[iosim.IOPump] = []
        #: every C{host:port} a connection was attempted to, in order
        self.attempts: list[str] = []
        #: netlocs whose origin accepts the connection, then says nothing
        self.silent: set[str] = set()

    def endpoint_for(self, host: bytes, port: int) -> _OriginEndpoint:
        """The endpoint an L{OriginPool} connects to C{host:port} through."""
        return _OriginEndpoint(self, f"{host.decode('ascii')}:{port}")

    def endpointForURI(self, uri: Any) -> _OriginEndpoint:
        """IAgentEndpointFactory: the endpoint the Agent connects to C{uri} through."""
        return _OriginEndpoint(self, f"{uri.host.decode('ascii')}:{uri.port}")

    def agent(self, reactor: Any) -> Agent:
        """A real twisted.web C{Agent} (with a persistent pool, as the service's) on this network."""
        return Agent.usingEndpointFactory(reactor, self, pool=HTTPConnectionPool(reactor, persistent=True))

    def _connect(self, netloc: str, factory: Any) -> Deferred[Any]:
        self.attempts.append(netloc)
        site = self._sites.get(netloc)
        if site is None:
            return fail(ConnectionRefusedError(netloc))
        host, _, port = netloc.rpartition(":")
        server_address = IPv4Address("TCP", host, int(port))
        client_address = IPv4Address("TCP", "127.0.0.1", 30000 + len(self.attempts))
        server = _SilentOrigin() if netloc in self.silent else site.buildProtocol(client_address)
        client = factory.buildProtocol(server_address)
        server_io = iosim.FakeTransport(server, isServer=True, hostAddress=server_address, peerAddress=client_address)
        client_io = iosim.FakeTransport(client, isServer=False, hostAddress=client_address, peerAddress=server_address)
        self._pumps.append(iosim.connect(server, server_io, client, client_io, greet=False, clock=self._origin_clock))
        return succeed(client)

    def flush(self) -> None:
        """Move pending bytes between the proxy and every origin, both ways, until none move."""
        for pump in list(self._pumps):
            pump.flush()
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self._pumps.remove(pump)


@implementer(ISSLTransport)
class _TLSStringTransport(StringTransport):
    """A C{StringTransport} that says it is TLS (ISSLTransport extends ITCPTransport)."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass

    def setTcpKeepAlive(self, enabled: bool) -> None:
        pass

    def getPeerCertificate(self) -> None:
        return None


class RawClient:
    """One client connection: bytes in, every byte the proxy wrote out."""

    def __init__(self, rig: "ProxyRig", channel: Any, transport: StringTransport) -> None:
        self._rig = rig
        self.channel = channel
        self.transport = transport

    def send(self, data: bytes) -> "RawClient":
        """Write C{data} to the proxy and let everything settle."""
        self.channel.dataReceived(data)
        self._rig.settle()
        return self

    @property
    def received(self) -> bytes:
        """Everything the proxy sent on this connection."""
        return self.transport.value()

    def take(self) -> bytes:
        """What the proxy sent since the last C{take}."""
        data = self.transport.value()
        self.transport.clear()
        return data

    @property
    def closed(self) -> bool:
        """Whether the proxy closed (or aborted) the connection."""
        return bool(self.transport.disconnecting)

    def disconnect(self) -> None:
        """The client goes away."""
        self.channel.connectionLost(Failure(ConnectionDone()))
        self._rig.settle()


@dataclass
class ProxyRig:
    """The proxy, in memory, with its origins, clock and captured log lines."""

    settings: Settings
    reactor: MemoryReactorClock
    network: OriginNetwork
    proxy: ProxyResource
    acceptor: Acceptor
    router: ChannelRouter
    site: ClientSite
    events: list[dict[str, Any]] = field(default_factory=list)

    def connect(self, *, peer: str = CLIENT_IP, tls: bool = False) -> RawClient:
        """A new client connection (C{tls}: the transport says it is TLS, as an https port's would)."""
        channel = self.site.buildProtocol(IPv4Address("TCP", peer, 40000))
        factory = _TLSStringTransport if tls else StringTransport
        transport = factory(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 7999), peerAddress=IPv4Address("TCP", peer, 40000)
        )
        channel.makeConnection(transport)
        return RawClient(self, channel, transport)

    def request(self, data: bytes, **kw: Any) -> RawClient:
        """Send C{data} on a new connection."""
        return self.connect(**kw).send(data)

    def settle(self) -> None:
        """Run what is due now and pump the origin connections until nothing moves."""
        for _ in range(50):
            self.reactor.advance(0)
            self.network.flush()

    def advance(self, seconds: float) -> None:
        """Let C{seconds} pass on the proxy's clock."""
        self.reactor.advance(seconds)
        self.settle()

    def publish(self, item: dict[str, Any]) -> int:
        """Publish one item (Pushpin's JSON item shape) to the held connections."""
        count = self.router.publish(parse_item(item))
        self.settle()
        return count

    def lines(self, namespace_prefix: str = "pushpin_tx") -> list[str]:
        """Formatted log messages from pushpin_tx, in order (the test adds C{events.append} as an observer)."""
        return [formatEvent(e) for e in self.events if e.get("log_namespace", "").startswith(namespace_prefix)]

    def access_lines(self) -> list[str]:
        """Only the access lines (the proxy's and the acceptor's C{{line}} events)."""
        return [formatEvent(e) for e in self.events if e.get("log_format") == "{line}"]


def build_rig(
    tmp_path: Path,
    routes: list[str],
    origins: dict[str, Resource] | None = None,
    *,
    response_timeout: float | None = None,
    **conf: str,
) -> ProxyRig:
    """Wire the proxy as L{PushpinService} does, but on a memory reactor and in-memory origins."""
    settings = load_settings(str(write_config(tmp_path, **conf)))
    reactor = MemoryReactorClock()
    reactor.advance(START_TIME)
    network = OriginNetwork(origins or {})
    kw = {} if response_timeout is None else {"response_timeout": response_timeout}
    # the service's origin client: the pool for body-less plain-HTTP requests, Agents else
    pool = OriginPool(reactor, endpoint_for=network.endpoint_for)
    origin = OriginClient(network.agent(reactor), network.agent(reactor), reactor, pool=pool, **kw)
    counters = Counters()
    router = ChannelRouter()
    ctx = HoldContext(
        router,
        reactor,
        counters,
        queue_limit=settings.delivery_queue_max,
        overflow=settings.delivery_overflow,
        on_drop=lambda conn, channel, reason: None,
        random_=lambda: 0.0,
    )
    acceptor = Acceptor(settings, ctx, counters, origin)
    # The signers are the service's own (per-route sig_iss/sig_key live there); building the
    # service on the memory reactor starts nothing.
    signer_for = PushpinService(settings, reactor).signer_for
    proxy = ProxyResource(settings, origin, signer_for, acceptor, counters, reactor)
    acceptor.link_headers = proxy.link_headers_for
    parsed, warnings = parse_routes("\n".join(routes) + "\n")
    assert warnings == [], warnings
    proxy.set_routes(RouteTable(parsed))
    site = ClientSite(proxy, header_limit=settings.client_buffer_size, reactor=reactor)
    return ProxyRig(settings, reactor, network, proxy, acceptor, router, site)


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """Decode an HTTP/1.1 chunked body; returns (payload, whether the last chunk arrived)."""
    out = b""
    while data:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out, True
        if len(rest) < size + 2:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out, False
