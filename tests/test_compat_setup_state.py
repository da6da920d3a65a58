"""
What a WebSocket connection keeps after L{pushpin_tx._compat.FastServerSetup}'s set-up: the
peer address handed in is read once and not kept, over TLS (autobahn's own set-up) as over
TCP; the default 101 headers every connection shares cannot be changed through one of them.
(h5's review, F5.)
"""

from __future__ import annotations

from typing import Any

import pytest

from tests import test_compat


@pytest.fixture
def tls_details(monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS transports (autobahn's own transport details need a real TLSMemoryBIOProtocol)."""
    from autobahn.twisted import websocket as autobahn_twisted_websocket
    from autobahn.wamp.types import TransportDetails

    def details(transport: Any, is_server: bool) -> TransportDetails:
        return TransportDetails(channel_type=TransportDetails.CHANNEL_TYPE_TLS, peer="tcp4:192.0.2.7:40123", is_server=is_server,
                                own_pid=1, own_tid=1, own_fd=-1, is_secure=True, channel_id={})

    monkeypatch.setattr(autobahn_twisted_websocket, "create_transport_details", details)
    monkeypatch.setattr(test_compat, "_TcpPeerTransport", test_compat._TlsPeerTransport)


def test_the_peer_address_is_not_kept_over_tcp() -> None:
    """Over TCP the connection reads the address it was handed and keeps none of it."""
    protocol, _ = test_compat._connected(True, address=True)
    assert protocol.peer == "tcp4:192.0.2.7:40123"
    assert "peer_address" not in vars(protocol) and protocol.peer_address is None


def test_the_peer_address_is_not_kept_over_tls(tls_details: None) -> None:
    """Over TLS (autobahn's own connectionMade) the address handed in is not kept either."""
    protocol, _ = test_compat._connected(True, nodelay_already=True, address=True)
    assert protocol._transport_details.is_secure
    assert "peer_address" not in vars(protocol) and protocol.peer_address is None


def test_the_shared_default_101_headers_are_read_only() -> None:
    """A connection without headers of its own answers with the shared default, which no one can change."""
    from pushpin_tx.websocket.client_side import ClientWebSocket

    protocol, _ = test_compat._connected(True)
    subprotocol, headers = protocol.answer(["chat"])
    assert subprotocol is None and dict(headers) == {}
    assert headers is ClientWebSocket._accept[1]
    with pytest.raises(TypeError):
        headers["X-Leak"] = "every connection"  # type: ignore[index]
