"""
pushpin-tx: a realtime reverse proxy that speaks Pushpin 1.36's protocols, built on Twisted.

Clients connect to the proxy, the proxy forwards their requests to an origin, and GRIP
instructions in the origin's answer turn the request into a held long-poll, stream or
WebSocket subscribed to channels that publishers then push to.

A C{§N} in a docstring or comment names section N of C{docs/pushpin-reference.md}, the
protocol reference this package implements. The layer packages, lowest first:
L{pushpin_tx.protocol}, L{pushpin_tx.core}, L{pushpin_tx.net}, L{pushpin_tx.origin},
L{pushpin_tx.web} and L{pushpin_tx.zeromq}, L{pushpin_tx.websocket}, L{pushpin_tx.workers},
L{pushpin_tx.ops}, then C{service} / C{tap} (wiring) and L{pushpin_tx.scripts}.
"""

__version__ = "0.1.0"
