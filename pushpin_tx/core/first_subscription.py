# -*- test-case-name: tests.core.test_first_subscription -*-
"""
C{[handler] update_on_first_subscription} (Pushpin 1.41, default C{true}; Pushpin 1.36 always
does it): a second after a channel gets its first subscriber, every long-poll and stream held
on it asks the origin again, in case something was published before the subscription took
effect (with a ZeroMQ SUB input or the Redis backplane, subscribing reaches the publisher
only some time later; in-process it is at once, but Pushpin's origins see the re-ask anyway).

Pushpin's rules (src/handler/handlerengine.cpp C{addSub}, C{removeSub}, C{class Subscription},
C{sub_subscribed}, C{updateSessions}; src/handler/httpsession.cpp C{update(Priority)},
C{doUpdate}; src/handler/ratelimiter.cpp), each applied where noted:

 1. A channel's subscription starts with its first subscriber and starts a single-shot timer
    of C{SUBSCRIBED_DELAY} (1,000 ms). A subscriber joining a channel already subscribed
    starts nothing (L{FirstSubscriptionUpdates.channel_added}).
 2. The subscription ends when Pushpin's C{removeSub} ends it, which cancels the timer: at
    once when the last to leave was a stream or a WebSocket, after C{subscription_linger}
    when it was a long-poll (a client that long-polls again meanwhile finds its channel still
    subscribed, and a second long-poll is not re-asked). That is the process's one linger,
    L{pushpin_tx.core.linger.Subscriptions}, whose listener this is
    (L{FirstSubscriptionUpdates.channel_removed}).
 3. When the timer fires, every response hold and every stream hold on the channel (by its
    exact name) is updated at low priority; WebSocket sessions are not touched
    (L{FirstSubscriptionUpdates._subscribed}). Off (C{false}): nothing of this is built
    (L{first_subscription_updates}).
 4. Updating a long-poll re-sends the client's original request to the origin, with
    C{Grip-Last} for each channel with a prev-id; updating a stream fetches its next link
    with C{Grip-Last}; a stream without a next link has nothing to update. These are the
    holds' own C{resync} paths, the ones C{/recover/} uses.
 5. Low priority means through the update limiter (L{UpdateLimiter}): updates are grouped
    into actions by next link (all long-polls share one key), at most
    C{UPDATES_PER_ACTION_MAX} (100) holds per action, and actions run at 10 a second, the
    first 100 ms after the limiter was idle (C{setBatchWaitEnabled}); a hold waiting for its
    action is not queued twice, and one that ended meanwhile is skipped (an action left
    empty takes no turn).

One instance per process, on that process's subscriptions: with C{workers}, each process
counts its own first subscriptions (see the README).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from pushpin_tx.core.hold import ResponseHold, StreamHold

if TYPE_CHECKING:
    from pushpin_tx.core.linger import Subscriptions
    from pushpin_tx.core.router import ChannelRouter

__all__ = ["FirstSubscriptionUpdates", "UpdateLimiter", "first_subscription_updates", "update_hold", "SUBSCRIBED_DELAY", "UPDATE_RATE",
           "UPDATES_PER_ACTION_MAX"]

#: seconds from a channel's first subscription to the update of its holds (handlerengine.cpp)
SUBSCRIBED_DELAY = 1.0
#: the update limiter's actions per second (handlerengine.cpp: C{updateLimiter->setRate(10)})
UPDATE_RATE = 10
#: holds per update action (httpsession.cpp)
UPDATES_PER_ACTION_MAX = 100

_Hold = ResponseHold | StreamHold


class UpdateLimiter:
    """
    Pushpin's update limiter: low-priority hold updates grouped into actions by key and run
    at C{rate} actions a second (rule 5 of the module docstring).

    @param execute: called with each hold of an action when the action runs (not for a hold
        that ended meanwhile).
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, execute: Callable[[_Hold], None], *,
                 rate: int = UPDATE_RATE, per_action: int = UPDATES_PER_ACTION_MAX) -> None:
        self._clock = clock
        self._execute = execute
        # ratelimiter.cpp: below 40 a second, one action each 1000/rate ms
        self._interval = (1000 // rate) / 1000.0
        self._per_action = per_action
        #: key -> its actions, oldest first; each action a list of holds
        self._buckets: OrderedDict[str, deque[list[_Hold]]] = OrderedDict()
        #: every hold waiting in an action
        self._queued: dict[_Hold, None] = {}
        self._call: IDelayedCall | None = None
        #: actions run, and holds updated through them
        self.actions = 0
        self.updated = 0

    def __len__(self) -> int:
        """How many holds are waiting for their update."""
        return len(self._queued)

    def add(self, key: str, hold: _Hold) -> None:
        """Queue C{hold}'s update under C{key} (once: a hold already waiting stays where it is)."""
        if hold in self._queued:
            return
        self._queued[hold] = None
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = deque()
        if not bucket or len(bucket[-1]) >= self._per_action:
            bucket.append([])
        bucket[-1].append(hold)
        if self._call is None:
            # idle: collect for one interval before the first action (batch wait)
            self._call = self._clock.callLater(self._interval, self._tick)

    def _tick(self) -> None:
        """Run one action (an empty one takes no turn); keep ticking until a tick finds nothing."""
        self._call = None
        buckets = self._buckets
        ran = False
        while buckets and not ran:
            key, bucket = next(iter(buckets.items()))
            action = bucket.popleft()
            if bucket:
                buckets.move_to_end(key)  # round robin between keys
            else:
                del buckets[key]
            live = []
            for hold in action:
                del self._queued[hold]
                if not hold.done:
                    live.append(hold)
            if not live:
                continue
            ran = True
            self.actions += 1
            for hold in live:
                self.updated += 1
                try:
                    self._execute(hold)
                except Exception:
                    self._log.failure("update of {hold!r} failed", hold=hold)
        if ran:
            # as Pushpin's timer: one more interval, then it stops if nothing came
            self._call = self._clock.callLater(self._interval, self._tick)

    def stop(self) -> None:
        """Cancel the timer and forget every queued update (the service is stopping)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._buckets.clear()
        self._queued.clear()


class FirstSubscriptionUpdates:
    """
    The first-subscription timers of one process's subscriptions (rules 1-4 of the module
    docstring): an interest listener of L{Subscriptions} (construct it and it is live; L{stop}
    cancels every timer), reading the holds of a channel from the router.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, router: "ChannelRouter", subscriptions: "Subscriptions",
                 limiter: UpdateLimiter, *, delay: float = SUBSCRIBED_DELAY) -> None:
        self._clock = clock
        self._router = router
        self._subscriptions = subscriptions
        self._limiter = limiter
        self._delay = delay
        #: subscribed channels -> the token of their pending timer (None once it fired)
        self._subs: dict[str, int | None] = {}
        #: the pending timers, (due, channel, token), due in order (every one is C{delay} long):
        #: one reactor timer for them all, not a DelayedCall per subscription (a heap push and
        #: pop of Python-compared calls per channel opened, ~5 % of opening a held stream)
        self._due: deque[tuple[float, str, int]] = deque()
        self._pending = 0
        self._tokens = 0
        self._timer: IDelayedCall | None = None
        self._stopped = False
        #: timers fired, and holds queued for an update by them
        self.fired = 0
        self.queued = 0
        subscriptions.add_interest_listener(self)
        for channel in subscriptions.channels():
            self.channel_added(channel)

    def subscribed(self, channel: str) -> bool:
        """Whether C{channel} is subscribed in Pushpin's sense (held, or lingering)."""
        return channel in self._subs

    # the subscriptions' interest listener --------------------------------------------------------

    def channel_added(self, channel: str) -> None:
        """C{addSub}: a new subscription starts its timer."""
        if self._stopped or channel in self._subs:
            return
        self._tokens += 1
        self._subs[channel] = token = self._tokens
        self._due.append((self._clock.seconds() + self._delay, channel, token))
        self._pending += 1
        if self._timer is None:
            self._timer = self._clock.callLater(self._delay, self._fire)

    def _fire(self) -> None:
        """The timers that are due: each channel still subscribed with that timer gets its update."""
        self._timer = None
        now = self._clock.seconds()
        due, subs = self._due, self._subs
        while due and due[0][0] <= now:
            _, channel, token = due.popleft()
            if subs.get(channel) == token:
                self._pending -= 1
                self._subscribed(channel)
        if due and self._timer is None and not self._stopped:
            self._timer = self._clock.callLater(max(due[0][0] - now, 0), self._fire)

    def channel_removed(self, channel: str) -> None:
        """C{removeSub}: the subscription and its timer go."""
        if self._subs.pop(channel, None) is not None:  # (None: unknown, or its timer fired)
            self._pending -= 1
            if not self._pending:  # no timer left to fire: none kept waiting
                self._due.clear()
                if self._timer is not None and self._timer.active():
                    self._timer.cancel()
                self._timer = None

    # the timer -------------------------------------------------------------------------------------

    def _subscribed(self, channel: str) -> None:
        """C{sub_subscribed}: update every long-poll and stream held on C{channel}."""
        self._subs[channel] = None
        self.fired += 1
        limiter = self._limiter
        queued = 0
        for sub in self._router.subscribers(channel):
            if isinstance(sub, (ResponseHold, StreamHold)):
                key = sub.update_key()
                if key is not None:
                    limiter.add(key, sub)
                    queued += 1
        self.queued += queued
        if queued:
            self._log.debug("first subscription to {channel}: updating {n} holds", channel=channel, n=queued)

    def stop(self) -> None:
        """Cancel every timer (the service is stopping); the listener stays registered, inert."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._due.clear()
        self._pending = 0
        self._subs.clear()
        self._limiter.stop()


def first_subscription_updates(clock: IReactorTime, router: "ChannelRouter", subscriptions: "Subscriptions", *,
                               enabled: bool) -> FirstSubscriptionUpdates | None:
    """
    The updates of one process's subscriptions as C{[handler] update_on_first_subscription}
    says: none when it is C{false} (Pushpin's C{sub_subscribed} then does nothing), else
    live, with their own update limiter.
    """
    if not enabled:
        return None
    return FirstSubscriptionUpdates(clock, router, subscriptions, UpdateLimiter(clock, update_hold))


def update_hold(hold: _Hold) -> None:
    """What an update action does to one hold: its C{resync}, as C{/recover/} does."""
    hold.resync("first subscription to its channel")
