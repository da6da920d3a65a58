# -*- test-case-name: tests.zeromq.test_inputs -*-
"""
The ZeroMQ side of the handler (reference §1, §6.3, §10): the PULL and SUB publish
inputs, the command socket and the stats PUB socket, in one service that owns the
C{zmq.Context}.

The context is created in C{privilegedStartService} (or C{startService} when that was
not called), never in C{__init__}: twistd builds the service tree, then forks, then
starts it, and a context's I/O threads do not survive a fork. Binding there, like the
HTTP listeners in L{pushpin_tx.tap}, makes a busy endpoint stop start-up with an error.
Each bound endpoint is logged as C{"<name> bound to <endpoint>"} with the real address
(C{LAST_ENDPOINT}), so C{tcp://127.0.0.1:0} works and tests can find the port.
C{stopService} closes every socket with linger 0 and only then terminates the context,
which therefore never blocks the reactor.

Inputs, as in Pushpin 1.36 (C{handlerengine.cpp}); warnings use its log texts:

  - PULL (C{push_in_spec}): one single-part message is one item (C{J}+JSON,
    C{T}+tnetstring or a bare tnetstring); anything else is logged and dropped.
  - SUB (C{push_in_sub_specs}, bound, or connected with C{push_in_sub_connect}): two
    parts, C{[channel, item]}. The socket is subscribed only to the channels the process
    is subscribed to (the service is an interest listener of the subscriptions,
    L{pushpin_tx.core.linger.Subscriptions}, or with workers of their union), so a
    publisher using XPUB sees the interest. As in Pushpin's C{addSub} / C{removeSub}, the
    C{SUBSCRIBE} goes out with a channel's first subscriber and the C{UNSUBSCRIBE} when the
    subscription ends: at once when the last to leave was a stream or a WebSocket,
    C{subscription_linger} seconds later (on a 1 s tick) when it was a long-poll, so a
    client that long-polls again keeps the subscription and misses nothing published
    meanwhile. A topic is the channel's UTF-8 bytes, matched by ZeroMQ against the first
    frame as a byte prefix: only exact channel matches are published, the rest are dropped
    quietly. A prefix subscription (ours, C{Grip-Channel: news.; prefix}) subscribes its
    bare prefix bytes, so every channel under it comes in, with the same linger. Topics are
    counted (an exact channel C{news} and a prefix C{news} share one), so the publisher sees
    one C{SUBSCRIBE} per topic, and ZeroMQ hands a message in once however many of the
    socket's topics match it.
  - Command socket (C{command_spec}): ZRPC on a ROUTER socket, as in Pushpin (REQ and
    DEALER peers both work); the protocol is L{pushpin_tx.zeromq.command.CommandHandler}.
  - Stats (C{stats_spec}): an XPUB socket lent to a L{StatsPublisher}. To its subscribers
    it is a PUB socket (the same frames, the same prefix filter, dropping at the
    high-water mark); the XPUB side reports what they subscribed to (a topic's first
    subscription and its last unsubscription, a subscriber leaving included), which the
    publisher is told (L{StatsPublisher.set_interest}) so that it builds no packet nobody
    can receive. A new subscriber gets packets from the reactor turn that reads its
    subscription on, as a PUB subscriber gets them from some moment after it subscribed.

CURVE (C{push_in_curve_secret_key}, issue 18): with a L{CurveConfig}, the ZAP handler is
bound first, then every bound socket is a CURVE server and only listed client keys get in
(L{pushpin_tx.zeromq.curve}). A connected SUB socket stays plain, with a warning.

C{message_rate}/C{message_hwm} are not applied here: in Pushpin they limit deliveries
per route inside the handler, not inputs. L{ZmqReader.pause} is the hook for input
flood control. The PULL reader is a producer of the intake's backpressure: while the
proxy's waiting deliveries are over their bound it is not read, and a PUSH peer blocks at
the high-water mark (nothing is dropped). The SUB input keeps being read: a PUB peer drops
at its high-water mark, so pausing would lose messages where nobody counts them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import zmq
from twisted.application import service
from twisted.logger import Logger

from pushpin_tx.core.prefix_index import PrefixIndex
from pushpin_tx.net.listening import ListenError, reason
from pushpin_tx.protocol.items import ItemError, parse_zmq_item
from pushpin_tx.zeromq.command import CommandHandler
from pushpin_tx.zeromq.curve import CurveConfig, ZapHandler
from pushpin_tx.zeromq.reader import ZmqReader

if TYPE_CHECKING:
    from pushpin_tx.protocol.config import Settings
    from pushpin_tx.core.intake import PublishIntake
    from pushpin_tx.core.router import InterestSource
    from pushpin_tx.core.stats_feed import StatsPublisher

__all__ = ["ZmqInputService", "describe_item_error"]

#: Receive high-water mark of the publish inputs (Pushpin's DEFAULT_HWM).
INPUT_HWM = 101000
#: Receive high-water mark of the command socket (Pushpin's zrpc IN_HWM).
COMMAND_HWM = 100
#: Send high-water mark of the stats socket (Pushpin's stats OUT_HWM: PUB drops beyond it).
STATS_HWM = 200000

_DECODE_ERROR = "received message with invalid format ("


def describe_item_error(error: ItemError) -> str:
    """Pushpin's warning text for a rejected item frame, without the C{IN pull: } prefix."""
    reason = str(error)
    if reason.startswith(_DECODE_ERROR):
        return f"{reason}, skipping"
    return f"received message with invalid format: {reason}, skipping"


class ZmqInputService(service.Service):
    """
    Owns the ZeroMQ context and sockets; publishes what arrives through the intake.

    @param interest: what the SUB socket subscribes to: the process's subscriptions
        (L{pushpin_tx.core.linger.Subscriptions}) or, with workers, their shared union.
    @param is_connected: C{conncheck}: whether a connection id is still connected.
    @param recover: C{recover}: what C{POST /recover/} does.
    @param refresh: C{refresh(cid=None, channel=None)}; see L{CommandHandler}.
    @param stats: a L{StatsPublisher} to lend the stats socket to (when C{stats_spec} is set).
    @param context: a context to borrow instead of owning one (tests with C{inproc://});
        a borrowed context is not terminated on stop.
    @param curve: CURVE security for the bound sockets (C{None}: plain, as Pushpin).
    @ivar endpoints: the bound (or connected) endpoints by name: C{publish-pull},
        C{publish-sub} (a list), C{command}, C{stats}.
    """

    name = "zmq-inputs"
    _log = Logger()

    def __init__(self, settings: "Settings", reactor: Any, intake: "PublishIntake", interest: "InterestSource", *,
                 is_connected: Callable[[str], bool], recover: Callable[[], None],
                 refresh: Callable[..., Any], stats: "StatsPublisher | None" = None,
                 context: zmq.Context | None = None, curve: CurveConfig | None = None) -> None:
        self._settings = settings
        self._curve = curve
        self._zap: ZapHandler | None = None
        self._reactor = reactor
        self._intake = intake
        self._interest = interest
        self._stats = stats
        self._borrowed = context
        self._ctx: zmq.Context | None = None
        self._pull: ZmqReader | None = None
        self._sub: ZmqReader | None = None
        self._command: ZmqReader | None = None
        self._pub: zmq.Socket | None = None
        self._pub_reader: ZmqReader | None = None
        #: the stats socket's subscribed prefixes (as the XPUB reports them)
        self._stats_topics: set[bytes] = set()
        self._sockets: list[zmq.Socket] = []
        self._sub_channels: set[str] = set()
        #: subscribed prefixes
        self._sub_prefixes: PrefixIndex[str, None] = PrefixIndex()
        #: topic bytes -> how many of our subscriptions (channels and prefixes) use it
        self._topics: dict[bytes, int] = {}
        self._listening = False
        self.endpoints: dict[str, Any] = {}
        self.commands = CommandHandler(
            intake,
            is_connected=is_connected,
            recover=recover,
            refresh=refresh,
            uris=self._uris,
        )

    # --- service lifecycle -------------------------------------------------------------------

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._open()

    def startService(self) -> None:
        super().startService()
        self._open()
        if self._sub is not None and not self._listening:
            self._listening = True
            self._interest.add_interest_listener(self)
            for channel in list(self._interest.channels()):
                self.channel_added(channel)
            for prefix in list(getattr(self._interest, "prefixes", tuple)()):
                self.prefix_added(prefix)
        for reader in (self._zap.reader if self._zap else None, self._pull, self._sub, self._command, self._pub_reader):
            if reader is not None:
                reader.start()
        if self._stats is not None and self._pub is not None:
            self._stats.start()

    def stopService(self) -> None:
        super().stopService()
        self._close()

    # --- subscriptions' interest (SUB input) ---------------------------------------------------

    def channel_added(self, channel: str) -> None:
        """C{channel}'s subscription started (its first subscriber): subscribe the SUB socket."""
        reader = self._sub
        if reader is None or reader.stopped or channel in self._sub_channels:
            return
        self._sub_channels.add(channel)
        self._subscribe(reader, channel.encode("utf-8"))

    def channel_removed(self, channel: str) -> None:
        """C{channel}'s subscription ended (its linger included): unsubscribe the SUB socket."""
        reader = self._sub
        if reader is None or reader.stopped or channel not in self._sub_channels:
            return
        self._sub_channels.discard(channel)
        self._unsubscribe(reader, channel.encode("utf-8"))

    def prefix_added(self, prefix: str) -> None:
        """A prefix subscription started: subscribe the SUB socket to the bare prefix bytes."""
        reader = self._sub
        if reader is None or reader.stopped or not self._sub_prefixes.add(prefix, None):
            return
        self._subscribe(reader, prefix.encode("utf-8"))

    def prefix_removed(self, prefix: str) -> None:
        """A prefix subscription ended (its linger included): unsubscribe its topic."""
        reader = self._sub
        if reader is None or reader.stopped or not self._sub_prefixes.remove(prefix):
            return
        self._unsubscribe(reader, prefix.encode("utf-8"))

    def _subscribe(self, reader: ZmqReader, topic: bytes) -> None:
        count = self._topics.get(topic, 0)
        self._topics[topic] = count + 1
        if not count:
            reader.socket.setsockopt(zmq.SUBSCRIBE, topic)
            reader.poke()

    def _unsubscribe(self, reader: ZmqReader, topic: bytes) -> None:
        count = self._topics.get(topic, 0) - 1
        if count > 0:
            self._topics[topic] = count
            return
        self._topics.pop(topic, None)
        reader.socket.setsockopt(zmq.UNSUBSCRIBE, topic)
        reader.poke()

    def _wanted(self, channel: str) -> bool:
        """Whether a SUB message's channel is one we subscribed, exactly or under a prefix."""
        return channel in self._sub_channels or self._sub_prefixes.matches(channel)

    @property
    def pull_reader(self) -> ZmqReader | None:
        """The PULL input's reader (pause/resume it for flood control)."""
        return self._pull

    @property
    def sub_reader(self) -> ZmqReader | None:
        return self._sub

    # --- frames ------------------------------------------------------------------------------

    def _on_pull(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self._log.warn("IN pull: received message with parts != 1, skipping")
            return
        try:
            item = parse_zmq_item(frames[0])
        except ItemError as e:
            self._log.warn("IN pull: {reason}", reason=describe_item_error(e))
            return
        self._intake.publish([item], "zmq-pull")

    def _on_sub(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._log.warn("IN sub: received message with parts != 2, skipping")
            return
        channel = frames[0].decode("utf-8", "replace")
        if not self._wanted(channel):
            # a longer name under one of our exact topics, or a late one after unsubscribing
            self._log.debug("IN sub: no subscription for channel={channel}, skipping", channel=channel)
            return
        try:
            item = parse_zmq_item(frames[1], channel=channel)
        except ItemError as e:
            self._log.warn("IN sub: {reason}", reason=describe_item_error(e))
            return
        self._intake.publish([item], "zmq-sub")

    def _on_command(self, frames: list[bytes]) -> None:
        self.commands.handle(frames, self._reply)

    def _reply(self, frames: list[bytes]) -> None:
        reader = self._command
        if reader is None or reader.stopped:
            return
        try:
            reader.socket.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as e:  # Again: the peer's queue is full; a ROUTER drops unroutable replies
            self._log.warn("zrpc server: reply dropped: {why}", why=e)
        reader.poke()  # rule 3: the send may have consumed the readable edge

    def _uris(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if "command" in self.endpoints:
            out["command"] = self.endpoints["command"]
        if "publish-pull" in self.endpoints:
            out["publish-pull"] = self.endpoints["publish-pull"]
        subs = self.endpoints.get("publish-sub")
        if subs and not self._settings.push_in_sub_connect:
            out["publish-sub"] = subs[0]
        return out

    # --- sockets -----------------------------------------------------------------------------

    def _open(self) -> None:
        if self._ctx is not None:
            return
        settings = self._settings
        self._ctx = self._borrowed if self._borrowed is not None else zmq.Context()
        try:
            if self._curve is not None:
                self._zap = ZapHandler(self._reactor, self._ctx, self._curve, on_socket=self._sockets.append)
                self._log.info("CURVE on for the ZeroMQ inputs: server public key {key}, {n} client keys allowed",
                               key=self._curve.public_key.decode("ascii"), n=len(self._curve.clients))
            if settings.push_in_spec:
                sock = self._socket(zmq.PULL, rcvhwm=INPUT_HWM)
                self.endpoints["publish-pull"] = self._bind(sock, settings.push_in_spec, "publish-pull")
                self._pull = ZmqReader(self._reactor, sock, self._on_pull, name="zmq-pull")
                # not read while deliveries are behind their bound: a PUSH peer then blocks
                backpressure = getattr(self._intake, "backpressure", None)
                if backpressure is not None:
                    backpressure.add_producer(self._pull)
            if settings.push_in_sub_specs:
                sock = self._socket(zmq.SUB, rcvhwm=INPUT_HWM, secure=not settings.push_in_sub_connect)
                if self._curve is not None and settings.push_in_sub_connect:
                    self._log.warn("CURVE is not applied to the publish-sub socket: push_in_sub_connect connects it out")
                self._sub = ZmqReader(self._reactor, sock, self._on_sub, name="zmq-sub")
                uris = []
                for spec in settings.push_in_sub_specs:
                    if settings.push_in_sub_connect:
                        sock.connect(spec)
                        self._log.info("publish-sub connected to {endpoint}", endpoint=spec)
                        uris.append(spec)
                    else:
                        uris.append(self._bind(sock, spec, "publish-sub"))
                self.endpoints["publish-sub"] = uris
            if settings.command_spec:
                sock = self._socket(zmq.ROUTER, rcvhwm=COMMAND_HWM)
                self.endpoints["command"] = self._bind(sock, settings.command_spec, "command")
                self._command = ZmqReader(self._reactor, sock, self._on_command, name="zmq-command")
            if settings.stats_spec and self._stats is not None:
                sock = self._pub = self._socket(zmq.XPUB, sndhwm=STATS_HWM)
                self.endpoints["stats"] = self._bind(sock, settings.stats_spec, "stats")
                self._pub_reader = ZmqReader(self._reactor, sock, self._on_stats_interest, name="stats")
                self._stats_topics.clear()
                self._stats.set_interest(self._stats_topics)  # nobody yet
                self._stats.attach(self.send_stats)
        except Exception:
            self._close()
            raise

    def _socket(self, kind: int, *, rcvhwm: int | None = None, sndhwm: int | None = None, secure: bool = True) -> zmq.Socket:
        assert self._ctx is not None
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if secure and self._curve is not None:
            self._curve.secure(sock)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        if sndhwm is not None:
            sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sockets.append(sock)  # so _close can close it even if start-up fails half-way
        return sock

    def _bind(self, sock: zmq.Socket, spec: str, name: str) -> str:
        if spec.startswith("ipc://"):
            directory = os.path.dirname(spec[len("ipc://"):])
            if directory:
                os.makedirs(directory, exist_ok=True)
        try:
            sock.bind(spec)
        except zmq.ZMQError as e:
            raise ListenError(name, spec, reason(OSError(e.errno, zmq.strerror(e.errno or 0))), verb="bind") from None
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
        bound = endpoint.decode("utf-8") if isinstance(endpoint, bytes) else str(endpoint)
        self._log.info("{name} bound to {endpoint}", name=name, endpoint=bound)
        return bound

    def send_stats(self, frame: bytes) -> None:
        """Send one stats packet on the stats socket (dropped while it is closed or full)."""
        pub = self._pub
        if pub is None:
            return
        try:
            pub.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            pass  # PUB at its high-water mark drops, as in Pushpin
        reader = self._pub_reader
        if reader is not None:
            reader.poke()  # rule 3 of the reader: the send may have consumed the edge of a subscription

    @property
    def stats_topics(self) -> frozenset[bytes]:
        """What the stats socket's subscribers are subscribed to now (as far as read)."""
        return frozenset(self._stats_topics)

    def _on_stats_interest(self, frames: list[bytes]) -> None:
        """An XPUB (un)subscription: C{\\x01topic} or C{\\x00topic}; anything else is ignored."""
        frame = frames[0] if len(frames) == 1 else b""
        kind, topic = frame[:1], frame[1:]
        if kind == b"\x01":
            self._stats_topics.add(topic)
        elif kind == b"\x00":
            self._stats_topics.discard(topic)
        else:
            return
        if self._stats is not None:
            self._stats.set_interest(self._stats_topics)

    def _close(self) -> None:
        if self._listening:
            self._listening = False
            self._interest.remove_interest_listener(self)
        if self._stats is not None:
            self._stats.stop()
        self._sub_channels.clear()
        self._sub_prefixes.clear()
        self._topics.clear()
        backpressure = getattr(self._intake, "backpressure", None)
        if self._pull is not None and backpressure is not None:
            backpressure.remove_producer(self._pull)
        for reader in (self._pull, self._sub, self._command, self._zap.reader if self._zap else None, self._pub_reader):
            if reader is not None:
                reader.stop()  # removes the reader, cancels its re-check, closes with linger 0
        self._pull = self._sub = self._command = self._pub_reader = None
        self._zap = None
        if self._pub is not None:
            self._pub.close(linger=0)
            self._pub = None
        self._stats_topics.clear()
        for sock in self._sockets:
            if not sock.closed:
                sock.close(linger=0)
        self._sockets = []
        ctx, self._ctx = self._ctx, None
        if ctx is not None and ctx is not self._borrowed:
            ctx.term()  # every socket is closed with linger 0: returns at once
        self.endpoints = {}
