"""
Tests for L{pushpin_tx.core.sequencing}: last ids, the id cache and prev-id sequencing on a Clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pushpin_tx.protocol.items import HttpStreamFormat, Item
from pushpin_tx.core.sequencing import (
    DROP_DUPLICATE_ID,
    DROP_DUPLICATE_PREV_ID,
    DROP_PARKING_FULL,
    DROP_STOPPED,
    DROP_UNSUBSCRIBED,
    IdCache,
    LastIds,
    Sequencer,
)


def make_item(id: str | None, prev_id: str | None = None, channel: str = "c", no_seq: bool = False) -> Item:
    """An http-stream item whose content names its id, so deliveries are easy to read."""
    content = f"{channel}:{id}".encode()
    return Item(
        channel=channel,
        id=id,
        prev_id=prev_id,
        meta={},
        size=None,
        no_seq=no_seq,
        http_response=None,
        http_stream=HttpStreamFormat(action="send", content=content, content_filters=None),
        ws_message=None,
    )


class Harness:
    """A sequencer on a Clock, recording deliveries and drops; every channel listened to by default."""

    def __init__(self, clock: Clock, *, listeners: set[str] | None = None, id_cache: IdCache | None = None, **kw) -> None:
        self.clock = clock
        self.last_ids = LastIds()
        self.delivered: list[Item] = []
        self.drops: list[tuple[Item, str]] = []
        self.listeners = listeners
        self.seq = Sequencer(
            clock,
            self.last_ids,
            self.delivered.append,
            on_drop=lambda item, reason: self.drops.append((item, reason)),
            has_listeners=lambda channel: self.listeners is None or channel in self.listeners,
            id_cache=id_cache,
            **kw,
        )

    def submit(self, id: str | None, prev_id: str | None = None, **kw) -> None:
        self.seq.submit(make_item(id, prev_id, **kw))

    @property
    def ids(self) -> list[str | None]:
        return [item.id for item in self.delivered]

    @property
    def drop_log(self) -> list[tuple[str | None, str]]:
        return [(item.id, reason) for item, reason in self.drops]

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """Advance the clock in steps, as real time would pass."""
        while seconds > 1e-9:
            d = min(step, seconds)
            self.clock.advance(d)
            seconds -= d


# --- LastIds ---------------------------------------------------------------------------------


def test_last_ids_set_get_forget_clear():
    """A channel's last id is remembered until forgotten, replaced, set to None or cleared."""
    ids = LastIds()
    assert ids.get("a") is None
    ids.set("a", "1")
    ids.set("b", "7")
    ids.set("a", "2")
    assert (ids.get("a"), ids.get("b"), len(ids)) == ("2", "7", 2)
    ids.set("a", None)
    assert ids.get("a") is None and "a" not in ids
    ids.forget("b")
    ids.forget("never-set")
    assert len(ids) == 0
    ids.set("c", "1")
    ids.clear()
    assert ids.get("c") is None and len(ids) == 0


def test_last_ids_evicts_the_channel_set_longest_ago():
    """Past the limit the channel set longest ago goes; reading does not keep a channel, setting does."""
    ids = LastIds(max_channels=3)
    for channel in ("a", "b", "c"):
        ids.set(channel, "1")
    assert ids.get("a") == "1"  # a read: not a use, as in Pushpin's PublishLastIds
    ids.set("b", "2")  # a set: b is now the most recent
    ids.set("d", "1")
    assert [ch for ch in "abcd" if ch in ids] == ["b", "c", "d"]
    ids.set("e", "1")
    assert [ch for ch in "abcde" if ch in ids] == ["b", "d", "e"]


def test_last_ids_default_limit_is_pushpins():
    """The default bound is Pushpin's: one million channels."""
    assert LastIds().max_channels == 1_000_000


@pytest.mark.parametrize(
    "limit, channels",
    [(10_000, 1_000_000), (None, 1_001_000)],
    ids=["limit-10000", "default-limit"],
)
def test_last_ids_one_million_channels_stay_bounded(limit, channels):
    """Setting a million or more distinct channels keeps only the newest `max_channels` of them."""
    ids = LastIds() if limit is None else LastIds(max_channels=limit)
    kept = ids.max_channels
    for n in range(channels):
        ids.set(f"channel-{n}", str(n))
    assert len(ids) == kept
    assert f"channel-{channels - kept - 1}" not in ids
    assert ids.get(f"channel-{channels - kept}") == str(channels - kept)
    assert ids.get(f"channel-{channels - 1}") == str(channels - 1)


def test_last_ids_rejects_a_zero_limit():
    """A limit below one channel is a configuration error."""
    with pytest.raises(ValueError):
        LastIds(max_channels=0)


# --- IdCache ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "later, duplicate",
    [(0.0, True), (59.999, True), (60.0, False), (61.0, False)],
)
def test_id_cache_ttl(later, duplicate):
    """The same (channel, id) within the TTL is a duplicate; from exactly TTL seconds on it is new."""
    cache = IdCache(ttl=60)
    assert cache.seen("c", "1", 100.0) is False
    assert cache.seen("c", "1", 100.0 + later) is duplicate


def test_id_cache_duplicates_do_not_extend_the_entry():
    """A duplicate does not renew the entry: it still expires TTL seconds after the first sighting."""
    cache = IdCache(ttl=10)
    cache.seen("c", "1", 0.0)
    assert cache.seen("c", "1", 9.0) is True
    assert cache.seen("c", "1", 10.0) is False


def test_id_cache_keys_on_channel_and_id_and_ignores_missing_ids():
    """Another channel with the same id is not a duplicate; an item without id never is."""
    cache = IdCache(ttl=10)
    assert cache.seen("a", "1", 0.0) is False
    assert cache.seen("b", "1", 0.0) is False
    assert cache.seen("a", None, 0.0) is False
    assert cache.seen("a", None, 0.0) is False
    assert len(cache) == 2


@pytest.mark.parametrize("ttl", [0, -1])
def test_id_cache_off(ttl):
    """A TTL of zero (Pushpin's default) or less turns de-duplication off and stores nothing."""
    cache = IdCache(ttl=ttl)
    assert not cache.enabled
    assert [cache.seen("c", "1", 0.0) for _ in range(3)] == [False, False, False]
    assert len(cache) == 0


def test_id_cache_sweeps_expired_entries_on_access_and_on_demand():
    """Expired entries are swept when the cache is next used, or by sweep(), without timers."""
    cache = IdCache(ttl=5)
    for n in range(10):
        cache.seen("c", str(n), n * 0.5)  # entry n expires at n / 2 + 5
    assert len(cache) == 10
    cache.seen("c", None, 6.0)  # an access sweeps entries 0..2
    assert len(cache) == 7
    cache.sweep(100.0)
    assert len(cache) == 0


def test_id_cache_memory_is_bounded():
    """Past max_entries the oldest ids are evicted early, so memory stays bounded."""
    cache = IdCache(ttl=3600, max_entries=3)
    for n in range(10):
        cache.seen("c", str(n), 0.0)
    assert len(cache) == 3
    assert cache.seen("c", "9", 1.0) is True
    assert cache.seen("c", "0", 1.0) is False  # evicted, so no longer caught


# --- Sequencer -------------------------------------------------------------------------------


def test_in_order_items_pass_straight_through(clock):
    """Items whose prev-id is the last delivered id go out at once, in order, and nothing is parked."""
    h = Harness(clock)
    h.submit("1")
    for n in range(2, 6):
        h.submit(str(n), str(n - 1))
    assert h.ids == ["1", "2", "3", "4", "5"]
    assert h.last_ids.get("c") == "5"
    assert (h.seq.parked, h.seq.pending) == (0, 0)
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "known_last_id, prev_id",
    [(None, "41"), ("41", None), ("41", "41")],
    ids=["no-last-id", "no-prev-id", "prev-id-matches"],
)
def test_items_that_cannot_be_out_of_order_are_delivered(clock, known_last_id, prev_id):
    """Without a known last id, without a prev-id, or with a matching one, an item is delivered now."""
    h = Harness(clock)
    h.last_ids.set("c", known_last_id)
    h.submit("42", prev_id)
    assert h.ids == ["42"]
    assert h.last_ids.get("c") == "42"
    assert clock.getDelayedCalls() == []


def test_swapped_pair_is_reordered(clock):
    """An item arriving before its predecessor waits for it, then both go out in order."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3", "2")
    assert h.ids == ["1"]
    assert h.seq.pending == 1
    assert len(clock.getDelayedCalls()) == 1
    h.submit("2", "1")
    assert h.ids == ["1", "2", "3"]
    assert h.last_ids.get("c") == "3"
    assert (h.seq.parked, h.seq.flushed, h.seq.pending) == (1, 1, 0)
    assert clock.getDelayedCalls() == []


def test_reverse_order_burst_is_put_back_in_order(clock):
    """A burst published newest-first is delivered oldest-first once the gap closes."""
    h = Harness(clock)
    h.submit("0")
    for n in range(10, 0, -1):
        h.submit(str(n), str(n - 1))
    assert h.ids == [str(n) for n in range(11)]
    assert h.seq.flushed == 9
    assert clock.getDelayedCalls() == []


def test_gap_is_released_after_wait(clock):
    """A missing predecessor is waited for `wait` seconds, then the parked item goes out anyway."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3", "2")  # parked at t=0; the sweep ticks every second from now
    h.advance(4)
    assert h.ids == ["1"]
    h.advance(1)
    assert h.ids == ["1", "3"]
    assert clock.seconds() == 5.0
    assert h.seq.released_by_timeout == 1
    assert h.last_ids.get("c") == "3"
    h.submit("4", "3")  # the sequence continues from the released item
    assert h.ids == ["1", "3", "4"]
    assert clock.getDelayedCalls() == []


def test_released_item_unblocks_its_parked_successors(clock):
    """When a timed-out item goes out, the items waiting on it follow at once, in order."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3", "2")
    h.submit("4", "3")
    h.advance(5)
    assert h.ids == ["1", "3", "4"]
    assert (h.seq.released_by_timeout, h.seq.flushed) == (1, 1)
    assert clock.getDelayedCalls() == []


def test_timed_out_items_leave_oldest_first_not_in_chain_order(clock):
    """Items that time out leave in the order they were parked, even if that breaks their chain (as in Pushpin)."""
    h = Harness(clock)
    h.submit("1")
    h.submit("4", "3")  # t=0
    h.advance(0.5)
    h.submit("3", "2")  # t=0.5
    h.advance(4.5)  # t=5: "4" has waited 5 s, "3" only 4.5 s
    assert h.ids == ["1", "4"]
    h.advance(1)
    assert h.ids == ["1", "4", "3"]
    assert h.seq.released_by_timeout == 2
    assert clock.getDelayedCalls() == []


def test_wait_is_measured_on_the_one_second_sweep(clock):
    """An item parked between sweeps waits between `wait` and `wait + 1` seconds, as in Pushpin."""
    h = Harness(clock, wait=2.0)
    h.submit("1")
    h.submit("3", "2")  # t=0: starts the sweep (t=1, 2, 3, ...)
    h.advance(0.5)
    h.submit("6", "5")  # t=0.5
    h.advance(1.5)  # t=2: "3" has waited 2 s, "6" only 1.5 s
    assert h.ids == ["1", "3"]
    h.advance(1)  # t=3: "6" has waited 2.5 s
    assert h.ids == ["1", "3", "6"]
    assert clock.getDelayedCalls() == []


def test_one_timer_for_all_channels_and_none_when_idle(clock):
    """However many channels have parked items, there is one sweep timer, and none once they are out."""
    h = Harness(clock)
    assert clock.getDelayedCalls() == []
    for n in range(50):
        h.submit("1", channel=f"ch{n}")
        h.submit("3", "2", channel=f"ch{n}")
    assert h.seq.pending == 50
    assert len(clock.getDelayedCalls()) == 1
    h.advance(5)
    assert h.seq.pending == 0
    assert h.seq.released_by_timeout == 50
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_parking_limit_per_channel(clock, limit):
    """Once `max_parked_per_channel` items wait on a channel, further ones are dropped; other channels still park."""
    h = Harness(clock, max_parked_per_channel=limit)
    h.submit("start")
    h.submit("start", channel="other")
    for n in range(limit):
        h.submit(f"x{n}", f"p{n}")
    assert h.seq.pending_for("c") == limit
    h.submit("over", "p-over")
    assert h.drop_log == [("over", DROP_PARKING_FULL)]
    assert h.seq.parking_full_dropped == 1
    h.submit("y", "q", channel="other")
    assert h.seq.pending_for("other") == 1
    h.advance(5)
    assert h.seq.pending == 0
    assert "over" not in h.ids
    assert clock.getDelayedCalls() == []


def test_default_parking_limit_is_pushpins(clock):
    """By default a channel holds 100 waiting items, Pushpin's CHANNEL_PENDING_MAX."""
    h = Harness(clock)
    h.submit("start")
    for n in range(101):
        h.submit(f"x{n}", f"p{n}")
    assert h.seq.pending == 100
    assert h.drop_log == [("x100", DROP_PARKING_FULL)]
    h.seq.stop()
    assert clock.getDelayedCalls() == []


def test_second_item_waiting_for_the_same_prev_id_is_dropped(clock):
    """Only the first item waiting for a given prev-id is kept; the second is dropped and reported."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3a", "2")
    h.submit("3b", "2")
    assert h.drop_log == [("3b", DROP_DUPLICATE_PREV_ID)]
    assert h.seq.duplicate_prev_id_dropped == 1
    h.submit("2", "1")
    assert h.ids == ["1", "2", "3a"]
    assert clock.getDelayedCalls() == []


def test_no_seq_items_bypass_sequencing(clock):
    """A no-seq item goes out at once whatever its prev-id, and leaves the last id alone."""
    h = Harness(clock)
    h.submit("1")
    h.submit("9", "8", no_seq=True)
    h.submit(None, no_seq=True)
    assert h.ids == ["1", "9", None]
    assert h.last_ids.get("c") == "1"
    assert h.seq.bypassed == 2
    h.submit("2", "1")  # still in sequence
    assert h.ids == ["1", "9", None, "2"]
    assert clock.getDelayedCalls() == []


def test_channels_without_listeners_bypass_sequencing(clock):
    """On a channel nobody listens to, items go out at once and no last id is recorded."""
    h = Harness(clock, listeners=set())
    h.submit("1")
    h.submit("3", "2")
    assert h.ids == ["1", "3"]
    assert h.last_ids.get("c") is None
    assert (h.seq.bypassed, h.seq.parked) == (2, 0)
    assert clock.getDelayedCalls() == []


def test_item_without_id_clears_the_last_id(clock):
    """A sequenced item without id is delivered and forgets the last id, so the next item is not held."""
    h = Harness(clock)
    h.submit("1")
    h.submit(None, "1")
    assert h.last_ids.get("c") is None
    h.submit("7", "6")
    assert h.ids == ["1", None, "7"]
    assert clock.getDelayedCalls() == []


def test_parked_item_without_id_clears_the_last_id_when_released(clock):
    """An id-less item that had to wait clears the last id when it finally goes out, unblocking nothing."""
    h = Harness(clock)
    h.submit("1")
    h.submit(None, "2")
    h.advance(5)
    assert h.ids == ["1", None]
    assert h.last_ids.get("c") is None
    assert h.seq.released_by_timeout == 1
    assert clock.getDelayedCalls() == []


def test_parked_item_without_id_is_flushed_and_clears_the_last_id(clock):
    """An id-less item waiting on its predecessor follows it out and then forgets the last id."""
    h = Harness(clock)
    h.submit("1")
    h.submit(None, "2")
    h.submit("2", "1")
    assert h.ids == ["1", "2", None]
    assert h.last_ids.get("c") is None
    assert clock.getDelayedCalls() == []


def test_id_cache_drops_duplicates_within_ttl(clock):
    """With id_cache_ttl set, a repeated id within the TTL is dropped and counted; after the TTL it is delivered."""
    h = Harness(clock, id_cache=IdCache(ttl=60))
    h.submit("1")
    clock.advance(30)
    h.submit("1")
    assert h.ids == ["1"]
    assert h.drop_log == [("1", DROP_DUPLICATE_ID)]
    assert h.seq.duplicates_dropped == 1
    clock.advance(30)
    h.submit("1")
    assert h.ids == ["1", "1"]
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("listeners, no_seq", [(set(), False), (None, True)], ids=["no-listeners", "no-seq"])
def test_id_cache_applies_to_unsequenced_items_too(clock, listeners, no_seq):
    """The id cache runs before sequencing: duplicates are dropped even on the bypass path."""
    h = Harness(clock, listeners=listeners, id_cache=IdCache(ttl=60))
    h.submit("1", no_seq=no_seq)
    h.submit("1", no_seq=no_seq)
    assert h.ids == ["1"]
    assert h.seq.duplicates_dropped == 1


def test_id_cache_remembers_items_that_sequencing_dropped(clock):
    """An id is cached when first seen even if sequencing then drops it, so a resend within the TTL is dropped too."""
    h = Harness(clock, id_cache=IdCache(ttl=60))
    h.submit("1")
    h.submit("3a", "2")
    h.submit("3b", "2")  # dropped: same prev-id
    h.submit("3b", "2")  # and now a cached duplicate
    assert h.drop_log == [("3b", DROP_DUPLICATE_PREV_ID), ("3b", DROP_DUPLICATE_ID)]
    h.seq.stop()


def test_id_cache_off_delivers_duplicates(clock):
    """With the TTL at 0 (off), a repeated id is delivered again."""
    h = Harness(clock, id_cache=IdCache(ttl=0), listeners=set())
    h.submit("1")
    h.submit("1")
    assert h.ids == ["1", "1"]


def test_prev_id_loop_delivers_each_item_once(clock):
    """Two items each waiting for the other (A after B, B after A) go out once each at the deadline, then stop."""
    h = Harness(clock)
    h.submit("x")
    h.submit("a", "b")
    h.submit("b", "a")
    assert h.seq.pending == 2
    h.advance(5)
    assert h.ids == ["x", "a", "b"]
    assert (h.seq.released_by_timeout, h.seq.flushed, h.seq.pending) == (1, 1, 0)
    h.advance(10)
    assert h.ids == ["x", "a", "b"]
    assert clock.getDelayedCalls() == []


def test_item_waiting_for_itself_goes_out_once(clock):
    """An item whose prev-id is its own id is delivered once when that id turns up, not forever."""
    h = Harness(clock)
    h.submit("x")
    h.submit("a", "a")
    h.submit("a", "x")
    assert h.ids == ["x", "a", "a"]
    assert h.seq.pending == 0
    assert clock.getDelayedCalls() == []


def test_recover_forgets_last_ids_and_keeps_parked_items(clock):
    """/recover/ forgets every last id; a parked item stays, and goes out behind its predecessor."""
    h = Harness(clock)
    h.submit("1")
    h.submit("1", channel="d")
    h.submit("3", "2")
    h.seq.clear()
    assert len(h.last_ids) == 0
    assert h.seq.pending == 1
    h.submit("2", "999")  # no last id known: goes straight out, and unblocks "3"
    assert h.ids == ["1", "1", "2", "3"]
    assert h.seq.pending == 0
    assert clock.getDelayedCalls() == []


def test_recover_keeps_the_deadline_of_parked_items(clock):
    """After /recover/, a parked item whose predecessor never comes still leaves at its deadline."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3", "2")
    h.advance(2)
    h.seq.clear()
    h.advance(3)
    assert h.ids == ["1", "3"]
    assert h.last_ids.get("c") == "3"
    assert clock.getDelayedCalls() == []


def test_forget_channel_discards_parked_items(clock):
    """When a channel loses its last subscriber its parked items are discarded and its last id forgotten."""
    h = Harness(clock)
    h.submit("1")
    h.submit("1", channel="d")
    h.submit("3", "2")
    h.submit("5", "4")
    h.submit("3", "2", channel="d")
    h.seq.forget_channel("c")
    assert sorted(h.drop_log) == [("3", DROP_UNSUBSCRIBED), ("5", DROP_UNSUBSCRIBED)]
    assert h.last_ids.get("c") is None and h.last_ids.get("d") == "1"
    assert len(clock.getDelayedCalls()) == 1  # "d" still waits
    h.seq.forget_channel("d")
    assert h.seq.discarded == 3
    assert clock.getDelayedCalls() == []
    h.advance(10)
    assert h.ids == ["1", "1"]


def test_delivery_that_ends_the_last_subscription_stops_the_flush(clock):
    """If delivering an item ends the channel's last subscription, the items still parked are discarded, not sent."""
    h = Harness(clock)
    h.listeners = {"c"}

    def deliver_then_leave(item: Item) -> None:
        h.delivered.append(item)
        if item.id == "2":  # a long-poll answered by "2" leaves the channel
            h.listeners.discard("c")
            h.seq.forget_channel("c")

    h.seq._deliver = deliver_then_leave
    h.submit("1")
    h.submit("4", "3")
    h.submit("3", "2")
    h.submit("2", "1")
    assert h.ids == ["1", "2"]
    assert sorted(h.drop_log) == [("3", DROP_UNSUBSCRIBED), ("4", DROP_UNSUBSCRIBED)]
    assert h.last_ids.get("c") is None
    assert clock.getDelayedCalls() == []


def test_stop_cancels_the_timer(clock):
    """stop() leaves no timer behind and reports what was still parked."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3", "2")
    assert len(clock.getDelayedCalls()) == 1
    h.seq.stop()
    assert clock.getDelayedCalls() == []
    assert h.drop_log == [("3", DROP_STOPPED)]
    h.seq.stop()  # idempotent
    assert clock.getDelayedCalls() == []


# --- property test ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(list(range(1, 21))))
def test_any_arrival_order_within_the_wait_is_delivered_in_order(order):
    """However a numbered run is shuffled, if it all arrives within the wait it comes out in order."""
    clock = Clock()
    h = Harness(clock)
    h.submit("0")
    for n in order:
        h.submit(str(n), str(n - 1))
    assert h.ids == [str(n) for n in range(21)]
    assert h.seq.pending == 0
    assert clock.getDelayedCalls() == []


_op = st.one_of(
    st.tuples(
        st.just("submit"),
        st.sampled_from(["a", "b"]),
        st.one_of(st.none(), st.sampled_from("0123456")),
        st.one_of(st.none(), st.sampled_from("0123456")),
        st.booleans(),
    ),
    st.tuples(st.just("advance"), st.floats(min_value=0.1, max_value=3.0)),
    st.tuples(st.just("forget"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("recover")),
)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(_op, max_size=40), ttl=st.sampled_from([0, 2]))
def test_every_item_is_delivered_or_dropped_exactly_once(ops, ttl):
    """Whatever happens, each submitted item is delivered once or reported dropped once, and no timer leaks."""
    clock = Clock()
    h = Harness(clock, id_cache=IdCache(ttl=ttl), max_parked_per_channel=3, wait=2.0)
    submitted = []
    for op in ops:
        if op[0] == "submit":
            _, channel, item_id, prev_id, no_seq = op
            item = make_item(item_id, prev_id, channel=channel, no_seq=no_seq)
            submitted.append(item)
            h.seq.submit(item)
        elif op[0] == "advance":
            clock.advance(op[1])
        elif op[0] == "forget":
            h.seq.forget_channel(op[1])
        else:
            h.seq.clear()
        assert (h.seq.pending > 0) == (len(clock.getDelayedCalls()) == 1)
        assert len(clock.getDelayedCalls()) <= 1
    h.advance(4)  # longer than wait + one sweep: nothing may still wait
    assert h.seq.pending == 0
    assert clock.getDelayedCalls() == []
    outcomes = [id(i) for i in h.delivered] + [id(i) for i, _ in h.drops]
    assert sorted(outcomes) == sorted(id(i) for i in submitted)


def test_a_failing_delivery_in_the_sweep_is_logged_and_the_rest_still_leave(clock):
    """If delivering a timed-out item raises, the failure is logged and the other parked items still go out."""
    from twisted.logger import Logger

    events: list[dict] = []
    h = Harness(clock, log=Logger(observer=events.append))

    def deliver(item: Item) -> None:
        if item.id == "3":
            raise RuntimeError("subscriber blew up")
        h.delivered.append(item)

    h.seq._deliver = deliver
    h.submit("1")
    h.submit("3", "2")
    h.advance(0.5)
    h.submit("5", "4")
    h.advance(4.5)  # "3" times out and its delivery raises
    assert [e["log_failure"].value.args for e in events] == [("subscriber blew up",)]
    assert h.seq.pending == 1
    h.advance(1)
    assert h.ids == ["1", "5"]
    assert clock.getDelayedCalls() == []


# --- items sequenced by another instance (helper-F's backplane hook) ---------------------------


def test_an_item_sequenced_elsewhere_sets_the_last_id_and_releases_its_parked_successor(clock):
    """Sequenced elsewhere: delivered through the given callable, its id becomes the last id, and the item parked on it goes out at once."""
    h = Harness(clock)
    h.submit("1")
    h.submit("3", "2")  # parked: waits for 2
    assert h.ids == ["1"] and h.seq.pending == 1
    elsewhere: list[str | None] = []
    h.seq.sequenced_elsewhere(make_item("2", "1"), lambda item: elsewhere.append(item.id))
    assert elsewhere == ["2"] and h.ids == ["1", "3"]
    assert h.last_ids.get("c") == "3" and h.seq.pending == 0 and h.seq.flushed == 1
    h.seq.sequenced_elsewhere(make_item("9", "8", no_seq=True), lambda item: elsewhere.append(item.id))
    assert elsewhere == ["2", "9"] and h.last_ids.get("c") == "3"  # no-seq: the last id stays


# --- the subscription's end, through the process's subscriptions (core.linger) -------------------


class _Sub:
    """A router subscriber that records what it gets; C{kind} "response" lingers its channel when it leaves last."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.got: list[str | None] = []

    def deliver(self, publication, channel) -> None:
        self.got.append(publication.item.id)


def _wired(clock: Clock, linger: float = 60.0):
    """A router, its subscriptions and a sequencer on them, wired as the service wires them."""
    from pushpin_tx.core.linger import Subscriptions
    from pushpin_tx.core.router import ChannelRouter

    router = ChannelRouter()
    subs = Subscriptions(clock, router, linger=linger, lingers=lambda sub: sub.kind == "response")
    h = Harness(clock)
    h.seq._has_listeners = subs.has
    h.seq._deliver = lambda item: (h.delivered.append(item), router.publish(item))
    subs.add_interest_listener(h.seq)
    return router, subs, h


def test_a_lingering_channel_keeps_its_last_id_and_is_still_sequenced(clock):
    """
    After a long-poll was answered and left, its channel's last id stays and publishes are
    still sequenced until the linger ends (Pushpin: seq while cs.subs has the channel): the
    client that long-polls again gets the next item in order, and a gap still parks.
    """
    router, subs, h = _wired(clock)
    poll = _Sub("response")
    router.subscribe("c", poll)
    h.submit("1")
    router.unsubscribe("c", poll)  # answered, gone
    h.submit("2", "1")  # nobody listening, but subscribed: sequenced, the last id moves
    assert h.last_ids.get("c") == "2" and h.seq.bypassed == 0
    h.submit("4", "3")
    assert h.seq.pending_for("c") == 1  # parked for its predecessor, as while held
    again = _Sub("response")
    router.subscribe("c", again)
    h.submit("3", "2")
    assert again.got == ["3", "4"]
    router.unsubscribe("c", again)
    subs.stop()


def test_a_channels_state_is_forgotten_when_its_linger_ends_not_when_the_long_poll_left(clock):
    """The last id is forgotten (and parked items discarded) when the subscription ends, 60 s after the long-poll left."""
    router, subs, h = _wired(clock)
    poll = _Sub("response")
    router.subscribe("c", poll)
    h.submit("1")
    router.unsubscribe("c", poll)
    clock.advance(0.5)
    h.submit("9", "8")  # parked: released by the sweep after 5 s, to nobody
    clock.pump([0.5] * 118)  # to 59.5
    assert h.last_ids.get("c") == "9" and subs.has("c")
    h.submit("13", "12")  # parked
    clock.advance(0.5)
    assert not subs.has("c") and h.last_ids.get("c") is None
    assert h.drop_log == [("13", DROP_UNSUBSCRIBED)]
    h.submit("11", "10")  # not subscribed: not sequenced
    assert h.ids[-1] == "11" and h.seq.bypassed == 1
    assert clock.getDelayedCalls() == []


def test_a_stream_leaving_last_forgets_the_channel_at_once(clock):
    """A stream (or WebSocket) leaving last ends the subscription in the same call: parked items go, the last id too."""
    router, subs, h = _wired(clock)
    stream = _Sub("stream")
    router.subscribe("c", stream)
    h.submit("1")
    h.submit("3", "2")
    router.unsubscribe("c", stream)
    assert h.drop_log == [("3", DROP_UNSUBSCRIBED)] and h.last_ids.get("c") is None
    assert clock.getDelayedCalls() == []
