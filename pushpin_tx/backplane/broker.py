# -*- test-case-name: tests.backplane.test_broker -*-
"""
Pushpin's two ZeroMQ brokers (C{tools/sourcebroker.py}, C{tools/edgebroker.py}) as one
reactor service, for publishers that cannot fan out to every instance themselves:

  - C{source}: a PULL socket takes items as the instances' PULL input does (C{J}+JSON,
    C{T}+tnetstring or a bare tnetstring, the channel inside) and an XPUB socket sends each
    as C{[channel, item]} (the channel taken out, the encoding kept) to the SUB sockets
    subscribed to that channel, and only when someone is (Pushpin's C{subs} set). A topic is
    a byte prefix of the channel, as ZeroMQ matches it: an instance's prefix subscription
    (C{news.}) takes every channel under it, so an item is sent when some topic is a prefix of
    its channel (Pushpin's exact set lookup first, then one lookup per distinct topic length);
  - C{edge}: a SUB socket connected to upstream XPUBs (a source broker or another edge)
    forwards what comes to an XPUB; the XPUB's interest (first subscriber of a channel,
    last one gone) is passed upstream as SUBSCRIBE/UNSUBSCRIBE, so a channel crosses the
    link only while some instance below is subscribed to it (an instance keeps a channel
    whose last subscriber was a long-poll subscribed for C{subscription_linger}:
    L{pushpin_tx.core.linger}). That is the second tier of a fan-out tree.

An XPUB reports a channel's first subscription and its last unsubscription only (not one
per subscriber: no C{XPUB_VERBOSE}), which is exactly the interest to keep. Its send
high-water mark is Pushpin's input one (101,000 messages per subscriber); beyond it ZeroMQ
drops (PUB semantics). Items that reach a source broker for a channel nobody holds are
counted (C{unheld}), as are unreadable ones (C{rejected}, logged).
"""

from __future__ import annotations

import json
from collections.abc import KeysView
from typing import Any, Sequence

import zmq
from twisted.application import service
from twisted.logger import Logger

from pushpin_tx.core.prefix_index import PrefixIndex
from pushpin_tx.protocol import tnetstring
from pushpin_tx.zeromq.reader import ZmqReader

__all__ = ["BrokerService", "split_item"]

HWM = 101000


def split_item(frame: bytes) -> tuple[bytes, bytes]:
    """
    A PULL-style item frame as (channel, the item without its channel, same encoding).
    C{ValueError} when it is not an item with a channel.
    """
    if frame[:1] == b"J":
        try:
            obj = json.loads(frame[1:])
        except ValueError as e:
            raise ValueError(f"invalid JSON ({e})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("channel"), str):
            raise ValueError("no channel")
        channel = obj.pop("channel")
        return channel.encode("utf-8"), b"J" + json.dumps(obj, separators=(",", ":")).encode("utf-8")
    prefix = b"T" if frame[:1] == b"T" else b""
    try:
        obj = tnetstring.loads(frame[len(prefix):])
    except Exception as e:
        raise ValueError(f"invalid tnetstring ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a tnetstring object")
    channel = obj.pop(b"channel", None)
    if not isinstance(channel, bytes):
        raise ValueError("no channel")
    return channel, prefix + tnetstring.dumps(obj)


class BrokerService(service.Service):
    """
    One broker. C{mode} is C{"source"} or C{"edge"}; C{inputs} are the PULL specs to bind
    (source) or the upstream XPUB specs to connect to (edge); C{outputs} the XPUB specs to
    bind (or connect to, with C{connect_out}: Pushpin's edge broker connects to SUB
    sockets that bind). C{endpoints} has what was bound, with real ports.
    """

    _log = Logger()

    def __init__(self, reactor: Any, mode: str, inputs: Sequence[str], outputs: Sequence[str], *,
                 connect_out: bool = False, context: zmq.Context | None = None) -> None:
        if mode not in ("source", "edge"):
            raise ValueError(f"unknown broker mode {mode!r}")
        if not inputs or not outputs:
            raise ValueError("a broker needs at least one input and one output")
        self.name = f"{mode}-broker"
        self._reactor = reactor
        self.mode = mode
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self._connect_out = connect_out
        self._borrowed = context
        self._ctx: zmq.Context | None = None
        self._in: ZmqReader | None = None
        self._out: ZmqReader | None = None
        self.endpoints: dict[str, list[str]] = {"in": [], "out": []}
        #: topics subscribed below us (the XPUB's interest)
        self._topics: PrefixIndex[bytes, None] = PrefixIndex()
        self.forwarded = 0
        self.unheld = 0
        self.rejected = 0

    @property
    def interest(self) -> KeysView[bytes]:
        """The topics subscribed below us (the XPUB's interest), live."""
        return self._topics.keys()

    def startService(self) -> None:
        super().startService()
        ctx = self._ctx = self._borrowed if self._borrowed is not None else zmq.Context()
        sockets: list[zmq.Socket] = []
        try:
            out = ctx.socket(zmq.XPUB)
            sockets.append(out)
            out.setsockopt(zmq.LINGER, 0)
            out.setsockopt(zmq.SNDHWM, HWM)
            for spec in self._outputs:
                self.endpoints["out"].append(self._attach(out, spec, "out", connect=self._connect_out))
            kind = zmq.PULL if self.mode == "source" else zmq.SUB
            inp = ctx.socket(kind)
            sockets.append(inp)
            inp.setsockopt(zmq.LINGER, 0)
            inp.setsockopt(zmq.RCVHWM, HWM)
            for spec in self._inputs:
                self.endpoints["in"].append(self._attach(inp, spec, "in", connect=self.mode == "edge"))
        except Exception:
            for sock in sockets:
                sock.close(linger=0)
            self._term()
            raise
        self._out = ZmqReader(self._reactor, out, self._on_interest, name=f"{self.mode}-broker-out")
        self._in = ZmqReader(self._reactor, inp, self._on_source if self.mode == "source" else self._on_edge,
                             name=f"{self.mode}-broker-in")
        self._out.start()
        self._in.start()

    def stopService(self) -> None:
        super().stopService()
        for reader in (self._in, self._out):
            if reader is not None:
                reader.stop()
        self._in = self._out = None
        self._term()

    def _term(self) -> None:
        ctx, self._ctx = self._ctx, None
        if ctx is not None and ctx is not self._borrowed:
            ctx.term()

    def _attach(self, sock: zmq.Socket, spec: str, label: str, *, connect: bool) -> str:
        if connect:
            sock.connect(spec)
            self._log.info("{broker} {label} connected to {endpoint}", broker=self.name, label=label, endpoint=spec)
            return spec
        sock.bind(spec)
        endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
        bound = endpoint.decode("utf-8") if isinstance(endpoint, bytes) else str(endpoint)
        self._log.info("{broker} {label} bound to {endpoint}", broker=self.name, label=label, endpoint=bound)
        return bound

    # --- interest from below -------------------------------------------------------------

    def _on_interest(self, frames: list[bytes]) -> None:
        event = frames[0]
        if not event or event[0] not in (0, 1):
            return
        channel = event[1:]
        text = channel.decode("utf-8", "replace")
        if event[0] == 1:
            if not self._topics.add(channel, None):
                return
            self._log.info("{broker}: subscribing [{channel}]", broker=self.name, channel=text)
            if self.mode == "edge" and self._in is not None:
                self._in.socket.setsockopt(zmq.SUBSCRIBE, channel)
                self._in.poke()
        else:
            if not self._topics.remove(channel):
                return
            self._log.info("{broker}: unsubscribing [{channel}]", broker=self.name, channel=text)
            if self.mode == "edge" and self._in is not None:
                self._in.socket.setsockopt(zmq.UNSUBSCRIBE, channel)
                self._in.poke()

    # --- items from above ----------------------------------------------------------------

    def _on_source(self, frames: list[bytes]) -> None:
        if len(frames) != 1:
            self.rejected += 1
            self._log.warn("{broker}: received message with parts != 1, skipping", broker=self.name)
            return
        try:
            channel, item = split_item(frames[0])
        except ValueError as e:
            self.rejected += 1
            self._log.warn("{broker}: received message with invalid format: {why}, skipping", broker=self.name, why=e)
            return
        # an exact topic in one set lookup; else some topic a byte prefix of it (as the XPUB matches)
        if channel not in self._topics.entries and not self._topics.matches(channel):
            self.unheld += 1
            return
        self._send([channel, item])

    def _on_edge(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.rejected += 1
            self._log.warn("{broker}: received message with parts != 2, skipping", broker=self.name)
            return
        self._send(frames)

    def _send(self, frames: list[bytes]) -> None:
        out = self._out
        if out is None:
            return
        out.socket.send_multipart(frames, zmq.NOBLOCK)  # XPUB never blocks: beyond the HWM it drops
        self.forwarded += 1
        out.poke()  # the send may have consumed the readable edge (new interest)
