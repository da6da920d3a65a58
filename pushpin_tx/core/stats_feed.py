# -*- test-case-name: tests.zeromq.test_stats -*-
"""
The stats feed: what Pushpin's handler publishes on its C{stats_spec} PUB socket
(reference §10), so that tools written against Pushpin keep working.

Every message is one frame, C{b"<type> T" + tnetstring} or C{b"<type> J" + json}
(C{stats_format}). Field names, value types and timing follow Pushpin 1.36
(C{src/core/statsmanager.cpp}, C{packet/statspacket.cpp}), checked against the 1.36.0
binary on loopback:

  - every packet carries C{from} (the instance id, C{pushpin-handler_<pid>} in Pushpin)
    and C{route} only when it is a non-empty route id;
  - C{conn}: C{id}, C{type} (C{http}|C{ws}), C{peer-address}, C{ssl} (only when true),
    C{ttl}; re-sent every 3/4 of the ttl while the connection lives; a disconnect is
    C{id} + C{unavailable: true};
  - C{sub}: C{mode}, C{channel}, C{ttl}, C{subscribers}; re-sent every 3/4 of its ttl,
    and within a second of a subscriber count change; the last unsubscribe sends
    C{unavailable: true}, for C{response} mode only when its linger ends (a new
    subscriber in the meantime cancels it): on the first 1 s refresh tick at or past
    C{subscription_linger} seconds, C{0} included (Pushpin's C{removeSubscription(linger)}
    and C{handleExpirations}). That linger is L{pushpin_tx.core.linger.Linger}, the one the
    process's subscriptions linger on: once the service calls L{StatsPublisher.follow}, a
    long-poll's C{unavailable} and the SUB socket's C{UNSUBSCRIBE} go out on the same tick,
    as in Pushpin, where both come from the stats manager's expiry;
  - C{message}: C{channel}, C{item-id} (when the item has an id), C{count}, C{blocks}
    (only when known), C{transport}; sent at once, with no route;
  - C{activity}: C{count}, summed per route over 100 ms;
  - C{report}, every C{stats_report_interval} seconds, one per route that has
    anything to report; a route's report is dropped after it sent C{connections: 0}.
    C{duration} is in milliseconds. Of its fields, C{connections} (the most concurrent
    connections in the interval) and C{minutes} (connection-minutes, one counted at
    connect, then whole minutes) come from the connection table here; C{received}
    (items published) and C{sent} (deliveries) from L{Counters}; C{http-response-sent}
    from L{StatsPublisher.message} calls. The twelve C{client-*}/C{server-*} byte and
    message counters are sent as 0: pushpin-tx does not track them yet;
  - C{counts} (C{requests-received}) is sent with the reports when requests arrived;
    Pushpin sends it 100 ms after them.

Refreshes run on a single timer over insertion-ordered tables (all entries of a table
share one ttl, so the oldest refresh is always at the front): the cost is proportional
to what is due, never to the number of connections.

The publisher does no I/O itself: its owner attaches a C{send(frame)} callable (the PUB
socket); until then, and after L{StatsPublisher.stop}, nothing is sent and no timer runs
(the connection table is still kept, for L{StatsPublisher.is_connected}).

Interest: a ZeroMQ PUB socket drops every frame no subscriber's prefix matches, so a
packet nobody subscribed to is never seen. When the owner knows the subscriptions (the
stats socket is an XPUB, L{pushpin_tx.zeromq.inputs}), it passes them to
L{StatsPublisher.set_interest}, and a packet type no subscription can match (C{message}
when only C{report} is asked for, or everything when nobody listens) is not built at all:
a publish flood with nobody on the stats socket spent 19 % of the process building
C{message} packets (py-spy, bench/README.md). Subscribers see what a PUB would have sent
them; the state behind the packets (connections, subscriptions, report counts) is kept
either way, so the next refresh or report is whole. Without interest information
(C{None}, the default: a worker's packets, tests) every packet is built and sent.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any, Callable, Iterable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pushpin_tx.core.refresh import Linger
from pushpin_tx.protocol import tnetstring

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall

    from pushpin_tx.core.stats import Counters

__all__ = ["StatsPublisher", "encode_packet"]

#: Share of a ttl after which an entry is re-sent (Pushpin's SHOULD_PROCESS_TIME).
_REFRESH_SHARE = 0.75
#: A subscriber count change is announced within this many seconds (Pushpin's refresh tick).
_SOON = 1.0
#: Activity counts are summed over this many seconds (Pushpin's ACTIVITY_TIMEOUT).
_ACTIVITY_DELAY = 0.1

_REPORT_ZERO_FIELDS = (
    "client-header-bytes-received",
    "client-header-bytes-sent",
    "client-content-bytes-received",
    "client-content-bytes-sent",
    "client-messages-received",
    "client-messages-sent",
    "server-header-bytes-received",
    "server-header-bytes-sent",
    "server-content-bytes-received",
    "server-content-bytes-sent",
    "server-messages-received",
    "server-messages-sent",
)


#: the C{transport} values of C{message} packets, as tnetstring key + value
_TNET_TRANSPORTS = {t: b"9:transport,%d:%s," % (len(t), t.encode("ascii"))
                    for t in ("http-response", "http-stream", "ws-message")}


def _tnet_text(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"%d:%s," % (len(data), data)


def _message_frame(head: bytes, channel: str, item_id: str | None, count: int, blocks: int | None,
                   transport: str, fmt: str) -> bytes:
    """
    A C{message} packet, the same bytes as L{encode_packet} writes for its fields (tested
    against it), built without the generic walk: one is sent per published item.
    C{head} is the encoded C{from} field (L{StatsPublisher._message_head}).
    """
    if fmt == "json":
        body = ('{"blocks":%d,' % blocks if blocks is not None else "{") + '"channel":' + encode_basestring(channel)
        body += ',"count":%d' % count
        if head:
            body += head.decode("utf-8")
        if item_id is not None:
            body += ',"item-id":' + encode_basestring(item_id)
        body += ',"transport":' + encode_basestring(transport) + "}"
        return b"message J" + body.encode("utf-8")
    payload = head + b"7:channel," + _tnet_text(channel)
    if item_id is not None:
        payload += b"7:item-id," + _tnet_text(item_id)
    digits = b"%d" % count
    payload += b"5:count,%d:%s#" % (len(digits), digits)
    if blocks is not None:
        digits = b"%d" % blocks
        payload += b"6:blocks,%d:%s#" % (len(digits), digits)
    payload += _TNET_TRANSPORTS.get(transport) or (b"9:transport," + _tnet_text(transport))
    return b"message T%d:%s}" % (len(payload), payload)


def encode_packet(packet_type: str, fields: dict[str, Any], fmt: str) -> bytes:
    """
    One stats frame. C{fmt} is C{"json"} (compact, keys sorted, UTF-8 unescaped: what Qt's
    C{QJsonDocument::toJson(Compact)} writes) or anything else for tnetstring.
    """
    if fmt == "json":
        body = json.dumps(fields, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        return packet_type.encode("ascii") + b" J" + body.encode("utf-8")
    return packet_type.encode("ascii") + b" T" + tnetstring.dumps(fields)


class _Conn:
    __slots__ = ("id", "type", "peer", "ssl", "route", "refreshed", "minute_mark")

    def __init__(self, conn_id: str, conn_type: str, peer: str | None, ssl: bool, route: str,
                 now: float, minute_mark: float) -> None:
        self.id = conn_id
        self.type = conn_type
        self.peer = peer
        self.ssl = ssl
        self.route = route
        self.refreshed = now
        self.minute_mark = minute_mark


class _Sub:
    __slots__ = ("subscribers", "refreshed")

    def __init__(self, now: float) -> None:
        self.subscribers = 1
        self.refreshed = now


class _Report:
    __slots__ = ("connections", "stale", "minutes", "received", "sent", "http_response_sent", "started")

    def __init__(self, now: float) -> None:
        self.connections = 0
        self.stale = True  # the next count update replaces, not maximises
        self.minutes = 0
        self.received = 0
        self.sent = 0
        self.http_response_sent = 0
        self.started = now


class StatsPublisher:
    """
    Builds and paces Pushpin's stats packets; see the module docstring for the wire format.

    @param clock: provides C{seconds}/C{callLater} (the reactor, or a C{Clock} in tests).
    @param counters: the process L{Counters}; reports read C{items_published},
        C{deliveries} and C{requests_received} from it as deltas.
    @param fmt: C{"tnetstring"} or C{"json"} (C{stats_format}).
    @param instance_id: the C{from} field; omitted when empty.
    """

    _log = Logger()

    def __init__(self, clock: Any, counters: "Counters", *, fmt: str = "tnetstring",
                 instance_id: str = "", connection_ttl: int = 120, subscription_ttl: int = 60,
                 subscription_linger: int = 60, report_interval: int = 10) -> None:
        self._clock = clock
        self._counters = counters
        self._fmt = fmt
        self.instance_id = instance_id
        self._conn_ttl = connection_ttl
        self._sub_ttl = subscription_ttl
        #: where response-mode subscriptions linger (its own until L{follow} shares the process's)
        self._linger = Linger(clock, subscription_linger)
        self._own_linger = True
        self._report_interval = report_interval
        self._send: Callable[[bytes], None] | None = None
        self._conns: OrderedDict[str, _Conn] = OrderedDict()
        self._route_conns: dict[str, int] = {}
        self._subs: OrderedDict[tuple[str, str], _Sub] = OrderedDict()
        #: the keys of ours lingering on C{_linger}: C{("sub", mode, channel)}
        self._lingering: dict[tuple[str, str, str], None] = {}
        self._dirty: dict[tuple[str, str], None] = {}
        self._reports: dict[str, _Report] = {}
        self._activity: dict[str, int] = {}
        self._timer: IDelayedCall | None = None
        self._activity_timer: IDelayedCall | None = None
        self._report_loop: LoopingCall | None = None
        self._marks = (0, 0, 0)
        #: the subscribed prefixes (None: not known, everything is sent)
        self._topics: frozenset[bytes] | None = None
        #: per packet type: whether some subscription may match it (filled on demand)
        self._wanted: dict[str, bool] = {}
        #: whether message packets are built: attached, and wanted (kept by _interest_changed)
        self._messages = False
        #: the encoded from field of message packets, and the instance id it is for
        self._head: tuple[str, bytes] = ("", b"")

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether packets are being sent (a socket is attached)."""
        return self._send is not None

    def attach(self, send: Callable[[bytes], None]) -> None:
        """Start sending through C{send} (one frame per call; it must not block or raise)."""
        self._send = send
        self._marks = self._counter_marks()
        self._interest_changed()
        self._schedule()

    def follow(self, subscriptions: Any) -> None:
        """
        Linger C{response}-mode subscriptions on the process's subscriptions' linger
        (L{pushpin_tx.core.linger.Subscriptions.linger}: one refresh timer, one rule) instead of
        one of our own. (Typed loosely: the subscriptions module imports the holds, which import us.)
        """
        if subscriptions.linger is self._linger:
            return
        for key in list(self._lingering):  # (nothing lingers before the service is wired)
            self._linger.cancel(key)
            subscriptions.linger.start(key, self._lingered)
        self._linger.stop()
        self._linger = subscriptions.linger
        self._own_linger = False

    def set_interest(self, topics: Iterable[bytes] | None) -> None:
        """
        The prefixes the stats socket's subscribers have subscribed to (C{b""}: everything),
        or C{None} when they are not known: then every packet is built and sent. A packet
        type that no prefix can match is not built (see the module docstring).
        """
        self._topics = None if topics is None else frozenset(topics)
        self._interest_changed()

    def wants(self, packet_type: str) -> bool:
        """Whether a C{packet_type} packet could reach a subscriber (always, without interest information)."""
        topics = self._topics
        if topics is None:
            return True
        wanted = self._wanted.get(packet_type)
        if wanted is None:
            prefix = packet_type.encode("ascii") + (b" J" if self._fmt == "json" else b" T")
            # a frame starts with the prefix: a shorter topic matches all of them or none, a
            # longer one may match some (the socket decides those)
            wanted = self._wanted[packet_type] = any(prefix.startswith(t) or t.startswith(prefix) for t in topics)
        return wanted

    @property
    def wants_messages(self) -> bool:
        """Whether L{message} builds packets now (attached, and someone may want them)."""
        return self._messages

    def _interest_changed(self) -> None:
        self._wanted.clear()
        self._messages = self._send is not None and self.wants("message")

    def start(self) -> None:
        """Start the periodic reports (needs L{attach} first to send anything)."""
        if self._report_interval > 0 and self._report_loop is None:
            self._report_loop = LoopingCall(self.report)
            self._report_loop.clock = self._clock
            self._report_loop.start(self._report_interval, now=False)

    def stop(self) -> None:
        """Stop every timer, forget all state and detach the sender."""
        if self._report_loop is not None:
            if self._report_loop.running:
                self._report_loop.stop()
            self._report_loop = None
        for timer in (self._timer, self._activity_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._activity_timer = None
        self._send = None
        self._topics = None
        self._interest_changed()
        self._conns.clear()
        self._route_conns.clear()
        self._subs.clear()
        for key in self._lingering:
            self._linger.cancel(key)
        self._lingering.clear()
        if self._own_linger:
            self._linger.stop()
        self._dirty.clear()
        self._reports.clear()
        self._activity.clear()

    # --- events from the hold/accept code --------------------------------------------------

    def connected(self, conn_id: str, type: str, peer_address: str | None, ssl: bool,
                  route: str | None = None) -> None:
        """
        A client connection is held (C{type} C{"http"} or C{"ws"}): announce it, keep it fresh.
        The table is kept even with no socket attached, for L{is_connected}.
        """
        now = self._clock.seconds()
        route = route or ""
        old = self._conns.pop(conn_id, None)
        if old is not None:  # Pushpin silently replaces a known id, keeping its minute count
            self._count_route(old.route, -1, now)
            minute_mark = old.minute_mark
        else:
            minute_mark = now
            # connection-minutes are rounded up, so the first one counts at once
            self._report(route, now).minutes += 1
        conn = self._conns[conn_id] = _Conn(conn_id, type, peer_address, bool(ssl), route, now, minute_mark)
        self._count_route(route, +1, now)
        self._send_conn(conn)
        self._schedule_by(now + _REFRESH_SHARE * self._conn_ttl)

    def disconnected(self, conn_id: str, route: str | None = None) -> None:
        """A connection announced by L{connected} ended (unknown ids are ignored, as in Pushpin)."""
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return
        now = self._clock.seconds()
        self._add_minutes(conn, now)
        self._count_route(conn.route, -1, now)
        self._packet("conn", {"id": conn.id, "unavailable": True}, conn.route)

    def is_connected(self, conn_id: str) -> bool:
        """Whether C{conn_id} is a live connection (Pushpin answers C{conncheck} from this table)."""
        return conn_id in self._conns

    def connection_ids(self) -> list[str]:
        """Every live connection id (what L{is_connected} answers from)."""
        return list(self._conns)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def subscribed(self, channel: str, mode: str) -> None:
        """One more subscriber of C{mode} (C{response}|C{stream}|C{ws}) on C{channel}."""
        if self._send is None:
            return
        key = (mode, channel)
        sub = self._subs.get(key)
        if sub is not None:
            sub.subscribers += 1
            self._mark_dirty(key)
            return
        now = self._clock.seconds()
        linger_key = ("sub", mode, channel)
        if linger_key in self._lingering:  # back from linger: announced again at once
            del self._lingering[linger_key]
            self._linger.cancel(linger_key)
        sub = self._subs[key] = _Sub(now)
        self._send_sub(key, sub)
        self._schedule_by(now + _REFRESH_SHARE * self._sub_ttl)

    def unsubscribed(self, channel: str, mode: str) -> None:
        """One subscriber fewer; the last one leaving announces C{unavailable} (lingering for C{response})."""
        if self._send is None:
            return
        key = (mode, channel)
        sub = self._subs.get(key)
        if sub is None:
            return
        sub.subscribers -= 1
        if sub.subscribers > 0:
            self._mark_dirty(key)
            return
        del self._subs[key]
        self._dirty.pop(key, None)
        if mode == "response":  # Pushpin's removeSessionChannel: "linger the unsub in case client long-polls again"
            linger_key = ("sub", mode, channel)
            self._lingering[linger_key] = None
            self._linger.start(linger_key, self._lingered)
        else:
            self._packet("sub", {"mode": mode, "channel": channel, "unavailable": True})

    def _lingered(self, key: Any) -> None:
        """A response-mode subscription's linger ended (the refresh tick): C{unavailable}."""
        if key not in self._lingering:
            return
        del self._lingering[key]
        if self._send is None:
            return
        _, mode, channel = key
        self._packet("sub", {"mode": mode, "channel": channel, "unavailable": True})

    def message(self, channel: str, item_id: str | None, count: int, transport: str,
                route: str | None = None, blocks: int | None = None) -> None:
        """An item was delivered to C{count} receivers over C{transport} (sent at once)."""
        send = self._send
        if send is None:
            return
        if transport == "http-response" and count > 0:
            self._report(route or "", self._clock.seconds()).http_response_sent += count
        if not self._messages:
            return  # nobody subscribed to message packets (the count above still goes in the report)
        instance_id = self.instance_id
        if self._head[0] != instance_id:
            self._head = (instance_id, self._message_head(instance_id))
        try:
            send(_message_frame(self._head[1], channel, item_id, max(count, 0),
                                blocks if blocks is not None and blocks >= 0 else None, transport, self._fmt))
        except Exception:
            self._log.failure("stats: sending a {type} packet failed", type="message")

    def activity(self, route: str | None, count: int) -> None:
        """Client activity on a route; summed and sent 100 ms after the first of a burst."""
        if self._send is None or count <= 0:
            return
        route = route or ""
        self._activity[route] = self._activity.get(route, 0) + count
        if self._activity_timer is None or not self._activity_timer.active():
            self._activity_timer = self._clock.callLater(_ACTIVITY_DELAY, self._flush_activity)

    def report(self) -> None:
        """Send one C{report} per route with something to say (run every report interval)."""
        if self._send is None:
            return
        now = self._clock.seconds()
        received, sent, requests = self._counter_marks()
        old_received, old_sent, old_requests = self._marks
        self._marks = (received, sent, requests)
        if received > old_received or sent > old_sent:
            base = self._report("", now)
            base.received += received - old_received
            base.sent += sent - old_sent
        for route, rep in list(self._reports.items()):
            if rep.stale:
                rep.connections = self._route_conns.get(route, 0)
            fields: dict[str, Any] = {
                "connections": rep.connections,
                "minutes": rep.minutes,
                "received": rep.received,
                "sent": rep.sent,
                "http-response-sent": rep.http_response_sent,
                "duration": int(round((now - rep.started) * 1000)),
            }
            for name in _REPORT_ZERO_FIELDS:
                fields[name] = 0
            self._packet("report", fields, route)
            if rep.connections == 0:
                del self._reports[route]  # empty after this: forgotten until something happens
            else:
                rep.started = now
                rep.stale = True
                rep.minutes = rep.received = rep.sent = rep.http_response_sent = 0
        if requests > old_requests:
            self._packet("counts", {"requests-received": requests - old_requests})

    # --- internals -------------------------------------------------------------------------

    def _counter_marks(self) -> tuple[int, int, int]:
        c = self._counters
        return (c.items_published, c.deliveries, c.requests_received)

    def _message_head(self, instance_id: str) -> bytes:
        """The C{from} field of a message packet, encoded for L{_message_frame} (empty without an id)."""
        if not instance_id:
            return b""
        if self._fmt == "json":
            return (',"from":' + encode_basestring(instance_id)).encode("utf-8")
        return b"4:from," + _tnet_text(instance_id)

    def _packet(self, packet_type: str, fields: dict[str, Any], route: str = "") -> None:
        send = self._send
        if send is None:
            return
        if self._topics is not None and not self.wants(packet_type):
            return
        head: dict[str, Any] = {}
        if self.instance_id:
            head["from"] = self.instance_id
        if route:
            head["route"] = route
        head.update(fields)
        try:
            send(encode_packet(packet_type, head, self._fmt))
        except Exception:
            self._log.failure("stats: sending a {type} packet failed", type=packet_type)

    def _send_conn(self, conn: _Conn) -> None:
        fields: dict[str, Any] = {"id": conn.id, "type": conn.type}
        if conn.peer:
            fields["peer-address"] = conn.peer
        if conn.ssl:
            fields["ssl"] = True
        fields["ttl"] = self._conn_ttl
        self._packet("conn", fields, conn.route)

    def _send_sub(self, key: tuple[str, str], sub: _Sub) -> None:
        mode, channel = key
        self._packet("sub", {"mode": mode, "channel": channel, "ttl": self._sub_ttl,
                             "subscribers": sub.subscribers})

    def _report(self, route: str, now: float) -> _Report:
        rep = self._reports.get(route)
        if rep is None:
            rep = self._reports[route] = _Report(now)
        return rep

    def _count_route(self, route: str, delta: int, now: float) -> None:
        count = self._route_conns.get(route, 0) + delta
        if count:
            self._route_conns[route] = count
        else:
            self._route_conns.pop(route, None)
        rep = self._report(route, now)
        if rep.stale:
            rep.connections = count
            rep.stale = False
        else:
            rep.connections = max(rep.connections, count)

    def _add_minutes(self, conn: _Conn, now: float) -> None:
        minutes = int((now - conn.minute_mark) // 60)
        if minutes > 0:
            conn.minute_mark += minutes * 60
            self._report(conn.route, now).minutes += minutes

    def _mark_dirty(self, key: tuple[str, str]) -> None:
        self._dirty[key] = None
        self._schedule_by(self._clock.seconds() + _SOON)

    def _next_due(self) -> float | None:
        dues = []
        if self._conns:
            dues.append(next(iter(self._conns.values())).refreshed + _REFRESH_SHARE * self._conn_ttl)
        if self._subs:
            dues.append(next(iter(self._subs.values())).refreshed + _REFRESH_SHARE * self._sub_ttl)
        if self._dirty:
            dues.append(self._clock.seconds() + _SOON)
        return min(dues) if dues else None

    def _schedule_by(self, due: float) -> None:
        """
        L{_schedule} after one entry was added or marked, due at C{due}, and nothing else
        changed: an armed timer already fires early enough when it fires by C{due}, since no
        armed timer fires after the earliest due entry (whatever makes an entry due sooner
        calls this or L{_schedule}). Saves finding the earliest due entry on every held
        connection and every new subscription while the timer is armed, which it is as long
        as anything is kept.
        """
        timer = self._timer
        if timer is not None and timer.active() and timer.getTime() <= due:
            return
        self._schedule()

    def _schedule(self) -> None:
        """Keep the one refresh timer armed for the earliest due entry (only while attached)."""
        if self._send is None:
            return
        due = self._next_due()
        timer = self._timer
        if due is None:
            return
        if timer is not None and timer.active():
            if timer.getTime() <= due:
                return  # it fires early enough; it re-arms itself then
            timer.cancel()
        self._timer = self._clock.callLater(max(due - self._clock.seconds(), 0), self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._send is None:
            return
        now = self._clock.seconds()
        conn_due = now - _REFRESH_SHARE * self._conn_ttl
        while self._conns:
            conn = next(iter(self._conns.values()))
            if conn.refreshed > conn_due:
                break
            conn.refreshed = now
            self._conns.move_to_end(conn.id)
            self._add_minutes(conn, now)
            self._send_conn(conn)
        sub_due = now - _REFRESH_SHARE * self._sub_ttl
        refresh: dict[tuple[str, str], None] = {}
        for key, sub in self._subs.items():  # ordered by last refresh: stop at the first not due
            if sub.refreshed > sub_due:
                break
            refresh[key] = None
        for key in self._dirty:
            if key in self._subs:
                refresh[key] = None
        self._dirty.clear()
        for key in refresh:
            sub = self._subs[key]
            sub.refreshed = now
            self._subs.move_to_end(key)
            self._send_sub(key, sub)
        self._schedule()

    def _flush_activity(self) -> None:
        self._activity_timer = None
        pending, self._activity = self._activity, {}
        for route, count in pending.items():
            self._packet("activity", {"count": count}, route)
