"""Test doubles shared by the unit tests."""

from __future__ import annotations

from pushpin_tx.core.hold import HoldContext
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.stats import Counters


class RecordingSink:
    """An L{HttpSink} that records what a hold sends to its client."""

    def __init__(self, chunked: bool = True) -> None:
        self.chunked = chunked
        self.head: tuple | None = None
        self.body = b""
        self.framed: list[bytes] = []
        self.finished = False
        self.aborted = False
        self.producer = None

    def send_head(self, code, reason, headers, length):
        assert self.head is None, "head sent twice"
        self.head = (code, reason, list(headers), length)

    def write_framed(self, data):
        assert not self.finished
        self.framed.append(data)

    def write_body(self, data):
        assert not self.finished
        self.body += data

    def finish(self):
        assert not self.finished, "finished twice"
        self.finished = True

    def abort(self):
        self.aborted = True

    def register_producer(self, producer):
        self.producer = producer

    def unregister_producer(self):
        self.producer = None


def hold_context(clock, *, queue_limit=100, overflow="drop", drops=None, jitter=0.0) -> HoldContext:
    """A HoldContext on C{clock} whose drop reports land in C{drops}."""
    drops = drops if drops is not None else []
    return HoldContext(
        ChannelRouter(),
        clock,
        Counters(),
        queue_limit=queue_limit,
        overflow=overflow,
        on_drop=lambda conn, channel, reason: drops.append((conn, channel, reason)),
        random_=lambda: jitter,
    )
