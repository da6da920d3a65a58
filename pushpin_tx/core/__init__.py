"""
State machines with an injected clock and no sockets: the channel router, delivery queues,
reliable-delivery sequencing, the publish intake, held HTTP requests, WebSocket sessions and
the counters. Imports only L{pushpin_tx.protocol}.
"""
