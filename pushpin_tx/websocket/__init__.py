"""
WebSockets on autobahn: the client-side protocol, the upgrade gateway, plain WebSocket proxying
to an origin, and WebSocket-over-HTTP.
"""
