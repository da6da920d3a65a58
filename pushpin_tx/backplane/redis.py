# -*- test-case-name: tests.backplane.test_redis -*-
"""
The Redis backplane (C{[handler] backplane=redis://[user:password@]host:port/db}, also
C{rediss://} for TLS): every instance configured with the same one serves as one.

How a publish travels. An instance's inputs (control API, ZeroMQ PULL/SUB, command socket,
console) hand items to its intake; the id cache and the prev-id sequencer run there, once
per publish, in the instance that accepted it. What the sequencer lets out comes here
(L{RedisBackplane.publish}) instead of going to the router: the first item of a reactor turn
at once, the turn's other items at its end, each run of one channel as one
C{PUBLISH pushpin-tx/<db>/<channel>} of one envelope. Every instance
that holds the channel (ours included) gets it from Redis and delivers it to its
subscribers (and, with workers, pipes it to them): we deliver on receipt, we do not deliver
locally and skip our echo. Why: Redis executes PUBLISHes one at a time, so every instance
sees the publishes of a channel in one order, whichever instances accepted them; a local
delivery would put our own publishes ahead of others' that Redis ordered first, and the
instances' streams would differ. The cost is a round trip to Redis for our own subscribers.

Exactly once, and nothing of ours lost. One RESP3 connection both subscribes and publishes
(L{pushpin_tx.backplane.resp} says why), so a SUBSCRIBE sent when a channel got its first
holder is active before any later PUBLISH of ours, and our echo arrives before the
PUBLISH's reply. An envelope carries our instance id and a sequence number: when a PUBLISH
fails, or the connection ends before its reply, and its echo did not come, its items are
delivered here (counted as C{unconfirmed}: other instances may or may not have them); when
its echo came, it was delivered then. While Redis is away the instance keeps serving: what
its sequencer lets out is delivered locally only (counted, C{local_only}), it reconnects
with backoff (0.5 s doubling to 10 s), re-subscribes, and says so in its log, its console
(C{backplane()}) and its metrics. What other instances published meanwhile never reaches
it: a reliable stream (id/prev-id with a next link) sees the gap on its next item and
recovers through its next link; a plain stream does not get those items.

Order. Per channel, every instance delivers in Redis's order. A publisher that sends to one
instance keeps its own order everywhere. One that publishes to instance A, waits for the
answer, then publishes to instance B is not overtaken either: A's PUBLISH is on its way
before A answers (the first item of a turn is written through at once), and Redis takes a
connection's commands in order. Publishers that race each other get Redis's order; those
that need their own order across unrelated paths number their items (prev-id), and the
sequencer of the instance that takes the later one waits for the earlier one (below).

Ids. An item sequenced elsewhere sets the channel's last id here too (C{deliver_remote},
the service hands it to its sequencer), so that an item published here with that prev-id
is not parked, and holds read the same last id on every instance.

Interest: the backplane is an interest listener of the process's subscriptions
(L{pushpin_tx.core.linger.Subscriptions}; with workers, of their union): it subscribes to
C{pushpin-tx/<db>/<channel>} when a channel gets its first holder in any process and
unsubscribes when the channel's subscription ends, as the ZeroMQ SUB input does (Pushpin's
C{removeSub}): at once when the last to leave was a stream or a WebSocket,
C{subscription_linger} seconds later when it was a long-poll, so an instance whose client
long-polls again is still subscribed and gets what was published meanwhile. Pub/sub ignores the
database number, so the number is part of the channel names: instances on db 1 and db 2 of
one Redis are two separate clusters.

Prefix subscriptions (ours, C{Grip-Channel: news.; prefix}) are C{PSUBSCRIBE}s of
C{pushpin-tx/<db>/<prefix>*}, the prefix's glob characters (C{* ? [ ] \\}) escaped, with the
same linger and the same unsubscribes (C{PUNSUBSCRIBE}). Redis sends a publish once per
subscription it matches (a C{message} for the channel, a C{pmessage} per pattern), so only
one of them is delivered: the C{message} when Redis had the channel subscribed, else the
C{pmessage} of the longest matching pattern. Which ones Redis had is known exactly: its
confirmations (C{subscribe}, C{psubscribe}, C{unsubscribe}, C{punsubscribe}) come on the
same connection, in order with the messages, and are tracked as Redis's side of the
subscriptions (L{RedisBackplane._on_push}). The one delivered goes on when the channel is
still wanted here, exactly or under a wanted prefix.

The envelope is a pickle (the format the workers' pipe uses, C-fast both ways) read by an
unpickler that accepts no global but the four item classes, so whoever can publish on the
Redis cannot make us run code; anything else is counted and dropped.
"""

from __future__ import annotations

import io
import os
import pickle
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.application import service
from twisted.internet import protocol
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger

from pushpin_tx.backplane.resp import Push, RespError, RespProtocol
from pushpin_tx.core.prefix_index import PrefixIndex

if TYPE_CHECKING:
    from twisted.internet.interfaces import IStreamClientEndpoint

    from pushpin_tx.core.router import InterestSource
    from pushpin_tx.protocol.items import Item

__all__ = ["BackplaneAddress", "RedisBackplane", "decode_envelope", "encode_envelope", "glob_escape", "parse_backplane_url"]

ENVELOPE_VERSION = 1
INITIAL_DELAY = 0.5
MAX_DELAY = 10.0
#: channels per SUBSCRIBE when re-subscribing after a reconnect
SUBSCRIBE_BATCH = 500

_ALLOWED = frozenset(("pushpin_tx.protocol.items", name)
                     for name in ("Item", "HttpResponseFormat", "HttpStreamFormat", "WsMessageFormat"))


@dataclass(frozen=True)
class BackplaneAddress:
    """Where the Redis is: from C{redis://[user:password@]host[:port][/db]} (C{rediss://}: TLS)."""

    host: str
    port: int
    db: int
    tls: bool
    username: str | None
    password: str | None
    #: C{rediss://...?ca=FILE}: the PEM certificate(s) to trust instead of the system's
    ca_file: str | None = None

    def describe(self) -> str:
        """The URL with the password hidden: what logs, console and metrics show."""
        auth = ""
        if self.password is not None:
            auth = f"{self.username or ''}:***@"
        elif self.username:
            auth = f"{self.username}@"
        return f"{'rediss' if self.tls else 'redis'}://{auth}{self.host}:{self.port}/{self.db}"


def parse_backplane_url(url: str) -> BackplaneAddress:
    """Read a C{backplane} value; C{ValueError} says what is wrong with it (never quoting a password)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"backplane: unsupported scheme {parts.scheme!r} (redis:// or rediss://)")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("backplane: invalid port") from None
    host = parts.hostname or "127.0.0.1"
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError:
        raise ValueError(f"backplane: database must be a number, not {path!r}") from None
    if db < 0:
        raise ValueError("backplane: database must not be negative")
    query = dict(parse_qsl(parts.query))
    unknown = set(query) - {"ca"}
    if unknown:
        raise ValueError(f"backplane: unknown option(s) {', '.join(sorted(unknown))} (rediss://...?ca=FILE)")
    if "ca" in query and parts.scheme != "rediss":
        raise ValueError("backplane: ca= is for rediss:// (TLS)")
    return BackplaneAddress(
        host=host,
        port=port,
        db=db,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca_file=query.get("ca"),
    )


#: what Redis's glob matching (stringmatchlen) gives a meaning; a backslash makes each literal
_GLOB_SPECIAL = frozenset(b"*?[]\\")


def glob_escape(raw: bytes) -> bytes:
    """C{raw} as a Redis glob pattern that matches exactly it: C{* ? [ ] \\} backslash-escaped."""
    if not _GLOB_SPECIAL.intersection(raw):
        return raw
    return b"".join(b"\\" + bytes((c,)) if c in _GLOB_SPECIAL else bytes((c,)) for c in raw)


def glob_unescape(pattern: bytes) -> bytes:
    """What L{glob_escape} was given."""
    if b"\\" not in pattern:
        return pattern
    out = bytearray()
    i = 0
    while i < len(pattern):
        if pattern[i] == 0x5C and i + 1 < len(pattern):
            i += 1
        out.append(pattern[i])
        i += 1
    return bytes(out)


class _ItemUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a backplane envelope")


def encode_envelope(instance: bytes, seq: int, items: "list[Item]") -> bytes:
    """One PUBLISH payload: who sent it, its number, the items (one channel)."""
    return pickle.dumps((ENVELOPE_VERSION, instance, seq, tuple(items)), protocol=5)


def decode_envelope(payload: bytes) -> "tuple[bytes, int, tuple[Item, ...]]":
    """(instance, seq, items) of a payload; C{ValueError} for anything that is not one of ours."""
    try:
        value = _ItemUnpickler(io.BytesIO(payload)).load()
    except Exception as e:  # pickle raises many kinds on garbage
        raise ValueError(f"unreadable envelope ({e.__class__.__name__}: {e})") from None
    if not (isinstance(value, tuple) and len(value) == 4 and value[0] == ENVELOPE_VERSION
            and isinstance(value[1], bytes) and isinstance(value[2], int) and isinstance(value[3], tuple)):
        raise ValueError("not a version-1 envelope")
    from pushpin_tx.protocol.items import Item

    if not all(isinstance(item, Item) for item in value[3]):
        raise ValueError("an envelope item is not an Item")
    return value[1], value[2], value[3]


class _Pending:
    __slots__ = ("items", "echoed")

    def __init__(self, items: "list[Item]") -> None:
        self.items = items
        self.echoed = False


class RedisBackplane(service.Service):
    """
    The backplane of one instance (its main process).

    @param interest: the process's subscriptions or the workers' shared interest
        (C{add_interest_listener}, C{channels()}).
    @param deliver: hands an item to this instance's subscribers (all its processes).
    @param deliver_remote: the same for an item another instance sequenced (default:
        C{deliver}); the service passes one that also records the item's id as last id.
    @param endpoint: a client endpoint to use instead of one made from C{address} (tests).
    @ivar state: C{"stopped"}, C{"connecting"}, C{"up"} or C{"down"}.
    """

    name = "backplane"
    _log = Logger()

    def __init__(self, address: BackplaneAddress, reactor: Any, interest: "InterestSource", deliver: Callable[["Item"], None], *,
                 deliver_remote: "Callable[[Item], None] | None" = None, endpoint: Any = None) -> None:
        self.address = address
        self._reactor = reactor
        self._interest = interest
        self._deliver = deliver
        self._deliver_remote = deliver_remote or deliver
        self._endpoint = endpoint
        self._prefix = f"pushpin-tx/{address.db}/"
        self._prefix_b = self._prefix.encode("utf-8")
        self.instance = b"%d-" % os.getpid() + secrets.token_hex(6).encode("ascii")
        self._seq = 0
        self._proto: RespProtocol | None = None
        self._ready = False
        self._pending: dict[int, _Pending] = {}
        self._turn: "list[Item] | None" = None
        self._wanted: set[str] = set()
        #: the wanted prefixes
        self._wanted_prefixes: PrefixIndex[str, None] = PrefixIndex()
        #: what Redis confirmed we are subscribed to on this connection (channel names, and
        #: pattern -> prefix), in step with the messages it sends
        self._redis_channels: set[bytes] = set()
        self._redis_patterns: dict[bytes, str] = {}
        #: the prefixes of those patterns (which is the longest match)
        self._redis_prefixes: PrefixIndex[str, None] = PrefixIndex()
        self._retry: Any = None
        self._connecting: Any = None
        self._failures = 0
        self._listening = False
        self.state = "stopped"
        self.since = reactor.seconds()
        self.last_error = ""
        # counters (metrics and console)
        self.published = 0  # items sent through Redis
        self.received = 0  # items delivered from Redis (our own included)
        self.received_remote = 0  # of those, items another instance published
        self.local_only = 0  # items delivered here only because Redis was away
        self.unconfirmed = 0  # items delivered here after their PUBLISH failed or went unanswered
        self.rejected = 0  # payloads on our channels that were not a readable envelope
        self.connects = 0  # times the connection came up
        self.subscribed = 0  # channels Redis confirms we are subscribed to
        self._local_only_at_loss = 0
        self._refusal = ""

    # --- service -------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        if not self._listening:
            self._listening = True
            self._interest.add_interest_listener(self)
            self._wanted = set(self._interest.channels())
            # (afresh, as the channels: a prefix that ended while stopped was not heard of)
            self._wanted_prefixes.clear()
            for prefix in getattr(self._interest, "prefixes", tuple)():
                self._wanted_prefixes.add(prefix, None)
        self._set_state("connecting")
        self._connect()

    def stopService(self) -> None:
        super().stopService()
        if self._listening:
            self._listening = False
            self._interest.remove_interest_listener(self)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
        self._flush()
        self._set_state("stopped")
        proto, self._proto = self._proto, None
        self._ready = False
        if proto is not None and proto.transport is not None:
            proto.transport.loseConnection()

    # --- publish side --------------------------------------------------------------------

    def publish(self, item: "Item") -> None:
        """What the sequencer lets out: through Redis when it is up, else to our subscribers only."""
        if not self._ready:
            self.local_only += 1
            self._deliver(item)
            return
        turn = self._turn
        if turn is None:
            # The first item of a reactor turn goes out now, before whatever the input
            # writes in this turn (the control API's answer): Twisted sends both in the
            # next poll, in the order they were written, so a publisher that waits for
            # its answer and then publishes to another instance is not overtaken there.
            # The rest of the turn's items follow at its end, a run of one channel per PUBLISH.
            self._turn = []
            self._reactor.callLater(0, self._flush)
            self._send_run([item])
            return
        turn.append(item)

    def _flush(self) -> None:
        turn, self._turn = self._turn, None
        if not turn:
            return
        if not self._ready or self._proto is None:
            self.local_only += len(turn)
            for item in turn:
                self._deliver(item)
            return
        start = 0
        for i in range(1, len(turn) + 1):  # one PUBLISH per run of one channel
            if i == len(turn) or turn[i].channel != turn[start].channel:
                self._send_run(turn[start:i])
                start = i

    def _send_run(self, items: "list[Item]") -> None:
        """One PUBLISH of items of one channel; what becomes of it is settled by its echo or its reply."""
        proto = self._proto
        assert proto is not None
        self._seq += 1
        seq = self._seq
        self._pending[seq] = _Pending(items)
        d = proto.command(b"PUBLISH", self._prefix_b + items[0].channel.encode("utf-8"),
                          encode_envelope(self.instance, seq, items))
        d.addCallbacks(self._published, self._publish_failed, callbackArgs=(seq,), errbackArgs=(seq,))
        self.published += len(items)

    def _published(self, _receivers: int, seq: int) -> None:
        self._pending.pop(seq, None)  # its echo came first if we hold the channel

    def _publish_failed(self, failure: Any, seq: int) -> None:
        pending = self._pending.pop(seq, None)
        if pending is None or pending.echoed:
            return
        self.unconfirmed += len(pending.items)
        self._log.warn("backplane: a publish of {count} item(s) on channel {channel} was not confirmed by redis "
                       "({why}); delivered here, other instances may not have it",
                       count=len(pending.items), channel=pending.items[0].channel, why=failure.getErrorMessage())
        for item in pending.items:
            self._deliver(item)

    # --- interest ------------------------------------------------------------------------

    def channel_added(self, channel: str) -> None:
        if channel in self._wanted:
            return
        self._wanted.add(channel)
        if self._proto is not None and self._ready:
            self._proto.send_no_reply(b"SUBSCRIBE", self._prefix_b + channel.encode("utf-8"))

    def channel_removed(self, channel: str) -> None:
        if channel not in self._wanted:
            return
        self._wanted.discard(channel)
        if self._proto is not None and self._ready:
            self._proto.send_no_reply(b"UNSUBSCRIBE", self._prefix_b + channel.encode("utf-8"))

    def prefix_added(self, prefix: str) -> None:
        if not self._wanted_prefixes.add(prefix, None):
            return
        if self._proto is not None and self._ready:
            self._proto.send_no_reply(b"PSUBSCRIBE", self._pattern(prefix))

    def prefix_removed(self, prefix: str) -> None:
        if not self._wanted_prefixes.remove(prefix):
            return
        if self._proto is not None and self._ready:
            self._proto.send_no_reply(b"PUNSUBSCRIBE", self._pattern(prefix))

    def _pattern(self, prefix: str) -> bytes:
        """The PSUBSCRIBE pattern of a prefix: every channel under it, its glob characters escaped."""
        return glob_escape(self._prefix_b + prefix.encode("utf-8")) + b"*"

    def _wants(self, channel: str) -> bool:
        """Whether a channel is held here: exactly, or under a wanted prefix."""
        return channel in self._wanted or self._wanted_prefixes.matches(channel)

    # --- what Redis sends ----------------------------------------------------------------

    def _on_push(self, push: Push) -> None:
        if len(push) < 3:
            return
        kind = push[0]
        if kind == b"message":
            self._message(push[1], push[2])
        elif kind == b"pmessage":
            if len(push) >= 4 and self._first_match(push[1], push[2]):
                self._message(push[2], push[3])
        elif kind in (b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe") and isinstance(push[2], int):
            # Redis's side of the subscriptions, in order with the messages it sends
            name = push[1]
            if kind == b"subscribe":
                self._redis_channels.add(name)
            elif kind == b"unsubscribe":
                self._redis_channels.discard(name)
            elif kind == b"psubscribe":
                prefix = self._pattern_prefix(name)
                if prefix is not None and name not in self._redis_patterns:
                    self._redis_patterns[name] = prefix
                    self._redis_prefixes.add(prefix, None)
            else:
                prefix = self._redis_patterns.pop(name, None)
                if prefix is not None:
                    self._redis_prefixes.remove(prefix)
            self.subscribed = push[2]

    def _pattern_prefix(self, pattern: bytes) -> str | None:
        """The prefix one of our patterns stands for (None: not one of ours)."""
        if not pattern.endswith(b"*"):
            return None
        raw = glob_unescape(pattern[:-1])
        if not raw.startswith(self._prefix_b):
            return None
        return raw[len(self._prefix_b):].decode("utf-8", "replace")

    def _first_match(self, pattern: bytes, name: bytes) -> bool:
        """
        Whether this C{pmessage} is the one copy of its publish to deliver: Redis had the
        channel itself not subscribed, and this is the longest of its patterns that match.
        """
        if name in self._redis_channels:
            return False  # its 'message' came (or comes) first
        prefix = self._redis_patterns.get(pattern)
        if prefix is None:
            return False
        channel = name[len(self._prefix_b):].decode("utf-8", "replace")
        if not channel.startswith(prefix):
            return False
        # the longest confirmed prefix of the name: one lookup per distinct prefix length
        return self._redis_prefixes.longest(channel) == prefix

    def _message(self, name: bytes, payload: bytes) -> None:
        try:
            instance, seq, items = decode_envelope(payload)
        except ValueError as e:
            self.rejected += 1
            self._log.warn("backplane: dropped a message on {name}: {why}", name=name.decode("utf-8", "replace"), why=e)
            return
        own = instance == self.instance
        if own:
            pending = self._pending.get(seq)
            if pending is not None:
                pending.echoed = True
        channel = name[len(self._prefix_b):].decode("utf-8", "replace")
        if not self._wants(channel):
            return  # in flight when we unsubscribed: nobody here holds it
        if any(item.channel != channel for item in items):
            self.rejected += 1
            self._log.warn("backplane: dropped a message on {name}: its items name another channel",
                           name=name.decode("utf-8", "replace"))
            return
        self.received += len(items)
        if own:
            for item in items:
                self._deliver(item)
        else:
            self.received_remote += len(items)
            for item in items:
                self._deliver_remote(item)

    # --- connection ----------------------------------------------------------------------

    def _make_endpoint(self) -> Any:
        if self._endpoint is not None:
            return self._endpoint
        address = self.address
        endpoint: IStreamClientEndpoint = HostnameEndpoint(self._reactor, address.host, address.port, timeout=10)
        if address.tls:
            from twisted.internet.ssl import Certificate, optionsForClientTLS

            trust = None
            if address.ca_file:  # read at each connect: a renewed CA file is picked up
                with open(address.ca_file, "rb") as f:
                    trust = Certificate.loadPEM(f.read())
            endpoint = wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trust), endpoint)
        return endpoint

    def _connect(self) -> None:
        self._retry = None
        factory = protocol.Factory.forProtocol(lambda: RespProtocol(self._on_push, self._lost))
        factory.noisy = False
        try:
            endpoint = self._make_endpoint()
        except Exception as e:  # an unreadable ca= file: loud, and retried like a refused connection
            self.last_error = f"{e.__class__.__name__}: {e}"
            self._schedule_retry(f"cannot set up TLS: {self.last_error}")
            return
        d = self._connecting = endpoint.connect(factory)
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, proto: RespProtocol) -> None:
        self._connecting = None
        if not self.running:
            proto.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._proto = proto
        self._refusal = ""
        address = self.address
        hello: list[bytes | str] = [b"HELLO", b"3"]
        if address.password is not None:
            hello += [b"AUTH", address.username or "default", address.password]
        hello += [b"SETNAME", b"pushpin-tx-" + self.instance]
        proto.command(*hello).addCallbacks(self._hello_ok, self._hello_failed, callbackArgs=(proto,), errbackArgs=(proto,))

    def _hello_ok(self, _info: Any, proto: RespProtocol) -> None:
        if proto is not self._proto:
            return
        channels = sorted(self._wanted)
        for i in range(0, len(channels), SUBSCRIBE_BATCH):
            proto.send_no_reply(b"SUBSCRIBE", *[self._prefix_b + c.encode("utf-8") for c in channels[i:i + SUBSCRIBE_BATCH]])
        prefixes = sorted(self._wanted_prefixes)
        for i in range(0, len(prefixes), SUBSCRIBE_BATCH):
            proto.send_no_reply(b"PSUBSCRIBE", *[self._pattern(p) for p in prefixes[i:i + SUBSCRIBE_BATCH]])
        self._ready = True
        self._failures = 0
        self.connects += 1
        missed = self.local_only - self._local_only_at_loss
        self._set_state("up")
        if self.connects == 1:
            self._log.info("backplane: redis at {where} up, instance {instance}, {n} channel(s) subscribed",
                           where=self.address.describe(), instance=self.instance.decode(), n=len(channels))
        else:
            self._log.info("backplane: redis at {where} up again, {n} channel(s) re-subscribed; {missed} item(s) were "
                           "delivered here only while it was away", where=self.address.describe(), n=len(channels),
                           missed=missed)

    def _hello_failed(self, failure: Any, proto: RespProtocol) -> None:
        if not failure.check(RespError):
            return  # the connection ended first: _lost says so
        # the password is never part of the message: Redis answers WRONGPASS/NOAUTH texts
        self.last_error = self._refusal = failure.getErrorMessage()
        self._log.error("backplane: redis at {where} refused the handshake: {why}",
                        where=self.address.describe(), why=self.last_error)
        if proto.transport is not None:
            proto.transport.loseConnection()

    def _connect_failed(self, failure: Any) -> None:
        self._connecting = None
        if not self.running:
            return
        self.last_error = failure.getErrorMessage()
        self._schedule_retry(f"cannot connect: {self.last_error}")

    def _lost(self, reason: Any) -> None:
        was_ready = self._ready
        self._ready = False
        self._proto = None
        self.subscribed = 0
        self._redis_channels.clear()
        self._redis_patterns.clear()
        self._redis_prefixes.clear()
        self._flush()  # this turn's items go out here
        if not self.running:
            return
        why = reason.getErrorMessage() if hasattr(reason, "getErrorMessage") else str(reason)
        if self._refusal:  # the handshake was refused: that is the reason, not the close after it
            why = f"refused the handshake: {self._refusal}"
        self.last_error = why
        if was_ready:
            self._local_only_at_loss = self.local_only
        self._schedule_retry(f"connection lost: {why}" if was_ready else f"connection closed: {why}")

    def _schedule_retry(self, why: str) -> None:
        delay = min(MAX_DELAY, INITIAL_DELAY * (2 ** self._failures))
        self._failures += 1
        if self.state != "down":
            self._set_state("down")
            self._log.error("backplane: redis at {where} is away ({why}); publishes are delivered to this "
                            "instance's subscribers only until it is back; retrying in {delay}s",
                            where=self.address.describe(), why=why, delay=delay)
        else:
            self._log.warn("backplane: redis at {where} still away ({why}); retrying in {delay}s",
                           where=self.address.describe(), why=why, delay=delay)
        self._retry = self._reactor.callLater(delay, self._connect)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.since = self._reactor.seconds()

    # --- operators -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The backplane's state and counters (console C{backplane()}, metrics)."""
        return {
            "url": self.address.describe(),
            "instance": self.instance.decode(),
            "state": self.state,
            "since": self.since,
            "last_error": self.last_error,
            "channels": len(self._wanted),
            "prefixes": len(self._wanted_prefixes),
            "subscribed": self.subscribed,
            "published": self.published,
            "received": self.received,
            "received_remote": self.received_remote,
            "local_only": self.local_only,
            "unconfirmed": self.unconfirmed,
            "rejected": self.rejected,
            "connects": self.connects,
            "in_flight": len(self._pending),
        }
