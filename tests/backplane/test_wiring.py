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


def test_the_backplane_and_the_sequencer_follow_the_subscriptions_linger(tmp_path):
    """
    The backplane's interest and the sequencer's forgetting are the process's subscriptions: a
    long-poll answered by a publish leaves its channel wanted from Redis and its last id kept
    for subscription_linger (60 s), then both go.
    """
    from pushpin_tx.core.hold import ResponseHold
    from pushpin_tx.protocol.grip import parse_instruct
    from tests.fakes import RecordingSink

    pushpin = build(tmp_path, backplane="redis://127.0.0.1:6390/0")
    reactor = pushpin.reactor
    backplane = pushpin.backplane
    backplane.startService()  # (Redis is not there: it connects in the background, wanting what is held)
    try:
        instruct = parse_instruct(200, b"OK", [(b"Grip-Hold", b"response"), (b"Grip-Channel", b"c")], b"timeout\n",
                                  request_uri="http://example.com/x")
        hold = ResponseHold(pushpin.hold_context, RecordingSink(), instruct, "c1")
        hold.start()
        assert pushpin.subscriptions.has("c") and "c" in backplane._wanted
        pushpin.sequencer.submit(parse_item({"channel": "c", "id": "1", "formats": {"http-response": {"body": "hi"}}}))
        reactor.advance(0)  # (the intake fans out at the end of the turn)
        assert hold.done and pushpin.router.subscriber_count("c") == 0
        reactor.pump([1.0] * 59)
        assert "c" in backplane._wanted and pushpin.last_ids.get("c") == "1"
        reactor.advance(1.0)
        assert "c" not in backplane._wanted and pushpin.last_ids.get("c") is None
    finally:
        backplane.stopService()
        pushpin.subscriptions.stop()
