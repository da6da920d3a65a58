"""
Clients toward the user's origin: the pooled HTTP/1.1 client, failover over a route's targets,
TLS policy.
"""
