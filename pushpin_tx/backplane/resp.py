# -*- test-case-name: tests.backplane.test_resp -*-
"""
A minimal RESP3 client for the Redis backplane: command encoding, an incremental reply
parser and a protocol that answers commands in order and hands push messages on.

Why not a library. txredisapi (the Twisted Redis client) is not in this machine's package
index, and it speaks RESP2 only, where a connection that has subscribed can do nothing but
(un)subscribe: publishing then needs a second connection, and Redis orders nothing between
two connections (a publish may overtake the SUBSCRIBE sent just before it, and our own
publish's echo may or may not come). RESP3 (Redis 6+) lets one connection subscribe and
publish: Redis executes its commands in order, so a SUBSCRIBE is active before any later
PUBLISH, and the echo of our own PUBLISH reaches us before its reply (both go to our output
buffer in that order). That is what the backplane's "nothing twice, nothing lost on our own
side" rests on (L{pushpin_tx.backplane.redis}). redis-py's asyncio client would need the
asyncio reactor for the whole process. What is needed of RESP is small: this module.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger

from pushpin_tx.net.writethrough import writer_for

__all__ = ["Push", "RespError", "RespParser", "RespProtocol", "encode"]


class RespError(Exception):
    """An error reply (C{-ERR ...} or a blob error)."""


class Push(list):
    """A RESP3 push message (C{>}): a list of its elements (for us C{[b"message", channel, payload]})."""


class _Incomplete(Exception):
    pass


def encode(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RespParser:
    """
    Incremental RESP2/RESP3 reply parser: L{feed} bytes, get back every complete value.
    Strings stay C{bytes}; C{%} maps become dicts, C{~} sets lists, C{|} attributes are
    skipped, errors are L{RespError} instances (returned, not raised).
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buffer + data if self._buffer else data
        values = []
        pos = 0
        end = len(buf)
        while pos < end:
            try:
                value, pos2 = self._parse(buf, pos)
            except _Incomplete:
                break
            pos = pos2
            if value is _ATTRIBUTE:
                continue
            values.append(value)
        self._buffer = buf[pos:]
        return values

    def _line(self, buf: bytes, pos: int) -> tuple[bytes, int]:
        nl = buf.find(b"\r\n", pos)
        if nl < 0:
            raise _Incomplete()
        return buf[pos:nl], nl + 2

    def _parse(self, buf: bytes, pos: int) -> tuple[Any, int]:
        kind = buf[pos:pos + 1]
        line, pos = self._line(buf, pos + 1)
        if kind == b"$" or kind == b"=" or kind == b"!":
            n = int(line)
            if n < 0:
                return None, pos
            if len(buf) < pos + n + 2:
                raise _Incomplete()
            blob = buf[pos:pos + n]
            pos += n + 2
            if kind == b"!":
                return RespError(blob.decode("utf-8", "replace")), pos
            if kind == b"=":
                blob = blob[4:]  # "txt:" / "mkd:"
            return blob, pos
        if kind in (b"*", b">", b"~", b"%", b"|"):
            n = int(line)
            if n < 0:
                return None, pos
            count = n * 2 if kind in (b"%", b"|") else n
            items = []
            for _ in range(count):
                value, pos = self._parse(buf, pos)
                items.append(value)
            if kind == b">":
                return Push(items), pos
            if kind == b"%":
                return dict(zip(items[0::2], items[1::2])), pos
            if kind == b"|":
                return _ATTRIBUTE, pos
            return items, pos
        if kind == b"+":
            return line, pos
        if kind == b"-":
            return RespError(line.decode("utf-8", "replace")), pos
        if kind == b":" or kind == b"(":
            return int(line), pos
        if kind == b"_":
            return None, pos
        if kind == b"#":
            return line == b"t", pos
        if kind == b",":
            return float(line), pos
        raise ValueError(f"RESP: unknown type byte {kind!r}")


_ATTRIBUTE = object()


class RespProtocol(protocol.Protocol):
    """
    One RESP3 connection. L{command} returns a Deferred of the reply (FIFO: Redis answers
    in order); L{send_no_reply} is for commands whose answer comes as pushes in RESP3
    (SUBSCRIBE, UNSUBSCRIBE). Push messages go to C{on_push}; C{on_lost(reason)} hears of
    the end, after every pending reply's Deferred failed with it.
    """

    _log = Logger()

    def __init__(self, on_push: Callable[[Push], None], on_lost: Callable[[Any], None]) -> None:
        self._parser = RespParser()
        self._waiting: deque[defer.Deferred[Any]] = deque()
        self._on_push = on_push
        self._on_lost = on_lost
        self.connected = False
        self._write: Callable[[bytes], None] = self._not_connected

    def _not_connected(self, data: bytes) -> None:
        raise RuntimeError("RespProtocol: not connected")

    def connectionMade(self) -> None:
        self.connected = True
        # Sent at once when nothing waits in the transport (pushpin_tx.net.writethrough):
        # a PUBLISH is then on its way before the input that caused it answers its publisher.
        self._write = writer_for(self.transport)

    def command(self, *args: bytes | str | int) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append(d)
        self._write(encode(*args))
        return d

    def send_no_reply(self, *args: bytes | str | int) -> None:
        self._write(encode(*args))

    def dataReceived(self, data: bytes) -> None:
        try:
            values = self._parser.feed(data)
        except ValueError as e:
            self._log.error("backplane: unreadable reply from redis ({why}), dropping the connection", why=e)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        for value in values:
            if isinstance(value, Push):
                self._on_push(value)
            elif self._waiting:
                d = self._waiting.popleft()
                if isinstance(value, RespError):
                    d.errback(value)
                else:
                    d.callback(value)
            else:
                self._log.warn("backplane: unexpected reply from redis: {value!r}", value=value)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.connected = False
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
        self._on_lost(reason)
