# -*- test-case-name: tests.core.test_linger -*-
"""
Pushpin's handler subscriptions (C{cs.subs}): which channels a process is subscribed to, and
the linger after a long-poll was the last to leave. Everything that follows a channel's
subscription hangs off this one state machine, as everything in Pushpin's handler hangs off
C{addSub} / C{removeSub}:

  - the ZeroMQ SUB input's C{SUBSCRIBE} / C{UNSUBSCRIBE} (L{pushpin_tx.zeromq.inputs}) and
    the Redis backplane's (L{pushpin_tx.backplane.redis});
  - the sequencer: a channel is sequenced while subscribed (C{handlePublishItem}'s C{seq}),
    and its parked items and last id go when the subscription ends
    (L{pushpin_tx.core.sequencing.Sequencer.forget_channel});
  - the first-subscription update timer, and "not first again" while a channel lingers
    (L{pushpin_tx.core.first_subscription});
  - the stats socket's C{sub} packets: their C{response}-mode linger runs on the same
    L{Linger} (L{Subscriptions.linger}), as Pushpin's C{removeSubscription(linger)} and the
    handler's C{removeSub} both hang off the stats manager's one refresh timer
    (L{pushpin_tx.core.stats_feed.StatsPublisher.follow}).

Pushpin's rules (1.36 C{src/handler/engine.cpp}, 1.41 C{src/handler/handlerengine.cpp}, the
same code: C{addSub}, C{removeSub}, C{removeSessionChannel}, C{stats_unsubscribed};
C{src/corelib/statsmanager.cpp} (1.41: C{src/core/statsmanager.cpp}) C{addSubscription},
C{removeSubscription}, C{refresh_timeout}, C{handleExpirations}), each applied where noted:

 1. A channel's first subscriber (of any kind) subscribes it: listeners hear
    C{channel_added} (C{addSub}). A subscriber joining a subscribed channel, lingering or
    not, changes nothing (L{Subscriptions.channel_added}).
 2. When the last subscriber leaves and it was a long-poll (a response hold: "linger the
    unsub in case client long-polls again"), the subscription stays C{subscription_linger}
    seconds; any other last subscriber (a stream, a WebSocket) ends it at once: listeners
    hear C{channel_removed} (C{removeSub}) in the same call (L{Subscriptions._emptied}).
    Pushpin keeps one stats subscription per (mode, channel) and ends the handler's when a
    non-lingering one ends with no session left on the channel, or a lingering one expires
    with none left; that is exactly "the last to leave decides": a stream that comes and
    goes during a long-poll's linger ends the subscription at once, a long-poll that comes
    back cancels the linger and, leaving again, starts a full one.
 3. A linger ends on the stats manager's refresh timer (C{REFRESH_INTERVAL}, 1,000 ms), the
    first tick at or past its deadline: between C{linger} and C{linger + 1} seconds after
    the leave. C{subscription_linger=0} ends it on the next tick (L{Subscriptions._tick}).

Prefix subscriptions (ours: L{pushpin_tx.core.router.ChannelRouter.subscribe_prefix}) follow
the same rules, prefix by prefix: a prefix's first prefix subscriber subscribes it
(C{prefix_added}), its last one leaving ends it at once, or after the linger when that was a
long-poll (C{prefix_removed}). Only listeners that have C{prefix_added}/C{prefix_removed}
(the SUB input, the backplane, the workers' link and shared interest) hear them; the
sequencer and the first-subscription updates know exact channels only. A prefix and a
channel of the same name are two subscriptions.

L{Subscriptions} is an interest source with the router's interface (C{add_interest_listener},
C{channels()}), so the SUB input, the backplane and the workers' shared interest take it
where they took the router.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Hashable, Iterable

from twisted.logger import Logger

from pushpin_tx.core.hold import ResponseHold
from pushpin_tx.core.prefix_index import PrefixIndex
from pushpin_tx.core.refresh import REFRESH_INTERVAL, Linger

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from pushpin_tx.core.router import ChannelRouter, InterestListener, PrefixInterestListener, Subscriber

__all__ = ["Linger", "Subscriptions", "REFRESH_INTERVAL", "is_long_poll"]



def is_long_poll(subscriber: "Subscriber") -> bool:
    """Whether a subscriber's leaving lingers its channel: a long-poll (C{removeSessionChannel})."""
    return isinstance(subscriber, ResponseHold)



class Subscriptions:
    """
    One process's subscribed channels: those with subscribers, and those lingering after a
    long-poll was the last to leave (rules 1-3 of the module docstring). Listens to the
    router itself: construct it and it is live; L{stop} cancels the linger's timer.

    @param linger: C{subscription_linger}, seconds.
    @param lingers: whether a last subscriber's leaving lingers the channel.
    @ivar linger: the refresh timer's lingers (L{Linger}); the stats feed lingers its
        C{response}-mode subscriptions on it too.
    @ivar ended_by_linger: subscriptions ended when their linger ran out.
    """

    _log = Logger()

    def __init__(self, clock: "IReactorTime", router: "ChannelRouter", *, linger: float = 60.0,
                 lingers: Callable[["Subscriber"], bool] = is_long_poll) -> None:
        self._clock = clock
        self._router = router
        self._lingers = lingers
        self.linger = Linger(clock, linger)
        #: every subscribed channel, held or lingering (Pushpin's C{cs.subs})
        self._subs: dict[str, None] = {}
        self._listeners: list["InterestListener"] = []
        #: the subscribed prefixes, held or lingering
        self._prefixes: PrefixIndex[str, None] = PrefixIndex()
        #: the listeners that follow prefixes too
        self._prefix_listeners: list["PrefixInterestListener"] = []
        self._stopped = False
        self.ended_by_linger = 0
        router.add_interest_listener(self)
        router.add_emptied_listener(self._emptied)
        router.add_prefix_listener(self)
        for channel in router.channels():
            self._subs[channel] = None
        for prefix in router.prefixes():
            self._prefixes.add(prefix, None)

    # what listeners see: the router's interest-source interface -------------------------------

    def add_interest_listener(self, listener: "InterestListener") -> None:
        """
        Tell C{listener} when a channel's subscription starts and when it ends, and a
        prefix's too when it has C{prefix_added} and C{prefix_removed}.
        """
        self._listeners.append(listener)
        if hasattr(listener, "prefix_added"):
            self._prefix_listeners.append(listener)  # type: ignore[arg-type]

    def remove_interest_listener(self, listener: "InterestListener") -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)
        if listener in self._prefix_listeners:
            self._prefix_listeners.remove(listener)  # type: ignore[arg-type]

    def prefixes(self) -> Iterable[str]:
        """The subscribed prefixes, lingering ones included (a snapshot)."""
        return list(self._prefixes)

    def reaches(self, channel: str) -> bool:
        """Whether a publish to C{channel} is for this process: subscribed, or under a subscribed prefix."""
        return channel in self._subs or self._prefixes.matches(channel)

    def channels(self) -> Iterable[str]:
        """The subscribed channels, lingering ones included (a snapshot)."""
        return list(self._subs)

    def has(self, channel: str) -> bool:
        """Whether C{channel} is subscribed (held, or lingering): Pushpin's C{cs.subs.contains}."""
        return channel in self._subs

    def lingering(self, channel: str) -> bool:
        """Whether C{channel} is subscribed with nobody left on it, waiting for its linger to end."""
        return channel in self.linger

    # the router's listeners --------------------------------------------------------------------

    def channel_added(self, channel: str) -> None:
        """A channel's first subscriber: a new subscription, or a lingering one that goes on."""
        if self.linger.cancel(channel) or channel in self._subs:
            return
        self._subs[channel] = None
        for listener in list(self._listeners):
            self._tell(listener.channel_added, channel)

    def channel_removed(self, channel: str) -> None:
        """(Handled in L{_emptied}, which knows who left last.)"""

    def _emptied(self, channel: str, last: "Subscriber") -> None:
        if channel not in self._subs:
            return
        if self._stopped or not self._lingers(last):
            self._end(channel)
            return
        self.linger.start(channel, self._lingered)

    # the router's prefix listener: the same rules, per prefix ----------------------------------

    def prefix_added(self, prefix: str) -> None:
        """A prefix's first prefix subscriber: a new subscription, or a lingering one that goes on."""
        if self.linger.cancel(("prefix", prefix)) or prefix in self._prefixes:
            return
        self._prefixes.add(prefix, None)
        for listener in list(self._prefix_listeners):
            self._tell(listener.prefix_added, prefix)

    def prefix_emptied(self, prefix: str, last: "Subscriber") -> None:
        if prefix not in self._prefixes:
            return
        if self._stopped or not self._lingers(last):
            self._end_prefix(("prefix", prefix))
            return
        self.linger.start(("prefix", prefix), self._prefix_lingered)

    def _prefix_lingered(self, key: Hashable) -> None:
        self.ended_by_linger += 1
        self._end_prefix(key)

    def _end_prefix(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        prefix = key[1]
        self.linger.cancel(key)
        if not self._prefixes.remove(prefix):
            return
        for listener in list(self._prefix_listeners):
            self._tell(listener.prefix_removed, prefix)

    # the linger --------------------------------------------------------------------------------

    def _lingered(self, channel: Hashable) -> None:
        assert isinstance(channel, str)
        self.ended_by_linger += 1
        self._end(channel)

    def _end(self, channel: str) -> None:
        """Pushpin's C{removeSub}: the subscription ends and every listener hears it."""
        self.linger.cancel(channel)
        if channel not in self._subs:
            return
        del self._subs[channel]
        for listener in list(self._listeners):
            self._tell(listener.channel_removed, channel)

    def _tell(self, method: Callable[[str], None], channel: str) -> None:
        try:  # as the router does: one failing listener must not stop the others
            method(channel)
        except Exception:
            self._log.failure("subscription listener failed for channel {channel}", channel=channel)

    def stop(self) -> None:
        """
        Cancel the linger's timer (the service is stopping): lingering channels stay
        subscribed, and from now on a channel's last subscriber ends its subscription at once.
        """
        self._stopped = True
        self.linger.stop()
