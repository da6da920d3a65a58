# -*- test-case-name: tests.net.test_tls -*-
"""
TLS client listeners (C{[runner] https_ports}) with certificates found the way Pushpin's
connection manager finds them (C{src/connmgr/tls.rs} in Pushpin 1.37-1.41, condure before):

 - the directory is C{<config dir>/runner/certs};
 - each identity is a pair C{<name>.crt} (a PEM chain, the leaf first) and C{<name>.key};
 - the client's SNI name, lower-cased, picks C{<name>.crt}; failing that, the wildcard file
   one level up, C{_.<rest of the name>.crt} (C{www.example.com} -> C{_.example.com.crt});
   wildcards at other levels are not looked for;
 - no SNI name, or no file for it: the port's default identity, C{default_<port>} (the
   port as configured: C{https_ports=443} reads C{default_443.crt});
 - nothing found: the handshake fails (Pushpin sends a fatal alert);
 - a file changed since it was loaded is loaded again at the next handshake that wants it,
   so certificates are renewed without a restart.

Protocols and ciphers are Mozilla's "intermediate" profile, as connmgr's
C{SslAcceptor::mozilla_intermediate}: TLS 1.2 and 1.3, forward-secret AEAD suites.

ALPN: the protocols the wrapped factory lists in its C{alpn} attribute, in its order of
preference (the client site: C{h2} then C{http/1.1}, or C{http/1.1} alone with
C{[runner] http2=false}); a client offering none of them gets no ALPN answer and speaks
HTTP/1.1, as it would to a server without ALPN.

Twisted's TLS (C{TLSMemoryBIOFactory}, pyOpenSSL) does the rest; the connection creator
below hands it an C{SSL.Connection} whose context switches to the SNI-chosen identity in
OpenSSL's servername callback. Key material is read by OpenSSL from the files and never
passes through a log line: errors name the file and OpenSSL's reason only.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence
from weakref import WeakKeyDictionary

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer

from pushpin_tx.net.writethrough import TurnCounter, writer_for

__all__ = ["IdentityStore", "SniConnectionCreator", "WriteThroughTLS", "tls_factory", "default_identity"]

#: OpenSSL names of the TLS 1.2 suites of Mozilla's intermediate profile (v5.7); TLS 1.3's are OpenSSL's defaults
INTERMEDIATE_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    b"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

#: the longest name connmgr looks up (a DNS name)
_NAME_MAX = 253

_log = Logger()

#: the ALPN protocols each server connection offers (set by its port's creator)
_OFFERS: "WeakKeyDictionary[SSL.Connection, tuple[bytes, ...]]" = WeakKeyDictionary()

#: what a listener offers when its factory does not say
HTTP1_ONLY = (b"http/1.1",)


def _select_alpn(connection: SSL.Connection, offered: list[bytes]) -> Any:
    """OpenSSL's ALPN callback: the first of the port's protocols the client offers (the
    server's preference, as connmgr's), or no ALPN answer when none is."""
    for protocol in _OFFERS.get(connection, HTTP1_ONLY):
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def default_identity(port: int) -> str:
    """The name of an https port's default identity: C{default_<port>}, as Pushpin's runner passes it."""
    return f"default_{port}"


def _base_context() -> SSL.Context:
    """A server context with the intermediate profile and no identity of its own."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION)
    ctx.set_cipher_list(INTERMEDIATE_CIPHERS)
    # on every context: OpenSSL asks the one the servername callback switched to
    ctx.set_alpn_select_callback(_select_alpn)
    return ctx


class _Identity:
    __slots__ = ("context", "modified", "files")

    def __init__(self, context: SSL.Context, modified: float, files: tuple[str, str]) -> None:
        self.context = context
        self.modified = modified
        self.files = files


class IdentityStore:
    """
    The identities of a certs directory, loaded on first use and again when a file changes
    (C{IdentityCache} in connmgr). One store serves every https port of a process.
    """

    def __init__(self, directory: str, *, stat: Callable[[str], Any] = os.stat) -> None:
        self.directory = directory
        self._stat = stat
        self._loaded: dict[str, _Identity] = {}
        #: identities that could not be loaded, and why (the last reason), for the log once per change
        self._failed: dict[str, tuple[float, str]] = {}

    def by_name(self, name: str) -> SSL.Context | None:
        """The context of identity C{name} (C{<name>.crt} + C{<name>.key}), or None."""
        if len(name) > _NAME_MAX or any(ord(c) < 0x20 or c in "/\\" for c in name) or name in ("", ".", ".."):
            return None
        crt = os.path.join(self.directory, name + ".crt")
        key = os.path.join(self.directory, name + ".key")
        try:
            modified = max(self._stat(crt).st_mtime, self._stat(key).st_mtime)
        except OSError:
            self._loaded.pop(name, None)
            return None
        known = self._loaded.get(name)
        if known is not None and known.modified >= modified:
            return known.context
        failed = self._failed.get(name)
        if failed is not None and failed[0] >= modified:
            return known.context if known is not None else None
        ctx = _base_context()
        try:
            ctx.use_certificate_chain_file(crt)
            ctx.use_privatekey_file(key)
            ctx.check_privatekey()
        except SSL.Error as e:
            # OpenSSL's reason names what failed (a PEM error, a key that does not match), never the key
            why = "; ".join(str(part[2]) for part in e.args[0]) if e.args and isinstance(e.args[0], list) else str(e)
            self._failed[name] = (modified, why)
            _log.warn("TLS: cannot load certificate {name} from {dir}: {why}", name=name, dir=self.directory, why=why)
            return known.context if known is not None else None
        self._failed.pop(name, None)
        self._loaded[name] = _Identity(ctx, modified, (crt, key))
        _log.debug("TLS: loaded certificate {name}", name=name)
        return ctx

    def by_domain(self, domain: str) -> SSL.Context | None:
        """The context for an SNI name: the exact name's file, else its wildcard file one level up."""
        name = domain.lower()
        ctx = self.by_name(name)
        if ctx is not None:
            return ctx
        dot = name.find(".")
        if dot == -1:
            return None
        return self.by_name("_" + name[dot:])


@implementer(IOpenSSLServerConnectionCreator)
class SniConnectionCreator:
    """
    Makes the server side of each TLS connection of one https port: the identity is picked
    in OpenSSL's servername callback (called for every ClientHello, with or without SNI).
    """

    def __init__(self, store: IdentityStore, default: str, alpn: Sequence[bytes] = HTTP1_ONLY) -> None:
        self._store = store
        self._default = default
        self.alpn = tuple(alpn)
        self._context = _base_context()
        self._context.set_tlsext_servername_callback(self._pick)

    def _pick(self, connection: SSL.Connection) -> None:
        sni = connection.get_servername()
        ctx = None
        if sni:
            try:
                ctx = self._store.by_domain(sni.decode("ascii"))
            except UnicodeDecodeError:
                ctx = None
        if ctx is None:
            ctx = self._store.by_name(self._default)
        if ctx is not None:
            connection.set_context(ctx)
        # else: no identity, the handshake fails ("no shared cipher"), as Pushpin's fatal alert

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A new server-side connection on this port's context (Twisted's connection creator interface)."""
        connection = SSL.Connection(self._context, None)
        _OFFERS[connection] = self.alpn
        return connection


class WriteThroughTLS(TLSMemoryBIOProtocol):
    """
    Twisted's TLS protocol, whose encrypted records reach the socket by the write-through
    path of plain connections (L{writer_for}): a record goes out in one C{send} when nothing
    is queued, instead of waiting in the TCP transport for the reactor's next pass (two
    C{epoll_ctl} calls and a pass per delivery). The plaintext side is unchanged: what the
    proxy writes to an https connection is encrypted by Twisted's TLS layer as before.
    """

    #: set on the class by L{tls_factory}'s subclass: the reactor turns of the site's writes
    turns: TurnCounter | None = None

    def makeConnection(self, transport: Any) -> None:
        # the TCP transport's own write stays the fallback (captured by writer_for first)
        transport.write = writer_for(transport, self.turns)
        super().makeConnection(transport)


def tls_factory(factory: Any, store: IdentityStore, port: int) -> TLSMemoryBIOFactory:
    """
    C{factory} behind TLS, with https port C{port}'s identities (its default is
    C{default_<port>}), offering by ALPN what C{factory.alpn} lists (HTTP/1.1 when it has
    none). A missing default identity is logged once here: clients without a known SNI name
    will not complete a handshake.
    """
    default = default_identity(port)
    if store.by_name(default) is None:
        _log.warn(
            "TLS: no default certificate for https port {port} ({dir}/{name}.crt and .key): clients"
            " whose SNI name has no certificate of its own will fail the handshake",
            port=port, dir=store.directory, name=default)
    creator = SniConnectionCreator(store, default, getattr(factory, "alpn", HTTP1_ONLY))
    tls = TLSMemoryBIOFactory(creator, False, factory)
    tls.creator = creator  # type: ignore[attr-defined]  # (the port's creator, for a look at what it offers)
    tls.protocol = type("WriteThroughTLS", (WriteThroughTLS,), {"turns": getattr(factory, "turns", None)})
    tls.noisy = False
    return tls
