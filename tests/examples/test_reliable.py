"""examples/reliable: a stream with ids and a next link recovers a lost publish and a killed publisher."""

from __future__ import annotations

import json
import re

import pytest

from .support import RunningExample, Stream, request


def _post(example: RunningExample, text: str, publish: bool = True) -> dict:
    path = "/messages" if publish else "/messages?publish=no"
    status, _, body = request(example.port, "POST", path, body=text.encode())
    assert status == 200
    return json.loads(body)


def _open_stream(example: RunningExample) -> Stream:
    subscribed = r"subscribe \S+ channel=messages"
    before = len(re.findall(subscribed, example.output))
    stream = Stream(example.port, "/stream")
    stream.read_until(b"\r\n\r\n")
    example.wait_for(r"(?s)" + (subscribed + ".*") * (before + 1))
    return stream


@pytest.fixture
def reliable():
    example = RunningExample("reliable")
    yield example
    assert example.stop() == 0


def test_lost_publish_is_recovered_with_grip_last(reliable):
    """A publish lost between two others: the proxy sees the gap, asks the next link with Grip-Last, the client gets 1 2 3 once."""
    stream = _open_stream(reliable)
    try:
        assert stream.received.startswith(b"HTTP/1.1 200 OK\r\n")
        # A second after the channel's first subscription the proxy fetches the next link
        # (update_on_first_subscription, as Pushpin): let that pass first, so that what follows
        # is recovered because of the gap.
        reliable.wait_for(r"first subscription to its channel, fetching next link")
        reliable.wait_for(r"\[origin\] GET /stream\?after=0 -> 200")
        assert _post(reliable, "one") == {"id": 1, "published": True}
        stream.read_until(b"1 one\n")
        assert _post(reliable, "two", publish=False) == {"id": 2, "published": False}
        _post(reliable, "three")
        # The item with prev-id 2 waits up to message_wait (5 s) for id 2, then counts as a gap.
        stream.read_until(b"3 three\n", timeout=15)
        assert stream.body() == b"1 one\n# recovered after Grip-Last: messages; last-id=1\n2 two\n3 three\n"
        reliable.wait_for(r"gap on messages \(expected prev-id 1, got 2\), fetching next link")
        reliable.wait_for(r"\[origin\] next link with Grip-Last: messages; last-id=1: sending 2 missed")
    finally:
        stream.close()
    # A client arriving now gets the whole history at once, then live publishes.
    late = _open_stream(reliable)
    try:
        late.read_until(b"3 three\n")
        _post(reliable, "four")
        late.read_until(b"4 four\n")
        assert late.body() == b"1 one\n2 two\n3 three\n4 four\n"
    finally:
        late.close()


def test_killed_publisher_is_recovered_at_the_link_timeout():
    """A message saved but never published (the publisher died): after the link's 1 s timeout the proxy asks with Grip-Last."""
    example = RunningExample("reliable", "--link-timeout", "1")
    try:
        stream = _open_stream(example)
        try:
            _post(example, "one")
            stream.read_until(b"1 one\n")
            _post(example, "two", publish=False)
            stream.read_until(b"2 two\n", timeout=10)
            assert stream.body() == b"1 one\n# recovered after Grip-Last: messages; last-id=1\n2 two\n"
            example.wait_for(r"\[origin\] next link with Grip-Last: messages; last-id=1: sending 1 missed")
        finally:
            stream.close()
    finally:
        assert example.stop() == 0
