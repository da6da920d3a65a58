# -*- test-case-name: tests.core.test_sequencing -*-
"""
Reliable delivery's publish-side core: per-channel last ids, the id cache and the sequencer.

Publishers that number their items (C{id}, C{prev-id}, reference §6.1, §7) may send them out of
order (several publisher processes, several ZMQ paths). Pushpin 1.36 puts each published item
through its handler's C{Sequencer} (C{src/handler/sequencer.cpp}) before fan-out:

  1. the id cache drops an item whose (channel, id) was seen within C{id_cache_ttl} seconds;
  2. on a channel somebody listens to, an item whose C{prev-id} is not the channel's last
     delivered id is parked until its predecessor arrives, or for C{message_wait} at most;
  3. delivering an item records its id as the channel's last id (L{LastIds}, Pushpin's
     C{PublishLastIds}), which held connections also consult (§5.3, §5.4).

Everything here is sans-I/O: the sequencer is driven by an injected C{IReactorTime} (a
C{twisted.internet.task.Clock} in tests) and hands items on through a callable. Exactly
Pushpin's rules, step by step (its source where the reference is vague):

  - The id cache is consulted for I{every} item, before sequencing, also for C{no-seq} items
    and channels nobody listens to. An item without id is never cached. A new id is recorded
    when first seen, even if sequencing then drops the item; a duplicate does not extend the
    entry. An entry expires exactly C{ttl} seconds after it was recorded.
  - Sequencing happens only when the item is not C{no-seq} and the channel has listeners
    (Pushpin's C{seq} flag). Otherwise the item is delivered at once and the last id is
    I{not} touched: "items without id clear the last id" holds only on the sequenced path.
  - Sequenced: the item is parked when a last id is known, the item has a prev-id and they
    differ. Parking is keyed by prev-id: a second item waiting for the same prev-id is
    dropped, as is any item beyond C{max_parked_per_channel} (100) waiting on the channel.
  - Delivering a sequenced item sets the last id to its id (or forgets it when the item has
    none), hands it on, then flushes the parked chain: the item parked on that id, then the
    one parked on I{its} id, and so on. Each parked item leaves the table before it is handed
    on, so a prev-id loop (A after B, B after A) ends: every item goes out once.
  - One sweep every second (one C{LoopingCall} for all channels, running only while
    something is parked) releases, oldest first, every item parked for C{wait} seconds or
    more, as if its predecessor had come: last id set, item delivered, successors flushed.
    An item therefore waits between C{wait} and C{wait + 1} seconds.
  - C{/recover/} (L{Sequencer.clear}) forgets every last id and nothing else: parked items
    stay parked and still go out at their deadline or when their predecessor arrives.
  - When a channel's subscription ends (L{Sequencer.forget_channel}) its parked items are
    discarded, not delivered, and its last id forgotten. That is Pushpin's C{removeSub}: at
    once when the last subscriber to leave was a stream or a WebSocket, C{subscription_linger}
    seconds later when it was a long-poll (L{pushpin_tx.core.linger.Subscriptions}, whose
    interest listener the sequencer is: L{Sequencer.channel_removed}). While a channel
    lingers it is still sequenced, and its last id still moves.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Iterable

from twisted.internet.task import LoopingCall

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from pushpin_tx.protocol.items import Item

__all__ = [
    "DROP_DUPLICATE_ID",
    "DROP_DUPLICATE_PREV_ID",
    "DROP_PARKING_FULL",
    "DROP_STOPPED",
    "DROP_UNSUBSCRIBED",
    "IdCache",
    "LastIds",
    "Sequencer",
]

DEFAULT_LAST_IDS_MAX = 1_000_000  # Pushpin: CommonState's PublishLastIds(1000000)
DEFAULT_ID_CACHE_MAX = 1_000_000  # ours: Pushpin's id cache is bounded only by its TTL
SWEEP_INTERVAL = 1.0  # Pushpin: EXPIRE_INTERVAL 1000 ms

# on_drop reasons
DROP_DUPLICATE_ID = "duplicate-id"  # id cache: (channel, id) seen within the TTL
DROP_DUPLICATE_PREV_ID = "duplicate-prev-id"  # another item already waits for that prev-id
DROP_PARKING_FULL = "parking-full"  # max_parked_per_channel items already wait on the channel
DROP_UNSUBSCRIBED = "unsubscribed"  # parked when the channel lost its last subscriber
DROP_STOPPED = "stopped"  # parked when the sequencer was stopped


class LastIds:
    """
    The id of the last item delivered on each channel, for channels that have subscribers.

    The caller forgets a channel when its last subscriber leaves (through
    L{Sequencer.forget_channel}, which also discards what is parked there). At most
    C{max_channels} channels are kept; setting a new channel beyond that evicts the channel
    I{set} longest ago. As in Pushpin's C{PublishLastIds}, recency is refreshed by L{set}
    only, not by L{get}.
    """

    __slots__ = ("_ids", "max_channels")

    def __init__(self, max_channels: int = DEFAULT_LAST_IDS_MAX) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.max_channels = max_channels
        # OrderedDict, not dict: popitem(last=False) is O(1), while taking the first key of a
        # plain dict after many deletions from its front scans the holes they leave.
        self._ids: OrderedDict[str, str] = OrderedDict()

    def get(self, channel: str) -> str | None:
        """The last delivered id on C{channel}, or C{None} when unknown."""
        return self._ids.get(channel)

    def set(self, channel: str, id: str | None) -> None:
        """Record C{id} as C{channel}'s last id; C{None} forgets the channel (an id-less item)."""
        ids = self._ids
        if id is None:
            ids.pop(channel, None)
            return
        if channel in ids:
            ids.move_to_end(channel)
        else:
            while len(ids) >= self.max_channels:
                ids.popitem(last=False)
        ids[channel] = id

    def items(self) -> list[tuple[str, str]]:
        """Every (channel, last id), the channel set longest ago first (for a new worker process)."""
        return list(self._ids.items())

    def forget(self, channel: str) -> None:
        """Drop C{channel}'s last id (its last subscriber left, or a held stream saw a conflict)."""
        self._ids.pop(channel, None)

    def clear(self) -> None:
        """Forget every channel (C{/recover/})."""
        self._ids.clear()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, channel: object) -> bool:
        return channel in self._ids


class IdCache:
    """
    De-duplication by (channel, id) for C{id_cache_ttl} seconds (§7); a TTL of 0 or less is off.

    No timer per entry: entries are kept in the order they were recorded, which is the order
    they expire in, and expired ones are swept from the front on every L{seen} call (as
    Pushpin does on every publish) or by L{sweep}. Memory is bounded by C{max_entries}: past
    that the oldest entries are evicted early (Pushpin has no such bound), so under that much
    load a duplicate older than the newest C{max_entries} ids is no longer caught.
    """

    __slots__ = ("_expires", "max_entries", "ttl")

    def __init__(self, ttl: float, max_entries: int = DEFAULT_ID_CACHE_MAX) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._expires: OrderedDict[tuple[str, str], float] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Whether a TTL is set."""
        return self.ttl > 0

    def seen(self, channel: str, id: str | None, now: float) -> bool:
        """
        Whether C{id} on C{channel} was already seen within the TTL (C{True}: drop the item).

        A first sighting is recorded. An item without id is never a duplicate.
        """
        self.sweep(now)
        if id is None or self.ttl <= 0:
            return False
        key = (channel, id)
        expires = self._expires
        expiry = expires.get(key)
        if expiry is not None:
            if expiry > now:
                return True
            # Expired but not yet swept: only when the clock went backwards meanwhile.
            del expires[key]
        while len(expires) >= self.max_entries:
            expires.popitem(last=False)
        expires[key] = now + self.ttl
        return False

    def sweep(self, now: float) -> None:
        """Drop the entries expired at C{now} (those recorded C{ttl} or more seconds ago)."""
        expires = self._expires
        while expires:
            key, expiry = next(iter(expires.items()))
            if expiry > now:
                break
            del expires[key]

    def clear(self) -> None:
        """Forget every id (not done by C{/recover/}, which keeps the cache, as Pushpin does)."""
        self._expires.clear()

    def __len__(self) -> int:
        return len(self._expires)


class _Parked:
    """One item waiting for its predecessor, and when it was parked."""

    __slots__ = ("item", "since")

    def __init__(self, item: "Item", since: float) -> None:
        self.item = item
        self.since = since


class Sequencer:
    """
    Prev-id ordering of published items (§7 "Sequencing"), on an injected clock.

    C{deliver} receives each item once, in sequence; C{on_drop(item, reason)} hears of each
    item that will never be delivered (reasons are the C{DROP_*} constants). C{has_listeners}
    says whether a channel is subscribed: in Pushpin (C{cs.subs}) that stays true while a
    long-poll's subscription lingers after it was answered. C{deliver} and C{on_drop} must
    not raise; C{deliver} may re-enter L{forget_channel} (a stream answered by the item
    leaves its channel) or L{submit}.

    @ivar delivered: items handed to C{deliver}, on every path.
    @ivar bypassed: of those, items not sequenced (C{no-seq}, or nobody listening).
    @ivar parked: items parked to wait for their predecessor.
    @ivar flushed: parked items delivered because their predecessor arrived.
    @ivar released_by_timeout: parked items delivered because they waited C{wait} seconds.
    @ivar duplicates_dropped: items dropped by the id cache.
    @ivar duplicate_prev_id_dropped: items dropped because another waited for the same prev-id.
    @ivar parking_full_dropped: items dropped because the channel had the maximum parked.
    @ivar discarded: parked items thrown away by L{forget_channel} or L{stop}.
    """

    def __init__(
        self,
        clock: "IReactorTime",
        last_ids: LastIds,
        deliver: Callable[["Item"], None],
        *,
        wait: float = 5.0,
        max_parked_per_channel: int = 100,
        on_drop: Callable[["Item", str], None],
        has_listeners: Callable[[str], bool],
        id_cache: IdCache | None = None,
        log: "Logger | None" = None,
    ) -> None:
        """
        @param wait: seconds a parked item waits at most (C{message_wait} / 1000).
        @param id_cache: the C{id_cache_ttl} de-duplication, consulted first; C{None}: off.
        @param log: where a failure that stops the sweep timer is logged.
        """
        self._clock = clock
        self.last_ids = last_ids
        self.id_cache = id_cache
        self._deliver = deliver
        self._on_drop = on_drop
        self._has_listeners = has_listeners
        self.wait = wait
        self.max_parked_per_channel = max_parked_per_channel
        self._log = log
        # channel -> prev-id -> parked item; a channel is present only while it has some.
        self._by_channel: dict[str, dict[str, _Parked]] = {}
        # Every parked item in parking order, which (on a monotonic clock) is deadline order,
        # so the sweep stops at the first item that may still wait.
        self._by_time: OrderedDict[_Parked, None] = OrderedDict()
        self._loop: LoopingCall | None = None
        self.delivered = 0
        self.bypassed = 0
        self.parked = 0
        self.flushed = 0
        self.released_by_timeout = 0
        self.duplicates_dropped = 0
        self.duplicate_prev_id_dropped = 0
        self.parking_full_dropped = 0
        self.discarded = 0

    @property
    def pending(self) -> int:
        """Items parked right now."""
        return len(self._by_time)

    def pending_for(self, channel: str) -> int:
        """Items parked right now on C{channel}."""
        return len(self._by_channel.get(channel, ()))

    def submit(self, item: "Item") -> None:
        """Take one published item: drop it, deliver it (and any successors it unblocks) or park it."""
        now = self._clock.seconds()
        cache = self.id_cache
        if cache is not None and cache.seen(item.channel, item.id, now):
            self.duplicates_dropped += 1
            self._on_drop(item, DROP_DUPLICATE_ID)
            return
        channel = item.channel
        if item.no_seq or not self._has_listeners(channel):
            self.bypassed += 1
            self.delivered += 1
            self._deliver(item)
            return
        last_id = self.last_ids.get(channel)
        prev_id = item.prev_id
        if last_id is None or prev_id is None or last_id == prev_id:
            self._send(item)
            return
        waiting = self._by_channel.get(channel)
        if waiting is None:
            waiting = self._by_channel[channel] = {}
        if prev_id in waiting:
            self.duplicate_prev_id_dropped += 1
            self._on_drop(item, DROP_DUPLICATE_PREV_ID)
        elif len(waiting) >= self.max_parked_per_channel:
            self.parking_full_dropped += 1
            self._on_drop(item, DROP_PARKING_FULL)
        else:
            parked = _Parked(item, now)
            waiting[prev_id] = parked
            self._by_time[parked] = None
            self.parked += 1
            self._start_sweeping()
        if not waiting:  # only when max_parked_per_channel < 1
            self._by_channel.pop(channel, None)

    def sequenced_elsewhere(self, item: "Item", deliver: Callable[["Item"], None]) -> None:
        """
        An item another instance sequenced reached us (the Redis backplane,
        L{pushpin_tx.backplane.redis}): unless it is C{no-seq}, its id becomes the channel's
        last id (as L{_send} does, before the delivery), C{deliver} hands it to our
        subscribers, and an item parked here waiting for it goes out (through our own
        C{deliver}, then its successors) instead of waiting C{wait} seconds. Neither the id
        cache nor the counters see it: it was sequenced and counted where it was published.
        """
        if item.no_seq:
            deliver(item)
            return
        channel = item.channel
        self.last_ids.set(channel, item.id)
        deliver(item)
        waiting = self._by_channel.get(channel)
        if item.id is None or not waiting:
            return
        parked = waiting.pop(item.id, None)
        if parked is None:
            return
        if not waiting:
            del self._by_channel[channel]
        del self._by_time[parked]
        self.flushed += 1
        self._send(parked.item)

    def forget_channel(self, channel: str) -> None:
        """
        The channel's subscription ended: discard what is parked there (reported to
        C{on_drop} as L{DROP_UNSUBSCRIBED}) and forget its last id, as Pushpin's C{removeSub}.
        """
        waiting = self._by_channel.pop(channel, None)
        self.last_ids.forget(channel)
        if waiting:
            for parked in waiting.values():
                del self._by_time[parked]
            self._stop_sweeping_if_idle()
            self._discard(waiting.values(), DROP_UNSUBSCRIBED)

    # an interest listener of the subscriptions (pushpin_tx.core.linger.Subscriptions)

    def channel_added(self, channel: str) -> None:
        """A channel's subscription started: nothing to do (it is sequenced from now on)."""

    def channel_removed(self, channel: str) -> None:
        """A channel's subscription ended (its linger included): L{forget_channel}."""
        self.forget_channel(channel)

    def clear(self) -> None:
        """
        C{/recover/}: forget every last id. Parked items are kept, as Pushpin keeps them: with
        no last id the next item on a channel goes straight out and unblocks its successors;
        the rest still leave at their deadline.
        """
        self.last_ids.clear()

    def stop(self) -> None:
        """Cancel the sweep timer, discarding what is parked (reported as L{DROP_STOPPED})."""
        everything = list(self._by_time)
        self._by_channel.clear()
        self._by_time.clear()
        self._stop_sweeping_if_idle()
        self._discard(everything, DROP_STOPPED)

    def sweep(self) -> None:
        """Release every item parked for C{wait} seconds or more (the 1 s timer calls this)."""
        threshold = self._clock.seconds() - self.wait
        by_time = self._by_time
        while by_time:
            parked = next(iter(by_time))
            if parked.since > threshold:
                break
            del by_time[parked]
            item = parked.item
            channel = item.channel
            waiting = self._by_channel[channel]
            del waiting[item.prev_id]  # type: ignore[arg-type]  # parked items have a prev-id
            if not waiting:
                del self._by_channel[channel]
            self.released_by_timeout += 1
            self._send(item)
        self._stop_sweeping_if_idle()

    # --- internals --------------------------------------------------------------------------

    def _send(self, item: "Item") -> None:
        """Deliver a sequenced item, then every parked item it unblocks, in chain order."""
        channel = item.channel
        last_ids = self.last_ids
        by_time = self._by_time
        while True:
            # Pushpin's order: the last id first, so that a delivery which ends the channel's
            # last subscription (forget_channel) leaves no last id behind.
            last_ids.set(channel, item.id)
            self.delivered += 1
            self._deliver(item)
            # Look the table up again each turn: the delivery may have changed it.
            waiting = self._by_channel.get(channel)
            if item.id is None or not waiting:
                break
            parked = waiting.pop(item.id, None)
            if parked is None:
                break
            if not waiting:
                del self._by_channel[channel]
            del by_time[parked]
            self.flushed += 1
            item = parked.item
        self._stop_sweeping_if_idle()

    def _discard(self, parked: Iterable[_Parked], reason: str) -> None:
        for entry in list(parked):
            self.discarded += 1
            self._on_drop(entry.item, reason)

    def _start_sweeping(self) -> None:
        if self._loop is not None:
            return
        loop = self._loop = LoopingCall(self.sweep)
        loop.clock = self._clock
        loop.start(SWEEP_INTERVAL, now=False).addErrback(self._sweep_failed, loop)

    def _stop_sweeping_if_idle(self) -> None:
        loop = self._loop
        if loop is not None and not self._by_time:
            self._loop = None
            if loop.running:
                loop.stop()

    def _sweep_failed(self, failure: "Failure", loop: LoopingCall) -> "Failure | None":
        # A raising deliver stopped the timer. The item it was delivering had already left the
        # tables, so start a fresh timer for the others. Without a logger the failure is left
        # unhandled, so Twisted still reports it.
        if self._loop is loop:
            self._loop = None
            if self._by_time:
                self._start_sweeping()
        if self._log is None:
            return failure
        self._log.failure("sequencer sweep failed", failure)
        return None
