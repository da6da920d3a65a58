"""Write-through to the socket: direct sends when the transport is empty, order kept when it is not."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.testing import StringTransport

from pushpin_tx.net.writethrough import writer_for

from tests.integration.harness import RawClient


def test_non_tcp_transports_use_their_own_write():
    """A transport that is not a plain TCP connection gets its own write method back."""
    transport = StringTransport()
    assert writer_for(transport) == transport.write


def test_tls_connections_take_the_tls_write(tmp_path):
    """An https connection's writes go through Twisted's TLS layer (encrypted), never straight to its socket."""
    from twisted.internet.protocol import Factory, Protocol

    from pushpin_tx.net.tls import IdentityStore, tls_factory

    tls = tls_factory(Factory.forProtocol(Protocol), IdentityStore(str(tmp_path)), 443)
    tls_protocol = tls.buildProtocol(None)
    tcp_like = StringTransport()
    tls_protocol.makeConnection(tcp_like)
    inner = tls_protocol.wrappedProtocol
    assert inner.transport is tls_protocol
    assert writer_for(inner.transport) == tls_protocol.write


@pytest_twisted.ensureDeferred
async def test_direct_sends_and_a_stalled_reader_keep_every_byte_in_order(reactor):
    """Bytes written while the peer reads go out at once; a stalled peer gets the rest queued, in order."""
    servers: list[protocol.Protocol] = []

    class Server(protocol.Protocol):
        def connectionMade(self):
            servers.append(self)

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(Server))
    client = RawClient()
    try:
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(protocol.Factory.forProtocol(lambda: client))
        await client.waiter.wait(reactor, lambda: servers, what="server side")
        server = servers[0]
        write = writer_for(server.transport)
        assert write != server.transport.write
        write(b"first,")
        assert server.transport._tempDataBuffer == []  # sent on the socket, nothing queued
        await client.wait_for(reactor, b"first,")
        client.transport.pauseProducing()  # the reader stalls
        blocks = [b"%08d" % n * 1024 for n in range(2000)]  # ~16 MB, far more than socket buffers
        for block in blocks:
            write(block)
        assert server.transport._tempDataBuffer or len(server.transport.dataBuffer) != server.transport.offset
        client.transport.resumeProducing()
        expected = b"first," + b"".join(blocks)
        await client.waiter.wait(reactor, lambda: len(client.received) >= len(expected), timeout=30, what="all bytes")
        assert client.received == expected
        client.transport.loseConnection()
        await client.wait_closed(reactor)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_second_write_in_a_turn_is_coalesced_by_the_transport(reactor):
    """Within one reactor turn only the first write goes straight out; later ones join the transport's buffer."""
    from twisted.internet.task import Clock

    from pushpin_tx.net.writethrough import TurnCounter

    servers: list[protocol.Protocol] = []

    class Server(protocol.Protocol):
        def connectionMade(self):
            servers.append(self)

    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(protocol.Factory.forProtocol(Server))
    client = RawClient()
    clock = Clock()
    try:
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(protocol.Factory.forProtocol(lambda: client))
        await client.waiter.wait(reactor, lambda: servers, what="server side")
        transport = servers[0].transport
        write = writer_for(transport, TurnCounter(clock))
        write(b"one,")
        assert transport._tempDataBuffer == []  # straight out
        write(b"two,")
        assert transport._tempDataBuffer == [b"two,"]  # same turn: buffered, sent with the reactor's flush
        clock.advance(0)  # next turn
        await client.wait_for(reactor, b"one,two,")
        write(b"three")
        await client.wait_for(reactor, b"one,two,three")
        client.transport.loseConnection()
        await client.wait_closed(reactor)
    finally:
        await port.stopListening()
