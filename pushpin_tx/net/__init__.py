"""
Socket-level helpers every adapter shares: writing through to a transport, listening sockets.
"""
