# -*- test-case-name: tests.ops.test_console -*-
"""
The console's helper functions: the questions an operator asks a running proxy first
(which channels have listeners, who is held, how deep are their queues, what was dropped)
and a few levers (publish, drop a connection, reload routes).

L{ConsoleHelpers} reads a process through its L{pushpin_tx.ops.view.OpsView}, so it is
unit-tested without SSH over any object of that shape; L{pushpin_tx.ops.console} puts its L{ConsoleHelpers.namespace} behind
the SSH manhole. Results are plain values (dicts, a frozen L{ConnInfo}) or L{Text} tables
that the prompt prints as tables.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pushpin_tx.ops.view import OpsView
from pushpin_tx.protocol.items import ItemError, parse_item
from pushpin_tx.workers.pool import merge_counters

__all__ = ["ConnInfo", "ConsoleHelpers", "Text", "process_rows"]


class Text(str):
    """A string the console prompt shows as-is (its repr is itself), so tables read as tables."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """One held connection, as the console shows it.

    C{queue_depth}, C{dropped} and C{delivered} are C{None} for holds without a delivery
    queue (long-polls). C{route} is the route id when the hold carries one. C{channels} are
    its exact channels, C{prefixes} its prefix subscriptions (C{Grip-Channel: news.; prefix},
    a WebSocket's C{"prefix": true}).
    """

    conn_id: str
    kind: str
    peer: str | None
    route: str | None
    uri: str | None
    channels: tuple[str, ...]
    queue_depth: int | None
    dropped: int | None
    delivered: int | None
    age: float
    prefixes: tuple[str, ...] = ()

    def line(self) -> str:
        """A one-line summary, as L{ConsoleHelpers.conns} prints it."""
        queue = "-" if self.queue_depth is None else str(self.queue_depth)
        dropped = "-" if self.dropped is None else str(self.dropped)
        return (
            f"{self.conn_id:>8} {self.kind:<8} {self.age:>8.1f}s {queue:>6} {dropped:>7}"
            f" {self.peer or '-':<21} {','.join(self.channels)}"
            + (f"  prefixes={','.join(self.prefixes)}" if self.prefixes else "")
            + (f"  route={self.route}" if self.route else "")
        )


_CONNS_HEADER = f"{'id':>8} {'kind':<8} {'age':>9} {'queue':>6} {'dropped':>7} {'peer':<21} channels"

_HELP = Text(
    """pushpin-tx console helpers:
  channels()             channel -> subscriber count, sorted by channel (exact channels only)
  prefixes()             prefix -> prefix subscriber count, sorted by prefix (Grip-Channel: news.; prefix)
  conns(limit=100)       one line per held connection (id, kind, age, queue depth, drops, peer, channels,
                         prefixes)
  conn(conn_id)          details of one held connection (peer, route, channels, prefixes, queue depth,
                         dropped, age)
  publish(channel, content)
                         publish an http-stream + http-response item (content as given, no newline added);
                         returns how many subscribers the channel had
  close(conn_id)         drop a held connection now; True if it was held
  reload()               re-read the routes file (as SIGHUP does)
  stats()                counters: requests, held connections, channels, prefixes, publishes, deliveries,
                         drops
                         (with workers > 1: summed over every process, workers' figures at most 1 s old)
  workers()              one line per process: pid, held connections, channels, prefixes, deliveries, drops
                         (conns(), conn(), close(), channels() and prefixes() see this process's
                         connections only)
  backplane()            the Redis backplane: state (up/down/connecting), since, counters
                         (published, received, local_only, unconfirmed, ...); {'state': 'off'} without one
  help()                 this text; help(obj) is Python's help on obj
Objects: service, router, counters, acceptor, intake.
Ctrl-D on an empty line ends your session; the proxy keeps running."""
)


def _find(view: OpsView, conn_id: str) -> Any:
    for table in view.connection_tables():
        hold = table.get(conn_id)
        if hold is not None:
            return hold
    return None


def process_rows(view: OpsView) -> list[dict[str, Any]]:
    """
    One row per process, this one (worker 0) first: pid, alive, held connections, channels,
    prefixes, deliveries, requests received and drops; workers' rows from their latest snapshots.
    """
    pool = view.workers
    own = {
        "worker": view.worker_index, "pid": os.getpid(), "alive": True,
        "held": sum(len(t) for t in view.connection_tables()),
        "channels": len(list(view.router.channels())),
        "prefixes": len(list(view.router.prefixes())),
        "deliveries": view.counters.deliveries,
        "requests_received": view.counters.requests_received,
        "drops": sum(view.counters.drops.values()),
    }
    return [own] + (pool.table() if pool is not None else [])


def _request_of(hold: Any) -> Any:
    # HTTP holds keep their client request private (it is their HttpSink); the console only
    # reads its address and URI, and aborts it for close().
    return getattr(hold, "_sink", None)


def _peer_of(link: Any) -> str | None:
    try:
        if hasattr(link, "getClientAddress"):
            address = link.getClientAddress()
        else:  # a WebSocket session's client link: a protocol with a transport
            address = link.transport.getPeer()
    except Exception:
        return None
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if host is None:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port is not None else host


def _uri_of(request: Any) -> str | None:
    try:
        scheme = "https" if request.isSecure() else "http"
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        return f"{scheme}://{host}{request.uri.decode('latin-1')}"
    except Exception:
        return None


def _prefixes_of(hold: Any) -> Any:
    # an HTTP hold's prefix subscriptions are its prefix_channels, a WebSocket session's its prefixes
    prefixes = getattr(hold, "prefix_channels", None)
    return prefixes if prefixes is not None else getattr(hold, "prefixes", ())


def _conn_sort_key(conn_id: str) -> tuple[int, str]:
    return (len(conn_id), conn_id)  # numeric ids in numeric order


class ConsoleHelpers:
    """
    The console's helper functions, over a process's L{OpsView}.

    @param view: what the helpers read (router, counters, connections, workers, backplane)
        and the two levers they pull (C{publish}, C{reload}).
    @param objects: more live objects put in the console's namespace as they are, by name
        (the service gives its own: C{service}, C{acceptor}, C{intake}).
    """

    def __init__(self, view: OpsView, objects: Mapping[str, object] | None = None) -> None:
        self._view = view
        self._objects = dict(objects or {})

    def namespace(self) -> dict[str, Any]:
        """The console's globals: the helpers plus the live objects they read."""
        v = self._view
        return {
            "help": self.help,
            "channels": self.channels,
            "prefixes": self.prefixes,
            "conn": self.conn,
            "conns": self.conns,
            "publish": self.publish,
            "close": self.close,
            "reload": self.reload,
            "stats": self.stats,
            "workers": self.workers,
            "backplane": self.backplane,
            "router": v.router,
            "counters": v.counters,
            **self._objects,
        }

    def help(self, obj: object = None) -> Text:
        """What the helpers do; C{help(obj)} is Python's own help text for C{obj}."""
        if obj is None:
            return _HELP
        import pydoc

        return Text(pydoc.render_doc(obj, renderer=pydoc.plaintext))  # type: ignore[attr-defined]  # not in typeshed

    def channels(self) -> dict[str, int]:
        """Channels with subscribers -> how many, sorted by channel name (exact subscriptions only)."""
        router = self._view.router
        return {name: router.subscriber_count(name) for name in sorted(router.channels())}

    def prefixes(self) -> dict[str, int]:
        """Channel prefixes with prefix subscribers -> how many, sorted by prefix."""
        router = self._view.router
        return {prefix: router.prefix_subscriber_count(prefix) for prefix in sorted(router.prefixes())}

    def conn(self, conn_id: str | int) -> ConnInfo:
        """One held connection; C{KeyError} if there is none with that id."""
        key = str(conn_id)
        hold = _find(self._view, key)
        if hold is None:
            raise KeyError(f"no held connection with id {key!r}")
        return self._info(key, hold)

    def conns(self, limit: int | None = 100) -> Text:
        """One line per held connection, oldest id first; at most C{limit} lines (None: all)."""
        connections: dict[str, Any] = {}
        for table in self._view.connection_tables():
            connections.update(table)
        ids = sorted(connections, key=_conn_sort_key)
        shown = ids if limit is None else ids[:limit]
        lines = [_CONNS_HEADER]
        lines.extend(self._info(i, connections[i]).line() for i in shown)
        if len(shown) < len(ids):
            lines.append(f"... {len(ids) - len(shown)} more (conns(limit=None) shows all)")
        lines.append(f"{len(ids)} held connection{'s' if len(ids) != 1 else ''}")
        return Text("\n".join(lines))

    def publish(self, channel: str, content: str | bytes) -> int:
        """
        Publish C{content} on C{channel} as one item with an C{http-stream} and an
        C{http-response} format, through the same intake as the control API.

        @return: how many subscribers the channel had when it was published (the item has
            no id or prev-id, so the sequencer, if any, sends it at once).
        """
        if isinstance(content, bytes):
            encoded = base64.b64encode(content).decode("ascii")
            formats = {"http-stream": {"content-bin": encoded}, "http-response": {"body-bin": encoded}}
        else:
            formats = {"http-stream": {"content": content}, "http-response": {"body": content}}
        try:
            item = parse_item({"channel": channel, "formats": formats})
        except ItemError as e:
            raise ValueError(f"invalid item: {e}") from None
        listeners = self._view.router.subscriber_count(channel)
        self._view.publish([item], "console")
        return listeners

    def close(self, conn_id: str | int) -> bool:
        """Drop a held connection at once (whatever it had queued is dropped and counted)."""
        hold = _find(self._view, str(conn_id))
        if hold is None:
            return False
        request = _request_of(hold)
        if request is not None:
            request.abort()
            hold.client_gone()  # idempotent; releases its subscriptions before the close is seen
        elif getattr(hold, "client", None) is not None:
            hold.client.drop()  # a WebSocket session: it ends when its connection does
        return True

    def reload(self) -> None:
        """Re-read the routes file, as SIGHUP does."""
        self._view.reload()

    def stats(self) -> dict[str, object]:
        """A snapshot of the process counters, plus the router's publish tallies."""
        s = self._view
        snapshot = dict(s.counters.snapshot())
        snapshot["held_connections"] = sum(len(t) for t in s.connection_tables())
        snapshot["channels"] = len(list(s.router.channels()))
        snapshot["prefixes"] = len(list(s.router.prefixes()))
        snapshot["router_published"] = s.router.published
        snapshot["router_published_idle"] = s.router.published_idle
        pool = s.workers
        if pool is not None:
            snaps = pool.snapshots()
            total = merge_counters([snapshot, pool.retired_counters] + [dict(w["counters"], held_connections=w["held"],
                                                      router_published=w["router_published"],
                                                      router_published_idle=w["router_published_idle"]) for w in snaps])
            total.pop("connection_minutes_closed", None)
            total["channels"] = len(list(pool.interest.channels()))
            total["prefixes"] = len(list(pool.interest.prefixes()))
            total["workers"] = 1 + len(snaps)
            return total
        return snapshot

    def backplane(self) -> dict[str, object]:
        """The Redis backplane's state and counters (the URL with its password hidden)."""
        backplane = self._view.backplane
        if backplane is None:
            return {"state": "off"}
        return backplane.snapshot()

    def workers(self) -> Any:
        """
        One line per process (0 is this one, the main process): figures fresh from each
        worker. Returns a Deferred with workers > 1 (the console prints it when it fires).
        """
        s = self._view
        pool = s.workers

        def table(_: object = None) -> Text:
            rows = process_rows(s)
            header = (f"{'worker':>6} {'pid':>7} {'alive':<5} {'held':>7} {'channels':>8} {'prefixes':>8}"
                      f" {'deliveries':>11} {'requests':>9} {'drops':>6}")
            lines = [header]
            for r in rows:
                lines.append(f"{r['worker']:>6} {r['pid'] or '-':>7} {'yes' if r['alive'] else 'no':<5} {r['held']:>7} "
                             f"{r['channels']:>8} {r.get('prefixes', 0):>8} {r['deliveries']:>11}"
                             f" {r['requests_received']:>9} {r['drops']:>6}")
            return Text("\n".join(lines))

        if pool is None:
            return table()
        return pool.refresh().addCallback(table)

    def _info(self, conn_id: str, hold: Any) -> ConnInfo:
        request = _request_of(hold)
        link = request if request is not None else getattr(hold, "client", None)
        queue = getattr(hold, "queue", None)
        return ConnInfo(
            conn_id=conn_id,
            kind=getattr(hold, "kind", "?"),
            peer=_peer_of(link) if link is not None else None,
            route=getattr(hold, "route_id", None),
            uri=_uri_of(request) if request is not None else None,
            channels=tuple(hold.channels),
            prefixes=tuple(_prefixes_of(hold)),
            queue_depth=len(queue) if queue is not None else None,
            dropped=queue.dropped if queue is not None else None,
            delivered=queue.delivered if queue is not None else None,
            age=round(self._view.reactor.seconds() - hold.started_at, 3),
        )
