"""
A Django origin using django-grip and Fanout's django-eventstream (its database storage, so
channels are reliable) behind the real C{twistd -n pushpin}: the origin answers each SSE
request with GRIP instructions and the proxy holds the stream. What a browser's EventSource
would see: event ids, resuming with C{Last-Event-ID}, several channels on one stream, and
C{send_event(..., skip_user_ids=...)}.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.parse
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import defer, threads

from tests.integration.harness import ROOT, start_proxy

from .support import open_stream, start_origin_process

# (not imported here: both need Django's settings, which only the origin process has)
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("django_eventstream", "django_grip")),
    reason="django-eventstream and django-grip are not installed (pip install '.[test]')")


@pytest.fixture
def django_env(reactor, tmp_path):
    """The Django origin and the proxy routing to it; the origin publishes to the proxy."""
    argv = [sys.executable, "-m", "tests.ecosystem.django_origin.origin", str(tmp_path / "db.sqlite3")]
    origin = pytest_twisted.blockon(defer.ensureDeferred(start_origin_process(reactor, argv, str(ROOT))))
    try:
        proxy = pytest_twisted.blockon(defer.ensureDeferred(
            start_proxy(reactor, tmp_path, [f"* 127.0.0.1:{origin.port}"])))
    except BaseException:
        pytest_twisted.blockon(defer.ensureDeferred(origin.stop(reactor)))
        raise
    origin.send_line(f"http://127.0.0.1:{proxy.control_port}")
    pytest_twisted.blockon(origin.wait_for_output(reactor, r"origin ready"))
    yield proxy, origin
    pytest_twisted.blockon(defer.ensureDeferred(proxy.stop()))
    pytest_twisted.blockon(defer.ensureDeferred(origin.stop(reactor)))


def send(origin, channel: str, text: str, skip: tuple[str, ...] = ()) -> defer.Deferred:
    """Ask the origin to send_event() (it publishes before answering); fires with the event id."""
    form = urllib.parse.urlencode([("channel", channel), ("text", text)]
                                  + [("skip", name) for name in skip]).encode()

    def post() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{origin.port}/send/", form, timeout=20) as r:
            return r.read().decode()

    return threads.deferToThread(post)


def ids(event_id: str | None) -> dict[str, str]:
    """django-eventstream's multi-channel event id "a:1,b:0" as {"a": "1", "b": "0"}."""
    return dict(part.split(":") for part in (event_id or "").split(",") if part)


def messages(client) -> list[tuple[dict[str, str], str]]:
    """The client's "message" events as (ids, data)."""
    return [(ids(e.id), e.data) for e in client.events if e.type == "message"]


async def subscribed(proxy, channel: str, count: int = 1) -> None:
    """Wait until the proxy logged C{count} subscriptions to C{channel}."""
    await proxy.wait_for_log(rf"(?s)(subscribe \S+ channel={channel}\b.*){{{count}}}")


@pytest_twisted.ensureDeferred
async def test_sse_stream_with_event_ids(reactor, django_env):
    """The stream opens with stream-open, then each send_event arrives with the channel's id."""
    proxy, origin = django_env
    client = await open_stream(reactor, proxy.client_port, "/events/?channel=news")
    assert client.status == 200
    assert client.header("content-type") == "text/event-stream"
    assert client.header("grip-hold") is None  # the proxy consumed the instructions
    [opened] = await client.wait_events(reactor, 1)
    assert (opened.type, opened.data) == ("stream-open", "")
    await subscribed(proxy, "events-news")
    assert await send(origin, "news", "first") == "news:1"
    assert await send(origin, "news", "second") == "news:2"
    await client.wait(reactor, lambda c: len(messages(c)) == 2, "two messages")
    assert messages(client) == [({"news": "1"}, '"first"'), ({"news": "2"}, '"second"')]
    # (the hold itself shows the origin validated the proxy's Grip-Sig: unsigned, django-grip
    # does not count the request as proxied and django-eventstream streams by itself)
    client.close()


@pytest_twisted.ensureDeferred
async def test_last_event_id_resumes_where_the_client_left(reactor, django_env):
    """A reconnect with Last-Event-ID gets the events it missed from storage, then live ones."""
    proxy, origin = django_env
    for text in ("one", "two", "three"):
        await send(origin, "feed", text)
    client = await open_stream(reactor, proxy.client_port, "/events/?channel=feed",
                               {"Last-Event-ID": "feed:1"})
    await client.wait(reactor, lambda c: len(messages(c)) == 2, "the two missed events")
    assert messages(client) == [({"feed": "2"}, '"two"'), ({"feed": "3"}, '"three"')]
    await subscribed(proxy, "events-feed")
    await send(origin, "feed", "four")
    await client.wait(reactor, lambda c: len(messages(c)) == 3, "the live event")
    assert messages(client)[-1] == ({"feed": "4"}, '"four"')
    client.close()


@pytest_twisted.ensureDeferred
async def test_several_channels_on_one_stream(reactor, django_env):
    """One stream on two channels: each event's id carries the position in both channels."""
    proxy, origin = django_env
    await send(origin, "b", "before")  # b starts at 1, a at 0
    client = await open_stream(reactor, proxy.client_port, "/events/?channel=a&channel=b")
    await client.wait_events(reactor, 1)
    await subscribed(proxy, "events-a")
    await subscribed(proxy, "events-b")
    await send(origin, "a", "to a")
    await client.wait(reactor, lambda c: len(messages(c)) == 1, "the event on a")
    await send(origin, "b", "to b")
    await client.wait(reactor, lambda c: len(messages(c)) == 2, "the event on b")
    assert messages(client) == [({"a": "1", "b": "1"}, '"to a"'),
                                ({"a": "1", "b": "2"}, '"to b"')]
    client.close()


@pytest_twisted.ensureDeferred
async def test_skip_user_ids_leaves_out_the_named_user(reactor, django_env):
    """send_event(skip_user_ids=[alice]) reaches bob but not alice; the next event reaches both."""
    proxy, origin = django_env
    alice = await open_stream(reactor, proxy.client_port, "/events/?channel=room", {"X-User": "alice"})
    bob = await open_stream(reactor, proxy.client_port, "/events/?channel=room", {"X-User": "bob"})
    await subscribed(proxy, "events-room", 2)
    await send(origin, "room", "not for alice", skip=("alice",))
    await bob.wait(reactor, lambda c: len(messages(c)) == 1, "bob's first event")
    await send(origin, "room", "for everyone")
    await bob.wait(reactor, lambda c: len(messages(c)) == 2, "bob's second event")
    await alice.wait(reactor, lambda c: messages(c), "alice's event")
    assert messages(bob) == [({"room": "1"}, '"not for alice"'), ({"room": "2"}, '"for everyone"')]
    assert [data for _, data in messages(alice)] == ['"for everyone"']
    alice.close()
    bob.close()
