# -*- test-case-name: tests.core.test_pending -*-
"""
Deliveries that wait while the proxy is busy, joined per connection, and the bound that
pushes back on publishers (issue 14, items 2 and 3).

A publish is handed to every subscriber of its channel at once, but only as a note in a
per-channel backlog: the run of publications (shared by every subscriber) and, per
subscriber, where in that backlog it starts. The writer then writes a I{slice} of
connections per reactor turn: for each, everything the backlog holds for it from its start
on goes out as one run (L{ChannelRouter}'s L{Run}, so a plain stream or WebSocket writes it in
one send); then the writer yields to the reactor, which reads the next publishes meanwhile.
A connection not yet written when a new publish comes simply has more to write when its
turn comes: the busier the proxy, the more each send carries (bench/README.md has the
figures). When nothing waits, a publish is written as soon as its turn's input is handled
(the first slice of connections is written at once, in the publish's own turn, without going
through a backlog; only the rest waits for the next turns): no delay is added at low load.

The rules kept, and where:

  - per-channel order: a backlog is append-only and a subscriber's start only moves forward;
    a subscriber is written from its start to the end, in order, then waits for new runs;
  - which subscribers get a publish: those its channel has when the publish is fanned out
    (a later subscriber starts at the next run; one that leaves is forgotten);
  - ids, sequencing, filters, flow control, drop counting: unchanged, they are the
    subscriber's own (C{deliver_run}, L{pushpin_tx.core.delivery.DeliveryQueue}); the writer
    never holds back a connection whose transport is paused (its own bounded queue does), so
    one slow reader costs the others nothing;
  - nothing lost silently: a subscriber that leaves a channel while still connected (a
    WebSocket its origin unsubscribes) is written what waited for it there at once; one that
    ends with messages still waiting is told how many (C{pending_dropped(channel, count)})
    and reports them as drops;
  - subscribers without C{deliver_run} (long-polls) are handed each publication at once.

The bound: the bytes of the runs in the backlogs are counted (each run once, however many
subscribers it waits for). Past L{Backpressure.limit} the publishers are pushed back: the
registered producers (the ZeroMQ readers) are paused, and the HTTP control API holds its
answers (L{Backpressure.when_relieved}) until the backlog falls to the low-water mark (half
the limit). Nothing is dropped for it.

The pace (issue 14, item 5): a publish answered at once lets a publisher that waits for each
answer send its next one while the last is still being written, so its publishes pile up
behind the fan-out, and the last of them waits for all those ahead of it (Little's law:
latency is what is queued ahead over the rate it drains at; one publisher to 1,000 streams
had ~50 publishes queued, a 30 ms round of the connections). So while some connection has
more than L{PendingWriter.ahead} runs waiting for it (its channel's backlog holds more), the
control API holds an answer (L{PendingWriter.when_caught_up}; one at a time) until every
backlog is back to that depth: the publisher then goes at the pace of the fan-out, and each send still
carries up to that many runs. Only answers wait: publishes are fanned out as they come, an
idle publish is written at once as before, and ZeroMQ inputs are not paced.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import Logger

from pushpin_tx.core.router import Publication, Run

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

    from pushpin_tx.core.router import ChannelRouter, Subscriber
    from pushpin_tx.protocol.items import Item

__all__ = ["PendingWriter", "Backpressure", "DEFAULT_SLICE", "DEFAULT_LIMIT", "DEFAULT_AHEAD"]

#: connections written per reactor turn while deliveries wait (bench/README.md: "Coalescing")
DEFAULT_SLICE = 8
#: bytes of waiting deliveries past which publishers are pushed back
DEFAULT_LIMIT = 32 * 1024 * 1024
#: runs (a turn's publishes to a channel) waiting for one connection past which publish answers are held
DEFAULT_AHEAD = 14
#: what a publication costs in the backlog besides its content (objects, lists)
_OVERHEAD = 200


def _size(item: "Item") -> int:
    size = _OVERHEAD
    stream = item.http_stream
    if stream is not None and stream.content:
        size += len(stream.content)
    ws = item.ws_message
    if ws is not None and ws.content:
        size += len(ws.content)
    response = item.http_response
    if response is not None:
        size += len(getattr(response, "body", b"") or b"")
    return size


class Backpressure:
    """
    A high/low-water mark on the bytes of waiting deliveries, and who to tell.

    @ivar congested: over the limit, not yet back to the low-water mark.
    @ivar episodes: how many times the limit was reached.
    """

    _log = Logger()

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self.congested = False
        self.episodes = 0
        self._producers: list[Any] = []
        self._waiters: list[Callable[[], object]] = []
        self._levels: dict[str, int] = {}

    @property
    def low_water(self) -> int:
        return self.limit // 2

    def add_producer(self, producer: Any) -> None:
        """Pause C{producer} (C{pauseProducing}/C{resumeProducing}) while congested."""
        self._producers.append(producer)
        if self.congested:
            producer.pauseProducing()

    def remove_producer(self, producer: Any) -> None:
        if producer in self._producers:
            self._producers.remove(producer)

    def when_relieved(self, callback: Callable[[], object]) -> None:
        """Call C{callback} now if not congested, else once the backlog is down to the low-water mark."""
        if not self.congested:
            callback()
        else:
            self._waiters.append(callback)

    @property
    def waiting(self) -> int:
        """How many callers L{when_relieved} holds."""
        return len(self._waiters)

    def level(self, pending: int, source: str = "deliveries") -> None:
        """
        C{source}'s backlog is now C{pending} bytes: the waiting deliveries, or (the main
        process of C{workers = N}) the publishes its pipes hold for the slowest worker.
        Congested while any source is over the limit, until every one is down to the low-water mark.
        """
        levels = self._levels
        levels[source] = pending
        if self.congested:
            if pending <= self.low_water and all(n <= self.low_water for n in levels.values()):
                self._relieve(pending)
        elif self.limit > 0 and pending > self.limit:
            self.congested = True
            self.episodes += 1
            self._log.info("{source} behind by {kb} KB (limit {limit} KB): publishers held back",
                           source=source, kb=pending // 1024, limit=self.limit // 1024)
            for producer in tuple(self._producers):
                producer.pauseProducing()

    def _relieve(self, pending: int) -> None:
        self.congested = False
        self._log.info("caught up ({kb} KB waiting): publishers released", kb=pending // 1024)
        for producer in tuple(self._producers):
            producer.resumeProducing()
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            try:
                callback()
            except Exception:
                self._log.failure("a held publish answer failed")


class _Backlog:
    """One channel's runs not yet written to every subscriber, and who waits from where."""

    __slots__ = ("channel", "runs", "sizes", "base", "waiting", "queue", "pos", "joined")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.runs: list[Run] = []  # runs[i] has number base + i
        self.sizes: list[int] = []
        self.base = 0
        self.waiting: dict[Any, int] = {}  # subscriber -> number of the first run it has not had
        self.queue: list[tuple[Any, int]] = []  # (subscriber, start) in the order they began waiting
        self.pos = 0  # queue[:pos] is done
        self.joined: dict[int, Run] = {}  # start -> its runs to the end as one Run (until a run is added)

    def from_start(self, start: int) -> Run:
        """The publications from run C{start} to the end, as one L{Run} shared by every subscriber starting there."""
        runs = self.runs
        offset = start - self.base
        if offset == len(runs) - 1:
            return runs[offset]
        joined = self.joined.get(start)
        if joined is None:
            joined = self.joined[start] = Run(chain.from_iterable(runs[offset:]))
        return joined

    def count_from(self, start: int) -> int:
        return sum(len(run) for run in self.runs[start - self.base:])


class PendingWriter:
    """
    Fans publishes out into per-channel backlogs and writes them a slice of connections per turn.

    @ivar pending_bytes: the bytes of the runs waiting (each counted once).
    @ivar writes: C{deliver_run} calls made (one per connection per write).
    @ivar joined: writes that carried more than one run (coalesced while busy).
    @ivar ahead: runs waiting for a connection past which L{when_caught_up} holds its
        callers (0: never).
    @ivar held: how many times a caller was held.
    """

    _log = Logger()

    def __init__(self, router: "ChannelRouter", clock: "IReactorTime", *, slice_size: int = DEFAULT_SLICE,
                 backpressure: Backpressure | None = None, ahead: int = DEFAULT_AHEAD) -> None:
        if slice_size < 1:
            raise ValueError("slice_size must be >= 1")
        self._router = router
        self._clock = clock
        self.slice = slice_size
        self.backpressure = backpressure if backpressure is not None else Backpressure()
        self._backlogs: dict[str, _Backlog] = {}
        self._active: deque[_Backlog] = deque()  # backlogs with someone waiting, written in turn
        self._call: "IDelayedCall | None" = None
        self._writing = False
        self._direct = 0  # connections written at once this turn (while nothing waited)
        self.pending_bytes = 0
        self.writes = 0
        self.joined = 0
        self.ahead = ahead
        self.held = 0
        self._deep: set[_Backlog] = set()  # backlogs holding more than `ahead` runs
        self._held: list[Callable[[], object]] = []
        router.add_unsubscribe_listener(self._forget)

    @property
    def idle(self) -> bool:
        """Nothing waits to be written."""
        return not self._active

    def publish_run(self, items: "list[Item]") -> int:
        """
        Hand C{items} (one channel's, in order) to every subscriber the channel has now.

        @return: the number of subscribers.
        """
        router = self._router
        channel = items[0].channel
        subs = router.targets(channel)
        if not subs:
            router.published_idle += len(items)
            return 0
        router.published += len(items)
        run = Run(Publication(item) for item in items)
        targets = tuple(subs)
        backlog: _Backlog | None = None
        number = 0
        waiting: dict[Any, int] = {}
        queue: list[tuple[Any, int]] = []
        for sub in targets:
            deliver_run = getattr(sub, "deliver_run", None)
            if deliver_run is None:
                try:
                    for publication in run:
                        sub.deliver(publication, channel)
                except Exception:
                    router._delivery_failed(sub, channel)
                continue
            if not self._active and self._direct < self.slice:
                # nothing waits anywhere: written at once, up to a slice of connections this turn
                self._direct += 1
                try:
                    deliver_run(run, channel)
                except Exception:
                    router._delivery_failed(sub, channel)
                continue
            if backlog is None:
                backlog = self._append(channel, run, sum(_size(item) for item in items))
                number = backlog.base + len(backlog.runs) - 1
                waiting, queue = backlog.waiting, backlog.queue
            if sub not in waiting:
                waiting[sub] = number
                queue.append((sub, number))
        router.deliveries += len(targets) * len(items)
        if backlog is not None and self._call is None and not self._writing:
            self._call = self._clock.callLater(0, self._turn)  # this turn's slice is spent
        return len(targets)

    def when_caught_up(self, callback: Callable[[], object]) -> None:
        """
        Call C{callback} now, or (while some connection has more than L{ahead} runs waiting
        for it, and no other caller is held) once none has: a publish answer held so that a
        publisher waiting for it goes at the pace of the fan-out instead of queueing its
        publishes behind it.
        """
        if not self._deep or self._held:
            # one answer held at a time: with publishers in parallel, as many publishes are
            # in flight as there are publishers whatever is held, and holding them all only
            # bunches them when they are let go (20 publishers: 5.0 -> 2.4-4.0 M deliveries/s)
            callback()
            return
        self.held += 1
        self._held.append(callback)

    def begin_turn(self) -> None:
        """A new reactor turn's publishes are coming: a slice of connections may be written at once again."""
        self._direct = 0

    def flush(self) -> None:
        """Write everything waiting now (before a recover or a shutdown)."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        while self._active and not self._writing:
            self._write(1 << 62)
        self._release()

    # --- internals ------------------------------------------------------------------------

    def _append(self, channel: str, run: Run, size: int) -> _Backlog:
        backlog = self._backlogs.get(channel)
        if backlog is None:  # a backlog is in the rotation for as long as it exists
            backlog = self._backlogs[channel] = _Backlog(channel)
            self._active.append(backlog)
        backlog.runs.append(run)
        backlog.sizes.append(size)
        if len(backlog.runs) > self.ahead > 0:
            self._deep.add(backlog)
        if backlog.joined:
            backlog.joined.clear()
        self.pending_bytes += size
        self.backpressure.level(self.pending_bytes)
        return backlog

    def _turn(self) -> None:
        self._call = None
        self._write(self.slice)
        if self._active and self._call is None:
            self._call = self._clock.callLater(0, self._turn)

    def _write(self, budget: int) -> None:
        """Write up to C{budget} connections, a channel after another (each keeps its place in the rotation)."""
        self._writing = True
        try:
            active = self._active
            rounds = len(active)
            while budget > 0 and active and rounds > 0:
                rounds -= 1
                backlog = active.popleft()
                budget = self._write_backlog(backlog, budget)
                if self._trim(backlog):
                    active.append(backlog)
                else:
                    del self._backlogs[backlog.channel]
                    self._deep.discard(backlog)
        finally:
            self._writing = False
        self.backpressure.level(self.pending_bytes)
        self._release()

    def _release(self) -> None:
        """Every backlog is back to L{ahead} runs: the held callers go on."""
        if self._held and not self._deep:
            held, self._held = self._held, []
            for callback in held:
                try:
                    callback()
                except Exception:
                    self._log.failure("a held publish answer failed")

    def _write_backlog(self, backlog: _Backlog, budget: int) -> int:
        channel = backlog.channel
        queue = backlog.queue
        waiting = backlog.waiting
        pos = backlog.pos
        last = backlog.base + len(backlog.runs) - 1
        writes = joined = 0
        while budget > 0 and pos < len(queue):
            sub = queue[pos][0]
            pos += 1
            start = waiting.pop(sub, None)
            if start is None:
                continue  # it left, or an earlier entry of it wrote it
            budget -= 1
            writes += 1
            if start != last:
                joined += 1
            try:
                sub.deliver_run(backlog.from_start(start), channel)
            except Exception:
                self._router._delivery_failed(sub, channel)
        backlog.pos = pos
        self.writes += writes
        self.joined += joined
        return budget

    def _trim(self, backlog: _Backlog) -> bool:
        """Drop the runs every waiting subscriber has had; C{False} when nothing is left."""
        queue = backlog.queue
        pos = backlog.pos
        if pos >= len(queue):
            # a subscriber's stale entry may have been skipped while it waits at a later one:
            # then waiting is not empty, but every waiting subscriber has a later entry. So
            # an exhausted queue means no one waits.
            keep = len(backlog.runs)
            backlog.queue = []
            backlog.pos = 0
            backlog.waiting.clear()
        else:
            keep = queue[pos][1] - backlog.base
            if pos >= 256 and pos * 2 >= len(queue):
                del queue[:pos]
                backlog.pos = 0
        if keep > 0:
            self.pending_bytes -= sum(backlog.sizes[:keep])
            del backlog.runs[:keep]
            if len(backlog.runs) <= self.ahead:
                self._deep.discard(backlog)
            del backlog.sizes[:keep]
            backlog.base += keep
            backlog.joined.clear()
        return bool(backlog.queue)

    def _forget(self, channel: str, sub: "Subscriber") -> None:
        """C{sub} left C{channel}: what waited for it there is reported to it as dropped."""
        backlog = self._backlogs.get(channel)
        if backlog is None:
            return
        start = backlog.waiting.pop(sub, None)
        if start is None:
            return
        if not getattr(sub, "done", False):
            # still connected (a WebSocket unsubscribed by its origin): what was published
            # to it while it listened is written now, as it would have been at once
            try:
                sub.deliver_run(backlog.from_start(start), channel)  # type: ignore[attr-defined]
            except Exception:
                self._router._delivery_failed(sub, channel)
            return
        count = backlog.count_from(start)
        report = getattr(sub, "pending_dropped", None)
        if report is not None and count:
            try:
                report(channel, count)
            except Exception:
                self._log.failure("reporting {count} dropped messages on {channel} failed", count=count, channel=channel)
