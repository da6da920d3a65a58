# -*- test-case-name: tests.web.test_proxy -*-
"""
TLS toward origins: the C{insecure} target option (§3.2) skips certificate verification.
Every other TLS origin goes through twisted.web's C{BrowserLikePolicyForHTTPS} (verified
against the system trust store), the Agent's default.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

__all__ = ["InsecurePolicy"]


@implementer(IPolicyForHTTPS)
class InsecurePolicy:
    """Connects with TLS (and SNI) but accepts any certificate: only for C{insecure} targets."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return _NoVerify(hostname.decode("ascii"))


@implementer(IOpenSSLClientConnectionCreator)
class _NoVerify:
    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._options = ssl.CertificateOptions(verify=False)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL import SSL

        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        try:
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        except Exception:
            pass
        connection.set_connect_state()
        return connection
