# -*- test-case-name: tests.core.test_router -*-
"""
The channel router: which connections listen on which channel, and fan-out of publishes.

One router per worker process. It knows nothing about HTTP or WebSockets: a subscriber is
any object with a C{deliver(publication, channel)} method. A publish is wrapped once in a
L{Publication}, which frames each format's bytes at most once however many subscribers
there are, so fan-out hands the very same bytes object to every connection.

Interest listeners hear when a channel gains its first subscriber and loses its last one;
emptied listeners (L{ChannelRouter.add_emptied_listener}) hear which subscriber was the last
to leave. The process's subscriptions (L{pushpin_tx.core.linger.Subscriptions}) listen to
both: Pushpin lingers a channel's subscription when its last subscriber was a long-poll, and
the ZeroMQ SUB input, the backplane, the sequencer's forgetting and the first-subscription
updates follow the subscription, not the router.

Prefix (wildcard) subscriptions (L{ChannelRouter.subscribe_prefix}) take every channel whose
name starts with the prefix. They live in a dict of their own, keyed by the prefix, with a
count of prefixes per length: a publish looks up the channel name cut at each such length
(at most the name's length lookups, whatever the number of subscriptions), and only while
some prefix subscription exists, so exact-channel delivery pays one truth test. Prefix
listeners (L{ChannelRouter.add_prefix_listener}) hear a prefix's first subscriber and its
last one leaving (with who it was): the process's subscriptions turn that into prefix
interest, which the ZeroMQ SUB input and the Redis backplane subscribe upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from twisted.logger import Logger

from .prefix_index import PrefixIndex

if TYPE_CHECKING:
    from pushpin_tx.protocol.items import Item

__all__ = ["ChannelRouter", "Publication", "Subscriber", "InterestListener", "InterestSource", "PrefixListener",
           "PrefixInterestListener", "ws_frame"]


class Subscriber(Protocol):
    """What the router needs of a connection."""

    def deliver(self, publication: "Publication", channel: str) -> None:
        """Take one published item for C{channel}; must not raise."""


class InterestListener(Protocol):
    """Told when a channel gains its first subscriber or loses its last one."""

    def channel_added(self, channel: str) -> None: ...

    def channel_removed(self, channel: str) -> None: ...


class PrefixListener(Protocol):
    """Told when a channel prefix gains its first prefix subscriber or loses its last one (who is passed)."""

    def prefix_added(self, prefix: str) -> None: ...

    def prefix_emptied(self, prefix: str, last: "Subscriber") -> None: ...


class PrefixInterestListener(Protocol):
    """
    An interest listener that also follows prefix interest (the SUB input, the backplane, the
    workers' link): an interest source tells C{prefix_added}/C{prefix_removed} to the listeners
    that have them.
    """

    def prefix_added(self, prefix: str) -> None: ...

    def prefix_removed(self, prefix: str) -> None: ...


class InterestSource(Protocol):
    """
    What tells interest listeners about channels: the router, the process's subscriptions
    (L{pushpin_tx.core.linger.Subscriptions}), the workers' shared interest.
    """

    def add_interest_listener(self, listener: InterestListener) -> None: ...

    def remove_interest_listener(self, listener: InterestListener) -> None: ...

    def channels(self) -> Iterable[str]: ...


class Publication:
    """
    One published item plus the bytes each delivery format frames it into, computed on
    first use and shared by every subscriber.
    """

    __slots__ = ("item", "_chunk", "_ws_frame")

    #: the WebSocket frame opcodes a ws-message "type" maps to
    _OPCODES = {"text": 0x1, "binary": 0x2, "ping": 0x9, "pong": 0xA}

    def __init__(self, item: "Item") -> None:
        self.item = item
        self._chunk: bytes | None = None
        self._ws_frame: bytes | None = None

    @property
    def stream_content(self) -> bytes:
        """The raw C{http-stream} content (HTTP/1.0 clients get it unframed)."""
        return self.item.http_stream.content  # type: ignore[union-attr]

    @property
    def stream_chunk(self) -> bytes:
        """The C{http-stream} content framed as one HTTP/1.1 chunk."""
        chunk = self._chunk
        if chunk is None:
            content = self.item.http_stream.content  # type: ignore[union-attr]
            chunk = self._chunk = b"%x\r\n%b\r\n" % (len(content), content)
        return chunk

    @property
    def ws_frame(self) -> bytes:
        """The C{ws-message} as one unmasked server-to-client WebSocket frame."""
        frame = self._ws_frame
        if frame is None:
            fmt = self.item.ws_message
            frame = self._ws_frame = ws_frame(self._OPCODES[fmt.type], fmt.content or b"")  # type: ignore[union-attr]
        return frame


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """
    One final, unmasked WebSocket frame (RFC 6455 §5.2), as a server sends it.

    Written here rather than taken from autobahn's PreparedMessage because that class only
    frames text and binary messages, and pings and pongs are published too.
    """
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


#: what a L{plain_part} C{frame_of} returns for an item that needs handling of its own
PER_ITEM = object()


class Run(list):
    """
    Publications of one channel handed to every subscriber together (L{ChannelRouter.publish_run}).
    What subscribers derive from the run alone (L{plain_part}) is computed once for all of them.
    """

    __slots__ = ("derived",)

    def __init__(self, publications: "Iterable[Publication]") -> None:
        super().__init__(publications)
        self.derived: dict[Callable[..., Any], tuple[bytes, int, int]] = {}


def plain_part(publications: "list[Publication]", frame_of: Callable[["Publication"], Any]) -> tuple[bytes, int, int]:
    """
    The leading part of a run that a subscriber can write as one: the bytes of each item
    (C{frame_of} gives them, C{None} for an item it skips), up to the first item for which
    C{frame_of} returns L{PER_ITEM}. For a L{Run} it is worked out once per C{frame_of}, not
    once per subscriber.

    @return: those bytes joined, how many messages they are, and the index of the first item
        to deliver one by one (the length of the run when there is none).
    """
    derived = getattr(publications, "derived", None)
    if derived is not None:
        known = derived.get(frame_of)
        if known is not None:
            return known
    frames = []
    rest = len(publications)
    for index, publication in enumerate(publications):
        frame = frame_of(publication)
        if frame is PER_ITEM:
            rest = index
            break
        if frame is not None:
            frames.append(frame)
    part = (b"".join(frames), len(frames), rest)
    if derived is not None:
        derived[frame_of] = part
    return part


def _merged(subs: "dict[Subscriber, None] | None", found: "Iterable[dict[Subscriber, None]]") -> "dict[Subscriber, None]":
    """A channel's exact subscribers and those of the prefixes C{found} for it, each once (a new dict)."""
    merged = dict(subs) if subs else {}
    for prefix_subs in found:
        merged.update(prefix_subs)
    return merged


class ChannelRouter:
    """
    Channel name to subscribers, and publish fan-out.

    @ivar published: items published to a channel that had subscribers.
    @ivar published_idle: items published to a channel with nobody listening (a no-op).
    @ivar deliveries: deliver() calls made.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._channels: dict[str, dict[Subscriber, None]] = {}
        #: prefix subscriptions: prefix -> subscribers; and its entries, whose truth value is
        #: the publish path's one test when nobody subscribed a prefix
        self._prefix_index: PrefixIndex[str, dict[Subscriber, None]] = PrefixIndex()
        self._prefixes = self._prefix_index.entries
        self._listeners: list[InterestListener] = []
        self._unsubscribe_listeners: list[Callable[[str, Subscriber], None]] = []
        self._emptied_listeners: list[Callable[[str, Subscriber], None]] = []
        self._prefix_listeners: list[PrefixListener] = []
        self.published = 0
        self.published_idle = 0
        self.deliveries = 0

    def add_interest_listener(self, listener: InterestListener) -> None:
        """Tell C{listener} about channels gaining or losing all their subscribers."""
        self._listeners.append(listener)

    def remove_interest_listener(self, listener: InterestListener) -> None:
        self._listeners.remove(listener)

    def add_unsubscribe_listener(self, listener: Callable[[str, "Subscriber"], None]) -> None:
        """Call C{listener(channel, subscriber)} whenever a subscriber leaves a channel."""
        self._unsubscribe_listeners.append(listener)

    def add_emptied_listener(self, listener: Callable[[str, "Subscriber"], None]) -> None:
        """
        Call C{listener(channel, subscriber)} when C{subscriber} was the last to leave
        C{channel}, before the interest listeners hear C{channel_removed} (nothing is called
        on the unsubscribes that leave others behind).
        """
        self._emptied_listeners.append(listener)

    def add_prefix_listener(self, listener: PrefixListener) -> None:
        """Tell C{listener} about prefixes gaining their first prefix subscriber or losing their last."""
        self._prefix_listeners.append(listener)

    def channels(self) -> Iterable[str]:
        """The channels with at least one subscriber."""
        return self._channels.keys()

    def subscribers(self, channel: str) -> tuple[Subscriber, ...]:
        """A snapshot of C{channel}'s subscribers."""
        return tuple(self._channels.get(channel, ()))

    def subscriber_map(self, channel: str) -> "dict[Subscriber, None] | None":
        """C{channel}'s subscribers, live (not a copy: take a snapshot before delivering)."""
        return self._channels.get(channel)

    def subscriber_count(self, channel: str) -> int:
        """How many subscribers C{channel} has by its exact name (prefix subscriptions not counted)."""
        subs = self._channels.get(channel)
        return len(subs) if subs else 0

    def has_subscribers(self, channel: str) -> bool:
        """Whether a publish to C{channel} would reach anyone, by its exact name or by a prefix."""
        return bool(self.targets(channel))

    def prefixes(self) -> Iterable[str]:
        """The prefixes with at least one prefix subscriber."""
        return self._prefixes.keys()

    def prefix_subscriber_count(self, prefix: str) -> int:
        """How many prefix subscribers C{prefix} has (the status page and the console count them)."""
        subs = self._prefixes.get(prefix)
        return len(subs) if subs else 0

    def targets(self, channel: str) -> "dict[Subscriber, None] | None":
        """
        Everyone a publish to C{channel} reaches, each once: its exact subscribers, then those
        of every prefix of the name. Live when there is no prefix subscription (take a snapshot
        before delivering), else a new dict.
        """
        subs = self._channels.get(channel)
        if self._prefixes:
            found = self._prefix_index.matching(channel)
            if found:
                return _merged(subs, found)
        return subs

    def subscribe_prefix(self, prefix: str, subscriber: Subscriber) -> bool:
        """
        Add C{subscriber} to every channel whose name starts with C{prefix} (a non-empty
        string), now and later. It is handed each item once, with the published channel's name.

        @return: C{True} if the prefix had no subscriber before.
        """
        if not prefix:
            raise ValueError("a channel prefix must not be empty")
        subs = self._prefixes.get(prefix)
        if subs is None:
            self._prefix_index.add(prefix, {subscriber: None})
            for listener in self._prefix_listeners:
                self._call_listener(listener.prefix_added, prefix)
            return True
        subs[subscriber] = None
        return False

    def unsubscribe_prefix(self, prefix: str, subscriber: Subscriber) -> None:
        """Remove C{subscriber}'s prefix subscription; unknown pairs are ignored."""
        subs = self._prefixes.get(prefix)
        if subs is None or subscriber not in subs:
            return
        del subs[subscriber]
        if not subs:
            self._prefix_index.remove(prefix)
            for listener in self._prefix_listeners:
                try:
                    listener.prefix_emptied(prefix, subscriber)
                except Exception:
                    self._log.failure("prefix listener failed for prefix {prefix}", prefix=prefix)

    def subscribe(self, channel: str, subscriber: Subscriber) -> bool:
        """
        Add C{subscriber} to C{channel}.

        @return: C{True} if the channel had no subscriber before.
        """
        subs = self._channels.get(channel)
        if subs is None:
            self._channels[channel] = {subscriber: None}
            for listener in self._listeners:
                self._call_listener(listener.channel_added, channel)
            return True
        subs[subscriber] = None
        return False

    def unsubscribe(self, channel: str, subscriber: Subscriber) -> None:
        """Remove C{subscriber} from C{channel}; unknown pairs are ignored."""
        subs = self._channels.get(channel)
        if subs is None or subscriber not in subs:
            return
        del subs[subscriber]
        for left in self._unsubscribe_listeners:
            left(channel, subscriber)
        if not subs:
            del self._channels[channel]
            for emptied in self._emptied_listeners:
                try:
                    emptied(channel, subscriber)
                except Exception:
                    self._log.failure("emptied listener failed for channel {channel}", channel=channel)
            for listener in self._listeners:
                self._call_listener(listener.channel_removed, channel)

    def publish(self, item: "Item") -> int:
        """
        Hand C{item} to every subscriber of its channel, now.

        @return: the number of subscribers it was handed to.
        """
        channel = item.channel
        subs = self._channels.get(channel)
        if self._prefixes:
            found = self._prefix_index.matching(channel)
            if found:
                subs = _merged(subs, found)
        if not subs:
            self.published_idle += 1
            return 0
        self.published += 1
        publication = Publication(item)
        # A snapshot: a delivery may end a long-poll, which unsubscribes it mid-loop.
        targets = tuple(subs)
        for sub in targets:
            try:
                sub.deliver(publication, channel)
            except Exception:
                self._delivery_failed(sub, channel)
        self.deliveries += len(targets)
        return len(targets)

    def publish_run(self, items: "list[Item]") -> int:
        """
        Hand several items of one channel, in order, to every subscriber of the channel: a
        subscriber with C{deliver_run} gets them in one call (a stream writes them in one
        send), any other one item by item. Each item is framed once, as in L{publish}.

        @return: the number of subscribers (each got every item).
        """
        channel = items[0].channel
        subs = self._channels.get(channel)
        if self._prefixes:
            found = self._prefix_index.matching(channel)
            if found:
                subs = _merged(subs, found)
        if not subs:
            self.published_idle += len(items)
            return 0
        self.published += len(items)
        publications = Run(Publication(item) for item in items)
        targets = tuple(subs)
        for sub in targets:
            try:
                run = getattr(sub, "deliver_run", None)
                if run is not None:
                    run(publications, channel)
                else:
                    for publication in publications:
                        sub.deliver(publication, channel)
            except Exception:
                self._delivery_failed(sub, channel)
        self.deliveries += len(targets) * len(items)
        return len(targets)

    def _delivery_failed(self, sub: Subscriber, channel: str) -> None:
        """A subscriber raised: log it with the traceback (called from an except block); the others still get theirs."""
        self._log.failure("delivery to {subscriber!r} on channel {channel} failed", subscriber=sub, channel=channel)

    def _call_listener(self, method: Callable[[str], None], channel: str) -> None:
        try:
            method(channel)
        except Exception:
            self._log.failure("interest listener failed for channel {channel}", channel=channel)
