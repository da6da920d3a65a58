"""
pushpin-tx: a realtime reverse proxy that speaks Pushpin 1.36's protocols, built on Twisted.

Clients connect to the proxy, the proxy forwards their requests to an origin, and GRIP
instructions in the origin's answer turn the request into a held long-poll, stream or
WebSocket subscribed to channels that publishers then push to.
"""

__version__ = "0.1.0"
