"""
The twisted.web server side: the client site and its channel, the reverse-proxy resource,
accepting GRIP responses, and the HTTP control API.
"""
