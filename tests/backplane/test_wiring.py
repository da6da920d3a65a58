"""How the service wires the Redis backplane between the sequencer and the router (no sockets: the service is built, not started)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from pushpin_tx.backplane.redis import RedisBackplane, encode_envelope
from pushpin_tx.protocol.config import load_settings
from pushpin_tx.protocol.items import parse_item
from tests.integration.harness import write_config


def build(tmp_path, **overrides):
    from pushpin_tx.service import PushpinService

    settings = load_settings(str(write_config(tmp_path, ["* test"], workers="1", **overrides)))
    return PushpinService(settings, MemoryReactorClock())


def item(n: int):
    return parse_item({"channel": "c", "id": str(n), "prev-id": str(n - 1), "formats": {"http-stream": {"content": "x"}}})


def test_without_a_backplane_nothing_changes(tmp_path):
    """No backplane key: no backplane service, the sequencer delivers to the router as before."""
    pushpin = build(tmp_path)
    assert pushpin.backplane is None
    assert not any(isinstance(child, RedisBackplane) for child in pushpin)


def test_the_sequencer_publishes_to_the_backplane_and_remote_items_set_last_ids(tmp_path):
    """With a backplane: what the sequencer lets out goes to backplane.publish; another instance's item sets our last id and is delivered."""
    pushpin = build(tmp_path, backplane="redis://:pw@127.0.0.1:6390/4")
    backplane = pushpin.backplane
    assert isinstance(backplane, RedisBackplane) and backplane in list(pushpin)
    assert backplane.address.db == 4 and "pw" not in backplane.snapshot()["url"]
    pushpin.sequencer.submit(item(1))  # Redis is not up: the backplane delivers it here, and counts it
    assert backplane.local_only == 1 and backplane.published == 0
    backplane.channel_added("c")  # as the router's interest would say
    backplane._message(b"pushpin-tx/4/c", encode_envelope(b"other-instance", 1, [item(7)]))
    assert pushpin.last_ids.get("c") == "7" and backplane.received_remote == 1
