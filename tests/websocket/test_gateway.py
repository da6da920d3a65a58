"""The WebSocket gateway's bookkeeping of the sessions it opens, on the built-in test target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from pushpin_tx.core.stats import Counters
from pushpin_tx.websocket.gateway import WebSocketGateway
from tests.proxyfakes import build_rig

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _open(rig: Any, channel: str) -> StringTransport:
    client = rig.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    client.makeConnection(transport)
    client.dataReceived(
        f"GET /ws?channel={channel} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    rig.settle()
    assert transport.value().startswith(b"HTTP/1.1 101 "), transport.value()
    return transport


def test_the_gateway_counts_a_websocket_while_it_is_open_and_its_minutes_when_it_ends(tmp_path: Path) -> None:
    """Opened: held and listed; closed after 90 s: no longer held or listed, two connection-minutes counted, each session's end once."""
    rig = build_rig(tmp_path, ["* test"])
    counters = Counters()
    gateway = WebSocketGateway(rig.settings, rig.reactor, rig.acceptor._ctx, counters, None)
    rig.proxy.ws_gateway = gateway
    first, second = _open(rig, "a"), _open(rig, "b")
    assert counters.held["ws"] == 2 and len(gateway.connections) == 2
    sessions = list(gateway.connections.values())
    assert sessions[0].on_end is sessions[1].on_end  # one callback for every session, no closure each
    rig.advance(90)
    first.protocol.connectionLost(Failure(ConnectionDone()))
    rig.settle()
    assert counters.held["ws"] == 1 and list(gateway.connections.values()) == [sessions[1]]
    assert counters.connection_minutes_closed == 2
    sessions[0].end()  # ended already: counted once
    assert counters.held["ws"] == 1 and counters.connection_minutes_closed == 2
    second.protocol.connectionLost(Failure(ConnectionDone()))
    rig.settle()
    assert counters.held["ws"] == 0 and gateway.connections == {}
