"""
PublishIntake: its log line per item and its stats feed packets, with and without anyone on
the stats socket, on a Clock and without one.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from pushpin_tx.core.intake import PublishIntake
from pushpin_tx.core.router import ChannelRouter
from pushpin_tx.core.stats import Counters
from pushpin_tx.core.stats_feed import StatsPublisher, encode_packet
from pushpin_tx.protocol.items import parse_item


class Sub:
    """A subscriber of one kind (what the stats counts per transport are taken from)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.got: list[Any] = []

    def deliver(self, publication: Any, channel: str) -> None:
        self.got.append(channel)


def item(channel: str, *formats: str, item_id: str | None = None) -> Any:
    bodies = {"http-stream": {"content": "s"}, "ws-message": {"content": "w"}, "http-response": {"body": "r"}}
    raw: dict[str, Any] = {"channel": channel, "formats": {name: bodies[name] for name in formats}}
    if item_id is not None:
        raw["id"] = item_id
    return parse_item(raw)


@pytest.fixture
def events():
    """Every log event, as emitted."""
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def publish_lines(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events if formatEvent(e).startswith("publish ")]


@pytest.mark.parametrize("with_clock", [False, True])
def test_one_info_line_per_item_in_pushpins_shape(clock, events, with_clock):
    """`publish channel=<c> receivers=<n>` per item, at info, from the intake's logger, as Logger.info would emit it."""
    router = ChannelRouter()
    for kind in ("stream", "ws"):
        router.subscribe("a", Sub(kind))
    intake = PublishIntake(router, Counters(), clock=clock if with_clock else None)
    intake.publish([item("a", "http-stream"), item("a", "http-stream"), item("b", "http-stream")], "http")
    clock.advance(0)
    assert publish_lines(events) == ["publish channel=a receivers=2", "publish channel=a receivers=2",
                                     "publish channel=b receivers=0"]
    event = next(e for e in events if formatEvent(e).startswith("publish "))
    assert event["log_level"] is LogLevel.info and event["log_namespace"] == "pushpin_tx.core.intake.PublishIntake"
    assert event["log_source"] is intake and event["log_format"] == "{line}" and isinstance(event["log_time"], float)


def stats_with(clock: Any, topics: Any) -> tuple[StatsPublisher, list[bytes]]:
    stats = StatsPublisher(clock, Counters(), report_interval=0)
    frames: list[bytes] = []
    stats.set_interest(topics)
    stats.attach(frames.append)
    return stats, frames


@pytest.mark.parametrize("topics", [None, [b""], [b"message"]])
def test_message_packets_per_transport_with_receivers_when_someone_listens(clock, topics):
    """A stats subscriber gets one message packet per item and transport that has receivers, with their count."""
    router = ChannelRouter()
    for kind in ("stream", "stream", "ws"):
        router.subscribe("a", Sub(kind))
    stats, frames = stats_with(clock, topics)
    intake = PublishIntake(router, Counters(), stats)
    intake.publish([item("a", "http-stream", "ws-message", "http-response", item_id="i1"), item("a", "ws-message")], "http")
    assert frames == [
        encode_packet("message", {"channel": "a", "item-id": "i1", "count": 2, "transport": "http-stream"}, "tnetstring"),
        encode_packet("message", {"channel": "a", "item-id": "i1", "count": 1, "transport": "ws-message"}, "tnetstring"),
        encode_packet("message", {"channel": "a", "count": 1, "transport": "ws-message"}, "tnetstring"),
    ]
    stats.stop()


def test_nothing_is_built_for_nobody_but_response_counts_still_reach_the_report(clock):
    """No subscriber for message packets: none is built; receivers of http-response items still count in the report."""
    router = ChannelRouter()
    router.subscribe("a", Sub("stream"))
    router.subscribe("r", Sub("response"))
    stats, frames = stats_with(clock, [b"report"])
    intake = PublishIntake(router, Counters(), stats)
    intake.publish([item("a", "http-stream"), item("r", "http-response"), item("r", "http-stream")], "http")
    assert frames == []
    stats.report()
    assert len(frames) == 1 and frames[0].startswith(b"report T") and b"18:http-response-sent,1:1#" in frames[0]
    stats.stop()


def test_no_stats_socket_no_packets(clock):
    """A StatsPublisher with nothing attached (no stats_spec) is asked for nothing."""
    router = ChannelRouter()
    router.subscribe("r", Sub("response"))
    stats = StatsPublisher(clock, Counters())
    intake = PublishIntake(router, Counters(), stats)
    intake.publish([item("r", "http-response")], "http")
    assert not stats.active and stats.connection_count == 0
